//! The outcome of a ghosts run: the verdict, the table and the figures.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::verdict::{self, Measured};
use super::{CpuUse, Fault, Place, Plan, Settled, Shared};
use crate::BenchArgs;
use crate::cluster::{clearance, quantile};
use crate::report::{Table, si};
use crate::scenario::{Ctx, Outcome, opt};

/// Judges the run and reports it.
pub(super) fn outcome(
    args: &BenchArgs,
    plan: &Plan,
    settled: &Settled,
    publishers_up: usize,
    fault: Fault,
    shared: &Shared,
    ctx: &Ctx,
) -> Outcome {
    let Place {
        n,
        channels,
        nodes,
        kill_node,
    } = plan.place;
    let (kill_pid, publishers) = (plan.kill_pid, plan.publishers);
    let per_node_members = &plan.per_node_members;
    let doomed = per_node_members[kill_node];
    let (timeout_secs, tolerance_ms) = (args.node_timeout_secs, args.ghost_tolerance_ms);
    let deadline_secs = plan.deadline_secs;
    let Settled {
        converged,
        setup_secs,
        convergence_after_last_join_ms,
    } = *settled;
    let Fault {
        killed,
        kill_error,
        before_secs,
        after_secs,
        cpu_after,
    } = fault;
    let times = std::mem::take(&mut *shared.times.lock().unwrap_or_else(|e| e.into_inner()));
    let clear: Vec<Option<f64>> = times.iter().map(|t| t.0).collect();
    let dropped = shared.survivors_dropped.load(Ordering::Relaxed);
    let verdict = clearance(
        &clear,
        timeout_secs,
        tolerance_ms,
        shared.ghosts_left.load(Ordering::Relaxed),
        shared.survivors_missing.load(Ordering::Relaxed),
    );
    let measured = Measured {
        members: n,
        complete: shared.complete.load(Ordering::Relaxed),
        converged,
        publishers,
        publishers_up,
        killed,
        kill_error: kill_error.as_deref(),
        dropped,
        clearance: &verdict,
    };
    let judged = verdict::verdict(&measured);
    let mut first: Vec<f64> = times.iter().filter_map(|t| t.1).collect();
    first.sort_by(f64::total_cmp);
    let first_leave = spread(first.clone());
    let first_lost = spread(times.iter().filter_map(|t| t.2).collect());
    let phase = |k: usize, secs: f64| {
        let lat = shared.latency.merged(k).summary();
        json!({
            "secs": secs,
            "sent": shared.sent[k].load(Ordering::Relaxed),
            "delivered": shared.delivered[k].load(Ordering::Relaxed),
            "deliveries_per_sec": shared.delivered[k].load(Ordering::Relaxed) as f64 / secs.max(1e-9),
            "latency": lat,
        })
    };
    let before = phase(0, before_secs);
    let after = phase(1, if killed { after_secs } else { 0.0 });

    let table = figures(
        args,
        plan,
        shared,
        &measured,
        [&before, &after],
        cpu_after.as_ref(),
        &first,
    );

    let headline = verdict::headline(&measured, &judged);
    let failed = !judged.passed;
    Outcome {
        params: json!({
            "members": n,
            "channels": channels,
            "join_rate_per_sec": args.join_rate,
            "nodes": nodes,
            "urls": args.url,
            "pids": args.pid,
            "members_per_node": per_node_members,
            "kill_node": kill_node + 1,
            "kill_pid": kill_pid,
            "node_timeout_secs": timeout_secs,
            "tolerance_ms": tolerance_ms,
            "background_deliveries_per_sec": args.background_rate,
            "publishers": publishers,
            "payload_bytes": args.payload_bytes,
            "warmup_secs": args.warmup_secs,
            "deadline_after_kill_secs": deadline_secs,
        }),
        result: json!({
            "setup_secs": setup_secs,
            "joined": shared.joined.load(Ordering::Relaxed),
            "failed": shared.failed.load(Ordering::Relaxed),
            "views_complete_before_kill": shared.complete.load(Ordering::Relaxed),
            "converged_before_kill": converged,
            "convergence_after_last_join_ms": converged.then_some(convergence_after_last_join_ms),
            "killed": killed,
            "kill_error": kill_error,
            "killed_members": doomed,
            "killed_clients_closed": shared.killed_closed.load(Ordering::Relaxed),
            "surviving_clients": verdict.clients,
            "cleared_clients": verdict.cleared,
            "clear_p50_ms": verdict.clear_p50_ms,
            "clear_p99_ms": verdict.clear_p99_ms,
            "clear_max_ms": verdict.clear_max_ms,
            "bound_ms": verdict.bound_ms,
            "within_timeout": verdict.clear_max_ms.map(|m| m <= timeout_secs * 1000.0),
            "first_leave": first_leave,
            "ghosts_remaining": verdict.ghosts_remaining,
            "survivors_missing": verdict.survivors_missing,
            "views_lacking_survivors": shared.views_missing.load(Ordering::Relaxed),
            "survivors_missing_by_node": shared.missing_by_node.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "first_survivor_lost": first_lost,
            "views_lost_member_before_kill": shared.lost_before_kill.load(Ordering::Relaxed),
            "survivors_missing_samples": shared.missing_samples.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "ghosts_reappeared": shared.reappeared.load(Ordering::Relaxed),
            "surviving_clients_dropped": dropped,
            "background_before_kill": before,
            "background_after_kill": after,
            "cpu_after_kill": cpu_after,
            "server_cpu_pct_after_kill": cpu_after.as_ref().and_then(|c| c.server_pct()),
            "server_cpu_pct_per_pid_after_kill": cpu_after.as_ref().map(|c| c.server_pct_per_pid()),
            "passed": judged.passed,
        }),
        table,
        headline,
        failed,
        errors: ctx.errors.clone(),
    }
}

