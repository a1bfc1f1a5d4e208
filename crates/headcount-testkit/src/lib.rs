//! The one test harness of headcount.
//!
//! * [`TestServer`]: a real server on `127.0.0.1:0`, in this process, with a known JWT secret;
//! * [`WsClient`]: a WebSocket client that speaks raw Phoenix frames in either serializer, built
//!   on an independent WebSocket implementation (tungstenite), with bounded waits that fail
//!   the test instead of hanging it.

pub mod cluster_suite;
pub mod http;
pub mod process;
pub mod raw;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use headcount_cluster::Cluster;
use headcount_server::{Config, Hub, auth};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret test servers use.
pub const SECRET: &str = "headcount-test-secret-with-enough-bytes";

/// How long a test waits for an expected frame before failing.
pub const WAIT: Duration = Duration::from_secs(5);

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `role`, expiring in `exp_in` seconds (negative: already expired).
pub fn token(role: &str, exp_in: i64) -> String {
    let now = now_secs();
    auth::sign(SECRET, role, None, now, now + exp_in)
}

/// A token for `role` and user `sub`.
pub fn user_token(role: &str, sub: &str, exp_in: i64) -> String {
    let now = now_secs();
    auth::sign(SECRET, role, Some(sub), now, now + exp_in)
}

/// An anon token valid for an hour.
pub fn anon() -> String {
    token("anon", 3600)
}

