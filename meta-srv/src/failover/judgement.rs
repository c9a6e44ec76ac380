//! [`Judgement`]: which datanodes the supervisor judges failed on a tick, and the rules
//! that keep it from judging unfairly. Pure code over instants, so every rule is tested
//! without a runtime or a clock.
//!
//! One [`PhiAccrualDetector`] per datanode, fed with the node's last heartbeat time. A node
//! is failed when its detector says so, or when it has been silent for the **silence
//! limit**, **and** it is past its grace: until the node's first heartbeat to this term
//! (since the supervisor's last stall, if any), or a node lease from when this term first
//! watched it, whichever comes first (a new leader knows nothing of the nodes' history,
//! and a node needs time to find it; once the node has heartbeated to this term, its
//! silence is its own). A
//! route leader this term has never heard from is failed too, once the term itself is
//! past its grace. A restarted node (new epoch), or one back from a silence longer than
//! the node lease, starts a fresh history: that gap is not an interval of its rhythm and
//! would blunt the detector for long.
//!
//! The silence limit ([`silence_limit`]) is a little less than the region lease + drift
//! margin: by then a silent node's leases are about to run out anyway, so its regions are
//! unavailable whatever is judged, and the failover's first steps (adding and opening the
//! target, fencing the route) are done by the time the lease wait lets the switch happen.
//! The phi detector adapts to each node's rhythm but, with few heartbeats in its history,
//! can fire later than that; the limit bounds how late.
//!
//! After a stall of the supervisor itself (`leader::stall`), nobody may be judged on the
//! gap, so it resets every history ([`Judgement::reset`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::detector::{PhiAccrualDetector, PhiOptions};

struct Watched {
    detector: PhiAccrualDetector,
    fed: Option<Instant>,
    since: Instant,
    epoch: u64,
}

/// Whether a node's detector must start over: the node restarted (a new epoch), or it is
/// back from a silence longer than the node lease.
fn needs_fresh_history(w: &Watched, epoch: u64, last_seen: Instant, node_lease: Duration) -> bool {
    w.epoch != epoch
        || w.fed
            .is_some_and(|f| last_seen.saturating_duration_since(f) > node_lease)
}

/// The silence after which a node is failed whatever its detector says: the safe floor
/// of a lease wait (`region_lease + margin`) less half a heartbeat interval for the steps
/// before the switch, and never less than two heartbeat intervals (one lost heartbeat is
/// no failure).
pub(crate) fn silence_limit(
    heartbeat_interval: Duration,
    region_lease: Duration,
    margin: Duration,
) -> Duration {
    (region_lease + margin)
        .saturating_sub(heartbeat_interval / 2)
        .max(heartbeat_interval * 2)
}

/// Milliseconds from `start` to `t` (zero before it): the detectors' time axis.
fn millis_since(start: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(start).as_millis() as u64
}

/// The supervisor's detectors for one term.
pub(crate) struct Judgement {
    phi: PhiOptions,
    node_lease: Duration,
    silence_limit: Duration,
    term_start: Instant,
    /// A heartbeat after this was heard by this term (the term's start, or the end of
    /// the supervisor's last stall).
    heard_after: Instant,
    watched: HashMap<u64, Watched>,
}

impl Judgement {
    /// Detectors for a term that started at `term_start`, each node graced `node_lease`,
    /// and failed after `silence_limit` of silence whatever its detector says.
    pub(crate) fn new(
        phi: PhiOptions,
        node_lease: Duration,
        silence_limit: Duration,
        term_start: Instant,
    ) -> Self {
        Self {
            phi,
            node_lease,
            silence_limit,
            term_start,
            heard_after: term_start,
            watched: HashMap::new(),
        }
    }

