//! The data that goes in and out of [`ClientState`](super::ClientState).

use headcount_protocol::FrameKind;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::state::sync::PresenceEvent;

/// The lifecycle state of a channel, as phoenix.js names them.
///
/// ```
/// use headcount_client::ChannelState;
///
/// assert_eq!(ChannelState::default(), ChannelState::Closed);
/// assert_eq!(ChannelState::Joined.as_str(), "joined");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Not subscribed, or left, or closed by the server.
    #[default]
    Closed,
    /// A join failed, timed out, or the connection dropped; a rejoin is scheduled.
    Errored,
    /// Joined: pushes go out at once.
    Joined,
    /// Waiting for the reply to a join (or for a connection to send it on).
    Joining,
    /// Waiting for the reply to a leave.
    Leaving,
}

impl ChannelState {
    /// The phoenix.js name: `closed`, `errored`, `joined`, `joining`, `leaving`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Closed => "closed",
            ChannelState::Errored => "errored",
            ChannelState::Joined => "joined",
            ChannelState::Joining => "joining",
            ChannelState::Leaving => "leaving",
        }
    }
}

/// What a subscription reports, as realtime-js's `subscribe(callback)` does.
///
/// ```
/// use headcount_client::SubscribeStatus;
///
/// assert_eq!(SubscribeStatus::ChannelError.as_str(), "CHANNEL_ERROR");
/// assert_eq!(SubscribeStatus::TimedOut.to_string(), "TIMED_OUT");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscribeStatus {
    /// The join succeeded (again, after every rejoin).
    Subscribed,
    /// The join was refused, the server reported a channel error, or the connection dropped.
    /// A rejoin follows by itself.
    ChannelError,
    /// The join got no reply in time. A rejoin follows by itself.
    TimedOut,
    /// The channel was left, or closed by the server (no rejoin).
    Closed,
}

impl SubscribeStatus {
    /// realtime-js's name: `SUBSCRIBED`, `CHANNEL_ERROR`, `TIMED_OUT`, `CLOSED`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscribeStatus::Subscribed => "SUBSCRIBED",
            SubscribeStatus::ChannelError => "CHANNEL_ERROR",
            SubscribeStatus::TimedOut => "TIMED_OUT",
            SubscribeStatus::Closed => "CLOSED",
        }
    }
}

impl std::fmt::Display for SubscribeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status report of a channel, with the server's reason when it gave one (a join error's
/// `reason`, or the `system` message that preceded a close).
///
/// ```
/// use headcount_client::{StatusEvent, SubscribeStatus};
///
/// let event = StatusEvent { status: SubscribeStatus::Subscribed, reason: None };
/// assert!(event.is_subscribed());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The status.
    pub status: SubscribeStatus,
    /// Why, if known.
    pub reason: Option<String>,
}

impl StatusEvent {
    /// Whether this is [`SubscribeStatus::Subscribed`].
    pub fn is_subscribed(&self) -> bool {
        self.status == SubscribeStatus::Subscribed
    }
}

/// The payload of a broadcast: JSON, or opaque bytes (serializer 2.0.0 only).
///
/// ```
/// use headcount_client::BroadcastPayload;
/// use serde_json::json;
///
/// let p = BroadcastPayload::Json(json!({"x": 1}));
/// assert_eq!(p.as_json(), Some(&json!({"x": 1})));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum BroadcastPayload {
    /// A JSON value.
    Json(Value),
    /// Opaque bytes (an `ArrayBuffer` in realtime-js).
    Binary(Vec<u8>),
}

impl BroadcastPayload {
    /// The JSON value, if this is one.
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            BroadcastPayload::Json(v) => Some(v),
            BroadcastPayload::Binary(_) => None,
        }
    }
}

/// A broadcast received on a channel.
///
/// ```
/// use headcount_client::{BroadcastMessage, BroadcastPayload};
/// use serde_json::json;
///
/// let m = BroadcastMessage { event: "cursor".into(), payload: BroadcastPayload::Json(json!({"x": 1})), meta: None };
/// assert_eq!(m.event, "cursor");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BroadcastMessage {
    /// The user's event name.
    pub event: String,
    /// The user's payload (`null` when a JSON broadcast had none).
    pub payload: BroadcastPayload,
    /// The `meta` the server attached (REST and replayed messages), if any.
    pub meta: Option<Value>,
}

