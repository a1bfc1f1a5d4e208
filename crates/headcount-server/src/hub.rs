//! The channel registry, the node's connections, and what the node hears from its cluster.
//!
//! A [`Hub`] maps topics to [`Channel`]s, sharded by topic hash, keeps the node's connections for
//! the shared timer, owns the node-wide rates and counters, and applies what other nodes send
//! (it is the [`ClusterSink`]). The channels themselves are in [`crate::channel`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::channel::ChannelState;
pub use crate::channel::{Broadcast, Channel, ChannelKey, Coalescing, Member, MemberId, Owner};
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterSink, PresenceEntry, RelayedBroadcast, Standalone};
use crate::config::Config;
use crate::conn::{Conn, ConnId};
use crate::limits::{ClientRates, NodeRate};
use crate::lock;
use crate::metrics::Metrics;

const SHARDS: usize = 64;

/// How many HTTP API clients' event windows are remembered at once. A window lasts a second,
/// so this many distinct clients inside one second is far beyond any real app; past it, the
/// oldest window is forgotten (see [`crate::limits::Windows`]).
const HTTP_CLIENTS: usize = 10_000;

type Shard<K, V> = Mutex<HashMap<K, V>>;

/// Every channel and connection of this node.
#[derive(Debug)]
pub struct Hub {
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// Sockets with at least one channel joined (Supabase's "connected users").
    pub users: std::sync::atomic::AtomicUsize,
    /// Joins per second, node-wide.
    pub joins: NodeRate,
    /// Client broadcasts per second, node-wide.
    pub events: NodeRate,
    /// Presence calls per second, node-wide.
    pub presence_events: NodeRate,
    /// Broadcasts per second of each HTTP API client, in front of [`Hub::events`]. (Sockets
    /// keep their own windows in their session.)
    pub http_clients: ClientRates,
    /// Set when the server stops accepting traffic (shutdown); `/readyz` then says so.
    pub draining: std::sync::atomic::AtomicBool,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Bytes of partially received messages across every socket ([`Config::max_buffered_input`]).
    pub input_budget: Arc<crate::ws::InputBudget>,
    /// The one clock of every timeout, window and schedule on this node.
    pub clock: Clock,
    /// Presence diff coalescing.
    pub coalescing: Arc<Coalescing>,
    /// The other nodes, if any.
    pub cluster: Arc<dyn Cluster>,
    channels: Box<[Shard<ChannelKey, Arc<Channel>>]>,
    conns: Box<[Shard<ConnId, Arc<Conn>>]>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    /// Tells this node's `phx_ref`s apart from other nodes'; each channel names its metas.
    ref_node: u16,
    node: [u8; 6],
}

impl Hub {
    /// An empty, standalone hub.
    pub fn new(config: Config) -> Hub {
        Hub::build(config, Arc::new(Standalone::new()))
    }

    /// A hub that shares presence and broadcast with other nodes through `cluster`.
    pub fn with_cluster(config: Config, cluster: Arc<dyn Cluster>) -> Arc<Hub> {
        let hub = Arc::new(Hub::build(config, cluster));
        let sink: std::sync::Weak<dyn ClusterSink> = Arc::downgrade(&hub) as _;
        hub.cluster.attach(sink);
        hub
    }

    fn build(config: Config, cluster: Arc<dyn Cluster>) -> Hub {
        let node: [u8; 6] = rand_node();
        let clock = Clock::new();
        Hub {
            cluster,
            clock,
            users: Default::default(),
            draining: Default::default(),
            coalescing: Arc::new(Coalescing::new(
                clock,
                config.presence_window,
                config.presence_coalesce_members,
            )),
            metrics: Default::default(),
            input_budget: Arc::new(crate::ws::InputBudget::new(config.max_buffered_input)),
            joins: NodeRate::per_second(config.limits.max_joins_per_second),
            events: NodeRate::per_second(config.limits.max_events_per_second),
            presence_events: NodeRate::per_second(config.limits.max_presence_events_per_second),
            http_clients: ClientRates::per_second(
                config.limits.client_events_per_second(),
                HTTP_CLIENTS,
            ),
            config: Arc::new(config),
            channels: (0..SHARDS).map(|_| Mutex::default()).collect(),
            conns: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
            ref_node: u16::from_be_bytes([node[4], node[5]]),
            node,
        }
    }

    /// A fresh id for a connection or a membership.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh presence key for a member that joined without one: a UUID version 1, as
    /// Supabase uses.
    pub fn new_presence_key(&self) -> String {
        uuid::Uuid::now_v1(&self.node).to_string()
    }

    fn shard<K: Hash>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Adds `member` to the channel `key` (created if needed), queuing `reply` and then, with
    /// `send_state`, the presence state for it.
    pub fn join(
        &self,
        key: ChannelKey,
        mut member: Member,
        reply: Bytes,
        send_state: bool,
    ) -> Arc<Channel> {
        let shard = &self.channels[self.shard(&key)];
        loop {
            let channel = lock(shard)
                .entry(key.clone())
                .or_insert_with(|| {
                    self.cluster.serve(&key);
                    Arc::new_cyclic(|me| Channel {
                        key: key.clone(),
                        state: Mutex::new(ChannelState::new(self.coalescing.rule(), self.ref_node)),
                        metrics: self.metrics.clone(),
                        cluster: self.cluster.clone(),
                        coalescing: self.coalescing.clone(),
                        me: me.clone(),
                    })
                })
                .clone();
            match channel.add(member, reply.clone(), send_state) {
                Ok(()) => return channel,
                Err(back) => member = back,
            }
        }
    }

