//! The route table in memory, compact because the leader holds every region's route.
//!
//! Nearly every route is "region R, led by node N, no followers": such a route is one
//! `u64 → u64` entry in `led` (about 17 bytes of hash table, 35 at the table's worst
//! fill), instead of a [`RegionRoute`] with its `Vec` (56 bytes an entry, more with a
//! follower list). Routes with followers or without a leader (a region being moved, or
//! fenced) are kept whole in `other`; there are few of them at any time.
//!
//! The per-node index (`by_node`) answers a heartbeat's question ("which of these regions
//! does node N lead or follow?") from one small set per node, and failover's ("what does
//! node N lead?") without a scan. Sets rather than sorted vectors: a node may lead a
//! million regions (a standalone cluster of one datanode), and a sorted vector would make
//! each route change move megabytes.
//!
//! The maps hash with FxHash, not SipHash: a heartbeat of 100 regions makes 100 to 200
//! set lookups, and SipHash made them the pipeline's largest cost after protobuf
//! decoding (5 % of the metasrv's CPU in a `perf` profile of `throughput`). Region ids
//! come from operators and authenticated datanodes, not from anonymous clients, so
//! collision flooding is not the threat SipHash guards against here.

use std::collections::hash_map::Entry;
use std::num::NonZeroU64;

use common_proto::v1::RegionRole;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::RegionRoute;

/// Every route, and the per-node index, kept in step.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    /// Routes with a leader (not 0) and no followers: region → leader.
    led: HashMap<u64, NonZeroU64>,
    /// Every other route, as written.
    other: HashMap<u64, RegionRoute>,
    /// The regions each node leads and follows.
    by_node: HashMap<u64, NodeRegions>,
}

/// One node's regions. A region in both sets (a route listing its leader as a follower
/// too) is led.
#[derive(Debug, Default)]
struct NodeRegions {
    leads: HashSet<u64>,
    follows: HashSet<u64>,
}

impl NodeRegions {
    fn role(&self, region_id: u64) -> Option<RegionRole> {
        if self.leads.contains(&region_id) {
            Some(RegionRole::Leader)
        } else if self.follows.contains(&region_id) {
            Some(RegionRole::Follower)
        } else {
            None
        }
    }
}

/// The route a `led` entry stands for: a leader and no followers.
fn plain(region_id: u64, leader: NonZeroU64) -> RegionRoute {
    RegionRoute {
        region_id,
        leader: Some(leader.get()),
        followers: Vec::new(),
    }
}

impl RouteTable {
    /// How many routes.
    pub(crate) fn len(&self) -> usize {
        self.led.len() + self.other.len()
    }

    /// Room for `more` routes, so a bulk import grows the table once, not at every
    /// doubling (each growth briefly holds the old and the new table).
    pub(crate) fn reserve(&mut self, more: usize) {
        self.led.reserve(more);
    }

    /// One route.
    pub(crate) fn get(&self, region_id: u64) -> Option<RegionRoute> {
        match self.led.get(&region_id) {
            Some(&leader) => Some(plain(region_id, leader)),
            None => self.other.get(&region_id).cloned(),
        }
    }

    /// Writes a route, replacing the region's previous one; returns that.
    pub(crate) fn insert(&mut self, route: RegionRoute) -> Option<RegionRoute> {
        let old = self.remove(route.region_id);
        let id = route.region_id;
        if let Some(leader) = route.leader {
            self.by_node.entry(leader).or_default().leads.insert(id);
        }
        for &follower in &route.followers {
            self.by_node.entry(follower).or_default().follows.insert(id);
        }
        match route.leader.and_then(NonZeroU64::new) {
            Some(leader) if route.followers.is_empty() => {
                self.led.insert(id, leader);
            }
            _ => {
                self.other.insert(id, route);
            }
        }
        old
    }

    /// Deletes a route; returns it.
    pub(crate) fn remove(&mut self, region_id: u64) -> Option<RegionRoute> {
        let old = match self.led.remove(&region_id) {
            Some(leader) => plain(region_id, leader),
            None => self.other.remove(&region_id)?,
        };
        for node in old.leader.iter().chain(&old.followers) {
            if let Entry::Occupied(mut regions) = self.by_node.entry(*node) {
                let r = regions.get_mut();
                r.leads.remove(&region_id);
                r.follows.remove(&region_id);
                if r.leads.is_empty() && r.follows.is_empty() {
                    regions.remove();
                }
            }
        }
        Some(old)
    }

