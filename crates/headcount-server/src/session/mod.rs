//! One socket's protocol state: the channels it joined and what each message does.
//!
//! The session is synchronous and reads no clock: the driver passes the time in and performs
//! the [`Flow`] it returns. Frames for this socket go to its own outbox; frames for others go
//! through the channels. That keeps every rule here testable without a socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use headcount_protocol::encode::{self, Status};
use headcount_protocol::payloads::SystemMessage;
use headcount_protocol::{ClientMessage, Payload, Ref, decode_binary, decode_text};
use serde_json::Value;
use tracing::debug;

use crate::auth::{AuthError, Claims};
use crate::clock::Now;
use crate::conn::Conn;
use crate::frames;
use crate::hub::{Broadcast, ChannelKey, Hub, Member, MemberId};
use crate::metrics::{Limit, Metrics};
use crate::policy::Grants;
use crate::reasons::{Close, JoinRefusal, Refused, Shutdown};
use crate::ws::close_code;

mod node;
mod options;
mod presence;
mod rates;
#[cfg(test)]
mod tests;
pub use node::{Node, NodeRates, Track};
pub use options::JoinOptions;
use rates::{SocketRates, Verdict};

/// What the driver must do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// One joined channel, as this socket sees it.
#[derive(Debug)]
struct Joined<C> {
    channel: C,
    member: MemberId,
    join_ref: Ref,
    /// The token the channel is authorized with (the join's `access_token`, a refresh, or the
    /// socket's apikey).
    token: String,
    /// That token's claims.
    claims: Claims,
    /// When the token expires, on the monotonic clock: worked out once from `claims.exp`.
    expires_ms: u64,
    presence_key: String,
    ack: bool,
    self_broadcast: bool,
    private: bool,
    /// The payload this member is tracked with, if it is: the channel's presence holds the
    /// same, and only this session changes it.
    tracked: Option<headcount_presence::Payload>,
    /// What the member may do: everything on public channels, the policy's grants on private
    /// ones.
    grants: Grants,
}

/// The protocol state of one socket. Owned by the socket's reader task. It acts on the rest of
/// the node only through [`Node`] (the [`Hub`] in the server).
#[derive(Debug)]
pub struct Session<N: Node = Hub> {
    hub: Arc<N>,
    conn: Arc<Conn>,
    /// The apikey the socket connected with, already verified; the default channel token.
    connect_token: String,
    /// Joined channels by topic.
    channels: HashMap<Box<str>, Joined<N::Channel>>,
    /// Whether this socket is counted in [`Node::users`] (it is while it has a channel).
    counted_user: bool,
    /// This socket's own rates (in front of the node's) and its client presence windows.
    rates: SocketRates,
}

/// When a token with `claims` expires on the monotonic clock, reckoned at `now` (a token
/// already expired gives `now`).
fn expiry_ms(claims: &Claims, now: Now) -> u64 {
    let exp_unix_ms = (claims.exp.max(0) as u64).saturating_mul(1000);
    now.ms
        .saturating_add(exp_unix_ms.saturating_sub(now.unix_ms))
}

const JOIN_OK: &str = r#"{"postgres_changes":[]}"#;

impl<N: Node> Session<N> {
    /// A session for a socket that connected with `connect_token`.
    pub fn new(hub: Arc<N>, conn: Arc<Conn>, connect_token: String) -> Session<N> {
        Session {
            rates: SocketRates::new(&hub.config().limits),
            hub,
            conn,
            connect_token,
            channels: HashMap::new(),
            counted_user: false,
        }
    }

    /// Handles a text message received at `now`.
    pub fn handle_text(&mut self, text: &[u8], now: Now) -> Flow {
        match decode_text(self.conn.serializer, text) {
            Ok(m) => {
                Metrics::inc(&self.hub.metrics().messages_in_total);
                self.handle(m, now)
            }
            Err(e) => {
                Metrics::inc(&self.hub.metrics().messages_dropped_total);
                debug!(conn = self.conn.id, error = %e, "dropped an undecodable text message");
                Flow::Continue
            }
        }
    }

    /// Handles a binary message.
    pub fn handle_binary(&mut self, bin: &[u8], now: Now) -> Flow {
        match decode_binary(self.conn.serializer, bin) {
            Ok(m) => {
                Metrics::inc(&self.hub.metrics().messages_in_total);
                self.handle(m, now)
            }
            Err(e) => {
                Metrics::inc(&self.hub.metrics().messages_dropped_total);
                debug!(conn = self.conn.id, error = %e, "dropped an undecodable binary message");
                Flow::Continue
            }
        }
    }

    fn push(&self, frame: Bytes) {
        self.conn.push(frame);
    }

