//! The healthy members of the soak test: each one a task that follows its plan (join,
//! track, update, broadcast small and large payloads, leave and rejoin, leave for good),
//! reads every frame as it arrives, keeps its own presence view of each channel as
//! realtime-js does (a `presence_state`, then diffs: joins first, then leaves), records in the
//! shared truth what it has tracked, and notes everything the server did to it that a user
//! would notice (a refusal, a channel closed, the socket cut).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headcount_testkit::{Frame, Msg, WsClient, user_token};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

/// Healthy clients there from the start, and those that arrive in the middle of the run.
pub(crate) const INITIAL: usize = 48;
pub(crate) const LATE: usize = 8;
/// When healthy clients stop acting (from the start of the run).
pub(crate) const STOP: Duration = Duration::from_secs(22);

pub(crate) const PUBLIC: [&str; 4] = [
    "realtime:soak-0",
    "realtime:soak-1",
    "realtime:soak-2",
    "realtime:soak-3",
];
/// Every healthy member is here, with `self` and `ack` on: the large broadcasts go here.
pub(crate) const BIG: &str = "realtime:soak-big";
/// A private channel the policy grants to authenticated users.
pub(crate) const PRIVATE: &str = "realtime:org:acme:room:lobby:chat";

/// Legal large payloads: (client, second of the run) of the 2.5 MB broadcasts on [`BIG`], and
/// the client that tracks a 1.2 MB meta there at 12 s (under the 3,000 kB payload limit).
const BIG_SENDERS: [(u64, u64); 4] = [(2, 6), (7, 10), (12, 14), (17, 18)];
const BIG_TRACKER: u64 = 4;

/// One presence: its key, the client that tracked it (`u64::MAX`: not a healthy client), its
/// meta without `phx_ref`/`phx_ref_prev`.
pub(crate) type Entry = (String, u64, Value);
/// A channel's presences, sorted by key and client.
pub(crate) type Presence = Vec<Entry>;
/// What healthy members have tracked and not left: topic → (key, client) → meta.
pub(crate) type Truth = Arc<Mutex<HashMap<String, BTreeMap<(String, u64), Value>>>>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Update,
    Leave,
    Rejoin,
    BigBroadcast,
    BigTrack,
    Disconnect,
}

fn key_of(id: u64) -> String {
    // Two sockets share each key, so keys with several metas are part of the soak.
    format!("user-{}", id / 2)
}

fn eligible_for_big(id: u64) -> bool {
    (id as usize) < INITIAL && id % 8 != 5
}

/// When client `id` starts, and what it does when (from the start of the run).
fn plan(id: u64) -> (Duration, Vec<(Duration, Action)>) {
    let ms = Duration::from_millis;
    let late = id as usize >= INITIAL;
    let start = if late {
        Duration::from_secs(10) + ms(500 * (id - INITIAL as u64))
    } else {
        ms(50 * id)
    };
    let mut acts = vec![(
        (start + ms(2000)).max(ms(8000 + 100 * (id % 40))),
        Action::Update,
    )];
    if !late && id % 3 == 1 {
        let at = ms(6000 + 500 * (id % 16));
        acts.push((at, Action::Leave));
        acts.push((at + ms(1000), Action::Rejoin));
    }
    if !late && id % 8 == 5 {
        acts.push((ms(15_000 + 250 * (id / 8)), Action::Disconnect));
    }
    for (sender, second) in BIG_SENDERS {
        if sender == id {
            acts.push((Duration::from_secs(second), Action::BigBroadcast));
        }
    }
    if id == BIG_TRACKER {
        acts.push((ms(12_000), Action::BigTrack));
    }
    acts.sort_by_key(|(at, _)| *at);
    (start, acts)
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Joining,
    Joined,
    Left,
}

struct Chan {
    topic: &'static str,
    join_ref: String,
    state: State,
    /// This member's view: phx_ref → (key, client, meta without refs), once its
    /// `presence_state` came.
    view: Option<BTreeMap<String, Entry>>,
    /// What this member tracks here (re-tracked after a rejoin).
    meta: Value,
}

enum Pending {
    Join(usize),
    Track(usize, Value),
    Leave,
    Ack,
}

struct Healthy {
    id: u64,
    c: WsClient,
    chans: Vec<Chan>,
    pending: HashMap<String, Pending>,
    truth: Truth,
    failures: Vec<String>,
    big_seen: usize,
    /// Still connected, as far as it knows.
    alive: bool,
    sent: u64,
}

fn strip(meta: &Value) -> Value {
    let mut m = meta.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("phx_ref");
        o.remove("phx_ref_prev");
    }
    m
}

