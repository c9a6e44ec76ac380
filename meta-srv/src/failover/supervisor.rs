//! [`RegionSupervisor`]: the leader task that notices failed datanodes and moves their
//! regions away.
//!
//! Every tick (a quarter heartbeat interval) it feeds one [`PhiAccrualDetector`] per
//! datanode with the node's last heartbeat time, then, for each node judged failed,
//! schedules a failover (a [`Migrations`] procedure) of every region it leads, to a target
//! the selector picks, never the failed node. Regions share their node's fate, so the
//! detectors are per node, not per region.
//!
//! What it refuses to do:
//! - judge a node in its first node lease of this term (a new leader knows nothing of
//!   the nodes' history; each gets a full grace);
//! - judge anyone after a **stall of its own**: a tick gap far longer than the tick means
//!   this process did not run (SIGSTOP, a starved runtime) and heard nothing through no
//!   fault of the nodes; it resets every detector and grants every node a fresh grace;
//! - schedule anything while maintenance mode is on, or with `region_failover` off;
//! - move a region that is already migrating, or that failed over within the last
//!   node lease (a flapping node does not make regions ping-pong), or that was just
//!   refused (per-region backoff);
//! - move a region whose data is on local-only storage: it is reported unavailable, with
//!   the reason, in `/regions`, the logs and the metrics instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::detector::{PhiAccrualDetector, PhiOptions};
use crate::maintenance::Maintenance;
use crate::procedure::migration::{movable_in, MigrationError, MigrationReason, Migrations};
use handlers::RegionRouteStore as _;

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
}

/// Leader-only failure detection and failover scheduling.
#[derive(Debug)]
pub struct RegionSupervisor {
    options: SupervisorOptions,
    migrations: Arc<Migrations>,
    maintenance: Arc<Maintenance>,
    /// Regions that cannot fail over, with why; rebuilt every tick.
    unavailable: Mutex<BTreeMap<u64, String>>,
    /// Nodes judged failed at the last tick.
    failed: Mutex<Vec<u64>>,
}

struct Watched {
    detector: PhiAccrualDetector,
    fed: Option<Instant>,
    since: Instant,
    epoch: u64,
}

/// Whether a node's detector must start over: the node restarted (a new epoch), or it is
/// back from a silence longer than the node lease (it was considered gone; that gap is
/// not an interval of its heartbeat rhythm and would blunt the detector for long).
fn needs_fresh_history(w: &Watched, epoch: u64, last_seen: Instant, node_lease: Duration) -> bool {
    w.epoch != epoch
        || w.fed
            .is_some_and(|f| last_seen.saturating_duration_since(f) > node_lease)
}

