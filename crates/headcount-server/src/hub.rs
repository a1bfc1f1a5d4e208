//! The channel registry and fan-out.
//!
//! A [`Hub`] maps topics to [`Channel`]s, sharded by topic hash. A channel owns its member list
//! and its presence state behind one short mutex: every change to presence, and every frame it
//! fans out, happens inside that critical section, so all members see the same frames in the
//! same order. The lock is never held across an `.await`; fanning out only pushes shared
//! [`Bytes`] into each member's outbox.
//!
//! In a cluster, a channel's presence holds the entries of its local members
//! ([`Owner::Local`]) and a replica of the other nodes' ([`Owner::Remote`]); the hub tells the
//! [`Cluster`] about local changes (inside the channel lock, so they leave in order) and applies
//! what it hears as a [`ClusterSink`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use headcount_presence::{ChannelPresence, Diff, Payload, PhxRef, PresenceView, RefGenerator};
use headcount_protocol::{Encoding, Ref, Serializer, encode};

use crate::cluster::{Cluster, ClusterSink, PresenceEntry, RelayedBroadcast, Standalone};
use crate::config::Config;
use crate::conn::{Conn, ConnId};
use crate::frames;
use crate::limits::NodeRate;
use crate::metrics::Metrics;
use crate::policy::Grants;

/// One socket's membership of one channel, unique within this node.
pub type MemberId = u64;

/// Who owns a presence entry: a member of this node, or another node's member.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A member of this node.
    Local(MemberId),
    /// Another node's member, by its cluster-wide owner id.
    Remote(Arc<str>),
}

const SHARDS: usize = 64;

/// Names a channel. Public and private channels with the same topic are different rooms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// Whether the channel was joined with `config.private: true`.
    pub private: bool,
    /// The full topic, such as `realtime:room1`.
    pub topic: Box<str>,
}

/// A member of a channel.
#[derive(Debug)]
pub struct Member {
    /// Unique within this node.
    pub id: MemberId,
    /// The member's socket.
    pub conn: Arc<Conn>,
    /// The `join_ref` the member joined with; channel pushes carry it.
    pub join_ref: Ref,
    /// Whether the member receives its own broadcasts (`config.broadcast.self`).
    pub self_broadcast: bool,
    /// What the member may receive: public channels grant everything, private ones what the
    /// policy says.
    pub grants: Grants,
}

/// A message to fan out as a broadcast.
#[derive(Debug, Clone, Copy)]
pub enum Broadcast<'a> {
    /// A JSON `broadcast` payload, relayed byte for byte.
    Json(&'a str),
    /// A user broadcast from a binary push.
    User {
        /// The user's event name.
        event: &'a str,
        /// How `body` is encoded.
        encoding: Encoding,
        /// The user's payload.
        body: &'a [u8],
    },
}

impl Broadcast<'_> {
    fn size(&self) -> usize {
        match self {
            Broadcast::Json(p) => p.len(),
            Broadcast::User { event, body, .. } => event.len() + body.len(),
        }
    }

    fn encode(&self, serializer: Serializer, topic: &str) -> Option<Bytes> {
        let hint = self.size() + topic.len() + 64;
        match *self {
            Broadcast::Json(payload) => Some(frames::build(hint, |out| {
                encode::broadcast(out, serializer, topic, "broadcast", payload)
            })),
            Broadcast::User {
                event,
                encoding,
                body,
            } => frames::try_build(hint, |out| {
                encode::user_broadcast(out, serializer, topic, event, encoding, body)
            }),
        }
    }
}

/// The mutable state of a channel. Owned by [`Channel::state`]'s mutex.
#[derive(Debug, Default)]
struct ChannelState {
    members: Vec<Member>,
    presence: ChannelPresence<Owner>,
    /// What the members have been told, while diffs are coalesced: the presence minus
    /// `pending`. A member who joins gets this state, then `pending` when it is flushed, so it
    /// learns each presence exactly once.
    published: PresenceView,
    /// Changes not yet sent, merged (a join and a leave of one meta cancel out).
    pending: Diff,
    /// When the last diff went out (milliseconds on the hub's clock); `None` before the first.
    last_flush_ms: Option<u64>,
    /// Whether the channel waits in the hub's flush queue.
    queued: bool,
    /// Set, under the registry shard's lock, when the channel left the registry: a socket that
    /// found it there just before must look again.
    dead: bool,
}

