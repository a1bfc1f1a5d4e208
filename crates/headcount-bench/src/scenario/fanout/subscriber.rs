//! One subscriber of a fanout step: counts what it receives and how late.

use super::*;

/// A subscriber's bookkeeping.
pub(super) struct Subscriber {
    pub(super) conn: usize,
    /// On another node than the publishers.
    pub(super) remote: bool,
    pub(super) channel: usize,
    pub(super) channels: usize,
    /// The last sequence number of each publisher of the channel (publisher / channels).
    pub(super) last: Vec<u64>,
    /// `(step, latency µs)` of this read, recorded at once.
    pub(super) batch: Vec<(u32, u64)>,
}

impl Subscriber {
    pub(super) fn on_batch<S: Session>(
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
pub(super) async fn publish<S: Session>(
    client: &mut Client<S>,
    publisher: u32,
    payload: usize,
    mut phase: watch::Receiver<Phase>,
    stop: &mut watch::Receiver<bool>,
    ctx: &Ctx,
    counters: &Counters,
) -> Result<(), ClientError> {
    let mut sender = Publisher::new(publisher, payload);
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
            let last =
                Schedule::new(publisher, 0, per_publisher).due_by((end - start).as_secs_f64());
            let pace = Pace {
                rate: per_publisher,
                start,
                period: Duration::from_secs_f64((1.0 / per_publisher).clamp(0.001, 0.005)),
                until: Some((end, last)),
            };
            // A step is not cut short by the stop, and sends no keepalive: it is busy.
            sender
                .paced(
                    client,
                    ctx,
                    pace,
                    std::future::pending::<()>(),
                    &mut None,
                    || index,
                    |step, n| {
                        counters.sent[step as usize].fetch_add(n, Ordering::Relaxed);
                    },
                )
                .await?;
            counters.finished[index as usize].fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !idle(client, &mut phase, stop, &mut keepalive).await? {
            return Ok(());
        }
    }
}
