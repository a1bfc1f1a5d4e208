//! [`Channel`]: one topic's handle: subscribe, statuses, broadcast, track, leave.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};

use crate::client::RealtimeClient;
use crate::error::Error;
use crate::eventloop::Request;
use crate::options::ChannelOptions;
use crate::shared::{ChannelShared, EventStream};
use crate::state::sync::{PresenceEvent, PresenceState};
use crate::state::{
    BroadcastMessage, BroadcastPayload, ChannelState, Command, StatusEvent, SubscribeStatus,
};

/// The outcome of a push: a future that resolves when the server replied (or, for a
/// broadcast without `ack`, when it was sent).
///
/// The push is made when the method that returns the `Reply` is called, so awaiting is
/// optional: drop the `Reply` to fire and forget.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use headcount_client::{Error, Reply};
///
/// assert_eq!(Reply::ready(Err(Error::NotAnObject)).await, Err(Error::NotAnObject));
/// # }
/// ```
#[derive(Debug)]
pub struct Reply {
    inner: ReplyInner,
}

#[derive(Debug)]
enum ReplyInner {
    Ready(Option<Result<(), Error>>),
    Waiting(oneshot::Receiver<Result<(), Error>>),
}

impl Reply {
    /// A reply that is already known.
    pub fn ready(result: Result<(), Error>) -> Reply {
        Reply {
            inner: ReplyInner::Ready(Some(result)),
        }
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Result<(), Error>>) -> Reply {
        Reply {
            inner: ReplyInner::Waiting(rx),
        }
    }
}

impl Future for Reply {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            ReplyInner::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(Error::ClientClosed)))
            }
            ReplyInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(Error::ClientClosed))),
        }
    }
}

/// A channel: realtime-js's `RealtimeChannel`. Cheap to clone; all clones are the same
/// channel.
///
/// Subscribe to join it; it then rejoins by itself after errors and reconnects (reporting
/// `CHANNEL_ERROR` or `TIMED_OUT`, then `SUBSCRIBED` again), until it is left or closed by the
/// server (`CLOSED`). Pushes made before the channel is joined wait for the join (100 at most,
/// each within its timeout).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::{ChannelOptions, RealtimeClient};
/// use serde_json::json;
///
/// let client = RealtimeClient::connect("http://127.0.0.1:4000", "<anon key>")?;
/// let room = client.channel("room", ChannelOptions::default().broadcast_ack(true));
/// let mut cursors = room.on_broadcast("cursor");
/// let mut statuses = room.subscribe();
/// while let Ok(event) = statuses.recv().await {
///     if event.is_subscribed() {
///         break;
///     }
/// }
/// room.send("cursor", json!({"x": 1, "y": 2})).await?;
/// if let Ok(message) = cursors.recv().await {
///     println!("{}: {:?}", message.event, message.payload);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Channel {
    shared: Arc<ChannelShared>,
    client: RealtimeClient,
}

/// A JSON object from anything serializable, for presence payloads.
pub(crate) fn to_object(value: impl Serialize) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::NotAnObject),
        Err(e) => Err(Error::from(e)),
    }
}

impl Channel {
    pub(crate) fn new(shared: Arc<ChannelShared>, client: RealtimeClient) -> Channel {
        Channel { shared, client }
    }

    pub(crate) fn shared(&self) -> &Arc<ChannelShared> {
        &self.shared
    }

    /// The name (`room`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The topic (`realtime:room`).
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The options the channel joins with.
    pub fn options(&self) -> ChannelOptions {
        self.shared.options()
    }

    /// The client.
    pub fn client(&self) -> &RealtimeClient {
        &self.client
    }

    /// Joins the channel (a no-op if it is already joining or joined) and returns a stream of
    /// its statuses from now on.
    ///
    /// If the client's request queue is full ([`Error::QueueFull`]), nothing is sent and the
    /// returned stream starts with a `CHANNEL_ERROR` whose reason says so (the channel's other
    /// streams see nothing); subscribe again later.
    pub fn subscribe(&self) -> EventStream<StatusEvent> {
        match self.client.send(self.subscribe_request()) {
            Ok(()) => self.shared.statuses(),
            Err(Error::QueueFull) => self.shared.statuses_after(StatusEvent {
                status: SubscribeStatus::ChannelError,
                reason: Some(Error::QueueFull.to_string()),
            }),
            Err(_) => {
                let statuses = self.shared.statuses();
                self.shared.close();
                statuses
            }
        }
    }

