//! The vocabulary and the contract by which headcount nodes share presence and broadcast.
//!
//! The server depends on this crate, and so does every backend (the Redis one lives in
//! `headcount-redis`), so a backend never needs the server. Modules: this file holds the
//! vocabulary ([`ChannelKey`], [`MemberId`], [`Owner`], [`Broadcast`], [`RelayedBroadcast`],
//! [`PresenceEntry`], [`Health`]), the two traits and [`Standalone`]; [`memory`] is the
//! in-process backend. The conformance suite every backend passes starts real servers, so it
//! lives in `headcount-testkit` (`cluster_suite`).
//!
//! A node is authoritative for the presences of its own members and keeps a replica of the
//! presences other nodes own in the channels it serves. The [`Cluster`] trait is what a node
//! tells the others; [`ClusterSink`] is what it hears back. Every implementation promises:
//!
//! * **Scope.** A node hears about a channel only between [`Cluster::serve`] and
//!   [`Cluster::unserve`]; right after `serve` it receives the channel's full remote presence
//!   with [`ClusterSink::remote_reset`].
//! * **Order.** Changes from one node about one channel are delivered to the others in the order
//!   they were made. (Nothing is promised across channels or across senders.)
//! * **No echo.** A node never hears its own broadcasts or presence changes back.
//! * **Presence converges.** After a quiet period every node's replica of a channel equals the
//!   union of what each owner last set; when a delivery may have been lost (a sequence gap, a
//!   reconnect), the implementation resynchronises with `remote_reset`.
//! * **No ghosts.** When a node stops cleanly its presences are removed at once; when it dies,
//!   within the implementation's configured timeout. A node that restarts is a new node: the
//!   presences of its previous life never come back.
//! * **No blocking.** Calls return at once (work is queued, bounded); a backend that is down
//!   never stalls a socket or the channel lock.
//!
//! Implementations: [`Standalone`] (one node, nothing to share; the default), [`memory`] (nodes
//! in one process, for tests and as the reference), and the Redis backend in its own crate.

pub mod memory;

use std::sync::{Arc, Weak};

use bytes::Bytes;
use headcount_presence::Meta;
use headcount_protocol::Encoding;

/// One socket's membership of one channel, unique within its node.
pub type MemberId = u64;

/// Who owns a presence entry: a member of this node, or another node's member.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A member of this node.
    Local(MemberId),
    /// Another node's member, by its cluster-wide owner id ([`owner_id`]).
    Remote(Arc<str>),
}

/// Names a channel. Public and private channels with the same topic are different rooms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// Whether the channel was joined with `config.private: true`.
    pub private: bool,
    /// The full topic, such as `realtime:room1`.
    pub topic: Box<str>,
}

/// A message to fan out as a broadcast, borrowed from wherever it arrived.
#[derive(Debug, Clone, Copy)]
pub enum Broadcast<'a> {
    /// A JSON `broadcast` payload (`{"type":"broadcast","event":...,"payload":...}`), relayed
    /// byte for byte.
    Json(&'a str),
    /// A user broadcast from a binary push (or a server-side send of one).
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
    /// The bytes the message carries (payload, or event and body): what limits count.
    pub fn size(&self) -> usize {
        match self {
            Broadcast::Json(p) => p.len(),
            Broadcast::User { event, body, .. } => event.len() + body.len(),
        }
    }
}

/// One presence entry as nodes exchange it: the key and the meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The presence key.
    pub key: Box<str>,
    /// The meta, with its `phx_ref` (and `phx_ref_prev` after an update).
    pub meta: Meta,
}

/// A broadcast as nodes exchange it: owned bytes, so it can be queued and sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayedBroadcast {
    /// A JSON broadcast payload (`{"type":"broadcast","event":...,"payload":...}`), verbatim.
    Json(Bytes),
    /// A user broadcast from a binary push.
    User {
        /// The user's event.
        event: Box<str>,
        /// How `body` is encoded.
        encoding: Encoding,
        /// The body.
        body: Bytes,
    },
}

