//! Attacks on resources: slowloris headers, strict presence, and the memory they cost,
//! printed for the record.

use std::time::{Duration, Instant};

use headcount_testkit::{TestServer, user_token};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn slowloris_connections_are_cut_at_the_header_timeout() {
    let server =
        TestServer::start_with(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let before = rss_kib();
    let mut attackers = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /realtime/v1/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        attackers.push(tcp);
    }
    let started = Instant::now();
    // Drip one more header byte now and then, as a slowloris does.
    let mut closed = 0;
    for tcp in &mut attackers {
        let _ = tcp.write_all(b"X").await;
    }
    let during = rss_kib();
    // A normal client is served meanwhile.
    let mut c = server.client("2.0.0").await;
    c.join("realtime:r", json!({})).await;
    for tcp in &mut attackers {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1, // EOF, a 408 or a reset: the server let go
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(closed, attackers.len(), "every slow connection is cut");
    assert!(
        elapsed < Duration::from_secs(5),
        "cut near the 0.5 s timeout, took {elapsed:?}"
    );
    println!(
        "slowloris: 200 connections dripping headers were all cut {elapsed:?} after the drip; \
         test-process RSS {before} KiB before, {during} KiB while they were held ({} KiB per connection)",
        during.saturating_sub(before) / 200
    );
}

#[tokio::test]
async fn strict_presence_ties_the_key_to_the_token_sub() {
    let server = TestServer::start_with(|c| c.strict_presence = true).await;
    let mut c = server.client("2.0.0").await;
    let token = user_token("authenticated", "user-42", 600);
    // No key: the key is the sub.
    let (jr, _) = c
        .join_with(
            "realtime:s",
            json!({"config": {"presence": {"key": "", "enabled": true}}, "access_token": token}),
        )
        .await;
    c.recv_msg().await;
    let r = c
        .push(
            &jr,
            "realtime:s",
            "presence",
            json!({"type":"presence","event":"track","payload":{}}),
        )
        .await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
    let diff = c.expect_event("realtime:s", "presence_diff").await;
    assert!(diff.payload["joins"]["user-42"].is_object(), "{diff:?}");
    // Somebody else's key: refused.
    let (jr, _) = c.join_with("realtime:t", json!({"config": {"presence": {"key": "user-7", "enabled": true}}, "access_token": token})).await;
    c.recv_msg().await;
    let r = c
        .push(
            &jr,
            "realtime:t",
            "presence",
            json!({"type":"presence","event":"track","payload":{}}),
        )
        .await;
    assert_eq!(
        c.expect_reply(&r).await.payload,
        json!({"status":"error","response":{"reason":"StrictPresence: the presence key must equal the token's sub"}})
    );
}
