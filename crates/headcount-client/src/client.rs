//! [`RealtimeClient`]: the cheap handle to one connection (the `SupabaseApp` of Rust).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::channel::Channel;
use crate::error::Error;
use crate::eventloop::{ConnectionState, EventLoop, Registry, Request};
use crate::options::{Backoff, Capacity, ChannelOptions, Timing};
use crate::presence::PresenceBuilder;
use crate::shared::ChannelShared;
use crate::state::ClientState;
use crate::{Serializer, url};

/// A connection to a Supabase Realtime server (headcount, or Supabase's hosted Realtime).
///
/// Cloning is cheap: every clone talks to the same event loop, a tokio task that owns the
/// socket, sends heartbeats every 25 s, reconnects with backoff (1, 2, 5, 10 s) and rejoins
/// the channels. The task ends when [`disconnect`](Self::disconnect) is called or when the
/// last handle (client, channel or presence) is dropped.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use headcount_client::RealtimeClient;
///
/// let client = RealtimeClient::connect("http://127.0.0.1:4000", "<anon key>")?;
/// let room = client.presence("room").user_status(serde_json::json!({"status": "online"})).join()?;
/// let mut state = room.state();
/// state.changed().await.ok();
/// println!("{} here", state.borrow().count());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RealtimeClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    /// Bounded: a handle call that finds it full fails with [`Error::QueueFull`] rather than
    /// wait (handle calls are not async, and some run in `Drop`).
    requests: mpsc::Sender<Request>,
    /// The token, as a store rather than a request: only the latest matters, so it can never
    /// be refused by a full queue.
    auth: watch::Sender<Option<String>>,
    registry: Registry,
    connection: watch::Receiver<ConnectionState>,
    serializer: Serializer,
    /// The endpoint without its query (no apikey).
    endpoint: String,
    /// How many events each stream holds.
    event_capacity: usize,
}

/// Options of a [`RealtimeClient`], from [`RealtimeClient::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), headcount_client::Error> {
/// use std::time::Duration;
/// use headcount_client::{RealtimeClient, Serializer};
///
/// let client = RealtimeClient::builder("https://abcd.supabase.co", "<anon key>")
///     .serializer(Serializer::V1)
///     .heartbeat_interval(Duration::from_secs(30))
///     .connect()?;
/// assert_eq!(client.endpoint(), "wss://abcd.supabase.co/realtime/v1/websocket");
/// assert_eq!(client.serializer(), Serializer::V1);
/// # client.disconnect().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    url: String,
    apikey: String,
    access_token: Option<String>,
    serializer: Serializer,
    timing: Timing,
    capacity: Capacity,
}

impl ClientBuilder {
    /// The serializer: [`Serializer::V2`] (`vsn=2.0.0`, binary broadcasts) by default, or
    /// [`Serializer::V1`] (`vsn=1.0.0`, JSON objects).
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// The token channels join with (a user's JWT); the apikey by default. See also
    /// [`RealtimeClient::set_auth`].
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.access_token = Some(token.into());
        self
    }

    /// All clocks at once.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// How often heartbeats go out (25 s); an unanswered one closes the connection.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.timing.heartbeat_interval = interval;
        self
    }

    /// How long joins and pushes wait for their reply (10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timing.timeout = timeout;
        self
    }

    /// The delays between reconnect attempts (1, 2, 5, 10 s).
    pub fn reconnect_after(mut self, backoff: Backoff) -> Self {
        self.timing.reconnect_after = backoff;
        self
    }

    /// The delays before rejoining a channel after an error (1, 2, 5, 10 s).
    pub fn rejoin_after(mut self, backoff: Backoff) -> Self {
        self.timing.rejoin_after = backoff;
        self
    }

    /// All queue capacities at once.
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many requests may wait for the event loop before handle calls fail with
    /// [`Error::QueueFull`] (1024; at least 1).
    pub fn request_capacity(mut self, capacity: usize) -> Self {
        self.capacity.requests = capacity;
        self
    }

    /// How many events each [`EventStream`](crate::EventStream) holds before it drops the
    /// oldest and reports the lag (1024; at least 1).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.capacity.events = capacity;
        self
    }

    /// Starts the event loop, which connects in the background. Must be called inside a tokio
    /// runtime. Fails only for a URL that is not `http(s)://` or `ws(s)://`.
    pub fn connect(self) -> Result<RealtimeClient, Error> {
        let endpoint = url::endpoint(&self.url, &self.apikey, self.serializer)?;
        let base = url::base(&self.url)?;
        let token = self.access_token.unwrap_or(self.apikey);
        let state = ClientState::new(self.serializer, self.timing, Some(token));
        let (requests, requests_rx) = mpsc::channel(self.capacity.requests.max(1));
        let (auth, auth_rx) = watch::channel(None);
        let (connection_tx, connection) = watch::channel(ConnectionState::Connecting);
        let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
        let event_loop = EventLoop::new(
            state,
            endpoint,
            requests_rx,
            auth_rx,
            connection_tx,
            registry.clone(),
        );
        tokio::spawn(event_loop.run());
        Ok(RealtimeClient {
            inner: Arc::new(ClientInner {
                requests,
                auth,
                registry,
                connection,
                serializer: self.serializer,
                endpoint: base,
                event_capacity: self.capacity.events.max(1),
            }),
        })
    }
}

