//! The publisher loop of the scenarios with a broadcast load (`fanout`, `ghosts`): an
//! open-loop sender on a [`Schedule`] that answers the server while it publishes, and the wait
//! between loads.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{Ctx, Schedule, tick};
use crate::client::{Client, ClientError};
use crate::proto::Session;

/// One publisher: its number, its sequence numbers and the buffer its bodies are written in.
#[derive(Debug)]
pub struct Publisher {
    id: u32,
    seq: u64,
    body: Vec<u8>,
    payload: usize,
}

/// One paced load: `rate` messages per second from `start`, the due messages sent every
/// `period`; with `until = Some((end, last))` it ends once message `last` went out (all of
/// them at `end`), else it runs until stopped.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Messages per second.
    pub rate: f64,
    /// When the first period begins.
    pub start: Instant,
    /// How often the due messages are sent.
    pub period: Duration,
    /// The end and the number of messages by then; `None`: until stopped.
    pub until: Option<(Instant, u64)>,
}

impl Publisher {
    /// Publisher `id`, whose bodies are `payload` bytes long.
    pub fn new(id: u32, payload: usize) -> Publisher {
        Publisher {
            id,
            seq: 0,
            body: Vec::with_capacity(payload.max(32)),
            payload,
        }
    }

    /// Waits for the start, then publishes on schedule until the pace ends or `stop`
    /// resolves, answering the server and sending keepalives meanwhile. Each batch is stamped
    /// with `step()` and counted with `on_sent(step, messages)`.
    #[allow(clippy::too_many_arguments)]
    pub async fn paced<S: Session>(
        &mut self,
        client: &mut Client<S>,
        ctx: &Ctx,
        pace: Pace,
        stop: impl Future,
        keepalive: &mut Option<Interval>,
        mut step: impl FnMut() -> u32,
        mut on_sent: impl FnMut(u32, u64),
    ) -> Result<(), ClientError> {
        tokio::time::sleep_until(pace.start).await;
        let schedule = Schedule::new(self.id, ctx.now_us(), pace.rate);
        let mut ticker = tokio::time::interval(pace.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut sent = 0u64;
        tokio::pin!(stop);
        loop {
            if let Some((_, last)) = pace.until
                && sent >= last
            {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                _ = ticker.tick() => {
                    let due = due(&schedule, pace, Instant::now());
                    if due <= sent {
                        continue;
                    }
                    let step = step();
                    self.publish(client, &schedule, sent..due, step);
                    client.flush().await?;
                    on_sent(step, due - sent);
                    sent = due;
                }
                r = client.read() => answer(client, r).await?,
                () = tick(keepalive) => keep_alive(client).await?,
            }
        }
    }

    /// Puts messages `messages` of this publisher's `schedule` into the client's outbox, each
    /// stamped with the time it was due (so a publisher held back by the server's backpressure
    /// shows as latency, not as a quietly lower rate) and the next of its sequence numbers.
    fn publish<S: Session>(
        &mut self,
        client: &mut Client<S>,
        schedule: &Schedule,
        messages: std::ops::Range<u64>,
        step: u32,
    ) {
        for j in messages {
            self.seq += 1;
            self.body.clear();
            crate::proto::Stamp {
                publisher: self.id,
                seq: self.seq,
                sent_us: schedule.due_us(j),
                step,
            }
            .write(&mut self.body, self.payload);
            client.session.publish(&self.body, &mut client.out);
        }
    }
}

/// How many messages of `pace` are due at `now`.
fn due(schedule: &Schedule, pace: Pace, now: Instant) -> u64 {
    let elapsed = || now.saturating_duration_since(pace.start).as_secs_f64();
    match pace.until {
        Some((end, last)) if now >= end => last,
        Some((_, last)) => schedule.due_by(elapsed()).min(last),
        None => schedule.due_by(elapsed()),
    }
}

/// Between loads: answers the server and sends keepalives until `signal` or `stop` changes.
/// Returns `false` when either sender is gone or `stop` is now true.
pub async fn idle<S: Session, T>(
    client: &mut Client<S>,
    signal: &mut watch::Receiver<T>,
    stop: &mut watch::Receiver<bool>,
    keepalive: &mut Option<Interval>,
) -> Result<bool, ClientError> {
    loop {
        tokio::select! {
            changed = signal.changed() => return Ok(changed.is_ok()),
            changed = stop.changed() => return Ok(changed.is_ok() && !*stop.borrow()),
            r = client.read() => answer(client, r).await?,
            () = tick(keepalive) => keep_alive(client).await?,
        }
    }
}

/// Handles what the server sent (replies, heartbeats) and writes any answer.
async fn answer<S: Session>(
    client: &mut Client<S>,
    read: Result<(), ClientError>,
) -> Result<(), ClientError> {
    read?;
    client.process(&mut |_| {})?;
    client.flush().await
}

/// Sends a keepalive.
async fn keep_alive<S: Session>(client: &mut Client<S>) -> Result<(), ClientError> {
    client.session.keepalive(&mut client.out);
    client.flush().await
}
