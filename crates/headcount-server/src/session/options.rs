//! What a `phx_join` payload asks for.

use serde_json::Value;

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
    /// Whether the requested presence key is longer than `max` bytes.
    pub fn key_too_long(&self, max: usize) -> bool {
        self.presence_key.as_ref().is_some_and(|k| k.len() > max)
    }

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
