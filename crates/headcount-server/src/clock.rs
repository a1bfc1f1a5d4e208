//! The server's one clock.
//!
//! Every timeout, rate window and schedule runs on [`Clock`], a monotonic millisecond count
//! since the hub started, so a step of the wall clock (NTP, a suspended VM) neither closes
//! sockets as idle nor stretches a window. The wall clock appears only where the wire or a
//! person needs it: JWT `exp`/`nbf`, `phx_ref`s, and timestamps shown by the admin API
//! ([`Now::unix_ms`], [`unix_ms`]).

use std::time::{Duration, Instant};

/// A monotonic clock: milliseconds since its epoch, never 0 (so 0 can mean "unset").
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the epoch, plus one.
    pub fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The instant at which [`Clock::ms`] reads `ms`.
    pub fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// Both readings of the time, taken together.
    pub fn now(&self) -> Now {
        Now {
            ms: self.ms(),
            unix_ms: unix_ms(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The time as a session is given it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// [`Clock::ms`]: what deadlines and windows are measured in.
    pub ms: u64,
    /// The wall clock, Unix milliseconds: for tokens and `phx_ref`s only.
    pub unix_ms: u64,
}

impl Now {
    /// The wall clock in Unix seconds, as JWT claims count.
    pub fn unix_s(&self) -> i64 {
        (self.unix_ms / 1000) as i64
    }
}

/// The wall clock in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall clock in Unix seconds.
pub fn unix_s() -> i64 {
    (unix_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_maps_back_to_its_instant() {
        let clock = Clock::new();
        let ms = clock.ms();
        assert!(ms >= 1);
        let at = clock.instant(ms + 250);
        assert_eq!(
            at.duration_since(clock.instant(ms)),
            Duration::from_millis(250)
        );
    }
}
