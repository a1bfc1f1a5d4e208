//! [`RealtimeClient`]: the cheap handle to one connection (the `SupabaseApp` of Rust).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::channel::Channel;
use crate::error::Error;
use crate::eventloop::{ConnectionState, EventLoop, Registry, Request};
use crate::options::{Backoff, ChannelOptions, Timing};
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
    requests: mpsc::UnboundedSender<Request>,
    registry: Registry,
    connection: watch::Receiver<ConnectionState>,
    serializer: Serializer,
    /// The endpoint without its query (no apikey).
    endpoint: String,
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

    /// Starts the event loop, which connects in the background. Must be called inside a tokio
    /// runtime. Fails only for a URL that is not `http(s)://` or `ws(s)://`.
    pub fn connect(self) -> Result<RealtimeClient, Error> {
        let endpoint = url::endpoint(&self.url, &self.apikey, self.serializer)?;
        let base = url::base(&self.url)?;
        let token = self.access_token.unwrap_or(self.apikey);
        let state = ClientState::new(self.serializer, self.timing, Some(token));
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (connection_tx, connection) = watch::channel(ConnectionState::Connecting);
        let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
        let event_loop = EventLoop::new(
            state,
            endpoint,
            requests_rx,
            connection_tx,
            registry.clone(),
        );
        tokio::spawn(event_loop.run());
        Ok(RealtimeClient {
            inner: Arc::new(ClientInner {
                requests,
                registry,
                connection,
                serializer: self.serializer,
                endpoint: base,
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
                let shared = Arc::new(ChannelShared::new(name, options));
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
        let _ = self.send(Request::SetAuth(token.into()));
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
    /// stopped. Requests made afterwards fail with [`Error::ClientClosed`].
    pub async fn disconnect(&self) {
        let _ = self.send(Request::Disconnect);
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

    pub(crate) fn send(&self, request: Request) -> Result<(), Error> {
        self.inner
            .requests
            .send(request)
            .map_err(|_| Error::ClientClosed)
    }
}
