//! `presence-storm`: N members join one channel at R joins per second and track; every client
//! keeps its presence view as phoenix.js does, and the run waits until every view holds all N.
//!
//! Figures:
//! * convergence: from the moment the last member sent its join to the moment the last view
//!   became complete (also from the last accepted track, and from the first join);
//! * server CPU seconds from before the first join to convergence (utime + stime, `--pid`);
//! * bytes sent by the server: the bytes every client received after its WebSocket upgrade
//!   (frames and their headers), counted until its view was complete;
//! * the information that must be delivered, the baseline of that byte count: each member
//!   learns each *other* member once, and learning member j means receiving its presence key
//!   and its presence payload as the member tracked them, no more:
//!   `Σ_i Σ_{j≠i} (len(key_j) + len(payload_j)) = (N − 1) · Σ_j (len(key_j) + len(payload_j))`.
//!   Everything else (the member's own entry, refs, envelope, framing, replies, heartbeats,
//!   repeated entries) is overhead in the ratio bytes / baseline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::watch;

use super::{CpuMeter, Ctx, Outcome, bar, finish, hold, keepalive_timer, opt, within};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Event, Member, Protocol, member_key, member_meta};
use crate::report::{Table, bytes, si};
use crate::stats::Latency;
use crate::view::View;

/// The information a storm of `n` members must deliver, in bytes (see the module docs).
pub fn information_bytes(n: usize) -> u64 {
    let per_member: u64 = (0..n as u32)
        .map(|j| (member_key(j).len() + member_meta(j).len()) as u64)
        .sum();
    (n as u64).saturating_sub(1) * per_member
}

fn apply(view: &mut View, e: Event<'_>) {
    match e {
        Event::State(entries) => view.apply_state(&entries),
        Event::Diff { joins, leaves } => view.apply_diff(joins, leaves),
        _ => {}
    }
}

