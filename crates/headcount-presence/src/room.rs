//! [`Room`]: one channel's presence together with what its members have been told, the changes
//! not yet sent, and when to send them.
//!
//! A room decides; the caller performs. Every method that changes the presence takes the time
//! (milliseconds on any monotonic clock) and the number of members who would receive a diff, and
//! returns a [`Change`]: the diff to send now, if any, and whether the room has just started
//! waiting for a [`Room::flush`]. Nothing here reads a clock or sends anything, so the rules are
//! tested on a virtual clock (`tests/room.rs`).
//!
//! **Coalescing.** Sending a diff costs one frame per member. A room with fewer members than
//! [`Coalesce::min_members`] sends every change at once, as Supabase does. A larger room whose
//! presence was quiet for [`Coalesce::window_ms`] also sends at once; changes that follow inside
//! the window are merged (a join and a leave of one meta cancel out) and sent together by the
//! flush that ends it. A join storm in a large room then costs one frame per member per window.
//!
//! **Joiners learn each presence once.** While changes wait, the members have been told the
//! presence minus the pending changes. A member who joins then gets that state
//! ([`Room::joiner_state`]) and the pending changes with everyone else.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use crate::{ChannelPresence, Diff, Meta, Payload, PhxRef, PresenceView, RefGenerator};

/// When a room merges changes instead of sending each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalesce {
    /// The window: a room that sent a diff less than this long ago waits for its end. `0` sends
    /// every change at once.
    pub window_ms: u64,
    /// Rooms with fewer members than this send every change at once. `0` coalesces every room.
    pub min_members: usize,
}

impl Coalesce {
    /// Every change is sent at once.
    pub const NEVER: Coalesce = Coalesce {
        window_ms: 0,
        min_members: 0,
    };
}

/// What a change asks of the caller.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Change {
    /// The diff to send to the members now.
    pub send: Option<Diff>,
    /// Set when the room has just started waiting: call [`Room::flush`] at (or after) this time.
    pub flush_at: Option<u64>,
}

/// What a flush asks of the caller.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Flush {
    /// Send this diff to the members; nothing waits any more.
    Send(Diff),
    /// The window has not ended: flush again at this time.
    Wait(u64),
    /// Nothing waits.
    Idle,
}

/// One channel's presence, what its members have been told and what is still to tell them.
#[derive(Debug)]
pub struct Room<O> {
    rule: Coalesce,
    presence: ChannelPresence<O>,
    /// What the members have been told: `presence` minus `pending`. Kept only while coalescing
    /// can happen (a window above zero).
    told: PresenceView,
    /// Changes not yet sent, merged.
    pending: Diff,
    /// When the last diff went out; `None` before the first.
    last_sent: Option<u64>,
    /// Whether the caller has been asked for a flush that has not yet sent or found nothing.
    waiting: bool,
    refs: RefGenerator,
}

impl<O: Clone + Eq + Hash> Room<O> {
    /// An empty room. `node` tells this node's `phx_ref`s apart from other nodes'.
    pub fn new(rule: Coalesce, node: u16) -> Room<O> {
        Room {
            rule,
            presence: ChannelPresence::new(),
            told: PresenceView::new(),
            pending: Diff::default(),
            last_sent: None,
            waiting: false,
            refs: RefGenerator::new(node),
        }
    }

    /// Tracks `owner` under `key` with `payload` (see [`ChannelPresence::track`]); a new meta is
    /// named with a fresh `phx_ref` from `unix_ns`, the wall-clock time in nanoseconds. `None`
    /// when nothing changed (an identical re-track).
    pub fn track(
        &mut self,
        owner: O,
        key: &str,
        payload: Payload,
        unix_ns: u64,
        now: u64,
        members: usize,
    ) -> Option<Change> {
        if let Some((old_key, old)) = self.presence.get(&owner)
            && old_key == key
            && old.payload == payload
        {
            return None;
        }
        let phx_ref: PhxRef = self.refs.next(unix_ns);
        let diff = self.presence.track(owner, key, payload, phx_ref)?;
        Some(self.changed(diff, now, members))
    }

