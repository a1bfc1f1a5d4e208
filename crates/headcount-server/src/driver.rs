//! The async shell around a [`Session`]: one reader task and one writer task per socket.
//!
//! The reader owns the socket's read half and the session; it turns bytes into messages,
//! hands them to the session and performs the [`Flow`] it returns. The writer owns the write
//! half and drains the connection's outbox, writing everything queued with one vectored write
//! per batch.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::clock::Now;
use crate::conn::{Batch, Conn, signal};
use crate::hub::Hub;
use crate::metrics::{Limit, Metrics};
use crate::reasons::Close;
use crate::session::{Flow, Node, Session};

/// What a socket's messages go to: the Phoenix [`Session`] in the server, or something
/// simpler (an echo, for WebSocket conformance runs).
pub trait Handler: Send {
    /// A text message (valid UTF-8).
    fn text(&mut self, text: &[u8], now: Now) -> Flow;
    /// A binary message.
    fn binary(&mut self, bin: &[u8], now: Now) -> Flow;
    /// The deadline of [`Handler::deadline`] passed.
    fn timers(&mut self, now: Now);
    /// When [`Handler::timers`] must next run, on the hub's [`crate::clock::Clock`]; asked
    /// after every call.
    fn deadline(&self) -> Option<u64>;
    /// The socket is gone.
    fn terminate(&mut self);
}

impl<N: Node> Handler for Session<N> {
    fn text(&mut self, text: &[u8], now: Now) -> Flow {
        self.handle_text(text, now)
    }
    fn binary(&mut self, bin: &[u8], now: Now) -> Flow {
        self.handle_binary(bin, now)
    }
    fn timers(&mut self, now: Now) {
        self.on_timers(now);
    }
    fn deadline(&self) -> Option<u64> {
        self.next_deadline()
    }
    fn terminate(&mut self) {
        Session::terminate(self);
    }
}

/// Echoes every message back: the handler of `examples/ws_echo.rs`, which WebSocket
/// conformance suites (Autobahn's cases) drive through the real reader and writer.
#[derive(Debug)]
pub struct Echo(pub Arc<Conn>);

impl Handler for Echo {
    fn text(&mut self, text: &[u8], _now: Now) -> Flow {
        self.0.push(ws::encode_frame(Opcode::Text, text));
        Flow::Continue
    }
    fn binary(&mut self, bin: &[u8], _now: Now) -> Flow {
        self.0.push(ws::encode_frame(Opcode::Binary, bin));
        Flow::Continue
    }
    fn timers(&mut self, _now: Now) {}
    fn deadline(&self) -> Option<u64> {
        None
    }
    fn terminate(&mut self) {}
}
use crate::ws::{self, Message, Opcode, WsError, WsReader, close_code};

/// Runs one WebSocket connection to its end.
pub async fn run<R, W>(
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    handler: impl Handler,
    read: R,
    write: W,
    prefix: Bytes,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    hub.add_conn(conn.clone());
    let writer = tokio::spawn(write_loop(conn.clone(), hub.metrics.clone(), write));
    let mut reader = WsReader::new(1024, hub.config.max_frame_size, hub.config.max_message_size)
        .with_budget(hub.input_budget.clone());
    reader.push_prefix(&prefix);
    // The prefix is a slice of the HTTP layer's read buffer: letting it go now frees that whole
    // buffer, instead of keeping it alive as long as the connection.
    drop(prefix);
    let mut handler = handler;
    read_loop(&hub, &conn, &mut handler, read, &mut reader).await;
    handler.terminate();
    hub.remove_conn(conn.id);
    conn.finish();
    let _ = writer.await;
    debug!(conn = conn.id, "connection ended");
}

