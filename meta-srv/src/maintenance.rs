//! [`Maintenance`]: the operator's planned-work state. A cluster-wide switch that pauses
//! automatic failover (rolling restarts), and the set of **drained** datanodes (a node
//! under maintenance of its own).
//!
//! A drained node takes no new regions: neither an automatic create, nor a migration's
//! or failover's choice of target, nor an explicit one (refused with the way out). Its
//! existing regions keep their leases until they are moved; `POST /nodes/{id}/drain`
//! drains the node first, then moves them, so nothing lands back on it while they move.
//! `DELETE /nodes/{id}/drain` returns it to service. A drain lasts until the operator
//! lifts it, across restarts and leader changes.
//!
//! Both are persisted in the KV backend (etcd in a cluster) under one key, so they
//! survive a leader change: a new leader reads them when its term begins, before its
//! supervisor may act. Reads on the hot paths hit an in-memory copy; writes are
//! serialized, persisted, then applied (a write that failed is read back: memory follows
//! what the backend holds). Manual migrations and drains still work while
//! failover is paused: they are the operator's own moves.

use std::collections::BTreeSet;

use handlers::KvBackendRef;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;
use tracing::{info, warn};

use crate::error::{Result, StoreSnafu};

const KEY: &str = "__meta/maintenance";

/// The persisted value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Whether automatic failover is paused.
    pub enabled: bool,
    /// Datanodes that take no new regions (absent in values written before drains
    /// lasted).
    #[serde(default)]
    pub drained: BTreeSet<u64>,
}

/// The maintenance switch and the drained nodes.
#[derive(Debug)]
pub struct Maintenance {
    kv: KvBackendRef,
    state: Mutex<MaintenanceState>,
    /// Serializes read-modify-write, so two concurrent drains both persist.
    writes: tokio::sync::Mutex<()>,
}

impl Maintenance {
    /// A switch over `kv`, off and with nothing drained until [`load`](Self::load) says
    /// otherwise.
    pub fn new(kv: KvBackendRef) -> Self {
        Self {
            kv,
            state: Mutex::default(),
            writes: tokio::sync::Mutex::const_new(()),
        }
    }

    /// Reads the persisted state (at the start of a term); returns whether failover is
    /// paused.
    pub async fn load(&self) -> Result<bool> {
        let state = match self.kv.get(KEY.as_bytes()).await.context(StoreSnafu {
            op: "read maintenance mode",
        })? {
            Some(bytes) => serde_json::from_slice::<MaintenanceState>(&bytes).unwrap_or_else(|e| {
                // A value we cannot read pauses failover: the safe reading. The drained
                // set is lost with it; the log says so.
                warn!(error = %e, "unreadable maintenance state; pausing failover, nothing drained");
                MaintenanceState {
                    enabled: true,
                    drained: BTreeSet::new(),
                }
            }),
            None => MaintenanceState::default(),
        };
        let enabled = state.enabled;
        *self.state.lock() = state;
        Ok(enabled)
    }

    /// Applies `change` to a copy, persists it, then makes it current.
    async fn update(&self, change: impl FnOnce(&mut MaintenanceState)) -> Result<()> {
        let _one_writer = self.writes.lock().await;
        let mut next = self.state.lock().clone();
        change(&mut next);
        let value = serde_json::to_vec(&next).unwrap_or_default();
        if let Err(err) = self.kv.put(KEY.as_bytes(), &value).await {
            // A write that failed may still have been applied (an etcd request that timed
            // out): memory follows what the backend holds, if it can be read.
            if let Ok(Some(held)) = self.kv.get(KEY.as_bytes()).await {
                if let Ok(state) = serde_json::from_slice::<MaintenanceState>(&held) {
                    let applied = held == value;
                    *self.state.lock() = state;
                    if applied {
                        return Ok(());
                    }
                }
            }
            return Err(err).context(StoreSnafu {
                op: "write maintenance mode",
            });
        }
        *self.state.lock() = next;
        Ok(())
    }

