//! The RegionAliveKeeper: one lease deadline per region; a region whose lease is not
//! renewed in time turns readonly.
//!
//! **Deadline arithmetic.** The keeper has a monotonic `epoch`. Each heartbeat carries
//! `duration_since_epoch`, taken at *send* time; the metasrv echoes it in the lease. A
//! grant sets `deadline = epoch + echoed duration + lease`. The lease is thus anchored to
//! this node's own clock at send time: network delay only shortens it, and wall-clock
//! skew does not matter. A late response (an old echoed duration) yields an early
//! deadline, which never moves an existing deadline backwards and never extends past
//! `epoch + duration + lease`.
//!
//! **One timer for all regions.** Deadlines sit in an ordered set; a single task sleeps
//! until the earliest one, and is woken when an earlier deadline is inserted. 10,000
//! regions cost 10,000 set entries, not 10,000 tasks.
//!
//! **Startup.** Every region starts with an expired deadline (the epoch itself), so it is
//! readonly until its first leader grant.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_proto::v1::{RegionLease, RegionRole};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::RegionEngineRef;

#[derive(Debug)]
struct Deadlines {
    by_region: HashMap<u64, Instant>,
    queue: BTreeSet<(Instant, u64)>,
    /// Deadlines at or before this were already expired; each check only looks at the
    /// ones that passed since, so a wake never rescans old expiries.
    checked_until: Instant,
}

impl Deadlines {
    fn set(&mut self, region_id: u64, deadline: Instant) {
        if let Some(old) = self.by_region.insert(region_id, deadline) {
            self.queue.remove(&(old, region_id));
        }
        self.queue.insert((deadline, region_id));
    }

    fn remove(&mut self, region_id: u64) {
        if let Some(old) = self.by_region.remove(&region_id) {
            self.queue.remove(&(old, region_id));
        }
    }
}

/// What applying a lease did, for the caller to act on and to log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// Regions whose deadline moved forward.
    pub renewed: usize,
    /// Regions that were readonly and became writable.
    pub became_writable: Vec<u64>,
    /// Regions the metasrv says to close; the caller closes them.
    pub to_close: Vec<u64>,
}

/// Keeps every region's lease deadline, and makes regions readonly when it passes.
#[derive(Debug)]
pub struct RegionAliveKeeper {
    epoch: Instant,
    engine: RegionEngineRef,
    // A std Mutex: held only for set updates, never across an await.
    deadlines: Mutex<Deadlines>,
    wake: Notify,
}

