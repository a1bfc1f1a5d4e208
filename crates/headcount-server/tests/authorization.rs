//! Private channels under a policy, over real sockets: grants at join, on every refresh, and
//! randomized cases with zero unauthorized deliveries or tracks.

use std::collections::BTreeSet;

use headcount_server::policy::{Grants, Policy};
use headcount_testkit::{Frame, Msg, TestServer, WsClient, user_token};
use serde_json::{Value, json};

const POLICY: &str = r#"
[[rule]]
topic = "secret:*"
role = "full"
allow = ["broadcast:read", "broadcast:write", "presence:read", "presence:write"]

[[rule]]
topic = "secret:*"
role = "reader"
allow = ["broadcast:read", "presence:read"]

[[rule]]
topic = "secret:*"
role = "writer"
allow = ["broadcast:read", "broadcast:write"]

[[rule]]
topic = "secret:*"
role = "watcher"
allow = ["presence:read"]

[[rule]]
topic = "secret:*"
role = "tracker"
allow = ["presence:read", "presence:write"]

[[rule]]
topic = "inbox:{sub}"
allow = ["broadcast:read"]
"#;

const ROLES: [&str; 6] = ["full", "reader", "writer", "watcher", "tracker", "nobody"];

fn grants(role: &str) -> Grants {
    let t = |r: &str| {
        matches!((role, r), ("full", _))
            || match r {
                "broadcast:read" => matches!(role, "reader" | "writer"),
                "broadcast:write" => role == "writer",
                "presence:read" => matches!(role, "reader" | "watcher" | "tracker"),
                "presence:write" => role == "tracker",
                _ => false,
            }
    };
    Grants {
        broadcast_read: t("broadcast:read"),
        broadcast_write: t("broadcast:write"),
        presence_read: t("presence:read"),
        presence_write: t("presence:write"),
    }
}

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.policy = Policy::from_toml(POLICY).unwrap();
        c.limits.client_presence_max_calls = 1000;
        // Diffs go out at once, so a heartbeat round trip shows everything delivered so far.
        c.presence_window = std::time::Duration::ZERO;
    })
    .await
}

fn private(key: &str) -> Value {
    json!({"private": true, "broadcast": {"self": false, "ack": true}, "presence": {"key": key, "enabled": true}})
}

