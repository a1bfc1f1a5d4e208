//! Heartbeats and the reaper.
//!
//! Every node refreshes `node:{id}:alive` (lifetime: the heartbeat TTL, shorter than the node
//! timeout) every heartbeat interval, and stays in the `nodes` set. Every reap interval, each
//! node looks for nodes of the set whose heartbeat expired; whoever takes a dead node's lock
//! (`SET NX PX`) removes its entries channel by channel with the REAP script, which publishes
//! every leave with its sequence number, then drops the node's index. The worst case from a
//! crash to the last leave is therefore the TTL plus one reap interval plus the work, which the
//! options keep under the node timeout.
//!
//! A node that was cut off (or a Redis that was frozen) long enough for its heartbeat to expire
//! is not dead: its next heartbeat finds the key missing, bumps the node's epoch and has the
//! writer re-assert every entry with the new epoch. A reaper only removes entries up to the
//! epoch it saw when it took the lock, so it never removes what the node wrote after coming
//! back. And a reaper holds off while its own view of Redis is disturbed (failed or slow calls
//! within the last TTL), so a Redis freeze, which expires every heartbeat at once, does not make
//! the nodes reap each other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Value;

use crate::node::{Failure, Inner};
use crate::writer::SEQ_RETENTION_MS;

/// How often the watchdog pings Redis.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long the watchdog's ping may go unanswered before Redis counts as unreachable (or the
/// call timeout, if shorter). A healthy Redis answers in well under a millisecond; one that has
/// not answered in half a second is frozen, cut off or badly overloaded, and `/readyz` should
/// say so: within `PROBE_INTERVAL + PROBE_TIMEOUT` (0.75 s) rather than after a whole call
/// timeout on top of the next heartbeat (2 to 4.5 s).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a reaped node's epoch is kept, in case it comes back.
const EPOCH_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// Refreshes the heartbeat once; returns whether the node had been given up for dead (or is
/// new), and its epoch.
pub(crate) async fn beat(inner: &Inner) -> Result<(bool, u64), Failure> {
    let keys = inner.layout.node(&inner.node);
    let info = format!(
        "{{\"started_ms\":{},\"version\":\"{}\"}}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        env!("CARGO_PKG_VERSION")
    );
    let mut pipe = redis::pipe();
    pipe.cmd("EVALSHA")
        .arg(inner.scripts.heartbeat.get_hash())
        .arg(2)
        .arg(&keys.alive)
        .arg(&keys.epoch)
        .arg(inner.heartbeat_ttl.as_millis() as u64)
        .arg(info)
        .cmd("SADD")
        .arg(inner.layout.nodes())
        .arg(&inner.node)
        .ignore();
    let ((back, epoch),): ((i64, u64),) = inner.call(&pipe).await?;
    Ok((back == 1, epoch))
}

/// Refreshes the heartbeat every heartbeat interval until the node stops.
pub(crate) async fn heartbeat(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.options.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // `connect` just beat
    loop {
        tick.tick().await;
        if inner.is_stopped() {
            return;
        }
        // A failure is recorded by `call`; the next beat tries again.
        let _ = beat_and_reassert(&inner, "this node's heartbeat had expired").await;
    }
}

/// Beats; when Redis had forgotten this node (its heartbeat expired, or Redis restarted empty),
/// says why and has the writer re-assert every entry. `false` when the beat failed.
async fn beat_and_reassert(inner: &Inner, why: &str) -> bool {
    let Ok((back, epoch)) = beat(inner).await else {
        return false;
    };
    let before = inner.epoch.swap(epoch, Ordering::AcqRel);
    if back || before != epoch {
        tracing::warn!(node = %inner.node, epoch, "{why}: re-asserting its presences");
        inner.request_reassert();
    }
    true
}

/// Pings Redis every [`PROBE_INTERVAL`] until the node stops. An unanswered ping marks the
/// commands link failed (the health report, and the reaper's quiet period) without dropping the
/// connection; the calls in flight keep their own timeout. When Redis answers again after
/// failing, the watchdog beats at once (a Redis restarted empty has forgotten this node: the
/// beat notices and has the writer re-assert every entry) and cuts the writer's and the
/// subscriber's backoff pauses short, so recovery does not wait for the next heartbeat or the
/// end of a pause.
pub(crate) async fn watch(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let within = PROBE_TIMEOUT.min(inner.options.call_timeout);
    let mut failing = false;
    loop {
        tick.tick().await;
        if inner.is_stopped() {
            return;
        }
        let mut ping = redis::pipe();
        ping.cmd("PING");
        let answered = match tokio::time::timeout(within, inner.call::<Value>(&ping)).await {
            Ok(result) => result.is_ok(), // a failure is recorded by `call`
            Err(_) => {
                inner.unanswered(&Failure(format!("no answer within {within:?}")));
                false
            }
        };
        if !answered {
            failing = true;
            continue;
        }
        if !failing && !inner.links().has_failure() {
            continue;
        }
        if beat_and_reassert(&inner, "redis had forgotten this node").await {
            failing = false;
            inner.writer_retry.notify_one();
            inner.subscriber_retry.notify_one();
        } else {
            failing = true;
        }
    }
}

