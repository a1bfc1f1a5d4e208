//! What a session may do beyond its own socket: the [`Node`] trait.
//!
//! A session decides; the node performs. Every effect on shared state (joining and leaving
//! channels, presence, broadcast, grants) and every shared input (settings, counters, the
//! node's rate windows, the connected-users count) goes through this trait, so the session's
//! rules can be unit-tested against a fake node without a hub, a socket or real time. The
//! [`Hub`] is the real node.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use headcount_presence::Payload;

use crate::channel::{Broadcast, Channel, ChannelKey, Member, MemberId};
use crate::config::Config;
use crate::conn::Conn;
use crate::hub::Hub;
use crate::limits::NodeRate;
use crate::metrics::Metrics;
use crate::policy::Grants;

/// The node's per-second windows, which every socket of the node shares.
#[derive(Debug, Clone, Copy)]
pub struct NodeRates<'a> {
    /// Joins.
    pub joins: &'a NodeRate,
    /// Client broadcasts.
    pub events: &'a NodeRate,
    /// Presence tracks.
    pub presence_events: &'a NodeRate,
}

/// A track as the session hands it to the node.
#[derive(Debug)]
pub struct Track<'a> {
    /// The member's presence key.
    pub key: &'a str,
    /// What it tracks.
    pub payload: Payload,
    /// The wall clock in nanoseconds, for the meta's `phx_ref`.
    pub unix_ns: u64,
    /// The member's `ok` reply, sent before the change is announced.
    pub reply: Bytes,
}

/// The node a session acts on. Every call returns at once.
pub trait Node: Send + Sync + 'static {
    /// A channel the session joined, as the node hands it back.
    type Channel: std::fmt::Debug + Send + Sync;

    /// The node's settings.
    fn config(&self) -> &Config;
    /// The node's counters.
    fn metrics(&self) -> &Metrics;
    /// The node's rate windows.
    fn rates(&self) -> NodeRates<'_>;
    /// Sockets with at least one channel (what `max_concurrent_users` limits); the session
    /// counts its own socket in and out.
    fn users(&self) -> &AtomicUsize;
    /// A fresh membership id.
    fn next_id(&self) -> MemberId;
    /// A fresh presence key for a member that joined without one.
    fn new_presence_key(&self) -> String;

    /// Adds `member` to channel `key`, queuing `reply` and then, with `send_state`, the
    /// presence state for it, before any later change of the channel.
    fn join(
        &self,
        key: ChannelKey,
        member: Member,
        reply: Bytes,
        send_state: bool,
    ) -> Self::Channel;
    /// Removes `member` from `channel`, with its presence.
    fn leave(&self, channel: &Self::Channel, member: MemberId);
    /// Tracks `member` (whose socket is `conn`) in `channel`.
    fn track(&self, channel: &Self::Channel, member: MemberId, conn: &Conn, track: Track<'_>);
    /// Untracks `member`; `reply`, if any, goes to it before the leave is announced.
    fn untrack(&self, channel: &Self::Channel, member: MemberId, conn: &Conn, reply: Option<Bytes>);
    /// A broadcast from `from` to the channel's members (and back to `from` if `include_self`).
    fn broadcast(
        &self,
        channel: &Self::Channel,
        from: MemberId,
        include_self: bool,
        msg: Broadcast<'_>,
    );
    /// What `member` may receive from now on.
    fn set_grants(&self, channel: &Self::Channel, member: MemberId, grants: Grants);
}

impl Node for Hub {
    type Channel = Arc<Channel>;

    fn config(&self) -> &Config {
        &self.config
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn rates(&self) -> NodeRates<'_> {
        NodeRates {
            joins: &self.joins,
            events: &self.events,
            presence_events: &self.presence_events,
        }
    }
    fn users(&self) -> &AtomicUsize {
        &self.users
    }
    fn next_id(&self) -> MemberId {
        Hub::next_id(self)
    }
    fn new_presence_key(&self) -> String {
        Hub::new_presence_key(self)
    }
    fn join(
        &self,
        key: ChannelKey,
        member: Member,
        reply: Bytes,
        send_state: bool,
    ) -> Arc<Channel> {
        Hub::join(self, key, member, reply, send_state)
    }
    fn leave(&self, channel: &Arc<Channel>, member: MemberId) {
        Hub::leave(self, channel, member);
    }
    fn track(&self, channel: &Arc<Channel>, member: MemberId, conn: &Conn, track: Track<'_>) {
        channel.track(
            member,
            conn,
            track.key,
            track.payload,
            track.unix_ns,
            track.reply,
        );
    }
    fn untrack(&self, channel: &Arc<Channel>, member: MemberId, conn: &Conn, reply: Option<Bytes>) {
        channel.untrack(member, conn, reply);
    }
    fn broadcast(
        &self,
        channel: &Arc<Channel>,
        from: MemberId,
        include_self: bool,
        msg: Broadcast<'_>,
    ) {
        channel.broadcast(from, include_self, msg);
    }
    fn set_grants(&self, channel: &Arc<Channel>, member: MemberId, grants: Grants) {
        channel.set_grants(member, grants);
    }
}
