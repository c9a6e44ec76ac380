//! The RegionAliveKeeper: applies the leases in heartbeat responses, and keeps the books
//! on their expiry.
//!
//! **It is not what makes a region readonly.** Writability is decided at each write from
//! the deadline itself ([`RegionLeases`], fail closed). The keeper applies grants
//! (extending deadlines), revokes the lease of a region the metasrv now routes here as a
//! follower, reports closeable regions, and runs one bookkeeping timer that logs and
//! counts each lapse. If that timer stalls, panics or never runs, nothing stays writable
//! a moment longer: only the log line is late.
//!
//! **One timer for all regions.** Granted deadlines sit in an ordered set inside
//! [`RegionLeases`]; a single task sleeps until the earliest one and is woken when an
//! earlier one is inserted. 10,000 regions cost 10,000 set entries, not 10,000 tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use common_proto::v1::{RegionLease, RegionOwner, RegionRole};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::RegionEngineRef;
use crate::lease::RegionLeases;

/// What applying a lease did, for the caller to act on and to log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// Regions whose deadline moved forward.
    pub renewed: usize,
    /// Regions that were readonly and became writable.
    pub became_writable: Vec<u64>,
    /// Regions whose live lease was revoked because the metasrv now routes them here as
    /// followers.
    pub revoked: Vec<u64>,
    /// Regions the metasrv says to close; the caller closes them.
    pub to_close: Vec<u64>,
    /// Regions the metasrv routes here as the leader that are not open here, with their
    /// epochs; the caller opens them (on shared storage).
    pub to_open: Vec<(u64, u64)>,
}

/// Applies granted leases to [`RegionLeases`], and logs each lapse.
#[derive(Debug)]
pub struct RegionAliveKeeper {
    engine: RegionEngineRef,
    leases: Arc<RegionLeases>,
    /// Lapses already logged are at or before this; a wake looks only at newer ones.
    // A synchronous lock (parking_lot): never held across an await.
    checked_until: Mutex<Instant>,
    lapsed: AtomicU64,
    wake: Notify,
    /// Whether a lease no longer than the margin was already reported (once is enough).
    margin_warned: std::sync::atomic::AtomicBool,
    /// Who leads the regions this node reported but does not lead, as the metasrv last
    /// said: where a refused writer should go. Bounded by [`MAX_OWNERS`].
    owners: Mutex<HashMap<u64, RegionOwner>>,
}

/// The most owner hints kept; past it the map starts over (hints are only hints).
const MAX_OWNERS: usize = 65_536;

impl RegionAliveKeeper {
    /// A keeper over `leases`; tracks every region the engine already has, readonly until
    /// granted.
    pub fn new(engine: RegionEngineRef, leases: Arc<RegionLeases>) -> Arc<Self> {
        for region in engine.regions() {
            leases.track(region.region_id);
        }
        Arc::new(Self {
            engine,
            checked_until: Mutex::new(leases.epoch()),
            leases,
            lapsed: AtomicU64::new(0),
            wake: Notify::new(),
            margin_warned: std::sync::atomic::AtomicBool::new(false),
            owners: Mutex::default(),
        })
    }

    /// The lease deadlines this keeper maintains (what the write path checks).
    pub fn leases(&self) -> &Arc<RegionLeases> {
        &self.leases
    }

    /// The monotonic epoch heartbeats count from.
    pub fn epoch(&self) -> Instant {
        self.leases.epoch()
    }

    /// Milliseconds since the epoch, now: what a heartbeat carries, taken at send time.
    pub fn duration_since_epoch(&self) -> u64 {
        self.leases.duration_since_epoch()
    }

    /// Starts tracking a region, readonly until its first leader grant.
    pub fn register(&self, region_id: u64) {
        self.leases.track(region_id);
    }

    /// Closes a region: the one path for a close the metasrv asked for, by instruction
    /// or as closeable in a lease. Its lease goes first, so no write is admitted from
    /// the moment the close begins, then the engine closes it. Returns whether the engine
    /// had it open.
    pub async fn close(&self, region_id: u64) -> crate::error::Result<bool> {
        self.leases.untrack(region_id);
        self.engine.close_region(region_id).await
    }

