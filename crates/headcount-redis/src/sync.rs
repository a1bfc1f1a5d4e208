//! One served channel's place in the stream of its pub/sub messages: a pure state machine.
//!
//! A channel is *stale* until a snapshot is read, *fetching* while one is, and *live* once the
//! snapshot's sequence number and the messages buffered meanwhile have been applied. A live
//! channel applies each presence change whose number follows the last; a gap sends it back to
//! stale, keeping the messages from the gap on for the next snapshot to sort out. The
//! subscriber task performs what this decides (hands deliveries to the hub, reads snapshots);
//! nothing here does I/O or reads a clock.

use headcount_cluster::{PresenceEntry, RelayedBroadcast};
use tokio::time::Instant;

use crate::wire::Message;

/// Messages buffered per channel while its snapshot is pending; past that the buffer is
/// dropped (a later gap brings a fresh snapshot).
pub(crate) const BUFFER_BOUND: usize = 10_000;

#[derive(Debug)]
enum Phase {
    /// A snapshot must be read (not before `retry_at`).
    Stale {
        buffer: Vec<Message>,
        retry_at: Option<Instant>,
    },
    /// Snapshot `ticket` is being read.
    Fetching { ticket: u64, buffer: Vec<Message> },
    /// In step: `last` is the sequence number of the last change applied.
    Live { last: u64 },
}

/// What the hub must be told, in this order.
#[derive(Debug, PartialEq)]
pub(crate) enum Delivery {
    /// Another node's member `owner` now has `entry` (`None`: gone).
    Presence {
        owner: String,
        entry: Option<PresenceEntry>,
    },
    /// Another node's broadcast.
    Broadcast(RelayedBroadcast),
}

/// The outcome of an input.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Step {
    /// Deliveries for the hub, in order.
    pub(crate) deliver: Vec<Delivery>,
    /// The channel found a gap and needs a snapshot (counted as a resync).
    pub(crate) resync: bool,
}

/// One channel's synchronisation with its pub/sub stream.
#[derive(Debug)]
pub(crate) struct ChannelSync {
    phase: Phase,
}

impl ChannelSync {
    /// A channel that needs a snapshot before anything it hears is applied.
    pub(crate) fn stale() -> ChannelSync {
        ChannelSync {
            phase: Phase::Stale {
                buffer: Vec::new(),
                retry_at: None,
            },
        }
    }

    /// Starts over: whatever was buffered is dropped and a snapshot is needed.
    pub(crate) fn reset(&mut self) {
        *self = ChannelSync::stale();
    }

    /// Whether a snapshot is due at `now`; `Err(at)` when one is waiting to be retried.
    pub(crate) fn snapshot_due(&self, now: Instant) -> Result<bool, Instant> {
        match self.phase {
            Phase::Stale {
                retry_at: Some(at), ..
            } if at > now => Err(at),
            Phase::Stale { .. } => Ok(true),
            _ => Ok(false),
        }
    }

    /// Snapshot `ticket` has been asked for.
    pub(crate) fn fetching(&mut self, ticket: u64) {
        if let Phase::Stale { buffer, .. } = &mut self.phase {
            let buffer = std::mem::take(buffer);
            self.phase = Phase::Fetching { ticket, buffer };
        }
    }

    /// A message arrived.
    pub(crate) fn message(&mut self, msg: Message) -> Step {
        match &mut self.phase {
            Phase::Stale { buffer, .. } | Phase::Fetching { buffer, .. } => {
                if buffer.len() >= BUFFER_BOUND {
                    buffer.clear();
                }
                buffer.push(msg);
                Step::default()
            }
            Phase::Live { last } => {
                let mut step = Step::default();
                if let Some(rest) = apply(last, 0, vec![msg], &mut step.deliver) {
                    step.resync = true;
                    self.phase = Phase::Stale {
                        buffer: rest,
                        retry_at: None,
                    };
                }
                step
            }
        }
    }

    /// Snapshot `ticket` was read: the presence it held is at sequence `seq` (the caller hands
    /// it to the hub first). `None` if that snapshot was superseded (ignore it).
    pub(crate) fn loaded(&mut self, ticket: u64, seq: u64) -> Option<Step> {
        let buffer = match &mut self.phase {
            Phase::Fetching { ticket: t, buffer } if *t == ticket => std::mem::take(buffer),
            _ => return None,
        };
        let mut step = Step::default();
        let mut last = seq;
        self.phase = match apply(&mut last, seq, buffer, &mut step.deliver) {
            None => Phase::Live { last },
            Some(rest) => {
                step.resync = true;
                Phase::Stale {
                    buffer: rest,
                    retry_at: None,
                }
            }
        };
        Some(step)
    }

    /// Snapshot `ticket` failed: try again at `retry_at`. `false` if it was superseded.
    pub(crate) fn failed(&mut self, ticket: u64, retry_at: Instant) -> bool {
        match &mut self.phase {
            Phase::Fetching { ticket: t, buffer } if *t == ticket => {
                let buffer = std::mem::take(buffer);
                self.phase = Phase::Stale {
                    buffer,
                    retry_at: Some(retry_at),
                };
                true
            }
            _ => false,
        }
    }

