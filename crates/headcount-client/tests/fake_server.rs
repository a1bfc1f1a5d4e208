//! The SDK against a scripted fake server: every frame the client sends is checked, every
//! frame it gets is written by hand.

mod common;

use std::time::Duration;

use common::{FakeServer, Incoming, WAIT, within};
use headcount_client::{
    Backoff, BroadcastPayload, ChannelOptions, ConnectionState, Error, PresenceEvent,
    RealtimeClient, Serializer, SubscribeStatus,
};
use serde_json::{Value, json};

const ROOM: &str = "realtime:room";

fn quick(url: &str) -> headcount_client::ClientBuilder {
    RealtimeClient::builder(url, "the-key")
        .reconnect_after(Backoff::new([Duration::from_millis(50)]))
        .rejoin_after(Backoff::new([
            Duration::from_millis(100),
            Duration::from_millis(200),
        ]))
}

async fn next_status(
    statuses: &mut headcount_client::EventStream<headcount_client::StatusEvent>,
) -> headcount_client::StatusEvent {
    within("a status", statuses.recv()).await.expect("a status")
}

#[tokio::test]
async fn joins_tracks_and_syncs_like_the_component() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let presence = client
        .presence("room")
        .key("alice")
        .user_status(json!({"status": "online"}))
        .join()
        .unwrap();
    let mut events = presence.events();
    let mut statuses = presence.statuses();

    let mut conn = server.accept().await;
    assert!(
        conn.uri
            .starts_with("/realtime/v1/websocket?apikey=the-key&vsn=2.0.0"),
        "{}",
        conn.uri
    );
    let (jr, join) = conn.accept_join(ROOM).await;
    assert_eq!(
        join["config"],
        json!({"broadcast": {"ack": false, "self": false}, "presence": {"key": "alice", "enabled": true}, "postgres_changes": [], "private": false})
    );
    assert_eq!(join["access_token"], "the-key");
    assert_eq!(
        next_status(&mut statuses).await.status,
        SubscribeStatus::Subscribed
    );

    conn.send(
        jr.clone(),
        Value::Null,
        ROOM,
        "presence_state",
        json!({"bob": {"metas": [{"phx_ref": "B1", "status": "away"}]}}),
    )
    .await;
    let (tjr, tr, track) = conn.expect("presence").await;
    assert_eq!(tjr, jr);
    assert_eq!(
        track,
        json!({"type": "presence", "event": "track", "payload": {"status": "online"}})
    );
    conn.reply(tjr, tr, ROOM, json!({})).await;
    conn.send(Value::Null, Value::Null, ROOM, "presence_diff", json!({"joins": {"alice": {"metas": [{"phx_ref": "A1", "status": "online"}]}}, "leaves": {}})).await;

    let mut state = presence.state();
    within("both present", state.wait_for(|s| s.count() == 2))
        .await
        .unwrap();
    let snapshot = state.borrow().clone();
    assert_eq!(snapshot.get("alice").unwrap()[0].presence_ref, "A1");
    assert_eq!(snapshot.get("bob").unwrap()[0].payload["status"], "away");
    assert!(snapshot.is_synced());

    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(within("presence events", events.recv()).await.unwrap());
    }
    assert!(
        matches!(&seen[0], PresenceEvent::Join { key, current, .. } if key == "bob" && current.is_empty())
    );
    assert!(matches!(&seen[1], PresenceEvent::Sync(s) if s.count() == 1));
    assert!(
        matches!(&seen[2], PresenceEvent::Join { key, new, .. } if key == "alice" && new[0].payload["status"] == "online")
    );
    assert!(matches!(&seen[3], PresenceEvent::Sync(s) if s.count() == 2));
    assert_eq!(presence.error(), None);
    assert_eq!(presence.channel().name(), "room");
    assert_eq!(presence.client().endpoint(), client.endpoint());
}

