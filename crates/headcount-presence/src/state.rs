//! [`ChannelPresence`]: who is present in one channel.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use crate::{Diff, Payload, PhxRef};

/// One member's entry under a key: what it tracked and its unique reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// This meta's unique reference.
    pub phx_ref: PhxRef,
    /// The reference of the meta this one replaced, when it came from an update.
    pub phx_ref_prev: Option<PhxRef>,
    /// What the member tracked.
    pub payload: Payload,
}

impl Meta {
    /// Appends the meta's JSON: the payload's members plus `phx_ref` (and `phx_ref_prev`).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"phx_ref\":\"");
        out.push_str(self.phx_ref.as_str());
        out.push('"');
        if let Some(prev) = self.phx_ref_prev {
            out.push_str(",\"phx_ref_prev\":\"");
            out.push_str(prev.as_str());
            out.push('"');
        }
        let members = self.payload.members();
        if !members.is_empty() {
            out.push(',');
            out.push_str(members);
        }
        out.push('}');
    }
}

#[derive(Clone, Debug)]
struct Entry<O> {
    owner: O,
    meta: Meta,
}

/// The presence state of one channel.
///
/// Each owner (a member of the channel: one socket's join) holds at most one meta, under the
/// presence key it joined with; several owners may share a key. `O` identifies owners.
#[derive(Clone, Debug)]
pub struct ChannelPresence<O> {
    /// key → metas, in the order they were tracked.
    by_key: BTreeMap<Box<str>, Vec<Entry<O>>>,
    /// owner → the key it is tracked under.
    owners: HashMap<O, Box<str>>,
    /// The encoded state, kept until the next change.
    cached_json: Option<Arc<str>>,
}

impl<O> Default for ChannelPresence<O> {
    fn default() -> Self {
        ChannelPresence {
            by_key: BTreeMap::new(),
            owners: HashMap::new(),
            cached_json: None,
        }
    }
}

impl<O: Clone + Eq + Hash> ChannelPresence<O> {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks `owner` under `key` with `payload`; `new_ref` names the meta if one is created.
    ///
    /// * not tracked yet: a join;
    /// * tracked under `key` with the same payload: nothing (`None`);
    /// * tracked under `key` with another payload: an update, one diff with the new meta as a
    ///   join (its `phx_ref_prev` naming the old one) and the old meta as a leave;
    /// * tracked under another key: a leave of the old key and a join of the new one.
    pub fn track(
        &mut self,
        owner: O,
        key: &str,
        payload: Payload,
        new_ref: PhxRef,
    ) -> Option<Diff> {
        let prev = match self.get(&owner) {
            Some((old_key, old)) if old_key == key => {
                if old.payload == payload {
                    return None;
                }
                Some(old.phx_ref)
            }
            _ => None,
        };
        self.set(
            owner,
            Some((
                key,
                Meta {
                    phx_ref: new_ref,
                    phx_ref_prev: prev,
                    payload,
                },
            )),
        )
    }

    /// Sets `owner`'s entry to exactly `entry` (or removes it with `None`), as a replica does
    /// with changes made elsewhere. Returns what changed: nothing when the owner already holds a
    /// meta with the same `phx_ref` under the same key.
    pub fn set(&mut self, owner: O, entry: Option<(&str, Meta)>) -> Option<Diff> {
        let Some((key, meta)) = entry else {
            return self.untrack(&owner);
        };
        let mut diff = Diff::default();
        if let Some(old_key) = self.owners.get(&owner) {
            if &**old_key == key {
                let entries = self.by_key.get_mut(key).expect("owners and by_key agree");
                let slot = entries
                    .iter_mut()
                    .find(|e| e.owner == owner)
                    .expect("owner has an entry");
                if slot.meta.phx_ref == meta.phx_ref {
                    return None;
                }
                let old = std::mem::replace(&mut slot.meta, meta.clone());
                diff.joins.push((key.into(), meta));
                diff.leaves.push((key.into(), old));
                self.cached_json = None;
                return Some(diff);
            }
            if let Some(left) = self.untrack(&owner) {
                diff = left;
            }
        }
        self.by_key.entry(key.into()).or_default().push(Entry {
            owner: owner.clone(),
            meta: meta.clone(),
        });
        self.owners.insert(owner, key.into());
        diff.joins.push((key.into(), meta));
        self.cached_json = None;
        Some(diff)
    }

    /// Removes `owner`'s meta: a leave, or `None` if it was not tracked.
    pub fn untrack(&mut self, owner: &O) -> Option<Diff> {
        let key = self.owners.remove(owner)?;
        let entries = self.by_key.get_mut(&key).expect("owners and by_key agree");
        let at = entries
            .iter()
            .position(|e| e.owner == *owner)
            .expect("owner has an entry");
        let entry = entries.remove(at);
        if entries.is_empty() {
            self.by_key.remove(&key);
        }
        self.cached_json = None;
        Some(Diff {
            joins: Vec::new(),
            leaves: vec![(key, entry.meta)],
        })
    }

