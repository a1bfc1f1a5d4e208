//! Server frames.
//!
//! Every encoder appends one frame's bytes to a caller's buffer and returns whether the frame is
//! text or binary. The caller decides where the bytes go: the server reserves room for the
//! WebSocket header in front, encodes a fan-out frame once, and shares it with every recipient.
//!
//! 1.0.0 frames are objects with `topic`, `event`, `payload` and `ref` (never `join_ref`);
//! 2.0.0 frames are arrays `[join_ref, ref, topic, event, payload]`.

use crate::{Encoding, KIND_USER_BROADCAST, Ref, Serializer};

/// Whether an encoded frame goes out as a WebSocket text or binary message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// UTF-8 JSON.
    Text,
    /// A binary user broadcast (kind 4).
    Binary,
}

/// The status of a `phx_reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `"ok"`.
    Ok,
    /// `"error"`.
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn frame(
    out: &mut Vec<u8>,
    serializer: Serializer,
    join_ref: &Ref,
    msg_ref: &Ref,
    topic: &str,
    event: &str,
    payload: impl FnOnce(&mut Vec<u8>),
) -> FrameKind {
    match serializer {
        Serializer::V1 => {
            out.extend_from_slice(b"{\"topic\":");
            write_json_str(out, topic);
            out.extend_from_slice(b",\"event\":");
            write_json_str(out, event);
            out.extend_from_slice(b",\"payload\":");
            payload(out);
            out.extend_from_slice(b",\"ref\":");
            msg_ref.write_json(out);
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
            payload(out);
            out.push(b']');
        }
    }
    FrameKind::Text
}

/// A `phx_reply` to the message `msg_ref`: `{"status": status, "response": response}`.
/// `response` must be JSON text.
pub fn reply(
    out: &mut Vec<u8>,
    serializer: Serializer,
    join_ref: &Ref,
    msg_ref: &Ref,
    topic: &str,
    status: Status,
    response: &str,
) -> FrameKind {
    frame(
        out,
        serializer,
        join_ref,
        msg_ref,
        topic,
        "phx_reply",
        |out| {
            out.extend_from_slice(b"{\"status\":\"");
            out.extend_from_slice(status.as_str().as_bytes());
            out.extend_from_slice(b"\",\"response\":");
            out.extend_from_slice(response.as_bytes());
            out.push(b'}');
        },
    )
}

/// A push from a channel to its member, such as `presence_state` or `system`: the member's
/// `join_ref` and a null `ref`. `payload` must be JSON text.
pub fn push(
    out: &mut Vec<u8>,
    serializer: Serializer,
    join_ref: &Ref,
    topic: &str,
    event: &str,
    payload: &str,
) -> FrameKind {
    frame(out, serializer, join_ref, &Ref::Null, topic, event, |out| {
        out.extend_from_slice(payload.as_bytes())
    })
}

/// A broadcast to every member of a topic (`broadcast`, `presence_diff`): both refs null, so the
/// same bytes serve every recipient of one serializer. `payload` must be JSON text.
pub fn broadcast(
    out: &mut Vec<u8>,
    serializer: Serializer,
    topic: &str,
    event: &str,
    payload: &str,
) -> FrameKind {
    push(out, serializer, &Ref::Null, topic, event, payload)
}

/// `phx_close` for the channel joined with `join_ref` (its `ref` is the `join_ref` too).
pub fn close(out: &mut Vec<u8>, serializer: Serializer, join_ref: &Ref, topic: &str) -> FrameKind {
    frame(
        out,
        serializer,
        join_ref,
        join_ref,
        topic,
        "phx_close",
        |out| out.extend_from_slice(b"{}"),
    )
}

/// A user broadcast that came from a binary push (kind 3).
///
/// * 2.0.0: a binary frame of kind 4 with empty metadata, or, when the topic or event is too
///   long for the one-byte lengths, the equivalent JSON text broadcast;
/// * 1.0.0: a JSON `broadcast` whose payload is `{"event", "payload", "type":"broadcast"}`.
///
/// Returns `None` when the recipient cannot receive it: an opaque binary body has no JSON form.
/// A JSON body must be valid JSON text (the decoder checks it).
pub fn user_broadcast(
    out: &mut Vec<u8>,
    serializer: Serializer,
    topic: &str,
    user_event: &str,
    encoding: Encoding,
    body: &[u8],
) -> Option<FrameKind> {
    let fits = topic.len() <= 255 && user_event.len() <= 255;
    if serializer == Serializer::V2 && fits {
        out.reserve(5 + topic.len() + user_event.len() + body.len());
        out.extend_from_slice(&[
            KIND_USER_BROADCAST,
            topic.len() as u8,
            user_event.len() as u8,
            0,
            encoding.byte(),
        ]);
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(user_event.as_bytes());
        out.extend_from_slice(body);
        return Some(FrameKind::Binary);
    }
    if encoding == Encoding::Binary {
        return None;
    }
    Some(frame(
        out,
        serializer,
        &Ref::Null,
        &Ref::Null,
        topic,
        "broadcast",
        |out| {
            out.extend_from_slice(b"{\"event\":");
            write_json_str(out, user_event);
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(body);
            out.extend_from_slice(b",\"type\":\"broadcast\"}");
        },
    ))
}
