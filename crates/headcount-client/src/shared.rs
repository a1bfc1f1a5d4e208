//! What a channel's handles and the event loop share: the stores (`watch`) and the subscribers
//! of the event streams. The event loop writes, the handles read.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use tokio::sync::watch;

use crate::options::ChannelOptions;
use crate::state::sync::{PresenceEvent, PresenceState};
use crate::state::{BroadcastMessage, ChannelState, StatusEvent, SubscribeStatus};

/// A stream of events from the client: statuses, broadcasts or presence events.
///
/// Every stream gets every event that happens after it was created, in order, and ends when
/// the client shuts down (after the events still waiting in it have been read).
///
/// **Streams are bounded and lossy.** Each holds at most
/// [`Capacity::events`](crate::options::Capacity::events) events (1024 by default, set with
/// [`ClientBuilder::event_capacity`](crate::ClientBuilder::event_capacity)). When an event
/// arrives at a full stream, the **oldest** waiting event is dropped, so a slow reader catches
/// up with the latest events (the latest status, the latest presence sync) rather than old
/// ones; the next read then reports [`RecvError::Lagged`] with the number of events missed,
/// and the reads after it continue with the oldest event still kept. The client never waits
/// for a reader, and a stream that nobody reads costs at most its capacity: drop a stream you
/// no longer read all the same.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::{RealtimeClient, RecvError};
///
/// let client = RealtimeClient::connect("http://127.0.0.1:9", "anon-key")?;
/// let mut statuses = client.channel("room", Default::default()).statuses();
/// client.disconnect().await;
/// assert_eq!(statuses.recv().await, Err(RecvError::Closed), "streams end with the client");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EventStream<T> {
    queue: Arc<Mutex<Queue<T>>>,
}

/// Why [`EventStream::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The stream was full and this many of its oldest events were dropped; the next read
    /// returns the oldest event that was kept.
    #[error("the stream fell behind and missed {0} events")]
    Lagged(u64),
    /// The client has shut down and every event has been read.
    #[error("the client has shut down")]
    Closed,
}

/// Why [`EventStream::try_recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting.
    #[error("no event is waiting")]
    Empty,
    /// As [`RecvError::Lagged`].
    #[error("the stream fell behind and missed {0} events")]
    Lagged(u64),
    /// As [`RecvError::Closed`].
    #[error("the client has shut down")]
    Closed,
}

/// The error item of an [`EventStream`] used as a [`Stream`]: this many events were dropped
/// (see [`RecvError::Lagged`]). The stream ends when the client shuts down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the stream fell behind and missed {0} events")]
pub struct Lagged(pub u64);

/// One stream's queue, shared by the stream and its [`Sink`] in the subscriber lists.
#[derive(Debug)]
struct Queue<T> {
    events: VecDeque<T>,
    capacity: usize,
    /// Events dropped since the last read.
    missed: u64,
    /// The sink is gone: the client shut down.
    closed: bool,
    /// The reader waiting for an event.
    waker: Option<Waker>,
}

/// The writing end of one stream, kept in the subscriber lists. Dropping it ends the stream.
#[derive(Debug)]
struct Sink<T> {
    queue: Arc<Mutex<Queue<T>>>,
}

fn lock<T>(queue: &Mutex<Queue<T>>) -> std::sync::MutexGuard<'_, Queue<T>> {
    // Nothing panics while holding this lock; a poisoned queue is still consistent.
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream of at most `capacity` waiting events (at least 1), and its sink; a stream made
/// after the client shut down (`closed`) has no sink and has ended.
fn stream<T>(capacity: usize, closed: bool) -> (Sink<T>, EventStream<T>) {
    let queue = Arc::new(Mutex::new(Queue {
        events: VecDeque::new(),
        capacity: capacity.max(1),
        missed: 0,
        closed,
        waker: None,
    }));
    (
        Sink {
            queue: queue.clone(),
        },
        EventStream { queue },
    )
}

