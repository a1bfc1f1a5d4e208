//! socket.io 4: engine.io v4 packets over a WebSocket, socket.io packets inside them, talking
//! to `bench/peers/socketio-server.mjs`.
//!
//! engine.io: the server opens with `0{...}` and pings with `2`, which the client answers with
//! `3`; `4` carries a socket.io packet. socket.io (default namespace): the client connects with
//! `40` (answered `40{"sid":...}`), emits events as `42["name",...args]` and `42<id>[...]` when it
//! wants an acknowledgement, which comes back as `43<id>[...args]`.
//!
//! The room server's events: `join(room, member, ack)` acknowledges with the room's member list
//! (the joiner included) and tells the room `joined(member)` (a `null` member joins without
//! presence); `pub(room, body)` sends the room
//! (sender excluded) `msg(body)`; a disconnect tells the room `left(member)`.

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    Entry, Event, Incoming, Member, ProtoError, Protocol, Session, member_key, member_meta,
    parse_member, ref_hash,
};
use crate::ws::Outbox;

/// A socket.io server running the room script.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketIo;

impl Protocol for SocketIo {
    type Session = SocketIoSession;

    fn path(&self, _member: &Member) -> (String, Option<&'static str>) {
        ("/socket.io/?EIO=4&transport=websocket".to_owned(), None)
    }

    fn session(&self, member: &Member) -> SocketIoSession {
        SocketIoSession {
            room: member.room.clone(),
            member_json: if member.track {
                format!(
                    r#"{{"key":"{}","meta":{}}}"#,
                    member_key(member.id),
                    member_meta(member.id)
                )
            } else {
                "null".to_owned()
            },
            join_ack: None,
            next_ack: 1,
        }
    }

    fn buffers_diffs(&self) -> bool {
        true
    }
}

/// One socket.io client in one room.
#[derive(Debug)]
pub struct SocketIoSession {
    room: String,
    member_json: String,
    join_ack: Option<u64>,
    next_ack: u64,
}

#[derive(Deserialize)]
struct MemberObj<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
}

