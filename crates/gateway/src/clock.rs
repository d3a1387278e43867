//! The time source of the gateway's own timers: JWKS refresh, re-fetch and retry in
//! [`crate::auth::incoming`], exchanged-token expiry in [`crate::auth::token_exchange`].
//!
//! Production code uses [`Clock::System`]: `tokio::time::Instant::now()` (the OS clock, or a
//! paused test runtime's clock) and `SystemTime::now()`. Unit tests that drive an in-process
//! identity provider over real HTTP use a manual clock and move it with `advance`: a paused
//! tokio clock does not serve them, because it jumps past reqwest's timeouts whenever the
//! runtime waits on a socket.

use std::time::SystemTime;

use tokio::time::Instant;

/// Where a component reads the time. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// The real clocks.
    #[default]
    System,
    /// Moves only when a test calls [`ManualClock::advance`].
    #[cfg(test)]
    Manual(std::sync::Arc<ManualClock>),
}

impl Clock {
    /// A clock that starts at the current time and stands still until advanced.
    #[cfg(test)]
    pub(crate) fn manual() -> (Self, std::sync::Arc<ManualClock>) {
        let m = std::sync::Arc::new(ManualClock {
            start: Instant::now(),
            start_wall: SystemTime::now(),
            advanced: parking_lot::Mutex::new(std::time::Duration::ZERO),
        });
        (Self::Manual(m.clone()), m)
    }

    /// Monotonic time, for deadlines and intervals.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Self::System => Instant::now(),
            #[cfg(test)]
            Self::Manual(m) => m.start + *m.advanced.lock(),
        }
    }

    /// Wall-clock time, for comparing with token `exp` claims.
    pub(crate) fn wall(&self) -> SystemTime {
        match self {
            Self::System => SystemTime::now(),
            #[cfg(test)]
            Self::Manual(m) => m.start_wall + *m.advanced.lock(),
        }
    }
}

/// The state of a manual clock (tests only).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock {
    start: Instant,
    start_wall: SystemTime,
    advanced: parking_lot::Mutex<std::time::Duration>,
}

#[cfg(test)]
impl ManualClock {
    /// Moves both clocks forward by `by`.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        *self.advanced.lock() += by;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let (clock, hand) = Clock::manual();
        let (t0, w0) = (clock.now(), clock.wall());
        assert_eq!((clock.now(), clock.wall()), (t0, w0));
        hand.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert_eq!(clock.wall().duration_since(w0).ok(), Some(Duration::from_secs(90)));
        let system = Clock::System;
        assert!(system.now() >= t0 && system.wall() >= w0);
    }
}
