//! `fanout`: C channels × S subscribers, P publishers spread over the channels, at a rate of
//! deliveries per second that climbs step by step.
//!
//! Every broadcast body starts with a [`Stamp`] (publisher, sequence number, send time, step).
//! A subscriber keeps the last sequence number of each publisher of its channel: a number not
//! above the last is a duplicate; the losses of a step are the deliveries expected
//! (messages sent × subscribers of their channel) less the distinct ones that arrived before
//! the step's drain ended. Latency = receive time − send time, both read from the same clock
//! of this process. The send time is when the message was *due*, not when the publisher got
//! to write it, so a publisher held back by a slow server shows as latency instead of quietly
//! lowering the rate. A step passes with no loss, no duplicate and p99 within the bound. A step
//! that fails is run once more (on a shared machine a neighbour's burst can spoil one step);
//! the ramp stops at a step that fails twice in a row.
//!
//! Against a cluster (`--url` once per node) the subscribers of each channel are dealt
//! round-robin over the nodes and every publisher connects to the first node, so a delivery to
//! a subscriber of any other node has crossed Redis. Those deliveries are counted and timed
//! apart ("cross-node"), and a step then also needs their p99 within the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::publisher::{Pace, Publisher, idle};
use super::{
    CpuMeter, CpuUse, Ctx, Next, Outcome, Schedule, bar, finish, hold, keepalive_timer, next_step,
    opt, ramp_headline, wait_until, within,
};
use crate::BenchArgs;
use crate::client::{Client, ClientError, Target};
use crate::cluster::{per_node, subscriber_node};
use crate::proto::{Event, Member, Protocol, Session, Stamp};
use crate::report::{Table, si};
use crate::stats;

mod report;
mod subscriber;

use report::{cross_share, report, step_row, step_verdict};
use subscriber::{Subscriber, publish};

/// What the publishers are told to do.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Nothing: between steps.
    Idle,
    /// Publish at `per_publisher` messages per second from `start` to `end`.
    Step {
        index: u32,
        per_publisher: f64,
        start: tokio::time::Instant,
        end: tokio::time::Instant,
    },
}

/// Counters shared by every connection, per step.
#[derive(Debug)]
struct Counters {
    sent: Vec<AtomicU64>,
    /// Publishers done with the step.
    finished: Vec<AtomicU64>,
    delivered: Vec<AtomicU64>,
    /// Deliveries to subscribers of another node than the publishers'.
    delivered_remote: Vec<AtomicU64>,
    duplicates: Vec<AtomicU64>,
    strays: AtomicU64,
    /// Latency of the deliveries on the publishers' node (all of them, with one server).
    latency: stats::Shared,
    /// Latency of the cross-node deliveries.
    latency_remote: stats::Shared,
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// The shape of a run, from the arguments.
#[derive(Debug)]
struct Plan {
    channels: usize,
    per_channel: usize,
    publishers: usize,
    subscribers: usize,
    nodes: usize,
    clustered: bool,
    per_node_subscribers: Vec<usize>,
    rates: Vec<f64>,
    bound: f64,
}

impl Plan {
    fn new(args: &BenchArgs, nodes: usize) -> Plan {
        let channels = args.channels.unwrap_or(1).max(1);
        let per_channel = args.subscribers.max(1);
        let subscribers = channels * per_channel;
        Plan {
            channels,
            per_channel,
            publishers: args.publishers.unwrap_or(channels.max(10)).max(1),
            subscribers,
            nodes,
            clustered: nodes > 1,
            per_node_subscribers: per_node(subscribers, nodes, |i| {
                subscriber_node(i, channels, nodes)
            }),
            rates: args.ramp(),
            bound: args.p99_bound_ms(),
        }
    }

