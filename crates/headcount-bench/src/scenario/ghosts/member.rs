//! One member of a ghosts run: joins on schedule, keeps its view, watches it clear after the
//! kill, and takes the final census.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use indicatif::ProgressBar;
use tokio::sync::watch;

use super::{Place, Shared, apply};
use crate::client::{Client, Target};
use crate::cluster::{Census, Roster, member_placement};
use crate::proto::{Member, Protocol};
use crate::scenario::{Ctx, hold, keepalive_timer, within};
use crate::view::View;

/// What one member task needs.
pub(super) struct Task<P: Protocol> {
    pub target: Arc<Target<P>>,
    pub ctx: Arc<Ctx>,
    pub shared: Arc<Shared>,
    pub rosters: Arc<Vec<Roster>>,
    pub pb: ProgressBar,
    pub census: watch::Receiver<bool>,
    pub stop: watch::Receiver<bool>,
    pub place: Place,
}

/// What one view went through: complete, lost a member early, cleared, first leave, first
/// survivor lost (times in ms after the kill).
struct Watch<'a> {
    shared: &'a Shared,
    roster: &'a Roster,
    pb: &'a ProgressBar,
    watching: bool,
    complete: bool,
    lost_early: bool,
    cleared: Option<f64>,
    first_leave: Option<f64>,
    first_lost: Option<f64>,
}

impl Watch<'_> {
    /// Notes what the view now shows.
    fn check(&mut self, view: &View, now_us: u64) {
        let (shared, roster) = (self.shared, self.roster);
        if !self.complete && view.len() >= roster.len() {
            self.complete = true;
            shared.complete.fetch_add(1, Ordering::Relaxed);
            self.pb.inc(1);
        }
        if !shared.killed.load(Ordering::Relaxed) {
            if self.complete && !self.lost_early && view.len() < roster.len() {
                self.lost_early = true;
                shared.lost_before_kill.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if !self.watching {
            return;
        }
        let since_kill = (now_us as f64 - shared.kill_us.load(Ordering::Relaxed) as f64) / 1000.0;
        let c: Census = roster.census(view);
        if self.first_leave.is_none() && c.ghosts < roster.doomed() {
            self.first_leave = Some(since_kill);
        }
        if self.first_lost.is_none() && c.missing > 0 {
            self.first_lost = Some(since_kill);
        }
        match (self.cleared, c.ghosts) {
            (None, 0) => {
                self.cleared = Some(since_kill);
                shared.cleared.fetch_add(1, Ordering::Relaxed);
            }
            (Some(_), g) if g > 0 => {
                shared.reappeared.fetch_add(1, Ordering::Relaxed);
                self.cleared = None;
                shared.cleared.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Member `i`: joins at `at`, holds until the census, counts, then holds until the stop.
pub(super) async fn member<P: Protocol>(i: usize, at: tokio::time::Instant, mut t: Task<P>) {
    let Place {
        n,
        nodes,
        channels,
        kill_node,
    } = t.place;
    let (node, channel) = member_placement(i, nodes, channels);
    let member = Member {
        id: i as u32,
        room: format!("ghosts-{channel}"),
        track: true,
    };
    let (ctx, shared) = (&*t.ctx, &*t.shared);
    let on_killed_node = node == kill_node;
    tokio::time::sleep_until(at).await;
    shared
        .last_join_us
        .fetch_max(ctx.now_us(), Ordering::Relaxed);
    let roster = &t.rosters[channel];
    let mut view = View::new(n, ctx.buffers_diffs);
    let mut lat = Vec::new();
    let r = within(
        30.0,
        Client::establish_on(&t.target, node, &member, &mut |e| {
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
    let mut w = Watch {
        shared,
        roster,
        pb: &t.pb,
        watching,
        complete: false,
        lost_early: false,
        cleared: None,
        first_leave: None,
        first_lost: None,
    };
    w.check(&view, ctx.now_us());
    let mut keepalive = keepalive_timer(ctx.keepalive, u64::from(member.id));
    shared.holding.fetch_add(1, Ordering::Relaxed);
    let r = hold(&mut client, &mut t.census, &mut keepalive, |c| {
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
            w.check(&view, now);
        }
        Ok(())
    })
    .await;
    match r {
        Ok(()) => {
            if watching {
                census(shared, roster, &view, t.place, &member, node, channel);
                shared
                    .times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((w.cleared, w.first_leave, w.first_lost));
            }
            shared.holding.fetch_sub(1, Ordering::Relaxed);
            let _ = hold(&mut client, &mut t.stop, &mut keepalive, |c| {
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
}

/// The final census of one surviving view: ghosts left, survivors missing (by node, and a
/// few samples of whom).
fn census(
    shared: &Shared,
    roster: &Roster,
    view: &View,
    place: Place,
    member: &Member,
    node: usize,
    channel: usize,
) {
    let Place {
        n, nodes, channels, ..
    } = place;
    let c = roster.census(view);
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
}
