//! `headcount`: the command-line front door.
//!
//! * `headcount serve`: runs the server (one node in memory, or a cluster node with `--redis`);
//! * `headcount token`: prints a signed JWT for a role;
//! * `headcount watch`: joins a channel and shows who is there (see [`watch`]);
//! * `headcount bench`: runs a load scenario against a server on this machine
//!   (`headcount-bench`).

mod checks;
mod settings;
mod token;
mod watch;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use headcount_server::auth;
use settings::{LogFormat, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "headcount",
    version,
    about = "A self-hosted presence and broadcast service that speaks the Supabase Realtime protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a signed JWT.
    Token(token::TokenArgs),
    /// Join a channel, track yourself, and watch who is there.
    Watch(watch::WatchArgs),
    /// Run a load scenario against a server on this machine (idle, fanout, presence-storm,
    /// join-rate, ghosts).
    Bench(Box<headcount_bench::BenchArgs>),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A TOML settings file; flags and environment variables take precedence over it.
    #[arg(long, env = "HEADCOUNT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective settings (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: Settings,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The command line, with two adjustments to every argument read from the environment:
///
/// * a variable set to the empty string counts as unset (`HEADCOUNT_JWT_SECRET=` in a unit
///   file or an exported unset shell variable means "not given", not "the empty value");
/// * `--help` shows `[env: NAME]` rather than `[env: NAME=]` for a variable that is unset.
fn command() -> clap::Command {
    fn adjust(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let value = arg.get_env().map(std::env::var_os);
            match value {
                Some(Some(v)) if v.is_empty() => arg.env(None::<&str>).hide_env_values(true),
                Some(None) => arg.hide_env_values(true),
                _ => arg,
            }
        })
        .mut_subcommands(adjust)
    }
    adjust(Cli::command())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Token(args) => token::run(args, now_secs()),
        Command::Serve(args) => serve(*args),
        Command::Watch(args) => watch::run(args),
        Command::Bench(args) => headcount_bench::main(*args),
    }
}

/// Ten years, like the keys `supabase start` prints.
const KEY_LIFETIME: i64 = 10 * 365 * 24 * 3600;

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let mut settings = args.settings.or(&file).or(&Settings::defaults());
    checks::settings(&mut settings)?;
    if args.print_config {
        print!("{}", settings.to_redacted_toml());
        return Ok(());
    }
    checks::cluster(&settings)?;
    init_logging(settings.log_format.unwrap_or_default());

    let generated = settings.jwt_secret.is_none();
    let secret = settings.jwt_secret.clone().unwrap_or_else(|| {
        let bytes = [
            *uuid::Uuid::new_v4().as_bytes(),
            *uuid::Uuid::new_v4().as_bytes(),
        ]
        .concat();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    });
    let now = now_secs();
    let anon = auth::sign(&secret, "anon", None, now, now + KEY_LIFETIME);
    let mut config = settings.to_config(&secret)?;
    config.anon_key = Some(anon.clone());
    let bind = settings.bind.expect("the defaults include an address");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
        let addr = listener.local_addr()?;
        let hub = cluster::hub(&settings, config).await?;
        println!("headcount {} is running.\n", env!("CARGO_PKG_VERSION"));
        println!("         API URL: http://{addr}");
        println!("   WebSocket URL: ws://{addr}/realtime/v1/websocket");
        println!("       Demo page: http://{addr}/");
        println!("      Admin page: http://{addr}/admin");
        println!("        anon key: {anon}");
        if generated {
            let service = auth::sign(&secret, "service_role", None, now, now + KEY_LIFETIME);
            println!("service_role key: {service}");
            println!("      JWT secret: {secret}");
            println!(
                "\nThe secret was generated for this run; pass --jwt-secret (or HEADCOUNT_JWT_SECRET) to keep keys valid across restarts."
            );
        }
        if let Some(url) = &settings.redis_url {
            println!("         cluster: node {} on {}", hub.cluster.node_id(), settings::redact_url(url));
        }
        println!();
        headcount_server::serve(listener, hub, shutdown_signal()).await?;
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

mod cluster {
    //! Picks the cluster backend: standalone, or Redis with `--redis` (see `headcount-redis`).

    use std::sync::Arc;

    use headcount_server::{Config, Hub};

    use crate::settings::Settings;

    /// The hub for these settings.
    pub(crate) async fn hub(settings: &Settings, config: Config) -> anyhow::Result<Arc<Hub>> {
        match &settings.redis_url {
            None => Ok(Arc::new(Hub::new(config))),
            Some(url) => {
                let timeout = std::time::Duration::from_secs(settings.node_timeout.unwrap_or(10));
                let queue_bytes = settings
                    .redis_queue_bytes
                    .unwrap_or(headcount_redis::DEFAULT_QUEUE_BYTES);
                // While one of the largest legal broadcasts is being sent, the next must fit.
                let largest = config.limits.max_payload_size_kb * 1000;
                if queue_bytes < 2 * largest {
                    anyhow::bail!(
                        "redis_queue_bytes ({queue_bytes}) is below twice the largest payload \
                         ({largest} bytes: max_payload_size_kb)"
                    );
                }
                let options = headcount_redis::RedisOptions::default()
                    .with_node_timeout(timeout)
                    .with_queue_bytes(queue_bytes);
                let cluster = headcount_redis::RedisCluster::connect(url, options).await?;
                Ok(Hub::with_cluster(config, cluster))
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: how `serve` and `watch` are stopped.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
