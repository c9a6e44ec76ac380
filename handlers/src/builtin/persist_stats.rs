//! PersistStats: keep recent stats per node in memory, flush them to the KV in batches.
//!
//! Stats are keyed by node and tagged with the node's epoch (its process start time):
//! - a newer epoch means the node restarted: the old stats are cleared, and the new
//!   epoch is flushed at once, so the KV shows the restart;
//! - an older epoch is a stale message from before a restart, and is ignored;
//! - otherwise the stat is cached, and every `flush_every` heartbeats the recent stats go
//!   to the KV in one write. A heartbeat never waits on a KV write otherwise, so
//!   throughput is not bounded by the backend's put rate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common_proto::v1::{HeartbeatRequest, Role};
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::{any_known_role, names};
use crate::error::EncodeValueSnafu;
use crate::{
    Context, HandleControl, HeartbeatAccumulator, HeartbeatHandler, NodeKey, Result, Stat,
};

/// What is written to the KV for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStats {
    /// The epoch these stats belong to.
    pub node_epoch: u64,
    /// The most recent stats, oldest first.
    pub stats: Vec<Stat>,
}

#[derive(Debug)]
struct NodeStats {
    node_epoch: u64,
    recent: VecDeque<Stat>,
    since_flush: usize,
}

/// What recording a stat asks the handler to do.
#[derive(Debug)]
enum Recorded {
    Stale,
    Cached,
    Flush(PersistedStats),
}

/// Recent stats per node, in leader memory. Shared with the metasrv, which reads it for
/// the admin API and failover.
#[derive(Debug)]
pub struct StatsCache {
    // A std Mutex: held only to update the map, never across the KV write.
    nodes: Mutex<HashMap<NodeKey, NodeStats>>,
    flush_every: usize,
    keep: usize,
}

impl Default for StatsCache {
    fn default() -> Self {
        Self::new(10, 5)
    }
}

impl StatsCache {
    /// Flush every `flush_every` heartbeats per node; keep the last `keep` stats.
    pub fn new(flush_every: usize, keep: usize) -> Self {
        Self {
            nodes: Mutex::new(HashMap::new()),
            flush_every: flush_every.max(1),
            keep: keep.max(1),
        }
    }

    /// The KV key a node's stats are flushed to.
    pub fn kv_key(key: NodeKey) -> String {
        format!("__meta/stats/{}/{}", key.role.label(), key.node_id)
    }

    /// The most recent stat of a node.
    pub fn latest(&self, key: NodeKey) -> Option<Stat> {
        self.lock().get(&key).and_then(|n| n.recent.back().cloned())
    }

    /// Every node's recent stats, for a final flush on shutdown.
    pub fn snapshot_all(&self) -> Vec<(NodeKey, PersistedStats)> {
        self.lock()
            .iter()
            .map(|(key, n)| {
                let stats = n.recent.iter().cloned().collect();
                (
                    *key,
                    PersistedStats {
                        node_epoch: n.node_epoch,
                        stats,
                    },
                )
            })
            .collect()
    }

    /// Forgets everything; leader-only state, dropped on step-down.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeKey, NodeStats>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, key: NodeKey, stat: &Stat) -> Recorded {
        let mut nodes = self.lock();
        let node = nodes.entry(key).or_insert_with(|| NodeStats {
            node_epoch: 0,
            recent: VecDeque::new(),
            since_flush: 0,
        });
        if stat.node_epoch < node.node_epoch {
            return Recorded::Stale;
        }
        let epoch_changed = stat.node_epoch > node.node_epoch;
        if epoch_changed {
            node.node_epoch = stat.node_epoch;
            node.recent.clear();
            node.since_flush = 0;
        }
        if node.recent.len() == self.keep {
            node.recent.pop_front();
        }
        node.recent.push_back(stat.clone());
        node.since_flush += 1;
        if epoch_changed || node.since_flush >= self.flush_every {
            node.since_flush = 0;
            Recorded::Flush(PersistedStats {
                node_epoch: node.node_epoch,
                stats: node.recent.iter().cloned().collect(),
            })
        } else {
            Recorded::Cached
        }
    }
}

/// Caches stats per node epoch and flushes them in batches.
#[derive(Debug, Clone)]
pub struct PersistStatsHandler {
    cache: Arc<StatsCache>,
}

impl PersistStatsHandler {
    /// A handler over a shared cache.
    pub fn new(cache: Arc<StatsCache>) -> Self {
        Self { cache }
    }
}

#[async_trait]
impl HeartbeatHandler for PersistStatsHandler {
    fn name(&self) -> &str {
        names::PERSIST_STATS
    }

    fn is_acceptable(&self, role: Role) -> bool {
        any_known_role(role)
    }

    async fn handle(
        &self,
        _req: &HeartbeatRequest,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let Some(stat) = acc.stat.as_ref() else {
            return Ok(HandleControl::Continue);
        };
        let key = NodeKey {
            role: Role::try_from(stat.role).unwrap_or_default(),
            node_id: stat.node_id,
        };
        match self.cache.record(key, stat) {
            Recorded::Stale => {
                tracing::debug!(
                    node_id = key.node_id,
                    node_epoch = stat.node_epoch,
                    "stale epoch ignored"
                );
            }
            Recorded::Cached => {}
            Recorded::Flush(persisted) => {
                let kv_key = StatsCache::kv_key(key);
                let value =
                    serde_json::to_vec(&persisted).context(EncodeValueSnafu { key: &kv_key })?;
                ctx.kv.put(kv_key.as_bytes(), &value).await?;
            }
        }
        Ok(HandleControl::Continue)
    }
}
