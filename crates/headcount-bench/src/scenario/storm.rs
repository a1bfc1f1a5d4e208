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

use super::{CpuMeter, CpuUse, Ctx, Outcome, bar, finish, hold, keepalive_timer, opt, within};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Event, Member, Protocol, member_key, member_meta};
use crate::report::{Table, bytes, si};
use crate::stats::{Latency, LatencySummary};
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
    /// From a member's join sent to its track accepted.
    join_latency: Mutex<Latency>,
}

/// The shape of a run, from the arguments.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Members.
    n: usize,
    /// Joins per second.
    rate: f64,
}

/// The storm under way: the member tasks and what they report.
struct Storm {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    progress: Arc<Progress>,
    pb: ProgressBar,
    /// From before the first join.
    cpu: CpuMeter,
    /// When the first join is due, in µs since the epoch.
    first_us: u64,
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let plan = Plan {
        n: args.members().max(1),
        rate: args.join_rate,
    };
    ctx.check_sockets(plan.n)?;
    let ctx = Arc::new(ctx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut storm = start(&target, plan, &ctx, &stop_rx).await;
    let cpu = converge(args, plan, &ctx, &storm).await;
    let _ = stop_tx.send(true);
    finish(std::mem::take(&mut storm.tasks)).await;
    Ok(report(args, plan, &storm, cpu, &ctx))
}

/// Spawns every member, each to join at its turn (`i / rate` seconds after a common start),
/// after a pause that lets an earlier run's leftovers settle.
async fn start<P: Protocol>(
    target: &Arc<Target<P>>,
    plan: Plan,
    ctx: &Arc<Ctx>,
    stop_rx: &watch::Receiver<bool>,
) -> Storm {
    let Plan { n, rate } = plan;
    let progress = Arc::new(Progress::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = CpuMeter::start(ctx);
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
        let task = Task {
            target: target.clone(),
            ctx: ctx.clone(),
            progress: progress.clone(),
            pb: pb.clone(),
            stop: stop_rx.clone(),
            n,
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            one_member(member, task).await;
        }));
    }
    Storm {
        tasks,
        progress,
        pb,
        cpu,
        first_us,
    }
}

