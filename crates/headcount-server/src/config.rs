//! Server configuration.

use std::time::Duration;

use crate::auth::Verifier;
use crate::policy::Policy;

/// Everything the server needs to know, with defaults that suit one self-hosted node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HMAC secret that signs and verifies JWTs (HS256/384/512).
    pub jwt_secret: String,
    /// Verifies tokens: the secret, plus the public keys of a JWKS file when one is configured.
    /// [`Config::new`] builds it from the secret alone.
    pub verifier: Verifier,
    /// The authorization rules of private channels. Without rules, private channels are refused.
    pub policy: Policy,
    /// When set, a member may only track itself under the presence key equal to its token's
    /// `sub` (and an empty key means the `sub`).
    pub strict_presence: bool,
    /// Origins allowed to open sockets (exact `scheme://host[:port]` matches). Empty: any.
    /// Requests without an `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// A socket that sends no frame for this long is closed (Phoenix's default: 60 s).
    pub idle_timeout: Duration,
    /// A socket that has no channel joined for this long is closed.
    pub unjoined_timeout: Duration,
    /// How often the shared timer looks for idle sockets and expired tokens.
    pub tick: Duration,
    /// The largest WebSocket frame accepted from a client (Supabase: 5,000,000 bytes).
    pub max_frame_size: usize,
    /// The largest WebSocket message (all fragments together) accepted from a client.
    pub max_message_size: usize,
    /// Bytes waiting to be sent that make a connection a slow consumer when its writer writes
    /// nothing for a whole `tick` (it is then disconnected). A fast reader is never cut by it,
    /// whatever the sizes of the frames.
    pub outbox_limit: usize,
    /// Bytes that may wait behind the frame a connection's writer takes next, whatever its
    /// progress; reaching it disconnects at once. Must hold the largest frame a legal message
    /// makes ([`Config::check_outbox`]).
    pub outbox_hard_limit: usize,
    /// A client message (its fragments, or one frame) must arrive completely within this time
    /// of its first bytes, or the socket is closed (1008, `message incomplete for too long`).
    pub incomplete_message_timeout: Duration,
    /// Bytes of partially received messages, across every socket of the node. A new large
    /// message that would pass it closes its socket (1013, `server busy: input buffer full`).
    pub max_buffered_input: usize,
    /// The longest `config.presence.key` accepted in a join, in bytes.
    pub max_presence_key_length: usize,
    /// Bytes of tracked presence (keys and payloads) one socket may hold across its channels.
    pub max_presence_bytes_per_client: usize,
    /// How long the HTTP layer waits for a request's headers.
    pub header_read_timeout: Duration,
    /// On shutdown, how long to wait for connections to finish after telling them to go.
    pub shutdown_grace: Duration,
    /// Rate and size limits.
    pub limits: Limits,
    /// Presence diffs of a busy channel are merged over this window (a channel quiet for a
    /// window sends its next change at once). Zero sends every diff at once.
    pub presence_window: Duration,
    /// Channels with fewer members than this send every presence change at once, as Supabase
    /// does; only larger ones coalesce. Zero coalesces every channel.
    pub presence_coalesce_members: usize,
    /// The public anon key to hand to the demo page, if any.
    pub anon_key: Option<String>,
}

/// Rate and size limits, with Supabase's error strings when exceeded.
///
/// Per-socket and per-channel limits are on by default with Supabase's values; service-wide
/// rates are off (`None`) so a busy room or a benchmark is never throttled by surprise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Channels one socket may join (`ChannelRateLimitReached: Too many channels`).
    pub max_channels_per_client: usize,
    /// Sockets with at least one channel joined, node-wide (`Too many connected users`).
    pub max_concurrent_users: Option<usize>,
    /// Joins per second, node-wide (`ClientJoinRateLimitReached: Too many joins per second`,
    /// then the socket is closed).
    pub max_joins_per_second: Option<u32>,
    /// Client broadcasts per second, node-wide (`Too many messages per second`).
    pub max_events_per_second: Option<u32>,
    /// Presence calls per second, node-wide (`Too many presence messages per second`).
    pub max_presence_events_per_second: Option<u32>,
    /// Presence calls one channel member may make per window (`Client presence rate limit
    /// exceeded`).
    pub client_presence_max_calls: u32,
    /// The window of [`Limits::client_presence_max_calls`]; it starts at the first call.
    pub client_presence_window: Duration,
    /// The largest broadcast or presence payload, in kilobytes of 1,000 bytes.
    pub max_payload_size_kb: usize,
    /// Joins per second one socket may make (`ClientJoinRateLimitReached: Too many joins per
    /// second`; the socket stays open). `None`: derived from the node-wide limit, see
    /// [`Limits::client_joins_per_second`].
    pub max_client_joins_per_second: Option<u32>,
    /// Broadcasts per second one socket or one HTTP client may send (`Too many messages per
    /// second`). `None`: derived, see [`Limits::client_events_per_second`].
    pub max_client_events_per_second: Option<u32>,
    /// Presence tracks per second one socket may make (`Too many presence messages per
    /// second`). `None`: derived, see [`Limits::client_presence_events_per_second`].
    pub max_client_presence_events_per_second: Option<u32>,
    /// The longest channel name (the topic without `realtime:`), in bytes, for joins and HTTP
    /// broadcasts (`TopicNameTooLong: The topic name is too long`). Every frame to a member
    /// carries the topic, and policy patterns are matched against it.
    pub max_topic_bytes: usize,
    /// Messages one `POST /api/broadcast` may carry (429 `Too many messages to broadcast,
    /// please reduce the batch size`); Supabase's own default batch allowance is 100.
    pub max_batch_messages: usize,
    /// The largest `POST /api/broadcast` body, in bytes (413). Never below one largest
    /// payload and its envelope, so a legal payload always fits.
    pub max_batch_body_bytes: usize,
}

