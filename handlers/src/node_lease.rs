//! The node-lease port: who is alive, as seen on the leader's monotonic clock.
//!
//! KeepLease stamps `last_seen` on every heartbeat; a leader-side sweeper calls
//! [`NodeLeaseStore::expire`] to mark nodes whose stamp is older than the node lease,
//! whether or not their TCP stream is still open, so a half-open stream cannot keep a
//! dead node alive. The store is leader memory by design: a new
//! leader starts empty and rebuilds it from the first heartbeats.

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::Role;
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

/// Identifies one node stream: the same id may exist once per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// The node's role.
    pub role: Role,
    /// The node's id (never 0).
    pub node_id: u64,
}

impl NodeKey {
    /// A datanode's key; the common case.
    pub fn datanode(node_id: u64) -> Self {
        Self {
            role: Role::Datanode,
            node_id,
        }
    }
}

impl std::fmt::Display for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.role.label(), self.node_id)
    }
}

/// What the leader knows about one node's liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// Which node.
    pub key: NodeKey,
    /// Its advertised address.
    pub addr: String,
    /// Its process start time (ms since the Unix epoch); changes on restart.
    pub node_epoch: u64,
    /// When the leader first saw it (this leadership term).
    pub first_seen: Instant,
    /// When its last heartbeat arrived.
    pub last_seen: Instant,
    /// When the leader last granted it region leases. Failover waits for this plus the
    /// region lease (invariant S1).
    pub last_granted: Option<Instant>,
    /// How many regions it reported last.
    pub region_count: usize,
    /// Set by the sweeper once `last_seen` is older than the node lease.
    pub expired: bool,
}

/// Liveness bookkeeping on the leader. Synchronous on purpose: it is memory, on the hot
/// path of every heartbeat, and must never hold a lock across an await.
pub trait NodeLeaseStore: Send + Sync + Debug + 'static {
    /// Records a heartbeat from `key` at `now`, reviving it if it was expired.
    fn keep_alive(
        &self,
        key: NodeKey,
        addr: &str,
        node_epoch: u64,
        region_count: usize,
        now: Instant,
    );

    /// Records that region leases were granted to `key` at `now`.
    fn record_grant(&self, key: NodeKey, now: Instant);

    /// One node's lease, if known.
    fn get(&self, key: NodeKey) -> Option<NodeLease>;

    /// Every known node, sorted by key.
    fn list(&self) -> Vec<NodeLease>;

    /// Marks every node not seen within `ttl` before `now` as expired, and returns the ones
    /// that expired just now (so each expiry is logged once).
    fn expire(&self, now: Instant, ttl: Duration) -> Vec<NodeLease>;

    /// Gives every node that is not already expired a fresh grace of one node lease from
    /// `now`. The leader calls it after its *own* stall (a SIGSTOP, a starved runtime):
    /// it heard no heartbeats while it was not running, which says nothing about the nodes.
    fn grace(&self, now: Instant);

    /// Forgets a node (e.g. decommissioned).
    fn remove(&self, key: NodeKey) -> Option<NodeLease>;

    /// Forgets everything; called when leadership is lost, since leases are leader state.
    fn clear(&self);
}

/// Shared node-lease store handle.
pub type NodeLeaseStoreRef = Arc<dyn NodeLeaseStore>;

/// The in-memory node-lease store.
#[derive(Debug, Default)]
pub struct MemoryNodeLeaseStore {
    // Every method is synchronous: nothing awaits while holding it.
    nodes: Mutex<HashMap<NodeKey, NodeLease>>,
}

impl MemoryNodeLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<NodeKey, NodeLease>> {
        self.nodes.lock()
    }
}

impl NodeLeaseStore for MemoryNodeLeaseStore {
    fn keep_alive(
        &self,
        key: NodeKey,
        addr: &str,
        node_epoch: u64,
        region_count: usize,
        now: Instant,
    ) {
        let mut nodes = self.nodes();
        let lease = nodes.entry(key).or_insert_with(|| NodeLease {
            key,
            addr: addr.to_string(),
            node_epoch,
            first_seen: now,
            last_seen: now,
            last_granted: None,
            region_count,
            expired: false,
        });
        if lease.addr != addr {
            lease.addr = addr.to_string();
        }
        lease.node_epoch = node_epoch;
        lease.last_seen = lease.last_seen.max(now);
        lease.region_count = region_count;
        lease.expired = false;
    }

