//! The client state machine, driven by literal server frames on a virtual clock: the harness
//! and the connection-level cases here, channels in the submodules.

mod lifecycle;
mod pushes;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::PresenceEvent;
use crate::options::Backoff;

const T: &str = "realtime:room";

struct Harness {
    state: ClientState,
    now: Instant,
}

impl Harness {
    fn new(serializer: Serializer) -> Harness {
        Harness {
            state: ClientState::new(serializer, Timing::default(), Some("tok".into())),
            now: Instant::now(),
        }
    }

    fn v2() -> Harness {
        Harness::new(Serializer::V2)
    }

    fn open(&mut self) {
        self.state.handle_open(self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.state.handle_timeout(self.now);
    }

    /// Advances to the state's next deadline.
    fn advance_to_deadline(&mut self) {
        let at = self.state.poll_timeout().expect("a deadline");
        self.now = self.now.max(at);
        self.state.handle_timeout(self.now);
    }

    fn recv(&mut self, frame: Value) {
        self.state
            .handle_text(frame.to_string().as_bytes(), self.now);
    }

    /// The text frames written since the last call, as JSON.
    fn sent(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.state.poll_transmit())
            .map(|f| match f {
                OutFrame::Text(t) => serde_json::from_str(&t).unwrap(),
                OutFrame::Binary(b) => json!({ "binary": b }),
            })
            .collect()
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.state.poll_output()).collect()
    }

    fn statuses(&mut self) -> Vec<(SubscribeStatus, Option<String>)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Status { event, .. } => Some((event.status, event.reason)),
                _ => None,
            })
            .collect()
    }

    /// Subscribes and answers the join with ok; returns the join_ref.
    fn joined(&mut self, options: ChannelOptions) -> String {
        self.state.subscribe(T, options, self.now);
        let join = self.sent().pop().expect("a join");
        let jr = join[0].as_str().unwrap().to_owned();
        self.reply_ok(&jr, &jr);
        jr
    }

    fn reply_ok(&mut self, jr: &str, r: &str) {
        self.recv(json!([jr, r, T, "phx_reply", {"status": "ok", "response": {}}]));
    }
}

fn track(status: Value) -> Command {
    Command::Track(status.as_object().unwrap().clone())
}

#[test]
fn refs_count_up_and_a_join_ref_is_its_join_s_ref() {
    let mut h = Harness::v2();
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    let join = h.sent();
    assert_eq!(join[0][0], "1");
    assert_eq!(join[0][1], "1");
    assert_eq!(join[0][2], T);
    assert_eq!(join[0][3], "phx_join");
    assert_eq!(join[0][4]["access_token"], "tok");
    assert_eq!(
        join[0][4]["config"]["presence"],
        json!({"key": "", "enabled": false})
    );
    h.reply_ok("1", "1");
    h.state
        .push(T, track(json!({"a": 1})), Some(PushId(1)), h.now);
    h.state.push(T, Command::Untrack, Some(PushId(2)), h.now);
    let pushes = h.sent();
    assert_eq!(
        pushes,
        [
            json!(["1", "2", T, "presence", {"type": "presence", "event": "track", "payload": {"a": 1}}]),
            json!(["1", "3", T, "presence", {"type": "presence", "event": "untrack"}]),
        ]
    );
    assert_eq!(h.state.join_ref(T), Some("1"));
}

#[test]
fn replies_resolve_their_pushes_and_errors_carry_the_reason() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default());
    h.outputs();
    h.state.push(T, track(json!({})), Some(PushId(7)), h.now);
    h.state
        .push(T, track(json!({"b": 1})), Some(PushId(8)), h.now);
    let refs: Vec<String> = h
        .sent()
        .iter()
        .map(|f| f[1].as_str().unwrap().to_owned())
        .collect();
    h.recv(json!([jr, refs[1], T, "phx_reply", {"status": "error", "response": {"reason": "Presence track payload must be a map"}}]));
    h.reply_ok(&jr, &refs[0]);
    assert_eq!(
        h.outputs(),
        [
            Output::Done {
                id: PushId(8),
                result: Err(Error::Refused(
                    "Presence track payload must be a map".into()
                ))
            },
            Output::Done {
                id: PushId(7),
                result: Ok(())
            },
        ]
    );
}