#[tokio::test]
async fn update_status_merges_and_is_retracked_after_a_reconnect() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let presence = client
        .presence("room")
        .key("alice")
        .user_status(json!({"status": "online", "name": "Alice"}))
        .join()
        .unwrap();
    let mut statuses = presence.statuses();
    let mut conn = server.accept().await;
    let (jr, _) = conn.accept_join(ROOM).await;
    let (_, r, _) = conn.expect("presence").await;
    conn.reply(jr.clone(), r, ROOM, json!({})).await;
    assert!(next_status(&mut statuses).await.is_subscribed());

    let update = presence.update_status(json!({"status": "away"}));
    let (_, r, track) = conn.expect("presence").await;
    assert_eq!(track["payload"], json!({"status": "away", "name": "Alice"}));
    conn.reply(jr.clone(), r, ROOM, json!({})).await;
    within("the update's reply", update).await.unwrap();
    assert_eq!(presence.user_status().borrow()["status"], "away");

    conn.drop_abruptly();
    let lost = next_status(&mut statuses).await;
    assert_eq!(lost.status, SubscribeStatus::ChannelError);
    assert_eq!(
        presence.error().unwrap().to_string(),
        "Channel room error: CHANNEL_ERROR"
    );

    let mut conn = server.accept().await;
    let (jr2, _) = conn.accept_join(ROOM).await;
    assert_ne!(jr2, jr, "a rejoin has a new join_ref");
    assert!(next_status(&mut statuses).await.is_subscribed());
    let (tjr, r, track) = conn.expect("presence").await;
    assert_eq!(tjr, jr2);
    assert_eq!(
        track["payload"],
        json!({"status": "away", "name": "Alice"}),
        "the latest status"
    );
    conn.reply(jr2.clone(), r, ROOM, json!({})).await;
    conn.send(jr2, Value::Null, ROOM, "presence_state", json!({}))
        .await;
    let mut errors = presence.errors();
    within("the error to clear", errors.wait_for(Option::is_none))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missed_heartbeat_closes_and_reconnects() {
    let server = FakeServer::start().await;
    let client = quick(&server.url())
        .heartbeat_interval(Duration::from_millis(200))
        .connect()
        .unwrap();
    let mut conn = server.accept().await;
    conn.auto_heartbeat = false;
    let hb = within("a heartbeat", conn.try_recv_raw(WAIT))
        .await
        .expect("a frame");
    let Incoming::Text(hb) = hb else {
        panic!("{hb:?}")
    };
    assert_eq!(hb[2], "phoenix");
    assert_eq!(hb[3], "heartbeat");
    assert_eq!(hb[0], Value::Null);
    // Not answered: the next one is never sent; the client closes instead.
    let closed = conn.try_recv_raw(WAIT).await.expect("a close");
    assert_eq!(
        closed,
        Incoming::Close(Some((1000, "heartbeat timeout".into())))
    );
    let mut state = client.connection_state();
    let mut conn = server.accept().await;
    within("open again", state.wait_for(ConnectionState::is_open))
        .await
        .unwrap();
    // Answered heartbeats keep the connection.
    for _ in 0..3 {
        let Some(Incoming::Text(hb)) = conn.try_recv_raw(WAIT).await else {
            panic!("a heartbeat")
        };
        conn.reply(Value::Null, hb[1].clone(), "phoenix", json!({}))
            .await;
    }
    assert!(client.connection_state().borrow().is_open());
}

#[tokio::test]
async fn a_refused_join_is_retried_with_backoff() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let presence = client.presence("room").join().unwrap();
    let mut statuses = presence.statuses();
    let mut conn = server.accept().await;
    let (jr, r, _) = conn.expect("phx_join").await;
    conn.reply_error(
        jr,
        r,
        ROOM,
        "Unauthorized: You do not have permissions to read from this Channel topic: room",
    )
    .await;
    let status = next_status(&mut statuses).await;
    assert_eq!(status.status, SubscribeStatus::ChannelError);
    assert_eq!(
        status.reason.as_deref(),
        Some("Unauthorized: You do not have permissions to read from this Channel topic: room")
    );
    let error = presence.error().unwrap();
    assert_eq!(error.status, SubscribeStatus::ChannelError);

    let started = tokio::time::Instant::now();
    let (jr, _) = conn.accept_join(ROOM).await;
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "the rejoin waits for the backoff"
    );
    assert!(next_status(&mut statuses).await.is_subscribed());
    let (_, r, track) = conn.expect("presence").await;
    assert_eq!(
        track["payload"],
        json!({}),
        "no status: an empty meta, like the component"
    );
    conn.reply(jr.clone(), r, ROOM, json!({})).await;
}

#[tokio::test]
async fn a_join_without_reply_times_out_and_rejoins() {
    let server = FakeServer::start().await;
    let client = quick(&server.url())
        .timeout(Duration::from_millis(300))
        .connect()
        .unwrap();
    let channel = client.channel("room", ChannelOptions::default());
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    let (jr, _, _) = conn.expect("phx_join").await;
    assert_eq!(
        next_status(&mut statuses).await.status,
        SubscribeStatus::TimedOut
    );
    let (ljr, _, _) = conn.expect("phx_leave").await;
    assert_eq!(ljr, jr);
    conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
}

