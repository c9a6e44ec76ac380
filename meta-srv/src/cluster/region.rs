//! A region's health as the leader sees it: its lease state, and whether it can be
//! written now, with the reason when it cannot. `/regions` shows this answer.
//!
//! **Lease state** comes from the route's leader and what that node last told this
//! leader: `granted` (it reported the region and holds a live grant), `pending` (routed
//! but not reported yet, or reported unreadable), `expired` (the node's grant lapsed, or
//! the node went silent after a grant), `unassigned` (no leader).
//!
//! **Availability**: `migrating` while a move is under way; otherwise `unavailable` when
//! something stops writes (the supervisor cannot move it, the leader cannot serve it, the
//! lease lapsed, there is no leader), with what happens next; otherwise `available`.

use std::time::Duration;

use handlers::{NodeKey, NodeLease, Stat};
use tokio::time::Instant;

use super::Cluster;

/// A region's lease state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Its leader reported it and holds a live grant.
    Granted,
    /// Routed, but not reported yet (or reported unreadable).
    Pending,
    /// Its leader's grant lapsed.
    Expired,
    /// No leader.
    Unassigned,
}

impl LeaseState {
    /// The name `/regions` shows.
    pub fn label(self) -> &'static str {
        match self {
            LeaseState::Granted => "granted",
            LeaseState::Pending => "pending",
            LeaseState::Expired => "expired",
            LeaseState::Unassigned => "unassigned",
        }
    }
}

/// Whether automatic failover acts on regions that lost their leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    /// It does.
    On,
    /// Maintenance mode pauses it.
    Maintenance,
    /// `region_failover = false`.
    Off,
}

/// A region's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionHealth {
    /// Its lease state.
    pub lease_state: LeaseState,
    /// Where a move under way takes it.
    pub migrating_to: Option<u64>,
    /// Why it cannot be written now, if it cannot.
    pub reason: Option<String>,
}

impl RegionHealth {
    /// `available`, `migrating`, or `unavailable`.
    pub fn availability(&self) -> &'static str {
        match (&self.reason, self.migrating_to) {
            (_, Some(_)) => "migrating",
            (Some(_), None) => "unavailable",
            (None, None) => "available",
        }
    }
}

/// The lease state of `region_id`, led by `leader` whose lease record is `lease` and
/// latest stats `latest`; and why its live leader cannot serve it, if it cannot: its
/// latest heartbeat leaves the region out (closed there, or not opened yet), or reports
/// its storage unreadable.
fn lease_state_of(
    region_id: u64,
    leader: Option<u64>,
    lease: Option<&NodeLease>,
    latest: Option<&Stat>,
    now: Instant,
    region_lease: Duration,
) -> (LeaseState, Option<String>) {
    let Some(node_id) = leader else {
        return (LeaseState::Unassigned, None);
    };
    let Some(lease) = lease else {
        return (LeaseState::Pending, None);
    };
    if lease.expired {
        // The node is silent: whatever it was granted has lapsed or soon will.
        let state = if lease.last_granted.is_some() {
            LeaseState::Expired
        } else {
            LeaseState::Pending
        };
        return (state, None);
    }
    let reported = latest.and_then(|s| s.region_stats.iter().find(|r| r.region_id == region_id));
    let Some(reported) = reported else {
        // Its grants for other regions say nothing about this one.
        let not_open = latest.is_some().then(|| {
            format!(
                "its leader, node {node_id}, is alive but does not report the region open \
                 (closed there, or not opened yet)"
            )
        });
        return (LeaseState::Pending, not_open);
    };
    if let Some(reason) = &reported.unavailable {
        let why = format!("its leader, node {node_id}, cannot read the region's storage: {reason}");
        return (LeaseState::Pending, Some(why));
    }
    let granted_recently = lease
        .last_granted
        .is_some_and(|t| now.saturating_duration_since(t) < region_lease);
    if granted_recently {
        (LeaseState::Granted, None)
    } else {
        (LeaseState::Expired, None)
    }
}

/// Why a region cannot be written, from the supervisor's reason (it cannot move) first,
/// else what its leader and lease say, with what happens next.
fn unavailable_reason(
    lease_state: LeaseState,
    cannot_serve: Option<String>,
    cannot_move: Option<String>,
    failover: FailoverMode,
) -> Option<String> {
    if cannot_move.is_some() {
        return cannot_move;
    }
    if cannot_serve.is_some() {
        return cannot_serve;
    }
    let why = match lease_state {
        LeaseState::Expired => "its leader's lease lapsed",
        LeaseState::Unassigned => "it has no leader",
        LeaseState::Granted | LeaseState::Pending => return None,
    };
    let next = match failover {
        FailoverMode::Maintenance => "; automatic failover is paused (maintenance mode)",
        FailoverMode::Off => "; automatic failover is off",
        FailoverMode::On => "",
    };
    Some(format!("{why}{next}"))
}

