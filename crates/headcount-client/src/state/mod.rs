//! The pure core of the client: no socket, no clock, no tokio.
//!
//! [`ClientState`] is what phoenix.js's `Socket`, `Channel`, `Push` and `Presence` keep, as one
//! deterministic state machine. Its inputs are `handle_*` methods and requests
//! ([`subscribe`](ClientState::subscribe), [`push`](ClientState::push),
//! [`leave`](ClientState::leave), [`set_auth`](ClientState::set_auth)), each given the current
//! time; its outputs are polled: frames to write ([`poll_transmit`](ClientState::poll_transmit)),
//! things to report ([`poll_output`](ClientState::poll_output)) and the next instant it must be
//! woken at ([`poll_timeout`](ClientState::poll_timeout)).
//!
//! It keeps:
//! * message refs: one counter per client, decimal strings, never reused (a join's ref is the
//!   channel's `join_ref` until the next join);
//! * the replies it waits for, by ref, each with a deadline;
//! * the heartbeat: one in flight at most; one still unanswered when the next is due means the
//!   connection is dead;
//! * per channel: its lifecycle ([`ChannelState`]), the pushes waiting for the join (100 at
//!   most), the rejoin schedule, the presence view ([`sync::PresenceSync`]) and the status a
//!   [`Presence`](crate::Presence) re-tracks after every join.
//!
//! Messages that carry a `join_ref` other than the channel's current one are dropped, as
//! phoenix.js does.
//!
//! ```
//! use std::time::Instant;
//! use headcount_client::state::{ClientState, Output, OutFrame};
//! use headcount_client::{ChannelOptions, Serializer, SubscribeStatus, Timing};
//!
//! let now = Instant::now();
//! let mut state = ClientState::new(Serializer::V2, Timing::default(), Some("jwt".into()));
//! state.handle_open(now);
//! state.subscribe("realtime:room", ChannelOptions::default(), now);
//! let join = state.poll_transmit().unwrap();
//! assert!(join.as_text().unwrap().starts_with(r#"["1","1","realtime:room","phx_join","#));
//!
//! state.handle_text(br#"["1","1","realtime:room","phx_reply",{"status":"ok","response":{}}]"#, now);
//! let subscribed = std::iter::from_fn(|| state.poll_output()).any(|o| matches!(
//!     o,
//!     Output::Status { event, .. } if event.status == SubscribeStatus::Subscribed
//! ));
//! assert!(subscribed);
//! ```

mod channel;
mod replies;
pub mod sync;
mod types;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use headcount_protocol::client::{decode_server_binary, decode_server_text, push};
use headcount_protocol::{Ref, Serializer, ServerMessage};
use tracing::debug;

use crate::error::Error;
use crate::options::{ChannelOptions, Timing};
use channel::ChannelEntry;
use replies::{Pending, json_value};

pub use types::{
    BroadcastMessage, BroadcastPayload, ChannelState, Command, OutFrame, Output, PushId,
    StatusEvent, SubscribeStatus,
};

/// The most pushes a channel keeps while it is not joined (phoenix.js keeps as many).
pub const PUSH_BUFFER_LIMIT: usize = 100;

/// The protocol state of one client: its socket and channels. See the [module](self) docs.
///
/// ```
/// use std::time::{Duration, Instant};
/// use headcount_client::state::{ClientState, Output};
/// use headcount_client::{Serializer, Timing};
///
/// let start = Instant::now();
/// let mut state = ClientState::new(Serializer::V1, Timing::default(), None);
/// state.handle_open(start);
/// // A heartbeat is due 25 s after the connection opened...
/// assert_eq!(state.poll_timeout(), Some(start + Duration::from_secs(25)));
/// state.handle_timeout(start + Duration::from_secs(25));
/// let heartbeat = state.poll_transmit().unwrap();
/// assert_eq!(heartbeat.as_text(), Some(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#));
/// // ...and one still unanswered when the next is due ends the connection.
/// state.handle_timeout(start + Duration::from_secs(50));
/// assert_eq!(state.poll_output(), Some(Output::Disconnect { reason: "heartbeat timeout".into() }));
/// ```
#[derive(Debug)]
pub struct ClientState {
    serializer: Serializer,
    timing: Timing,
    /// The token joins carry and `access_token` pushes refresh.
    access_token: Option<String>,
    last_ref: u64,
    connected: bool,
    /// The ref of the heartbeat in flight.
    heartbeat_ref: Option<String>,
    /// When the next heartbeat is due (and the one in flight, if any, has timed out).
    heartbeat_at: Option<Instant>,
    /// Channels by topic.
    channels: BTreeMap<String, ChannelEntry>,
    /// Replies waited for, by ref.
    replies: HashMap<String, Pending>,
    transmits: VecDeque<OutFrame>,
    outputs: VecDeque<Output>,
}

