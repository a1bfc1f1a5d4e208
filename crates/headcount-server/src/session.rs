//! One socket's protocol state: the channels it joined and what each message does.
//!
//! The session is synchronous and reads no clock: the driver passes the time in and performs
//! the [`Flow`] it returns. Frames for this socket go to its own outbox; frames for others go
//! through the channels. That keeps every rule here testable without a socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use headcount_presence::Payload as PresencePayload;
use headcount_protocol::encode::{self, Status};
use headcount_protocol::{ClientMessage, Payload, Ref, decode_binary, decode_text};
use serde_json::Value;
use tracing::debug;

use crate::auth::AuthError;
use crate::conn::Conn;
use crate::frames;
use crate::hub::{Broadcast, Channel, ChannelKey, Hub, Member, MemberId};

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
struct Joined {
    channel: Arc<Channel>,
    member: MemberId,
    join_ref: Ref,
    /// The token the channel is authorized with (the join's `access_token`, a refresh, or the
    /// socket's apikey).
    token: String,
    /// The token's `exp`, in seconds.
    exp: i64,
    presence_key: String,
    ack: bool,
    self_broadcast: bool,
}

/// The protocol state of one socket. Owned by the socket's reader task.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    /// The apikey the socket connected with, already verified; the default channel token.
    connect_token: String,
    /// Joined channels by topic.
    channels: HashMap<Box<str>, Joined>,
}

const JOIN_OK: &str = r#"{"postgres_changes":[]}"#;

/// The options of a `phx_join` payload, read leniently: Supabase logs an invalid payload and
/// joins with the defaults.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// `config.broadcast.ack`: reply to each broadcast.
    pub ack: bool,
    /// `config.broadcast.self`: receive one's own broadcasts.
    pub self_broadcast: bool,
    /// `config.presence.enabled`: send `presence_state` after the join.
    pub presence_enabled: bool,
    /// `config.presence.key`, when given and not empty (non-strings as their JSON text).
    pub presence_key: Option<String>,
    /// `config.private`.
    pub private: bool,
    /// `access_token` (or its alias `user_token`), when it is a string.
    pub access_token: Option<String>,
}

/// Supabase's `FlexibleBoolean`: `true`/`false`, or those words in any case.
fn flexible_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

impl JoinOptions {
    /// Reads a join payload (JSON text); anything unreadable gives the defaults.
    pub fn parse(payload: Option<&str>) -> JoinOptions {
        let value: Value = payload
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        let config = &value["config"];
        let key = match &config["presence"]["key"] {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        let token = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        JoinOptions {
            ack: flexible_bool(config["broadcast"].get("ack")),
            self_broadcast: flexible_bool(config["broadcast"].get("self")),
            presence_enabled: flexible_bool(config["presence"].get("enabled")),
            presence_key: key,
            private: flexible_bool(config.get("private")),
            access_token: token("access_token").or_else(|| token("user_token")),
        }
    }
}

impl Session {
    /// A session for a socket that connected with `connect_token`.
    pub fn new(hub: Arc<Hub>, conn: Arc<Conn>, connect_token: String) -> Session {
        Session {
            hub,
            conn,
            connect_token,
            channels: HashMap::new(),
        }
    }

    /// Handles a text message; `now_ms` is the time in Unix milliseconds.
    pub fn handle_text(&mut self, text: &[u8], now_ms: u64) -> Flow {
        match decode_text(self.conn.serializer, text) {
            Ok(m) => self.handle(m, now_ms),
            Err(e) => {
                debug!(conn = self.conn.id, error = %e, "dropped an undecodable text message");
                Flow::Continue
            }
        }
    }

