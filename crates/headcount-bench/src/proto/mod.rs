//! The protocols the generator speaks, behind one adapter trait, so that every scenario runs
//! the same workload against headcount and against each peer.
//!
//! A [`Session`] is the pure state of one client connection: it is told what arrived and
//! writes what to send into an [`Outbox`]; it reports what happened as [`Event`]s. The
//! scenario code owns the socket and the clock.
//!
//! * [`phoenix`]: headcount (Supabase Realtime: Phoenix Channels, serializers 1.0.0 and 2.0.0);
//! * [`socketio`]: socket.io 4 (engine.io v4 over WebSocket) and the small room server in
//!   `bench/peers/`;
//! * [`yjs`]: y-websocket (`@y/websocket-server`): y-protocols sync and awareness messages in
//!   lib0 encoding; awareness is presence, and an awareness change is the broadcast;
//! * [`xmpp`]: XMPP over WebSocket (RFC 7395) to Prosody: SASL ANONYMOUS, resource binding,
//!   multi-user chat presence and groupchat messages.
//!
//! Members and payloads are the same for every protocol: member `i` has the key [`member_key`]
//! and the presence payload [`member_meta`]; a broadcast body starts with a [`Stamp`] that the
//! receiver finds wherever the protocol put it.

pub mod phoenix;
pub mod socketio;
pub mod xmpp;
pub mod yjs;

use std::io::Write as _;

use crate::ws::Outbox;

/// One member of the workload: who connects, to which room, and whether it tracks presence.
#[derive(Clone, Debug)]
pub struct Member {
    /// The member's number, unique in the run.
    pub id: u32,
    /// The room (channel, socket.io room, Yjs document, MUC room) it joins.
    pub room: String,
    /// Whether it announces its presence (track) after joining.
    pub track: bool,
}

/// A presence entry as a view keeps it: the member it belongs to (when the key is one of the
/// workload's) and a hash of the protocol's identity of this entry (`phx_ref`, Yjs client id,
/// MUC nick).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The member, parsed from the presence key.
    pub member: Option<u32>,
    /// A non-zero hash of the entry's ref.
    pub meta: u64,
}

/// What a session saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The connection is ready to join (handshake, login or namespace connect done).
    Ready,
    /// The join was accepted.
    Joined,
    /// The member's presence was accepted (for protocols where joining is presence, this
    /// follows `Joined` at once).
    Tracked,
    /// A full presence state: replaces the view.
    State(Vec<Entry>),
    /// A presence change.
    Diff {
        /// Entries that joined.
        joins: Vec<Entry>,
        /// Entries that left.
        leaves: Vec<Entry>,
    },
    /// A broadcast delivery: bytes that contain the [`Stamp`] of the message.
    Broadcast(&'a [u8]),
    /// The server refused something or closed the channel: the reason.
    Refused(String),
}

