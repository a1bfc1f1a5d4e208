//! The writer: drains the queue toward Redis in order, in pipelined batches.
//!
//! A presence marker writes the member's *current* mirror value, so however often a member
//! changes while the queue is backed up, Redis gets only its latest entry. A batch that fails
//! puts its presence markers back at the head of the queue and drops its broadcasts; the writer
//! then retries with a growing pause and, once Redis answers again, writes every owned entry
//! (Redis may have restarted empty) before going on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use headcount_cluster::{ChannelKey, MemberId, PresenceEntry, owner_id};
use redis::{Pipeline, Value};

use crate::node::{Inner, Work};
use crate::wire;

/// How many commands go in one pipeline.
const BATCH: usize = 128;
/// How many bytes of broadcasts go in one pipeline (at least one broadcast always does): the
/// pipeline copies them, so a batch of 128 broadcasts of 3 MB would hold twice 384 MB.
const BATCH_BYTES: usize = 1 << 20;
/// The longest pause between two attempts while Redis is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How long the sequence number of a channel with no entry left is kept: 60 s.
///
/// The sequence number exists for the subscriber's gap logic: a node that is live on a channel
/// expects change `last + 1` next. When the key has expired, the next change of the channel
/// is numbered 1 again; every node that still serves the channel sees a gap (1 is not
/// `last + 1`) and resynchronises from a snapshot, which is correct and costs one `SNAPSHOT`
/// per such node. A node that starts serving the channel snapshots anyway (an absent key reads
/// as 0, and the next change is 1). So correctness does not need the key to outlive the
/// channel's presence at all. It needs two things:
///
/// * the number must not go back while a node holds older messages of the channel in its
///   pre-snapshot buffer (between subscribing and applying the snapshot), or the buffered
///   message would look like a gap after every snapshot. That window is one snapshot attempt,
///   at most twice the call timeout (connect, then call: 4 s by default), so 60 s is a wide
///   margin;
/// * and, to save work rather than for correctness, a channel that empties and fills again a
///   moment later (a member reloading the page) should keep its numbers so the nodes that
///   serve it stay in step without a snapshot each.
///
/// A day (the old value) kept a key per emptied channel for 24 h; a minute bounds the keys of
/// emptied channels to the channels emptied in the last minute.
pub(crate) const SEQ_RETENTION_MS: u64 = 60 * 1000;

enum Op {
    Set {
        key: ChannelKey,
        member: MemberId,
        entry: Option<PresenceEntry>,
        /// No owned entry is left in the channel: drop it from the node's index.
        last: bool,
    },
    Publish(ChannelKey, Bytes),
}

enum Batch {
    /// Every owned entry.
    Reassert(Vec<(ChannelKey, MemberId, PresenceEntry)>),
    /// The head of the queue.
    Ops(Vec<Op>),
}

/// Adds the SET script for one owner to `pipe`.
pub(crate) fn push_set(
    inner: &Inner,
    pipe: &mut Pipeline,
    key: &ChannelKey,
    member: MemberId,
    entry: Option<&PresenceEntry>,
) {
    let epoch = inner.epoch.load(Ordering::Acquire);
    let keys = inner.layout.channel(key);
    let json = entry
        .map(|e| wire::entry_json(epoch, &inner.node, e))
        .unwrap_or_default();
    pipe.cmd("EVALSHA")
        .arg(inner.scripts.set.get_hash())
        .arg(2)
        .arg(&keys.presence)
        .arg(&keys.seq)
        .arg(&keys.events)
        .arg(&inner.node)
        .arg(owner_id(&inner.node, member))
        .arg(json)
        .arg(epoch)
        .arg(SEQ_RETENTION_MS);
}

