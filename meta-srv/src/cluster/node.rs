//! Where a node stands: one [`Reach`] for every consumer, and the storage it reports.
//!
//! **Reach.** A node is *connected* when its lease is live and its stream is open:
//! instructions can go. It is *waiting* when its lease is live but no stream is open (a
//! new leader's nodes before they reconnect): wait for it. It is *gone* when the leader
//! does not know it or its lease expired, even while a stale stream lingers: the sweeper
//! expires a silent node by time alone, so a half-open stream cannot keep it alive.
//!
//! **Storage.** A region can move only if its data is on shared storage, and only to a
//! node that reports it can open shared storage. Both come from the node's latest stats:
//! in memory, else as last flushed to the KV backend (a new leader's only source until
//! the node reports).

use handlers::builtin::{PersistedStats, StatsCache};
use std::sync::Arc;

use handlers::{NodeKey, NodeLease, Stat};

use super::Cluster;

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Alive and connected: instructions can go.
    Connected,
    /// Known and not expired, but not connected (yet). Wait.
    Waiting,
    /// Unknown or expired: gone.
    Gone,
}

impl Reach {
    /// Where a node stands, from its lease (if the leader knows it) and whether it has a
    /// stream open.
    pub fn of(lease: Option<&NodeLease>, connected: bool) -> Reach {
        match lease {
            None => Reach::Gone,
            Some(l) if l.expired => Reach::Gone,
            Some(_) if connected => Reach::Connected,
            Some(_) => Reach::Waiting,
        }
    }
}

/// One node as the model sees it.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Its lease record.
    pub lease: NodeLease,
    /// Whether it has a stream open to this metasrv.
    pub connected: bool,
    /// Whether an operator drained it (datanodes only).
    pub drained: bool,
}

impl NodeState {
    /// Whether its lease is live.
    pub fn alive(&self) -> bool {
        !self.lease.expired
    }

    /// Where it stands.
    pub fn reach(&self) -> Reach {
        Reach::of(Some(&self.lease), self.connected)
    }
}

/// Whether `region_id`, led by `node_id` whose latest stats are `stat`, is on shared
/// storage; `Err` names why it cannot move. One lookup of the node's stats can serve all
/// of its regions.
pub fn movable_in(stat: Option<&Stat>, node_id: u64, region_id: u64) -> Result<(), String> {
    let Some(stat) = stat else {
        return Err(format!(
            "node {node_id} never reported its storage to this leader"
        ));
    };
    match stat.region_stats.iter().find(|r| r.region_id == region_id) {
        Some(r) if r.shared_storage => Ok(()),
        Some(_) => Err(format!(
            "its data is on node {node_id}'s local storage; no other node can open it"
        )),
        None => Err(format!(
            "node {node_id} did not report the region, so its storage is unknown"
        )),
    }
}

impl Cluster {
    /// One node, if the leader knows it.
    pub fn node(&self, key: NodeKey) -> Option<NodeState> {
        self.node_leases.get(key).map(|lease| self.state_of(lease))
    }

    /// Every node the leader knows.
    pub fn nodes(&self) -> Vec<NodeState> {
        self.node_leases
            .list()
            .into_iter()
            .map(|lease| self.state_of(lease))
            .collect()
    }

    fn state_of(&self, lease: NodeLease) -> NodeState {
        let key = lease.key;
        NodeState {
            connected: self.is_connected(key),
            drained: key.role == common_proto::v1::Role::Datanode
                && self.maintenance.is_drained(key.node_id),
            lease,
        }
    }

    /// Whether the node has a stream open to this metasrv.
    pub fn is_connected(&self, key: NodeKey) -> bool {
        self.pushers.get(key).is_some()
    }

    /// Where datanode `node_id` stands.
    pub fn reach(&self, node_id: u64) -> Reach {
        let key = NodeKey::datanode(node_id);
        Reach::of(self.node_leases.get(key).as_ref(), self.is_connected(key))
    }

    /// Whether datanode `node_id` is drained.
    pub fn is_drained(&self, node_id: u64) -> bool {
        self.maintenance.is_drained(node_id)
    }

    /// Datanode `node_id`'s latest stats: in memory, else as last flushed to the KV
    /// backend. Without a durable KV nothing is flushed, and the cache keeps each node's
    /// latest stat across a step-down instead.
    pub async fn latest_stat(&self, node_id: u64) -> Option<Arc<Stat>> {
        let key = NodeKey::datanode(node_id);
        match self.stats.latest(key) {
            Some(stat) => Some(stat),
            None => match self.kv.get(StatsCache::kv_key(key).as_bytes()).await {
                Ok(Some(bytes)) => serde_json::from_slice::<PersistedStats>(&bytes)
                    .ok()
                    .map(|p| Arc::new(p.stat)),
                _ => None,
            },
        }
    }

    /// Whether datanode `node_id` reports that it can open regions on shared storage:
    /// only then may a region move to it (elsewhere it would open an empty copy).
    pub async fn can_host(&self, node_id: u64) -> bool {
        self.latest_stat(node_id)
            .await
            .is_some_and(|s| s.shared_storage)
    }

    /// Whether region `region_id`, led by `leader`, can move: its data is on shared
    /// storage. A region without a leader has nothing to wait out, and its data is
    /// wherever the last one left it; only a shared region could have got there.
    /// `Err` names why it cannot move.
    pub async fn check_movable(&self, region_id: u64, leader: Option<u64>) -> Result<(), String> {
        let Some(node_id) = leader else {
            return Ok(());
        };
        let stat = self.latest_stat(node_id).await;
        movable_in(stat.as_deref(), node_id, region_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expired: bool) -> NodeLease {
        crate::cluster::fixtures::lease(1, expired, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_is_reachable_only_while_its_lease_is_live_and_its_stream_open() {
        let live = lease(false);
        let expired = lease(true);
        assert_eq!(Reach::of(Some(&live), true), Reach::Connected);
        assert_eq!(
            Reach::of(Some(&live), false),
            Reach::Waiting,
            "known and live but not connected yet: wait, do not give up on it"
        );
        assert_eq!(
            Reach::of(Some(&expired), true),
            Reach::Gone,
            "a stale stream"
        );
        assert_eq!(Reach::of(Some(&expired), false), Reach::Gone);
        assert_eq!(Reach::of(None, true), Reach::Gone, "unknown to this leader");
        assert_eq!(Reach::of(None, false), Reach::Gone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nodes_state_is_alive_while_its_lease_is_live() {
        let state = |expired, connected| NodeState {
            lease: lease(expired),
            connected,
            drained: false,
        };
        assert!(state(false, false).alive());
        assert!(!state(true, true).alive());
        assert_eq!(state(false, true).reach(), Reach::Connected);
        assert_eq!(state(true, true).reach(), Reach::Gone);
    }
}
