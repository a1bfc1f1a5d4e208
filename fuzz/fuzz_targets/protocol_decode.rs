//! Client frame decoding for both serializers, and re-encoding what was decoded.
//!
//! Every input is tried as a text frame and as a binary frame under 1.0.0 and 2.0.0. When a
//! frame decodes, the pieces go back out through every server encoder, and the checks are:
//! * every text frame the server would send is valid JSON (UTF-8 included);
//! * a push or broadcast of the decoded payload decodes again to the same topic, event, refs
//!   and payload text, in both serializers;
//! * a binary user broadcast (kind 4) carries exactly the topic, event and body that came in.

#![no_main]

use headcount_fuzz::{check_json, parse_json};
use headcount_protocol::encode::{self, FrameKind, Status};
use headcount_protocol::{
    ClientMessage, DecodeError, Encoding, KIND_USER_BROADCAST, Payload, Ref, Serializer,
    decode_binary, decode_text,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SERIALIZERS: [Serializer; 2] = [Serializer::V1, Serializer::V2];

/// Checks a text frame is JSON; its value, when serde_json can hold every number in it.
fn text_frame(out: &[u8], what: &str) -> Option<Value> {
    check_json(out, what);
    parse_json(out).ok()
}

/// Whether two refs are the same: number refs are kept as the text of an `f64` when they are
/// not 64-bit integers, and serde_json's default float parsing may land one step away when it
/// reads that text again, so such refs are compared as numbers, within two steps of an f64.
fn same_ref(a: &Ref, b: &Ref) -> bool {
    match (a, b) {
        (Ref::Num(x), Ref::Num(y)) if x != y => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => {
                x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 2)
            }
            _ => false,
        },
        _ => a == b,
    }
}

/// Decodes a frame the server encoded, as a client of `ser` would send it back.
fn redecode(ser: Serializer, out: &[u8]) -> ClientMessage<'_> {
    match decode_text(ser, out) {
        Ok(m) => m,
        Err(e) => panic!(
            "{ser:?}: a server frame does not decode again ({e}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
}

fn check_text_message(m: &ClientMessage<'_>) {
    let Payload::Json(raw) = &m.payload else {
        panic!("a text frame decoded to a binary payload");
    };
    let payload = raw.get();
    check_json(payload.as_bytes(), "decoded payload");
    let payload_value = parse_json(payload.as_bytes()).ok();
    for ser in SERIALIZERS {
        let mut out = Vec::new();
        let kind = encode::reply(
            &mut out,
            ser,
            &m.join_ref,
            &m.msg_ref,
            &m.topic,
            Status::Ok,
            payload,
        );
        assert_eq!(kind, FrameKind::Text);
        if let (Some(v), Some(payload_value)) = (text_frame(&out, "reply"), &payload_value) {
            let response = match ser {
                Serializer::V1 => &v["payload"]["response"],
                Serializer::V2 => &v[4]["response"],
            };
            assert_eq!(
                response, payload_value,
                "the reply does not carry the response"
            );
        }

        out.clear();
        encode::push(&mut out, ser, &m.join_ref, &m.topic, &m.event, payload);
        text_frame(&out, "push");
        let back = redecode(ser, &out);
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.event, m.event);
        assert_eq!(back.msg_ref, Ref::Null);
        if ser == Serializer::V2 {
            assert!(
                same_ref(&back.join_ref, &m.join_ref),
                "join_ref did not survive: {:?} came back as {:?}",
                m.join_ref,
                back.join_ref
            );
        } else {
            assert_eq!(
                back.join_ref,
                Ref::Null,
                "1.0.0 frames never carry join_ref"
            );
        }
        assert_eq!(back.payload.as_json().map(|r| r.get()), Some(payload));

        out.clear();
        encode::broadcast(&mut out, ser, &m.topic, &m.event, payload);
        text_frame(&out, "broadcast");

        out.clear();
        encode::close(&mut out, ser, &m.msg_ref, &m.topic);
        text_frame(&out, "close");
        let back = redecode(ser, &out);
        assert!(
            same_ref(&back.msg_ref, &m.msg_ref),
            "ref did not survive: {:?} came back as {:?}",
            m.msg_ref,
            back.msg_ref
        );
        assert_eq!(back.topic, m.topic);

        // What the session builds for errors: a reason string as the response.
        let reason = serde_json::json!({ "reason": &*m.event }).to_string();
        out.clear();
        encode::reply(
            &mut out,
            ser,
            &Ref::Null,
            &m.msg_ref,
            &m.topic,
            Status::Error,
            &reason,
        );
        text_frame(&out, "error reply");
    }
}

fn check_user_broadcast(m: &ClientMessage<'_>) {
    let Payload::UserBroadcast(b) = &m.payload else {
        panic!("a binary frame decoded to a JSON payload");
    };
    assert_eq!(m.event, "broadcast");
    for ser in SERIALIZERS {
        let mut out = Vec::new();
        let kind = encode::user_broadcast(&mut out, ser, &m.topic, b.event, b.encoding, b.body);
        let fits = m.topic.len() <= 255 && b.event.len() <= 255;
        match kind {
            Some(FrameKind::Binary) => {
                assert!(ser == Serializer::V2 && fits, "binary frame for {ser:?}");
                let (t, e) = (m.topic.len(), b.event.len());
                assert_eq!(
                    out[..5],
                    [KIND_USER_BROADCAST, t as u8, e as u8, 0, b.encoding.byte()]
                );
                assert_eq!(&out[5..5 + t], m.topic.as_bytes());
                assert_eq!(&out[5 + t..5 + t + e], b.event.as_bytes());
                assert_eq!(&out[5 + t + e..], b.body);
            }
            Some(FrameKind::Text) => {
                assert_eq!(b.encoding, Encoding::Json, "opaque bytes sent as text");
                if let Some(v) = text_frame(&out, "user broadcast as text") {
                    let payload = match ser {
                        Serializer::V1 => &v["payload"],
                        Serializer::V2 => &v[4],
                    };
                    assert_eq!(payload["event"].as_str(), Some(b.event));
                    assert_eq!(payload["type"].as_str(), Some("broadcast"));
                }
                let back = redecode(ser, &out);
                assert_eq!(back.topic, m.topic);
                assert_eq!(back.event, "broadcast");
            }
            None => assert!(
                b.encoding == Encoding::Binary && !(ser == Serializer::V2 && fits),
                "a deliverable user broadcast was dropped"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for ser in SERIALIZERS {
        if let Ok(m) = decode_text(ser, data) {
            check_text_message(&m);
        }
        match decode_binary(ser, data) {
            Ok(m) => {
                assert_eq!(ser, Serializer::V2);
                check_user_broadcast(&m);
            }
            Err(DecodeError::BinaryOnV1) => assert_eq!(ser, Serializer::V1),
            Err(_) => {}
        }
    }
});
