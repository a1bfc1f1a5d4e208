//! XMPP over WebSocket (RFC 7395) to Prosody: multi-user chat (XEP-0045) presence.
//!
//! One stanza per text message, subprotocol `xmpp`. The login: `<open/>`, features, SASL
//! ANONYMOUS, `<success/>`, `<open/>` again, features, resource binding. Joining a room is
//! sending presence to `room@muc/nick` (the nick is the member key): the server answers with
//! the presence of every occupant, then the joiner's own presence (status code 110), and tells
//! every occupant about the newcomer. A broadcast is a `groupchat` message to the room, which
//! the server sends to every occupant, the sender included.
//!
//! The stanzas are read with a few byte scans (tag name, attributes of the first tag): Prosody
//! writes attribute values with single quotes, other servers with double quotes; both are read.

use super::{
    Entry, Event, Incoming, Member, ProtoError, Protocol, Session, member_key, parse_member,
    ref_hash,
};
use crate::ws::{OP_PING, Outbox};

const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// An XMPP server with a MUC component.
#[derive(Clone, Debug)]
pub struct Xmpp {
    /// The virtual host (`localhost`).
    pub domain: String,
    /// The MUC component (`conference.localhost`).
    pub muc: String,
}

impl Protocol for Xmpp {
    type Session = XmppSession;

    fn path(&self, _member: &Member) -> (String, Option<&'static str>) {
        ("/xmpp-websocket".to_owned(), Some("xmpp"))
    }

    fn session(&self, member: &Member) -> XmppSession {
        XmppSession {
            domain: self.domain.clone(),
            room_jid: format!("{}@{}", member.room, self.muc),
            nick: member_key(member.id),
            stage: Stage::Opening,
        }
    }

    fn keepalive_secs(&self) -> Option<u64> {
        Some(25)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Opening,
    Authenticating,
    Reopening,
    Binding,
    Ready,
    Joined,
}

/// One XMPP client in one room.
#[derive(Debug)]
pub struct XmppSession {
    domain: String,
    room_jid: String,
    nick: String,
    stage: Stage,
}

/// The name of the first element (`presence`, `stream:features`, ...).
pub fn tag_name(stanza: &[u8]) -> &[u8] {
    let Some(lt) = memchr::memchr(b'<', stanza) else {
        return &[];
    };
    let rest = &stanza[lt + 1..];
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The value of attribute `name` of the first element.
pub fn attr<'a>(stanza: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let end = memchr::memchr(b'>', stanza).unwrap_or(stanza.len());
    let tag = &stanza[..end];
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&tag[at..], name.as_bytes()) {
        let i = at + i;
        at = i + name.len();
        let before = if i == 0 { b' ' } else { tag[i - 1] };
        if !before.is_ascii_whitespace() || tag.get(at) != Some(&b'=') {
            continue;
        }
        let quote = *tag.get(at + 1)?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        let value = &tag[at + 2..];
        let close = memchr::memchr(quote, value)?;
        return Some(&value[..close]);
    }
    None
}

fn contains(stanza: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(stanza, needle).is_some()
}

