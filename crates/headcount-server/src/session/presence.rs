//! Presence calls of a session: the client window, the checks a track must pass, and the
//! per-socket presence budget.

use headcount_presence::Payload as PresencePayload;
use headcount_protocol::ClientMessage;
use headcount_protocol::encode::Status;
use headcount_protocol::payloads::PresenceCall;

use super::*;

impl<N: Node> Session<N> {
    /// A presence call: the client window first (every call counts), then track or untrack.
    pub(super) fn presence(&mut self, m: &ClientMessage<'_>, now: Now) {
        let call = PresenceCall::parse(m.payload.as_json().map(|p| p.get()));
        if call == PresenceCall::Nothing {
            self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
            return;
        }
        if !self
            .rates
            .presence_call(&self.hub.config().limits, &m.topic, now.ms)
        {
            self.hub.metrics().refused(Limit::ClientPresence);
            self.shut_down(&m.topic, Shutdown::PresenceWindow, now);
            return;
        }
        let joined = &self.channels[&*m.topic];
        match call {
            PresenceCall::Track(value) => {
                if !joined.grants.presence_write {
                    self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Error, "{}");
                    return;
                }
                let payload = PresencePayload::from_value(value);
                let payload = match payload {
                    Ok(payload) => payload,
                    Err(e) => {
                        return self.reply_reason(&m.join_ref, &m.msg_ref, &m.topic, e);
                    }
                };
                if self.hub.config().strict_presence
                    && joined.claims.sub.as_deref() != Some(&joined.presence_key)
                {
                    return self.reply_reason(
                        &m.join_ref,
                        &m.msg_ref,
                        &m.topic,
                        Refused::StrictPresence,
                    );
                }
                if joined.tracked.as_ref() == Some(&payload) {
                    // An identical re-track changes nothing.
                    return self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
                }
                // The key is stored and sent with every meta: it counts toward the payload.
                let size = payload.as_str().len() + joined.presence_key.len();
                if size > self.hub.config().limits.max_payload_bytes() {
                    self.hub.metrics().refused(Limit::PayloadSize);
                    return self.shut_down(&m.topic, Shutdown::TrackTooBig, now);
                }
                if size + self.presence_bytes_elsewhere(&m.topic)
                    > self.hub.config().max_presence_bytes_per_client
                {
                    self.hub.metrics().refused(Limit::PayloadSize);
                    return self.reply_reason(
                        &m.join_ref,
                        &m.msg_ref,
                        &m.topic,
                        Refused::PresenceBytes,
                    );
                }
                match self.rates.track(&*self.hub, now.ms) {
                    Verdict::Allowed => {}
                    Verdict::OverClient => {
                        return self.shut_down(&m.topic, Shutdown::PresenceRate, now);
                    }
                    Verdict::OverNode => {
                        // Others used the node's limit up: this track is refused; the channel
                        // and the member's current presence stay.
                        let (jr, topic) = (&m.join_ref, &m.topic);
                        return self.reply_reason(jr, &m.msg_ref, topic, Refused::PresenceRate);
                    }
                }
                let reply = self.reply_frame(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
                let joined = self.channels.get_mut(&*m.topic).expect("joined");
                joined.tracked = Some(payload.clone());
                let track = Track {
                    key: &joined.presence_key,
                    payload,
                    unix_ns: now.unix_ms.saturating_mul(1_000_000),
                    reply,
                };
                self.hub
                    .track(&joined.channel, joined.member, &self.conn, track);
            }
            PresenceCall::Untrack => {
                let reply = self.reply_frame(&m.join_ref, &m.msg_ref, &m.topic, Status::Ok, "{}");
                let joined = self.channels.get_mut(&*m.topic).expect("joined");
                joined.tracked = None;
                self.hub
                    .untrack(&joined.channel, joined.member, &self.conn, Some(reply));
            }
            PresenceCall::Unknown | PresenceCall::Nothing => {
                self.reply(&m.join_ref, &m.msg_ref, &m.topic, Status::Error, "{}")
            }
        }
    }

    /// Bytes of presence (key and payload) this socket tracks on its channels other than
    /// `topic`. Computed when asked (tracks are rate-limited per member), so no count can drift.
    fn presence_bytes_elsewhere(&self, topic: &str) -> usize {
        self.channels
            .iter()
            .filter(|(t, _)| &***t != topic)
            .filter_map(|(_, j)| {
                let payload = j.tracked.as_ref()?;
                Some(payload.as_str().len() + j.presence_key.len())
            })
            .sum()
    }
}
