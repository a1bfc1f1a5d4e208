//! `ghosts`: a cluster node crashes under load; how long do its members haunt the others?
//!
//! N members are spread over the nodes (`--url` once per node) and `--channels` channels
//! ([`member_placement`]: every channel has members of every node), join at `--join-rate` and
//! track; every client keeps its presence view as phoenix.js does. Once every view holds its
//! whole channel, publishers on the surviving nodes start a background broadcast load
//! (`--background-rate` deliveries per second, aimed at all members, so the run is "under
//! load"); after `--warmup-secs` the generator kills the node `--kill-node` (its process
//! `--kill-pid`) with SIGKILL.
//!
//! Then, for every client of a surviving node: the time from the kill until its view held no
//! member of the killed node any more (its *clear time*). The run passes when every such view
//! cleared within the node timeout (`--node-timeout-secs`, the nodes' `--node-timeout`) plus
//! `--ghost-tolerance-ms`, and, one second after the last view cleared, no ghost came back and
//! no member of a surviving node is missing from any view (this final census is taken by every
//! client at once, after the publishers stopped and before any member closes: a member that
//! closes is a leave in the others' views). The tolerance covers what the
//! server's own deadline does not include: the presence window of the surviving nodes (the
//! leaves of a busy channel are merged over it) and the delivery of the leaves to every client
//! on a machine that is also running the load. The run stops by itself at 3 × the node timeout
//! + 10 s after the kill.
//!
//! Also reported: the first leave seen (when the reaper acted), the background load's
//! deliveries per second and latency before and after the kill, and the CPU of the processes
//! given with `--pid` from the kill to the end (the killed one is then `null`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use super::{
    CpuMeter, Ctx, Outcome, Schedule, bar, finish, hold, keepalive_timer, opt, tick, within,
};
use crate::client::{Client, ClientError, Target};
use crate::cluster::{Census, Roster, clearance, member_placement, per_node, quantile};
use crate::proto::{Event, Member, Protocol, Session, Stamp};
use crate::report::{Table, si};
use crate::stats;
use crate::view::View;
use crate::{BenchArgs, TargetKind};

/// One surviving client's (clear time, first leave seen, first survivor lost), in ms after
/// the kill.
type Times = (Option<f64>, Option<f64>, Option<f64>);

/// Shared state of the run.
#[derive(Debug)]
struct Shared {
    joined: AtomicUsize,
    failed: AtomicUsize,
    complete: AtomicUsize,
    last_join_us: AtomicU64,
    /// Set just before the kill: from then on a closed socket of the killed node is expected,
    /// and broadcasts carry phase 1.
    killed: AtomicBool,
    kill_us: AtomicU64,
    /// Members connected and not yet through their final census.
    holding: AtomicUsize,
    /// Clients of surviving nodes whose view is clear.
    cleared: AtomicUsize,
    /// Clients of surviving nodes that are still connected (watched).
    watched: AtomicUsize,
    /// Per surviving client: (clear time, first leave) in ms after the kill.
    /// Per surviving client: (clear time, first leave, first survivor lost) in ms after the
    /// kill.
    times: Mutex<Vec<Times>>,
    /// Views that lost a member of their channel after being complete, before the kill.
    lost_before_kill: AtomicUsize,
    /// Surviving members missing at the end, by the viewer's node and the missing member's
    /// node: `[viewer][member]`.
    missing_by_node: Mutex<Vec<Vec<u64>>>,
    /// Clients whose view got a ghost back after it had cleared.
    reappeared: AtomicU64,
    /// Final census, summed over the surviving views.
    ghosts_left: AtomicU64,
    survivors_missing: AtomicU64,
    /// Views that lack at least one surviving member at the end.
    views_missing: AtomicUsize,
    /// A few of the views that lack a surviving member at the end, and whom they lack.
    missing_samples: Mutex<Vec<String>>,
    /// Clients of the killed node whose socket closed after the kill (expected).
    killed_closed: AtomicUsize,
    /// Clients of surviving nodes lost after the kill (not expected).
    survivors_dropped: AtomicUsize,
    /// Background deliveries per phase (0: before the kill, 1: after).
    delivered: [AtomicU64; 2],
    sent: [AtomicU64; 2],
    latency: stats::Shared,
}

