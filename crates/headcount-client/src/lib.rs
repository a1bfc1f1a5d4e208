//! A Supabase Realtime client for Rust, with the `RealtimePresence` component's API.
//!
//! It speaks Phoenix Channels as realtime-js does (serializer 2.0.0 by default, 1.0.0 on
//! request; binary broadcasts on 2.0.0), to headcount or to Supabase's hosted Realtime
//! (`wss://` through rustls), and keeps itself connected: heartbeats every 25 s, reconnects
//! with backoff (1, 2, 5, 10 s), rejoins, and re-tracks the latest presence status.
//!
//! * [`RealtimeClient`]: one connection (the component library's `SupabaseApp`); cheap to
//!   clone.
//! * [`Channel`]: a topic: subscribe, statuses, broadcast send and receive, track, leave.
//! * [`Presence`]: the component: a state store (key → presences, with
//!   [`count`](PresenceState::count)), a user-status store, join and leave events,
//!   [`update_status`](Presence::update_status), the error, the channel and the client.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), headcount_client::Error> {
//! use headcount_client::RealtimeClient;
//! use serde_json::json;
//!
//! let client = RealtimeClient::connect("http://127.0.0.1:4000", "<anon key>")?;
//! let presence = client.presence("room").user_status(json!({"status": "online"})).join()?;
//! let mut state = presence.state();
//! while state.changed().await.is_ok() {
//!     println!("{} here", state.borrow().count());
//! }
//! # Ok(()) }
//! ```
//!
//! Memory stays bounded whatever the app does, with [`Capacity`] (set on
//! [`ClientBuilder`]; 1024 each by default):
//! * every [`EventStream`] holds at most [`Capacity::events`] events: a stream read too
//!   slowly (or never) drops its **oldest** events, and its next read reports how many with
//!   [`RecvError::Lagged`] (as tokio's `broadcast` does), then goes on with the newest ones. The
//!   event loop never waits for a reader. The stores (`watch`) always hold the latest state.
//! * the requests of the handles (subscribes, pushes, leaves) wait in a queue of
//!   [`Capacity::requests`]; a call that finds it full fails at once with
//!   [`Error::QueueFull`] and sends nothing, so no handle call blocks or waits for the event
//!   loop. [`set_auth`](RealtimeClient::set_auth) is a store, never refused;
//!   [`disconnect`](RealtimeClient::disconnect) waits for room; a dropped [`Presence`] still
//!   leaves.
//!
//! Modules, in the shape of rumqttc:
//! * [`state`]: the pure core: refs, joins, rejoins, heartbeats, pushes and presence sync
//!   ([`state::sync`], phoenix.js `presence.js` semantics). No I/O, no clock: time is passed
//!   in.
//! * `eventloop`: the task that owns the socket and drives the state.
//! * `client`, `channel`, `presence`: the handles, which send requests to the event loop and
//!   read the stores (`tokio::sync::watch`) and streams ([`EventStream`]) it fills.
//! * [`options`]: channel options and clocks.

mod channel;
mod client;
mod error;
mod eventloop;
pub mod options;
mod presence;
mod shared;
pub mod state;
mod url;

pub use channel::{Channel, Reply};
pub use client::{ClientBuilder, RealtimeClient};
pub use error::Error;
pub use eventloop::ConnectionState;
pub use headcount_protocol::Serializer;
pub use options::{Backoff, Capacity, ChannelOptions, Timing};
pub use presence::{DEFAULT_CHANNEL, Presence, PresenceBuilder};
pub use shared::{EventStream, Lagged, PresenceError, RecvError, TryRecvError};
pub use state::sync::{PresenceEvent, PresenceMeta, PresenceState};
pub use state::{BroadcastMessage, BroadcastPayload, ChannelState, StatusEvent, SubscribeStatus};