fn take(inner: &Inner) -> Option<Batch> {
    let mut st = inner.state();
    st.writing = st.reassert || !st.queue.is_empty();
    if st.reassert {
        st.reassert = false;
        let all = st
            .owned
            .iter()
            .flat_map(|(key, members)| {
                members
                    .iter()
                    .map(|(m, e)| (key.clone(), *m, e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        return Some(Batch::Reassert(all));
    }
    if st.queue.is_empty() {
        return None;
    }
    let mut ops = Vec::new();
    while ops.len() < BATCH && st.sending_bytes < BATCH_BYTES {
        let Some(work) = st.queue.pop_front() else {
            break;
        };
        match work {
            Work::Presence(key, member) => {
                st.pending.remove(&(key.clone(), member));
                let members = st.owned.get(&key);
                let entry = members.and_then(|m| m.get(&member)).cloned();
                let last = members.is_none_or(|m| m.is_empty());
                ops.push(Op::Set {
                    key,
                    member,
                    entry,
                    last,
                });
            }
            Work::Publish(key, msg) => {
                st.queued_broadcasts -= 1;
                st.queued_bytes -= msg.len();
                st.sending_bytes += msg.len();
                ops.push(Op::Publish(key, msg));
            }
        }
    }
    Some(Batch::Ops(ops))
}

/// Puts the presence markers of a failed batch back at the head of the queue, in order; drops
/// its broadcasts and every broadcast still queued (they would arrive late).
fn give_back(inner: &Inner, ops: Vec<Op>) {
    let mut st = inner.state();
    let mut dropped = 0;
    for op in ops.into_iter().rev() {
        match op {
            Op::Set { key, member, .. } => {
                if st.pending.insert((key.clone(), member)) {
                    st.queue.push_front(Work::Presence(key, member));
                }
            }
            Op::Publish(..) => dropped += 1,
        }
    }
    let before = st.queue.len();
    st.queue.retain(|w| matches!(w, Work::Presence(..)));
    dropped += before - st.queue.len();
    st.queued_broadcasts = 0;
    st.queued_bytes = 0;
    st.reassert = true;
    drop(st);
    inner
        .counters
        .broadcasts_dropped
        .fetch_add(dropped as u64, Ordering::Relaxed);
}

async fn write_ops(inner: &Inner, ops: &[Op]) -> bool {
    let index = inner.layout.node(&inner.node).channels;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for op in ops {
        match op {
            Op::Set {
                key,
                member,
                entry,
                last,
            } => {
                let id = crate::keys::channel_id(key);
                if entry.is_some() {
                    // Indexed before the entry exists, so a reaper always finds it.
                    pipe.cmd("SADD").arg(&index).arg(&id);
                }
                push_set(inner, &mut pipe, key, *member, entry.as_ref());
                if entry.is_none() && *last {
                    pipe.cmd("SREM").arg(&index).arg(&id);
                }
            }
            Op::Publish(key, msg) => {
                pipe.cmd("PUBLISH")
                    .arg(inner.layout.channel(key).events)
                    .arg(msg.as_ref());
            }
        }
    }
    report(inner, inner.call::<Vec<Value>>(&pipe).await)
}

async fn write_all(inner: &Inner, all: &[(ChannelKey, MemberId, PresenceEntry)]) -> bool {
    let index = inner.layout.node(&inner.node).channels;
    for chunk in all.chunks(BATCH / 2) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, member, entry) in chunk {
            pipe.cmd("SADD")
                .arg(&index)
                .arg(crate::keys::channel_id(key));
            push_set(inner, &mut pipe, key, *member, Some(entry));
        }
        if !report(inner, inner.call::<Vec<Value>>(&pipe).await) {
            return false;
        }
    }
    true
}

/// Whether a batch went through; logs per-command errors (a bug, not an outage: not retried).
fn report(inner: &Inner, result: Result<Vec<Value>, crate::node::Failure>) -> bool {
    match result {
        Ok(values) => {
            for v in values {
                if let Value::ServerError(e) = v {
                    tracing::error!(node = %inner.node, error = ?e, "redis refused a command");
                }
            }
            true
        }
        Err(_) => false,
    }
}

/// Makes sure Redis answers (connecting if needed).
async fn probe(inner: &Inner) -> bool {
    let mut pipe = redis::pipe();
    pipe.cmd("PING");
    inner.call::<Value>(&pipe).await.is_ok()
}

/// Runs the writer until the node stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut pause = Duration::ZERO;
    loop {
        if inner.is_stopped() {
            return;
        }
        if !pause.is_zero() {
            // The watchdog cuts the pause short as soon as Redis answers again.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = inner.writer_retry.notified() => {}
            }
            if !probe(&inner).await {
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
            pause = Duration::ZERO;
            if inner.writer_down.swap(false, Ordering::AcqRel) {
                tracing::info!(node = %inner.node, "redis reachable again");
            }
        }
        let Some(batch) = take(&inner) else {
            inner.writer_wake.notified().await;
            continue;
        };
        let ok = match batch {
            Batch::Reassert(all) => {
                let ok = write_all(&inner, &all).await;
                if ok {
                    inner.counters.reasserts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = %inner.node, entries = all.len(), "presences re-asserted in redis");
                } else {
                    inner.state().reassert = true;
                }
                ok
            }
            Batch::Ops(ops) => {
                let ok = write_ops(&inner, &ops).await;
                if !ok {
                    give_back(&inner, ops);
                }
                ok
            }
        };
        {
            let mut st = inner.state();
            st.writing = false;
            st.sending_bytes = 0;
        }
        if !ok {
            inner.writer_down.store(true, Ordering::Release);
            pause = (pause * 2).clamp(Duration::from_millis(50), MAX_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisOptions;

    fn node(queue_bytes: usize) -> Inner {
        // Never connected: these tests only touch the queue.
        let client = redis::Client::open("redis://127.0.0.1:1/").expect("a valid URL");
        let options = RedisOptions::default().with_queue_bytes(queue_bytes);
        Inner::new(
            client,
            options,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    fn key() -> ChannelKey {
        ChannelKey {
            private: false,
            topic: "realtime:q".into(),
        }
    }

    fn dropped(inner: &Inner) -> u64 {
        inner.counters.broadcasts_dropped.load(Ordering::Relaxed)
    }

    #[test]
    fn the_queue_holds_up_to_its_byte_bound_and_drops_the_next_broadcast() {
        let inner = node(10_000);
        for _ in 0..10 {
            inner.queue_publish(&key(), Bytes::from(vec![b'x'; 1000]));
        }
        assert_eq!(
            dropped(&inner),
            0,
            "N = 10 broadcasts of 1000 bytes fit in 10 000"
        );
        inner.queue_publish(&key(), Bytes::from(vec![b'x'; 1000]));
        assert_eq!(dropped(&inner), 1, "the N+1th is dropped");
        inner.queue_publish(&key(), Bytes::from_static(b"y"));
        assert_eq!(dropped(&inner), 2, "even one byte more does not fit");
        assert_eq!(inner.state().queued_bytes, 10_000);
    }

    #[test]
    fn the_batch_being_sent_counts_until_it_is_done() {
        let inner = node(3000);
        for _ in 0..3 {
            inner.queue_publish(&key(), Bytes::from(vec![b'x'; 1000]));
        }
        let Some(Batch::Ops(ops)) = take(&inner) else {
            panic!("a batch of broadcasts");
        };
        assert_eq!(ops.len(), 3);
        assert_eq!(inner.state().queued_bytes, 0);
        inner.queue_publish(&key(), Bytes::from(vec![b'x'; 1000]));
        assert_eq!(
            dropped(&inner),
            1,
            "in flight, the batch still holds the bytes"
        );
        // What `run` does when the batch is answered.
        inner.state().sending_bytes = 0;
        inner.queue_publish(&key(), Bytes::from(vec![b'x'; 1000]));
        assert_eq!(dropped(&inner), 1, "room again once the batch is done");
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget_but_always_takes_one_broadcast() {
        let inner = node(64 << 20);
        for _ in 0..4 {
            inner.queue_publish(&key(), Bytes::from(vec![b'x'; 3 * BATCH_BYTES / 4]));
        }
        let Some(Batch::Ops(ops)) = take(&inner) else {
            panic!("a batch");
        };
        assert_eq!(ops.len(), 2, "two of 3/4 MiB reach the 1 MiB budget");
        inner.state().sending_bytes = 0;
        let big = node(64 << 20);
        big.queue_publish(&key(), Bytes::from(vec![b'x'; 3 * BATCH_BYTES]));
        let Some(Batch::Ops(ops)) = take(&big) else {
            panic!("a batch");
        };
        assert_eq!(
            ops.len(),
            1,
            "a broadcast above the budget still goes, alone"
        );
    }
}
