//! The command line of `headcount bench`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// `headcount bench SCENARIO [options]`: a bounded, self-stopping load against a server on
/// this machine, with a progress bar on stderr, a summary table on stdout and, with `--json`,
/// the results with the command line and the machine's facts.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum, value_name = "SCENARIO")]
    pub scenario: Scenario,

    /// The server to drive: headcount, or one of the peers started by `bench/peers/`.
    #[arg(long, value_enum, default_value = "headcount")]
    pub target: TargetKind,

    /// The server's URL, on this machine only [default: http://127.0.0.1:4000 for headcount,
    /// :4001 socket.io, :4002 yjs, :5280 prosody]. Several URLs (the option repeated, or
    /// comma-separated) are the nodes of one cluster: `fanout` spreads its subscribers over
    /// them round-robin and keeps its publishers on the first; `ghosts` spreads its members.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,

    /// The API key (a JWT) headcount clients connect with.
    #[arg(long, env = "HEADCOUNT_APIKEY", hide_env_values = true)]
    pub apikey: Option<String>,

    /// Or the server's JWT secret, to mint an `anon` key for the run.
    #[arg(long, env = "HEADCOUNT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The server's process id: its memory (VmRSS) and CPU time (utime+stime) are read from
    /// /proc and reported. Several (repeated or comma-separated: the nodes of a cluster, and
    /// Redis if its cost should count): the reported server figures are their sum, and each
    /// process's share is reported beside it, in the order given.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// A free-form label stored with the results (the runner puts the round there).
    #[arg(long)]
    pub label: Option<String>,

    /// The serializer of headcount clients (1.0.0 or 2.0.0).
    #[arg(long, default_value = "2.0.0")]
    pub vsn: String,

    /// The XMPP virtual host (its MUC component is `conference.` + this).
    #[arg(long, default_value = "localhost")]
    pub xmpp_domain: String,

    /// idle: connections to open [default: 1000].
    #[arg(long)]
    pub connections: Option<usize>,

    /// Channels (rooms): idle spreads connections over them [default: 100], fanout has this
    /// many channels of `--subscribers` each [default: 1], join-rate spreads joins [default:
    /// 100].
    #[arg(long)]
    pub channels: Option<usize>,

    /// fanout: subscribers per channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// fanout: publishers, spread over the channels [default: the larger of 10 and the number
    /// of channels].
    #[arg(long)]
    pub publishers: Option<usize>,

    /// The ramp, comma-separated: fanout in deliveries per second [default:
    /// 10k,50k,100k,200k,400k,600k,800k,1M,1.2M,1.5M,2M,2.5M,3M], join-rate in joins per second [default:
    /// 500,1000,2000,3000,4000,6000,8000,10000,12000,15000,20000]. `k` and `M` suffixes work.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate)]
    pub rates: Option<Vec<f64>>,

    /// Seconds per ramp step.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,

    /// The p99 latency bound of a step, in milliseconds [default: 50 for fanout, 100 for
    /// join-rate].
    #[arg(long)]
    pub p99_ms: Option<f64>,

    /// fanout: bytes of each broadcast body.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,

    /// presence-storm and ghosts: members joining [default: 2000 for presence-storm, 3000 for
    /// ghosts].
    #[arg(long)]
    pub members: Option<usize>,

    /// presence-storm and ghosts: joins per second.
    #[arg(long, default_value_t = 500.0)]
    pub join_rate: f64,

    /// Seconds to wait for a storm to converge after the last join, or for idle connections
    /// to be set up.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_secs: f64,

    /// idle: seconds to hold the connections while memory is sampled.
    #[arg(long, default_value_t = 10.0)]
    pub hold_secs: f64,

    /// Connections being set up at once (idle and fanout setup).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,

    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N (for more sockets than
    /// one address has ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,

    /// Worker threads of the generator [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,

    /// ghosts: the process id of the node to kill (SIGKILL). It must be a `headcount` process.
    #[arg(long)]
    pub kill_pid: Option<u32>,

    /// ghosts: which `--url` the killed process serves, counted from 1 [default: the last].
    #[arg(long)]
    pub kill_node: Option<usize>,

    /// ghosts: the nodes' `--node-timeout`, in seconds: a crashed node's presences must be
    /// gone from every view within it (plus `--ghost-tolerance-ms`).
    #[arg(long, default_value_t = 10.0)]
    pub node_timeout_secs: f64,

    /// ghosts: slack on top of the node timeout for the presence window of the surviving
    /// nodes and the delivery of the leaves to every client, in milliseconds.
    #[arg(long, default_value_t = 500.0)]
    pub ghost_tolerance_ms: f64,

    /// ghosts: the background broadcast load, in deliveries per second, kept up from before
    /// the kill to the end of the run (`k` and `M` suffixes work).
    #[arg(long, default_value = "30k", value_parser = parse_rate)]
    pub background_rate: f64,

    /// ghosts: seconds the background load runs before the kill.
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
}

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N connections joined to M channels with presence tracked: memory per connection and
    /// set-up time.
    Idle,
    /// C channels × S subscribers, P publishers at a ramped rate: deliveries per second,
    /// latency, losses and duplicates.
    Fanout,
    /// N clients join one channel at R joins/s and track: time until every view holds all N,
    /// server CPU and bytes.
    PresenceStorm,
    /// connect + join + track per second, ramped until errors or p99 > bound.
    JoinRate,
    /// Cluster: N members spread over the nodes (`--url` several times) join and track; under
    /// a background broadcast load one node is killed (`--kill-pid`): time until every
    /// surviving client's view has dropped the dead node's members, against the node timeout.
    Ghosts,
}