    /// For each region, the role `node_id` has for it.
    pub(crate) fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Vec<Option<RegionRole>> {
        match self.by_node.get(&node_id) {
            Some(regions) => region_ids.iter().map(|id| regions.role(*id)).collect(),
            None => vec![None; region_ids.len()],
        }
    }

    /// The regions `node_id` leads, by id.
    pub(crate) fn led_by(&self, node_id: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_node
            .get(&node_id)
            .map(|r| r.leads.iter().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Every node that leads a region, by id.
    pub(crate) fn leaders(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_node
            .iter()
            .filter(|(_, r)| !r.leads.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every route, by region id.
    pub(crate) fn list(&self) -> Vec<RegionRoute> {
        let mut all: Vec<RegionRoute> = self
            .led
            .iter()
            .map(|(&region_id, &leader)| plain(region_id, leader))
            .chain(self.other.values().cloned())
            .collect();
        all.sort_unstable_by_key(|r| r.region_id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(region_id: u64, leader: Option<u64>, followers: &[u64]) -> RegionRoute {
        RegionRoute {
            region_id,
            leader,
            followers: followers.to_vec(),
        }
    }

    #[test]
    fn every_shape_of_route_reads_back_as_written() {
        let mut t = RouteTable::default();
        let shapes = [
            route(1, Some(10), &[]),
            route(2, Some(10), &[11, 12]),
            route(3, None, &[11]),
            route(4, None, &[]),
            route(5, Some(0), &[]),
            route(6, Some(13), &[13]),
        ];
        for r in &shapes {
            assert_eq!(t.insert(r.clone()), None);
        }
        assert_eq!(t.len(), shapes.len());
        for r in &shapes {
            assert_eq!(t.get(r.region_id).as_ref(), Some(r));
        }
        assert_eq!(t.list(), shapes);
        assert_eq!(t.get(7), None);
    }

    #[test]
    fn only_routes_with_followers_or_without_a_leader_take_the_full_form() {
        let mut t = RouteTable::default();
        t.insert(route(1, Some(10), &[]));
        t.insert(route(2, Some(10), &[11]));
        t.insert(route(3, None, &[]));
        assert_eq!(
            (t.led.len(), t.other.len()),
            (1, 2),
            "the plain route is compact"
        );
        t.insert(route(2, Some(11), &[]));
        assert_eq!(
            (t.led.len(), t.other.len()),
            (2, 1),
            "a finished move compacts"
        );
    }

    #[test]
    fn a_rewrite_moves_the_region_between_nodes_and_returns_the_old_route() {
        let mut t = RouteTable::default();
        t.insert(route(1, Some(10), &[]));
        t.insert(route(2, Some(10), &[]));
        let old = t.insert(route(1, None, &[11, 10]));
        assert_eq!(old, Some(route(1, Some(10), &[])));
        assert_eq!(t.led_by(10), [2]);
        assert_eq!(
            t.roles_for(10, &[1, 2, 3]),
            [Some(RegionRole::Follower), Some(RegionRole::Leader), None]
        );
        assert_eq!(t.roles_for(11, &[1, 2]), [Some(RegionRole::Follower), None]);

        t.insert(route(1, Some(11), &[]));
        assert_eq!(t.roles_for(10, &[1]), [None]);
        assert_eq!(t.roles_for(11, &[1]), [Some(RegionRole::Leader)]);
        assert_eq!(t.leaders(), [10, 11]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_node_that_is_both_leader_and_follower_leads() {
        let mut t = RouteTable::default();
        t.insert(route(6, Some(13), &[13]));
        assert_eq!(t.roles_for(13, &[6]), [Some(RegionRole::Leader)]);
        assert_eq!(t.led_by(13), [6]);
    }

    #[test]
    fn removing_the_last_route_of_a_node_forgets_the_node() {
        let mut t = RouteTable::default();
        t.insert(route(1, Some(10), &[11]));
        t.insert(route(2, Some(12), &[]));
        assert_eq!(t.remove(1), Some(route(1, Some(10), &[11])));
        assert_eq!(t.remove(1), None);
        assert!(!t.by_node.contains_key(&10) && !t.by_node.contains_key(&11));
        assert_eq!(t.roles_for(11, &[1]), [None]);
        assert_eq!(t.leaders(), [12]);
        assert_eq!(t.led_by(10), Vec::<u64>::new());
        assert_eq!(t.len(), 1);
    }
}
