//! What a `phx_join` payload asks for: the protocol crate's [`JoinConfig`], which the SDK
//! writes with.

pub use headcount_protocol::payloads::JoinConfig as JoinOptions;
