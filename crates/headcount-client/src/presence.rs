//! [`Presence`]: the `RealtimePresence` component's API, in Rust.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::channel::{Channel, Reply, to_object};
use crate::client::RealtimeClient;
use crate::error::Error;
use crate::options::ChannelOptions;
use crate::shared::{EventStream, PresenceError};
use crate::state::sync::{PresenceEvent, PresenceState};
use crate::state::{ChannelState, Command, StatusEvent};

/// The component's default channel name.
pub const DEFAULT_CHANNEL: &str = "any";

/// Options of a [`Presence`], from [`RealtimeClient::presence`]: the user's status and the
/// channel options (the component's `userStatus` and `channelOptions` props).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::{ChannelOptions, RealtimeClient};
/// use serde_json::json;
///
/// let client = RealtimeClient::connect("http://127.0.0.1:9", "<anon key>")?;
/// let presence = client
///     .presence("lobby")
///     .options(ChannelOptions::default().presence_key("alice"))
///     .user_status(json!({"status": "online"}))
///     .join()?;
/// assert_eq!(presence.user_status().borrow()["status"], "online");
/// assert_eq!(presence.channel().topic(), "realtime:lobby");
/// # client.disconnect().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PresenceBuilder {
    client: RealtimeClient,
    name: String,
    /// The status, or why it could not be serialized (reported by [`join`](Self::join)).
    status: Result<Value, Error>,
    options: ChannelOptions,
}

impl PresenceBuilder {
    pub(crate) fn new(client: RealtimeClient, name: &str) -> PresenceBuilder {
        PresenceBuilder {
            client,
            name: name.to_owned(),
            status: Ok(Value::Object(Map::new())),
            options: ChannelOptions::default(),
        }
    }

    /// The status to track (a JSON object; `{}` by default). If it cannot be serialized,
    /// [`join`](Self::join) fails with [`Error::Json`].
    pub fn user_status(mut self, status: impl Serialize) -> Self {
        self.status = serde_json::to_value(status).map_err(Error::from);
        self
    }

    /// The channel options (presence is always enabled).
    pub fn options(mut self, options: ChannelOptions) -> Self {
        self.options = options;
        self
    }

    /// Shortcut for the presence key option: track under `key` instead of a server-picked
    /// UUID.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.options.presence_key = key.into();
        self
    }

    /// Subscribes to the channel and tracks the status on every `SUBSCRIBED`. Returns at once;
    /// the stores fill in as the server answers. Fails only when the status is not a JSON
    /// object ([`Error::NotAnObject`]) or could not be serialized ([`Error::Json`]), or when
    /// the client's request queue has no room for the subscribe and the track
    /// ([`Error::QueueFull`]: nothing was sent).
    pub fn join(self) -> Result<Presence, Error> {
        let status = match self.status? {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(Error::NotAnObject),
        };
        let channel = self.client.channel(&self.name, self.options.clone());
        {
            // A channel that is not subscribed takes these options at its next join; one
            // that is (another presence on the same channel) keeps its own, as realtime-js
            // keeps a channel's options.
            let mut options = channel
                .shared()
                .options
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *channel.state().borrow() == ChannelState::Closed {
                *options = self.options;
            }
            options.presence_enabled = true;
        }
        let (status_tx, _) = watch::channel(status.clone());
        // Both or neither: a subscribe without its track would join without the status.
        let (track, reply) = channel.push_request(Command::AutoTrack(status));
        match channel
            .client()
            .send_all(vec![channel.subscribe_request(), track])
        {
            Ok(()) => drop(reply),
            Err(Error::QueueFull) => return Err(Error::QueueFull),
            // As `Channel::subscribe`: the streams end, the presence stays empty.
            Err(_) => channel.shared().close(),
        }
        Ok(Presence {
            inner: Arc::new(PresenceInner {
                channel,
                status: status_tx,
            }),
        })
    }
}

