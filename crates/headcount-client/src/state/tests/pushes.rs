//! Pushes: broadcasts out and in, the buffer before the join, timeouts, presence.

use std::time::Duration;

use serde_json::json;

use super::*;

#[test]
fn v2_broadcasts_go_out_as_binary_kind_3() {
    let mut h = Harness::v2();
    h.open();
    h.joined(ChannelOptions::default());
    h.outputs();
    h.state.push(
        T,
        Command::Broadcast {
            event: "cursor".into(),
            payload: BroadcastPayload::Json(json!({"x": 1})),
        },
        Some(PushId(1)),
        h.now,
    );
    let frame = h.state.poll_transmit().unwrap();
    let mut expected = vec![3, 1, 1, 13, 6, 0, 1];
    expected.extend_from_slice(b"12realtime:roomcursor{\"x\":1}");
    assert_eq!(frame, OutFrame::Binary(expected));
    assert_eq!(
        h.outputs(),
        [Output::Done {
            id: PushId(1),
            result: Ok(())
        }],
        "no ack: done once sent"
    );
    h.state.push(
        T,
        Command::Broadcast {
            event: "raw".into(),
            payload: BroadcastPayload::Binary(vec![0, 255]),
        },
        None,
        h.now,
    );
    let OutFrame::Binary(b) = h.state.poll_transmit().unwrap() else {
        panic!("binary")
    };
    assert_eq!(b[6], 0, "opaque bytes are encoding 0");
    assert_eq!(&b[b.len() - 2..], [0, 255]);
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".repeat(300),
            payload: BroadcastPayload::Json(Value::Null),
        },
        None,
        h.now,
    );
    let text = h.sent().pop().unwrap();
    assert_eq!(text[3], "broadcast", "too long for kind 3: JSON text");
}

#[test]
fn acked_broadcasts_wait_for_the_reply() {
    let mut h = Harness::v2();
    h.open();
    let jr = h.joined(ChannelOptions::default().broadcast_ack(true));
    h.outputs();
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".into(),
            payload: BroadcastPayload::Json(json!({})),
        },
        Some(PushId(1)),
        h.now,
    );
    h.sent();
    assert!(h.outputs().is_empty());
    h.reply_ok(&jr, "2");
    assert_eq!(
        h.outputs(),
        [Output::Done {
            id: PushId(1),
            result: Ok(())
        }]
    );
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".into(),
            payload: BroadcastPayload::Json(json!({})),
        },
        Some(PushId(2)),
        h.now,
    );
    h.recv(
        json!([jr, "3", T, "phx_reply", {"status": "error", "response": "payload_size_exceeded"}]),
    );
    assert_eq!(
        h.outputs(),
        [Output::Done {
            id: PushId(2),
            result: Err(Error::Refused("payload_size_exceeded".into()))
        }]
    );
}

#[test]
fn broadcasts_are_received_from_text_and_kind_4() {
    let mut h = Harness::v2();
    h.open();
    h.joined(ChannelOptions::default());
    h.outputs();
    h.recv(json!([null, null, T, "broadcast", {"type": "broadcast", "event": "cursor", "payload": {"x": 1}, "meta": {"id": "m"}}]));
    let mut kind4 = vec![4, 13, 4, 0, 1];
    kind4.extend_from_slice(b"realtime:roomping[1]");
    h.state.handle_binary(&kind4, h.now);
    let mut bin = vec![4, 13, 3, 0, 0];
    bin.extend_from_slice(b"realtime:roomraw\x00\x01");
    h.state.handle_binary(&bin, h.now);
    assert_eq!(
        h.outputs(),
        [
            Output::Broadcast {
                topic: T.into(),
                message: BroadcastMessage {
                    event: "cursor".into(),
                    payload: BroadcastPayload::Json(json!({"x": 1})),
                    meta: Some(json!({"id": "m"}))
                }
            },
            Output::Broadcast {
                topic: T.into(),
                message: BroadcastMessage {
                    event: "ping".into(),
                    payload: BroadcastPayload::Json(json!([1])),
                    meta: None
                }
            },
            Output::Broadcast {
                topic: T.into(),
                message: BroadcastMessage {
                    event: "raw".into(),
                    payload: BroadcastPayload::Binary(vec![0, 1]),
                    meta: None
                }
            },
        ]
    );
}