impl RelayedBroadcast {
    /// An owned copy of a broadcast.
    pub fn from_broadcast(msg: &Broadcast<'_>) -> RelayedBroadcast {
        match *msg {
            Broadcast::Json(p) => RelayedBroadcast::Json(Bytes::copy_from_slice(p.as_bytes())),
            Broadcast::User {
                event,
                encoding,
                body,
            } => RelayedBroadcast::User {
                event: event.into(),
                encoding,
                body: Bytes::copy_from_slice(body),
            },
        }
    }

    /// The borrowed form the hub fans out. `None` if a JSON payload is not UTF-8 (a corrupt
    /// delivery, dropped).
    pub fn as_broadcast(&self) -> Option<Broadcast<'_>> {
        match self {
            RelayedBroadcast::Json(p) => std::str::from_utf8(p).ok().map(Broadcast::Json),
            RelayedBroadcast::User {
                event,
                encoding,
                body,
            } => Some(Broadcast::User {
                event,
                encoding: *encoding,
                body,
            }),
        }
    }
}

/// Whether the backend can currently reach its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Peers reachable (always true for a single node).
    pub connected: bool,
    /// A short human description ("standalone", "redis ok", "redis unreachable: ...").
    pub detail: String,
}

/// What a node tells the rest of the cluster. Every call returns at once.
pub trait Cluster: Send + Sync + std::fmt::Debug + 'static {
    /// This node's identity: unique per process lifetime.
    fn node_id(&self) -> &str;

    /// Whether there are other nodes at all (a standalone node skips copying broadcasts).
    fn is_distributed(&self) -> bool;

    /// Gives the backend the sink for what it hears. Called once, by the hub.
    fn attach(&self, sink: Weak<dyn ClusterSink>);

    /// This node now has members in `key`.
    fn serve(&self, key: &ChannelKey);

    /// This node has no member left in `key`.
    fn unserve(&self, key: &ChannelKey);

    /// A broadcast made by a member of this node, for the other nodes' members.
    fn publish(&self, key: &ChannelKey, msg: &Broadcast<'_>);

    /// The presence of local member `member` in `key` is now `entry` (`None`: gone).
    fn presence(&self, key: &ChannelKey, member: MemberId, entry: Option<&PresenceEntry>);

    /// Whether peers are reachable.
    fn health(&self) -> Health;

    /// The node is stopping cleanly: remove its presences everywhere now.
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// What a node hears from the others. Implemented by the hub.
pub trait ClusterSink: Send + Sync {
    /// A broadcast from another node's member.
    fn remote_broadcast(&self, key: &ChannelKey, msg: &RelayedBroadcast);

    /// Remote owner `owner` (another node's member) now has `entry` in `key` (`None`: gone).
    fn remote_presence(&self, key: &ChannelKey, owner: &str, entry: Option<PresenceEntry>);

    /// The complete remote presence of `key` (every entry not owned by this node), replacing
    /// what the node had.
    fn remote_reset(&self, key: &ChannelKey, entries: Vec<(String, PresenceEntry)>);
}

/// The single-node backend: nothing to share.
#[derive(Debug)]
pub struct Standalone {
    node: String,
}

impl Standalone {
    /// A standalone node with a fresh identity.
    pub fn new() -> Standalone {
        Standalone {
            node: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl Default for Standalone {
    fn default() -> Self {
        Standalone::new()
    }
}

impl Cluster for Standalone {
    fn node_id(&self) -> &str {
        &self.node
    }
    fn is_distributed(&self) -> bool {
        false
    }
    fn attach(&self, _sink: Weak<dyn ClusterSink>) {}
    fn serve(&self, _key: &ChannelKey) {}
    fn unserve(&self, _key: &ChannelKey) {}
    fn publish(&self, _key: &ChannelKey, _msg: &Broadcast<'_>) {}
    fn presence(&self, _key: &ChannelKey, _member: MemberId, _entry: Option<&PresenceEntry>) {}
    fn health(&self) -> Health {
        Health {
            connected: true,
            detail: "standalone".into(),
        }
    }
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// An owner id for a member of `node`: `"<node>:<member>"`.
pub fn owner_id(node: &str, member: MemberId) -> String {
    format!("{node}:{member}")
}

/// A shared handle to a backend.
pub type SharedCluster = Arc<dyn Cluster>;
