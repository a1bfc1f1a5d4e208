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
use tokio::sync::{Semaphore, watch};

mod member;
mod report;
mod verdict;

use super::publisher::{Pace, Publisher, idle};
use super::{CpuMeter, CpuUse, Ctx, Outcome, bar, finish, keepalive_timer, within};
use crate::client::{Client, ClientError, Target};
use crate::cluster::{Roster, member_placement, per_node};
use crate::proto::{Event, Member, Protocol, Session, Stamp};
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

impl Shared {
    fn new(nodes: usize) -> Shared {
        Shared {
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
        }
    }
}

/// Where the members are: `n` members over `nodes` nodes and `channels` channels, node
/// `kill_node` (from 0) to be killed.
#[derive(Clone, Copy, Debug)]
struct Place {
    n: usize,
    nodes: usize,
    channels: usize,
    kill_node: usize,
}

/// The shape of a run, from the arguments, checked.
#[derive(Debug)]
struct Plan {
    place: Place,
    kill_pid: u32,
    publishers: usize,
    survivors_nodes: Vec<usize>,
    per_node_members: Vec<usize>,
    deadline_secs: f64,
}

/// Checks the arguments and places the members.
fn plan<P: Protocol>(target: &Target<P>, args: &BenchArgs) -> anyhow::Result<Plan> {
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
    Ok(Plan {
        place: Place {
            n,
            nodes,
            channels,
            kill_node,
        },
        kill_pid,
        publishers: args.publishers.unwrap_or(channels.max(4)).max(1),
        survivors_nodes: (0..nodes).filter(|&k| k != kill_node).collect(),
        per_node_members: per_node(n, nodes, |i| member_placement(i, nodes, channels).0),
        deadline_secs: 3.0 * args.node_timeout_secs + 10.0,
    })
}

/// How the join went.
#[derive(Clone, Copy, Debug)]
struct Settled {
    converged: bool,
    setup_secs: f64,
    convergence_after_last_join_ms: f64,
}

/// What the warm-up and the kill found.
#[derive(Debug, Default)]
struct Fault {
    killed: bool,
    kill_error: Option<String>,
    before_secs: f64,
    after_secs: f64,
    cpu_after: Option<CpuUse>,
}

/// Runs the scenario.
pub async fn run<P: Protocol>(
    target: Arc<Target<P>>,
    args: &BenchArgs,
    ctx: Ctx,
) -> anyhow::Result<Outcome> {
    let plan = plan(&target, args)?;
    let Place {
        n,
        nodes,
        channels,
        kill_node,
    } = plan.place;
    ctx.check_sockets(n + plan.publishers)?;
    let rosters: Arc<Vec<Roster>> = Arc::new(
        (0..channels)
            .map(|c| Roster::new(n, nodes, channels, c, kill_node))
            .collect(),
    );
    let ctx = Arc::new(ctx);
    let shared = Arc::new(Shared::new(nodes));
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
    let mut tasks = Vec::with_capacity(n + plan.publishers);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / args.join_rate);
        let task = member::Task {
            target: target.clone(),
            ctx: ctx.clone(),
            shared: shared.clone(),
            rosters: rosters.clone(),
            pb: pb.clone(),
            census: census_rx.clone(),
            stop: stop_rx.clone(),
            place: plan.place,
        };
        tasks.push(tokio::spawn(member::member(i, at, task)));
    }
    let settled = settle(args, n, &ctx, &shared, &pb, setup_started).await;

    let (go_tx, go_rx) = watch::channel(None::<tokio::time::Instant>);
    let signals = Signals {
        go: go_rx,
        stop: pub_stop_rx,
    };
    let publishers_up = if settled.converged {
        load(&target, args, &plan, &ctx, &shared, &mut tasks, &signals).await
    } else {
        0
    };
    let mut fault = Fault::default();
    let mut kill_at = Instant::now();
    if settled.converged && publishers_up == plan.publishers {
        let t = tokio::time::Instant::now() + Duration::from_millis(20);
        let _ = go_tx.send(Some(t));
        (fault, kill_at) = kill(args, &plan, &ctx, &shared).await?;
    }
    fault.after_secs = kill_at.elapsed().as_secs_f64();
    let _ = pub_stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = census_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    super::wait_until(deadline, || shared.holding.load(Ordering::Relaxed) == 0).await;
    let _ = stop_tx.send(true);
    finish(tasks).await;
    Ok(report::outcome(
        args,
        &plan,
        &settled,
        publishers_up,
        fault,
        &shared,
        &ctx,
    ))
}

