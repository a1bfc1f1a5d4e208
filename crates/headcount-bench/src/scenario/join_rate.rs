//! `join-rate`: new clients per second, each one connect + join + track, at a rate that climbs
//! step by step.
//!
//! Attempts are started on schedule whatever happens to earlier ones (an open loop), and each
//! one's latency runs from its scheduled start to its accepted track, so a server that falls
//! behind shows it in the latency instead of slowing the generator down. A client closes its
//! socket as soon as its track is accepted (so the server also handles as many leaves), which
//! keeps the open sockets under the open-files limit. A step passes when every attempt
//! succeeded and p99 is within the bound (100 ms by default). A failed step is run once more;
//! the ramp stops at a step that fails twice in a row, and the best sustained rate is the
//! highest passing step's.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::time::MissedTickBehavior;

use super::{CpuMeter, Ctx, Next, Outcome, bar, next_step, opt, ramp_headline, within};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Member, Protocol};
use crate::report::{Table, si};
use crate::stats::Latency;

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let rates = args.ramp();
    let bound = args.p99_bound_ms();
    let channels = args.channels.unwrap_or(100).max(1);
    let budget = ctx.socket_budget;
    let ctx = Arc::new(ctx);
    let next_id = Arc::new(AtomicU32::new(0));
    let mut table = Table::new(&[
        "step", "target/s", "ok/s", "errors", "p50 ms", "p99 ms", "p999 ms", "srv cpu%",
        "gen cpu%", "",
    ]);
    let mut results = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut stopped_because = None;
    let ramp = bar(rates.len() as u64, "ramp");
    let (mut attempt, mut i, mut retrying) = (0usize, 0usize, false);
    while i < rates.len() {
        let (k, rate) = (attempt, rates[i]);
        attempt += 1;
        ramp.set_message(format!("{}/s", si(rate)));
        let latency = Arc::new(Mutex::new(Latency::new()));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let total = (rate * args.step_secs).round().max(1.0) as u64;
        let cpu = CpuMeter::start(&ctx);
        let start = tokio::time::Instant::now() + Duration::from_millis(10);
        let mut ticker = tokio::time::interval_at(start, Duration::from_millis(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut launched = 0u64;
        let mut saturated = 0u64;
        while launched < total {
            ticker.tick().await;
            let due =
                ((rate * (tokio::time::Instant::now() - start).as_secs_f64()) as u64).min(total);
            while launched < due {
                let scheduled = start + Duration::from_secs_f64(launched as f64 / rate);
                launched += 1;
                if in_flight.load(Ordering::Relaxed) >= budget {
                    saturated += 1;
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let member = Member {
                    id,
                    room: format!("join-{}", id as usize % channels),
                    track: true,
                };
                let (target, ctx, latency, ok, errors, in_flight) = (
                    target.clone(),
                    ctx.clone(),
                    latency.clone(),
                    ok.clone(),
                    errors.clone(),
                    in_flight.clone(),
                );
                tokio::spawn(async move {
                    let r = within(10.0, Client::establish(&target, &member, &mut |_| {})).await;
                    let took = tokio::time::Instant::now().saturating_duration_since(scheduled);
                    match r {
                        Ok(client) => {
                            latency
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .record(took.as_micros() as u64);
                            ok.fetch_add(1, Ordering::Relaxed);
                            client.close().await;
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            ctx.errors.add(e.kind(), || format!("member {id}: {e}"));
                        }
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
        let drain_until = Instant::now() + Duration::from_secs(15);
        while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let step_cpu = cpu.read(&ctx);
        let ok = ok.load(Ordering::Relaxed);
        let errors = errors.load(Ordering::Relaxed);
        let lat = latency.lock().unwrap_or_else(|e| e.into_inner()).summary();
        let ok_rate = ok as f64 / args.step_secs;
        if saturated > 0 {
            ctx.errors.add("generator", || {
                format!("{saturated} attempts skipped: {budget} sockets already open")
            });
        }
        let reason = if errors > 0 {
            Some(format!("{errors} of {total} attempts failed"))
        } else if ok < total {
            Some(format!("{} attempts unfinished", total - ok))
        } else if lat.p99_ms > bound {
            Some(format!("p99 {:.1} ms > {bound} ms", lat.p99_ms))
        } else {
            None
        };
        if reason.is_none() && best.is_none_or(|(b, _)| ok_rate > b) {
            best = Some((ok_rate, lat.p99_ms));
        }
        table.row(vec![
            format!("{}{}", i + 1, if retrying { " again" } else { "" }),
            si(rate),
            si(ok_rate),
            errors.to_string(),
            format!("{:.2}", lat.p50_ms),
            format!("{:.2}", lat.p99_ms),
            format!("{:.2}", lat.p999_ms),
            opt(step_cpu.server_pct(), 0),
            format!("{:.0}", step_cpu.generator_pct()),
            if reason.is_some() { "FAIL" } else { "ok" }.to_owned(),
        ]);
        results.push(json!({
            "step": i + 1,
            "attempt": k + 1,
            "retry": retrying,
            "target_per_sec": rate,
            "attempts": total,
            "ok": ok,
            "errors": errors,
            "ok_per_sec": ok_rate,
            "latency": lat,
            "cpu": step_cpu,
            "server_cpu_pct": step_cpu.server_pct(),
            "generator_cpu_pct": step_cpu.generator_pct(),
            "passed": reason.is_none(),
            "failure": reason,
        }));
        match next_step(reason, &mut retrying, i, rate) {
            Next::Retry => {}
            Next::Advance => {
                i += 1;
                ramp.inc(1);
            }
            Next::Stop(why) => {
                stopped_because = Some(why);
                break;
            }
        }
        // Let the server finish the leaves of this step before the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ramp.finish_and_clear();
    let headline = ramp_headline(
        best.map(|(r, p99)| {
            format!(
                "best sustained {}/s connect+join+track (p99 {p99:.1} ms)",
                si(r)
            )
        }),
        stopped_because.as_deref(),
    );
    Ok(Outcome {
        params: json!({
            "channels": channels,
            "step_secs": args.step_secs,
            "p99_bound_ms": bound,
            "ramp_per_sec": rates,
            "close_after_track": true,
        }),
        result: json!({
            "steps": results,
            "best_sustained_per_sec": best.map(|b| b.0),
            "best_sustained_p99_ms": best.map(|b| b.1),
            "stopped_because": stopped_because,
        }),
        table,
        headline,
        failed: best.is_none(),
        errors: ctx.errors.clone(),
    })
}
