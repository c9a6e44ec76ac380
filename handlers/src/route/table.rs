//! The route table in memory, compact because the leader holds every region's route.
//!
//! Nearly every route is "region R, led by node N at epoch E, no followers": such a route
//! is one `R → N` entry in `led` and one `R → E` entry in node N's own map in `by_node`
//! (about 34 bytes of hash table together, twice that at the tables' worst fill), instead
//! of a [`RegionRoute`] with its `Vec` (64 bytes an entry, more with a follower list).
//! Routes with followers or without a leader (a region being moved, or fenced) are kept
//! whole in `other`; there are few of them at any time.
//!
//! A dropped region leaves its last epoch in `dropped` (its tombstone), so the region
//! created again with that id starts above it.
//!
//! Each node's map (`by_node`: region → epoch, every route the node leads) answers both a
//! heartbeat's question ("what does node N hold of each of these regions, under which
//! epoch?") and failover's ("what does node N lead?"). A heartbeat's lookups then stay in
//! its own node's small table, a few kilobytes, instead of landing anywhere in one table
//! of every region: at 100,000 regions those scattered lookups were cache misses, and the
//! largest cost of the handlers. Only a region the node does not lead is looked up in
//! `other` (is it a follower?). Hash maps rather than sorted vectors: a node may lead a
//! million regions (a standalone cluster of one datanode), and a sorted vector would make
//! each route change move megabytes.
//!
//! The maps hash with FxHash, not SipHash: a heartbeat of 100 regions makes 100 to 200
//! set lookups, and SipHash made them the pipeline's largest cost after protobuf
//! decoding (5 % of the metasrv's CPU in a `perf` profile of `throughput`). Region ids
//! come from operators and authenticated datanodes, not from anonymous clients, so
//! collision flooding is not the threat SipHash guards against here.

use std::collections::hash_map::Entry as MapEntry;
use std::num::NonZeroU64;

use common_proto::v1::RegionRole;
use rustc_hash::FxHashMap as HashMap;

use super::{Holding, RegionRoute};

/// What the table holds for one region id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Never created (or its tombstone was overwritten by an import).
    Absent,
    /// A live route.
    Route(RegionRoute),
    /// Dropped at this epoch.
    Dropped(u64),
}

/// Every route, and the per-node index, kept in step.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    /// Routes with a leader (not 0) and no followers: region → leader. The epoch is in the
    /// leader's map in `by_node`.
    led: HashMap<u64, NonZeroU64>,
    /// Every other route, as written.
    other: HashMap<u64, RegionRoute>,
    /// Dropped regions: region → the epoch it had.
    dropped: HashMap<u64, u64>,
    /// The regions each node leads (plain or not), each with its route's epoch.
    by_node: HashMap<u64, HashMap<u64, u64>>,
}

/// A plain route's epoch, as read from its leader's map: `insert` and `remove` keep every
/// `led` entry there.
fn found(epoch: Option<u64>, leader: NonZeroU64, region_id: u64) -> u64 {
    debug_assert!(
        epoch.is_some(),
        "region {region_id} is missing from node {leader}'s map"
    );
    epoch.unwrap_or_default()
}

