//! Every limit at N (allowed) and N+1 (refused with Supabase's exact string).

use std::time::Duration;

use headcount_testkit::{Frame, TestServer, WsClient, anon};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_millis(200);

fn presence(key: &str) -> Value {
    json!({"presence": {"key": key, "enabled": true}, "broadcast": {"ack": true}})
}

async fn expect_system_close(c: &mut WsClient, topic: &str, message: &str) {
    let system = c.expect_event(topic, "system").await;
    let channel = topic.strip_prefix("realtime:").unwrap();
    assert_eq!(
        system.payload,
        json!({"extension": "system", "status": "error", "message": message, "channel": channel})
    );
    assert_eq!(c.recv_msg().await.event, "phx_close");
}

#[tokio::test]
async fn channels_per_socket() {
    let server = TestServer::start_with(|c| c.limits.max_channels_per_client = 3).await;
    let mut c = server.client("2.0.0").await;
    for n in 0..3 {
        c.join(&format!("realtime:room{n}"), json!({})).await;
    }
    let (_, reply) = c.join_with("realtime:room3", json!({"config": {}})).await;
    assert_eq!(
        reply.payload,
        json!({"status":"error","response":{"reason":"ChannelRateLimitReached: Too many channels"}})
    );
    // Re-joining a topic already joined replaces it and is not an extra channel.
    let (_, reply) = c.join_with("realtime:room0", json!({"config": {}})).await;
    assert_eq!(reply.payload["status"], "ok");
}

#[tokio::test]
async fn joins_per_second_refuse_then_close_the_socket() {
    // The node's limit, with this client allowed all of it (the per-client limit is tested
    // through the binary in crates/headcount/tests/client_limits.rs).
    let server = TestServer::start_with(|c| {
        c.limits.max_joins_per_second = Some(4);
        c.limits.max_client_joins_per_second = Some(100);
    })
    .await;
    let mut c = server.client("2.0.0").await;
    for n in 0..4 {
        c.join(&format!("realtime:j{n}"), json!({})).await;
    }
    let (_, reply) = c.join_with("realtime:j4", json!({"config": {}})).await;
    assert_eq!(
        reply.payload,
        json!({"status":"error","response":{"reason":"ClientJoinRateLimitReached: Too many joins per second"}})
    );
    assert!(
        matches!(c.recv().await, Frame::Close(Some((1001, _)))),
        "then the socket closes"
    );
    // While the window is full, new sockets are refused at connect time.
    let refused = WsClient::connect(&server.ws_url(Some("2.0.0"), &anon()))
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (429, r#"{"error":"Too many joins per second"}"#)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await; // the one-second window passes
    let mut later = server.client("2.0.0").await;
    later.join("realtime:later", json!({})).await;
}

#[tokio::test]
async fn concurrent_users() {
    let server = TestServer::start_with(|c| c.limits.max_concurrent_users = Some(2)).await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("1.0.0").await;
    let mut c = server.client("2.0.0").await; // connected, but not a user until it joins
    a.join("realtime:r", json!({})).await;
    b.join("realtime:r", json!({})).await;
    a.join("realtime:second-channel", json!({})).await; // still one user
    let (_, reply) = c.join_with("realtime:r", json!({"config": {}})).await;
    assert_eq!(
        reply.payload,
        json!({"status":"error","response":{"reason":"ConnectionRateLimitReached: Too many connected users"}})
    );
    let refused = WsClient::connect(&server.ws_url(Some("2.0.0"), &anon()))
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (429, r#"{"error":"Too many connected users"}"#)
    );
    b.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, reply) = c.join_with("realtime:r", json!({"config": {}})).await;
        if reply.payload["status"] == "ok" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a user left, so a place is free"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn client_presence_window_allows_five_calls_in_thirty_seconds() {
    let server = TestServer::start().await;
    let mut watcher = server.client("2.0.0").await;
    watcher
        .join("realtime:p", json!({"presence": {"enabled": true}}))
        .await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join("realtime:p", presence("me")).await;
    for n in 0..5 {
        // Tracks, a no-op re-track and an untrack all count.
        let event = if n == 4 {
            json!({"type":"presence","event":"untrack"})
        } else {
            json!({"type":"presence","event":"track","payload":{"n": n.min(2)}})
        };
        let r = c.push(&jr, "realtime:p", "presence", event).await;
        assert_eq!(
            c.expect_reply(&r).await.payload["status"],
            "ok",
            "call {}",
            n + 1
        );
    }
    c.push(
        &jr,
        "realtime:p",
        "presence",
        json!({"type":"presence","event":"track","payload":{}}),
    )
    .await;
    expect_system_close(&mut c, "realtime:p", "Client presence rate limit exceeded").await;
}