impl RegionSupervisor {
    /// A supervisor scheduling through `migrations`, paused by `maintenance`.
    pub fn new(
        options: SupervisorOptions,
        migrations: Arc<Migrations>,
        maintenance: Arc<Maintenance>,
    ) -> Self {
        Self {
            options,
            migrations,
            maintenance,
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

    /// Runs until `term` is cancelled (the end of this leader's term).
    pub async fn run(self: Arc<Self>, term: CancellationToken) {
        let deps = self.migrations.deps().clone();
        let tick = self.options.tick;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let epoch = Instant::now();
        let mut last_tick = epoch;
        let mut watched: HashMap<u64, Watched> = HashMap::new();
        let mut retry_at: HashMap<u64, Instant> = HashMap::new();
        let mut paused_logged = false;
        info!(
            enabled = self.options.enabled,
            tick_ms = tick.as_millis() as u64,
            acceptable_pause_ms = self.options.phi.acceptable_pause_ms,
            "region supervisor started"
        );
        loop {
            tokio::select! {
                _ = term.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let gap = now.saturating_duration_since(last_tick);
            last_tick = now;
            if !deps.leadership.is_leader() {
                continue;
            }
            if gap > tick * 3 {
                warn!(
                    gap_ms = gap.as_millis() as u64,
                    "the supervisor itself was stalled; resetting every detector and granting every node a fresh grace"
                );
                deps.node_leases.grace(now);
                watched.clear();
                continue;
            }
            // Feed the detectors with each datanode's last heartbeat.
            let ms = |t: Instant| t.saturating_duration_since(epoch).as_millis() as u64;
            let mut seen = HashSet::new();
            for lease in deps.node_leases.list() {
                if lease.key.role != common_proto::v1::Role::Datanode {
                    continue;
                }
                let id = lease.key.node_id;
                seen.insert(id);
                let fresh = || Watched {
                    detector: PhiAccrualDetector::new(self.options.phi),
                    fed: None,
                    since: now,
                    epoch: lease.node_epoch,
                };
                let w = watched.entry(id).or_insert_with(fresh);
                // A restarted node, or one back from a long silence: a fresh history.
                if needs_fresh_history(
                    w,
                    lease.node_epoch,
                    lease.last_seen,
                    self.options.node_lease,
                ) {
                    *w = fresh();
                }
                if w.fed != Some(lease.last_seen) {
                    w.detector.heartbeat(ms(lease.last_seen.max(w.since)));
                    w.fed = Some(lease.last_seen);
                }
            }
            watched.retain(|id, _| seen.contains(id));
            let in_grace =
                |since: Instant| now.saturating_duration_since(since) < self.options.node_lease;
            let term_young = in_grace(epoch);
            let mut failed: Vec<u64> = watched
                .iter()
                .filter(|(_, w)| !in_grace(w.since) && w.detector.is_failed(ms(now)))
                .map(|(id, _)| *id)
                .collect();
            // A route leader this leader has never heard of, past the grace, is failed too.
            // (From the route index: no scan of every route on each tick.)
            if !term_young {
                let leaders = deps.routes.leaders().await.unwrap_or_default();
                failed.extend(leaders.into_iter().filter(|l| !seen.contains(l)));
            }
            failed.sort_unstable();
            failed.dedup();
            let newly: Vec<u64> = {
                let mut prev = self.failed.lock();
                let newly = failed
                    .iter()
                    .copied()
                    .filter(|f| !prev.contains(f))
                    .collect();
                *prev = failed.clone();
                newly
            };
            for node_id in &newly {
                warn!(
                    node_id,
                    "datanode judged failed by the phi-accrual detector"
                );
            }
            let mut unavailable = BTreeMap::new();
            let paused = self.maintenance.is_enabled() || !self.options.enabled;
            if paused && !failed.is_empty() {
                if !paused_logged {
                    warn!(
                        ?failed,
                        maintenance = self.maintenance.is_enabled(),
                        "failed datanodes, but automatic failover is paused"
                    );
                    paused_logged = true;
                }
            } else {
                paused_logged = false;
            }
            // Per failed node: its regions and its stats, each looked up once; the
            // migrations in flight, read once.
            let mut candidates = Vec::new();
            for node_id in &failed {
                let led = deps.routes.led_by(*node_id).await.unwrap_or_default();
                if led.is_empty() {
                    continue;
                }
                let stat = deps.latest_stat(*node_id).await;
                for route in led {
                    match movable_in(stat.as_ref(), *node_id, route.region_id) {
                        Ok(()) => candidates.push(route.region_id),
                        Err(reason) => {
                            unavailable.insert(route.region_id, reason);
                        }
                    }
                }
            }
            let in_flight: HashSet<u64> = if candidates.is_empty() || paused {
                HashSet::new()
            } else {
                self.migrations
                    .persisted()
                    .await
                    .iter()
                    .map(|m| m.region_id)
                    .collect()
            };
            for region_id in candidates {
                if paused || retry_at.get(&region_id).is_some_and(|t| now < *t) {
                    continue;
                }
                if in_flight.contains(&region_id) {
                    continue;
                }
                if self.recently_failed_over(region_id) {
                    continue;
                }
                match self
                    .migrations
                    .start(region_id, None, MigrationReason::Failover)
                    .await
                {
                    Ok(state) => {
                        info!(region_id, from = ?state.from, to = state.to, "failover scheduled");
                        retry_at.remove(&region_id);
                    }
                    Err(MigrationError::LocalOnly { reason, .. }) => {
                        unavailable.insert(region_id, reason);
                    }
                    Err(err) => {
                        warn!(region_id, error = %err, "cannot schedule the failover yet");
                        retry_at.insert(region_id, now + self.options.node_lease / 2);
                    }
                }
            }
            crate::metrics::METRICS
                .failed_datanodes
                .set(failed.len() as i64);
            crate::metrics::METRICS
                .unavailable_regions
                .set(unavailable.len() as i64);
            {
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
    }

    /// Whether the region finished a failover within the last node lease.
    fn recently_failed_over(&self, region_id: u64) -> bool {
        let Some(last) = self.migrations.last_finished(region_id) else {
            return false;
        };
        let window = self.options.node_lease.as_millis() as u64;
        last.reason == MigrationReason::Failover
            && last
                .finished_ms
                .is_some_and(|f| common_proto::unix_millis().saturating_sub(f) < window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(epoch: u64, fed: Option<Instant>) -> Watched {
        Watched {
            detector: PhiAccrualDetector::new(PhiOptions::from_timings(
                Duration::from_secs(1),
                Duration::from_secs(3),
            )),
            fed,
            since: Instant::now(),
            epoch,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_or_a_return_from_a_long_silence_starts_a_fresh_history() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(3);
        let w = watched(7, Some(t0));
        assert!(
            !needs_fresh_history(&w, 7, t0 + Duration::from_secs(1), lease),
            "a normal beat"
        );
        assert!(
            !needs_fresh_history(&w, 7, t0 + lease, lease),
            "a long but live gap"
        );
        assert!(
            needs_fresh_history(&w, 7, t0 + Duration::from_secs(25), lease),
            "back from the dead"
        );
        assert!(
            needs_fresh_history(&w, 8, t0 + Duration::from_secs(1), lease),
            "restarted"
        );
        assert!(
            !needs_fresh_history(&watched(7, None), 7, t0, lease),
            "nothing fed yet"
        );
    }
}
