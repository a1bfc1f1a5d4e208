//! The service_role admin API and page, through real HTTP against a real server.

#[allow(dead_code)] // each test file uses its own share of the helpers
mod common;

use common::*;

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
    assert_eq!(next_single(&mut u2, "kick").await["event"], "still-here");
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
