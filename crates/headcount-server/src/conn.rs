//! [`Conn`]: what the rest of the server shares with one socket.
//!
//! Channels hold an `Arc<Conn>` for each member and push encoded frames into its outbox; the
//! socket's writer task drains the outbox and writes everything queued at once. The outbox is
//! bounded in bytes: a consumer too slow to keep up is disconnected instead of making the
//! server buffer without limit or slowing the channel down for everyone else.
//!
//! "Too slow" means the writer makes no progress, not that a large frame is in flight. Two
//! rules, both O(1) and without a clock on the push path:
//!
//! * **stall** (`limit`): the shared timer calls [`Conn::check_progress`] once per tick; a
//!   socket with at least `limit` bytes waiting at two ticks in a row, and not one byte written
//!   in between, is cut. A fast reader always makes progress, whatever the sizes.
//! * **hard cap** (`hard_limit`): whatever the writer does, the bytes waiting *behind* the
//!   oldest waiting frame never reach `hard_limit`, so memory stays bounded between two ticks.
//!   The oldest frame is exempt: it is the next one the writer takes, and one legal frame of any
//!   size (a 3 MB broadcast, a large `presence_state`) must never cost anyone the connection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use headcount_protocol::Serializer;
use tokio::sync::Notify;

use crate::clock::Now;
use crate::ws;

/// A connection's identity within this node.
pub type ConnId = u64;

/// Signals for the socket's reader task, set by other tasks.
pub mod signal {
    /// The shared timer found the socket idle for too long.
    pub const IDLE: u8 = 1;
    /// The outbox overflowed or the server is closing the socket: stop reading.
    pub const STOP: u8 = 4;
    /// The socket has had no channel joined for too long.
    pub const UNJOINED: u8 = 8;
    /// A client message has been incomplete for too long.
    pub const INCOMPLETE: u8 = 16;
}

/// The outbox's state. Owned by [`Conn::outbox`]'s mutex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Frames are accepted.
    Open,
    /// A close frame (or the end) is queued; nothing more is accepted.
    Closing,
    /// The socket is being dropped without a goodbye (overflow, dead peer).
    Aborted,
}

#[derive(Debug)]
struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    state: State,
    /// [`Conn::written`] as the last progress check saw it.
    seen_written: u64,
    /// Whether the last progress check saw at least `limit` bytes waiting.
    was_backlogged: bool,
}

/// Why a connection was cut as a slow consumer (for the log).
#[derive(Debug, Clone, Copy)]
enum Slow {
    /// `limit` bytes waited for a whole tick without the writer writing a byte.
    Stalled,
    /// The bytes behind the oldest waiting frame reached `hard_limit`.
    HardCap,
}

/// What the writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Write these frames (moved out of the outbox).
    Write,
    /// Nothing queued: wait for [`Conn::writer_wake`].
    Wait,
    /// Everything is written and the socket is closing: shut it down.
    Finish,
    /// Drop the socket now.
    Abort,
}

/// The shared half of one WebSocket connection.
#[derive(Debug)]
pub struct Conn {
    /// Unique within this node.
    pub id: ConnId,
    /// The socket's wire format, fixed at connect time.
    pub serializer: Serializer,
    /// The `role` of the apikey the socket connected with.
    pub role: String,
    /// The `sub` of that apikey, if any (for the admin API's "disconnect a user").
    pub sub: Option<String>,
    /// The `sub`s of the tokens presented since (joins, refreshes): supabase-js connects with
    /// the anon key and sends the user's token in the join. Written by the session.
    pub presented: PresentedSubs,
    /// When the socket connected (Unix milliseconds: shown by the admin API, never used to
    /// time anything).
    pub connected_ms: u64,
    /// The hub's counters, when the connection belongs to a hub.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Frames waiting for the writer. Pushed by channels and the session, drained by the
    /// writer task; the lock is held only to move frames in or out.
    outbox: Mutex<Outbox>,
    /// Bytes waiting that, left unwritten for a whole tick, make this a slow consumer.
    limit: usize,
    /// The bytes waiting behind the oldest waiting frame never reach this.
    hard_limit: usize,
    /// Bytes the writer has written so far: its progress, read by [`Conn::check_progress`].
    written: AtomicU64,
    /// Wakes the writer task when the outbox stops being empty or the state changes.
    pub writer_wake: Notify,
    /// Wakes the reader task when a [`signal`] is raised.
    pub reader_wake: Notify,
    /// Pending [`signal`] bits for the reader.
    signals: AtomicU8,
    /// When the client last sent a frame (the hub's [`crate::clock::Clock`]); written by the
    /// reader, read by the shared timer.
    pub last_seen_ms: AtomicU64,
    /// Since when the socket has had no channel joined (the hub's clock; 0 while it has one);
    /// written by the session, read by the shared timer.
    pub unjoined_since_ms: AtomicU64,
    /// Since when the client's current message has been incomplete (the hub's clock; 0 while
    /// none is); written by the reader, read by the shared timer.
    pub incomplete_since_ms: AtomicU64,
}

