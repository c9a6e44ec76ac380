//! The region-route port: which datanode leads each region, which follow, and the
//! region's **epoch**.
//!
//! **The epoch rule.** A route's epoch grows by one each time its writable owner
//! changes: a route written with a leader other than the one before it (after a fence,
//! a failover, a migrate, a drain) carries `epoch + 1`; any other change keeps it. A
//! region created again after a drop starts one above the dropped one (the drop leaves a
//! tombstone holding it). The epoch travels in the same compare-and-put as the owner
//! change, so two owners never hold the same epoch, and every later leader reads it from
//! the store. Datanodes stamp every write with it, and storage refuses or ignores what was
//! written under an older one (the fencing token of a paused old owner); see
//! `datanode::engine`.
//!
//! The rule is enforced here, not by callers: [`RegionRoute::successor`] builds the next
//! route, and a store refuses a compare-and-put whose new route breaks the rule
//! ([`Error::InvalidRouteChange`](crate::Error::InvalidRouteChange)); `create` assigns the
//! epoch itself.
//!
//! Routes are durable (they live in the [`KvBackend`](crate::KvBackend)) but read on every
//! heartbeat by RegionLease, so [`KvRegionRouteStore`] serves reads from a write-through
//! memory cache (`route/store.rs`; its compact layout is in `route/table.rs`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use serde::{Deserialize, Serialize};

use crate::Result;

mod store;
mod table;

pub use store::KvRegionRouteStore;

/// Where one region lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRoute {
    /// The region id.
    pub region_id: u64,
    /// The datanode that leads it (takes writes), if any.
    pub leader: Option<u64>,
    /// Datanodes that hold readonly followers.
    #[serde(default)]
    pub followers: Vec<u64>,
    /// Grows by one each time the writable owner changes (see the module docs). Routes
    /// stored before epochs existed read as 0.
    #[serde(default)]
    pub epoch: u64,
}

impl RegionRoute {
    /// The role `node_id` plays for this region, or `None` if it does not own it.
    pub fn role_of(&self, node_id: u64) -> Option<RegionRole> {
        if self.leader == Some(node_id) {
            Some(RegionRole::Leader)
        } else if self.followers.contains(&node_id) {
            Some(RegionRole::Follower)
        } else {
            None
        }
    }

    /// The route that follows this one with `leader` and `followers`: its epoch is one
    /// more when `leader` is a new writable owner, the same otherwise.
    pub fn successor(&self, leader: Option<u64>, followers: Vec<u64>) -> RegionRoute {
        RegionRoute {
            region_id: self.region_id,
            leader,
            followers,
            epoch: self.epoch_after(leader),
        }
    }

    /// The epoch a route naming `leader` must carry after this one.
    fn epoch_after(&self, leader: Option<u64>) -> u64 {
        if leader.is_some() && leader != self.leader {
            self.epoch + 1
        } else {
            self.epoch
        }
    }

    /// Why `next` may not replace this route, if it may not: another region, or an epoch
    /// that breaks the rule.
    pub fn refuses(&self, next: &RegionRoute) -> Option<String> {
        if next.region_id != self.region_id {
            return Some(format!(
                "region {} cannot replace the route of region {}",
                next.region_id, self.region_id
            ));
        }
        let want = self.epoch_after(next.leader);
        (next.epoch != want).then(|| {
            format!(
                "epoch {} after epoch {} with leader {:?} (was {:?}); it must be {want}",
                next.epoch, self.epoch, next.leader, self.leader
            )
        })
    }
}

/// What a node holds of a region: its role, under the route's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Leader or follower.
    pub role: RegionRole,
    /// The route's epoch.
    pub epoch: u64,
}

