//! How a run spreads its clients over the nodes of a cluster (`--url` given several times),
//! and the bookkeeping of the `ghosts` scenario. Pure functions, so the placement and the
//! verdict are tested without servers.
//!
//! * fan-out: the subscribers of each channel go round-robin over the nodes, the publishers
//!   all connect to the first node, so a delivery to a subscriber of another node has crossed
//!   Redis ([`subscriber_node`]);
//! * ghosts: member `i` is on node `i mod nodes` and in channel `(i / nodes) mod channels`, so
//!   every channel has members of every node ([`member_placement`]); a [`Roster`] says which
//!   members of a channel were on the killed node, and a [`Census`] counts, in one client's
//!   view, the dead node's members still there (ghosts) and the survivors missing.

use serde::Serialize;

use crate::view::View;

/// The node of fan-out subscriber `i`, whose channel is `i mod channels`: the subscribers of
/// each channel are dealt round-robin over the nodes.
pub fn subscriber_node(i: usize, channels: usize, nodes: usize) -> usize {
    (i / channels.max(1)) % nodes.max(1)
}

/// The node and the channel of ghosts member `i`.
pub fn member_placement(i: usize, nodes: usize, channels: usize) -> (usize, usize) {
    let nodes = nodes.max(1);
    (i % nodes, (i / nodes) % channels.max(1))
}

/// How many of `count` clients `node_of` puts on each of `nodes` nodes.
pub fn per_node(count: usize, nodes: usize, node_of: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut out = vec![0; nodes.max(1)];
    for i in 0..count {
        let n = out.len();
        out[node_of(i) % n] += 1;
    }
    out
}

/// Who belongs in the views of one ghosts channel, and who of them was on the killed node.
#[derive(Debug)]
pub struct Roster {
    /// The channel's members, in order.
    members: Vec<u32>,
    /// Per member of the run: whether it was on the killed node.
    killed: Vec<bool>,
}

/// One view's state after the kill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Members of the killed node still in the view.
    pub ghosts: usize,
    /// Members of surviving nodes in the view.
    pub survivors: usize,
    /// Members of surviving nodes missing from the view.
    pub missing: usize,
}

impl Roster {
    /// The roster of `channel` in a run of `members` members over `nodes` nodes and
    /// `channels` channels, whose node `killed_node` (counted from 0) is killed.
    pub fn new(
        members: usize,
        nodes: usize,
        channels: usize,
        channel: usize,
        killed_node: usize,
    ) -> Roster {
        let mut killed = vec![false; members];
        let mut list = Vec::new();
        for (i, k) in killed.iter_mut().enumerate() {
            let (node, ch) = member_placement(i, nodes, channels);
            *k = node == killed_node;
            if ch == channel {
                list.push(i as u32);
            }
        }
        Roster {
            members: list,
            killed,
        }
    }

    /// Members of the channel.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the channel has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members of the channel on the killed node.
    pub fn doomed(&self) -> usize {
        self.members
            .iter()
            .filter(|&&m| self.killed[m as usize])
            .count()
    }

    /// Whether member `m` was on the killed node.
    pub fn was_killed(&self, m: u32) -> bool {
        self.killed.get(m as usize).copied().unwrap_or(false)
    }

    /// Counts the ghosts and the survivors of `view`.
    pub fn census(&self, view: &View) -> Census {
        let mut c = Census::default();
        for &m in &self.members {
            match (self.killed[m as usize], view.contains(m)) {
                (true, true) => c.ghosts += 1,
                (true, false) => {}
                (false, true) => c.survivors += 1,
                (false, false) => c.missing += 1,
            }
        }
        c
    }
}

/// The verdict of a ghosts run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Clearance {
    /// Surviving clients whose views were watched.
    pub clients: usize,
    /// Of these, the ones whose view dropped every member of the killed node.
    pub cleared: usize,
    /// Time from the kill until a view was clear: median over the cleared clients, ms.
    pub clear_p50_ms: Option<f64>,
    /// The 99th percentile, ms.
    pub clear_p99_ms: Option<f64>,
    /// The last client, ms (only when every client cleared).
    pub clear_max_ms: Option<f64>,
    /// The bound: node timeout + tolerance, ms.
    pub bound_ms: f64,
    /// Members of the killed node still in some view at the end, summed over the views.
    pub ghosts_remaining: u64,
    /// Members of surviving nodes missing from some view at the end, summed over the views.
    pub survivors_missing: u64,
    /// Whether every view cleared within the bound and nothing else was lost.
    pub passed: bool,
}

