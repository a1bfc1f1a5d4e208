//! The client side of the wire: server frames into [`ServerMessage`]s, client frames out.
//!
//! This is the mirror of [`decode`](crate::decode) and [`encode`](crate::encode), for SDKs:
//!
//! * [`decode_server_text`] reads a server text frame: a 1.0.0 object
//!   `{"topic","event","payload","ref"}` (a `join_ref` key is accepted but servers never send
//!   one) or a 2.0.0 array `[join_ref, ref, topic, event, payload]`;
//! * [`decode_server_binary`] reads a binary user broadcast of kind 4
//!   (`4, topicLen, eventLen, metaLen, enc, topic, event, meta, body`); no other kind exists from
//!   server to client;
//! * [`push`] writes a client message in either serializer (a 1.0.0 object in phoenix.js key
//!   order, with `join_ref` left out when it is null, as heartbeats are sent);
//! * [`user_broadcast_push`] writes a binary user broadcast of kind 3
//!   (`3, jrLen, refLen, topicLen, eventLen, metaLen, enc, jr, ref, topic, event, meta, body`),
//!   which is what realtime-js sends for every `channel.send({type:'broadcast'})` with 2.0.0.
//!
//! The payload of a decoded message is the same [`Payload`] the server side uses: raw JSON, or a
//! [`UserBroadcast`] for binary frames.
//!
//! ```
//! use headcount_protocol::client::{decode_server_text, push};
//! use headcount_protocol::{Ref, Serializer};
//!
//! let mut out = Vec::new();
//! push(&mut out, Serializer::V2, &Ref::Null, &Ref::str("5"), "phoenix", "heartbeat", "{}");
//! assert_eq!(out, br#"[null,"5","phoenix","heartbeat",{}]"#);
//!
//! let reply = br#"[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]"#;
//! let m = decode_server_text(Serializer::V2, reply).unwrap();
//! assert_eq!((m.msg_ref, &*m.event), (Ref::str("5"), "phx_reply"));
//! ```

use std::borrow::Cow;

use crate::decode::{Message, check_json_body, decode_text, split_fields};
use crate::encode::write_json_str;
use crate::{
    DecodeError, Encoding, FrameKind, KIND_USER_BROADCAST, KIND_USER_BROADCAST_PUSH, Payload, Ref,
    Serializer, UserBroadcast,
};

/// One message from a server, whatever its serializer. Replies and channel pushes carry the
/// channel's `join_ref` in 2.0.0; broadcasts have null refs; 1.0.0 never sends a `join_ref`.
/// The payload is JSON for text frames and a [`UserBroadcast`] for binary frames (whose event is
/// always `broadcast`).
pub type ServerMessage<'a> = Message<'a>;

/// Decodes a server text frame.
///
/// ```
/// use headcount_protocol::client::decode_server_text;
/// use headcount_protocol::{Ref, Serializer};
///
/// let frame = br#"{"topic":"realtime:room1","event":"phx_close","payload":{},"ref":"3"}"#;
/// let m = decode_server_text(Serializer::V1, frame).unwrap();
/// assert_eq!(m.join_ref, Ref::Null);
/// assert_eq!(m.msg_ref, Ref::str("3"));
/// assert_eq!(m.payload.as_json().unwrap().get(), "{}");
/// ```
pub fn decode_server_text(
    serializer: Serializer,
    text: &[u8],
) -> Result<ServerMessage<'_>, DecodeError> {
    // Server and client messages have the same shape; servers always send `ref`.
    decode_text(serializer, text)
}

/// Decodes a server binary frame. Only kind 4 (user broadcast) exists from server to client;
/// its metadata is JSON text, possibly empty.
///
/// ```
/// use headcount_protocol::client::decode_server_binary;
/// use headcount_protocol::{Encoding, Payload, Serializer};
///
/// let mut frame = vec![4, 5, 4, 0, 1];
/// frame.extend_from_slice(b"topicpingnull");
/// let m = decode_server_binary(Serializer::V2, &frame).unwrap();
/// let Payload::UserBroadcast(b) = m.payload else { unreachable!() };
/// assert_eq!((&*m.topic, b.event, b.encoding, b.body), ("topic", "ping", Encoding::Json, &b"null"[..]));
/// ```
pub fn decode_server_binary(
    serializer: Serializer,
    bin: &[u8],
) -> Result<ServerMessage<'_>, DecodeError> {
    if serializer == Serializer::V1 {
        return Err(DecodeError::BinaryOnV1);
    }
    let (&kind, rest) = bin.split_first().ok_or(DecodeError::EmptyBinary)?;
    if kind != KIND_USER_BROADCAST {
        return Err(DecodeError::UnsupportedKind(kind));
    }
    let header = rest.get(..4).ok_or(DecodeError::Truncated)?;
    let lens = [header[0], header[1], header[2]].map(usize::from);
    let encoding = match header[3] {
        0 => Encoding::Binary,
        1 => Encoding::Json,
        other => return Err(DecodeError::UnknownEncoding(other)),
    };
    let (fields, body) = split_fields(&rest[4..], lens)?;
    let text = |b| std::str::from_utf8(b).map_err(|_| DecodeError::Utf8);
    if encoding == Encoding::Json {
        check_json_body(body)?;
    }
    Ok(Message {
        join_ref: Ref::Null,
        msg_ref: Ref::Null,
        topic: Cow::Borrowed(text(fields[0])?),
        event: Cow::Borrowed("broadcast"),
        payload: Payload::UserBroadcast(UserBroadcast {
            event: text(fields[1])?,
            metadata: fields[2],
            encoding,
            body,
        }),
    })
}

