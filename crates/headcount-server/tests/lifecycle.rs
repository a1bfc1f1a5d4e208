//! Tokens over time, idle sockets, shutdown, slow consumers and bad input.

use std::time::Duration;

use headcount_testkit::{Frame, TestServer, anon, token};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_millis(200);

fn config() -> Value {
    json!({"broadcast": {"ack": true, "self": false}, "presence": {"key": "k", "enabled": true}})
}

#[tokio::test]
async fn an_expired_channel_token_closes_the_channel_with_supabase_s_message() {
    for vsn in ["1.0.0", "2.0.0"] {
        let server = TestServer::start().await;
        let mut watcher = server.client("2.0.0").await;
        watcher
            .join("realtime:room", json!({"presence": {"enabled": true}}))
            .await;
        let mut c = server.client(vsn).await;
        let (jr, reply) = c
            .join_with(
                "realtime:room",
                json!({"config": config(), "access_token": token("authenticated", 1)}),
            )
            .await;
        assert_eq!(reply.payload["status"], "ok");
        c.recv_msg().await; // presence_state
        c.push(
            &jr,
            "realtime:room",
            "presence",
            json!({"type":"presence","event":"track","payload":{}}),
        )
        .await;
        watcher.expect_event("realtime:room", "presence_diff").await;

        let system = c.expect_event("realtime:room", "system").await;
        let message = system.payload["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("Token has expired ") && message.ends_with(" seconds ago"),
            "{message}"
        );
        assert_eq!(
            (
                system.payload["extension"].clone(),
                system.payload["status"].clone(),
                system.payload["channel"].clone()
            ),
            (json!("system"), json!("error"), json!("room"))
        );
        let close = c.recv_msg().await;
        assert_eq!(close.event, "phx_close");
        assert_eq!(close.msg_ref, json!(jr));
        let leave = watcher.expect_event("realtime:room", "presence_diff").await;
        assert!(
            leave.payload["leaves"]["k"].is_object(),
            "the expired member's presence left"
        );
        // The socket itself stays up.
        c.send(json!(null), json!("hb"), "phoenix", "heartbeat", json!({}))
            .await;
        assert_eq!(c.expect_reply("hb").await.payload["status"], "ok");
    }
}

#[tokio::test]
async fn access_token_refresh_extends_the_channel_and_is_never_answered() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let (jr, _) = c
        .join_with(
            "realtime:room",
            json!({"config": {}, "access_token": token("authenticated", 1)}),
        )
        .await;
    c.push(
        &jr,
        "realtime:room",
        "access_token",
        json!({"access_token": token("authenticated", 3600)}),
    )
    .await;
    c.push(
        &jr,
        "realtime:room",
        "access_token",
        json!({"access_token": "sb_secret_ignored"}),
    )
    .await;
    c.push(
        &jr,
        "realtime:room",
        "access_token",
        json!({"access_token": null}),
    )
    .await;
    // Past the first token's expiry the channel still works.
    assert!(
        c.try_recv(Duration::from_millis(2200)).await.is_none(),
        "no reply, no shutdown"
    );
    let r = c
        .push(
            &jr,
            "realtime:room",
            "broadcast",
            json!({"type":"broadcast","event":"x","payload":{}}),
        )
        .await;
    c.send(json!(jr), json!("hb"), "phoenix", "heartbeat", json!({}))
        .await;
    let reply = c.recv_msg().await;
    assert_eq!(
        (reply.event.as_str(), reply.msg_ref.clone()),
        ("phx_reply", json!("hb")),
        "broadcast without ack: no reply ({r})"
    );
}

#[tokio::test]
async fn a_bad_refreshed_token_shuts_the_channel_down() {
    let server = TestServer::start().await;
    let mut c = server.client("1.0.0").await;
    let jr = c.join("realtime:room", json!({})).await;
    c.push(
        &jr,
        "realtime:room",
        "access_token",
        json!({"access_token": token("anon", -5)}),
    )
    .await;
    let system = c.expect_event("realtime:room", "system").await;
    assert!(
        system.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired")
    );
    assert_eq!(c.recv_msg().await.event, "phx_close");

    let jr = c.join("realtime:room2", json!({})).await;
    c.push(
        &jr,
        "realtime:room2",
        "access_token",
        json!({"access_token": "not.a.jwt"}),
    )
    .await;
    let system = c.expect_event("realtime:room2", "system").await;
    assert_eq!(
        system.payload["message"],
        "The token provided is not a valid JWT"
    );
}

#[tokio::test]
async fn idle_sockets_are_closed_and_heartbeats_keep_them_open() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(600)).await;
    let mut idle = server.client("2.0.0").await;
    let mut alive = server.client("2.0.0").await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < deadline {
        alive
            .send(json!(null), json!("hb"), "phoenix", "heartbeat", json!({}))
            .await;
        alive.expect_reply("hb").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        matches!(idle.recv().await, Frame::Close(Some((1000, _)))),
        "the idle socket was closed"
    );
    alive
        .send(json!(null), json!("hb2"), "phoenix", "heartbeat", json!({}))
        .await;
    alive.expect_reply("hb2").await;
}