    /// Makes a region open here the leader under `epoch`: the one path for an upgrade,
    /// by instruction or by a leader grant. Writable once a leader lease under that
    /// epoch is live.
    pub fn upgrade(&self, region_id: u64, epoch: u64) -> crate::error::Result<()> {
        self.engine.set_role(region_id, RegionRole::Leader, epoch)?;
        self.leases.raise_region_epoch(region_id, epoch);
        Ok(())
    }

    /// A region's current deadline.
    pub fn deadline(&self, region_id: u64) -> Option<Instant> {
        self.leases.deadline(region_id)
    }

    /// How many regions are tracked.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Who leads `region_id` now, if the metasrv said so after this node lost it.
    pub fn owner_of(&self, region_id: u64) -> Option<RegionOwner> {
        self.owners.lock().get(&region_id).cloned()
    }

    fn note_owners(&self, lease: &RegionLease) {
        let mut owners = self.owners.lock();
        for granted in &lease.regions {
            if granted.role() == RegionRole::Leader {
                owners.remove(&granted.region_id);
            }
        }
        if owners.len() + lease.owners.len() > MAX_OWNERS {
            owners.clear();
        }
        for owner in &lease.owners {
            owners.insert(owner.region_id, owner.clone());
        }
    }

    /// Whether no region is tracked.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// How many leases lapsed (were live, and ran out) since start.
    pub fn lapsed(&self) -> u64 {
        self.lapsed.load(Ordering::Relaxed)
    }