impl Conn {
    /// A new connection cut as a slow consumer when `limit` bytes wait without progress for a
    /// tick. Its hard cap is 64 times `limit` until [`Conn::with_hard_limit`] says otherwise.
    /// `now` is when it connected.
    pub fn new(id: ConnId, serializer: Serializer, limit: usize, now: Now) -> Conn {
        Conn {
            id,
            serializer,
            role: String::new(),
            sub: None,
            presented: PresentedSubs::default(),
            connected_ms: now.unix_ms,
            metrics: None,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                bytes: 0,
                state: State::Open,
                seen_written: 0,
                was_backlogged: false,
            }),
            limit,
            hard_limit: limit.saturating_mul(64),
            written: AtomicU64::new(0),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            signals: AtomicU8::new(0),
            last_seen_ms: AtomicU64::new(now.ms),
            unjoined_since_ms: AtomicU64::new(now.ms.max(1)),
            incomplete_since_ms: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        crate::lock(&self.outbox)
    }

    /// The same connection, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Conn {
        self.metrics = Some(metrics);
        self
    }

    /// The same connection, with this hard cap on the bytes behind the oldest waiting frame.
    pub fn with_hard_limit(mut self, hard_limit: usize) -> Conn {
        self.hard_limit = hard_limit;
        self
    }

    /// The same connection, with the identity of its apikey.
    pub fn with_identity(mut self, role: String, sub: Option<String>) -> Conn {
        self.role = role;
        self.sub = sub;
        self
    }

    /// Queues a complete WebSocket frame. Returns `false` if the connection no longer accepts
    /// frames. A frame that finds `hard_limit` bytes or more waiting behind the oldest waiting
    /// frame aborts the connection; below that, a frame of any size is accepted. A connection
    /// therefore holds at most one frame plus `hard_limit` plus one frame in its queue, and one
    /// such batch in its writer. The slower rule (no progress) is [`Conn::check_progress`].
    pub fn push(&self, frame: Bytes) -> bool {
        let mut out = self.lock();
        if out.state != State::Open {
            return false;
        }
        let head = out.frames.front().map_or(0, Bytes::len);
        if out.bytes - head >= self.hard_limit {
            self.cut(out, Slow::HardCap);
            return false;
        }
        let was_empty = out.frames.is_empty();
        out.bytes += frame.len();
        out.frames.push_back(frame);
        drop(out);
        if was_empty {
            self.writer_wake.notify_one();
        }
        true
    }

    /// Cuts a slow consumer: drops what is queued and stops both tasks.
    fn cut(&self, mut out: std::sync::MutexGuard<'_, Outbox>, why: Slow) {
        let (queued, frames) = (out.bytes, out.frames.len());
        if let Some(m) = &self.metrics {
            crate::metrics::Metrics::inc(&m.slow_consumer_disconnects_total);
        }
        out.frames.clear();
        out.bytes = 0;
        out.state = State::Aborted;
        drop(out);
        tracing::info!(
            conn = self.id,
            limit = self.limit,
            hard_limit = self.hard_limit,
            queued,
            frames,
            ?why,
            "disconnecting a slow consumer"
        );
        self.wake_all();
    }

    /// Records that the writer wrote `n` more bytes (its progress).
    pub fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Called by the shared timer once per tick: cuts the connection if at least `limit` bytes
    /// were waiting at this check and the last one, and the writer wrote nothing in between
    /// (the peer stopped reading). Returns whether it cut.
    pub fn check_progress(&self) -> bool {
        let written = self.written.load(Ordering::Relaxed);
        let mut out = self.lock();
        if out.state == State::Aborted {
            return false;
        }
        let backlogged = out.bytes >= self.limit;
        if backlogged && out.was_backlogged && written == out.seen_written {
            self.cut(out, Slow::Stalled);
            return true;
        }
        out.was_backlogged = backlogged;
        out.seen_written = written;
        false
    }

    /// Queues a close frame after whatever is queued, then accepts nothing more. `false` when
    /// the connection was already closing (nothing was done).
    pub fn close(&self, code: u16, reason: &str) -> bool {
        let mut out = self.lock();
        if out.state != State::Open {
            return false;
        }
        out.frames.push_back(ws::encode_close(code, reason));
        out.state = State::Closing;
        drop(out);
        self.wake_all();
        true
    }

    /// Lets the writer finish what is queued, without a close frame (the peer is gone or has
    /// already said goodbye).
    pub fn finish(&self) {
        let mut out = self.lock();
        if out.state == State::Open {
            out.state = State::Closing;
        }
        drop(out);
        self.writer_wake.notify_one();
    }

    /// Drops the socket without writing anything more.
    pub fn abort(&self) {
        let mut out = self.lock();
        out.frames.clear();
        out.bytes = 0;
        out.state = State::Aborted;
        drop(out);
        self.wake_all();
    }

    /// Whether frames are still accepted.
    pub fn is_open(&self) -> bool {
        self.lock().state == State::Open
    }

    /// Whether the socket is to be dropped at once.
    pub fn is_aborted(&self) -> bool {
        self.lock().state == State::Aborted
    }

    /// Moves every queued frame into `into` and says what to do with them.
    pub fn take_batch(&self, into: &mut Vec<Bytes>) -> Batch {
        let mut out = self.lock();
        if out.state == State::Aborted {
            return Batch::Abort;
        }
        if out.frames.is_empty() {
            return if out.state == State::Closing {
                Batch::Finish
            } else {
                Batch::Wait
            };
        }
        into.extend(out.frames.drain(..));
        out.bytes = 0;
        Batch::Write
    }

    /// Bytes waiting in the outbox.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Raises a signal for the reader task.
    pub fn raise(&self, bits: u8) {
        self.signals.fetch_or(bits, Ordering::AcqRel);
        self.reader_wake.notify_one();
    }

    /// Takes the pending signals.
    pub fn take_signals(&self) -> u8 {
        self.signals.swap(0, Ordering::AcqRel)
    }

    fn wake_all(&self) {
        self.signals.fetch_or(signal::STOP, Ordering::AcqRel);
        self.reader_wake.notify_one();
        self.writer_wake.notify_one();
    }
}

