//! What a channel's handles and the event loop share: the stores (`watch`) and the subscribers
//! of the event streams. The event loop writes, the handles read.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};

use crate::options::ChannelOptions;
use crate::state::sync::{PresenceEvent, PresenceState};
use crate::state::{BroadcastMessage, ChannelState, StatusEvent, SubscribeStatus};

/// A stream of events from the client: statuses, broadcasts or presence events.
///
/// Every stream gets every event that happens after it was created, in order, and ends when
/// the client shuts down. Events wait in the stream until read: drop a stream you no longer
/// read.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::RealtimeClient;
///
/// let client = RealtimeClient::connect("http://127.0.0.1:9", "anon-key")?;
/// let mut statuses = client.channel("room", Default::default()).statuses();
/// client.disconnect().await;
/// assert!(statuses.recv().await.is_none(), "streams end with the client");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EventStream<T> {
    rx: mpsc::UnboundedReceiver<T>,
}

impl<T> EventStream<T> {
    /// The next event; `None` once the client has shut down.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<T> Stream for EventStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The error of a [`Presence`](crate::Presence), as the component reports it: set when the
/// channel reports `CHANNEL_ERROR`, `TIMED_OUT` or `CLOSED`, cleared by the next sync.
///
/// ```
/// use headcount_client::{PresenceError, SubscribeStatus};
///
/// let e = PresenceError { channel: "room".into(), status: SubscribeStatus::TimedOut, reason: None };
/// assert_eq!(e.to_string(), "Channel room error: TIMED_OUT");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Channel {channel} error: {status}")]
pub struct PresenceError {
    /// The channel's name (without `realtime:`).
    pub channel: String,
    /// The status that caused it.
    pub status: SubscribeStatus,
    /// The server's reason, when it gave one.
    pub reason: Option<String>,
}

#[derive(Debug, Default)]
struct Subscribers {
    /// Set when the client has shut down: new subscribers get a stream that has ended.
    closed: bool,
    statuses: Vec<mpsc::UnboundedSender<StatusEvent>>,
    broadcasts: Vec<(String, mpsc::UnboundedSender<BroadcastMessage>)>,
    presence: Vec<mpsc::UnboundedSender<PresenceEvent>>,
}

/// One channel's shared half. Owned jointly by its handles and, while subscribed, the event
/// loop (which is the only writer).
#[derive(Debug)]
pub(crate) struct ChannelShared {
    /// The name the app gave (`room`).
    pub(crate) name: String,
    /// `realtime:` + name.
    pub(crate) topic: String,
    /// Read when a subscribe is handled: a [`Presence`](crate::Presence) turns presence on.
    pub(crate) options: Mutex<ChannelOptions>,
    pub(crate) state: watch::Sender<ChannelState>,
    pub(crate) presence: watch::Sender<PresenceState>,
    pub(crate) error: watch::Sender<Option<PresenceError>>,
    subscribers: Mutex<Subscribers>,
}

fn retain_open<T: Clone>(senders: &mut Vec<mpsc::UnboundedSender<T>>, event: &T) {
    senders.retain(|tx| tx.send(event.clone()).is_ok());
}

impl ChannelShared {
    pub(crate) fn new(name: &str, options: ChannelOptions) -> ChannelShared {
        ChannelShared {
            name: name.to_owned(),
            topic: format!("realtime:{name}"),
            options: Mutex::new(options),
            state: watch::channel(ChannelState::Closed).0,
            presence: watch::channel(PresenceState::default()).0,
            error: watch::channel(None).0,
            subscribers: Mutex::new(Subscribers::default()),
        }
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // A panic while holding this lock cannot leave the lists inconsistent.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn options(&self) -> ChannelOptions {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn statuses(&self) -> EventStream<StatusEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers();
        if !subs.closed {
            subs.statuses.push(tx);
        }
        EventStream { rx }
    }

    pub(crate) fn broadcasts(&self, event: &str) -> EventStream<BroadcastMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers();
        if !subs.closed {
            subs.broadcasts.push((event.to_owned(), tx));
        }
        EventStream { rx }
    }

    pub(crate) fn presence_events(&self) -> EventStream<PresenceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.subscribers();
        if !subs.closed {
            subs.presence.push(tx);
        }
        EventStream { rx }
    }

    pub(crate) fn on_state(&self, state: ChannelState) {
        self.state.send_replace(state);
    }

    pub(crate) fn on_status(&self, event: StatusEvent) {
        if event.status != SubscribeStatus::Subscribed {
            self.error.send_replace(Some(PresenceError {
                channel: self.name.clone(),
                status: event.status,
                reason: event.reason.clone(),
            }));
        }
        retain_open(&mut self.subscribers().statuses, &event);
    }

    /// Delivers to the streams whose filter is `*` or the event name, ignoring case (as
    /// realtime-js matches broadcast bindings).
    pub(crate) fn on_broadcast(&self, message: BroadcastMessage) {
        self.subscribers().broadcasts.retain(|(filter, tx)| {
            if filter == "*" || filter.eq_ignore_ascii_case(&message.event) {
                tx.send(message.clone()).is_ok()
            } else {
                !tx.is_closed()
            }
        });
    }

    pub(crate) fn on_presence(&self, event: PresenceEvent) {
        if let PresenceEvent::Sync(state) = &event {
            self.presence.send_replace(state.clone());
            self.error.send_replace(None);
        }
        retain_open(&mut self.subscribers().presence, &event);
    }

    /// The channel was closed: its presence view is gone (a new subscription starts from an
    /// empty one), as the component drops its data on `CLOSED`.
    pub(crate) fn on_removed(&self) {
        self.presence.send_replace(PresenceState::default());
    }

    /// The client shut down: every stream ends.
    pub(crate) fn close(&self) {
        let mut subs = self.subscribers();
        subs.closed = true;
        subs.statuses.clear();
        subs.broadcasts.clear();
        subs.presence.clear();
    }
}
