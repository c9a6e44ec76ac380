//! [`RegionLeases`]: region lease deadlines, checked where they are used, at the write.
//!
//! **Fail closed.** A region accepts a write only while its role is leader *and*
//! `now < deadline` on the monotonic clock, decided at the moment of the write. No timer
//! task flips a flag: a stalled, starved, panicked or SIGSTOPped timer cannot leave a
//! region writable, because the deadline itself is what the write path compares against.
//! After a SIGCONT the monotonic clock has moved on, so a write queued during the pause
//! is refused. An embedder's engine calls [`RegionLeases::begin_write`] before it applies
//! a write and [`WriteTicket::confirm`] before it acknowledges it; a write path that skips
//! either breaks the one-writer rule (S1, README "Failover").
//!
//! **Deadline arithmetic.** A heartbeat carries `duration_since_epoch`, this node's
//! monotonic time since [`RegionLeases::epoch`] at *send* time; the metasrv echoes it with
//! the lease. A leader grant sets `deadline = epoch + echoed duration + lease − margin`.
//! Network delay only shortens the lease and wall-clock skew does not matter. The
//! **margin** (default 500 ms, see `DatanodeOptions::lease_margin`) absorbs clock-rate
//! drift between this node and the metasrv (NTP slews at most 500 ppm: 5 ms on a 10 s
//! lease) and the scheduling slack between a write's last check and its effect, with a
//! wide safety factor. The metasrv's `failover_wait` rule waits out the longest deadline a
//! datanode can hold (grant time + lease + its own drift margin), which this margin only
//! shortens.
//!
//! **Monotone, and fenced.** A deadline never moves backwards on a grant. A revoke
//! (downgrade, or a grant in the follower role) ends the lease at once and sets a
//! *fence*: grants anchored before it (a late response to a heartbeat sent before the
//! revoke) are ignored, so a stale grant cannot make a downgraded region writable again.
//!
//! **Startup.** Every tracked region starts with its deadline at the epoch: readonly until
//! its first leader grant.
//!
//! **Region epochs.** Each region also carries the newest *region epoch* this node was
//! given for it (by an open or upgrade instruction, or a grant), which only grows. A grant
//! under an older region epoch is from an ownership that has ended and is ignored; one
//! under a newer epoch moves the region to it. A [`WriteTicket`] carries the region epoch
//! the write is decided under, and the engine stamps the write with it, so storage can
//! fence a writer whose ownership has ended (see `engine`). (Not to be confused with
//! [`RegionLeases::epoch`], the monotonic instant heartbeats count from.)

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

use crate::error::{LeaseExpiredSnafu, Result};

/// The default drift margin taken off every lease (see the module docs for why).
pub const DEFAULT_LEASE_MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct Lease {
    deadline: Instant,
    /// Grants anchored before this (ms since the epoch) are stale and ignored.
    fence_ms: u64,
    /// The newest region epoch given for the region.
    region_epoch: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_region: HashMap<u64, Lease>,
    /// Live-or-past granted deadlines, ordered, for the keeper's bookkeeping timer.
    queue: BTreeSet<(Instant, u64)>,
}

impl Inner {
    fn set_deadline(&mut self, region_id: u64, lease: &mut Lease, deadline: Instant) {
        self.queue.remove(&(lease.deadline, region_id));
        lease.deadline = deadline;
        self.queue.insert((deadline, region_id));
    }
}

/// Every tracked region's lease deadline; shared by the keeper (which applies grants) and
/// the engine (which checks it on every write).
#[derive(Debug)]
pub struct RegionLeases {
    epoch: Instant,
    margin: Duration,
    // A synchronous lock (parking_lot): held for map updates and lookups only, never across an await.
    inner: RwLock<Inner>,
}

/// Proof that a region's lease was live when a write began. [`confirm`](Self::confirm)
/// it before acknowledging the write: a write that began before the deadline but finished
/// after it must not be acknowledged.
#[derive(Debug)]
#[must_use = "confirm the ticket before acknowledging the write"]
pub struct WriteTicket<'a> {
    leases: &'a RegionLeases,
    region_id: u64,
    region_epoch: u64,
}

impl WriteTicket<'_> {
    /// The region epoch the write is decided under: stamp the write with it.
    pub fn region_epoch(&self) -> u64 {
        self.region_epoch
    }

    /// Checks the lease again, now. `Err(LeaseExpired)` means the write must not be
    /// acknowledged (it may or may not have been applied).
    pub fn confirm(self) -> Result<()> {
        self.leases.check(self.region_id)
    }
}

