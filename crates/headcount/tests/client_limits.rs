//! One client cannot spend the whole node's budget: every node-wide rate (joins, broadcasts,
//! presence tracks per second) has a per-client window in front of it, so the client that
//! bursts meets its own limit first and is the only one refused; and a node at its limit never
//! closes the channel of a member who stayed within its own.
//!
//! Through the real binary, with raw-frame clients.

use std::net::SocketAddr;

use headcount_testkit::process::ServerProcess;
use headcount_testkit::{Msg, WsClient, anon, http, user_token};
use serde_json::{Value, json};

async fn start(args: &'static [&'static str]) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start_with(args))
        .await
        .expect("start the server")
}

fn addr(server: &ServerProcess) -> SocketAddr {
    format!("127.0.0.1:{}", server.port).parse().unwrap()
}

async fn client(server: &ServerProcess) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        server.port,
        anon()
    );
    WsClient::connect(&url).await.expect("connect")
}

/// Sends every join at once (one burst, no waiting in between); returns the join refs and the
/// replies, in order.
async fn burst_joins(c: &mut WsClient, topics: &[String]) -> Vec<(String, Msg)> {
    let mut refs = Vec::new();
    for topic in topics {
        let r = c.next_ref();
        c.send(json!(r), json!(r), topic, "phx_join", json!({"config": {}}))
            .await;
        refs.push(r);
    }
    let mut replies = Vec::new();
    for r in refs {
        let reply = c.expect_reply(&r).await;
        replies.push((r, reply));
    }
    replies
}

fn reason(reply: &Msg) -> &Value {
    &reply.payload["response"]["reason"]
}

fn broadcast() -> Value {
    json!({"type": "broadcast", "event": "e", "payload": {}})
}

/// Sends `n` broadcasts at once on `topic`; returns their refs.
async fn burst_broadcasts(c: &mut WsClient, jr: &str, topic: &str, n: usize) -> Vec<String> {
    let mut refs = Vec::new();
    for _ in 0..n {
        refs.push(c.push(jr, topic, "broadcast", broadcast()).await);
    }
    refs
}

/// The channel was closed from the server side with `message`.
async fn expect_shut_down(c: &mut WsClient, topic: &str, message: &str) {
    let system = c.expect_event(topic, "system").await;
    assert_eq!(system.payload["message"], message, "{system:?}");
    c.expect_event(topic, "phx_close").await;
}

/// The channel is still joined: a presence call without an event is answered ok (on a closed
/// channel the answer would be "unmatched topic").
async fn expect_still_joined(c: &mut WsClient, jr: &str, topic: &str) {
    let r = c
        .push(jr, topic, "presence", json!({"type": "presence"}))
        .await;
    assert_eq!(
        c.expect_reply(&r).await.payload,
        json!({"status": "ok", "response": {}}),
        "{topic} is still joined"
    );
}

#[tokio::test]
async fn a_join_burst_from_one_client_leaves_room_for_everyone_else() {
    // 20 users joining once each plus the abuser's own 5 fit in the node's 25.
    let server = start(&[
        "--max-joins-per-second",
        "25",
        "--max-client-joins-per-second",
        "5",
    ])
    .await;
    // Everyone connects first, so that the joins below fall inside one second.
    let mut users = Vec::new();
    for _ in 0..20 {
        users.push(client(&server).await);
    }
    let mut abuser = client(&server).await;

    let topics: Vec<String> = (0..30).map(|n| format!("realtime:abuse{n}")).collect();
    let replies = burst_joins(&mut abuser, &topics).await;
    for (n, (_, reply)) in replies.iter().enumerate() {
        if n < 5 {
            assert_eq!(reply.payload["status"], "ok", "join {} is within 5", n + 1);
        } else {
            assert_eq!(
                reason(reply),
                "ClientJoinRateLimitReached: Too many joins per second",
                "join {}",
                n + 1
            );
        }
    }

    // The 20 users join at the same time, each once: all accepted.
    let joins: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(n, mut c)| {
            tokio::spawn(async move {
                let (_, reply) = c
                    .join_with(&format!("realtime:room{}", n % 3), json!({"config": {}}))
                    .await;
                (c, reply)
            })
        })
        .collect();
    let mut users = Vec::new();
    for (n, join) in joins.into_iter().enumerate() {
        let (c, reply) = join.await.expect("the join task");
        assert_eq!(
            reply.payload,
            json!({"status": "ok", "response": {"postgres_changes": []}}),
            "user {n}"
        );
        users.push(c);
    }
    // Only the abuser's extra joins were refused; its socket and its 5 channels are intact.
    expect_still_joined(&mut abuser, &replies[0].0, "realtime:abuse0").await;
}

#[tokio::test]
async fn a_broadcast_flood_closes_only_the_flooders_channel() {
    // No client limit given: it defaults to a quarter of the node's, 5 of 20.
    let server = start(&["--max-events-per-second", "20"]).await;
    let topic = "realtime:shared";
    let mut bystander = client(&server).await;
    let jb = bystander
        .join(topic, json!({"broadcast": {"ack": true}}))
        .await;
    let mut flooder = client(&server).await;
    let jf = flooder
        .join(topic, json!({"broadcast": {"ack": true}}))
        .await;

    let refs = burst_broadcasts(&mut flooder, &jf, topic, 30).await;
    for r in &refs[..5] {
        assert_eq!(
            flooder.expect_reply(r).await.payload["status"],
            "ok",
            "5 are within the client's limit"
        );
    }
    expect_shut_down(&mut flooder, topic, "Too many messages per second").await;

    // The bystander got the flooder's 5 and may still send; its channel stays open.
    let r = bystander.push(&jb, topic, "broadcast", broadcast()).await;
    assert_eq!(
        bystander.expect_reply(&r).await.payload,
        json!({"status": "ok", "response": {}})
    );
    expect_still_joined(&mut bystander, &jb, topic).await;
}