/// Waits for every view to hold its whole channel (or a failure, or the time given).
async fn settle(
    args: &BenchArgs,
    n: usize,
    ctx: &Ctx,
    shared: &Shared,
    pb: &indicatif::ProgressBar,
    setup_started: Instant,
) -> Settled {
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
    Settled {
        converged,
        setup_secs: setup_started.elapsed().as_secs_f64(),
        convergence_after_last_join_ms: (ctx.now_us() as f64
            - shared.last_join_us.load(Ordering::Relaxed) as f64)
            / 1000.0,
    }
}

/// When the background publishers start (`None` until then) and stop.
struct Signals {
    go: watch::Receiver<Option<tokio::time::Instant>>,
    stop: watch::Receiver<bool>,
}

/// The background load: connects the publishers on the surviving nodes; returns how many
/// are up.
async fn load<P: Protocol>(
    target: &Arc<Target<P>>,
    args: &BenchArgs,
    plan: &Plan,
    ctx: &Arc<Ctx>,
    shared: &Arc<Shared>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    signals: &Signals,
) -> usize {
    let (n, channels, publishers) = (plan.place.n, plan.place.channels, plan.publishers);
    let publishers_ready = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    for j in 0..publishers {
        let channel = j % channels;
        let on_channel = (0..publishers).filter(|p| p % channels == channel).count();
        // Each channel gets its members' share of the deliveries: `rate / n` messages
        // per second, split among its publishers.
        let per_publisher = args.background_rate / n as f64 / on_channel as f64;
        let node = plan.survivors_nodes[j % plan.survivors_nodes.len()];
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
        let (mut stop, go) = (signals.stop.clone(), signals.go.clone());
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
            let share = Share {
                publisher: j as u32,
                rate: per_publisher,
                payload,
            };
            let r = background(&mut client, share, go, &mut stop, &ctx, &shared).await;
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
    publishers_ready.load(Ordering::Relaxed)
}

/// Warms up under load, kills the node, and waits until every surviving view cleared (or
/// the deadline), then one second more; returns what happened and when the kill was.
async fn kill(
    args: &BenchArgs,
    plan: &Plan,
    ctx: &Ctx,
    shared: &Shared,
) -> anyhow::Result<(Fault, Instant)> {
    let mut fault = Fault::default();
    let kill_pid = plan.kill_pid;
    let warm = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    fault.before_secs = warm.elapsed().as_secs_f64();
    eprintln!("killing node {} (pid {kill_pid})", plan.place.kill_node + 1);
    let cpu = CpuMeter::start(ctx);
    shared.kill_us.store(ctx.now_us(), Ordering::Relaxed);
    shared.killed.store(true, Ordering::Relaxed);
    let kill_at = Instant::now();
    let pid = rustix::process::Pid::from_raw(kill_pid as i32).context("bad --kill-pid")?;
    match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
        Ok(()) => fault.killed = true,
        Err(e) => fault.kill_error = Some(format!("kill {kill_pid}: {e}")),
    }
    if fault.killed {
        let pb = bar(0, "clearing");
        let deadline = kill_at + Duration::from_secs_f64(plan.deadline_secs);
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
    fault.cpu_after = Some(cpu.read(ctx));
    Ok((fault, kill_at))
}

/// One background publisher's part of the load.
#[derive(Clone, Copy, Debug)]
struct Share {
    publisher: u32,
    /// Messages per second.
    rate: f64,
    /// Bytes per message.
    payload: usize,
}

/// A background publisher: waits for the start, then publishes at its share's rate until the
/// stop, each message stamped with the phase (0 before the kill, 1 after) and the time it was
/// due.
async fn background<S: Session>(
    client: &mut Client<S>,
    share: Share,
    mut go: watch::Receiver<Option<tokio::time::Instant>>,
    stop: &mut watch::Receiver<bool>,
    ctx: &Ctx,
    shared: &Shared,
) -> Result<(), ClientError> {
    let Share {
        publisher,
        rate,
        payload,
    } = share;
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(publisher));
    let start = loop {
        if let Some(t) = *go.borrow_and_update() {
            break t;
        }
        if !idle(client, &mut go, stop, &mut keepalive).await? {
            return Ok(());
        }
    };
    let pace = Pace {
        rate,
        start,
        period: Duration::from_millis(5),
        until: None,
    };
    let phase = || u32::from(shared.killed.load(Ordering::Relaxed));
    Publisher::new(publisher, payload)
        .paced(
            client,
            ctx,
            pace,
            stop.changed(),
            &mut keepalive,
            phase,
            |phase, n| {
                shared.sent[phase as usize].fetch_add(n, Ordering::Relaxed);
            },
        )
        .await
}
