//! Properties of [`Room`] on a virtual clock: members who join at any moment learn each presence
//! exactly once, and coalescing never changes what everyone ends up holding.

use std::collections::BTreeMap;

use headcount_presence::{Change, Coalesce, Flush, Payload, Room};
use proptest::prelude::*;
use serde_json::Value;

/// What one member holds: key → `phx_ref` → meta (as JSON, without `phx_ref_prev`).
type Held = BTreeMap<String, BTreeMap<String, String>>;

fn metas(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object()
        .unwrap()
        .iter()
        .flat_map(|(k, g)| g["metas"].as_array().unwrap().iter().map(move |m| (k, m)))
}

fn meta_entry(m: &Value) -> (String, String) {
    let mut m = m.clone();
    let phx_ref = m["phx_ref"].as_str().unwrap().to_owned();
    m.as_object_mut().unwrap().remove("phx_ref_prev");
    (phx_ref, m.to_string())
}

fn held_from_state(json: &str) -> Held {
    let v: Value = serde_json::from_str(json).unwrap();
    let mut held = Held::new();
    for (key, m) in metas(&v) {
        let (r, text) = meta_entry(m);
        held.entry(key.clone()).or_default().insert(r, text);
    }
    held
}

/// Applies a diff as phoenix.js does (joins, then leaves), failing if it tells the member of a
/// meta it already knows or of the leave of one it never knew.
fn apply(held: &mut Held, diff_json: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(diff_json).unwrap();
    let mut leaving: Vec<(String, String)> = Vec::new();
    for (key, m) in metas(&v["leaves"]) {
        leaving.push((key.clone(), meta_entry(m).0));
    }
    for (key, m) in metas(&v["joins"]) {
        let (r, text) = meta_entry(m);
        let metas = held.entry(key.clone()).or_default();
        if metas.insert(r.clone(), text).is_some() {
            return Err(format!("told twice of {key}/{r}"));
        }
    }
    for (key, r) in leaving {
        let Some(metas) = held.get_mut(&key) else {
            return Err(format!("told of the leave of unknown {key}/{r}"));
        };
        if metas.remove(&r).is_none() {
            return Err(format!("told of the leave of unknown {key}/{r}"));
        }
        if metas.is_empty() {
            held.remove(&key);
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Track { owner: u8, key: u8, payload: u8 },
    Untrack { owner: u8 },
    MemberJoins,
    Advance(u64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..3, 0u8..3).prop_map(|(owner, key, payload)| Op::Track { owner, key, payload }),
        2 => (0u8..6).prop_map(|owner| Op::Untrack { owner }),
        1 => Just(Op::MemberJoins),
        2 => (0u64..120).prop_map(Op::Advance),
        2 => Just(Op::Flush),
    ]
}

struct World {
    room: Room<u8>,
    members: Vec<Held>,
    now: u64,
    unix_ns: u64,
    flush_due: Option<u64>,
    sent: usize,
}

impl World {
    fn new(rule: Coalesce) -> World {
        World {
            room: Room::new(rule, 1),
            members: Vec::new(),
            now: 0,
            unix_ns: 1_700_000_000_000_000_000,
            flush_due: None,
            sent: 0,
        }
    }

    fn perform(&mut self, change: Option<Change>) -> Result<(), String> {
        let Some(change) = change else { return Ok(()) };
        if let Some(at) = change.flush_at {
            if self.flush_due.is_some() {
                return Err("asked for a flush while one was already due".into());
            }
            self.flush_due = Some(at);
        }
        if let Some(diff) = change.send {
            self.send(&diff.to_json())?;
        }
        Ok(())
    }

    fn send(&mut self, json: &str) -> Result<(), String> {
        self.sent += 1;
        for held in &mut self.members {
            apply(held, json)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        match self.room.flush(self.now) {
            Flush::Send(diff) => {
                self.flush_due = None;
                self.send(&diff.to_json())
            }
            Flush::Wait(at) => {
                if at <= self.now {
                    return Err(format!("asked to wait until {at} at {}", self.now));
                }
                self.flush_due = Some(at);
                Ok(())
            }
            Flush::Idle => {
                self.flush_due = None;
                Ok(())
            }
        }
    }

    fn run(&mut self, op: &Op) -> Result<(), String> {
        let n = self.members.len();
        self.unix_ns += 1_000;
        match *op {
            Op::Track {
                owner,
                key,
                payload,
            } => {
                let payload = Payload::from_json(&format!("{{\"v\":{payload}}}")).unwrap();
                let change = self.room.track(
                    owner,
                    &format!("k{key}"),
                    payload,
                    self.unix_ns,
                    self.now,
                    n,
                );
                self.perform(change)
            }
            Op::Untrack { owner } => {
                let change = self.room.untrack(&owner, self.now, n);
                self.perform(change)
            }
            Op::MemberJoins => {
                let state = self.room.joiner_state();
                self.members.push(held_from_state(&state));
                Ok(())
            }
            Op::Advance(ms) => {
                self.now += ms;
                Ok(())
            }
            Op::Flush => self.flush(),
        }
    }

    /// Ends every window and flushes what waits.
    fn settle(&mut self) -> Result<(), String> {
        self.now += 10_000;
        self.flush()?;
        if self.room.has_pending() {
            return Err("changes still wait after the window ended".into());
        }
        Ok(())
    }
}

fn rule() -> impl Strategy<Value = Coalesce> {
    (prop_oneof![Just(0u64), 1u64..100], 0usize..4).prop_map(|(window_ms, min_members)| Coalesce {
        window_ms,
        min_members,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whenever a member joins, it learns each presence exactly once, and after the last window
    /// every member holds exactly the room's presence.
    #[test]
    fn a_joiner_learns_each_presence_exactly_once(rule in rule(), ops in prop::collection::vec(op(), 0..60)) {
        let mut world = World::new(rule);
        for op in &ops {
            world.run(op).map_err(TestCaseError::fail)?;
        }
        world.settle().map_err(TestCaseError::fail)?;
        let truth = held_from_state(&world.room.state_json());
        for held in &world.members {
            prop_assert_eq!(held, &truth);
        }
    }

    /// The same changes, coalesced or sent one by one, leave a member in the same final state.
    #[test]
    fn coalescing_never_changes_the_final_state(rule in rule(), ops in prop::collection::vec(op(), 0..60)) {
        let mut coalesced = World::new(rule);
        let mut direct = World::new(Coalesce::NEVER);
        coalesced.members.push(Held::new());
        direct.members.push(Held::new());
        for op in ops.iter().filter(|op| !matches!(op, Op::MemberJoins)) {
            coalesced.run(op).map_err(TestCaseError::fail)?;
            direct.run(op).map_err(TestCaseError::fail)?;
        }
        coalesced.settle().map_err(TestCaseError::fail)?;
        direct.settle().map_err(TestCaseError::fail)?;
        prop_assert_eq!(&coalesced.members[0], &direct.members[0]);
        prop_assert!(coalesced.sent <= direct.sent);
    }
}

#[test]
fn a_small_room_sends_every_change_at_once() {
    let mut room: Room<u8> = Room::new(
        Coalesce {
            window_ms: 50,
            min_members: 10,
        },
        1,
    );
    for (i, owner) in (0u8..5).enumerate() {
        let change = room
            .track(owner, "k", Payload::empty(), 1 + i as u64, 0, 9)
            .expect("a change");
        assert!(
            change.send.is_some(),
            "change {i} of a 9-member room is sent at once"
        );
        assert_eq!(change.flush_at, None);
    }
}

#[test]
fn a_large_room_merges_what_follows_inside_the_window() {
    let mut room: Room<u8> = Room::new(
        Coalesce {
            window_ms: 50,
            min_members: 10,
        },
        1,
    );
    let first = room.track(0, "k", Payload::empty(), 1, 0, 10).unwrap();
    assert!(first.send.is_some(), "a quiet room sends at once");
    let second = room.track(1, "k", Payload::empty(), 2, 10, 10).unwrap();
    assert_eq!(second.send, None);
    assert_eq!(
        second.flush_at,
        Some(50),
        "the flush is due when the window ends"
    );
    let third = room.track(2, "k", Payload::empty(), 3, 20, 10).unwrap();
    assert_eq!(
        third,
        Change::default(),
        "already waiting: no second request"
    );
    assert_eq!(room.flush(30), Flush::Wait(50));
    let Flush::Send(diff) = room.flush(50) else {
        panic!("the window ended: the merged changes go out");
    };
    assert_eq!((diff.joins.len(), diff.leaves.len()), (2, 0));
    assert_eq!(room.flush(60), Flush::Idle);
}

#[test]
fn a_join_and_a_leave_inside_one_window_reach_nobody() {
    let mut room: Room<u8> = Room::new(
        Coalesce {
            window_ms: 50,
            min_members: 10,
        },
        1,
    );
    let _ = room.track(0, "k", Payload::empty(), 1, 0, 10).unwrap();
    let _ = room.track(1, "k", Payload::empty(), 2, 10, 10).unwrap();
    assert_eq!(room.untrack(&1, 20, 10).unwrap(), Change::default());
    assert_eq!(room.flush(50), Flush::Idle);
}

#[test]
fn an_identical_track_changes_nothing() {
    let mut room: Room<u8> = Room::new(Coalesce::NEVER, 1);
    let payload = Payload::from_json("{\"a\":1}").unwrap();
    assert!(room.track(0, "k", payload.clone(), 1, 0, 1).is_some());
    assert_eq!(room.track(0, "k", payload, 2, 0, 1), None);
}

#[test]
fn a_resync_replaces_the_remote_entries_in_one_change_and_keeps_the_local_ones() {
    use headcount_presence::{Meta, PhxRef};
    let meta = |n: u16| Meta {
        phx_ref: PhxRef::from_parts(9, 2, n),
        phx_ref_prev: None,
        payload: Payload::empty(),
    };
    // Owners from 100 up are another node's.
    let remote = |o: &u8| *o >= 100;
    let mut room: Room<u8> = Room::new(Coalesce::NEVER, 1);
    let _ = room.track(1, "local", Payload::empty(), 1, 0, 1).unwrap();
    let _ = room.set(100, Some(("gone", meta(1))), 0, 1).unwrap();
    let _ = room.set(101, Some(("kept", meta(2))), 0, 1).unwrap();
    let fresh = [(101, "kept".into(), meta(2)), (102, "new".into(), meta(3))];
    let change = room.replace(remote, fresh.clone(), 0, 1).expect("a change");
    let diff = change.send.expect("sent at once");
    let keys = |v: &[(Box<str>, Meta)]| v.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(&diff.joins), ["new"]);
    assert_eq!(keys(&diff.leaves), ["gone"]);
    let keys: Vec<&str> = room.presence().iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["kept", "local", "new"]);
    assert_eq!(
        room.replace(remote, fresh, 0, 1),
        None,
        "the same resync again changes nothing"
    );
}
