//! What one socket may make the node hold, through the real binary: an unfinished message has a
//! deadline, partially received messages share a node-wide budget, presence keys have a length
//! cap and count toward the payload limit, and one socket's tracked presences have a budget.
//! Each limit is tested at N (accepted) and N + 1 (refused with its reason).

use headcount_testkit::raw::{client_frame as frame, client_header as header, read_server_frame};
use std::time::Duration;

use headcount_testkit::process::ServerProcess;
use headcount_testkit::{WAIT, WsClient, anon};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn client(server: &ServerProcess) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        server.port,
        anon()
    );
    WsClient::connect(&url).await.expect("connect")
}

/// A raw WebSocket (serializer 2.0.0) after the handshake.
async fn raw(server: &ServerProcess) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let req = format!(
        "GET /realtime/v1/websocket?vsn=2.0.0&apikey={} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        anon()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// Reads server frames until a close frame (code, reason) or the end (`None`).
async fn close_of(tcp: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<(u16, String)> {
    let read = async {
        loop {
            let (opcode, payload) = read_server_frame(tcp).await.ok()?;
            if opcode == 8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the server closes the socket in time")
}

/// Sends a heartbeat and waits for its reply: the socket is alive and its input is in order.
async fn heartbeat(tcp: &mut TcpStream, r: u32) {
    let text = format!(r#"[null,"{r}","phoenix","heartbeat",{{}}]"#);
    tcp.write_all(&frame(true, 1, text.as_bytes()))
        .await
        .unwrap();
    let want = format!(r#""{r}""#);
    let read = async {
        let mut seen = Vec::new();
        loop {
            let mut b = [0u8; 4096];
            let n = tcp.read(&mut b).await.unwrap();
            assert!(n > 0, "the socket ended before the heartbeat reply");
            seen.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains("phx_reply") && text.contains(&want) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a heartbeat reply");
}

#[tokio::test]
async fn an_unfinished_fragmented_message_is_closed_at_its_deadline() {
    let server = ServerProcess::start_with(&["--incomplete-message-timeout", "1"]);
    // Control: a fragmented message finished inside the deadline is processed.
    let mut on_time = raw(&server).await;
    let text = br#"[null,"7","phoenix","heartbeat",{}]"#;
    on_time
        .write_all(&frame(false, 1, &text[..10]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // a slow but honest sender
    on_time
        .write_all(&frame(true, 0, &text[10..]))
        .await
        .unwrap();
    heartbeat(&mut on_time, 8).await;

    // The attack: a first fragment, then only pings (which keep a socket from idling out).
    let stuck = raw(&server).await;
    let (mut read, mut write) = stuck.into_split();
    write
        .write_all(&frame(false, 2, &[0u8; 60_000]))
        .await
        .unwrap();
    let pings = async {
        loop {
            if write.write_all(&frame(true, 9, b"hi")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = tokio::select! {
        closed = close_of(&mut read, WAIT) => closed,
        () = pings => close_of(&mut read, WAIT).await,
    };
    assert_eq!(
        closed,
        Some((1008, "message incomplete for too long".to_owned()))
    );
    // The honest socket lives on.
    heartbeat(&mut on_time, 9).await;
}

#[tokio::test]
async fn the_node_wide_input_budget_refuses_the_message_that_would_pass_it() {
    const BUDGET: usize = 4_000_000;
    let budget = BUDGET.to_string();
    let server = ServerProcess::start_with(&["--max-buffered-input", &budget]);
    // One socket holds the first fragment of a message: its 3,000,000 bytes stay charged
    // until the message completes. A ping answered proves the server has read them.
    let mut holder = raw(&server).await;
    holder
        .write_all(&frame(false, 2, &vec![0u8; 3_000_000]))
        .await
        .unwrap();
    holder.write_all(&frame(true, 9, b"read?")).await.unwrap();
    pong(&mut holder).await;
    let left = BUDGET - 3_000_000;

    // N: a frame that fills the budget exactly is accepted (and, once complete, processed).
    let fits = left - 14;
    let mut at_n = raw(&server).await;
    at_n.write_all(&header(true, 2, fits)).await.unwrap();
    at_n.write_all(&vec![0u8; fits]).await.unwrap();
    heartbeat(&mut at_n, 1).await;

    // N + 1: one byte more is refused with its reason, while the holder still holds its share.
    let mut past_n = raw(&server).await;
    past_n.write_all(&header(true, 2, fits + 1)).await.unwrap();
    past_n.write_all(&[0u8; 100]).await.unwrap();
    assert_eq!(
        close_of(&mut past_n, WAIT).await,
        Some((1013, "server busy: input buffer full".to_owned()))
    );
    // Small messages still get through, and the holder's share comes back when its message
    // completes.
    heartbeat(&mut at_n, 2).await;
    holder.write_all(&frame(true, 0, b"done")).await.unwrap();
    heartbeat(&mut holder, 3).await;
    let mut after = raw(&server).await;
    let big = 3_900_000;
    after.write_all(&header(true, 2, big)).await.unwrap();
    after.write_all(&vec![0u8; big]).await.unwrap();
    heartbeat(&mut after, 4).await;
}

/// Waits for a pong (and skips anything else the server sends).
async fn pong(tcp: &mut TcpStream) {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            tcp.read_exact(&mut h).await.expect("a pong");
            let len = usize::from(h[1] & 0x7f);
            assert!(len < 126, "only small frames are expected here");
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.expect("a pong");
            if h[0] & 0x0f == 0xA {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a pong in time");
}

async fn join(c: &mut WsClient, topic: &str, key: &str) -> (String, Value) {
    let (jr, reply) = c
        .join_with(
            topic,
            json!({"config": {"presence": {"key": key, "enabled": true}}}),
        )
        .await;
    (jr, reply.payload)
}

#[tokio::test]
async fn presence_keys_longer_than_the_cap_are_refused_at_join() {
    let server = ServerProcess::start();
    let mut c = client(&server).await;
    let (_, ok) = join(&mut c, "realtime:keys-n", &"k".repeat(1024)).await;
    assert_eq!(ok["status"], "ok", "{ok}");
    let (_, refused) = join(&mut c, "realtime:keys-n1", &"k".repeat(1025)).await;
    assert_eq!(
        refused,
        json!({"status": "error", "response": {"reason": "PresenceKeyTooLong: The presence key is too long"}})
    );
}

async fn track(c: &mut WsClient, jr: &str, topic: &str, payload: Value) -> Value {
    c.track(jr, topic, payload).await.payload
}

/// A payload whose JSON text is exactly `bytes` long: `{"p":"…"}`.
fn payload_of(bytes: usize) -> Value {
    json!({"p": "x".repeat(bytes - 8)})
}

#[tokio::test]
async fn the_presence_key_counts_toward_the_payload_limit() {
    let server = ServerProcess::start_with(&["--max-payload-size-kb", "10"]);
    let topic = "realtime:sized";
    let key = "k".repeat(1000);
    let mut c = client(&server).await;
    let (jr, _) = join(&mut c, topic, &key).await;
    c.expect_event(topic, "presence_state").await;
    // N: key + payload = 10,000 bytes.
    let ok = track(&mut c, &jr, topic, payload_of(9_000)).await;
    assert_eq!(ok["status"], "ok", "{ok}");
    // N + 1: the channel is closed with Supabase's reason.
    c.push(
        &jr,
        topic,
        "presence",
        json!({"type": "presence", "event": "track", "payload": payload_of(9_001)}),
    )
    .await;
    let system = c.expect_event(topic, "system").await;
    assert_eq!(system.payload["message"], "Track message size exceeded");
    c.expect_event(topic, "phx_close").await;
}

#[tokio::test]
async fn one_socket_tracks_at_most_its_presence_budget_across_channels() {
    let server = ServerProcess::start_with(&[
        "--max-payload-size-kb",
        "15",
        "--max-presence-bytes-per-client",
        "20000",
    ]);
    let mut c = client(&server).await;
    let (j1, _) = join(&mut c, "realtime:one", "k").await;
    c.expect_event("realtime:one", "presence_state").await;
    let (j2, _) = join(&mut c, "realtime:two", "k").await;
    c.expect_event("realtime:two", "presence_state").await;
    // 1 key byte + 9,999 payload bytes in each channel: 20,000 in all (N).
    let a = track(&mut c, &j1, "realtime:one", payload_of(9_999)).await;
    assert_eq!(a["status"], "ok", "{a}");
    let b = track(&mut c, &j2, "realtime:two", payload_of(9_999)).await;
    assert_eq!(b["status"], "ok", "{b}");
    // 20,001 (N + 1): refused with its reason; the channel and the presence stay.
    let refused = track(&mut c, &j2, "realtime:two", payload_of(10_000)).await;
    assert_eq!(
        refused,
        json!({"status": "error", "response": {"reason": "PresenceBytesExceeded: Too much presence data tracked by this socket"}})
    );
    // Less elsewhere makes room again.
    let smaller = track(&mut c, &j1, "realtime:one", payload_of(100)).await;
    assert_eq!(smaller["status"], "ok", "{smaller}");
    let now_fits = track(&mut c, &j2, "realtime:two", payload_of(10_000)).await;
    assert_eq!(now_fits["status"], "ok", "{now_fits}");
    // Nothing was lost: a second socket sees both presences, at their latest sizes.
    let mut watcher = client(&server).await;
    watcher
        .join_with(
            "realtime:two",
            json!({"config": {"presence": {"key": "w", "enabled": true}}}),
        )
        .await;
    // It learns the latest meta from the state, or from the diff of the coalescing window
    // that was still open when it joined.
    let size = |v: &Value| v["k"]["metas"][0]["p"].as_str().map(str::len);
    let state = watcher.expect_event("realtime:two", "presence_state").await;
    if size(&state.payload) != Some(10_000 - 8) {
        let diff = watcher.expect_event("realtime:two", "presence_diff").await;
        assert_eq!(size(&diff.payload["joins"]), Some(10_000 - 8), "{diff:?}");
    }
}
