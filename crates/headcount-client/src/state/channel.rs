//! One channel's part of the state: its lifecycle, rejoins, buffered pushes and presence.

use std::collections::VecDeque;
use std::time::Instant;

use headcount_protocol::client::user_broadcast_push;
use headcount_protocol::payloads::{PresenceCall, SystemMessage};
use headcount_protocol::{Encoding, Payload, Ref, Serializer};
use serde_json::{Map, Value, json};

use super::sync::{PresenceDiff, PresenceSync, presences_from_value};
use super::{
    BroadcastMessage, BroadcastPayload, ChannelState, ClientState, Command, OutFrame, Output,
    PUSH_BUFFER_LIMIT, Pending, PushId, StatusEvent, SubscribeStatus,
};
use crate::error::Error;
use crate::options::ChannelOptions;

/// A push waiting for the channel to join.
#[derive(Debug)]
struct Buffered {
    command: Command,
    id: Option<PushId>,
    deadline: Instant,
}

/// One channel, as the client sees it.
#[derive(Debug)]
pub(super) struct ChannelEntry {
    pub(super) options: ChannelOptions,
    pub(super) state: ChannelState,
    /// The ref of the last join sent (`None` while no join went out).
    pub(super) join_ref: Option<String>,
    /// Whether the current join went out on the current connection.
    pub(super) join_sent: bool,
    /// When a join (sent, or waiting for a connection) times out.
    join_deadline: Option<Instant>,
    /// Rejoins since the last successful join.
    rejoin_tries: u32,
    /// When an errored channel rejoins.
    rejoin_at: Option<Instant>,
    buffer: VecDeque<Buffered>,
    pub(super) presence: PresenceSync,
    /// The status re-tracked after every join.
    pub(super) auto_track: Option<Map<String, Value>>,
    /// The message of the last `system` error, reported with the `phx_close` that follows.
    close_reason: Option<String>,
}

impl ChannelEntry {
    pub(super) fn new(options: ChannelOptions) -> ChannelEntry {
        ChannelEntry {
            options,
            state: ChannelState::Closed,
            join_ref: None,
            join_sent: false,
            join_deadline: None,
            rejoin_tries: 0,
            rejoin_at: None,
            buffer: VecDeque::new(),
            presence: PresenceSync::new(),
            auto_track: None,
            close_reason: None,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let own = match self.state {
            ChannelState::Joining => self.join_deadline,
            ChannelState::Errored => self.rejoin_at,
            _ => None,
        };
        own.into_iter()
            .chain(self.buffer.iter().map(|b| b.deadline))
            .min()
    }

    /// Queues a push until the join; returns the id of a push dropped to make room.
    pub(super) fn buffer_push(
        &mut self,
        command: Command,
        id: Option<PushId>,
        deadline: Instant,
    ) -> Option<PushId> {
        let dropped = if self.buffer.len() >= PUSH_BUFFER_LIMIT {
            self.buffer.pop_front().and_then(|b| b.id)
        } else {
            None
        };
        self.buffer.push_back(Buffered {
            command,
            id,
            deadline,
        });
        dropped
    }
}

impl ClientState {
    pub(super) fn set_state(&mut self, topic: &str, state: ChannelState) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        if channel.state != state {
            channel.state = state;
            self.output(Output::State {
                topic: topic.to_owned(),
                state,
            });
        }
    }

    fn status(&mut self, topic: &str, status: SubscribeStatus, reason: Option<String>) {
        self.output(Output::Status {
            topic: topic.to_owned(),
            event: StatusEvent { status, reason },
        });
    }

