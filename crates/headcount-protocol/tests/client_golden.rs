//! Golden vectors for the client side of the wire: literal server frames in (as the protocol
//! reference shows them for Supabase Realtime, both serializers), literal client frames out (as
//! realtime-js 2.119 sends them).

use headcount_protocol::client::{
    decode_server_binary, decode_server_text, push, user_broadcast_push,
};
use headcount_protocol::{
    DecodeError, Encoding, FrameKind, Payload, Ref, Serializer, ServerMessage, decode_binary,
    decode_text,
};

fn json<'a>(m: &'a ServerMessage<'a>) -> &'a str {
    m.payload.as_json().expect("a JSON payload").get()
}

fn text(f: impl FnOnce(&mut Vec<u8>) -> FrameKind) -> String {
    let mut out = Vec::new();
    assert_eq!(f(&mut out), FrameKind::Text);
    String::from_utf8(out).unwrap()
}

// ---- server frames in, 2.0.0 ----

#[test]
fn v2_join_reply() {
    let m = decode_server_text(
        Serializer::V2,
        br#"["3","3","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#,
    )
    .unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::str("3"), Ref::str("3"))
    );
    assert_eq!((&*m.topic, &*m.event), ("realtime:room1", "phx_reply"));
    assert_eq!(
        json(&m),
        r#"{"status":"ok","response":{"postgres_changes":[]}}"#
    );
}

#[test]
fn v2_presence_state_is_a_channel_push() {
    let m = decode_server_text(
        Serializer::V2,
        br#"["3",null,"realtime:room1","presence_state",{"K_B":{"metas":[{"phx_ref":"GBjZ1pQx2d4O4gBh","user":"bob"}]}}]"#,
    )
    .unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::str("3"), Ref::Null)
    );
    assert_eq!(m.event, "presence_state");
    assert_eq!(
        json(&m),
        r#"{"K_B":{"metas":[{"phx_ref":"GBjZ1pQx2d4O4gBh","user":"bob"}]}}"#
    );
}