impl Scenario {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::PresenceStorm => "presence-storm",
            Scenario::JoinRate => "join-rate",
            Scenario::Ghosts => "ghosts",
        }
    }
}

/// The servers the generator speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// headcount (Supabase Realtime protocol).
    Headcount,
    /// socket.io 4 with the room script of `bench/peers/`.
    Socketio,
    /// `@y/websocket-server` (Yjs awareness).
    Yjs,
    /// Prosody (XMPP multi-user chat over WebSocket).
    Prosody,
}

impl TargetKind {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Headcount => "headcount",
            TargetKind::Socketio => "socketio",
            TargetKind::Yjs => "yjs",
            TargetKind::Prosody => "prosody",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            TargetKind::Headcount => 4000,
            TargetKind::Socketio => 4001,
            TargetKind::Yjs => 4002,
            TargetKind::Prosody => 5280,
        }
    }
}

/// `1500`, `1.5k`, `2M`.
fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("not a rate: {s}"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("a rate must be positive: {s}"));
    }
    Ok(v * mult)
}

/// A URL's address and `Host` header; refused unless the address is a loopback address.
fn resolve_local(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "the load generator only targets this machine (127.0.0.1); {addr} is not a loopback address"
        );
    }
    Ok((addr, authority.to_owned()))
}

impl BenchArgs {
    /// The first server's address and `Host` header. Only addresses on this machine are
    /// accepted.
    pub fn server(&self) -> anyhow::Result<(SocketAddr, String)> {
        Ok(self.servers()?.swap_remove(0))
    }

    /// Every server's address and `Host` header, in the order of `--url` (the default URL of
    /// the target when none is given). Each must be an address on this machine.
    pub fn servers(&self) -> anyhow::Result<Vec<(SocketAddr, String)>> {
        if self.url.is_empty() {
            return Ok(vec![resolve_local(&format!(
                "http://127.0.0.1:{}",
                self.target.default_port()
            ))?]);
        }
        self.url
            .iter()
            .map(String::as_str)
            .map(resolve_local)
            .collect()
    }

    /// The members of a presence-storm or ghosts run.
    pub fn members(&self) -> usize {
        self.members.unwrap_or(match self.scenario {
            Scenario::Ghosts => 3000,
            _ => 2000,
        })
    }

    /// The ramp of the scenario.
    pub fn ramp(&self) -> Vec<f64> {
        if let Some(r) = &self.rates {
            return r.clone();
        }
        match self.scenario {
            Scenario::JoinRate => vec![
                500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 10_000.0, 12_000.0,
                15_000.0, 20_000.0,
            ],
            _ => vec![
                10e3, 50e3, 100e3, 200e3, 400e3, 600e3, 800e3, 1e6, 1.2e6, 1.5e6, 2e6, 2.5e6, 3e6,
            ],
        }
    }

    /// The p99 bound of a ramp step, in milliseconds.
    pub fn p99_bound_ms(&self) -> f64 {
        self.p99_ms.unwrap_or(match self.scenario {
            Scenario::JoinRate => 100.0,
            _ => 50.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn parses_scenarios_rates_and_urls() {
        let a = Cli::parse_from([
            "bench",
            "fanout",
            "--rates",
            "100k,1.5M,2000",
            "--url",
            "ws://localhost:4000/realtime/v1",
        ])
        .bench;
        assert_eq!(a.scenario, Scenario::Fanout);
        assert_eq!(a.ramp(), [100e3, 1.5e6, 2000.0]);
        let (addr, host) = a.server().unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 4000);
        assert_eq!(host, "localhost:4000");
        assert_eq!(a.p99_bound_ms(), 50.0);

        let a = Cli::parse_from(["bench", "join-rate", "--target", "prosody"]).bench;
        assert_eq!(a.server().unwrap().0.port(), 5280);
        assert_eq!(a.p99_bound_ms(), 100.0);
        assert_eq!(a.ramp()[0], 500.0);

        let a = Cli::parse_from(["bench", "idle", "--url", "http://192.0.2.1:4000"]).bench;
        assert!(a.server().is_err(), "only loopback");
        assert!(parse_rate("-1").is_err());
    }

    #[test]
    fn several_urls_and_pids_repeated_or_comma_separated() {
        let a = Cli::parse_from([
            "bench",
            "fanout",
            "--url",
            "http://127.0.0.1:4101,http://127.0.0.1:4102",
            "--url",
            "ws://localhost:4103/realtime/v1",
            "--pid",
            "11,12",
            "--pid",
            "13",
        ])
        .bench;
        let ports: Vec<u16> = a.servers().unwrap().iter().map(|s| s.0.port()).collect();
        assert_eq!(ports, [4101, 4102, 4103]);
        assert_eq!(
            a.server().unwrap().0.port(),
            4101,
            "the first is the server"
        );
        assert_eq!(a.pid, [11, 12, 13]);

        // One address that is not on this machine spoils the list.
        let a = Cli::parse_from([
            "bench",
            "fanout",
            "--url",
            "http://127.0.0.1:4101,http://192.0.2.1:4102",
        ])
        .bench;
        assert!(a.servers().is_err(), "only loopback, for every URL");

        // No URL: the target's default, and no pid.
        let a = Cli::parse_from(["bench", "ghosts"]).bench;
        assert_eq!(a.servers().unwrap().len(), 1);
        assert!(a.pid.is_empty());
        assert_eq!(a.members(), 3000);
        assert_eq!(a.background_rate, 30e3);
        assert_eq!(
            Cli::parse_from(["bench", "presence-storm"]).bench.members(),
            2000
        );
    }
}