#[tokio::test]
async fn a_node_at_its_event_limit_closes_nobody_who_kept_to_their_own() {
    // Four clients each send exactly their 5 (N: none refused), which fills the node's 20;
    // a fifth client's broadcast is then refused to its ack, and nobody's channel closes.
    let server = start(&[
        "--max-events-per-second",
        "20",
        "--max-client-events-per-second",
        "5",
    ])
    .await;
    let topic = "realtime:busy";
    let mut senders = Vec::new();
    for _ in 0..4 {
        let mut c = client(&server).await;
        let jr = c.join(topic, json!({"broadcast": {"ack": true}})).await;
        senders.push((c, jr));
    }
    let mut bystander = client(&server).await;
    let jb = bystander
        .join(topic, json!({"broadcast": {"ack": true}}))
        .await;
    // All sent before any reply is read, so that they fall inside one second.
    let mut refs = Vec::new();
    for (c, jr) in &mut senders {
        refs.push(burst_broadcasts(c, jr, topic, 5).await);
    }
    for ((c, _), refs) in senders.iter_mut().zip(&refs) {
        for r in refs {
            assert_eq!(c.expect_reply(r).await.payload["status"], "ok");
        }
    }
    let r = bystander.push(&jb, topic, "broadcast", broadcast()).await;
    assert_eq!(
        bystander.expect_reply(&r).await.payload,
        json!({"status": "error", "response": {"reason": "Too many messages per second"}})
    );
    expect_still_joined(&mut bystander, &jb, topic).await;
    for (c, jr) in &mut senders {
        expect_still_joined(c, jr, topic).await;
    }
}

#[tokio::test]
async fn presence_tracks_past_the_clients_own_limit_close_only_its_channel() {
    let server = start(&[
        "--max-presence-events-per-second",
        "20",
        "--max-client-presence-events-per-second",
        "2",
    ])
    .await;
    let track = json!({"type": "presence", "event": "track", "payload": {"online": true}});
    let mut abuser = client(&server).await;
    let mut joins = Vec::new();
    for n in 0..3 {
        let topic = format!("realtime:p{n}");
        let jr = abuser
            .join(
                &topic,
                json!({"presence": {"key": "abuser", "enabled": true}}),
            )
            .await;
        joins.push((topic, jr));
    }
    let mut bystander = client(&server).await;
    let jb = bystander
        .join(
            "realtime:p0",
            json!({"presence": {"key": "b", "enabled": true}}),
        )
        .await;
    // One track per channel, at once: 2 are within the client's limit, the 3rd is not.
    let mut refs = Vec::new();
    for (topic, jr) in &joins {
        refs.push(abuser.push(jr, topic, "presence", track.clone()).await);
    }
    for r in &refs[..2] {
        assert_eq!(abuser.expect_reply(r).await.payload["status"], "ok");
    }
    expect_shut_down(
        &mut abuser,
        "realtime:p2",
        "Too many presence messages per second",
    )
    .await;
    expect_still_joined(&mut abuser, &joins[0].1, "realtime:p0").await;
    let r = bystander.push(&jb, "realtime:p0", "presence", track).await;
    assert_eq!(
        bystander.expect_reply(&r).await.payload,
        json!({"status": "ok", "response": {}})
    );
}

async fn post_single(addr: SocketAddr, token: &str) -> http::Response {
    http::request(
        addr,
        "POST",
        "/api/broadcast/room/events/e",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        b"{}",
    )
    .await
}

async fn post_batch(addr: SocketAddr, token: &str, n: usize) -> http::Response {
    let messages: Vec<Value> = (0..n)
        .map(|_| json!({"topic": "room", "event": "e", "payload": {}}))
        .collect();
    http::request(
        addr,
        "POST",
        "/api/broadcast",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        json!({ "messages": messages }).to_string().as_bytes(),
    )
    .await
}

#[tokio::test]
async fn an_http_flood_is_refused_to_its_sender_only() {
    let server = start(&[
        "--max-events-per-second",
        "20",
        "--max-client-events-per-second",
        "5",
    ])
    .await;
    let addr = addr(&server);
    let flooder = user_token("authenticated", "flooder", 3600);
    let other = user_token("authenticated", "other", 3600);
    // Five in one batch: exactly the client's limit, accepted; one more inside the second is
    // refused.
    assert_eq!(post_batch(addr, &flooder, 5).await.status, 202);
    let refused = post_single(addr, &flooder).await;
    assert_eq!(
        (refused.status, refused.json()),
        (429, json!({"message": "You have exceeded your rate limit"}))
    );
    assert_eq!(post_single(addr, &other).await.status, 202);
    // A batch larger than the client's limit is refused whole, as Supabase does for its own.
    let batch = post_batch(addr, &other, 6).await;
    assert_eq!(
        (batch.status, batch.json()),
        (
            429,
            json!({"message": "Too many messages to broadcast, please reduce the batch size"})
        )
    );
}
