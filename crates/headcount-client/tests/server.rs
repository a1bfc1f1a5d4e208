//! The SDK against the real headcount server: in process (the testkit's `TestServer`) and as
//! the `headcount` binary, which is killed and restarted; with a supabase-js peer in the room.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use headcount_client::{
    BroadcastPayload, ChannelOptions, Presence, PresenceEvent, PresenceState, RealtimeClient,
    Serializer, SubscribeStatus,
};
use headcount_testkit::process::ServerProcess;
use headcount_testkit::{TestServer, anon, token};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long a test waits for something over a real server.
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for a reconnect after a restart (backoff 1 s, then 2 s, ...).
const RESTART_WAIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, wait: Duration, fut: F) -> F::Output {
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for {what}"))
}

/// Waits until the presence's state satisfies `pred`.
async fn wait_state(
    what: &str,
    wait: Duration,
    presence: &Presence,
    pred: impl Fn(&PresenceState) -> bool,
) -> PresenceState {
    let mut rx = presence.state();
    let got = tokio::time::timeout(wait, rx.wait_for(|s| pred(s))).await;
    match got {
        Ok(s) => s.unwrap().clone(),
        Err(_) => panic!(
            "timed out after {wait:?} waiting for {what}; state: {:?}",
            keys(&presence.state().borrow())
        ),
    }
}

fn keys(state: &PresenceState) -> BTreeSet<String> {
    state.keys().map(str::to_owned).collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn status_of<'a>(state: &'a PresenceState, key: &str) -> Option<&'a Value> {
    state.get(key)?.first()?.payload.get("status")
}

