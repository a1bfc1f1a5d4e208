//! y-websocket (`@y/websocket-server`): y-protocols messages in lib0 encoding, binary frames.
//!
//! A member's WebSocket path is its room (the Yjs document name). Every message starts with a
//! varuint type: `0` sync (`0` step 1 with a state vector, `1` step 2 with an update, `2`
//! update), `1` awareness (a length-prefixed awareness update). An awareness update is
//! `varuint n`, then per client `varuint clientID, varuint clock, varstring JSON state`
//! (`null` when the client left). The server relays every awareness change to every
//! connection of the document, the sender included, and drops states not renewed for 30 s.
//!
//! Presence is the member's awareness state (client id = member + 1). Yjs has no ephemeral
//! broadcast other than awareness (a shared-document update would be stored forever), so a
//! broadcast is an awareness change of the publisher carrying the body, which is how Yjs apps
//! send cursors.

use super::{
    Entry, Event, Incoming, Member, ProtoError, Protocol, Session, member_key, member_meta,
};
use crate::ws::Outbox;

const MESSAGE_SYNC: u64 = 0;
const MESSAGE_AWARENESS: u64 = 1;
const SYNC_STEP1: u64 = 0;
const SYNC_STEP2: u64 = 1;

/// A y-websocket server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Yjs;

impl Protocol for Yjs {
    type Session = YjsSession;

    fn path(&self, member: &Member) -> (String, Option<&'static str>) {
        (format!("/{}", member.room), None)
    }

    fn session(&self, member: &Member) -> YjsSession {
        let key = member_key(member.id);
        let meta = member_meta(member.id);
        YjsSession {
            client_id: u64::from(member.id) + 1,
            clock: 0,
            state: format!(r#"{{"key":"{key}",{}"#, &meta[1..]),
            track: member.track,
            joined: false,
            tracked: false,
        }
    }

    fn keepalive_secs(&self) -> Option<u64> {
        // y-protocols renews the local state every `outdatedTimeout / 2`.
        Some(15)
    }
}

/// One Yjs client of one document.
#[derive(Debug)]
pub struct YjsSession {
    client_id: u64,
    clock: u64,
    state: String,
    track: bool,
    joined: bool,
    tracked: bool,
}

/// Appends a lib0 varuint.
pub fn write_var_uint(out: &mut Vec<u8>, mut n: u64) {
    while n > 0x7F {
        out.push(0x80 | (n as u8 & 0x7F));
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a lib0 length-prefixed byte string (also how strings are written).
pub fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads lib0 values from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf }
    }

    /// Reads a varuint.
    pub fn var_uint(&mut self) -> Result<u64, ProtoError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| ProtoError("lib0: truncated varuint".into()))?;
            self.buf = rest;
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(ProtoError("lib0: varuint too long".into()))
    }

    /// Reads a length-prefixed byte string.
    pub fn var_bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = usize::try_from(self.var_uint()?).unwrap_or(usize::MAX);
        if self.buf.len() < len {
            return Err(ProtoError("lib0: truncated bytes".into()));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }
}

/// Encodes a one-client awareness message (`1, varbytes(update)`).
pub fn awareness_message(out: &mut Vec<u8>, client_id: u64, clock: u64, state_json: &[u8]) {
    let mut update = Vec::with_capacity(state_json.len() + 16);
    write_var_uint(&mut update, 1);
    write_var_uint(&mut update, client_id);
    write_var_uint(&mut update, clock);
    write_var_bytes(&mut update, state_json);
    write_var_uint(out, MESSAGE_AWARENESS);
    write_var_bytes(out, &update);
}

fn member_of_client(client_id: u64) -> Option<u32> {
    client_id.checked_sub(1).and_then(|m| u32::try_from(m).ok())
}

impl YjsSession {
    fn send_state(&mut self, out: &mut Outbox) {
        self.clock += 1;
        let (id, clock, state) = (self.client_id, self.clock, &self.state);
        out.binary(|b| awareness_message(b, id, clock, state.as_bytes()));
    }

    fn on_awareness(
        &mut self,
        update: &[u8],
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        let mut d = Decoder::new(update);
        let n = d.var_uint()?;
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let client = d.var_uint()?;
            let clock = d.var_uint()?;
            let state = d.var_bytes()?;
            if state.starts_with(br#"{"b":"~B"#) {
                events(Event::Broadcast(state));
                continue;
            }
            let entry = Entry {
                member: member_of_client(client),
                meta: client | 1 << 63,
            };
            if state == b"null" {
                leaves.push(entry);
            } else {
                joins.push(entry);
                if client == self.client_id && clock == self.clock && !self.tracked {
                    self.tracked = true;
                    events(Event::Diff {
                        joins: std::mem::take(&mut joins),
                        leaves: std::mem::take(&mut leaves),
                    });
                    events(Event::Tracked);
                }
            }
        }
        if !joins.is_empty() || !leaves.is_empty() {
            events(Event::Diff { joins, leaves });
        }
        Ok(())
    }
}

