//! Presence state under arbitrary sequences of track and untrack.
//!
//! After every operation:
//! * the returned diff is exactly what a plain model of owners → (key, payload, ref) predicts;
//! * `state_json()` is a JSON object whose keys and metas match the model, `key_count()` and
//!   `meta_count()`, with unique `phx_ref`s;
//! * a client that applied every diff so far (phoenix.js `syncDiff`) holds the same state.
//!
//! At the end, the diffs merged with `Diff::merge`, applied to an empty client and to a client
//! that got the state at a chosen cut, give the final state, and a merged diff never both joins
//! and leaves one meta.

#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use arbitrary::Arbitrary;
use headcount_fuzz::{ClientState, apply_diff, client_from_state, expect_json, normalized};
use headcount_presence::{ChannelPresence, Diff, Meta, Payload, PhxRef, RefGenerator};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KEYS: [&str; 6] = [
    "alice",
    "bob",
    "",
    "__proto__",
    "a\"b\\c",
    "\u{e9}\u{1F600}",
];
const OWNERS: u8 = 6;
const MAX_OPS: usize = 64;

#[derive(Arbitrary, Debug)]
enum Key {
    Pick(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum PayloadSpec {
    Small(u8),
    Json(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Track {
        owner: u8,
        key: Key,
        payload: PayloadSpec,
        /// Milliseconds the clock moves before this track (it may go back).
        clock: i16,
    },
    Untrack {
        owner: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    node: u16,
    cut: u8,
    ops: Vec<Op>,
}

fn payload(spec: &PayloadSpec) -> Payload {
    match spec {
        PayloadSpec::Small(n) => {
            let n = n % 4;
            Payload::from_json(&format!(r#"{{"status":"s{n}","n":{n}}}"#)).expect("an object")
        }
        PayloadSpec::Json(text) => Payload::from_json(text).unwrap_or_else(|_| Payload::empty()),
    }
}

/// owner → (key, meta): what the state should hold.
type Model = HashMap<u8, (String, Meta)>;

fn meta_value(meta: &Meta) -> Value {
    let mut out = String::new();
    meta.write_json(&mut out);
    expect_json(out.as_bytes(), "meta")
}

fn model_client(model: &Model) -> ClientState {
    let mut state = ClientState::new();
    for (key, meta) in model.values() {
        state.entry(key.clone()).or_default().push(meta_value(meta));
    }
    state
}

/// The diff a track should give, updating the model.
fn model_track(
    model: &mut Model,
    owner: u8,
    key: &str,
    payload: Payload,
    new_ref: PhxRef,
) -> Option<Diff> {
    let mut diff = Diff::default();
    if let Some((old_key, old)) = model.get(&owner).cloned() {
        if old_key == key {
            if old.payload == payload {
                return None;
            }
            let new = Meta {
                phx_ref: new_ref,
                phx_ref_prev: Some(old.phx_ref),
                payload,
            };
            diff.joins.push((key.into(), new.clone()));
            diff.leaves.push((key.into(), old));
            model.insert(owner, (key.to_owned(), new));
            return Some(diff);
        }
        diff.leaves.push((old_key.into(), old));
    }
    let meta = Meta {
        phx_ref: new_ref,
        phx_ref_prev: None,
        payload,
    };
    diff.joins.push((key.into(), meta.clone()));
    model.insert(owner, (key.to_owned(), meta));
    Some(diff)
}

/// Checks the state after an op; returns it as a client that got `presence_state` would hold.
fn check_state(
    state: &mut ChannelPresence<u8>,
    model: &Model,
    client: &ClientState,
) -> ClientState {
    let json = state.state_json();
    let value = expect_json(json.as_bytes(), "presence state");
    let from_json = client_from_state(&value);
    let metas: usize = from_json.values().map(Vec::len).sum();
    assert_eq!(
        metas,
        state.meta_count(),
        "meta_count disagrees with the JSON"
    );
    assert_eq!(
        from_json.len(),
        state.key_count(),
        "key_count disagrees with the JSON"
    );
    assert_eq!(state.meta_count(), model.len());
    assert_eq!(state.is_empty(), model.is_empty());
    let mut refs = HashSet::new();
    for metas in from_json.values() {
        assert!(!metas.is_empty(), "a key without metas");
        for m in metas {
            let r = m["phx_ref"].as_str().expect("phx_ref is a string");
            assert_eq!(r.len(), 16);
            assert!(refs.insert(r.to_owned()), "phx_ref {r} appears twice");
        }
    }
    let expected = normalized(&model_client(model));
    assert_eq!(
        normalized(&from_json),
        expected,
        "state differs from the model"
    );
    assert_eq!(
        normalized(client),
        expected,
        "client after each diff differs"
    );
    for owner in 0..OWNERS {
        let got = state.get(&owner).map(|(k, m)| (k.to_owned(), m.clone()));
        assert_eq!(got.as_ref(), model.get(&owner), "get({owner})");
    }
    // Cached JSON is the same JSON.
    assert_eq!(state.state_json(), json);
    from_json
}

fn check_merged(diffs: &[Diff], start: ClientState, end: &ClientState) {
    let mut merged = Diff::default();
    for d in diffs {
        merged.merge(d.clone());
    }
    let joined: HashSet<PhxRef> = merged.joins.iter().map(|(_, m)| m.phx_ref).collect();
    for (_, left) in &merged.leaves {
        assert!(
            !joined.contains(&left.phx_ref),
            "a merged diff joins and leaves {}",
            left.phx_ref
        );
    }
    let mut client = start;
    apply_diff(
        &mut client,
        &expect_json(merged.to_json().as_bytes(), "merged diff"),
    );
    assert_eq!(
        normalized(&client),
        normalized(end),
        "merged diff missed the final state"
    );
}

fuzz_target!(|input: Input| {
    let mut state: ChannelPresence<u8> = ChannelPresence::new();
    let mut refs = RefGenerator::new(input.node);
    let mut clock: u64 = 1_700_000_000_000_000_000;
    let mut model = Model::new();
    let mut client = ClientState::new();
    // The diff of each op (empty when nothing changed) and the client state after it.
    let mut diffs: Vec<Diff> = Vec::new();
    let mut states: Vec<ClientState> = vec![ClientState::new()];

    for op in input.ops.iter().take(MAX_OPS) {
        let (got, expected) = match op {
            Op::Track {
                owner,
                key,
                payload: spec,
                clock: delta,
            } => {
                let owner = owner % OWNERS;
                let key = match key {
                    Key::Pick(i) => KEYS[usize::from(*i) % KEYS.len()].to_owned(),
                    Key::Text(s) => s.clone(),
                };
                let p = payload(spec);
                clock = clock.saturating_add_signed(i64::from(*delta) * 1_000_000);
                let new_ref = refs.next(clock);
                let got = state.track(owner, &key, p.clone(), new_ref);
                (got, model_track(&mut model, owner, &key, p, new_ref))
            }
            Op::Untrack { owner } => {
                let owner = owner % OWNERS;
                let expected = model.remove(&owner).map(|(key, meta)| Diff {
                    joins: Vec::new(),
                    leaves: vec![(key.into(), meta)],
                });
                (state.untrack(&owner), expected)
            }
        };
        assert_eq!(got, expected, "{op:?}");
        let diff = got.unwrap_or_default();
        if !diff.is_empty() {
            apply_diff(&mut client, &expect_json(diff.to_json().as_bytes(), "diff"));
        }
        states.push(check_state(&mut state, &model, &client));
        diffs.push(diff);
    }

    let end = states.last().cloned().unwrap_or_default();
    check_merged(&diffs, ClientState::new(), &end);
    let cut = usize::from(input.cut) % states.len();
    check_merged(&diffs[cut..], states[cut].clone(), &end);

    // Every key of the model appears exactly once in the final JSON.
    let keys: BTreeMap<&str, usize> = model.values().fold(BTreeMap::new(), |mut acc, (k, _)| {
        *acc.entry(k.as_str()).or_default() += 1;
        acc
    });
    assert_eq!(keys.len(), state.key_count());
});
