//! Golden vectors: literal client frames in, literal server frames out, taken from the
//! exchanges in the protocol reference (realtime-js 2.119 with both serializers).

use headcount_protocol::encode::{self, Status};
use headcount_protocol::{
    ClientMessage, DecodeError, Encoding, FrameKind, Payload, Ref, Serializer, decode_binary,
    decode_text,
};

fn text(f: impl FnOnce(&mut Vec<u8>) -> FrameKind) -> String {
    let mut out = Vec::new();
    assert_eq!(f(&mut out), FrameKind::Text);
    String::from_utf8(out).unwrap()
}

fn json<'a>(m: &'a ClientMessage<'a>) -> &'a str {
    m.payload.as_json().expect("a JSON payload").get()
}

const JOIN_V2: &str = r#"["3","3","realtime:room1","phx_join",{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":true},"postgres_changes":[],"private":false},"access_token":"eyJ...","version":"realtime-js/2.119.0"}]"#;

#[test]
fn v2_join_decodes() {
    let m = decode_text(Serializer::V2, JOIN_V2.as_bytes()).unwrap();
    assert_eq!(m.join_ref, Ref::str("3"));
    assert_eq!(m.msg_ref, Ref::str("3"));
    assert_eq!(m.topic, "realtime:room1");
    assert_eq!(m.event, "phx_join");
    assert!(json(&m).starts_with(r#"{"config":{"broadcast""#));
    assert!(json(&m).ends_with(r#""version":"realtime-js/2.119.0"}"#));
}

#[test]
fn v2_join_reply_and_presence_state() {
    let jr = Ref::str("3");
    assert_eq!(
        text(|o| encode::reply(
            o,
            Serializer::V2,
            &jr,
            &jr,
            "realtime:room1",
            Status::Ok,
            r#"{"postgres_changes":[]}"#
        )),
        r#"["3","3","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#
    );
    assert_eq!(
        text(|o| encode::push(
            o,
            Serializer::V2,
            &jr,
            "realtime:room1",
            "presence_state",
            r#"{"K_B":{"metas":[{"phx_ref":"GBjZ1pQx2d4O4gBh","user":"bob"}]}}"#
        )),
        r#"["3",null,"realtime:room1","presence_state",{"K_B":{"metas":[{"phx_ref":"GBjZ1pQx2d4O4gBh","user":"bob"}]}}]"#
    );
}

#[test]
fn v2_heartbeat_round_trip() {
    let m = decode_text(Serializer::V2, br#"[null,"5","phoenix","heartbeat",{}]"#).unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.topic.as_ref(), m.event.as_ref()),
        (Ref::Null, "phoenix", "heartbeat")
    );
    assert_eq!(
        text(|o| encode::reply(
            o,
            Serializer::V2,
            &m.join_ref,
            &m.msg_ref,
            &m.topic,
            Status::Ok,
            "{}"
        )),
        r#"[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]"#
    );
}

#[test]
fn v1_heartbeat_round_trip() {
    let m = decode_text(
        Serializer::V1,
        br#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"5"}"#,
    )
    .unwrap();
    assert_eq!(m.join_ref, Ref::Null);
    assert_eq!(
        text(|o| encode::reply(
            o,
            Serializer::V1,
            &m.join_ref,
            &m.msg_ref,
            &m.topic,
            Status::Ok,
            "{}"
        )),
        r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"5"}"#
    );
}

#[test]
fn v2_presence_diff_and_broadcast_have_null_refs() {
    let diff = r#"{"joins":{"K_A":{"metas":[{"phx_ref":"GBjZ2w2dPOcO4gAh","user":"alice"}]}},"leaves":{}}"#;
    assert_eq!(
        text(|o| encode::broadcast(o, Serializer::V2, "realtime:room1", "presence_diff", diff)),
        format!(r#"[null,null,"realtime:room1","presence_diff",{diff}]"#)
    );
    let payload = r#"{"type":"broadcast","event":"cursor","payload":{"x":1,"y":2}}"#;
    assert_eq!(
        text(|o| encode::broadcast(o, Serializer::V1, "realtime:room1", "broadcast", payload)),
        format!(
            r#"{{"topic":"realtime:room1","event":"broadcast","payload":{payload},"ref":null}}"#
        )
    );
}

#[test]
fn leave_reply_then_close() {
    let jr = Ref::str("3");
    assert_eq!(
        text(|o| encode::reply(
            o,
            Serializer::V2,
            &jr,
            &Ref::str("11"),
            "realtime:room1",
            Status::Ok,
            "{}"
        )),
        r#"["3","11","realtime:room1","phx_reply",{"status":"ok","response":{}}]"#
    );
    assert_eq!(
        text(|o| encode::close(o, Serializer::V2, &jr, "realtime:room1")),
        r#"["3","3","realtime:room1","phx_close",{}]"#
    );
    assert_eq!(
        text(|o| encode::close(o, Serializer::V1, &jr, "realtime:room1")),
        r#"{"topic":"realtime:room1","event":"phx_close","payload":{},"ref":"3"}"#
    );
}

#[test]
fn system_error_push() {
    assert_eq!(
        text(|o| encode::push(
            o,
            Serializer::V2,
            &Ref::str("3"),
            "realtime:room1",
            "system",
            r#"{"extension":"system","status":"error","message":"Client presence rate limit exceeded","channel":"room1"}"#
        )),
        r#"["3",null,"realtime:room1","system",{"extension":"system","status":"error","message":"Client presence rate limit exceeded","channel":"room1"}]"#
    );
}

/// `channel.send({type:'broadcast', event:'cursor', payload:{x:1,y:2}})` from realtime-js with
/// join_ref "3" and ref "7".
const KIND3_CURSOR: &[u8] = &[
    0x03, 0x01, 0x01, 0x0E, 0x06, 0x00, 0x01, 0x33, 0x37, 0x72, 0x65, 0x61, 0x6C, 0x74, 0x69, 0x6D,
    0x65, 0x3A, 0x72, 0x6F, 0x6F, 0x6D, 0x31, 0x63, 0x75, 0x72, 0x73, 0x6F, 0x72, 0x7B, 0x22, 0x78,
    0x22, 0x3A, 0x31, 0x2C, 0x22, 0x79, 0x22, 0x3A, 0x32, 0x7D,
];

const KIND4_CURSOR: &[u8] = &[
    0x04, 0x0E, 0x06, 0x00, 0x01, 0x72, 0x65, 0x61, 0x6C, 0x74, 0x69, 0x6D, 0x65, 0x3A, 0x72, 0x6F,
    0x6F, 0x6D, 0x31, 0x63, 0x75, 0x72, 0x73, 0x6F, 0x72, 0x7B, 0x22, 0x78, 0x22, 0x3A, 0x31, 0x2C,
    0x22, 0x79, 0x22, 0x3A, 0x32, 0x7D,
];

#[test]
fn kind3_decodes_and_relays_as_kind4_and_v1_json() {
    let m = decode_binary(Serializer::V2, KIND3_CURSOR).unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::str("3"), Ref::str("7"))
    );
    assert_eq!(
        (m.topic.as_ref(), m.event.as_ref()),
        ("realtime:room1", "broadcast")
    );
    let Payload::UserBroadcast(b) = m.payload else {
        panic!("not a user broadcast")
    };
    assert_eq!(
        (b.event, b.encoding, b.body),
        ("cursor", Encoding::Json, &br#"{"x":1,"y":2}"#[..])
    );

    let mut out = Vec::new();
    let kind = encode::user_broadcast(
        &mut out,
        Serializer::V2,
        &m.topic,
        b.event,
        b.encoding,
        b.body,
    );
    assert_eq!(
        (kind, out.as_slice()),
        (Some(FrameKind::Binary), KIND4_CURSOR)
    );

    let mut out = Vec::new();
    let kind = encode::user_broadcast(
        &mut out,
        Serializer::V1,
        &m.topic,
        b.event,
        b.encoding,
        b.body,
    );
    assert_eq!(kind, Some(FrameKind::Text));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"topic":"realtime:room1","event":"broadcast","payload":{"event":"cursor","payload":{"x":1,"y":2},"type":"broadcast"},"ref":null}"#
    );
}

#[test]
fn opaque_binary_broadcast_has_no_v1_form() {
    let mut out = Vec::new();
    assert_eq!(
        encode::user_broadcast(
            &mut out,
            Serializer::V1,
            "realtime:r",
            "e",
            Encoding::Binary,
            &[0xff, 0]
        ),
        None
    );
    assert_eq!(
        encode::user_broadcast(
            &mut out,
            Serializer::V2,
            "realtime:r",
            "e",
            Encoding::Binary,
            &[0xff, 0]
        ),
        Some(FrameKind::Binary)
    );
    assert_eq!(
        out,
        [
            4, 10, 1, 0, 0, b'r', b'e', b'a', b'l', b't', b'i', b'm', b'e', b':', b'r', b'e', 0xff,
            0
        ]
    );
}

#[test]
fn long_topics_fall_back_to_text_for_v2() {
    let topic = format!("realtime:{}", "x".repeat(300));
    let s = text(|o| {
        encode::user_broadcast(o, Serializer::V2, &topic, "e", Encoding::Json, b"[1]").unwrap()
    });
    assert_eq!(
        s,
        format!(
            r#"[null,null,"{topic}","broadcast",{{"event":"e","payload":[1],"type":"broadcast"}}]"#
        )
    );
}

#[test]
fn v1_decodes_objects_with_join_ref_optional_and_ref_required() {
    let m = decode_text(
        Serializer::V1,
        br#"{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"cursor","payload":{"x":1}},"ref":"6","join_ref":"3"}"#,
    )
    .unwrap();
    assert_eq!((m.join_ref, m.msg_ref), (Ref::str("3"), Ref::str("6")));
    assert_eq!(
        json(
            &decode_text(
                Serializer::V1,
                br#"{"topic":"t","event":"e","payload":[1, 2],"ref":null}"#
            )
            .unwrap()
        ),
        "[1, 2]"
    );
    assert!(matches!(
        decode_text(Serializer::V1, br#"{"topic":"t","event":"e","payload":{}}"#),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn numeric_refs_are_echoed_as_numbers() {
    let m = decode_text(
        Serializer::V1,
        br#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":0}"#,
    )
    .unwrap();
    assert_eq!(
        text(|o| encode::reply(
            o,
            Serializer::V1,
            &m.join_ref,
            &m.msg_ref,
            &m.topic,
            Status::Ok,
            "{}"
        )),
        r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":0}"#
    );
}

#[test]
fn v2_accepts_extra_elements_and_rejects_short_arrays() {
    let m = decode_text(
        Serializer::V2,
        br#"[null,"1","phoenix","heartbeat",{},"extra",[1]]"#,
    )
    .unwrap();
    assert_eq!(m.event, "heartbeat");
    for bad in [
        &br#"[null,"1","phoenix","heartbeat"]"#[..],
        br#"{"topic":"phoenix"}"#,
        br#"[null,"1",3,"heartbeat",{}]"#,
        br#"[null,{},"phoenix","heartbeat",{}]"#,
        b"[null,\"1\",\"phoenix\",\"heartbeat\",{}",
        b"",
        b"\xff",
    ] {
        assert!(
            decode_text(Serializer::V2, bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn escaped_topics_are_unescaped() {
    let m = decode_text(
        Serializer::V2,
        br#"[null,null,"realtime:caf\u00e9","broadcast",{}]"#,
    )
    .unwrap();
    assert_eq!(m.topic, "realtime:café");
}

#[test]
fn bad_binary_frames_are_errors_not_panics() {
    assert_eq!(
        decode_binary(Serializer::V1, KIND3_CURSOR).unwrap_err(),
        DecodeError::BinaryOnV1
    );
    assert_eq!(
        decode_binary(Serializer::V2, &[]).unwrap_err(),
        DecodeError::EmptyBinary
    );
    assert_eq!(
        decode_binary(Serializer::V2, &[0, 0, 0, 0, 0]).unwrap_err(),
        DecodeError::UnsupportedKind(0)
    );
    assert_eq!(
        decode_binary(Serializer::V2, &[4]).unwrap_err(),
        DecodeError::UnsupportedKind(4)
    );
    assert_eq!(
        decode_binary(Serializer::V2, &[3, 1, 1]).unwrap_err(),
        DecodeError::Truncated
    );
    for cut in 1..KIND3_CURSOR.len() - 13 {
        assert!(
            decode_binary(Serializer::V2, &KIND3_CURSOR[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut bad_enc = KIND3_CURSOR.to_vec();
    bad_enc[6] = 7;
    assert_eq!(
        decode_binary(Serializer::V2, &bad_enc).unwrap_err(),
        DecodeError::UnknownEncoding(7)
    );
    let mut not_json = KIND3_CURSOR.to_vec();
    not_json.truncate(KIND3_CURSOR.len() - 1);
    assert_eq!(
        decode_binary(Serializer::V2, &not_json).unwrap_err(),
        DecodeError::BodyNotJson
    );
    let mut bad_utf8 = KIND3_CURSOR.to_vec();
    bad_utf8[9] = 0xff;
    assert_eq!(
        decode_binary(Serializer::V2, &bad_utf8).unwrap_err(),
        DecodeError::Utf8
    );
}

#[test]
fn binary_bodies_may_be_anything() {
    let frame = [
        3, 0, 0, 3, 1, 0, 0, b'a', b':', b'b', b'e', 0, 159, 146, 150,
    ];
    let m = decode_binary(Serializer::V2, &frame).unwrap();
    assert_eq!(
        (m.join_ref.clone(), m.msg_ref.clone()),
        (Ref::Null, Ref::Null)
    );
    let Payload::UserBroadcast(b) = m.payload else {
        panic!()
    };
    assert_eq!(
        (b.encoding, b.body),
        (Encoding::Binary, &[0, 159, 146, 150][..])
    );
}

#[test]
fn nesting_is_limited() {
    use headcount_protocol::decode::{MAX_DEPTH, nests_deeper_than};
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let msg = |n: usize| format!(r#"[null,"1","realtime:r","broadcast",{}]"#, nested(n));
    assert!(decode_text(Serializer::V2, msg(MAX_DEPTH - 1).as_bytes()).is_ok());
    assert_eq!(
        decode_text(Serializer::V2, msg(MAX_DEPTH).as_bytes()).unwrap_err(),
        DecodeError::TooDeep
    );
    assert!(
        !nests_deeper_than(br#"{"a":"[[[[[[\"[[["}"#, 1),
        "brackets inside strings do not count"
    );
    assert!(nests_deeper_than(b"[[", 1));
}

/// Found by fuzzing: a JSON-encoded user broadcast whose body is not UTF-8 would be relayed
/// inside 1.0.0 text frames, which browsers must reject.
#[test]
fn regression_kind3_json_body_must_be_utf8() {
    let frame = [0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0xff, 0x22];
    assert_eq!(
        decode_binary(Serializer::V2, &frame).unwrap_err(),
        DecodeError::BodyNotJson
    );
}
