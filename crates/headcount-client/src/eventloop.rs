//! The event loop: the one task that owns the socket and the [`ClientState`].
//!
//! It connects (and reconnects with the backoff of [`Timing::reconnect_after`]), feeds the
//! state with frames, requests and the time, writes the frames the state wants written, and
//! hands what the state reports to the channels' stores and streams. Handles talk to it through
//! a bounded queue of [`Request`]s (a handle finding it full fails at once with
//! [`Error::QueueFull`], so neither side ever waits for the other) and a store of the token;
//! when every handle is gone, it closes the socket and ends.
//!
//! [`Timing::reconnect_after`]: crate::Timing::reconnect_after

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info};

use crate::error::Error;
use crate::shared::ChannelShared;
use crate::state::{ClientState, Command, OutFrame, Output, PushId};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Ws, String>> + Send>>;

/// Where a reply goes.
pub(crate) type Responder = oneshot::Sender<Result<(), Error>>;

/// The channels a client has handed out, by topic (so `client.channel(name)` returns the same
/// channel while any handle of it lives).
pub(crate) type Registry = Arc<Mutex<HashMap<String, Weak<ChannelShared>>>>;

/// What a handle asks of the event loop.
#[derive(Debug)]
pub(crate) enum Request {
    Subscribe(Arc<ChannelShared>),
    Leave {
        topic: String,
        reply: Option<Responder>,
    },
    Push {
        topic: String,
        command: Command,
        reply: Option<Responder>,
    },
    Disconnect,
}

/// The state of the client's connection.
///
/// ```
/// use headcount_client::ConnectionState;
///
/// assert!(ConnectionState::Open.is_open());
/// assert!(!ConnectionState::Connecting.is_open());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected.
    Open,
    /// Not connected; the next attempt comes after the backoff.
    Reconnecting {
        /// Attempts since the last open connection.
        attempt: u32,
        /// Why the last connection ended or the last attempt failed, if known (the server's
        /// HTTP status and body for a refused upgrade, such as a bad apikey).
        error: Option<String>,
    },
    /// Disconnected for good (by [`RealtimeClient::disconnect`](crate::RealtimeClient::disconnect)
    /// or because every handle was dropped).
    Closed,
}

impl ConnectionState {
    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        *self == ConnectionState::Open
    }
}

pub(crate) struct EventLoop {
    pub(crate) state: ClientState,
    /// The endpoint with its query (holds the apikey: never logged).
    pub(crate) endpoint: String,
    pub(crate) requests: mpsc::Receiver<Request>,
    /// The token of [`RealtimeClient::set_auth`](crate::RealtimeClient::set_auth); `None`
    /// until it is first set.
    pub(crate) auth: watch::Receiver<Option<String>>,
    pub(crate) connection: watch::Sender<ConnectionState>,
    pub(crate) registry: Registry,
    /// Subscribed channels by topic.
    channels: HashMap<String, Arc<ChannelShared>>,
    responders: HashMap<PushId, Responder>,
    last_id: u64,
}

/// How a turn of the loop ended the connection, if it did.
enum Lost {
    Error(String),
    Shutdown,
}

