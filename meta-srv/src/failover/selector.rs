//! [`RegionSelector`]: where a region goes when it must move.
//!
//! A trait, so operators can place regions by their own rules (racks, disks, tenants);
//! the default, [`LeastRegionsSelector`], picks the alive datanode leading the fewest
//! regions. A selector never returns an excluded node (the failed or drained one).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// A datanode a region could move to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node id.
    pub node_id: u64,
    /// How many regions it leads now (including moves already planned to it).
    pub leading: usize,
}

/// Chooses the target of a region move.
pub trait RegionSelector: Send + Sync + Debug + 'static {
    /// Picks a target for `region_id` among `candidates` (alive, connected datanodes),
    /// never one in `exclude`; `None` when no candidate fits.
    fn select(&self, region_id: u64, candidates: &[Candidate], exclude: &[u64]) -> Option<u64>;
}

/// Shared selector handle.
pub type RegionSelectorRef = Arc<dyn RegionSelector>;

/// The alive datanode leading the fewest regions; ties go to the lowest id, so the
/// choice is deterministic.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastRegionsSelector;

impl RegionSelector for LeastRegionsSelector {
    fn select(&self, _region_id: u64, candidates: &[Candidate], exclude: &[u64]) -> Option<u64> {
        candidates
            .iter()
            .filter(|c| !exclude.contains(&c.node_id))
            .min_by_key(|c| (c.leading, c.node_id))
            .map(|c| c.node_id)
    }
}

/// Counts the regions each candidate leads, from `(region, leader)` pairs.
pub fn leading_counts(
    alive: impl IntoIterator<Item = u64>,
    leaders: impl IntoIterator<Item = u64>,
) -> Vec<Candidate> {
    let mut counts: HashMap<u64, usize> = alive.into_iter().map(|id| (id, 0)).collect();
    for leader in leaders {
        if let Some(c) = counts.get_mut(&leader) {
            *c += 1;
        }
    }
    let mut out: Vec<Candidate> = counts
        .into_iter()
        .map(|(node_id, leading)| Candidate { node_id, leading })
        .collect();
    out.sort_by_key(|c| c.node_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_alive_node_wins_and_excluded_nodes_never_do() {
        let candidates = leading_counts([1, 2, 3], [1, 1, 2, 3, 3, 3, 9]);
        assert_eq!(
            candidates,
            vec![
                Candidate {
                    node_id: 1,
                    leading: 2
                },
                Candidate {
                    node_id: 2,
                    leading: 1
                },
                Candidate {
                    node_id: 3,
                    leading: 3
                },
            ]
        );
        let s = LeastRegionsSelector;
        assert_eq!(s.select(7, &candidates, &[]), Some(2));
        assert_eq!(s.select(7, &candidates, &[2]), Some(1));
        assert_eq!(s.select(7, &candidates, &[1, 2, 3]), None);
        assert_eq!(s.select(7, &[], &[]), None);
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let candidates = leading_counts([5, 4, 6], []);
        assert_eq!(LeastRegionsSelector.select(1, &candidates, &[]), Some(4));
    }
}