#[test]
fn pushes_wait_for_the_join_in_order_and_the_status_is_tracked_after_it() {
    let mut h = Harness::v2();
    h.state
        .subscribe(T, ChannelOptions::default().presence_enabled(true), h.now);
    h.state.push(
        T,
        Command::AutoTrack(json!({"s": 1}).as_object().unwrap().clone()),
        Some(PushId(1)),
        h.now,
    );
    h.state.push(
        T,
        Command::Broadcast {
            event: "e".into(),
            payload: BroadcastPayload::Json(json!(1)),
        },
        Some(PushId(2)),
        h.now,
    );
    assert!(h.sent().is_empty(), "nothing goes out before a connection");
    assert!(
        h.outputs().contains(&Output::Done {
            id: PushId(1),
            result: Ok(())
        }),
        "an auto-track is stored at once"
    );
    h.open();
    let join = h.sent();
    assert_eq!(join.len(), 1);
    assert_eq!(join[0][4]["config"]["presence"]["enabled"], true);
    h.reply_ok("1", "1");
    let after = h.state.poll_transmit().unwrap();
    assert!(
        matches!(after, OutFrame::Binary(_)),
        "the buffered broadcast first"
    );
    let track = h.sent();
    assert_eq!(
        track,
        [
            json!(["1", "3", T, "presence", {"type": "presence", "event": "track", "payload": {"s": 1}}])
        ]
    );
}

#[test]
fn unanswered_pushes_time_out() {
    let mut h = Harness::v2();
    h.open();
    h.joined(ChannelOptions::default());
    h.outputs();
    h.state.push(T, Command::Untrack, Some(PushId(9)), h.now);
    h.advance(Duration::from_secs(9));
    assert!(h.outputs().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.outputs(),
        [Output::Done {
            id: PushId(9),
            result: Err(Error::Timeout)
        }]
    );
}

#[test]
fn buffered_pushes_time_out_and_the_buffer_is_bounded() {
    let mut h = Harness::v2();
    h.state.subscribe(T, ChannelOptions::default(), h.now);
    for i in 0..=PUSH_BUFFER_LIMIT as u64 {
        h.state.push(T, Command::Untrack, Some(PushId(i)), h.now);
    }
    let done: Vec<Output> = h
        .outputs()
        .into_iter()
        .filter(|o| matches!(o, Output::Done { .. }))
        .collect();
    assert_eq!(
        done,
        [Output::Done {
            id: PushId(0),
            result: Err(Error::BufferFull)
        }]
    );
    h.advance(Duration::from_secs(10));
    let timeouts = h
        .outputs()
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Output::Done {
                    result: Err(Error::Timeout),
                    ..
                }
            )
        })
        .count();
    assert_eq!(timeouts, PUSH_BUFFER_LIMIT);
}

#[test]
fn presence_diffs_wait_for_the_state_of_the_current_join() {
    let mut h = Harness::v2();
    h.open();
    h.state
        .subscribe(T, ChannelOptions::default().presence_enabled(true), h.now);
    h.sent();
    // A diff before the join's reply and state.
    h.recv(json!([null, null, T, "presence_diff", {"joins": {"b": {"metas": [{"phx_ref": "b1"}]}}, "leaves": {}}]));
    h.reply_ok("1", "1");
    h.outputs();
    h.recv(json!(["1", null, T, "presence_state", {"a": {"metas": [{"phx_ref": "a1", "s": 1}]}}]));
    let events: Vec<PresenceEvent> = h
        .outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Presence { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 3);
    let PresenceEvent::Sync(state) = &events[2] else {
        panic!("sync last")
    };
    assert_eq!(state.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(h.state.presence(T).unwrap().state().count(), 2);
}
