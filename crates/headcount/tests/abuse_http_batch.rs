//! HTTP batch broadcast against the real binary: the message limit at N and N+1, and bodies
//! full of bad messages that once cost the process about 1,000 times their size (a 1.2 MB
//! request took it to 1.27 GB) now answered quickly at a small, bounded cost in memory.

use std::net::SocketAddr;
use std::time::Duration;

use headcount_testkit::http::{self, Response};
use headcount_testkit::process::ServerProcess;
use headcount_testkit::{Frame, WsClient, anon};
use serde_json::{Value, json};

const TOO_MANY: &str = "Too many messages to broadcast, please reduce the batch size";

fn addr(server: &ServerProcess) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// A line of `/proc/PID/status` in KiB (`VmRSS`: now, `VmHWM`: the peak since start).
fn status_kib(server: &ServerProcess, field: &str) -> u64 {
    let pid = server.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|l| {
            l.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

async fn post_batch(addr: SocketAddr, body: String) -> Response {
    let key = anon();
    http::request(
        addr,
        "POST",
        "/api/broadcast",
        &[("apikey", &key), ("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
}

fn valid_batch(n: usize, topic: &str) -> String {
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"topic": topic, "event": format!("e{i}"), "payload": {"i": i}}))
        .collect();
    json!({ "messages": messages }).to_string()
}

async fn member(server: &ServerProcess, topic: &str) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        server.port,
        anon()
    );
    let mut c = WsClient::connect(&url).await.expect("connect");
    c.join(&format!("realtime:{topic}"), json!({})).await;
    c
}

/// The events of the broadcasts `c` receives until `n` have come.
async fn broadcasts(c: &mut WsClient, n: usize) -> Vec<String> {
    let mut events = Vec::new();
    while events.len() < n {
        match c.recv().await {
            Frame::Text(t) => {
                let m = c.decode(&t);
                if m.event == "broadcast" {
                    events.push(m.payload["event"].as_str().unwrap_or("").to_owned());
                }
            }
            other => panic!("the member lost its socket: {other:?}"),
        }
    }
    events
}

#[tokio::test]
async fn a_batch_at_the_message_limit_is_sent_and_one_more_is_refused() {
    let server = ServerProcess::start();
    let mut m = member(&server, "cap").await;
    // The default limit: 100, Supabase's batch allowance.
    let resp = post_batch(addr(&server), valid_batch(100, "cap")).await;
    assert_eq!((resp.status, resp.text().as_str()), (202, ""));
    let got = broadcasts(&mut m, 100).await;
    let want: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
    assert_eq!(got, want, "every message of the batch, in order");

    let resp = post_batch(addr(&server), valid_batch(101, "cap")).await;
    assert_eq!(
        (resp.status, resp.json()),
        (429, json!({ "message": TOO_MANY }))
    );
    m.expect_silence(Duration::from_millis(300)).await;

    // The flag moves the limit.
    let small = ServerProcess::start_with(&["--max-batch-messages", "3"]);
    let mut m = member(&small, "cap").await;
    let resp = post_batch(addr(&small), valid_batch(3, "cap")).await;
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert_eq!(broadcasts(&mut m, 3).await, ["e0", "e1", "e2"]);
    let resp = post_batch(addr(&small), valid_batch(4, "cap")).await;
    assert_eq!(
        (resp.status, resp.json()),
        (429, json!({ "message": TOO_MANY }))
    );
    m.expect_silence(Duration::from_millis(300)).await;
}

/// `{"messages":[{},{},...]}` of about `bytes` bytes: every message invalid (no topic, event
/// or payload), the cheapest message to send and once the dearest to answer.
fn empty_messages(bytes: usize) -> String {
    let n = bytes / 3;
    let mut body = String::with_capacity(bytes + 16);
    body.push_str(r#"{"messages":["#);
    for i in 0..n {
        body.push_str(if i == 0 { "{}" } else { ",{}" });
    }
    body.push_str("]}");
    body
}

/// The memory a request may cost the process, above what it held before.
const BOUND_KIB: u64 = 100 * 1024;

#[tokio::test]
async fn a_megabyte_of_bad_messages_is_answered_at_a_small_bounded_cost() {
    let body = empty_messages(1_200_000);
    assert!(body.len() >= 1_200_000);

    // Default settings: as in Supabase, invalid messages are reported before the batch's size
    // is weighed; validation stops at the 100th of them, without reading the rest.
    let server = ServerProcess::start();
    let before = status_kib(&server, "VmHWM");
    let resp = post_batch(addr(&server), body.clone()).await;
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert_eq!(
        resp.json()["errors"]["messages"].as_array().map(Vec::len),
        Some(100)
    );
    let parallel = futures_four(addr(&server), &body).await;
    assert!(
        parallel.iter().all(|r| r.status == 422),
        "{:?}",
        parallel[0].status
    );
    let peak = status_kib(&server, "VmHWM");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "peak RSS grew from {before} KiB to {peak} KiB for 1.2 MB requests"
    );
    assert_eq!(http::get(addr(&server), "/healthz", &[]).await.status, 200);

    // A megabyte of valid messages is refused at the 101st.
    let valid = valid_batch(20_000, "nobody");
    assert!(valid.len() > 1_000_000);
    let resp = post_batch(addr(&server), valid.clone()).await;
    assert_eq!(
        (resp.status, resp.json()),
        (429, json!({ "message": TOO_MANY }))
    );
    let parallel = futures_four(addr(&server), &valid).await;
    assert!(
        parallel.iter().all(|r| r.status == 429),
        "{:?}",
        parallel[0].status
    );
    let peak = status_kib(&server, "VmHWM");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "peak RSS grew from {before} KiB to {peak} KiB for 1.2 MB requests"
    );

    // With the message limit lifted, the answer stays bounded all the same: validation stops
    // at the 100th invalid message, and the answer lists those.
    let lifted = ServerProcess::start_with(&["--max-batch-messages", "10000000"]);
    let before = status_kib(&lifted, "VmHWM");
    let resp = post_batch(addr(&lifted), body.clone()).await;
    assert_eq!(resp.status, 422, "{}", resp.text());
    let list = resp.json()["errors"]["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 100, "reports stop at the 100th invalid message");
    assert!(
        list.iter().all(|e| *e
            == json!({"topic": ["can't be blank"], "event": ["can't be blank"], "payload": ["can't be blank"]})),
        "{:?}",
        list.first()
    );
    assert!(
        resp.body.len() < 20_000,
        "a small answer: {} bytes",
        resp.body.len()
    );
    let parallel = futures_four(addr(&lifted), &body).await;
    assert!(
        parallel.iter().all(|r| r.status == 422),
        "{:?}",
        parallel[0].status
    );
    let peak = status_kib(&lifted, "VmHWM");
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "peak RSS grew from {before} KiB to {peak} KiB for 1.2 MB requests"
    );
    println!(
        "1.2 MB of invalid messages, 5 requests (4 in parallel): peak RSS {before} KiB -> {peak} KiB, now {} KiB",
        status_kib(&lifted, "VmRSS")
    );
}

/// Four copies of the request at once.
async fn futures_four(addr: SocketAddr, body: &str) -> Vec<Response> {
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(post_batch(addr, body.to_owned())))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}