    fn reply_frame(
        &self,
        join_ref: &Ref,
        msg_ref: &Ref,
        topic: &str,
        status: Status,
        response: &str,
    ) -> Bytes {
        let ser = self.conn.serializer;
        frames::build(topic.len() + response.len() + 64, |out| {
            encode::reply(out, ser, join_ref, msg_ref, topic, status, response)
        })
    }

    fn reply(&self, join_ref: &Ref, msg_ref: &Ref, topic: &str, status: Status, response: &str) {
        self.push(self.reply_frame(join_ref, msg_ref, topic, status, response));
    }

    fn reply_reason(
        &self,
        join_ref: &Ref,
        msg_ref: &Ref,
        topic: &str,
        reason: impl std::fmt::Display,
    ) {
        let response = serde_json::json!({ "reason": reason.to_string() }).to_string();
        self.reply(join_ref, msg_ref, topic, Status::Error, &response);
    }

    fn handle(&mut self, m: ClientMessage<'_>, now: Now) -> Flow {
        if m.topic == "phoenix" && m.event == "heartbeat" {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            return Flow::Continue;
        }
        if m.event == "phx_join" {
            return self.join(&m, now);
        }
        let Some(joined) = self.channels.get(&*m.topic) else {
            if m.event == "phx_leave" {
                self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            } else {
                self.reply_reason(
                    &Ref::Null,
                    &m.msg_ref,
                    &m.topic,
                    JoinRefusal::UnmatchedTopic,
                );
            }
            return Flow::Continue;
        };
        if !m.join_ref.is_null() && m.join_ref != joined.join_ref {
            debug!(conn = self.conn.id, topic = %m.topic, "ignored a message with a stale join_ref");
            return Flow::Continue;
        }
        match &*m.event {
            "phx_leave" => self.leave(&m, now),
            "broadcast" => self.broadcast(&m, now),
            "presence" => self.presence(&m, now),
            "access_token" => self.refresh_token(&m, now),
            other => debug!(
                conn = self.conn.id,
                event = other,
                "ignored an unexpected event"
            ),
        }
        Flow::Continue
    }

    /// A `phx_join`, checked in Supabase's order: users, joins per second (this socket's, then
    /// the node's), channels per socket, token, then the policy of a private channel.
    fn join(&mut self, m: &ClientMessage<'_>, now: Now) -> Flow {
        let topic: &str = &m.topic;
        if !topic.starts_with("realtime:") {
            self.reply_reason(&Ref::Null, &m.msg_ref, topic, JoinRefusal::UnmatchedTopic);
            return Flow::Continue;
        }
        let join_ref = if m.join_ref.is_null() {
            m.msg_ref.clone()
        } else {
            m.join_ref.clone()
        };
        if let Some(old) = self.channels.remove(topic) {
            // A duplicate join replaces the old channel, which is closed first.
            self.hub.leave(&old.channel, old.member);
            self.push_close(&old.join_ref, topic);
            self.channels_changed(now);
        }
        let refuse = |session: &Session<N>, reason: JoinRefusal| {
            Metrics::inc(&session.hub.metrics().join_errors_total);
            debug!(conn = session.conn.id, topic, %reason, "refused a join");
            session.reply_reason(&join_ref, &m.msg_ref, topic, reason);
        };
        if topic == "realtime:" {
            refuse(self, JoinRefusal::TopicNameRequired);
            return Flow::Continue;
        }
        if topic.len() - "realtime:".len() > self.hub.config().limits.max_topic_bytes {
            refuse(self, JoinRefusal::TopicNameTooLong);
            return Flow::Continue;
        }
        let limits = &self.hub.config().limits;
        if let Some(max) = limits.max_concurrent_users
            && !self.counted_user
            && self.hub.users().load(Ordering::Relaxed) >= max
        {
            self.hub.metrics().refused(Limit::Users);
            refuse(self, JoinRefusal::TooManyUsers);
            return Flow::Continue;
        }
        match self.rates.join(&*self.hub, now.ms) {
            Verdict::Allowed => {}
            Verdict::OverClient => {
                // Only this join is refused; the socket stays open, so a client joining many
                // channels at once gets the rest in on realtime-js's rejoin (after 1 s)
                // instead of reconnecting and rejoining everything, again and again.
                refuse(self, JoinRefusal::JoinRate);
                return Flow::Continue;
            }
            Verdict::OverNode => {
                refuse(self, JoinRefusal::JoinRate);
                return Flow::Close(close_code::GOING_AWAY, Close::JoinRate.as_str());
            }
        }
        if self.channels.len() >= limits.max_channels_per_client {
            self.hub.metrics().refused(Limit::Channels);
            refuse(self, JoinRefusal::TooManyChannels);
            return Flow::Continue;
        }
        let options = JoinOptions::parse(m.payload.as_json().map(|p| p.get()));
        if options.key_too_long(self.hub.config().max_presence_key_length) {
            refuse(self, JoinRefusal::PresenceKeyTooLong);
            return Flow::Continue;
        }
        let token = match options.access_token {
            Some(t) if !t.starts_with("sb_") => t,
            _ => self.connect_token.clone(),
        };
        let claims = match self.hub.config().verifier.verify(&token, now.unix_s()) {
            Ok(claims) => claims,
            Err(e) => {
                refuse(self, JoinRefusal::Token(e));
                return Flow::Continue;
            }
        };
        self.conn.presented.record(claims.sub.as_deref());
        let sub_topic = &topic["realtime:".len()..];
        let grants = if options.private {
            let grants = self.hub.config().policy.evaluate(sub_topic, &claims);
            if !grants.can_read() {
                refuse(
                    self,
                    JoinRefusal::Unauthorized {
                        topic: sub_topic.to_owned(),
                    },
                );
                return Flow::Continue;
            }
            grants
        } else {
            Grants::ALL
        };
        let presence_key = match options.presence_key {
            Some(key) => key,
            None if self.hub.config().strict_presence && claims.sub.is_some() => {
                claims.sub.clone().expect("checked")
            }
            None => self.hub.new_presence_key(),
        };
        let member = Member {
            id: self.hub.next_id(),
            conn: self.conn.clone(),
            join_ref: join_ref.clone(),
            grants,
        };
        let member_id = member.id;
        let reply = self.reply_frame(&join_ref, &m.msg_ref, topic, Status::Ok, JOIN_OK);
        let key = ChannelKey {
            private: options.private,
            topic: topic.into(),
        };
        let send_state = options.presence_enabled && grants.presence_read;
        let channel = self.hub.join(key, member, reply, send_state);
        self.channels.insert(
            topic.into(),
            Joined {
                channel,
                member: member_id,
                join_ref,
                token,
                expires_ms: expiry_ms(&claims, now),
                claims,
                presence_key,
                ack: options.ack,
                self_broadcast: options.self_broadcast,
                private: options.private,
                tracked: None,
                grants,
            },
        );
        self.channels_changed(now);
        Metrics::inc(&self.hub.metrics().joins_total);
        Flow::Continue
    }

