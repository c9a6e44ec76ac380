//! [`PhiAccrualDetector`]: how suspicious a node's silence is, as a number.
//!
//! The phi accrual failure detector (Hayashibara et al.; Akka's and GreptimeDB's
//! implementation): it learns the distribution of a node's heartbeat inter-arrival times
//! and, at any moment, reports `phi = -log10(P(a heartbeat arrives later than now))`. A
//! phi of 8 means the silence so far would happen by chance about once in 10^8. The
//! threshold is compared against phi, so one setting adapts to each node's own jitter.
//!
//! Pure code: time is passed in (milliseconds on the leader's monotonic clock), never
//! read, so it is tested deterministically.
//!
//! Parameters ([`PhiOptions::from_timings`]) derive from the configured heartbeat interval
//! and region lease, not from fixed constants:
//! - `threshold` 8 and `min_std_dev` 100 ms: Akka's and GreptimeDB's defaults;
//! - `acceptable_pause` = region lease − 2 × heartbeat interval: a silence shorter than
//!   that is not suspicious at all. Failover cannot act before the old owner's lease
//!   runs out anyway, so the detector only needs to fire by about then; firing earlier
//!   would only add false positives;
//! - `first_estimate` = the heartbeat interval, seeding the history so a node with one
//!   heartbeat is judged sensibly.

use std::collections::VecDeque;
use std::time::Duration;

/// The detector's tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiOptions {
    /// Phi above which a node is judged failed.
    pub threshold: f64,
    /// A floor on the standard deviation, so a perfectly regular node is not judged
    /// failed by a few ms of jitter.
    pub min_std_dev_ms: f64,
    /// Silence this long beyond the usual interval is expected and not suspicious.
    pub acceptable_pause_ms: f64,
    /// The assumed interval before any has been measured.
    pub first_estimate_ms: f64,
    /// How many intervals the history keeps.
    pub window: usize,
}

impl PhiOptions {
    /// The parameters for a cluster with these timings (see the module docs).
    pub fn from_timings(heartbeat_interval: Duration, region_lease: Duration) -> Self {
        let pause = region_lease.saturating_sub(heartbeat_interval * 2);
        Self {
            threshold: 8.0,
            min_std_dev_ms: 100.0,
            acceptable_pause_ms: pause.as_secs_f64() * 1000.0,
            first_estimate_ms: heartbeat_interval.as_secs_f64() * 1000.0,
            window: 100,
        }
    }
}

/// One node's detector.
#[derive(Debug, Clone)]
pub struct PhiAccrualDetector {
    options: PhiOptions,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last_ms: Option<u64>,
}

impl PhiAccrualDetector {
    /// A detector that has heard nothing yet.
    pub fn new(options: PhiOptions) -> Self {
        Self {
            options,
            intervals: VecDeque::with_capacity(options.window),
            sum: 0.0,
            sum_sq: 0.0,
            last_ms: None,
        }
    }

    fn push(&mut self, interval: f64) {
        if self.intervals.len() == self.options.window {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_sq += interval * interval;
    }

    /// Records a heartbeat that arrived at `now_ms`. The first one seeds the history with
    /// the first estimate (± a quarter), as Akka does.
    pub fn heartbeat(&mut self, now_ms: u64) {
        match self.last_ms {
            None => {
                let est = self.options.first_estimate_ms;
                let std = est / 4.0;
                self.push(est - std);
                self.push(est + std);
            }
            Some(last) if now_ms > last => self.push((now_ms - last) as f64),
            // Out of order or duplicate arrival times carry no interval.
            Some(_) => {}
        }
        self.last_ms = Some(self.last_ms.map_or(now_ms, |l| l.max(now_ms)));
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// Phi at `now_ms`; 0 before the first heartbeat.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_ms else {
            return 0.0;
        };
        let n = self.intervals.len().max(1) as f64;
        let mean = self.sum / n;
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        let std = variance.sqrt().max(self.options.min_std_dev_ms);
        let elapsed = now_ms.saturating_sub(last) as f64;
        phi(elapsed, mean + self.options.acceptable_pause_ms, std)
    }

    /// Whether the node is judged failed at `now_ms`.
    pub fn is_failed(&self, now_ms: u64) -> bool {
        self.phi(now_ms) > self.options.threshold
    }
}