    /// Logs, once, a region lease no longer than this node's margin: no region could
    /// ever be writable, which is a misconfiguration to shout about. Logging only.
    fn report_lease_within_margin(&self, lease: &RegionLease, length: Duration) {
        if length <= self.leases.margin()
            && !lease.regions.is_empty()
            && !self.margin_warned.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                lease_seconds = lease.lease_seconds,
                margin_ms = self.leases.margin().as_millis() as u64,
                "the metasrv's region lease is no longer than this node's lease margin: no region \
                 here can ever be writable; lower lease_margin below the region lease"
            );
        }
    }

    /// Applies a lease from a heartbeat response. Leader grants extend deadlines; a
    /// follower grant revokes a live lease (the metasrv moved leadership away). A leader
    /// grant for a region open here as a follower upgrades it, and one for a region not
    /// open here is returned in `to_open`: the route is the authority.
    pub fn on_lease(&self, lease: &RegionLease) -> LeaseOutcome {
        let length = Duration::from_secs(lease.lease_seconds);
        self.report_lease_within_margin(lease, length);
        self.note_owners(lease);
        let mut outcome = LeaseOutcome {
            to_close: lease.closeable_region_ids.clone(),
            ..Default::default()
        };
        let mut earliest_moved = false;
        // Read once: deadlines only move forward, so a grant wakes the timer iff it lands
        // before the earliest pending deadline as it stood before this batch.
        let now = Instant::now();
        let next_before = self.leases.next_deadline_after(now);
        for granted in &lease.regions {
            let id = granted.region_id;
            if granted.role() != RegionRole::Leader {
                if self.leases.revoke(id) {
                    warn!(
                        region_id = id,
                        "the metasrv routes this region here as a follower; lease revoked"
                    );
                    outcome.revoked.push(id);
                }
                continue;
            }
            let Some(region) = self.engine.region(id) else {
                outcome.to_open.push((id, granted.epoch));
                continue;
            };
            let was_live = self.leases.deadline(id).is_some_and(|d| now < d);
            let Some(deadline) =
                self.leases
                    .grant_under(id, granted.epoch, lease.duration_since_epoch, length)
            else {
                continue;
            };
            outcome.renewed += 1;
            earliest_moved |= next_before.is_none_or(|t| deadline < t);
            let leader =
                region.role == RegionRole::Leader || self.upgrade_by_grant(id, granted.epoch);
            if !was_live && leader && now < deadline {
                info!(region_id = id, "region lease granted; region is writable");
                outcome.became_writable.push(id);
            }
        }
        if earliest_moved {
            self.wake.notify_one();
        }
        outcome
    }

    /// A leader grant for a region open here as a follower: the metasrv routes it here
    /// as the leader under `epoch`, so its upgrade instruction was lost (the target was
    /// cut off, or judged gone, when the move sent it). The route is the authority either
    /// way: a grant names the route's leader only after the old owner was released, as
    /// the instruction does. Returns whether the region now leads.
    fn upgrade_by_grant(&self, region_id: u64, epoch: u64) -> bool {
        match self.upgrade(region_id, epoch) {
            Ok(()) => {
                info!(
                    region_id,
                    epoch,
                    "upgraded to leader by a leader grant (the upgrade instruction was lost)"
                );
                true
            }
            Err(err) => {
                warn!(region_id, epoch, error = %err, "a leader grant could not upgrade the region");
                false
            }
        }
    }

    /// Logs and counts the leases that lapsed since the last call, up to `now`; returns
    /// them. Bookkeeping only: the write path already refuses them.
    pub fn expire_due(&self, now: Instant) -> Vec<u64> {
        let from = {
            let mut checked = self.checked_until.lock();
            if now <= *checked {
                return Vec::new();
            }
            std::mem::replace(&mut *checked, now)
        };
        let lapsed = self.leases.lapsed_between(from, now);
        for region_id in &lapsed {
            warn!(
                region_id,
                "region lease expired; region is readonly until the metasrv grants it again"
            );
        }
        self.lapsed
            .fetch_add(lapsed.len() as u64, Ordering::Relaxed);
        lapsed
    }

    /// The bookkeeping timer: sleeps until the earliest deadline, logs what lapsed,
    /// repeats. Returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let sleep_until = self
                .leases
                .next_deadline_after(now)
                .unwrap_or(now + Duration::from_secs(3600));
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
                    epoch: 0,
                })
                .collect(),
            duration_since_epoch: duration_ms,
            lease_seconds: secs,
            closeable_region_ids: vec![],
            owners: vec![],
        }
    }

    /// An engine with `ids` open as leaders, and a keeper over it; `timer` says whether
    /// the keeper's bookkeeping task runs at all.
    async fn keeper_with(
        ids: &[u64],
        timer: bool,
    ) -> (
        Arc<MemoryRegionEngine>,
        Arc<RegionAliveKeeper>,
        CancellationToken,
    ) {
        let leases = RegionLeases::new(Duration::ZERO);
        let engine = Arc::new(MemoryRegionEngine::new(leases.clone()));
        for &id in ids {
            engine
                .open_region(id, RegionRole::Leader, 1)
                .await
                .expect("open");
        }
        let keeper = RegionAliveKeeper::new(engine.clone(), leases);
        let token = CancellationToken::new();
        if timer {
            tokio::spawn(keeper.clone().run(token.clone()));
        }
        (engine, keeper, token)
    }

    fn writable(engine: &MemoryRegionEngine, id: u64) -> bool {
        engine.write(id, "probe", "x").is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn regions_start_readonly_and_expire_exactly_at_epoch_plus_duration_plus_lease() {
        let (engine, keeper, _t) = keeper_with(&[1], true).await;
        assert!(!writable(&engine, 1), "readonly until the first grant");
        let out = keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert_eq!(out.became_writable, vec![1]);
        assert_eq!(
            keeper.deadline(1),
            Some(keeper.epoch() + Duration::from_secs(10))
        );
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(9_999)).await;
        assert!(writable(&engine, 1));
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(10_000)).await;
        assert!(!writable(&engine, 1), "expired at the deadline itself");
        tokio::task::yield_now().await;
        assert_eq!(keeper.lapsed(), 1, "the timer logged the lapse");
        // Reads still work, and a later grant makes it writable again.
        assert!(engine.read(1, "probe").is_ok());
        let d = keeper.duration_since_epoch();
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], d, 10));
        assert!(writable(&engine, 1));
    }

    /// The bookkeeping timer is spawned nowhere here: grants still lapse on time, because
    /// the write path compares against the deadline itself.
    #[tokio::test(start_paused = true)]
    async fn a_keeper_whose_timer_never_runs_leaves_nothing_writable_past_the_deadline() {
        let (engine, keeper, _t) = keeper_with(&[1, 2], false).await;
        keeper.on_lease(&lease(
            &[(1, RegionRole::Leader), (2, RegionRole::Leader)],
            0,
            3,
        ));
        assert!(writable(&engine, 1) && writable(&engine, 2));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!writable(&engine, 1) && !writable(&engine, 2));
        assert_eq!(keeper.lapsed(), 0, "nothing was even logged");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_response_never_extends_past_its_own_deadline_nor_moves_one_back() {
        let (engine, keeper, _t) = keeper_with(&[1], true).await;
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 5_000, 10));
        let d1 = keeper.deadline(1).expect("set");
        assert_eq!(d1, keeper.epoch() + Duration::from_secs(15));
        // An older response arrives late: the deadline stays.
        let out = keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 1_000, 10));
        assert_eq!(out.renewed, 0);
        assert_eq!(keeper.deadline(1), Some(d1), "never backwards");

        // A response so late its deadline has passed grants nothing.
        tokio::time::sleep_until(keeper.epoch() + Duration::from_secs(20)).await;
        assert!(!writable(&engine, 1));
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 9_000, 10)); // deadline epoch+19s < now
        assert!(
            !writable(&engine, 1),
            "a stale grant must not make it writable"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_owner_named_for_a_region_lost_here_is_kept_until_it_is_granted_back() {
        let (_engine, keeper, _t) = keeper_with(&[1], true).await;
        let owner = RegionOwner {
            region_id: 1,
            node_id: 2,
            addr: "10.0.0.2:4000".into(),
            epoch: 7,
        };
        let mut l = lease(&[(1, RegionRole::Follower)], 0, 10);
        l.owners = vec![owner.clone()];
        keeper.on_lease(&l);
        assert_eq!(keeper.owner_of(1), Some(owner));
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert_eq!(keeper.owner_of(1), None, "led here again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_grant_revokes_a_live_lease_and_closeable_is_reported() {
        let (engine, keeper, _t) = keeper_with(&[1, 2], true).await;
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert!(writable(&engine, 1));
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut l = lease(
            &[(1, RegionRole::Follower)],
            keeper.duration_since_epoch(),
            10,
        );
        l.closeable_region_ids = vec![2];
        let out = keeper.on_lease(&l);
        assert_eq!(out.revoked, vec![1]);
        assert!(out.became_writable.is_empty());
        assert_eq!(out.to_close, vec![2]);
        assert!(!writable(&engine, 1), "the metasrv moved leadership away");
        // The leader grant from before the follower grant, delivered late, is fenced.
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert!(!writable(&engine, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_grant_upgrades_a_follower_whose_upgrade_instruction_was_lost() {
        let (engine, keeper, _t) = keeper_with(&[], true).await;
        engine
            .open_region(1, RegionRole::Follower, 1)
            .await
            .expect("open");
        keeper.register(1);
        keeper.leases().raise_region_epoch(1, 1);
        keeper.on_lease(&lease(&[(1, RegionRole::Follower)], 0, 10));
        assert!(
            !writable(&engine, 1),
            "a follower grant leaves it a follower"
        );
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut l = lease(
            &[(1, RegionRole::Leader)],
            keeper.duration_since_epoch(),
            10,
        );
        l.regions[0].epoch = 2;
        let out = keeper.on_lease(&l);
        assert_eq!(out.became_writable, vec![1]);
        assert!(writable(&engine, 1));
        assert_eq!(engine.region(1).map(|r| r.role), Some(RegionRole::Leader));
        assert_eq!(keeper.leases().region_epoch(1), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_or_older_leader_grant_never_upgrades_a_follower() {
        let (engine, keeper, _t) = keeper_with(&[1], true).await;
        keeper.leases().raise_region_epoch(1, 2);
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        tokio::time::advance(Duration::from_millis(10)).await;
        // Downgraded: revoked (fenced from now on) and a follower.
        keeper.leases().revoke(1);
        engine
            .set_role(1, RegionRole::Follower, 2)
            .expect("follower");
        tokio::time::advance(Duration::from_millis(10)).await;
        // A response to a heartbeat sent before the revoke, delivered late.
        let mut stale = lease(&[(1, RegionRole::Leader)], 5, 10);
        stale.regions[0].epoch = 2;
        keeper.on_lease(&stale);
        assert_eq!(engine.region(1).map(|r| r.role), Some(RegionRole::Follower));
        // A grant under an older epoch than the region's.
        let mut older = lease(
            &[(1, RegionRole::Leader)],
            keeper.duration_since_epoch(),
            10,
        );
        older.regions[0].epoch = 1;
        keeper.on_lease(&older);
        assert_eq!(engine.region(1).map(|r| r.role), Some(RegionRole::Follower));
        assert!(!writable(&engine, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_grant_for_a_region_not_open_here_asks_the_caller_to_open_it() {
        let (_engine, keeper, _t) = keeper_with(&[1], true).await;
        let mut l = lease(
            &[
                (1, RegionRole::Leader),
                (2, RegionRole::Leader),
                (3, RegionRole::Follower),
            ],
            0,
            10,
        );
        l.regions[1].epoch = 4;
        let out = keeper.on_lease(&l);
        assert_eq!(
            out.to_open,
            vec![(2, 4)],
            "only the leader grant of an absent region"
        );
        assert_eq!(out.became_writable, vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_regions_share_one_timer_task() {
        let ids: Vec<u64> = (1..=10_000).collect();
        let (engine, keeper, _t) = keeper_with(&ids, true).await;
        let grants: Vec<(u64, RegionRole)> =
            ids.iter().map(|&id| (id, RegionRole::Leader)).collect();
        // Half the regions get a 10 s lease, the other half 20 s.
        keeper.on_lease(&lease(&grants[..5_000], 0, 10));
        keeper.on_lease(&lease(&grants[5_000..], 0, 20));
        let live = |engine: &MemoryRegionEngine| {
            engine
                .regions()
                .iter()
                .filter(|r| keeper.leases().is_live(r.region_id))
                .count()
        };
        assert_eq!(live(&engine), 10_000);
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(10_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(live(&engine), 5_000);
        assert_eq!(keeper.lapsed(), 5_000);
        tokio::time::sleep_until(keeper.epoch() + Duration::from_millis(20_001)).await;
        tokio::task::yield_now().await;
        assert_eq!(live(&engine), 0);
        assert_eq!(keeper.lapsed(), 10_000);
        assert_eq!(keeper.len(), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_keeper_tracks_what_it_is_told_and_counts_from_its_epoch() {
        let (engine, keeper, _t) = keeper_with(&[], false).await;
        assert!(keeper.is_empty());
        engine
            .open_region(7, RegionRole::Leader, 1)
            .await
            .expect("open");
        keeper.register(7);
        assert!(!keeper.is_empty());
        assert_eq!(
            keeper.deadline(7),
            Some(keeper.epoch()),
            "tracked, never granted"
        );
        assert!(keeper.close(7).await.expect("close"), "it was open");
        assert!(keeper.is_empty());
        assert_eq!(keeper.deadline(7), None);
        assert!(engine.regions().is_empty(), "the engine closed it too");
        assert!(
            !keeper.close(7).await.expect("close"),
            "a second close finds nothing"
        );
        tokio::time::advance(Duration::from_millis(5_000)).await;
        assert_eq!(keeper.duration_since_epoch(), 5_000);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_counts_renewals_and_names_only_regions_that_just_became_writable() {
        let (engine, keeper, _t) = keeper_with(&[1, 2, 3], false).await;
        engine
            .set_role(3, RegionRole::Follower, 1)
            .expect("follower");
        tokio::time::advance(Duration::from_secs(1)).await;
        let d = keeper.duration_since_epoch();
        let leaders = [
            (1, RegionRole::Leader),
            (2, RegionRole::Leader),
            (3, RegionRole::Leader),
        ];
        let out = keeper.on_lease(&lease(&leaders, d, 10));
        assert_eq!(out.renewed, 3);
        assert_eq!(
            out.became_writable,
            vec![1, 2, 3],
            "3 was a follower in the engine: a leader grant upgrades it"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let out = keeper.on_lease(&lease(&leaders[..1], keeper.duration_since_epoch(), 10));
        assert_eq!(out.renewed, 1);
        assert!(out.became_writable.is_empty(), "1 was already writable");
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_that_ends_now_or_earlier_makes_nothing_writable() {
        let (engine, keeper, _t) = keeper_with(&[1], false).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        // Anchored at the epoch with a 10 s lease: its deadline is exactly now.
        let out = keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 10));
        assert_eq!(out.renewed, 1, "the deadline moved");
        assert!(out.became_writable.is_empty(), "but it is already over");
        assert!(!writable(&engine, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_timer_so_lapses_are_counted_on_time() {
        let (_engine, keeper, _t) = keeper_with(&[1, 2], true).await;
        keeper.on_lease(&lease(&[(1, RegionRole::Leader)], 0, 100));
        tokio::task::yield_now().await; // the timer now sleeps until 100 s
        keeper.on_lease(&lease(&[(2, RegionRole::Leader)], 0, 5));
        tokio::time::sleep(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            keeper.lapsed(),
            1,
            "region 2's lapse seen at 5 s, not at 100 s"
        );
    }
}
