//! The Phoenix protocol rules, over a real socket, in both serializers.

use std::time::Duration;

use headcount_testkit::{Frame, TestServer, WsClient, anon, token};
use serde_json::json;

const BOTH: [&str; 2] = ["1.0.0", "2.0.0"];
const SHORT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn heartbeat_is_answered_in_both_serializers_and_without_vsn() {
    let server = TestServer::start().await;
    let mut v1 = server.client("1.0.0").await;
    v1.send_text(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"12"}"#)
        .await;
    assert_eq!(
        v1.recv().await,
        Frame::Text(r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"12"}"#.into())
    );
    let mut v2 = server.client("2.0.0").await;
    v2.send_text(r#"[null,"5","phoenix","heartbeat",{}]"#).await;
    assert_eq!(
        v2.recv().await,
        Frame::Text(r#"[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]"#.into())
    );
    let mut default = WsClient::connect(&server.ws_url(None, &anon()))
        .await
        .unwrap();
    default
        .send_text(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":0}"#)
        .await;
    assert_eq!(
        default.recv().await,
        Frame::Text(r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":0}"#.into()),
        "a missing vsn means 1.0.0, and numeric refs come back as numbers"
    );
}

#[tokio::test]
async fn both_websocket_paths_serve() {
    let server = TestServer::start().await;
    let url = format!(
        "ws://{}/socket/websocket?apikey={}&vsn=2.0.0",
        server.addr,
        anon()
    );
    let mut c = WsClient::connect(&url).await.unwrap();
    c.send_text(r#"[null,"1","phoenix","heartbeat",{}]"#).await;
    assert!(matches!(c.recv().await, Frame::Text(t) if t.contains("phx_reply")));
}

#[tokio::test]
async fn connect_errors_use_supabase_statuses_and_bodies() {
    let server = TestServer::start().await;
    for vsn in ["3.0.0", "2.1.0", "banana"] {
        let refused = WsClient::connect(&server.ws_url(Some(vsn), &anon()))
            .await
            .expect_err("refused");
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (403, ""),
            "vsn {vsn}"
        );
    }
    let no_key = format!("ws://{}/realtime/v1/websocket?vsn=2.0.0", server.addr);
    let refused = WsClient::connect(&no_key).await.err().unwrap();
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (401, r#"{"error":"API key is missing"}"#)
    );
    let cases = [
        (token("anon", -10), "Token has expired"),
        (
            "not-a-jwt".to_owned(),
            "The token provided is not a valid JWT",
        ),
        (
            headcount_server::auth::sign("other-secret", "anon", None, 0, i64::MAX / 2),
            "Failed to validate JWT signature",
        ),
        (
            headcount_server::auth::sign_claims(
                headcount_testkit::SECRET,
                &json!({"exp": 9_999_999_999i64}),
            ),
            "Fields `role` and `exp` are required in JWT",
        ),
    ];
    for (key, error) in cases {
        let refused = WsClient::connect(&server.ws_url(Some("2.0.0"), &key))
            .await
            .expect_err("refused");
        assert_eq!(refused.status, 401);
        let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(body, json!({ "error": error }));
    }
}

#[tokio::test]
async fn join_replies_with_postgres_changes_then_presence_state() {
    let server = TestServer::start().await;
    let mut v2 = server.client("2.0.0").await;
    v2.send_text(r#"["3","3","realtime:room1","phx_join",{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":true},"postgres_changes":[],"private":false},"access_token":null}]"#).await;
    assert_eq!(v2.recv().await, Frame::Text(r#"["3","3","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#.into()));
    assert_eq!(
        v2.recv().await,
        Frame::Text(r#"["3",null,"realtime:room1","presence_state",{}]"#.into())
    );

    let mut v1 = server.client("1.0.0").await;
    v1.send_text(r#"{"topic":"realtime:room1","event":"phx_join","payload":{"config":{"presence":{"enabled":true}}},"ref":"3","join_ref":"3"}"#).await;
    assert_eq!(
        v1.recv().await,
        Frame::Text(r#"{"topic":"realtime:room1","event":"phx_reply","payload":{"status":"ok","response":{"postgres_changes":[]}},"ref":"3"}"#.into())
    );
    assert_eq!(
        v1.recv().await,
        Frame::Text(
            r#"{"topic":"realtime:room1","event":"presence_state","payload":{},"ref":null}"#.into()
        )
    );
}

#[tokio::test]
async fn no_presence_state_when_presence_is_disabled() {
    for vsn in BOTH {
        let server = TestServer::start().await;
        let mut c = server.client(vsn).await;
        c.join("realtime:quiet", json!({"presence": {"enabled": false}}))
            .await;
        let (_, reply) = c.join_with("realtime:legacy", json!({})).await;
        assert_eq!(
            reply.payload["status"], "ok",
            "a join without config uses the defaults"
        );
        c.expect_silence(SHORT).await;
    }
}

#[tokio::test]
async fn unmatched_topics_and_unjoined_leaves() {
    for vsn in BOTH {
        let server = TestServer::start().await;
        let mut c = server.client(vsn).await;
        let r = c
            .push(
                "1",
                "realtime:never-joined",
                "broadcast",
                json!({"type":"broadcast","event":"x","payload":{}}),
            )
            .await;
        let reply = c.expect_reply(&r).await;
        assert_eq!(
            reply.payload,
            json!({"status":"error","response":{"reason":"unmatched topic"}})
        );
        assert_eq!(reply.join_ref, json!(null));

        let (_, reply) = c.join_with("lobby:1", json!({})).await;
        assert_eq!(
            reply.payload,
            json!({"status":"error","response":{"reason":"unmatched topic"}}),
            "{vsn}: only realtime:* topics"
        );

        let r = c
            .push("9", "realtime:never-joined", "phx_leave", json!({}))
            .await;
        assert_eq!(
            c.expect_reply(&r).await.payload,
            json!({"status":"ok","response":{}})
        );

        let (_, reply) = c.join_with("realtime:", json!({})).await;
        assert_eq!(
            reply.payload,
            json!({"status":"error","response":{"reason":"TopicNameRequired: You must provide a topic name"}})
        );
    }
}

#[tokio::test]
async fn leave_replies_ok_then_closes() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let jr = c.join("realtime:room", json!({})).await;
    c.send_text(format!(r#"["{jr}","11","realtime:room","phx_leave",{{}}]"#))
        .await;
    assert_eq!(
        c.recv().await,
        Frame::Text(format!(
            r#"["{jr}","11","realtime:room","phx_reply",{{"status":"ok","response":{{}}}}]"#
        ))
    );
    assert_eq!(
        c.recv().await,
        Frame::Text(format!(
            r#"["{jr}","{jr}","realtime:room","phx_close",{{}}]"#
        ))
    );
    let r = c
        .push(
            &jr,
            "realtime:room",
            "broadcast",
            json!({"type":"broadcast","event":"x","payload":{}}),
        )
        .await;
    assert_eq!(
        c.expect_reply(&r).await.payload["response"]["reason"],
        "unmatched topic",
        "the channel is gone"
    );

    let mut v1 = server.client("1.0.0").await;
    let jr = v1.join("realtime:room", json!({})).await;
    v1.send_text(format!(r#"{{"topic":"realtime:room","event":"phx_leave","payload":{{}},"ref":"7","join_ref":"{jr}"}}"#)).await;
    assert_eq!(
        v1.recv().await,
        Frame::Text(r#"{"topic":"realtime:room","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"7"}"#.into())
    );
    assert_eq!(
        v1.recv().await,
        Frame::Text(format!(
            r#"{{"topic":"realtime:room","event":"phx_close","payload":{{}},"ref":"{jr}"}}"#
        ))
    );
}

#[tokio::test]
async fn a_duplicate_join_closes_the_old_channel_first() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let old = c
        .join(
            "realtime:room",
            json!({"presence": {"key": "me", "enabled": true}}),
        )
        .await;
    c.push(
        &old,
        "realtime:room",
        "presence",
        json!({"type":"presence","event":"track","payload":{"a":1}}),
    )
    .await;
    c.expect_event("realtime:room", "presence_diff").await;
    let mut watcher = server.client("2.0.0").await;
    watcher
        .join("realtime:room", json!({"presence": {"enabled": true}}))
        .await;

    let new = c.next_ref();
    c.send(
        json!(new),
        json!(new),
        "realtime:room",
        "phx_join",
        json!({"config": {"presence": {"enabled": true}}}),
    )
    .await;
    let close = c.recv_msg().await;
    assert_eq!(
        (
            close.event.as_str(),
            close.join_ref.clone(),
            close.msg_ref.clone()
        ),
        ("phx_close", json!(old), json!(old))
    );
    let reply = c.recv_msg().await;
    assert_eq!(
        (reply.event.as_str(), reply.msg_ref.clone()),
        ("phx_reply", json!(new))
    );
    assert_eq!(reply.payload["status"], "ok");
    let diff = watcher.expect_event("realtime:room", "presence_diff").await;
    assert!(
        diff.payload["leaves"]["me"].is_object(),
        "the old join's presence left: {diff:?}"
    );
}

#[tokio::test]
async fn messages_with_a_stale_join_ref_are_ignored() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let jr = c
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    c.send_text(r#"["stale","20","realtime:room","broadcast",{"type":"broadcast","event":"x","payload":{}}]"#).await;
    c.expect_silence(SHORT).await;
    c.send_text(
        r#"[null,"21","realtime:room","broadcast",{"type":"broadcast","event":"x","payload":{}}]"#,
    )
    .await;
    assert_eq!(
        c.expect_reply("21").await.payload["status"],
        "ok",
        "a null join_ref is accepted"
    );
    let r = c
        .push(
            &jr,
            "realtime:room",
            "broadcast",
            json!({"type":"broadcast","event":"x","payload":{}}),
        )
        .await;
    assert_eq!(c.expect_reply(&r).await.payload["status"], "ok");
}

#[tokio::test]
async fn private_channels_are_refused_until_policies_exist() {
    for vsn in BOTH {
        let server = TestServer::start().await;
        let mut c = server.client(vsn).await;
        let (_, reply) = c
            .join_with("realtime:secret-room", json!({"config": {"private": true}}))
            .await;
        assert_eq!(
            reply.payload,
            json!({"status":"error","response":{"reason":"Unauthorized: You do not have permissions to read from this Channel topic: secret-room"}})
        );
    }
}

#[tokio::test]
async fn join_tokens_are_checked_with_supabase_reasons() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let cases = [
        (
            token("anon", -30),
            "InvalidJWTToken: Token has expired 30 seconds ago",
        ),
        (
            "garbage".to_owned(),
            "MalformedJWT: The token provided is not a valid JWT",
        ),
        (
            headcount_server::auth::sign("wrong", "anon", None, 0, i64::MAX / 2),
            "JwtSignatureError: Failed to validate JWT signature",
        ),
        (
            headcount_server::auth::sign_claims(
                headcount_testkit::SECRET,
                &json!({"role": "anon"}),
            ),
            "InvalidJWTToken: Fields `role` and `exp` are required in JWT",
        ),
    ];
    for (t, reason) in cases {
        let (_, reply) = c
            .join_with("realtime:room", json!({"config": {}, "access_token": t}))
            .await;
        let got = reply.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        if reason.contains("expired") {
            // The seconds are counted when the join arrives, so allow a second of drift.
            assert!(got == reason || got == reason.replace("30", "31"), "{got}");
        } else {
            assert_eq!(got, reason);
        }
        assert_eq!(reply.payload["status"], "error");
    }
    let (_, reply) = c
        .join_with(
            "realtime:room",
            json!({"config": {}, "access_token": "sb_publishable_abc"}),
        )
        .await;
    assert_eq!(
        reply.payload["status"], "ok",
        "sb_ keys fall back to the socket's apikey"
    );
    let (_, reply) = c
        .join_with(
            "realtime:room2",
            json!({"config": {}, "user_token": token("authenticated", 60)}),
        )
        .await;
    assert_eq!(
        reply.payload["status"], "ok",
        "user_token is an alias of access_token"
    );
}

#[tokio::test]
async fn refs_are_opaque_and_echoed_verbatim() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    c.send_text(r#"[0,0,"realtime:r","phx_join",{"config":{}}]"#)
        .await;
    assert_eq!(
        c.recv().await,
        Frame::Text(
            r#"[0,0,"realtime:r","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#
                .into()
        )
    );
    c.send_text(r#"[null,"a\"b","phoenix","heartbeat",{}]"#)
        .await;
    assert_eq!(
        c.recv().await,
        Frame::Text(r#"[null,"a\"b","phoenix","phx_reply",{"status":"ok","response":{}}]"#.into())
    );
}

#[tokio::test]
async fn websocket_pings_get_pongs() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    c.ping(b"hi".to_vec()).await;
    assert_eq!(c.recv_any().await, Frame::Pong(b"hi".to_vec()));
}