impl<T> Sink<T> {
    /// Queues `event`, dropping the oldest one if the stream is full. Returns `false` once the
    /// stream has been dropped, so the sink can be forgotten.
    fn send(&self, event: T) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut queue = lock(&self.queue);
        if queue.events.len() >= queue.capacity {
            queue.events.pop_front();
            queue.missed += 1;
        }
        queue.events.push_back(event);
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
        true
    }

    /// Whether the stream has been dropped (the sink holds the only reference).
    fn is_closed(&self) -> bool {
        Arc::strong_count(&self.queue) == 1
    }
}

impl<T> Drop for Sink<T> {
    fn drop(&mut self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }
}

impl<T> EventStream<T> {
    /// The next event. Fails with [`RecvError::Lagged`] once after events were dropped (the
    /// stream was full), and with [`RecvError::Closed`] once the client has shut down and
    /// every event has been read. Cancel-safe: an event is only taken when it is returned.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is waiting; as [`recv`](Self::recv) otherwise.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut queue = lock(&self.queue);
        match take(&mut queue) {
            Some(Ok(event)) => Ok(event),
            Some(Err(RecvError::Lagged(n))) => Err(TryRecvError::Lagged(n)),
            Some(Err(RecvError::Closed)) => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        let mut queue = lock(&self.queue);
        match take(&mut queue) {
            Some(result) => Poll::Ready(result),
            None => {
                queue.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// What a read gets: the lag first, then the events, then the end; `None` while waiting.
fn take<T>(queue: &mut Queue<T>) -> Option<Result<T, RecvError>> {
    if queue.missed > 0 {
        let missed = std::mem::take(&mut queue.missed);
        return Some(Err(RecvError::Lagged(missed)));
    }
    match queue.events.pop_front() {
        Some(event) => Some(Ok(event)),
        None if queue.closed => Some(Err(RecvError::Closed)),
        None => None,
    }
}

/// Yields `Err(Lagged(n))` where [`recv`](EventStream::recv) fails with
/// [`RecvError::Lagged`], and ends where it fails with [`RecvError::Closed`].
impl<T> Stream for EventStream<T> {
    type Item = Result<T, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_recv(cx).map(|result| match result {
            Ok(event) => Some(Ok(event)),
            Err(RecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(RecvError::Closed) => None,
        })
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
    statuses: Vec<Sink<StatusEvent>>,
    broadcasts: Vec<(String, Sink<BroadcastMessage>)>,
    presence: Vec<Sink<PresenceEvent>>,
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
    /// How many events each stream holds.
    capacity: usize,
    subscribers: Mutex<Subscribers>,
}

fn retain_open<T: Clone>(sinks: &mut Vec<Sink<T>>, event: &T) {
    sinks.retain(|sink| sink.send(event.clone()));
}

impl ChannelShared {
    /// A channel whose streams hold `capacity` events each.
    pub(crate) fn new(name: &str, options: ChannelOptions, capacity: usize) -> ChannelShared {
        ChannelShared {
            name: name.to_owned(),
            topic: format!("realtime:{name}"),
            options: Mutex::new(options),
            state: watch::channel(ChannelState::Closed).0,
            presence: watch::channel(PresenceState::default()).0,
            error: watch::channel(None).0,
            capacity,
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
        let mut subs = self.subscribers();
        let (sink, stream) = stream(self.capacity, subs.closed);
        if !subs.closed {
            subs.statuses.push(sink);
        }
        stream
    }

    /// A stream of statuses that starts with `first` (which only this stream gets).
    pub(crate) fn statuses_after(&self, first: StatusEvent) -> EventStream<StatusEvent> {
        let mut subs = self.subscribers();
        let (sink, stream) = stream(self.capacity, false);
        sink.send(first);
        if !subs.closed {
            subs.statuses.push(sink);
        }
        stream
    }

    pub(crate) fn broadcasts(&self, event: &str) -> EventStream<BroadcastMessage> {
        let mut subs = self.subscribers();
        let (sink, stream) = stream(self.capacity, subs.closed);
        if !subs.closed {
            subs.broadcasts.push((event.to_owned(), sink));
        }
        stream
    }

    pub(crate) fn presence_events(&self) -> EventStream<PresenceEvent> {
        let mut subs = self.subscribers();
        let (sink, stream) = stream(self.capacity, subs.closed);
        if !subs.closed {
            subs.presence.push(sink);
        }
        stream
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
        self.subscribers().broadcasts.retain(|(filter, sink)| {
            if filter == "*" || filter.eq_ignore_ascii_case(&message.event) {
                sink.send(message.clone())
            } else {
                !sink.is_closed()
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn status(reason: &str) -> StatusEvent {
        StatusEvent {
            status: SubscribeStatus::ChannelError,
            reason: Some(reason.to_owned()),
        }
    }

    fn reason(event: StatusEvent) -> String {
        event.reason.unwrap_or_default()
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_keeps_the_newest_events_and_reports_how_many_it_missed() {
        let shared = ChannelShared::new("room", ChannelOptions::default(), 3);
        let mut statuses = shared.statuses();
        for n in 1..=5 {
            shared.on_status(status(&n.to_string()));
        }
        assert_eq!(
            statuses.try_recv().map(reason),
            Err(TryRecvError::Lagged(2))
        );
        assert_eq!(statuses.recv().await.map(reason), Ok("3".into()));
        assert_eq!(statuses.recv().await.map(reason), Ok("4".into()));
        assert_eq!(statuses.recv().await.map(reason), Ok("5".into()));
        assert_eq!(statuses.try_recv(), Err(TryRecvError::Empty));

        // The lag is reported once, then the count starts again.
        for n in 6..=10 {
            shared.on_status(status(&n.to_string()));
        }
        assert_eq!(statuses.recv().await, Err(RecvError::Lagged(2)));
        assert_eq!(statuses.recv().await.map(reason), Ok("8".into()));
    }

    #[tokio::test]
    async fn as_a_stream_the_lag_is_an_error_item_and_the_end_is_the_end() {
        let shared = ChannelShared::new("room", ChannelOptions::default(), 1);
        let mut statuses = shared.statuses();
        shared.on_status(status("1"));
        shared.on_status(status("2"));
        shared.close();
        assert_eq!(statuses.next().await, Some(Err(Lagged(1))));
        assert_eq!(
            statuses.next().await.map(|r| r.map(reason)),
            Some(Ok("2".into()))
        );
        assert_eq!(statuses.next().await, None);
    }

    #[tokio::test]
    async fn events_queued_before_the_shutdown_are_read_before_the_end() {
        let shared = ChannelShared::new("room", ChannelOptions::default(), 8);
        let mut statuses = shared.statuses();
        shared.on_status(status("last"));
        shared.close();
        assert_eq!(statuses.recv().await.map(reason), Ok("last".into()));
        assert_eq!(statuses.recv().await, Err(RecvError::Closed));
        assert_eq!(shared.statuses().try_recv(), Err(TryRecvError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_and_a_dropped_stream_is_forgotten() {
        let shared = Arc::new(ChannelShared::new("room", ChannelOptions::default(), 8));
        let mut statuses = shared.statuses();
        let writer = shared.clone();
        let read = tokio::spawn(async move { statuses.recv().await.map(reason) });
        tokio::task::yield_now().await;
        writer.on_status(status("woken"));
        assert_eq!(read.await.ok(), Some(Ok("woken".into())));

        let dropped = shared.broadcasts("*");
        drop(dropped);
        shared.on_status(status("nobody"));
        assert!(shared.subscribers().statuses.is_empty());
        assert_eq!(shared.subscribers().broadcasts.len(), 1);
        shared.on_broadcast(BroadcastMessage {
            event: "e".into(),
            payload: crate::BroadcastPayload::Json(serde_json::Value::Null),
            meta: None,
        });
        assert!(shared.subscribers().broadcasts.is_empty());
    }
}
