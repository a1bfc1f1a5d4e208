//! Presence sync: how a client turns `presence_state` and `presence_diff` into its view of who
//! is there, with the semantics of phoenix.js `presence.js` (which realtime-js uses):
//!
//! * the view is "pending" until the `presence_state` of the **current** join arrives; diffs
//!   that come before it are buffered and applied, in order, right after it;
//! * a `presence_state` is compared with the current view per key and per `phx_ref`, and the
//!   difference is applied as one diff (so a rejoin reports who left and who came meanwhile);
//! * a diff applies its **joins first, then its leaves**: a join replaces the key's metas with
//!   the joined ones, keeping the existing metas whose `phx_ref` is not among them in front; a
//!   leave removes the metas with the left `phx_refs`, and a key with no metas left disappears;
//! * so an **update** (one diff with a join carrying `phx_ref_prev` and a leave of the old ref)
//!   reports a join, then a leave, for the same key, then one sync.
//!
//! [`sync_state`] and [`sync_diff`] are the two pure functions; [`PresenceSync`] adds the
//! pending buffer and the join bookkeeping.
//!
//! ```
//! use headcount_client::state::sync::{PresenceDiff, PresenceSync, presences_from_json};
//! use headcount_client::PresenceEvent;
//!
//! let mut sync = PresenceSync::new();
//! let mut events = Vec::new();
//! // A diff that arrives before the state of join "3" waits for it.
//! let diff = PresenceDiff::from_json(r#"{"joins":{"bob":{"metas":[{"phx_ref":"b1"}]}},"leaves":{}}"#).unwrap();
//! sync.handle_diff("3", diff, &mut events);
//! assert!(events.is_empty());
//! let state = presences_from_json(r#"{"alice":{"metas":[{"phx_ref":"a1","status":"online"}]}}"#).unwrap();
//! sync.handle_state("3", state, &mut events);
//! assert_eq!(sync.state().count(), 2);
//! assert!(matches!(events.last(), Some(PresenceEvent::Sync(s)) if s.count() == 2));
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// One meta as the server sends it: the tracked payload plus its `phx_ref` (and `phx_ref_prev`
/// when it came from an update).
///
/// ```
/// use headcount_client::state::sync::Meta;
/// use serde_json::json;
///
/// let meta = Meta::from_value(json!({"phx_ref": "B", "phx_ref_prev": "A", "status": "away"})).unwrap();
/// assert_eq!((meta.phx_ref.as_str(), meta.phx_ref_prev.as_deref()), ("B", Some("A")));
/// assert_eq!(meta.to_public().payload["status"], "away");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// The unique reference of this meta.
    pub phx_ref: String,
    /// The reference of the meta this one replaced, on updates.
    pub phx_ref_prev: Option<String>,
    /// The tracked payload, without `phx_ref` and `phx_ref_prev`.
    pub fields: Map<String, Value>,
}

impl Meta {
    /// Reads a meta object; anything that is not an object is `None`. A missing `phx_ref` reads
    /// as an empty string.
    pub fn from_value(value: Value) -> Option<Meta> {
        let Value::Object(mut fields) = value else {
            return None;
        };
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let phx_ref = text(fields.remove("phx_ref")).unwrap_or_default();
        let phx_ref_prev = text(fields.remove("phx_ref_prev"));
        Some(Meta {
            phx_ref,
            phx_ref_prev,
            fields,
        })
    }

    /// The public form: `presence_ref` and the payload.
    pub fn to_public(&self) -> PresenceMeta {
        PresenceMeta {
            presence_ref: self.phx_ref.clone(),
            payload: self.fields.clone(),
        }
    }
}

/// Presences keyed by presence key, as the server groups them (`{key: {"metas": [...]}}`).
pub type Presences = BTreeMap<String, Vec<Meta>>;

/// Parses the JSON text of a `presence_state` payload (`{key: {"metas": [...]}}`).
pub fn presences_from_json(text: &str) -> Result<Presences, serde_json::Error> {
    serde_json::from_str::<Value>(text).map(presences_from_value)
}

