//! Server configuration.

use std::time::Duration;

/// Everything the server needs to know, with defaults that suit one self-hosted node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HMAC secret that signs and verifies JWTs (HS256/384/512).
    pub jwt_secret: String,
    /// A socket that sends no frame for this long is closed (Phoenix's default: 60 s).
    pub idle_timeout: Duration,
    /// How often the shared timer looks for idle sockets and expired tokens.
    pub tick: Duration,
    /// The largest WebSocket frame accepted from a client (Supabase: 5,000,000 bytes).
    pub max_frame_size: usize,
    /// The largest WebSocket message (all fragments together) accepted from a client.
    pub max_message_size: usize,
    /// The most bytes a connection may have queued for sending before it is disconnected as a
    /// slow consumer.
    pub outbox_limit: usize,
    /// How long the HTTP layer waits for a request's headers.
    pub header_read_timeout: Duration,
    /// On shutdown, how long to wait for connections to finish after telling them to go.
    pub shutdown_grace: Duration,
    /// The public anon key to hand to the demo page, if any.
    pub anon_key: Option<String>,
}

impl Config {
    /// The defaults, with this JWT secret.
    pub fn new(jwt_secret: impl Into<String>) -> Config {
        Config {
            jwt_secret: jwt_secret.into(),
            idle_timeout: Duration::from_secs(60),
            tick: Duration::from_millis(500),
            max_frame_size: 5_000_000,
            max_message_size: 5_000_000,
            outbox_limit: 1 << 20,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            anon_key: None,
        }
    }
}
