//! `idle`: N connections, each joined to one of M channels with its presence tracked, held
//! open while the server's memory is sampled.
//!
//! Memory per connection = (server VmRSS after set-up and a settling second − VmRSS before the
//! first connection) / connections established. The set-up time runs from the first connect to
//! the last accepted track, with `--concurrency` connections being set up at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::{
    CpuMeter, CpuUse, Ctx, Outcome, bar, finish, hold, keepalive_timer, opt, wait_until, within,
};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Member, Protocol};
use crate::report::{Table, bytes, si};
use crate::stats::{Latency, LatencySummary};
use crate::sys::{self, ProcSample};

/// The shape of a run, from the arguments.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Connections.
    n: usize,
    /// Channels they are spread over.
    m: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        Plan {
            n: args.connections.unwrap_or(1000),
            m: args.channels.unwrap_or(100).max(1),
        }
    }
}

/// Counters shared by the connection tasks.
#[derive(Debug, Default)]
struct Counters {
    established: AtomicUsize,
    failed: AtomicUsize,
    /// Connections lost while held open.
    dropped: AtomicUsize,
    /// From a connection's turn at the gate to its accepted track.
    setup: Mutex<Latency>,
}

/// The server and the generator before any connection of this run.
struct Baseline {
    /// `None` without `--pid`.
    server: Option<ProcSample>,
    generator: ProcSample,
    cpu: CpuMeter,
}

/// The connections, once set up (or the set-up time is over).
struct Setup {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    complete: bool,
    secs: f64,
    cpu: CpuUse,
    /// Connections established.
    ok: usize,
}

/// What the hold found.
struct Held {
    /// The server's VmRSS, once a second.
    samples: Vec<u64>,
    generator: ProcSample,
    still_open: usize,
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let plan = Plan::new(args);
    ctx.check_sockets(plan.n)?;
    let ctx = Arc::new(ctx);
    let base = baseline(&ctx).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut setup = connect(&target, args, plan, &ctx, &base, &stop_rx).await;
    let held = hold_open(args, &ctx, &setup).await;
    let _ = stop_tx.send(true);
    finish(std::mem::take(&mut setup.tasks)).await;
    Ok(report(args, plan, &base, &setup, held, &ctx))
}

/// Reads the server and the generator before the first connection, after a pause that lets
/// an earlier run's leftovers settle.
async fn baseline(ctx: &Ctx) -> Baseline {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = ctx.server();
    let generator = sys::sample_self();
    Baseline {
        server,
        generator,
        cpu: CpuMeter::start(ctx),
    }
}

/// What one connection task needs.
struct Task<P: Protocol> {
    target: Arc<Target<P>>,
    ctx: Arc<Ctx>,
    gate: Arc<Semaphore>,
    counters: Arc<Counters>,
    pb: ProgressBar,
    stop: watch::Receiver<bool>,
    timeout: f64,
}

/// Connects every member, `--concurrency` at a time, and waits until each is set up or failed;
/// the whole set-up is bounded too, by three times the per-connection timeout.
async fn connect<P: Protocol>(
    target: &Arc<Target<P>>,
    args: &BenchArgs,
    plan: Plan,
    ctx: &Arc<Ctx>,
    base: &Baseline,
    stop_rx: &watch::Receiver<bool>,
) -> Setup {
    let Plan { n, m } = plan;
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let counters = Arc::new(Counters::default());
    let pb = bar(n as u64, "connecting");
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let member = Member {
            id: i as u32,
            room: format!("idle-{}", i % m),
            track: true,
        };
        let task = Task {
            target: target.clone(),
            ctx: ctx.clone(),
            gate: gate.clone(),
            counters: counters.clone(),
            pb: pb.clone(),
            stop: stop_rx.clone(),
            timeout: args.timeout_secs,
        };
        tasks.push(tokio::spawn(connection(member, task)));
    }
    let setup_deadline = t0 + Duration::from_secs_f64(3.0 * args.timeout_secs);
    let complete = wait_until(setup_deadline, || {
        counters.established.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) >= n
    })
    .await;
    if !complete {
        ctx.errors.add("setup", || {
            format!(
                "set-up did not finish in {:.0} s; measuring the connections that did",
                3.0 * args.timeout_secs
            )
        });
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = base.cpu.read(ctx);
    pb.finish_with_message("set up");
    let ok = counters.established.load(Ordering::Relaxed);
    Setup {
        tasks,
        counters,
        complete,
        secs,
        cpu,
        ok,
    }
}

