//! Options of channels and timing of the client, with realtime-js's defaults.

use std::time::Duration;

use headcount_protocol::payloads::JoinConfig;

/// How a channel joins: realtime-js's `channel(name, {config: {...}})`.
///
/// The defaults are realtime-js's: no self-broadcast, no acks, an empty presence key (the
/// server then picks a fresh UUID per join), presence disabled (a [`Presence`](crate::Presence)
/// enables it), public.
///
/// ```
/// use headcount_client::ChannelOptions;
///
/// let options = ChannelOptions::default().presence_key("alice").broadcast_self(true);
/// let payload: serde_json::Value = serde_json::from_str(&options.join_payload(Some("jwt"))).unwrap();
/// assert_eq!(payload["config"]["presence"]["key"], "alice");
/// assert_eq!(payload["config"]["broadcast"]["self"], true);
/// assert_eq!(payload["access_token"], "jwt");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Receive your own broadcasts (`config.broadcast.self`).
    pub broadcast_self: bool,
    /// Ask the server to acknowledge each broadcast (`config.broadcast.ack`), so a send
    /// resolves when the server has it.
    pub broadcast_ack: bool,
    /// The presence key to track under (`config.presence.key`); empty: the server picks a
    /// fresh UUID on every join.
    pub presence_key: String,
    /// Ask for presence (`config.presence.enabled`): the server then sends `presence_state`
    /// after each join.
    pub presence_enabled: bool,
    /// A private channel (`config.private`), authorized by the server's policy.
    pub private: bool,
}

impl ChannelOptions {
    /// Sets [`broadcast_self`](Self::broadcast_self).
    pub fn broadcast_self(mut self, on: bool) -> Self {
        self.broadcast_self = on;
        self
    }

    /// Sets [`broadcast_ack`](Self::broadcast_ack).
    pub fn broadcast_ack(mut self, on: bool) -> Self {
        self.broadcast_ack = on;
        self
    }

    /// Sets [`presence_key`](Self::presence_key).
    pub fn presence_key(mut self, key: impl Into<String>) -> Self {
        self.presence_key = key.into();
        self
    }

    /// Sets [`presence_enabled`](Self::presence_enabled).
    pub fn presence_enabled(mut self, on: bool) -> Self {
        self.presence_enabled = on;
        self
    }

    /// Sets [`private`](Self::private).
    pub fn private(mut self, on: bool) -> Self {
        self.private = on;
        self
    }

    /// The `phx_join` payload, as realtime-js sends it.
    pub fn join_payload(&self, access_token: Option<&str>) -> String {
        JoinConfig {
            ack: self.broadcast_ack,
            self_broadcast: self.broadcast_self,
            presence_enabled: self.presence_enabled,
            presence_key: (!self.presence_key.is_empty()).then(|| self.presence_key.clone()),
            private: self.private,
            access_token: access_token.map(str::to_owned),
        }
        .to_json(concat!("headcount-client/", env!("CARGO_PKG_VERSION")))
    }
}

/// A retry schedule: the delay before attempt `n` (counting from 1) is the `n`th entry, and the
/// last entry repeats.
///
/// ```
/// use std::time::Duration;
/// use headcount_client::Backoff;
///
/// let b = Backoff::default();
/// let secs: Vec<u64> = (1..=6).map(|n| b.after(n).as_secs()).collect();
/// assert_eq!(secs, [1, 2, 5, 10, 10, 10]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff(Vec<Duration>);

impl Backoff {
    /// A schedule of these delays; an empty list means no delay.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Backoff {
        Backoff(delays.into_iter().collect())
    }

    /// The delay before attempt `attempt` (1 is the first retry).
    pub fn after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.0.len().saturating_sub(1));
        self.0.get(index).copied().unwrap_or_default()
    }
}

impl Default for Backoff {
    /// realtime-js's schedule: 1, 2, 5, then every 10 seconds.
    fn default() -> Backoff {
        Backoff::new([1, 2, 5, 10].map(Duration::from_secs))
    }
}

/// The client's clocks, with realtime-js's defaults.
///
/// ```
/// use std::time::Duration;
/// use headcount_client::Timing;
///
/// let t = Timing::default();
/// assert_eq!(t.heartbeat_interval, Duration::from_secs(25));
/// assert_eq!(t.timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often a heartbeat is sent; a heartbeat still unanswered when the next is due closes
    /// the connection ("heartbeat timeout") and a reconnect follows. 25 s.
    pub heartbeat_interval: Duration,
    /// How long a join or a push waits for its reply. 10 s.
    pub timeout: Duration,
    /// Delays between reconnect attempts: 1, 2, 5, 10 s.
    pub reconnect_after: Backoff,
    /// Delays before rejoining a channel after a join error or timeout: 1, 2, 5, 10 s.
    pub rejoin_after: Backoff,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat_interval: Duration::from_secs(25),
            timeout: Duration::from_secs(10),
            reconnect_after: Backoff::default(),
            rejoin_after: Backoff::default(),
        }
    }
}

/// How much the client queues before it gives up on a slow side, so that memory stays bounded
/// whatever the app reads or sends.
///
/// ```
/// use headcount_client::options::Capacity;
///
/// let c = Capacity::default();
/// assert_eq!((c.requests, c.events), (1024, 1024));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// How many requests (subscribes, pushes, leaves) from the handles may wait for the event
    /// loop; beyond it a request fails at once with [`Error::QueueFull`](crate::Error::QueueFull)
    /// instead of waiting, so no handle call ever blocks. 1024; at least 1.
    pub requests: usize,
    /// How many events each [`EventStream`](crate::EventStream) holds for its reader; beyond
    /// it the oldest are dropped and the next read reports
    /// [`RecvError::Lagged`](crate::RecvError::Lagged). 1024; at least 1.
    pub events: usize,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            requests: 1024,
            events: 1024,
        }
    }
}