    /// The meta `owner` is tracked with, and its key.
    pub fn get(&self, owner: &O) -> Option<(&str, &Meta)> {
        let key = self.owners.get(owner)?;
        let entry = self.by_key.get(key)?.iter().find(|e| e.owner == *owner)?;
        Some((key, &entry.meta))
    }

    /// Every owner with an entry.
    pub fn owners(&self) -> impl Iterator<Item = &O> {
        self.owners.keys()
    }

    /// The number of distinct keys present.
    pub fn key_count(&self) -> usize {
        self.by_key.len()
    }

    /// The number of metas (tracked members).
    pub fn meta_count(&self) -> usize {
        self.owners.len()
    }

    /// Whether nobody is tracked.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Every key with its metas, keys sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &Meta>)> {
        self.by_key
            .iter()
            .map(|(k, v)| (&**k, v.iter().map(|e| &e.meta)))
    }

    /// The state as `presence_state` sends it: `{"key": {"metas": [...]}, ...}`. Encoded once
    /// and cached until the state changes.
    pub fn state_json(&mut self) -> Arc<str> {
        if let Some(json) = &self.cached_json {
            return json.clone();
        }
        let mut out = String::with_capacity(64 * self.owners.len() + 2);
        crate::diff::write_state(&mut out, self.iter());
        let json: Arc<str> = Arc::from(out);
        self.cached_json = Some(json.clone());
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u16) -> PhxRef {
        PhxRef::from_parts(1, 0, n)
    }

    fn p(json: &str) -> Payload {
        Payload::from_json(json).unwrap()
    }

    #[test]
    fn track_update_retrack_untrack() {
        let mut s = ChannelPresence::new();
        let join = s.track(1, "alice", p(r#"{"user":"alice"}"#), r(1)).unwrap();
        assert_eq!(
            join.to_json(),
            format!(
                r#"{{"joins":{{"alice":{{"metas":[{{"phx_ref":"{}","user":"alice"}}]}}}},"leaves":{{}}}}"#,
                r(1)
            )
        );
        assert_eq!(s.track(1, "alice", p(r#"{"user":"alice"}"#), r(2)), None);
        let update = s
            .track(1, "alice", p(r#"{"status":"away","user":"alice"}"#), r(3))
            .unwrap();
        assert_eq!(
            update.to_json(),
            format!(
                r#"{{"joins":{{"alice":{{"metas":[{{"phx_ref":"{n}","phx_ref_prev":"{o}","status":"away","user":"alice"}}]}}}},"leaves":{{"alice":{{"metas":[{{"phx_ref":"{o}","user":"alice"}}]}}}}}}"#,
                n = r(3),
                o = r(1)
            )
        );
        let leave = s.untrack(&1).unwrap();
        assert_eq!(leave.leaves.len(), 1);
        assert_eq!(leave.leaves[0].1.phx_ref, r(3));
        assert!(s.is_empty());
        assert_eq!(s.untrack(&1), None);
        let again = s.track(1, "alice", p("{}"), r(4)).unwrap();
        assert_eq!(
            again.joins[0].1.phx_ref_prev, None,
            "a track after an untrack is a fresh join"
        );
    }

    #[test]
    fn owners_share_keys_and_state_is_grouped() {
        let mut s = ChannelPresence::new();
        s.track(1, "bob", p(r#"{"tab":1}"#), r(1));
        s.track(2, "bob", p(r#"{"tab":2}"#), r(2));
        s.track(3, "amy", Payload::empty(), r(3));
        assert_eq!((s.key_count(), s.meta_count()), (2, 3));
        assert_eq!(
            &*s.state_json(),
            format!(
                r#"{{"amy":{{"metas":[{{"phx_ref":"{}"}}]}},"bob":{{"metas":[{{"phx_ref":"{}","tab":1}},{{"phx_ref":"{}","tab":2}}]}}}}"#,
                r(3),
                r(1),
                r(2)
            )
        );
        s.untrack(&1);
        assert_eq!(s.key_count(), 2);
        assert_eq!(s.get(&2).unwrap().0, "bob");
        assert!(!s.state_json().contains(r(1).as_str()));
    }

    #[test]
    fn changing_key_is_a_leave_and_a_join() {
        let mut s = ChannelPresence::new();
        s.track(1, "a", Payload::empty(), r(1));
        let d = s.track(1, "b", Payload::empty(), r(2)).unwrap();
        assert_eq!((d.joins[0].0.as_ref(), d.leaves[0].0.as_ref()), ("b", "a"));
        assert_eq!(s.key_count(), 1);
    }

    #[test]
    fn keys_are_json_escaped() {
        let mut s = ChannelPresence::new();
        s.track(1, "a\"b\\c", Payload::empty(), r(1));
        let v: serde_json::Value = serde_json::from_str(&s.state_json()).unwrap();
        assert!(v.get("a\"b\\c").is_some());
    }
}
