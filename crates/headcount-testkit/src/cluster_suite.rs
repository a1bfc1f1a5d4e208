//! The conformance suite every cluster backend must pass: several nodes, clients on different
//! nodes, and the single-node behaviour they expect. A backend's tests call each scenario with
//! a [`Backend`] that makes nodes of that kind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use headcount_cluster::Cluster;
use headcount_cluster::{Broadcast, ChannelKey};
use serde_json::{Value, json};

use crate::{Frame, Msg, TestServer, WsClient};

/// How a backend makes and breaks nodes.
pub trait Backend: Send + Sync {
    /// A new node's cluster handle.
    fn node(&self) -> Arc<dyn Cluster>;

    /// Makes `node` disappear as a crash would: no goodbye to the cluster. The backend must then
    /// remove its presences within [`Backend::ghost_timeout`].
    fn crash<'a>(&'a self, node: TestServer) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// How long a crashed node's presences may outlive it.
    fn ghost_timeout(&self) -> Duration;
}

/// How long a scenario waits for something that must cross nodes.
const CROSS: Duration = Duration::from_secs(10);

async fn nodes(backend: &dyn Backend, n: usize) -> Vec<TestServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestServer::start_clustered(backend.node()).await);
    }
    out
}

fn presence(key: &str) -> Value {
    json!({"broadcast": {"ack": true, "self": false}, "presence": {"key": key, "enabled": true}})
}

async fn track(c: &mut WsClient, jr: &str, topic: &str, payload: Value) {
    assert_eq!(c.track(jr, topic, payload).await.payload["status"], "ok");
}