/// The table of figures a ghosts run prints; the clear times, the kill's error and the
/// dropped clients are the ones the verdict judged.
fn figures(
    args: &BenchArgs,
    plan: &Plan,
    shared: &Shared,
    measured: &Measured<'_>,
    [before, after]: [&serde_json::Value; 2],
    cpu_after: Option<&CpuUse>,
    first: &[f64],
) -> Table {
    let (verdict, kill_error, dropped) =
        (measured.clearance, measured.kill_error, measured.dropped);
    let Place {
        n,
        channels,
        kill_node,
        ..
    } = plan.place;
    let (kill_pid, per_node_members) = (plan.kill_pid, &plan.per_node_members);
    let doomed = per_node_members[kill_node];
    let (timeout_secs, tolerance_ms) = (args.node_timeout_secs, args.ghost_tolerance_ms);
    let mut table = Table::new(&["figure", "value"]);
    table.row(vec![
        "members (per node)".into(),
        format!(
            "{n} in {channels} channel(s) ({})",
            per_node_members
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    ]);
    table.row(vec![
        "views complete before the kill".into(),
        format!("{} / {n}", shared.complete.load(Ordering::Relaxed)),
    ]);
    table.row(vec![
        "background load before / after".into(),
        format!(
            "{} / {} deliveries/s (p99 {:.1} / {:.1} ms)",
            si(before["deliveries_per_sec"].as_f64().unwrap_or(0.0)),
            si(after["deliveries_per_sec"].as_f64().unwrap_or(0.0)),
            before["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            after["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
        ),
    ]);
    table.row(vec![
        "killed".into(),
        format!(
            "node {} (pid {kill_pid}, {doomed} members){}",
            kill_node + 1,
            kill_error.map(|e| format!(": {e}")).unwrap_or_default()
        ),
    ]);
    table.row(vec![
        "node timeout (+ tolerance)".into(),
        format!("{timeout_secs} s (+ {tolerance_ms} ms)"),
    ]);
    table.row(vec![
        "first leave seen p50 / min".into(),
        format!(
            "{} / {} ms",
            opt(quantile(first, 0.5), 0),
            opt(quantile(first, 0.0), 0)
        ),
    ]);
    table.row(vec![
        "views cleared".into(),
        format!("{} / {}", verdict.cleared, verdict.clients),
    ]);
    table.row(vec![
        "clear time p50 / p99 / max".into(),
        format!(
            "{} / {} / {} ms",
            opt(verdict.clear_p50_ms, 0),
            opt(verdict.clear_p99_ms, 0),
            opt(verdict.clear_max_ms, 0)
        ),
    ]);
    table.row(vec![
        "ghosts left / survivors missing (views)".into(),
        format!(
            "{} / {} ({})",
            verdict.ghosts_remaining,
            verdict.survivors_missing,
            shared.views_missing.load(Ordering::Relaxed)
        ),
    ]);
    table.row(vec![
        "surviving clients dropped".into(),
        dropped.to_string(),
    ]);
    if let Some(c) = cpu_after {
        table.row(vec![
            "server CPU after the kill".into(),
            format!("{}%", opt(c.server_pct(), 0)),
        ]);
    }
    table
}

/// Count, min, median and max of some times in ms; `None` when there are none.
fn spread(mut v: Vec<f64>) -> Option<serde_json::Value> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| {
        json!({
            "count": v.len(),
            "min_ms": quantile(&v, 0.0),
            "p50_ms": quantile(&v, 0.5),
            "max_ms": quantile(&v, 1.0),
        })
    })
}
