//! Cluster mode for headcount: several nodes share presence and broadcast through Redis.
//!
//! [`RedisCluster`] implements [`Cluster`]: a node built with
//! `Hub::with_cluster(config, RedisCluster::connect(url, options).await?)` shows its clients
//! every presence and broadcast of their channels, whichever node the others are on.
//!
//! # How
//!
//! Redis holds the authoritative presence. Per channel: a hash of entries (field: the owner id
//! `"<node>:<member>"`; value: JSON with the key, `phx_ref`, `phx_ref_prev`, payload, owning node
//! and its epoch) and a sequence number, both changed only by Lua scripts that also PUBLISH the
//! change with its new sequence number and its origin node. Broadcasts go to the same pub/sub
//! channel, so one node's changes and broadcasts about a channel stay in order. Each node
//! subscribes only to the channels it serves; it ignores its own messages and resynchronises a
//! channel from the hash when a sequence number shows a gap. See [`keys`] for the layout,
//! [`scripts`] for the scripts and [`wire`] for the formats.
//!
//! Every trait method only updates local state and queues work: a *writer* task drains the
//! queue in pipelined batches, a *subscriber* task owns the pub/sub connection, a *heartbeat*
//! task keeps the node alive in Redis, a *reaper* task removes dead nodes' entries and a
//! *watchdog* pings Redis every 250 ms (see [`liveness`]).
//!
//! # Guarantees (those of [`Cluster`], and how they are kept)
//!
//! * **Scope**: `serve` subscribes, then reads the channel's hash and sequence number in one
//!   script and hands the hub every entry another node owns (`remote_reset`); `unserve`
//!   unsubscribes.
//! * **Order**: one node's writes go through one queue and one connection, and each change of a
//!   channel gets the next sequence number inside the script that publishes it.
//! * **No echo**: every message names its origin node; a node skips its own.
//! * **Convergence**: a gap in the sequence numbers, a new pub/sub connection or a new `serve`
//!   triggers a resynchronisation (snapshot, `remote_reset`, then the messages that arrived
//!   meanwhile, minus those the snapshot holds).
//! * **No ghosts**: a clean [`Cluster::shutdown`] removes the node's entries at once. A node that
//!   dies stops refreshing its heartbeat key; within the node timeout another node, holding a
//!   short lock, removes its entries with the same script path, so every leave is published with
//!   its sequence number. A restarted process is a new node (fresh id): its previous life's
//!   entries are reaped and never written again.
//! * **No blocking**: trait methods take one short mutex and return. The queue holds at most one
//!   write per local member (coalesced: only its latest entry is written) and at most
//!   `queue_bound` broadcasts and `queue_bytes` bytes of broadcasts, the batch being sent
//!   included (more are dropped and counted).
//!
//! # When Redis fails
//!
//! * Every call times out after `call_timeout` (2 s by default); nothing waits longer, and the
//!   hub never waits at all. Local presence and same-node broadcast go on unchanged.
//! * While Redis is unreachable, broadcasts toward other nodes are dropped (they would arrive
//!   late); presence changes are kept in the local mirror, one per member.
//! * When Redis answers again (a restart, empty or not; a healed network; the end of a freeze),
//!   the node writes every entry it owns again, resubscribes, and resynchronises every channel it
//!   serves; all nodes converge.
//! * A node whose heartbeat expired while it was cut off is reaped by the others (its members
//!   leave for them); when it reaches Redis again it comes back with a new epoch and re-asserts
//!   its entries (they join again). A reaper never removes what a node wrote after coming back.
//! * A subscriber that Redis disconnects (for instance past `client-output-buffer-limit
//!   pubsub`) reconnects and resynchronises.
//! * [`Cluster::health`] reports `connected: false` with the last error while either connection
//!   is failing, or within 0.75 s of Redis going silent (the watchdog's ping); when Redis answers
//!   again, the watchdog beats at once and cuts every backoff pause short.
//!
//! Redis Cluster: every script touches the keys of one hash tag, and a channel's pub/sub channel
//! carries the same tag, ready for sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`); this crate speaks
//! to a single Redis (or a primary behind a proxy) for now.

pub mod keys;
pub mod liveness;
mod node;
pub mod scripts;
mod subscriber;
mod sync;
pub mod wire;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use headcount_cluster::{
    Broadcast, ChannelKey, Cluster, ClusterSink, Health, MemberId, PresenceEntry,
};
use tokio::task::JoinHandle;

use node::Inner;