/// The value at quantile `q` (0..=1) of `sorted` values, by nearest rank (`None` if empty).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Judges a ghosts run: `clear_ms` has one entry per watched client (`None`: never cleared).
pub fn clearance(
    clear_ms: &[Option<f64>],
    node_timeout_secs: f64,
    tolerance_ms: f64,
    ghosts_remaining: u64,
    survivors_missing: u64,
) -> Clearance {
    let mut times: Vec<f64> = clear_ms.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let cleared = times.len();
    let all = cleared == clear_ms.len() && cleared > 0;
    let bound_ms = node_timeout_secs * 1000.0 + tolerance_ms;
    let max = quantile(&times, 1.0);
    Clearance {
        clients: clear_ms.len(),
        cleared,
        clear_p50_ms: quantile(&times, 0.5),
        clear_p99_ms: quantile(&times, 0.99),
        clear_max_ms: max.filter(|_| all),
        bound_ms,
        ghosts_remaining,
        survivors_missing,
        passed: all
            && max.is_some_and(|m| m <= bound_ms)
            && ghosts_remaining == 0
            && survivors_missing == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Entry;

    #[test]
    fn subscribers_of_every_channel_go_round_robin_over_the_nodes() {
        // 3 channels × 4 subscribers on 3 nodes: subscriber i is in channel i mod 3.
        for ch in 0..3 {
            let nodes: Vec<usize> = (0..4).map(|k| subscriber_node(ch + 3 * k, 3, 3)).collect();
            assert_eq!(nodes, [0, 1, 2, 0], "channel {ch}");
        }
        assert_eq!(per_node(12, 3, |i| subscriber_node(i, 3, 3)), [6, 3, 3]);
        assert_eq!(per_node(3000, 3, |i| subscriber_node(i, 10, 3)), [1000; 3]);
        // One server: everyone on it.
        assert!((0..50).all(|i| subscriber_node(i, 7, 1) == 0));
    }

    #[test]
    fn every_ghosts_channel_has_members_of_every_node() {
        for (nodes, channels) in [(3, 1), (3, 3), (3, 6), (2, 4)] {
            let mut seen = vec![vec![0; nodes]; channels];
            for i in 0..nodes * channels * 5 {
                let (n, c) = member_placement(i, nodes, channels);
                seen[c][n] += 1;
            }
            assert!(
                seen.iter().flatten().all(|&k| k == 5),
                "{nodes} nodes, {channels} channels: {seen:?}"
            );
        }
    }

    fn view_of(members: &[u32], total: usize) -> View {
        let mut v = View::new(total, false);
        let entries: Vec<Entry> = members
            .iter()
            .map(|&m| Entry {
                member: Some(m),
                meta: u64::from(m) + 1,
            })
            .collect();
        v.apply_state(&entries);
        v
    }

    #[test]
    fn a_census_counts_ghosts_and_missing_survivors() {
        // 12 members, 3 nodes, 2 channels, node 2 killed. Channel 0: members 0,1,2, 6,7,8;
        // of these 2 and 8 were on node 2.
        let r = Roster::new(12, 3, 2, 0, 2);
        assert_eq!(r.len(), 6);
        assert_eq!(r.doomed(), 2);
        assert!(r.was_killed(8) && !r.was_killed(7));
        let before = view_of(&[0, 1, 2, 6, 7, 8], 12);
        assert_eq!(
            r.census(&before),
            Census {
                ghosts: 2,
                survivors: 4,
                missing: 0
            }
        );
        let after = view_of(&[0, 1, 6, 7], 12);
        assert_eq!(r.census(&after).ghosts, 0);
        // A survivor lost with the ghosts, and members of the other channel are not counted.
        let lossy = view_of(&[0, 6, 7, 3, 5], 12);
        assert_eq!(
            r.census(&lossy),
            Census {
                ghosts: 0,
                survivors: 3,
                missing: 1
            }
        );
    }

    #[test]
    fn the_verdict_needs_every_view_clear_in_time_and_nothing_lost() {
        let ok = clearance(
            &[Some(7000.0), Some(7100.0), Some(7300.0)],
            10.0,
            500.0,
            0,
            0,
        );
        assert!(ok.passed, "{ok:?}");
        assert_eq!((ok.clients, ok.cleared), (3, 3));
        assert_eq!(ok.clear_max_ms, Some(7300.0));
        assert_eq!(ok.clear_p50_ms, Some(7100.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), Some(4.0));
        assert_eq!(ok.bound_ms, 10_500.0);

        let late = clearance(&[Some(7000.0), Some(10_600.0)], 10.0, 500.0, 0, 0);
        assert!(!late.passed);
        let never = clearance(&[Some(7000.0), None], 10.0, 500.0, 1, 0);
        assert!(!never.passed);
        assert_eq!(never.clear_max_ms, None);
        assert_eq!(never.cleared, 1);
        let lossy = clearance(&[Some(7000.0)], 10.0, 500.0, 0, 2);
        assert!(!lossy.passed);
        let nobody = clearance(&[], 10.0, 500.0, 0, 0);
        assert!(!nobody.passed);
        assert_eq!(nobody.clear_p50_ms, None);
    }
}