fn apply(view: &mut View, e: Event<'_>, lat: &mut Vec<(u32, u64)>, now: u64) -> bool {
    match e {
        Event::State(entries) => {
            view.apply_state(&entries);
            true
        }
        Event::Diff { joins, leaves } => {
            view.apply_diff(joins, leaves);
            true
        }
        Event::Broadcast(body) => {
            if let Some(st) = Stamp::find(body)
                && st.step < 2
            {
                lat.push((st.step, now.saturating_sub(st.sent_us)));
            }
            false
        }
        _ => false,
    }
}

/// The process's short name (`/proc/PID/comm`).
fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    if args.target != TargetKind::Headcount {
        bail!("ghosts needs a headcount cluster (--target headcount)");
    }
    let nodes = target.nodes.len();
    let kill_pid = args
        .kill_pid
        .context("ghosts needs --kill-pid, the process of the node to kill")?;
    let kill_node = match args.kill_node {
        Some(k) if (1..=nodes).contains(&k) => k - 1,
        Some(k) => bail!("--kill-node {k}: there are {nodes} --url"),
        None => nodes - 1,
    };
    if kill_pid == std::process::id() {
        bail!("--kill-pid is this process");
    }
    match process_name(kill_pid) {
        Some(name) if name.starts_with("headcount") => {}
        Some(name) => bail!("--kill-pid {kill_pid} is `{name}`, not a headcount server"),
        None => bail!("no process {kill_pid} (--kill-pid)"),
    }
    let n = args.members().max(nodes);
    let channels = args.channels.unwrap_or(1).max(1);
    let publishers = args.publishers.unwrap_or(channels.max(4)).max(1);
    let survivors_nodes: Vec<usize> = (0..nodes).filter(|&k| k != kill_node).collect();
    let timeout_secs = args.node_timeout_secs;
    let tolerance_ms = args.ghost_tolerance_ms;
    ctx.check_sockets(n + publishers)?;
    let rosters: Arc<Vec<Roster>> = Arc::new(
        (0..channels)
            .map(|c| Roster::new(n, nodes, channels, c, kill_node))
            .collect(),
    );
    let per_node_members = per_node(n, nodes, |i| member_placement(i, nodes, channels).0);
    let doomed = per_node_members[kill_node];
    let ctx = Arc::new(ctx);
    let shared = Arc::new(Shared {
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        last_join_us: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        kill_us: AtomicU64::new(0),
        holding: AtomicUsize::new(0),
        cleared: AtomicUsize::new(0),
        watched: AtomicUsize::new(0),
        times: Mutex::new(Vec::new()),
        lost_before_kill: AtomicUsize::new(0),
        missing_by_node: Mutex::new(vec![vec![0; nodes]; nodes]),
        reappeared: AtomicU64::new(0),
        ghosts_left: AtomicU64::new(0),
        survivors_missing: AtomicU64::new(0),
        missing_samples: Mutex::new(Vec::new()),
        views_missing: AtomicUsize::new(0),
        killed_closed: AtomicUsize::new(0),
        survivors_dropped: AtomicUsize::new(0),
        delivered: [AtomicU64::new(0), AtomicU64::new(0)],
        sent: [AtomicU64::new(0), AtomicU64::new(0)],
        latency: stats::Shared::new(2, 16),
    });
    // The end comes in three signals: publishers stop, then every member takes its final
    // census (before anyone leaves: a closing member is a leave in the others' views), then
    // the members close.
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let (census_tx, census_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);

    // Members join on schedule, as in presence-storm.
    let setup_started = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let pb = bar(n as u64, "views");
    let mut tasks = Vec::with_capacity(n + publishers);
    for i in 0..n {
        let (node, channel) = member_placement(i, nodes, channels);
        let member = Member {
            id: i as u32,
            room: format!("ghosts-{channel}"),
            track: true,
        };
        let at = start + Duration::from_secs_f64(i as f64 / args.join_rate);
        let (target, ctx, shared, rosters, pb) = (
            target.clone(),
            ctx.clone(),
            shared.clone(),
            rosters.clone(),
            pb.clone(),
        );
        let (mut census, mut stop) = (census_rx.clone(), stop_rx.clone());
        let on_killed_node = node == kill_node;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            shared
                .last_join_us
                .fetch_max(ctx.now_us(), Ordering::Relaxed);
            let roster = &rosters[channel];
            let mut view = View::new(n, ctx.buffers_diffs);
            let mut lat = Vec::new();
            let r = within(
                30.0,
                Client::establish_on(&target, node, &member, &mut |e| {
                    apply(&mut view, e, &mut lat, 0);
                }),
            )
            .await;
            lat.clear();
            let mut client = match r {
                Ok(c) => c,
                Err(e) => {
                    ctx.errors
                        .add(e.kind(), || format!("member {}: {e}", member.id));
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            shared.joined.fetch_add(1, Ordering::Relaxed);
            let watching = !on_killed_node;
            if watching {
                shared.watched.fetch_add(1, Ordering::Relaxed);
            }
            let mut complete = false;
            let mut cleared: Option<f64> = None;
            let mut first_leave: Option<f64> = None;
            let mut first_lost: Option<f64> = None;
            let mut lost_early = false;
            let mut check = |view: &View, now_us: u64| {
                if !complete && view.len() >= roster.len() {
                    complete = true;
                    shared.complete.fetch_add(1, Ordering::Relaxed);
                    pb.inc(1);
                }
                if !shared.killed.load(Ordering::Relaxed) {
                    if complete && !lost_early && view.len() < roster.len() {
                        lost_early = true;
                        shared.lost_before_kill.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                if !watching {
                    return;
                }
                let since_kill =
                    (now_us as f64 - shared.kill_us.load(Ordering::Relaxed) as f64) / 1000.0;
                let c: Census = roster.census(view);
                if first_leave.is_none() && c.ghosts < roster.doomed() {
                    first_leave = Some(since_kill);
                }
                if first_lost.is_none() && c.missing > 0 {
                    first_lost = Some(since_kill);
                }
                match (cleared, c.ghosts) {
                    (None, 0) => {
                        cleared = Some(since_kill);
                        shared.cleared.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some(_), g) if g > 0 => {
                        shared.reappeared.fetch_add(1, Ordering::Relaxed);
                        cleared = None;
                        shared.cleared.fetch_sub(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            };
            check(&view, ctx.now_us());
            let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(member.id));
            shared.holding.fetch_add(1, Ordering::Relaxed);
            let r = hold(&mut client, &mut census, &mut keepalive, |c| {
                let now = ctx.now_us();
                let mut presence = false;
                c.process(&mut |e| presence |= apply(&mut view, e, &mut lat, now))?;
                if !lat.is_empty() {
                    shared.latency.record_batch(member.id as usize, &lat);
                    for &(phase, _) in &lat {
                        shared.delivered[phase as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    lat.clear();
                }
                if presence {
                    check(&view, now);
                }
                Ok(())
            })
            .await;
            match r {
                Ok(()) => {
                    if watching {
                        let c = roster.census(&view);
                        if c.missing > 0 {
                            let lacking: Vec<u32> = (0..n as u32)
                                .filter(|&m| {
                                    member_placement(m as usize, nodes, channels).1 == channel
                                        && !roster.was_killed(m)
                                        && !view.contains(m)
                                })
                                .collect();
                            {
                                let mut by = shared
                                    .missing_by_node
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner());
                                for &m in &lacking {
                                    by[node][member_placement(m as usize, nodes, channels).0] += 1;
                                }
                            }
                            let missing: Vec<String> = lacking
                                .iter()
                                .map(|&m| {
                                    let on = member_placement(m as usize, nodes, channels).0;
                                    format!("m{m} (node {})", on + 1)
                                })
                                .collect();
                            let mut samples = shared
                                .missing_samples
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            shared.views_missing.fetch_add(1, Ordering::Relaxed);
                            if samples.len() < 10 {
                                let shown = missing.len().min(5);
                                samples.push(format!(
                                    "view of m{} (node {}, channel {channel}) lacks {} of {} \
                                     surviving members: {}{}",
                                    member.id,
                                    node + 1,
                                    missing.len(),
                                    roster.len() - roster.doomed(),
                                    missing[..shown].join(", "),
                                    if missing.len() > shown { ", ..." } else { "" }
                                ));
                            }
                        }
                        shared
                            .ghosts_left
                            .fetch_add(c.ghosts as u64, Ordering::Relaxed);
                        shared
                            .survivors_missing
                            .fetch_add(c.missing as u64, Ordering::Relaxed);
                        shared
                            .times
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((cleared, first_leave, first_lost));
                    }
                    shared.holding.fetch_sub(1, Ordering::Relaxed);
                    let _ = hold(&mut client, &mut stop, &mut keepalive, |c| {
                        c.process(&mut |_| {})
                    })
                    .await;
                    client.close().await;
                }
                Err(_) if on_killed_node && shared.killed.load(Ordering::Relaxed) => {
                    shared.holding.fetch_sub(1, Ordering::Relaxed);
                    shared.killed_closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.holding.fetch_sub(1, Ordering::Relaxed);
                    if watching {
                        shared.watched.fetch_sub(1, Ordering::Relaxed);
                        if shared.killed.load(Ordering::Relaxed) {
                            shared.survivors_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ctx.errors.add("dropped", || {
                        format!("member {} (node {}): {e}", member.id, node + 1)
                    });
                }
            }
        }));
    }

    // Wait for every view to hold its whole channel.
    let join_deadline = Duration::from_secs_f64(args.timeout_secs);
    let mut all_joined_at: Option<Instant> = None;
    let converged = loop {
        let complete = shared.complete.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let joined = shared.joined.load(Ordering::Relaxed);
        if failed > 0 {
            break false;
        }
        if complete >= n {
            break true;
        }
        if joined + failed >= n {
            let since = *all_joined_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= join_deadline {
                break false;
            }
        }
        pb.set_message(format!("joined {joined}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    pb.finish_and_clear();
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let convergence_after_last_join_ms =
        (ctx.now_us() as f64 - shared.last_join_us.load(Ordering::Relaxed) as f64) / 1000.0;

    // The background load: publishers on the surviving nodes.
    let (go_tx, go_rx) = watch::channel(None::<tokio::time::Instant>);
    let publishers_ready = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    if converged {
        for j in 0..publishers {
            let channel = j % channels;
            let on_channel = (0..publishers).filter(|p| p % channels == channel).count();
            // Each channel gets its members' share of the deliveries: `rate / n` messages
            // per second, split among its publishers.
            let per_publisher = args.background_rate / n as f64 / on_channel as f64;
            let node = survivors_nodes[j % survivors_nodes.len()];
            let member = Member {
                id: (n + j) as u32,
                room: format!("ghosts-{channel}"),
                track: false,
            };
            let (target, ctx, shared, ready, gate) = (
                target.clone(),
                ctx.clone(),
                shared.clone(),
                publishers_ready.clone(),
                gate.clone(),
            );
            let (mut stop, go) = (pub_stop_rx.clone(), go_rx.clone());
            let payload = args.payload_bytes;
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let r = within(
                    30.0,
                    Client::establish_on(&target, node, &member, &mut |_| {}),
                )
                .await;
                drop(permit);
                let mut client = match r {
                    Ok(c) => c,
                    Err(e) => {
                        ctx.errors.add(e.kind(), || format!("publisher {j}: {e}"));
                        return;
                    }
                };
                ready.fetch_add(1, Ordering::Relaxed);
                let r = background(
                    &mut client,
                    j as u32,
                    per_publisher,
                    payload,
                    go,
                    &mut stop,
                    &ctx,
                    &shared,
                )
                .await;
                match r {
                    Ok(()) => client.close().await,
                    Err(e) => ctx.errors.add("dropped", || format!("publisher {j}: {e}")),
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        super::wait_until(deadline, || {
            publishers_ready.load(Ordering::Relaxed) >= publishers || ctx.errors.total() > 0
        })
        .await;
    }
    let publishers_up = publishers_ready.load(Ordering::Relaxed);

    // Warm up under load, then kill.
    let mut killed = false;
    let mut kill_error = None;
    let mut before_secs = 0.0;
    let mut cpu_after = None;
    let mut kill_at = Instant::now();
    let deadline_secs = 3.0 * timeout_secs + 10.0;
    if converged && publishers_up == publishers {
        let t = tokio::time::Instant::now() + Duration::from_millis(20);
        let _ = go_tx.send(Some(t));
        let warm = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
        before_secs = warm.elapsed().as_secs_f64();
        eprintln!("killing node {} (pid {kill_pid})", kill_node + 1);
        let cpu = CpuMeter::start(&ctx);
        shared.kill_us.store(ctx.now_us(), Ordering::Relaxed);
        shared.killed.store(true, Ordering::Relaxed);
        kill_at = Instant::now();
        let pid = rustix::process::Pid::from_raw(kill_pid as i32).context("bad --kill-pid")?;
        match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            Ok(()) => killed = true,
            Err(e) => kill_error = Some(format!("kill {kill_pid}: {e}")),
        }
        if killed {
            let pb = bar(0, "clearing");
            let deadline = kill_at + Duration::from_secs_f64(deadline_secs);
            loop {
                let cleared = shared.cleared.load(Ordering::Relaxed);
                let watched = shared.watched.load(Ordering::Relaxed);
                pb.set_length(watched as u64);
                pb.set_position(cleared as u64);
                if (cleared >= watched && watched > 0) || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            pb.finish_and_clear();
            // Anything that comes back or goes missing late shows in the final census.
            let settle = Instant::now() + Duration::from_secs(1);
            while Instant::now() < settle.min(deadline) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cpu_after = Some(cpu.read(&ctx));
    }
    let after_secs = kill_at.elapsed().as_secs_f64();
    let _ = pub_stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = census_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    super::wait_until(deadline, || shared.holding.load(Ordering::Relaxed) == 0).await;
    let _ = stop_tx.send(true);
    finish(tasks).await;

    // The verdict.
    let times = std::mem::take(&mut *shared.times.lock().unwrap_or_else(|e| e.into_inner()));
    let clear: Vec<Option<f64>> = times.iter().map(|t| t.0).collect();
    let dropped = shared.survivors_dropped.load(Ordering::Relaxed);
    let mut verdict = clearance(
        &clear,
        timeout_secs,
        tolerance_ms,
        shared.ghosts_left.load(Ordering::Relaxed),
        shared.survivors_missing.load(Ordering::Relaxed),
    );
    verdict.passed &= killed && dropped == 0;
    let spread = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| {
            json!({
                "count": v.len(),
                "min_ms": quantile(&v, 0.0),
                "p50_ms": quantile(&v, 0.5),
                "max_ms": quantile(&v, 1.0),
            })
        })
    };
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
            kill_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
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
            opt(quantile(&first, 0.5), 0),
            opt(quantile(&first, 0.0), 0)
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
    if let Some(c) = &cpu_after {
        table.row(vec![
            "server CPU after the kill".into(),
            format!("{}%", opt(c.server_pct(), 0)),
        ]);
    }

    let headline = if !converged {
        format!(
            "not every view was complete before the kill ({} of {n}); nothing killed",
            shared.complete.load(Ordering::Relaxed)
        )
    } else if publishers_up < publishers {
        format!("{publishers_up} of {publishers} publishers set up; nothing killed")
    } else if !killed {
        kill_error.clone().unwrap_or_default()
    } else {
        format!(
            "{} of {} views cleared, max {} ms after the kill (bound {:.0} ms): {}",
            verdict.cleared,
            verdict.clients,
            opt(verdict.clear_max_ms, 0),
            verdict.bound_ms,
            if verdict.passed { "PASS" } else { "FAIL" }
        )
    };
    let failed = !verdict.passed;
    Ok(Outcome {
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
            "passed": verdict.passed,
        }),
        table,
        headline,
        failed,
        errors: ctx.errors.clone(),
    })
}

/// A background publisher: waits for the start, then publishes at `rate` messages per second
/// until the stop, each stamped with the phase (0 before the kill, 1 after) and the time it
/// was due.
#[allow(clippy::too_many_arguments)]
async fn background<S: Session>(
    client: &mut Client<S>,
    publisher: u32,
    rate: f64,
    payload: usize,
    mut go: watch::Receiver<Option<tokio::time::Instant>>,
    stop: &mut watch::Receiver<bool>,
    ctx: &Ctx,
    shared: &Shared,
) -> Result<(), ClientError> {
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(publisher));
    let start = loop {
        if let Some(t) = *go.borrow_and_update() {
            break t;
        }
        tokio::select! {
            changed = go.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.changed() => return Ok(()),
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
    };
    tokio::time::sleep_until(start).await;
    let schedule = Schedule::new(publisher, ctx.now_us(), rate);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut sent, mut seq) = (0u64, 0u64);
    let mut body = Vec::with_capacity(payload.max(32));
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            _ = ticker.tick() => {
                let due = schedule.due_by((tokio::time::Instant::now() - start).as_secs_f64());
                if due <= sent {
                    continue;
                }
                let phase = u32::from(shared.killed.load(Ordering::Relaxed));
                schedule.publish(client, publisher, sent..due, phase, &mut seq, &mut body, payload);
                client.flush().await?;
                shared.sent[phase as usize].fetch_add(due - sent, Ordering::Relaxed);
                sent = due;
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