/// The default of [`RedisOptions::queue_bytes`].
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// How a [`RedisCluster`] behaves. Start from [`RedisOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The first part of every key and pub/sub channel (default `hc`). No braces.
    pub prefix: String,
    /// How long the presences of a node that died may outlive it (default 10 s).
    pub node_timeout: Duration,
    /// How often a node refreshes its heartbeat (default: a quarter of the node timeout; at
    /// most half of the heartbeat's lifetime, which is three quarters of the node timeout).
    pub heartbeat_interval: Option<Duration>,
    /// How long any Redis call may take before it counts as failed (default 2 s).
    pub call_timeout: Duration,
    /// How many broadcasts may wait for Redis before more are dropped (default 10 000).
    pub queue_bound: usize,
    /// How many bytes of broadcasts the node may hold for Redis (waiting, and in the batch
    /// being sent) before more are dropped (default 16 MiB: five of the largest legal
    /// broadcasts, tens of thousands of small ones).
    pub queue_bytes: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "hc".into(),
            node_timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            call_timeout: Duration::from_secs(2),
            queue_bound: 10_000,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

impl RedisOptions {
    /// These options with key prefix `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// These options with node timeout `timeout`.
    pub fn with_node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// These options with a byte bound of `bytes` on the queue toward Redis.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// The heartbeat interval in force.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.node_timeout / 4)
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Options(why.to_owned()));
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return bad("the key prefix must be non-empty and hold no brace");
        }
        if self.node_timeout < Duration::from_millis(400) {
            return bad("the node timeout must be at least 400 ms");
        }
        let (ttl, _) = liveness::timings(self.node_timeout);
        let beat = self.heartbeat();
        if beat.is_zero() || beat > ttl / 2 {
            return bad(
                "the heartbeat interval must be positive and at most 3/8 of the node timeout",
            );
        }
        if self.call_timeout.is_zero() {
            return bad("the call timeout must be positive");
        }
        if self.queue_bound == 0 {
            return bad("the queue bound must be positive");
        }
        if self.queue_bytes == 0 {
            return bad("the queue's byte bound must be positive");
        }
        Ok(())
    }
}

/// Why [`RedisCluster::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// The options do not hold together.
    #[error("invalid Redis options: {0}")]
    Options(String),
    /// Redis did not answer.
    #[error("cannot reach Redis: {0}")]
    Unreachable(String),
}

/// What a node has done, for tests and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The node's id.
    pub node: String,
    /// The node's epoch: 1, plus one each time it came back after its heartbeat expired (or
    /// Redis forgot it).
    pub epoch: u64,
    /// Broadcasts not relayed because Redis was unreachable or the queue was full.
    pub broadcasts_dropped: u64,
    /// Channels resynchronised after a gap.
    pub resyncs: u64,
    /// Pub/sub connections made (1 if it never had to reconnect).
    pub pubsub_connections: u64,
    /// Times every owned entry was written again.
    pub reasserts: u64,
    /// Dead nodes this node reaped.
    pub nodes_reaped: u64,
    /// Entries this node removed while reaping.
    pub entries_reaped: u64,
    /// Channels served.
    pub served: usize,
    /// Entries owned.
    pub owned: usize,
}

/// A node of a Redis-backed cluster. See the crate documentation.
pub struct RedisCluster {
    inner: Arc<Inner>,
    /// The writer, heartbeat, reaper, subscriber and watchdog tasks (aborted on drop).
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.inner.node)
            .finish()
    }
}

