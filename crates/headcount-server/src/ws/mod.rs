//! A small server-side WebSocket (RFC 6455) implementation.
//!
//! headcount owns its WebSocket layer for two reasons: a fan-out frame is encoded **once**,
//! header included, and the same bytes are written to every recipient; and every limit and
//! protocol violation maps to the close code the RFC asks for.
//!
//! * [`frame`]: frame headers, parsed from bytes already in memory, and server frame encoding;
//! * [`reader`]: turns received bytes into messages (unmasking, fragments, control frames,
//!   UTF-8 checks, size limits);
//! * [`handshake`]: the `Sec-WebSocket-Accept` value.

pub mod frame;
pub mod handshake;
pub mod reader;

pub use frame::{Opcode, encode_close, encode_frame};
pub use reader::{InputBudget, Message, WsError, WsReader};

/// Close codes used by headcount (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown, drain).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy violation (for example an outbox overflow).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message above the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// An unexpected condition inside the server.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is overloaded for now (its buffered-input budget is spent).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
