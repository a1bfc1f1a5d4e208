//! The workloads. Each is generic over the [`Protocol`](crate::proto::Protocol) so the same
//! code drives headcount and every peer.
//!
//! * [`idle`]: N connections joined to M channels with presence tracked; memory per connection;
//! * [`fanout`]: C channels × S subscribers, P publishers, a ramp of delivery rates;
//! * [`storm`]: N members join one channel at R joins/s; time until every view holds all N;
//! * [`join_rate`]: connect + join + track per second, ramped;
//! * [`ghosts`]: a cluster node killed under load; time until its members leave every view.

pub mod fanout;
pub mod ghosts;
pub mod idle;
pub mod join_rate;
pub mod publisher;
pub mod storm;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::client::{Client, ClientError};
use crate::proto::Session;
use crate::report::{Errors, Table};
use crate::sys::{self, ProcSample};

/// What every scenario gets.
#[derive(Debug)]
pub struct Ctx {
    /// The run's clock origin: broadcast stamps carry microseconds since it.
    pub epoch: Instant,
    /// The server's processes (`--pid`, in order), for /proc readings.
    pub pids: Vec<u32>,
    /// Sockets this process may open.
    pub socket_budget: usize,
    /// Client errors by kind.
    pub errors: Arc<Errors>,
    /// How often clients of this protocol show they are alive.
    pub keepalive: Option<Duration>,
    /// Whether presence views buffer diffs until the first state (phoenix.js).
    pub buffers_diffs: bool,
}

impl Ctx {
    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The server's memory and CPU time now, with `--pid`: the sum over every process given,
    /// `None` when none was given or one of them is gone.
    pub fn server(&self) -> Option<ProcSample> {
        sum_samples(&self.server_each())
    }

    /// Each `--pid`'s memory and CPU time now, in order (`None` for a process that is gone).
    pub fn server_each(&self) -> Vec<Option<ProcSample>> {
        self.pids.iter().map(|&p| sys::sample(p)).collect()
    }

    /// Refuses a workload that needs more sockets than this process may open.
    pub fn check_sockets(&self, needed: usize) -> anyhow::Result<()> {
        if needed > self.socket_budget {
            anyhow::bail!(
                "{needed} sockets are more than one generator process may open ({}: the open-files \
                 limit less a margin); run several generator processes with smaller shares",
                self.socket_budget
            );
        }
        Ok(())
    }
}

/// What a scenario returns.
#[derive(Debug)]
pub struct Outcome {
    /// The workload's parameters.
    pub params: serde_json::Value,
    /// The figures.
    pub result: serde_json::Value,
    /// The summary table.
    pub table: Table,
    /// One line that says what came out.
    pub headline: String,
    /// Whether the run failed outright (set-up errors, a first step that failed, a storm
    /// that did not converge): the command then exits non-zero.
    pub failed: bool,
    /// Client errors.
    pub errors: Arc<Errors>,
}

/// The sum of several processes' samples: `None` if there are none or one is missing.
pub fn sum_samples(samples: &[Option<ProcSample>]) -> Option<ProcSample> {
    if samples.is_empty() {
        return None;
    }
    samples.iter().try_fold(ProcSample::default(), |acc, s| {
        s.map(|s| ProcSample {
            rss_bytes: acc.rss_bytes + s.rss_bytes,
            cpu_secs: acc.cpu_secs + s.cpu_secs,
        })
    })
}

/// CPU time of the server and of the generator over an interval.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    at: Instant,
    server: Vec<Option<ProcSample>>,
    generator: ProcSample,
}

/// CPU use over an interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Server CPU seconds (with `--pid`; with several, the sum over the processes that lived
    /// through the whole interval).
    pub server_cpu_secs: Option<f64>,
    /// Generator CPU seconds.
    pub generator_cpu_secs: f64,
    /// With several `--pid`: each process's CPU seconds, in order (`null` for one that was
    /// gone at either end of the interval).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_cpu_secs_per_pid: Vec<Option<f64>>,
}

impl CpuUse {
    /// Server CPU as a percentage of one core.
    pub fn server_pct(&self) -> Option<f64> {
        self.server_cpu_secs
            .map(|s| 100.0 * s / self.wall_secs.max(1e-9))
    }

    /// Generator CPU as a percentage of one core.
    pub fn generator_pct(&self) -> f64 {
        100.0 * self.generator_cpu_secs / self.wall_secs.max(1e-9)
    }

    /// With several `--pid`: each process's CPU as a percentage of one core.
    pub fn server_pct_per_pid(&self) -> Vec<Option<f64>> {
        self.server_cpu_secs_per_pid
            .iter()
            .map(|s| s.map(|s| 100.0 * s / self.wall_secs.max(1e-9)))
            .collect()
    }
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start(ctx: &Ctx) -> CpuMeter {
        CpuMeter {
            at: Instant::now(),
            server: ctx.server_each(),
            generator: sys::sample_self(),
        }
    }

    /// CPU used since the start.
    pub fn read(&self, ctx: &Ctx) -> CpuUse {
        let each: Vec<Option<f64>> = self
            .server
            .iter()
            .zip(ctx.server_each())
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
                _ => None,
            })
            .collect();
        let server = each.iter().flatten().copied().reduce(|a, b| a + b);
        CpuUse {
            wall_secs: self.at.elapsed().as_secs_f64(),
            server_cpu_secs: server,
            generator_cpu_secs: sys::sample_self().cpu_secs - self.generator.cpu_secs,
            server_cpu_secs_per_pid: if each.len() > 1 { each } else { Vec::new() },
        }
    }
}

