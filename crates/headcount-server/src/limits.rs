//! Rate windows.

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

    /// Whether the next call at `now_ms` would be refused.
    pub fn is_full(&self, now_ms: u64, window_ms: u64, max: u32) -> bool {
        self.count >= max && now_ms < self.start_ms.saturating_add(window_ms)
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
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    fn an_off_limit_never_refuses() {
        let r = NodeRate::per_second(None);
        assert!((0..10_000).all(|i| r.hit(i)));
        let r = NodeRate::per_second(Some(2));
        assert!(r.hit(0) && r.hit(1) && !r.hit(2) && r.hit(1000));
    }
}
