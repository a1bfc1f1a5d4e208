//! Golden vectors of the payloads the server and the SDK share: literal payloads as realtime-js
//! sends them and as Supabase answers, read and written by the one type each side uses.

use headcount_protocol::payloads::{JoinConfig, PresenceCall, SystemMessage};
use serde_json::json;

/// What realtime-js 2.x sends in a `phx_join` for `supabase.channel('room')` after
/// `setAuth(token)`.
const REALTIME_JS_JOIN: &str = r#"{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":false},"postgres_changes":[],"private":false},"access_token":"tok"}"#;

#[test]
fn a_realtime_js_join_reads_as_the_defaults_with_its_token() {
    assert_eq!(
        JoinConfig::parse(Some(REALTIME_JS_JOIN)),
        JoinConfig {
            access_token: Some("tok".into()),
            ..JoinConfig::default()
        }
    );
}

#[test]
fn join_options_are_read_as_supabase_reads_them() {
    let c = JoinConfig::parse(Some(
        r#"{"config":{"broadcast":{"ack":"TRUE","self":true},"presence":{"key":42,"enabled":"true"},"private":"True"},"user_token":"u"}"#,
    ));
    assert_eq!(
        c,
        JoinConfig {
            ack: true,
            self_broadcast: true,
            presence_enabled: true,
            presence_key: Some("42".into()),
            private: true,
            access_token: Some("u".into()),
        }
    );
    // Unreadable payloads join with the defaults; `access_token` wins over `user_token`.
    assert_eq!(JoinConfig::parse(Some("not json")), JoinConfig::default());
    assert_eq!(JoinConfig::parse(None), JoinConfig::default());
    let both = JoinConfig::parse(Some(r#"{"access_token":"a","user_token":"u"}"#));
    assert_eq!(both.access_token.as_deref(), Some("a"));
    assert!(!both.key_too_long(0) && !both.private);
}

#[test]
fn the_sdk_writes_the_join_realtime_js_writes_and_the_server_reads_it_back() {
    let defaults = JoinConfig {
        access_token: Some("tok".into()),
        ..JoinConfig::default()
    };
    let written: serde_json::Value =
        serde_json::from_str(&defaults.to_json("headcount-client/0.1.0")).unwrap();
    let mut want: serde_json::Value = serde_json::from_str(REALTIME_JS_JOIN).unwrap();
    want["version"] = json!("headcount-client/0.1.0");
    assert_eq!(written, want);

    let every = JoinConfig {
        ack: true,
        self_broadcast: true,
        presence_enabled: true,
        presence_key: Some("alice".into()),
        private: true,
        access_token: None,
    };
    assert_eq!(
        every.to_json("v"),
        r#"{"config":{"broadcast":{"ack":true,"self":true},"postgres_changes":[],"presence":{"enabled":true,"key":"alice"},"private":true},"version":"v"}"#
    );
    for c in [defaults, every] {
        assert_eq!(JoinConfig::parse(Some(&c.to_json("v"))), c);
    }
}

#[test]
fn presence_pushes_as_realtime_js_sends_them() {
    let track = r#"{"type":"presence","event":"track","payload":{"online_at":"2026-12-03T10:00:00Z","n":[1,2]}}"#;
    let call = PresenceCall::parse(Some(track));
    assert_eq!(
        call,
        PresenceCall::Track(json!({"online_at": "2026-12-03T10:00:00Z", "n": [1, 2]}))
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.to_json()).unwrap(),
        serde_json::from_str::<serde_json::Value>(track).unwrap()
    );
    assert_eq!(
        PresenceCall::parse(Some(r#"{"type":"presence","event":"TRACK"}"#)),
        PresenceCall::Track(json!({}))
    );
    let untrack = r#"{"type":"presence","event":"untrack"}"#;
    assert_eq!(PresenceCall::parse(Some(untrack)), PresenceCall::Untrack);
    assert_eq!(PresenceCall::Untrack.to_json(), untrack);
    assert_eq!(
        PresenceCall::parse(Some(r#"{"type":"presence"}"#)),
        PresenceCall::Nothing
    );
    assert_eq!(
        PresenceCall::parse(Some(r#"{"type":"presence","event":"dance"}"#)),
        PresenceCall::Unknown
    );
}

#[test]
fn system_messages_as_supabase_sends_them() {
    let literal = r#"{"extension":"system","status":"error","message":"Token has expired 3 seconds ago","channel":"room"}"#;
    let m = SystemMessage::error("room", "Token has expired 3 seconds ago");
    assert_eq!(m.to_json(), literal);
    assert_eq!(SystemMessage::parse(literal), Some(m.clone()));
    assert!(m.is_error());
    let ok = SystemMessage::parse(
        r#"{"extension":"postgres_changes","status":"ok","message":"Subscribed to PostgreSQL","channel":"room"}"#,
    )
    .unwrap();
    assert!(!ok.is_error());
    assert_eq!(SystemMessage::parse(r#"{"status":"error"}"#), None);
}