#[test]
fn v2_presence_diff_update_is_a_fastlane_broadcast() {
    let frame = r#"[null,null,"realtime:room1","presence_diff",{"joins":{"K_A":{"metas":[{"phx_ref":"GBjZ3a7cK1kO4gBB","phx_ref_prev":"GBjZ2w2dPOcO4gAh","user":"alice","status":"away"}]}},"leaves":{"K_A":{"metas":[{"phx_ref":"GBjZ2w2dPOcO4gAh","user":"alice","online_at":"2026-08-21T10:00:00Z"}]}}}]"#;
    let m = decode_server_text(Serializer::V2, frame.as_bytes()).unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::Null, Ref::Null)
    );
    assert_eq!(m.event, "presence_diff");
    assert!(json(&m).starts_with(r#"{"joins":{"K_A""#));
}

#[test]
fn v2_close_carries_the_join_ref_twice() {
    let m = decode_server_text(
        Serializer::V2,
        br#"["3","3","realtime:room1","phx_close",{}]"#,
    )
    .unwrap();
    assert_eq!(
        (m.join_ref, m.msg_ref, &*m.event),
        (Ref::str("3"), Ref::str("3"), "phx_close")
    );
}

#[test]
fn v2_system_error() {
    let m = decode_server_text(
        Serializer::V2,
        br#"["3",null,"realtime:room1","system",{"extension":"system","status":"error","message":"Client presence rate limit exceeded","channel":"room1"}]"#,
    )
    .unwrap();
    assert_eq!(m.event, "system");
    assert!(json(&m).contains("Client presence rate limit exceeded"));
}

#[test]
fn v2_text_broadcast_and_escaped_strings() {
    let m = decode_server_text(
        Serializer::V2,
        br#"[null,null,"realtime:ro\"om","broadcast",{"type":"broadcast","event":"cursor","payload":{"x":1}}]"#,
    )
    .unwrap();
    assert_eq!(m.topic, "realtime:ro\"om");
    assert_eq!(
        json(&m),
        r#"{"type":"broadcast","event":"cursor","payload":{"x":1}}"#
    );
}

#[test]
fn v2_extra_elements_are_ignored_and_short_arrays_refused() {
    assert!(
        decode_server_text(
            Serializer::V2,
            br#"[null,"1","phoenix","phx_reply",{},"x"]"#
        )
        .is_ok()
    );
    assert!(matches!(
        decode_server_text(Serializer::V2, br#"[null,"1","phoenix","phx_reply"]"#),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode_server_text(Serializer::V2, br#"{"topic":"phoenix"}"#),
        Err(DecodeError::Json(_))
    ));
}

/// The kind-4 frame of the reference's exchange 10.1 (`cursor`, `{"x":1,"y":2}`).
const KIND4_CURSOR: &[u8] = &[
    0x04, 0x0E, 0x06, 0x00, 0x01, 0x72, 0x65, 0x61, 0x6C, 0x74, 0x69, 0x6D, 0x65, 0x3A, 0x72, 0x6F,
    0x6F, 0x6D, 0x31, 0x63, 0x75, 0x72, 0x73, 0x6F, 0x72, 0x7B, 0x22, 0x78, 0x22, 0x3A, 0x31, 0x2C,
    0x22, 0x79, 0x22, 0x3A, 0x32, 0x7D,
];

/// The kind-3 frame of the same exchange (join_ref "3", ref "7").
const KIND3_CURSOR: &[u8] = &[
    0x03, 0x01, 0x01, 0x0E, 0x06, 0x00, 0x01, 0x33, 0x37, 0x72, 0x65, 0x61, 0x6C, 0x74, 0x69, 0x6D,
    0x65, 0x3A, 0x72, 0x6F, 0x6F, 0x6D, 0x31, 0x63, 0x75, 0x72, 0x73, 0x6F, 0x72, 0x7B, 0x22, 0x78,
    0x22, 0x3A, 0x31, 0x2C, 0x22, 0x79, 0x22, 0x3A, 0x32, 0x7D,
];

#[test]
fn kind4_decodes() {
    let m = decode_server_binary(Serializer::V2, KIND4_CURSOR).unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::Null, Ref::Null)
    );
    assert_eq!((&*m.topic, &*m.event), ("realtime:room1", "broadcast"));
    let Payload::UserBroadcast(b) = m.payload else {
        panic!("not a user broadcast")
    };
    assert_eq!(
        (b.event, b.metadata, b.encoding, b.body),
        ("cursor", &b""[..], Encoding::Json, &br#"{"x":1,"y":2}"#[..])
    );
}

#[test]
fn kind4_with_metadata_and_binary_body() {
    let mut frame = vec![4, 1, 2, 11, 0];
    frame.extend_from_slice(b"tev");
    frame.extend_from_slice(br#"{"id":"u1"}"#);
    frame.extend_from_slice(&[0xff, 0x00, 0x01]);
    let m = decode_server_binary(Serializer::V2, &frame).unwrap();
    let Payload::UserBroadcast(b) = m.payload else {
        panic!("not a user broadcast")
    };
    assert_eq!(
        (&*m.topic, b.event, b.metadata, b.encoding, b.body),
        (
            "t",
            "ev",
            &br#"{"id":"u1"}"#[..],
            Encoding::Binary,
            &[0xff, 0, 1][..]
        )
    );
}

#[test]
fn bad_binary_frames_are_refused() {
    assert_eq!(
        decode_server_binary(Serializer::V1, KIND4_CURSOR).unwrap_err(),
        DecodeError::BinaryOnV1
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[]).unwrap_err(),
        DecodeError::EmptyBinary
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, KIND3_CURSOR).unwrap_err(),
        DecodeError::UnsupportedKind(3)
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[4, 1, 1]).unwrap_err(),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[4, 5, 1, 0, 1, b'a']).unwrap_err(),
        DecodeError::Truncated
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[4, 1, 1, 0, 7, b'a', b'b']).unwrap_err(),
        DecodeError::UnknownEncoding(7)
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[4, 1, 1, 0, 1, 0xff, b'b', b'1']).unwrap_err(),
        DecodeError::Utf8
    );
    assert_eq!(
        decode_server_binary(Serializer::V2, &[4, 1, 1, 0, 1, b'a', b'b', b'{']).unwrap_err(),
        DecodeError::BodyNotJson
    );
}

// ---- server frames in, 1.0.0 ----

#[test]
fn v1_server_frames() {
    let m = decode_server_text(
        Serializer::V1,
        br#"{"event":"phx_reply","payload":{"response":{"postgres_changes":[]},"status":"ok"},"ref":"3","topic":"realtime:room1"}"#,
    )
    .unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::Null, Ref::str("3"))
    );
    assert_eq!((&*m.topic, &*m.event), ("realtime:room1", "phx_reply"));
    assert_eq!(
        json(&m),
        r#"{"response":{"postgres_changes":[]},"status":"ok"}"#
    );

    let m = decode_server_text(
        Serializer::V1,
        br#"{"event":"presence_state","payload":{},"ref":null,"topic":"realtime:room1"}"#,
    )
    .unwrap();
    assert_eq!(
        (m.msg_ref.clone(), &*m.event, json(&m)),
        (Ref::Null, "presence_state", "{}")
    );
}