/// Sends a heartbeat and returns every message received before its reply: since a socket's
/// frames are queued in order, that is everything already delivered to it.
async fn drain(c: &mut WsClient) -> Vec<Msg> {
    let r = c.next_ref();
    c.send(json!(null), json!(r), "phoenix", "heartbeat", json!({}))
        .await;
    let mut got = Vec::new();
    loop {
        match c.recv().await {
            Frame::Text(t) => {
                let m = c.decode(&t);
                if m.topic == "phoenix" && m.msg_ref == json!(r) {
                    return got;
                }
                got.push(m);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn join_needs_a_read_grant_and_nothing_is_granted_by_default() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    for (role, topic, ok) in [
        ("nobody", "secret:a", false),
        ("full", "other:a", false),
        ("reader", "secret:a", true),
        ("watcher", "secret:b", true),
    ] {
        let (_, reply) = c
            .join_with(
                &format!("realtime:{topic}"),
                json!({"config": private(""), "access_token": user_token(role, "u1", 60)}),
            )
            .await;
        if ok {
            assert_eq!(reply.payload["status"], "ok", "{role} on {topic}");
        } else {
            assert_eq!(
                reply.payload,
                json!({"status":"error","response":{"reason": format!("Unauthorized: You do not have permissions to read from this Channel topic: {topic}")}}),
                "{role} on {topic}"
            );
        }
    }
    // Placeholders bind the topic to the token: only your own inbox.
    let (_, mine) = c
        .join_with(
            "realtime:inbox:u7",
            json!({"config": private(""), "access_token": user_token("anon", "u7", 60)}),
        )
        .await;
    assert_eq!(mine.payload["status"], "ok");
    let (_, theirs) = c
        .join_with(
            "realtime:inbox:u8",
            json!({"config": private(""), "access_token": user_token("anon", "u7", 60)}),
        )
        .await;
    assert_eq!(theirs.payload["status"], "error");
}

#[tokio::test]
async fn public_and_private_rooms_with_one_name_are_apart() {
    let server = server().await;
    let mut public = server.client("2.0.0").await;
    let mut secret = server.client("2.0.0").await;
    let jp = public
        .join("realtime:secret:x", json!({"broadcast": {"ack": true}}))
        .await;
    secret
        .join_with(
            "realtime:secret:x",
            json!({"config": private(""), "access_token": user_token("full", "u", 60)}),
        )
        .await;
    secret.recv_msg().await; // presence_state
    let r = public
        .push(
            &jp,
            "realtime:secret:x",
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    public.expect_reply(&r).await;
    assert!(drain(&mut secret).await.is_empty());
}

#[tokio::test]
async fn refresh_re_evaluates_grants_and_revocation_closes_the_channel() {
    let server = server().await;
    let mut c = server.client("2.0.0").await;
    let mut writer = server.client("2.0.0").await;
    let topic = "realtime:secret:r";
    let (jr, _) = c
        .join_with(
            topic,
            json!({"config": private(""), "access_token": user_token("reader", "u1", 60)}),
        )
        .await;
    let (jw, _) = writer
        .join_with(
            topic,
            json!({"config": private(""), "access_token": user_token("writer", "u2", 60)}),
        )
        .await;
    drain(&mut c).await;
    // reader → watcher: still may read (presence), so the channel stays, without broadcasts.
    c.push(
        &jr,
        topic,
        "access_token",
        json!({"access_token": user_token("watcher", "u1", 60)}),
    )
    .await;
    writer
        .push(
            &jw,
            topic,
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    drain(&mut writer).await;
    assert!(
        drain(&mut c).await.is_empty(),
        "watchers do not get broadcasts"
    );
    // watcher → nobody: the read grant is gone.
    c.push(
        &jr,
        topic,
        "access_token",
        json!({"access_token": user_token("nobody", "u1", 60)}),
    )
    .await;
    let system = c.expect_event(topic, "system").await;
    assert_eq!(
        system.payload["message"],
        "You no longer have permission to read from this Channel topic: secret:r"
    );
    assert_eq!(c.recv_msg().await.event, "phx_close");
}

/// A tiny deterministic generator, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

struct Member {
    client: WsClient,
    join_ref: String,
    role: &'static str,
    key: String,
}

#[tokio::test]
async fn randomized_grants_never_leak() {
    for seed in 1..=24u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let server = server().await;
        let topic = format!("realtime:secret:case{seed}");
        let mut members: Vec<Member> = Vec::new();
        for i in 0..4 {
            let role = rng.pick(&ROLES);
            let key = format!("m{i}");
            let mut client = server
                .client(if rng.next().is_multiple_of(2) {
                    "2.0.0"
                } else {
                    "1.0.0"
                })
                .await;
            let (jr, reply) = client
                .join_with(
                    &topic,
                    json!({"config": private(&key), "access_token": user_token(role, &key, 60)}),
                )
                .await;
            assert_eq!(
                reply.payload["status"] == "ok",
                grants(role).can_read(),
                "seed {seed}: join as {role}"
            );
            if reply.payload["status"] == "ok" {
                members.push(Member {
                    client,
                    join_ref: jr,
                    role,
                    key,
                });
            }
        }
        for round in 0..2 {
            for m in &mut members {
                drain(&mut m.client).await;
            }
            // Everyone tries to broadcast and to track.
            for m in &mut members {
                let payload = json!({"type":"broadcast","event":"e","payload":{"from": m.key, "round": round}});
                m.client
                    .push(&m.join_ref, &topic, "broadcast", payload)
                    .await;
                let r = m
                    .client
                    .push(
                        &m.join_ref,
                        &topic,
                        "presence",
                        json!({"type":"presence","event":"track","payload":{"round": round}}),
                    )
                    .await;
                let replies: Vec<Msg> = drain(&mut m.client).await;
                let track_reply = replies
                    .iter()
                    .find(|x| x.event == "phx_reply" && x.msg_ref == json!(r))
                    .expect("a track reply");
                assert_eq!(
                    track_reply.payload["status"] == "ok",
                    grants(m.role).presence_write,
                    "seed {seed}: track as {}",
                    m.role
                );
            }
            // Then everyone reads what reached them.
            for i in 0..members.len() {
                let got = drain(&mut members[i].client).await;
                let g = grants(members[i].role);
                let broadcasts_from: BTreeSet<String> = got
                    .iter()
                    .filter(|x| x.event == "broadcast")
                    .map(|x| x.payload["payload"]["from"].as_str().unwrap().to_owned())
                    .collect();
                let expected: BTreeSet<String> = members
                    .iter()
                    .enumerate()
                    .filter(|(j, o)| *j != i && g.broadcast_read && grants(o.role).broadcast_write)
                    .map(|(_, o)| o.key.clone())
                    .collect();
                let diffs = got.iter().filter(|x| x.event == "presence_diff").count();
                assert!(
                    broadcasts_from.is_subset(&expected),
                    "seed {seed}: {} got {broadcasts_from:?}, allowed {expected:?}",
                    members[i].role
                );
                if !g.presence_read {
                    assert_eq!(
                        diffs, 0,
                        "seed {seed}: {} got presence diffs",
                        members[i].role
                    );
                }
            }
            // Every member sees only tracks from members allowed to track.
            let mut viewer = server.client("2.0.0").await;
            let (_, _) = viewer.join_with(&topic, json!({"config": private("viewer"), "access_token": user_token("watcher", "viewer", 60)})).await;
            let state = viewer.recv_msg().await;
            assert_eq!(state.event, "presence_state");
            let present: BTreeSet<String> =
                state.payload.as_object().unwrap().keys().cloned().collect();
            let allowed: BTreeSet<String> = members
                .iter()
                .filter(|m| grants(m.role).presence_write)
                .map(|m| m.key.clone())
                .collect();
            assert_eq!(present, allowed, "seed {seed}: round {round}");
            viewer.close().await;
            // A random member's token changes role: grant or revoke.
            let who = (rng.next() % members.len().max(1) as u64) as usize;
            if let Some(m) = members.get_mut(who) {
                let new_role = rng.pick(&ROLES);
                m.client
                    .push(
                        &m.join_ref.clone(),
                        &topic,
                        "access_token",
                        json!({"access_token": user_token(new_role, &m.key, 60)}),
                    )
                    .await;
                let got = drain(&mut m.client).await;
                if !grants(new_role).can_read() {
                    assert!(
                        got.iter().any(|x| x.event == "system"),
                        "seed {seed}: revoked read closes the channel"
                    );
                    members.remove(who);
                } else {
                    m.role = new_role;
                }
            }
        }
    }
}