#[tokio::test]
async fn broadcasts_go_out_as_kind_3_and_come_in_by_event_name() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let channel = client.channel("room", ChannelOptions::default().broadcast_ack(true));
    let mut cursors = channel.on_broadcast("Cursor");
    let mut all = channel.on_broadcast("*");
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    let (jr, _) = conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());

    let sent = channel.send("cursor", json!({"x": 1, "y": 2}));
    let Incoming::Binary(frame) = conn.recv().await else {
        panic!("a binary frame")
    };
    let jr_text = jr.as_str().unwrap();
    let r = String::from_utf8(
        frame[7 + jr_text.len()..7 + jr_text.len() + usize::from(frame[2])].to_vec(),
    )
    .unwrap();
    let mut expected = vec![3, jr_text.len() as u8, r.len() as u8, 13, 6, 0, 1];
    expected.extend_from_slice(
        format!("{jr_text}{r}realtime:roomcursor{{\"x\":1,\"y\":2}}").as_bytes(),
    );
    assert_eq!(frame, expected);
    conn.reply(jr.clone(), json!(r), ROOM, json!({})).await;
    within("the ack", sent).await.unwrap();

    let mut kind4 = vec![4, 13, 6, 0, 1];
    kind4.extend_from_slice(b"realtime:roomcursor{\"x\":5}");
    conn.send_binary(kind4).await;
    conn.send(
        Value::Null,
        Value::Null,
        ROOM,
        "broadcast",
        json!({"type": "broadcast", "event": "chat", "payload": {"text": "hi"}}),
    )
    .await;

    let m = within("a cursor", cursors.recv()).await.unwrap();
    assert_eq!(
        (m.event.as_str(), m.payload),
        ("cursor", BroadcastPayload::Json(json!({"x": 5})))
    );
    let a = within("everything", all.recv()).await.unwrap();
    let b = within("everything", all.recv()).await.unwrap();
    assert_eq!((a.event.as_str(), b.event.as_str()), ("cursor", "chat"));
    assert!(cursors.try_recv().is_err(), "chat is not a cursor");

    let bin = channel.send_binary("raw", vec![0u8, 1, 2]);
    let Incoming::Binary(frame) = conn.recv().await else {
        panic!("a binary frame")
    };
    assert_eq!((frame[6], &frame[frame.len() - 3..]), (0, &[0u8, 1, 2][..]));
    drop(bin);
}

#[tokio::test]
async fn serializer_1_0_0_speaks_json_objects() {
    let server = FakeServer::start().await;
    let client = quick(&server.url())
        .serializer(Serializer::V1)
        .connect()
        .unwrap();
    let channel = client.channel("room", ChannelOptions::default().presence_key("k"));
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    assert!(conn.uri.ends_with("vsn=1.0.0"), "{}", conn.uri);
    let (jr, _) = conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
    let tracked = channel.track(json!({"a": 1}));
    let Incoming::Text(frame) = conn.recv().await else {
        panic!("text")
    };
    assert_eq!(
        frame,
        json!({"topic": ROOM, "event": "presence", "payload": {"type": "presence", "event": "track", "payload": {"a": 1}}, "ref": frame["ref"], "join_ref": jr})
    );
    conn.reply(Value::Null, frame["ref"].clone(), ROOM, json!({}))
        .await;
    within("the track reply", tracked).await.unwrap();
    let sent = channel.send("e", json!([1]));
    let (_, _, payload) = conn.expect("broadcast").await;
    assert_eq!(
        payload,
        json!({"type": "broadcast", "event": "e", "payload": [1]})
    );
    within("a send without ack", sent).await.unwrap();
    assert_eq!(
        channel.send_binary("e", vec![1]).await,
        Err(Error::BinaryOnV1)
    );
}

#[tokio::test]
async fn set_auth_refreshes_joined_channels_and_rejoins() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let channel = client.channel("room", ChannelOptions::default());
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    let (jr, _) = conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
    client.set_auth("user-jwt");
    let (ajr, _, payload) = conn.expect("access_token").await;
    assert_eq!((ajr, payload), (jr, json!({"access_token": "user-jwt"})));
    conn.close().await;
    let mut conn = server.accept().await;
    let (_, join) = conn.accept_join(ROOM).await;
    assert_eq!(join["access_token"], "user-jwt");
}