impl RedisCluster {
    /// Connects to the Redis at `url` (`redis://host:port/db`), registers a new node and starts
    /// its tasks. Fails if the URL or the options are invalid or Redis does not answer.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Arc<RedisCluster>, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Url(e.to_string()))?;
        options.check()?;
        let (ttl, reap) = liveness::timings(options.node_timeout);
        let inner = Arc::new(Inner::new(client, options, ttl, reap));
        let (_, epoch) = liveness::beat(&inner)
            .await
            .map_err(|f| Error::Unreachable(f.0))?;
        inner.epoch.store(epoch, Ordering::Release);
        let tasks = vec![
            tokio::spawn(writer::run(inner.clone())),
            tokio::spawn(liveness::heartbeat(inner.clone())),
            tokio::spawn(liveness::reaper(inner.clone())),
            tokio::spawn(subscriber::run(inner.clone())),
            tokio::spawn(liveness::watch(inner.clone())),
        ];
        tracing::info!(node = %inner.node, prefix = %inner.options.prefix, "joined the redis cluster");
        Ok(Arc::new(RedisCluster {
            inner,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// What the node has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let st = self.inner.state();
        Stats {
            node: self.inner.node.clone(),
            epoch: self.inner.epoch.load(Ordering::Acquire),
            broadcasts_dropped: c.broadcasts_dropped.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            pubsub_connections: c.pubsub_connections.load(Ordering::Relaxed),
            reasserts: c.reasserts.load(Ordering::Relaxed),
            nodes_reaped: c.nodes_reaped.load(Ordering::Relaxed),
            entries_reaped: c.entries_reaped.load(Ordering::Relaxed),
            served: st.served.len(),
            owned: st.owned.values().map(|m| m.len()).sum(),
        }
    }

    /// Whether the node is in step with Redis: nothing waits to be written, and every channel it
    /// serves is subscribed and synchronised. (Messages other nodes sent a moment ago may still
    /// be on their way.) A test hook: only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn is_settled(&self) -> bool {
        let st = self.inner.state();
        st.queue.is_empty()
            && !st.reassert
            && !st.writing
            && st
                .served
                .iter()
                .all(|(key, generation)| st.live.get(key) == Some(generation))
    }

    /// Stops at once without a word to Redis: every task ends and every connection closes, as
    /// if the process had died. The other nodes reap this node's entries within the node
    /// timeout. A test hook for crashes: only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn crash(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.crashed.store(true, Ordering::Release);
        for task in self.take_tasks() {
            task.abort();
        }
        self.inner.drop_connection();
    }

    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut tasks = self.take_tasks();
        // Let the writer finish the batch it is sending (its changes must not land after the
        // removal below), then stop everything.
        self.inner.writer_wake.notify_one();
        if !tasks.is_empty() {
            let writer = tasks.remove(0);
            let abort = writer.abort_handle();
            if tokio::time::timeout(Duration::from_millis(500), writer)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        for task in tasks {
            task.abort();
        }
        let inner = &self.inner;
        let keys = inner.layout.node(&inner.node);
        let mut channels: Vec<String> = inner.state().owned.keys().map(keys::channel_id).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(&keys.channels);
        if let Ok((indexed,)) = inner.call::<(Vec<String>,)>(&pipe).await {
            channels.extend(indexed);
        }
        channels.sort();
        channels.dedup();
        const EVERY_EPOCH: u64 = (1 << 53) - 1;
        let removed = liveness::remove_entries(inner, &inner.node, EVERY_EPOCH, &channels).await;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(&keys.alive)
            .arg(&keys.epoch)
            .arg(&keys.channels)
            .arg(&keys.reap)
            .ignore()
            .cmd("SREM")
            .arg(inner.layout.nodes())
            .arg(&inner.node)
            .ignore();
        let left = inner.call::<()>(&pipe).await;
        match (removed, left) {
            (Ok(n), Ok(())) => {
                tracing::info!(node = %inner.node, entries = n, "left the redis cluster")
            }
            _ => tracing::warn!(
                node = %inner.node,
                "could not remove this node's presences: the other nodes will reap them"
            ),
        }
        inner.drop_connection();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::Release);
        for task in self.take_tasks() {
            task.abort();
        }
    }
}

impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.inner.node
    }

    fn is_distributed(&self) -> bool {
        true
    }

    fn attach(&self, sink: Weak<dyn ClusterSink>) {
        let _ = self.inner.sink.set(sink);
        self.inner.subscriber_wake.notify_one();
    }

    fn serve(&self, key: &ChannelKey) {
        if self.inner.is_stopped() {
            return;
        }
        let mut st = self.inner.state();
        st.next_generation += 1;
        let generation = st.next_generation;
        st.served.insert(key.clone(), generation);
        drop(st);
        self.inner.subscriber_wake.notify_one();
    }

    fn unserve(&self, key: &ChannelKey) {
        if self.inner.is_stopped() {
            return;
        }
        self.inner.state().served.remove(key);
        self.inner.subscriber_wake.notify_one();
    }

    fn publish(&self, key: &ChannelKey, msg: &Broadcast<'_>) {
        if self.inner.is_stopped() {
            return;
        }
        self.inner
            .queue_publish(key, wire::broadcast_message(&self.inner.node, msg));
    }

    fn presence(&self, key: &ChannelKey, member: MemberId, entry: Option<&PresenceEntry>) {
        if self.inner.is_stopped() {
            return;
        }
        self.inner.queue_presence(key, member, entry);
    }

    fn health(&self) -> Health {
        if self.inner.is_stopped() {
            return Health {
                connected: false,
                detail: "redis: stopped".into(),
            };
        }
        let links = self.inner.links();
        match (&links.commands_error, &links.pubsub_error) {
            (None, None) => Health {
                connected: true,
                detail: format!(
                    "redis ok (node {}, epoch {})",
                    self.inner.node,
                    self.inner.epoch.load(Ordering::Acquire)
                ),
            },
            (Some(e), _) | (None, Some(e)) => Health {
                connected: false,
                detail: format!("redis unreachable: {e}"),
            },
        }
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.stop())
    }
}