#[derive(Debug, Default)]
struct Progress {
    joined: AtomicUsize,
    failed: AtomicUsize,
    converged: AtomicUsize,
    /// Latest join sent, latest track accepted, latest view completed (µs since the epoch).
    last_join_us: AtomicU64,
    last_track_us: AtomicU64,
    last_full_us: AtomicU64,
    bytes_until_full: AtomicU64,
    bytes_total: AtomicU64,
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let n = args.members().max(1);
    let rate = args.join_rate;
    ctx.check_sockets(n)?;
    let ctx = Arc::new(ctx);
    let progress = Arc::new(Progress::default());
    let join_latency = Arc::new(Mutex::new(Latency::new()));
    let (stop_tx, stop_rx) = watch::channel(false);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = CpuMeter::start(&ctx);
    let first_us = ctx.now_us() + 100_000;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let pb = bar(n as u64, "converged");
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let member = Member {
            id: i as u32,
            room: "storm".into(),
            track: true,
        };
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        let (target, ctx, progress, join_latency, pb) = (
            target.clone(),
            ctx.clone(),
            progress.clone(),
            join_latency.clone(),
            pb.clone(),
        );
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            one_member(
                &target,
                member,
                n,
                stop,
                &ctx,
                &progress,
                &join_latency,
                &pb,
            )
            .await;
        }));
    }

    let timeout = Duration::from_secs_f64(args.timeout_secs);
    let mut all_started_at: Option<Instant> = None;
    let converged_cpu = loop {
        let converged = progress.converged.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        let joined = progress.joined.load(Ordering::Relaxed);
        if converged + failed >= n {
            break cpu.read(&ctx);
        }
        if joined + failed >= n {
            let since = *all_started_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= timeout {
                break cpu.read(&ctx);
            }
        }
        pb.set_message(format!("joined {joined}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    pb.finish_and_clear();
    let _ = stop_tx.send(true);
    finish(tasks).await;

    let converged = progress.converged.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    let joined = progress.joined.load(Ordering::Relaxed);
    let last_join = progress.last_join_us.load(Ordering::Relaxed);
    let last_track = progress.last_track_us.load(Ordering::Relaxed);
    let last_full = progress.last_full_us.load(Ordering::Relaxed);
    let all = converged == n;
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1000.0;
    let after_last_join = all.then(|| ms(last_full, last_join));
    let after_last_track = all.then(|| ms(last_full, last_track));
    let since_first = all.then(|| ms(last_full, first_us));
    let info = information_bytes(n);
    let sent_until_full = progress.bytes_until_full.load(Ordering::Relaxed);
    let sent_total = progress.bytes_total.load(Ordering::Relaxed);
    let ratio = (all && info > 0).then(|| sent_until_full as f64 / info as f64);
    let lat = join_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();

    let mut table = Table::new(&["figure", "value"]);
    table.row(vec!["members".into(), format!("{n} at {}/s", si(rate))]);
    table.row(vec![
        "joined / failed".into(),
        format!("{joined} / {failed}"),
    ]);
    table.row(vec!["views complete".into(), format!("{converged} / {n}")]);
    table.row(vec![
        "converged after last join".into(),
        format!("{} ms", opt(after_last_join, 1)),
    ]);
    table.row(vec![
        "converged after last track ok".into(),
        format!("{} ms", opt(after_last_track, 1)),
    ]);
    table.row(vec![
        "first join to convergence".into(),
        format!("{} ms", opt(since_first, 1)),
    ]);
    table.row(vec![
        "join+track latency p50 / p99".into(),
        format!("{:.1} / {:.1} ms", lat.p50_ms, lat.p99_ms),
    ]);
    table.row(vec![
        "server CPU to convergence".into(),
        format!("{} s", opt(converged_cpu.server_cpu_secs, 2)),
    ]);
    table.row(vec![
        "generator CPU to convergence".into(),
        format!("{:.2} s", converged_cpu.generator_cpu_secs),
    ]);
    table.row(vec![
        "bytes sent until convergence".into(),
        bytes(sent_until_full as f64),
    ]);
    table.row(vec!["information (baseline)".into(), bytes(info as f64)]);
    table.row(vec!["bytes / information".into(), opt(ratio, 2)]);

    let headline = match after_last_join {
        Some(c) => format!(
            "{n} members at {}/s converged {c:.0} ms after the last join; {} bytes per information byte",
            si(rate),
            opt(ratio, 2)
        ),
        None => format!(
            "{converged} of {n} views complete after {:.0} s (not converged)",
            args.timeout_secs
        ),
    };
    Ok(Outcome {
        params: json!({
            "members": n,
            "join_rate_per_sec": rate,
            "timeout_secs": args.timeout_secs,
        }),
        result: json!({
            "joined": joined,
            "failed": failed,
            "views_complete": converged,
            "converged": all,
            "convergence_after_last_join_ms": after_last_join,
            "convergence_after_last_track_ms": after_last_track,
            "first_join_to_convergence_ms": since_first,
            "join_latency": lat,
            "cpu_to_convergence": converged_cpu,
            "server_cpu_secs": converged_cpu.server_cpu_secs,
            "bytes_sent_until_convergence": sent_until_full,
            "bytes_sent_total": sent_total,
            "information_bytes": info,
            "bytes_per_information_byte": ratio,
        }),
        table,
        headline,
        failed: !all,
        errors: ctx.errors.clone(),
    })
}

/// One member of the storm: joins and tracks, watches its view until it holds all `n`, and
/// stays until `stop`.
#[allow(clippy::too_many_arguments)]
async fn one_member<P: Protocol>(
    target: &Target<P>,
    member: Member,
    n: usize,
    mut stop: watch::Receiver<bool>,
    ctx: &Ctx,
    progress: &Progress,
    join_latency: &Mutex<Latency>,
    pb: &ProgressBar,
) {
    let sent = ctx.now_us();
    progress.last_join_us.fetch_max(sent, Ordering::Relaxed);
    let mut view = View::new(n, ctx.buffers_diffs);
    let r = within(
        30.0,
        Client::establish(target, &member, &mut |e| apply(&mut view, e)),
    )
    .await;
    let mut client = match r {
        Ok(c) => c,
        Err(e) => {
            ctx.errors
                .add(e.kind(), || format!("member {}: {e}", member.id));
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let tracked = ctx.now_us();
    progress.joined.fetch_add(1, Ordering::Relaxed);
    progress.last_track_us.fetch_max(tracked, Ordering::Relaxed);
    join_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(tracked - sent);
    let mut full = false;
    let mut check = |view: &View, bytes_in: u64| {
        if !full && view.len() >= n {
            full = true;
            progress
                .last_full_us
                .fetch_max(ctx.now_us(), Ordering::Relaxed);
            progress
                .bytes_until_full
                .fetch_add(bytes_in, Ordering::Relaxed);
            progress.converged.fetch_add(1, Ordering::Relaxed);
            pb.inc(1);
        }
    };
    check(&view, client.ws.bytes_in);
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(member.id));
    let r = hold(&mut client, &mut stop, &mut keepalive, |c| {
        c.process(&mut |e| apply(&mut view, e))?;
        check(&view, c.ws.bytes_in);
        Ok(())
    })
    .await;
    progress
        .bytes_total
        .fetch_add(client.ws.bytes_in, Ordering::Relaxed);
    match r {
        Ok(()) => client.close().await,
        Err(e) => ctx.errors.add("dropped", || {
            format!("member {} during the storm: {e}", member.id)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn information_counts_each_other_member_once() {
        // m0..m2: keys "m0".."m2" (2 bytes) and payloads of equal length.
        let e = (member_key(0).len() + member_meta(0).len()) as u64;
        assert_eq!(information_bytes(3), 2 * 3 * e);
        assert_eq!(information_bytes(1), 0);
        // Members 10.. have a key one byte longer.
        assert_eq!(information_bytes(11), 10 * (11 * e + 1));
    }
}
