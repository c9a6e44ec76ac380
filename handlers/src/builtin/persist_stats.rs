//! PersistStats: keep recent stats per node in memory, flush them to the KV in batches.
//!
//! Stats are keyed by node and tagged with the node's epoch (its process start time):
//! - a newer epoch means the node restarted: the old stats are cleared, and the new
//!   epoch is flushed at once, so the KV shows the restart;
//! - an older epoch is a stale message from before a restart, and is ignored;
//! - otherwise the stat is cached, and every `flush_every` heartbeats the node's latest
//!   stat is marked for flushing.
//!
//! The handler never writes to the KV itself: [`StatsCache::flush`] writes every marked
//! node in one batch, and the metasrv calls it from a background task every flush
//! interval (and once more on shutdown). So no heartbeat waits on the backend, and
//! throughput is not bounded by its put rate (on etcd, inline puts on every tenth
//! heartbeat made p99 latency about a second under load).
//!
//! Only the latest stat is flushed; the last `keep` stay in leader memory. Flushing all
//! of them made this handler the most expensive one in the pipeline (JSON of `keep` ×
//! regions on every flush), for history nobody reads back from the KV.
//!
//! **Memory and copies.** A stat holds one summary per region, so the kept stats are a
//! large part of what a connected node costs the leader. The ring keeps the very stat the
//! heartbeat was parsed into (an `Arc`): recording one copies no region, and the flusher
//! shares it too. A cache built [`without_flush`](StatsCache::without_flush) (a metasrv
//! whose KV is memory, which no successor will ever read) marks nothing.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::Role;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::names;
use crate::error::EncodeValueSnafu;
use crate::{
    Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, NodeKey, Result,
    Stat,
};

/// What is written to the KV for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStats {
    /// The epoch these stats belong to.
    pub node_epoch: u64,
    /// The latest stat of that epoch.
    pub stat: Stat,
}

#[derive(Debug)]
struct NodeStats {
    node_epoch: u64,
    recent: VecDeque<Arc<Stat>>,
    since_flush: usize,
}

/// What the flusher writes, borrowed: encoded like [`PersistedStats`].
#[derive(Serialize)]
struct PersistedRef<'a> {
    node_epoch: u64,
    stat: &'a Stat,
}

/// What recording a stat did.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    Stale,
    Cached,
    MarkedForFlush,
}

/// Recent stats per node, in leader memory. Shared with the metasrv, which reads it for
/// the admin API and failover.
#[derive(Debug)]
pub struct StatsCache {
    // A synchronous lock (parking_lot): held only to update the map, never across the KV write.
    nodes: Mutex<HashMap<NodeKey, NodeStats>>,
    /// Latest stat per node awaiting the next flush; a separate lock, so the flusher
    /// swaps it out without touching the hot-path map.
    pending: Mutex<HashMap<NodeKey, Arc<Stat>>>,
    /// Mark a node for flushing every this many heartbeats; `None`: never.
    flush_every: Option<usize>,
    keep: usize,
}

impl Default for StatsCache {
    fn default() -> Self {
        Self::new(10, 1)
    }
}

impl StatsCache {
    /// Flush every `flush_every` heartbeats per node; keep the last `keep` stats.
    pub fn new(flush_every: usize, keep: usize) -> Self {
        Self {
            nodes: Mutex::new(HashMap::default()),
            pending: Mutex::new(HashMap::default()),
            flush_every: Some(flush_every.max(1)),
            keep: keep.max(1),
        }
    }

    /// Keep the last `keep` stats, and never mark any for flushing: for a leader whose KV
    /// is memory, so a flushed copy would only double the memory. [`flush`](Self::flush)
    /// and [`flush_all`](Self::flush_all) then write nothing.
    pub fn without_flush(keep: usize) -> Self {
        Self {
            flush_every: None,
            ..Self::new(1, keep)
        }
    }

    /// The KV key a node's stats are flushed to.
    pub fn kv_key(key: NodeKey) -> String {
        format!("__meta/stats/{}/{}", key.role.label(), key.node_id)
    }

