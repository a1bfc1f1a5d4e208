//! A channel: its members, its presence, and the fan-out of its frames.
//!
//! A [`Channel`] owns its member list and its presence state behind one short mutex: every
//! change to presence, and every frame it fans out, happens inside that critical section, so all
//! members see the same frames in the same order. The lock is never held across an `.await`;
//! fanning out only pushes shared [`Bytes`] into each member's outbox.
//!
//! A channel's presence holds the entries of its local members ([`Owner::Local`]) and, in a
//! cluster, a replica of the other nodes' ([`Owner::Remote`]). Presence diffs of a busy channel
//! are coalesced over a window ([`Coalescing`]).

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use headcount_presence::{Change, Coalesce, Diff, Flush, Meta, Payload, Room};
use headcount_protocol::{Ref, Serializer, encode};

pub use headcount_cluster::{Broadcast, ChannelKey, MemberId, Owner};

use crate::clock::Clock;
use crate::cluster::{Cluster, PresenceEntry};
use crate::conn::Conn;
use crate::frames;
use crate::lock;
use crate::metrics::Metrics;
use crate::policy::Grants;

/// A member of a channel.
#[derive(Debug)]
pub struct Member {
    /// Unique within this node.
    pub id: MemberId,
    /// The member's socket.
    pub conn: Arc<Conn>,
    /// The `join_ref` the member joined with; channel pushes carry it.
    pub join_ref: Ref,
    /// What the member may receive: public channels grant everything, private ones what the
    /// policy says.
    pub grants: Grants,
}

/// The mutable state of a channel. Owned by [`Channel::state`]'s mutex.
#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) members: Vec<Member>,
    /// The presence, what the members were told of it, and when to tell them the rest.
    pub(crate) room: Room<Owner>,
    /// Set, under the registry shard's lock, when the channel left the registry: a socket that
    /// found it there just before must look again.
    pub(crate) dead: bool,
}

impl ChannelState {
    pub(crate) fn new(rule: Coalesce, node: u16) -> ChannelState {
        ChannelState {
            members: Vec::new(),
            room: Room::new(rule, node),
            dead: false,
        }
    }
}

/// One topic's members and presence.
#[derive(Debug)]
pub struct Channel {
    /// The channel's name.
    pub key: ChannelKey,
    pub(crate) state: Mutex<ChannelState>,
    /// The hub's counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Where local changes go.
    pub(crate) cluster: Arc<dyn Cluster>,
    /// Diff coalescing: the window, and the hub's queue of channels with pending diffs.
    pub(crate) coalescing: Arc<Coalescing>,
    /// This channel, for the flush queue.
    pub(crate) me: std::sync::Weak<Channel>,
}

/// Presence diff coalescing, shared by a hub's channels: the rule each channel's [`Room`]
/// applies, the clock it is given, and the queue of channels waiting for a flush.
#[derive(Debug)]
pub struct Coalescing {
    /// The window; zero sends every diff at once.
    pub window: std::time::Duration,
    /// Channels with fewer members send every diff at once.
    pub min_members: usize,
    /// Channels with pending diffs.
    pub(crate) queue: Mutex<Vec<std::sync::Weak<Channel>>>,
    /// The hub's clock.
    clock: Clock,
}

impl Coalescing {
    pub(crate) fn new(clock: Clock, window: std::time::Duration, min_members: usize) -> Coalescing {
        Coalescing {
            window,
            min_members,
            queue: Mutex::default(),
            clock,
        }
    }

    /// The rule every room of the hub applies.
    pub(crate) fn rule(&self) -> Coalesce {
        Coalesce {
            window_ms: self.window.as_millis() as u64,
            min_members: self.min_members,
        }
    }