impl EventLoop {
    pub(crate) fn new(
        state: ClientState,
        endpoint: String,
        requests: mpsc::Receiver<Request>,
        auth: watch::Receiver<Option<String>>,
        connection: watch::Sender<ConnectionState>,
        registry: Registry,
    ) -> EventLoop {
        EventLoop {
            state,
            endpoint,
            requests,
            auth,
            connection,
            registry,
            channels: HashMap::new(),
            responders: HashMap::new(),
            last_id: 0,
        }
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    /// Runs until a disconnect or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut ws: Option<Ws> = None;
        let mut connecting: Option<Connecting> = None;
        let mut attempt: u32 = 0;
        let mut retry_at: Option<Instant> = Some(Instant::now());
        let mut auth_open = true;
        loop {
            let mut lost = self.dispatch().map(Lost::Error);
            if lost.is_none()
                && let Some(socket) = ws.as_mut()
                && let Err(e) = self.write(socket).await
            {
                lost = Some(Lost::Error(e));
            }
            if lost.is_none() {
                let deadline = self
                    .state
                    .poll_timeout()
                    .map(Instant::from_std)
                    .into_iter()
                    .chain(retry_at)
                    .min();
                tokio::select! {
                    request = self.requests.recv() => match request {
                        Some(Request::Disconnect) | None => lost = Some(Lost::Shutdown),
                        Some(request) => self.handle_request(request),
                    },
                    changed = self.auth.changed(), if auth_open => match changed {
                        Ok(()) => self.apply_auth(),
                        Err(_) => auth_open = false,
                    },
                    frame = next_frame(&mut ws), if ws.is_some() => match frame {
                        Some(Ok(Message::Text(text))) => self.state.handle_text(text.as_bytes(), Self::now()),
                        Some(Ok(Message::Binary(bin))) => self.state.handle_binary(&bin, Self::now()),
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map_or_else(|| "closed by the server".to_owned(), |f| {
                                format!("closed by the server ({} {})", u16::from(f.code), f.reason)
                            });
                            lost = Some(Lost::Error(why));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => lost = Some(Lost::Error(e.to_string())),
                        None => lost = Some(Lost::Error("connection ended".into())),
                    },
                    result = poll_connecting(&mut connecting), if connecting.is_some() => {
                        connecting = None;
                        match result {
                            Ok(socket) => {
                                info!("connected");
                                ws = Some(socket);
                                attempt = 0;
                                self.connection.send_replace(ConnectionState::Open);
                                self.state.handle_open(Self::now());
                            }
                            Err(e) => {
                                attempt += 1;
                                debug!(error = %e, attempt, "connection attempt failed");
                                retry_at = Some(Instant::now() + self.state.timing().reconnect_after.after(attempt));
                                self.connection.send_replace(ConnectionState::Reconnecting { attempt, error: Some(e) });
                            }
                        }
                    },
                    () = sleep_until(deadline) => {
                        if retry_at.is_some_and(|at| at <= Instant::now()) && ws.is_none() && connecting.is_none() {
                            retry_at = None;
                            self.connection.send_replace(ConnectionState::Connecting);
                            connecting = Some(Box::pin(connect(self.endpoint.clone(), self.state.timing().timeout)));
                        }
                        self.state.handle_timeout(Self::now());
                    },
                }
            }
            match lost {
                None => {}
                Some(Lost::Shutdown) => {
                    self.state.disconnect();
                    self.dispatch();
                    if let Some(mut socket) = ws.take() {
                        close(&mut socket, "").await;
                    }
                    break;
                }
                Some(Lost::Error(why)) => {
                    if let Some(mut socket) = ws.take() {
                        info!(reason = %why, "connection lost");
                        if why == "heartbeat timeout" {
                            close(&mut socket, &why).await;
                        }
                        self.state.handle_close(Self::now());
                        attempt += 1;
                        retry_at = Some(
                            Instant::now() + self.state.timing().reconnect_after.after(attempt),
                        );
                        self.connection.send_replace(ConnectionState::Reconnecting {
                            attempt,
                            error: Some(why),
                        });
                    }
                }
            }
        }
        self.connection.send_replace(ConnectionState::Closed);
        for (_, responder) in self.responders.drain() {
            let _ = responder.send(Err(Error::ClientClosed));
        }
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        for shared in registry.values().filter_map(Weak::upgrade) {
            shared.close();
        }
        for shared in self.channels.values() {
            shared.close();
        }
    }

    fn register(&mut self, reply: Option<Responder>) -> Option<PushId> {
        let reply = reply?;
        self.last_id += 1;
        let id = PushId(self.last_id);
        self.responders.insert(id, reply);
        Some(id)
    }