impl ClientState {
    /// A client that speaks `serializer`, on these clocks, joining with `access_token` (the
    /// apikey, or a user's JWT).
    pub fn new(
        serializer: Serializer,
        timing: Timing,
        access_token: Option<String>,
    ) -> ClientState {
        ClientState {
            serializer,
            timing,
            access_token,
            last_ref: 0,
            connected: false,
            heartbeat_ref: None,
            heartbeat_at: None,
            channels: BTreeMap::new(),
            replies: HashMap::new(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The serializer.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// The clocks.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The token joins carry.
    pub fn access_token(&self) -> Option<&str> {
        self.access_token.as_deref()
    }

    /// The lifecycle state of the channel `topic` ([`ChannelState::Closed`] if unknown).
    pub fn channel_state(&self, topic: &str) -> ChannelState {
        self.channels
            .get(topic)
            .map_or(ChannelState::Closed, |c| c.state)
    }

    /// The current `join_ref` of the channel `topic`, if a join was sent.
    pub fn join_ref(&self, topic: &str) -> Option<&str> {
        self.channels.get(topic)?.join_ref.as_deref()
    }

    /// The presence view of the channel `topic`.
    pub fn presence(&self, topic: &str) -> Option<&sync::PresenceSync> {
        self.channels.get(topic).map(|c| &c.presence)
    }

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        self.transmits.pop_front()
    }

    /// The next thing to report.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let replies = self.replies.values().filter_map(|p| match p {
            Pending::Join { .. } => None,
            Pending::Leave { deadline, .. } | Pending::Push { deadline, .. } => Some(*deadline),
        });
        let channels = self
            .channels
            .values()
            .filter_map(ChannelEntry::next_deadline);
        self.heartbeat_at
            .into_iter()
            .chain(replies)
            .chain(channels)
            .min()
    }

    fn make_ref(&mut self) -> String {
        self.last_ref += 1;
        self.last_ref.to_string()
    }

    fn output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn done(&mut self, id: Option<PushId>, result: Result<(), Error>) {
        if let Some(id) = id {
            self.output(Output::Done { id, result });
        }
    }

    /// Encodes and queues a text message.
    fn send_text(
        &mut self,
        join_ref: Option<&str>,
        msg_ref: &str,
        topic: &str,
        event: &str,
        payload: &str,
    ) {
        let join_ref = join_ref.map_or(Ref::Null, Ref::str);
        let mut out = Vec::with_capacity(payload.len() + topic.len() + event.len() + 32);
        let kind = push(
            &mut out,
            self.serializer,
            &join_ref,
            &Ref::str(msg_ref),
            topic,
            event,
            payload,
        );
        self.transmits.push_back(OutFrame::from_bytes(kind, out));
    }

    /// A connection opened: heartbeats start, joins waiting for a connection go out, and
    /// errored channels rejoin at once.
    pub fn handle_open(&mut self, now: Instant) {
        self.connected = true;
        self.heartbeat_ref = None;
        self.heartbeat_at = Some(now + self.timing.heartbeat_interval);
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            self.on_open_channel(&topic, now);
        }
    }

    /// The connection closed (or failed): replies in flight fail, leaves in flight complete,
    /// and joined or joining channels become errored, to rejoin on the next open.
    pub fn handle_close(&mut self, _now: Instant) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.heartbeat_ref = None;
        self.heartbeat_at = None;
        let mut pending: Vec<(String, Pending)> = self.replies.drain().collect();
        pending.sort_by_key(|(r, _)| r.parse::<u64>().unwrap_or(u64::MAX));
        for (_, p) in pending {
            match p {
                Pending::Join { .. } => {}
                Pending::Leave {
                    topic,
                    join_ref,
                    id,
                    ..
                } => {
                    self.finish_leave(&topic, &join_ref, id);
                }
                Pending::Push { id, .. } => self.done(id, Err(Error::Disconnected)),
            }
        }
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            self.on_close_channel(&topic);
        }
    }

    /// Handles a text frame from the server. Frames that do not decode are logged and dropped.
    pub fn handle_text(&mut self, text: &[u8], now: Instant) {
        match decode_server_text(self.serializer, text) {
            Ok(m) => self.handle_message(m, now),
            Err(e) => debug!(error = %e, "dropped an undecodable text frame"),
        }
    }

    /// Handles a binary frame from the server (a kind-4 user broadcast).
    pub fn handle_binary(&mut self, bin: &[u8], now: Instant) {
        match decode_server_binary(self.serializer, bin) {
            Ok(m) => self.handle_message(m, now),
            Err(e) => debug!(error = %e, "dropped an undecodable binary frame"),
        }
    }

    fn handle_message(&mut self, m: ServerMessage<'_>, now: Instant) {
        if m.event == "phx_reply" {
            let value = json_value(&m.payload);
            self.handle_reply(&m.topic, &m.join_ref, &m.msg_ref, value, now);
            return;
        }
        let Some(channel) = self.channels.get(&*m.topic) else {
            debug!(topic = %m.topic, event = %m.event, "dropped a message for an unknown channel");
            return;
        };
        if let Ref::Str(jr) | Ref::Num(jr) = &m.join_ref
            && channel.join_ref.as_deref() != Some(&**jr)
        {
            debug!(topic = %m.topic, event = %m.event, "dropped an outdated message");
            return;
        }
        let topic = m.topic.into_owned();
        match &*m.event {
            "phx_close" => self.on_server_close(&topic),
            "phx_error" => self.on_server_error(&topic, now),
            "system" => self.on_system(&topic, m.payload.as_json().map_or("", |raw| raw.get())),
            "presence_state" => self.on_presence_state(&topic, json_value(&m.payload)),
            "presence_diff" => self.on_presence_diff(&topic, json_value(&m.payload)),
            "broadcast" => self.on_broadcast(&topic, m.payload),
            other => debug!(topic, event = other, "ignored an event"),
        }
    }

    /// Time passed: heartbeats, join and push timeouts, rejoins.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connected
            && let Some(at) = self.heartbeat_at
            && at <= now
        {
            if self.heartbeat_ref.is_some() {
                self.heartbeat_at = None;
                self.output(Output::Disconnect {
                    reason: "heartbeat timeout".into(),
                });
            } else {
                let r = self.make_ref();
                self.send_text(None, &r, "phoenix", "heartbeat", "{}");
                self.heartbeat_ref = Some(r);
                self.heartbeat_at = Some(now + self.timing.heartbeat_interval);
            }
        }
        let mut expired: Vec<String> = self
            .replies
            .iter()
            .filter(|(_, p)| match p {
                Pending::Join { .. } => false,
                Pending::Leave { deadline, .. } | Pending::Push { deadline, .. } => {
                    *deadline <= now
                }
            })
            .map(|(r, _)| r.clone())
            .collect();
        expired.sort_by_key(|r| r.parse::<u64>().unwrap_or(u64::MAX));
        for r in expired {
            match self.replies.remove(&r) {
                Some(Pending::Leave {
                    topic,
                    join_ref,
                    id,
                    ..
                }) => self.finish_leave(&topic, &join_ref, id),
                Some(Pending::Push { id, .. }) => self.done(id, Err(Error::Timeout)),
                _ => {}
            }
        }
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            self.on_channel_timeout(&topic, now);
        }
    }

    /// Joins `topic` with `options` (now if connected, else on the next open). A channel that
    /// is already joining, joined or errored is left as it is.
    pub fn subscribe(&mut self, topic: &str, options: ChannelOptions, now: Instant) {
        if let Some(existing) = self.channels.get(topic) {
            if existing.state != ChannelState::Leaving {
                return;
            }
            // Subscribing while the previous subscription is leaving: that one is over.
            self.close_channel(topic, None);
        }
        self.channels
            .insert(topic.to_owned(), ChannelEntry::new(options));
        self.send_join(topic, now);
    }

    /// Leaves `topic`: sends `phx_leave` if joined and waits for its reply (or the timeout);
    /// otherwise closes at once. `id` is reported done either way.
    pub fn leave(&mut self, topic: &str, id: Option<PushId>, now: Instant) {
        let Some(channel) = self.channels.get_mut(topic) else {
            self.done(id, Ok(()));
            return;
        };
        channel.auto_track = None;
        let join_ref = channel.join_ref.clone();
        let state = channel.state;
        let sent = channel.join_sent;
        match (state, join_ref) {
            (ChannelState::Joined, Some(jr)) if self.connected => {
                let r = self.make_ref();
                self.send_text(Some(&jr), &r, topic, "phx_leave", "{}");
                let deadline = now + self.timing.timeout;
                self.replies.insert(
                    r,
                    Pending::Leave {
                        topic: topic.to_owned(),
                        join_ref: jr,
                        id,
                        deadline,
                    },
                );
                self.set_state(topic, ChannelState::Leaving);
            }
            (ChannelState::Leaving, _) => self.done(id, Ok(())),
            (state, jr) => {
                let jr = jr.unwrap_or_default();
                if state == ChannelState::Joining && sent && self.connected {
                    let r = self.make_ref();
                    self.send_text(Some(&jr), &r, topic, "phx_leave", "{}");
                }
                self.close_channel(topic, None);
                self.done(id, Ok(()));
            }
        }
    }

    /// Pushes `command` to `topic`: at once if joined, else once joined (see [`Command`]).
    pub fn push(&mut self, topic: &str, command: Command, id: Option<PushId>, now: Instant) {
        if let Command::Broadcast {
            payload: BroadcastPayload::Binary(_),
            ..
        } = &command
            && self.serializer == Serializer::V1
        {
            self.done(id, Err(Error::BinaryOnV1));
            return;
        }
        let connected = self.connected;
        let Some(channel) = self.channels.get_mut(topic) else {
            self.done(id, Err(Error::NotSubscribed));
            return;
        };
        let joined = channel.state == ChannelState::Joined && connected;
        let command = match command {
            Command::AutoTrack(status) => {
                channel.auto_track = Some(status.clone());
                if !joined {
                    // Tracked on the next join.
                    self.done(id, Ok(()));
                    return;
                }
                Command::Track(status)
            }
            other => other,
        };
        if joined {
            self.send_push(topic, command, id, now + self.timing.timeout);
        } else {
            let dropped = channel.buffer_push(command, id, now + self.timing.timeout);
            if let Some(dropped) = dropped {
                self.done(Some(dropped), Err(Error::BufferFull));
            }
        }
    }

    /// Changes the token: future joins carry it, and every joined channel gets an
    /// `access_token` push (the server never replies to it).
    pub fn set_auth(&mut self, token: String) {
        if self.access_token.as_deref() == Some(&token) {
            return;
        }
        let payload = serde_json::json!({ "access_token": token }).to_string();
        self.access_token = Some(token);
        if !self.connected {
            return;
        }
        let joined: Vec<(String, String)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state == ChannelState::Joined)
            .filter_map(|(t, c)| Some((t.clone(), c.join_ref.clone()?)))
            .collect();
        for (topic, jr) in joined {
            let r = self.make_ref();
            self.send_text(Some(&jr), &r, &topic, "access_token", &payload);
        }
    }

    /// The app disconnects: every channel closes, every request in flight fails with
    /// [`Error::Disconnected`]. The driver then closes the socket.
    pub fn disconnect(&mut self) {
        let mut pending: Vec<(String, Pending)> = self.replies.drain().collect();
        pending.sort_by_key(|(r, _)| r.parse::<u64>().unwrap_or(u64::MAX));
        for (_, p) in pending {
            match p {
                Pending::Join { .. } => {}
                Pending::Leave { id, .. } => self.done(id, Ok(())),
                Pending::Push { id, .. } => self.done(id, Err(Error::Disconnected)),
            }
        }
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            self.close_channel(&topic, None);
        }
        self.connected = false;
        self.heartbeat_ref = None;
        self.heartbeat_at = None;
    }
}

#[cfg(test)]
mod tests;
