//! Building complete WebSocket frames from protocol encoders.

use bytes::Bytes;
use headcount_cluster::Broadcast;
use headcount_protocol::{FrameKind, Serializer, encode};

use crate::ws::Opcode;
use crate::ws::frame::FrameBuilder;

/// Runs a protocol encoder into a fresh frame and finishes it with the right opcode.
pub fn build(size_hint: usize, encode: impl FnOnce(&mut Vec<u8>) -> FrameKind) -> Bytes {
    let mut b = FrameBuilder::with_capacity(size_hint);
    let kind = encode(b.payload());
    b.finish(match kind {
        FrameKind::Text => Opcode::Text,
        FrameKind::Binary => Opcode::Binary,
    })
}

/// Like [`build`], for encoders that may have nothing to send.
pub fn try_build(
    size_hint: usize,
    encode: impl FnOnce(&mut Vec<u8>) -> Option<FrameKind>,
) -> Option<Bytes> {
    let mut b = FrameBuilder::with_capacity(size_hint);
    let kind = encode(b.payload())?;
    Some(b.finish(match kind {
        FrameKind::Text => Opcode::Text,
        FrameKind::Binary => Opcode::Binary,
    }))
}

/// The frame that fans `msg` out on `topic` to members of one serializer; `None` when that
/// serializer cannot carry it.
pub fn broadcast(msg: &Broadcast<'_>, serializer: Serializer, topic: &str) -> Option<Bytes> {
    let hint = msg.size() + topic.len() + 64;
    match *msg {
        Broadcast::Json(payload) => Some(build(hint, |out| {
            encode::broadcast(out, serializer, topic, "broadcast", payload)
        })),
        Broadcast::User {
            event,
            encoding,
            body,
        } => try_build(hint, |out| {
            encode::user_broadcast(out, serializer, topic, event, encoding, body)
        }),
    }
}