    /// The most recent stat of a node.
    pub fn latest(&self, key: NodeKey) -> Option<Arc<Stat>> {
        self.nodes
            .lock()
            .get(&key)
            .and_then(|n| n.recent.back().cloned())
    }

    /// Writes every node's latest stat, marked or not: the final flush on shutdown.
    /// Same batching and encoding as [`flush`](Self::flush).
    pub async fn flush_all(&self, kv: &dyn crate::KvBackend) -> crate::Result<usize> {
        if self.flush_every.is_none() {
            return Ok(0);
        }
        {
            let nodes = self.nodes.lock();
            let mut pending = self.pending.lock();
            for (key, n) in nodes.iter() {
                if let Some(stat) = n.recent.back() {
                    pending.insert(*key, stat.clone());
                }
            }
        }
        self.flush(kv).await
    }

    /// A node's recent stats, oldest first.
    pub fn recent(&self, key: NodeKey) -> Vec<Arc<Stat>> {
        self.nodes
            .lock()
            .get(&key)
            .map(|n| n.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets everything; leader-only state, dropped on step-down. A cache
    /// [`without_flush`](Self::without_flush) keeps each node's latest stat: it stands
    /// in for the flushed copy a new leader would read from a durable KV (a dead node's
    /// storage kind decides whether its regions can fail over).
    pub fn clear(&self) {
        self.pending.lock().clear();
        let mut nodes = self.nodes.lock();
        if self.flush_every.is_some() {
            nodes.clear();
            return;
        }
        for node in nodes.values_mut() {
            while node.recent.len() > 1 {
                node.recent.pop_front();
            }
            node.since_flush = 0;
        }
    }

    /// How many nodes await a flush.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Writes every node marked for flushing, in KV batches of 256 nodes;
    /// returns how many. JSON encoding runs on the blocking pool, chunk by chunk, so a
    /// large flush (every node's first heartbeat marks it at once) never stalls the
    /// runtime that serves heartbeats, nor holds all encoded values in memory at once.
    /// A chunk of a few nodes is encoded in place: the hop to another thread would cost
    /// more (and a simulation stays on one thread).
    pub async fn flush(&self, kv: &dyn crate::KvBackend) -> crate::Result<usize> {
        let pending = std::mem::take(&mut *self.pending.lock());
        let mut pending: Vec<(NodeKey, Arc<Stat>)> = pending.into_iter().collect();
        let mut written = 0;
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(FLUSH_CHUNK));
            let chunk = std::mem::replace(&mut pending, rest);
            let ops = if chunk.len() <= INLINE_CHUNK {
                encode_chunk(chunk)?
            } else {
                match tokio::task::spawn_blocking(move || encode_chunk(chunk)).await {
                    Ok(ops) => ops?,
                    Err(join) => {
                        return Err(crate::Error::custom(format!(
                            "stats encoding task failed: {join}"
                        )))
                    }
                }
            };
            written += ops.len();
            kv.batch(ops).await?;
        }
        Ok(written)
    }

    fn record(&self, key: NodeKey, stat: &Arc<Stat>) -> Recorded {
        let mut nodes = self.nodes.lock();
        let node = nodes.entry(key).or_insert_with(|| NodeStats {
            node_epoch: 0,
            recent: VecDeque::new(),
            since_flush: 0,
        });
        if stat.node_epoch < node.node_epoch {
            return Recorded::Stale;
        }
        let epoch_changed = stat.node_epoch > node.node_epoch;
        // A changed region set (or storage kind) is flushed at once: a new leader reads
        // it to know which regions of a dead node can fail over. Without a flush, there
        // is nothing to decide.
        let regions_changed = self.flush_every.is_some()
            && node.recent.back().is_none_or(|prev| {
                prev.region_stats.len() != stat.region_stats.len()
                    || prev
                        .region_stats
                        .iter()
                        .zip(&stat.region_stats)
                        .any(|(a, b)| {
                            a.region_id != b.region_id || a.shared_storage != b.shared_storage
                        })
            });
        if epoch_changed {
            node.node_epoch = stat.node_epoch;
            node.recent.clear();
            node.since_flush = 0;
        }
        if node.recent.len() >= self.keep {
            node.recent.pop_front();
        }
        node.recent.push_back(stat.clone());
        let Some(flush_every) = self.flush_every else {
            return Recorded::Cached;
        };
        node.since_flush += 1;
        if epoch_changed || regions_changed || node.since_flush >= flush_every {
            node.since_flush = 0;
            drop(nodes);
            self.pending.lock().insert(key, stat.clone());
            Recorded::MarkedForFlush
        } else {
            Recorded::Cached
        }
    }
}