/// One topic's members and presence.
#[derive(Debug)]
pub struct Channel {
    /// The channel's name.
    pub key: ChannelKey,
    state: Mutex<ChannelState>,
    /// The hub's counters.
    metrics: Arc<Metrics>,
    /// Where local changes go.
    cluster: Arc<dyn Cluster>,
    /// Diff coalescing: the window, and the hub's queue of channels with pending diffs.
    coalescing: Arc<Coalescing>,
    /// This channel, for the flush queue.
    me: std::sync::Weak<Channel>,
}

/// Presence diff coalescing, shared by a hub's channels.
///
/// A channel whose presence has been quiet for `window` sends a change at once; changes that
/// follow within the window are merged and sent together when it ends. A join storm in a large
/// channel then costs one frame per member per window instead of one per member per join.
#[derive(Debug)]
pub struct Coalescing {
    /// The window; zero sends every diff at once.
    pub window: std::time::Duration,
    /// Channels with pending diffs.
    queue: Mutex<Vec<std::sync::Weak<Channel>>>,
    /// The hub's clock origin.
    epoch: std::time::Instant,
}

impl Coalescing {
    fn new(window: std::time::Duration) -> Coalescing {
        Coalescing {
            window,
            queue: Mutex::default(),
            epoch: std::time::Instant::now(),
        }
    }