fn entry(m: &MemberObj<'_>) -> Entry {
    Entry {
        member: parse_member(&m.key),
        meta: ref_hash(m.key.as_bytes()),
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> ProtoError {
    ProtoError(format!("socket.io {what}: {e}"))
}

impl Session for SocketIoSession {
    fn open(&mut self, _out: &mut Outbox, _events: &mut dyn FnMut(Event<'_>)) {
        // Wait for the engine.io open packet.
    }

    fn join(&mut self, out: &mut Outbox) {
        let id = self.next_ack;
        self.next_ack += 1;
        self.join_ack = Some(id);
        let (room, member) = (&self.room, &self.member_json);
        out.text(|b| {
            b.extend_from_slice(format!(r#"42{id}["join","{room}",{member}]"#).as_bytes());
        });
    }

    fn publish(&mut self, body: &[u8], out: &mut Outbox) {
        let room = &self.room;
        out.text(|b| {
            b.extend_from_slice(br#"42["pub",""#);
            b.extend_from_slice(room.as_bytes());
            b.extend_from_slice(br#"",""#);
            b.extend_from_slice(body);
            b.extend_from_slice(br#""]"#);
        });
    }

    fn keepalive(&mut self, _out: &mut Outbox) {
        // The server pings; `handle` answers.
    }

    fn handle(
        &mut self,
        msg: Incoming<'_>,
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        let Incoming::Text(text) = msg else {
            return Err(ProtoError("socket.io: unexpected binary frame".into()));
        };
        match text.first() {
            Some(b'0') => out.text(|b| b.extend_from_slice(b"40")),
            Some(b'2') => out.text(|b| b.extend_from_slice(b"3")),
            Some(b'1') => events(Event::Refused("engine.io close".into())),
            Some(b'4') => self.on_packet(&text[1..], events)?,
            _ => {}
        }
        Ok(())
    }
}

impl SocketIoSession {
    fn on_packet(&mut self, p: &[u8], events: &mut dyn FnMut(Event<'_>)) -> Result<(), ProtoError> {
        match p.first() {
            Some(b'0') => events(Event::Ready),
            Some(b'4') => events(Event::Refused(format!(
                "connect error: {}",
                String::from_utf8_lossy(&p[1..])
            ))),
            Some(b'2') => {
                let body = &p[1..];
                if body.starts_with(br#"["msg","#) {
                    events(Event::Broadcast(body));
                } else if body.starts_with(br#"["joined","#) {
                    let (_, m): (Cow<'_, str>, MemberObj<'_>) =
                        serde_json::from_slice(body).map_err(|e| bad("joined", e))?;
                    events(Event::Diff {
                        joins: vec![entry(&m)],
                        leaves: Vec::new(),
                    });
                } else if body.starts_with(br#"["left","#) {
                    let (_, m): (Cow<'_, str>, MemberObj<'_>) =
                        serde_json::from_slice(body).map_err(|e| bad("left", e))?;
                    events(Event::Diff {
                        joins: Vec::new(),
                        leaves: vec![entry(&m)],
                    });
                }
            }
            Some(b'3') => {
                let digits = p[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let id: u64 = std::str::from_utf8(&p[1..1 + digits])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ProtoError("socket.io: ack without id".into()))?;
                if Some(id) == self.join_ack {
                    self.join_ack = None;
                    let (members,): (Vec<MemberObj<'_>>,) =
                        serde_json::from_slice(&p[1 + digits..]).map_err(|e| bad("ack", e))?;
                    events(Event::State(members.iter().map(entry).collect()));
                    events(Event::Joined);
                    events(Event::Tracked);
                }
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
    fn handshake_join_and_events() {
        let m = Member {
            id: 7,
            room: "r1".into(),
            track: true,
        };
        let mut s = SocketIo.session(&m);
        let mut out = Outbox::new(3);
        let mut seen = Vec::new();
        let mut h = |s: &mut SocketIoSession, f: &[u8], out: &mut Outbox| {
            s.handle(Incoming::Text(f), out, &mut |e| seen.push(format!("{e:?}")))
                .unwrap();
        };
        h(
            &mut s,
            br#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            &mut out,
        );
        assert_eq!(crate::ws::take_texts(&mut out), ["40"]);
        h(&mut s, br#"40{"sid":"y"}"#, &mut out);
        s.join(&mut out);
        assert_eq!(
            crate::ws::take_texts(&mut out),
            [
                r#"421["join","r1",{"key":"m7","meta":{"name":"member-000007","online_at":"2026-01-01T00:00:00.000Z"}}]"#
            ]
        );
        h(&mut s, br#"2"#, &mut out);
        assert_eq!(crate::ws::take_texts(&mut out), ["3"]);
        h(
            &mut s,
            br#"431[[{"key":"m3","meta":{}},{"key":"m7","meta":{}}]]"#,
            &mut out,
        );
        h(
            &mut s,
            br#"42["joined",{"key":"m9","meta":{"a":1}}]"#,
            &mut out,
        );
        h(&mut s, br#"42["left",{"key":"m3","meta":{}}]"#, &mut out);
        s.publish(b"~B1.1.1.0~", &mut out);
        assert_eq!(
            crate::ws::take_texts(&mut out),
            [r#"42["pub","r1","~B1.1.1.0~"]"#]
        );
        let (k3, k7, k9) = (ref_hash(b"m3"), ref_hash(b"m7"), ref_hash(b"m9"));
        assert_eq!(
            seen,
            [
                "Ready".to_owned(),
                format!(
                    "State([Entry {{ member: Some(3), meta: {k3} }}, Entry {{ member: Some(7), meta: {k7} }}])"
                ),
                "Joined".to_owned(),
                "Tracked".to_owned(),
                format!("Diff {{ joins: [Entry {{ member: Some(9), meta: {k9} }}], leaves: [] }}"),
                format!("Diff {{ joins: [], leaves: [Entry {{ member: Some(3), meta: {k3} }}] }}"),
            ]
        );
    }
}
