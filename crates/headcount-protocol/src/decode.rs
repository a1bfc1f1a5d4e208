//! Client frames into [`ClientMessage`]s.
//!
//! Decoding borrows from the frame: topic and event are borrowed unless they contain JSON
//! escapes, and the payload is a borrowed [`RawValue`] (or a byte slice for binary user
//! broadcasts), so relaying a payload never copies it into a JSON tree.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::{Encoding, KIND_USER_BROADCAST_PUSH, Ref, Serializer};

/// One Phoenix message, whatever its serializer: what a client sends (a [`ClientMessage`]) and
/// what a server sends (a [`ServerMessage`](crate::client::ServerMessage)) have the same shape.
#[derive(Debug)]
pub struct Message<'a> {
    /// The `join_ref` of the channel the message belongs to (`null` for heartbeats).
    pub join_ref: Ref,
    /// The message's own reference, echoed in the reply.
    pub msg_ref: Ref,
    /// The topic, such as `realtime:room1` or `phoenix`.
    pub topic: Cow<'a, str>,
    /// The event, such as `phx_join`, `broadcast` or `heartbeat`.
    pub event: Cow<'a, str>,
    /// The payload.
    pub payload: Payload<'a>,
}

/// A message from a client.
pub type ClientMessage<'a> = Message<'a>;

/// The payload of a [`Message`].
#[derive(Debug)]
pub enum Payload<'a> {
    /// A JSON value, as it came (text frames).
    Json(&'a RawValue),
    /// A user broadcast pushed as a binary frame of kind 3 (its event is always `broadcast`).
    UserBroadcast(UserBroadcast<'a>),
}

impl Payload<'_> {
    /// The JSON payload, if this is one.
    pub fn as_json(&self) -> Option<&RawValue> {
        match self {
            Payload::Json(raw) => Some(raw),
            Payload::UserBroadcast(_) => None,
        }
    }
}

/// The body of a binary user broadcast (kind 3).
#[derive(Debug, Clone, Copy)]
pub struct UserBroadcast<'a> {
    /// The user's event name (`cursor` in `send({type:'broadcast', event:'cursor', ...})`).
    pub event: &'a str,
    /// The metadata JSON the client attached (Supabase discards it; so does headcount).
    pub metadata: &'a [u8],
    /// How `body` is encoded.
    pub encoding: Encoding,
    /// The user's payload: JSON text (checked to be valid JSON) or opaque bytes.
    pub body: &'a [u8],
}

/// Why a client frame could not be decoded. The server logs it and drops the frame, as
/// Supabase does with Phoenix's `InvalidMessageError`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The text is not the JSON shape the serializer expects.
    #[error("invalid message: {0}")]
    Json(String),
    /// A binary frame on a 1.0.0 socket, which has no binary messages.
    #[error("binary frames are not part of serializer 1.0.0")]
    BinaryOnV1,
    /// A binary frame with no bytes.
    #[error("empty binary frame")]
    EmptyBinary,
    /// A binary frame of a kind clients may not send.
    #[error("unsupported binary frame kind {0}")]
    UnsupportedKind(u8),
    /// A binary frame shorter than its header says.
    #[error("truncated binary frame")]
    Truncated,
    /// A binary frame whose header strings are not UTF-8.
    #[error("binary frame header is not UTF-8")]
    Utf8,
    /// A binary frame with an unknown payload encoding byte.
    #[error("unknown payload encoding {0}")]
    UnknownEncoding(u8),
    /// A binary user broadcast marked JSON whose body is not JSON.
    #[error("user broadcast body is not valid JSON")]
    BodyNotJson,
    /// JSON nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The deepest nesting of arrays and objects accepted in a client message (the message's own
/// array or object counts as one level). Relayed payloads are wrapped in one or two more
/// levels, and must stay parseable by every client's JSON parser.
pub const MAX_DEPTH: usize = 64;

/// Whether the JSON text `bytes` nests arrays and objects deeper than `max` levels. A linear
/// scan that skips strings; it does not validate the JSON.
pub fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes a text frame.
pub fn decode_text(serializer: Serializer, text: &[u8]) -> Result<Message<'_>, DecodeError> {
    if nests_deeper_than(text, MAX_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    match serializer {
        Serializer::V1 => {
            let m: V1Message<'_> =
                serde_json::from_slice(text).map_err(|e| DecodeError::Json(e.to_string()))?;
            Ok(Message {
                join_ref: m.join_ref,
                msg_ref: m.msg_ref,
                topic: m.topic.0,
                event: m.event.0,
                payload: Payload::Json(m.payload),
            })
        }
        Serializer::V2 => {
            let m: V2Message<'_> =
                serde_json::from_slice(text).map_err(|e| DecodeError::Json(e.to_string()))?;
            Ok(m.0)
        }
    }
}