    fn leave(&mut self, m: &ClientMessage<'_>, now: Now) {
        let Some(joined) = self.channels.remove(&*m.topic) else {
            return;
        };
        self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
        self.hub.leave(&joined.channel, joined.member);
        self.push_close(&joined.join_ref, &m.topic);
        self.channels_changed(now);
    }

    fn push_close(&self, join_ref: &Ref, topic: &str) {
        let ser = self.conn.serializer;
        self.push(frames::build(topic.len() + 48, |out| {
            encode::close(out, ser, join_ref, topic)
        }));
    }

    fn broadcast(&mut self, m: &ClientMessage<'_>, now: Now) {
        let joined = &self.channels[&*m.topic];
        if !joined.grants.broadcast_write {
            // As Supabase: a denied broadcast is dropped without a reply, even with ack.
            debug!(conn = self.conn.id, topic = %m.topic, "dropped a broadcast without write permission");
            return;
        }
        let ack = joined.ack;
        match self.rates.broadcast(&*self.hub, now.ms) {
            Verdict::Allowed => {}
            // The flooder's channel closes, as at Supabase's rate limit.
            Verdict::OverClient => return self.shut_down(&m.topic, Shutdown::EventRate, now),
            Verdict::OverNode => {
                // Others used the node's limit up: the message is dropped (an ack is told),
                // and a flood never closes a bystander's channel.
                if ack {
                    self.reply_reason(&m.join_ref, &m.msg_ref, &m.topic, Refused::EventRate);
                }
                return;
            }
        }
        let joined = &self.channels[&*m.topic];
        let (msg, size) = match &m.payload {
            Payload::Json(raw) => (Broadcast::Json(raw.get()), raw.get().len()),
            Payload::UserBroadcast(b) => (
                Broadcast::User {
                    event: b.event,
                    encoding: b.encoding,
                    body: b.body,
                },
                b.body.len(),
            ),
        };
        if size > self.hub.config().limits.max_payload_bytes() {
            self.hub.metrics().refused(Limit::PayloadSize);
            if joined.ack {
                self.reply(
                    &m.join_ref,
                    &m.msg_ref,
                    &m.topic,
                    Status::Error,
                    r#""payload_size_exceeded""#,
                );
            }
            return;
        }
        self.hub
            .broadcast(&joined.channel, joined.member, joined.self_broadcast, msg);
        if joined.ack {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
        }
    }

