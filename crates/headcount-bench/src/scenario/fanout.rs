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
use tokio::time::MissedTickBehavior;

use super::{
    CpuMeter, Ctx, Next, Outcome, Schedule, bar, finish, hold, keepalive_timer, next_step, opt,
    ramp_headline, tick, wait_until, within,
};
use crate::BenchArgs;
use crate::client::{Client, ClientError, Target};
use crate::cluster::{per_node, subscriber_node};
use crate::proto::{Event, Member, Protocol, Session, Stamp};
use crate::report::{Table, si};
use crate::stats;

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

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let channels = args.channels.unwrap_or(1).max(1);
    let per_channel = args.subscribers.max(1);
    let publishers = args.publishers.unwrap_or(channels.max(10)).max(1);
    let subscribers = channels * per_channel;
    let nodes = target.nodes.len();
    let clustered = nodes > 1;
    let per_node_subscribers =
        per_node(subscribers, nodes, |i| subscriber_node(i, channels, nodes));
    let remote_subscribers = subscribers - per_node_subscribers[0];
    ctx.check_sockets(subscribers + publishers)?;
    let rates = args.ramp();
    let bound = args.p99_bound_ms();
    // A failed step is tried once more, so counters exist for twice as many attempts.
    let steps = 2 * rates.len();
    let ctx = Arc::new(ctx);
    let counters = Arc::new(Counters {
        sent: atomics(steps),
        finished: atomics(steps),
        delivered: atomics(steps),
        delivered_remote: atomics(steps),
        duplicates: atomics(steps),
        strays: AtomicU64::new(0),
        latency: stats::Shared::new(steps, 16),
        latency_remote: stats::Shared::new(if clustered { steps } else { 1 }, 16),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let pb = bar((subscribers + publishers) as u64, "connecting");
    let setup_started = Instant::now();
    let mut tasks = Vec::new();

    let publishers_per_channel = publishers.div_ceil(channels);
    for i in 0..subscribers + publishers {
        let is_publisher = i >= subscribers;
        let channel = if is_publisher {
            (i - subscribers) % channels
        } else {
            i % channels
        };
        let node = if is_publisher {
            0
        } else {
            subscriber_node(i, channels, nodes)
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
    let setup_deadline = setup_started + Duration::from_secs_f64(3.0 * args.timeout_secs);
    if !wait_until(setup_deadline, || {
        ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= subscribers + publishers
    })
    .await
    {
        let missing = subscribers + publishers
            - ready.load(Ordering::Relaxed)
            - failed.load(Ordering::Relaxed);
        failed.fetch_add(missing, Ordering::Relaxed);
        ctx.errors.add("setup", || {
            format!(
                "{missing} connections not set up in {:.0} s",
                3.0 * args.timeout_secs
            )
        });
    }
    pb.finish_with_message("set up");
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let setup_failed = failed.load(Ordering::Relaxed);

    let mut headers = vec![
        "step",
        "target/s",
        "sent/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
    ];
    if clustered {
        headers.extend(["x-node", "x-node p99"]);
    }
    headers.extend(["lost", "dup", "srv cpu%", "gen cpu%", ""]);
    let mut table = Table::new(&headers);
    let mut results = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut best_remote_p99: Option<f64> = None;
    let mut stopped_because = None;
    if setup_failed > 0 {
        stopped_because = Some(format!("{setup_failed} connections failed to set up"));
    }
    let ramp = bar(rates.len() as u64, "ramp");
    let (mut attempt, mut i, mut retrying) = (0usize, 0usize, false);
    while i < rates.len() {
        if stopped_because.is_some() {
            break;
        }
        let (k, rate) = (attempt, rates[i]);
        attempt += 1;
        ramp.set_message(format!("{}/s", si(rate)));
        let per_publisher = rate / per_channel as f64 / publishers as f64;
        let cpu = CpuMeter::start(&ctx);
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
        let step_cpu = cpu.read(&ctx);

        // Drain: wait for what was sent to arrive, or give up.
        let drain_until = Instant::now() + Duration::from_secs_f64((4.0 * bound / 1000.0).max(2.0));
        let (mut sent, mut delivered);
        loop {
            let finished = counters.finished[k].load(Ordering::Relaxed) as usize;
            sent = counters.sent[k].load(Ordering::Relaxed);
            delivered = counters.delivered[k].load(Ordering::Relaxed);
            let all_sent = finished + setup_failed >= publishers;
            if (all_sent && delivered >= sent * per_channel as u64) || Instant::now() >= drain_until
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything still in flight is now late: let it land in its own step's counters.
        tokio::time::sleep(Duration::from_millis(20)).await;
        delivered = counters.delivered[k].load(Ordering::Relaxed);
        let duplicates = counters.duplicates[k].load(Ordering::Relaxed);
        let distinct = delivered - duplicates.min(delivered);
        let expected = sent * per_channel as u64;
        let lost = expected.saturating_sub(distinct);
        let remote_lat = counters.latency_remote.merged(k);
        let mut all_lat = counters.latency.merged(k);
        all_lat.merge(&remote_lat);
        let lat = all_lat.summary();
        let remote_lat = remote_lat.summary();
        let delivered_remote = counters.delivered_remote[k].load(Ordering::Relaxed);
        let cross_share = delivered_remote as f64 / delivered.max(1) as f64;
        let secs = args.step_secs;
        let sent_rate = sent as f64 / secs;
        let delivered_rate = distinct as f64 / secs;
        let reason = if lost > 0 {
            Some(format!("{lost} deliveries lost"))
        } else if duplicates > 0 {
            Some(format!("{duplicates} duplicates"))
        } else if lat.p99_ms > bound {
            Some(format!("p99 {:.1} ms > {bound} ms", lat.p99_ms))
        } else if clustered && remote_lat.p99_ms > bound {
            Some(format!(
                "cross-node p99 {:.1} ms > {bound} ms",
                remote_lat.p99_ms
            ))
        } else {
            None
        };
        if reason.is_none() && best.is_none_or(|(b, _)| delivered_rate > b) {
            best = Some((delivered_rate, lat.p99_ms));
            best_remote_p99 = Some(remote_lat.p99_ms);
        }
        let mut row = vec![
            format!("{}{}", i + 1, if retrying { " again" } else { "" }),
            si(rate),
            si(sent_rate),
            si(delivered_rate),
            format!("{:.2}", lat.p50_ms),
            format!("{:.2}", lat.p99_ms),
            format!("{:.2}", lat.p999_ms),
        ];
        if clustered {
            row.push(format!("{:.0}%", 100.0 * cross_share));
            row.push(format!("{:.2}", remote_lat.p99_ms));
        }
        row.extend([
            lost.to_string(),
            duplicates.to_string(),
            opt(step_cpu.server_pct(), 0),
            format!("{:.0}", step_cpu.generator_pct()),
            if reason.is_some() { "FAIL" } else { "ok" }.to_owned(),
        ]);
        table.row(row);
        let mut step_json = json!({
            "step": i + 1,
            "attempt": k + 1,
            "retry": retrying,
            "target_deliveries_per_sec": rate,
            "publish_rate_per_sec": sent_rate,
            "deliveries_per_sec": delivered_rate,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "lost": lost,
            "duplicates": duplicates,
            "latency": lat,
            "cpu": step_cpu,
            "server_cpu_pct": step_cpu.server_pct(),
            "generator_cpu_pct": step_cpu.generator_pct(),
            "passed": reason.is_none(),
            "failure": reason,
        });
        if clustered {
            step_json["cross_node_share"] = json!(cross_share);
            step_json["cross_node_delivered"] = json!(delivered_remote);
            step_json["cross_node_latency"] = json!(remote_lat);
            step_json["server_cpu_pct_per_pid"] = json!(step_cpu.server_pct_per_pid());
        }
        results.push(step_json);
        match next_step(reason, &mut retrying, i, rate) {
            Next::Retry => {}
            Next::Advance => {
                i += 1;
                ramp.inc(1);
            }
            Next::Stop(why) => stopped_because = Some(why),
        }
    }
    ramp.finish_and_clear();
    let _ = stop_tx.send(true);
    finish(tasks).await;

    let headline = ramp_headline(
        best.map(|(r, p99)| {
            format!(
                "best sustained {} deliveries/s (p99 {p99:.1} ms{})",
                si(r),
                match best_remote_p99 {
                    Some(x) if clustered => format!(", cross-node p99 {x:.1} ms"),
                    _ => String::new(),
                }
            )
        }),
        stopped_because.as_deref(),
    );
    let mut params = json!({
        "channels": channels,
        "subscribers_per_channel": per_channel,
        "publishers": publishers,
        "payload_bytes": args.payload_bytes,
        "step_secs": args.step_secs,
        "p99_bound_ms": bound,
        "ramp_deliveries_per_sec": rates,
    });
    let mut result = json!({
        "setup_secs": setup_secs,
        "setup_failed": setup_failed,
        "steps": results,
        "best_sustained_deliveries_per_sec": best.map(|b| b.0),
        "best_sustained_p99_ms": best.map(|b| b.1),
        "stopped_because": stopped_because,
        "strays": counters.strays.load(Ordering::Relaxed),
    });
    if clustered {
        params["nodes"] = json!(nodes);
        params["urls"] = json!(args.url);
        params["pids"] = json!(args.pid);
        params["publisher_node"] = json!(1);
        params["subscribers_per_node"] = json!(per_node_subscribers);
        params["cross_node_subscriber_share"] =
            json!(remote_subscribers as f64 / subscribers.max(1) as f64);
        result["best_sustained_cross_node_p99_ms"] = json!(best_remote_p99);
    }
    Ok(Outcome {
        params,
        result,
        table,
        headline,
        failed: setup_failed > 0 || best.is_none(),
        errors: ctx.errors.clone(),
    })
}

/// A subscriber's bookkeeping.
struct Subscriber {
    conn: usize,
    /// On another node than the publishers.
    remote: bool,
    channel: usize,
    channels: usize,
    /// The last sequence number of each publisher of the channel (publisher / channels).
    last: Vec<u64>,
    /// `(step, latency µs)` of this read, recorded at once.
    batch: Vec<(u32, u64)>,
}

impl Subscriber {
    fn on_batch<S: Session>(
        &mut self,
        client: &mut Client<S>,
        ctx: &Ctx,
        counters: &Counters,
    ) -> Result<(), ClientError> {
        let now = ctx.now_us();
        let steps = counters.delivered.len();
        client.process(&mut |e| {
            let Event::Broadcast(body) = e else { return };
            match Stamp::find(body) {
                Some(st)
                    if st.publisher as usize % self.channels == self.channel
                        && (st.step as usize) < steps =>
                {
                    let slot = st.publisher as usize / self.channels;
                    if slot >= self.last.len() {
                        self.last.resize(slot + 1, 0);
                    }
                    if st.seq <= self.last[slot] {
                        counters.duplicates[st.step as usize].fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.last[slot] = st.seq;
                    }
                    self.batch.push((st.step, now.saturating_sub(st.sent_us)));
                }
                _ => {
                    counters.strays.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
        if !self.batch.is_empty() {
            if self.remote {
                counters.latency_remote.record_batch(self.conn, &self.batch);
            } else {
                counters.latency.record_batch(self.conn, &self.batch);
            }
            let mut i = 0;
            while i < self.batch.len() {
                let step = self.batch[i].0;
                let run = self.batch[i..].iter().take_while(|b| b.0 == step).count();
                counters.delivered[step as usize].fetch_add(run as u64, Ordering::Relaxed);
                if self.remote {
                    counters.delivered_remote[step as usize]
                        .fetch_add(run as u64, Ordering::Relaxed);
                }
                i += run;
            }
            self.batch.clear();
        }
        Ok(())
    }
}

/// A publisher: idle between steps (answering the server), paced during them.
async fn publish<S: Session>(
    client: &mut Client<S>,
    publisher: u32,
    payload: usize,
    mut phase: watch::Receiver<Phase>,
    stop: &mut watch::Receiver<bool>,
    ctx: &Ctx,
    counters: &Counters,
) -> Result<(), ClientError> {
    let mut seq = 0u64;
    let mut body = Vec::with_capacity(payload.max(32));
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(publisher));
    let mut done: Option<u32> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let current = *phase.borrow_and_update();
        if let Phase::Step {
            index,
            per_publisher,
            start,
            end,
        } = current
            && done != Some(index)
        {
            done = Some(index);
            tokio::time::sleep_until(start).await;
            let schedule = Schedule::new(publisher, ctx.now_us(), per_publisher);
            let last = schedule.due_by((end - start).as_secs_f64());
            let period = Duration::from_secs_f64((1.0 / per_publisher).clamp(0.001, 0.005));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut sent = 0u64;
            while sent < last {
                tokio::select! {
                    _ = ticker.tick() => {
                        let now = tokio::time::Instant::now();
                        let due = if now >= end {
                            last
                        } else {
                            schedule.due_by((now - start).as_secs_f64()).min(last)
                        };
                        if due <= sent {
                            continue;
                        }
                        schedule.publish(client, publisher, sent..due, index, &mut seq, &mut body, payload);
                        client.flush().await?;
                        counters.sent[index as usize].fetch_add(due - sent, Ordering::Relaxed);
                        sent = due;
                    }
                    r = client.read() => {
                        r?;
                        client.process(&mut |_| {})?;
                        client.flush().await?;
                    }
                }
            }
            counters.finished[index as usize].fetch_add(1, Ordering::Relaxed);
            continue;
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            r = client.read() => {
                r?;
                client.process(&mut |_| {})?;
                client.flush().await?;
            }
            () = tick(&mut keepalive) => {
                client.session.keepalive(&mut client.out);
                client.flush().await?;
            }
        }
    }
}