    /// Persists and applies a new state of the failover switch.
    pub async fn set(&self, enabled: bool) -> Result<()> {
        self.update(|s| s.enabled = enabled).await?;
        info!(enabled, "maintenance mode set");
        Ok(())
    }

    /// Whether automatic failover is paused now.
    pub fn is_enabled(&self) -> bool {
        self.state.lock().enabled
    }

    /// Drains (`true`) or returns to service (`false`) datanode `node_id`; returns
    /// whether it was drained before.
    pub async fn set_drained(&self, node_id: u64, drained: bool) -> Result<bool> {
        let mut was = false;
        self.update(|s| {
            was = if drained {
                !s.drained.insert(node_id)
            } else {
                s.drained.remove(&node_id)
            };
        })
        .await?;
        if was != drained {
            info!(node_id, drained, "datanode drain set");
        }
        Ok(was)
    }

    /// Whether datanode `node_id` is drained: it takes no new regions.
    pub fn is_drained(&self, node_id: u64) -> bool {
        self.state.lock().drained.contains(&node_id)
    }

    /// The drained datanodes, in id order.
    pub fn drained(&self) -> Vec<u64> {
        self.state.lock().drained.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use handlers::MemoryKvBackend;

    use super::*;

    #[tokio::test]
    async fn a_failed_write_changes_nothing_unless_the_backend_applied_it() {
        let faulty = Arc::new(handlers::FaultyKv::new());
        let kv: KvBackendRef = faulty.clone();
        let m = Maintenance::new(kv.clone());
        m.load().await.expect("load");
        faulty.fail_writes(false);
        assert!(m.set(true).await.is_err());
        assert!(m.set_drained(4, true).await.is_err());
        assert!(!m.is_enabled() && !m.is_drained(4), "memory unchanged");
        // A write that failed but was applied (an etcd timeout that committed): memory
        // follows the backend, and the call reports it done.
        faulty.fail_writes(true);
        m.set(true).await.expect("applied after all");
        assert!(m.is_enabled());
    }

    #[tokio::test]
    async fn the_switch_survives_a_new_reader_as_a_new_leader_would() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        let a = Maintenance::new(kv.clone());
        assert!(!a.load().await.expect("load"), "off by default");
        a.set(true).await.expect("set");
        assert!(a.is_enabled());
        let b = Maintenance::new(kv.clone());
        assert!(!b.is_enabled(), "not read yet");
        assert!(b.load().await.expect("load"));
        kv.put(KEY.as_bytes(), b"garbage").await.expect("put");
        assert!(b.load().await.expect("load"), "unreadable means paused");
    }

    #[tokio::test]
    async fn drained_nodes_persist_with_the_switch_and_only_until_lifted() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        let a = Maintenance::new(kv.clone());
        a.load().await.expect("load");
        assert!(
            !a.set_drained(3, true).await.expect("drain"),
            "not drained before"
        );
        assert!(
            a.set_drained(3, true).await.expect("again"),
            "drained before"
        );
        a.set_drained(1, true).await.expect("drain");
        a.set(true).await.expect("pause");
        assert!(a.is_drained(3) && a.is_drained(1) && !a.is_drained(2));
        assert_eq!(a.drained(), vec![1, 3]);

        // A new leader reads both.
        let b = Maintenance::new(kv.clone());
        assert!(!b.is_drained(3), "not read yet");
        assert!(b.load().await.expect("load"));
        assert_eq!(b.drained(), vec![1, 3]);
        assert!(b.set_drained(3, false).await.expect("lift"), "was drained");
        assert!(!b.set_drained(3, false).await.expect("again"), "no longer");
        let c = Maintenance::new(kv.clone());
        c.load().await.expect("load");
        assert_eq!(c.drained(), vec![1]);
        assert!(c.is_enabled(), "lifting a drain leaves the switch alone");

        // A value from before drains lasted reads as nothing drained.
        kv.put(KEY.as_bytes(), br#"{"enabled":false}"#)
            .await
            .expect("put");
        assert!(!c.load().await.expect("load"));
        assert!(c.drained().is_empty());
    }
}