    /// `access_token`: never answered. A good token replaces the channel's (and, on a private
    /// channel, its grants); a bad one, or one that may no longer read, closes the channel.
    fn refresh_token(&mut self, m: &ClientMessage<'_>, now: Now) {
        let value: Value = m
            .payload
            .as_json()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        let Some(Value::String(token)) = value.get("access_token") else {
            return;
        };
        let joined = &self.channels[&*m.topic];
        if token.starts_with("sb_") || *token == joined.token {
            return;
        }
        let claims = match self.hub.config().verifier.verify(token, now.unix_s()) {
            Ok(claims) => claims,
            Err(e) => return self.shut_down(&m.topic, Shutdown::Token(e), now),
        };
        self.conn.presented.record(claims.sub.as_deref());
        let sub_topic = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic);
        let grants = if joined.private {
            self.hub.config().policy.evaluate(sub_topic, &claims)
        } else {
            Grants::ALL
        };
        if joined.grants.can_read() && !grants.can_read() {
            let message = Shutdown::ReadRevoked {
                topic: sub_topic.to_owned(),
            };
            return self.shut_down(&m.topic, message, now);
        }
        let joined = self.channels.get_mut(&*m.topic).expect("checked above");
        joined.token = token.clone();
        joined.expires_ms = expiry_ms(&claims, now);
        joined.claims = claims;
        if joined.grants != grants {
            if joined.grants.presence_write && !grants.presence_write {
                // A revoked write grant takes the member's presence away too.
                self.hub
                    .untrack(&joined.channel, joined.member, &self.conn, None);
            }
            joined.grants = grants;
            self.hub.set_grants(&joined.channel, joined.member, grants);
        }
        self.channels_changed(now);
    }

    /// Closes a channel from the server side: a `system` error with `message`, then
    /// `phx_close`, as Supabase's `shutdown_response` does.
    fn shut_down(&mut self, topic: &str, message: Shutdown, now: Now) {
        let message = message.to_string();
        let Some(joined) = self.channels.remove(topic) else {
            return;
        };
        debug!(conn = self.conn.id, topic, message, "closing a channel");
        let sub_topic = topic.strip_prefix("realtime:").unwrap_or(topic);
        let payload = SystemMessage::error(sub_topic, message).to_json();
        let ser = self.conn.serializer;
        self.push(frames::build(payload.len() + topic.len() + 48, |out| {
            encode::push(out, ser, &joined.join_ref, topic, "system", &payload)
        }));
        self.hub.leave(&joined.channel, joined.member);
        self.push_close(&joined.join_ref, topic);
        self.channels_changed(now);
    }

    /// Closes the channels whose token expired by `now`.
    pub fn on_timers(&mut self, now: Now) {
        let expired: Vec<(Box<str>, i64)> = self
            .channels
            .iter()
            .filter(|(_, j)| j.expires_ms <= now.ms)
            .map(|(topic, j)| (topic.clone(), j.claims.exp))
            .collect();
        for (topic, exp) in expired {
            let message = Shutdown::Token(AuthError::Expired {
                seconds_ago: now.unix_s().saturating_sub(exp),
            });
            self.shut_down(&topic, message, now);
        }
    }

    /// When [`Session::on_timers`] must next run (on the monotonic clock): the earliest token
    /// expiry among the channels, if any. The driver waits for it; nothing else keeps it.
    pub fn next_deadline(&self) -> Option<u64> {
        self.channels.values().map(|j| j.expires_ms).min()
    }

    /// Keeps the socket's shared bookkeeping in step with its channels: the "connected users"
    /// count and the unjoined clock.
    fn channels_changed(&mut self, now: Now) {
        let has_channels = !self.channels.is_empty();
        if has_channels != self.counted_user {
            if has_channels {
                self.hub.users().fetch_add(1, Ordering::Relaxed);
                self.conn.unjoined_since_ms.store(0, Ordering::Relaxed);
            } else {
                self.hub.users().fetch_sub(1, Ordering::Relaxed);
                self.conn.unjoined_since_ms.store(now.ms, Ordering::Relaxed);
            }
            self.counted_user = has_channels;
        }
    }

    /// The socket is gone: leaves every channel, so the others see this socket's presences go.
    pub fn terminate(&mut self) {
        for (_, joined) in self.channels.drain() {
            self.hub.leave(&joined.channel, joined.member);
        }
        if self.counted_user {
            self.hub.users().fetch_sub(1, Ordering::Relaxed);
            self.counted_user = false;
        }
    }

    /// The topics this socket has joined.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(|k| &**k)
    }
}