/// Reads `{key: {"metas": [...]}}` leniently: keys whose value is not of that shape have no
/// metas and are left out, as are metas that are not objects.
pub fn presences_from_value(value: Value) -> Presences {
    let Value::Object(map) = value else {
        return Presences::new();
    };
    map.into_iter()
        .filter_map(|(key, entry)| {
            let Value::Object(mut entry) = entry else {
                return None;
            };
            let Some(Value::Array(metas)) = entry.remove("metas") else {
                return None;
            };
            Some((
                key,
                metas.into_iter().filter_map(Meta::from_value).collect(),
            ))
        })
        .collect()
}

/// The payload of a `presence_diff`.
///
/// ```
/// use headcount_client::state::sync::PresenceDiff;
///
/// let diff = PresenceDiff::from_json(r#"{"joins":{},"leaves":{"bob":{"metas":[{"phx_ref":"b1"}]}}}"#).unwrap();
/// assert!(diff.joins.is_empty());
/// assert_eq!(diff.leaves["bob"][0].phx_ref, "b1");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceDiff {
    /// Metas that joined, by key.
    pub joins: Presences,
    /// Metas that left, by key.
    pub leaves: Presences,
}

impl PresenceDiff {
    /// Parses `{"joins": {...}, "leaves": {...}}`; a missing side is empty.
    pub fn from_json(text: &str) -> Result<PresenceDiff, serde_json::Error> {
        serde_json::from_str::<Value>(text).map(PresenceDiff::from_value)
    }

    /// Reads a diff from a JSON value, leniently.
    pub fn from_value(value: Value) -> PresenceDiff {
        let mut value = value;
        let mut side = |name: &str| {
            value
                .get_mut(name)
                .map(Value::take)
                .map(presences_from_value)
                .unwrap_or_default()
        };
        PresenceDiff {
            joins: side("joins"),
            leaves: side("leaves"),
        }
    }
}

/// One presence of a key as the app sees it (realtime-js `presenceState()`): the tracked
/// payload and `presence_ref` (the server's `phx_ref`). Serializes as one flat object,
/// `{"presence_ref": "...", ...payload}`.
///
/// ```
/// use headcount_client::PresenceMeta;
/// use serde_json::json;
///
/// let meta = PresenceMeta { presence_ref: "a1".into(), payload: json!({"status": "online"}).as_object().unwrap().clone() };
/// assert_eq!(serde_json::to_value(&meta).unwrap(), json!({"presence_ref": "a1", "status": "online"}));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresenceMeta {
    /// The server's reference of this presence (`phx_ref`).
    pub presence_ref: String,
    /// What the member tracked.
    #[serde(flatten)]
    pub payload: Map<String, Value>,
}

/// A snapshot of a channel's presence: presence key → presences (one per connection that
/// tracked itself under that key). Cheap to clone.
///
/// Snapshots are copy-on-write: a snapshot shares each key's presences with the view it was
/// taken from and with the snapshots after it, so a diff copies only the keys it touches (and
/// the map's spine of keys and pointers), however many people are present. A snapshot never
/// changes once taken.
///
/// ```
/// use headcount_client::PresenceState;
///
/// let empty = PresenceState::default();
/// assert_eq!(empty.count(), 0);
/// assert!(!empty.is_synced());
/// assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceState {
    presences: Arc<View>,
    synced: bool,
}

/// The public view: each key's presences behind their own `Arc`, so that snapshots share the
/// keys a diff did not touch.
type View = BTreeMap<Arc<str>, Arc<[PresenceMeta]>>;

impl PresenceState {
    /// A snapshot of `presences`.
    pub fn new(presences: BTreeMap<String, Vec<PresenceMeta>>, synced: bool) -> PresenceState {
        let presences = presences
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Arc::from(v)))
            .collect();
        PresenceState {
            presences: Arc::new(presences),
            synced,
        }
    }

    /// The number of distinct presence keys: the number of people (or devices, apps, bots)
    /// present, however many connections each has.
    pub fn count(&self) -> usize {
        self.presences.len()
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.presences.is_empty()
    }

    /// Whether the view reflects the `presence_state` of the current join. It is `false`
    /// before the first sync and between a rejoin and its `presence_state` (the view then still
    /// shows the presences of the previous join).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The presences of `key`.
    pub fn get(&self, key: &str) -> Option<&[PresenceMeta]> {
        self.presences.get(key).map(|m| &**m)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.presences.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.presences.keys().map(|k| &**k)
    }

    /// Every key with its presences, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[PresenceMeta])> {
        self.presences.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl Serialize for PresenceState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// What presence sync reports, in the order it happens: for one `presence_state` or
