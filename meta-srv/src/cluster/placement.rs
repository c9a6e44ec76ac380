//! Placement: where a region goes, for create, migrate, drain and failover alike.
//!
//! A [`RegionSelector`] chooses; it is a trait so operators can place regions by their
//! own rules (racks, disks, tenants). The default, [`LeastRegionsSelector`], picks the
//! candidate leading the fewest regions. A selector never returns an excluded node (the
//! failed or drained one, or a move's source).
//!
//! The model builds the candidates, so every path applies the same fitness rule
//! ([`Unfit`]): a node takes a region only if it is alive and connected and not drained,
//! and, for a move, reports that it can open shared storage (elsewhere it would open an
//! empty copy). Each candidate's load is the regions it leads (from the route table's
//! per-node index, no scan) plus the moves already planned to it, which the caller passes
//! in: simultaneous failovers spread out instead of all landing on the least-loaded node.

use std::fmt::Debug;
use std::sync::Arc;

use super::{Cluster, Reach};

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
    /// Picks a node for `region_id` among `candidates` (every one fit to take it), never
    /// one in `exclude`; `None` when no candidate fits.
    fn select(&self, region_id: u64, candidates: &[Candidate], exclude: &[u64]) -> Option<u64>;
}

/// Shared selector handle.
pub type RegionSelectorRef = Arc<dyn RegionSelector>;

/// The candidate leading the fewest regions; ties go to the lowest id, so the choice is
/// deterministic.
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

/// The candidates: each fit node with the regions it leads, plus one for each move
/// planned to it (`planned` holds the target of each move under way), by node id.
fn with_planned(fit: impl IntoIterator<Item = (u64, usize)>, planned: &[u64]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = fit
        .into_iter()
        .map(|(node_id, leads)| Candidate {
            node_id,
            leading: leads + planned.iter().filter(|t| **t == node_id).count(),
        })
        .collect();
    out.sort_by_key(|c| c.node_id);
    out
}

/// What a region is placed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new region: any live node will do; it opens an empty region.
    Create,
    /// A region that exists (migrate, drain, failover): the node must open its data, so
    /// it must reach shared storage.
    Move,
}

/// Why a node cannot take a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// An operator drained it.
    Drained,
    /// Its lease is not live or its stream is not open.
    NotConnected,
    /// It does not report shared storage (a move only).
    NoSharedStorage,
}

impl Unfit {
    /// Why datanode `node_id` cannot take a region, for an operator.
    pub fn reason(self, node_id: u64) -> String {
        match self {
            Unfit::Drained => format!(
                "it is drained and takes no new regions (DELETE /nodes/{node_id}/drain returns it to service)"
            ),
            Unfit::NotConnected => "it is not alive and connected".to_string(),
            Unfit::NoSharedStorage => {
                "it does not report shared storage, so it would open an empty copy".to_string()
            }
        }
    }
}

impl Cluster {
    /// Why datanode `node_id` cannot take a region for `purpose`; `None` if it can.
    pub async fn unfit(&self, node_id: u64, purpose: Purpose) -> Option<Unfit> {
        if self.is_drained(node_id) {
            return Some(Unfit::Drained);
        }
        if self.reach(node_id) != Reach::Connected {
            return Some(Unfit::NotConnected);
        }
        if purpose == Purpose::Move && !self.can_host(node_id).await {
            return Some(Unfit::NoSharedStorage);
        }
        None
    }

    /// Every datanode fit to take a region for `purpose`, with its load; `planned` holds
    /// the target of each move under way.
    pub async fn candidates(&self, purpose: Purpose, planned: &[u64]) -> Vec<Candidate> {
        let mut fit = Vec::new();
        for node in self.node_leases.list() {
            let id = node.key.node_id;
            if node.key.role == common_proto::v1::Role::Datanode
                && self.unfit(id, purpose).await.is_none()
            {
                fit.push((id, self.routes.leading_count(id)));
            }
        }
        with_planned(fit, planned)
    }

    /// Where `region_id` goes for `purpose`: the selector's choice among the candidates,
    /// never one in `exclude`; `None` when nobody fits.
    pub async fn place(
        &self,
        region_id: u64,
        purpose: Purpose,
        exclude: &[u64],
        planned: &[u64],
    ) -> Option<u64> {
        let candidates = self.candidates(purpose, planned).await;
        self.selector.select(region_id, &candidates, exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_node_wins_counting_planned_moves_and_excluded_nodes_never_do() {
        let candidates = with_planned([(1, 1), (2, 1), (3, 2)], &[1, 3, 9]);
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
        let candidates = with_planned([(5, 0), (4, 0), (6, 0)], &[]);
        assert_eq!(LeastRegionsSelector.select(1, &candidates, &[]), Some(4));
    }
}