/// Waits until every view is complete or its member failed, or until the timeout has passed
/// since every member joined (or failed); returns the CPU used from before the first join.
async fn converge(args: &BenchArgs, plan: Plan, ctx: &Ctx, storm: &Storm) -> CpuUse {
    let (n, progress, pb) = (plan.n, &storm.progress, &storm.pb);
    let timeout = Duration::from_secs_f64(args.timeout_secs);
    let mut all_started_at: Option<Instant> = None;
    let cpu = loop {
        let converged = progress.converged.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        let joined = progress.joined.load(Ordering::Relaxed);
        if converged + failed >= n {
            break storm.cpu.read(ctx);
        }
        if joined + failed >= n {
            let since = *all_started_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= timeout {
                break storm.cpu.read(ctx);
            }
        }
        pb.set_message(format!("joined {joined}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    pb.finish_and_clear();
    cpu
}

/// The counters at the end of a storm, as plain numbers.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    joined: usize,
    failed: usize,
    converged: usize,
    last_join_us: u64,
    last_track_us: u64,
    last_full_us: u64,
    bytes_until_full: u64,
    bytes_total: u64,
}

impl Tally {
    fn read(p: &Progress) -> Tally {
        Tally {
            joined: p.joined.load(Ordering::Relaxed),
            failed: p.failed.load(Ordering::Relaxed),
            converged: p.converged.load(Ordering::Relaxed),
            last_join_us: p.last_join_us.load(Ordering::Relaxed),
            last_track_us: p.last_track_us.load(Ordering::Relaxed),
            last_full_us: p.last_full_us.load(Ordering::Relaxed),
            bytes_until_full: p.bytes_until_full.load(Ordering::Relaxed),
            bytes_total: p.bytes_total.load(Ordering::Relaxed),
        }
    }
}

/// What a storm came to.
#[derive(Debug, PartialEq)]
struct Figures {
    /// Whether every view became complete.
    all: bool,
    /// Convergence in ms after the last join, the last accepted track and the first join
    /// (`None` unless every view became complete).
    after_last_join: Option<f64>,
    after_last_track: Option<f64>,
    since_first: Option<f64>,
    /// The information baseline, and the bytes sent until convergence per byte of it.
    info: u64,
    ratio: Option<f64>,
}

/// The figures of a storm of `n` members whose first join was due at `first_us`.
fn figures(n: usize, first_us: u64, t: &Tally) -> Figures {
    let all = t.converged == n;
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1000.0;
    let info = information_bytes(n);
    Figures {
        all,
        after_last_join: all.then(|| ms(t.last_full_us, t.last_join_us)),
        after_last_track: all.then(|| ms(t.last_full_us, t.last_track_us)),
        since_first: all.then(|| ms(t.last_full_us, first_us)),
        info,
        ratio: (all && info > 0).then(|| t.bytes_until_full as f64 / info as f64),
    }
}

/// The one-line summary.
fn headline(plan: Plan, timeout_secs: f64, t: &Tally, f: &Figures) -> String {
    let Plan { n, rate } = plan;
    match f.after_last_join {
        Some(c) => format!(
            "{n} members at {}/s converged {c:.0} ms after the last join; {} bytes per information byte",
            si(rate),
            opt(f.ratio, 2)
        ),
        None => format!(
            "{} of {n} views complete after {timeout_secs:.0} s (not converged)",
            t.converged
        ),
    }
}

/// The summary table.
fn table(plan: Plan, t: &Tally, f: &Figures, lat: &LatencySummary, cpu: &CpuUse) -> Table {
    let Plan { n, rate } = plan;
    let mut table = Table::new(&["figure", "value"]);
    table.row(vec!["members".into(), format!("{n} at {}/s", si(rate))]);
    table.row(vec![
        "joined / failed".into(),
        format!("{} / {}", t.joined, t.failed),
    ]);
    table.row(vec![
        "views complete".into(),
        format!("{} / {n}", t.converged),
    ]);
    table.row(vec![
        "converged after last join".into(),
        format!("{} ms", opt(f.after_last_join, 1)),
    ]);
    table.row(vec![
        "converged after last track ok".into(),
        format!("{} ms", opt(f.after_last_track, 1)),
    ]);
    table.row(vec![
        "first join to convergence".into(),
        format!("{} ms", opt(f.since_first, 1)),
    ]);
    table.row(vec![
        "join+track latency p50 / p99".into(),
        format!("{:.1} / {:.1} ms", lat.p50_ms, lat.p99_ms),
    ]);
    table.row(vec![
        "server CPU to convergence".into(),
        format!("{} s", opt(cpu.server_cpu_secs, 2)),
    ]);
    table.row(vec![
        "generator CPU to convergence".into(),
        format!("{:.2} s", cpu.generator_cpu_secs),
    ]);
    table.row(vec![
        "bytes sent until convergence".into(),
        bytes(t.bytes_until_full as f64),
    ]);
    table.row(vec!["information (baseline)".into(), bytes(f.info as f64)]);
    table.row(vec!["bytes / information".into(), opt(f.ratio, 2)]);
    table
}

/// The outcome: the headline, the table, the parameters and the figures.
fn report(args: &BenchArgs, plan: Plan, storm: &Storm, cpu: CpuUse, ctx: &Ctx) -> Outcome {
    let t = Tally::read(&storm.progress);
    let f = figures(plan.n, storm.first_us, &t);
    let lat = storm
        .progress
        .join_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    Outcome {
        params: json!({
            "members": plan.n,
            "join_rate_per_sec": plan.rate,
            "timeout_secs": args.timeout_secs,
        }),
        result: json!({
            "joined": t.joined,
            "failed": t.failed,
            "views_complete": t.converged,
            "converged": f.all,
            "convergence_after_last_join_ms": f.after_last_join,
            "convergence_after_last_track_ms": f.after_last_track,
            "first_join_to_convergence_ms": f.since_first,
            "join_latency": lat,
            "cpu_to_convergence": cpu,
            "server_cpu_secs": cpu.server_cpu_secs,
            "bytes_sent_until_convergence": t.bytes_until_full,
            "bytes_sent_total": t.bytes_total,
            "information_bytes": f.info,
            "bytes_per_information_byte": f.ratio,
        }),
        table: table(plan, &t, &f, &lat, &cpu),
        headline: headline(plan, args.timeout_secs, &t, &f),
        failed: !f.all,
        errors: ctx.errors.clone(),
    }
}

/// What one member task needs.
struct Task<P: Protocol> {
    target: Arc<Target<P>>,
    ctx: Arc<Ctx>,
    progress: Arc<Progress>,
    pb: ProgressBar,
    stop: watch::Receiver<bool>,
    /// Members in the storm: a view is complete when it holds them all.
    n: usize,
}

/// One member of the storm: joins and tracks, watches its view until it holds all `n`, and
/// stays until `stop`.
async fn one_member<P: Protocol>(member: Member, task: Task<P>) {
    let Task {
        target,
        ctx,
        progress,
        pb,
        mut stop,
        n,
    } = task;
    let sent = ctx.now_us();
    progress.last_join_us.fetch_max(sent, Ordering::Relaxed);
    let mut view = View::new(n, ctx.buffers_diffs);
    let r = within(
        30.0,
        Client::establish(&target, &member, &mut |e| apply(&mut view, e)),
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
    progress
        .join_latency
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

    fn tally(converged: usize) -> Tally {
        Tally {
            joined: 3,
            converged,
            last_join_us: 1_000_000,
            last_track_us: 1_050_000,
            last_full_us: 1_250_000,
            bytes_until_full: 3 * information_bytes(3),
            ..Tally::default()
        }
    }

    #[test]
    fn convergence_is_timed_from_the_last_join_the_last_track_and_the_first_join() {
        let f = figures(3, 200_000, &tally(3));
        assert!(f.all);
        assert_eq!(f.after_last_join, Some(250.0));
        assert_eq!(f.after_last_track, Some(200.0));
        assert_eq!(f.since_first, Some(1050.0));
        assert_eq!(f.info, information_bytes(3));
        assert_eq!(f.ratio, Some(3.0));
    }

    #[test]
    fn a_storm_that_did_not_converge_has_no_convergence_figures() {
        let f = figures(3, 200_000, &tally(2));
        assert!(!f.all);
        assert_eq!(
            (
                f.after_last_join,
                f.after_last_track,
                f.since_first,
                f.ratio
            ),
            (None, None, None, None)
        );
        let plan = Plan { n: 3, rate: 200.0 };
        assert_eq!(
            headline(plan, 15.0, &tally(2), &f),
            "2 of 3 views complete after 15 s (not converged)"
        );
        // One member has nothing to learn: no ratio, though it converged.
        assert_eq!(figures(1, 0, &tally(1)).ratio, None);
    }
}