    /// Whether the channel is in step.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live { .. })
    }
}

/// Applies `msgs` in order after change `last`, into `out`. Returns the messages from the first
/// gap on, if there is one. Changes numbered up to `skip_upto` (those a snapshot already holds)
/// are skipped; this node's own changes only advance `last`.
fn apply(
    last: &mut u64,
    skip_upto: u64,
    msgs: Vec<Message>,
    out: &mut Vec<Delivery>,
) -> Option<Vec<Message>> {
    let mut msgs = msgs.into_iter();
    while let Some(msg) = msgs.next() {
        match msg {
            Message::Presence { seq, .. } | Message::OwnPresence { seq } if seq <= skip_upto => {}
            Message::Presence { seq, .. } | Message::OwnPresence { seq } if seq != *last + 1 => {
                let mut rest = vec![msg];
                rest.extend(msgs);
                return Some(rest);
            }
            Message::OwnPresence { seq } => *last = seq,
            Message::Presence { seq, owner, entry } => {
                *last = seq;
                out.push(Delivery::Presence { owner, entry });
            }
            Message::Broadcast(msg) => out.push(Delivery::Broadcast(msg)),
            Message::OwnBroadcast => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn p(seq: u64, owner: &str) -> Message {
        Message::Presence {
            seq,
            owner: owner.into(),
            entry: None,
        }
    }

    fn b(body: &'static str) -> Message {
        Message::Broadcast(RelayedBroadcast::Json(Bytes::from_static(body.as_bytes())))
    }

    fn owners(step: &Step) -> Vec<String> {
        step.deliver
            .iter()
            .map(|d| match d {
                Delivery::Presence { owner, .. } => owner.clone(),
                Delivery::Broadcast(RelayedBroadcast::Json(b)) => {
                    format!("b:{}", std::str::from_utf8(b).unwrap())
                }
                Delivery::Broadcast(_) => "b".into(),
            })
            .collect()
    }

    fn live_at(seq: u64) -> ChannelSync {
        let mut s = ChannelSync::stale();
        s.fetching(1);
        s.loaded(1, seq).unwrap();
        assert!(s.is_live());
        s
    }

    #[test]
    fn messages_during_a_snapshot_are_replayed_after_it_skipping_what_it_holds() {
        let mut s = ChannelSync::stale();
        assert_eq!(s.message(p(4, "a")), Step::default());
        s.fetching(7);
        assert_eq!(s.message(b("x")), Step::default());
        assert_eq!(s.message(p(5, "b")), Step::default());
        assert_eq!(s.message(p(6, "c")), Step::default());
        // The snapshot holds everything up to 5.
        let step = s.loaded(7, 5).unwrap();
        assert_eq!(owners(&step), ["b:x", "c"]);
        assert!(!step.resync);
        assert!(s.is_live());
        assert_eq!(owners(&s.message(p(7, "d"))), ["d"]);
    }

    #[test]
    fn a_gap_sends_a_live_channel_back_to_stale_keeping_the_rest() {
        let mut s = live_at(3);
        let step = s.message(p(5, "late"));
        assert!(step.resync);
        assert!(step.deliver.is_empty());
        assert!(!s.is_live());
        assert_eq!(s.snapshot_due(Instant::now()), Ok(true));
        s.fetching(2);
        // The next snapshot is at 5: the kept message is already in it.
        let step = s.loaded(2, 5).unwrap();
        assert!(step.deliver.is_empty() && !step.resync);
        assert!(s.is_live());
    }

    #[test]
    fn a_gap_in_the_replay_asks_for_another_snapshot() {
        let mut s = ChannelSync::stale();
        s.fetching(1);
        s.message(p(3, "a"));
        s.message(p(5, "b"));
        let step = s.loaded(1, 2).unwrap();
        assert_eq!(owners(&step), ["a"]);
        assert!(step.resync);
        assert!(!s.is_live());
    }

    #[test]
    fn own_changes_advance_the_sequence_and_are_not_delivered() {
        let mut s = live_at(1);
        assert_eq!(s.message(Message::OwnPresence { seq: 2 }), Step::default());
        assert_eq!(owners(&s.message(p(3, "other"))), ["other"]);
    }

    #[test]
    fn a_superseded_or_failed_snapshot_changes_nothing_it_should_not() {
        let mut s = ChannelSync::stale();
        s.fetching(1);
        assert_eq!(s.loaded(9, 4), None, "another ticket");
        let later = Instant::now() + std::time::Duration::from_secs(1);
        assert!(s.failed(1, later));
        assert_eq!(s.snapshot_due(Instant::now()), Err(later));
        assert_eq!(s.snapshot_due(later), Ok(true));
        assert!(!s.failed(1, later), "no longer fetching");
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut s = ChannelSync::stale();
        for seq in 1..=BUFFER_BOUND as u64 + 1 {
            s.message(p(seq, "x"));
        }
        s.fetching(1);
        // The bound dropped the first BUFFER_BOUND messages: only the last is replayed.
        let step = s.loaded(1, BUFFER_BOUND as u64).unwrap();
        assert_eq!(step.deliver.len(), 1);
        assert!(s.is_live());
    }
}
