//! `phx_join` payload options and tracked presence payloads on arbitrary text.
//!
//! Checks, besides "never panics":
//! * `JoinOptions::parse` gives the defaults for anything that is not JSON, never an empty
//!   presence key, and only tokens and flags that the payload really holds;
//! * `Payload::from_json` accepts exactly the JSON objects; its canonical text is a JSON object
//!   without `phx_ref`/`phx_ref_prev`, with the same members, that canonicalizes to itself;
//! * a meta built from the payload is a JSON object holding the payload's members and its
//!   `phx_ref`.

#![no_main]

use headcount_fuzz::{expect_json, parse_json};
use headcount_presence::{Meta, Payload, PhxRef};
use headcount_server::session::JoinOptions;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Supabase's `FlexibleBoolean` read of `v`, written independently of the server's.
fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            s.len() == 4
                && s.bytes()
                    .zip(*b"true")
                    .all(|(a, b)| a.to_ascii_lowercase() == b)
        }
        _ => false,
    }
}

fn check_join_options(text: &str) {
    let options = JoinOptions::parse(Some(text));
    assert_eq!(
        options,
        JoinOptions::parse(Some(text)),
        "parse is not deterministic"
    );
    // The server reads the payload with serde_json's default limits.
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        assert_eq!(options, JoinOptions::default(), "non-JSON gave options");
        return;
    };
    let config = value.get("config");
    let section = |name: &str| config.and_then(|c| c.get(name));
    assert_eq!(
        options.ack,
        is_true(section("broadcast").and_then(|b| b.get("ack")))
    );
    assert_eq!(
        options.self_broadcast,
        is_true(section("broadcast").and_then(|b| b.get("self")))
    );
    assert_eq!(
        options.presence_enabled,
        is_true(section("presence").and_then(|p| p.get("enabled")))
    );
    assert_eq!(options.private, is_true(section("private")));
    match &options.presence_key {
        None => {}
        Some(key) => {
            assert!(!key.is_empty(), "an empty presence key");
            let given = section("presence")
                .and_then(|p| p.get("key"))
                .expect("a key from nowhere");
            match given {
                Value::String(s) => assert_eq!(s, key),
                other => assert_eq!(
                    serde_json::from_str::<Value>(key).ok().as_ref(),
                    Some(other),
                    "a non-string key must be its JSON text"
                ),
            }
        }
    }
    if let Some(token) = &options.access_token {
        let from = |name: &str| value.get(name).and_then(Value::as_str);
        assert_eq!(
            Some(token.as_str()),
            from("access_token").or(from("user_token")),
            "a token from nowhere"
        );
    }
}

fn check_payload(text: &str) {
    let parsed = serde_json::from_str::<Value>(text);
    let payload = match Payload::from_json(text) {
        Ok(p) => p,
        Err(_) => {
            assert!(
                !matches!(parsed, Ok(Value::Object(_))),
                "an object was refused"
            );
            return;
        }
    };
    let Ok(Value::Object(mut original)) = parsed else {
        panic!("a non-object was accepted: {text:?}");
    };
    original.remove("phx_ref");
    original.remove("phx_ref_prev");

    let canonical = payload.as_str();
    let Value::Object(members) = expect_json(canonical.as_bytes(), "canonical payload") else {
        panic!("the canonical payload is not an object: {canonical}");
    };
    assert!(!members.contains_key("phx_ref") && !members.contains_key("phx_ref_prev"));
    assert_eq!(members, original, "canonical form changed the members");
    let again = Payload::from_json(canonical).expect("canonical text is an object");
    assert_eq!(again, payload, "canonical form is not a fixed point");

    let phx_ref = PhxRef::from_parts(1_700_000_000_000_000_000, 7, 42);
    let prev = PhxRef::from_parts(1_600_000_000_000_000_000, 7, 41);
    for phx_ref_prev in [None, Some(prev)] {
        let meta = Meta {
            phx_ref,
            phx_ref_prev,
            payload: payload.clone(),
        };
        let mut out = String::new();
        meta.write_json(&mut out);
        let Ok(Value::Object(mut m)) = parse_json(out.as_bytes()) else {
            panic!("a meta is not a JSON object: {out}");
        };
        assert_eq!(m.remove("phx_ref"), Some(Value::from(phx_ref.as_str())));
        assert_eq!(
            m.remove("phx_ref_prev"),
            phx_ref_prev.map(|p| Value::from(p.as_str()))
        );
        assert_eq!(m, members, "the meta does not hold the payload's members");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_join_options(&text);
    check_payload(&text);
    assert_eq!(JoinOptions::parse(None), JoinOptions::default());
});
