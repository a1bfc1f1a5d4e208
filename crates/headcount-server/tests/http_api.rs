//! Broadcast over HTTP through real HTTP against a real server, with real WebSocket members on
//! the receiving end: batch and single messages, as Supabase answers them.

#[allow(dead_code)] // each test file uses its own share of the helpers
mod common;

use common::*;
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
        // As Supabase sends it: a 2.0.0 member gets a binary user broadcast with a JSON body
        // and no metadata.
        match v2.recv().await {
            Frame::Binary(frame) => {
                let (topic, event, meta, enc, body) = decode_kind4(&frame);
                assert_eq!(
                    (topic.as_str(), event.as_str(), meta.len(), enc),
                    ("realtime:room:a", "new msg", 0, 1)
                );
                assert_eq!(body, br#"{"x": 1, "list": [true, null]}"#);
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }
        // A 1.0.0 member gets the same as a text broadcast, without `meta`.
        let got = next_single(&mut v1, "room:a").await;
        assert_eq!(
            got,
            json!({"event": "new msg", "payload": {"x": 1, "list": [true, null]}, "type": "broadcast"})
        );
    }
    // Any JSON value is a payload, a bare string included.
    assert_accepted(&post_single(&server, "room:a", "s", json!("just text")).await);
    assert_eq!(next_single(&mut v2, "room:a").await["payload"], "just text");
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
    assert_eq!(next_single(&mut v1, "bin").await["event"], "after");
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
    assert_eq!(next_single(&mut m, "lim").await["event"], "ok");
}

// ---- limits, private channels, CORS, metrics ----

#[tokio::test]
async fn the_events_rate_gives_429() {
    // The node's limit: this one client may send all of it.
    let server = TestServer::start_with(|c| {
        c.limits.max_events_per_second = Some(5);
        c.limits.max_client_events_per_second = Some(100);
    })
    .await;
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
    let got = next_single(&mut secret, "secret:a").await;
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