/// The presences of a `presence_state` or of one side of a `presence_diff`, with their
/// `phx_ref`s.
pub(crate) fn metas(map: &Value) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    for (key, entry) in map.as_object().into_iter().flatten() {
        for meta in entry["metas"].as_array().into_iter().flatten() {
            let client = meta["client"].as_u64().unwrap_or(u64::MAX);
            out.push((ref_of(meta), (key.clone(), client, strip(meta))));
        }
    }
    out
}

pub(crate) fn sorted(mut entries: Presence) -> Presence {
    entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    entries
}

fn ref_of(meta: &Value) -> String {
    meta["phx_ref"].as_str().unwrap_or_default().to_owned()
}

impl Healthy {
    fn fail(&mut self, what: String) {
        self.failures.push(format!("client {}: {what}", self.id));
    }

    fn forget_truth(&self, topic: &str) {
        let mut truth = self.truth.lock().unwrap();
        if let Some(t) = truth.get_mut(topic) {
            t.remove(&(key_of(self.id), self.id));
        }
    }

    async fn join(&mut self, idx: usize) {
        let r = self.c.next_ref();
        let chan = &mut self.chans[idx];
        let config = json!({
            "broadcast": {"self": chan.topic == BIG, "ack": chan.topic == BIG},
            "presence": {"key": key_of(self.id), "enabled": true},
            "private": chan.topic == PRIVATE,
        });
        let token = user_token("authenticated", &format!("user-{}", self.id), 3600);
        chan.join_ref = r.clone();
        chan.state = State::Joining;
        chan.view = None;
        let payload = json!({"config": config, "access_token": token});
        let topic = chan.topic;
        self.pending.insert(r.clone(), Pending::Join(idx));
        self.c
            .send(json!(r), json!(r), topic, "phx_join", payload)
            .await;
    }

    async fn track(&mut self, idx: usize) {
        let (jr, topic, meta) = {
            let ch = &self.chans[idx];
            (ch.join_ref.clone(), ch.topic, ch.meta.clone())
        };
        let payload = json!({"type": "presence", "event": "track", "payload": meta});
        let r = self.c.push(&jr, topic, "presence", payload).await;
        self.pending.insert(r, Pending::Track(idx, meta));
    }

    async fn broadcast(&mut self, idx: usize, payload: Value) {
        let (jr, topic) = (self.chans[idx].join_ref.clone(), self.chans[idx].topic);
        let msg = json!({"type": "broadcast", "event": payload["event"], "payload": payload});
        let r = self.c.push(&jr, topic, "broadcast", msg).await;
        if topic == BIG {
            self.pending.insert(r, Pending::Ack);
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Update | Action::BigTrack => {
                for idx in 0..self.chans.len() {
                    let ch = &mut self.chans[idx];
                    if action == Action::BigTrack && ch.topic != BIG {
                        continue;
                    }
                    ch.meta["status"] = json!("away");
                    if action == Action::BigTrack {
                        ch.meta["avatar"] = json!("a".repeat(1_200_000));
                    }
                    if ch.state == State::Joined {
                        self.track(idx).await;
                    }
                }
            }
            Action::Leave => {
                let ch = &mut self.chans[1];
                ch.state = State::Left;
                ch.view = None;
                let (jr, topic) = (ch.join_ref.clone(), ch.topic);
                self.forget_truth(topic);
                let r = self.c.push(&jr, topic, "phx_leave", json!({})).await;
                self.pending.insert(r, Pending::Leave);
            }
            Action::Rejoin => self.join(1).await,
            Action::BigBroadcast => {
                let idx = self.chans.iter().position(|c| c.topic == BIG).unwrap();
                let body = json!({"event": "big", "from": self.id, "blob": "b".repeat(2_500_000)});
                self.broadcast(idx, body).await;
            }
            Action::Disconnect => {
                for ch in &self.chans {
                    self.forget_truth(ch.topic);
                }
                self.c.close().await;
                self.alive = false;
            }
        }
    }

    /// Small broadcasts, round-robin over the channels joined.
    async fn small_broadcast(&mut self) {
        self.sent += 1;
        let idx = self.sent as usize % self.chans.len();
        if self.chans[idx].state == State::Joined {
            let body = json!({"event": "small", "from": self.id, "n": self.sent});
            self.broadcast(idx, body).await;
        }
    }

