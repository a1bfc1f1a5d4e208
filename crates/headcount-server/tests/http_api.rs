//! The HTTP surface for backends and operators, through real HTTP against a real server, with
//! real WebSocket members on the receiving end: broadcast over HTTP (batch and single, as
//! Supabase answers them) and the service_role admin API and page.

use std::time::Duration;

use headcount_server::auth;
use headcount_server::policy::Policy;
use headcount_testkit::http::{self, Response};
use headcount_testkit::{Frame, SECRET, TestServer, WsClient, anon, now_secs, token, user_token};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_millis(200);

const POLICY: &str = r#"
[[rule]]
topic = "secret:*"
role = "reader"
allow = ["broadcast:read", "presence:read"]

[[rule]]
topic = "secret:*"
role = "writer"
allow = ["broadcast:read", "broadcast:write"]
"#;

const BATCH_PATHS: [&str; 2] = ["/realtime/v1/api/broadcast", "/api/broadcast"];

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> Response {
    http::request(server.addr, "POST", path, headers, body.as_ref()).await
}

/// A batch request with the anon key in the `apikey` header.
async fn post_batch(server: &TestServer, messages: Value) -> Response {
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
async fn post_single(server: &TestServer, topic: &str, event: &str, payload: Value) -> Response {
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

fn assert_accepted(resp: &Response) {
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (202, ""),
        "202 with an empty body"
    );
}

fn assert_unauthorized(resp: &Response, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.text());
    assert_eq!(resp.json(), json!({"message": "Unauthorized"}), "{what}");
}

/// A member of `topic` (given without `realtime:`) on a socket of serializer `vsn`.
async fn member(server: &TestServer, vsn: &str, topic: &str) -> WsClient {
    let mut c = server.client(vsn).await;
    c.join(&format!("realtime:{topic}"), json!({})).await;
    c
}

/// The next `broadcast` on `topic`, text frames only: its payload.
async fn next_broadcast(c: &mut WsClient, topic: &str) -> Value {
    c.expect_event(&format!("realtime:{topic}"), "broadcast")
        .await
        .payload
}