    /// Sends a join with a fresh ref if connected; otherwise waits for the next open (the
    /// timeout runs meanwhile, as phoenix.js's buffered join does).
    pub(super) fn send_join(&mut self, topic: &str, now: Instant) {
        let join_ref = self.connected.then(|| self.make_ref());
        let token = self.access_token.clone();
        let deadline = now + self.timing.timeout;
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        if let Some(old) = channel.join_ref.take()
            && matches!(self.replies.get(&old), Some(Pending::Join { .. }))
        {
            self.replies.remove(&old);
        }
        channel.join_deadline = Some(deadline);
        channel.rejoin_at = None;
        channel.close_reason = None;
        channel.join_sent = join_ref.is_some();
        channel.join_ref = join_ref.clone();
        let payload = channel.options.join_payload(token.as_deref());
        self.set_state(topic, ChannelState::Joining);
        if let Some(jr) = join_ref {
            self.send_text(Some(&jr), &jr, topic, "phx_join", &payload);
            self.replies.insert(
                jr,
                Pending::Join {
                    topic: topic.to_owned(),
                },
            );
        }
    }

    pub(super) fn on_open_channel(&mut self, topic: &str, now: Instant) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        match channel.state {
            ChannelState::Joining if !channel.join_sent => self.send_join(topic, now),
            ChannelState::Errored => {
                channel.rejoin_tries = 0;
                self.send_join(topic, now);
            }
            _ => {}
        }
    }

    pub(super) fn on_close_channel(&mut self, topic: &str) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        match channel.state {
            ChannelState::Joined | ChannelState::Joining if channel.join_sent => {
                channel.join_sent = false;
                channel.join_deadline = None;
                channel.rejoin_at = None;
                self.set_state(topic, ChannelState::Errored);
                self.status(
                    topic,
                    SubscribeStatus::ChannelError,
                    Some("connection lost".into()),
                );
            }
            ChannelState::Errored => channel.rejoin_at = None,
            _ => {}
        }
    }

    pub(super) fn on_join_ok(&mut self, topic: &str, now: Instant) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        channel.join_deadline = None;
        channel.rejoin_tries = 0;
        channel.rejoin_at = None;
        let buffered: Vec<Buffered> = channel.buffer.drain(..).collect();
        let auto_track = channel.auto_track.clone();
        self.set_state(topic, ChannelState::Joined);
        self.status(topic, SubscribeStatus::Subscribed, None);
        for b in buffered {
            self.send_push(topic, b.command, b.id, b.deadline);
        }
        if let Some(status) = auto_track {
            self.send_push(
                topic,
                Command::Track(status),
                None,
                now + self.timing.timeout,
            );
        }
    }

    /// Schedules a rejoin with the channel's backoff (only while connected: on a new
    /// connection errored channels rejoin at once).
    fn schedule_rejoin(&mut self, topic: &str, now: Instant) {
        let connected = self.connected;
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        channel.join_sent = false;
        channel.join_deadline = None;
        channel.rejoin_tries += 1;
        channel.rejoin_at =
            connected.then(|| now + self.timing.rejoin_after.after(channel.rejoin_tries));
    }

    pub(super) fn on_join_error(&mut self, topic: &str, reason: String, now: Instant) {
        self.schedule_rejoin(topic, now);
        self.set_state(topic, ChannelState::Errored);
        self.status(topic, SubscribeStatus::ChannelError, Some(reason));
    }

    pub(super) fn on_server_error(&mut self, topic: &str, now: Instant) {
        let Some(channel) = self.channels.get(topic) else {
            return;
        };
        if !matches!(channel.state, ChannelState::Joined | ChannelState::Joining) {
            return;
        }
        if let Some(jr) = channel.join_ref.clone() {
            self.replies.remove(&jr);
        }
        self.schedule_rejoin(topic, now);
        self.set_state(topic, ChannelState::Errored);
        self.status(
            topic,
            SubscribeStatus::ChannelError,
            Some("channel error".into()),
        );
    }

    pub(super) fn on_server_close(&mut self, topic: &str) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        let reason = channel.close_reason.take();
        self.close_channel(topic, reason);
    }

    pub(super) fn on_system(&mut self, topic: &str, payload: &str) {
        let Some(system) = SystemMessage::parse(payload).filter(SystemMessage::is_error) else {
            return;
        };
        if let Some(channel) = self.channels.get_mut(topic) {
            channel.close_reason = Some(system.message);
        }
    }

    fn presence_events(&mut self, topic: &str, events: Vec<super::sync::PresenceEvent>) {
        for event in events {
            self.output(Output::Presence {
                topic: topic.to_owned(),
                event,
            });
        }
    }

    pub(super) fn on_presence_state(&mut self, topic: &str, payload: Value) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        let Some(jr) = channel.join_ref.clone() else {
            return;
        };
        let mut events = Vec::new();
        channel
            .presence
            .handle_state(&jr, presences_from_value(payload), &mut events);
        self.presence_events(topic, events);
    }

    pub(super) fn on_presence_diff(&mut self, topic: &str, payload: Value) {
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        let Some(jr) = channel.join_ref.clone() else {
            return;
        };
        let mut events = Vec::new();
        channel
            .presence
            .handle_diff(&jr, PresenceDiff::from_value(payload), &mut events);
        self.presence_events(topic, events);
    }

    pub(super) fn on_broadcast(&mut self, topic: &str, payload: Payload<'_>) {
        let message = match payload {
            Payload::Json(raw) => {
                let Ok(Value::Object(mut value)) = serde_json::from_str::<Value>(raw.get()) else {
                    return;
                };
                let Some(Value::String(event)) = value.remove("event") else {
                    return;
                };
                BroadcastMessage {
                    event,
                    payload: BroadcastPayload::Json(value.remove("payload").unwrap_or(Value::Null)),
                    meta: value.remove("meta"),
                }
            }
            Payload::UserBroadcast(b) => {
                let payload = match b.encoding {
                    Encoding::Json => BroadcastPayload::Json(
                        serde_json::from_slice(b.body).unwrap_or(Value::Null),
                    ),
                    Encoding::Binary => BroadcastPayload::Binary(b.body.to_vec()),
                };
                BroadcastMessage {
                    event: b.event.to_owned(),
                    payload,
                    meta: serde_json::from_slice(b.metadata).ok(),
                }
            }
        };
        self.output(Output::Broadcast {
            topic: topic.to_owned(),
            message,
        });
    }

    pub(super) fn on_channel_timeout(&mut self, topic: &str, now: Instant) {
        let connected = self.connected;
        let Some(channel) = self.channels.get_mut(topic) else {
            return;
        };
        let mut expired = Vec::new();
        channel.buffer.retain(|b| {
            let keep = b.deadline > now;
            if !keep {
                expired.extend(b.id);
            }
            keep
        });
        for id in expired {
            self.done(Some(id), Err(Error::Timeout));
        }
        let channel = &self.channels[topic];
        match channel.state {
            ChannelState::Joining if channel.join_deadline.is_some_and(|d| d <= now) => {
                if let Some(jr) = channel.join_ref.clone() {
                    self.replies.remove(&jr);
                    if channel.join_sent && connected {
                        let r = self.make_ref();
                        self.send_text(Some(&jr), &r, topic, "phx_leave", "{}");
                    }
                }
                self.schedule_rejoin(topic, now);
                self.set_state(topic, ChannelState::Errored);
                self.status(topic, SubscribeStatus::TimedOut, None);
            }
            ChannelState::Errored if channel.rejoin_at.is_some_and(|d| d <= now) => {
                if connected {
                    self.send_join(topic, now);
                } else if let Some(channel) = self.channels.get_mut(topic) {
                    channel.rejoin_at = None;
                }
            }
            _ => {}
        }
    }

    /// The leave of the join `join_ref` is over (replied, timed out, or the connection went).
    pub(super) fn finish_leave(&mut self, topic: &str, join_ref: &str, id: Option<PushId>) {
        let ours = self.channels.get(topic).is_some_and(|c| {
            c.state == ChannelState::Leaving && c.join_ref.as_deref() == Some(join_ref)
        });
        if ours {
            self.close_channel(topic, None);
        }
        self.done(id, Ok(()));
    }

    /// Closes and forgets the channel: `CLOSED` is reported, and pushes still waiting for it
    /// fail.
    pub(super) fn close_channel(&mut self, topic: &str, reason: Option<String>) {
        let Some(mut channel) = self.channels.remove(topic) else {
            return;
        };
        let mut ours: Vec<(String, Pending)> = Vec::new();
        for r in self.replies.keys().cloned().collect::<Vec<_>>() {
            let mine = match &self.replies[&r] {
                Pending::Join { topic: t } | Pending::Push { topic: t, .. } => t == topic,
                Pending::Leave { .. } => false,
            };
            if mine {
                let p = self.replies.remove(&r).expect("listed above");
                ours.push((r, p));
            }
        }
        ours.sort_by_key(|(r, _)| r.parse::<u64>().unwrap_or(u64::MAX));
        for (_, p) in ours {
            if let Pending::Push { id, .. } = p {
                self.done(id, Err(Error::ChannelClosed));
            }
        }
        for b in channel.buffer.drain(..) {
            self.done(b.id, Err(Error::ChannelClosed));
        }
        if channel.state != ChannelState::Closed {
            self.output(Output::State {
                topic: topic.to_owned(),
                state: ChannelState::Closed,
            });
        }
        self.status(topic, SubscribeStatus::Closed, reason);
        self.output(Output::Removed {
            topic: topic.to_owned(),
        });
    }

    /// Sends a push on a joined channel; `id` is done when the reply comes, or at once when
    /// none is expected (a broadcast without `ack`).
    pub(super) fn send_push(
        &mut self,
        topic: &str,
        command: Command,
        id: Option<PushId>,
        deadline: Instant,
    ) {
        let Some(channel) = self.channels.get(topic) else {
            self.done(id, Err(Error::ChannelClosed));
            return;
        };
        let Some(jr) = channel.join_ref.clone() else {
            self.done(id, Err(Error::NotSubscribed));
            return;
        };
        let ack = channel.options.broadcast_ack;
        let r = self.make_ref();
        let expects_reply = match command {
            Command::Track(status) | Command::AutoTrack(status) => {
                let payload = PresenceCall::Track(Value::Object(status));
                self.send_text(Some(&jr), &r, topic, "presence", &payload.to_json());
                true
            }
            Command::Untrack => {
                let payload = PresenceCall::Untrack.to_json();
                self.send_text(Some(&jr), &r, topic, "presence", &payload);
                true
            }
            Command::Broadcast { event, payload } => {
                if let Err(e) = self.send_broadcast(&jr, &r, topic, &event, payload) {
                    self.done(id, Err(e));
                    return;
                }
                ack
            }
        };
        if expects_reply {
            self.replies.insert(
                r,
                Pending::Push {
                    topic: topic.to_owned(),
                    id,
                    deadline,
                },
            );
        } else {
            self.done(id, Ok(()));
        }
    }

    /// A broadcast: binary kind 3 on 2.0.0 (as realtime-js sends it), JSON text otherwise or
    /// when the header fields are too long for kind 3.
    fn send_broadcast(
        &mut self,
        jr: &str,
        r: &str,
        topic: &str,
        event: &str,
        payload: BroadcastPayload,
    ) -> Result<(), Error> {
        let (encoding, body) = match &payload {
            // realtime-js sends `JSON.stringify(payload ?? {})`.
            BroadcastPayload::Json(Value::Null) => (Encoding::Json, b"{}".to_vec()),
            BroadcastPayload::Json(v) => (Encoding::Json, v.to_string().into_bytes()),
            BroadcastPayload::Binary(b) => (Encoding::Binary, b.clone()),
        };
        if self.serializer == Serializer::V2 {
            let mut out = Vec::new();
            if let Some(kind) = user_broadcast_push(
                &mut out,
                &Ref::str(jr),
                &Ref::str(r),
                topic,
                event,
                encoding,
                &body,
            ) {
                self.transmits.push_back(OutFrame::from_bytes(kind, out));
                return Ok(());
            }
        }
        let BroadcastPayload::Json(value) = payload else {
            return Err(Error::BinaryOnV1);
        };
        let text = json!({"type": "broadcast", "event": event, "payload": value}).to_string();
        self.send_text(Some(jr), r, topic, "broadcast", &text);
        Ok(())
    }
}