impl Session for YjsSession {
    fn open(&mut self, out: &mut Outbox, events: &mut dyn FnMut(Event<'_>)) {
        // As y-websocket's provider does on open: sync step 1 with an empty state vector.
        out.binary(|b| {
            write_var_uint(b, MESSAGE_SYNC);
            write_var_uint(b, SYNC_STEP1);
            write_var_bytes(b, &[0]);
        });
        events(Event::Ready);
    }

    fn join(&mut self, out: &mut Outbox) {
        if self.track {
            self.send_state(out);
        }
    }

    fn publish(&mut self, body: &[u8], out: &mut Outbox) {
        self.clock += 1;
        let (id, clock) = (self.client_id, self.clock);
        out.binary(|b| {
            let mut state = Vec::with_capacity(body.len() + 8);
            state.extend_from_slice(br#"{"b":""#);
            state.extend_from_slice(body);
            state.extend_from_slice(br#""}"#);
            awareness_message(b, id, clock, &state);
        });
    }

    fn keepalive(&mut self, out: &mut Outbox) {
        if self.tracked {
            self.send_state(out);
        }
    }

    fn handle(
        &mut self,
        msg: Incoming<'_>,
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        let Incoming::Binary(bin) = msg else {
            return Err(ProtoError("y-websocket: unexpected text frame".into()));
        };
        let mut d = Decoder::new(bin);
        match d.var_uint()? {
            MESSAGE_SYNC if d.var_uint()? == SYNC_STEP1 => {
                // Answer with our (empty) document: an update with no structs and an empty
                // delete set.
                out.binary(|b| {
                    write_var_uint(b, MESSAGE_SYNC);
                    write_var_uint(b, SYNC_STEP2);
                    write_var_bytes(b, &[0, 0]);
                });
                if !self.joined {
                    self.joined = true;
                    events(Event::Joined);
                    if !self.track {
                        events(Event::Tracked);
                    }
                }
            }
            MESSAGE_AWARENESS => {
                let update = d.var_bytes()?;
                self.on_awareness(update, events)?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuints_match_lib0() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (4_294_967_295, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
        ];
        for (n, bytes) in cases {
            let mut out = Vec::new();
            write_var_uint(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(Decoder::new(bytes).var_uint().unwrap(), n);
        }
        assert!(Decoder::new(&[0x80]).var_uint().is_err());
    }

    #[test]
    fn awareness_update_matches_y_protocols() {
        // What y-protocols' encodeAwarenessUpdate writes for client 8, clock 1, state {"a":1},
        // wrapped as y-websocket's message type 1.
        let mut out = Vec::new();
        awareness_message(&mut out, 8, 1, br#"{"a":1}"#);
        assert_eq!(
            out,
            [1, 11, 1, 8, 1, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}']
        );
    }

    #[test]
    fn session_tracks_and_reads_changes() {
        let m = Member {
            id: 7,
            room: "doc".into(),
            track: true,
        };
        assert_eq!(Yjs.path(&m).0, "/doc");
        let mut s = Yjs.session(&m);
        let mut out = Outbox::new(5);
        let mut seen = Vec::new();
        s.open(&mut out, &mut |e| seen.push(format!("{e:?}")));
        s.join(&mut out);
        // Server: sync step 1 (empty state vector), then an awareness update with member 2
        // and ourselves (client 8 at clock 1), then member 2 leaves, then a broadcast.
        let mut h = |s: &mut YjsSession, f: &[u8]| {
            s.handle(Incoming::Binary(f), &mut out, &mut |e| {
                seen.push(format!("{e:?}"))
            })
            .unwrap();
        };
        h(&mut s, &[0, 0, 1, 0]);
        let mut aw = Vec::new();
        write_var_uint(&mut aw, 2);
        write_var_uint(&mut aw, 3);
        write_var_uint(&mut aw, 5);
        write_var_bytes(&mut aw, br#"{"key":"m2"}"#);
        write_var_uint(&mut aw, 8);
        write_var_uint(&mut aw, 1);
        write_var_bytes(&mut aw, br#"{"key":"m7"}"#);
        let mut msg = vec![1];
        write_var_bytes(&mut msg, &aw);
        h(&mut s, &msg);
        let mut gone = Vec::new();
        awareness_message(&mut gone, 3, 6, b"null");
        h(&mut s, &gone);
        let mut b = Vec::new();
        awareness_message(&mut b, 99, 2, br#"{"b":"~B98.1.5.0~xx"}"#);
        h(&mut s, &b);
        let (e3, e8) = (3 | 1u64 << 63, 8 | 1u64 << 63);
        assert_eq!(
            seen,
            [
                "Ready".to_owned(),
                "Joined".to_owned(),
                format!(
                    "Diff {{ joins: [Entry {{ member: Some(2), meta: {e3} }}, Entry {{ member: Some(7), meta: {e8} }}], leaves: [] }}"
                ),
                "Tracked".to_owned(),
                format!("Diff {{ joins: [], leaves: [Entry {{ member: Some(2), meta: {e3} }}] }}"),
                format!("Broadcast({:?})", br#"{"b":"~B98.1.5.0~xx"}"#),
            ]
        );
    }
}