/// A supabase-js client in a node process (`tests/js/peer.mjs`).
struct JsPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl JsPeer {
    async fn spawn(url: &str, channel: &str, key: &str, status: Value) -> JsPeer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/peer.mjs");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        // The same kind of gate as the Redis tests': a missing prerequisite is named, not
        // reported as a protocol failure.
        assert!(
            repo.join("conformance/node_modules/@supabase/supabase-js")
                .is_dir(),
            "this test drives the official supabase-js: run `npm ci` in conformance/ first \
             (scripts/test does)"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .args([url, &anon(), channel, key, &status.to_string()])
            .env("HEADCOUNT_REPO", &repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node is needed for the supabase-js peer ({e}); install Node.js 20 or later")
            });
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        JsPeer {
            child,
            stdin,
            lines,
        }
    }

    /// The next line, or a failure with what node said.
    async fn next(&mut self) -> Value {
        let line = within(
            "a line from the supabase-js peer",
            WAIT,
            self.lines.next_line(),
        )
        .await;
        match line {
            Ok(Some(line)) => serde_json::from_str(&line).unwrap(),
            _ => {
                let mut err = String::new();
                if let Some(stderr) = self.child.stderr.as_mut() {
                    let _ = stderr.read_to_string(&mut err).await;
                }
                panic!("the supabase-js peer stopped: {err}");
            }
        }
    }

    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        within(what, WAIT, async {
            loop {
                let v = self.next().await;
                if pred(&v) {
                    return v;
                }
            }
        })
        .await
    }

    async fn command(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// SIGKILL: the socket drops without a leave or a close frame.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn js_keys(sync: &Value) -> BTreeSet<String> {
    sync["state"].as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_and_supabase_js_see_each_other() {
    let server = TestServer::start().await;
    let a = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let alice = a
        .presence("lobby")
        .key("alice")
        .user_status(json!({"status": "online"}))
        .join()
        .unwrap();
    let b = RealtimeClient::builder(&server.url(), &anon())
        .serializer(Serializer::V1)
        .connect()
        .unwrap();
    let bob = b
        .presence("lobby")
        .key("bob")
        .user_status(json!({"status": "busy"}))
        .join()
        .unwrap();
    let mut js = JsPeer::spawn(&server.url(), "lobby", "js", json!({"status": "online"})).await;
    let mut alice_events = alice.events();

    let everyone = set(&["alice", "bob", "js"]);
    let seen = wait_state("alice to see everyone", WAIT, &alice, |s| {
        keys(s) == everyone
    })
    .await;
    assert_eq!(seen.count(), 3);
    assert_eq!(status_of(&seen, "js"), Some(&json!("online")));
    let seen = wait_state("bob to see everyone", WAIT, &bob, |s| keys(s) == everyone).await;
    assert_eq!(status_of(&seen, "alice"), Some(&json!("online")));
    let sync = js
        .wait_for("js to see everyone", |v| {
            v["type"] == "sync" && js_keys(v) == everyone
        })
        .await;
    assert_eq!(sync["state"]["bob"][0]["status"], "busy");

    // update_status reaches the others, in both serializers and in supabase-js.
    within(
        "the update",
        WAIT,
        alice.update_status(json!({"status": "away"})),
    )
    .await
    .unwrap();
    assert_eq!(
        *alice.user_status().borrow(),
        *json!({"status": "away"}).as_object().unwrap()
    );
    wait_state("bob to see alice away", WAIT, &bob, |s| {
        status_of(s, "alice") == Some(&json!("away"))
    })
    .await;
    js.wait_for("js to see alice away", |v| {
        v["type"] == "sync" && v["state"]["alice"][0]["status"] == "away"
    })
    .await;
    // Alice saw her own update as a join (the new meta) then a leave (the old one).
    let status = |m: &[headcount_client::PresenceMeta]| {
        m.first().and_then(|m| m.payload.get("status").cloned())
    };
    let update = within("alice's update events", WAIT, async {
        loop {
            if let Ok(PresenceEvent::Join { key, new, .. }) = alice_events.recv().await
                && key == "alice"
                && status(&new) == Some(json!("away"))
            {
                return alice_events.recv().await;
            }
        }
    })
    .await;
    assert!(
        matches!(&update, Ok(PresenceEvent::Leave { key, current, left })
            if key == "alice" && status(left) == Some(json!("online")) && status(current) == Some(json!("away"))),
        "{update:?}"
    );

    // Broadcasts: kind 3 from the SDK to supabase-js and a 1.0.0 SDK; supabase-js back.
    let mut pings = bob.channel().on_broadcast("ping");
    let mut pongs = alice.channel().on_broadcast("pong");
    within(
        "a ping",
        WAIT,
        alice.channel().send("ping", json!({"n": 1})),
    )
    .await
    .unwrap();
    let got = js
        .wait_for("js to get the ping", |v| v["type"] == "broadcast")
        .await;
    assert_eq!(
        (got["event"].clone(), got["payload"].clone()),
        (json!("ping"), json!({"n": 1}))
    );
    let ping = within("bob's ping", WAIT, pings.recv()).await.unwrap();
    assert_eq!(ping.payload, BroadcastPayload::Json(json!({"n": 1})));
    js.command(json!({"cmd": "send", "event": "pong", "payload": {"n": 2}}))
        .await;
    let pong = within("alice's pong", WAIT, pongs.recv()).await.unwrap();
    assert_eq!(
        (pong.event.as_str(), pong.payload),
        ("pong", BroadcastPayload::Json(json!({"n": 2})))
    );

    // An abrupt disconnect (the node process killed) gives the others a leave.
    js.kill().await;
    let two = set(&["alice", "bob"]);
    wait_state("alice to see js leave", WAIT, &alice, |s| keys(s) == two).await;
    wait_state("bob to see js leave", WAIT, &bob, |s| keys(s) == two).await;
    let mut left = false;
    while let Ok(event) = alice_events.try_recv() {
        left |= matches!(&event, PresenceEvent::Leave { key, current, left } if key == "js" && current.is_empty() && left.len() == 1);
    }
    assert!(left, "a leave event for js");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_that_vanishes_gives_the_others_a_leave() {
    let server = TestServer::start().await;
    let client = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let watcher = client.presence("room").key("watcher").join().unwrap();
    let mut events = watcher.events();

    // Carol lives on a runtime of her own, which is then dropped with her event loop in it:
    // her socket goes away with no leave and no close frame.
    let url = server.url();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let carol = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handles = runtime.block_on(async {
            let carol = RealtimeClient::connect(&url, &anon()).unwrap();
            let presence = carol.presence("room").key("carol").join().unwrap();
            let _ = ready_tx.send(());
            let _ = stop_rx.await;
            (carol, presence)
        });
        drop(runtime);
        drop(handles);
    });
    within("carol to start", WAIT, ready_rx).await.unwrap();
    wait_state("carol and the watcher", WAIT, &watcher, |s| {
        s.contains("carol") && s.contains("watcher")
    })
    .await;
    stop_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || carol.join().unwrap())
        .await
        .unwrap();
    wait_state("carol to leave", WAIT, &watcher, |s| !s.contains("carol")).await;
    let left = within("the leave event", WAIT, async {
        loop {
            if let Ok(PresenceEvent::Leave { key, .. }) = events.recv().await
                && key == "carol"
            {
                return key;
            }
        }
    })
    .await;
    assert_eq!(left, "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_brings_everyone_back_with_their_latest_status() {
    let mut server = tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .unwrap();
    let url = server.url();
    let a = RealtimeClient::connect(&url, &anon()).unwrap();
    let alice = a
        .presence("room")
        .key("alice")
        .user_status(json!({"status": "online", "name": "Alice"}))
        .join()
        .unwrap();
    let b = RealtimeClient::connect(&url, &anon()).unwrap();
    let bob = b
        .presence("room")
        .key("bob")
        .user_status(json!({"status": "online"}))
        .join()
        .unwrap();
    let mut alice_statuses = alice.statuses();
    let both = set(&["alice", "bob"]);
    wait_state("alice to see bob", WAIT, &alice, |s| keys(s) == both).await;
    within(
        "the update",
        WAIT,
        alice.update_status(json!({"status": "away"})),
    )
    .await
    .unwrap();
    let before = wait_state("bob to see alice away", WAIT, &bob, |s| {
        status_of(s, "alice") == Some(&json!("away"))
    })
    .await;
    let old_ref = before.get("alice").unwrap()[0].presence_ref.clone();
    assert!(alice_statuses.recv().await.unwrap().is_subscribed());

    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    let lost = within("the channel error", WAIT, alice_statuses.recv())
        .await
        .unwrap();
    assert_eq!(lost.status, SubscribeStatus::ChannelError);
    assert!(!a.connection_state().borrow().is_open());

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let back = within(
        "alice to be subscribed again",
        RESTART_WAIT,
        alice_statuses.recv(),
    )
    .await
    .unwrap();
    assert!(back.is_subscribed(), "{back:?}");
    let after = wait_state("bob to see alice again", RESTART_WAIT, &bob, |s| {
        s.is_synced() && s.get("alice").is_some_and(|m| m[0].presence_ref != old_ref)
    })
    .await;
    let meta = &after.get("alice").unwrap()[0];
    assert_eq!(
        meta.payload,
        *json!({"status": "away", "name": "Alice"})
            .as_object()
            .unwrap(),
        "re-tracked with the latest status"
    );
    wait_state("alice to see bob again", RESTART_WAIT, &alice, |s| {
        s.is_synced() && keys(s) == both
    })
    .await;
    assert!(a.connection_state().borrow().is_open());
    drop(server);
}