/// The `meta.id` of a delivered HTTP broadcast, checked to be a UUID.
fn meta_id(payload: &Value) -> String {
    let id = payload["meta"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta.id in {payload}"));
    uuid_ok(id);
    id.to_owned()
}

fn uuid_ok(id: &str) {
    assert!(
        id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4,
        "not a UUID: {id}"
    );
}

/// A binary user broadcast (kind 4): (topic, event, metadata, encoding, body).
fn decode_kind4(bytes: &[u8]) -> (String, String, Vec<u8>, u8, Vec<u8>) {
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
fn bad_tokens() -> Vec<(&'static str, String)> {
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

// ---- broadcast over HTTP: batch ----

#[tokio::test]
async fn a_batch_reaches_every_member_of_each_topic_in_both_serializers() {
    let server = TestServer::start().await;
    let mut v2 = member(&server, "2.0.0", "room1").await;
    let mut v1 = member(&server, "1.0.0", "room1").await;
    let mut other = member(&server, "2.0.0", "room2").await;
    let id = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";
    let resp = post_batch(
        &server,
        json!([
            {"topic": "room1", "event": "cursor", "payload": {"x": 1, "text": "héllo \"q\""}, "id": id},
            {"topic": "room2", "event": "chat", "payload": {"m": "hi"}, "private": false},
        ]),
    )
    .await;
    assert_accepted(&resp);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));

    let expected = json!({"event": "cursor", "payload": {"x": 1, "text": "héllo \"q\""}, "type": "broadcast", "meta": {"id": id}});
    assert_eq!(next_broadcast(&mut v2, "room1").await, expected);
    assert_eq!(next_broadcast(&mut v1, "room1").await, expected);
    let got = next_broadcast(&mut other, "room2").await;
    meta_id(&got);
    assert_eq!(
        (
            got["event"].clone(),
            got["payload"].clone(),
            got["type"].clone()
        ),
        (json!("chat"), json!({"m": "hi"}), json!("broadcast"))
    );
    // One message each: room1's members got nothing of room2's.
    v2.expect_silence(SHORT).await;
    v1.expect_silence(SHORT).await;
}

#[tokio::test]
async fn both_paths_both_headers_and_a_query_string_are_accepted() {
    let server = TestServer::start().await;
    let mut m = member(&server, "2.0.0", "paths").await;
    let key = anon();
    let auth = bearer(&key);
    for path in BATCH_PATHS {
        for (name, value) in [("apikey", key.as_str()), ("authorization", auth.as_str())] {
            // realtime-js derives this URL from its socket's, query string included.
            let url = format!("{path}?apikey=ignored&vsn=2.0.0");
            let body =
                json!({"messages": [{"topic": "paths", "event": name, "payload": {"path": path}}]});
            let resp = post(&server, &url, &[(name, value)], body.to_string()).await;
            assert_accepted(&resp);
            let got = next_broadcast(&mut m, "paths").await;
            assert_eq!(
                (got["event"].as_str(), &got["payload"]),
                (Some(name), &json!({"path": path}))
            );
        }
    }
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_bad_token_with_401() {
    let server = TestServer::start().await;
    let mut m = member(&server, "2.0.0", "auth").await;
    let batch = json!({"messages": [{"topic": "auth", "event": "e", "payload": {}}]}).to_string();
    let single = "/api/broadcast/auth/events/e";
    for path in BATCH_PATHS.into_iter().chain([single]) {
        let resp = post(
            &server,
            path,
            &[("content-type", "application/json")],
            &batch,
        )
        .await;
        assert_unauthorized(&resp, &format!("{path} without a token"));
        let resp = post(
            &server,
            path,
            &[("authorization", "Basic dXNlcjpwYXNz")],
            &batch,
        )
        .await;
        assert_unauthorized(&resp, &format!("{path} with basic auth"));
        for (what, bad) in bad_tokens() {
            for header in ["apikey", "authorization"] {
                let value = if header == "apikey" {
                    bad.clone()
                } else {
                    bearer(&bad)
                };
                let resp = post(
                    &server,
                    path,
                    &[(header, &value), ("content-type", "application/json")],
                    &batch,
                )
                .await;
                assert_unauthorized(&resp, &format!("{path}, {header}: {what}"));
            }
        }
        // A bearer token wins over the apikey header, as in Supabase.
        let good = anon();
        let resp = post(
            &server,
            path,
            &[
                ("apikey", &good),
                ("authorization", &bearer("not-a-jwt")),
                ("content-type", "application/json"),
            ],
            &batch,
        )
        .await;
        assert_unauthorized(&resp, &format!("{path}: a bad bearer beside a good apikey"));
    }
    m.expect_silence(SHORT).await;
}

#[tokio::test]
async fn invalid_batches_get_422_and_nothing_is_sent() {
    let server = TestServer::start_with(|c| c.limits.max_payload_size_kb = 1).await;
    let mut m = member(&server, "2.0.0", "v").await;
    let big = "x".repeat(1000);
    let cases = [
        (
            json!([{"event": "e", "payload": {}}]),
            json!({"messages": [{"topic": ["can't be blank"]}]}),
        ),
        (
            json!([{"topic": "v", "payload": {}}]),
            json!({"messages": [{"event": ["can't be blank"]}]}),
        ),
        (
            json!([{"topic": "v", "event": "e"}]),
            json!({"messages": [{"payload": ["can't be blank"]}]}),
        ),
        (
            json!([{"topic": "v", "event": "e", "payload": {"big": big}}]),
            json!({"messages": [{"payload": ["Payload size exceeds tenant limit"]}]}),
        ),
        (
            // The valid message is not sent either: the batch is refused as a whole.
            json!([{"topic": "v", "event": "ok", "payload": {}}, {"topic": "v", "event": "e", "payload": "text"}]),
            json!({"messages": [{}, {"payload": ["is invalid"]}]}),
        ),
        (json!([]), json!({"messages": ["can't be blank"]})),
    ];
    for (messages, errors) in cases {
        let resp = post_batch(&server, messages.clone()).await;
        assert_eq!(resp.status, 422, "{messages}: {}", resp.text());
        assert_eq!(resp.json(), json!({ "errors": errors }), "{messages}");
    }
    let key = anon();
    let resp = post(&server, "/api/broadcast", &[("apikey", &key)], "{}").await;
    assert_eq!(
        (resp.status, resp.json()),
        (422, json!({"errors": {"messages": ["can't be blank"]}}))
    );
    let resp = post(&server, "/api/broadcast", &[("apikey", &key)], "{not json").await;
    assert_eq!(resp.status, 400);
    // Just under the limit is fine.
    let fits = "x".repeat(1000 - r#"{"big":""}"#.len());
    assert_accepted(
        &post_batch(
            &server,
            json!([{"topic": "v", "event": "fits", "payload": {"big": fits}}]),
        )
        .await,
    );
    let got = next_broadcast(&mut m, "v").await;
    assert_eq!(got["event"], "fits", "the refused batches sent nothing");
}

// ---- broadcast over HTTP: single ----

#[tokio::test]
async fn a_single_json_message_reaches_both_serializers() {
    let server = TestServer::start().await;
    let mut v2 = member(&server, "2.0.0", "room:a").await;
    let mut v1 = member(&server, "1.0.0", "room:a").await;
    let key = anon();
    for path in [
        "/realtime/v1/api/broadcast/room%3Aa/events/new%20msg",
        "/api/broadcast/room%3Aa/events/new%20msg",
    ] {
        // As realtime-js's httpSend(): apikey and bearer headers, the socket's query string.
        let url = format!("{path}?apikey={key}&vsn=2.0.0");
        let resp = post(
            &server,
            &url,
            &[
                ("apikey", &key),
                ("authorization", &bearer(&key)),
                ("content-type", "application/json; charset=utf-8"),
            ],
            r#"{"x": 1, "list": [true, null]}"#,
        )
        .await;
        assert_accepted(&resp);
        for c in [&mut v2, &mut v1] {
            let got = next_broadcast(c, "room:a").await;
            meta_id(&got);
            assert_eq!(
                (&got["event"], &got["payload"], &got["type"]),
                (
                    &json!("new msg"),
                    &json!({"x": 1, "list": [true, null]}),
                    &json!("broadcast")
                )
            );
        }
    }
    // Any JSON value is a payload, a bare string included.
    assert_accepted(&post_single(&server, "room:a", "s", json!("just text")).await);
    assert_eq!(
        next_broadcast(&mut v2, "room:a").await["payload"],
        "just text"
    );
}

#[tokio::test]
async fn octet_stream_goes_out_as_binary_kind_4_to_2_0_0_members_only() {
    let server = TestServer::start().await;
    let mut v2 = member(&server, "2.0.0", "bin").await;
    let mut v1 = member(&server, "1.0.0", "bin").await;
    let key = anon();
    let bytes: Vec<u8> = vec![0, 1, 2, 0xff, 0xfe, b'{'];
    let resp = post(
        &server,
        "/api/broadcast/bin/events/blob",
        &[
            ("apikey", &key),
            ("content-type", "application/octet-stream"),
        ],
        &bytes,
    )
    .await;
    assert_accepted(&resp);
    match v2.recv().await {
        Frame::Binary(frame) => {
            let (topic, event, meta, enc, body) = decode_kind4(&frame);
            assert_eq!(
                (topic.as_str(), event.as_str(), meta.len(), enc),
                ("realtime:bin", "blob", 0, 0)
            );
            assert_eq!(body, bytes);
        }
        other => panic!("expected a binary frame, got {other:?}"),
    }
    // Bytes have no JSON form: the 1.0.0 member gets the next message, not this one.
    assert_accepted(&post_single(&server, "bin", "after", json!({})).await);
    assert_eq!(next_broadcast(&mut v1, "bin").await["event"], "after");
    v1.expect_silence(SHORT).await;
}

#[tokio::test]
async fn other_content_types_get_415() {
    let server = TestServer::start().await;
    let key = anon();
    let expected = json!({"error": "Unsupported Media Type. Use application/json or application/octet-stream"});
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut headers = vec![("apikey", key.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let resp = post(&server, "/api/broadcast/room/events/e", &headers, "{}").await;
        assert_eq!(resp.status, 415, "{content_type:?}");
        assert_eq!(resp.json(), expected, "{content_type:?}");
    }
}

#[tokio::test]
async fn a_single_message_above_the_limit_or_not_json_is_refused() {
    let server = TestServer::start_with(|c| c.limits.max_payload_size_kb = 1).await;
    let mut m = member(&server, "2.0.0", "lim").await;
    let key = anon();
    let too_big = format!("\"{}\"", "x".repeat(1000));
    for ct in ["application/json", "application/octet-stream"] {
        let resp = post(
            &server,
            "/api/broadcast/lim/events/e",
            &[("apikey", &key), ("content-type", ct)],
            &too_big,
        )
        .await;
        assert_eq!(resp.status, 422, "{ct}");
        assert_eq!(
            resp.json(),
            json!({"errors": {"payload": ["Payload size exceeds tenant limit"]}})
        );
    }
    let resp = post(
        &server,
        "/api/broadcast/lim/events/e",
        &[("apikey", &key), ("content-type", "application/json")],
        "{oops",
    )
    .await;
    assert_eq!(resp.status, 400);
    // Far above the limit: refused without reading it all.
    let huge = vec![b'x'; 200_000];
    let resp = post(
        &server,
        "/api/broadcast/lim/events/e",
        &[
            ("apikey", &key),
            ("content-type", "application/octet-stream"),
        ],
        &huge,
    )
    .await;
    assert_eq!(resp.status, 413);
    assert_accepted(&post_single(&server, "lim", "ok", json!({})).await);
    assert_eq!(next_broadcast(&mut m, "lim").await["event"], "ok");
}

// ---- limits, private channels, CORS, metrics ----

#[tokio::test]
async fn the_events_rate_gives_429() {
    let server = TestServer::start_with(|c| c.limits.max_events_per_second = Some(5)).await;
    let mut m = member(&server, "2.0.0", "rate").await;
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"topic": "rate", "event": format!("e{i}"), "payload": {}}))
        .collect();
    let resp = post_batch(&server, json!(six)).await;
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.json(),
        json!({"message": "Too many messages to broadcast, please reduce the batch size"})
    );
    // Five fill the second's window; the next one is refused. (The window is one second from
    // its first message; should this machine be slower than that, try again.)
    let mut refused = None;
    for _ in 0..3 {
        assert_accepted(&post_batch(&server, json!(six[..5])).await);
        let resp = post_single(&server, "rate", "over", json!({})).await;
        if resp.status == 429 {
            refused = Some(resp);
            break;
        }
        assert_accepted(&resp);
    }
    let resp = refused.expect("a 429 once the second's events are used");
    assert_eq!(
        resp.json(),
        json!({"message": "You have exceeded your rate limit"})
    );
    assert_eq!(next_broadcast(&mut m, "rate").await["event"], "e0");
    assert!(
        server
            .hub
            .metrics
            .refusals(headcount_server::metrics::Limit::Events)
            >= 2
    );
}

