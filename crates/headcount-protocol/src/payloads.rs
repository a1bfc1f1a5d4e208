//! The payloads both sides of the wire agree on, as types: the `phx_join` configuration, the
//! presence push, and the `system` message. The server reads what the SDK writes with the same
//! type, and `tests/payloads.rs` holds their golden vectors (literal payloads as realtime-js
//! sends them and as Supabase answers).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a `phx_join` payload asks for.
///
/// Read leniently, as Supabase does: a payload it cannot read joins with the defaults, and
/// booleans are Supabase's `FlexibleBoolean` (`true`/`false`, or those words in any case).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinConfig {
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

fn flexible_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

impl JoinConfig {
    /// Whether the requested presence key is longer than `max` bytes.
    pub fn key_too_long(&self, max: usize) -> bool {
        self.presence_key.as_ref().is_some_and(|k| k.len() > max)
    }

    /// Reads a join payload (JSON text); anything unreadable gives the defaults.
    pub fn parse(payload: Option<&str>) -> JoinConfig {
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
        JoinConfig {
            ack: flexible_bool(config["broadcast"].get("ack")),
            self_broadcast: flexible_bool(config["broadcast"].get("self")),
            presence_enabled: flexible_bool(config["presence"].get("enabled")),
            presence_key: key,
            private: flexible_bool(config.get("private")),
            access_token: token("access_token").or_else(|| token("user_token")),
        }
    }

    /// The payload as realtime-js writes it (an empty `postgres_changes` list, the key as an
    /// empty string when there is none), with `version` naming the client.
    pub fn to_json(&self, version: &str) -> String {
        let mut payload = serde_json::json!({
            "config": {
                "broadcast": {"ack": self.ack, "self": self.self_broadcast},
                "presence": {
                    "key": self.presence_key.as_deref().unwrap_or(""),
                    "enabled": self.presence_enabled,
                },
                "postgres_changes": [],
                "private": self.private,
            },
            "version": version,
        });
        if let Some(token) = &self.access_token {
            payload["access_token"] = Value::String(token.clone());
        }
        payload.to_string()
    }
}

/// A `presence` push: track a payload, or untrack.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceCall {
    /// `{"type":"presence","event":"track","payload":...}`; an absent payload is `{}`.
    Track(Value),
    /// `{"type":"presence","event":"untrack"}`.
    Untrack,
    /// No `event` at all: Supabase answers `ok` and does nothing.
    Nothing,
    /// Another event: refused.
    Unknown,
}

impl PresenceCall {
    /// Reads a presence push's payload (JSON text). Events are matched in any case, as
    /// Supabase does. A track's payload is taken out of the parsed message, not copied.
    pub fn parse(payload: Option<&str>) -> PresenceCall {
        let mut value: Value = payload
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        let Some(event) = value.get("event") else {
            return PresenceCall::Nothing;
        };
        match event.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("track") => PresenceCall::Track(
                value
                    .as_object_mut()
                    .and_then(|o| o.remove("payload"))
                    .unwrap_or_else(|| Value::Object(Default::default())),
            ),
            Some("untrack") => PresenceCall::Untrack,
            _ => PresenceCall::Unknown,
        }
    }

    /// The push's payload as realtime-js writes it.
    pub fn to_json(&self) -> String {
        match self {
            PresenceCall::Track(payload) => {
                serde_json::json!({"type": "presence", "event": "track", "payload": payload})
                    .to_string()
            }
            PresenceCall::Untrack => r#"{"type":"presence","event":"untrack"}"#.to_owned(),
            PresenceCall::Nothing => r#"{"type":"presence"}"#.to_owned(),
            PresenceCall::Unknown => r#"{"type":"presence","event":"unknown"}"#.to_owned(),
        }
    }
}

/// A `system` message: how the server tells a member that its channel ended (or, on Supabase,
/// that an extension is ready).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemMessage {
    /// `"system"` for the messages that end a channel.
    pub extension: String,
    /// `"error"` or `"ok"`.
    pub status: String,
    /// What happened, in Supabase's words.
    pub message: String,
    /// The channel name, without `realtime:`.
    pub channel: String,
}

impl SystemMessage {
    /// The error that ends channel `channel` (named without `realtime:`) with `message`.
    pub fn error(channel: &str, message: impl Into<String>) -> SystemMessage {
        SystemMessage {
            extension: "system".into(),
            status: "error".into(),
            message: message.into(),
            channel: channel.into(),
        }
    }

    /// Whether this message ends the channel.
    pub fn is_error(&self) -> bool {
        self.status == "error"
    }

    /// The payload, in Supabase's key order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a `system` payload; `None` if it is not one.
    pub fn parse(payload: &str) -> Option<SystemMessage> {
        serde_json::from_str(payload).ok()
    }
}
