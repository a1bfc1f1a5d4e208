//! headcount's own protocol: Supabase Realtime over Phoenix Channels, as realtime-js speaks it.
//!
//! A member connects to `/realtime/v1/websocket?apikey=...&vsn=...`, sends `phx_join` with the
//! realtime-js join payload (presence key = [`member_key`], `access_token` = the apikey), waits
//! for the reply, then tracks [`member_meta`] and waits for that reply. Broadcasts go out as
//! realtime-js ≥ 2.91 sends them: binary kind 3 with a JSON body (2.0.0), or a JSON
//! `broadcast` push (1.0.0). Frames are built and read with `headcount-protocol`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use headcount_protocol::client::{decode_server_text, push, user_broadcast_push};
use headcount_protocol::{Encoding, KIND_USER_BROADCAST, Payload, Ref, Serializer};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    Entry, Event, Incoming, Member, ProtoError, Protocol, Session, member_key, member_meta,
    parse_member, ref_hash,
};
use crate::ws::Outbox;

/// headcount (or any Supabase Realtime server).
#[derive(Clone, Debug)]
pub struct Phoenix {
    /// The JWT sent as `apikey` and `access_token`.
    pub apikey: Arc<str>,
    /// The serializer every member uses.
    pub serializer: Serializer,
}

impl Protocol for Phoenix {
    type Session = PhoenixSession;

    fn path(&self, _member: &Member) -> (String, Option<&'static str>) {
        (
            format!(
                "/realtime/v1/websocket?apikey={}&vsn={}",
                self.apikey,
                self.serializer.vsn()
            ),
            None,
        )
    }

    fn session(&self, member: &Member) -> PhoenixSession {
        PhoenixSession {
            serializer: self.serializer,
            apikey: self.apikey.clone(),
            topic: format!("realtime:{}", member.room),
            key: member_key(member.id),
            meta: member_meta(member.id),
            track: member.track,
            join_ref: Ref::Null,
            next_ref: 1,
            join_msg: Ref::Null,
            track_msg: Ref::Null,
        }
    }

    fn buffers_diffs(&self) -> bool {
        true
    }

    fn keepalive_secs(&self) -> Option<u64> {
        Some(25)
    }
}

/// One realtime-js-like client with one channel.
#[derive(Debug)]
pub struct PhoenixSession {
    serializer: Serializer,
    apikey: Arc<str>,
    topic: String,
    key: String,
    meta: String,
    track: bool,
    join_ref: Ref,
    next_ref: u64,
    join_msg: Ref,
    track_msg: Ref,
}

impl PhoenixSession {
    fn make_ref(&mut self) -> Ref {
        let r = Ref::str(self.next_ref.to_string());
        self.next_ref += 1;
        r
    }

    fn send_track(&mut self, out: &mut Outbox) {
        let r = self.make_ref();
        let payload = format!(
            r#"{{"type":"presence","event":"track","payload":{}}}"#,
            self.meta
        );
        let (ser, jr, topic) = (self.serializer, &self.join_ref, &self.topic);
        out.text(|b| {
            push(b, ser, jr, &r, topic, "presence", &payload);
        });
        self.track_msg = r;
    }

