//! A corpus of malformed Phoenix messages replayed against the server while well-behaved
//! clients keep working: nothing panics, nobody else notices, and the offending sockets stay
//! open where the protocol allows.

use std::time::Duration;

use headcount_testkit::{Frame, TestServer, WsClient};
use serde_json::{Value, json};

/// Text messages, valid or not as JSON, that a broken or hostile client might send.
fn text_corpus(join_ref: &str) -> Vec<String> {
    let topics = [
        json!("realtime:junk"),
        json!("realtime:room"),
        json!("realtime:"),
        json!("phoenix"),
        json!(""),
        json!("realtime:".to_owned() + &"t".repeat(5000)),
        json!(null),
        json!(42),
        json!(["realtime:room"]),
        json!({"t": 1}),
        json!("realtime:\u{0000}\u{ffff}é"),
    ];
    let events = [
        json!("phx_join"),
        json!("broadcast"),
        json!("presence"),
        json!("access_token"),
        json!("phx_leave"),
        json!("heartbeat"),
        json!("PHX_JOIN"),
        json!("unknown_event"),
        json!(""),
        json!(null),
        json!(7),
    ];
    let payloads = [
        json!({}),
        json!(null),
        json!([]),
        json!("string"),
        json!(1e308),
        json!({"type": "presence", "event": "track", "payload": "not a map"}),
        json!({"type": "presence", "event": ["track"]}),
        json!({"type": "broadcast", "event": {"x": 1}, "payload": null}),
        json!({"config": {"presence": {"key": [1, 2], "enabled": {"yes": true}}, "broadcast": "all", "private": "maybe"}, "access_token": 17}),
        json!({"config": null, "access_token": "a.b.c", "user_token": ["x"]}),
        json!({"access_token": {"nested": "token"}}),
        json!({"access_token": "x".repeat(100_000)}),
    ];
    let mut out = Vec::new();
    // Every event on a few topics with every payload, as 2.0.0 arrays with odd refs.
    for (i, event) in events.iter().enumerate() {
        for (j, payload) in payloads.iter().enumerate() {
            let topic = &topics[(i + j) % topics.len()];
            let refs = [
                json!(join_ref),
                json!(null),
                json!(i),
                json!({"r": j}),
                json!(-1.5),
            ];
            out.push(
                json!([
                    refs[j % refs.len()],
                    refs[(i + 1) % refs.len()],
                    topic,
                    event,
                    payload
                ])
                .to_string(),
            );
        }
    }
    // Wrong arity and types.
    for n in 0..5 {
        out.push(serde_json::to_string(&vec![json!("x"); n]).unwrap());
    }
    out.extend(
        [
            "",
            " ",
            "{",
            "}",
            "[",
            "]",
            "[[[[",
            "null",
            "true",
            "0",
            "\"s\"",
            "{}",
            "[]",
            "[null,null,null,null,null]",
            "[1,2,3,4,5]",
            "[{},{},{},{},{}]",
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#,
            r#"["1","1","realtime:junk","phx_join",{"config":{}}"#,
            r#"["1","1","realtime:junk","phx_join",{"config":{}}]]"#,
            r#"["1","1","realtime:junk","phx_join",{"config":{}},"extra","more"]"#,
            "[\"\\ud800\",\"1\",\"phoenix\",\"heartbeat\",{}]",
            "[\"\\u0000\",\"1\",\"phoenix\",\"heartbeat\",{}]",
        ]
        .map(str::to_owned),
    );
    // Absurd nesting and huge strings.
    out.push(format!(
        "[null,\"1\",\"realtime:room\",\"broadcast\",{}{}]",
        "[".repeat(100_000),
        "]".repeat(100_000)
    ));
    out.push(format!(
        "[null,\"1\",\"realtime:room\",\"broadcast\",{}]",
        "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000)
    ));
    out.push(json!([null, "1", "realtime:junk", "broadcast", {"type": "broadcast", "event": "e", "payload": "x".repeat(1_000_000)}]).to_string());
    out.push(format!(
        "[null,\"1\",\"{}\",\"heartbeat\",{{}}]",
        "p".repeat(1_000_000)
    ));
    out.push("9".repeat(100_000));
    out
}