impl RegionLeases {
    /// Leases whose epoch is now, shortened by `margin`.
    pub fn new(margin: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            margin,
            inner: RwLock::default(),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere, and a panic aborts the binaries;
        // the map itself is always consistent between statements.
        self.inner.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write()
    }

    /// The monotonic epoch that `duration_since_epoch` counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The drift margin taken off every lease.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Milliseconds since the epoch, now: what a heartbeat carries, taken at send time.
    pub fn duration_since_epoch(&self) -> u64 {
        ms_since(self.epoch, Instant::now())
    }

    /// Starts tracking a region, readonly until its first leader grant. Grants anchored
    /// before now are ignored (they were not for this opening of the region).
    pub fn track(&self, region_id: u64) {
        let fence_ms = self.duration_since_epoch();
        self.write().by_region.entry(region_id).or_insert(Lease {
            deadline: self.epoch,
            fence_ms,
            region_epoch: 0,
        });
    }

    /// Moves a tracked region to `region_epoch` if that is newer (an open or upgrade
    /// instruction names it). Returns the region's epoch now, `None` if not tracked.
    pub fn raise_region_epoch(&self, region_id: u64, region_epoch: u64) -> Option<u64> {
        let mut inner = self.write();
        let lease = inner.by_region.get_mut(&region_id)?;
        lease.region_epoch = lease.region_epoch.max(region_epoch);
        Some(lease.region_epoch)
    }

    /// The newest region epoch given for a tracked region.
    pub fn region_epoch(&self, region_id: u64) -> Option<u64> {
        self.read()
            .by_region
            .get(&region_id)
            .map(|l| l.region_epoch)
    }

    /// Stops tracking a region (it was closed): writes to it are refused from now on.
    pub fn untrack(&self, region_id: u64) {
        let mut inner = self.write();
        if let Some(lease) = inner.by_region.remove(&region_id) {
            inner.queue.remove(&(lease.deadline, region_id));
        }
    }

    /// Whether a region is tracked.
    pub fn is_tracked(&self, region_id: u64) -> bool {
        self.read().by_region.contains_key(&region_id)
    }

    /// Applies a leader grant anchored at `anchor_ms` (the echoed `duration_since_epoch`)
    /// for `lease`. Returns the new deadline if it moved forward; `None` if the region is
    /// not tracked, the grant is stale (anchored before a fence), or it would not extend
    /// the current deadline.
    /// The grant is under the region's current region epoch (see
    /// [`grant_under`](Self::grant_under)).
    pub fn grant(&self, region_id: u64, anchor_ms: u64, lease: Duration) -> Option<Instant> {
        let region_epoch = self.region_epoch(region_id)?;
        self.grant_under(region_id, region_epoch, anchor_ms, lease)
    }

    /// [`grant`](Self::grant) under `region_epoch`: ignored (`None`) if older than the
    /// region's; a newer one moves the region to it.
    pub fn grant_under(
        &self,
        region_id: u64,
        region_epoch: u64,
        anchor_ms: u64,
        lease: Duration,
    ) -> Option<Instant> {
        let deadline = (self.epoch + Duration::from_millis(anchor_ms) + lease)
            .checked_sub(self.margin)
            .unwrap_or(self.epoch)
            .max(self.epoch);
        let mut inner = self.write();
        let mut current = *inner.by_region.get(&region_id)?;
        if anchor_ms < current.fence_ms
            || region_epoch < current.region_epoch
            || deadline <= current.deadline
        {
            return None;
        }
        current.region_epoch = region_epoch;
        inner.set_deadline(region_id, &mut current, deadline);
        inner.by_region.insert(region_id, current);
        Some(deadline)
    }

    /// Ends a region's lease now, and fences off grants anchored before now. Returns
    /// whether the lease was live.
    pub fn revoke(&self, region_id: u64) -> bool {
        let now = Instant::now();
        let fence_ms = ms_since(self.epoch, now) + 1;
        let mut inner = self.write();
        let Some(mut lease) = inner.by_region.get(&region_id).copied() else {
            return false;
        };
        let was_live = now < lease.deadline;
        inner.queue.remove(&(lease.deadline, region_id));
        lease.deadline = self.epoch;
        lease.fence_ms = lease.fence_ms.max(fence_ms);
        inner.by_region.insert(region_id, lease);
        was_live
    }

    /// A region's current deadline (the epoch when never granted or revoked).
    pub fn deadline(&self, region_id: u64) -> Option<Instant> {
        self.read().by_region.get(&region_id).map(|l| l.deadline)
    }