async fn private_member(server: &TestServer, topic: &str, role: &str) -> WsClient {
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

#[tokio::test]
async fn private_messages_need_broadcast_write() {
    let server = TestServer::start_with(|c| c.policy = Policy::from_toml(POLICY).unwrap()).await;
    let mut secret = private_member(&server, "secret:a", "reader").await;
    let mut public = member(&server, "2.0.0", "secret:a").await;
    let writer = user_token("writer", "u-writer", 60);
    let reader = user_token("reader", "u-reader", 60);

    // Batch: a denied private message is skipped with 202; the allowed one follows it.
    for (who, token) in [("reader", &reader), ("anon", &anon())] {
        let body = json!({"messages": [{"topic": "secret:a", "event": who, "payload": {}, "private": true}]});
        let resp = post(
            &server,
            "/api/broadcast",
            &[("apikey", token)],
            body.to_string(),
        )
        .await;
        assert_accepted(&resp);
    }
    let body = json!({"messages": [
        {"topic": "secret:a", "event": "allowed", "payload": {"n": 1}, "private": true},
        {"topic": "secret:a", "event": "public", "payload": {}, "private": false},
    ]});
    let auth = bearer(&writer);
    assert_accepted(
        &post(
            &server,
            "/api/broadcast",
            &[("authorization", &auth)],
            body.to_string(),
        )
        .await,
    );
    assert_eq!(
        next_broadcast(&mut secret, "secret:a").await["event"],
        "allowed"
    );
    // Public and private rooms of one name are apart.
    assert_eq!(
        next_broadcast(&mut public, "secret:a").await["event"],
        "public"
    );

    // Single: a denied private message is a 403.
    for token in [&reader, &anon()] {
        let resp = post(
            &server,
            "/api/broadcast/secret:a/events/e?private=true",
            &[("apikey", token), ("content-type", "application/json")],
            "{}",
        )
        .await;
        assert_eq!(
            (resp.status, resp.json()),
            (403, json!({"message": "Unauthorized"}))
        );
    }
    let resp = post(
        &server,
        "/api/broadcast/secret:a/events/single?private=true&vsn=2.0.0",
        &[("apikey", &writer), ("content-type", "application/json")],
        r#"{"n": 2}"#,
    )
    .await;
    assert_accepted(&resp);
    let got = next_broadcast(&mut secret, "secret:a").await;
    assert_eq!(
        (&got["event"], &got["payload"]),
        (&json!("single"), &json!({"n": 2}))
    );
    secret.expect_silence(SHORT).await;
    public.expect_silence(SHORT).await;
}

#[tokio::test]
async fn cors_is_open_and_preflights_are_answered() {
    let server = TestServer::start().await;
    for path in [
        "/realtime/v1/api/broadcast",
        "/api/broadcast",
        "/realtime/v1/api/broadcast/room/events/e",
        "/api/broadcast/room/events/e",
    ] {
        let resp = http::request(
            server.addr,
            "OPTIONS",
            path,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "apikey, authorization, content-type, x-client-info",
                ),
            ],
            b"",
        )
        .await;
        assert!(
            resp.status == 204 || resp.status == 200,
            "{path}: {}",
            resp.status
        );
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert!(
            resp.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("POST"))
        );
        let allowed = resp.header("access-control-allow-headers").unwrap_or("");
        for h in ["apikey", "authorization", "content-type"] {
            assert!(allowed.contains(h), "{path}: {allowed}");
        }
    }
    // Refusals carry the header too, so a page can read them.
    let resp = post(
        &server,
        "/api/broadcast",
        &[("origin", "https://app.example")],
        "{}",
    )
    .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn http_broadcasts_are_counted() {
    let server = TestServer::start().await;
    let _m = member(&server, "2.0.0", "count").await;
    let before = server
        .hub
        .metrics
        .broadcasts_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_accepted(
        &post_batch(
            &server,
            json!([
                {"topic": "count", "event": "a", "payload": {}},
                {"topic": "nobody-here", "event": "b", "payload": {}},
            ]),
        )
        .await,
    );
    assert_accepted(&post_single(&server, "count", "c", json!(1)).await);
    let after = server
        .hub
        .metrics
        .broadcasts_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 3);
}