#[tokio::test]
async fn channels_track_untrack_and_broadcast_through_the_server() {
    let server = TestServer::start().await;
    let client = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let v1 = RealtimeClient::builder(&server.url(), &anon())
        .serializer(Serializer::V1)
        .connect()
        .unwrap();
    let me = client.channel(
        "chat",
        ChannelOptions::default()
            .broadcast_self(true)
            .broadcast_ack(true)
            .presence_enabled(true)
            .presence_key("me"),
    );
    let other = v1.channel("chat", ChannelOptions::default().presence_enabled(true));
    let mut mine = me.on_broadcast("*");
    let mut theirs = other.on_broadcast("*");
    for channel in [&me, &other] {
        let mut statuses = channel.subscribe();
        assert!(
            within("subscribed", WAIT, statuses.recv())
                .await
                .unwrap()
                .is_subscribed()
        );
    }
    within("a track", WAIT, me.track(json!({"typing": false})))
        .await
        .unwrap();
    let mut state = other.presence_state();
    within(
        "the track to arrive",
        WAIT,
        state.wait_for(|s| s.contains("me")),
    )
    .await
    .unwrap();
    within("an untrack", WAIT, me.untrack()).await.unwrap();
    within(
        "the untrack to arrive",
        WAIT,
        state.wait_for(|s| !s.contains("me")),
    )
    .await
    .unwrap();

    // A JSON broadcast with ack and self, then an opaque one: 1.0.0 receivers cannot get
    // bytes, so only the sender itself sees those.
    within(
        "an acked send",
        WAIT,
        me.send("note", json!({"text": "hi"})),
    )
    .await
    .unwrap();
    within(
        "an acked binary send",
        WAIT,
        me.send_binary("blob", vec![1u8, 2, 3]),
    )
    .await
    .unwrap();
    let first = within("my own note", WAIT, mine.recv()).await.unwrap();
    assert_eq!(
        (first.event.as_str(), first.payload),
        ("note", BroadcastPayload::Json(json!({"text": "hi"})))
    );
    let second = within("my own blob", WAIT, mine.recv()).await.unwrap();
    assert_eq!(
        (second.event.as_str(), second.payload),
        ("blob", BroadcastPayload::Binary(vec![1, 2, 3]))
    );
    let got = within("the 1.0.0 note", WAIT, theirs.recv()).await.unwrap();
    assert_eq!(got.payload, BroadcastPayload::Json(json!({"text": "hi"})));
    within("a send from 1.0.0", WAIT, other.send("reply", json!(42)))
        .await
        .unwrap();
    let reply = within("the reply", WAIT, mine.recv()).await.unwrap();
    assert_eq!(
        (reply.event.as_str(), reply.payload),
        ("reply", BroadcastPayload::Json(json!(42)))
    );
    assert!(
        theirs.try_recv().is_err(),
        "no self-broadcast on the 1.0.0 side, and no bytes"
    );
}

