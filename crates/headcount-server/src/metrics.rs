//! Counters and histograms, exposed at `GET /metrics` in the Prometheus text format.
//!
//! Every counter is a relaxed atomic: incrementing one on a hot path costs a few nanoseconds
//! and never takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fan-out latency histogram's buckets.
const FANOUT_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = FANOUT_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in FANOUT_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Why a request or message was refused by a limit (the `limit` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Channels per socket.
    Channels,
    /// Concurrent users.
    Users,
    /// Joins per second.
    Joins,
    /// Client broadcasts per second.
    Events,
    /// Presence calls per second.
    PresenceEvents,
    /// The per-channel client presence window.
    ClientPresence,
    /// Payload size.
    PayloadSize,
    /// WebSocket frame or message size.
    FrameSize,
    /// Joins per second of one socket.
    ClientJoins,
    /// Broadcasts per second of one socket or HTTP client.
    ClientEvents,
    /// Presence tracks per second of one socket.
    ClientPresenceEvents,
}

const LIMITS: [(Limit, &str); 11] = [
    (Limit::Channels, "channels_per_client"),
    (Limit::Users, "concurrent_users"),
    (Limit::Joins, "joins_per_second"),
    (Limit::Events, "events_per_second"),
    (Limit::PresenceEvents, "presence_events_per_second"),
    (Limit::ClientPresence, "client_presence_window"),
    (Limit::PayloadSize, "payload_size"),
    (Limit::FrameSize, "frame_size"),
    (Limit::ClientJoins, "client_joins_per_second"),
    (Limit::ClientEvents, "client_events_per_second"),
    (
        Limit::ClientPresenceEvents,
        "client_presence_events_per_second",
    ),
];

/// The service's counters. Owned by the [`crate::Hub`]; written from every task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sockets accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused (bad `vsn`, bad apikey, limits, origin).
    pub connections_refused_total: AtomicU64,
    /// Successful joins.
    pub joins_total: AtomicU64,
    /// Refused joins.
    pub join_errors_total: AtomicU64,
    /// Client messages decoded.
    pub messages_in_total: AtomicU64,
    /// Client messages dropped as undecodable.
    pub messages_dropped_total: AtomicU64,
    /// Frames queued for clients.
    pub messages_out_total: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in_total: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out_total: AtomicU64,
    /// Broadcasts received (from clients and the HTTP API).
    pub broadcasts_total: AtomicU64,
    /// Presence diffs published.
    pub presence_events_total: AtomicU64,
    /// Connections cut because their outbox overflowed.
    pub slow_consumer_disconnects_total: AtomicU64,
    /// Refusals per limit, in the order of `LIMITS`.
    limit_refusals: [AtomicU64; LIMITS.len()],
    /// Time to fan one message out to a channel's members.
    pub fanout_seconds: Histogram,
}

impl Metrics {
    /// Counts one refusal by `limit`.
    pub fn refused(&self, limit: Limit) {
        let i = LIMITS
            .iter()
            .position(|(l, _)| *l == limit)
            .expect("every limit is listed");
        self.limit_refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far by `limit`.
    pub fn refusals(&self, limit: Limit) -> u64 {
        let i = LIMITS
            .iter()
            .position(|(l, _)| *l == limit)
            .expect("every limit is listed");
        self.limit_refusals[i].load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the gauges the caller measures.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters: [(&str, &str, &AtomicU64); 12] = [
            (
                "headcount_connections_total",
                "WebSocket connections accepted.",
                &self.connections_total,
            ),
            (
                "headcount_connections_refused_total",
                "WebSocket upgrades refused.",
                &self.connections_refused_total,
            ),
            (
                "headcount_joins_total",
                "Channel joins accepted.",
                &self.joins_total,
            ),
            (
                "headcount_join_errors_total",
                "Channel joins refused.",
                &self.join_errors_total,
            ),
            (
                "headcount_messages_in_total",
                "Client messages decoded.",
                &self.messages_in_total,
            ),
            (
                "headcount_messages_dropped_total",
                "Client messages dropped as undecodable.",
                &self.messages_dropped_total,
            ),
            (
                "headcount_messages_out_total",
                "Frames queued for clients.",
                &self.messages_out_total,
            ),
            (
                "headcount_bytes_in_total",
                "Bytes read from clients.",
                &self.bytes_in_total,
            ),
            (
                "headcount_bytes_out_total",
                "Bytes written to clients.",
                &self.bytes_out_total,
            ),
            (
                "headcount_broadcasts_total",
                "Broadcasts received from clients and the HTTP API.",
                &self.broadcasts_total,
            ),
            (
                "headcount_presence_events_total",
                "Presence diffs published.",
                &self.presence_events_total,
            ),
            (
                "headcount_slow_consumer_disconnects_total",
                "Connections cut because their outbox overflowed.",
                &self.slow_consumer_disconnects_total,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let name = "headcount_limit_refusals_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests and messages refused by a limit.\n# TYPE {name} counter"
        );
        for (i, (_, label)) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{limit=\"{label}\"}} {}",
                self.limit_refusals[i].load(Ordering::Relaxed)
            );
        }
        self.fanout_seconds.render(
            &mut out,
            "headcount_fanout_seconds",
            "Time to fan one message out to the members of a channel on this node.",
        );
        out
    }
}