#[test]
fn heartbeats_every_interval_and_a_missed_one_disconnects() {
    let mut h = Harness::v2();
    h.open();
    assert_eq!(
        h.state.poll_timeout(),
        Some(h.now + Duration::from_secs(25))
    );
    h.advance(Duration::from_secs(24));
    assert!(h.sent().is_empty());
    h.advance(Duration::from_secs(1));
    let hb = h.sent();
    assert_eq!(hb, [json!([null, "1", "phoenix", "heartbeat", {}])]);
    h.now += Duration::from_secs(3);
    h.recv(json!([null, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]));
    assert_eq!(
        h.state.poll_timeout(),
        Some(h.now + Duration::from_secs(25)),
        "the next one is an interval after the reply"
    );
    h.advance(Duration::from_secs(25));
    assert_eq!(h.sent()[0][1], "2");
    h.advance(Duration::from_secs(25));
    assert!(
        h.sent().is_empty(),
        "no second heartbeat while one is unanswered"
    );
    assert_eq!(
        h.outputs(),
        [Output::Disconnect {
            reason: "heartbeat timeout".into()
        }]
    );
    h.state.handle_close(h.now);
    assert_eq!(
        h.state.poll_timeout(),
        None,
        "no heartbeats while disconnected"
    );
}

#[test]
fn v1_frames_are_objects_and_heartbeats_have_no_join_ref() {
    let mut h = Harness::new(Serializer::V1);
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    let join = h.sent().pop().unwrap();
    assert_eq!(
        (&join["ref"], &join["join_ref"], &join["event"]),
        (&json!("1"), &json!("1"), &json!("phx_join"))
    );
    h.recv(json!({"topic": T, "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"}));
    assert!(h.statuses().contains(&(SubscribeStatus::Subscribed, None)));
    h.advance(Duration::from_secs(25));
    let hb = h.sent().pop().unwrap();
    assert_eq!(
        hb,
        json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"})
    );
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".into(),
            payload: BroadcastPayload::Json(json!({"x": 1})),
        },
        Some(PushId(1)),
        h.now,
    );
    let b = h.sent().pop().unwrap();
    assert_eq!(
        b,
        json!({"topic": T, "event": "broadcast", "payload": {"type": "broadcast", "event": "e", "payload": {"x": 1}}, "ref": "3", "join_ref": "1"})
    );
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".into(),
            payload: BroadcastPayload::Binary(vec![1]),
        },
        Some(PushId(2)),
        h.now,
    );
    let done: Vec<Output> = h
        .outputs()
        .into_iter()
        .filter(|o| matches!(o, Output::Done { .. }))
        .collect();
    assert_eq!(
        done,
        [
            Output::Done {
                id: PushId(1),
                result: Ok(())
            },
            Output::Done {
                id: PushId(2),
                result: Err(Error::BinaryOnV1)
            },
        ]
    );
}

#[test]
fn set_auth_pushes_the_token_to_joined_channels_and_later_joins() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default());
    h.state
        .subscribe("realtime:other", ChannelOptions::default(), h.now);
    h.sent();
    h.state.set_auth("new".into());
    assert_eq!(
        h.sent(),
        [json!([jr, "3", T, "access_token", {"access_token": "new"}])]
    );
    h.state.set_auth("new".into());
    assert!(h.sent().is_empty(), "the same token is not pushed twice");
    h.state.handle_close(h.now);
    h.open();
    let joins = h.sent();
    assert_eq!(joins.len(), 2);
    assert!(joins.iter().all(|j| j[4]["access_token"] == "new"));
    assert_eq!(h.state.access_token(), Some("new"));
}

#[test]
fn subscribing_twice_is_a_no_op_and_disconnect_closes_everything() {
    let mut h = Harness::v2();
    h.open();
    h.joined(ChannelOptions::default());
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    assert!(h.sent().is_empty());
    h.state.push(T, Command::Untrack, Some(PushId(1)), h.now);
    h.outputs();
    h.state.disconnect();
    let out = h.outputs();
    assert_eq!(
        out[0],
        Output::Done {
            id: PushId(1),
            result: Err(Error::Disconnected)
        }
    );
    assert!(out.contains(&Output::Status {
        topic: T.into(),
        event: StatusEvent {
            status: SubscribeStatus::Closed,
            reason: None
        }
    }));
    assert!(!h.state.is_connected());
}

#[test]
fn custom_schedules_are_used() {
    let timing = Timing {
        rejoin_after: Backoff::new([Duration::from_millis(10)]),
        timeout: Duration::from_millis(100),
        ..Timing::default()
    };
    let mut h = Harness::v2();
    h.state = ClientState::new(Serializer::V2, timing, None);
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    let join = h.sent().pop().unwrap();
    assert!(
        join[4].get("access_token").is_none(),
        "no token, no access_token"
    );
    h.advance(Duration::from_millis(100));
    assert_eq!(h.statuses(), [(SubscribeStatus::TimedOut, None)]);
    assert_eq!(
        h.state.poll_timeout(),
        Some(h.now + Duration::from_millis(10))
    );
}
