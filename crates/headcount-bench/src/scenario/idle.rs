//! `idle`: N connections, each joined to one of M channels with its presence tracked, held
//! open while the server's memory is sampled.
//!
//! Memory per connection = (server VmRSS after set-up and a settling second − VmRSS before the
//! first connection) / connections established. The set-up time runs from the first connect to
//! the last accepted track, with `--concurrency` connections being set up at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::{CpuMeter, Ctx, Outcome, bar, finish, hold, keepalive_timer, opt, wait_until, within};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Member, Protocol};
use crate::report::{Table, bytes, si};
use crate::stats::Latency;
use crate::sys;

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let n = args.connections.unwrap_or(1000);
    let m = args.channels.unwrap_or(100).max(1);
    ctx.check_sockets(n)?;
    let ctx = Arc::new(ctx);

    // Baseline: the server before any connection of this run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = ctx.server();
    let gen_base = sys::sample_self();
    let cpu = CpuMeter::start(&ctx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let established = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let setup = Arc::new(std::sync::Mutex::new(Latency::new()));
    let pb = bar(n as u64, "connecting");
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let member = Member {
            id: i as u32,
            room: format!("idle-{}", i % m),
            track: true,
        };
        let (target, ctx, gate, established, failed, dropped, setup, pb) = (
            target.clone(),
            ctx.clone(),
            gate.clone(),
            established.clone(),
            failed.clone(),
            dropped.clone(),
            setup.clone(),
            pb.clone(),
        );
        let mut stop = stop_rx.clone();
        let timeout = args.timeout_secs;
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let started = Instant::now();
            let r = within(timeout, Client::establish(&target, &member, &mut |_| {})).await;
            drop(permit);
            let mut client = match r {
                Ok(c) => c,
                Err(e) => {
                    ctx.errors
                        .add(e.kind(), || format!("member {}: {e}", member.id));
                    failed.fetch_add(1, Ordering::Relaxed);
                    pb.inc(1);
                    return;
                }
            };
            setup
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(started.elapsed().as_micros() as u64);
            established.fetch_add(1, Ordering::Relaxed);
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
                dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            client.close().await;
        }));
    }
    // The whole set-up is bounded too: three times the per-connection timeout.
    let setup_deadline = t0 + Duration::from_secs_f64(3.0 * args.timeout_secs);
    let setup_complete = wait_until(setup_deadline, || {
        established.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= n
    })
    .await;
    if !setup_complete {
        ctx.errors.add("setup", || {
            format!(
                "set-up did not finish in {:.0} s; measuring the connections that did",
                3.0 * args.timeout_secs
            )
        });
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    let setup_cpu = cpu.read(&ctx);
    pb.finish_with_message("set up");
    let ok = established.load(Ordering::Relaxed);

    // Hold: let the last diffs drain, then sample memory once a second.
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
    let gen_after = sys::sample_self();
    let still_open = ok - dropped.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    finish(tasks).await;

    let rss_end = samples.last().copied();
    let rss_max = samples.iter().copied().max();
    let per_conn = match (base, rss_end) {
        (Some(b), Some(e)) if ok > 0 => Some((e as f64 - b.rss_bytes as f64) / ok as f64),
        _ => None,
    };
    let gen_per_conn = (gen_after.rss_bytes as f64 - gen_base.rss_bytes as f64) / ok.max(1) as f64;
    let setup_lat = setup.lock().unwrap_or_else(|e| e.into_inner()).summary();

    let mut table = Table::new(&["figure", "value"]);
    table.row(vec![
        "connections established".into(),
        format!("{ok} / {n}"),
    ]);
    table.row(vec!["channels".into(), m.to_string()]);
    table.row(vec!["still open after hold".into(), still_open.to_string()]);
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
        base.map_or("-".into(), |b| bytes(b.rss_bytes as f64)),
    ]);
    table.row(vec![
        "server RSS held".into(),
        rss_end.map_or("-".into(), |r| bytes(r as f64)),
    ]);
    table.row(vec![
        "server RSS per connection".into(),
        per_conn.map_or("-".into(), bytes),
    ]);
    table.row(vec![
        "server CPU during set-up".into(),
        format!("{} s", opt(setup_cpu.server_cpu_secs, 2)),
    ]);
    table.row(vec![
        "generator RSS per connection".into(),
        bytes(gen_per_conn),
    ]);
    table.row(vec![
        "generator CPU during set-up".into(),
        format!("{:.2} s", setup_cpu.generator_cpu_secs),
    ]);

    let headline = match per_conn {
        Some(p) => format!(
            "{ok} connections in {m} channels, {} per connection, set up in {setup_secs:.1} s",
            bytes(p)
        ),
        None => format!(
            "{ok} connections in {m} channels, set up in {setup_secs:.1} s (no --pid: memory not read)"
        ),
    };
    Ok(Outcome {
        params: json!({
            "connections": n,
            "channels": m,
            "concurrency": args.concurrency,
            "hold_secs": args.hold_secs,
            "tracked": true,
        }),
        result: json!({
            "established": ok,
            "failed": failed.load(Ordering::Relaxed),
            "dropped_while_idle": dropped.load(Ordering::Relaxed),
            "setup_secs": setup_secs,
            "setup_complete": setup_complete,
            "setup_rate_per_sec": ok as f64 / setup_secs.max(1e-9),
            "setup_latency": setup_lat,
            "setup_cpu": setup_cpu,
            "server_rss_before_bytes": base.map(|b| b.rss_bytes),
            "server_rss_held_bytes": rss_end,
            "server_rss_max_bytes": rss_max,
            "server_rss_samples_bytes": samples,
            "server_rss_per_connection_bytes": per_conn,
            "generator_rss_per_connection_bytes": gen_per_conn,
        }),
        table,
        headline,
        failed: ok < n || still_open < ok || !setup_complete,
        errors: ctx.errors.clone(),
    })
}