    fn on_text(
        &mut self,
        text: &[u8],
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        // The frames a storm or a fan-out brings by the million are read straight from their
        // payload; parsing the envelope first would scan every payload twice.
        if self.serializer == Serializer::V2
            && let Some((event, payload)) = split_v2_push(text)
        {
            let bad = |e: serde_json::Error| ProtoError(format!("bad payload: {e}"));
            match event {
                b"presence_diff" => {
                    let d: DiffPayload = serde_json::from_slice(payload).map_err(bad)?;
                    events(Event::Diff {
                        joins: d.joins.0,
                        leaves: d.leaves.0,
                    });
                    return Ok(());
                }
                b"presence_state" => {
                    let s: Entries = serde_json::from_slice(payload).map_err(bad)?;
                    events(Event::State(s.0));
                    return Ok(());
                }
                b"broadcast" => {
                    events(Event::Broadcast(payload));
                    return Ok(());
                }
                _ => {}
            }
        }
        let m = decode_server_text(self.serializer, text).map_err(|e| ProtoError(e.to_string()))?;
        let Payload::Json(payload) = m.payload else {
            return Ok(());
        };
        match &*m.event {
            "broadcast" => events(Event::Broadcast(payload.get().as_bytes())),
            "presence_diff" => {
                let d: DiffPayload = parse(payload)?;
                events(Event::Diff {
                    joins: d.joins.0,
                    leaves: d.leaves.0,
                });
            }
            "presence_state" => {
                let s: Entries = parse(payload)?;
                events(Event::State(s.0));
            }
            "phx_reply" => {
                let reply: Reply<'_> = parse(payload)?;
                let ok = reply.status == "ok";
                if m.msg_ref == self.join_msg && !self.join_msg.is_null() {
                    self.join_msg = Ref::Null;
                    if !ok {
                        events(Event::Refused(format!("join: {}", reply.response_text())));
                        return Ok(());
                    }
                    events(Event::Joined);
                    if self.track {
                        self.send_track(out);
                    }
                } else if m.msg_ref == self.track_msg && !self.track_msg.is_null() {
                    self.track_msg = Ref::Null;
                    if ok {
                        events(Event::Tracked);
                    } else {
                        events(Event::Refused(format!("track: {}", reply.response_text())));
                    }
                }
            }
            "system" => {
                let s: System<'_> = parse(payload)?;
                if s.status == "error" {
                    events(Event::Refused(format!("system: {}", s.message)));
                }
            }
            "phx_close" | "phx_error" if m.topic == self.topic => {
                events(Event::Refused(format!("{}", m.event)));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Session for PhoenixSession {
    fn open(&mut self, _out: &mut Outbox, events: &mut dyn FnMut(Event<'_>)) {
        events(Event::Ready);
    }

    fn join(&mut self, out: &mut Outbox) {
        let r = self.make_ref();
        self.join_ref = r.clone();
        self.join_msg = r.clone();
        let payload = format!(
            r#"{{"config":{{"broadcast":{{"ack":false,"self":false}},"presence":{{"key":"{}","enabled":{}}},"postgres_changes":[],"private":false}},"access_token":"{}","version":"realtime-js/2.119.0"}}"#,
            self.key, self.track, self.apikey
        );
        let (ser, topic) = (self.serializer, &self.topic);
        out.text(|b| {
            push(b, ser, &r, &r, topic, "phx_join", &payload);
        });
    }

    fn publish(&mut self, body: &[u8], out: &mut Outbox) {
        let r = self.make_ref();
        let (jr, topic) = (&self.join_ref, &self.topic);
        match self.serializer {
            Serializer::V2 => out.binary(|b| {
                let mut json = Vec::with_capacity(body.len() + 2);
                json.push(b'"');
                json.extend_from_slice(body);
                json.push(b'"');
                let _ = user_broadcast_push(b, jr, &r, topic, "m", Encoding::Json, &json);
            }),
            Serializer::V1 => {
                let payload = format!(
                    r#"{{"type":"broadcast","event":"m","payload":"{}"}}"#,
                    String::from_utf8_lossy(body)
                );
                out.text(|b| {
                    push(b, Serializer::V1, jr, &r, topic, "broadcast", &payload);
                });
            }
        }
    }

    fn keepalive(&mut self, out: &mut Outbox) {
        let r = self.make_ref();
        let ser = self.serializer;
        out.text(|b| {
            push(b, ser, &Ref::Null, &r, "phoenix", "heartbeat", "{}");
        });
    }

    fn handle(
        &mut self,
        msg: Incoming<'_>,
        out: &mut Outbox,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ProtoError> {
        match msg {
            Incoming::Binary(bin) => {
                let body = user_broadcast_body(bin)
                    .ok_or_else(|| ProtoError("unreadable binary frame".into()))?;
                events(Event::Broadcast(body));
                Ok(())
            }
            Incoming::Text(text) => self.on_text(text, out, events),
        }
    }
}

/// The event and the payload of a 2.0.0 server push `[join_ref, null, topic, event, payload]`
/// (refs `null` or plain strings, no escapes in the first four elements), found by scanning the
/// envelope only. `None` for anything else, which then goes through the full decoder.
pub fn split_v2_push(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = text.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let mut rest = body;
    let mut event: &[u8] = &[];
    for element in 0..4 {
        if let Some(r) = rest.strip_prefix(b"null") {
            if element >= 2 {
                return None;
            }
            rest = r;
        } else {
            let r = rest.strip_prefix(b"\"")?;
            let end = memchr::memchr2(b'"', b'\\', r)?;
            if r[end] != b'"' {
                return None;
            }
            if element == 3 {
                event = &r[..end];
            }
            rest = &r[end + 1..];
        }
        rest = rest.strip_prefix(b",")?;
    }
    Some((event, rest))
}

/// The body of a binary user broadcast (kind 4:
/// `4, topicLen, eventLen, metaLen, enc, topic, event, meta, body`), read without validating
/// the JSON: the hot path of a fan-out only needs the stamp.
pub fn user_broadcast_body(bin: &[u8]) -> Option<&[u8]> {
    if bin.len() < 5 || bin[0] != KIND_USER_BROADCAST {
        return None;
    }
    let skip = 5 + usize::from(bin[1]) + usize::from(bin[2]) + usize::from(bin[3]);
    bin.get(skip..)
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, ProtoError> {
    serde_json::from_str(raw.get()).map_err(|e| ProtoError(format!("bad payload: {e}")))
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

impl Reply<'_> {
    fn response_text(&self) -> &str {
        self.response.map_or("", |r| r.get())
    }
}

#[derive(Deserialize)]
struct System<'a> {
    #[serde(borrow, default)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DiffPayload {
    joins: Entries,
    leaves: Entries,
}

/// `{key: {"metas": [{"phx_ref": ..., ...}, ...]}, ...}` as entries, one per meta.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries(pub Vec<Entry>);

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Metas<'a> {
    #[serde(borrow)]
    metas: Vec<MetaRef<'a>>,
}

#[derive(Deserialize)]
struct MetaRef<'a> {
    #[serde(borrow)]
    phx_ref: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a presence map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let metas: Metas<'de> = map.next_value()?;
                    let member = parse_member(&key);
                    out.extend(metas.metas.iter().map(|m| Entry {
                        member,
                        meta: ref_hash(m.phx_ref.as_bytes()),
                    }));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            id: 7,
            room: "room1".into(),
            track: true,
        }
    }

    fn run(s: &mut PhoenixSession, frame: Incoming<'_>, out: &mut Outbox) -> Vec<String> {
        let mut seen = Vec::new();
        s.handle(frame, out, &mut |e| seen.push(format!("{e:?}")))
            .unwrap();
        seen
    }

    #[test]
    fn joins_then_tracks_then_reads_presence_v2() {
        let p = Phoenix {
            apikey: "KEY".into(),
            serializer: Serializer::V2,
        };
        assert_eq!(
            p.path(&member()).0,
            "/realtime/v1/websocket?apikey=KEY&vsn=2.0.0"
        );
        let mut s = p.session(&member());
        let mut out = Outbox::new(1);
        s.join(&mut out);
        assert!(!out.is_empty());
        out.bytes.clear();

        let seen = run(
            &mut s,
            Incoming::Text(br#"["1","1","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#),
            &mut out,
        );
        assert_eq!(seen, ["Joined"]);
        assert!(!out.is_empty(), "the track push follows the join reply");

        let seen = run(
            &mut s,
            Incoming::Text(br#"["1",null,"realtime:room1","presence_state",{"m3":{"metas":[{"phx_ref":"A","name":"x"},{"phx_ref":"B"}]},"8b1f":{"metas":[{"phx_ref":"C"}]}}]"#),
            &mut out,
        );
        let a = ref_hash(b"A");
        let b = ref_hash(b"B");
        let c = ref_hash(b"C");
        assert_eq!(
            seen,
            [format!(
                "State([Entry {{ member: Some(3), meta: {a} }}, Entry {{ member: Some(3), meta: {b} }}, Entry {{ member: None, meta: {c} }}])"
            )]
        );
        let seen = run(
            &mut s,
            Incoming::Text(
                br#"["1","2","realtime:room1","phx_reply",{"status":"ok","response":{}}]"#,
            ),
            &mut out,
        );
        assert_eq!(seen, ["Tracked"]);
        let seen = run(
            &mut s,
            Incoming::Text(br#"[null,null,"realtime:room1","presence_diff",{"joins":{"m7":{"metas":[{"phx_ref":"A"}]}},"leaves":{}}]"#),
            &mut out,
        );
        assert_eq!(
            seen,
            [format!(
                "Diff {{ joins: [Entry {{ member: Some(7), meta: {a} }}], leaves: [] }}"
            )]
        );
    }

    #[test]
    fn splits_v2_pushes_without_parsing_the_payload() {
        assert_eq!(
            split_v2_push(br#"[null,null,"realtime:r","presence_diff",{"joins":{},"leaves":{}}]"#),
            Some((&b"presence_diff"[..], &br#"{"joins":{},"leaves":{}}"#[..]))
        );
        assert_eq!(
            split_v2_push(br#"["3",null,"realtime:r","presence_state",{}]"#),
            Some((&b"presence_state"[..], &b"{}"[..]))
        );
        assert_eq!(split_v2_push(br#"[null,null,"a\"b","x",{}]"#), None);
        assert_eq!(split_v2_push(br#"[null,null,null,"x",{}]"#), None);
        assert_eq!(split_v2_push(br#"{"topic":"t"}"#), None);
    }

    #[test]
    fn reads_the_reference_binary_broadcast() {
        // §10.1: the kind-4 frame carrying {"x":1,"y":2}.
        let mut frame = vec![0x04, 0x0E, 0x06, 0x00, 0x01];
        frame.extend_from_slice(b"realtime:room1cursor{\"x\":1,\"y\":2}");
        assert_eq!(user_broadcast_body(&frame), Some(&b"{\"x\":1,\"y\":2}"[..]));
        assert_eq!(user_broadcast_body(&[3, 0, 0, 0, 1]), None);
    }

    #[test]
    fn publishes_kind_3_like_realtime_js() {
        let p = Phoenix {
            apikey: "KEY".into(),
            serializer: Serializer::V2,
        };
        let mut s = p.session(&member());
        let mut out = Outbox::new(1);
        s.join(&mut out);
        out.bytes.clear();
        s.publish(b"~B1.1.1.0~", &mut out);
        let h = crate::ws::parse_header(&out.bytes).unwrap().unwrap();
        assert_eq!(h.opcode, crate::ws::OP_BINARY);
        let mut payload = out.bytes[h.header_len..].to_vec();
        crate::ws::apply_mask(&mut payload, h.mask.unwrap());
        let mut expected = vec![3, 1, 1, 14, 1, 0, 1];
        expected.extend_from_slice(b"12realtime:room1m\"~B1.1.1.0~\"");
        assert_eq!(payload, expected);
    }

    #[test]
    fn refusals_and_v1_replies() {
        let p = Phoenix {
            apikey: "KEY".into(),
            serializer: Serializer::V1,
        };
        let mut s = p.session(&member());
        let mut out = Outbox::new(1);
        s.join(&mut out);
        let seen = run(
            &mut s,
            Incoming::Text(br#"{"topic":"realtime:room1","event":"phx_reply","payload":{"status":"error","response":{"reason":"ChannelRateLimitReached: Too many channels"}},"ref":"1"}"#),
            &mut out,
        );
        assert_eq!(
            seen,
            [r#"Refused("join: {\"reason\":\"ChannelRateLimitReached: Too many channels\"}")"#]
        );
        let mut stamps = Vec::new();
        s.handle(
            Incoming::Text(br#"{"topic":"realtime:room1","event":"broadcast","payload":{"event":"m","payload":"~B1.2.3.0~","type":"broadcast"},"ref":null}"#),
            &mut out,
            &mut |e| {
                if let Event::Broadcast(b) = e {
                    stamps.push(super::super::Stamp::find(b).unwrap());
                }
            },
        )
        .unwrap();
        assert_eq!(stamps.len(), 1);
        assert_eq!((stamps[0].publisher, stamps[0].seq), (1, 2));
    }
}
