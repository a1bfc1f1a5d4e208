//! Presence over real sockets: track, update, untrack, leaves on disconnect, in both serializers.

use std::time::Duration;

use headcount_testkit::{Msg, TestServer, WsClient};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_millis(200);
const ROOM: &str = "realtime:room1";

fn presence_config(key: &str) -> Value {
    json!({"broadcast": {"ack": false, "self": false}, "presence": {"key": key, "enabled": true}, "private": false})
}

async fn track(c: &mut WsClient, jr: &str, payload: Value) -> Msg {
    c.track(jr, ROOM, payload).await
}

fn metas<'a>(diff: &'a Msg, side: &str, key: &str) -> &'a Vec<Value> {
    diff.payload[side][key]["metas"]
        .as_array()
        .unwrap_or_else(|| panic!("no {side} for {key}: {diff:?}"))
}

#[tokio::test]
async fn every_member_gets_every_diff_including_the_tracker() {
    for (va, vb) in [("2.0.0", "2.0.0"), ("1.0.0", "2.0.0"), ("2.0.0", "1.0.0")] {
        let server = TestServer::start().await;
        let mut a = server.client(va).await;
        let mut b = server.client(vb).await;
        let ja = a.join(ROOM, presence_config("alice")).await;
        b.join(ROOM, presence_config("bob")).await;
        let reply = track(&mut a, &ja, json!({"user": "alice", "online_at": 1})).await;
        assert_eq!(reply.payload, json!({"status": "ok", "response": {}}));
        for c in [&mut a, &mut b] {
            let diff = c.expect_event(ROOM, "presence_diff").await;
            assert_eq!(
                (diff.join_ref.clone(), diff.msg_ref.clone()),
                (json!(null), json!(null))
            );
            let m = metas(&diff, "joins", "alice");
            assert_eq!(m.len(), 1);
            assert_eq!(
                (m[0]["user"].clone(), m[0]["online_at"].clone()),
                (json!("alice"), json!(1))
            );
            assert_eq!(m[0]["phx_ref"].as_str().unwrap().len(), 16);
            assert_eq!(diff.payload["leaves"], json!({}));
        }
        // A later joiner gets the state.
        let mut late = server.client(va).await;
        let r = late.next_ref();
        late.send(
            json!(r),
            json!(r),
            ROOM,
            "phx_join",
            json!({"config": presence_config("carol")}),
        )
        .await;
        late.expect_reply(&r).await;
        let state = late.recv_msg().await;
        assert_eq!(state.event, "presence_state");
        if late.v2 {
            assert_eq!(
                state.join_ref,
                json!(r),
                "presence_state is a channel push carrying the join_ref"
            );
        }
        assert_eq!(state.payload["alice"]["metas"][0]["user"], "alice");
        assert!(
            state.payload.get("bob").is_none(),
            "joining is not tracking"
        );
    }
}

#[tokio::test]
async fn an_update_is_one_diff_and_an_identical_retrack_is_nothing() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("1.0.0").await;
    let ja = a.join(ROOM, presence_config("alice")).await;
    b.join(ROOM, presence_config("")).await;
    track(&mut a, &ja, json!({"status": "online"})).await;
    let first = b.expect_event(ROOM, "presence_diff").await;
    let first_ref = metas(&first, "joins", "alice")[0]["phx_ref"].clone();

    track(&mut a, &ja, json!({"status": "away"})).await;
    let update = b.expect_event(ROOM, "presence_diff").await;
    let joined = &metas(&update, "joins", "alice")[0];
    assert_eq!(joined["status"], "away");
    assert_eq!(joined["phx_ref_prev"], first_ref);
    assert_ne!(joined["phx_ref"], first_ref);
    let left = &metas(&update, "leaves", "alice")[0];
    assert_eq!(
        (left["phx_ref"].clone(), left["status"].clone()),
        (first_ref, json!("online"))
    );

    let reply = track(&mut a, &ja, json!({"status": "away"})).await;
    assert_eq!(reply.payload["status"], "ok");
    b.expect_silence(SHORT).await;
}

#[tokio::test]
async fn untrack_leaves_and_a_new_track_is_a_fresh_join() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let ja = a.join(ROOM, presence_config("alice")).await;
    track(&mut a, &ja, json!({"n": 1})).await;
    a.expect_event(ROOM, "presence_diff").await;
    let r = a
        .push(
            &ja,
            ROOM,
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
    assert_eq!(a.expect_reply(&r).await.payload["status"], "ok");
    let leave = a.expect_event(ROOM, "presence_diff").await;
    assert_eq!(metas(&leave, "leaves", "alice")[0]["n"], 1);
    assert_eq!(leave.payload["joins"], json!({}));
    track(&mut a, &ja, json!({"n": 1})).await;
    let again = a.expect_event(ROOM, "presence_diff").await;
    assert!(
        metas(&again, "joins", "alice")[0]
            .get("phx_ref_prev")
            .is_none()
    );
}

