//! The leadership view handlers consult: is this metasrv the leader right now?
//!
//! **Leadership is a deadline, not a flag** (fail closed). A metasrv on
//! etcd may act as leader only while `now <` (send time of its last keep-alive that etcd
//! acknowledged + the TTL etcd returned − a drift margin). etcd cannot expire the
//! election key before then, because it starts the TTL when it *receives* the keep-alive,
//! after it was sent; so no successor can exist before the deadline. [`LeaderLease`]
//! keeps that deadline and compares against it on every read: if the election task that
//! extends it stalls, is starved or the whole process is SIGSTOPped, leadership simply
//! lapses at the deadline, with nobody having to clear anything.
//!
//! It is a synchronous read of local state (two atomics and the clock), never a network
//! call: CheckLeader runs on every heartbeat.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::time::Instant;

/// Read-only view of this metasrv's leadership.
pub trait LeadershipView: Send + Sync + Debug + 'static {
    /// Whether this process is the leader *now* and may grant leases. Implementations
    /// decide from a deadline at the call, never from a flag a task must clear.
    fn is_leader(&self) -> bool;

    /// The leader's advertised address, if known, to point followers' callers at it.
    fn leader_addr(&self) -> Option<String>;

    /// When leadership ends unless renewed, if it is held under a deadline (for
    /// operators: `None` when not leading or leading with no deadline).
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// Shared leadership handle.
pub type LeadershipRef = Arc<dyn LeadershipView>;

const NOT_LEADING: u64 = 0;
const NO_DEADLINE: u64 = u64::MAX;

/// Leadership held until a monotonic deadline (or without one, standalone). Whoever runs
/// the election extends it; everyone else only reads it.
#[derive(Debug)]
pub struct LeaderLease {
    base: Instant,
    /// Nanoseconds after `base` until which this process leads; 0: not leading;
    /// `u64::MAX`: leading with no deadline (standalone).
    until: AtomicU64,
    // A synchronous lock (parking_lot): nothing awaits while holding it.
    leader_addr: RwLock<Option<String>>,
}

impl Default for LeaderLease {
    fn default() -> Self {
        Self::new(false, None)
    }
}

impl LeaderLease {
    /// Leading with no deadline (standalone; with our own address), or following.
    pub fn new(is_leader: bool, leader_addr: Option<String>) -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(if is_leader { NO_DEADLINE } else { NOT_LEADING }),
            leader_addr: RwLock::new(leader_addr),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        // At least 1, so that a deadline at `base` is not read as "not leading".
        // Saturating, not truncating: a deadline centuries away must stay a deadline.
        u64::try_from(t.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, NO_DEADLINE - 1)
    }

    /// Leads with no deadline (`true`), or follows (`false`), naming the leader. Used by
    /// the standalone election, and by tests.
    pub fn set(&self, is_leader: bool, leader_addr: Option<String>) {
        if is_leader {
            *self.leader_addr.write() = leader_addr;
            self.until.store(NO_DEADLINE, Ordering::SeqCst);
        } else {
            self.step_down(leader_addr);
        }
    }

    /// Starts (or continues) leading until `deadline`, advertising `addr`.
    pub fn lead_until(&self, deadline: Instant, addr: Option<String>) {
        *self.leader_addr.write() = addr;
        self.until.store(self.nanos(deadline), Ordering::SeqCst);
    }

    /// Moves the deadline forward (never back), only while still leading: a lapsed or
    /// ended leadership is never revived by a late extension.
    pub fn extend_to(&self, deadline: Instant) -> bool {
        let new = self.nanos(deadline);
        let now = self.nanos(Instant::now());
        self.until
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur != NOT_LEADING && cur != NO_DEADLINE && now < cur && new > cur).then_some(new)
            })
            .is_ok()
    }

    /// Stops leading at once; `leader_addr` names the new leader, if known.
    pub fn step_down(&self, leader_addr: Option<String>) {
        // The deadline goes first, so nothing reads "leader" with the new address.
        self.until.store(NOT_LEADING, Ordering::SeqCst);
        *self.leader_addr.write() = leader_addr;
    }

    /// Names the leader without touching authority: a follower that learns who leads.
    pub fn note_leader(&self, leader_addr: Option<String>) {
        *self.leader_addr.write() = leader_addr;
    }

    /// The deadline, if leading under one.
    pub fn deadline(&self) -> Option<Instant> {
        match self.until.load(Ordering::SeqCst) {
            NOT_LEADING | NO_DEADLINE => None,
            n => Some(self.base + std::time::Duration::from_nanos(n)),
        }
    }
}

impl LeadershipView for LeaderLease {
    fn is_leader(&self) -> bool {
        let until = self.until.load(Ordering::SeqCst);
        // The clock is read after the deadline: a pause in between only makes "now" later.
        until == NO_DEADLINE || (until != NOT_LEADING && self.nanos(Instant::now()) < until)
    }

    fn leader_addr(&self) -> Option<String> {
        self.leader_addr.read().clone()
    }

    fn deadline(&self) -> Option<Instant> {
        LeaderLease::deadline(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_its_deadline_with_no_one_clearing_it() {
        let lease = LeaderLease::default();
        assert!(!lease.is_leader());
        let deadline = Instant::now() + Duration::from_secs(3);
        lease.lead_until(deadline, Some("me".into()));
        assert!(lease.is_leader());
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert!(lease.is_leader());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !lease.is_leader(),
            "at the deadline itself, no longer leader"
        );
        assert!(
            !lease.extend_to(Instant::now() + Duration::from_secs(3)),
            "a lapsed term is not revived by a late keep-alive"
        );
        assert!(!lease.is_leader());
    }

    #[tokio::test(start_paused = true)]
    async fn extensions_only_move_forward_and_a_step_down_is_immediate() {
        let lease = LeaderLease::default();
        let t0 = Instant::now();
        lease.lead_until(t0 + Duration::from_secs(3), None);
        assert!(lease.extend_to(t0 + Duration::from_secs(5)));
        assert!(!lease.extend_to(t0 + Duration::from_secs(4)), "never back");
        assert_eq!(lease.deadline(), Some(t0 + Duration::from_secs(5)));
        lease.step_down(Some("other".into()));
        assert!(!lease.is_leader());
        assert_eq!(lease.leader_addr().as_deref(), Some("other"));
        assert!(!lease.extend_to(t0 + Duration::from_secs(9)));
    }

    #[tokio::test(start_paused = true)]
    async fn standalone_leadership_has_no_deadline() {
        let lease = LeaderLease::new(true, Some("me".into()));
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(lease.is_leader());
        assert_eq!(lease.deadline(), None);
        lease.set(false, None);
        assert!(!lease.is_leader());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_centuries_away_is_still_a_deadline_not_forever() {
        let lease = LeaderLease::default();
        let far = Instant::now() + Duration::from_secs(u64::MAX / 1_000_000_000 + 10);
        lease.lead_until(far, None);
        assert!(lease.is_leader());
        assert!(
            LeadershipView::deadline(&lease).is_some(),
            "a finite deadline never reads as standalone's no-deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_learns_its_leader_without_gaining_authority() {
        let lease = LeaderLease::default();
        lease.note_leader(Some("10.0.0.9:3002".into()));
        assert_eq!(lease.leader_addr().as_deref(), Some("10.0.0.9:3002"));
        assert!(!lease.is_leader());
        assert_eq!(LeadershipView::deadline(&lease), None);
        let d = Instant::now() + Duration::from_secs(3);
        lease.lead_until(d, None);
        assert_eq!(
            LeadershipView::deadline(&lease),
            Some(d),
            "the view reports it"
        );
    }
}
