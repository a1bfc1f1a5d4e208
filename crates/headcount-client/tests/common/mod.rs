//! A scripted fake server: a WebSocket listener on 127.0.0.1:0 whose test plays the server's
//! frames by hand and checks the client's, with bounded waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// How long a test waits for something it expects.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Waits for `fut`, failing the test after [`WAIT`].
pub(crate) async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub(crate) struct FakeServer {
    listener: TcpListener,
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Text(Value),
    Binary(Vec<u8>),
    Close(Option<(u16, String)>),
    Ended,
}

pub(crate) struct FakeConn {
    ws: WebSocketStream<TcpStream>,
    /// The request's path and query.
    pub uri: String,
    pub v2: bool,
    /// Answer heartbeats by themselves (on by default).
    pub auto_heartbeat: bool,
}

impl FakeServer {
    pub(crate) async fn start() -> FakeServer {
        FakeServer {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }

    /// Accepts the next connection.
    pub(crate) async fn accept(&self) -> FakeConn {
        let (stream, _) = within("a connection", self.listener.accept())
            .await
            .unwrap();
        let uri = Arc::new(Mutex::new(String::new()));
        let seen = uri.clone();
        #[allow(clippy::result_large_err)] // The callback's signature is tungstenite's.
        let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            *seen.lock().unwrap() = req.uri().to_string();
            Ok(resp)
        };
        let ws = within(
            "the handshake",
            tokio_tungstenite::accept_hdr_async(stream, callback),
        )
        .await
        .unwrap();
        let uri = uri.lock().unwrap().clone();
        FakeConn {
            v2: uri.contains("vsn=2.0.0"),
            ws,
            uri,
            auto_heartbeat: true,
        }
    }

    /// Refuses the next upgrade with `status` and `body`.
    pub(crate) async fn refuse(&self, status: u16, body: &str) {
        let (stream, _) = within("a connection", self.listener.accept())
            .await
            .unwrap();
        let body = body.to_owned();
        #[allow(clippy::result_large_err)] // The callback's signature is tungstenite's.
        let callback = move |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
            let mut resp = ErrorResponse::new(Some(body));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Err(resp)
        };
        let _ = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    }
}

/// `[join_ref, ref, topic, event, payload]` of a frame in either serializer.
pub(crate) fn parts(v: &Value) -> (Value, Value, String, String, Value) {
    if let Some(a) = v.as_array() {
        (
            a[0].clone(),
            a[1].clone(),
            a[2].as_str().unwrap().to_owned(),
            a[3].as_str().unwrap().to_owned(),
            a[4].clone(),
        )
    } else {
        (
            v.get("join_ref").cloned().unwrap_or(Value::Null),
            v["ref"].clone(),
            v["topic"].as_str().unwrap().to_owned(),
            v["event"].as_str().unwrap().to_owned(),
            v["payload"].clone(),
        )
    }
}

impl FakeConn {
    async fn next_raw(&mut self) -> Incoming {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Incoming::Text(serde_json::from_str(&t).expect("JSON text"));
                }
                Some(Ok(Message::Binary(b))) => return Incoming::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => {
                    return Incoming::Close(c.map(|c| (u16::from(c.code), c.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Incoming::Ended,
            }
        }
    }

    /// The next frame that is not a heartbeat (heartbeats are answered when
    /// `auto_heartbeat`).
    pub(crate) async fn recv(&mut self) -> Incoming {
        loop {
            let frame = within("a frame from the client", self.next_raw()).await;
            if let Incoming::Text(v) = &frame {
                let (_, r, topic, event, _) = parts(v);
                if topic == "phoenix" && event == "heartbeat" && self.auto_heartbeat {
                    self.reply(Value::Null, r, "phoenix", json!({})).await;
                    continue;
                }
            }
            return frame;
        }
    }

    /// The next frame, if one comes within `wait` (heartbeats included, unanswered).
    pub(crate) async fn try_recv_raw(&mut self, wait: Duration) -> Option<Incoming> {
        tokio::time::timeout(wait, self.next_raw()).await.ok()
    }

    /// The next text frame, which must be `event`; returns (join_ref, ref, payload).
    pub(crate) async fn expect(&mut self, event: &str) -> (Value, Value, Value) {
        match self.recv().await {
            Incoming::Text(v) => {
                let (jr, r, _, ev, payload) = parts(&v);
                assert_eq!(ev, event, "expected {event}, got {v}");
                (jr, r, payload)
            }
            other => panic!("expected {event}, got {other:?}"),
        }
    }

    pub(crate) async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    /// Sends a server message in this connection's serializer.
    pub(crate) async fn send(
        &mut self,
        jr: Value,
        r: Value,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        let text = if self.v2 {
            json!([jr, r, topic, event, payload])
        } else {
            json!({"topic": topic, "event": event, "payload": payload, "ref": r})
        };
        self.send_text(text.to_string()).await;
    }

    pub(crate) async fn reply(&mut self, jr: Value, r: Value, topic: &str, response: Value) {
        self.send(
            jr,
            r,
            topic,
            "phx_reply",
            json!({"status": "ok", "response": response}),
        )
        .await;
    }

    pub(crate) async fn reply_error(&mut self, jr: Value, r: Value, topic: &str, reason: &str) {
        let payload = json!({"status": "error", "response": {"reason": reason}});
        self.send(jr, r, topic, "phx_reply", payload).await;
    }

    /// Waits for a join of `topic` and accepts it; returns (join_ref, join payload).
    pub(crate) async fn accept_join(&mut self, topic: &str) -> (Value, Value) {
        let (jr, r, payload) = self.expect("phx_join").await;
        assert_eq!(jr, r, "a join's ref is its join_ref");
        self.reply(jr.clone(), r, topic, json!({"postgres_changes": []}))
            .await;
        (jr, payload)
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a close frame.
    pub(crate) fn drop_abruptly(self) {
        drop(self);
    }
}
