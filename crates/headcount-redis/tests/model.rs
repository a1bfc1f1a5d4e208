//! A model-based test: random sequences of joins, tracks, updates, untracks, disconnects, node
//! crashes and node restarts over three in-process nodes and one Redis. After every quiet period,
//! every node that serves a channel shows exactly the model's presence for it (no ghost outlives
//! the node timeout), and keeps showing it (nothing that left comes back).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use headcount_testkit::WsClient;
use headcount_testkit::redis::RedisServer;
use proptest::prelude::*;
use serde_json::{Value, json};

const NODES: usize = 3;
const CLIENTS: usize = 6;
const TOPICS: [&str; 2] = ["realtime:model-a", "realtime:model-b"];
/// How long a quiet period's view must hold once it matches.
const HOLD: Duration = Duration::from_millis(150);

/// Crashes that left ghosts for another node to see (the test's coverage, printed at the end).
static GHOST_KILLS: AtomicUsize = AtomicUsize::new(0);
/// Quiet periods checked.
static QUIET_CHECKS: AtomicUsize = AtomicUsize::new(0);
/// Restarts.
static RESTARTS: AtomicUsize = AtomicUsize::new(0);

/// One step. Indexes pick among what exists when the step runs (modulo its count), so most
/// steps do something whatever came before.
#[derive(Debug, Clone)]
enum Action {
    /// A new client connects to the `node`-th live node and joins topic `topic` (if a client
    /// slot is free).
    Join { node: usize, topic: usize },
    /// The `client`-th client tracks `{"v": value}` (a join, or an update of its meta).
    Track { client: usize, value: u8 },
    /// The `client`-th client untracks.
    Untrack { client: usize },
    /// The `client`-th client's socket drops without a goodbye.
    Disconnect { client: usize },
    /// The `node`-th live node dies without a goodbye (if another node stays alive).
    Kill { node: usize },
    /// A new node takes the first dead node's slot (a restarted process: a new node).
    Restart,
    /// Wait until every node agrees with the model.
    Quiet,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => (0..NODES, 0..TOPICS.len()).prop_map(|(node, topic)| Action::Join { node, topic }),
        6 => (0..CLIENTS, 0..3u8).prop_map(|(client, value)| Action::Track { client, value }),
        1 => (0..CLIENTS).prop_map(|client| Action::Untrack { client }),
        2 => (0..CLIENTS).prop_map(|client| Action::Disconnect { client }),
        3 => (0..NODES).prop_map(|node| Action::Kill { node }),
        2 => Just(Action::Restart),
        3 => Just(Action::Quiet),
    ]
}

struct Client {
    ws: WsClient,
    join_ref: String,
    node: usize,
    topic: usize,
    /// The model: what the client is tracked with.
    tracked: Option<u8>,
}

struct World {
    url: String,
    options: headcount_redis::RedisOptions,
    nodes: Vec<Option<Node>>,
    clients: Vec<Option<Client>>,
    /// When the last node crash happened: its ghosts may live until the node timeout after it.
    last_kill: Option<Instant>,
}

