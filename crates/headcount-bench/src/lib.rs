//! The headcount load generator: `headcount bench SCENARIO`.
//!
//! Bounded, self-stopping workloads against a server on this machine (headcount, or one of the
//! peers it is compared with), with a progress bar on stderr, a summary table on stdout and
//! JSON results that carry the command line and the machine's facts. Every scenario runs the
//! same workload against every target through one adapter trait; only the wire differs.
//!
//! Modules:
//! * [`args`]: [`BenchArgs`], the command line;
//! * [`ws`]: a minimal WebSocket client (raw frames, one buffer per socket);
//! * [`proto`]: the protocol adapters: headcount (Phoenix/Supabase Realtime), socket.io, Yjs
//!   (y-websocket), XMPP (Prosody);
//! * [`client`]: one connection of any protocol, from connect to joined and tracked;
//! * [`view`]: a client's presence view, kept as phoenix.js keeps it;
//! * [`scenario`]: `idle`, `fanout`, `presence-storm`, `join-rate`, `ghosts`;
//! * [`cluster`]: how a run spreads its clients over the nodes of a cluster;
//! * [`stats`], [`sys`], [`report`]: histograms, /proc, results.
//!
//! The generator runs on the same machine as the server, so every result also reports the
//! generator's own CPU time beside the server's: a step where the generator is the busier
//! process says so.

pub mod args;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod sys;
pub mod view;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use headcount_protocol::Serializer;

pub use args::{BenchArgs, Scenario, TargetKind};

use crate::client::{Node, Target};
use crate::proto::Protocol;
use crate::proto::phoenix::Phoenix;
use crate::proto::socketio::SocketIo;
use crate::proto::xmpp::Xmpp;
use crate::proto::yjs::Yjs;
use crate::report::{Errors, Report};
use crate::scenario::{Ctx, Outcome};

/// Runs `args` on a new multi-threaded runtime (`--threads` workers, default one per core).
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    builder.build()?.block_on(run(args))
}

/// Runs one scenario against one target, prints the summary and writes the JSON results.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let nofile = sys::raise_nofile_limit();
    let nodes: Vec<Node> = args
        .servers()?
        .into_iter()
        .map(|(addr, host)| Node { addr, host })
        .collect();
    if nodes.len() > 1 && !matches!(args.scenario, Scenario::Fanout | Scenario::Ghosts) {
        bail!(
            "{} runs against one server; only fanout and ghosts spread over several --url",
            args.scenario.name()
        );
    }
    if args.scenario == Scenario::Ghosts && nodes.len() < 2 {
        bail!("ghosts needs the nodes of a cluster: give --url once per node (at least two)");
    }
    let machine = sys::Machine::read();
    let started = SystemTime::now();
    let t0 = Instant::now();
    let ctx = Ctx {
        epoch: t0,
        pids: args.pid.clone(),
        socket_budget: sys::socket_budget(nofile),
        errors: Arc::new(Errors::default()),
        keepalive: None,
        buffers_diffs: false,
    };
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let pids: Vec<String> = args.pid.iter().map(u32::to_string).collect();
    eprintln!(
        "headcount bench {} against {} at {}{}",
        args.scenario.name(),
        args.target.name(),
        addrs.join(", "),
        if pids.is_empty() {
            String::new()
        } else {
            format!(" (pid {})", pids.join(", "))
        }
    );
    for &pid in &args.pid {
        if sys::sample(pid).is_none() {
            bail!("no process {pid} to read /proc/{pid} from");
        }
    }

    let outcome = match args.target {
        TargetKind::Headcount => {
            let apikey = match (&args.apikey, &args.jwt_secret) {
                (Some(k), _) => k.clone(),
                (None, Some(secret)) => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                    auth::sign_hs256(
                        secret,
                        &format!(r#"{{"role":"anon","iat":{now},"exp":{}}}"#, now + 86_400),
                    )
                }
                (None, None) => bail!("headcount needs --apikey or --jwt-secret"),
            };
            let serializer = Serializer::from_vsn(Some(&args.vsn))
                .with_context(|| format!("unknown --vsn {}", args.vsn))?;
            let proto = Phoenix {
                apikey: apikey.into(),
                serializer,
            };
            dispatch(proto, nodes, &args, ctx).await?
        }
        TargetKind::Socketio => dispatch(SocketIo, nodes, &args, ctx).await?,
        TargetKind::Yjs => dispatch(Yjs, nodes, &args, ctx).await?,
        TargetKind::Prosody => {
            let proto = Xmpp {
                muc: format!("conference.{}", args.xmpp_domain),
                domain: args.xmpp_domain.clone(),
            };
            dispatch(proto, nodes, &args, ctx).await?
        }
    };

    let (errors, error_samples) = outcome.errors.snapshot();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let report = Report {
        scenario: args.scenario.name().to_owned(),
        target: args.target.name().to_owned(),
        label: args.label.clone(),
        command: report::command_line(&std::env::args().collect::<Vec<_>>()),
        machine,
        generator: serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "threads": threads,
            "nofile_limit": nofile,
            "cpu_secs": sys::sample_self().cpu_secs,
            "peak_rss_bytes": sys::sample_self().rss_bytes,
        }),
        started_at_unix: started.duration_since(UNIX_EPOCH)?.as_secs(),
        duration_secs: t0.elapsed().as_secs_f64(),
        params: outcome.params,
        result: outcome.result,
        errors,
        error_samples,
        table: outcome.table,
    };
    println!(
        "\n{} against {}: {}\n",
        report.scenario, report.target, outcome.headline
    );
    print!("{}", report.table.render());
    if !report.error_samples.is_empty() {
        println!("\nerrors: {:?}", report.errors);
        for e in &report.error_samples {
            println!("  {e}");
        }
    }
    if let Some(path) = &args.json {
        report.write_json(path)?;
        eprintln!("results written to {}", path.display());
    }
    if outcome.failed {
        bail!("{}: {}", report.scenario, outcome.headline);
    }
    Ok(())
}

async fn dispatch<P: Protocol>(
    proto: P,
    nodes: Vec<Node>,
    args: &BenchArgs,
    mut ctx: Ctx,
) -> anyhow::Result<Outcome> {
    ctx.keepalive = proto.keepalive_secs().map(Duration::from_secs);
    ctx.buffers_diffs = proto.buffers_diffs();
    let target = Arc::new(Target::new(proto, nodes, args.sources));
    match args.scenario {
        Scenario::Idle => scenario::idle::run(target, args, ctx).await,
        Scenario::Fanout => scenario::fanout::run(target, args, ctx).await,
        Scenario::PresenceStorm => scenario::storm::run(target, args, ctx).await,
        Scenario::JoinRate => scenario::join_rate::run(target, args, ctx).await,
        Scenario::Ghosts => scenario::ghosts::run(target, args, ctx).await,
    }
}
