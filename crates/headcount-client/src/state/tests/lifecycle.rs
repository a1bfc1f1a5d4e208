//! Channel lifecycles: joins, rejoins with backoff, timeouts, closes and leaves.

use std::time::Duration;

use serde_json::json;

use super::*;

#[test]
fn the_latest_status_is_tracked_again_after_a_reconnect() {
    let mut h = Harness::v2();
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    h.state.push(
        T,
        Command::AutoTrack(json!({"s": 1}).as_object().unwrap().clone()),
        None,
        h.now,
    );
    h.reply_ok("1", "1");
    assert_eq!(h.sent().last().unwrap()[4]["payload"], json!({"s": 1}));
    h.state.push(
        T,
        Command::AutoTrack(json!({"s": 2, "t": 3}).as_object().unwrap().clone()),
        Some(PushId(5)),
        h.now,
    );
    assert_eq!(
        h.sent().last().unwrap()[4]["payload"],
        json!({"s": 2, "t": 3})
    );
    h.outputs();

    h.state.handle_close(h.now);
    assert_eq!(h.state.channel_state(T), ChannelState::Errored);
    assert_eq!(
        h.outputs(),
        [
            Output::Done {
                id: PushId(5),
                result: Err(Error::Disconnected)
            },
            Output::State {
                topic: T.into(),
                state: ChannelState::Errored
            },
            Output::Status {
                topic: T.into(),
                event: StatusEvent {
                    status: SubscribeStatus::ChannelError,
                    reason: Some("connection lost".into())
                }
            },
        ]
    );
    h.advance(Duration::from_secs(60));
    assert!(h.sent().is_empty(), "no rejoin while disconnected");
    h.open();
    let rejoin = h.sent();
    assert_eq!(rejoin.len(), 1);
    let jr = rejoin[0][0].as_str().unwrap().to_owned();
    assert_ne!(jr, "1", "a rejoin has a new join_ref");
    h.reply_ok(&jr, &jr);
    assert!(h.statuses().contains(&(SubscribeStatus::Subscribed, None)));
    let track = h.sent();
    assert_eq!(track.len(), 1);
    assert_eq!(track[0][0], json!(jr));
    assert_eq!(
        track[0][4]["payload"],
        json!({"s": 2, "t": 3}),
        "the latest status, not the first"
    );
}

#[test]
fn a_refused_join_rejoins_with_backoff() {
    let mut h = Harness::v2();
    let timing = Timing {
        heartbeat_interval: Duration::from_secs(3600),
        ..Timing::default()
    };
    h.state = ClientState::new(Serializer::V2, timing, None);
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    let mut delays = Vec::new();
    let mut last = h.now;
    for _ in 0..5 {
        let join = h.sent().pop().expect("a join");
        let jr = join[0].as_str().unwrap().to_owned();
        delays.push((h.now - last).as_secs());
        last = h.now;
        h.recv(json!([jr, jr, T, "phx_reply", {"status": "error", "response": {"reason": "Unauthorized: no"}}]));
        assert_eq!(
            h.statuses(),
            [(
                SubscribeStatus::ChannelError,
                Some("Unauthorized: no".into())
            )]
        );
        assert_eq!(h.state.channel_state(T), ChannelState::Errored);
        h.advance_to_deadline();
    }
    assert_eq!(delays, [0, 1, 2, 5, 10]);
    let join = h.sent().pop().unwrap();
    let jr = join[0].as_str().unwrap().to_owned();
    h.reply_ok(&jr, &jr);
    h.outputs();
    // A later error starts the schedule again.
    h.recv(json!([jr, jr, T, "phx_error", {}]));
    assert_eq!(
        h.statuses(),
        [(SubscribeStatus::ChannelError, Some("channel error".into()))]
    );
    assert_eq!(h.state.poll_timeout(), Some(h.now + Duration::from_secs(1)));
}

