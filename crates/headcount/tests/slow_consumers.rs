//! Slow consumers through the real binary: a member is cut when its writer makes no progress,
//! never because a legal message is large. Fast members receive large broadcasts and large
//! presence updates whole; a member that stops reading is cut, and only it.

use std::net::SocketAddr;

use headcount_testkit::process::ServerProcess;
use headcount_testkit::{Frame, WAIT, WsClient, anon};
use serde_json::{Value, json};

async fn client(server: &ServerProcess) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        server.port,
        anon()
    );
    WsClient::connect(&url).await.expect("connect")
}

fn addr(server: &ServerProcess) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// `headcount_slow_consumer_disconnects_total` from `/metrics`.
async fn slow_cuts(server: &ServerProcess) -> u64 {
    let metrics = headcount_testkit::http::get(addr(server), "/metrics", &[])
        .await
        .text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("headcount_slow_consumer_disconnects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slow-consumer counter in /metrics:\n{metrics}"))
}

fn broadcast_text(join_ref: &str, topic: &str, n: u64, body: &str) -> String {
    json!([join_ref, null, topic, "broadcast",
        {"type": "broadcast", "event": "e", "payload": {"n": n, "body": body}}])
    .to_string()
}

async fn broadcast(sender: &mut WsClient, join_ref: &str, topic: &str, n: u64, body: &str) {
    sender
        .send_text(broadcast_text(join_ref, topic, n, body))
        .await;
}