    /// Hands a new token to the state, if there is one.
    fn apply_auth(&mut self) {
        let token = self.auth.borrow_and_update().clone();
        if let Some(token) = token {
            self.state.set_auth(token);
        }
    }

    fn handle_request(&mut self, request: Request) {
        // A token set before this request was queued applies to it (a join after
        // `set_auth` carries the new token), whichever branch of the loop woke first.
        if self.auth.has_changed().unwrap_or(false) {
            self.apply_auth();
        }
        let now = Self::now();
        match request {
            Request::Subscribe(shared) => {
                let topic = shared.topic.clone();
                let options = shared.options();
                self.channels.insert(topic.clone(), shared);
                self.state.subscribe(&topic, options, now);
            }
            Request::Leave { topic, reply } => {
                let id = self.register(reply);
                self.state.leave(&topic, id, now);
            }
            Request::Push {
                topic,
                command,
                reply,
            } => {
                let id = self.register(reply);
                self.state.push(&topic, command, id, now);
            }
            Request::Disconnect => unreachable!("handled by the loop"),
        }
    }

    /// Hands the state's outputs to the channels; returns why the connection must close, if
    /// it must.
    fn dispatch(&mut self) -> Option<String> {
        let mut disconnect = None;
        while let Some(output) = self.state.poll_output() {
            match output {
                Output::State { topic, state } => {
                    if let Some(c) = self.channels.get(&topic) {
                        c.on_state(state);
                    }
                }
                Output::Status { topic, event } => {
                    if let Some(c) = self.channels.get(&topic) {
                        c.on_status(event);
                    }
                }
                Output::Broadcast { topic, message } => {
                    if let Some(c) = self.channels.get(&topic) {
                        c.on_broadcast(message);
                    }
                }
                Output::Presence { topic, event } => {
                    if let Some(c) = self.channels.get(&topic) {
                        c.on_presence(event);
                    }
                }
                Output::Done { id, result } => {
                    if let Some(responder) = self.responders.remove(&id) {
                        let _ = responder.send(result);
                    }
                }
                Output::Removed { topic } => {
                    // A subscribe of the same topic may already have replaced it.
                    if self.state.channel_state(&topic) == crate::ChannelState::Closed
                        && let Some(c) = self.channels.remove(&topic)
                    {
                        c.on_removed();
                    }
                }
                Output::Disconnect { reason } => disconnect = Some(reason),
            }
        }
        disconnect
    }

    async fn write(&mut self, ws: &mut Ws) -> Result<(), String> {
        let mut wrote = false;
        while let Some(frame) = self.state.poll_transmit() {
            let message = match frame {
                OutFrame::Text(t) => Message::text(t),
                OutFrame::Binary(b) => Message::binary(b),
            };
            ws.feed(message).await.map_err(|e| e.to_string())?;
            wrote = true;
        }
        if wrote {
            ws.flush().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> Result<Ws, String> {
    match connecting {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends a normal close frame, giving the peer a moment to take it.
async fn close(ws: &mut Ws, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.to_owned().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

/// The TLS configuration of `wss://` connections: rustls with the ring provider and the
/// Mozilla roots, so the binary needs no system certificates.
fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One connection attempt, bounded by `timeout`. Errors never contain the URL (it holds the
/// apikey).
async fn connect(endpoint: String, timeout: Duration) -> Result<Ws, String> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let connector = if endpoint.starts_with("wss://") {
        Connector::Rustls(tls_config())
    } else {
        Connector::Plain
    };
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(endpoint, None, true, Some(connector));
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!("HTTP {}: {}", response.status().as_u16(), body))
        }
        Ok(Err(WsError::Url(_))) => Err("invalid URL".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection attempt timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tls_configuration_builds() {
        let config = super::tls_config();
        assert!(!config.crypto_provider().cipher_suites.is_empty());
    }
}