async fn read_loop<R: AsyncRead + Unpin>(
    hub: &Hub,
    conn: &Conn,
    session: &mut impl Handler,
    mut read: R,
    reader: &mut WsReader,
) {
    // The clock of the client's incomplete message: (since when, data messages completed then).
    let mut incomplete: (u64, u64) = (0, 0);
    // One timer for the session's deadline (a token expiry), moved only when the deadline
    // changes: arming a fresh one on every pass would touch the timer wheel per batch of input.
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<u64> = None;
    loop {
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    let now = hub.clock.now();
                    let flow = match message {
                        Message::Text(text) => session.text(&text, now),
                        Message::Binary(bin) => session.binary(&bin, now),
                        Message::Ping(data) => {
                            conn.push(ws::encode_frame(Opcode::Pong, &data));
                            Flow::Continue
                        }
                        Message::Pong => Flow::Continue,
                        Message::Close(code) => Flow::Close(code.unwrap_or(close_code::NORMAL), ""),
                    };
                    if let Flow::Close(code, reason) = flow {
                        conn.close(code, reason);
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if e == WsError::TooBig {
                        hub.metrics.refused(Limit::FrameSize);
                    }
                    if e == WsError::Busy {
                        tracing::warn!(
                            conn = conn.id,
                            buffered = hub.input_budget.used(),
                            limit = hub.config.max_buffered_input,
                            "refused a large message: the node's buffered input is full"
                        );
                    }
                    debug!(conn = conn.id, error = %e, "closing on a WebSocket error");
                    conn.close(e.close_code(), &e.to_string());
                    return;
                }
            }
        }
        track_incomplete(hub, conn, reader, &mut incomplete);
        let deadline = session.deadline();
        if deadline != armed {
            armed = deadline;
            if let Some(ms) = deadline {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(hub.clock.instant(ms)));
            }
        }
        tokio::select! {
            biased;
            () = conn.reader_wake.notified() => {
                let bits = conn.take_signals();
                if bits & signal::STOP != 0 {
                    return;
                }
                let now = hub.clock.ms();
                if bits & signal::IDLE != 0 {
                    let idle = now.saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed));
                    if idle >= hub.config.idle_timeout.as_millis() as u64 {
                        debug!(conn = conn.id, "closing an idle socket");
                        conn.close(close_code::NORMAL, Close::Idle.as_str());
                        return;
                    }
                }
                if bits & signal::INCOMPLETE != 0 {
                    let since = conn.incomplete_since_ms.load(Ordering::Relaxed);
                    let limit = hub.config.incomplete_message_timeout.as_millis() as u64;
                    if since != 0 && now.saturating_sub(since) >= limit {
                        debug!(conn = conn.id, "closing a socket whose message never completed");
                        conn.close(close_code::POLICY_VIOLATION, Close::Incomplete.as_str());
                        return;
                    }
                }
                if bits & signal::UNJOINED != 0 {
                    let since = conn.unjoined_since_ms.load(Ordering::Relaxed);
                    if since != 0 && now.saturating_sub(since) >= hub.config.unjoined_timeout.as_millis() as u64 {
                        debug!(conn = conn.id, "closing a socket without channels");
                        conn.close(close_code::NORMAL, Close::Unjoined.as_str());
                        return;
                    }
                }
            }
            () = &mut timer, if armed.is_some() => {
                session.timers(hub.clock.now());
                // Re-armed on the next pass, even if the deadline stayed.
                armed = None;
            }
            read = read.read_buf(reader.buffer()) => match read {
                Ok(0) | Err(_) => {
                    conn.abort();
                    return;
                }
                Ok(n) => {
                    Metrics::add(&hub.metrics.bytes_in_total, n as u64);
                    conn.last_seen_ms.store(hub.clock.ms(), Ordering::Relaxed);
                }
            },
        }
    }
}

/// Starts the clock when the client's current message is incomplete (restarting it each time a
/// data message completes, so a steady stream of small messages is never "incomplete"), stops
/// it when nothing is pending, and publishes it for the shared timer.
fn track_incomplete(hub: &Hub, conn: &Conn, reader: &WsReader, clock: &mut (u64, u64)) {
    let since = if !reader.is_incomplete() {
        0
    } else if clock.0 == 0 || clock.1 != reader.completed() {
        hub.clock.ms()
    } else {
        clock.0
    };
    if since != clock.0 {
        conn.incomplete_since_ms.store(since, Ordering::Relaxed);
    }
    *clock = (since, reader.completed());
}

/// At most this many frames go into one vectored write.
const MAX_IOV: usize = 64;

async fn write_loop<W: AsyncWrite + Unpin>(conn: Arc<Conn>, metrics: Arc<Metrics>, mut write: W) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        match conn.take_batch(&mut batch) {
            Batch::Write => {
                if !write_batch(&conn, &mut write, &batch).await {
                    conn.abort();
                    return;
                }
                Metrics::add(&metrics.messages_out_total, batch.len() as u64);
                Metrics::add(
                    &metrics.bytes_out_total,
                    batch.iter().map(|b| b.len() as u64).sum(),
                );
                batch.clear();
            }
            Batch::Wait => conn.writer_wake.notified().await,
            Batch::Finish => {
                let _ = write.shutdown().await;
                return;
            }
            Batch::Abort => return,
        }
    }
}

/// Writes every frame of `batch`; `false` if the socket failed or the connection was aborted
/// meanwhile.
async fn write_batch<W: AsyncWrite + Unpin>(conn: &Conn, write: &mut W, batch: &[Bytes]) -> bool {
    let (mut index, mut offset) = (0, 0);
    while index < batch.len() {
        let slices: Vec<IoSlice<'_>> = batch[index..]
            .iter()
            .take(MAX_IOV)
            .enumerate()
            .map(|(i, b)| IoSlice::new(if i == 0 { &b[offset..] } else { b }))
            .collect();
        tokio::select! {
            written = write.write_vectored(&slices) => {
                let mut n = match written {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => n,
                };
                conn.wrote(n);
                while n > 0 {
                    let left = batch[index].len() - offset;
                    if n >= left {
                        n -= left;
                        index += 1;
                        offset = 0;
                    } else {
                        offset += n;
                        n = 0;
                    }
                }
            }
            () = conn.writer_wake.notified() => {
                if conn.is_aborted() {
                    return false;
                }
            }
        }
    }
    true
}
