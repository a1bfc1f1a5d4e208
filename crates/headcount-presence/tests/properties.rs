//! Properties of presence state and diffs, checked against a model of the client side
//! (phoenix.js `syncState`/`syncDiff`: joins first, then leaves; metas matched by `phx_ref`).

use std::collections::BTreeMap;

use headcount_presence::{ChannelPresence, Diff, Payload, RefGenerator};
use proptest::prelude::*;
use serde_json::Value;

/// What a client holds: key → metas, compared as sets of metas.
type ClientState = BTreeMap<String, Vec<Value>>;

fn phx_ref(meta: &Value) -> &str {
    meta["phx_ref"].as_str().expect("every meta has a phx_ref")
}

fn groups(v: &Value) -> impl Iterator<Item = (&String, &Vec<Value>)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, g)| (k, g["metas"].as_array().unwrap()))
}

/// phoenix.js `syncDiff`.
fn apply_diff(state: &mut ClientState, diff_json: &str) {
    let diff: Value = serde_json::from_str(diff_json).expect("diffs are JSON");
    for (key, joined) in groups(&diff["joins"]) {
        let joined_refs: Vec<&str> = joined.iter().map(phx_ref).collect();
        let mut metas: Vec<Value> = state
            .get(key)
            .map(|cur| {
                cur.iter()
                    .filter(|m| !joined_refs.contains(&phx_ref(m)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        metas.extend(joined.iter().cloned());
        state.insert(key.clone(), metas);
    }
    for (key, left) in groups(&diff["leaves"]) {
        let Some(cur) = state.get_mut(key) else {
            continue;
        };
        let left_refs: Vec<&str> = left.iter().map(phx_ref).collect();
        cur.retain(|m| !left_refs.contains(&phx_ref(m)));
        if cur.is_empty() {
            state.remove(key);
        }
    }
}

fn from_state_json(json: &str) -> ClientState {
    let v: Value = serde_json::from_str(json).expect("state is JSON");
    groups(&v)
        .map(|(k, metas)| (k.clone(), metas.clone()))
        .collect()
}

/// Metas without `phx_ref_prev` (clients drop it) and in a stable order.
fn normalized(state: &ClientState) -> BTreeMap<String, Vec<String>> {
    state
        .iter()
        .map(|(k, metas)| {
            let mut ms: Vec<String> = metas
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    m.as_object_mut().unwrap().remove("phx_ref_prev");
                    m.to_string()
                })
                .collect();
            ms.sort();
            (k.clone(), ms)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Track {
        owner: u8,
        key: &'static str,
        payload: u8,
    },
    Untrack {
        owner: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, prop::sample::select(vec!["alice", "bob", "count", "__proto__", ""]), 0u8..3)
            .prop_map(|(owner, key, payload)| Op::Track { owner, key, payload }),
        1 => (0u8..5).prop_map(|owner| Op::Untrack { owner }),
    ]
}

fn payload(n: u8) -> Payload {
    Payload::from_json(&format!(r#"{{"status":"s{n}","n":{n}}}"#)).unwrap()
}

/// Runs the ops; returns the diffs and the state JSON after each op.
fn run(ops: &[Op]) -> (Vec<Diff>, Vec<String>) {
    let mut state = ChannelPresence::new();
    let mut refs = RefGenerator::new(1);
    let mut diffs = Vec::new();
    let mut states = Vec::new();
    for (t, op) in ops.iter().enumerate() {
        let diff = match *op {
            Op::Track {
                owner,
                key,
                payload: p,
            } => state.track(owner, key, payload(p), refs.next(t as u64)),
            Op::Untrack { owner } => state.untrack(&owner),
        };
        diffs.push(diff.unwrap_or_default());
        states.push(state.state_json().to_string());
    }
    (diffs, states)
}

proptest! {
    /// Applying every diff, one by one, to an empty client gives the server's state each time.
    #[test]
    fn diffs_applied_in_order_reproduce_the_state(ops in prop::collection::vec(op(), 1..60)) {
        let (diffs, states) = run(&ops);
        let mut client = ClientState::new();
        for (diff, state) in diffs.iter().zip(&states) {
            apply_diff(&mut client, &diff.to_json());
            prop_assert_eq!(normalized(&client), normalized(&from_state_json(state)));
        }
    }

    /// Coalescing never changes the final state: a client that got the state at some point and
    /// then one merged diff of everything after it ends where the server is.
    #[test]
    fn coalesced_diffs_reach_the_same_state(
        ops in prop::collection::vec(op(), 1..60),
        cut in any::<prop::sample::Index>(),
    ) {
        let (diffs, states) = run(&ops);
        let at = cut.index(ops.len());
        let mut client = if at == 0 { ClientState::new() } else { from_state_json(&states[at - 1]) };
        let mut merged = Diff::default();
        for d in &diffs[at..] {
            merged.merge(d.clone());
        }
        apply_diff(&mut client, &merged.to_json());
        prop_assert_eq!(normalized(&client), normalized(&from_state_json(states.last().unwrap())));
    }

    /// A meta that joins and leaves inside one window is never announced.
    #[test]
    fn a_join_and_leave_in_one_window_cancel(ops in prop::collection::vec(op(), 1..40)) {
        let (diffs, _) = run(&ops);
        let mut merged = Diff::default();
        for d in diffs {
            merged.merge(d);
        }
        for (_, left) in &merged.leaves {
            prop_assert!(merged.joins.iter().all(|(_, j)| j.phx_ref != left.phx_ref));
        }
    }

    /// The state JSON is valid JSON whose meta count matches, whatever happened.
    #[test]
    fn state_json_counts_every_meta(ops in prop::collection::vec(op(), 1..60)) {
        let mut state = ChannelPresence::new();
        let mut refs = RefGenerator::new(1);
        for (t, op) in ops.iter().enumerate() {
            match *op {
                Op::Track { owner, key, payload: p } => { state.track(owner, key, payload(p), refs.next(t as u64)); }
                Op::Untrack { owner } => { state.untrack(&owner); }
            }
        }
        let client = from_state_json(&state.state_json());
        prop_assert_eq!(client.values().map(Vec::len).sum::<usize>(), state.meta_count());
        prop_assert_eq!(client.len(), state.key_count());
    }
}

/// A shrunk case kept by name: two owners on one key, the first updates, then leaves.
#[test]
fn regression_update_then_leave_with_a_shared_key() {
    let ops = [
        Op::Track {
            owner: 0,
            key: "alice",
            payload: 0,
        },
        Op::Track {
            owner: 1,
            key: "alice",
            payload: 0,
        },
        Op::Track {
            owner: 0,
            key: "alice",
            payload: 1,
        },
        Op::Untrack { owner: 0 },
    ];
    let (diffs, states) = run(&ops);
    let mut client = ClientState::new();
    for d in &diffs {
        apply_diff(&mut client, &d.to_json());
    }
    assert_eq!(
        normalized(&client),
        normalized(&from_state_json(states.last().unwrap()))
    );
    assert_eq!(client["alice"].len(), 1);
}

proptest! {
    /// A replica that copies each owner's entry with `set` after every change holds the same
    /// state as the primary, and the diffs it emits bring its own clients there too.
    #[test]
    fn replicas_converge_with_set(ops in prop::collection::vec(op(), 1..60)) {
        let mut primary = ChannelPresence::new();
        let mut replica: ChannelPresence<u8> = ChannelPresence::new();
        let mut refs = RefGenerator::new(1);
        let mut client = ClientState::new();
        for (t, op) in ops.iter().enumerate() {
            let owner = match *op {
                Op::Track { owner, key, payload: p } => { primary.track(owner, key, payload(p), refs.next(t as u64)); owner }
                Op::Untrack { owner } => { primary.untrack(&owner); owner }
            };
            let entry = primary.get(&owner).map(|(k, m)| (k.to_owned(), m.clone()));
            if let Some(diff) = replica.set(owner, entry.as_ref().map(|(k, m)| (k.as_str(), m.clone()))) {
                apply_diff(&mut client, &diff.to_json());
            }
            prop_assert_eq!(replica.state_json(), primary.state_json());
            prop_assert_eq!(normalized(&client), normalized(&from_state_json(&primary.state_json())));
        }
    }
}

proptest! {
    /// A view that applies every published diff equals the state, whatever was coalesced.
    #[test]
    fn a_view_of_published_diffs_equals_the_state(
        ops in prop::collection::vec(op(), 1..60),
        windows in prop::collection::vec(1usize..6, 1..30),
    ) {
        let (diffs, states) = run(&ops);
        let mut view = headcount_presence::PresenceView::new();
        let mut at = 0;
        for w in windows.iter().cycle() {
            if at >= diffs.len() {
                break;
            }
            let end = (at + w).min(diffs.len());
            let mut merged = Diff::default();
            for d in &diffs[at..end] {
                merged.merge(d.clone());
            }
            view.apply(&merged);
            prop_assert_eq!(
                normalized(&from_state_json(&view.state_json())),
                normalized(&from_state_json(&states[end - 1]))
            );
            at = end;
        }
    }
}
