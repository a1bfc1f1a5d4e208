//! Unit tests of the session's rules against a fake [`Node`]: no hub, no socket, no real time.
//! The fake records what the session asked of the node; the frames for the socket itself are
//! read back from its outbox.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::limits::NodeRate;

/// What the session asked of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Join(String, MemberId),
    Leave(String, MemberId),
    Track(String, MemberId, String),
    Untrack(String, MemberId),
    Broadcast(String, MemberId),
    Grants(String, MemberId),
}

#[derive(Debug)]
struct FakeNode {
    config: Config,
    metrics: Metrics,
    joins: NodeRate,
    events: NodeRate,
    presence_events: NodeRate,
    users: std::sync::atomic::AtomicUsize,
    ids: AtomicU64,
    calls: Mutex<Vec<Call>>,
}

impl FakeNode {
    fn new(config: Config) -> Arc<FakeNode> {
        Arc::new(FakeNode {
            joins: NodeRate::per_second(config.limits.max_joins_per_second),
            events: NodeRate::per_second(config.limits.max_events_per_second),
            presence_events: NodeRate::per_second(config.limits.max_presence_events_per_second),
            config,
            metrics: Metrics::default(),
            users: Default::default(),
            ids: AtomicU64::new(1),
            calls: Mutex::default(),
        })
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    /// The calls since the last look.
    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Node for FakeNode {
    /// A channel is its topic.
    type Channel = String;

    fn config(&self) -> &Config {
        &self.config
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn rates(&self) -> NodeRates<'_> {
        NodeRates {
            joins: &self.joins,
            events: &self.events,
            presence_events: &self.presence_events,
        }
    }
    fn users(&self) -> &std::sync::atomic::AtomicUsize {
        &self.users
    }
    fn next_id(&self) -> MemberId {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
    fn new_presence_key(&self) -> String {
        "generated-key".into()
    }
    fn join(&self, key: ChannelKey, member: Member, reply: Bytes, _send_state: bool) -> String {
        member.conn.push(reply);
        self.record(Call::Join(key.topic.to_string(), member.id));
        key.topic.into()
    }
    fn leave(&self, channel: &String, member: MemberId) {
        self.record(Call::Leave(channel.clone(), member));
    }
    fn track(&self, channel: &String, member: MemberId, conn: &Conn, track: Track<'_>) {
        conn.push(track.reply);
        self.record(Call::Track(
            channel.clone(),
            member,
            track.payload.as_str().to_owned(),
        ));
    }
    fn untrack(&self, channel: &String, member: MemberId, conn: &Conn, reply: Option<Bytes>) {
        if let Some(reply) = reply {
            conn.push(reply);
        }
        self.record(Call::Untrack(channel.clone(), member));
    }
    fn broadcast(&self, channel: &String, from: MemberId, _include_self: bool, _m: Broadcast<'_>) {
        self.record(Call::Broadcast(channel.clone(), from));
    }
    fn set_grants(&self, channel: &String, member: MemberId, _grants: Grants) {
        self.record(Call::Grants(channel.clone(), member));
    }
}

const SECRET: &str = "session-test-secret";
/// The wall clock of every test, in Unix seconds.
const UNIX: i64 = 1_800_000_000;

fn token(exp: i64) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"role": "anon", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `ms` milliseconds into the test, on both clocks.
fn at(ms: u64) -> Now {
    Now {
        ms: 1 + ms,
        unix_ms: UNIX as u64 * 1000 + ms,
    }
}

struct Harness {
    node: Arc<FakeNode>,
    conn: Arc<Conn>,
    session: Session<FakeNode>,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut Config)) -> Harness {
        let mut config = Config::new(SECRET);
        configure(&mut config);
        let node = FakeNode::new(config);
        let conn = Arc::new(Conn::new(1, Serializer::V2, 1 << 20, at(0)));
        let session = Session::new(node.clone(), conn.clone(), token(UNIX + 3600));
        Harness {
            node,
            conn,
            session,
        }
    }

    fn send(&mut self, frame: Value, now: Now) -> Flow {
        self.session.handle_text(frame.to_string().as_bytes(), now)
    }

    fn join(&mut self, jr: &str, topic: &str, payload: Value, now: Now) -> Flow {
        self.send(json!([jr, jr, topic, "phx_join", payload]), now)
    }

    /// The frames queued for the socket since the last look, as `[jr, ref, topic, event,
    /// payload]` arrays.
    fn frames(&self) -> Vec<Value> {
        let mut batch = Vec::new();
        self.conn.take_batch(&mut batch);
        batch.iter().map(|f| text_of(f)).collect()
    }

    /// The only frame queued since the last look.
    fn frame(&self) -> Value {
        let mut frames = self.frames();
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames.remove(0)
    }
}

/// The JSON of an unmasked server text frame.
fn text_of(frame: &[u8]) -> Value {
    assert_eq!(frame[0], 0x81, "a final text frame");
    let (len, start) = match frame[1] {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => panic!("no test frame is that large"),
        n => (n as usize, 2),
    };
    serde_json::from_slice(&frame[start..start + len]).unwrap()
}

use headcount_protocol::Serializer;

fn reason(frame: &Value) -> &str {
    assert_eq!(frame[3], "phx_reply", "{frame}");
    assert_eq!(frame[4]["status"], "error", "{frame}");
    frame[4]["response"]["reason"].as_str().unwrap()
}

#[test]
fn a_join_is_answered_ok_and_counts_the_socket_as_a_user() {
    let mut h = Harness::new(|_| {});
    assert_eq!(
        h.join("1", "realtime:room", json!({}), at(0)),
        Flow::Continue
    );
    let reply = h.frame();
    assert_eq!(
        reply,
        json!(["1", "1", "realtime:room", "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}])
    );
    assert_eq!(h.node.calls(), [Call::Join("realtime:room".into(), 1)]);
    assert_eq!(h.node.users.load(Ordering::Relaxed), 1);
    assert_eq!(h.conn.unjoined_since_ms.load(Ordering::Relaxed), 0);
}

#[test]
fn bad_topics_are_refused_before_anything_else() {
    let mut h = Harness::new(|c| c.limits.max_topic_bytes = 5);
    h.join("1", "room", json!({}), at(0));
    assert_eq!(reason(&h.frame()), "unmatched topic");
    h.join("2", "realtime:", json!({}), at(0));
    assert_eq!(
        reason(&h.frame()),
        "TopicNameRequired: You must provide a topic name"
    );
    // N bytes pass, N + 1 do not.
    h.join("3", "realtime:12345", json!({}), at(0));
    assert_eq!(h.frame()[4]["status"], "ok");
    h.join("4", "realtime:123456", json!({}), at(0));
    assert_eq!(
        reason(&h.frame()),
        "TopicNameTooLong: The topic name is too long"
    );
    assert_eq!(h.node.calls(), [Call::Join("realtime:12345".into(), 1)]);
}

#[test]
fn channels_per_socket_are_limited_at_n() {
    let mut h = Harness::new(|c| c.limits.max_channels_per_client = 2);
    for (jr, topic) in [("1", "realtime:a"), ("2", "realtime:b")] {
        h.join(jr, topic, json!({}), at(0));
        assert_eq!(h.frame()[4]["status"], "ok");
    }
    h.join("3", "realtime:c", json!({}), at(0));
    assert_eq!(
        reason(&h.frame()),
        "ChannelRateLimitReached: Too many channels"
    );
    assert_eq!(h.node.calls().len(), 2);
}

#[test]
fn concurrent_users_are_limited_but_a_counted_socket_may_join_more() {
    let mut h = Harness::new(|c| c.limits.max_concurrent_users = Some(1));
    h.node.users.store(1, Ordering::Relaxed);
    h.join("1", "realtime:a", json!({}), at(0));
    assert_eq!(
        reason(&h.frame()),
        "ConnectionRateLimitReached: Too many connected users"
    );
    h.node.users.store(0, Ordering::Relaxed);
    h.join("2", "realtime:a", json!({}), at(0));
    h.join("3", "realtime:b", json!({}), at(0));
    assert!(h.frames().iter().all(|f| f[4]["status"] == "ok"));
    assert_eq!(h.node.users.load(Ordering::Relaxed), 1);
}

#[test]
fn the_node_join_rate_closes_the_socket_at_n_plus_one() {
    let mut h = Harness::new(|c| {
        c.limits.max_joins_per_second = Some(2);
        c.limits.max_client_joins_per_second = Some(10);
    });
    assert_eq!(h.join("1", "realtime:a", json!({}), at(0)), Flow::Continue);
    assert_eq!(h.join("2", "realtime:b", json!({}), at(10)), Flow::Continue);
    assert_eq!(
        h.join("3", "realtime:c", json!({}), at(20)),
        Flow::Close(close_code::GOING_AWAY, "Too many joins per second")
    );
    // A second later the window is new.
    let mut h2 = Harness::new(|c| c.limits.max_joins_per_second = Some(1));
    h2.join("1", "realtime:a", json!({}), at(0));
    assert_eq!(
        h2.join("2", "realtime:b", json!({}), at(1000)),
        Flow::Continue
    );
}

#[test]
fn a_duplicate_join_closes_the_old_channel_first() {
    let mut h = Harness::new(|_| {});
    h.join("1", "realtime:room", json!({}), at(0));
    h.frames();
    h.join("5", "realtime:room", json!({}), at(1));
    let frames = h.frames();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        frames[0],
        json!(["1", "1", "realtime:room", "phx_close", {}])
    );
    assert_eq!(
        (&frames[1][0], &frames[1][3]),
        (&json!("5"), &json!("phx_reply"))
    );
    assert_eq!(
        h.node.calls(),
        [
            Call::Join("realtime:room".into(), 1),
            Call::Leave("realtime:room".into(), 1),
            Call::Join("realtime:room".into(), 2),
        ]
    );
    assert_eq!(h.node.users.load(Ordering::Relaxed), 1);
}

#[test]
fn a_message_with_a_stale_join_ref_is_ignored() {
    let mut h = Harness::new(|_| {});
    h.join(
        "1",
        "realtime:room",
        json!({"config": {"broadcast": {"ack": true}}}),
        at(0),
    );
    h.join(
        "2",
        "realtime:room",
        json!({"config": {"broadcast": {"ack": true}}}),
        at(0),
    );
    h.frames();
    h.node.calls();
    let msg = |jr: &str| json!([jr, "9", "realtime:room", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}]);
    h.send(msg("1"), at(1));
    assert_eq!(h.frames(), Vec::<Value>::new());
    assert_eq!(h.node.calls(), []);
    h.send(msg("2"), at(2));
    assert_eq!(h.frame()[4]["status"], "ok");
    assert_eq!(h.node.calls(), [Call::Broadcast("realtime:room".into(), 2)]);
}

#[test]
fn a_token_expires_exactly_at_its_exp_on_the_monotonic_clock() {
    let mut h = Harness::new(|_| {});
    let payload = json!({"access_token": token(UNIX + 10)});
    h.join("1", "realtime:room", payload, at(0));
    h.frames();
    assert_eq!(h.session.next_deadline(), Some(at(10_000).ms));
    // One millisecond early: nothing happens.
    h.session.on_timers(at(9_999));
    assert_eq!(h.frames(), Vec::<Value>::new());
    // The wall clock jumping ahead does not close it early either.
    let stepped = Now {
        ms: at(5_000).ms,
        unix_ms: at(60_000).unix_ms,
    };
    h.session.on_timers(stepped);
    assert_eq!(h.frames(), Vec::<Value>::new());
    h.session.on_timers(at(10_000));
    let frames = h.frames();
    assert_eq!(
        frames,
        [
            json!(["1", null, "realtime:room", "system", {"extension": "system", "status": "error", "message": "Token has expired 0 seconds ago", "channel": "room"}]),
            json!(["1", "1", "realtime:room", "phx_close", {}]),
        ]
    );
    assert_eq!(h.session.next_deadline(), None);
    assert_eq!(h.node.users.load(Ordering::Relaxed), 0);
    assert_eq!(
        h.conn.unjoined_since_ms.load(Ordering::Relaxed),
        at(10_000).ms
    );
}

#[test]
fn a_refresh_moves_the_deadline_without_a_reply_and_a_bad_one_closes_the_channel() {
    let mut h = Harness::new(|_| {});
    h.join(
        "1",
        "realtime:room",
        json!({"access_token": token(UNIX + 10)}),
        at(0),
    );
    h.frames();
    let refresh =
        |t: String| json!(["1", "2", "realtime:room", "access_token", {"access_token": t}]);
    h.send(refresh(token(UNIX + 100)), at(1_000));
    assert_eq!(
        h.frames(),
        Vec::<Value>::new(),
        "a refresh is never answered"
    );
    assert_eq!(h.session.next_deadline(), Some(at(100_000).ms));
    h.session.on_timers(at(10_000));
    assert_eq!(h.frames(), Vec::<Value>::new());

    h.send(refresh("not a token".into()), at(2_000));
    let frames = h.frames();
    assert_eq!(frames[0][3], "system");
    assert_eq!(
        frames[0][4]["message"],
        "The token provided is not a valid JWT"
    );
    assert_eq!(frames[1][3], "phx_close");
    assert_eq!(h.session.next_deadline(), None);
}

#[test]
fn an_identical_retrack_reaches_the_node_once_and_untrack_reaches_it() {
    let mut h = Harness::new(|_| {});
    h.join(
        "1",
        "realtime:room",
        json!({"config": {"presence": {"key": "me"}}}),
        at(0),
    );
    h.frames();
    h.node.calls();
    let track = json!(["1", "2", "realtime:room", "presence", {"type": "presence", "event": "track", "payload": {"s": 1}}]);
    h.send(track.clone(), at(1));
    h.send(track, at(2));
    assert!(h.frames().iter().all(|f| f[4]["status"] == "ok"));
    assert_eq!(
        h.node.calls(),
        [Call::Track("realtime:room".into(), 1, r#"{"s":1}"#.into())]
    );
    h.send(
        json!(["1", "3", "realtime:room", "presence", {"type": "presence", "event": "untrack"}]),
        at(3),
    );
    assert_eq!(h.frame()[4]["status"], "ok");
    assert_eq!(h.node.calls(), [Call::Untrack("realtime:room".into(), 1)]);
}

#[test]
fn leaving_uncounts_the_user_and_starts_the_unjoined_clock() {
    let mut h = Harness::new(|_| {});
    h.join("1", "realtime:room", json!({}), at(0));
    h.send(json!(["1", "2", "realtime:room", "phx_leave", {}]), at(500));
    let frames = h.frames();
    assert_eq!(frames.last().unwrap()[3], "phx_close");
    assert_eq!(h.node.users.load(Ordering::Relaxed), 0);
    assert_eq!(h.conn.unjoined_since_ms.load(Ordering::Relaxed), at(500).ms);
    assert_eq!(
        h.node.calls(),
        [
            Call::Join("realtime:room".into(), 1),
            Call::Leave("realtime:room".into(), 1)
        ]
    );
}