    fn connections(&self) -> usize {
        self.subscribers + self.publishers
    }
}

impl Counters {
    fn new(steps: usize, clustered: bool) -> Counters {
        Counters {
            sent: atomics(steps),
            finished: atomics(steps),
            delivered: atomics(steps),
            delivered_remote: atomics(steps),
            duplicates: atomics(steps),
            strays: AtomicU64::new(0),
            latency: stats::Shared::new(steps, 16),
            latency_remote: stats::Shared::new(if clustered { steps } else { 1 }, 16),
        }
    }
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let plan = Plan::new(args, target.nodes.len());
    ctx.check_sockets(plan.connections())?;
    let ctx = Arc::new(ctx);
    // A failed step is tried once more, so counters exist for twice as many attempts.
    let counters = Arc::new(Counters::new(2 * plan.rates.len(), plan.clustered));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let mut setup = connect(&target, args, &plan, &ctx, &counters, &stop_rx, &phase_rx).await;
    let load = Load {
        args,
        plan: &plan,
        ctx: &ctx,
        counters: &counters,
        phase_tx: &phase_tx,
        setup_failed: setup.failed,
    };
    let ramp = ramp(&load).await;
    let _ = stop_tx.send(true);
    finish(std::mem::take(&mut setup.tasks)).await;
    Ok(report(args, &plan, &setup, ramp, &counters, &ctx))
}

/// The connections, once set up.
struct Setup {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    secs: f64,
    failed: usize,
}

/// Places and connects every subscriber and publisher, and waits until each is set up or
/// failed (or the set-up time is over).
async fn connect<P: Protocol>(
    target: &Arc<Target<P>>,
    args: &BenchArgs,
    plan: &Plan,
    ctx: &Arc<Ctx>,
    counters: &Arc<Counters>,
    stop_rx: &watch::Receiver<bool>,
    phase_rx: &watch::Receiver<Phase>,
) -> Setup {
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let pb = bar(plan.connections() as u64, "connecting");
    let started = Instant::now();
    let mut tasks = Vec::new();
    let publishers_per_channel = plan.publishers.div_ceil(plan.channels);
    let (subscribers, channels) = (plan.subscribers, plan.channels);
    for i in 0..plan.connections() {
        let is_publisher = i >= subscribers;
        let channel = if is_publisher {
            (i - subscribers) % channels
        } else {
            i % channels
        };
        let node = if is_publisher {
            0
        } else {
            subscriber_node(i, channels, plan.nodes)
        };
        let member = Member {
            id: i as u32,
            room: format!("fanout-{channel}"),
            track: false,
        };
        let (target, ctx, gate, ready, failed, pb, counters) = (
            target.clone(),
            ctx.clone(),
            gate.clone(),
            ready.clone(),
            failed.clone(),
            pb.clone(),
            counters.clone(),
        );
        let (mut stop, phase) = (stop_rx.clone(), phase_rx.clone());
        let (timeout, payload) = (args.timeout_secs, args.payload_bytes);
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let r = within(
                timeout,
                Client::establish_on(&target, node, &member, &mut |_| {}),
            )
            .await;
            drop(permit);
            pb.inc(1);
            let mut client = match r {
                Ok(c) => c,
                Err(e) => {
                    ctx.errors
                        .add(e.kind(), || format!("member {}: {e}", member.id));
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(member.id));
            let r = if is_publisher {
                let publisher = (i - subscribers) as u32;
                publish(
                    &mut client,
                    publisher,
                    payload,
                    phase,
                    &mut stop,
                    &ctx,
                    &counters,
                )
                .await
            } else {
                let mut sub = Subscriber {
                    conn: i,
                    remote: node != 0,
                    channel,
                    channels,
                    last: vec![0; publishers_per_channel],
                    batch: Vec::with_capacity(256),
                };
                hold(&mut client, &mut stop, &mut keepalive, |c| {
                    sub.on_batch(c, &ctx, &counters)
                })
                .await
            };
            match r {
                Ok(()) => client.close().await,
                Err(e) => ctx.errors.add("dropped", || {
                    format!("member {} during the run: {e}", member.id)
                }),
            }
        }));
    }
    let all = plan.connections();
    let setup_deadline = started + Duration::from_secs_f64(3.0 * args.timeout_secs);
    if !wait_until(setup_deadline, || {
        ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= all
    })
    .await
    {
        let missing = all - ready.load(Ordering::Relaxed) - failed.load(Ordering::Relaxed);
        failed.fetch_add(missing, Ordering::Relaxed);
        ctx.errors.add("setup", || {
            format!(
                "{missing} connections not set up in {:.0} s",
                3.0 * args.timeout_secs
            )
        });
    }
    pb.finish_with_message("set up");
    Setup {
        tasks,
        secs: started.elapsed().as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
    }
}

/// What the ramp found.
struct Ramp {
    table: Table,
    steps: Vec<serde_json::Value>,
    /// The best passing step's delivery rate and p99.
    best: Option<(f64, f64)>,
    best_remote_p99: Option<f64>,
    stopped_because: Option<String>,
}

/// One step's figures.
struct Measured {
    sent: u64,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    lost: u64,
    delivered_remote: u64,
    lat: stats::LatencySummary,
    remote_lat: stats::LatencySummary,
    cpu: CpuUse,
}

/// What the steps of the ramp drive and read: the publishers through `phase_tx`, the
/// deliveries through `counters`.
struct Load<'a> {
    args: &'a BenchArgs,
    plan: &'a Plan,
    ctx: &'a Ctx,
    counters: &'a Counters,
    phase_tx: &'a watch::Sender<Phase>,
    /// Connections that failed to set up: their publishers never finish a step.
    setup_failed: usize,
}

