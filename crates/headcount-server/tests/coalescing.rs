//! Presence diff coalescing: a busy channel merges diffs over a window, a member who joins
//! meanwhile learns each presence exactly once, and a join and leave inside one window never
//! reach anyone.

use std::collections::BTreeMap;
use std::time::Duration;

use headcount_testkit::{Frame, TestServer, WsClient};
use serde_json::{Value, json};

const TOPIC: &str = "realtime:busy";

fn config(key: &str) -> Value {
    json!({"presence": {"key": key, "enabled": true}})
}

async fn track(c: &mut WsClient, jr: &str, payload: Value) {
    assert_eq!(c.track(jr, TOPIC, payload).await.payload["status"], "ok");
}

/// Applies presence frames to a key → meta-count view until `done` holds; returns the view and
/// how many times each key was announced.
async fn watch_until(
    c: &mut WsClient,
    mut view: BTreeMap<String, usize>,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>, usize) {
    let mut announced: BTreeMap<String, usize> = BTreeMap::new();
    let mut frames = 0;
    while !done(&view) {
        let Some(Frame::Text(t)) = c.try_recv(Duration::from_secs(5)).await else {
            panic!("stalled at {view:?}")
        };
        let m = c.decode(&t);
        if m.event != "presence_diff" {
            continue;
        }
        frames += 1;
        for (key, group) in m.payload["joins"].as_object().unwrap() {
            *view.entry(key.clone()).or_default() += group["metas"].as_array().unwrap().len();
            *announced.entry(key.clone()).or_default() += 1;
        }
        for (key, group) in m.payload["leaves"].as_object().unwrap() {
            let left = group["metas"].as_array().unwrap().len();
            let n = view.entry(key.clone()).or_default();
            *n = n.saturating_sub(left);
            if *n == 0 {
                view.remove(key);
            }
        }
    }
    (view, announced, frames)
}

/// A window of `ms` in every room, however small (the tests' rooms are).
fn coalesce_every_room(c: &mut headcount_server::Config, ms: u64) {
    c.presence_window = Duration::from_millis(ms);
    c.presence_coalesce_members = 0;
}