    /// Milliseconds since the hub started.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Sends one frame per serializer, encoded at most once each, to every member but `skip`
/// that `may_read`.
fn fan_out(
    members: &[Member],
    skip: Option<MemberId>,
    may_read: impl Fn(&Grants) -> bool,
    encode: impl Fn(Serializer) -> Option<Bytes>,
) {
    let mut cache: [Option<Option<Bytes>>; 2] = [None, None];
    for m in members {
        if Some(m.id) == skip || !may_read(&m.grants) {
            continue;
        }
        let slot = match m.conn.serializer {
            Serializer::V1 => &mut cache[0],
            Serializer::V2 => &mut cache[1],
        };
        if let Some(frame) = slot.get_or_insert_with(|| encode(m.conn.serializer)) {
            m.conn.push(frame.clone());
        }
    }
}

fn publish_diff(metrics: &Metrics, topic: &str, members: &[Member], diff: &Diff) {
    Metrics::inc(&metrics.presence_events_total);
    let json = diff.to_json();
    fan_out(
        members,
        None,
        |g| g.presence_read,
        |serializer| {
            Some(frames::build(json.len() + topic.len() + 48, |out| {
                encode::broadcast(out, serializer, topic, "presence_diff", &json)
            }))
        },
    );
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a presence change to the members now, or merges it into the pending diff when the
    /// channel's last diff went out less than a window ago.
    fn changed(&self, state: &mut ChannelState, diff: Diff) {
        let window = self.coalescing.window;
        if window.is_zero() {
            publish_diff(&self.metrics, &self.key.topic, &state.members, &diff);
            return;
        }
        let now = self.coalescing.now_ms();
        let quiet = state
            .last_flush_ms
            .is_none_or(|last| now >= last + window.as_millis() as u64);
        if state.pending.is_empty() && quiet {
            publish_diff(&self.metrics, &self.key.topic, &state.members, &diff);
            state.published.apply(&diff);
            state.last_flush_ms = Some(now);
            return;
        }
        state.pending.merge(diff);
        if !state.queued {
            state.queued = true;
            lock(&self.coalescing.queue).push(self.me.clone());
        }
    }

    /// Sends the pending diff if the window has passed; returns whether the channel must stay
    /// queued.
    fn flush(&self, now: u64) -> bool {
        let mut state = self.lock();
        if state.dead || state.pending.is_empty() {
            state.queued = false;
            return false;
        }
        if state
            .last_flush_ms
            .is_some_and(|last| now < last + self.coalescing.window.as_millis() as u64)
        {
            return true;
        }
        let diff = std::mem::take(&mut state.pending);
        if !diff.is_empty() {
            publish_diff(&self.metrics, &self.key.topic, &state.members, &diff);
            state.published.apply(&diff);
        }
        state.last_flush_ms = Some(now);
        state.queued = false;
        false
    }

    /// Adds a member: queues its join `reply` and, when `send_state`, the `presence_state`,
    /// before any later diff. Gives the member back if the channel has just died.
    fn add(&self, member: Member, reply: Bytes, send_state: bool) -> Result<(), Member> {
        let mut state = self.lock();
        if state.dead {
            return Err(member);
        }
        member.conn.push(reply);
        if send_state {
            let json = if self.coalescing.window.is_zero() {
                state.presence.state_json()
            } else {
                state.published.state_json()
            };
            let topic = &self.key.topic;
            member
                .conn
                .push(frames::build(json.len() + topic.len() + 48, |out| {
                    encode::push(
                        out,
                        member.conn.serializer,
                        &member.join_ref,
                        topic,
                        "presence_state",
                        &json,
                    )
                }));
        }
        state.members.push(member);
        Ok(())
    }

    /// Removes a member and its presence (a leave diff goes to the others). Returns whether the
    /// channel is now empty.
    fn remove(&self, id: MemberId) -> bool {
        let mut state = self.lock();
        if let Some(at) = state.members.iter().position(|m| m.id == id) {
            state.members.swap_remove(at);
        }
        if let Some(diff) = state.presence.untrack(&Owner::Local(id)) {
            self.changed(&mut state, diff);
            self.cluster.presence(&self.key, id, None);
        }
        state.members.is_empty()
    }

    /// Fans a broadcast made on this node out to every member, the sender included only with
    /// `include_self`, and to the other nodes.
    pub fn broadcast(&self, from: MemberId, include_self: bool, msg: Broadcast<'_>) {
        let started = std::time::Instant::now();
        Metrics::inc(&self.metrics.broadcasts_total);
        let state = self.lock();
        let skip = if include_self { None } else { Some(from) };
        fan_out(
            &state.members,
            skip,
            |g| g.broadcast_read,
            |serializer| msg.encode(serializer, &self.key.topic),
        );
        if self.cluster.is_distributed() {
            self.cluster.publish(&self.key, &msg);
        }
        drop(state);
        self.metrics.fanout_seconds.observe(started.elapsed());
    }

    /// Fans a broadcast from another node out to every member of this one.
    fn deliver(&self, msg: Broadcast<'_>) {
        let started = std::time::Instant::now();
        let state = self.lock();
        fan_out(
            &state.members,
            None,
            |g| g.broadcast_read,
            |serializer| msg.encode(serializer, &self.key.topic),
        );
        drop(state);
        self.metrics.fanout_seconds.observe(started.elapsed());
    }

    /// Tracks member `id` under `key`. `reply` goes to the member first, then the diff (if
    /// anything changed) to every member.
    pub fn track(
        &self,
        id: MemberId,
        conn: &Conn,
        key: &str,
        payload: Payload,
        phx_ref: PhxRef,
        reply: Bytes,
    ) {
        let mut state = self.lock();
        conn.push(reply);
        if let Some(diff) = state
            .presence
            .track(Owner::Local(id), key, payload, phx_ref)
        {
            self.changed(&mut state, diff);
            if let Some((key, meta)) = state.presence.get(&Owner::Local(id)) {
                let entry = PresenceEntry {
                    key: key.into(),
                    meta: meta.clone(),
                };
                self.cluster.presence(&self.key, id, Some(&entry));
            }
        }
    }

    /// Untracks member `id`. `reply`, if any, goes to the member first, then the leave to every
    /// member.
    pub fn untrack(&self, id: MemberId, conn: &Conn, reply: Option<Bytes>) {
        let mut state = self.lock();
        if let Some(reply) = reply {
            conn.push(reply);
        }
        if let Some(diff) = state.presence.untrack(&Owner::Local(id)) {
            self.changed(&mut state, diff);
            self.cluster.presence(&self.key, id, None);
        }
    }

    /// Changes what member `id` may receive (after a token refresh re-evaluated the policy).
    pub fn set_grants(&self, id: MemberId, grants: Grants) {
        if let Some(m) = self.lock().members.iter_mut().find(|m| m.id == id) {
            m.grants = grants;
        }
    }

    /// The payload member `id` is tracked with, if any.
    pub fn tracked_payload(&self, id: MemberId) -> Option<Payload> {
        self.lock()
            .presence
            .get(&Owner::Local(id))
            .map(|(_, meta)| meta.payload.clone())
    }

    /// The presence state as `presence_state` sends it.
    pub fn presence_json(&self) -> Arc<str> {
        self.lock().presence.state_json()
    }

    /// `(members, presence keys, metas)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.members.len(),
            state.presence.key_count(),
            state.presence.meta_count(),
        )
    }
}

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
    /// Set when the server stops accepting traffic (shutdown); `/readyz` then says so.
    pub draining: std::sync::atomic::AtomicBool,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Presence diff coalescing.
    pub coalescing: Arc<Coalescing>,
    /// The other nodes, if any.
    pub cluster: Arc<dyn Cluster>,
    channels: Box<[Shard<ChannelKey, Arc<Channel>>]>,
    conns: Box<[Shard<ConnId, Arc<Conn>>]>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    refs: Mutex<RefGenerator>,
    node: [u8; 6],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        Hub {
            cluster,
            users: Default::default(),
            draining: Default::default(),
            coalescing: Arc::new(Coalescing::new(config.presence_window)),
            metrics: Default::default(),
            joins: NodeRate::per_second(config.limits.max_joins_per_second),
            events: NodeRate::per_second(config.limits.max_events_per_second),
            presence_events: NodeRate::per_second(config.limits.max_presence_events_per_second),
            config: Arc::new(config),
            channels: (0..SHARDS).map(|_| Mutex::default()).collect(),
            conns: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
            refs: Mutex::new(RefGenerator::new(u16::from_be_bytes([node[4], node[5]]))),
            node,
        }
    }

    /// A fresh id for a connection or a membership.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh `phx_ref`, given the time in nanoseconds since the Unix epoch.
    pub fn next_phx_ref(&self, now_ns: u64) -> PhxRef {
        lock(&self.refs).next(now_ns)
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
                        state: Mutex::default(),
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
            if select(&conn) {
                conn.close(code, reason);
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
        let now = self.coalescing.now_ms();
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
    /// idle too long or whose channel tokens expired.
    pub fn sweep(&self, now_ms: u64) {
        let idle_ms = self.config.idle_timeout.as_millis() as u64;
        let unjoined_ms = self.config.unjoined_timeout.as_millis() as u64;
        for shard in self.conns.iter() {
            for conn in lock(shard).values() {
                let mut bits = 0;
                if now_ms.saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed)) >= idle_ms {
                    bits |= crate::conn::signal::IDLE;
                }
                if now_ms >= conn.token_deadline_ms.load(Ordering::Relaxed) {
                    bits |= crate::conn::signal::TIMERS;
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
        let Some(channel) = self.channel(key) else {
            return;
        };
        let mut state = channel.lock();
        let entry = entry.as_ref().map(|e| (&*e.key, e.meta.clone()));
        if let Some(diff) = state.presence.set(Owner::Remote(owner.into()), entry) {
            channel.changed(&mut state, diff);
        }
    }

    fn remote_reset(&self, key: &ChannelKey, entries: Vec<(String, PresenceEntry)>) {
        let Some(channel) = self.channel(key) else {
            return;
        };
        let mut state = channel.lock();
        let fresh: std::collections::HashSet<&str> =
            entries.iter().map(|(o, _)| o.as_str()).collect();
        let stale: Vec<Owner> = state
            .presence
            .owners()
            .filter(|o| matches!(o, Owner::Remote(id) if !fresh.contains(&**id)))
            .cloned()
            .collect();
        let mut diff = Diff::default();
        for owner in stale {
            if let Some(d) = state.presence.untrack(&owner) {
                diff.merge(d);
            }
        }
        for (owner, entry) in entries {
            if let Some(d) = state
                .presence
                .set(Owner::Remote(owner.into()), Some((&entry.key, entry.meta)))
            {
                diff.merge(d);
            }
        }
        if !diff.is_empty() {
            channel.changed(&mut state, diff);
        }
    }
}

fn rand_node() -> [u8; 6] {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    // A random node id has the multicast bit set (RFC 4122 §4.5).
    [b[0] | 0x01, b[1], b[2], b[3], b[4], b[5]]
}