/// Identifies a request whose outcome the state machine reports with [`Output::Done`].
///
/// ```
/// use std::time::Instant;
/// use headcount_client::state::{ClientState, Command, Output, PushId};
/// use headcount_client::{Error, Serializer, Timing};
///
/// let mut state = ClientState::new(Serializer::V2, Timing::default(), None);
/// state.push("realtime:nowhere", Command::Untrack, Some(PushId(1)), Instant::now());
/// assert_eq!(state.poll_output(), Some(Output::Done { id: PushId(1), result: Err(Error::NotSubscribed) }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PushId(pub u64);

/// A push to a channel.
///
/// ```
/// use headcount_client::state::Command;
/// use serde_json::json;
///
/// let track = Command::Track(json!({"status": "online"}).as_object().unwrap().clone());
/// assert!(matches!(track, Command::Track(_)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Track this connection's presence with this payload (an update when already tracked).
    Track(Map<String, Value>),
    /// Stop tracking.
    Untrack,
    /// Send a broadcast to the channel's members.
    Broadcast {
        /// The user's event name.
        event: String,
        /// The payload.
        payload: BroadcastPayload,
    },
    /// The presence status to track now (if joined) and again after every join: what keeps a
    /// [`Presence`](crate::Presence) tracked with its latest status across reconnects.
    AutoTrack(Map<String, Value>),
}

/// A frame to write to the socket.
///
/// ```
/// use headcount_client::state::OutFrame;
///
/// let frame = OutFrame::Text(r#"[null,"1","phoenix","heartbeat",{}]"#.into());
/// assert!(frame.as_text().is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl OutFrame {
    pub(crate) fn from_bytes(kind: FrameKind, bytes: Vec<u8>) -> OutFrame {
        match kind {
            FrameKind::Text => {
                OutFrame::Text(String::from_utf8(bytes).expect("text frames are UTF-8"))
            }
            FrameKind::Binary => OutFrame::Binary(bytes),
        }
    }

    /// The text, if this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            OutFrame::Text(t) => Some(t),
            OutFrame::Binary(_) => None,
        }
    }
}

/// What the state machine tells its driver, in order.
///
/// ```
/// use std::time::Instant;
/// use headcount_client::state::{ClientState, Output};
/// use headcount_client::{ChannelOptions, ChannelState, Serializer, Timing};
///
/// let mut state = ClientState::new(Serializer::V2, Timing::default(), None);
/// state.subscribe("realtime:room", ChannelOptions::default(), Instant::now());
/// assert_eq!(
///     state.poll_output(),
///     Some(Output::State { topic: "realtime:room".into(), state: ChannelState::Joining })
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A channel changed lifecycle state.
    State {
        /// The channel's topic.
        topic: String,
        /// Its new state.
        state: ChannelState,
    },
    /// A channel reports a subscription status.
    Status {
        /// The channel's topic.
        topic: String,
        /// The report.
        event: StatusEvent,
    },
    /// A broadcast arrived on a channel.
    Broadcast {
        /// The channel's topic.
        topic: String,
        /// The message.
        message: BroadcastMessage,
    },
    /// Presence changed on a channel.
    Presence {
        /// The channel's topic.
        topic: String,
        /// A join, a leave or a sync.
        event: PresenceEvent,
    },
    /// A request finished.
    Done {
        /// The request.
        id: PushId,
        /// How it went.
        result: Result<(), Error>,
    },
    /// The channel is gone from the state (closed); a new subscribe starts afresh.
    Removed {
        /// The channel's topic.
        topic: String,
    },
    /// The connection must be closed (a heartbeat got no reply in time); call
    /// [`ClientState::handle_close`](super::ClientState::handle_close) once it is.
    Disconnect {
        /// Why.
        reason: String,
    },
}