/// A track and an untrack in quick succession, watched by an observer in a channel of
/// `bystanders + 2` members with a 600 ms window and the default member threshold set to
/// `threshold`. Returns whether the observer heard of the flicker.
async fn flicker_seen(threshold: usize, bystanders: usize) -> bool {
    let server = TestServer::start_with(|c| {
        c.presence_window = Duration::from_millis(600);
        c.presence_coalesce_members = threshold;
    })
    .await;
    let mut observer = server.client("2.0.0").await;
    let jo = observer.join(TOPIC, config("observer")).await;
    let mut others = Vec::new();
    for i in 0..bystanders {
        let mut c = server.client("2.0.0").await;
        c.join(TOPIC, config(&format!("b{i}"))).await;
        others.push(c);
    }
    track(&mut observer, &jo, json!({})).await; // quiet: sent at once, opens a window
    observer.expect_event(TOPIC, "presence_diff").await;
    let mut flicker = server.client("2.0.0").await;
    let jr = flicker.join(TOPIC, config("flicker")).await;
    track(&mut flicker, &jr, json!({})).await;
    let rf = flicker.next_ref();
    flicker
        .send(
            json!(jr),
            json!(rf),
            TOPIC,
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
    flicker.expect_reply(&rf).await;
    let mut seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    while let Ok(msg) = tokio::time::timeout_at(deadline, observer.recv_msg()).await {
        if msg.event == "presence_diff"
            && (msg.payload["joins"].get("flicker").is_some()
                || msg.payload["leaves"].get("flicker").is_some())
        {
            seen = true;
        }
    }
    seen
}

#[tokio::test]
async fn a_room_below_the_member_threshold_sends_every_change_at_once() {
    // observer + flicker + 1 bystander = 3 members, one below a threshold of 4.
    assert!(
        flicker_seen(4, 1).await,
        "a small room hears a track then untrack"
    );
}

#[tokio::test]
async fn a_room_at_the_member_threshold_coalesces() {
    // observer + flicker + 2 bystanders = 4 members, at a threshold of 4.
    assert!(
        !flicker_seen(4, 2).await,
        "a track then untrack inside one window cancel out"
    );
}

#[tokio::test]
async fn a_join_storm_costs_few_frames() {
    let server = TestServer::start_with(|c| coalesce_every_room(c, 200)).await;
    let mut observer = server.client("2.0.0").await;
    observer.join(TOPIC, config("observer")).await;
    let mut members = Vec::new();
    for i in 0..30 {
        let mut c = server.client("2.0.0").await;
        let key = format!("m{i}");
        let jr = c.join(TOPIC, config(&key)).await;
        track(&mut c, &jr, json!({"i": i})).await;
        members.push(c);
    }
    let (view, announced, frames) =
        watch_until(&mut observer, BTreeMap::new(), |v| v.len() == 30).await;
    assert_eq!(view.len(), 30);
    assert!(
        announced.values().all(|n| *n == 1),
        "each member announced once: {announced:?}"
    );
    assert!(
        frames < 15,
        "30 joins inside a few windows arrive in a few frames, not 30: {frames}"
    );
}

#[tokio::test]
async fn a_member_joining_during_a_window_learns_each_presence_once() {
    let server = TestServer::start_with(|c| coalesce_every_room(c, 600)).await;
    let mut first = server.client("2.0.0").await;
    let jf = first.join(TOPIC, config("first")).await;
    track(&mut first, &jf, json!({})).await; // a quiet channel: sent at once
    first.expect_event(TOPIC, "presence_diff").await;
    let mut second = server.client("2.0.0").await;
    let js = second.join(TOPIC, config("second")).await;
    track(&mut second, &js, json!({})).await; // inside the window: pending

    let mut late = server.client("1.0.0").await;
    let r = late.next_ref();
    late.send(
        json!(r),
        json!(r),
        TOPIC,
        "phx_join",
        json!({"config": config("late")}),
    )
    .await;
    late.expect_reply(&r).await;
    let state = late.recv_msg().await;
    assert_eq!(state.event, "presence_state");
    let known: BTreeMap<String, usize> = state
        .payload
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, g)| (k.clone(), g["metas"].as_array().unwrap().len()))
        .collect();
    assert_eq!(
        known.keys().collect::<Vec<_>>(),
        ["first"],
        "the state as published, without what is pending"
    );
    let (view, announced, _) = watch_until(&mut late, known, |v| v.contains_key("second")).await;
    assert_eq!(view.keys().collect::<Vec<_>>(), ["first", "second"]);
    assert_eq!(
        announced.get("first"),
        None,
        "first is never announced twice"
    );
}

#[tokio::test]
async fn a_join_and_leave_inside_one_window_reach_nobody() {
    let server = TestServer::start_with(|c| coalesce_every_room(c, 600)).await;
    let mut observer = server.client("2.0.0").await;
    let jo = observer.join(TOPIC, config("observer")).await;
    track(&mut observer, &jo, json!({})).await; // quiet: sent at once, opens a window
    observer.expect_event(TOPIC, "presence_diff").await;
    let mut flicker = server.client("2.0.0").await;
    let jr = flicker.join(TOPIC, config("flicker")).await;
    track(&mut flicker, &jr, json!({})).await;
    flicker.drop_abruptly();
    let mut steady = server.client("2.0.0").await;
    let js = steady.join(TOPIC, config("steady")).await;
    track(&mut steady, &js, json!({})).await;
    let diff = observer.expect_event(TOPIC, "presence_diff").await;
    assert!(diff.payload["joins"].get("steady").is_some(), "{diff:?}");
    assert!(
        diff.payload["joins"].get("flicker").is_none()
            && diff.payload["leaves"].get("flicker").is_none(),
        "{diff:?}"
    );
    observer.expect_silence(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn a_window_of_zero_sends_every_diff_at_once() {
    let server = TestServer::start_with(|c| c.presence_window = Duration::ZERO).await;
    let mut observer = server.client("2.0.0").await;
    observer.join(TOPIC, config("observer")).await;
    let mut members = Vec::new();
    for i in 0..5 {
        let mut c = server.client("2.0.0").await;
        let jr = c.join(TOPIC, config(&format!("m{i}"))).await;
        track(&mut c, &jr, json!({})).await;
        let diff = observer.expect_event(TOPIC, "presence_diff").await;
        assert_eq!(
            diff.payload["joins"].as_object().unwrap().len(),
            1,
            "one diff per join: {diff:?}"
        );
        members.push(c);
    }
}
