//! `headcount watch --json`, spawned as the real binary against a real server, with an SDK
//! client coming and going in the same channel.

use std::process::Stdio;
use std::time::Duration;

use headcount_client::{PresenceEvent, RealtimeClient};
use headcount_testkit::{TestServer, anon};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const WAIT: Duration = Duration::from_secs(10);

struct Watch {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watch {
    fn spawn(url: &str, args: &[&str]) -> Watch {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_headcount"))
            .args(["watch", "room", "--url", url, "--apikey", &anon(), "--json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn headcount watch");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watch { child, lines }
    }

    /// The next JSON line that satisfies `pred`.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("watch ended");
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(v["event"].is_string(), "every line has an event: {line}");
                assert!(
                    line.starts_with(r#"{"event":"#),
                    "the event comes first: {line}"
                );
                if pred(&v) {
                    return v;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }
}

fn sync_keys(v: &Value) -> Vec<String> {
    v["state"].as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_reports_syncs_joins_and_leaves() {
    let server = TestServer::start().await;
    let mut watch = Watch::spawn(
        &server.url(),
        &["--key", "watcher", "--status", r#"{"status":"watching"}"#],
    );
    let first = watch
        .until("the watcher itself", |v| {
            v["event"] == "sync" && v["count"] == 1
        })
        .await;
    assert_eq!(first["state"]["watcher"][0]["status"], "watching");
    assert!(first["state"]["watcher"][0]["presence_ref"].is_string());

    let client = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let alice = client
        .presence("room")
        .key("alice")
        .user_status(json!({"status": "online"}))
        .join()
        .unwrap();
    let join = watch.until("alice's join", |v| v["event"] == "join").await;
    assert_eq!(join["key"], "alice");
    assert_eq!(join["new"][0]["status"], "online");
    assert_eq!(join["current"], json!([]));
    let sync = watch.until("a sync of two", |v| v["event"] == "sync").await;
    assert_eq!(
        (sync["count"].clone(), sync_keys(&sync)),
        (json!(2), vec!["alice".to_owned(), "watcher".to_owned()])
    );

    // The SDK sees the watcher with its status.
    let mut state = alice.state();
    let seen = tokio::time::timeout(WAIT, state.wait_for(|s| s.contains("watcher")))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(
        seen.get("watcher").unwrap()[0].payload["status"],
        "watching"
    );

    alice
        .update_status(json!({"status": "away"}))
        .await
        .unwrap();
    let update = watch
        .until("alice's update", |v| v["event"] == "join")
        .await;
    assert_eq!(update["new"][0]["status"], "away");
    let old = watch
        .until("the old meta's leave", |v| v["event"] == "leave")
        .await;
    assert_eq!(
        (old["key"].clone(), old["left"][0]["status"].clone()),
        (json!("alice"), json!("online"))
    );

    alice.leave().await.unwrap();
    let leave = watch
        .until("alice's leave", |v| v["event"] == "leave")
        .await;
    assert_eq!(leave["key"], "alice");
    assert_eq!(leave["current"], json!([]));
    let sync = watch.until("a sync of one", |v| v["event"] == "sync").await;
    assert_eq!(sync["count"], 1);

    // Killing the watcher gives the others a leave.
    assert_eq!(
        alice.state().borrow().count(),
        0,
        "a left presence has no view"
    );
    let other = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let observer = other.presence("room").key("observer").join().unwrap();
    let mut events = observer.events();
    let mut state = observer.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.contains("watcher")))
        .await
        .unwrap()
        .unwrap();
    watch.child.kill().await.unwrap();
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(PresenceEvent::Leave { key, .. }) = events.recv().await
                && key == "watcher"
            {
                return key;
            }
        }
    })
    .await
    .expect("the watcher's leave");
    assert_eq!(gone, "watcher");
}

#[tokio::test]
async fn watch_refuses_a_status_that_is_not_an_object() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_headcount"))
        .args([
            "watch",
            "room",
            "--url",
            "http://127.0.0.1:9",
            "--apikey",
            "k",
            "--status",
            "[1]",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--status must be a JSON object"));
}