impl World {
    /// The model's view of topic `t`.
    fn model(&self, t: usize) -> BTreeMap<String, Vec<Value>> {
        let entries: Vec<(String, Value)> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                (c.topic == t).then_some(())?;
                Some((format!("c{i}"), json!({"v": c.tracked?})))
            })
            .collect();
        let refs: Vec<(&str, Value)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        expect_view(&refs)
    }

    /// Every (node, topic) whose view differs from the model, and every topic whose serving
    /// nodes disagree on the metas (refs included: a replica must hold the owner's latest meta,
    /// not an older one with the same payload).
    fn mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (t, topic) in TOPICS.iter().enumerate() {
            let want = self.model(t);
            let mut states: Vec<(usize, Value)> = Vec::new();
            for (n, node) in self.nodes.iter().enumerate() {
                let Some(node) = node else { continue };
                let serves = self
                    .clients
                    .iter()
                    .flatten()
                    .any(|c| c.node == n && c.topic == t);
                if !serves {
                    continue;
                }
                let seen = node.view(topic);
                if seen != want {
                    out.push(format!(
                        "node {n} on {topic}: sees {seen:?}, model {want:?}"
                    ));
                }
                states.push((n, node.state(topic)));
            }
            if let Some((first, state)) = states.first() {
                for (n, other) in &states[1..] {
                    if other != state {
                        out.push(format!(
                            "nodes {first} and {n} disagree on {topic}: {state} vs {other}"
                        ));
                    }
                }
            }
        }
        out
    }

    fn settled(&self) -> bool {
        self.nodes.iter().flatten().all(|n| n.cluster.is_settled())
    }

    async fn quiet(&mut self) {
        QUIET_CHECKS.fetch_add(1, Ordering::Relaxed);
        // A crashed node's ghosts may live until the node timeout; not a moment longer.
        let deadline = match self.last_kill.take() {
            Some(at) => at + NODE_TIMEOUT + Duration::from_millis(500),
            None => Instant::now(),
        }
        .max(Instant::now() + Duration::from_secs(2));
        loop {
            let wrong = self.mismatches();
            if wrong.is_empty() && self.settled() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no convergence after a quiet period (settled: {}):\n{}",
                self.settled(),
                wrong.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let until = Instant::now() + HOLD;
        while Instant::now() < until {
            let wrong = self.mismatches();
            assert!(
                wrong.is_empty(),
                "the views changed back:\n{}",
                wrong.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for c in self.clients.iter_mut().flatten() {
            drain(&mut c.ws).await;
        }
    }

    /// The slot of the `pick`-th live client.
    fn client(&self, pick: usize) -> Option<usize> {
        let live: Vec<usize> = (0..CLIENTS)
            .filter(|&i| self.clients[i].is_some())
            .collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    /// The slot of the `pick`-th live node.
    fn node(&self, pick: usize) -> Option<usize> {
        let live: Vec<usize> = (0..NODES).filter(|&i| self.nodes[i].is_some()).collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    }

    async fn act(&mut self, action: &Action) {
        match *action {
            Action::Join { node, topic } => {
                let Some(slot) = (0..CLIENTS).find(|&i| self.clients[i].is_none()) else {
                    return;
                };
                let Some(node) = self.node(node) else { return };
                let n = self.nodes[node].as_ref().expect("live");
                let (ws, join_ref) = member(&n.server, TOPICS[topic], &format!("c{slot}")).await;
                self.clients[slot] = Some(Client {
                    ws,
                    join_ref,
                    node,
                    topic,
                    tracked: None,
                });
            }
            Action::Track { client, value } => {
                let Some(slot) = self.client(client) else {
                    return;
                };
                let c = self.clients[slot].as_mut().expect("live");
                track(&mut c.ws, &c.join_ref, TOPICS[c.topic], json!({"v": value})).await;
                c.tracked = Some(value);
            }
            Action::Untrack { client } => {
                let Some(slot) = self.client(client) else {
                    return;
                };
                let c = self.clients[slot].as_mut().expect("live");
                let r =
                    c.ws.push(
                        &c.join_ref,
                        TOPICS[c.topic],
                        "presence",
                        json!({"type": "presence", "event": "untrack"}),
                    )
                    .await;
                within(
                    "an untrack reply",
                    Duration::from_secs(1),
                    c.ws.expect_reply(&r),
                )
                .await;
                c.tracked = None;
            }
            Action::Disconnect { client } => {
                let Some(slot) = self.client(client) else {
                    return;
                };
                if let Some(c) = self.clients[slot].take() {
                    c.ws.drop_abruptly();
                }
            }
            Action::Kill { node } => {
                let alive = self.nodes.iter().filter(|n| n.is_some()).count();
                if alive < 2 {
                    return;
                }
                let Some(node) = self.node(node) else { return };
                let n = self.nodes[node].take().expect("live");
                let ghosts = self.clients.iter().flatten().any(|g| {
                    g.node == node
                        && g.tracked.is_some()
                        && self
                            .clients
                            .iter()
                            .flatten()
                            .any(|w| w.node != node && w.topic == g.topic)
                });
                if ghosts {
                    GHOST_KILLS.fetch_add(1, Ordering::Relaxed);
                }
                n.crash();
                for slot in &mut self.clients {
                    if slot.as_ref().is_some_and(|c| c.node == node) {
                        *slot = None;
                    }
                }
                self.last_kill = Some(Instant::now());
            }
            Action::Restart => {
                if let Some(slot) = (0..NODES).find(|&i| self.nodes[i].is_none()) {
                    self.nodes[slot] = Some(Node::start(&self.url, &self.options).await);
                    RESTARTS.fetch_add(1, Ordering::Relaxed);
                }
            }
            Action::Quiet => self.quiet().await,
        }
    }
}

async fn run_case(url: String, actions: Vec<Action>) {
    let options = options("model");
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Some(Node::start(&url, &options).await));
    }
    let mut world = World {
        url,
        options,
        nodes,
        clients: (0..CLIENTS).map(|_| None).collect(),
        last_kill: None,
    };
    // Every case starts with members on every node, so crashes leave ghosts for others to see.
    for (node, topic) in [(0, 0), (1, 0), (2, 1), (0, 1)] {
        world.act(&Action::Join { node, topic }).await;
    }
    for client in [0, 2] {
        world.act(&Action::Track { client, value: 0 }).await;
    }
    for action in &actions {
        world.act(action).await;
    }
    world.quiet().await;
}

#[test]
fn every_node_converges_to_the_model() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let config = ProptestConfig {
        cases: 20,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(actions in proptest::collection::vec(action(), 1..=30))| {
        runtime.block_on(run_case(redis.url(), actions));
    });
    println!(
        "20 random cases converged in {:?}: {} quiet periods checked, {} crashes that left ghosts, {} restarts",
        started.elapsed(),
        QUIET_CHECKS.load(Ordering::Relaxed),
        GHOST_KILLS.load(Ordering::Relaxed),
        RESTARTS.load(Ordering::Relaxed)
    );
}
