//! [`Maintenance`]: a cluster-wide switch that pauses automatic failover, for rolling
//! restarts and planned work.
//!
//! It is persisted in the KV backend (etcd in a cluster), so it survives a leader change:
//! a new leader reads it when its term begins, before its supervisor may act. Reads on the
//! supervisor's path hit an in-memory copy. Manual migrations and drains still work while
//! it is on: they are the operator's own moves.

use std::sync::atomic::{AtomicBool, Ordering};

use handlers::KvBackendRef;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;
use tracing::info;

use crate::error::{Result, StoreSnafu};

const KEY: &str = "__meta/maintenance";

/// The persisted value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Whether automatic failover is paused.
    pub enabled: bool,
}

/// The maintenance switch.
#[derive(Debug)]
pub struct Maintenance {
    kv: KvBackendRef,
    enabled: AtomicBool,
}

impl Maintenance {
    /// A switch over `kv`, off until [`load`](Self::load) says otherwise.
    pub fn new(kv: KvBackendRef) -> Self {
        Self {
            kv,
            enabled: AtomicBool::new(false),
        }
    }

    /// Reads the persisted state (at the start of a term).
    pub async fn load(&self) -> Result<bool> {
        let enabled = match self.kv.get(KEY.as_bytes()).await.context(StoreSnafu {
            op: "read maintenance mode",
        })? {
            Some(bytes) => serde_json::from_slice::<MaintenanceState>(&bytes)
                .map(|s| s.enabled)
                // A value we cannot read pauses failover: the safe reading.
                .unwrap_or(true),
            None => false,
        };
        self.enabled.store(enabled, Ordering::SeqCst);
        Ok(enabled)
    }

    /// Persists and applies a new state.
    pub async fn set(&self, enabled: bool) -> Result<()> {
        let value = serde_json::to_vec(&MaintenanceState { enabled }).unwrap_or_default();
        self.kv
            .put(KEY.as_bytes(), &value)
            .await
            .context(StoreSnafu {
                op: "write maintenance mode",
            })?;
        self.enabled.store(enabled, Ordering::SeqCst);
        info!(enabled, "maintenance mode set");
        Ok(())
    }

    /// Whether automatic failover is paused now.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use handlers::MemoryKvBackend;

    use super::*;

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
}
