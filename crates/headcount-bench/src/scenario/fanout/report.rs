//! What a fanout step concluded, and the table and JSON that report it.

use super::*;

/// The share of a step's deliveries that crossed nodes.
pub(super) fn cross_share(m: &Measured) -> f64 {
    m.delivered_remote as f64 / m.delivered.max(1) as f64
}

/// Why a step failed (`None`: it passed): a loss, a duplicate, or a p99 over `bound` ms (in
/// a cluster, also the cross-node p99).
pub(super) fn step_verdict(m: &Measured, bound: f64, clustered: bool) -> Option<String> {
    if m.lost > 0 {
        Some(format!("{} deliveries lost", m.lost))
    } else if m.duplicates > 0 {
        Some(format!("{} duplicates", m.duplicates))
    } else if m.lat.p99_ms > bound {
        Some(format!("p99 {:.1} ms > {bound} ms", m.lat.p99_ms))
    } else if clustered && m.remote_lat.p99_ms > bound {
        Some(format!(
            "cross-node p99 {:.1} ms > {bound} ms",
            m.remote_lat.p99_ms
        ))
    } else {
        None
    }
}

/// A step's row of the table.
pub(super) fn step_row(
    label: String,
    rate: f64,
    secs: f64,
    m: &Measured,
    clustered: bool,
    failed: bool,
) -> Vec<String> {
    let distinct = m.delivered - m.duplicates.min(m.delivered);
    let mut row = vec![
        label,
        si(rate),
        si(m.sent as f64 / secs),
        si(distinct as f64 / secs),
        format!("{:.2}", m.lat.p50_ms),
        format!("{:.2}", m.lat.p99_ms),
        format!("{:.2}", m.lat.p999_ms),
    ];
    if clustered {
        row.push(format!("{:.0}%", 100.0 * cross_share(m)));
        row.push(format!("{:.2}", m.remote_lat.p99_ms));
    }
    row.extend([
        m.lost.to_string(),
        m.duplicates.to_string(),
        opt(m.cpu.server_pct(), 0),
        format!("{:.0}", m.cpu.generator_pct()),
        if failed { "FAIL" } else { "ok" }.to_owned(),
    ]);
    row
}

/// The outcome: the headline, the parameters and the figures.
pub(super) fn report(
    args: &BenchArgs,
    plan: &Plan,
    setup: &Setup,
    ramp: Ramp,
    counters: &Counters,
    ctx: &Ctx,
) -> Outcome {
    let clustered = plan.clustered;
    let best = ramp.best;
    let headline = ramp_headline(
        best.map(|(r, p99)| {
            format!(
                "best sustained {} deliveries/s (p99 {p99:.1} ms{})",
                si(r),
                match ramp.best_remote_p99 {
                    Some(x) if clustered => format!(", cross-node p99 {x:.1} ms"),
                    _ => String::new(),
                }
            )
        }),
        ramp.stopped_because.as_deref(),
    );
    let mut params = json!({
        "channels": plan.channels,
        "subscribers_per_channel": plan.per_channel,
        "publishers": plan.publishers,
        "payload_bytes": args.payload_bytes,
        "step_secs": args.step_secs,
        "p99_bound_ms": plan.bound,
        "ramp_deliveries_per_sec": plan.rates,
    });
    let mut result = json!({
        "setup_secs": setup.secs,
        "setup_failed": setup.failed,
        "steps": ramp.steps,
        "best_sustained_deliveries_per_sec": best.map(|b| b.0),
        "best_sustained_p99_ms": best.map(|b| b.1),
        "stopped_because": ramp.stopped_because,
        "strays": counters.strays.load(Ordering::Relaxed),
    });
    if clustered {
        let remote_subscribers = plan.subscribers - plan.per_node_subscribers[0];
        params["nodes"] = json!(plan.nodes);
        params["urls"] = json!(args.url);
        params["pids"] = json!(args.pid);
        params["publisher_node"] = json!(1);
        params["subscribers_per_node"] = json!(plan.per_node_subscribers);
        params["cross_node_subscriber_share"] =
            json!(remote_subscribers as f64 / plan.subscribers.max(1) as f64);
        result["best_sustained_cross_node_p99_ms"] = json!(ramp.best_remote_p99);
    }
    Outcome {
        params,
        result,
        table: ramp.table,
        headline,
        failed: setup.failed > 0 || best.is_none(),
        errors: ctx.errors.clone(),
    }
}