/// The route a `led` entry stands for: a leader and no followers.
fn plain(region_id: u64, leader: NonZeroU64, epoch: u64) -> RegionRoute {
    RegionRoute {
        region_id,
        leader: Some(leader.get()),
        followers: Vec::new(),
        epoch,
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
            Some(&leader) => Some(plain(region_id, leader, self.epoch(leader, region_id))),
            None => self.other.get(&region_id).cloned(),
        }
    }

    /// The epoch of the plain route of `region_id` led by `leader`.
    fn epoch(&self, leader: NonZeroU64, region_id: u64) -> u64 {
        let epoch = self
            .by_node
            .get(&leader.get())
            .and_then(|leads| leads.get(&region_id));
        found(epoch.copied(), leader, region_id)
    }

    /// What the table holds for `region_id`: its route, its tombstone, or nothing.
    pub(crate) fn entry(&self, region_id: u64) -> Entry {
        match (self.get(region_id), self.dropped.get(&region_id)) {
            (Some(route), _) => Entry::Route(route),
            (None, Some(&epoch)) => Entry::Dropped(epoch),
            (None, None) => Entry::Absent,
        }
    }

    /// Makes `region_id` hold `entry`.
    pub(crate) fn apply(&mut self, region_id: u64, entry: Entry) {
        match entry {
            Entry::Route(route) => {
                self.insert(route);
            }
            Entry::Dropped(epoch) => {
                self.remove(region_id);
                self.dropped.insert(region_id, epoch);
            }
            Entry::Absent => {
                self.remove(region_id);
                self.dropped.remove(&region_id);
            }
        }
    }

    /// Writes a route, replacing the region's previous one (or its tombstone); returns
    /// that.
    pub(crate) fn insert(&mut self, route: RegionRoute) -> Option<RegionRoute> {
        let old = self.remove(route.region_id);
        let id = route.region_id;
        self.dropped.remove(&id);
        if let Some(leader) = route.leader {
            self.by_node
                .entry(leader)
                .or_default()
                .insert(id, route.epoch);
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

    /// Deletes a route, leaving no tombstone; returns it.
    pub(crate) fn remove(&mut self, region_id: u64) -> Option<RegionRoute> {
        if let Some(leader) = self.led.remove(&region_id) {
            let epoch = found(self.unindex(leader.get(), region_id), leader, region_id);
            return Some(plain(region_id, leader, epoch));
        }
        let route = self.other.remove(&region_id)?;
        if let Some(leader) = route.leader {
            self.unindex(leader, region_id);
        }
        Some(route)
    }

    /// Takes `region_id` out of `leader`'s map (and forgets a node left with none);
    /// returns the epoch it had there.
    fn unindex(&mut self, leader: u64, region_id: u64) -> Option<u64> {
        let MapEntry::Occupied(mut leads) = self.by_node.entry(leader) else {
            return None;
        };
        let epoch = leads.get_mut().remove(&region_id);
        if leads.get().is_empty() {
            leads.remove();
        }
        epoch
    }

    /// For each region, what `node_id` holds of it: a region it leads answers from its
    /// own map; only the others are looked up in the few full routes (is it a follower?).
    pub(crate) fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Vec<Option<Holding>> {
        let leads = self.by_node.get(&node_id);
        region_ids
            .iter()
            .map(|id| match leads.and_then(|leads| leads.get(id)) {
                Some(&epoch) => Some(Holding {
                    role: RegionRole::Leader,
                    epoch,
                }),
                None => {
                    let route = self.other.get(id)?;
                    let role = route.role_of(node_id)?;
                    Some(Holding {
                        role,
                        epoch: route.epoch,
                    })
                }
            })
            .collect()
    }

    /// The regions `node_id` leads, by id.
    pub(crate) fn led_by(&self, node_id: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_node
            .get(&node_id)
            .map(|leads| leads.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// How many regions `node_id` leads.
    pub(crate) fn leading_count(&self, node_id: u64) -> usize {
        self.by_node.get(&node_id).map_or(0, |leads| leads.len())
    }

    /// Every node that leads a region, by id.
    pub(crate) fn leaders(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_node
            .iter()
            .filter(|(_, leads)| !leads.is_empty())
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
            .map(|(&region_id, &leader)| plain(region_id, leader, self.epoch(leader, region_id)))
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
            epoch: region_id * 10,
        }
    }

    fn roles(t: &RouteTable, node_id: u64, ids: &[u64]) -> Vec<Option<RegionRole>> {
        t.roles_for(node_id, ids)
            .into_iter()
            .map(|h| h.map(|h| h.role))
            .collect()
    }

    #[test]
    fn a_holding_carries_the_routes_epoch_in_either_form() {
        let mut t = RouteTable::default();
        t.insert(route(1, Some(10), &[]));
        t.insert(route(2, Some(10), &[11]));
        let held = t.roles_for(11, &[1, 2]);
        assert_eq!(
            held,
            [
                None,
                Some(Holding {
                    role: RegionRole::Follower,
                    epoch: 20
                })
            ]
        );
        assert_eq!(t.roles_for(10, &[1])[0].map(|h| h.epoch), Some(10));
    }

    #[test]
    fn a_tombstone_keeps_the_epoch_until_the_region_is_created_again() {
        let mut t = RouteTable::default();
        t.insert(route(3, Some(10), &[]));
        t.apply(3, Entry::Dropped(30));
        assert_eq!(t.entry(3), Entry::Dropped(30));
        assert_eq!((t.get(3), t.len(), t.list()), (None, 0, vec![]));
        assert_eq!(roles(&t, 10, &[3]), [None]);
        t.insert(route(3, Some(11), &[]));
        assert_eq!(t.entry(3), Entry::Route(route(3, Some(11), &[])));
        t.apply(3, Entry::Absent);
        assert_eq!(t.entry(3), Entry::Absent);
    }

    /// One route of every shape: plain; with followers; without a leader, with and without
    /// followers; led by node 0; a leader also listed as a follower.
    fn shapes() -> [RegionRoute; 6] {
        [
            route(1, Some(10), &[]),
            route(2, Some(10), &[11, 12]),
            route(3, None, &[11]),
            route(4, None, &[]),
            route(5, Some(0), &[]),
            route(6, Some(13), &[13]),
        ]
    }

    #[test]
    fn every_shape_of_route_reads_back_as_written() {
        let mut t = RouteTable::default();
        let shapes = shapes();
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
            roles(&t, 10, &[1, 2, 3]),
            [Some(RegionRole::Follower), Some(RegionRole::Leader), None]
        );
        assert_eq!(roles(&t, 11, &[1, 2]), [Some(RegionRole::Follower), None]);

        t.insert(route(1, Some(11), &[]));
        assert_eq!(roles(&t, 10, &[1]), [None]);
        assert_eq!(roles(&t, 11, &[1]), [Some(RegionRole::Leader)]);
        assert_eq!(t.leaders(), [10, 11]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn every_shape_of_route_is_returned_when_overwritten_or_removed() {
        let mut t = RouteTable::default();
        let shapes = shapes();
        for r in &shapes {
            t.insert(r.clone());
        }
        for r in &shapes {
            let rewritten = RegionRoute {
                epoch: r.epoch + 1,
                ..r.clone()
            };
            assert_eq!(t.insert(rewritten.clone()).as_ref(), Some(r));
            assert_eq!(t.remove(r.region_id), Some(rewritten));
        }
        assert_eq!((t.len(), t.by_node.len()), (0, 0), "nothing is left behind");
    }

    #[test]
    fn a_node_that_is_both_leader_and_follower_leads() {
        let mut t = RouteTable::default();
        t.insert(route(6, Some(13), &[13]));
        assert_eq!(roles(&t, 13, &[6]), [Some(RegionRole::Leader)]);
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
        assert_eq!(roles(&t, 11, &[1]), [None]);
        assert_eq!(t.leaders(), [12]);
        assert_eq!(t.led_by(10), Vec::<u64>::new());
        assert_eq!(t.len(), 1);
    }
}
