//! A client's view of a room's presence, kept as phoenix.js keeps it.
//!
//! phoenix.js `Presence` (which realtime-js uses) applies a full `presence_state` with
//! `syncState` and each `presence_diff` with `syncDiff`; diffs that arrive before the first
//! state are buffered and applied right after it (`inPendingSyncState`). `syncDiff` adds the
//! joined metas whose `phx_ref` the key does not have yet and removes the left metas by ref,
//! dropping a key whose last meta left; `syncState` ends with exactly the new state's metas.
//! The same rules read the other protocols' presence (socket.io member lists, Yjs awareness,
//! MUC occupants) with one entry per member.
//!
//! Members of the run are dense numbers, so the view is a vector indexed by member holding the
//! first meta's ref (0 = absent) plus a side table for keys with several metas: 8 bytes per
//! member per view, which keeps 5,000 views of 5,000 members at 200 MB.

use std::collections::HashMap;

use crate::proto::Entry;

/// One client's view of a room.
#[derive(Debug)]
pub struct View {
    first: Vec<u64>,
    more: HashMap<u32, Vec<u64>>,
    present: usize,
    /// Diffs buffered until the first state, when the protocol buffers.
    pending: Option<Vec<(Vec<Entry>, Vec<Entry>)>>,
    /// Entries whose key is not a member of the run (counted, not kept).
    pub strangers: u64,
}

impl View {
    /// An empty view of a room whose members are numbered below `members`. With
    /// `buffer_until_state`, diffs wait for the first full state.
    pub fn new(members: usize, buffer_until_state: bool) -> View {
        View {
            first: vec![0; members],
            more: HashMap::new(),
            present: 0,
            pending: buffer_until_state.then(Vec::new),
            strangers: 0,
        }
    }

    /// How many members the view holds.
    pub fn len(&self) -> usize {
        self.present
    }

    /// Whether the view holds nobody.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Whether `member` is in the view.
    pub fn contains(&self, member: u32) -> bool {
        self.first.get(member as usize).is_some_and(|r| *r != 0)
    }

    /// The refs held for `member`.
    pub fn metas(&self, member: u32) -> Vec<u64> {
        let mut v = Vec::new();
        if let Some(&r) = self.first.get(member as usize).filter(|r| **r != 0) {
            v.push(r);
            v.extend(self.more.get(&member).into_iter().flatten());
        }
        v
    }

    /// Applies a full state (`syncState`), then any buffered diffs.
    pub fn apply_state(&mut self, entries: &[Entry]) {
        self.first.iter_mut().for_each(|r| *r = 0);
        self.more.clear();
        self.present = 0;
        self.join(entries);
        if let Some(pending) = self.pending.take() {
            for (joins, leaves) in pending {
                self.join(&joins);
                self.leave(&leaves);
            }
        }
    }

    /// Applies a diff (`syncDiff`), or buffers it until the first state.
    pub fn apply_diff(&mut self, joins: Vec<Entry>, leaves: Vec<Entry>) {
        if let Some(pending) = &mut self.pending {
            pending.push((joins, leaves));
            return;
        }
        self.join(&joins);
        self.leave(&leaves);
    }

    fn slot(&mut self, e: &Entry) -> Option<(u32, usize)> {
        match e.member {
            Some(m) if (m as usize) < self.first.len() => Some((m, m as usize)),
            _ => {
                self.strangers += 1;
                None
            }
        }
    }

    fn join(&mut self, entries: &[Entry]) {
        for e in entries {
            let Some((m, i)) = self.slot(e) else { continue };
            let first = self.first[i];
            if first == 0 {
                self.first[i] = e.meta;
                self.present += 1;
            } else if first != e.meta {
                let more = self.more.entry(m).or_default();
                if !more.contains(&e.meta) {
                    more.push(e.meta);
                }
            }
        }
    }

    fn leave(&mut self, entries: &[Entry]) {
        for e in entries {
            let Some((m, i)) = self.slot(e) else { continue };
            if self.first[i] == 0 {
                continue;
            }
            if self.first[i] == e.meta {
                match self.more.get_mut(&m).and_then(|v| v.pop()) {
                    Some(next) => self.first[i] = next,
                    None => {
                        self.first[i] = 0;
                        self.present -= 1;
                    }
                }
            } else if let Some(v) = self.more.get_mut(&m) {
                v.retain(|r| *r != e.meta);
            }
            if self.more.get(&m).is_some_and(Vec::is_empty) {
                self.more.remove(&m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(member: u32, meta: u64) -> Entry {
        Entry {
            member: Some(member),
            meta,
        }
    }

    #[test]
    fn diffs_before_the_first_state_wait_for_it() {
        let mut v = View::new(10, true);
        v.apply_diff(vec![e(3, 30)], vec![]);
        assert_eq!(v.len(), 0, "buffered");
        v.apply_state(&[e(1, 10), e(2, 20)]);
        assert_eq!(v.len(), 3);
        assert!(v.contains(3));
        v.apply_diff(vec![], vec![e(1, 10)]);
        assert_eq!(v.len(), 2);
        assert!(!v.contains(1));
    }

    #[test]
    fn a_leave_buffered_before_the_state_removes_what_the_state_brought() {
        // The state was taken before member 2 left, the diff says it left: phoenix.js applies
        // the state and then the pending leave.
        let mut v = View::new(10, true);
        v.apply_diff(vec![], vec![e(2, 20)]);
        v.apply_state(&[e(1, 10), e(2, 20)]);
        assert_eq!(v.len(), 1);
        assert!(!v.contains(2));
    }

    #[test]
    fn keys_with_several_metas_leave_meta_by_meta() {
        let mut v = View::new(10, false);
        v.apply_diff(vec![e(4, 40), e(4, 41)], vec![]);
        v.apply_diff(vec![e(4, 41)], vec![]);
        assert_eq!(v.len(), 1);
        assert_eq!(v.metas(4), [40, 41]);
        v.apply_diff(vec![], vec![e(4, 40)]);
        assert_eq!(v.metas(4), [41]);
        assert_eq!(v.len(), 1);
        v.apply_diff(vec![], vec![e(4, 41)]);
        assert_eq!(v.len(), 0);
        assert!(v.is_empty());
    }

    #[test]
    fn an_update_is_a_join_and_a_leave_in_one_diff() {
        // §5.5: joins {K: new meta with phx_ref_prev}, leaves {K: old meta}.
        let mut v = View::new(10, false);
        v.apply_diff(vec![e(5, 50)], vec![]);
        v.apply_diff(vec![e(5, 51)], vec![e(5, 50)]);
        assert_eq!(v.metas(5), [51]);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn a_state_replaces_everything() {
        let mut v = View::new(10, false);
        v.apply_diff(vec![e(1, 10), e(2, 20), e(2, 21)], vec![]);
        v.apply_state(&[e(2, 21), e(3, 30)]);
        assert_eq!(v.len(), 2);
        assert_eq!(v.metas(2), [21]);
        assert!(!v.contains(1));
    }

    #[test]
    fn strangers_are_counted_not_kept() {
        let mut v = View::new(2, false);
        v.apply_diff(
            vec![
                e(5, 1),
                Entry {
                    member: None,
                    meta: 3,
                },
            ],
            vec![],
        );
        assert_eq!((v.len(), v.strangers), (0, 2));
    }
}
