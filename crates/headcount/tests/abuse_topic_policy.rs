//! Long topics against a policy pattern, through the real binary. A rule like
//! `org:*:room:*:chat` once cost time quadratic in the topic's length (a 116 KB topic held the
//! node, `/healthz` included, for 8.6 s); topics are now capped (1,024 bytes by default) and
//! matched in one pass.

use std::net::SocketAddr;
use std::time::Duration;

use headcount_testkit::http;
use headcount_testkit::process::ServerProcess;
use headcount_testkit::{Msg, WsClient, anon, user_token};
use serde_json::{Value, json};

const TOO_LONG: &str = "TopicNameTooLong: The topic name is too long";

/// How long a bystander may wait for `/healthz` while the attack is processed: far above a
/// normal answer, far below what the quadratic matcher cost.
const BYSTANDER_BOUND: Duration = Duration::from_secs(2);

const POLICY: &str = r#"
[[rule]]
topic = "org:*:room:*:chat"
role = "authenticated"
allow = ["broadcast:read", "broadcast:write"]
"#;

fn policy_server(extra: &[&str]) -> ServerProcess {
    let dir = std::env::temp_dir().join(format!("headcount-topic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, POLICY).unwrap();
    let mut args = vec!["--policy-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    ServerProcess::start_with(&args)
}

fn addr(server: &ServerProcess) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

async fn client(server: &ServerProcess) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        server.port,
        anon()
    );
    WsClient::connect(&url).await.expect("connect")
}

fn private_join() -> Value {
    json!({
        "config": {"broadcast": {"self": true}, "presence": {"key": "", "enabled": false}, "private": true},
        "access_token": user_token("authenticated", "u1", 600),
    })
}

/// "org:" + ":room:" repeated, padded with `x` to exactly `len` bytes: every `:room:` is a
/// split point the backtracking matcher tried, and the end never matches `:chat`.
fn adversarial(len: usize) -> String {
    let mut t = String::from("org:");
    while t.len() + 6 <= len {
        t.push_str(":room:");
    }
    while t.len() < len {
        t.push('x');
    }
    t
}

/// A topic of exactly `len` bytes that the rule grants.
fn granted(len: usize) -> String {
    let mut t = adversarial(len - ":chat".len());
    t.push_str(":chat");
    t
}

fn reason(reply: &Msg) -> &str {
    reply.payload["response"]["reason"].as_str().unwrap_or("")
}

/// `/healthz`, answered within [`BYSTANDER_BOUND`].
async fn bystander_is_served(server: &ServerProcess) {
    let got = tokio::time::timeout(BYSTANDER_BOUND, http::get(addr(server), "/healthz", &[])).await;
    let resp = got.unwrap_or_else(|_| panic!("/healthz held for more than {BYSTANDER_BOUND:?}"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_huge_topic_is_refused_without_holding_anyone() {
    let server = policy_server(&[]);
    let mut attacker = client(&server).await;
    // The size of the topic that froze the node for 8.6 s.
    let topic = format!("realtime:{}", adversarial(116_000));
    let r = attacker.next_ref();
    attacker
        .send(json!(r), json!(r), &topic, "phx_join", private_join())
        .await;
    bystander_is_served(&server).await;
    let reply = attacker.expect_reply(&r).await;
    assert_eq!(reason(&reply), TOO_LONG);
    // And the attacker's socket is still usable.
    let (_, reply) = attacker
        .join_with(&format!("realtime:{}", granted(40)), private_join())
        .await;
    assert_eq!(reply.payload["status"], "ok", "{reply:?}");
}

#[tokio::test]
async fn many_adversarial_topics_just_under_the_cap_do_not_hold_a_bystander() {
    let server = policy_server(&[]);
    let mut attacker = client(&server).await;
    let topic = format!("realtime:{}", adversarial(1024));
    let mut refs = Vec::new();
    for _ in 0..300 {
        let r = attacker.next_ref();
        attacker
            .send(json!(r), json!(r), &topic, "phx_join", private_join())
            .await;
        refs.push(r);
    }
    bystander_is_served(&server).await;
    for r in refs {
        let reply = attacker.expect_reply(&r).await;
        assert!(
            reason(&reply).starts_with("Unauthorized: You do not have permissions to read"),
            "{reply:?}"
        );
    }
    bystander_is_served(&server).await;
}

#[tokio::test]
async fn the_topic_limit_holds_at_n_and_refuses_n_plus_one_for_joins_and_http() {
    for (server, cap) in [
        (policy_server(&[]), 1024),
        (policy_server(&["--max-topic-bytes", "64"]), 64),
    ] {
        let mut c = client(&server).await;
        let (_, reply) = c
            .join_with(&format!("realtime:{}", granted(cap)), private_join())
            .await;
        assert_eq!(reply.payload["status"], "ok", "{cap}: {reply:?}");
        let (_, reply) = c
            .join_with(&format!("realtime:{}", granted(cap + 1)), private_join())
            .await;
        assert_eq!(reason(&reply), TOO_LONG, "{cap}");
        // Public channels too.
        let (_, reply) = c
            .join_with(&format!("realtime:{}", "p".repeat(cap + 1)), json!({}))
            .await;
        assert_eq!(reason(&reply), TOO_LONG, "{cap}");
        let (_, reply) = c
            .join_with(&format!("realtime:{}", "p".repeat(cap)), json!({}))
            .await;
        assert_eq!(reply.payload["status"], "ok", "{cap}: {reply:?}");

        // HTTP: the single endpoint and the batch.
        let key = anon();
        let headers = [
            ("apikey", key.as_str()),
            ("content-type", "application/json"),
        ];
        for (len, status) in [(cap, 202), (cap + 1, 422)] {
            let path = format!("/api/broadcast/{}/events/e", "p".repeat(len));
            let resp = http::request(addr(&server), "POST", &path, &headers, b"{}").await;
            assert_eq!(resp.status, status, "{cap}/{len}: {}", resp.text());
            let batch =
                json!({"messages": [{"topic": "p".repeat(len), "event": "e", "payload": {}}]});
            let resp = http::request(
                addr(&server),
                "POST",
                "/api/broadcast",
                &headers,
                batch.to_string().as_bytes(),
            )
            .await;
            assert_eq!(resp.status, status, "{cap}/{len}: {}", resp.text());
            if status == 422 {
                let reason = json!([format!("should be at most {cap} byte(s)")]);
                assert_eq!(
                    resp.json(),
                    json!({"errors": {"messages": [{"topic": reason}]}})
                );
            }
        }
        let path = format!("/api/broadcast/{}/events/e", "p".repeat(cap + 1));
        let resp = http::request(addr(&server), "POST", &path, &headers, b"{}").await;
        assert_eq!(
            resp.json(),
            json!({"errors": {"topic": [format!("should be at most {cap} byte(s)")]}})
        );
    }
}