/// The `sub`s of the tokens a socket presented after its apikey: in a join's `access_token`
/// or an `access_token` refresh. supabase-js connects with the anon key (no `sub`) and sends
/// the signed-in user's token only there, so "disconnect a user" must look here too.
///
/// Only tokens that verified are recorded, and at most [`PresentedSubs::MAX`] distinct values
/// (the oldest dropped first), so a socket cycling through tokens cannot grow it without bound.
#[derive(Debug, Default)]
pub struct PresentedSubs(std::sync::Mutex<Vec<Box<str>>>);

impl PresentedSubs {
    /// The distinct `sub`s kept per socket.
    pub const MAX: usize = 32;

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<str>>> {
        crate::lock(&self.0)
    }

    /// Records the `sub` of a token the socket presented and that verified.
    pub fn record(&self, sub: Option<&str>) {
        let Some(sub) = sub.filter(|s| !s.is_empty()) else {
            return;
        };
        let mut subs = self.lock();
        if subs.iter().any(|s| &**s == sub) {
            return;
        }
        if subs.len() == Self::MAX {
            subs.remove(0);
        }
        subs.push(sub.into());
    }

    /// Whether the socket presented a token of `sub`.
    pub fn contains(&self, sub: &str) -> bool {
        self.lock().iter().any(|s| &**s == sub)
    }