/// Binary frames: truncated, mislabelled or oversized user broadcasts.
fn binary_corpus(join_ref: &str) -> Vec<Vec<u8>> {
    let topic = b"realtime:junk";
    let good = {
        let mut f = vec![3, join_ref.len() as u8, 1, topic.len() as u8, 1, 0, 1];
        f.extend_from_slice(join_ref.as_bytes());
        f.extend_from_slice(b"9");
        f.extend_from_slice(topic);
        f.extend_from_slice(b"e");
        f.extend_from_slice(b"{\"ok\":1}");
        f
    };
    let mut out: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for kind in [0u8, 1, 2, 4, 5, 255] {
        let mut f = good.clone();
        f[0] = kind;
        out.push(f);
    }
    for (at, value) in [
        (1, 255),
        (2, 255),
        (3, 255),
        (4, 255),
        (5, 255),
        (6, 2),
        (6, 255),
        (3, 0),
        (4, 0),
    ] {
        let mut f = good.clone();
        f[at] = value;
        out.push(f);
    }
    let mut not_json = good.clone();
    not_json.truncate(good.len() - 1);
    out.push(not_json);
    let mut bad_utf8 = good.clone();
    bad_utf8[7] = 0xff;
    out.push(bad_utf8);
    out.push(vec![3; 1000]);
    out.push(vec![0; 70_000]);
    out
}

async fn round_trip(sender: &mut WsClient, sender_ref: &str, receiver: &mut WsClient, n: usize) {
    sender
        .push(
            sender_ref,
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "good", "payload": {"n": n}}),
        )
        .await;
    loop {
        // Odd but valid messages from the offender (it may join this room too) are relayed
        // as Supabase relays them; the good message must come through all the same.
        let got = receiver.expect_event("realtime:room", "broadcast").await;
        if got.payload["event"] == "good" && got.payload["payload"]["n"] == n {
            return;
        }
    }
}

#[tokio::test]
async fn the_corpus_harms_nobody() {
    let server = TestServer::start_with(|c| c.limits.client_presence_max_calls = 10_000).await;
    let mut good_a = server.client("2.0.0").await;
    let mut good_b = server.client("1.0.0").await;
    let ja = good_a
        .join(
            "realtime:room",
            json!({"presence": {"key": "a", "enabled": true}}),
        )
        .await;
    good_b
        .join(
            "realtime:room",
            json!({"presence": {"key": "b", "enabled": true}}),
        )
        .await;

    let mut total = 0;
    for vsn in ["2.0.0", "1.0.0"] {
        let mut bad = server.client(vsn).await;
        // The offender joins a room of its own (large but valid broadcasts there reach nobody
        // who would have to read them) and also aims at the good clients' room, unjoined.
        let jr = bad.join("realtime:junk", json!({})).await;
        let texts = text_corpus(&jr);
        let binaries = binary_corpus(&jr);
        total += texts.len() + binaries.len();
        for (i, t) in texts.into_iter().enumerate() {
            bad.send_text(t).await;
            if i % 25 == 0 {
                round_trip(&mut good_a, &ja, &mut good_b, i).await;
            }
        }
        for b in binaries {
            bad.send_binary(b).await;
        }
        round_trip(&mut good_a, &ja, &mut good_b, 1_000_000).await;
        // The offender's socket is still open and answering.
        bad.send(
            json!(null),
            json!("still-here"),
            "phoenix",
            "heartbeat",
            json!({}),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match bad
                .try_recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                Some(Frame::Text(t)) => {
                    let v: Value =
                        serde_json::from_str(&t).expect("the server only sends JSON text");
                    if t.contains("still-here") {
                        assert!(t.contains(r#""status":"ok""#), "{v}");
                        break;
                    }
                }
                Some(Frame::Binary(_)) => {}
                other => panic!("{vsn}: the offender's socket should stay open, got {other:?}"),
            }
        }
    }
    assert!(total >= 200, "the corpus has {total} messages");
    // Presence still works for the good clients.
    let r = good_a
        .push(
            &ja,
            "realtime:room",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"ok": true}}),
        )
        .await;
    good_a.expect_reply(&r).await;
    let diff = good_b.expect_event("realtime:room", "presence_diff").await;
    assert_eq!(diff.payload["joins"]["a"]["metas"][0]["ok"], true);
    println!("replayed {total} malformed messages; well-behaved clients were undisturbed");
}
