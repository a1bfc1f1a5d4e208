//! Helpers shared by the HTTP API tests.

pub(crate) use std::time::Duration;

pub(crate) use headcount_server::auth;
pub(crate) use headcount_server::policy::Policy;
pub(crate) use headcount_testkit::http::{self, Response};
pub(crate) use headcount_testkit::{
    Frame, SECRET, TestServer, WsClient, anon, now_secs, token, user_token,
};
pub(crate) use serde_json::{Value, json};

pub(crate) const SHORT: Duration = Duration::from_millis(200);

pub(crate) const POLICY: &str = r#"
[[rule]]
topic = "secret:*"
role = "reader"
allow = ["broadcast:read", "presence:read"]

[[rule]]
topic = "secret:*"
role = "writer"
allow = ["broadcast:read", "broadcast:write"]
"#;

pub(crate) const BATCH_PATHS: [&str; 2] = ["/realtime/v1/api/broadcast", "/api/broadcast"];

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub(crate) async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> Response {
    http::request(server.addr, "POST", path, headers, body.as_ref()).await
}

/// A batch request with the anon key in the `apikey` header.
pub(crate) async fn post_batch(server: &TestServer, messages: Value) -> Response {
    let key = anon();
    post(
        server,
        "/api/broadcast",
        &[("apikey", &key), ("content-type", "application/json")],
        json!({ "messages": messages }).to_string(),
    )
    .await
}

/// A single-message request with a JSON payload and the anon key as a bearer token.
pub(crate) async fn post_single(
    server: &TestServer,
    topic: &str,
    event: &str,
    payload: Value,
) -> Response {
    let auth = bearer(&anon());
    post(
        server,
        &format!("/api/broadcast/{topic}/events/{event}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        payload.to_string(),
    )
    .await
}

pub(crate) fn assert_accepted(resp: &Response) {
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (202, ""),
        "202 with an empty body"
    );
}

pub(crate) fn assert_unauthorized(resp: &Response, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.text());
    assert_eq!(resp.json(), json!({"message": "Unauthorized"}), "{what}");
}

/// A member of `topic` (given without `realtime:`) on a socket of serializer `vsn`.
pub(crate) async fn member(server: &TestServer, vsn: &str, topic: &str) -> WsClient {
    let mut c = server.client(vsn).await;
    c.join(&format!("realtime:{topic}"), json!({})).await;
    c
}

/// The next `broadcast` on `topic`, text frames only: its payload.
pub(crate) async fn next_broadcast(c: &mut WsClient, topic: &str) -> Value {
    c.expect_event(&format!("realtime:{topic}"), "broadcast")
        .await
        .payload
}

/// The next single-route broadcast on `topic` as Supabase sends it: a kind 4 frame with a JSON
/// body and no metadata to a 2.0.0 member, a text `broadcast` without `meta` to a 1.0.0 one.
/// Returns `{"event", "payload", "type"}` either way.
pub(crate) async fn next_single(c: &mut WsClient, topic: &str) -> Value {
    let topic = format!("realtime:{topic}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(Frame::Binary(frame)) => {
                let (t, event, meta, enc, body) = decode_kind4(&frame);
                assert_eq!((t.as_str(), meta.len(), enc), (topic.as_str(), 0, 1));
                let payload: Value = serde_json::from_slice(&body).expect("a JSON body");
                return json!({"event": event, "payload": payload, "type": "broadcast"});
            }
            Some(Frame::Text(text)) => {
                let m = c.decode(&text);
                if m.topic == topic && m.event == "broadcast" {
                    assert!(m.payload.get("meta").is_none(), "no meta: {}", m.payload);
                    return m.payload;
                }
            }
            other => panic!("no broadcast on {topic}: {other:?}"),
        }
    }
}

/// The `meta.id` of a delivered HTTP broadcast, checked to be a UUID.
pub(crate) fn meta_id(payload: &Value) -> String {
    let id = payload["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta.id in {payload}"));
    uuid_ok(id);
    id.to_owned()
}

pub(crate) fn uuid_ok(id: &str) {
    assert!(
        id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4,
        "not a UUID: {id}"
    );
}

/// A binary user broadcast (kind 4): (topic, event, metadata, encoding, body).
pub(crate) fn decode_kind4(bytes: &[u8]) -> (String, String, Vec<u8>, u8, Vec<u8>) {
    assert_eq!(bytes[0], 4, "kind 4 (user broadcast)");
    let (t, e, m, enc) = (
        bytes[1] as usize,
        bytes[2] as usize,
        bytes[3] as usize,
        bytes[4],
    );
    let rest = &bytes[5..];
    (
        String::from_utf8(rest[..t].to_vec()).unwrap(),
        String::from_utf8(rest[t..t + e].to_vec()).unwrap(),
        rest[t + e..t + e + m].to_vec(),
        enc,
        rest[t + e + m..].to_vec(),
    )
}

/// Tokens the HTTP API must refuse, with what is wrong with each.
pub(crate) fn bad_tokens() -> Vec<(&'static str, String)> {
    let now = now_secs();
    vec![
        ("malformed", "not-a-jwt".to_owned()),
        ("expired", token("anon", -10)),
        (
            "signed with another secret",
            auth::sign(
                "another-secret-that-is-long-enough",
                "anon",
                None,
                now,
                now + 60,
            ),
        ),
        (
            "without role",
            auth::sign_claims(SECRET, &json!({"exp": now + 60})),
        ),
        (
            "without exp",
            auth::sign_claims(SECRET, &json!({"role": "anon"})),
        ),
    ]
}

pub(crate) async fn private_member(server: &TestServer, topic: &str, role: &str) -> WsClient {
    let mut c = server.client("2.0.0").await;
    let (_, reply) = c
        .join_with(
            &format!("realtime:{topic}"),
            json!({"config": {"private": true}, "access_token": user_token(role, "u-reader", 60)}),
        )
        .await;
    assert_eq!(reply.payload["status"], "ok", "{reply:?}");
    c
}
