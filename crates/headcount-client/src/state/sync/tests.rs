//! Presence sync: named cases from phoenix.js's semantics, then properties against a model of
//! the server.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn meta(r: &str, fields: Value) -> Meta {
    Meta {
        phx_ref: r.into(),
        phx_ref_prev: None,
        fields: fields.as_object().cloned().unwrap_or_default(),
    }
}

fn presences(entries: &[(&str, &[Meta])]) -> Presences {
    entries
        .iter()
        .map(|(k, m)| (k.to_string(), m.to_vec()))
        .collect()
}

fn refs(state: &Presences) -> BTreeMap<String, Vec<String>> {
    state
        .iter()
        .map(|(k, m)| (k.clone(), m.iter().map(|m| m.phx_ref.clone()).collect()))
        .collect()
}

/// The events, without syncs, as (kind, key, current refs, new-or-left refs).
fn summary(events: &[PresenceEvent]) -> Vec<(&'static str, String, Vec<String>, Vec<String>)> {
    let refs = |m: &[PresenceMeta]| m.iter().map(|m| m.presence_ref.clone()).collect();
    events
        .iter()
        .filter_map(|e| match e {
            PresenceEvent::Join { key, current, new } => {
                Some(("join", key.clone(), refs(current), refs(new)))
            }
            PresenceEvent::Leave { key, current, left } => {
                Some(("leave", key.clone(), refs(current), refs(left)))
            }
            PresenceEvent::Sync(_) => None,
        })
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn metas_parse_leniently() {
    let p = presences_from_json(
        r#"{"a":{"metas":[{"phx_ref":"1","x":1},{"phx_ref_prev":"0","phx_ref":"2"},7]},"b":{},"c":3}"#,
    )
    .unwrap();
    assert_eq!(refs(&p), BTreeMap::from([("a".into(), s(&["1", "2"]))]));
    assert_eq!(p["a"][0].fields, *json!({"x": 1}).as_object().unwrap());
    assert_eq!(p["a"][1].phx_ref_prev.as_deref(), Some("0"));
    assert!(p["a"][1].fields.is_empty());
    let d = PresenceDiff::from_json(r#"{"joins":{"a":{"metas":[{"phx_ref":"1"}]}}}"#).unwrap();
    assert_eq!(d.joins.len(), 1);
    assert!(d.leaves.is_empty());
}

#[test]
fn a_join_of_a_present_key_keeps_the_other_metas_in_front() {
    let mut state = presences(&[("u", &[meta("1", json!({})), meta("2", json!({}))])]);
    let mut events = Vec::new();
    let diff = PresenceDiff {
        joins: presences(&[(
            "u",
            &[meta("2", json!({"again": true})), meta("3", json!({}))],
        )]),
        leaves: Presences::new(),
    };
    sync_diff(&mut state, diff, &mut events);
    assert_eq!(refs(&state)["u"], s(&["1", "2", "3"]));
    assert_eq!(
        state["u"][1].fields["again"], true,
        "the joined meta replaces its old copy"
    );
    assert_eq!(
        summary(&events),
        [("join", "u".into(), s(&["1", "2"]), s(&["2", "3"]))]
    );
}

#[test]
fn an_update_is_a_join_then_a_leave_of_the_same_key() {
    let mut state = presences(&[("alice", &[meta("A1", json!({"status": "online"}))])]);
    let diff = PresenceDiff::from_json(
        r#"{"joins":{"alice":{"metas":[{"phx_ref":"A2","phx_ref_prev":"A1","status":"away"}]}},
            "leaves":{"alice":{"metas":[{"phx_ref":"A1","status":"online"}]}}}"#,
    )
    .unwrap();
    let mut events = Vec::new();
    sync_diff(&mut state, diff, &mut events);
    assert_eq!(
        summary(&events),
        [
            ("join", "alice".into(), s(&["A1"]), s(&["A2"])),
            ("leave", "alice".into(), s(&["A2"]), s(&["A1"])),
        ]
    );
    assert_eq!(refs(&state)["alice"], s(&["A2"]));
    assert_eq!(state["alice"][0].fields["status"], "away");
}

#[test]
fn a_leave_of_the_last_meta_removes_the_key_and_unknown_leaves_are_ignored() {
    let mut state = presences(&[("u", &[meta("1", json!({}))])]);
    let mut events = Vec::new();
    let diff = PresenceDiff {
        joins: Presences::new(),
        leaves: presences(&[
            ("u", &[meta("1", json!({}))]),
            ("ghost", &[meta("9", json!({}))]),
        ]),
    };
    sync_diff(&mut state, diff, &mut events);
    assert!(state.is_empty());
    assert_eq!(summary(&events), [("leave", "u".into(), vec![], s(&["1"]))]);
}

#[test]
fn sync_state_reports_who_came_and_who_went() {
    let mut state = presences(&[
        ("gone", &[meta("g", json!({}))]),
        ("both", &[meta("b1", json!({})), meta("b2", json!({}))]),
    ]);
    let new = presences(&[
        ("both", &[meta("b2", json!({})), meta("b3", json!({}))]),
        ("new", &[meta("n", json!({}))]),
    ]);
    let mut events = Vec::new();
    sync_state(&mut state, new, &mut events);
    assert_eq!(
        refs(&state),
        BTreeMap::from([("both".into(), s(&["b2", "b3"])), ("new".into(), s(&["n"]))])
    );
    assert_eq!(
        summary(&events),
        [
            ("join", "both".into(), s(&["b1", "b2"]), s(&["b3"])),
            ("join", "new".into(), vec![], s(&["n"])),
            ("leave", "both".into(), s(&["b2", "b3"]), s(&["b1"])),
            ("leave", "gone".into(), vec![], s(&["g"])),
        ]
    );
}

#[test]
fn diffs_wait_for_the_state_of_the_current_join() {
    let mut sync = PresenceSync::new();
    let mut events = Vec::new();
    assert!(sync.is_pending(Some("3")));
    let d1 = PresenceDiff::from_json(r#"{"joins":{"b":{"metas":[{"phx_ref":"b1"}]}}}"#).unwrap();
    let d2 = PresenceDiff::from_json(r#"{"leaves":{"a":{"metas":[{"phx_ref":"a1"}]}}}"#).unwrap();
    sync.handle_diff("3", d1, &mut events);
    sync.handle_diff("3", d2, &mut events);
    assert!(events.is_empty(), "nothing is reported while pending");
    assert_eq!(sync.state().count(), 0);
    assert!(!sync.state().is_synced());

    let state = presences_from_json(r#"{"a":{"metas":[{"phx_ref":"a1"}]}}"#).unwrap();
    sync.handle_state("3", state, &mut events);
    assert_eq!(
        refs(sync.presences()),
        BTreeMap::from([("b".into(), s(&["b1"]))])
    );
    assert_eq!(
        summary(&events),
        [
            ("join", "a".into(), vec![], s(&["a1"])),
            ("join", "b".into(), vec![], s(&["b1"])),
            ("leave", "a".into(), vec![], s(&["a1"])),
        ]
    );
    let PresenceEvent::Sync(last) = events.last().unwrap() else {
        panic!("a sync comes last")
    };
    assert!(last.is_synced());
    assert_eq!(last.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PresenceEvent::Sync(_)))
            .count(),
        1,
        "one sync for the state and its buffered diffs"
    );
}

#[test]
fn a_snapshot_is_unchanged_by_later_diffs_and_shares_the_keys_they_did_not_touch() {
    let mut sync = PresenceSync::new();
    let mut events = Vec::new();
    let state = presences_from_json(
        r#"{"a":{"metas":[{"phx_ref":"a1","n":1}]},"b":{"metas":[{"phx_ref":"b1"}]}}"#,
    )
    .unwrap();
    sync.handle_state("1", state, &mut events);
    let before = sync.state();
    let diff = PresenceDiff::from_json(
        r#"{"joins":{"a":{"metas":[{"phx_ref":"a2","n":2}]},"c":{"metas":[{"phx_ref":"c1"}]}},
            "leaves":{"a":{"metas":[{"phx_ref":"a1"}]}}}"#,
    )
    .unwrap();
    sync.handle_diff("1", diff, &mut events);
    let after = sync.state();

    assert_eq!(before.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(before.get("a").unwrap()[0].presence_ref, "a1");
    assert_eq!(before.get("a").unwrap()[0].payload["n"], 1);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(after.get("a").unwrap().len(), 1);
    assert_eq!(after.get("a").unwrap()[0].presence_ref, "a2");
    assert_eq!(after.get("a").unwrap()[0].payload["n"], 2);
    let PresenceEvent::Sync(reported) = events.last().unwrap() else {
        panic!("a sync comes last")
    };
    assert_eq!(*reported, after);

    assert!(
        Arc::ptr_eq(&before.presences["b"], &after.presences["b"]),
        "an untouched key is shared, not copied"
    );
    assert!(Arc::ptr_eq(&sync.state().presences, &after.presences));
    let empty =
        PresenceDiff::from_json(r#"{"leaves":{"nobody":{"metas":[{"phx_ref":"x"}]}}}"#).unwrap();
    sync.handle_diff("1", empty, &mut events);
    assert!(
        Arc::ptr_eq(&sync.state().presences, &after.presences),
        "a diff that changes nothing copies nothing"
    );
}

#[test]
fn a_rejoin_is_pending_again_and_keeps_the_old_view_until_its_state() {
    let mut sync = PresenceSync::new();
    let mut events = Vec::new();
    sync.handle_state(
        "1",
        presences_from_json(
            r#"{"a":{"metas":[{"phx_ref":"a1"}]},"b":{"metas":[{"phx_ref":"b1"}]}}"#,
        )
        .unwrap(),
        &mut events,
    );
    assert!(!sync.is_pending(Some("1")));
    assert!(
        sync.is_pending(Some("5")),
        "the channel rejoined with join_ref 5"
    );
    assert!(sync.is_pending(None));
    events.clear();

    let d = PresenceDiff::from_json(r#"{"joins":{"c":{"metas":[{"phx_ref":"c1"}]}}}"#).unwrap();
    sync.handle_diff("5", d, &mut events);
    assert!(events.is_empty());
    assert_eq!(sync.state().count(), 2, "the old view stays");
    assert!(!sync.state_for(Some("5")).is_synced());

    // Meanwhile a left and a came back with a new ref.
    sync.handle_state(
        "5",
        presences_from_json(
            r#"{"a":{"metas":[{"phx_ref":"a2"}]},"b":{"metas":[{"phx_ref":"b1"}]}}"#,
        )
        .unwrap(),
        &mut events,
    );
    assert_eq!(
        summary(&events),
        [
            ("join", "a".into(), s(&["a1"]), s(&["a2"])),
            ("leave", "a".into(), s(&["a2"]), s(&["a1"])),
            // The buffered diff comes after the state's own joins and leaves.
            ("join", "c".into(), vec![], s(&["c1"])),
        ]
    );
    assert_eq!(
        refs(sync.presences()),
        BTreeMap::from([
            ("a".into(), s(&["a2"])),
            ("b".into(), s(&["b1"])),
            ("c".into(), s(&["c1"]))
        ])
    );
    assert!(sync.state_for(Some("5")).is_synced());
}

#[test]
fn the_public_state_renames_phx_ref_and_drops_phx_ref_prev() {
    let mut sync = PresenceSync::new();
    let mut events = Vec::new();
    sync.handle_state(
        "1",
        presences_from_json(
            r#"{"u":{"metas":[{"phx_ref":"2","phx_ref_prev":"1","status":"away"}]}}"#,
        )
        .unwrap(),
        &mut events,
    );
    assert_eq!(
        serde_json::to_value(sync.state()).unwrap(),
        json!({"u": [{"presence_ref": "2", "status": "away"}]})
    );
    assert_eq!(sync.state().get("u").unwrap()[0].payload["status"], "away");
    assert!(sync.state().contains("u"));
    assert!(!sync.state().is_empty());
}

// ---- properties against a model of the server ----

/// What a connection does on the server: each connection tracks under a fixed key
/// (`conn % 3`), so several connections share keys.
#[derive(Clone, Debug)]
enum Op {
    Track { conn: u8, value: u8 },
    Untrack { conn: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, 0u8..3).prop_map(|(conn, value)| Op::Track { conn, value }),
        1 => (0u8..5).prop_map(|conn| Op::Untrack { conn }),
    ]
}

/// The server's presence: connection → (key, ref, value), and the diffs it broadcasts.
#[derive(Default, Clone)]
struct Server {
    tracked: BTreeMap<u8, (String, String, u8)>,
    next_ref: u32,
}

impl Server {
    fn meta(r: &str, prev: Option<&str>, value: u8) -> Meta {
        Meta {
            phx_ref: r.into(),
            phx_ref_prev: prev.map(str::to_owned),
            fields: json!({ "v": value }).as_object().unwrap().clone(),
        }
    }

    fn apply(&mut self, op: &Op) -> Option<PresenceDiff> {
        let mut diff = PresenceDiff::default();
        match *op {
            Op::Track { conn, value } => {
                let key = format!("k{}", conn % 3);
                self.next_ref += 1;
                let new_ref = format!("r{}", self.next_ref);
                match self.tracked.get(&conn).cloned() {
                    Some((_, _, old_value)) if old_value == value => return None,
                    Some((_, old_ref, old_value)) => {
                        diff.joins.insert(
                            key.clone(),
                            vec![Server::meta(&new_ref, Some(&old_ref), value)],
                        );
                        diff.leaves
                            .insert(key.clone(), vec![Server::meta(&old_ref, None, old_value)]);
                    }
                    None => {
                        diff.joins
                            .insert(key.clone(), vec![Server::meta(&new_ref, None, value)]);
                    }
                }
                self.tracked.insert(conn, (key, new_ref, value));
            }
            Op::Untrack { conn } => {
                let (key, r, value) = self.tracked.remove(&conn)?;
                diff.leaves.insert(key, vec![Server::meta(&r, None, value)]);
            }
        }
        Some(diff)
    }

    fn state(&self) -> Presences {
        let mut state = Presences::new();
        for (key, r, value) in self.tracked.values() {
            state
                .entry(key.clone())
                .or_default()
                .push(Server::meta(r, None, *value));
        }
        state
    }
}

/// A state as key → set of (ref, fields), ignoring meta order and `phx_ref_prev`.
fn normal(state: &Presences) -> BTreeMap<String, BTreeSet<(String, String)>> {
    state
        .iter()
        .map(|(k, metas)| {
            let set = metas
                .iter()
                .map(|m| {
                    (
                        m.phx_ref.clone(),
                        Value::Object(m.fields.clone()).to_string(),
                    )
                })
                .collect();
            (k.clone(), set)
        })
        .collect()
}

/// Replays join and leave events onto a public view, as an app that only listens to events
/// would.
fn replay(view: &mut BTreeMap<String, BTreeSet<String>>, events: &[PresenceEvent]) {
    for e in events {
        match e {
            PresenceEvent::Join { key, new, .. } => {
                view.entry(key.clone())
                    .or_default()
                    .extend(new.iter().map(|m| m.presence_ref.clone()));
            }
            PresenceEvent::Leave { key, left, .. } => {
                if let Some(set) = view.get_mut(key) {
                    for m in left {
                        set.remove(&m.presence_ref);
                    }
                    if set.is_empty() {
                        view.remove(key);
                    }
                }
            }
            PresenceEvent::Sync(_) => {}
        }
    }
}

/// The public view rebuilt from the raw one: what the incremental view must equal.
fn rebuilt(sync: &PresenceSync) -> PresenceState {
    let presences = sync
        .presences()
        .iter()
        .map(|(k, metas)| (k.clone(), public(metas)))
        .collect();
    PresenceState::new(presences, sync.state().is_synced())
}

fn ref_view(state: &Presences) -> BTreeMap<String, BTreeSet<String>> {
    state
        .iter()
        .map(|(k, m)| (k.clone(), m.iter().map(|m| m.phx_ref.clone()).collect()))
        .collect()
}

proptest! {
    /// The state of a join, then every diff after it, gives the server's state.
    #[test]
    fn state_then_diffs_gives_the_server_state(ops in prop::collection::vec(op(), 0..30), split in 0usize..30) {
        let mut server = Server::default();
        let split = split.min(ops.len());
        for op in &ops[..split] {
            server.apply(op);
        }
        let mut sync = PresenceSync::new();
        let mut events = Vec::new();
        sync.handle_state("1", server.state(), &mut events);
        for op in &ops[split..] {
            if let Some(diff) = server.apply(op) {
                sync.handle_diff("1", diff, &mut events);
            }
        }
        prop_assert_eq!(normal(sync.presences()), normal(&server.state()));
        prop_assert_eq!(sync.state(), rebuilt(&sync));
        let mut view = BTreeMap::new();
        replay(&mut view, &events);
        prop_assert_eq!(view, ref_view(&server.state()));
    }

    /// Diffs that arrive before the state are applied after it, with the same result.
    #[test]
    fn diffs_before_the_state_are_applied_after_it(ops in prop::collection::vec(op(), 0..30), split in 0usize..30) {
        let mut server = Server::default();
        let split = split.min(ops.len());
        for op in &ops[..split] {
            server.apply(op);
        }
        let snapshot = server.state();
        let diffs: Vec<PresenceDiff> = ops[split..].iter().filter_map(|op| server.apply(op)).collect();
        let mut sync = PresenceSync::new();
        let mut events = Vec::new();
        for diff in diffs {
            sync.handle_diff("7", diff, &mut events);
        }
        prop_assert!(events.is_empty());
        sync.handle_state("7", snapshot, &mut events);
        prop_assert_eq!(normal(sync.presences()), normal(&server.state()));
        prop_assert_eq!(sync.state(), rebuilt(&sync));
    }

    /// A rejoin's state turns any old view into the new state, and the events it reports
    /// turn the old view into the new one too.
    #[test]
    fn a_new_state_replaces_any_old_view(
        before in prop::collection::vec(op(), 0..20),
        after in prop::collection::vec(op(), 0..20),
    ) {
        let mut server = Server::default();
        for op in &before {
            server.apply(op);
        }
        let old = server.state();
        for op in &after {
            server.apply(op);
        }
        let mut sync = PresenceSync::new();
        let mut events = Vec::new();
        sync.handle_state("1", old.clone(), &mut events);
        events.clear();
        let old_snapshot = sync.state();
        let old_rebuilt = rebuilt(&sync);
        sync.handle_state("2", server.state(), &mut events);
        prop_assert_eq!(normal(sync.presences()), normal(&server.state()));
        prop_assert_eq!(sync.state(), rebuilt(&sync));
        prop_assert_eq!(old_snapshot, old_rebuilt, "a snapshot keeps its content");
        let mut view = ref_view(&old);
        replay(&mut view, &events);
        prop_assert_eq!(view, ref_view(&server.state()));
        let joins_first = events.iter().position(|e| matches!(e, PresenceEvent::Leave { .. }))
            .is_none_or(|first_leave| events[first_leave..].iter().all(|e| !matches!(e, PresenceEvent::Join { .. })));
        prop_assert!(joins_first, "joins come before leaves");
    }
}