    /// Handles a binary message.
    pub fn handle_binary(&mut self, bin: &[u8], now_ms: u64) -> Flow {
        match decode_binary(self.conn.serializer, bin) {
            Ok(m) => self.handle(m, now_ms),
            Err(e) => {
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

    fn reply_reason(&self, join_ref: &Ref, msg_ref: &Ref, topic: &str, reason: &str) {
        let response = serde_json::json!({ "reason": reason }).to_string();
        self.reply(join_ref, msg_ref, topic, Status::Error, &response);
    }

    fn handle(&mut self, m: ClientMessage<'_>, now_ms: u64) -> Flow {
        if m.topic == "phoenix" && m.event == "heartbeat" {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            return Flow::Continue;
        }
        if m.event == "phx_join" {
            self.join(&m, now_ms);
            return Flow::Continue;
        }
        let Some(joined) = self.channels.get(&*m.topic) else {
            if m.event == "phx_leave" {
                self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            } else {
                self.reply_reason(&Ref::Null, &m.msg_ref, &m.topic, "unmatched topic");
            }
            return Flow::Continue;
        };
        if !m.join_ref.is_null() && m.join_ref != joined.join_ref {
            debug!(conn = self.conn.id, topic = %m.topic, "ignored a message with a stale join_ref");
            return Flow::Continue;
        }
        match &*m.event {
            "phx_leave" => self.leave(&m),
            "broadcast" => self.broadcast(&m),
            "presence" => self.presence(&m, now_ms),
            "access_token" => self.refresh_token(&m, now_ms),
            other => debug!(
                conn = self.conn.id,
                event = other,
                "ignored an unexpected event"
            ),
        }
        Flow::Continue
    }

    fn join(&mut self, m: &ClientMessage<'_>, now_ms: u64) {
        let topic: &str = &m.topic;
        if !topic.starts_with("realtime:") {
            self.reply_reason(&Ref::Null, &m.msg_ref, topic, "unmatched topic");
            return;
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
        }
        if topic == "realtime:" {
            self.reply_reason(
                &join_ref,
                &m.msg_ref,
                topic,
                "TopicNameRequired: You must provide a topic name",
            );
            return;
        }
        let options = JoinOptions::parse(m.payload.as_json().map(|p| p.get()));
        let token = match options.access_token {
            Some(t) if !t.starts_with("sb_") => t,
            _ => self.connect_token.clone(),
        };
        let claims = match self.hub.verifier.verify(&token, (now_ms / 1000) as i64) {
            Ok(claims) => claims,
            Err(e) => {
                debug!(conn = self.conn.id, topic, error = %e, "refused a join");
                self.reply_reason(&join_ref, &m.msg_ref, topic, &e.join_reason());
                return;
            }
        };
        if options.private {
            let sub_topic = &topic["realtime:".len()..];
            self.reply_reason(
                &join_ref,
                &m.msg_ref,
                topic,
                &format!("Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"),
            );
            return;
        }
        let member = Member {
            id: self.hub.next_id(),
            conn: self.conn.clone(),
            join_ref: join_ref.clone(),
            self_broadcast: options.self_broadcast,
        };
        let member_id = member.id;
        let reply = self.reply_frame(&join_ref, &m.msg_ref, topic, Status::Ok, JOIN_OK);
        let key = ChannelKey {
            private: false,
            topic: topic.into(),
        };
        let channel = self.hub.join(key, member, reply, options.presence_enabled);
        let presence_key = options
            .presence_key
            .unwrap_or_else(|| self.hub.new_presence_key());
        self.channels.insert(
            topic.into(),
            Joined {
                channel,
                member: member_id,
                join_ref,
                token,
                exp: claims.exp,
                presence_key,
                ack: options.ack,
                self_broadcast: options.self_broadcast,
            },
        );
        self.update_deadline();
    }

    fn leave(&mut self, m: &ClientMessage<'_>) {
        let Some(joined) = self.channels.remove(&*m.topic) else {
            return;
        };
        self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
        self.hub.leave(&joined.channel, joined.member);
        self.push_close(&joined.join_ref, &m.topic);
        self.update_deadline();
    }

    fn push_close(&self, join_ref: &Ref, topic: &str) {
        let ser = self.conn.serializer;
        self.push(frames::build(topic.len() + 48, |out| {
            encode::close(out, ser, join_ref, topic)
        }));
    }

    fn broadcast(&mut self, m: &ClientMessage<'_>) {
        let joined = &self.channels[&*m.topic];
        let msg = match &m.payload {
            Payload::Json(raw) => Broadcast::Json(raw.get()),
            Payload::UserBroadcast(b) => Broadcast::User {
                event: b.event,
                encoding: b.encoding,
                body: b.body,
            },
        };
        joined
            .channel
            .broadcast(joined.member, joined.self_broadcast, msg);
        if joined.ack {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
        }
    }

    fn presence(&mut self, m: &ClientMessage<'_>, now_ms: u64) {
        let joined = &self.channels[&*m.topic];
        let value: Value = m
            .payload
            .as_json()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        let Some(event) = value.get("event") else {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            return;
        };
        let event = event.as_str().map(str::to_ascii_lowercase);
        match event.as_deref() {
            Some("track") => {
                let tracked = match value.get("payload") {
                    None => Ok(PresencePayload::empty()),
                    Some(p) => PresencePayload::from_value(p.clone()),
                };
                match tracked {
                    Ok(payload) => {
                        let reply =
                            self.reply_frame(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
                        let phx_ref = self.hub.next_phx_ref(now_ms.saturating_mul(1_000_000));
                        joined.channel.track(
                            joined.member,
                            &self.conn,
                            &joined.presence_key,
                            payload,
                            phx_ref,
                            reply,
                        );
                    }
                    Err(e) => self.reply_reason(&m.join_ref, &m.msg_ref, &m.topic, &e.to_string()),
                }
            }
            Some("untrack") => {
                let reply = self.reply_frame(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
                joined.channel.untrack(joined.member, &self.conn, reply);
            }
            _ => self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Error, "{}"),
        }
    }

    fn refresh_token(&mut self, m: &ClientMessage<'_>, now_ms: u64) {
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
        match self.hub.verifier.verify(token, (now_ms / 1000) as i64) {
            Ok(claims) => {
                let joined = self.channels.get_mut(&*m.topic).expect("checked above");
                joined.token = token.clone();
                joined.exp = claims.exp;
                self.update_deadline();
            }
            Err(e) => self.shut_down(&m.topic, &e.to_string()),
        }
    }

    /// Closes a channel from the server side: a `system` error with `message`, then
    /// `phx_close`, as Supabase's `shutdown_response` does.
    fn shut_down(&mut self, topic: &str, message: &str) {
        let Some(joined) = self.channels.remove(topic) else {
            return;
        };
        let sub_topic = topic.strip_prefix("realtime:").unwrap_or(topic);
        let payload = serde_json::json!({
            "extension": "system",
            "status": "error",
            "message": message,
            "channel": sub_topic,
        })
        .to_string();
        let ser = self.conn.serializer;
        self.push(frames::build(payload.len() + topic.len() + 48, |out| {
            encode::push(out, ser, &joined.join_ref, topic, "system", &payload)
        }));
        self.hub.leave(&joined.channel, joined.member);
        self.push_close(&joined.join_ref, topic);
        self.update_deadline();
    }

    /// Closes the channels whose token expired by `now_ms`.
    pub fn on_timers(&mut self, now_ms: u64) {
        let now = (now_ms / 1000) as i64;
        let expired: Vec<(Box<str>, i64)> = self
            .channels
            .iter()
            .filter(|(_, j)| j.exp <= now)
            .map(|(topic, j)| (topic.clone(), j.exp))
            .collect();
        for (topic, exp) in expired {
            let message = AuthError::Expired {
                seconds_ago: now - exp,
            }
            .to_string();
            self.shut_down(&topic, &message);
        }
        self.update_deadline();
    }

    fn update_deadline(&self) {
        let deadline = self
            .channels
            .values()
            .map(|j| (j.exp.max(0) as u64).saturating_mul(1000))
            .min();
        self.conn
            .token_deadline_ms
            .store(deadline.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The socket is gone: leaves every channel, so the others see this socket's presences go.
    pub fn terminate(&mut self) {
        for (_, joined) in self.channels.drain() {
            self.hub.leave(&joined.channel, joined.member);
        }
    }

    /// The topics this socket has joined.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(|k| &**k)
    }
}