impl XmppSession {
    fn send_open(&self, out: &mut Outbox) {
        let domain = &self.domain;
        out.text(|b| {
            b.extend_from_slice(
                format!(r#"<open xmlns="{FRAMING_NS}" to="{domain}" version="1.0"/>"#).as_bytes(),
            );
        });
    }

    fn occupant(&self, from: &[u8]) -> Option<Entry> {
        let from = std::str::from_utf8(from).ok()?;
        let (room, nick) = from.split_once('/')?;
        (room == self.room_jid).then(|| Entry {
            member: parse_member(nick),
            meta: ref_hash(nick.as_bytes()),
        })
    }
}

impl Session for XmppSession {
    fn open(&mut self, out: &mut Outbox, _events: &mut dyn FnMut(Event<'_>)) {
        self.send_open(out);
    }

    fn join(&mut self, out: &mut Outbox) {
        let (room, nick) = (&self.room_jid, &self.nick);
        out.text(|b| {
            b.extend_from_slice(
                format!(
                    r#"<presence to="{room}/{nick}" xmlns="jabber:client"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0"/></x></presence>"#
                )
                .as_bytes(),
            );
        });
    }

    fn publish(&mut self, body: &[u8], out: &mut Outbox) {
        let room = &self.room_jid;
        out.text(|b| {
            b.extend_from_slice(br#"<message to=""#);
            b.extend_from_slice(room.as_bytes());
            b.extend_from_slice(br#"" type="groupchat" xmlns="jabber:client"><body>"#);
            b.extend_from_slice(body);
            b.extend_from_slice(b"</body></message>");
        });
    }

    fn keepalive(&mut self, out: &mut Outbox) {
        // RFC 7395 §3.4: whitespace keepalives are not allowed; WebSocket pings are.
        out.control(OP_PING, b"");
    }

    fn handle(
        &mut self,
        msg: Incoming<'_>,
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        let Incoming::Text(s) = msg else {
            return Err(ProtoError("xmpp: unexpected binary frame".into()));
        };
        let name = tag_name(s);
        match name {
            b"message" if attr(s, "type") == Some(b"groupchat") && contains(s, b"<body") => {
                events(Event::Broadcast(s));
            }
            b"presence" => {
                let Some(from) = attr(s, "from") else {
                    return Ok(());
                };
                let kind = attr(s, "type");
                if kind == Some(b"error") {
                    events(Event::Refused(format!(
                        "presence error: {}",
                        String::from_utf8_lossy(s)
                    )));
                    return Ok(());
                }
                let Some(entry) = self.occupant(from) else {
                    return Ok(());
                };
                if kind == Some(b"unavailable") {
                    events(Event::Diff {
                        joins: Vec::new(),
                        leaves: vec![entry],
                    });
                } else {
                    events(Event::Diff {
                        joins: vec![entry],
                        leaves: Vec::new(),
                    });
                    let own = contains(s, b"code='110'") || contains(s, b"code=\"110\"");
                    if own && self.stage == Stage::Ready {
                        self.stage = Stage::Joined;
                        events(Event::Joined);
                        events(Event::Tracked);
                    }
                }
            }
            b"open" => {}
            b"stream:features" | b"features" => match self.stage {
                Stage::Opening => {
                    if !contains(s, b"ANONYMOUS") {
                        return Err(ProtoError("xmpp: no SASL ANONYMOUS offered".into()));
                    }
                    self.stage = Stage::Authenticating;
                    out.text(|b| {
                        b.extend_from_slice(
                            br#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>"#,
                        );
                    });
                }
                Stage::Reopening => {
                    self.stage = Stage::Binding;
                    out.text(|b| {
                        b.extend_from_slice(
                            br#"<iq type="set" id="bind" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>"#,
                        );
                    });
                }
                _ => {}
            },
            b"success" if self.stage == Stage::Authenticating => {
                self.stage = Stage::Reopening;
                self.send_open(out);
            }
            b"iq" => {
                if self.stage == Stage::Binding && attr(s, "id") == Some(b"bind") {
                    if attr(s, "type") == Some(b"result") {
                        self.stage = Stage::Ready;
                        events(Event::Ready);
                    } else {
                        events(Event::Refused("xmpp: bind failed".into()));
                    }
                } else if attr(s, "type") == Some(b"get") {
                    // Answer server pings (XEP-0199) and anything else with an empty result.
                    if let Some(id) = attr(s, "id") {
                        let id = id.to_vec();
                        out.text(|b| {
                            b.extend_from_slice(br#"<iq type="result" id=""#);
                            b.extend_from_slice(&id);
                            b.extend_from_slice(br#"" xmlns="jabber:client"/>"#);
                        });
                    }
                }
            }
            b"failure" | b"close" | b"stream:error" => {
                events(Event::Refused(format!(
                    "xmpp: {}",
                    String::from_utf8_lossy(s)
                )));
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
    fn scans_tags_and_attributes() {
        let s = b"<presence from='r@conference.localhost/m3' type=\"unavailable\" xmlns='jabber:client'><x/></presence>";
        assert_eq!(tag_name(s), b"presence");
        assert_eq!(attr(s, "from"), Some(&b"r@conference.localhost/m3"[..]));
        assert_eq!(attr(s, "type"), Some(&b"unavailable"[..]));
        assert_eq!(attr(s, "id"), None);
        assert_eq!(
            attr(b"<iq xmlns:type='x' type='get'/>", "type"),
            Some(&b"get"[..])
        );
        assert_eq!(
            tag_name(b"<stream:features xmlns:stream='x'>"),
            b"stream:features"
        );
        assert_eq!(
            tag_name(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
            b"success"
        );
    }

    #[test]
    fn logs_in_joins_and_reads_the_room() {
        let x = Xmpp {
            domain: "localhost".into(),
            muc: "conference.localhost".into(),
        };
        let m = Member {
            id: 7,
            room: "r1".into(),
            track: true,
        };
        let mut s = x.session(&m);
        let mut out = Outbox::new(9);
        let mut seen = Vec::new();
        s.open(&mut out, &mut |e| seen.push(format!("{e:?}")));
        assert_eq!(
            crate::ws::take_texts(&mut out),
            [r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>"#]
        );
        let script: [&[u8]; 8] = [
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='a' from='localhost' version='1.0'/>",
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>ANONYMOUS</mechanism></mechanisms></stream:features>",
            b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind></stream:features>",
            b"<iq id='bind' type='result' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>x@localhost/y</jid></bind></iq>",
            b"<presence from='r1@conference.localhost/m3' xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/></x></presence>",
            b"<presence from='r1@conference.localhost/m7' xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'><item role='participant'/><status code='110'/></x></presence>",
            b"<message from='r1@conference.localhost/m3' type='groupchat' xmlns='jabber:client'><body>~B3.1.5.0~</body></message>",
        ];
        let mut sent = Vec::new();
        for (i, f) in script.iter().enumerate() {
            s.handle(Incoming::Text(f), &mut out, &mut |e| {
                seen.push(format!("{e:?}"))
            })
            .unwrap();
            if i == 4 {
                s.join(&mut out);
            }
            sent.extend(crate::ws::take_texts(&mut out));
        }
        assert_eq!(sent.len(), 4);
        assert!(sent[0].contains("mechanism=\"ANONYMOUS\""));
        assert!(sent[1].starts_with("<open "));
        assert!(sent[2].contains("urn:ietf:params:xml:ns:xmpp-bind"));
        assert!(sent[3].starts_with(r#"<presence to="r1@conference.localhost/m7""#));
        let (h3, h7) = (ref_hash(b"m3"), ref_hash(b"m7"));
        assert_eq!(seen[0], "Ready");
        assert_eq!(
            seen[1],
            format!("Diff {{ joins: [Entry {{ member: Some(3), meta: {h3} }}], leaves: [] }}")
        );
        assert_eq!(
            seen[2],
            format!("Diff {{ joins: [Entry {{ member: Some(7), meta: {h7} }}], leaves: [] }}")
        );
        assert_eq!(&seen[3..5], ["Joined", "Tracked"]);
        assert!(seen[5].starts_with("Broadcast("));
    }
}