/// Runs the steps of the ramp, each retried once when it fails.
async fn ramp(load: &Load<'_>) -> Ramp {
    let (args, plan, setup_failed) = (load.args, load.plan, load.setup_failed);
    let mut headers = vec![
        "step",
        "target/s",
        "sent/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
    ];
    if plan.clustered {
        headers.extend(["x-node", "x-node p99"]);
    }
    headers.extend(["lost", "dup", "srv cpu%", "gen cpu%", ""]);
    let mut out = Ramp {
        table: Table::new(&headers),
        steps: Vec::new(),
        best: None,
        best_remote_p99: None,
        stopped_because: (setup_failed > 0)
            .then(|| format!("{setup_failed} connections failed to set up")),
    };
    let rates = &plan.rates;
    let pb = bar(rates.len() as u64, "ramp");
    let (mut attempt, mut i, mut retrying) = (0usize, 0usize, false);
    while i < rates.len() {
        if out.stopped_because.is_some() {
            break;
        }
        let (k, rate) = (attempt, rates[i]);
        attempt += 1;
        pb.set_message(format!("{}/s", si(rate)));
        let m = step(load, k, rate).await;
        let secs = args.step_secs;
        let delivered_rate = (m.delivered - m.duplicates.min(m.delivered)) as f64 / secs;
        let reason = step_verdict(&m, plan.bound, plan.clustered);
        if reason.is_none() && out.best.is_none_or(|(b, _)| delivered_rate > b) {
            out.best = Some((delivered_rate, m.lat.p99_ms));
            out.best_remote_p99 = Some(m.remote_lat.p99_ms);
        }
        let label = format!("{}{}", i + 1, if retrying { " again" } else { "" });
        out.table.row(step_row(
            label,
            rate,
            secs,
            &m,
            plan.clustered,
            reason.is_some(),
        ));
        let mut step_json = json!({
            "step": i + 1,
            "attempt": k + 1,
            "retry": retrying,
            "target_deliveries_per_sec": rate,
            "publish_rate_per_sec": m.sent as f64 / secs,
            "deliveries_per_sec": delivered_rate,
            "sent": m.sent,
            "expected": m.expected,
            "delivered": m.delivered,
            "lost": m.lost,
            "duplicates": m.duplicates,
            "latency": m.lat,
            "cpu": m.cpu,
            "server_cpu_pct": m.cpu.server_pct(),
            "generator_cpu_pct": m.cpu.generator_pct(),
            "passed": reason.is_none(),
            "failure": reason,
        });
        if plan.clustered {
            step_json["cross_node_share"] = json!(cross_share(&m));
            step_json["cross_node_delivered"] = json!(m.delivered_remote);
            step_json["cross_node_latency"] = json!(m.remote_lat);
            step_json["server_cpu_pct_per_pid"] = json!(m.cpu.server_pct_per_pid());
        }
        out.steps.push(step_json);
        match next_step(reason, &mut retrying, i, rate) {
            Next::Retry => {}
            Next::Advance => {
                i += 1;
                pb.inc(1);
            }
            Next::Stop(why) => out.stopped_because = Some(why),
        }
    }
    pb.finish_and_clear();
    out
}

/// Attempt `k` at `rate` deliveries per second: the load, then the drain, then the count.
async fn step(load: &Load<'_>, k: usize, rate: f64) -> Measured {
    let Load {
        args,
        plan,
        ctx,
        counters,
        phase_tx,
        setup_failed,
    } = *load;
    let per_publisher = rate / plan.per_channel as f64 / plan.publishers as f64;
    let cpu = CpuMeter::start(ctx);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(args.step_secs);
    let _ = phase_tx.send(Phase::Step {
        index: k as u32,
        per_publisher,
        start,
        end,
    });
    tokio::time::sleep_until(end).await;
    let _ = phase_tx.send(Phase::Idle);
    let cpu = cpu.read(ctx);

    // Drain: wait for what was sent to arrive, or give up.
    let per_channel = plan.per_channel as u64;
    let drain_until =
        Instant::now() + Duration::from_secs_f64((4.0 * plan.bound / 1000.0).max(2.0));
    let sent = loop {
        let finished = counters.finished[k].load(Ordering::Relaxed) as usize;
        let sent = counters.sent[k].load(Ordering::Relaxed);
        let delivered = counters.delivered[k].load(Ordering::Relaxed);
        let all_sent = finished + setup_failed >= plan.publishers;
        if (all_sent && delivered >= sent * per_channel) || Instant::now() >= drain_until {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Anything still in flight is now late: let it land in its own step's counters.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let delivered = counters.delivered[k].load(Ordering::Relaxed);
    let duplicates = counters.duplicates[k].load(Ordering::Relaxed);
    let distinct = delivered - duplicates.min(delivered);
    let expected = sent * per_channel;
    let remote_lat = counters.latency_remote.merged(k);
    let mut all_lat = counters.latency.merged(k);
    all_lat.merge(&remote_lat);
    Measured {
        sent,
        expected,
        delivered,
        duplicates,
        lost: expected.saturating_sub(distinct),
        delivered_remote: counters.delivered_remote[k].load(Ordering::Relaxed),
        lat: all_lat.summary(),
        remote_lat: remote_lat.summary(),
        cpu,
    }
}