    /// The recorded `sub`s, oldest first.
    pub fn list(&self) -> Vec<String> {
        self.lock().iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Now = Now { ms: 1, unix_ms: 0 };

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn frames_are_taken_in_order_and_in_one_batch() {
        let c = Conn::new(1, Serializer::V2, 100, NOW);
        assert!(c.push(Bytes::from_static(b"a")));
        assert!(c.push(Bytes::from_static(b"b")));
        let mut batch = Vec::new();
        assert_eq!(c.take_batch(&mut batch), Batch::Write);
        assert_eq!(batch, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(c.take_batch(&mut Vec::new()), Batch::Wait);
    }

    #[test]
    fn the_hard_cap_counts_what_waits_behind_the_oldest_frame() {
        let c = Conn::new(1, Serializer::V2, 10, NOW).with_hard_limit(100);
        assert!(c.push(frame(5000)), "one frame of any size is accepted");
        assert!(c.push(frame(60)));
        assert!(
            c.push(frame(39)),
            "99 bytes behind the oldest: below the cap"
        );
        assert!(
            c.push(frame(500)),
            "a large frame is accepted below the cap"
        );
        assert!(
            !c.push(frame(1)),
            "599 bytes behind the oldest: the next frame overflows"
        );
        assert_eq!(c.take_batch(&mut Vec::new()), Batch::Abort);
        assert!(!c.push(frame(1)));
        assert_ne!(c.take_signals() & signal::STOP, 0);
    }

    #[test]
    fn a_drained_outbox_has_room_again() {
        let c = Conn::new(1, Serializer::V2, 10, NOW).with_hard_limit(100);
        assert!(c.push(frame(1)));
        assert!(c.push(frame(100)));
        assert!(!c.push(frame(1)));
        let c = Conn::new(1, Serializer::V2, 10, NOW).with_hard_limit(100);
        assert!(c.push(frame(1)));
        assert!(c.push(frame(100)));
        c.take_batch(&mut Vec::new());
        assert!(c.push(frame(1)));
        assert!(c.push(frame(100)));
    }

    #[test]
    fn a_backlog_without_progress_for_a_tick_is_cut() {
        let c = Conn::new(1, Serializer::V2, 100, NOW);
        assert!(c.push(frame(100)));
        assert!(!c.check_progress(), "the first check only starts the clock");
        c.wrote(10);
        assert!(!c.check_progress(), "the writer made progress");
        assert!(
            c.check_progress(),
            "a whole tick backlogged without a byte written"
        );
        assert_eq!(c.take_batch(&mut Vec::new()), Batch::Abort);
    }

    #[test]
    fn a_backlog_that_appears_between_ticks_gets_a_whole_tick() {
        let c = Conn::new(1, Serializer::V2, 100, NOW);
        assert!(
            !c.check_progress(),
            "idle: nothing written, nothing waiting"
        );
        assert!(c.push(frame(99)));
        assert!(!c.check_progress(), "below the limit");
        assert!(c.push(frame(1)));
        assert!(!c.check_progress(), "backlogged, but only since this tick");
        let mut batch = Vec::new();
        assert_eq!(c.take_batch(&mut batch), Batch::Write);
        c.wrote(100);
        assert!(c.push(frame(200)));
        assert!(
            !c.check_progress(),
            "backlogged again, but the writer wrote"
        );
        assert!(c.is_open());
    }

    #[test]
    fn close_queues_a_close_frame_then_finishes() {
        let c = Conn::new(1, Serializer::V1, 100, NOW);
        c.push(Bytes::from_static(b"x"));
        c.close(1001, "bye");
        assert!(!c.push(Bytes::from_static(b"late")));
        let mut batch = Vec::new();
        assert_eq!(c.take_batch(&mut batch), Batch::Write);
        assert_eq!(batch.len(), 2);
        assert_eq!(&batch[1][..], &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
        assert_eq!(c.take_batch(&mut Vec::new()), Batch::Finish);
    }
}