    /// Forgets every history (after a stall of the supervisor's own, noticed at `now`):
    /// each node listed next is watched afresh, with a full grace until it is heard again.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.watched.clear();
        self.heard_after = now;
    }

    fn in_grace(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) < self.node_lease
    }

    fn ms(&self, t: Instant) -> u64 {
        millis_since(self.term_start, t)
    }

    /// Whether route leaders never heard from can be judged yet (the term is past its
    /// grace); the supervisor reads them from the route index only then.
    pub(crate) fn judges_unheard(&self, now: Instant) -> bool {
        !self.in_grace(self.term_start, now)
    }

    /// Feeds every listed datanode's last heartbeat (node id, epoch, last seen) and
    /// forgets the nodes no longer listed.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        datanodes: impl IntoIterator<Item = (u64, u64, Instant)>,
    ) {
        let mut listed = HashSet::new();
        for (id, epoch, last_seen) in datanodes {
            listed.insert(id);
            let fresh = || Watched {
                detector: PhiAccrualDetector::new(self.phi),
                fed: None,
                since: now,
                epoch,
            };
            let w = self.watched.entry(id).or_insert_with(fresh);
            if needs_fresh_history(w, epoch, last_seen, self.node_lease) {
                *w = fresh();
            }
            if w.fed != Some(last_seen) {
                w.detector
                    .heartbeat(millis_since(self.term_start, last_seen.max(w.since)));
                w.fed = Some(last_seen);
            }
        }
        self.watched.retain(|id, _| listed.contains(id));
    }

    /// The nodes failed at `now`, sorted: watched nodes past their grace whose detector
    /// crossed the threshold, and (once the term is past its grace) the `route_leaders`
    /// never heard from.
    pub(crate) fn failed(&self, now: Instant, route_leaders: &[u64]) -> Vec<u64> {
        let mut failed: Vec<u64> = self
            .watched
            .iter()
            .filter(|(_, w)| {
                let silent = w
                    .fed
                    .is_some_and(|f| now.saturating_duration_since(f) >= self.silence_limit);
                let heard = w.fed.is_some_and(|f| f > self.heard_after);
                (heard || !self.in_grace(w.since, now))
                    && (silent || w.detector.is_failed(self.ms(now)))
            })
            .map(|(id, _)| *id)
            .collect();
        if self.judges_unheard(now) {
            let unheard = route_leaders
                .iter()
                .filter(|l| !self.watched.contains_key(l));
            failed.extend(unheard);
        }
        failed.sort_unstable();
        failed.dedup();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const LEASE: Duration = Duration::from_secs(10);

    fn judgement(t0: Instant) -> Judgement {
        Judgement::new(PhiOptions::from_timings(SEC, 3 * SEC), LEASE, 60 * SEC, t0)
    }

    fn watched(epoch: u64, fed: Option<Instant>) -> Watched {
        Watched {
            detector: PhiAccrualDetector::new(PhiOptions::from_timings(SEC, 3 * SEC)),
            fed,
            since: Instant::now(),
            epoch,
        }
    }

    #[test]
    fn a_restart_or_a_return_from_a_long_silence_starts_a_fresh_history() {
        let t0 = Instant::now();
        let lease = 3 * SEC;
        let w = watched(7, Some(t0));
        assert!(
            !needs_fresh_history(&w, 7, t0 + SEC, lease),
            "a normal beat"
        );
        assert!(
            !needs_fresh_history(&w, 7, t0 + lease, lease),
            "a long but live gap"
        );
        assert!(
            needs_fresh_history(&w, 7, t0 + 25 * SEC, lease),
            "back from the dead"
        );
        assert!(needs_fresh_history(&w, 8, t0 + SEC, lease), "restarted");
        assert!(
            !needs_fresh_history(&watched(7, None), 7, t0, lease),
            "nothing fed yet"
        );
    }

    /// Observes every whole second `from..=to` after `t0`: node 1 beats each time; node 2
    /// beat until `t0 + 5 s` and is silent since.
    fn beat(j: &mut Judgement, t0: Instant, from: u32, to: u32) {
        for s in from..=to {
            let now = t0 + s * SEC;
            j.observe(now, [(1, 1, now), (2, 1, t0 + s.min(5) * SEC)]);
        }
    }

    #[test]
    fn a_silent_node_is_failed_once_heard_or_past_its_grace_and_a_beating_one_never() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        // Node 3 is known (registered) but never heartbeats to this term.
        for s in 0..=9 {
            let now = t0 + s * SEC;
            j.observe(now, [(1, 1, now), (2, 1, t0 + s.min(5) * SEC), (3, 1, t0)]);
        }
        // Node 2 heartbeated to this term, then fell silent for 4 s (phi far past the
        // threshold): its silence is its own. Node 3 is still in its grace.
        assert_eq!(j.failed(t0 + 9 * SEC, &[]), vec![2]);
        // At exactly one node lease the grace is over for node 3 too.
        j.observe(
            t0 + LEASE,
            [(1, 1, t0 + LEASE), (2, 1, t0 + 5 * SEC), (3, 1, t0)],
        );
        assert_eq!(j.failed(t0 + LEASE, &[]), vec![2, 3]);
        beat(&mut j, t0, 11, 20);
        assert_eq!(j.failed(t0 + 20 * SEC, &[]), vec![2]);
    }

    #[test]
    fn the_silence_limit_is_the_lease_floor_less_half_a_heartbeat_and_at_least_two() {
        let ms = Duration::from_millis;
        assert_eq!(silence_limit(3 * SEC, 10 * SEC, ms(500)), ms(9_000));
        assert_eq!(silence_limit(SEC, 3 * SEC, ms(500)), ms(3_000));
        assert_eq!(silence_limit(SEC, 2 * SEC + ms(1), ms(0)), 2 * SEC);
    }

    #[test]
    fn a_node_silent_for_the_limit_is_failed_though_its_detector_is_not_sure() {
        let t0 = Instant::now();
        // A detector that would wait a minute (a long acceptable pause), a 9 s limit.
        let phi = PhiOptions::from_timings(3 * SEC, 60 * SEC);
        let mut j = Judgement::new(phi, LEASE, 9 * SEC, t0);
        for s in (0..=30).step_by(3) {
            let now = t0 + s * SEC;
            j.observe(now, [(1, 1, now)]);
        }
        let last = t0 + 30 * SEC;
        let almost = last + 9 * SEC - Duration::from_millis(1);
        j.observe(almost, [(1, 1, last)]);
        assert!(
            j.failed(almost, &[]).is_empty(),
            "not yet silent for the limit"
        );
        j.observe(last + 9 * SEC, [(1, 1, last)]);
        assert_eq!(j.failed(last + 9 * SEC, &[]), vec![1]);
        // A node in its grace is not judged, whatever its silence.
        let mut j = Judgement::new(phi, LEASE, 9 * SEC, t0);
        j.observe(t0, [(2, 1, t0)]);
        j.observe(t0 + 9 * SEC, [(2, 1, t0)]);
        assert!(j.failed(t0 + 9 * SEC, &[]).is_empty(), "graced");
    }

    #[test]
    fn a_node_first_watched_late_and_not_heard_gets_its_own_full_grace() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        let first = t0 + 30 * SEC; // the term is long past its grace
                                   // Known from before the term (its registration), never heard by it.
        j.observe(first, [(3, 1, t0)]);
        let almost = first + LEASE - Duration::from_millis(1);
        j.observe(almost, [(3, 1, t0)]);
        assert!(j.failed(almost, &[]).is_empty(), "still in its grace");
        j.observe(first + LEASE, [(3, 1, t0)]);
        assert_eq!(
            j.failed(first + LEASE, &[]),
            vec![3],
            "silent since first seen"
        );
    }

    #[test]
    fn a_node_heard_by_this_term_is_judged_on_its_silence_at_once() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        let first = t0 + 30 * SEC;
        // It joined late and heartbeated once, then fell silent: no grace to wait out.
        j.observe(first, [(4, 1, first)]);
        let later = first + 5 * SEC;
        j.observe(later, [(4, 1, first)]);
        assert_eq!(j.failed(later, &[]), vec![4]);
    }

    #[test]
    fn an_unheard_route_leader_is_failed_only_after_the_terms_grace() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        j.observe(t0, [(1, 1, t0)]);
        assert!(!j.judges_unheard(t0 + LEASE - Duration::from_millis(1)));
        assert!(j.judges_unheard(t0 + LEASE));
        let young = t0 + SEC;
        j.observe(young, [(1, 1, young)]);
        assert!(j.failed(young, &[1, 9]).is_empty(), "the term is young");
        let old = t0 + LEASE;
        j.observe(old, [(1, 1, old)]);
        assert_eq!(
            j.failed(old, &[1, 9, 9]),
            vec![9],
            "1 beats; 9 never heard of"
        );
    }

    #[test]
    fn unlisted_nodes_are_forgotten() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        beat(&mut j, t0, 0, 12);
        assert_eq!(j.failed(t0 + 12 * SEC, &[]), vec![2]);
        // Node 2's lease expired: no longer listed, no longer watched; as a route leader
        // it is now one never heard from.
        let now = t0 + 13 * SEC;
        j.observe(now, [(1, 1, now)]);
        assert!(j.failed(now, &[]).is_empty());
        assert_eq!(j.failed(now, &[2]), vec![2], "an unheard route leader");
    }

    #[test]
    fn after_a_reset_every_node_gets_a_fresh_grace() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        beat(&mut j, t0, 0, 12);
        assert_eq!(j.failed(t0 + 12 * SEC, &[]), vec![2]);
        j.reset(t0 + 13 * SEC);
        let now = t0 + 13 * SEC;
        j.observe(now, [(1, 1, now), (2, 1, t0 + 5 * SEC)]);
        assert!(j.failed(now, &[]).is_empty(), "graced after the reset");
        let later = now + LEASE - Duration::from_millis(1);
        j.observe(later, [(1, 1, later), (2, 1, t0 + 5 * SEC)]);
        assert!(j.failed(later, &[]).is_empty(), "for a whole node lease");
    }

    #[test]
    fn a_restarted_node_is_judged_on_its_new_rhythm_only() {
        let t0 = Instant::now();
        let mut j = judgement(t0);
        beat(&mut j, t0, 0, 12);
        assert_eq!(j.failed(t0 + 12 * SEC, &[]), vec![2]);
        // Node 2 comes back with a new epoch and beats again: fresh history, fresh grace.
        let back = t0 + 13 * SEC;
        j.observe(back, [(1, 1, back), (2, 2, back)]);
        assert!(j.failed(back, &[]).is_empty());
    }
}
