//! [`Diff`]: what changed in a channel's presence.

use std::collections::BTreeMap;

use crate::Meta;

/// Metas that joined and metas that left, as `presence_diff` carries them.
///
/// An update appears as the new meta among the joins and the old one among the leaves, under
/// the same key. Clients apply joins before leaves (phoenix.js `syncDiff`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// `(key, meta)` pairs that joined, in order.
    pub joins: Vec<(Box<str>, Meta)>,
    /// `(key, meta)` pairs that left, in order.
    pub leaves: Vec<(Box<str>, Meta)>,
}

impl Diff {
    /// Whether the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// Folds a later diff into this one, so that applying the result once has the same effect
    /// as applying `self` and then `later`. A meta that joins in `self` and leaves in `later`
    /// cancels out: subscribers never hear of it.
    pub fn merge(&mut self, later: Diff) {
        for (key, meta) in later.leaves {
            match self
                .joins
                .iter()
                .position(|(_, m)| m.phx_ref == meta.phx_ref)
            {
                Some(at) => {
                    self.joins.remove(at);
                }
                None => self.leaves.push((key, meta)),
            }
        }
        self.joins.extend(later.joins);
    }

    /// The `presence_diff` payload: `{"joins": {key: {"metas": [...]}}, "leaves": {...}}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(32 + 96 * (self.joins.len() + self.leaves.len()));
        out.push_str("{\"joins\":");
        write_grouped(&mut out, &self.joins);
        out.push_str(",\"leaves\":");
        write_grouped(&mut out, &self.leaves);
        out.push('}');
        out
    }
}

/// Appends a presence state, `{"key": {"metas": [...]}, ...}`, from keys and their metas.
pub(crate) fn write_state<'a, M>(out: &mut String, groups: impl Iterator<Item = (&'a str, M)>)
where
    M: Iterator<Item = &'a Meta>,
{
    out.push('{');
    for (i, (key, metas)) in groups.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_key(out, key);
        out.push_str(":{\"metas\":[");
        for (j, meta) in metas.enumerate() {
            if j > 0 {
                out.push(',');
            }
            meta.write_json(out);
        }
        out.push_str("]}");
    }
    out.push('}');
}

/// Appends a presence key as a JSON string.
pub(crate) fn write_key(out: &mut String, key: &str) {
    out.push_str(&serde_json::to_string(key).expect("a string always serializes"));
}

fn write_grouped(out: &mut String, metas: &[(Box<str>, Meta)]) {
    let mut groups: BTreeMap<&str, Vec<&Meta>> = BTreeMap::new();
    for (key, meta) in metas {
        groups.entry(key).or_default().push(meta);
    }
    write_state(out, groups.into_iter().map(|(k, ms)| (k, ms.into_iter())));
}
