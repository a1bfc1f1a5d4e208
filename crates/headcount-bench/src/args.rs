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
    /// :4001 socket.io, :4002 yjs, :5280 prosody].
    #[arg(long)]
    pub url: Option<String>,

    /// The API key (a JWT) headcount clients connect with.
    #[arg(long, env = "HEADCOUNT_APIKEY", hide_env_values = true)]
    pub apikey: Option<String>,

    /// Or the server's JWT secret, to mint an `anon` key for the run.
    #[arg(long, env = "HEADCOUNT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The server's process id: its memory (VmRSS) and CPU time (utime+stime) are read from
    /// /proc and reported.
    #[arg(long)]
    pub pid: Option<u32>,

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

    /// presence-storm: members joining the channel.
    #[arg(long, default_value_t = 2000)]
    pub members: usize,

    /// presence-storm: joins per second.
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
}

impl Scenario {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::PresenceStorm => "presence-storm",
            Scenario::JoinRate => "join-rate",
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

impl BenchArgs {
    /// The server's address and `Host` header. Only addresses on this machine are accepted.
    pub fn server(&self) -> anyhow::Result<(SocketAddr, String)> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.target.default_port()));
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
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
}
