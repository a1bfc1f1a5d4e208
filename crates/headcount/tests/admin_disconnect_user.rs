//! "Disconnect a user" from the admin API, through the real binary, for sockets as
//! supabase-js opens them: connected with the anon key, the user's token sent in the join's
//! `access_token` (or later in an `access_token` refresh). Such sockets were missed, and the
//! answer's count did not say so.

use std::net::SocketAddr;

use headcount_testkit::http;
use headcount_testkit::process::ServerProcess;
use headcount_testkit::{WsClient, anon, token, user_token};
use serde_json::json;

/// The close code of a socket closed from the admin API.
const POLICY_VIOLATION: u16 = 1008;

async fn connect(server: &ServerProcess, apikey: &str) -> WsClient {
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={apikey}&vsn=2.0.0",
        server.port
    );
    WsClient::connect(&url).await.expect("connect")
}

/// Joins `topic` as supabase-js does: the token in the join payload (none: the apikey's).
async fn join(c: &mut WsClient, topic: &str, access_token: Option<&str>) -> String {
    let mut payload = json!({"config": {"broadcast": {"self": false}, "presence": {"key": "", "enabled": false}, "private": false}});
    if let Some(t) = access_token {
        payload["access_token"] = json!(t);
    }
    let (jr, reply) = c.join_with(topic, payload).await;
    assert_eq!(reply.payload["status"], "ok", "{reply:?}");
    jr
}

/// A heartbeat answered: everything sent before it has been handled.
async fn settled(c: &mut WsClient) {
    let r = c.push("", "phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
}

async fn disconnect_sub(server: &ServerProcess, sub: &str) -> serde_json::Value {
    let admin = format!("Bearer {}", token("service_role", 600));
    let resp = http::request(
        SocketAddr::from(([127, 0, 0, 1], server.port)),
        "POST",
        "/admin/api/disconnect",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        json!({ "sub": sub }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

#[tokio::test]
async fn a_users_sockets_are_closed_whichever_token_named_them_and_counted_truly() {
    let server = ServerProcess::start();
    let alice = user_token("authenticated", "alice", 600);
    let bob = user_token("authenticated", "bob", 600);

    // supabase-js: the anon key on the socket, alice's token in the join.
    let mut in_join = connect(&server, &anon()).await;
    join(&mut in_join, "realtime:room", Some(&alice)).await;
    // Joined as nobody in particular, then signed in: the token comes as a refresh.
    let mut refreshed = connect(&server, &anon()).await;
    let jr = join(&mut refreshed, "realtime:room", None).await;
    refreshed
        .push(
            &jr,
            "realtime:room",
            "access_token",
            json!({"access_token": alice}),
        )
        .await;
    settled(&mut refreshed).await;
    // alice's token as the apikey itself.
    let mut as_apikey = connect(&server, &alice).await;
    join(&mut as_apikey, "realtime:room", None).await;
    // Someone else, the same way supabase-js connects.
    let mut other = connect(&server, &anon()).await;
    join(&mut other, "realtime:room", Some(&bob)).await;

    assert_eq!(
        disconnect_sub(&server, "alice").await,
        json!({"disconnected": 3})
    );
    for (name, c) in [
        ("token in the join", &mut in_join),
        ("token in a refresh", &mut refreshed),
        ("token as the apikey", &mut as_apikey),
    ] {
        assert_eq!(c.expect_close().await, Some(POLICY_VIOLATION), "{name}");
    }
    // bob's socket stays, and works.
    settled(&mut other).await;
    // Nobody of alice's is left: nothing more to close, and the answer says so.
    assert_eq!(
        disconnect_sub(&server, "alice").await,
        json!({"disconnected": 0})
    );
    settled(&mut other).await;
    assert_eq!(
        disconnect_sub(&server, "bob").await,
        json!({"disconnected": 1})
    );
    assert_eq!(other.expect_close().await, Some(POLICY_VIOLATION));
}