/// `-log10(1 - CDF(elapsed))` for a normal distribution, with the logistic approximation
/// of the CDF that Akka uses (accurate to about 1e-4). Each side of the mean uses the form
/// that stays finite longest; a silence of dozens of standard deviations underflows to
/// `inf`, which compares as failed like any large phi.
fn phi(elapsed: f64, mean: f64, std: f64) -> f64 {
    let y = (elapsed - mean) / std;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if elapsed > mean {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PhiOptions {
        PhiOptions::from_timings(Duration::from_secs(3), Duration::from_secs(10))
    }

    /// Heartbeats every `interval_ms` with a deterministic jitter of up to ±`jitter_ms`.
    fn feed(
        d: &mut PhiAccrualDetector,
        start: u64,
        n: u64,
        interval_ms: u64,
        jitter_ms: u64,
    ) -> u64 {
        let mut t = start;
        for i in 0..n {
            d.heartbeat(t);
            // A fixed pseudo-random sequence in [-jitter, +jitter].
            let j = (i * 7919 % (2 * jitter_ms + 1)) as i64 - jitter_ms as i64;
            t = (t as i64 + interval_ms as i64 + j) as u64;
        }
        t
    }

    #[test]
    fn parameters_derive_from_the_timings() {
        let o = defaults();
        assert_eq!(o.threshold, 8.0);
        assert_eq!(o.min_std_dev_ms, 100.0);
        assert_eq!(o.acceptable_pause_ms, 4_000.0);
        assert_eq!(o.first_estimate_ms, 3_000.0);
        let fast = PhiOptions::from_timings(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!(fast.acceptable_pause_ms, 1_000.0);
    }

    #[test]
    fn regular_jittered_heartbeats_are_never_suspicious() {
        let mut d = PhiAccrualDetector::new(defaults());
        let mut t = 0;
        for i in 0..200u64 {
            d.heartbeat(t);
            // Just before the next heartbeat, even a late one.
            assert!(
                !d.is_failed(t + 3_400),
                "beat {i}: phi {}",
                d.phi(t + 3_400)
            );
            t += 3_000 + (i * 7919 % 401) - 200;
        }
    }

    #[test]
    fn a_dead_node_is_judged_failed_after_the_pause_and_before_the_lease_ends() {
        let mut d = PhiAccrualDetector::new(defaults());
        let last = feed(&mut d, 0, 50, 3_000, 200) - 3_000; // roughly the last arrival
        let last = d.last_heartbeat_ms().unwrap_or(last);
        // Silent for the interval plus the acceptable pause: not yet.
        assert!(!d.is_failed(last + 6_500), "phi {}", d.phi(last + 6_500));
        // By the end of the 10 s region lease: failed.
        assert!(d.is_failed(last + 9_000), "phi {}", d.phi(last + 9_000));
        // Phi only grows with silence.
        let mut prev = 0.0;
        for ms in (0..20_000).step_by(250) {
            let p = d.phi(last + ms);
            assert!(p >= prev, "phi fell from {prev} to {p} at +{ms} ms");
            prev = p;
        }
    }

    #[test]
    fn a_node_with_one_heartbeat_is_judged_on_the_first_estimate() {
        let mut d = PhiAccrualDetector::new(defaults());
        assert_eq!(d.phi(1_000_000), 0.0, "never heard: no opinion");
        d.heartbeat(1_000);
        // Seeded with 3 s ± 750 ms: wider than a learned history, so a little slower.
        assert!(!d.is_failed(1_000 + 10_000), "phi {}", d.phi(11_000));
        assert!(d.is_failed(1_000 + 12_000), "phi {}", d.phi(13_000));
    }

    #[test]
    fn with_fast_timings_detection_comes_within_the_3_s_lease() {
        let o = PhiOptions::from_timings(Duration::from_secs(1), Duration::from_secs(3));
        let mut d = PhiAccrualDetector::new(o);
        feed(&mut d, 0, 30, 1_000, 50);
        let last = d.last_heartbeat_ms().expect("heard");
        assert!(!d.is_failed(last + 2_000), "phi {}", d.phi(last + 2_000));
        assert!(d.is_failed(last + 3_000), "phi {}", d.phi(last + 3_000));
    }

    #[test]
    fn out_of_order_arrivals_are_ignored() {
        let mut d = PhiAccrualDetector::new(defaults());
        d.heartbeat(10_000);
        d.heartbeat(9_000);
        assert_eq!(d.last_heartbeat_ms(), Some(10_000));
    }

    /// Options that make phi sensitive to the history: no pause, a small floor.
    fn sharp(window: usize) -> PhiOptions {
        PhiOptions {
            threshold: 8.0,
            min_std_dev_ms: 1.0,
            acceptable_pause_ms: 0.0,
            first_estimate_ms: 1_000.0,
            window,
        }
    }

    #[test]
    fn an_evicted_interval_no_longer_counts() {
        // A: a history of 5 s intervals, then four of about 100 ms. B: only the recent
        // ones. With a window of 4 both hold the same four intervals (the seeds and the
        // 5 s ones evicted), so both judge the same silence the same way.
        let recent = [25_000u64, 25_090, 25_200, 25_295, 25_400];
        let mut a = PhiAccrualDetector::new(sharp(4));
        for t in [0u64, 5_000, 10_000, 15_000, 20_000].iter().chain(&recent) {
            a.heartbeat(*t);
        }
        let mut b = PhiAccrualDetector::new(sharp(4));
        for t in recent {
            b.heartbeat(t);
        }
        let last = 25_400;
        for after in [90, 100, 105, 110, 120] {
            let (pa, pb) = (a.phi(last + after), b.phi(last + after));
            assert!(pa.is_finite() && pa > 0.0, "+{after} ms: {pa}");
            assert!(
                (pa - pb).abs() < 1e-9,
                "+{after} ms: phi {pa} with an evicted history, {pb} without"
            );
        }
    }

    #[test]
    fn a_duplicate_arrival_carries_no_interval() {
        let mut once = PhiAccrualDetector::new(sharp(10));
        feed(&mut once, 0, 5, 1_000, 0);
        let last = once.last_heartbeat_ms().expect("heard");
        let mut twice = once.clone();
        twice.heartbeat(last);
        for after in [500, 1_000, 1_200] {
            assert_eq!(
                once.phi(last + after),
                twice.phi(last + after),
                "+{after} ms"
            );
        }
    }

    #[test]
    fn a_phi_exactly_at_the_threshold_is_not_yet_failed() {
        let mut d = PhiAccrualDetector::new(defaults());
        feed(&mut d, 0, 20, 3_000, 100);
        let at = d.last_heartbeat_ms().expect("heard") + 7_000;
        let phi = d.phi(at);
        assert!(phi > 0.0 && phi.is_finite(), "{phi}");
        let mut exact = d.clone();
        exact.options.threshold = phi;
        assert!(
            !exact.is_failed(at),
            "phi {phi} is not above a threshold of {phi}"
        );
        exact.options.threshold = phi - 1e-9;
        assert!(exact.is_failed(at));
    }

    #[test]
    fn phi_follows_the_normal_tail_and_stays_finite_for_long_silences() {
        // -log10(P(X > mean + k·std)) for a normal X: k=0 → 0.301, 1 → 0.800,
        // 2 → 1.643, 3 → 2.869 (the logistic approximation is within about 1e-4 of the
        // CDF, so within a few hundredths here).
        for (k, want) in [(0.0, 0.301), (1.0, 0.800), (2.0, 1.643), (3.0, 2.869)] {
            let got = phi(1_000.0 + k * 100.0, 1_000.0, 100.0);
            assert!((got - want).abs() < 0.05, "k={k}: phi {got}, want {want}");
        }
        // Early: phi falls towards 0 as the heartbeat is less and less overdue.
        let early = phi(500.0, 1_000.0, 100.0);
        assert!((0.0..0.01).contains(&early), "{early}");
        // A silence of 10 standard deviations: huge but finite (the stable branch; the
        // other form would take the log of 0). Far beyond, both underflow to infinity,
        // which still reads as failed.
        let far = phi(2_000.0, 1_000.0, 100.0);
        assert!(far.is_finite() && far > 30.0, "{far}");
        assert!(phi(1e9, 1_000.0, 100.0) > 8.0);
    }
}