/// When an open-loop publisher's messages are due: message `j` (from 0) at
/// `(j + 1 − phase) / rate` seconds after `start_us`. The phase, in [0, 1) and derived from the
/// publisher's number, spreads publishers over their period as independent clients would be,
/// instead of all sending at once.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start_us: u64,
    rate: f64,
    phase: f64,
}

impl Schedule {
    /// The schedule of `publisher`, sending `rate` messages per second from `start_us`.
    pub fn new(publisher: u32, start_us: u64, rate: f64) -> Schedule {
        let phase = f64::from(publisher.wrapping_mul(2_654_435_761) >> 8) / f64::from(1u32 << 24);
        Schedule {
            start_us,
            rate,
            phase,
        }
    }

    /// How many messages are due `elapsed_secs` after the start.
    pub fn due_by(&self, elapsed_secs: f64) -> u64 {
        (self.rate * elapsed_secs + self.phase) as u64
    }

    /// When message `j` was due, in microseconds since the run started.
    pub fn due_us(&self, j: u64) -> u64 {
        self.start_us + (((j + 1) as f64 - self.phase).max(0.0) / self.rate * 1e6) as u64
    }
}

/// What a ramp does after a step: a failed step is run once more (other work on a shared
/// machine can spoil one step), and a second failure in a row ends the ramp.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Run the same step again.
    Retry,
    /// Go on to the next rate.
    Advance,
    /// End the ramp, for this reason.
    Stop(String),
}

/// The verdict on step `index` (from 0) at `rate`, which failed for `reason` (or passed);
/// `retrying` says whether this was already the second try, and is updated.
pub fn next_step(reason: Option<String>, retrying: &mut bool, index: usize, rate: f64) -> Next {
    match reason {
        Some(_) if !*retrying => {
            *retrying = true;
            Next::Retry
        }
        Some(r) => Next::Stop(format!(
            "step {} ({}/s), twice: {r}",
            index + 1,
            crate::report::si(rate)
        )),
        None => {
            *retrying = false;
            Next::Advance
        }
    }
}

/// The one-line summary of a ramp: its best passing step, described by `best`, and why it
/// stopped.
pub fn ramp_headline(best: Option<String>, stopped_because: Option<&str>) -> String {
    match (best, stopped_because) {
        (Some(b), Some(s)) => format!("{b}; stopped at {s}"),
        (Some(b), None) => format!("{b}; every step passed"),
        (None, s) => format!("no step passed: {}", s.unwrap_or_default()),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_owned());
    pb
}

/// A keepalive timer, spread over the period by `seed` so that thousands of clients do not
/// beat together.
pub fn keepalive_timer(period: Option<Duration>, seed: u64) -> Option<Interval> {
    let period = period?;
    let offset = Duration::from_millis(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % period.as_millis().max(1) as u64,
    );
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(i)
}

/// Ticks of an optional timer (never, without one).
pub async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Keeps a connected client alive until `stop` turns true: reads (handing each batch to
/// `on_batch`), answers, and sends keepalives.
pub async fn hold<S: Session>(
    client: &mut Client<S>,
    stop: &mut watch::Receiver<bool>,
    keepalive: &mut Option<Interval>,
    mut on_batch: impl FnMut(&mut Client<S>) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    if *stop.borrow_and_update() {
        return Ok(());
    }
    // Created once: registering a fresh `changed()` on every wake-up would take the watch's
    // lock a million times a second in a fan-out.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            r = client.read() => {
                r?;
                on_batch(client)?;
                client.flush().await?;
            }
            () = tick(keepalive) => {
                client.session.keepalive(&mut client.out);
                client.flush().await?;
            }
            _ = &mut stopped => return Ok(()),
        }
    }
}

/// Waits until `done()` or until `deadline`; returns whether `done()` became true.
pub async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gives connection tasks a few seconds to close cleanly after the stop signal, then aborts
/// the rest (ones still connecting to a server that stopped answering, for example).
pub async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    wait_until(deadline, || tasks.iter().all(|t| t.is_finished())).await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Waits for `fut` at most `secs` seconds.
pub async fn within<T>(
    secs: f64,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout),
    }
}

/// `Some(x)` as a fixed-point string, `None` as `-`.
pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

#[cfg(test)]
mod ramp_tests {
    use super::*;

    #[test]
    fn a_step_is_retried_once_then_stops_the_ramp() {
        let mut retrying = false;
        assert_eq!(next_step(None, &mut retrying, 0, 500.0), Next::Advance);
        assert_eq!(
            next_step(Some("slow".into()), &mut retrying, 1, 1000.0),
            Next::Retry
        );
        assert!(retrying);
        assert_eq!(next_step(None, &mut retrying, 1, 1000.0), Next::Advance);
        assert!(!retrying);
        assert_eq!(
            next_step(Some("a".into()), &mut retrying, 2, 2000.0),
            Next::Retry
        );
        assert_eq!(
            next_step(Some("p99 80 ms > 50 ms".into()), &mut retrying, 2, 2000.0),
            Next::Stop("step 3 (2000/s), twice: p99 80 ms > 50 ms".into())
        );
    }

    #[test]
    fn headlines_say_the_best_step_and_why_the_ramp_ended() {
        assert_eq!(
            ramp_headline(Some("best 5/s".into()), None),
            "best 5/s; every step passed"
        );
        assert_eq!(
            ramp_headline(Some("best 5/s".into()), Some("step 2")),
            "best 5/s; stopped at step 2"
        );
        assert_eq!(
            ramp_headline(None, Some("step 1")),
            "no step passed: step 1"
        );
    }
}
