//! [`StallClock`]: tells a stall of this process from a late tick.
//!
//! A leader task that ticks (the sweeper, the supervisor) hears nothing from the nodes
//! while this process does not run (SIGSTOP, a starved runtime). If it judged the nodes
//! on that gap it would expire or fail them for its own silence. So a gap of more than
//! three ticks means **this process stalled**: the task gives every node a fresh grace
//! instead of judging anyone on the gap. One rule, here, for every ticking task.

use std::time::Duration;

use tokio::time::Instant;

/// The ticks of one task, and whether the last gap was a stall of its own.
#[derive(Debug, Clone, Copy)]
pub struct StallClock {
    tick: Duration,
    last: Instant,
}

impl StallClock {
    /// A clock for a task that ticks every `tick`, starting at `now`.
    pub fn new(tick: Duration, now: Instant) -> Self {
        Self { tick, last: now }
    }

    /// Records a tick at `now`; returns the gap since the previous one if it means this
    /// process did not run (more than three ticks).
    pub fn stalled(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        (gap > self.tick * 3).then_some(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_a_gap_of_more_than_three_ticks_is_a_stall_of_its_own() {
        let tick = Duration::from_millis(250);
        let start = Instant::now();
        let mut clock = StallClock::new(tick, start);
        assert_eq!(clock.stalled(start + tick), None, "an on-time tick");
        assert_eq!(
            clock.stalled(start + tick * 4),
            None,
            "three ticks: late, not stalled"
        );
        let late = start + tick * 7 + Duration::from_millis(1);
        assert_eq!(
            clock.stalled(late),
            Some(tick * 3 + Duration::from_millis(1))
        );
        assert_eq!(
            clock.stalled(late + Duration::from_secs(6)),
            Some(Duration::from_secs(6)),
            "a SIGSTOP"
        );
        assert_eq!(
            clock.stalled(late + Duration::from_secs(6) + tick),
            None,
            "measured from the last tick"
        );
    }
}