/// Looks for dead nodes every reap interval until the node stops.
pub(crate) async fn reaper(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.reap_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if inner.is_stopped() {
            return;
        }
        let quiet_since = inner.links().disturbed_at;
        if quiet_since.elapsed() < inner.heartbeat_ttl {
            continue;
        }
        let _ = reap_once(&inner).await;
    }
}

/// One pass: finds the nodes whose heartbeat expired and reaps those whose lock it takes.
pub(crate) async fn reap_once(inner: &Inner) -> Result<(), Failure> {
    let mut pipe = redis::pipe();
    pipe.cmd("SMEMBERS").arg(inner.layout.nodes());
    let (nodes,): (Vec<String>,) = inner.call(&pipe).await?;
    let others: Vec<&String> = nodes.iter().filter(|n| **n != inner.node).collect();
    if others.is_empty() {
        return Ok(());
    }
    let lock_ms = inner.options.node_timeout.as_millis() as u64;
    let mut pipe = redis::pipe();
    for node in &others {
        let keys = inner.layout.node(node);
        pipe.cmd("EVALSHA")
            .arg(inner.scripts.try_reap.get_hash())
            .arg(3)
            .arg(&keys.alive)
            .arg(&keys.epoch)
            .arg(&keys.reap)
            .arg(&inner.node)
            .arg(lock_ms);
    }
    let epochs: Vec<i64> = inner.call(&pipe).await?;
    for (node, epoch) in others.into_iter().zip(epochs) {
        if epoch >= 0 {
            reap_node(inner, node, epoch as u64).await?;
        }
    }
    Ok(())
}

/// Removes every entry of `node` up to `epoch`, then drops its index unless it came back.
async fn reap_node(inner: &Inner, node: &str, epoch: u64) -> Result<(), Failure> {
    let started = Instant::now();
    let keys = inner.layout.node(node);
    let mut pipe = redis::pipe();
    pipe.cmd("SMEMBERS").arg(&keys.channels);
    let (channels,): (Vec<String>,) = inner.call(&pipe).await?;
    let removed = remove_entries(inner, node, epoch, &channels).await?;
    let mut pipe = redis::pipe();
    pipe.cmd("EVALSHA")
        .arg(inner.scripts.finish_reap.get_hash())
        .arg(4)
        .arg(&keys.alive)
        .arg(&keys.epoch)
        .arg(&keys.channels)
        .arg(&keys.reap)
        .arg(&inner.node)
        .arg(EPOCH_RETENTION_MS);
    let (gone,): (i64,) = inner.call(&pipe).await?;
    if gone == 1 {
        let mut pipe = redis::pipe();
        pipe.cmd("SREM")
            .arg(inner.layout.nodes())
            .arg(node)
            .ignore();
        inner.call::<()>(&pipe).await?;
    }
    inner.counters.nodes_reaped.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .entries_reaped
        .fetch_add(removed, Ordering::Relaxed);
    tracing::info!(
        node = %inner.node,
        dead = %node,
        entries = removed,
        channels = channels.len(),
        took = ?started.elapsed(),
        "removed the presences of a node whose heartbeat expired"
    );
    Ok(())
}

/// Runs the REAP script for `node` (up to `epoch`) in every channel of `channels` (ids).
pub(crate) async fn remove_entries(
    inner: &Inner,
    node: &str,
    epoch: u64,
    channels: &[String],
) -> Result<u64, Failure> {
    let mut removed = 0;
    for chunk in channels.chunks(64) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in chunk {
            let keys = inner.layout.channel_by_id(id);
            pipe.cmd("EVALSHA")
                .arg(inner.scripts.reap.get_hash())
                .arg(2)
                .arg(&keys.presence)
                .arg(&keys.seq)
                .arg(&keys.events)
                .arg(node)
                .arg(epoch)
                .arg(SEQ_RETENTION_MS);
        }
        let values: Vec<Value> = inner.call(&pipe).await?;
        for v in values {
            match v {
                Value::Int(n) => removed += n as u64,
                other => tracing::error!(node = %inner.node, answer = ?other, "reap script failed"),
            }
        }
    }
    Ok(removed)
}

/// The heartbeat TTL and reap interval for a node timeout: the TTL is three quarters of the
/// timeout and the reaper looks every eighth, so a crash is noticed and cleaned up within
/// seven eighths of the timeout plus the work.
pub(crate) fn timings(node_timeout: Duration) -> (Duration, Duration) {
    let ttl = node_timeout * 3 / 4;
    let reap = (node_timeout / 8).max(Duration::from_millis(50));
    (ttl, reap)
}