/// `presence_diff`, every join, then every leave, then one sync.
///
/// ```
/// use headcount_client::PresenceEvent;
///
/// let event = PresenceEvent::Join { key: "alice".into(), current: vec![], new: vec![] };
/// assert_eq!(event.key(), Some("alice"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum PresenceEvent {
    /// Presences joined under `key`.
    Join {
        /// The presence key.
        key: String,
        /// The key's presences before the join (empty for a newcomer).
        current: Vec<PresenceMeta>,
        /// The presences that joined.
        new: Vec<PresenceMeta>,
    },
    /// Presences left `key`.
    Leave {
        /// The presence key.
        key: String,
        /// The key's presences that remain (empty when the key is gone).
        current: Vec<PresenceMeta>,
        /// The presences that left.
        left: Vec<PresenceMeta>,
    },
    /// The state after a `presence_state` or a `presence_diff` was applied.
    Sync(PresenceState),
}

impl PresenceEvent {
    /// The key of a join or leave.
    pub fn key(&self) -> Option<&str> {
        match self {
            PresenceEvent::Join { key, .. } | PresenceEvent::Leave { key, .. } => Some(key),
            PresenceEvent::Sync(_) => None,
        }
    }
}

fn public(metas: &[Meta]) -> Vec<PresenceMeta> {
    metas.iter().map(Meta::to_public).collect()
}

/// phoenix.js `syncState`: the diff that turns `state` into `new_state` (compared per key and
/// per `phx_ref`), applied with [`sync_diff`].
pub fn sync_state(state: &mut Presences, new_state: Presences, events: &mut Vec<PresenceEvent>) {
    let mut diff = PresenceDiff::default();
    for (key, metas) in state.iter() {
        if !new_state.contains_key(key) {
            diff.leaves.insert(key.clone(), metas.clone());
        }
    }
    for (key, new_metas) in new_state {
        match state.get(&key) {
            Some(current) => {
                let joined: Vec<Meta> = new_metas
                    .iter()
                    .filter(|m| !current.iter().any(|c| c.phx_ref == m.phx_ref))
                    .cloned()
                    .collect();
                let left: Vec<Meta> = current
                    .iter()
                    .filter(|c| !new_metas.iter().any(|m| m.phx_ref == c.phx_ref))
                    .cloned()
                    .collect();
                if !joined.is_empty() {
                    diff.joins.insert(key.clone(), joined);
                }
                if !left.is_empty() {
                    diff.leaves.insert(key, left);
                }
            }
            None => {
                diff.joins.insert(key, new_metas);
            }
        }
    }
    sync_diff(state, diff, events);
}