/// A protocol error: the server sent something the session cannot read.
#[derive(Debug)]
pub struct ProtoError(pub String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

/// The adapter one protocol implements: where to connect, and a session per connection.
pub trait Protocol: Send + Sync + 'static {
    /// The per-connection state.
    type Session: Session;
    /// The request path (with query) of a member's WebSocket, and its subprotocol.
    fn path(&self, member: &Member) -> (String, Option<&'static str>);
    /// A new session for `member`.
    fn session(&self, member: &Member) -> Self::Session;
    /// Whether presence diffs that arrive before the first full state wait for it, as
    /// phoenix.js does (`Presence.inPendingSyncState`).
    fn buffers_diffs(&self) -> bool {
        false
    }
    /// How often a connected client must show it is alive (heartbeat, awareness renewal).
    fn keepalive_secs(&self) -> Option<u64> {
        None
    }
}

/// The state of one client connection.
pub trait Session: Send + 'static {
    /// Called once the WebSocket is open.
    fn open(&mut self, out: &mut Outbox, events: &mut dyn FnMut(Event<'_>));
    /// Joins the member's room (and tracks, when the member tracks).
    fn join(&mut self, out: &mut Outbox);
    /// Broadcasts `body` to the room.
    fn publish(&mut self, body: &[u8], out: &mut Outbox);
    /// Shows the server that the client is alive.
    fn keepalive(&mut self, out: &mut Outbox);
    /// Handles one message from the server.
    fn handle(
        &mut self,
        msg: Incoming<'_>,
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError>;
}

/// A message from the server, as the WebSocket layer delivered it.
#[derive(Clone, Copy, Debug)]
pub enum Incoming<'a> {
    /// A text message.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
}

/// The presence key of member `id`.
pub fn member_key(id: u32) -> String {
    format!("m{id}")
}

/// The member of a presence key written by [`member_key`].
pub fn parse_member(key: &str) -> Option<u32> {
    key.strip_prefix('m')?.parse().ok()
}

/// The presence payload of member `id`: what a realtime-js app typically tracks.
pub fn member_meta(id: u32) -> String {
    format!(r#"{{"name":"member-{id:06}","online_at":"2026-01-01T00:00:00.000Z"}}"#)
}

/// A non-zero 64-bit hash (FNV-1a) of an entry's ref.
pub fn ref_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// What a broadcast carries so the receiver can tell which message it is and how long it took:
/// the publisher, its sequence number, the send time (microseconds since the run started) and
/// the step of the ramp. Written as ASCII (`~B7.42.1234567.3~`) so it survives every envelope
/// (JSON strings, XML text, binary frames) unescaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's number.
    pub publisher: u32,
    /// The publisher's sequence number, from 1.
    pub seq: u64,
    /// Microseconds since the run started, when it was sent.
    pub sent_us: u64,
    /// The ramp step it belongs to.
    pub step: u32,
}

impl Stamp {
    /// Writes the stamp and pads the body with `x` to `size` bytes.
    pub fn write(&self, out: &mut Vec<u8>, size: usize) {
        let start = out.len();
        let _ = write!(
            out,
            "~B{}.{}.{}.{}~",
            self.publisher, self.seq, self.sent_us, self.step
        );
        let written = out.len() - start;
        if size > written {
            out.resize(start + size, b'x');
        }
    }

    /// Finds and reads the stamp in `bytes`.
    pub fn find(bytes: &[u8]) -> Option<Stamp> {
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"~B"));
        let at = FINDER.find(bytes)?;
        let mut nums = [0u64; 4];
        let mut i = at + 2;
        for (k, n) in nums.iter_mut().enumerate() {
            let begin = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                *n = n.checked_mul(10)?.checked_add(u64::from(bytes[i] - b'0'))?;
                i += 1;
            }
            let sep = if k == 3 { b'~' } else { b'.' };
            if i == begin || bytes.get(i) != Some(&sep) {
                return None;
            }
            i += 1;
        }
        Some(Stamp {
            publisher: u32::try_from(nums[0]).ok()?,
            seq: nums[1],
            sent_us: nums[2],
            step: u32::try_from(nums[3]).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_inside_any_envelope() {
        let s = Stamp {
            publisher: 7,
            seq: 42,
            sent_us: 1_234_567,
            step: 3,
        };
        let mut body = Vec::new();
        s.write(&mut body, 64);
        assert_eq!(body.len(), 64);
        assert!(body.starts_with(b"~B7.42.1234567.3~xx"));
        let xml = [b"<message><body>".as_slice(), &body, b"</body></message>"].concat();
        assert_eq!(Stamp::find(&xml), Some(s));
        let json = [b"42[\"msg\",\"".as_slice(), &body, b"\"]"].concat();
        assert_eq!(Stamp::find(&json), Some(s));
        assert_eq!(Stamp::find(b"~B7.42~"), None);
        assert_eq!(Stamp::find(b"no stamp"), None);
        let mut short = Vec::new();
        s.write(&mut short, 4);
        assert_eq!(short, b"~B7.42.1234567.3~");
    }

    #[test]
    fn member_keys_round_trip() {
        assert_eq!(parse_member(&member_key(4711)), Some(4711));
        assert_eq!(parse_member("8b1f3c2e"), None);
        assert_ne!(ref_hash(b""), 0);
        assert_ne!(ref_hash(b"GBjZ2w2dPOcO4gAh"), ref_hash(b"GBjZ2w2dPOcO4gAi"));
    }
}