    pub(crate) fn subscribe_request(&self) -> Request {
        Request::Subscribe(self.shared.clone())
    }

    /// A stream of this channel's statuses from now on, without subscribing.
    pub fn statuses(&self) -> EventStream<StatusEvent> {
        self.shared.statuses()
    }

    /// The lifecycle state, as a store.
    pub fn state(&self) -> watch::Receiver<ChannelState> {
        self.shared.state.subscribe()
    }

    /// A stream of the broadcasts whose event is `event` (ignoring case), or of all of them
    /// for `"*"`.
    pub fn on_broadcast(&self, event: &str) -> EventStream<BroadcastMessage> {
        self.shared.broadcasts(event)
    }

    /// The presence state, as a store (updated on every sync; needs presence enabled in the
    /// options to receive `presence_state`).
    pub fn presence_state(&self) -> watch::Receiver<PresenceState> {
        self.shared.presence.subscribe()
    }

    /// A stream of presence joins, leaves and syncs from now on.
    pub fn presence_events(&self) -> EventStream<PresenceEvent> {
        self.shared.presence_events()
    }

    /// The request of a push, and where its reply will come.
    pub(crate) fn push_request(&self, command: Command) -> (Request, Reply) {
        let (tx, rx) = oneshot::channel();
        let request = Request::Push {
            topic: self.shared.topic.clone(),
            command,
            reply: Some(tx),
        };
        (request, Reply::waiting(rx))
    }

    /// Pushes `command`; the reply is an error at once if the request could not be queued
    /// ([`Error::QueueFull`], [`Error::ClientClosed`]).
    pub(crate) fn try_push(&self, command: Command) -> Result<Reply, Error> {
        let (request, reply) = self.push_request(command);
        self.client.send(request).map(|()| reply)
    }

    pub(crate) fn push(&self, command: Command) -> Reply {
        self.try_push(command)
            .unwrap_or_else(|e| Reply::ready(Err(e)))
    }

    /// Broadcasts `payload` under `event` to the channel's members (binary kind 3 on 2.0.0,
    /// as realtime-js sends it). Resolves when the server acknowledged it with
    /// [`broadcast_ack`](ChannelOptions::broadcast_ack), else when it was sent.
    pub fn send(&self, event: &str, payload: impl Serialize) -> Reply {
        match serde_json::to_value(payload) {
            Ok(value) => self.push(Command::Broadcast {
                event: event.to_owned(),
                payload: BroadcastPayload::Json(value),
            }),
            Err(e) => Reply::ready(Err(Error::from(e))),
        }
    }

    /// Broadcasts opaque bytes under `event` (serializer 2.0.0 only; receivers on 1.0.0 do
    /// not get them).
    pub fn send_binary(&self, event: &str, bytes: impl Into<Vec<u8>>) -> Reply {
        self.push(Command::Broadcast {
            event: event.to_owned(),
            payload: BroadcastPayload::Binary(bytes.into()),
        })
    }

    /// Tracks this connection's presence with `payload` (a JSON object); tracking again
    /// updates it. Resolves with the server's reply.
    pub fn track(&self, payload: impl Serialize) -> Reply {
        match to_object(payload) {
            Ok(map) => self.push(Command::Track(map)),
            Err(e) => Reply::ready(Err(e)),
        }
    }

    /// Stops tracking this connection's presence.
    pub fn untrack(&self) -> Reply {
        self.push(Command::Untrack)
    }

    /// Leaves the channel: `phx_leave`, then `CLOSED`. Resolves when the server replied (or
    /// after the timeout). The channel can be subscribed again afterwards. Resolves with
    /// [`Error::QueueFull`] at once, without leaving, if the client's request queue is full.
    pub fn leave(&self) -> Reply {
        let (tx, rx) = oneshot::channel();
        let request = Request::Leave {
            topic: self.shared.topic.clone(),
            reply: Some(tx),
        };
        match self.client.send(request) {
            Ok(()) => Reply::waiting(rx),
            Err(Error::QueueFull) => Reply::ready(Err(Error::QueueFull)),
            Err(_) => Reply::ready(Ok(())),
        }
    }

    /// Leaves the channel without a reply, even if the request queue is full for now (see
    /// [`RealtimeClient::send_eventually`]): for a [`Presence`](crate::Presence) dropped.
    pub(crate) fn leave_eventually(&self) {
        self.client.send_eventually(Request::Leave {
            topic: self.shared.topic.clone(),
            reply: None,
        });
    }
}