/// Reads broadcasts until `count` have arrived; returns their `n`s (or what ended the socket).
async fn receive_broadcasts(c: &mut WsClient, count: usize) -> Result<Vec<u64>, String> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match c.recv().await {
            Frame::Text(t) => {
                let m = c.decode(&t);
                if m.event == "broadcast" {
                    seen.push(m.payload["payload"]["n"].as_u64().expect("n"));
                }
            }
            other => return Err(format!("after {seen:?}: {other:?}")),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mb_broadcast_then_a_small_one_cuts_no_fast_member() {
    let server = ServerProcess::start();
    let topic = "realtime:big";
    let mut sender = client(&server).await;
    let js = sender.join(topic, json!({})).await;
    let mut members = Vec::new();
    for _ in 0..50 {
        let mut m = client(&server).await;
        m.join(topic, json!({})).await;
        members.push(m);
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut m| tokio::spawn(async move { (receive_broadcasts(&mut m, 2).await, m) }))
        .collect();
    // Legal: 2 MB is below the 3,000 kB payload limit. The small one follows at once, while
    // the large frame is still on its way to every member.
    sender
        .send_texts_at_once(vec![
            broadcast_text(&js, topic, 1, &"x".repeat(2_000_000)),
            broadcast_text(&js, topic, 2, "0123456789"),
        ])
        .await;
    let mut failed = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        let (got, _member) = r.await.expect("reader task");
        match got {
            Ok(ns) if ns == [1, 2] => {}
            other => failed.push((i, other)),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 50 fast members did not get both broadcasts: {failed:?}",
        failed.len()
    );
    assert_eq!(slow_cuts(&server).await, 0, "nobody was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_cut_and_the_fast_ones_are_not() {
    let server = ServerProcess::start();
    let topic = "realtime:firehose";
    let mut sender = client(&server).await;
    let js = sender.join(topic, json!({})).await;
    let mut fast = Vec::new();
    for _ in 0..5 {
        let mut m = client(&server).await;
        m.join(topic, json!({})).await;
        fast.push(m);
    }
    let mut slow = client(&server).await;
    slow.join(topic, json!({})).await; // and never reads again until the end

    // 2 MB broadcasts, each sent once every fast member has the previous one: the fast
    // members keep up, the slow one's socket buffers fill and its backlog stops moving.
    let body = "y".repeat(2_000_000);
    let mut n = 0;
    while slow_cuts(&server).await == 0 {
        n += 1;
        assert!(
            n <= 60,
            "the member that never reads was not cut after 60 broadcasts"
        );
        broadcast(&mut sender, &js, topic, n, &body).await;
        for (i, m) in fast.iter_mut().enumerate() {
            let got = receive_broadcasts(m, 1).await;
            assert_eq!(got, Ok(vec![n]), "fast member {i}, broadcast {n}");
        }
    }
    assert_eq!(slow_cuts(&server).await, 1, "only the slow member was cut");
    // The fast members are still there: one more broadcast reaches each.
    broadcast(&mut sender, &js, topic, n + 1, "small").await;
    for (i, m) in fast.iter_mut().enumerate() {
        assert_eq!(
            receive_broadcasts(m, 1).await,
            Ok(vec![n + 1]),
            "fast member {i}"
        );
    }
    // The slow member finds its connection gone once it reads what its socket held.
    let ended = tokio::time::timeout(4 * WAIT, async {
        loop {
            if let Frame::Close(_) | Frame::Ended = slow.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow member's connection ended");
}

/// A presence payload of about `bytes` bytes, tagged with `round`.
fn presence_payload(bytes: usize, round: u64) -> Value {
    json!({"round": round, "blob": "p".repeat(bytes)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_updates_of_0_6_to_2_9_mb_cut_no_member() {
    let server = ServerProcess::start();
    let topic = "realtime:avatars";
    let sizes: Vec<usize> = (0..6).map(|i| 600_000 + i * 460_000).collect(); // 0.6 .. 2.9 MB
    let mut members = Vec::new();
    for i in 0..sizes.len() {
        let mut m = client(&server).await;
        let key = format!("member-{i}");
        let jr = m
            .join(topic, json!({"presence": {"key": key, "enabled": true}}))
            .await;
        members.push((m, jr));
    }
    let count = sizes.len();
    let tasks: Vec<_> = members
        .into_iter()
        .zip(sizes.clone())
        .map(|((mut m, jr), size)| {
            tokio::spawn(async move {
                // Track, then update: each member's two calls go out at once, and everyone
                // reads every diff until it has seen every member at round 2.
                for round in 1..=2 {
                    m.push(
                        &jr,
                        topic,
                        "presence",
                        json!({"type": "presence", "event": "track",
                               "payload": presence_payload(size, round)}),
                    )
                    .await;
                }
                let mut rounds = std::collections::HashMap::<String, u64>::new();
                let deadline = tokio::time::Instant::now() + 6 * WAIT;
                while rounds.len() < count || rounds.values().any(|r| *r < 2) {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let frame = m.try_recv(left).await;
                    let Some(Frame::Text(t)) = frame else {
                        let what = match frame {
                            None => "silence".to_owned(),
                            Some(Frame::Binary(_)) => "a binary frame".to_owned(),
                            Some(other) => format!("{other:?}"),
                        };
                        return Err(format!("after {rounds:?}: {what}"));
                    };
                    let msg = m.decode(&t);
                    if msg.event == "presence_diff" {
                        for (key, p) in msg.payload["joins"].as_object().expect("joins") {
                            for meta in p["metas"].as_array().expect("metas") {
                                let round = meta["round"].as_u64().expect("round");
                                let r = rounds.entry(key.clone()).or_default();
                                *r = (*r).max(round);
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Err(e) = t.await.expect("member task") {
            failed.push((i, e));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} members did not see every update: {failed:?}",
        failed.len()
    );
    assert_eq!(slow_cuts(&server).await, 0, "nobody was cut");
}

/// Runs `headcount serve` with `args`; returns its exit status and stderr, or `None` if it was
/// still running (it started) after [`WAIT`].
fn serve_exit(args: &[&str]) -> Option<(bool, String)> {
    let mut all = vec!["serve", "--bind", "127.0.0.1:0"];
    all.extend(["--jwt-secret", headcount_testkit::SECRET]);
    all.extend(args);
    let out = headcount_testkit::process::run_to_exit(&all, WAIT)?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn an_outbox_cap_below_a_legal_message_is_refused_at_start() {
    // The largest legal message is max_message_size (5,000,000 B); plus 64 KiB of envelope.
    let need = 5_000_000 + 64 * 1024;
    let (ok, err) = serve_exit(&["--outbox-hard-limit", &(need - 1).to_string()])
        .expect("a server with a cap below a legal message does not start");
    assert!(!ok);
    assert!(
        err.contains("outbox_hard_limit (5065535) must be at least 5065536"),
        "{err}"
    );
    // N: it starts (and listens).
    let server = ServerProcess::start_with(&["--outbox-hard-limit", &need.to_string()]);
    assert!(server.pid().is_some());
}