/// Route storage as the handlers and the admin API see it.
#[async_trait]
pub trait RegionRouteStore: Send + Sync + Debug + 'static {
    /// One route.
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>>;

    /// Every route, by region id.
    async fn list(&self) -> Result<Vec<RegionRoute>>;

    /// Creates a route and returns it as stored, its epoch assigned by the store (one
    /// above a dropped route of the same id, else 1; the given epoch is ignored).
    /// `None` (and nothing written) if the region already has a route.
    async fn create(&self, route: RegionRoute) -> Result<Option<RegionRoute>>;

    /// Writes a route unconditionally, epoch as given (bulk import, tests).
    async fn put(&self, route: RegionRoute) -> Result<()>;

    /// Replaces `expected` with `new` only if the stored route is still `expected`;
    /// returns whether it did. Every step of a region migration moves the route this way,
    /// so two movers (or a stale leader) can never both win. Refused with
    /// `InvalidRouteChange` when `new` breaks the epoch rule (build it with
    /// [`RegionRoute::successor`]).
    async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool>;

    /// Deletes a route, returning it. A tombstone keeps its epoch, so the region created
    /// again with this id starts above it.
    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>>;

    /// The routes `node_id` leads. Stores with a per-node index answer without a scan.
    async fn led_by(&self, node_id: u64) -> Result<Vec<RegionRoute>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.leader == Some(node_id))
            .collect())
    }

    /// How many routes `node_id` leads. Stores with a per-node index answer without a
    /// scan: the lease handler asks on every heartbeat.
    async fn led_count(&self, node_id: u64) -> Result<usize> {
        Ok(self.led_by(node_id).await?.len())
    }

    /// Every node that leads at least one region.
    async fn leaders(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self.list().await?.iter().filter_map(|r| r.leader).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// For each id, what `node_id` holds of it (or `None`). The hot-path call: one
    /// lookup for a whole heartbeat.
    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<Holding>>>;
}

/// Shared route store handle.
pub type RegionRouteStoreRef = Arc<dyn RegionRouteStore>;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(leader: Option<u64>, followers: &[u64], epoch: u64) -> RegionRoute {
        RegionRoute {
            region_id: 1,
            leader,
            followers: followers.to_vec(),
            epoch,
        }
    }

    #[test]
    fn a_route_names_each_nodes_role() {
        let r = route(Some(1), &[2], 1);
        assert_eq!(r.role_of(1), Some(RegionRole::Leader));
        assert_eq!(r.role_of(2), Some(RegionRole::Follower));
        assert_eq!(r.role_of(3), None);
    }

    #[test]
    fn the_epoch_grows_exactly_when_the_writable_owner_changes() {
        let led = route(Some(1), &[], 4);
        // A follower joins, then the leader is fenced: no new owner, same epoch.
        let joined = led.successor(Some(1), vec![2]);
        assert_eq!(joined.epoch, 4);
        let fenced = joined.successor(None, vec![2, 1]);
        assert_eq!(fenced.epoch, 4);
        // The target is named leader: a new owner.
        let switched = fenced.successor(Some(2), vec![]);
        assert_eq!(switched.epoch, 5);
        // Straight from one leader to another (a failover that skipped the fence).
        assert_eq!(led.successor(Some(3), vec![]).epoch, 5);
        // Back to the old leader after a fence is a new ownership too.
        assert_eq!(fenced.successor(Some(1), vec![]).epoch, 5);
        for (a, b) in [(&led, &joined), (&joined, &fenced), (&fenced, &switched)] {
            assert_eq!(a.refuses(b), None, "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn a_change_that_breaks_the_rule_is_refused_with_the_epoch_it_needs() {
        let led = route(Some(1), &[], 4);
        let reused = route(Some(2), &[], 4);
        let why = led
            .refuses(&reused)
            .expect("a new owner under the old epoch");
        assert!(why.contains("it must be 5"), "{why}");
        assert!(
            led.refuses(&route(Some(1), &[2], 5)).is_some(),
            "no bump without a new owner"
        );
        assert!(
            led.refuses(&route(None, &[1], 3)).is_some(),
            "never backwards"
        );
        let other = RegionRoute {
            region_id: 2,
            ..led.clone()
        };
        assert!(led
            .refuses(&other)
            .expect("other region")
            .contains("region 2"));
    }

    #[test]
    fn a_route_stored_before_epochs_reads_as_epoch_zero() {
        let old: RegionRoute =
            serde_json::from_str(r#"{"region_id":1,"leader":2,"followers":[]}"#).expect("parse");
        assert_eq!(old, route(Some(2), &[], 0));
    }
}
