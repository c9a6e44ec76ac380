//! [`RegionSupervisor`]: the leader task that notices failed datanodes and moves their
//! regions away.
//!
//! Every tick (a quarter heartbeat interval) it feeds one [`PhiAccrualDetector`](super::detector::PhiAccrualDetector) per
//! datanode with the node's last heartbeat time, then, for each node judged failed (its
//! detector crossed the threshold, or it was silent for the silence limit, a little less
//! than the lease wait, so that only the switch waits for the lease; see
//! `failover::judgement`),
//! schedules a failover (a [`Migrations`] procedure) of every region it leads, to a target
//! the selector picks, never the failed node. Regions share their node's fate, so the
//! detectors are per node, not per region.
//!
//! What it refuses to do:
//! - judge a node in its first node lease of this term before it has heartbeated to this
//!   term (a new leader knows nothing of the nodes' history; each gets a full grace);
//! - judge anyone after a **stall of its own**: a tick gap far longer than the tick means
//!   this process did not run (SIGSTOP, a starved runtime) and heard nothing through no
//!   fault of the nodes; it resets every detector and grants every node a fresh grace;
//! - schedule anything while maintenance mode is on, or with `region_failover` off;
//! - move a region that is already migrating, or that failed over within the last
//!   node lease (a flapping node does not make regions ping-pong), or that was just
//!   refused (per-region backoff);
//! - move a region whose data is on local-only storage: it is reported unavailable, with
//!   the reason, in `/regions`, the logs and the metrics instead.
//!
//! It also keeps **drains** going: each tick, every region a drained, live datanode
//! still leads is moved off it (reason `drain`), with the same backoff, so a drain move
//! that rolled back is retried and a drain outlasts a leader change. Drains are the
//! operator's own request, so neither maintenance mode nor `region_failover = false`
//! pauses them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::detector::PhiOptions;
use super::judgement::Judgement;
use crate::cluster::{movable_in, Cluster};
use crate::leader::stall::StallClock;
use crate::maintenance::Maintenance;
use crate::procedure::migration::{MigrationError, MigrationReason, MigrationState, Migrations};
use handlers::{LeadershipRef, NodeLeaseStoreRef};

/// The supervisor's settings, derived from the metasrv's timings.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorOptions {
    /// Whether failures start failovers at all.
    pub enabled: bool,
    /// How often it looks.
    pub tick: Duration,
    /// The grace every node gets at the start of a term.
    pub node_lease: Duration,
    /// The detectors' tuning.
    pub phi: PhiOptions,
    /// Silence after which a node is failed whatever its detector says
    /// (`failover::judgement::silence_limit`).
    pub silence_limit: Duration,
}

/// Leader-only failure detection and failover scheduling.
#[derive(Debug)]
pub struct RegionSupervisor {
    options: SupervisorOptions,
    migrations: Arc<Migrations>,
    maintenance: Arc<Maintenance>,
    /// Nodes, their routes and their storage.
    cluster: Cluster,
    /// Node leases: read by the detectors, and given a fresh grace after a stall.
    node_leases: NodeLeaseStoreRef,
    /// Leadership, checked every tick.
    leadership: LeadershipRef,
    /// Regions that cannot fail over, with why; rebuilt every tick.
    unavailable: Mutex<BTreeMap<u64, String>>,
    /// Nodes judged failed at the last tick.
    failed: Mutex<Vec<u64>>,
}

/// Whether automatic failover is paused: maintenance mode is on, or failover is off.
fn failover_paused(maintenance: bool, enabled: bool) -> bool {
    maintenance || !enabled
}

/// Whether `last` is a move for `reason` that finished less than `window_ms` before
/// `now_ms`: such a region is not moved for that reason again yet (a flapping node does
/// not make regions ping-pong; a drain move that just rolled back is not retried at once).
fn moved_within(
    last: &MigrationState,
    reason: MigrationReason,
    window_ms: u64,
    now_ms: u64,
) -> bool {
    last.reason == reason
        && last
            .finished_ms
            .is_some_and(|f| now_ms.saturating_sub(f) < window_ms)
}

/// Which candidates may start a move for one reason (failover, or a drain's) on a tick:
/// none while paused; not while one is in flight, nor before a refused region's backoff
/// is over, nor within a node lease of the region's last move for the same reason.
#[derive(Debug)]
struct Schedule {
    reason: MigrationReason,
    backoff: Duration,
    window_ms: u64,
    retry_at: HashMap<u64, Instant>,
}

