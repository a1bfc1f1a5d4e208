//! One socket's own rates, checked in front of the node-wide ones, and its client presence
//! windows.
//!
//! The per-socket windows make one client meet its own limit before it can spend the node's
//! budget: what a client is refused here never counts against the node. The presence windows
//! are kept by topic rather than by membership, so leaving and joining again does not reset
//! "5 calls per 30 s".

use super::Node;
use crate::config::Limits;
use crate::limits::{NodeRate, Window, Windows, per_second};
use crate::metrics::{Limit, Metrics};

/// Whether a call fits, and if not, whose limit it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Counted against both the socket and the node.
    Allowed,
    /// This socket is over its own limit (nothing counted against the node).
    OverClient,
    /// This socket is within its own limit, but the node is at its limit.
    OverNode,
}

/// The rate windows of one socket. Owned by its session.
#[derive(Debug)]
pub(super) struct SocketRates {
    /// The client presence window of each topic this socket used. Bounded: see
    /// [`presence_windows_cap`].
    presence_windows: Windows,
    /// This socket's joins, broadcasts and presence tracks in the current second.
    joins: Window,
    events: Window,
    presence_events: Window,
}

/// How many topics' presence windows a socket keeps: twice the channels it may hold at once
/// (the joined ones plus as many it left inside a window), at least 64. Expired windows are
/// forgotten first, so only a socket that cycles through more topics than this inside one
/// window can push one out, and each entry costs a few bytes whatever the topic's length.
fn presence_windows_cap(max_channels_per_client: usize) -> usize {
    max_channels_per_client.saturating_mul(2).max(64)
}

/// The socket's window first, then the node's; a refusal is counted under its limit.
struct Check<'a> {
    window: &'a mut Window,
    client_max: Option<u32>,
    node: &'a NodeRate,
    limits: (Limit, Limit),
    metrics: &'a Metrics,
}

impl Check<'_> {
    fn run(self, now_ms: u64) -> Verdict {
        let (client, node) = self.limits;
        if !per_second(self.window, now_ms, self.client_max) {
            self.metrics.refused(client);
            Verdict::OverClient
        } else if !self.node.hit(now_ms) {
            self.metrics.refused(node);
            Verdict::OverNode
        } else {
            Verdict::Allowed
        }
    }
}

impl SocketRates {
    pub(super) fn new(limits: &Limits) -> SocketRates {
        SocketRates {
            presence_windows: Windows::new(presence_windows_cap(limits.max_channels_per_client)),
            joins: Window::default(),
            events: Window::default(),
            presence_events: Window::default(),
        }
    }

    /// One join.
    pub(super) fn join(&mut self, node: &impl Node, now_ms: u64) -> Verdict {
        Check {
            window: &mut self.joins,
            client_max: node.config().limits.client_joins_per_second(),
            node: node.rates().joins,
            limits: (Limit::ClientJoins, Limit::Joins),
            metrics: node.metrics(),
        }
        .run(now_ms)
    }

    /// One client broadcast.
    pub(super) fn broadcast(&mut self, node: &impl Node, now_ms: u64) -> Verdict {
        Check {
            window: &mut self.events,
            client_max: node.config().limits.client_events_per_second(),
            node: node.rates().events,
            limits: (Limit::ClientEvents, Limit::Events),
            metrics: node.metrics(),
        }
        .run(now_ms)
    }

    /// One presence track.
    pub(super) fn track(&mut self, node: &impl Node, now_ms: u64) -> Verdict {
        Check {
            window: &mut self.presence_events,
            client_max: node.config().limits.client_presence_events_per_second(),
            node: node.rates().presence_events,
            limits: (Limit::ClientPresenceEvents, Limit::PresenceEvents),
            metrics: node.metrics(),
        }
        .run(now_ms)
    }

    /// One presence call on `topic`, against the client presence window; `false` when over.
    pub(super) fn presence_call(&mut self, limits: &Limits, topic: &str, now_ms: u64) -> bool {
        let window_ms = limits.client_presence_window.as_millis() as u64;
        self.presence_windows.take(
            topic,
            now_ms,
            window_ms,
            limits.client_presence_max_calls,
            1,
        )
    }
}
