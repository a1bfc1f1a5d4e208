//! Crashes of real processes: two `headcount serve --redis URL --node-timeout SECONDS` nodes,
//! clients on each; one node is SIGKILLed (its members leave the other node within the node
//! timeout) or SIGTERMed (they leave at once, and its clients are told to go away with 1001).
//!
//! These tests need the `headcount` binary (see `headcount_testkit::process`); the test script
//! builds it first.

use std::process::Command;
use std::time::{Duration, Instant};

use headcount_testkit::process::ServerProcess;
use headcount_testkit::redis::RedisServer;
use headcount_testkit::{Frame, Msg, WsClient, anon};
use serde_json::{Value, json};

fn node(redis: &RedisServer, timeout_s: u64) -> ServerProcess {
    ServerProcess::start_with(&[
        "--redis",
        &redis.url(),
        "--node-timeout",
        &timeout_s.to_string(),
    ])
}

async fn client(server: &ServerProcess) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        server.port,
        anon()
    );
    WsClient::connect(&url).await.expect("connect")
}

fn presence(key: &str) -> Value {
    json!({"broadcast": {"ack": true, "self": false}, "presence": {"key": key, "enabled": true}})
}

async fn member(server: &ServerProcess, topic: &str, key: &str) -> (WsClient, String) {
    let mut c = client(server).await;
    let jr = c.join(topic, presence(key)).await;
    let r = c
        .push(
            &jr,
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"on": key}}),
        )
        .await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
    (c, jr)
}

/// Waits (up to `within`) for presence diffs on `topic` until `done` holds for the keys seen
/// so far under `field` (`joins` or `leaves`); returns how long it took.
async fn diffs_until(
    c: &mut WsClient,
    topic: &str,
    field: &str,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while !done(&seen) {
        let left = within.saturating_sub(started.elapsed());
        match c.try_recv(left).await {
            Some(Frame::Text(t)) => {
                let m: Msg = c.decode(&t);
                if m.topic == topic
                    && m.event == "presence_diff"
                    && let Some(keys) = m.payload[field].as_object()
                {
                    seen.extend(keys.keys().cloned());
                }
            }
            Some(Frame::Binary(_)) => {}
            other => panic!("waiting for {field} on {topic}, seen {seen:?}: {other:?}"),
        }
    }
    started.elapsed()
}

fn members<'a>(keys: &'a [&'a str]) -> impl FnMut(&[String]) -> bool + 'a {
    move |seen| keys.iter().all(|k| seen.iter().any(|s| s == k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_node_its_members_leave_the_other_within_the_timeout() {
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(2);
    let mut doomed = node(&redis, 2);
    let survivor = node(&redis, 2);
    let topic = "realtime:sigkill";
    let mut watcher = client(&survivor).await;
    watcher.join(topic, presence("watcher")).await;
    let ghosts = ["ghost0", "ghost1", "ghost2"];
    let mut clients = Vec::new();
    for key in ghosts {
        clients.push(member(&doomed, topic, key).await);
    }
    diffs_until(
        &mut watcher,
        topic,
        "joins",
        Duration::from_secs(10),
        members(&ghosts),
    )
    .await;

    // Broadcast crosses the processes too.
    let (c, jr) = &mut clients[0];
    c.push(
        jr,
        topic,
        "broadcast",
        json!({"type": "broadcast", "event": "hello", "payload": {"from": "doomed"}}),
    )
    .await;
    let m = watcher.expect_event(topic, "broadcast").await;
    assert_eq!(m.payload["payload"]["from"], "doomed");

    doomed.kill();
    let took = diffs_until(
        &mut watcher,
        topic,
        "leaves",
        timeout + Duration::from_secs(5),
        members(&ghosts),
    )
    .await;
    println!(
        "SIGKILL of a node: its last member left the other node after {took:?} (node timeout {timeout:?})"
    );
    assert!(
        took <= timeout + Duration::from_secs(1),
        "ghosts outlived the node timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_node_its_members_leave_at_once_and_its_clients_go_away() {
    let redis = RedisServer::start();
    // A long node timeout: leaves that come quickly can only be the clean goodbye.
    let stopping = node(&redis, 30);
    let staying = node(&redis, 30);
    let topic = "realtime:sigterm";
    let mut watcher = client(&staying).await;
    watcher.join(topic, presence("watcher")).await;
    let (mut alice, _) = member(&stopping, topic, "alice").await;
    let (mut bob, _) = member(&stopping, topic, "bob").await;
    diffs_until(
        &mut watcher,
        topic,
        "joins",
        Duration::from_secs(10),
        members(&["alice", "bob"]),
    )
    .await;

    let started = Instant::now();
    let pid = stopping.pid().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(alice.expect_close().await, Some(1001), "going away");
    assert_eq!(bob.expect_close().await, Some(1001), "going away");
    let took = diffs_until(
        &mut watcher,
        topic,
        "leaves",
        Duration::from_secs(5),
        members(&["alice", "bob"]),
    )
    .await;
    println!("SIGTERM of a node: its members left the other node after {took:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "at once, not after the node timeout: {:?}",
        started.elapsed()
    );
    drop(stopping);
}