    /// Sets `owner`'s entry to exactly `entry`, as a replica does (see [`ChannelPresence::set`]).
    pub fn set(
        &mut self,
        owner: O,
        entry: Option<(&str, Meta)>,
        now: u64,
        members: usize,
    ) -> Option<Change> {
        let diff = self.presence.set(owner, entry)?;
        Some(self.changed(diff, now, members))
    }

    /// Removes `owner`'s meta; `None` if it had none.
    pub fn untrack(&mut self, owner: &O, now: u64, members: usize) -> Option<Change> {
        let diff = self.presence.untrack(owner)?;
        Some(self.changed(diff, now, members))
    }

    /// Replaces every entry whose owner `replaced` selects (another node's, after a resync) with
    /// `entries`, as one change. `None` when that changes nothing.
    pub fn replace(
        &mut self,
        replaced: impl Fn(&O) -> bool,
        entries: impl IntoIterator<Item = (O, Box<str>, Meta)>,
        now: u64,
        members: usize,
    ) -> Option<Change> {
        let entries: Vec<(O, Box<str>, Meta)> = entries.into_iter().collect();
        let fresh: HashSet<&O> = entries.iter().map(|(owner, _, _)| owner).collect();
        let stale: Vec<O> = self
            .presence
            .owners()
            .filter(|o| replaced(o) && !fresh.contains(o))
            .cloned()
            .collect();
        drop(fresh);
        let mut diff = Diff::default();
        for owner in stale {
            if let Some(d) = self.presence.untrack(&owner) {
                diff.merge(d);
            }
        }
        for (owner, key, meta) in entries {
            if let Some(d) = self.presence.set(owner, Some((&key, meta))) {
                diff.merge(d);
            }
        }
        (!diff.is_empty()).then(|| self.changed(diff, now, members))
    }

    fn changed(&mut self, diff: Diff, now: u64, members: usize) -> Change {
        let window = self.rule.window_ms;
        if window == 0 {
            return Change {
                send: Some(diff),
                flush_at: None,
            };
        }
        let small = members < self.rule.min_members;
        let quiet = self.last_sent.is_none_or(|last| now >= last + window);
        if small || (self.pending.is_empty() && quiet) {
            // Whatever waits goes first, merged, so the order of changes is kept.
            let mut send = std::mem::take(&mut self.pending);
            send.merge(diff);
            self.told.apply(&send);
            self.last_sent = Some(now);
            return Change {
                send: (!send.is_empty()).then_some(send),
                flush_at: None,
            };
        }
        self.pending.merge(diff);
        if self.waiting {
            return Change::default();
        }
        self.waiting = true;
        Change {
            send: None,
            flush_at: Some(self.last_sent.map_or(now, |last| last + window)),
        }
    }

    /// Sends what waits if the window has ended.
    pub fn flush(&mut self, now: u64) -> Flush {
        if self.pending.is_empty() {
            self.waiting = false;
            return Flush::Idle;
        }
        if let Some(last) = self.last_sent
            && now < last + self.rule.window_ms
        {
            return Flush::Wait(last + self.rule.window_ms);
        }
        let diff = std::mem::take(&mut self.pending);
        self.told.apply(&diff);
        self.last_sent = Some(now);
        self.waiting = false;
        Flush::Send(diff)
    }

    /// The `presence_state` a member who joins now gets: what the others have been told.
    pub fn joiner_state(&mut self) -> Arc<str> {
        if self.rule.window_ms == 0 || self.pending.is_empty() {
            self.presence.state_json()
        } else {
            self.told.state_json()
        }
    }

    /// The presence itself, changes not yet sent included.
    pub fn presence(&self) -> &ChannelPresence<O> {
        &self.presence
    }

    /// The presence as `presence_state` sends it, changes not yet sent included.
    pub fn state_json(&mut self) -> Arc<str> {
        self.presence.state_json()
    }

    /// Whether changes wait for a flush.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