impl Schedule {
    /// A refused region waits half a node lease: long enough not to hammer a cluster
    /// that cannot place it, short enough to retry well within a failover.
    fn new(node_lease: Duration, reason: MigrationReason) -> Self {
        Self {
            reason,
            backoff: node_lease / 2,
            window_ms: node_lease.as_millis() as u64,
            retry_at: HashMap::new(),
        }
    }

    /// The candidates to start now, in order. `now_ms` is wall-clock time (finished
    /// migrations carry their end as Unix milliseconds); `last_finished` looks up a
    /// region's last finished migration.
    fn due(
        &self,
        candidates: &[u64],
        paused: bool,
        (now, now_ms): (Instant, u64),
        in_flight: &HashSet<u64>,
        last_finished: impl Fn(u64) -> Option<MigrationState>,
    ) -> Vec<u64> {
        if paused {
            return Vec::new();
        }
        let recently_moved = |r: u64| {
            last_finished(r)
                .is_some_and(|last| moved_within(&last, self.reason, self.window_ms, now_ms))
        };
        candidates
            .iter()
            .copied()
            .filter(|r| self.retry_at.get(r).is_none_or(|t| now >= *t))
            .filter(|r| !in_flight.contains(r))
            .filter(|r| !recently_moved(*r))
            .collect()
    }

    /// The region's move was refused at `now`: it waits out the backoff. Returns whether
    /// this is its first refusal since it last started, the one worth a warning.
    fn refused(&mut self, region_id: u64, now: Instant) -> bool {
        self.retry_at
            .insert(region_id, now + self.backoff)
            .is_none()
    }

    /// The region's failover started: no backoff left.
    fn started(&mut self, region_id: u64) {
        self.retry_at.remove(&region_id);
    }
}