// ---- admin API ----

fn service() -> String {
    user_token("service_role", "ops", 3600)
}

async fn admin_get(server: &TestServer, path: &str) -> Response {
    let auth = bearer(&service());
    http::get(server.addr, path, &[("authorization", &auth)]).await
}

async fn admin_disconnect(server: &TestServer, body: Value) -> Response {
    let key = service();
    post(
        server,
        "/admin/api/disconnect",
        &[("apikey", &key), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

const ADMIN_GETS: [&str; 4] = [
    "/admin/api/stats",
    "/admin/api/channels",
    "/admin/api/channels/room/presence",
    "/admin/api/connections",
];

#[tokio::test]
async fn the_admin_api_wants_a_service_role_token() {
    let server = TestServer::start().await;
    let mut bystander = member(&server, "2.0.0", "room").await;
    let mut requests: Vec<(&str, &str)> = ADMIN_GETS.iter().map(|p| ("GET", *p)).collect();
    requests.push(("POST", "/admin/api/disconnect"));
    let body = json!({"sub": "anyone"}).to_string();
    for (method, path) in requests {
        let resp = http::request(server.addr, method, path, &[], body.as_bytes()).await;
        assert_unauthorized(&resp, &format!("{method} {path} without a token"));
        for (what, bad) in bad_tokens() {
            let resp = http::request(
                server.addr,
                method,
                path,
                &[("authorization", &bearer(&bad))],
                body.as_bytes(),
            )
            .await;
            assert_unauthorized(&resp, &format!("{method} {path}: {what}"));
        }
        for role in ["anon", "authenticated", "service"] {
            let t = token(role, 60);
            for header in [("apikey", t.clone()), ("authorization", bearer(&t))] {
                let resp = http::request(
                    server.addr,
                    method,
                    path,
                    &[(header.0, &header.1)],
                    body.as_bytes(),
                )
                .await;
                assert_eq!(
                    (resp.status, resp.json()),
                    (403, json!({"message": "Forbidden"})),
                    "{method} {path} as {role}"
                );
            }
        }
    }
    bystander.expect_silence(SHORT).await;
}

#[tokio::test]
async fn the_admin_api_lists_channels_presence_stats_and_connections() {
    let server = TestServer::start().await;
    let presence = |key: &str| json!({"presence": {"key": key, "enabled": true}});
    let alice_token = user_token("authenticated", "alice-id", 600);
    let mut a = WsClient::connect(&server.ws_url(Some("2.0.0"), &alice_token))
        .await
        .expect("connect");
    let mut b = server.client("1.0.0").await;
    let mut c = server.client("2.0.0").await;
    let ja = a.join("realtime:lobby", presence("alice")).await;
    let jb = b.join("realtime:lobby", presence("bob")).await;
    c.join("realtime:quiet", json!({})).await;
    for (client, jr, payload) in [
        (&mut a, &ja, json!({"status": "online"})),
        (&mut b, &jb, json!({"status": "away"})),
    ] {
        let r = client
            .push(
                jr,
                "realtime:lobby",
                "presence",
                json!({"type": "presence", "event": "track", "payload": payload}),
            )
            .await;
        client.expect_reply(&r).await;
    }

    let resp = admin_get(&server, "/admin/api/channels").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"total": 2, "channels": [
            {"topic": "lobby", "private": false, "members": 2, "presence_keys": 2, "presences": 2},
            {"topic": "quiet", "private": false, "members": 1, "presence_keys": 0, "presences": 0},
        ]})
    );

    let resp = admin_get(&server, "/admin/api/channels/lobby/presence").await;
    assert_eq!(resp.status, 200);
    let state = resp.json();
    for (key, status) in [("alice", "online"), ("bob", "away")] {
        let metas = state[key]["metas"].as_array().expect("metas");
        assert_eq!(metas.len(), 1, "{state}");
        assert_eq!(metas[0]["status"], status);
        assert!(metas[0]["phx_ref"].is_string());
    }
    assert_eq!(
        admin_get(&server, "/admin/api/channels/quiet/presence")
            .await
            .json(),
        json!({})
    );
    for missing in [
        "/admin/api/channels/nowhere/presence",
        "/admin/api/channels/lobby/presence?private=true",
    ] {
        let resp = admin_get(&server, missing).await;
        assert_eq!(
            (resp.status, resp.json()),
            (404, json!({"message": "Channel not found"})),
            "{missing}"
        );
    }

    let stats = admin_get(&server, "/admin/api/stats").await.json();
    for (field, value) in [
        ("connections", 3),
        ("users", 3),
        ("channels", 2),
        ("members", 3),
        ("presence_keys", 2),
        ("presences", 2),
    ] {
        assert_eq!(stats[field], value, "{field} in {stats}");
    }
    for counter in [
        "messages_in",
        "messages_out",
        "broadcasts",
        "presence_events",
        "bytes_in",
        "bytes_out",
        "joins",
    ] {
        assert!(stats[counter].is_u64(), "{counter} in {stats}");
    }
    assert!(stats["messages_in"].as_u64() >= Some(5), "{stats}");
    // Presence diffs may be merged over a short window before they go out (and are counted).
    let deadline = tokio::time::Instant::now() + headcount_testkit::WAIT;
    loop {
        let stats = admin_get(&server, "/admin/api/stats").await.json();
        if stats["presence_events"].as_u64() >= Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no presence event counted: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_time = stats["time_ms"].as_u64().unwrap();
    assert!((server_time as i64 / 1000 - now_secs()).abs() <= 5);

    let resp = admin_get(&server, "/admin/api/connections").await;
    let text = resp.text();
    assert!(
        !text.contains(&alice_token) && !text.contains("eyJ"),
        "no token in {text}"
    );
    let list = resp.json();
    assert_eq!(list["total"], 3);
    let conns = list["connections"].as_array().unwrap();
    let alice = conns
        .iter()
        .find(|c| c["sub"] == "alice-id")
        .expect("alice's socket");
    assert_eq!(
        (&alice["role"], &alice["serializer"]),
        (&json!("authenticated"), &json!("2.0.0"))
    );
    let connected = alice["connected_at"].as_u64().unwrap();
    assert!(connected <= server_time && server_time - connected < 60_000);
    let mut serializers: Vec<&str> = conns
        .iter()
        .map(|c| c["serializer"].as_str().unwrap())
        .collect();
    serializers.sort();
    assert_eq!(serializers, ["1.0.0", "2.0.0", "2.0.0"]);
    assert!(conns.iter().all(|c| c["id"].is_u64()));
}

#[tokio::test]
async fn private_channels_are_listed_apart() {
    let server = TestServer::start_with(|c| c.policy = Policy::from_toml(POLICY).unwrap()).await;
    let _secret = private_member(&server, "secret:p", "reader").await;
    let channels = admin_get(&server, "/admin/api/channels").await.json();
    assert_eq!(
        channels["channels"],
        json!([{"topic": "secret:p", "private": true, "members": 1, "presence_keys": 0, "presences": 0}])
    );
    let resp = admin_get(
        &server,
        "/admin/api/channels/secret:p/presence?private=true",
    )
    .await;
    assert_eq!((resp.status, resp.json()), (200, json!({})));
    let resp = admin_get(&server, "/admin/api/channels/secret:p/presence").await;
    assert_eq!(resp.status, 404);
}

async fn expect_admin_close(c: &mut WsClient) {
    let deadline = tokio::time::Instant::now() + headcount_testkit::WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(Frame::Close(close)) => {
                assert_eq!(
                    close,
                    Some((1008, "disconnected by an administrator".to_owned()))
                );
                return;
            }
            Some(Frame::Ended) => panic!("ended without a close frame"),
            Some(_) => continue,
            None => panic!("no close frame in time"),
        }
    }
}

