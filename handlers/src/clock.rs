//! The monotonic clock handlers read, behind a trait so tests can drive it.
//!
//! Leases are monotonic-clock arithmetic only: wall-clock jumps must never extend or cut
//! a lease. [`TokioClock`] follows tokio's clock, so a test with `tokio::time::pause()`
//! drives it too; [`ManualClock`] is for unit tests without a runtime.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A monotonic time source.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// Shared clock handle.
pub type ClockRef = Arc<dyn Clock>;

/// The production clock: `tokio::time::Instant::now()`, which honours a paused runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; for deterministic unit tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    // A synchronous lock (parking_lot): nothing awaits while holding it.
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at "now".
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock();
        *offset += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock()
    }
}