    async fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Text(t) => {
                let m = self.c.decode(&t);
                self.on_msg(m).await;
            }
            Frame::Binary(b) => {
                // A kind-4 broadcast: topic and event lengths, then the topic and the event.
                if b.len() > 5 && b[0] == 4 {
                    let (t, e) = (b[1] as usize, b[2] as usize);
                    if &b[5..5 + t] == BIG.as_bytes() && &b[5 + t..5 + t + e] == b"big" {
                        self.big_seen += 1;
                    }
                }
            }
            Frame::Close(_) | Frame::Ended => {
                self.fail(format!("the server closed the socket: {frame:?}"));
                for ch in &self.chans {
                    self.forget_truth(ch.topic);
                }
                self.alive = false;
            }
            Frame::Pong(_) => {}
        }
    }

    async fn on_msg(&mut self, m: Msg) {
        let idx = self.chans.iter().position(|c| c.topic == m.topic);
        match m.event.as_str() {
            "phx_reply" => {
                let Some(p) = m.msg_ref.as_str().and_then(|r| self.pending.remove(r)) else {
                    return;
                };
                if m.payload["status"] != "ok" {
                    let reason: String = m.payload["response"]
                        .to_string()
                        .chars()
                        .take(200)
                        .collect();
                    self.fail(format!("refused on {}: {reason}", m.topic));
                    if let Pending::Join(i) = p {
                        self.chans[i].state = State::Left;
                    }
                    return;
                }
                match p {
                    Pending::Join(i) => {
                        self.chans[i].state = State::Joined;
                        self.track(i).await;
                    }
                    Pending::Track(i, meta) => {
                        if self.chans[i].state == State::Joined {
                            let mut truth = self.truth.lock().unwrap();
                            let t = truth.entry(self.chans[i].topic.to_owned()).or_default();
                            t.insert((key_of(self.id), self.id), strip(&meta));
                        }
                    }
                    Pending::Leave | Pending::Ack => {}
                }
            }
            "presence_state" | "presence_diff" => {
                let Some(i) = idx else { return };
                let ch = &mut self.chans[i];
                let current = !self.c.v2 || m.join_ref == json!(ch.join_ref);
                if m.event == "presence_state" && ch.state != State::Left && current {
                    ch.view = Some(metas(&m.payload).into_iter().collect());
                } else if let Some(view) = ch.view.as_mut().filter(|_| m.event == "presence_diff") {
                    // Joins first, then leaves, as Phoenix's syncDiff does.
                    for (phx_ref, entry) in metas(&m.payload["joins"]) {
                        view.insert(phx_ref, entry);
                    }
                    for (phx_ref, _) in metas(&m.payload["leaves"]) {
                        view.remove(&phx_ref);
                    }
                }
            }
            "broadcast" if m.topic == BIG && m.payload["event"] == "big" => {
                self.big_seen += 1;
            }
            "system" | "phx_close" | "phx_error" => {
                let Some(i) = idx else { return };
                let jr = if self.c.v2 { &m.join_ref } else { &m.msg_ref };
                let ch = &self.chans[i];
                let ours = *jr == json!(ch.join_ref) || m.event == "system";
                if ch.state != State::Left
                    && ours
                    && (m.event != "system" || m.payload["status"] == "error")
                {
                    let topic = ch.topic;
                    self.fail(format!("{} on {topic}: {}", m.event, m.payload));
                    self.chans[i].state = State::Left;
                    self.chans[i].view = None;
                    self.forget_truth(topic);
                }
            }
            _ => {}
        }
    }

    /// Why this member's views differ from `truth`, or `None` when they agree.
    fn mismatch(&self, truth: &HashMap<String, Presence>) -> Option<String> {
        for ch in self.chans.iter().filter(|c| c.state != State::Left) {
            let Some(view) = &ch.view else {
                return Some(format!("no presence_state on {}", ch.topic));
            };
            let mut seen: Vec<&Entry> = view.values().collect();
            seen.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            let want = truth.get(ch.topic).map_or(&[][..], Vec::as_slice);
            if seen.len() != want.len() || seen.iter().zip(want).any(|(a, b)| *a != b) {
                return Some(format!(
                    "{}: sees {} presences, truth has {}",
                    ch.topic,
                    seen.len(),
                    want.len()
                ));
            }
        }
        if eligible_for_big(self.id) && self.big_seen != BIG_SENDERS.len() {
            return Some(format!(
                "received {} of {} large broadcasts",
                self.big_seen,
                BIG_SENDERS.len()
            ));
        }
        None
    }
}

/// What a healthy client reports at the end.
pub(crate) struct Report {
    /// What the server did to it that a user would notice.
    pub failures: Vec<String>,
    /// Still there at the end (it neither left for good nor was cut).
    pub stayed: bool,
    /// If it stayed: how its views differed from the truth at its last look.
    pub mismatch: Option<String>,
}

