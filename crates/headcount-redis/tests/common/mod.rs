//! Helpers shared by the Redis test files: nodes in this process, clients, views, a TCP proxy
//! that can be cut.

#![allow(dead_code)] // each test file uses its own share of these

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headcount_cluster::ChannelKey;
use headcount_redis::{RedisCluster, RedisOptions};
use headcount_testkit::{TestServer, WsClient};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The node timeout of these tests.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Options with a unique prefix for test `name` and the short node timeout.
pub(crate) fn options(name: &str) -> RedisOptions {
    RedisOptions::default()
        .with_prefix(headcount_testkit::redis::unique_prefix(name))
        .with_node_timeout(NODE_TIMEOUT)
}

/// A node in this process, and its cluster handle.
pub(crate) struct Node {
    pub server: TestServer,
    pub cluster: Arc<RedisCluster>,
}

impl Node {
    /// A node connected to `url` with `options`.
    pub(crate) async fn start(url: &str, options: &RedisOptions) -> Node {
        let cluster = RedisCluster::connect(url, options.clone())
            .await
            .expect("connect to redis");
        // Tests track often: lift the per-member presence rate limit (5 per 30 s by default).
        let server = TestServer::start_node(Some(cluster.clone()), |config| {
            config.limits.client_presence_max_calls = 10_000;
        })
        .await;
        Node { server, cluster }
    }

    /// Dies without a goodbye.
    pub(crate) fn crash(self) {
        self.cluster.crash();
        drop(self.server);
    }

    /// What this node shows for `topic`: key → the metas' payloads (without refs), sorted; an
    /// empty map when the node does not serve the channel.
    pub(crate) fn view(&self, topic: &str) -> BTreeMap<String, Vec<Value>> {
        view_of(&self.server, topic)
    }

    /// The raw presence state this node would send for `topic` (refs included).
    pub(crate) fn state(&self, topic: &str) -> Value {
        let key = ChannelKey {
            private: false,
            topic: topic.into(),
        };
        match self.server.hub.channel(&key) {
            Some(ch) => serde_json::from_str(&ch.presence_json()).expect("state JSON"),
            None => json!({}),
        }
    }
}

/// See [`Node::view`].
pub(crate) fn view_of(server: &TestServer, topic: &str) -> BTreeMap<String, Vec<Value>> {
    let key = ChannelKey {
        private: false,
        topic: topic.into(),
    };
    let Some(channel) = server.hub.channel(&key) else {
        return BTreeMap::new();
    };
    let state: Value = serde_json::from_str(&channel.presence_json()).expect("state JSON");
    let mut out = BTreeMap::new();
    for (k, v) in state.as_object().expect("an object") {
        let mut metas: Vec<Value> = v["metas"]
            .as_array()
            .expect("metas")
            .iter()
            .map(|m| {
                let mut m = m.clone();
                let o = m.as_object_mut().unwrap();
                o.remove("phx_ref");
                o.remove("phx_ref_prev");
                m
            })
            .collect();
        metas.sort_by_key(|m| m.to_string());
        out.insert(k.clone(), metas);
    }
    out
}

/// `[(key, payload)]` as a view.
pub(crate) fn expect_view(entries: &[(&str, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (k, p) in entries {
        out.entry(k.to_string()).or_default().push(p.clone());
    }
    for metas in out.values_mut() {
        metas.sort_by_key(|m| m.to_string());
    }
    out
}

/// Polls `check` every 20 ms until it holds; fails after `within` with `what`.
pub(crate) async fn eventually(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `fut`, failing if it takes longer than `within`.
pub(crate) async fn within<F: Future>(what: &str, within: Duration, fut: F) -> F::Output {
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
}

/// realtime-js's join config with presence under `key`.
pub(crate) fn presence(key: &str) -> Value {
    json!({"broadcast": {"ack": true, "self": false}, "presence": {"key": key, "enabled": true}})
}

/// A client of `server` joined to `topic` as presence `key`; returns it and its join ref.
pub(crate) async fn member(server: &TestServer, topic: &str, key: &str) -> (WsClient, String) {
    let mut c = server.client("2.0.0").await;
    let jr = c.join(topic, presence(key)).await;
    (c, jr)
}

/// Tracks `payload`; waits for the ok reply (within 1 s: nothing may hang) and returns how long
/// it took.
pub(crate) async fn track(c: &mut WsClient, jr: &str, topic: &str, payload: Value) -> Duration {
    let started = Instant::now();
    let reply = within(
        "a track reply",
        Duration::from_secs(1),
        c.track(jr, topic, payload),
    )
    .await;
    assert_eq!(reply.payload["status"], "ok");
    started.elapsed()
}

/// Sends a Phoenix heartbeat and waits for its reply (within 1 s); returns how long it took.
pub(crate) async fn heartbeat(c: &mut WsClient) -> Duration {
    let started = Instant::now();
    let r = c.push("", "phoenix", "heartbeat", json!({})).await;
    within(
        "a heartbeat reply",
        Duration::from_secs(1),
        c.expect_reply(&r),
    )
    .await;
    started.elapsed()
}

/// Drains whatever frames are waiting (so a client's socket never backs up).
pub(crate) async fn drain(c: &mut WsClient) {
    while c.try_recv(Duration::from_millis(1)).await.is_some() {}
}

/// A TCP proxy toward `127.0.0.1:target` that can be cut (every connection closed, new ones
/// refused) and healed.
pub(crate) struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let conns = conns.clone();
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            }
        });
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    /// `redis://127.0.0.1:PORT/` through the proxy.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Closes every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub(crate) fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