#[tokio::test]
async fn shutdown_says_going_away_and_removes_presence() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join("realtime:room", config()).await;
    c.push(
        &jr,
        "realtime:room",
        "presence",
        json!({"type":"presence","event":"track","payload":{}}),
    )
    .await;
    c.expect_event("realtime:room", "presence_diff").await;
    let hub = server.hub.clone();
    server.stop().await;
    assert!(matches!(c.recv().await, Frame::Close(Some((1001, _)))));
    assert_eq!(hub.conn_count(), 0);
    assert!(
        hub.channels().is_empty(),
        "every channel and presence is gone"
    );
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_nobody_else_notices() {
    let server = TestServer::start_with(|c| c.outbox_limit = 256 * 1024).await;
    let topic = "realtime:firehose";
    let mut sender = server.client("2.0.0").await;
    let js = sender.join(topic, json!({})).await;
    let mut good = server.client("2.0.0").await;
    good.join(topic, json!({})).await;
    let slow = server.client("2.0.0").await; // joins, then never reads again
    let mut slow = slow;
    slow.join(topic, json!({})).await;

    let body = "x".repeat(64 * 1024);
    let messages = 400; // 25 MiB: far more than socket buffers hold
    let mut received = 0;
    for n in 0..messages {
        sender
            .send_text(json!([js, null, topic, "broadcast", {"type":"broadcast","event":"e","payload":{"n": n, "body": body}}]).to_string())
            .await;
        // The good consumer keeps up.
        let m = good.recv_msg().await;
        assert_eq!(m.payload["payload"]["n"], n);
        received += 1;
    }
    assert_eq!(received, messages);
    // The slow consumer is cut once its writer has made no progress for a whole tick.
    let deadline = tokio::time::Instant::now() + headcount_testkit::WAIT;
    while server.hub.conn_count() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow consumer was not dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let queued: usize = server.hub.conns().iter().map(|c| c.queued_bytes()).sum();
    assert!(
        queued <= 256 * 1024 * 2,
        "nothing buffers without bound: {queued} bytes queued"
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "slow consumer: {messages} messages of 64 KiB (25 MiB) sent; the slow reader was cut at a \
         256 KiB outbox and {queued} bytes stayed queued server-side; test-process {rss}"
    );
    drop(slow);
}

#[tokio::test]
async fn malformed_messages_are_dropped_and_the_socket_lives_on() {
    let server = TestServer::start().await;
    let mut bystander = server.client("2.0.0").await;
    let jb = bystander
        .join("realtime:room", json!({"broadcast": {"self": true}}))
        .await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = server.client(vsn).await;
        let junk: Vec<String> = vec![
            "".into(),
            "{".into(),
            "null".into(),
            "[]".into(),
            "[1,2,3,4]".into(),
            r#"[null,null,1,"phx_join",{}]"#.into(),
            r#"{"topic":"phoenix","event":"heartbeat","payload":{}}"#.into(),
            r#"{"topic":"phoenix","event":7,"payload":{},"ref":"1"}"#.into(),
            "[".repeat(10_000),
            format!(r#"[null,"1","realtime:room","phx_join",{}]"#, "[".repeat(200) + &"]".repeat(200)),
            r#"[null,"1","realtime:room","phx_join",{"config":"nope","access_token":5}]"#.into(),
            r#"[null,"1","realtime:room","phx_join",{"config":{"presence":{"key":{"a":1},"enabled":"TRUE"}}}]"#.into(),
            "\"just a string\"".into(),
        ];
        for j in &junk {
            c.send_text(j.clone()).await;
        }
        for bin in [
            vec![],
            vec![3],
            vec![0, 0, 0, 0, 0],
            vec![3, 9, 9, 9, 9, 9, 1, 0],
            vec![4, 1, 1, 0, 1, b'a', b'b'],
        ] {
            c.send_binary(bin).await;
        }
        c.send(
            json!(null),
            json!("alive"),
            "phoenix",
            "heartbeat",
            json!({}),
        )
        .await;
        let reply = c.expect_reply("alive").await;
        assert_eq!(
            reply.payload["status"], "ok",
            "{vsn}: the socket still answers"
        );
    }
    let r = bystander
        .push(
            &jb,
            "realtime:room",
            "broadcast",
            json!({"type":"broadcast","event":"ok","payload":{}}),
        )
        .await;
    let echo = bystander.expect_event("realtime:room", "broadcast").await;
    assert_eq!(
        echo.payload["event"], "ok",
        "other clients are undisturbed ({r})"
    );
}

#[tokio::test]
async fn anon_key_in_the_x_api_key_header_is_accepted() {
    // Gateways pass the key as a header; it takes precedence over the query parameter.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /realtime/v1/websocket?vsn=2.0.0&apikey=bad HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-api-key: {}\r\n\r\n",
        anon()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let _ = SHORT;
}