#[tokio::test]
async fn disconnect_by_connection_and_by_user() {
    let server = TestServer::start().await;
    let connect = |sub: &str| {
        let url = server.ws_url(Some("2.0.0"), &user_token("authenticated", sub, 600));
        async move { WsClient::connect(&url).await.expect("connect") }
    };
    let mut u1a = connect("user-1").await;
    let mut u1b = connect("user-1").await;
    let mut u2 = connect("user-2").await;
    let mut anon_client = server.client("1.0.0").await;
    for c in [&mut u1a, &mut u1b, &mut u2, &mut anon_client] {
        c.join("realtime:kick", json!({})).await;
    }

    // By connection id, found in the listing.
    let conns = admin_get(&server, "/admin/api/connections").await.json();
    let anon_id = conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "anon")
        .expect("the anon socket")["id"]
        .as_u64()
        .unwrap();
    let resp = admin_disconnect(&server, json!({ "conn": anon_id })).await;
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"disconnected": 1}))
    );
    expect_admin_close(&mut anon_client).await;

    // By user: every socket of that sub, no other.
    let resp = admin_disconnect(&server, json!({"sub": "user-1"})).await;
    assert_eq!(
        (resp.status, resp.json()),
        (200, json!({"disconnected": 2}))
    );
    expect_admin_close(&mut u1a).await;
    expect_admin_close(&mut u1b).await;
    u2.expect_silence(SHORT).await;

    let resp = admin_disconnect(&server, json!({"sub": "nobody"})).await;
    assert_eq!(resp.json(), json!({"disconnected": 0}));
    for bad in [
        json!({}),
        json!({"conn": 1, "sub": "user-2"}),
        json!({"conn": "x"}),
        json!([]),
    ] {
        let resp = admin_disconnect(&server, bad.clone()).await;
        assert_eq!(resp.status, 422, "{bad}");
    }
    // The remaining socket still works.
    assert_accepted(&post_single(&server, "kick", "still-here", json!({})).await);
    assert_eq!(next_broadcast(&mut u2, "kick").await["event"], "still-here");
}

#[tokio::test]
async fn the_admin_page_is_served_and_self_contained() {
    let server = TestServer::start().await;
    let resp = http::get(server.addr, "/admin", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = resp.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = resp.text();
    assert!(html.contains("/admin/api/stats") && html.contains("sessionStorage"));
    for external in [
        "<script src",
        "<link rel=\"stylesheet\"",
        "src=\"http",
        "href=\"http",
        "url(http",
    ] {
        assert!(!html.contains(external), "the page loads {external}");
    }
}