impl RegionAliveKeeper {
    /// A keeper whose epoch is now; registers every region the engine already has, with
    /// an expired deadline (readonly until granted).
    pub fn new(engine: RegionEngineRef) -> Arc<Self> {
        let epoch = Instant::now();
        let keeper = Arc::new(Self {
            epoch,
            engine,
            deadlines: Mutex::new(Deadlines {
                by_region: HashMap::new(),
                queue: BTreeSet::new(),
                checked_until: epoch,
            }),
            wake: Notify::new(),
        });
        for region in keeper.engine.regions() {
            keeper.register(region.region_id);
        }
        keeper
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keeper's monotonic epoch.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Milliseconds since the epoch, now: what a heartbeat carries, taken at send time.
    pub fn duration_since_epoch(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// Starts tracking a region, readonly until its first grant.
    pub fn register(&self, region_id: u64) {
        self.engine.set_lease_valid(region_id, false);
        let mut d = self.lock();
        if !d.by_region.contains_key(&region_id) {
            d.set(region_id, self.epoch);
        }
    }

    /// Stops tracking a region (it was closed).
    pub fn deregister(&self, region_id: u64) {
        self.lock().remove(region_id);
    }

    /// A region's current deadline.
    pub fn deadline(&self, region_id: u64) -> Option<Instant> {
        self.lock().by_region.get(&region_id).copied()
    }

    /// How many regions are tracked.
    pub fn len(&self) -> usize {
        self.lock().by_region.len()
    }

    /// Whether no region is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a lease from a heartbeat response.
    pub fn on_lease(&self, lease: &RegionLease) -> LeaseOutcome {
        let deadline = self.epoch
            + Duration::from_millis(lease.duration_since_epoch)
            + Duration::from_secs(lease.lease_seconds);
        let now = Instant::now();
        let mut outcome = LeaseOutcome {
            to_close: lease.closeable_region_ids.clone(),
            ..Default::default()
        };
        let mut earliest_moved = false;
        {
            let mut d = self.lock();
            let first_before = d.queue.first().copied();
            for granted in &lease.regions {
                let Some(current) = d.by_region.get(&granted.region_id).copied() else {
                    // Not (or no longer) open here; nothing to renew.
                    continue;
                };
                if deadline > current {
                    d.set(granted.region_id, deadline);
                    outcome.renewed += 1;
                }
            }
            earliest_moved |= d.queue.first().copied() != first_before;
        }
        for granted in &lease.regions {
            let Some(current) = self.deadline(granted.region_id) else {
                continue;
            };
            let live = current > now && granted.role() == RegionRole::Leader;
            let Some(info) = self.engine.region(granted.region_id) else {
                continue;
            };
            if live != info.lease_valid {
                self.engine.set_lease_valid(granted.region_id, live);
                if live {
                    outcome.became_writable.push(granted.region_id);
                }
            }
        }
        for region_id in &outcome.became_writable {
            info!(region_id, "region lease granted; region is writable");
        }
        if earliest_moved {
            self.wake.notify_one();
        }
        outcome
    }

    /// Makes every region whose deadline has passed readonly; returns them.
    pub fn expire_due(&self, now: Instant) -> Vec<u64> {
        let due: Vec<u64> = {
            let mut d = self.lock();
            if now <= d.checked_until {
                return Vec::new();
            }
            let from = Bound::Excluded((d.checked_until, u64::MAX));
            let to = Bound::Included((now, u64::MAX));
            let due = d.queue.range((from, to)).map(|(_, id)| *id).collect();
            d.checked_until = now;
            due
        };
        let mut expired = Vec::new();
        for region_id in due {
            if self.engine.region(region_id).is_some_and(|r| r.lease_valid) {
                self.engine.set_lease_valid(region_id, false);
                warn!(
                    region_id,
                    "region lease expired; region is readonly until the metasrv grants it again"
                );
                expired.push(region_id);
            }
        }
        expired
    }

    /// The timer task: sleeps until the earliest deadline, expires what is due, repeats.
    /// Returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            // The earliest deadline still in the future; passed ones were handled.
            let next = self
                .lock()
                .queue
                .range((Bound::Excluded((now, u64::MAX)), Bound::Unbounded))
                .next()
                .map(|(t, _)| *t);
            let sleep_until = next.unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
            self.expire_due(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RegionEngine;
    use crate::MemoryRegionEngine;
    use common_proto::v1::GrantedRegion;

    fn lease(regions: &[(u64, RegionRole)], duration_ms: u64, secs: u64) -> RegionLease {
        RegionLease {
            regions: regions
                .iter()
                .map(|&(id, r)| GrantedRegion {
                    region_id: id,
                    role: r as i32,
                })
                .collect(),
            duration_since_epoch: duration_ms,
            lease_seconds: secs,
            closeable_region_ids: vec![],
        }
    }

    async fn keeper_with(
        ids: &[u64],
    ) -> (
        Arc<MemoryRegionEngine>,
        Arc<RegionAliveKeeper>,
        CancellationToken,
    ) {
        let engine = Arc::new(MemoryRegionEngine::new());
        for &id in ids {
            engine
                .open_region(id, RegionRole::Leader)
                .await
                .expect("open");
            engine.set_lease_valid(id, true); // the keeper must reset this at startup
        }
        let keeper = RegionAliveKeeper::new(engine.clone());
        let token = CancellationToken::new();
        tokio::spawn(keeper.clone().run(token.clone()));
        (engine, keeper, token)
    }

    fn writable(engine: &MemoryRegionEngine, id: u64) -> bool {
        engine.region(id).expect("open").writable()
    }

    #[tokio::test(start_paused = true)]
    async fn regions_start_readonly_and_expire_exactly_at_epoch_plus_duration_plus_lease() {
        let (engine, keeper, _t) = keeper_with(&[1]).await;
        assert!(!writable(&engine, 1), "readonly until the first grant");
        let out = keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert_eq!(out.became_writable, vec![1]);
        assert_eq!(
            keeper.deadline(1),
            Some(keeper.epoch() + Duration::from_secs(10))
        );
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(9_999)).await;
        assert!(writable(&engine, 1));
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(10_001)).await;
        tokio::task::yield_now().await;
        assert!(!writable(&engine, 1), "expired");
        // Reads still work, and a later grant makes it writable again.
        assert!(engine.read(1, "k").is_ok());
        let d = keeper.duration_since_epoch();
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], d, 10));
        assert!(writable(&engine, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_response_never_extends_past_its_own_deadline_nor_moves_one_back() {
        let (engine, keeper, _t) = keeper_with(&[1]).await;
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 5_000, 10));
        let d1 = keeper.deadline(1).expect("set");
        assert_eq!(d1, keeper.epoch() + Duration::from_secs(15));
        // An older response arrives late: the deadline stays.
        let out = keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 1_000, 10));
        assert_eq!(out.renewed, 0);
        assert_eq!(keeper.deadline(1), Some(d1), "never backwards");

        // A response so late its deadline has passed grants nothing.
        tokio::time::sleep_until(keeper.epoch() + Duration::from_secs(20)).await;
        tokio::task::yield_now().await;
        assert!(!writable(&engine, 1));
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 9_000, 10)); // deadline epoch+19s < now
        assert!(
            !writable(&engine, 1),
            "a stale grant must not make it writable"
        );
        assert_eq!(
            keeper.deadline(1),
            Some(keeper.epoch() + Duration::from_secs(19))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follower_grants_renew_but_never_make_writable_and_closeable_is_reported() {
        let (engine, keeper, _t) = keeper_with(&[1, 2]).await;
        let mut l = lease(&[(1, RegionRole::Follower)], 0, 10);
        l.closeable_region_ids = vec![2];
        let out = keeper.on_lease(&l);
        assert_eq!(out.renewed, 1);
        assert!(out.became_writable.is_empty());
        assert_eq!(out.to_close, vec![2]);
        assert!(!writable(&engine, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_regions_share_one_timer_task() {
        let ids: Vec<u64> = (1..=10_000).collect();
        let (engine, keeper, _t) = keeper_with(&ids).await;
        let grants: Vec<(u64, RegionRole)> =
            ids.iter().map(|&id| (id, RegionRole::Leader)).collect();
        // Half the regions get a 10 s lease, the other half 20 s.
        keeper.on_lease(&lease(&grants[..5_000], 0, 10));
        keeper.on_lease(&lease(&grants[5_000..], 0, 20));
        assert_eq!(
            engine.regions().iter().filter(|r| r.writable()).count(),
            10_000
        );
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(10_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            engine.regions().iter().filter(|r| r.writable()).count(),
            5_000
        );
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(20_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(engine.regions().iter().filter(|r| r.writable()).count(), 0);
        assert_eq!(keeper.len(), 10_000);
    }
}