    /// How long the lease has left, now; zero when lapsed, `None` when not tracked.
    pub fn remaining(&self, region_id: u64) -> Option<Duration> {
        let now = Instant::now();
        self.deadline(region_id)
            .map(|d| d.saturating_duration_since(now))
    }

    /// Whether the region's lease is live now.
    pub fn is_live(&self, region_id: u64) -> bool {
        self.check(region_id).is_ok()
    }

    /// `Ok` only if the region is tracked and `now < deadline`, read at the call.
    pub fn check(&self, region_id: u64) -> Result<()> {
        let deadline = self.deadline(region_id);
        // Read the clock after the deadline: a pause between the two can only make the
        // comparison later, never earlier.
        let now = Instant::now();
        match deadline {
            Some(d) if now < d => Ok(()),
            _ => LeaseExpiredSnafu { region_id }.fail(),
        }
    }

    /// Checks the lease at the start of a write. Confirm the ticket again before the
    /// acknowledgement.
    pub fn begin_write(&self, region_id: u64) -> Result<WriteTicket<'_>> {
        let lease = self.read().by_region.get(&region_id).copied();
        // The clock after the lease, as in `check`.
        let now = Instant::now();
        match lease {
            Some(l) if now < l.deadline => Ok(WriteTicket {
                leases: self,
                region_id,
                region_epoch: l.region_epoch,
            }),
            _ => LeaseExpiredSnafu { region_id }.fail(),
        }
    }

    /// The earliest granted deadline after `after`, for the keeper's timer.
    pub fn next_deadline_after(&self, after: Instant) -> Option<Instant> {
        self.read()
            .queue
            .range((Bound::Excluded((after, u64::MAX)), Bound::Unbounded))
            .next()
            .map(|(t, _)| *t)
    }

    /// Regions whose current granted deadline lies in `(from, to]`: the leases that
    /// lapsed in that window, for logging and metrics.
    pub fn lapsed_between(&self, from: Instant, to: Instant) -> Vec<u64> {
        if to <= from {
            return Vec::new();
        }
        self.read()
            .queue
            .range((
                Bound::Excluded((from, u64::MAX)),
                Bound::Included((to, u64::MAX)),
            ))
            .map(|(_, id)| *id)
            .collect()
    }

    /// How many regions are tracked.
    pub fn len(&self) -> usize {
        self.read().by_region.len()
    }

    /// Whether no region is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn ms_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_live_strictly_before_epoch_plus_anchor_plus_lease_minus_margin() {
        let leases = RegionLeases::new(Duration::from_millis(500));
        leases.track(1);
        assert!(!leases.is_live(1), "readonly until the first grant");
        let d = leases.grant(1, 0, LEASE).expect("moved");
        assert_eq!(d, leases.epoch() + Duration::from_millis(9_500));
        tokio::time::sleep_until(d - Duration::from_millis(1)).await;
        assert!(leases.is_live(1));
        tokio::time::sleep_until(d).await;
        let err = leases.check(1).expect_err("at the deadline");
        assert!(err.to_string().contains("lease expired"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_under_an_older_region_epoch_is_ignored_and_a_newer_one_moves_the_region() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        assert_eq!(leases.raise_region_epoch(1, 3), Some(3));
        assert_eq!(leases.raise_region_epoch(1, 2), Some(3), "never backwards");
        assert_eq!(
            leases.grant_under(1, 2, 0, LEASE),
            None,
            "an ended ownership"
        );
        assert!(!leases.is_live(1));
        assert!(leases.grant_under(1, 4, 0, LEASE).is_some());
        assert_eq!(leases.region_epoch(1), Some(4));
        let ticket = leases.begin_write(1).expect("live");
        assert_eq!(ticket.region_epoch(), 4, "the write is stamped with it");
        ticket.confirm().expect("confirmed");
        assert_eq!(leases.raise_region_epoch(9, 1), None, "not tracked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_outlives_its_deadline_is_not_confirmed() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        leases.grant(1, 0, LEASE);
        let ticket = leases.begin_write(1).expect("live at the start");
        tokio::time::advance(LEASE).await; // the write took the rest of the lease
        assert!(
            ticket.confirm().is_err(),
            "not acknowledged after the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoke_ends_the_lease_and_fences_off_late_grants() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        tokio::time::advance(Duration::from_millis(100)).await;
        let anchor = leases.duration_since_epoch(); // a heartbeat sent now…
        leases.grant(1, anchor, LEASE);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(leases.revoke(1), "it was live");
        assert!(!leases.is_live(1));
        // …whose response arrives after the revoke: ignored.
        assert_eq!(leases.grant(1, anchor, LEASE), None);
        assert!(!leases.is_live(1));
        // A heartbeat sent after the revoke is honoured.
        tokio::time::advance(Duration::from_millis(10)).await;
        let later = leases.duration_since_epoch();
        assert!(leases.grant(1, later, LEASE).is_some());
        assert!(leases.is_live(1));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_never_move_back_and_untracked_regions_get_nothing() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        leases.grant(1, 5_000, LEASE).expect("moved");
        assert_eq!(leases.grant(1, 1_000, LEASE), None, "an older response");
        assert_eq!(
            leases.deadline(1),
            Some(leases.epoch() + Duration::from_secs(15))
        );
        assert_eq!(leases.grant(2, 0, LEASE), None);
        assert!(
            leases.check(2).is_err(),
            "an untracked region is not writable"
        );
        leases.untrack(1);
        assert!(leases.check(1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_no_longer_than_the_margin_is_never_live() {
        let leases = RegionLeases::new(Duration::from_secs(2));
        leases.track(1);
        assert_eq!(leases.grant(1, 0, Duration::from_secs(2)), None);
        assert!(!leases.is_live(1));
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_between_lists_current_deadlines_in_the_window_only() {
        let leases = RegionLeases::new(Duration::ZERO);
        for id in 1..=3 {
            leases.track(id);
        }
        leases.grant(1, 0, Duration::from_secs(1));
        leases.grant(2, 0, Duration::from_secs(2));
        leases.grant(2, 0, Duration::from_secs(5)); // moved: its 2 s entry is gone
        leases.grant(3, 0, Duration::from_secs(3));
        let e = leases.epoch();
        assert_eq!(
            leases.lapsed_between(e, e + Duration::from_secs(3)),
            vec![1, 3]
        );
        assert_eq!(
            leases.next_deadline_after(e + Duration::from_secs(3)),
            Some(e + Duration::from_secs(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tracking_size_margin_and_remaining_time_are_reported_as_they_are() {
        let leases = RegionLeases::new(Duration::from_millis(300));
        assert_eq!(leases.margin(), Duration::from_millis(300));
        assert!(leases.is_empty());
        assert!(!leases.is_tracked(1));
        assert_eq!(leases.remaining(1), None, "not tracked");
        leases.track(1);
        assert!(leases.is_tracked(1));
        assert!(!leases.is_empty());
        assert_eq!(
            leases.remaining(1),
            Some(Duration::ZERO),
            "tracked, never granted"
        );
        leases.grant(1, 0, LEASE).expect("granted");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            leases.remaining(1),
            Some(LEASE - Duration::from_millis(300) - Duration::from_secs(2))
        );
        leases.untrack(1);
        assert!(!leases.is_tracked(1));
        assert!(leases.is_empty());
    }

    /// A region closed and opened again is a new opening: a grant sent (anchored) before
    /// it was reopened was decided for the old opening, perhaps before the region moved
    /// away and back, and must not make the new one writable.
    #[tokio::test(start_paused = true)]
    async fn a_grant_anchored_before_a_region_was_reopened_is_ignored() {
        let leases = RegionLeases::new(Duration::ZERO);
        tokio::time::advance(Duration::from_secs(1)).await;
        let before = leases.duration_since_epoch();
        tokio::time::advance(Duration::from_millis(10)).await;
        leases.track(1);
        assert_eq!(
            leases.grant(1, before, LEASE),
            None,
            "anchored before the opening"
        );
        assert!(!leases.is_live(1));
        let after = leases.duration_since_epoch();
        assert!(leases.grant(1, after, LEASE).is_some(), "anchored after it");
        assert!(leases.is_live(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoke_fences_off_a_grant_anchored_in_the_same_millisecond() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        tokio::time::advance(Duration::from_millis(5)).await;
        let anchor = leases.duration_since_epoch();
        leases.grant(1, anchor, LEASE).expect("granted");
        assert!(leases.revoke(1), "it was live");
        // A grant for a heartbeat sent in the very millisecond of the revoke may have
        // been decided before it: refused.
        assert_eq!(leases.grant(1, anchor, LEASE), None);
        assert!(!leases.is_live(1));
    }

    #[tokio::test(start_paused = true)]
    async fn at_its_deadline_a_lease_is_no_longer_live_for_revoke_either() {
        let leases = RegionLeases::new(Duration::ZERO);
        leases.track(1);
        let d = leases.grant(1, 0, LEASE).expect("granted");
        tokio::time::sleep_until(d).await;
        assert!(!leases.revoke(1), "a lease at its deadline was not live");
    }
}
