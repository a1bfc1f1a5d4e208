//! Presence state of one channel, as pure data: no tokio, no clock reads (time is passed in).
//!
//! A channel's presence maps **keys** (a user id, or a UUID the server picked) to **metas**: one
//! meta per member that tracked itself under that key, holding the member's JSON payload and a
//! unique `phx_ref`. Every change returns the [`Diff`] that tells subscribers what changed, in
//! the shape Phoenix's `presence_diff` uses, so nothing ever recomputes a diff from two states.
//!
//! Modules:
//! * [`refs`]: [`PhxRef`], the 16-character unique reference of a meta, and its generator;
//! * [`payload`]: [`Payload`], a canonical JSON object (what a member tracked);
//! * [`state`]: [`ChannelPresence`], the state with track / update / untrack;
//! * [`diff`]: [`Diff`], its JSON form, and [`Diff::merge`] for coalescing;
//! * [`view`]: [`PresenceView`], the state subscribers have been told (for coalesced diffs);
//! * [`room`]: [`Room`], a channel's presence with what its members were told and the
//!   coalescing schedule, time passed in.

pub mod diff;
pub mod payload;
pub mod refs;
pub mod room;
pub mod state;
pub mod view;

pub use diff::Diff;
pub use payload::{NotAnObject, Payload};
pub use refs::{PhxRef, RefGenerator};
pub use room::{Change, Coalesce, Flush, Room};
pub use state::{ChannelPresence, Meta};
pub use view::PresenceView;