impl Cluster {
    /// The health of `region_id`, led by `leader`: `migrating_to` is the target of a move
    /// under way, `cannot_move` the supervisor's reason it cannot fail over; `now` on the
    /// clock the node leases keep.
    #[allow(clippy::too_many_arguments)]
    pub fn region_health(
        &self,
        now: Instant,
        region_id: u64,
        leader: Option<u64>,
        migrating_to: Option<u64>,
        cannot_move: Option<String>,
        failover: FailoverMode,
        region_lease: Duration,
    ) -> RegionHealth {
        let key = leader.map(NodeKey::datanode);
        let lease = key.and_then(|k| self.node_leases.get(k));
        let latest = lease.as_ref().and_then(|l| self.stats.latest(l.key));
        let (lease_state, cannot_serve) = lease_state_of(
            region_id,
            leader,
            lease.as_ref(),
            latest.as_deref(),
            now,
            region_lease,
        );
        RegionHealth {
            lease_state,
            migrating_to,
            reason: unavailable_reason(lease_state, cannot_serve, cannot_move, failover),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn lease(expired: bool, granted: Option<Instant>) -> NodeLease {
        crate::cluster::fixtures::lease(1, expired, granted)
    }

    fn stat(region: Option<(u64, Option<&str>)>) -> Stat {
        let regions: Vec<_> = region
            .into_iter()
            .map(|(id, why)| (id, true, why))
            .collect();
        crate::cluster::fixtures::stat(1, true, &regions)
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_state_follows_the_leader_its_grant_and_its_report() {
        let now = Instant::now();
        let state = |leader, l: Option<&NodeLease>, s: Option<&Stat>, at| {
            lease_state_of(7, leader, l, s, at, LEASE)
        };
        assert_eq!(state(None, None, None, now), (LeaseState::Unassigned, None));
        assert_eq!(state(Some(1), None, None, now), (LeaseState::Pending, None));
        let silent = lease(true, Some(now));
        assert_eq!(
            state(Some(1), Some(&silent), None, now).0,
            LeaseState::Expired
        );
        let never_granted = lease(true, None);
        assert_eq!(
            state(Some(1), Some(&never_granted), None, now).0,
            LeaseState::Pending
        );
        let live = lease(false, Some(now));
        let reported = stat(Some((7, None)));
        assert_eq!(
            state(Some(1), Some(&live), Some(&reported), now),
            (LeaseState::Granted, None)
        );
        assert_eq!(
            state(Some(1), Some(&live), Some(&reported), now + LEASE).0,
            LeaseState::Expired,
            "a grant older than the region lease has lapsed"
        );
        let (s, why) = state(Some(1), Some(&live), Some(&stat(None)), now);
        assert_eq!(s, LeaseState::Pending);
        assert!(why.is_some_and(|w| w.contains("does not report the region open")));
        let unreadable = stat(Some((7, Some("bad manifest"))));
        let (s, why) = state(Some(1), Some(&live), Some(&unreadable), now);
        assert_eq!(s, LeaseState::Pending);
        assert!(why.is_some_and(|w| w.contains("cannot read the region's storage: bad manifest")));
    }

    #[test]
    fn the_supervisors_reason_comes_first_then_the_leaders_then_the_leases() {
        let r = |state, serve: Option<&str>, moving: Option<&str>, mode| {
            unavailable_reason(state, serve.map(Into::into), moving.map(Into::into), mode)
        };
        use FailoverMode::*;
        use LeaseState::*;
        assert_eq!(r(Expired, Some("s"), Some("m"), On).as_deref(), Some("m"));
        assert_eq!(r(Expired, Some("s"), None, On).as_deref(), Some("s"));
        assert_eq!(r(Granted, None, None, Off), None);
        assert_eq!(r(Pending, None, None, On), None);
        assert_eq!(
            r(Expired, None, None, On).as_deref(),
            Some("its leader's lease lapsed")
        );
        assert_eq!(
            r(Unassigned, None, None, Maintenance).as_deref(),
            Some("it has no leader; automatic failover is paused (maintenance mode)")
        );
        assert_eq!(
            r(Expired, None, None, Off).as_deref(),
            Some("its leader's lease lapsed; automatic failover is off")
        );
        let health = |migrating_to, reason: Option<&str>| RegionHealth {
            lease_state: Granted,
            migrating_to,
            reason: reason.map(Into::into),
        };
        assert_eq!(health(Some(2), Some("x")).availability(), "migrating");
        assert_eq!(health(None, Some("x")).availability(), "unavailable");
        assert_eq!(health(None, None).availability(), "available");
        let labels = [Granted, Pending, Expired, Unassigned].map(LeaseState::label);
        assert_eq!(labels, ["granted", "pending", "expired", "unassigned"]);
    }
}
