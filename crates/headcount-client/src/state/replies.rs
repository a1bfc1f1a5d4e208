//! The replies the state waits for, and what each one does when it comes.

use std::time::Instant;

use headcount_protocol::{Payload, Ref};
use serde_json::Value;

use super::{ClientState, PushId};
use crate::error::Error;

/// A reply the state waits for.
#[derive(Debug)]
pub(super) enum Pending {
    /// The reply to a `phx_join`; its ref is the channel's join_ref.
    Join { topic: String },
    /// The reply to a `phx_leave` of the join `join_ref`.
    Leave {
        topic: String,
        join_ref: String,
        id: Option<PushId>,
        deadline: Instant,
    },
    /// The reply to any other push.
    Push {
        topic: String,
        id: Option<PushId>,
        deadline: Instant,
    },
}

impl ClientState {
    pub(super) fn handle_reply(
        &mut self,
        topic: &str,
        join_ref: &Ref,
        msg_ref: &Ref,
        payload: Value,
        now: Instant,
    ) {
        let msg_ref = match msg_ref {
            Ref::Str(r) | Ref::Num(r) => &**r,
            Ref::Null => return,
        };
        if topic == "phoenix" {
            if self.heartbeat_ref.as_deref() == Some(msg_ref) {
                self.heartbeat_ref = None;
                self.heartbeat_at = Some(now + self.timing.heartbeat_interval);
            }
            return;
        }
        let ok = payload.get("status").and_then(Value::as_str) == Some("ok");
        let response = payload.get("response").cloned().unwrap_or(Value::Null);
        let Some(pending) = self.replies.remove(msg_ref) else {
            return;
        };
        match pending {
            Pending::Join { topic: t } if t == topic => {
                let current = self.channels.get(topic).and_then(|c| c.join_ref.as_deref());
                let stale =
                    matches!(join_ref, Ref::Str(jr) | Ref::Num(jr) if current != Some(&**jr));
                if current == Some(msg_ref) && !stale {
                    if ok {
                        self.on_join_ok(topic, now);
                    } else {
                        self.on_join_error(topic, reason_of(&response), now);
                    }
                }
            }
            Pending::Leave {
                topic: t,
                join_ref,
                id,
                ..
            } if t == topic => {
                self.finish_leave(topic, &join_ref, id);
            }
            Pending::Push { topic: t, id, .. } if t == topic => {
                let result = if ok {
                    Ok(())
                } else {
                    Err(Error::Refused(reason_of(&response)))
                };
                self.done(id, result);
            }
            other => {
                // A reply on another topic with this ref is not ours: keep waiting.
                self.replies.insert(msg_ref.to_owned(), other);
            }
        }
    }
}

/// The JSON of a text payload (`null` for binary ones or invalid JSON).
pub(super) fn json_value(payload: &Payload<'_>) -> Value {
    payload
        .as_json()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null)
}

/// The reason of an error reply: `response.reason` if it is a string, else the response as
/// JSON (Supabase answers an oversized broadcast with the bare string
/// `"payload_size_exceeded"`).
fn reason_of(response: &Value) -> String {
    match response {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("reason") {
            Some(Value::String(s)) => s.clone(),
            _ => response.to_string(),
        },
        other => other.to_string(),
    }
}