/// One connection: waits for its turn at the gate, connects, joins and tracks, then stays
/// open, answering the server, until the stop.
async fn connection<P: Protocol>(member: Member, task: Task<P>) {
    let Task {
        target,
        ctx,
        gate,
        counters,
        pb,
        mut stop,
        timeout,
    } = task;
    let permit = gate.acquire_owned().await;
    let started = Instant::now();
    let r = within(timeout, Client::establish(&target, &member, &mut |_| {})).await;
    drop(permit);
    let mut client = match r {
        Ok(c) => c,
        Err(e) => {
            ctx.errors
                .add(e.kind(), || format!("member {}: {e}", member.id));
            counters.failed.fetch_add(1, Ordering::Relaxed);
            pb.inc(1);
            return;
        }
    };
    counters
        .setup
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(started.elapsed().as_micros() as u64);
    counters.established.fetch_add(1, Ordering::Relaxed);
    pb.inc(1);
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(member.id));
    let r = hold(&mut client, &mut stop, &mut keepalive, |c| {
        c.process(&mut |_| {})
    })
    .await;
    if let Err(e) = r {
        ctx.errors.add("dropped", || {
            format!("member {} while idle: {e}", member.id)
        });
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    client.close().await;
}

/// Holds the connections open: lets the last diffs drain for a second, then samples the
/// server's memory once a second for `--hold-secs`.
async fn hold_open(args: &BenchArgs, ctx: &Ctx, setup: &Setup) -> Held {
    let hold_pb = bar(args.hold_secs.ceil() as u64, "holding");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut samples = Vec::new();
    let hold_until = Instant::now() + Duration::from_secs_f64(args.hold_secs);
    loop {
        if let Some(s) = ctx.server() {
            samples.push(s.rss_bytes);
        }
        if Instant::now() >= hold_until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        hold_pb.inc(1);
    }
    hold_pb.finish_and_clear();
    Held {
        samples,
        generator: sys::sample_self(),
        still_open: setup.ok - setup.counters.dropped.load(Ordering::Relaxed),
    }
}

/// The memory figures of a run.
#[derive(Debug)]
struct Memory {
    /// The server's VmRSS at the end of the hold.
    rss_end: Option<u64>,
    rss_max: Option<u64>,
    /// The server's growth per established connection (`None` without `--pid` or without a
    /// connection).
    per_conn: Option<f64>,
    /// The generator's own growth per established connection.
    gen_per_conn: f64,
}

/// The memory figures, from the readings before and after and the connections established.
fn memory(
    before: Option<u64>,
    samples: &[u64],
    gen_before: u64,
    gen_after: u64,
    ok: usize,
) -> Memory {
    let rss_end = samples.last().copied();
    let per_conn = match (before, rss_end) {
        (Some(b), Some(e)) if ok > 0 => Some((e as f64 - b as f64) / ok as f64),
        _ => None,
    };
    Memory {
        rss_end,
        rss_max: samples.iter().copied().max(),
        per_conn,
        gen_per_conn: (gen_after as f64 - gen_before as f64) / ok.max(1) as f64,
    }
}

/// Whether the run failed: a connection not established, one lost while held, or a set-up
/// that ran out of time.
fn failed(n: usize, ok: usize, still_open: usize, setup_complete: bool) -> bool {
    ok < n || still_open < ok || !setup_complete
}

/// The one-line summary.
fn headline(ok: usize, m: usize, setup_secs: f64, per_conn: Option<f64>) -> String {
    match per_conn {
        Some(p) => format!(
            "{ok} connections in {m} channels, {} per connection, set up in {setup_secs:.1} s",
            bytes(p)
        ),
        None => format!(
            "{ok} connections in {m} channels, set up in {setup_secs:.1} s (no --pid: memory not read)"
        ),
    }
}

/// The summary table.
fn table(
    plan: Plan,
    base: &Baseline,
    setup: &Setup,
    held: &Held,
    mem: &Memory,
    setup_lat: &LatencySummary,
) -> Table {
    let (Plan { n, m }, ok, setup_secs) = (plan, setup.ok, setup.secs);
    let mut table = Table::new(&["figure", "value"]);
    table.row(vec![
        "connections established".into(),
        format!("{ok} / {n}"),
    ]);
    table.row(vec!["channels".into(), m.to_string()]);
    table.row(vec![
        "still open after hold".into(),
        held.still_open.to_string(),
    ]);
    table.row(vec!["set-up time".into(), format!("{setup_secs:.2} s")]);
    table.row(vec![
        "set-up rate".into(),
        format!("{}/s", si(ok as f64 / setup_secs.max(1e-9))),
    ]);
    table.row(vec![
        "set-up latency p50 / p99".into(),
        format!("{:.1} / {:.1} ms", setup_lat.p50_ms, setup_lat.p99_ms),
    ]);
    table.row(vec![
        "server RSS before".into(),
        base.server
            .map_or("-".into(), |b| bytes(b.rss_bytes as f64)),
    ]);
    table.row(vec![
        "server RSS held".into(),
        mem.rss_end.map_or("-".into(), |r| bytes(r as f64)),
    ]);
    table.row(vec![
        "server RSS per connection".into(),
        mem.per_conn.map_or("-".into(), bytes),
    ]);
    table.row(vec![
        "server CPU during set-up".into(),
        format!("{} s", opt(setup.cpu.server_cpu_secs, 2)),
    ]);
    table.row(vec![
        "generator RSS per connection".into(),
        bytes(mem.gen_per_conn),
    ]);
    table.row(vec![
        "generator CPU during set-up".into(),
        format!("{:.2} s", setup.cpu.generator_cpu_secs),
    ]);
    table
}