/// Appends a client message: a 2.0.0 array `[join_ref, ref, topic, event, payload]`, or a 1.0.0
/// object `{"topic","event","payload","ref","join_ref"}` whose `join_ref` key is left out when
/// the join_ref is null (phoenix.js sends heartbeats that way). `payload` must be JSON text.
///
/// ```
/// use headcount_protocol::client::push;
/// use headcount_protocol::{Ref, Serializer};
///
/// let mut out = Vec::new();
/// push(&mut out, Serializer::V1, &Ref::str("3"), &Ref::str("4"), "realtime:room1", "phx_leave", "{}");
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     r#"{"topic":"realtime:room1","event":"phx_leave","payload":{},"ref":"4","join_ref":"3"}"#
/// );
/// ```
pub fn push(
    out: &mut Vec<u8>,
    serializer: Serializer,
    join_ref: &Ref,
    msg_ref: &Ref,
    topic: &str,
    event: &str,
    payload: &str,
) -> FrameKind {
    match serializer {
        Serializer::V1 => {
            out.extend_from_slice(b"{\"topic\":");
            write_json_str(out, topic);
            out.extend_from_slice(b",\"event\":");
            write_json_str(out, event);
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(payload.as_bytes());
            out.extend_from_slice(b",\"ref\":");
            msg_ref.write_json(out);
            if !join_ref.is_null() {
                out.extend_from_slice(b",\"join_ref\":");
                join_ref.write_json(out);
            }
            out.push(b'}');
        }
        Serializer::V2 => {
            out.push(b'[');
            join_ref.write_json(out);
            out.push(b',');
            msg_ref.write_json(out);
            out.push(b',');
            write_json_str(out, topic);
            out.push(b',');
            write_json_str(out, event);
            out.push(b',');
            out.extend_from_slice(payload.as_bytes());
            out.push(b']');
        }
    }
    FrameKind::Text
}

/// Appends a binary user broadcast push (kind 3, serializer 2.0.0 only) with empty metadata, as
/// realtime-js sends it. The refs are written as their text (`null` as an empty string).
///
/// Returns `None`, writing nothing, when a header field does not fit its one-byte length (a
/// topic, event or ref longer than 255 bytes); the caller then sends the JSON text form
/// `{"type":"broadcast","event":...,"payload":...}` instead, which only works for JSON bodies.
///
/// ```
/// use headcount_protocol::client::user_broadcast_push;
/// use headcount_protocol::{Encoding, Ref};
///
/// let mut out = Vec::new();
/// user_broadcast_push(&mut out, &Ref::str("3"), &Ref::str("7"), "t", "e", Encoding::Json, b"{}");
/// assert_eq!(out, [&[3u8, 1, 1, 1, 1, 0, 1][..], b"37te{}"].concat());
/// ```
pub fn user_broadcast_push(
    out: &mut Vec<u8>,
    join_ref: &Ref,
    msg_ref: &Ref,
    topic: &str,
    user_event: &str,
    encoding: Encoding,
    body: &[u8],
) -> Option<FrameKind> {
    fn ref_text(r: &Ref) -> &str {
        match r {
            Ref::Null => "",
            Ref::Str(s) | Ref::Num(s) => s,
        }
    }
    let (jr, mr) = (ref_text(join_ref), ref_text(msg_ref));
    let fields = [jr, mr, topic, user_event];
    if fields.iter().any(|f| f.len() > 255) {
        return None;
    }
    out.reserve(7 + fields.iter().map(|f| f.len()).sum::<usize>() + body.len());
    out.push(KIND_USER_BROADCAST_PUSH);
    out.extend(fields.iter().map(|f| f.len() as u8));
    out.extend_from_slice(&[0, encoding.byte()]);
    for field in fields {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(body);
    Some(FrameKind::Binary)
}
