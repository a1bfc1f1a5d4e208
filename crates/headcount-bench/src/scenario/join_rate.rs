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

use super::{CpuMeter, CpuUse, Ctx, Next, Outcome, bar, next_step, opt, ramp_headline, within};
use crate::BenchArgs;
use crate::client::{Client, Target};
use crate::proto::{Member, Protocol};
use crate::report::{Table, si};
use crate::stats::{Latency, LatencySummary};

/// The shape of a run, from the arguments.
#[derive(Debug)]
struct Plan {
    rates: Vec<f64>,
    /// The p99 bound of a passing step, in ms.
    bound: f64,
    channels: usize,
    step_secs: f64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        Plan {
            rates: args.ramp(),
            bound: args.p99_bound_ms(),
            channels: args.channels.unwrap_or(100).max(1),
            step_secs: args.step_secs,
        }
    }
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let plan = Plan::new(args);
    let ctx = Arc::new(ctx);
    let launcher = Launcher {
        target,
        budget: ctx.socket_budget,
        ctx: ctx.clone(),
        channels: plan.channels,
        next_id: AtomicU32::new(0),
    };
    let ramp = ramp(&launcher, &plan).await;
    Ok(report(&plan, ramp, &ctx))
}

/// What starting attempts needs, for the whole ramp.
struct Launcher<P: Protocol> {
    target: Arc<Target<P>>,
    ctx: Arc<Ctx>,
    channels: usize,
    /// Sockets this process may have open at once: an attempt beyond them is skipped (and
    /// counted as an error) rather than refused by the system.
    budget: usize,
    /// Member numbers go on from step to step, so no two attempts share one.
    next_id: AtomicU32,
}

/// Counters of one step, shared by its attempts.
#[derive(Debug, Default)]
struct Counters {
    latency: Mutex<Latency>,
    ok: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicUsize,
}

/// One step's figures.
#[derive(Debug)]
struct Measured {
    /// Attempts scheduled.
    total: u64,
    ok: u64,
    errors: u64,
    lat: LatencySummary,
    cpu: CpuUse,
}

/// Which try of which step this is.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    /// The step, from 0.
    step: usize,
    /// Every try of the ramp, from 0.
    attempt: usize,
    /// Whether this is the second try of the step.
    retry: bool,
    /// Attempts per second.
    rate: f64,
}

/// What the ramp found.
struct Ramp {
    table: Table,
    steps: Vec<serde_json::Value>,
    /// The best passing step's rate of successful attempts and p99.
    best: Option<(f64, f64)>,
    stopped_because: Option<String>,
}