#[test]
fn v1_join_ref_is_read_when_present_and_ref_is_required() {
    let m = decode_server_text(
        Serializer::V1,
        br#"{"topic":"t","event":"e","payload":[],"ref":null,"join_ref":"9"}"#,
    )
    .unwrap();
    assert_eq!((m.join_ref, m.msg_ref), (Ref::str("9"), Ref::Null));
    // Phoenix always sends `ref` (null on pushes); the same decoder reads both directions.
    assert!(
        decode_server_text(Serializer::V1, br#"{"topic":"t","event":"e","payload":[]}"#).is_err()
    );
    assert!(decode_server_text(Serializer::V1, br#"{"topic":"t","event":"e"}"#).is_err());
}

// ---- client frames out ----

const JOIN_PAYLOAD: &str = r#"{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":true},"postgres_changes":[],"private":false},"access_token":"eyJ..."}"#;

#[test]
fn v2_client_frames() {
    assert_eq!(
        text(|o| push(
            o,
            Serializer::V2,
            &Ref::str("3"),
            &Ref::str("3"),
            "realtime:room1",
            "phx_join",
            JOIN_PAYLOAD
        )),
        format!(r#"["3","3","realtime:room1","phx_join",{JOIN_PAYLOAD}]"#)
    );
    assert_eq!(
        text(|o| push(
            o,
            Serializer::V2,
            &Ref::Null,
            &Ref::str("5"),
            "phoenix",
            "heartbeat",
            "{}"
        )),
        r#"[null,"5","phoenix","heartbeat",{}]"#
    );
    assert_eq!(
        text(|o| push(
            o,
            Serializer::V2,
            &Ref::str("3"),
            &Ref::str("10"),
            "realtime:room1",
            "presence",
            r#"{"type":"presence","event":"untrack"}"#
        )),
        r#"["3","10","realtime:room1","presence",{"type":"presence","event":"untrack"}]"#
    );
}

#[test]
fn v1_client_frames_follow_phoenix_js_key_order() {
    assert_eq!(
        text(|o| push(
            o,
            Serializer::V1,
            &Ref::str("3"),
            &Ref::str("3"),
            "realtime:room1",
            "phx_join",
            JOIN_PAYLOAD
        )),
        format!(
            r#"{{"topic":"realtime:room1","event":"phx_join","payload":{JOIN_PAYLOAD},"ref":"3","join_ref":"3"}}"#
        )
    );
    assert_eq!(
        text(|o| push(
            o,
            Serializer::V1,
            &Ref::Null,
            &Ref::str("5"),
            "phoenix",
            "heartbeat",
            "{}"
        )),
        r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"5"}"#
    );
}

#[test]
fn client_frames_are_what_the_server_decoder_reads() {
    let mut out = Vec::new();
    push(
        &mut out,
        Serializer::V1,
        &Ref::str("3"),
        &Ref::str("4"),
        "realtime:room1",
        "broadcast",
        r#"{"type":"broadcast","event":"e","payload":{}}"#,
    );
    let m = decode_text(Serializer::V1, &out).unwrap();
    assert_eq!(
        (m.join_ref, m.msg_ref, &*m.event),
        (Ref::str("3"), Ref::str("4"), "broadcast")
    );
}

#[test]
fn kind3_matches_realtime_js_bytes() {
    let mut out = Vec::new();
    let kind = user_broadcast_push(
        &mut out,
        &Ref::str("3"),
        &Ref::str("7"),
        "realtime:room1",
        "cursor",
        Encoding::Json,
        br#"{"x":1,"y":2}"#,
    );
    assert_eq!(
        (kind, out.as_slice()),
        (Some(FrameKind::Binary), KIND3_CURSOR)
    );
    let m = decode_binary(Serializer::V2, &out).unwrap();
    assert_eq!((m.join_ref, m.msg_ref), (Ref::str("3"), Ref::str("7")));
}

#[test]
fn kind3_with_a_binary_body_and_oversized_fields() {
    let mut out = Vec::new();
    let kind = user_broadcast_push(
        &mut out,
        &Ref::Null,
        &Ref::Null,
        "t",
        "e",
        Encoding::Binary,
        &[0, 1, 2],
    );
    assert_eq!(kind, Some(FrameKind::Binary));
    assert_eq!(out, [3, 0, 0, 1, 1, 0, 0, b't', b'e', 0, 1, 2]);

    let long = "x".repeat(256);
    let mut out = Vec::new();
    assert_eq!(
        user_broadcast_push(
            &mut out,
            &Ref::str("1"),
            &Ref::str("2"),
            &long,
            "e",
            Encoding::Json,
            b"{}"
        ),
        None
    );
    assert_eq!(
        user_broadcast_push(
            &mut out,
            &Ref::str("1"),
            &Ref::str("2"),
            "t",
            &long,
            Encoding::Json,
            b"{}"
        ),
        None
    );
    assert!(
        out.is_empty(),
        "nothing is written when the frame does not fit"
    );
    let edge = "y".repeat(255);
    assert!(
        user_broadcast_push(
            &mut out,
            &Ref::str("1"),
            &Ref::str("2"),
            &edge,
            &edge,
            Encoding::Json,
            b"{}"
        )
        .is_some()
    );
}