/// Presence in one channel, as the `RealtimePresence` component gives it: a state store, a
/// user-status store, join and leave events, `update_status`, the error, the channel and the
/// client.
///
/// It tracks the **latest** status (initial status merged with every `update_status`) on every
/// `SUBSCRIBED`, so after a reconnect or a rejoin the user is back with the status they had.
/// Cheap to clone; dropping the last clone leaves the channel (the component's destroy), and
/// the others see the user leave.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::{PresenceEvent, RealtimeClient};
/// use serde_json::json;
///
/// let client = RealtimeClient::connect("http://127.0.0.1:4000", "<anon key>")?;
/// let presence = client.presence("room").key("alice").user_status(json!({"status": "online"})).join()?;
/// let mut events = presence.events();
/// presence.update_status(json!({"status": "away"})).await?;
/// while let Ok(event) = events.recv().await {
///     match event {
///         PresenceEvent::Join { key, new, .. } => println!("{key} joined: {new:?}"),
///         PresenceEvent::Leave { key, left, .. } => println!("{key} left: {left:?}"),
///         PresenceEvent::Sync(state) => println!("{} present", state.count()),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Presence {
    inner: Arc<PresenceInner>,
}

#[derive(Debug)]
struct PresenceInner {
    channel: Channel,
    /// The latest status; written only under its lock, together with the request that tracks
    /// it, so concurrent updates are tracked in the order they were merged.
    status: watch::Sender<Map<String, Value>>,
}

impl Drop for PresenceInner {
    fn drop(&mut self) {
        // Not `leave`: a full request queue must not leave the user present for good.
        self.channel.leave_eventually();
    }
}

impl Presence {
    /// The channel's name.
    pub fn name(&self) -> &str {
        self.inner.channel.name()
    }

    /// The presence state store: key → presences, with [`count`](PresenceState::count).
    pub fn state(&self) -> watch::Receiver<PresenceState> {
        self.inner.channel.presence_state()
    }

    /// The user-status store: the status that is tracked.
    pub fn user_status(&self) -> watch::Receiver<Map<String, Value>> {
        self.inner.status.subscribe()
    }

    /// A stream of joins, leaves (with the key, the current presences and the new or left
    /// ones) and syncs, from now on.
    pub fn events(&self) -> EventStream<PresenceEvent> {
        self.inner.channel.presence_events()
    }

    /// A stream of the channel's statuses from now on.
    pub fn statuses(&self) -> EventStream<StatusEvent> {
        self.inner.channel.statuses()
    }

    /// Merges `status` (a JSON object) into the current status and tracks the result: now if
    /// the channel is joined (resolving with the server's reply), else on the next join
    /// (resolving at once). `null` changes nothing, as in the component. If the client's
    /// request queue is full, it resolves with [`Error::QueueFull`] and the status is left as
    /// it was.
    pub fn update_status(&self, status: impl Serialize) -> Reply {
        let update = match serde_json::to_value(status) {
            Ok(Value::Null) => return Reply::ready(Ok(())),
            Ok(value) => to_object(value),
            Err(e) => Err(Error::from(e)),
        };
        let update = match update {
            Ok(update) => update,
            Err(e) => return Reply::ready(Err(e)),
        };
        let mut reply = None;
        self.inner.status.send_if_modified(|current| {
            let mut next = current.clone();
            next.extend(update);
            match self
                .inner
                .channel
                .try_push(Command::AutoTrack(next.clone()))
            {
                Err(Error::QueueFull) => {
                    reply = Some(Reply::ready(Err(Error::QueueFull)));
                    false
                }
                result => {
                    reply = Some(result.unwrap_or_else(|e| Reply::ready(Err(e))));
                    *current = next;
                    true
                }
            }
        });
        reply.unwrap_or_else(|| Reply::ready(Err(Error::ClientClosed)))
    }

    /// The error, if any: set when the channel reports `CHANNEL_ERROR`, `TIMED_OUT` or
    /// `CLOSED`, cleared by the next sync.
    pub fn error(&self) -> Option<PresenceError> {
        self.inner.channel.shared().error.borrow().clone()
    }

    /// The error, as a store.
    pub fn errors(&self) -> watch::Receiver<Option<PresenceError>> {
        self.inner.channel.shared().error.subscribe()
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.inner.channel
    }

    /// The client.
    pub fn client(&self) -> &RealtimeClient {
        self.inner.channel.client()
    }

    /// Leaves the channel now (the others see the user leave); the state store then holds an
    /// empty, unsynced state and the error store `CLOSED`. Dropping the last clone does the
    /// same.
    pub fn leave(&self) -> Reply {
        self.inner.channel.leave()
    }
}