/// Runs the steps of the ramp, each retried once when it fails.
async fn ramp<P: Protocol>(launcher: &Launcher<P>, plan: &Plan) -> Ramp {
    let mut out = Ramp {
        table: Table::new(&[
            "step", "target/s", "ok/s", "errors", "p50 ms", "p99 ms", "p999 ms", "srv cpu%",
            "gen cpu%", "",
        ]),
        steps: Vec::new(),
        best: None,
        stopped_because: None,
    };
    let rates = &plan.rates;
    let pb = bar(rates.len() as u64, "ramp");
    let (mut attempt, mut i, mut retrying) = (0usize, 0usize, false);
    while i < rates.len() {
        let at = Attempt {
            step: i,
            attempt,
            retry: retrying,
            rate: rates[i],
        };
        attempt += 1;
        pb.set_message(format!("{}/s", si(at.rate)));
        let m = step(launcher, at.rate, plan.step_secs).await;
        let ok_rate = m.ok as f64 / plan.step_secs;
        let reason = step_verdict(&m, plan.bound);
        if reason.is_none() && out.best.is_none_or(|(b, _)| ok_rate > b) {
            out.best = Some((ok_rate, m.lat.p99_ms));
        }
        out.table.row(step_row(at, &m, ok_rate, reason.is_some()));
        out.steps
            .push(step_json(at, &m, ok_rate, reason.as_deref()));
        match next_step(reason, &mut retrying, i, at.rate) {
            Next::Retry => {}
            Next::Advance => {
                i += 1;
                pb.inc(1);
            }
            Next::Stop(why) => {
                out.stopped_because = Some(why);
                break;
            }
        }
        // Let the server finish the leaves of this step before the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pb.finish_and_clear();
    out
}

/// How many attempts a step of `secs` seconds at `rate` per second makes (at least one).
fn attempts(rate: f64, secs: f64) -> u64 {
    (rate * secs).round().max(1.0) as u64
}

/// One step at `rate` attempts per second: the launch, then the drain (up to 15 s for the
/// attempts still in flight), then the count.
async fn step<P: Protocol>(launcher: &Launcher<P>, rate: f64, secs: f64) -> Measured {
    let ctx = &launcher.ctx;
    let counters = Arc::new(Counters::default());
    let total = attempts(rate, secs);
    let cpu = CpuMeter::start(ctx);
    let saturated = launcher.launch(&counters, rate, total).await;
    let drain_until = Instant::now() + Duration::from_secs(15);
    while counters.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu.read(ctx);
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let lat = counters
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    if saturated > 0 {
        let budget = launcher.budget;
        ctx.errors.add("generator", || {
            format!("{saturated} attempts skipped: {budget} sockets already open")
        });
    }
    Measured {
        total,
        ok,
        errors,
        lat,
        cpu,
    }
}

impl<P: Protocol> Launcher<P> {
    /// Starts `total` attempts at `rate` per second, on schedule whatever happens to earlier
    /// ones; returns how many were skipped because the socket budget was in use.
    async fn launch(&self, counters: &Arc<Counters>, rate: f64, total: u64) -> u64 {
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
                if counters.in_flight.load(Ordering::Relaxed) >= self.budget {
                    saturated += 1;
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.in_flight.fetch_add(1, Ordering::Relaxed);
                self.attempt(scheduled, counters.clone());
            }
        }
        saturated
    }

    /// Spawns one attempt due at `scheduled`: connect + join + track, timed from then, and a
    /// close as soon as the track is accepted.
    fn attempt(&self, scheduled: tokio::time::Instant, counters: Arc<Counters>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member = Member {
            id,
            room: format!("join-{}", id as usize % self.channels),
            track: true,
        };
        let (target, ctx) = (self.target.clone(), self.ctx.clone());
        tokio::spawn(async move {
            let r = within(10.0, Client::establish(&target, &member, &mut |_| {})).await;
            let took = tokio::time::Instant::now().saturating_duration_since(scheduled);
            match r {
                Ok(client) => {
                    counters
                        .latency
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(took.as_micros() as u64);
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                    client.close().await;
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    ctx.errors.add(e.kind(), || format!("member {id}: {e}"));
                }
            }
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a step failed (`None`: it passed): a failed attempt, one unfinished, or a p99 over
/// `bound` ms.
fn step_verdict(m: &Measured, bound: f64) -> Option<String> {
    if m.errors > 0 {
        Some(format!("{} of {} attempts failed", m.errors, m.total))
    } else if m.ok < m.total {
        Some(format!("{} attempts unfinished", m.total - m.ok))
    } else if m.lat.p99_ms > bound {
        Some(format!("p99 {:.1} ms > {bound} ms", m.lat.p99_ms))
    } else {
        None
    }
}

/// A step's row of the table.
fn step_row(at: Attempt, m: &Measured, ok_rate: f64, failed: bool) -> Vec<String> {
    vec![
        format!("{}{}", at.step + 1, if at.retry { " again" } else { "" }),
        si(at.rate),
        si(ok_rate),
        m.errors.to_string(),
        format!("{:.2}", m.lat.p50_ms),
        format!("{:.2}", m.lat.p99_ms),
        format!("{:.2}", m.lat.p999_ms),
        opt(m.cpu.server_pct(), 0),
        format!("{:.0}", m.cpu.generator_pct()),
        if failed { "FAIL" } else { "ok" }.to_owned(),
    ]
}

/// A step's entry in the JSON.
fn step_json(at: Attempt, m: &Measured, ok_rate: f64, reason: Option<&str>) -> serde_json::Value {
    json!({
        "step": at.step + 1,
        "attempt": at.attempt + 1,
        "retry": at.retry,
        "target_per_sec": at.rate,
        "attempts": m.total,
        "ok": m.ok,
        "errors": m.errors,
        "ok_per_sec": ok_rate,
        "latency": m.lat,
        "cpu": m.cpu,
        "server_cpu_pct": m.cpu.server_pct(),
        "generator_cpu_pct": m.cpu.generator_pct(),
        "passed": reason.is_none(),
        "failure": reason,
    })
}

/// The outcome: the headline, the parameters and the figures.
fn report(plan: &Plan, ramp: Ramp, ctx: &Ctx) -> Outcome {
    let best = ramp.best;
    let headline = ramp_headline(
        best.map(|(r, p99)| {
            format!(
                "best sustained {}/s connect+join+track (p99 {p99:.1} ms)",
                si(r)
            )
        }),
        ramp.stopped_because.as_deref(),
    );
    Outcome {
        params: json!({
            "channels": plan.channels,
            "step_secs": plan.step_secs,
            "p99_bound_ms": plan.bound,
            "ramp_per_sec": plan.rates,
            "close_after_track": true,
        }),
        result: json!({
            "steps": ramp.steps,
            "best_sustained_per_sec": best.map(|b| b.0),
            "best_sustained_p99_ms": best.map(|b| b.1),
            "stopped_because": ramp.stopped_because,
        }),
        table: ramp.table,
        headline,
        failed: best.is_none(),
        errors: ctx.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(total: u64, ok: u64, errors: u64, p99_ms: f64) -> Measured {
        Measured {
            total,
            ok,
            errors,
            lat: LatencySummary {
                p99_ms,
                ..LatencySummary::default()
            },
            cpu: CpuUse::default(),
        }
    }

    #[test]
    fn a_step_passes_only_when_every_attempt_succeeded_in_time() {
        assert_eq!(step_verdict(&measured(100, 100, 0, 40.0), 100.0), None);
        assert_eq!(
            step_verdict(&measured(100, 97, 3, 40.0), 100.0),
            Some("3 of 100 attempts failed".into())
        );
        assert_eq!(
            step_verdict(&measured(100, 98, 0, 40.0), 100.0),
            Some("2 attempts unfinished".into())
        );
        assert_eq!(
            step_verdict(&measured(100, 100, 0, 120.04), 100.0),
            Some("p99 120.0 ms > 100 ms".into())
        );
        // Failures are named before a slow p99.
        assert_eq!(
            step_verdict(&measured(100, 99, 1, 500.0), 100.0),
            Some("1 of 100 attempts failed".into())
        );
    }

    #[test]
    fn a_step_makes_at_least_one_attempt() {
        assert_eq!(attempts(50.0, 1.0), 50);
        assert_eq!(attempts(100.0, 2.5), 250);
        assert_eq!(attempts(0.1, 1.0), 1);
    }
}