/// Decodes a binary frame. Only kind 3 (user broadcast push) is accepted from clients.
pub fn decode_binary(serializer: Serializer, bin: &[u8]) -> Result<Message<'_>, DecodeError> {
    if serializer == Serializer::V1 {
        return Err(DecodeError::BinaryOnV1);
    }
    let (&kind, rest) = bin.split_first().ok_or(DecodeError::EmptyBinary)?;
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(DecodeError::UnsupportedKind(kind));
    }
    // 3, jrLen, refLen, topicLen, userEventLen, metaLen, enc, joinRef, ref, topic, userEvent,
    // metadata, userPayload
    let header = rest.get(..6).ok_or(DecodeError::Truncated)?;
    let lens = [header[0], header[1], header[2], header[3], header[4]].map(usize::from);
    let encoding = match header[5] {
        0 => Encoding::Binary,
        1 => Encoding::Json,
        other => return Err(DecodeError::UnknownEncoding(other)),
    };
    let (fields, body) = split_fields(&rest[6..], lens)?;
    fn text(b: &[u8]) -> Result<&str, DecodeError> {
        std::str::from_utf8(b).map_err(|_| DecodeError::Utf8)
    }
    let as_ref = |b: &[u8]| -> Result<Ref, DecodeError> {
        Ok(if b.is_empty() {
            Ref::Null
        } else {
            Ref::str(text(b)?)
        })
    };
    if encoding == Encoding::Json {
        check_json_body(body)?;
    }
    Ok(Message {
        join_ref: as_ref(fields[0])?,
        msg_ref: as_ref(fields[1])?,
        topic: Cow::Borrowed(text(fields[2])?),
        event: Cow::Borrowed("broadcast"),
        payload: Payload::UserBroadcast(UserBroadcast {
            event: text(fields[3])?,
            metadata: fields[4],
            encoding,
            body,
        }),
    })
}

/// Splits the length-prefixed fields of a binary frame: `N` fields of the given lengths, then the
/// rest (the body).
pub(crate) fn split_fields<const N: usize>(
    mut cursor: &[u8],
    lens: [usize; N],
) -> Result<([&[u8]; N], &[u8]), DecodeError> {
    let mut fields: [&[u8]; N] = [&[]; N];
    for (field, len) in fields.iter_mut().zip(lens) {
        if cursor.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = cursor.split_at(len);
        *field = head;
        cursor = tail;
    }
    Ok((fields, cursor))
}

/// Checks the body of a JSON-encoded binary broadcast: UTF-8 (serde_json does not look inside
/// the strings it skips, and the body is relayed verbatim inside text frames), JSON, and not
/// nested too deep.
pub(crate) fn check_json_body(body: &[u8]) -> Result<(), DecodeError> {
    if nests_deeper_than(body, MAX_DEPTH - 1) {
        return Err(DecodeError::TooDeep);
    }
    if std::str::from_utf8(body).is_err() || serde_json::from_slice::<IgnoredAny>(body).is_err() {
        return Err(DecodeError::BodyNotJson);
    }
    Ok(())
}

/// A string that borrows from the input when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct V1Message<'a> {
    #[serde(borrow)]
    topic: Text<'a>,
    #[serde(borrow)]
    event: Text<'a>,
    #[serde(borrow)]
    payload: &'a RawValue,
    /// Required by Phoenix (the value may be null).
    #[serde(rename = "ref")]
    msg_ref: Ref,
    #[serde(default)]
    join_ref: Ref,
}

/// `[join_ref, ref, topic, event, payload, ...]`: at least five elements; extra ones are
/// ignored, as Supabase's decoder does.
struct V2Message<'a>(Message<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for V2Message<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArrayVisitor;

        impl<'de> Visitor<'de> for ArrayVisitor {
            type Value = V2Message<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array [join_ref, ref, topic, event, payload]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let short = |n| de::Error::invalid_length(n, &"at least 5 elements");
                let join_ref: Ref = seq.next_element()?.ok_or_else(|| short(0))?;
                let msg_ref: Ref = seq.next_element()?.ok_or_else(|| short(1))?;
                let topic: Text<'de> = seq.next_element()?.ok_or_else(|| short(2))?;
                let event: Text<'de> = seq.next_element()?.ok_or_else(|| short(3))?;
                let payload: &'de RawValue = seq.next_element()?.ok_or_else(|| short(4))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(V2Message(Message {
                    join_ref,
                    msg_ref,
                    topic: topic.0,
                    event: event.0,
                    payload: Payload::Json(payload),
                }))
            }
        }

        deserializer.deserialize_seq(ArrayVisitor)
    }
}