#[tokio::test]
async fn a_server_close_ends_the_subscription_with_its_reason() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let presence = client.presence("room").join().unwrap();
    let mut statuses = presence.statuses();
    let mut conn = server.accept().await;
    let (jr, _) = conn.accept_join(ROOM).await;
    let (_, r, _) = conn.expect("presence").await;
    conn.reply(jr.clone(), r, ROOM, json!({})).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
    conn.send(jr.clone(), Value::Null, ROOM, "system", json!({"extension": "system", "status": "error", "message": "Token has expired 3 seconds ago", "channel": "room"})).await;
    conn.send(jr.clone(), jr, ROOM, "phx_close", json!({}))
        .await;
    let closed = next_status(&mut statuses).await;
    assert_eq!(closed.status, SubscribeStatus::Closed);
    assert_eq!(
        closed.reason.as_deref(),
        Some("Token has expired 3 seconds ago")
    );
    assert_eq!(
        presence.error().unwrap().to_string(),
        "Channel room error: CLOSED"
    );
    // No rejoin: the next thing the server sees is a heartbeat at most.
    assert!(
        conn.try_recv_raw(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn leaving_sends_phx_leave_and_dropping_a_presence_leaves() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let channel = client.channel("room", ChannelOptions::default());
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    let (jr, _) = conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
    let left = channel.leave();
    let (ljr, r, _) = conn.expect("phx_leave").await;
    assert_eq!(ljr, jr);
    conn.reply(jr.clone(), r, ROOM, json!({})).await;
    conn.send(jr.clone(), jr, ROOM, "phx_close", json!({}))
        .await;
    within("the leave", left).await.unwrap();
    assert_eq!(
        next_status(&mut statuses).await.status,
        SubscribeStatus::Closed
    );
    let mut view = channel.presence_state();
    within("the view to reset", view.wait_for(|s| !s.is_synced()))
        .await
        .unwrap();

    let presence = client.presence("lobby").key("me").join().unwrap();
    let (pjr, join) = conn.accept_join("realtime:lobby").await;
    assert_eq!(join["config"]["presence"]["key"], "me");
    let (_, r, _) = conn.expect("presence").await;
    conn.reply(pjr.clone(), r, "realtime:lobby", json!({}))
        .await;
    let clone = presence.clone();
    drop(presence);
    assert!(
        conn.try_recv_raw(Duration::from_millis(200))
            .await
            .is_none(),
        "a clone still lives"
    );
    drop(clone);
    let (ljr, _, _) = conn.expect("phx_leave").await;
    assert_eq!(ljr, pjr);
}

#[tokio::test]
async fn a_refused_upgrade_is_reported_and_retried() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let mut state = client.connection_state();
    server.refuse(401, r#"{"error":"Token has expired"}"#).await;
    let refused = within(
        "the refusal",
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .clone();
    assert_eq!(
        refused,
        ConnectionState::Reconnecting {
            attempt: 1,
            error: Some(r#"HTTP 401: {"error":"Token has expired"}"#.into())
        }
    );
    let _conn = server.accept().await;
    within("open", state.wait_for(ConnectionState::is_open))
        .await
        .unwrap();
}

#[tokio::test]
async fn disconnect_and_dropping_every_handle_close_the_socket() {
    let server = FakeServer::start().await;
    let client = quick(&server.url()).connect().unwrap();
    let channel = client.channel("room", ChannelOptions::default());
    let mut statuses = channel.subscribe();
    let mut conn = server.accept().await;
    conn.accept_join(ROOM).await;
    assert!(next_status(&mut statuses).await.is_subscribed());
    client.disconnect().await;
    assert_eq!(
        next_status(&mut statuses).await.status,
        SubscribeStatus::Closed
    );
    assert!(within("the stream to end", statuses.recv()).await.is_err());
    assert!(matches!(conn.recv().await, Incoming::Close(_)));
    assert_eq!(channel.track(json!({})).await, Err(Error::ClientClosed));
    assert_eq!(*client.connection_state().borrow(), ConnectionState::Closed);

    let client = quick(&server.url()).connect().unwrap();
    let mut conn = server.accept().await;
    assert!(client.wait_open(WAIT).await);
    drop(client);
    assert!(
        matches!(conn.recv().await, Incoming::Close(_)),
        "the last handle gone, the loop ends"
    );
}

#[tokio::test]
async fn a_status_that_cannot_be_serialized_fails_the_join_with_its_cause() {
    use std::error::Error as _;
    // JSON object keys must be strings: a map keyed by pairs cannot be serialized.
    let status: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let client = RealtimeClient::connect("http://127.0.0.1:9", "the-key").unwrap();
    let err = match client.presence("room").user_status(status).join() {
        Err(err) => err,
        Ok(_) => panic!("a status that is not JSON is refused"),
    };
    assert!(matches!(err, headcount_client::Error::Json(_)), "{err:?}");
    let source = err
        .source()
        .expect("the serde_json error is kept as the source");
    assert!(
        source.to_string().contains("key must be a string"),
        "{source}"
    );
    client.disconnect().await;
}
