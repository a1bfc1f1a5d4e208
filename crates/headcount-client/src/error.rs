//! The errors of the SDK.

use std::mem::discriminant;
use std::sync::Arc;

/// Why a request to the client, a channel or a presence failed.
///
/// The messages are stable: apps may show them or match on the variants.
///
/// ```
/// use headcount_client::Error;
///
/// let e = Error::Refused("Unauthorized: You do not have permissions to read from this Channel topic: room".into());
/// assert!(e.to_string().starts_with("the server refused: Unauthorized"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The URL is not `http(s)://` or `ws(s)://` followed by a host.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The client's event loop has stopped (after [`disconnect`](crate::RealtimeClient::disconnect),
    /// or because every handle was dropped).
    #[error("the client has shut down")]
    ClientClosed,
    /// The connection was lost before the server replied.
    #[error("the connection was lost before the server replied")]
    Disconnected,
    /// The server did not reply within the push timeout (10 s by default).
    #[error("no reply from the server within the timeout")]
    Timeout,
    /// The server replied with an error; this is its reason (Supabase's exact strings).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The channel was closed (left, or closed by the server) before the push went out.
    #[error("the channel is closed")]
    ChannelClosed,
    /// The channel was never subscribed, so there is nothing to push to.
    #[error("the channel is not subscribed")]
    NotSubscribed,
    /// More than 100 pushes waited for the channel to join; this one, the oldest, was dropped.
    #[error("too many pushes waiting for the channel to join")]
    BufferFull,
    /// The client's request queue is full: the event loop is this far behind (a flood of
    /// pushes, or a socket that does not drain). Nothing was sent; retry later, or await the
    /// replies of earlier pushes before making more. Its size is
    /// [`Capacity::requests`](crate::Capacity::requests), 1024 by default.
    #[error("too many requests waiting for the client's event loop")]
    QueueFull,
    /// Binary broadcast payloads exist only in serializer 2.0.0.
    #[error("binary broadcasts need serializer 2.0.0")]
    BinaryOnV1,
    /// Presence payloads (statuses) are JSON objects.
    #[error("a presence status must be a JSON object")]
    NotAnObject,
    /// A payload (a broadcast, a track or a presence status) could not be turned into JSON;
    /// serde's error is the [source](std::error::Error::source).
    #[error("cannot serialize the payload: {0}")]
    Json(#[source] Arc<serde_json::Error>),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Json(Arc::new(e))
    }
}

/// Errors are equal when they are the same variant with the same reason; two
/// [`Json`](Error::Json) errors, when they have the same message.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        match (self, other) {
            (Error::InvalidUrl(a), Error::InvalidUrl(b))
            | (Error::Refused(a), Error::Refused(b)) => a == b,
            (Error::Json(a), Error::Json(b)) => Arc::ptr_eq(a, b) || a.to_string() == b.to_string(),
            _ => discriminant(self) == discriminant(other),
        }
    }
}

impl Eq for Error {}
