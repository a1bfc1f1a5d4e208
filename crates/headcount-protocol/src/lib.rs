//! The Supabase Realtime wire protocol, as pure data: no sockets, no clock, no tokio.
//!
//! Supabase Realtime speaks Phoenix Channels over WebSocket with two serializers, picked by the
//! `vsn` query parameter:
//!
//! * `1.0.0`: text frames holding a JSON object `{topic, event, payload, ref, join_ref}`;
//! * `2.0.0`: text frames holding a JSON array `[join_ref, ref, topic, event, payload]`, plus
//!   binary frames for user broadcasts (kind 3 from client to server, kind 4 from server to
//!   client).
//!
//! Modules:
//! * [`refs`]: [`Ref`], the opaque message references (strings or numbers, echoed verbatim);
//! * [`decode`]: client frames into [`ClientMessage`];
//! * [`encode`]: server frames (replies, pushes, broadcasts, closes, user broadcasts), written
//!   straight into a byte buffer so a frame can be encoded once and shared by every recipient;
//! * [`client`]: the other direction, for SDKs: server frames in, client frames out.
//!
//! Payloads are carried as raw JSON ([`serde_json::value::RawValue`]) or raw bytes: a payload
//! that the server only relays is never parsed into a tree and re-serialized.

pub mod client;
pub mod decode;
pub mod encode;
pub mod payloads;
pub mod refs;

pub use client::{ServerMessage, decode_server_binary, decode_server_text};
pub use decode::{ClientMessage, DecodeError, Payload, UserBroadcast, decode_binary, decode_text};
pub use encode::FrameKind;
pub use refs::Ref;

/// The wire format of one socket, chosen at connect time by the `vsn` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Serializer {
    /// `vsn=1.0.0` (also the default when `vsn` is missing): JSON objects in text frames.
    V1,
    /// `vsn=2.0.0`: JSON arrays in text frames, user broadcasts in binary frames.
    V2,
}

impl Serializer {
    /// Picks the serializer for a `vsn` query value, as Phoenix does: a missing value means
    /// 1.0.0, and a version matches `~> 1.0.0` or `~> 2.0.0` (same major and minor, any patch).
    /// Anything else is `None`, which the server answers with HTTP 403.
    pub fn from_vsn(vsn: Option<&str>) -> Option<Serializer> {
        let Some(vsn) = vsn else {
            return Some(Serializer::V1);
        };
        let mut parts = vsn.split('.');
        let (major, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        match (major, minor) {
            ("1", "0") => Some(Serializer::V1),
            ("2", "0") => Some(Serializer::V2),
            _ => None,
        }
    }

    /// The canonical `vsn` string of this serializer.
    pub fn vsn(self) -> &'static str {
        match self {
            Serializer::V1 => "1.0.0",
            Serializer::V2 => "2.0.0",
        }
    }
}

/// How the body of a binary user broadcast is encoded (the `enc` byte of kinds 3 and 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `0`: opaque bytes (an `ArrayBuffer` in realtime-js). Cannot be delivered to 1.0.0 clients.
    Binary,
    /// `1`: UTF-8 JSON text.
    Json,
}

impl Encoding {
    /// The byte that stands for this encoding on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Encoding::Binary => 0,
            Encoding::Json => 1,
        }
    }
}

/// Binary frame kind of a user broadcast pushed by a client (`channel.send()` in realtime-js
/// with serializer 2.0.0).
pub const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Binary frame kind of a user broadcast delivered by the server.
pub const KIND_USER_BROADCAST: u8 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsn_negotiation_follows_phoenix() {
        assert_eq!(Serializer::from_vsn(None), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("1.0.0")), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("1.0.7")), Some(Serializer::V1));
        assert_eq!(Serializer::from_vsn(Some("2.0.0")), Some(Serializer::V2));
        assert_eq!(Serializer::from_vsn(Some("2.1.0")), None);
        assert_eq!(Serializer::from_vsn(Some("3.0.0")), None);
        assert_eq!(Serializer::from_vsn(Some("2.0")), None);
        assert_eq!(Serializer::from_vsn(Some("")), None);
        assert_eq!(Serializer::from_vsn(Some("2.0.0.0")), None);
        assert_eq!(Serializer::from_vsn(Some("2.0.x")), None);
    }
}