/// How many nodes one flush batch writes.
const FLUSH_CHUNK: usize = 256;

/// A chunk of at most this many nodes is encoded without leaving the runtime.
const INLINE_CHUNK: usize = 8;

fn encode_chunk(chunk: Vec<(NodeKey, Arc<Stat>)>) -> Result<Vec<crate::BatchOp>> {
    let mut ops = Vec::with_capacity(chunk.len());
    for (key, stat) in chunk {
        let kv_key = StatsCache::kv_key(key);
        // The epoch a stat is recorded under is its own (a stat of another epoch either
        // cleared the node or was ignored).
        let persisted = PersistedRef {
            node_epoch: stat.node_epoch,
            stat: &stat,
        };
        let value = serde_json::to_vec(&persisted).context(EncodeValueSnafu { key: &kv_key })?;
        ops.push(crate::BatchOp::Put(crate::KeyValue {
            key: kv_key.into_bytes(),
            value,
        }));
    }
    Ok(ops)
}

/// Caches stats per node epoch and marks them for the batched flush.
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

    fn is_acceptable(&self, _role: Role) -> bool {
        true
    }

    async fn handle(
        &self,
        _hb: &Heartbeat,
        _ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let Some(stat) = acc.stat.as_ref() else {
            return Ok(HandleControl::Continue);
        };
        let key = stat.key();
        if self.cache.record(key, stat) == Recorded::Stale {
            tracing::debug!(
                node_id = key.node_id,
                node_epoch = stat.node_epoch,
                "stale epoch ignored"
            );
        }
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use common_proto::v1::Role;

    use super::{PersistedStats, StatsCache};
    use crate::test_util::{fixture, request, run, Fixture};
    use crate::{Context, HandlerGroupBuilder, NodeKey};

    /// Runs the flusher once (as the metasrv's background task would), then reads the KV.
    async fn flushed(f: &Fixture, node_id: u64) -> Option<PersistedStats> {
        f.stats.flush(&*f.ctx.kv).await.expect("flush");
        persisted(&f.ctx, node_id).await
    }

    async fn persisted(ctx: &Context, node_id: u64) -> Option<PersistedStats> {
        let raw = ctx
            .kv
            .get(StatsCache::kv_key(NodeKey::datanode(node_id)).as_bytes())
            .await
            .expect("get")?;
        Some(serde_json::from_slice(&raw).expect("valid json"))
    }

    #[tokio::test]
    async fn persist_stats_flushes_in_batches_and_on_epoch_change() {
        let f = fixture(); // flush every 3, keep 2
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        let mut req = request(9, Role::Datanode, &[], 1);

        run(&group, &f.ctx, &req).await;
        assert!(
            persisted(&f.ctx, 9).await.is_none(),
            "the handler itself never writes"
        );
        assert_eq!(
            f.stats.pending_len(),
            1,
            "the first epoch is marked at once"
        );
        let first = flushed(&f, 9)
            .await
            .expect("the first epoch is flushed at once");
        assert_eq!(first.stat.duration_since_epoch, 1);

        req.duration_since_epoch = 2;
        run(&group, &f.ctx, &req).await;
        req.duration_since_epoch = 3;
        run(&group, &f.ctx, &req).await;
        assert_eq!(
            flushed(&f, 9).await,
            Some(first),
            "no write before the batch is full"
        );

        req.duration_since_epoch = 4;
        run(&group, &f.ctx, &req).await;
        let batch = flushed(&f, 9).await.expect("flushed");
        assert_eq!(
            batch.stat.duration_since_epoch, 4,
            "the latest stat is flushed"
        );
        let recent: Vec<u64> = f
            .stats
            .recent(NodeKey::datanode(9))
            .iter()
            .map(|s| s.duration_since_epoch)
            .collect();
        assert_eq!(recent, vec![3, 4], "memory keeps the last 2");

        // Restart: a newer epoch clears the old stats and flushes at once.
        req.node_epoch = 200;
        req.duration_since_epoch = 1;
        run(&group, &f.ctx, &req).await;
        let restarted = flushed(&f, 9).await.expect("flushed");
        assert_eq!(restarted.node_epoch, 200);
        assert_eq!(restarted.stat.node_epoch, 200);
        assert_eq!(
            f.stats.recent(NodeKey::datanode(9)).len(),
            1,
            "the old epoch was cleared"
        );

        // A stale message from the old epoch is ignored.
        req.node_epoch = 100;
        req.duration_since_epoch = 99;
        run(&group, &f.ctx, &req).await;
        let latest = f.stats.latest(NodeKey::datanode(9)).expect("cached");
        assert_eq!((latest.node_epoch, latest.duration_since_epoch), (200, 1));

        // The shutdown flush writes every node's latest stat, marked or not.
        req.node_epoch = 200;
        req.duration_since_epoch = 2;
        run(&group, &f.ctx, &req).await;
        assert_eq!(f.stats.pending_len(), 0, "not due for a flush yet");
        assert_eq!(f.stats.flush_all(&*f.ctx.kv).await.expect("flush_all"), 1);
        let last = persisted(&f.ctx, 9).await.expect("flushed");
        assert_eq!(last.stat.duration_since_epoch, 2);
    }

    #[tokio::test]
    async fn a_cache_without_flush_keeps_only_the_latest_and_marks_nothing() {
        let f = fixture();
        let stats = std::sync::Arc::new(StatsCache::without_flush(1));
        let group = HandlerGroupBuilder::with_defaults(stats.clone())
            .build()
            .expect("build");
        let regions = |stat: Option<std::sync::Arc<crate::Stat>>| -> Vec<u64> {
            stat.expect("cached")
                .region_stats
                .iter()
                .map(|r| r.region_id)
                .collect()
        };
        run(&group, &f.ctx, &request(9, Role::Datanode, &[1, 2, 3], 1)).await;
        assert_eq!(stats.pending_len(), 0, "a first epoch is not marked");
        // The one slot holds a shorter, then a longer region list.
        run(&group, &f.ctx, &request(9, Role::Datanode, &[4], 2)).await;
        assert_eq!(regions(stats.latest(NodeKey::datanode(9))), [4]);
        run(
            &group,
            &f.ctx,
            &request(9, Role::Datanode, &[5, 6, 7, 8], 3),
        )
        .await;
        let latest = stats.latest(NodeKey::datanode(9));
        assert_eq!(latest.as_ref().map(|s| s.duration_since_epoch), Some(3));
        assert_eq!(regions(latest), [5, 6, 7, 8]);
        assert_eq!(stats.recent(NodeKey::datanode(9)).len(), 1);
        assert_eq!(stats.pending_len(), 0);
        assert_eq!(stats.flush_all(&*f.ctx.kv).await.expect("flush_all"), 0);
        assert!(persisted(&f.ctx, 9).await.is_none(), "nothing written");
    }

    #[tokio::test]
    async fn a_step_down_forgets_everything_unless_nothing_was_flushed() {
        let f = fixture();
        let flushing = std::sync::Arc::new(StatsCache::new(1, 2));
        let memory_only = std::sync::Arc::new(StatsCache::without_flush(2));
        for stats in [&flushing, &memory_only] {
            let group = HandlerGroupBuilder::with_defaults(stats.clone())
                .build()
                .expect("build");
            for t in 1..=3 {
                run(&group, &f.ctx, &request(9, Role::Datanode, &[1], t)).await;
            }
            stats.clear();
            assert_eq!(stats.pending_len(), 0);
        }
        assert!(
            flushing.latest(NodeKey::datanode(9)).is_none(),
            "the next leader reads the flushed copy instead"
        );
        let kept = memory_only.recent(NodeKey::datanode(9));
        assert_eq!(
            kept.iter()
                .map(|s| s.duration_since_epoch)
                .collect::<Vec<_>>(),
            [3],
            "only the latest stands in for the flushed copy"
        );
    }
}