/// Logs to the test output when `RUST_LOG` is set (for example `RUST_LOG=headcount_server=debug`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A headcount server running inside the test process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its channels and connections.
    pub hub: Arc<Hub>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server with the default configuration and [`SECRET`].
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose configuration `adjust` may change first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_node(None, adjust).await
    }

    /// A node of a cluster: a server that shares presence and broadcast through `cluster`.
    pub async fn start_clustered(cluster: Arc<dyn Cluster>) -> TestServer {
        TestServer::start_node(Some(cluster), |_| {}).await
    }

    /// A server, clustered or not, whose configuration `adjust` may change first.
    pub async fn start_node(
        cluster: Option<Arc<dyn Cluster>>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        init_logging();
        let mut config = Config::new(SECRET);
        config.tick = Duration::from_millis(50);
        // Every diff at once, so tests can read presence frames deterministically; the window's
        // own behaviour is tested where a test sets it.
        config.presence_window = Duration::ZERO;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let hub = match cluster {
            Some(cluster) => Hub::with_cluster(config, cluster),
            None => Arc::new(Hub::new(config)),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(headcount_server::serve(listener, hub.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            hub,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The WebSocket URL with this serializer version (none: no `vsn` parameter) and apikey.
    pub fn ws_url(&self, vsn: Option<&str>, apikey: &str) -> String {
        let mut url = format!("ws://{}/realtime/v1/websocket?apikey={apikey}", self.addr);
        if let Some(vsn) = vsn {
            url.push_str("&vsn=");
            url.push_str(vsn);
        }
        url
    }

    /// A client connected with an anon key and serializer `vsn` (`"1.0.0"` or `"2.0.0"`).
    pub async fn client(&self, vsn: &str) -> WsClient {
        WsClient::connect(&self.ws_url(Some(vsn), &anon()))
            .await
            .expect("connect")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A decoded server message, whatever the serializer.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// `join_ref` (always `null` in 1.0.0, which never sends it).
    pub join_ref: Value,
    /// `ref`.
    pub msg_ref: Value,
    /// The topic.
    pub topic: String,
    /// The event.
    pub event: String,
    /// The payload.
    pub payload: Value,
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame (code, reason).
    Close(Option<(u16, String)>),
    /// A pong (only from [`WsClient::recv_any`]).
    Pong(Vec<u8>),
    /// The connection ended without a close frame.
    Ended,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A raw-frame WebSocket client.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `true` for serializer 2.0.0.
    pub v2: bool,
    next_ref: u64,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("v2", &self.v2)
            .finish_non_exhaustive()
    }
}

/// A refused upgrade: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The response body.
    pub body: String,
}

impl WsClient {
    /// Connects; a refused upgrade comes back as [`Refused`].
    pub async fn connect(url: &str) -> Result<WsClient, Refused> {
        let v2 = url.contains("vsn=2.");
        // Room for the largest frames a server sends (a `presence_state` of many large
        // presences is bigger than tungstenite's 16 MiB default), so a test sees what a
        // browser would.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_frame_size(Some(256 << 20))
            .max_message_size(Some(256 << 20));
        match tokio_tungstenite::connect_async_with_config(url, Some(config), false).await {
            Ok((ws, _)) => Ok(WsClient {
                ws,
                v2,
                next_ref: 100,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }

    /// A fresh message ref (as a string, as phoenix.js sends them).
    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send text");
    }

    /// Sends text frames back to back in one flush, so the server reads them together (as it
    /// does from a busy client).
    pub async fn send_texts_at_once(&mut self, texts: Vec<String>) {
        for text in texts {
            self.ws.feed(Message::text(text)).await.expect("queue text");
        }
        self.ws.flush().await.expect("send texts");
    }

    /// Sends a binary frame as is.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send binary");
    }

    /// Sends a message in this socket's serializer.
    pub async fn send(
        &mut self,
        join_ref: Value,
        msg_ref: Value,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        let text = if self.v2 {
            json!([join_ref, msg_ref, topic, event, payload]).to_string()
        } else {
            json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref})
                .to_string()
        };
        self.send_text(text).await;
    }

    /// Sends a message with a fresh ref; returns the ref.
    pub async fn push(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next_ref();
        self.send(json!(join_ref), json!(r), topic, event, payload)
            .await;
        r
    }

    /// The next frame; fails the test after [`WAIT`].
    pub async fn recv(&mut self) -> Frame {
        match tokio::time::timeout(WAIT, self.recv_raw()).await {
            Ok(frame) => frame,
            Err(_) => panic!("no frame from the server within {WAIT:?}"),
        }
    }

    /// The next frame, pongs included; fails the test after [`WAIT`].
    pub async fn recv_any(&mut self) -> Frame {
        match tokio::time::timeout(WAIT, self.recv_frame(true)).await {
            Ok(frame) => frame,
            Err(_) => panic!("no frame from the server within {WAIT:?}"),
        }
    }

    /// Sends a WebSocket ping.
    pub async fn ping(&mut self, data: Vec<u8>) {
        self.ws
            .send(Message::Ping(data.into()))
            .await
            .expect("send ping");
    }

    async fn recv_raw(&mut self) -> Frame {
        self.recv_frame(false).await
    }

    async fn recv_frame(&mut self, pongs: bool) -> Frame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Pong(p))) if pongs => return Frame::Pong(p.to_vec()),
                Some(Ok(Message::Text(t))) => return Frame::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => return Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => {
                    return Frame::Close(
                        c.map(|CloseFrame { code, reason }| (code.into(), reason.to_string())),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Ended,
            }
        }
    }

    /// The next frame, if one arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.recv_raw()).await.ok()
    }

    /// Fails if any frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.try_recv(wait).await {
            panic!("expected no frame, got {frame:?}");
        }
    }

    /// Decodes a text frame in this socket's serializer.
    pub fn decode(&self, text: &str) -> Msg {
        let v: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        if self.v2 {
            let a = v
                .as_array()
                .unwrap_or_else(|| panic!("not an array: {text}"));
            assert_eq!(a.len(), 5, "a 2.0.0 frame has 5 elements: {text}");
            Msg {
                join_ref: a[0].clone(),
                msg_ref: a[1].clone(),
                topic: a[2].as_str().unwrap().to_owned(),
                event: a[3].as_str().unwrap().to_owned(),
                payload: a[4].clone(),
            }
        } else {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {text}"));
            assert!(
                !o.contains_key("join_ref"),
                "1.0.0 frames never carry join_ref: {text}"
            );
            assert_eq!(
                o.len(),
                4,
                "a 1.0.0 frame has topic, event, payload, ref: {text}"
            );
            Msg {
                join_ref: Value::Null,
                msg_ref: o["ref"].clone(),
                topic: o["topic"].as_str().unwrap().to_owned(),
                event: o["event"].as_str().unwrap().to_owned(),
                payload: o["payload"].clone(),
            }
        }
    }

    /// The next message, which must be a text frame.
    pub async fn recv_msg(&mut self) -> Msg {
        match self.recv().await {
            Frame::Text(t) => self.decode(&t),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Skips frames until a message with `event` on `topic` arrives; returns it.
    pub async fn expect_event(&mut self, topic: &str, event: &str) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.try_recv(left).await else {
                panic!("no {event} on {topic} within {WAIT:?}");
            };
            if let Frame::Text(t) = &frame {
                let m = self.decode(t);
                if m.topic == topic && m.event == event {
                    return m;
                }
            }
            if matches!(frame, Frame::Close(_) | Frame::Ended) {
                panic!("connection closed while waiting for {event} on {topic}: {frame:?}");
            }
        }
    }

    /// Joins `topic` with `payload` (join_ref = ref); returns `(join_ref, reply)`.
    pub async fn join_with(&mut self, topic: &str, payload: Value) -> (String, Msg) {
        let r = self.next_ref();
        self.send(json!(r), json!(r), topic, "phx_join", payload)
            .await;
        let reply = self.expect_reply(&r).await;
        (r, reply)
    }

    /// Joins with realtime-js's default config plus `presence.enabled`, checks the ok reply, and
    /// returns the join_ref. With presence enabled, also consumes the `presence_state`.
    pub async fn join(&mut self, topic: &str, config: Value) -> String {
        let presence = config["presence"]["enabled"].as_bool().unwrap_or(false);
        let (jr, reply) = self.join_with(topic, json!({ "config": config })).await;
        assert_eq!(
            reply.payload,
            json!({"status":"ok","response":{"postgres_changes":[]}}),
            "join of {topic}"
        );
        if presence {
            let state = self.recv_msg().await;
            assert_eq!(
                (state.topic.as_str(), state.event.as_str()),
                (topic, "presence_state")
            );
        }
        jr
    }

    /// Tracks `payload` on `topic` (joined with `join_ref`) and returns the server's reply.
    pub async fn track(&mut self, join_ref: &str, topic: &str, payload: Value) -> Msg {
        let r = self
            .push(
                join_ref,
                topic,
                "presence",
                json!({"type": "presence", "event": "track", "payload": payload}),
            )
            .await;
        self.expect_reply(&r).await
    }

    /// Waits for the `phx_reply` to `msg_ref`.
    pub async fn expect_reply(&mut self, msg_ref: &str) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.try_recv(left).await else {
                panic!("no reply to {msg_ref} within {WAIT:?}");
            };
            match &frame {
                Frame::Text(t) => {
                    let m = self.decode(t);
                    if m.event == "phx_reply" && m.msg_ref == json!(msg_ref) {
                        return m;
                    }
                }
                Frame::Close(_) | Frame::Ended => {
                    panic!("closed while waiting for reply {msg_ref}: {frame:?}")
                }
                Frame::Binary(_) | Frame::Pong(_) => {}
            }
        }
    }

    /// Skips messages until the server closes the socket; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Frame::Close(c) => return c.map(|(code, _)| code),
                Frame::Ended => return None,
                _ => {}
            }
        }
    }

    /// Sends a close frame.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_abruptly(self) {
        drop(self);
    }
}