#[tokio::test]
async fn broadcast_payload_size() {
    let server = TestServer::start_with(|c| c.limits.max_payload_size_kb = 1).await; // 1,000 bytes
    let mut sender = server.client("2.0.0").await;
    let mut receiver = server.client("2.0.0").await;
    let js = sender
        .join("realtime:b", json!({"broadcast": {"ack": true}}))
        .await;
    receiver.join("realtime:b", json!({})).await;
    let payload_of = |len: usize| {
        let prefix = r#"{"type":"broadcast","event":"e","payload":""#;
        let suffix = r#""}"#;
        format!(
            "{prefix}{}{suffix}",
            "x".repeat(len - prefix.len() - suffix.len())
        )
    };
    let at_limit = payload_of(1000);
    assert_eq!(at_limit.len(), 1000);
    sender
        .send_text(format!(
            r#"["{js}","1","realtime:b","broadcast",{at_limit}]"#
        ))
        .await;
    assert_eq!(
        sender.expect_reply("1").await.payload,
        json!({"status":"ok","response":{}})
    );
    assert!(matches!(receiver.recv().await, Frame::Text(t) if t.len() > 1000));
    let over = payload_of(1001);
    sender
        .send_text(format!(r#"["{js}","2","realtime:b","broadcast",{over}]"#))
        .await;
    assert_eq!(
        sender.expect_reply("2").await.payload,
        json!({"status":"error","response":"payload_size_exceeded"})
    );
    receiver.expect_silence(SHORT).await;
}

#[tokio::test]
async fn track_payload_size() {
    let server = TestServer::start_with(|c| c.limits.max_payload_size_kb = 1).await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join("realtime:t", presence("k")).await;
    // The key ("k", one byte) counts toward the limit with the payload.
    let meta_of = |len: usize| json!({ "s": "x".repeat(len - 1 - r#"{"s":""}"#.len()) });
    let r = c
        .push(
            &jr,
            "realtime:t",
            "presence",
            json!({"type":"presence","event":"track","payload": meta_of(1000)}),
        )
        .await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
    c.push(
        &jr,
        "realtime:t",
        "presence",
        json!({"type":"presence","event":"track","payload": meta_of(1001)}),
    )
    .await;
    expect_system_close(&mut c, "realtime:t", "Track message size exceeded").await;
}

#[tokio::test]
async fn events_per_second_at_the_node_drop_without_closing() {
    // The node's limit, with this client allowed all of it: the 4th broadcast of the second is
    // refused to its ack, and the channel stays open (the per-client limit, which closes the
    // channel, is tested through the binary in crates/headcount/tests/client_limits.rs).
    let server = TestServer::start_with(|c| {
        c.limits.max_events_per_second = Some(3);
        c.limits.max_client_events_per_second = Some(100);
    })
    .await;
    let mut c = server.client("2.0.0").await;
    let jr = c
        .join("realtime:e", json!({"broadcast": {"ack": true}}))
        .await;
    let broadcast = json!({"type":"broadcast","event":"x","payload":{}});
    for _ in 0..3 {
        let r = c
            .push(&jr, "realtime:e", "broadcast", broadcast.clone())
            .await;
        assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
    }
    let r = c
        .push(&jr, "realtime:e", "broadcast", broadcast.clone())
        .await;
    assert_eq!(
        c.expect_reply(&r).await.payload,
        json!({"status":"error","response":{"reason":"Too many messages per second"}})
    );
    c.expect_silence(SHORT).await; // no system error, no phx_close
}

#[tokio::test]
async fn presence_events_per_second_at_the_node_refuse_without_closing() {
    let server = TestServer::start_with(|c| {
        c.limits.max_presence_events_per_second = Some(2);
        c.limits.max_client_presence_events_per_second = Some(100);
    })
    .await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("2.0.0").await;
    let ja = a.join("realtime:pe", presence("a")).await;
    let jb = b.join("realtime:pe", presence("b")).await;
    let track = |n: u32| json!({"type":"presence","event":"track","payload":{"n": n}});
    let r = a.push(&ja, "realtime:pe", "presence", track(1)).await;
    assert_eq!(a.expect_reply(&r).await.payload["status"], "ok");
    let r = b.push(&jb, "realtime:pe", "presence", track(1)).await;
    assert_eq!(b.expect_reply(&r).await.payload["status"], "ok");
    let r = a.push(&ja, "realtime:pe", "presence", track(2)).await;
    assert_eq!(
        a.expect_reply(&r).await.payload,
        json!({"status":"error","response":{"reason":"Too many presence messages per second"}})
    );
    // The channel is still joined: a's next call is answered, not met with "unmatched topic".
    let r = a
        .push(&ja, "realtime:pe", "presence", json!({"type":"presence"}))
        .await;
    assert_eq!(
        a.expect_reply(&r).await.payload,
        json!({"status":"ok","response":{}})
    );
}

#[tokio::test]
async fn sockets_that_never_join_are_closed() {
    let server = TestServer::start_with(|c| c.unjoined_timeout = Duration::from_millis(400)).await;
    let mut lurker = server.client("2.0.0").await;
    let mut member = server.client("2.0.0").await;
    member.join("realtime:r", json!({})).await;
    // Heartbeats do not count as joining.
    lurker
        .send(json!(null), json!("hb"), "phoenix", "heartbeat", json!({}))
        .await;
    lurker.expect_reply("hb").await;
    assert!(
        matches!(lurker.recv().await, Frame::Close(Some((1000, reason))) if reason == "no channel joined")
    );
    member.expect_silence(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn origin_allowlist() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    for (origin, status) in [
        (Some("https://app.example"), "101"),
        (Some("https://evil.example"), "403"),
        (None, "101"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let origin_header = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /realtime/v1/websocket?vsn=2.0.0&apikey={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin_header}\r\n",
            anon()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{origin:?}: {head}"
        );
        if status == "403" {
            assert!(
                head.ends_with(r#"{"error":"Origin not allowed"}"#),
                "{head}"
            );
        }
    }
}

#[tokio::test]
async fn outbox_hard_limit_is_exact() {
    use headcount_server::conn::{Batch, Conn};
    use std::sync::Arc;
    // Unit-level (the socket-level tests are in lifecycle.rs and the binary's overload.rs):
    // the oldest waiting frame is exempt; with N - 1 bytes behind it a frame is accepted, with
    // N behind it the next one overflows.
    let conn = Arc::new(
        Conn::new(
            1,
            headcount_protocol::Serializer::V2,
            1 << 20,
            headcount_server::clock::Clock::new().now(),
        )
        .with_hard_limit(1 << 20),
    );
    assert!(conn.push(bytes::Bytes::from(vec![0u8; 3 << 20])));
    assert!(conn.push(bytes::Bytes::from(vec![0u8; (1 << 20) - 1])));
    assert!(conn.push(bytes::Bytes::from_static(b"x")));
    assert!(!conn.push(bytes::Bytes::from_static(b"y")));
    assert_eq!(conn.take_batch(&mut Vec::new()), Batch::Abort);
}
