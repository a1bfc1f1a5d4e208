//! What is stored and published.
//!
//! **An entry** (a presence hash's value) is JSON whose first member is the epoch, so the Lua
//! scripts read it with a pattern:
//!
//! ```text
//! {"epoch":1,"node":"4f1c…","key":"alice","ref":"F0pS…","prev":"F0pR…","payload":{"status":"online"}}
//! ```
//!
//! `prev` (the `phx_ref_prev` of an update) is absent otherwise; `payload` is the tracked object
//! in canonical form.
//!
//! **A message** on a channel's pub/sub channel is a header line of JSON, a newline, and a body
//! taken verbatim (any bytes: a binary body needs no base64):
//!
//! ```text
//! {"t":"p","seq":12,"node":"<origin>","owner":"<owner>"}\n<entry JSON, or nothing for a leave>
//! {"t":"b","node":"<origin>"}\n<the JSON broadcast payload, byte for byte>
//! {"t":"u","node":"<origin>","event":"<event>","enc":0|1}\n<the user broadcast's body>
//! ```
//!
//! Presence messages come from the scripts, with the sequence number the change got; broadcasts
//! are published by the node itself and carry no sequence number (they change no state).

use bytes::Bytes;
use headcount_cluster::{Broadcast, PresenceEntry, RelayedBroadcast};
use headcount_presence::{Meta, Payload, PhxRef};
use headcount_protocol::Encoding;
use serde::Deserialize;
use serde_json::value::RawValue;

fn json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
}

/// The stored JSON of `entry`, owned by `node` in `epoch`.
pub(crate) fn entry_json(epoch: u64, node: &str, entry: &PresenceEntry) -> String {
    let payload = entry.meta.payload.as_str();
    let mut out = String::with_capacity(payload.len() + entry.key.len() + node.len() + 96);
    out.push_str("{\"epoch\":");
    out.push_str(&epoch.to_string());
    out.push_str(",\"node\":");
    json_str(&mut out, node);
    out.push_str(",\"key\":");
    json_str(&mut out, &entry.key);
    out.push_str(",\"ref\":\"");
    out.push_str(entry.meta.phx_ref.as_str());
    out.push('"');
    if let Some(prev) = entry.meta.phx_ref_prev {
        out.push_str(",\"prev\":\"");
        out.push_str(prev.as_str());
        out.push('"');
    }
    out.push_str(",\"payload\":");
    out.push_str(payload);
    out.push('}');
    out
}

#[derive(Deserialize)]
struct StoredEntry<'a> {
    #[serde(default)]
    epoch: u64,
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(rename = "ref")]
    phx_ref: &'a str,
    #[serde(default)]
    prev: Option<&'a str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// An entry read back: its owning node, its epoch and the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The owning node.
    pub node: String,
    /// The owning node's epoch when it wrote the entry.
    pub epoch: u64,
    /// The entry.
    pub entry: PresenceEntry,
}

/// Parses a stored entry; `None` if it is not one (a corrupt value is skipped, not trusted).
pub(crate) fn parse_entry(json: &[u8]) -> Option<Stored> {
    let raw: StoredEntry<'_> = serde_json::from_slice(json).ok()?;
    let meta = Meta {
        phx_ref: PhxRef::parse(raw.phx_ref)?,
        phx_ref_prev: match raw.prev {
            Some(p) => Some(PhxRef::parse(p)?),
            None => None,
        },
        payload: Payload::from_json(raw.payload.get()).ok()?,
    };
    Some(Stored {
        node: raw.node.into_owned(),
        epoch: raw.epoch,
        entry: PresenceEntry {
            key: raw.key.as_ref().into(),
            meta,
        },
    })
}

/// The message that relays broadcast `msg` from `node`.
pub(crate) fn broadcast_message(node: &str, msg: &Broadcast<'_>) -> Bytes {
    let mut header = String::with_capacity(96);
    let body: &[u8] = match *msg {
        Broadcast::Json(payload) => {
            header.push_str("{\"t\":\"b\",\"node\":");
            json_str(&mut header, node);
            payload.as_bytes()
        }
        Broadcast::User {
            event,
            encoding,
            body,
        } => {
            header.push_str("{\"t\":\"u\",\"node\":");
            json_str(&mut header, node);
            header.push_str(",\"event\":");
            json_str(&mut header, event);
            header.push_str(",\"enc\":");
            header.push_str(&encoding.byte().to_string());
            body
        }
    };
    header.push_str("}\n");
    let mut out = Vec::with_capacity(header.len() + body.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out.into()
}

#[derive(Deserialize)]
struct Header<'a> {
    t: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    owner: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    enc: Option<u8>,
}

/// A message heard on a channel's pub/sub channel, as the node that heard it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// Another node's presence change, numbered.
    Presence {
        /// The channel's sequence number after the change.
        seq: u64,
        /// The owner id.
        owner: String,
        /// The new entry (`None`: gone).
        entry: Option<PresenceEntry>,
    },
    /// A change about this node's own member: only its number matters.
    OwnPresence {
        /// The channel's sequence number after the change.
        seq: u64,
    },
    /// Another node's broadcast.
    Broadcast(RelayedBroadcast),
    /// This node's own broadcast, heard back: nothing to do.
    OwnBroadcast,
}

