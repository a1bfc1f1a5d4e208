//! Broadcast over real sockets: self and ack, binary kind 3 in, kind 4 and JSON out, payloads
//! relayed byte for byte.

use std::time::Duration;

use headcount_testkit::{Frame, TestServer, WsClient};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_millis(200);

fn config(self_: bool, ack: bool) -> Value {
    json!({"broadcast": {"ack": ack, "self": self_}, "presence": {"key": "", "enabled": false}, "private": false})
}

/// realtime-js's binary push: kind 3 with JSON encoding.
fn kind3(join_ref: &str, msg_ref: &str, topic: &str, event: &str, body: &[u8], enc: u8) -> Vec<u8> {
    let mut f = vec![
        3,
        join_ref.len() as u8,
        msg_ref.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        enc,
    ];
    for part in [
        join_ref.as_bytes(),
        msg_ref.as_bytes(),
        topic.as_bytes(),
        event.as_bytes(),
        body,
    ] {
        f.extend_from_slice(part);
    }
    f
}

fn kind4(topic: &str, event: &str, body: &[u8], enc: u8) -> Vec<u8> {
    let mut f = vec![4, topic.len() as u8, event.len() as u8, 0, enc];
    for part in [topic.as_bytes(), event.as_bytes(), body] {
        f.extend_from_slice(part);
    }
    f
}

#[tokio::test]
async fn self_and_ack_semantics() {
    let server = TestServer::start().await;
    let topic = "realtime:room";
    let mut quiet = server.client("2.0.0").await;
    let mut echo = server.client("2.0.0").await;
    let mut other = server.client("2.0.0").await;
    let jq = quiet.join(topic, config(false, false)).await;
    let je = echo.join(topic, config(true, true)).await;
    other.join(topic, config(false, false)).await;

    let payload = r#"{"type":"broadcast","event":"cursor","payload":{"x":1},"extra":"kept"}"#;
    quiet
        .send_text(format!(r#"["{jq}","50","{topic}","broadcast",{payload}]"#))
        .await;
    let expected = format!(r#"[null,null,"{topic}","broadcast",{payload}]"#);
    assert_eq!(
        other.recv().await,
        Frame::Text(expected.clone()),
        "relayed byte for byte, extra keys included"
    );
    assert_eq!(echo.recv().await, Frame::Text(expected.clone()));
    quiet.expect_silence(SHORT).await; // self:false and ack:false: nothing back

    echo.send_text(format!(r#"["{je}","51","{topic}","broadcast",{payload}]"#))
        .await;
    assert_eq!(
        echo.recv().await,
        Frame::Text(expected.clone()),
        "self:true receives its own message"
    );
    assert_eq!(
        echo.recv().await,
        Frame::Text(format!(
            r#"["{je}","51","{topic}","phx_reply",{{"status":"ok","response":{{}}}}]"#
        )),
        "ack:true replies after the broadcast"
    );
    assert_eq!(other.recv().await, Frame::Text(expected.clone()));
    assert_eq!(quiet.recv().await, Frame::Text(expected));
}

#[tokio::test]
async fn binary_pushes_reach_v2_as_kind4_and_v1_as_json() {
    let server = TestServer::start().await;
    let topic = "realtime:room1";
    let mut sender = server.client("2.0.0").await;
    let mut v2 = server.client("2.0.0").await;
    let mut v1 = server.client("1.0.0").await;
    let js = sender.join(topic, config(false, true)).await;
    v2.join(topic, config(false, false)).await;
    v1.join(topic, config(false, false)).await;

    sender
        .send_binary(kind3(&js, "7", topic, "cursor", br#"{"x":1,"y":2}"#, 1))
        .await;
    assert_eq!(
        v2.recv().await,
        Frame::Binary(kind4(topic, "cursor", br#"{"x":1,"y":2}"#, 1))
    );
    assert_eq!(
        v1.recv().await,
        Frame::Text(r#"{"topic":"realtime:room1","event":"broadcast","payload":{"event":"cursor","payload":{"x":1,"y":2},"type":"broadcast"},"ref":null}"#.into())
    );
    assert_eq!(
        sender.recv().await,
        Frame::Text(format!(
            r#"["{js}","7","{topic}","phx_reply",{{"status":"ok","response":{{}}}}]"#
        )),
        "the ack of a binary push is a text reply"
    );

    // Opaque bytes reach v2 members only: v1 has no way to carry them.
    sender
        .send_binary(kind3(&js, "8", topic, "blob", &[0, 159, 255], 0))
        .await;
    assert_eq!(
        v2.recv().await,
        Frame::Binary(kind4(topic, "blob", &[0, 159, 255], 0))
    );
    sender.expect_reply("8").await;
    v1.expect_silence(SHORT).await;
}

#[tokio::test]
async fn v1_text_broadcasts_reach_v2_members_as_text() {
    let server = TestServer::start().await;
    let topic = "realtime:mixed";
    let mut v1 = server.client("1.0.0").await;
    let mut v2 = server.client("2.0.0").await;
    let j1 = v1.join(topic, config(false, false)).await;
    v2.join(topic, config(false, false)).await;
    v1.send_text(format!(
        r#"{{"topic":"{topic}","event":"broadcast","payload":{{"type":"broadcast","event":"hi","payload":{{"n":1}}}},"ref":"9","join_ref":"{j1}"}}"#
    ))
    .await;
    assert_eq!(
        v2.recv().await,
        Frame::Text(format!(
            r#"[null,null,"{topic}","broadcast",{{"type":"broadcast","event":"hi","payload":{{"n":1}}}}]"#
        ))
    );
}

#[tokio::test]
async fn a_busy_channel_delivers_everything_in_order() {
    let server = TestServer::start().await;
    let topic = "realtime:busy";
    let mut sender = server.client("2.0.0").await;
    let js = sender.join(topic, config(false, false)).await;
    let mut receivers: Vec<WsClient> = Vec::new();
    for i in 0..8 {
        let mut r = server
            .client(if i % 2 == 0 { "2.0.0" } else { "1.0.0" })
            .await;
        r.join(topic, config(false, false)).await;
        receivers.push(r);
    }
    for n in 0..200 {
        sender
            .send_binary(kind3(
                &js,
                "",
                topic,
                "tick",
                format!(r#"{{"n":{n}}}"#).as_bytes(),
                1,
            ))
            .await;
    }
    for r in &mut receivers {
        for n in 0..200 {
            let body = format!(r#"{{"n":{n}}}"#);
            match r.recv().await {
                Frame::Binary(b) => assert_eq!(b, kind4(topic, "tick", body.as_bytes(), 1)),
                Frame::Text(t) => assert!(t.contains(&format!(r#""payload":{body}"#)), "{t}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