/// Everything a healthy client task needs from the test.
pub(crate) struct Wiring {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// The start of the run, which its plan counts from.
    pub t0: Instant,
    /// Where it records what it tracks and leaves.
    pub truth: Truth,
    /// Sent once its acting is over: its id and whether it stays for the convergence check.
    pub done: mpsc::UnboundedSender<(u64, bool)>,
    /// Sent once its views first agree with the published truth.
    pub agreed: mpsc::UnboundedSender<u64>,
    /// The truth, published once every member has stopped acting and the abusers are gone.
    pub published: watch::Receiver<Option<Arc<HashMap<String, Presence>>>>,
    /// Sent once its last look at the views is taken (while nobody has left yet).
    pub checked: mpsc::UnboundedSender<u64>,
    /// 1: take the last look; 2: close.
    pub finish: watch::Receiver<u8>,
}

/// Healthy client `id`: follows its [`plan`], then keeps reading until told to close.
pub(crate) async fn healthy(id: u64, w: Wiring) -> Report {
    let (start, mut acts) = plan(id);
    acts.reverse();
    sleep_until(w.t0 + start).await;
    let vsn = if id.is_multiple_of(2) {
        "2.0.0"
    } else {
        "1.0.0"
    };
    let apikey = user_token("authenticated", &format!("user-{id}"), 3600);
    let url = format!(
        "ws://127.0.0.1:{}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}",
        w.port
    );
    let c = match WsClient::connect(&url).await {
        Ok(c) => c,
        Err(refused) => {
            let _ = w.done.send((id, false));
            let failures = vec![format!(
                "client {id}: connect refused: {} {}",
                refused.status, refused.body
            )];
            return Report {
                failures,
                stayed: false,
                mismatch: None,
            };
        }
    };
    let mut topics = vec![BIG, PUBLIC[id as usize % 4], PUBLIC[(id as usize + 1) % 4]];
    if id.is_multiple_of(3) {
        topics.push(PRIVATE);
    }
    let chans = topics.into_iter().map(|topic| Chan {
        topic,
        join_ref: String::new(),
        state: State::Left,
        view: None,
        meta: json!({"client": id, "status": "online", "vsn": vsn}),
    });
    let mut h = Healthy {
        id,
        c,
        chans: chans.collect(),
        pending: HashMap::new(),
        truth: w.truth.clone(),
        failures: Vec::new(),
        big_seen: 0,
        alive: true,
        sent: 0,
    };
    for idx in 0..h.chans.len() {
        h.join(idx).await;
    }
    let stop = w.t0 + STOP;
    let mut next_small = Instant::now() + Duration::from_millis(500);
    while h.alive && Instant::now() < stop {
        let next_act = acts.last().map_or(stop, |(at, _)| w.t0 + *at);
        let next = next_act.min(next_small).min(stop);
        match h
            .c
            .try_recv(next.saturating_duration_since(Instant::now()))
            .await
        {
            Some(frame) => h.on_frame(frame).await,
            None if Instant::now() >= next_act && next_act < stop => {
                let (_, action) = acts.pop().unwrap();
                h.act(action).await;
            }
            None if Instant::now() >= next_small => {
                next_small += Duration::from_millis(400);
                h.small_broadcast().await;
            }
            None => {}
        }
    }
    let _ = w.done.send((id, h.alive));
    if !h.alive {
        return Report {
            failures: h.failures,
            stayed: false,
            mismatch: None,
        };
    }
    // Keep reading while the others finish, and say once when the views agree.
    let (mut published, mut finish) = (w.published, w.finish);
    let (mut agreed, mut changed) = (false, true);
    while h.alive && *finish.borrow_and_update() == 0 {
        let truth = published.borrow_and_update().clone();
        if let Some(truth) = truth
            && !agreed
            && changed
        {
            changed = false;
            if h.mismatch(&truth).is_none() {
                agreed = true;
                let _ = w.agreed.send(id);
            }
        }
        if let Some(frame) = h.c.try_recv(Duration::from_millis(100)).await {
            h.on_frame(frame).await;
            changed = true;
        }
    }
    let truth = published.borrow().clone().unwrap_or_default();
    let mismatch = h.mismatch(&truth);
    let _ = w.checked.send(id);
    let _ = timeout(
        Duration::from_secs(15),
        finish.wait_for(|stage| *stage >= 2),
    )
    .await;
    h.c.close().await;
    Report {
        failures: h.failures,
        stayed: true,
        mismatch,
    }
}