/// A client's share of a node-wide rate when none is configured: a quarter of it (at least
/// one), so a single client can never spend the whole node's budget; no limit when the node has
/// none.
fn client_share(node: Option<u32>) -> Option<u32> {
    node.map(|n| n.div_ceil(4).max(1))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels_per_client: 100,
            max_concurrent_users: None,
            max_joins_per_second: None,
            max_events_per_second: None,
            max_presence_events_per_second: None,
            client_presence_max_calls: 5,
            client_presence_window: Duration::from_secs(30),
            max_payload_size_kb: 3000,
            max_client_joins_per_second: None,
            max_client_events_per_second: None,
            max_client_presence_events_per_second: None,
            max_topic_bytes: 1024,
            max_batch_messages: 100,
            max_batch_body_bytes: 5_000_000,
        }
    }
}

impl Limits {
    /// The largest payload in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_size_kb.saturating_mul(1000)
    }

    /// The joins per second one socket may make: the configured value, else a quarter of
    /// [`Limits::max_joins_per_second`].
    pub fn client_joins_per_second(&self) -> Option<u32> {
        self.max_client_joins_per_second
            .or(client_share(self.max_joins_per_second))
    }

    /// The broadcasts per second one client may send: the configured value, else a quarter of
    /// [`Limits::max_events_per_second`].
    pub fn client_events_per_second(&self) -> Option<u32> {
        self.max_client_events_per_second
            .or(client_share(self.max_events_per_second))
    }

    /// The presence tracks per second one socket may make: the configured value, else a
    /// quarter of [`Limits::max_presence_events_per_second`].
    pub fn client_presence_events_per_second(&self) -> Option<u32> {
        self.max_client_presence_events_per_second
            .or(client_share(self.max_presence_events_per_second))
    }
}

impl Config {
    /// The defaults, with this JWT secret.
    pub fn new(jwt_secret: impl Into<String>) -> Config {
        let jwt_secret = jwt_secret.into();
        Config {
            verifier: Verifier::new(&jwt_secret),
            jwt_secret,
            policy: Policy::default(),
            strict_presence: false,
            allowed_origins: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            unjoined_timeout: Duration::from_secs(60),
            tick: Duration::from_millis(500),
            max_frame_size: 5_000_000,
            max_message_size: 5_000_000,
            outbox_limit: 1 << 20,
            outbox_hard_limit: 64 << 20,
            incomplete_message_timeout: Duration::from_secs(30),
            max_buffered_input: 256 << 20,
            max_presence_key_length: 1024,
            max_presence_bytes_per_client: 10_000_000,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            limits: Limits::default(),
            presence_window: Duration::from_millis(50),
            presence_coalesce_members: 100,
            anon_key: None,
        }
    }
}

/// Room for the envelope of a relayed message (topic, event, refs, WebSocket header) beyond its
/// payload, when checking that a legal message fits the outbox.
pub const ENVELOPE_SLACK: usize = 64 * 1024;

/// A configuration that would cut healthy members or cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The hard outbox cap cannot hold one legal message behind another.
    #[error(
        "outbox_hard_limit ({hard}) must be at least {need} bytes: the largest legal message \
         (max_message_size or max_payload_size_kb, whichever is larger) plus 64 KiB of envelope, \
         and at least outbox_limit"
    )]
    OutboxTooSmall {
        /// The configured cap.
        hard: usize,
        /// The smallest cap that works.
        need: usize,
    },
}

impl Config {
    /// Refuses an outbox cap below what a legal message needs, so no limit an app reaches by
    /// design (a 3,000 kB payload) can disconnect a member who did nothing wrong.
    pub fn check_outbox(&self) -> Result<(), ConfigError> {
        let need = self
            .max_message_size
            .max(self.limits.max_payload_bytes())
            .saturating_add(ENVELOPE_SLACK)
            .max(self.outbox_limit);
        if self.outbox_hard_limit < need {
            return Err(ConfigError::OutboxTooSmall {
                hard: self.outbox_hard_limit,
                need,
            });
        }
        Ok(())
    }
}
