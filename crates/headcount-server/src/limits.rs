//! Rate windows: fixed windows, the node-wide rates, and per-client windows kept in a bounded
//! map.
//!
//! Every rate the node enforces has a per-client window in front of the node-wide one, so one
//! client that bursts meets its own limit long before it can spend the whole node's budget.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// A fixed window that starts at its first call: `max` calls are allowed until `window_ms` has
/// passed since that first call, then a new window starts. This is how Supabase counts the
/// client presence calls of a channel, and it makes "N allowed, N+1 refused" exact.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start_ms: u64,
    count: u32,
}

impl Window {
    /// Counts one call at `now_ms`; `false` when it exceeds `max` inside the window.
    pub fn hit(&mut self, now_ms: u64, window_ms: u64, max: u32) -> bool {
        if self.count == 0 || now_ms >= self.start_ms.saturating_add(window_ms) {
            self.start_ms = now_ms;
            self.count = 0;
        }
        if self.count >= max {
            return false;
        }
        self.count += 1;
        true
    }

    /// Counts `n` calls at `now_ms`, all or none: `false` (and nothing counted) when they do not
    /// all fit inside the window.
    pub fn take(&mut self, now_ms: u64, window_ms: u64, max: u32, n: u32) -> bool {
        if n == 0 {
            return true;
        }
        if self.expired(now_ms, window_ms) {
            self.start_ms = now_ms;
            self.count = 0;
        }
        if n > max.saturating_sub(self.count) {
            return false;
        }
        self.count += n;
        true
    }

    /// Whether the next call at `now_ms` would be refused.
    pub fn is_full(&self, now_ms: u64, window_ms: u64, max: u32) -> bool {
        self.count >= max && now_ms < self.start_ms.saturating_add(window_ms)
    }

    /// Whether the window holds nothing that still counts at `now_ms`: forgetting it changes
    /// no answer.
    pub fn expired(&self, now_ms: u64, window_ms: u64) -> bool {
        self.count == 0 || now_ms >= self.start_ms.saturating_add(window_ms)
    }
}

/// One call against a per-second `max` (`None`: no limit) kept in `window`.
pub fn per_second(window: &mut Window, now_ms: u64, max: Option<u32>) -> bool {
    max.is_none_or(|max| window.hit(now_ms, 1000, max))
}

/// Windows by key, at most `cap` of them, for limits that must outlive what they count (a
/// channel's presence calls across a leave and a rejoin, an HTTP client across requests).
///
/// Keys are stored as keyed 64-bit hashes, so a long topic or token costs nothing here and
/// nobody can aim two keys at one slot. When the map is full, expired windows are forgotten
/// first (that changes no answer); if none has expired, the window that started first goes,
/// since it is the closest to expiring.
#[derive(Debug)]
pub struct Windows {
    hasher: std::collections::hash_map::RandomState,
    map: HashMap<u64, Window>,
    cap: usize,
}