    /// The hub's clock, read.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.ms()
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
    pub(crate) fn lock(&self) -> MutexGuard<'_, ChannelState> {
        crate::lock(&self.state)
    }

    /// Performs what the room decided: sends the diff, and queues the channel for a flush when
    /// the room started waiting.
    fn perform(&self, state: &mut ChannelState, change: Change) {
        if let Some(diff) = change.send {
            publish_diff(&self.metrics, &self.key.topic, &state.members, &diff);
        }
        // The room asks once per wait, so the channel is in the queue at most once.
        if change.flush_at.is_some() {
            lock(&self.coalescing.queue).push(self.me.clone());
        }
    }

    /// Sends the pending diff if the window has passed; returns whether the channel must stay
    /// queued.
    pub(crate) fn flush(&self, now: u64) -> bool {
        let mut state = self.lock();
        if state.dead {
            return false;
        }
        match state.room.flush(now) {
            Flush::Wait(_) => true,
            Flush::Send(diff) => {
                publish_diff(&self.metrics, &self.key.topic, &state.members, &diff);
                false
            }
            Flush::Idle => false,
        }
    }

    /// Adds a member: queues its join `reply` and, when `send_state`, the `presence_state`,
    /// before any later diff. Gives the member back if the channel has just died.
    pub(crate) fn add(&self, member: Member, reply: Bytes, send_state: bool) -> Result<(), Member> {
        let mut state = self.lock();
        if state.dead {
            return Err(member);
        }
        member.conn.push(reply);
        if send_state {
            let json = state.room.joiner_state();
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
    pub(crate) fn remove(&self, id: MemberId) -> bool {
        let mut state = self.lock();
        if let Some(at) = state.members.iter().position(|m| m.id == id) {
            state.members.swap_remove(at);
        }
        let now = self.coalescing.now_ms();
        let members = state.members.len();
        if let Some(change) = state.room.untrack(&Owner::Local(id), now, members) {
            self.perform(&mut state, change);
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
            |serializer| frames::broadcast(&msg, serializer, &self.key.topic),
        );
        if self.cluster.is_distributed() {
            self.cluster.publish(&self.key, &msg);
        }
        drop(state);
        self.metrics.fanout_seconds.observe(started.elapsed());
    }

    /// Fans a broadcast from another node out to every member of this one.
    pub(crate) fn deliver(&self, msg: Broadcast<'_>) {
        let started = std::time::Instant::now();
        let state = self.lock();
        fan_out(
            &state.members,
            None,
            |g| g.broadcast_read,
            |serializer| frames::broadcast(&msg, serializer, &self.key.topic),
        );
        drop(state);
        self.metrics.fanout_seconds.observe(started.elapsed());
    }

    /// Tracks member `id` under `key`, naming a new meta from `unix_ns` (the wall-clock time in
    /// nanoseconds). `reply` goes to the member first, then the diff (if anything changed) to
    /// every member.
    pub fn track(
        &self,
        id: MemberId,
        conn: &Conn,
        key: &str,
        payload: Payload,
        unix_ns: u64,
        reply: Bytes,
    ) {
        let now = self.coalescing.now_ms();
        let mut state = self.lock();
        conn.push(reply);
        let members = state.members.len();
        let owner = Owner::Local(id);
        if let Some(change) = state.room.track(owner, key, payload, unix_ns, now, members) {
            self.perform(&mut state, change);
            if let Some((key, meta)) = state.room.presence().get(&Owner::Local(id)) {
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
        let now = self.coalescing.now_ms();
        let mut state = self.lock();
        if let Some(reply) = reply {
            conn.push(reply);
        }
        let members = state.members.len();
        if let Some(change) = state.room.untrack(&Owner::Local(id), now, members) {
            self.perform(&mut state, change);
            self.cluster.presence(&self.key, id, None);
        }
    }

    /// Another node's member `owner` now has `entry` (`None`: gone).
    pub(crate) fn remote_set(&self, owner: &str, entry: Option<PresenceEntry>) {
        let now = self.coalescing.now_ms();
        let mut state = self.lock();
        let members = state.members.len();
        let entry = entry.as_ref().map(|e| (&*e.key, e.meta.clone()));
        if let Some(change) = state
            .room
            .set(Owner::Remote(owner.into()), entry, now, members)
        {
            self.perform(&mut state, change);
        }
    }

    /// Replaces every other node's presence in this channel with `entries` (after a resync).
    pub(crate) fn remote_replace(&self, entries: Vec<(String, PresenceEntry)>) {
        let now = self.coalescing.now_ms();
        let mut state = self.lock();
        let members = state.members.len();
        let entries = entries.into_iter().map(|(owner, e)| {
            let meta: Meta = e.meta;
            (Owner::Remote(owner.into()), e.key, meta)
        });
        let remote = |o: &Owner| matches!(o, Owner::Remote(_));
        if let Some(change) = state.room.replace(remote, entries, now, members) {
            self.perform(&mut state, change);
        }
    }

    /// Changes what member `id` may receive (after a token refresh re-evaluated the policy).
    pub fn set_grants(&self, id: MemberId, grants: Grants) {
        if let Some(m) = self.lock().members.iter_mut().find(|m| m.id == id) {
            m.grants = grants;
        }
    }

    /// The presence state as `presence_state` sends it.
    pub fn presence_json(&self) -> Arc<str> {
        self.lock().room.state_json()
    }

    /// `(members, presence keys, metas)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.members.len(),
            state.room.presence().key_count(),
            state.room.presence().meta_count(),
        )
    }
}
