//! Helpers shared by the fuzz targets: a JSON parser without serde_json's nesting limit, and a
//! model of the client side of presence (phoenix.js `syncDiff`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Parses JSON text without serde_json's recursion limit.
///
/// Server frames wrap a client's payload in a few more levels (a reply puts it under
/// `payload.response`), so a payload that was just under the limit when it arrived can be just
/// over it when it leaves. The frame is still valid JSON, which is what the targets check.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Panics unless `bytes` is JSON text: UTF-8, and the JSON grammar (at any depth).
///
/// This is what a client's `JSON.parse` needs. It is weaker than [`parse_json`], which also
/// refuses numbers too large for an `f64` (such as `1e400`) that the grammar allows.
pub fn check_json(bytes: &[u8], what: &str) {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): {bytes:?}"));
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    if let Err(e) = serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end()) {
        panic!("{what} is not valid JSON ({e}): {text:?}");
    }
}

/// Like [`parse_json`], panicking with the text when it is not JSON.
pub fn expect_json(bytes: &[u8], what: &str) -> Value {
    match parse_json(bytes) {
        Ok(v) => v,
        Err(e) => panic!(
            "{what} is not valid JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// What a phoenix.js client holds: key → metas (JSON objects with a `phx_ref`).
pub type ClientState = BTreeMap<String, Vec<Value>>;

fn phx_ref(meta: &Value) -> &str {
    meta.get("phx_ref")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("meta without a string phx_ref: {meta}"))
}

/// The groups of a state or of one side of a diff: `{key: {"metas": [...]}}`.
fn groups(v: &Value) -> Vec<(&String, &Vec<Value>)> {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("presence groups must be an object: {v}"));
    obj.iter()
        .map(|(k, g)| {
            let metas = g
                .get("metas")
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("group {k:?} has no metas array: {g}"));
            (k, metas)
        })
        .collect()
}

/// The client state a `presence_state` payload gives.
pub fn client_from_state(state: &Value) -> ClientState {
    groups(state)
        .into_iter()
        .map(|(k, metas)| (k.clone(), metas.clone()))
        .collect()
}

/// Applies a `presence_diff` payload as phoenix.js `syncDiff` does: every join first (a joined
/// meta replaces the meta with the same `phx_ref`), then every leave (metas removed by
/// `phx_ref`; a key left without metas disappears).
pub fn apply_diff(state: &mut ClientState, diff: &Value) {
    for (key, joined) in groups(&diff["joins"]) {
        let joined_refs: Vec<&str> = joined.iter().map(phx_ref).collect();
        let mut metas: Vec<Value> = state
            .get(key)
            .map(|current| {
                current
                    .iter()
                    .filter(|m| !joined_refs.contains(&phx_ref(m)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        metas.extend(joined.iter().cloned());
        state.insert(key.clone(), metas);
    }
    for (key, left) in groups(&diff["leaves"]) {
        let Some(current) = state.get_mut(key) else {
            continue;
        };
        let left_refs: Vec<&str> = left.iter().map(phx_ref).collect();
        current.retain(|m| !left_refs.contains(&phx_ref(m)));
        if current.is_empty() {
            state.remove(key);
        }
    }
}

/// A client state in a comparable form: metas without `phx_ref_prev` (clients ignore it), as
/// text, sorted within each key.
pub fn normalized(state: &ClientState) -> BTreeMap<String, Vec<String>> {
    state
        .iter()
        .map(|(k, metas)| {
            let mut texts: Vec<String> = metas
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if let Some(obj) = m.as_object_mut() {
                        obj.remove("phx_ref_prev");
                    }
                    m.to_string()
                })
                .collect();
            texts.sort();
            (k.clone(), texts)
        })
        .collect()
}