#[test]
fn a_join_without_reply_times_out_leaves_and_rejoins() {
    let mut h = Harness::v2();
    h.open();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    h.sent();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.statuses(), [(SubscribeStatus::TimedOut, None)]);
    assert_eq!(h.sent(), [json!(["1", "2", T, "phx_leave", {}])]);
    // A late reply to the timed-out join is ignored.
    h.reply_ok("1", "1");
    assert!(h.statuses().is_empty());
    h.advance(Duration::from_secs(1));
    let rejoin = h.sent();
    assert_eq!(rejoin[0][3], "phx_join");
    assert_eq!(rejoin[0][0], "3");
}

#[test]
fn a_join_times_out_even_without_a_connection() {
    let mut h = Harness::v2();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.statuses(), [(SubscribeStatus::TimedOut, None)]);
    assert!(h.sent().is_empty());
    h.open();
    assert_eq!(
        h.sent()[0][3],
        "phx_join",
        "an errored channel rejoins on open"
    );
}

#[test]
fn outdated_messages_are_dropped() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default().presence_enabled(true));
    h.outputs();
    h.recv(json!(["999", null, T, "presence_state", {"a": {"metas": [{"phx_ref": "1"}]}}]));
    h.recv(json!(["999", "999", T, "phx_close", {}]));
    assert!(h.outputs().is_empty());
    assert_eq!(h.state.channel_state(T), ChannelState::Joined);
    h.recv(json!([jr, null, T, "presence_state", {"a": {"metas": [{"phx_ref": "1"}]}}]));
    assert!(h.outputs().iter().any(
        |o| matches!(o, Output::Presence { event: PresenceEvent::Sync(s), .. } if s.count() == 1)
    ));
}

#[test]
fn a_server_close_reports_the_system_message_and_does_not_rejoin() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default());
    h.state.push(T, track(json!({})), Some(PushId(3)), h.now);
    h.outputs();
    h.recv(json!([jr, null, T, "system", {"extension": "system", "status": "error", "message": "Client presence rate limit exceeded", "channel": "room"}]));
    h.recv(json!([jr, jr, T, "phx_close", {}]));
    assert_eq!(
        h.outputs(),
        [
            Output::Done {
                id: PushId(3),
                result: Err(Error::ChannelClosed)
            },
            Output::State {
                topic: T.into(),
                state: ChannelState::Closed
            },
            Output::Status {
                topic: T.into(),
                event: StatusEvent {
                    status: SubscribeStatus::Closed,
                    reason: Some("Client presence rate limit exceeded".into())
                }
            },
            Output::Removed { topic: T.into() },
        ]
    );
    h.advance(Duration::from_secs(60));
    assert!(h.sent().iter().all(|f| f[3] != "phx_join"));
    h.state.push(T, Command::Untrack, Some(PushId(4)), h.now);
    assert_eq!(
        h.outputs(),
        [Output::Done {
            id: PushId(4),
            result: Err(Error::NotSubscribed)
        }]
    );
}

#[test]
fn leave_waits_for_the_reply_or_the_timeout() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default());
    h.outputs();
    h.state.leave(T, Some(PushId(1)), h.now);
    assert_eq!(h.sent(), [json!([jr, "2", T, "phx_leave", {}])]);
    assert_eq!(h.state.channel_state(T), ChannelState::Leaving);
    h.reply_ok(&jr, "2");
    let out = h.outputs();
    assert!(out.contains(&Output::Done {
        id: PushId(1),
        result: Ok(())
    }));
    assert!(out.contains(&Output::Status {
        topic: T.into(),
        event: StatusEvent {
            status: SubscribeStatus::Closed,
            reason: None
        }
    }));
    // The phx_close that follows is for a channel that is gone.
    h.recv(json!([jr, jr, T, "phx_close", {}]));
    assert!(h.outputs().is_empty());

    let jr = h.joined(ChannelOptions::default());
    h.outputs();
    h.state.leave(T, Some(PushId(2)), h.now);
    h.sent();
    h.advance(Duration::from_secs(10));
    assert!(h.outputs().contains(&Output::Done {
        id: PushId(2),
        result: Ok(())
    }));
    assert_eq!(h.state.channel_state(T), ChannelState::Closed);
    let _ = jr;
}