/// The outcome: the headline, the table, the parameters and the figures.
fn report(
    args: &BenchArgs,
    plan: Plan,
    base: &Baseline,
    setup: &Setup,
    held: Held,
    ctx: &Ctx,
) -> Outcome {
    let Plan { n, m } = plan;
    let (ok, setup_secs) = (setup.ok, setup.secs);
    let counters = &setup.counters;
    let mem = memory(
        base.server.map(|b| b.rss_bytes),
        &held.samples,
        base.generator.rss_bytes,
        held.generator.rss_bytes,
        ok,
    );
    let setup_lat = counters
        .setup
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    let table = table(plan, base, setup, &held, &mem, &setup_lat);
    Outcome {
        params: json!({
            "connections": n,
            "channels": m,
            "concurrency": args.concurrency,
            "hold_secs": args.hold_secs,
            "tracked": true,
        }),
        result: json!({
            "established": ok,
            "failed": counters.failed.load(Ordering::Relaxed),
            "dropped_while_idle": counters.dropped.load(Ordering::Relaxed),
            "setup_secs": setup_secs,
            "setup_complete": setup.complete,
            "setup_rate_per_sec": ok as f64 / setup_secs.max(1e-9),
            "setup_latency": setup_lat,
            "setup_cpu": setup.cpu,
            "server_rss_before_bytes": base.server.map(|b| b.rss_bytes),
            "server_rss_held_bytes": mem.rss_end,
            "server_rss_max_bytes": mem.rss_max,
            "server_rss_samples_bytes": held.samples,
            "server_rss_per_connection_bytes": mem.per_conn,
            "generator_rss_per_connection_bytes": mem.gen_per_conn,
        }),
        table,
        headline: headline(ok, m, setup_secs, mem.per_conn),
        failed: failed(n, ok, held.still_open, setup.complete),
        errors: ctx.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_connection_is_the_growth_over_the_established() {
        let mem = memory(Some(1_000), &[5_000, 9_000, 7_000], 100, 300, 4);
        assert_eq!(mem.rss_end, Some(7_000));
        assert_eq!(mem.rss_max, Some(9_000));
        assert_eq!(mem.per_conn, Some(1_500.0));
        assert_eq!(mem.gen_per_conn, 50.0);
        // The server shrank: a negative figure, not a wrapped one.
        assert_eq!(
            memory(Some(2_000), &[1_000], 0, 0, 2).per_conn,
            Some(-500.0)
        );
    }

    #[test]
    fn memory_is_not_read_without_a_pid_or_a_connection() {
        let mem = memory(None, &[], 100, 100, 3);
        assert_eq!((mem.rss_end, mem.rss_max, mem.per_conn), (None, None, None));
        assert_eq!(memory(Some(1_000), &[5_000], 0, 0, 0).per_conn, None);
        // No connection: the generator's growth is not divided by zero.
        assert_eq!(memory(None, &[], 100, 400, 0).gen_per_conn, 300.0);
    }

    #[test]
    fn a_run_fails_on_a_missing_or_lost_connection_or_a_late_setup() {
        assert!(!failed(10, 10, 10, true));
        assert!(failed(10, 9, 9, true));
        assert!(failed(10, 10, 9, true));
        assert!(failed(10, 10, 10, false));
    }

    #[test]
    fn the_headline_says_whether_memory_was_read() {
        assert_eq!(
            headline(50, 5, 1.23, Some(2048.0)),
            "50 connections in 5 channels, 2.0 KiB per connection, set up in 1.2 s"
        );
        assert_eq!(
            headline(50, 5, 1.23, None),
            "50 connections in 5 channels, set up in 1.2 s (no --pid: memory not read)"
        );
    }
}