impl Windows {
    /// An empty map that holds at most `cap` windows (at least one).
    pub fn new(cap: usize) -> Windows {
        Windows {
            hasher: Default::default(),
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Counts `n` calls for `key` at `now_ms`, all or none (see [`Window::take`]).
    pub fn take(&mut self, key: &str, now_ms: u64, window_ms: u64, max: u32, n: u32) -> bool {
        let hash = self.hasher.hash_one(key);
        if !self.map.contains_key(&hash) && self.map.len() >= self.cap {
            self.map.retain(|_, w| !w.expired(now_ms, window_ms));
            if self.map.len() >= self.cap
                && let Some(oldest) = self.map.iter().min_by_key(|(_, w)| w.start_ms)
            {
                let oldest = *oldest.0;
                self.map.remove(&oldest);
            }
        }
        self.map
            .entry(hash)
            .or_default()
            .take(now_ms, window_ms, max, n)
    }

    /// How many windows are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no window is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The per-second windows of the HTTP API's clients (a client is the `sub` of the request's
/// token, or the token itself when it has none), shared by every request.
#[derive(Debug)]
pub struct ClientRates {
    max: Option<u32>,
    windows: Mutex<Windows>,
}

impl ClientRates {
    /// At most `max` events per second per client (`None`: no limit), remembering at most
    /// `cap` clients.
    pub fn per_second(max: Option<u32>, cap: usize) -> ClientRates {
        ClientRates {
            max,
            windows: Mutex::new(Windows::new(cap)),
        }
    }

    /// The limit, if any.
    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// Counts `n` events of `client` at `now_ms`, all or none; `false` when they do not fit.
    pub fn take(&self, client: &str, now_ms: u64, n: u32) -> bool {
        match self.max {
            None => true,
            Some(max) => crate::lock(&self.windows).take(client, now_ms, 1000, max, n),
        }
    }
}

/// A [`Window`] of one second shared by the whole node, or nothing when the limit is off.
#[derive(Debug)]
pub struct NodeRate {
    max: Option<u32>,
    window: Mutex<Window>,
}

impl NodeRate {
    /// A per-second limit; `None` turns it off.
    pub fn per_second(max: Option<u32>) -> NodeRate {
        NodeRate {
            max,
            window: Mutex::new(Window::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        crate::lock(&self.window)
    }

    /// Counts one event; `false` when the limit is exceeded.
    pub fn hit(&self, now_ms: u64) -> bool {
        match self.max {
            None => true,
            Some(max) => self.lock().hit(now_ms, 1000, max),
        }
    }

    /// Whether the next event would be refused.
    pub fn is_full(&self, now_ms: u64) -> bool {
        match self.max {
            None => false,
            Some(max) => self.lock().is_full(now_ms, 1000, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_allowed_then_refused_until_the_window_ends() {
        let mut w = Window::default();
        for i in 0..5 {
            assert!(w.hit(1000 + i, 30_000, 5), "call {}", i + 1);
        }
        assert!(w.is_full(2000, 30_000, 5));
        assert!(!w.hit(2000, 30_000, 5), "the 6th call inside the window");
        assert!(!w.hit(30_999, 30_000, 5));
        assert!(
            w.hit(31_000, 30_000, 5),
            "a new window starts 30 s after the first call"
        );
    }

    #[test]
    fn take_counts_all_or_nothing() {
        let mut w = Window::default();
        assert!(w.take(0, 1000, 5, 3));
        assert!(!w.take(10, 1000, 5, 3), "3 more do not fit in 5");
        assert!(
            w.take(10, 1000, 5, 2),
            "nothing was counted for the refused 3"
        );
        assert!(!w.take(20, 1000, 5, 1));
        assert!(w.take(1000, 1000, 5, 5), "a new window");
        assert!(w.take(1000, 1000, 5, 0));
    }

    #[test]
    fn windows_outlive_nothing_but_stay_bounded() {
        let mut m = Windows::new(3);
        for i in 0..5 {
            assert!(m.take("a", i, 30_000, 5, 1));
        }
        assert!(!m.take("a", 10, 30_000, 5, 1), "the key's window is kept");
        assert!(m.take("b", 20, 30_000, 5, 1) && m.take("c", 30, 30_000, 5, 1));
        assert_eq!(m.len(), 3);
        // Full, nothing expired: the oldest window ("a", started at 0) makes room.
        assert!(m.take("d", 40, 30_000, 5, 1));
        assert_eq!(m.len(), 3);
        assert!(
            m.take("a", 50, 30_000, 5, 1),
            "a forgotten window starts afresh"
        );
        // Once the windows have expired, they are what goes.
        assert!(m.take("e", 40_000, 30_000, 5, 1));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn an_off_limit_never_refuses() {
        let r = NodeRate::per_second(None);
        assert!((0..10_000).all(|i| r.hit(i)));
        let r = NodeRate::per_second(Some(2));
        assert!(r.hit(0) && r.hit(1) && !r.hit(2) && r.hit(1000));
    }
}