/// Parses a message heard by node `own`; `None` if it is not one of ours. The origin is read
/// from the header first: the body of the node's own messages is neither parsed nor copied.
pub(crate) fn parse_message(bytes: &[u8], own: &str) -> Option<Message> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header: Header<'_> = serde_json::from_slice(&bytes[..newline]).ok()?;
    let mine = header.node == own;
    let body = &bytes[newline + 1..];
    match header.t {
        "p" if mine => Some(Message::OwnPresence { seq: header.seq }),
        "b" | "u" if mine => Some(Message::OwnBroadcast),
        "p" => Some(Message::Presence {
            seq: header.seq,
            owner: header.owner?.into_owned(),
            entry: if body.is_empty() {
                None
            } else {
                Some(parse_entry(body)?.entry)
            },
        }),
        "b" => Some(Message::Broadcast(RelayedBroadcast::Json(
            Bytes::copy_from_slice(body),
        ))),
        "u" => Some(Message::Broadcast(RelayedBroadcast::User {
            event: header.event?.as_ref().into(),
            encoding: match header.enc? {
                0 => Encoding::Binary,
                1 => Encoding::Json,
                _ => return None,
            },
            body: Bytes::copy_from_slice(body),
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headcount_presence::RefGenerator;

    fn entry(prev: bool) -> PresenceEntry {
        let mut g = RefGenerator::new(1);
        let first = g.next(1);
        PresenceEntry {
            key: "al\"ice\n".into(),
            meta: Meta {
                phx_ref: g.next(2),
                phx_ref_prev: prev.then_some(first),
                payload: Payload::from_json(r#"{"status":"online","n":[1,2]}"#).unwrap(),
            },
        }
    }

    #[test]
    fn entries_round_trip_and_start_with_the_epoch() {
        for prev in [false, true] {
            let e = entry(prev);
            let json = entry_json(7, "node-1", &e);
            assert!(json.starts_with("{\"epoch\":7,"), "{json}");
            assert_eq!(
                parse_entry(json.as_bytes()),
                Some(Stored {
                    node: "node-1".into(),
                    epoch: 7,
                    entry: e
                })
            );
        }
        assert_eq!(parse_entry(b"{\"epoch\":1}"), None);
        assert_eq!(parse_entry(b"not json"), None);
    }

    #[test]
    fn broadcasts_round_trip_byte_for_byte() {
        let json = r#"{"type":"broadcast","event":"hi","payload":{"x":1}}"#;
        let m = broadcast_message("n1", &Broadcast::Json(json));
        assert_eq!(
            parse_message(&m, "other"),
            Some(Message::Broadcast(RelayedBroadcast::Json(
                Bytes::from_static(json.as_bytes())
            )))
        );
        assert_eq!(parse_message(&m, "n1"), Some(Message::OwnBroadcast));
        let body = [0u8, 10, 13, 255, b'\n'];
        let m = broadcast_message(
            "n2",
            &Broadcast::User {
                event: "ev\n\"x",
                encoding: Encoding::Binary,
                body: &body,
            },
        );
        assert_eq!(
            parse_message(&m, "other"),
            Some(Message::Broadcast(RelayedBroadcast::User {
                event: "ev\n\"x".into(),
                encoding: Encoding::Binary,
                body: Bytes::copy_from_slice(&body),
            }))
        );
        assert_eq!(parse_message(&m, "n2"), Some(Message::OwnBroadcast));
    }

    #[test]
    fn presence_messages_as_the_scripts_write_them() {
        let e = entry(true);
        let stored = entry_json(3, "n1", &e);
        let msg =
            format!("{{\"t\":\"p\",\"seq\":12,\"node\":\"n1\",\"owner\":\"n1:4\"}}\n{stored}");
        assert_eq!(
            parse_message(msg.as_bytes(), "other"),
            Some(Message::Presence {
                seq: 12,
                owner: "n1:4".into(),
                entry: Some(e)
            })
        );
        // The node's own change: its number only, the body not even parsed.
        let own = "{\"t\":\"p\",\"seq\":12,\"node\":\"n1\",\"owner\":\"n1:4\"}\nnot json";
        assert_eq!(
            parse_message(own.as_bytes(), "n1"),
            Some(Message::OwnPresence { seq: 12 })
        );
        // cjson escapes slashes; a leave has an empty body.
        let leave = "{\"t\":\"p\",\"seq\":13,\"node\":\"a\\/b\",\"owner\":\"a\\/b:4\"}\n";
        assert_eq!(
            parse_message(leave.as_bytes(), "other"),
            Some(Message::Presence {
                seq: 13,
                owner: "a/b:4".into(),
                entry: None
            })
        );
        assert_eq!(parse_message(b"garbage", "n1"), None);
    }
}