#[tokio::test]
async fn disconnect_and_leave_remove_presence() {
    let server = TestServer::start().await;
    let mut watcher = server.client("2.0.0").await;
    watcher.join(ROOM, presence_config("w")).await;
    for how in ["abrupt", "close-frame", "phx_leave"] {
        let mut a = server.client("2.0.0").await;
        let ja = a.join(ROOM, presence_config(how)).await;
        track(&mut a, &ja, json!({})).await;
        watcher.expect_event(ROOM, "presence_diff").await;
        match how {
            "abrupt" => a.drop_abruptly(),
            "close-frame" => a.close().await,
            _ => {
                a.push(&ja, ROOM, "phx_leave", json!({})).await;
            }
        }
        let leave = watcher.expect_event(ROOM, "presence_diff").await;
        assert_eq!(metas(&leave, "leaves", how).len(), 1, "{how}");
    }
}

#[tokio::test]
async fn an_empty_key_gets_a_fresh_uuid_on_every_join() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let jr = a.join(ROOM, presence_config("")).await;
        track(&mut a, &jr, json!({})).await;
        let diff = a.expect_event(ROOM, "presence_diff").await;
        let joins = diff.payload["joins"].as_object().unwrap();
        let key = joins.keys().next().unwrap().clone();
        assert_eq!(key.len(), 36, "a UUID: {key}");
        assert_eq!(&key[14..15], "1", "version 1, as Supabase: {key}");
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn connections_sharing_a_key_have_one_meta_each() {
    let server = TestServer::start().await;
    let mut tabs = Vec::new();
    for n in 0..3 {
        let mut c = server.client(if n == 1 { "1.0.0" } else { "2.0.0" }).await;
        let jr = c.join(ROOM, presence_config("same-user")).await;
        track(&mut c, &jr, json!({"tab": n})).await;
        tabs.push(c);
    }
    let mut viewer = server.client("2.0.0").await;
    let r = viewer.next_ref();
    viewer
        .send(
            json!(r),
            json!(r),
            ROOM,
            "phx_join",
            json!({"config": presence_config("v")}),
        )
        .await;
    viewer.expect_reply(&r).await;
    let state = viewer.recv_msg().await;
    let metas = state.payload["same-user"]["metas"].as_array().unwrap();
    let mut tab_numbers: Vec<i64> = metas.iter().map(|m| m["tab"].as_i64().unwrap()).collect();
    tab_numbers.sort();
    assert_eq!(tab_numbers, [0, 1, 2]);
    tabs.remove(0).drop_abruptly();
    let leave = viewer.expect_event(ROOM, "presence_diff").await;
    assert_eq!(leave.payload["leaves"]["same-user"]["metas"][0]["tab"], 0);
}

#[tokio::test]
async fn bad_track_payloads_get_the_supabase_error_and_change_nothing() {
    // More presence calls than the default client window allows.
    let server = TestServer::start_with(|c| c.limits.client_presence_max_calls = 100).await;
    let mut a = server.client("2.0.0").await;
    let ja = a.join(ROOM, presence_config("alice")).await;
    for bad in [json!([1]), json!("x"), json!(null), json!(3)] {
        let reply = track(&mut a, &ja, bad).await;
        assert_eq!(
            reply.payload,
            json!({"status":"error","response":{"reason":"Presence track payload must be a map"}})
        );
    }
    let r = a
        .push(
            &ja,
            ROOM,
            "presence",
            json!({"type": "presence", "event": "dance"}),
        )
        .await;
    assert_eq!(
        a.expect_reply(&r).await.payload,
        json!({"status":"error","response":{}})
    );
    let r = a
        .push(&ja, ROOM, "presence", json!({"type": "presence"}))
        .await;
    assert_eq!(
        a.expect_reply(&r).await.payload,
        json!({"status":"ok","response":{}}),
        "no event: ok, nothing"
    );
    a.expect_silence(SHORT).await;
    let r = a
        .push(
            &ja,
            ROOM,
            "presence",
            json!({"type": "presence", "event": "TRACK"}),
        )
        .await;
    a.expect_reply(&r).await;
    let diff = a.expect_event(ROOM, "presence_diff").await;
    assert_eq!(
        metas(&diff, "joins", "alice").len(),
        1,
        "events are case-insensitive; no payload tracks {{}}"
    );
}

#[tokio::test]
async fn diffs_reach_members_with_presence_disabled() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut quiet = server.client("2.0.0").await;
    let ja = a.join(ROOM, presence_config("alice")).await;
    quiet
        .join(ROOM, json!({"presence": {"enabled": false}}))
        .await;
    track(&mut a, &ja, json!({})).await;
    quiet.expect_event(ROOM, "presence_diff").await;
}

#[tokio::test]
async fn public_rooms_with_different_names_are_separate() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("2.0.0").await;
    let ja = a.join(ROOM, presence_config("alice")).await;
    b.join("realtime:other", presence_config("bob")).await;
    track(&mut a, &ja, json!({})).await;
    b.expect_silence(SHORT).await;
}
