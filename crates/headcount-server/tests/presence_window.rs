//! The client presence window ("5 calls per 30 s" per channel) belongs to the socket and the
//! topic, not to one membership: leaving and joining again, or joining again over the old
//! membership, does not start a fresh window.

use std::time::{Duration, Instant};

use headcount_testkit::{TestServer, WsClient};
use serde_json::{Value, json};

const TOPIC: &str = "realtime:window";
/// Short, so that the test can see the window end; long enough that five calls, a leave and a
/// rejoin fit inside it on a loaded machine.
const WINDOW: Duration = Duration::from_millis(1500);
/// How long the test waits for the window to end before it fails.
const GIVE_UP: Duration = Duration::from_secs(15);

fn config() -> Value {
    json!({"presence": {"key": "me", "enabled": true}})
}

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.client_presence_max_calls = 5;
        c.limits.client_presence_window = WINDOW;
    })
    .await
}

fn track(n: u32) -> Value {
    json!({"type": "presence", "event": "track", "payload": {"n": n}})
}

/// Five calls inside one window, all answered ok.
async fn five_calls(c: &mut WsClient, jr: &str) {
    for n in 0..5 {
        let r = c.push(jr, TOPIC, "presence", track(n)).await;
        assert_eq!(
            c.expect_reply(&r).await.payload["status"],
            "ok",
            "call {}",
            n + 1
        );
    }
}

/// The next call is refused with Supabase's reason, and the channel closes.
async fn expect_refused(c: &mut WsClient, jr: &str) {
    c.push(jr, TOPIC, "presence", track(99)).await;
    let system = c.expect_event(TOPIC, "system").await;
    assert_eq!(
        system.payload,
        json!({"extension": "system", "status": "error",
               "message": "Client presence rate limit exceeded", "channel": "window"})
    );
    c.expect_event(TOPIC, "phx_close").await;
}

/// Rejoins and calls until a call is allowed (the window has ended); returns when it was.
async fn allowed_again(c: &mut WsClient) -> Instant {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let jr = c.join(TOPIC, config()).await;
        let r = c.push(&jr, TOPIC, "presence", track(100)).await;
        // Either the reply (allowed) or the system error and phx_close (still refused).
        loop {
            let m = c.recv_msg().await;
            if m.event == "phx_reply" && m.msg_ref == json!(r) {
                assert_eq!(m.payload["status"], "ok", "{m:?}");
                return Instant::now();
            }
            if m.event == "phx_close" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the window never ended within {GIVE_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval, not a settle
    }
}

#[tokio::test]
async fn leaving_and_rejoining_keeps_the_window() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    let started = Instant::now();
    let jr = c.join(TOPIC, config()).await;
    five_calls(&mut c, &jr).await;
    let r = c.push(&jr, TOPIC, "phx_leave", json!({})).await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
    c.expect_event(TOPIC, "phx_close").await;
    let jr = c.join(TOPIC, config()).await;
    expect_refused(&mut c, &jr).await;
    let allowed = allowed_again(&mut c).await;
    assert!(
        allowed.duration_since(started) >= WINDOW,
        "a call was allowed before the window of the first call ended"
    );
}

#[tokio::test]
async fn a_duplicate_join_keeps_the_window() {
    let server = server().await;
    let mut c = server.client("1.0.0").await;
    let jr = c.join(TOPIC, config()).await;
    five_calls(&mut c, &jr).await;
    // Joining the same topic again replaces the membership (the old one gets phx_close).
    let jr = c.join(TOPIC, config()).await;
    expect_refused(&mut c, &jr).await;
}

#[tokio::test]
async fn another_socket_has_its_own_window() {
    let server = server().await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("2.0.0").await;
    let ja = a.join(TOPIC, config()).await;
    five_calls(&mut a, &ja).await;
    let jb = b
        .join(TOPIC, json!({"presence": {"key": "b", "enabled": true}}))
        .await;
    five_calls(&mut b, &jb).await;
    expect_refused(&mut a, &ja).await;
}