impl RegionSupervisor {
    /// A supervisor scheduling through `migrations`, paused by `maintenance`, judging
    /// the nodes of `cluster` from their `node_leases` while `leadership` holds.
    pub fn new(
        options: SupervisorOptions,
        migrations: Arc<Migrations>,
        maintenance: Arc<Maintenance>,
        cluster: Cluster,
        node_leases: NodeLeaseStoreRef,
        leadership: LeadershipRef,
    ) -> Self {
        Self {
            options,
            migrations,
            maintenance,
            cluster,
            node_leases,
            leadership,
            unavailable: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Regions that cannot be failed over now, with the reason.
    pub fn unavailable(&self) -> BTreeMap<u64, String> {
        self.unavailable.lock().clone()
    }

    /// Nodes judged failed at the last tick.
    pub fn failed_nodes(&self) -> Vec<u64> {
        self.failed.lock().clone()
    }

    /// Runs for as long as it is polled: a term task, stopped (dropped) when the term
    /// ends.
    pub async fn run(self: Arc<Self>) {
        let tick = self.options.tick;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut stall = StallClock::new(tick, start);
        let mut judgement = Judgement::new(
            self.options.phi,
            self.options.node_lease,
            self.options.silence_limit,
            start,
        );
        let mut schedule = Schedule::new(self.options.node_lease, MigrationReason::Failover);
        let mut drains = Schedule::new(self.options.node_lease, MigrationReason::Drain);
        let mut paused_logged = false;
        info!(
            enabled = self.options.enabled,
            tick_ms = tick.as_millis() as u64,
            acceptable_pause_ms = self.options.phi.acceptable_pause_ms,
            "region supervisor started"
        );
        loop {
            ticker.tick().await;
            let now = Instant::now();
            let stalled = stall.stalled(now);
            if !self.leadership.is_leader() {
                continue;
            }
            if let Some(gap) = stalled {
                warn!(
                    gap_ms = gap.as_millis() as u64,
                    "the supervisor itself was stalled; resetting every detector and granting every node a fresh grace"
                );
                self.node_leases.grace(now);
                judgement.reset(now);
                continue;
            }
            let datanodes = self
                .node_leases
                .list()
                .into_iter()
                .filter(|l| l.key.role == common_proto::v1::Role::Datanode)
                .map(|l| (l.key.node_id, l.node_epoch, l.last_seen));
            judgement.observe(now, datanodes);
            // Route leaders never heard from, from the route index (no scan of every
            // route on each tick), once the term is past its grace.
            let leaders = if judgement.judges_unheard(now) {
                self.cluster.route_leaders().await
            } else {
                Vec::new()
            };
            let failed = judgement.failed(now, &leaders);
            self.note_failed(&failed);
            let paused = failover_paused(self.maintenance.is_enabled(), self.options.enabled);
            self.log_paused(paused, &failed, &mut paused_logged);
            // Per failed node: its regions and its stats, each looked up once.
            let mut unavailable = BTreeMap::new();
            let mut candidates = Vec::new();
            for node_id in &failed {
                let led = self.cluster.led_by(*node_id).await;
                if led.is_empty() {
                    continue;
                }
                let stat = self.cluster.latest_stat(*node_id).await;
                for route in led {
                    match movable_in(stat.as_deref(), *node_id, route.region_id) {
                        Ok(()) => candidates.push(route.region_id),
                        Err(reason) => {
                            unavailable.insert(route.region_id, reason);
                        }
                    }
                }
            }
            let clock = (now, common_proto::unix_millis());
            unavailable.extend(
                self.start_due(&mut schedule, &candidates, paused, clock)
                    .await,
            );
            self.keep_draining(&failed, &mut drains, clock).await;
            crate::metrics::METRICS
                .failed_datanodes
                .set(failed.len() as i64);
            crate::metrics::METRICS
                .unavailable_regions
                .set(unavailable.len() as i64);
            self.note_unavailable(unavailable);
        }
    }

    /// Keeps every drain going until the drained node leads nothing. Each region a
    /// drained node still leads is moved off it, with the same backoff as failovers: a
    /// drain move that rolled back (say, its target went away) is tried again, and a
    /// drain outlasts a leader change. A failed drained node is failover's. Not paused by
    /// maintenance mode or `region_failover = false`: a drain is the operator's request.
    async fn keep_draining(&self, failed: &[u64], schedule: &mut Schedule, clock: (Instant, u64)) {
        let mut candidates = Vec::new();
        for node_id in self.maintenance.drained() {
            if failed.contains(&node_id) {
                continue;
            }
            let led = self.cluster.led_by(node_id).await;
            candidates.extend(led.into_iter().map(|r| r.region_id));
        }
        // Local-only regions cannot leave; the drain retries them on the backoff (an
        // operator may move their data), warning once.
        for (region_id, reason) in self.start_due(schedule, &candidates, false, clock).await {
            if schedule.refused(region_id, clock.0) {
                warn!(
                    region_id,
                    reason, "cannot move the region off its drained node yet; retrying"
                );
            }
        }
    }

    /// Starts the moves among `candidates` that `schedule` says are due (none while
    /// `paused`), for its reason. Regions refused for local-only storage are returned
    /// with why, for the caller to report; other refusals wait out the backoff (warned
    /// once).
    async fn start_due(
        &self,
        schedule: &mut Schedule,
        candidates: &[u64],
        paused: bool,
        clock: (Instant, u64),
    ) -> Vec<(u64, String)> {
        if paused || candidates.is_empty() {
            return Vec::new();
        }
        // The migrations in flight, read once per call, and only when needed.
        let in_flight: HashSet<u64> = self.migrations.running_regions();
        let what = match schedule.reason {
            MigrationReason::Failover => "failover",
            MigrationReason::Drain => "drain move",
            MigrationReason::Manual => "move",
        };
        let last_finished = |r| self.migrations.last_finished(r);
        let mut local_only = Vec::new();
        for region_id in schedule.due(candidates, paused, clock, &in_flight, last_finished) {
            match self
                .migrations
                .start(region_id, None, schedule.reason)
                .await
            {
                Ok(state) => {
                    info!(region_id, from = ?state.from, to = state.to, "{what} scheduled");
                    schedule.started(region_id);
                }
                Err(MigrationError::LocalOnly { reason, .. }) => {
                    local_only.push((region_id, reason))
                }
                Err(err) => {
                    if schedule.refused(region_id, clock.0) {
                        warn!(region_id, error = %err, "cannot schedule the {what} yet; retrying");
                    }
                }
            }
        }
        local_only
    }

    /// Publishes the failed nodes, logging each newly failed one once.
    fn note_failed(&self, failed: &[u64]) {
        let mut prev = self.failed.lock();
        for node_id in failed.iter().filter(|f| !prev.contains(f)) {
            warn!(
                node_id,
                "datanode judged failed: silent past the silence limit, or by the phi-accrual detector"
            );
        }
        *prev = failed.to_vec();
    }

    /// Logs once per pause that failed nodes are left alone.
    fn log_paused(&self, paused: bool, failed: &[u64], logged: &mut bool) {
        if paused && !failed.is_empty() {
            if !*logged {
                warn!(
                    ?failed,
                    maintenance = self.maintenance.is_enabled(),
                    "failed datanodes, but automatic failover is paused"
                );
                *logged = true;
            }
        } else {
            *logged = false;
        }
    }

    /// Publishes the unavailable regions, logging each new or changed reason once.
    fn note_unavailable(&self, unavailable: BTreeMap<u64, String>) {
        let mut u = self.unavailable.lock();
        for (region_id, reason) in &unavailable {
            if u.get(region_id) != Some(reason) {
                warn!(
                    region_id,
                    reason, "region unavailable: its node failed and it cannot move"
                );
            }
        }
        *u = unavailable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedure::migration::Step;

    #[test]
    fn failover_pauses_under_maintenance_or_when_turned_off() {
        assert!(!failover_paused(false, true));
        assert!(failover_paused(true, true), "maintenance");
        assert!(failover_paused(false, false), "region_failover = false");
        assert!(failover_paused(true, false));
    }

    fn finished(reason: MigrationReason, finished_ms: Option<u64>) -> MigrationState {
        MigrationState {
            region_id: 1,
            from: Some(1),
            to: 2,
            reason,
            step: Step::Done,
            started_ms: 0,
            finished_ms,
            last_error: None,
            released_by: None,
        }
    }

    #[test]
    fn only_a_failover_finished_within_the_window_holds_a_region_back() {
        let window = 10_000;
        let now = 100_000;
        let recent = finished(MigrationReason::Failover, Some(now - window + 1));
        assert!(moved_within(
            &recent,
            MigrationReason::Failover,
            window,
            now
        ));
        let edge = finished(MigrationReason::Failover, Some(now - window));
        assert!(
            !moved_within(&edge, MigrationReason::Failover, window, now),
            "a whole window ago"
        );
        let manual = finished(MigrationReason::Manual, Some(now - 1));
        assert!(
            !moved_within(&manual, MigrationReason::Failover, window, now),
            "an operator's move"
        );
        let unfinished = finished(MigrationReason::Failover, None);
        assert!(!moved_within(
            &unfinished,
            MigrationReason::Failover,
            window,
            now
        ));
        let drain = finished(MigrationReason::Drain, Some(now - 1));
        assert!(
            moved_within(&drain, MigrationReason::Drain, window, now),
            "a drain's own"
        );
        assert!(!moved_within(
            &drain,
            MigrationReason::Failover,
            window,
            now
        ));
    }

    #[test]
    fn a_refused_region_waits_out_half_a_node_lease_and_in_flight_ones_wait() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(10);
        let backoff = lease / 2;
        let mut s = Schedule::new(lease, MigrationReason::Failover);
        let none = HashSet::new();
        let never = |_| None;
        let at = |t: Instant| (t, 1_000_000);
        assert_eq!(
            s.due(&[1, 2, 3], false, at(t0), &none, never),
            vec![1, 2, 3]
        );
        assert!(s.refused(2, t0), "a first refusal");
        assert!(!s.refused(2, t0), "then not, until it starts");
        let almost = t0 + backoff - Duration::from_millis(1);
        assert_eq!(
            s.due(&[1, 2, 3], false, at(almost), &none, never),
            vec![1, 3]
        );
        let over = t0 + backoff;
        assert_eq!(
            s.due(&[1, 2, 3], false, at(over), &none, never),
            vec![1, 2, 3]
        );
        s.refused(3, t0);
        s.started(3);
        assert_eq!(
            s.due(&[3], false, at(t0), &none, never),
            vec![3],
            "no backoff left"
        );
        let in_flight = HashSet::from([1]);
        assert_eq!(s.due(&[1, 3], false, at(over), &in_flight, never), vec![3]);
    }

    #[test]
    fn nothing_is_due_while_paused() {
        let s = Schedule::new(Duration::from_secs(10), MigrationReason::Failover);
        let clock = (Instant::now(), 1_000_000);
        let due = s.due(&[1, 2], true, clock, &HashSet::new(), |_| None);
        assert!(due.is_empty());
    }

    #[test]
    fn a_region_that_failed_over_within_a_node_lease_is_not_moved_again() {
        let s = Schedule::new(Duration::from_secs(10), MigrationReason::Failover);
        let now_ms = 1_000_000;
        let clock = (Instant::now(), now_ms);
        let last = |r: u64| match r {
            1 => Some(finished(MigrationReason::Failover, Some(now_ms - 9_999))),
            2 => Some(finished(MigrationReason::Failover, Some(now_ms - 10_000))),
            3 => Some(finished(MigrationReason::Manual, Some(now_ms - 1))),
            _ => None,
        };
        let due = s.due(&[1, 2, 3, 4], false, clock, &HashSet::new(), last);
        assert_eq!(
            due,
            vec![2, 3, 4],
            "only 1 moved by a failover a moment ago"
        );
    }
}