/// phoenix.js `syncDiff`: joins first (the joined metas, after the key's other metas), then
/// leaves (a key without metas is removed), reporting a [`PresenceEvent::Join`] or
/// [`PresenceEvent::Leave`] for each key. Leaves of keys that are not present are ignored.
pub fn sync_diff(state: &mut Presences, diff: PresenceDiff, events: &mut Vec<PresenceEvent>) {
    for (key, new_metas) in diff.joins {
        let current = state.remove(&key);
        let mut metas: Vec<Meta> = match &current {
            Some(current) => current
                .iter()
                .filter(|c| !new_metas.iter().any(|m| m.phx_ref == c.phx_ref))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        metas.extend(new_metas.iter().cloned());
        state.insert(key.clone(), metas);
        events.push(PresenceEvent::Join {
            key,
            current: current.as_deref().map(public).unwrap_or_default(),
            new: public(&new_metas),
        });
    }
    for (key, left_metas) in diff.leaves {
        let Some(current) = state.get_mut(&key) else {
            continue;
        };
        current.retain(|c| !left_metas.iter().any(|m| m.phx_ref == c.phx_ref));
        let remaining = public(current);
        if current.is_empty() {
            state.remove(&key);
        }
        events.push(PresenceEvent::Leave {
            key,
            current: remaining,
            left: public(&left_metas),
        });
    }
}

/// The presence view of one channel, with phoenix.js's pending-state rules (see the
/// [module](self) docs for an example with a buffered diff).
///
/// ```
/// use headcount_client::state::sync::{PresenceDiff, PresenceSync, presences_from_json};
///
/// let mut sync = PresenceSync::new();
/// let mut events = Vec::new();
/// sync.handle_state("1", presences_from_json(r#"{"a":{"metas":[{"phx_ref":"a1"}]}}"#).unwrap(), &mut events);
/// assert!(!sync.is_pending(Some("1")));
/// assert!(sync.is_pending(Some("2")), "after a rejoin, diffs wait for the new state");
/// ```
#[derive(Clone, Debug, Default)]
pub struct PresenceSync {
    state: Presences,
    /// `state` as the app sees it, kept up to date key by key: snapshots share it, and the
    /// keys a diff did not touch are never copied again.
    view: Arc<View>,
    /// Diffs that arrived before the `presence_state` of the current join, in order.
    pending: Vec<PresenceDiff>,
    /// The join whose `presence_state` the view reflects.
    join_ref: Option<String>,
}

impl PresenceSync {
    /// An empty, pending view.
    pub fn new() -> PresenceSync {
        PresenceSync::default()
    }

    /// Whether diffs are being buffered: no `presence_state` has arrived for the channel's
    /// current join (`channel_join_ref`, `None` when the channel is not joined).
    pub fn is_pending(&self, channel_join_ref: Option<&str>) -> bool {
        match (&self.join_ref, channel_join_ref) {
            (Some(mine), Some(current)) => mine != current,
            _ => true,
        }
    }

    /// A `presence_state` arrived while the channel's join is `channel_join_ref`: syncs the view
    /// to it, applies the buffered diffs, and reports a sync.
    pub fn handle_state(
        &mut self,
        channel_join_ref: &str,
        new_state: Presences,
        events: &mut Vec<PresenceEvent>,
    ) {
        self.join_ref = Some(channel_join_ref.to_owned());
        let first = events.len();
        sync_state(&mut self.state, new_state, events);
        for diff in std::mem::take(&mut self.pending) {
            sync_diff(&mut self.state, diff, events);
        }
        self.refresh_view(&events[first..]);
        events.push(PresenceEvent::Sync(self.state()));
    }

    /// A `presence_diff` arrived while the channel's join is `channel_join_ref`: applied and
    /// reported at once, or buffered while pending.
    pub fn handle_diff(
        &mut self,
        channel_join_ref: &str,
        diff: PresenceDiff,
        events: &mut Vec<PresenceEvent>,
    ) {
        if self.is_pending(Some(channel_join_ref)) {
            self.pending.push(diff);
            return;
        }
        let first = events.len();
        sync_diff(&mut self.state, diff, events);
        self.refresh_view(&events[first..]);
        events.push(PresenceEvent::Sync(self.state()));
    }

    /// Forgets buffered diffs (they belonged to a join that is over). The view is kept, as
    /// phoenix.js keeps it, until the next `presence_state` replaces it.
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    /// The raw view.
    pub fn presences(&self) -> &Presences {
        &self.state
    }

    /// Copies into the view the keys that `events` (the joins and leaves of what was just
    /// applied) touched: [`sync_diff`] reports every key it changes, and changes no other.
    /// If a snapshot still holds the view, only the map's spine is copied, not the presences.
    fn refresh_view(&mut self, events: &[PresenceEvent]) {
        if events.is_empty() {
            return;
        }
        let view = Arc::make_mut(&mut self.view);
        for key in events.iter().filter_map(PresenceEvent::key) {
            match (self.state.get(key), view.get_mut(key)) {
                (Some(metas), Some(slot)) => *slot = Arc::from(public(metas)),
                (Some(metas), None) => {
                    view.insert(Arc::from(key), Arc::from(public(metas)));
                }
                (None, _) => {
                    view.remove(key);
                }
            }
        }
    }

    /// A snapshot of the view, as the app sees it: it shares the view (no copy), and keeps
    /// its content when later diffs are applied.
    pub fn state(&self) -> PresenceState {
        PresenceState {
            presences: self.view.clone(),
            synced: self.join_ref.is_some(),
        }
    }

    /// The snapshot, marked synced only if the view belongs to `channel_join_ref`.
    pub fn state_for(&self, channel_join_ref: Option<&str>) -> PresenceState {
        let mut state = self.state();
        state.synced = !self.is_pending(channel_join_ref);
        state
    }
}

#[cfg(test)]
mod tests;