impl RealtimeClient {
    /// Connects to `url` (`http(s)://host` as given to supabase-js, or a `ws(s)://` endpoint)
    /// with `apikey`, serializer 2.0.0 and realtime-js's clocks. Must be called inside a tokio
    /// runtime; the connection is made in the background.
    pub fn connect(url: &str, apikey: &str) -> Result<RealtimeClient, Error> {
        RealtimeClient::builder(url, apikey).connect()
    }

    /// A client with options; finish with [`ClientBuilder::connect`].
    pub fn builder(url: &str, apikey: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            apikey: apikey.to_owned(),
            access_token: None,
            serializer: Serializer::V2,
            timing: Timing::default(),
            capacity: Capacity::default(),
        }
    }

    /// The channel `name` (topic `realtime:<name>`). While any handle of a channel lives, the
    /// same channel is returned, with the options it was first created with (as realtime-js
    /// does). Nothing is sent until [`Channel::subscribe`].
    pub fn channel(&self, name: &str, options: ChannelOptions) -> Channel {
        let topic = format!("realtime:{name}");
        let mut registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        registry.retain(|_, weak| weak.strong_count() > 0);
        let shared = match registry.get(&topic).and_then(|w| w.upgrade()) {
            Some(shared) => shared,
            None => {
                let shared = Arc::new(ChannelShared::new(name, options, self.inner.event_capacity));
                registry.insert(topic, Arc::downgrade(&shared));
                shared
            }
        };
        Channel::new(shared, self.clone())
    }

    /// Presence on the channel `name` (use [`DEFAULT_CHANNEL`](crate::DEFAULT_CHANNEL), `"any"`,
    /// for the component's default), the component's API. Finish with
    /// [`PresenceBuilder::join`].
    pub fn presence(&self, name: &str) -> PresenceBuilder {
        PresenceBuilder::new(self.clone(), name)
    }

    /// Changes the token channels are authorized with: joined channels get an `access_token`
    /// push now, and every later join carries it.
    pub fn set_auth(&self, token: impl Into<String>) {
        self.inner.auth.send_replace(Some(token.into()));
    }

    /// The connection's state, as a store.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.connection.clone()
    }

    /// Waits until the connection is open, for at most `timeout`; returns whether it is.
    pub async fn wait_open(&self, timeout: Duration) -> bool {
        let mut rx = self.connection_state();
        tokio::time::timeout(timeout, rx.wait_for(ConnectionState::is_open))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Closes every channel and the socket, and stops the event loop; returns once it has
    /// stopped. Requests made afterwards fail with [`Error::ClientClosed`]. The requests
    /// already queued are handled first; if the queue is full, this waits for room.
    pub async fn disconnect(&self) {
        let _ = self.inner.requests.send(Request::Disconnect).await;
        let mut rx = self.connection_state();
        let _ = rx.wait_for(|s| *s == ConnectionState::Closed).await;
    }

    /// The serializer in use.
    pub fn serializer(&self) -> Serializer {
        self.inner.serializer
    }

    /// The WebSocket endpoint, without its query (which holds the apikey).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Queues `request` without waiting: [`Error::QueueFull`] if the event loop is that far
    /// behind, [`Error::ClientClosed`] if it has stopped.
    pub(crate) fn send(&self, request: Request) -> Result<(), Error> {
        self.inner.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::QueueFull,
            mpsc::error::TrySendError::Closed(_) => Error::ClientClosed,
        })
    }

    /// Queues all of `requests` or, with the errors of [`send`](Self::send), none of them.
    pub(crate) fn send_all(&self, requests: Vec<Request>) -> Result<(), Error> {
        let permits = self
            .inner
            .requests
            .try_reserve_many(requests.len())
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(()) => Error::QueueFull,
                mpsc::error::TrySendError::Closed(()) => Error::ClientClosed,
            })?;
        for (permit, request) in permits.zip(requests) {
            permit.send(request);
        }
        Ok(())
    }

    /// Queues `request`, now if there is room, else from a task that waits for room: for
    /// what must not be lost and cannot wait or fail, such as the leave of a dropped
    /// [`Presence`](crate::Presence). Without a tokio runtime to wait in, a request that
    /// finds the queue full is dropped.
    pub(crate) fn send_eventually(&self, request: Request) {
        if let Err(mpsc::error::TrySendError::Full(request)) = self.inner.requests.try_send(request)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let requests = self.inner.requests.clone();
            runtime.spawn(async move {
                let _ = requests.send(request).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{RecvError, SubscribeStatus};

    /// A client whose event loop has not run yet: on the current-thread runtime of
    /// `#[tokio::test]`, the spawned loop runs only when the test awaits something pending.
    fn client(requests: usize) -> RealtimeClient {
        RealtimeClient::builder("http://127.0.0.1:9", "anon-key")
            .request_capacity(requests)
            .connect()
            .expect("a valid URL")
    }

    #[tokio::test]
    async fn a_full_request_queue_fails_handle_calls_at_once_with_queue_full() {
        let client = client(2);
        let room = client.channel("room", ChannelOptions::default());
        let first = room.send("e", json!(1));
        let _second = room.send("e", json!(2));
        assert_eq!(room.send("e", json!(3)).await, Err(Error::QueueFull));
        assert_eq!(room.track(json!({})).await, Err(Error::QueueFull));
        assert_eq!(room.leave().await, Err(Error::QueueFull));

        let mut statuses = room.subscribe();
        let refused = statuses.try_recv().expect("a status at once");
        assert_eq!(refused.status, SubscribeStatus::ChannelError);
        assert_eq!(refused.reason, Some(Error::QueueFull.to_string()));
        assert!(
            room.statuses().try_recv().is_err(),
            "only the refused stream is told"
        );
        assert_eq!(
            client.presence("lobby").join().map(|_| ()),
            Err(Error::QueueFull)
        );
        // The token is a store, not a request: a full queue cannot lose it.
        client.set_auth("jwt");

        // Disconnecting waits for room; the queued pushes get their replies first.
        client.disconnect().await;
        assert_eq!(first.await, Err(Error::NotSubscribed));
        assert_eq!(room.send("e", json!(4)).await, Err(Error::ClientClosed));
        assert_eq!(statuses.recv().await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn a_failed_status_update_leaves_the_status_as_it_was() {
        let client = client(2);
        let presence = client
            .presence("lobby")
            .user_status(json!({"status": "online"}))
            .join()
            .expect("room for the subscribe and the track");
        let status = presence.user_status();
        assert_eq!(
            presence.update_status(json!({"status": "away"})).await,
            Err(Error::QueueFull)
        );
        assert_eq!(status.borrow()["status"], "online");
        client.disconnect().await;
    }

    #[test]
    fn capacities_are_at_least_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let client = RealtimeClient::builder("http://127.0.0.1:9", "anon-key")
                .capacity(Capacity {
                    requests: 0,
                    events: 0,
                })
                .connect()
                .expect("a valid URL");
            let room = client.channel("room", ChannelOptions::default());
            drop(room.send("e", json!(1)));
            assert_eq!(room.send("e", json!(2)).await, Err(Error::QueueFull));
            client.disconnect().await;
        });
    }
}
