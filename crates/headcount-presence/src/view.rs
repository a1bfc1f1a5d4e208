//! [`PresenceView`]: presence as the clients of a channel have been told it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Diff, Meta};

/// The presence state that subscribers hold: the result of the diffs published so far, applied
/// as phoenix.js applies them (joins first, then leaves; metas matched by `phx_ref`).
///
/// When diffs are coalesced, the server's current state runs ahead of what subscribers have
/// heard; a member who joins meanwhile must get *this* state, then the pending diff, so that it
/// learns each presence exactly once.
#[derive(Clone, Debug, Default)]
pub struct PresenceView {
    by_key: BTreeMap<Box<str>, Vec<Meta>>,
    cached_json: Option<Arc<str>>,
}

impl PresenceView {
    /// An empty view.
    pub fn new() -> PresenceView {
        PresenceView::default()
    }

    /// Applies a published diff.
    pub fn apply(&mut self, diff: &Diff) {
        for (key, meta) in &diff.joins {
            let metas = self.by_key.entry(key.clone()).or_default();
            metas.retain(|m| m.phx_ref != meta.phx_ref);
            metas.push(meta.clone());
        }
        for (key, meta) in &diff.leaves {
            if let Some(metas) = self.by_key.get_mut(key) {
                metas.retain(|m| m.phx_ref != meta.phx_ref);
                if metas.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        self.cached_json = None;
    }

    /// The number of metas.
    pub fn meta_count(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// The state as `presence_state` sends it, cached until the next change.
    pub fn state_json(&mut self) -> Arc<str> {
        if let Some(json) = &self.cached_json {
            return json.clone();
        }
        let mut out = String::with_capacity(64 * self.by_key.len() + 2);
        crate::diff::write_state(
            &mut out,
            self.by_key.iter().map(|(k, metas)| (&**k, metas.iter())),
        );
        let json: Arc<str> = Arc::from(out);
        self.cached_json = Some(json.clone());
        json
    }
}