#[tokio::test]
async fn the_server_s_refusals_reach_the_app_with_their_reasons() {
    let server = TestServer::start().await;
    let client = RealtimeClient::connect(&server.url(), &anon()).unwrap();
    let secret = client.channel("secret", ChannelOptions::default().private(true));
    let mut statuses = secret.subscribe();
    let refused = within("the refusal", WAIT, statuses.recv()).await.unwrap();
    assert_eq!(refused.status, SubscribeStatus::ChannelError);
    assert_eq!(
        refused.reason.as_deref(),
        Some("Unauthorized: You do not have permissions to read from this Channel topic: secret")
    );
    assert_eq!(within("a leave", WAIT, secret.leave()).await, Ok(()));

    let presence = client.presence("room").join().unwrap();
    let mut statuses = presence.statuses();
    assert!(
        within("subscribed", WAIT, statuses.recv())
            .await
            .unwrap()
            .is_subscribed()
    );
    client.set_auth(token("anon", -10));
    let closed = within("the close", WAIT, statuses.recv()).await.unwrap();
    assert_eq!(closed.status, SubscribeStatus::Closed);
    let reason = closed.reason.unwrap_or_default();
    assert!(reason.starts_with("Token has expired"), "{reason}");
    assert_eq!(
        presence.error().unwrap().to_string(),
        "Channel room error: CLOSED"
    );
}