    /// Removes member `id` from `channel` (and its presence), dropping the channel when empty.
    pub fn leave(&self, channel: &Arc<Channel>, id: MemberId) {
        if !channel.remove(id) {
            return;
        }
        let mut shard = lock(&self.channels[self.shard(&channel.key)]);
        let mut state = channel.lock();
        if state.members.is_empty() && !state.dead {
            state.dead = true;
            shard.remove(&channel.key);
            self.cluster.unserve(&channel.key);
        }
    }

    /// The channel `key`, if it exists.
    pub fn channel(&self, key: &ChannelKey) -> Option<Arc<Channel>> {
        lock(&self.channels[self.shard(key)]).get(key).cloned()
    }

    /// Sends a server-originated broadcast (the HTTP API) to every member of the channel `key`
    /// that may read broadcasts; returns whether the channel exists here.
    pub fn broadcast_to(&self, key: &ChannelKey, msg: Broadcast<'_>) -> bool {
        match self.channel(key) {
            Some(channel) => {
                channel.broadcast(0, true, msg);
                true
            }
            None => {
                // Nobody here, but members on other nodes may be listening.
                if self.cluster.is_distributed() {
                    self.cluster.publish(key, &msg);
                }
                false
            }
        }
    }

    /// Closes every connection `select` picks, with `code` and `reason`; returns how many.
    pub fn disconnect(&self, select: impl Fn(&Conn) -> bool, code: u16, reason: &str) -> usize {
        let mut n = 0;
        for conn in self.conns() {
            // Only sockets this call closes count: one already on its way out is not news.
            if select(&conn) && conn.close(code, reason) {
                n += 1;
            }
        }
        n
    }

    /// Sends the pending presence diffs whose window has passed. Called by the flusher task.
    pub fn flush_presence(&self) {
        let due: Vec<std::sync::Weak<Channel>> = std::mem::take(&mut *lock(&self.coalescing.queue));
        if due.is_empty() {
            return;
        }
        let now = self.clock.ms();
        let mut again = Vec::new();
        for weak in due {
            if let Some(channel) = weak.upgrade()
                && channel.flush(now)
            {
                again.push(weak);
            }
        }
        if !again.is_empty() {
            lock(&self.coalescing.queue).extend(again);
        }
    }

    /// Every channel.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels
            .iter()
            .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Registers a connection with the shared timer.
    pub fn add_conn(&self, conn: Arc<Conn>) {
        lock(&self.conns[self.shard(&conn.id)]).insert(conn.id, conn);
    }

    /// Forgets a connection.
    pub fn remove_conn(&self, id: ConnId) {
        lock(&self.conns[self.shard(&id)]).remove(&id);
    }

    /// Every connection.
    pub fn conns(&self) -> Vec<Arc<Conn>> {
        self.conns
            .iter()
            .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The number of connections.
    pub fn conn_count(&self) -> usize {
        self.conns.iter().map(|s| lock(s).len()).sum()
    }

    /// One pass of the shared timer: raises [`crate::conn::signal`]s on sockets that have been
    /// idle too long, unjoined or stuck in an incomplete message, and cuts those whose writer is stuck
    /// behind a backlog ([`Conn::check_progress`]).
    /// `now_ms` reads the hub's [`Clock`].
    pub fn sweep(&self, now_ms: u64) {
        let idle_ms = self.config.idle_timeout.as_millis() as u64;
        let unjoined_ms = self.config.unjoined_timeout.as_millis() as u64;
        let incomplete_ms = self.config.incomplete_message_timeout.as_millis() as u64;
        for shard in self.conns.iter() {
            for conn in lock(shard).values() {
                conn.check_progress();
                let mut bits = 0;
                if now_ms.saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed)) >= idle_ms {
                    bits |= crate::conn::signal::IDLE;
                }
                let incomplete = conn.incomplete_since_ms.load(Ordering::Relaxed);
                if incomplete != 0 && now_ms.saturating_sub(incomplete) >= incomplete_ms {
                    bits |= crate::conn::signal::INCOMPLETE;
                }
                let unjoined = conn.unjoined_since_ms.load(Ordering::Relaxed);
                if unjoined != 0 && now_ms.saturating_sub(unjoined) >= unjoined_ms {
                    bits |= crate::conn::signal::UNJOINED;
                }
                if bits != 0 {
                    conn.raise(bits);
                }
            }
        }
    }
}

impl ClusterSink for Hub {
    fn remote_broadcast(&self, key: &ChannelKey, msg: &RelayedBroadcast) {
        if let (Some(channel), Some(msg)) = (self.channel(key), msg.as_broadcast()) {
            channel.deliver(msg);
        }
    }

    fn remote_presence(&self, key: &ChannelKey, owner: &str, entry: Option<PresenceEntry>) {
        if let Some(channel) = self.channel(key) {
            channel.remote_set(owner, entry);
        }
    }

    fn remote_reset(&self, key: &ChannelKey, entries: Vec<(String, PresenceEntry)>) {
        if let Some(channel) = self.channel(key) {
            channel.remote_replace(entries);
        }
    }
}

fn rand_node() -> [u8; 6] {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    // A random node id has the multicast bit set (RFC 4122 §4.5).
    [b[0] | 0x01, b[1], b[2], b[3], b[4], b[5]]
}