/// Waits for a `presence_diff` on `topic` that satisfies `want`.
async fn diff_where(c: &mut WsClient, topic: &str, what: &str, want: impl Fn(&Msg) -> bool) -> Msg {
    let deadline = Instant::now() + CROSS;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_recv(left).await {
            Some(Frame::Text(t)) => {
                let m = c.decode(&t);
                if m.topic == topic && m.event == "presence_diff" && want(&m) {
                    return m;
                }
            }
            Some(Frame::Binary(_)) | Some(Frame::Pong(_)) => {}
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

fn joins(m: &Msg, key: &str) -> bool {
    m.payload["joins"].get(key).is_some()
}

fn leaves(m: &Msg, key: &str) -> bool {
    m.payload["leaves"].get(key).is_some()
}

/// A track on one node reaches members on the others, with the same metas; a member who joins
/// later on a third node gets it in its state.
pub async fn presence_crosses_nodes(backend: &dyn Backend) {
    let servers = nodes(backend, 3).await;
    let topic = "realtime:cross";
    let mut a = servers[0].client("2.0.0").await;
    let mut b = servers[1].client("1.0.0").await;
    let ja = a.join(topic, presence("alice")).await;
    b.join(topic, presence("bob")).await;
    track(&mut a, &ja, topic, json!({"status": "online"})).await;
    let local = diff_where(&mut a, topic, "alice's own join", |m| joins(m, "alice")).await;
    let remote = diff_where(&mut b, topic, "alice's join on node 2", |m| {
        joins(m, "alice")
    })
    .await;
    assert_eq!(
        local.payload["joins"], remote.payload["joins"],
        "the same meta, phx_ref included, on every node"
    );

    let mut c = servers[2].client("2.0.0").await;
    let deadline = Instant::now() + CROSS;
    loop {
        let (jr, _) = c
            .join_with(topic, json!({"config": presence("carol")}))
            .await;
        let state = c.recv_msg().await;
        if state.payload.get("alice").is_some() {
            assert_eq!(state.payload["alice"]["metas"][0]["status"], "online");
            break;
        }
        // The new node may still be loading the channel: its diff must then bring alice.
        if let Some(Frame::Text(t)) = c.try_recv(Duration::from_millis(500)).await {
            let m = c.decode(&t);
            if m.event == "presence_diff" && joins(&m, "alice") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "node 3 never learned of alice");
        c.push(&jr, topic, "phx_leave", json!({})).await;
    }
}

/// Updates and untracks cross nodes as one diff each, in order.
pub async fn updates_and_untracks_cross_nodes(backend: &dyn Backend) {
    let servers = nodes(backend, 2).await;
    let topic = "realtime:updates";
    let mut a = servers[0].client("2.0.0").await;
    let mut b = servers[1].client("2.0.0").await;
    let ja = a.join(topic, presence("alice")).await;
    b.join(topic, presence("bob")).await;
    track(&mut a, &ja, topic, json!({"n": 1})).await;
    diff_where(&mut b, topic, "join", |m| joins(m, "alice")).await;
    track(&mut a, &ja, topic, json!({"n": 2})).await;
    let update = diff_where(&mut b, topic, "update", |m| joins(m, "alice")).await;
    assert_eq!(update.payload["joins"]["alice"]["metas"][0]["n"], 2);
    assert_eq!(
        update.payload["leaves"]["alice"]["metas"][0]["n"], 1,
        "an update is a join and a leave in one diff"
    );
    let r = a
        .push(
            &ja,
            topic,
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
    a.expect_reply(&r).await;
    let gone = diff_where(&mut b, topic, "untrack", |m| leaves(m, "alice")).await;
    assert_eq!(gone.payload["joins"], json!({}));
}

/// A socket that drops on one node leaves everywhere.
pub async fn disconnects_leave_everywhere(backend: &dyn Backend) {
    let servers = nodes(backend, 2).await;
    let topic = "realtime:drops";
    let mut watcher = servers[1].client("2.0.0").await;
    watcher.join(topic, presence("w")).await;
    let mut a = servers[0].client("2.0.0").await;
    let ja = a.join(topic, presence("alice")).await;
    track(&mut a, &ja, topic, json!({})).await;
    diff_where(&mut watcher, topic, "join", |m| joins(m, "alice")).await;
    a.drop_abruptly();
    diff_where(&mut watcher, topic, "leave after a drop", |m| {
        leaves(m, "alice")
    })
    .await;
}

/// Broadcasts cross nodes in both serializers and both encodings, exactly once and in order;
/// `self` echoes once, `ack` is answered by the sender's node.
pub async fn broadcast_crosses_nodes(backend: &dyn Backend) {
    let servers = nodes(backend, 2).await;
    let topic = "realtime:talk";
    let mut sender = servers[0].client("2.0.0").await;
    let mut v1 = servers[1].client("1.0.0").await;
    let mut v2 = servers[1].client("2.0.0").await;
    let js = sender
        .join(
            topic,
            json!({"broadcast": {"ack": true, "self": true}, "presence": {"enabled": false}}),
        )
        .await;
    v1.join(topic, json!({})).await;
    v2.join(topic, json!({})).await;
    // Wait until node 2 is subscribed: a probe broadcast must arrive.
    let deadline = Instant::now() + CROSS;
    loop {
        let r = sender
            .push(
                &js,
                topic,
                "broadcast",
                json!({"type": "broadcast", "event": "probe", "payload": {}}),
            )
            .await;
        sender.expect_reply(&r).await;
        if let Some(Frame::Text(_)) = v2.try_recv(Duration::from_millis(300)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never received a broadcast"
        );
    }
    while v1.try_recv(Duration::from_millis(300)).await.is_some() {}
    while sender.try_recv(Duration::from_millis(100)).await.is_some() {}

    for n in 0..50 {
        let body = format!(r#"{{"n":{n}}}"#);
        let mut frame = vec![3, js.len() as u8, 0, topic.len() as u8, 4, 0, 1];
        frame.extend_from_slice(js.as_bytes());
        frame.extend_from_slice(topic.as_bytes());
        frame.extend_from_slice(b"tick");
        frame.extend_from_slice(body.as_bytes());
        sender.send_binary(frame).await;
    }
    for n in 0..50 {
        let body = format!(r#"{{"n":{n}}}"#);
        match v2.recv().await {
            Frame::Binary(b) => assert!(
                b.ends_with(body.as_bytes()) && b[0] == 4,
                "kind 4 in order: {b:?}"
            ),
            other => panic!("2.0.0 member on node 2: {other:?}"),
        }
        let m = v1.recv_msg().await;
        assert_eq!(
            (
                m.event.as_str(),
                m.payload["event"].clone(),
                m.payload["payload"]["n"].clone()
            ),
            ("broadcast", json!("tick"), json!(n))
        );
        loop {
            match sender.recv().await {
                Frame::Binary(b) => {
                    assert!(
                        b.ends_with(body.as_bytes()),
                        "self:true echoes once, in order"
                    );
                    break;
                }
                Frame::Text(t) if sender.decode(&t).event == "phx_reply" => {} // the acks
                other => panic!("sender: {other:?}"),
            }
        }
    }
    v1.expect_silence(Duration::from_millis(300)).await;
    v2.expect_silence(Duration::from_millis(100)).await;
    while let Some(f) = sender.try_recv(Duration::from_millis(100)).await {
        assert!(
            matches!(&f, Frame::Text(t) if t.contains("phx_reply")),
            "nothing but acks is left: {f:?}"
        );
    }

    // JSON broadcasts from a 1.0.0 member on node 2 reach node 1 as text.
    let j1 = v1.join("realtime:back", json!({})).await;
    let mut far = servers[0].client("2.0.0").await;
    far.join("realtime:back", json!({})).await;
    let deadline = Instant::now() + CROSS;
    loop {
        v1.push(
            &j1,
            "realtime:back",
            "broadcast",
            json!({"type": "broadcast", "event": "hi", "payload": {"x": 1}}),
        )
        .await;
        if let Some(Frame::Text(t)) = far.try_recv(Duration::from_millis(300)).await {
            // Relayed byte for byte: exactly the payload text the 1.0.0 client sent.
            assert_eq!(
                t,
                r#"[null,null,"realtime:back","broadcast",{"event":"hi","payload":{"x":1},"type":"broadcast"}]"#
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never received the 1.0.0 broadcast"
        );
    }
}

/// A broadcast sent through a node where nobody joined the channel (the HTTP API) still
/// reaches the members on other nodes.
pub async fn server_broadcasts_reach_other_nodes(backend: &dyn Backend) {
    let servers = nodes(backend, 2).await;
    let topic = "realtime:announce";
    let mut member = servers[1].client("2.0.0").await;
    member.join(topic, json!({})).await;
    let key = ChannelKey {
        private: false,
        topic: topic.into(),
    };
    let payload = r#"{"type":"broadcast","event":"news","payload":{"v":1}}"#;
    let deadline = Instant::now() + CROSS;
    loop {
        assert!(
            !servers[0].hub.broadcast_to(&key, Broadcast::Json(payload)),
            "no member on node 1"
        );
        if let Some(Frame::Text(t)) = member.try_recv(Duration::from_millis(300)).await {
            assert!(t.ends_with(&format!(r#""broadcast",{payload}]"#)), "{t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server broadcast never crossed"
        );
    }
}

/// A node that stops cleanly takes its presences with it at once.
pub async fn clean_stop_removes_presences(backend: &dyn Backend) {
    let mut servers = nodes(backend, 2).await;
    let topic = "realtime:stop";
    let mut watcher = servers[1].client("2.0.0").await;
    watcher.join(topic, presence("w")).await;
    let mut a = servers[0].client("2.0.0").await;
    let ja = a.join(topic, presence("alice")).await;
    track(&mut a, &ja, topic, json!({})).await;
    diff_where(&mut watcher, topic, "join", |m| joins(m, "alice")).await;
    let started = Instant::now();
    servers.remove(0).stop().await;
    assert_eq!(
        a.expect_close().await,
        Some(1001),
        "going away, so the client reconnects elsewhere"
    );
    diff_where(&mut watcher, topic, "leave on a clean stop", |m| {
        leaves(m, "alice")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "at once, not after a timeout: {:?}",
        started.elapsed()
    );
}

/// A crashed node's presences disappear within the backend's timeout. Returns how long the
/// last leave took, for the record.
pub async fn crash_removes_presences(backend: &dyn Backend) -> Duration {
    let mut servers = nodes(backend, 2).await;
    let topic = "realtime:crash";
    let mut watcher = servers[1].client("2.0.0").await;
    watcher.join(topic, presence("w")).await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut c = servers[0].client("2.0.0").await;
        let key = format!("ghost{i}");
        let jr = c.join(topic, presence(&key)).await;
        track(&mut c, &jr, topic, json!({})).await;
        diff_where(&mut watcher, topic, "join", |m| joins(m, &key)).await;
        members.push(c);
    }
    let started = Instant::now();
    backend.crash(servers.remove(0)).await;
    let mut gone = 0;
    let mut last = Duration::ZERO;
    while gone < 3 {
        let m = diff_where(&mut watcher, topic, "ghost leaves", |m| {
            m.payload["leaves"]
                .as_object()
                .is_some_and(|l| l.keys().any(|k| k.starts_with("ghost")))
        })
        .await;
        gone += m.payload["leaves"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("ghost"))
            .count();
        last = started.elapsed();
    }
    assert!(
        last <= backend.ghost_timeout() + Duration::from_secs(2),
        "ghosts outlived the timeout: {last:?}"
    );
    last
}