    fn record_grant(&self, key: NodeKey, now: Instant) {
        if let Some(lease) = self.nodes().get_mut(&key) {
            lease.last_granted = Some(lease.last_granted.map_or(now, |t| t.max(now)));
        }
    }

    fn get(&self, key: NodeKey) -> Option<NodeLease> {
        self.nodes().get(&key).cloned()
    }

    fn list(&self) -> Vec<NodeLease> {
        let mut all: Vec<NodeLease> = self.nodes().values().cloned().collect();
        all.sort_by_key(|l| l.key);
        all
    }

    fn expire(&self, now: Instant, ttl: Duration) -> Vec<NodeLease> {
        let mut newly = Vec::new();
        for lease in self.nodes().values_mut() {
            if !lease.expired && now.saturating_duration_since(lease.last_seen) > ttl {
                lease.expired = true;
                newly.push(lease.clone());
            }
        }
        newly.sort_by_key(|l| l.key);
        newly
    }

    fn grace(&self, now: Instant) {
        for lease in self.nodes().values_mut().filter(|l| !l.expired) {
            lease.last_seen = lease.last_seen.max(now);
        }
    }

    fn remove(&self, key: NodeKey) -> Option<NodeLease> {
        self.nodes().remove(&key)
    }

    fn clear(&self) {
        self.nodes().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_by_time_and_reported_once() {
        let store = MemoryNodeLeaseStore::new();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        store.keep_alive(NodeKey::datanode(1), "a:1", 100, 3, t0);
        store.keep_alive(
            NodeKey::datanode(2),
            "a:2",
            100,
            0,
            t0 + Duration::from_secs(5),
        );
        assert!(
            store.expire(t0 + ttl, ttl).is_empty(),
            "exactly at the TTL is still alive"
        );
        let newly = store.expire(t0 + ttl + Duration::from_millis(1), ttl);
        assert_eq!(
            newly.iter().map(|l| l.key.node_id).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(
            store
                .expire(t0 + ttl + Duration::from_secs(1), ttl)
                .is_empty(),
            "reported once"
        );
        assert!(store.get(NodeKey::datanode(1)).expect("known").expired);
        // A heartbeat revives it.
        store.keep_alive(
            NodeKey::datanode(1),
            "a:1",
            100,
            3,
            t0 + Duration::from_secs(12),
        );
        assert!(!store.get(NodeKey::datanode(1)).expect("known").expired);
    }

    #[test]
    fn grace_renews_live_nodes_only() {
        let store = MemoryNodeLeaseStore::new();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        store.keep_alive(NodeKey::datanode(1), "a:1", 1, 0, t0);
        store.keep_alive(NodeKey::datanode(2), "a:2", 1, 0, t0);
        store.expire(t0 + Duration::from_secs(11), ttl); // both expire…
        store.keep_alive(
            NodeKey::datanode(1),
            "a:1",
            1,
            0,
            t0 + Duration::from_secs(12),
        ); // …1 returns
        let resumed = t0 + Duration::from_secs(40); // the leader was stalled for 28 s
        store.grace(resumed);
        assert!(
            store.expire(resumed + ttl, ttl).is_empty(),
            "node 1 has a fresh grace, node 2 stays expired without a new report"
        );
        assert_eq!(
            store.get(NodeKey::datanode(1)).expect("known").last_seen,
            resumed
        );
        assert!(store.get(NodeKey::datanode(2)).expect("known").expired);
    }

    #[test]
    fn last_seen_and_last_granted_never_move_backwards() {
        let store = MemoryNodeLeaseStore::new();
        let t0 = Instant::now();
        let key = NodeKey::datanode(7);
        store.keep_alive(key, "a", 1, 0, t0 + Duration::from_secs(2));
        store.keep_alive(key, "a", 1, 0, t0);
        store.record_grant(key, t0 + Duration::from_secs(2));
        store.record_grant(key, t0);
        let lease = store.get(key).expect("known");
        assert_eq!(lease.last_seen, t0 + Duration::from_secs(2));
        assert_eq!(lease.last_granted, Some(t0 + Duration::from_secs(2)));
    }
}
