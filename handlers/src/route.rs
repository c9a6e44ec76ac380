//! The region-route port: which datanode leads each region, and which follow.
//!
//! Routes are durable (they live in the [`KvBackend`]) but read on every heartbeat by
//! RegionLease, so [`KvRegionRouteStore`] serves reads from a write-through memory cache.
//! Only the leader writes routes, and it reloads the cache when it wins leadership, so the
//! cache cannot go stale under it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{CorruptValueSnafu, EncodeValueSnafu};
use crate::kv::{key_text, KvBackendRef};
use crate::Result;

/// Where one region lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRoute {
    /// The region id.
    pub region_id: u64,
    /// The datanode that leads it (takes writes), if any.
    pub leader: Option<u64>,
    /// Datanodes that hold readonly followers.
    #[serde(default)]
    pub followers: Vec<u64>,
}

impl RegionRoute {
    /// The role `node_id` plays for this region, or `None` if it does not own it.
    pub fn role_of(&self, node_id: u64) -> Option<RegionRole> {
        if self.leader == Some(node_id) {
            Some(RegionRole::Leader)
        } else if self.followers.contains(&node_id) {
            Some(RegionRole::Follower)
        } else {
            None
        }
    }
}

/// Route storage as the handlers and the admin API see it.
#[async_trait]
pub trait RegionRouteStore: Send + Sync + Debug + 'static {
    /// One route.
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>>;

    /// Every route, by region id.
    async fn list(&self) -> Result<Vec<RegionRoute>>;

    /// Creates a route; returns false (and writes nothing) if the region already has one.
    async fn create(&self, route: RegionRoute) -> Result<bool>;

    /// Writes a route unconditionally (failover, migration).
    async fn put(&self, route: RegionRoute) -> Result<()>;

    /// Deletes a route, returning it.
    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>>;

    /// For each id, the role `node_id` has for it (or `None`). The hot-path call: one
    /// lookup for a whole heartbeat.
    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<RegionRole>>>;
}

/// Shared route store handle.
pub type RegionRouteStoreRef = Arc<dyn RegionRouteStore>;

const ROUTE_PREFIX: &str = "__meta/route/";

/// Routes in a [`KvBackend`](crate::KvBackend), with a write-through memory cache.
#[derive(Debug)]
pub struct KvRegionRouteStore {
    kv: KvBackendRef,
    // A std RwLock: held only for map reads and writes, never across an await.
    cache: RwLock<HashMap<u64, RegionRoute>>,
}

impl KvRegionRouteStore {
    /// A store over `kv` with an empty cache; call [`load`](Self::load) to fill it from
    /// what `kv` already holds.
    pub fn new(kv: KvBackendRef) -> Self {
        Self {
            kv,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the cache with every route in the KV backend. Called at start and when
    /// this metasrv becomes leader. Returns how many routes were loaded.
    pub async fn load(&self) -> Result<usize> {
        let mut routes = HashMap::new();
        for kv in self.kv.range_prefix(ROUTE_PREFIX.as_bytes()).await? {
            let route: RegionRoute =
                serde_json::from_slice(&kv.value).context(CorruptValueSnafu {
                    key: key_text(&kv.key),
                })?;
            routes.insert(route.region_id, route);
        }
        let n = routes.len();
        *self.cache_write() = routes;
        Ok(n)
    }

    /// Writes many routes in one KV batch (bulk import, restore from backup, benchmark
    /// setup). Existing routes with the same ids are overwritten.
    pub async fn put_many(&self, routes: Vec<RegionRoute>) -> Result<usize> {
        let mut ops = Vec::with_capacity(routes.len());
        for route in &routes {
            ops.push(crate::BatchOp::Put(crate::KeyValue {
                key: Self::key(route.region_id).into_bytes(),
                value: Self::encode(route)?,
            }));
        }
        self.kv.batch(ops).await?;
        let n = routes.len();
        let mut cache = self.cache_write();
        for route in routes {
            cache.insert(route.region_id, route);
        }
        Ok(n)
    }

    fn key(region_id: u64) -> String {
        format!("{ROUTE_PREFIX}{region_id}")
    }

    fn encode(route: &RegionRoute) -> Result<Vec<u8>> {
        serde_json::to_vec(route).context(EncodeValueSnafu {
            key: Self::key(route.region_id),
        })
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, RegionRoute>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, RegionRoute>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RegionRouteStore for KvRegionRouteStore {
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        Ok(self.cache_read().get(&region_id).cloned())
    }

    async fn list(&self) -> Result<Vec<RegionRoute>> {
        let mut all: Vec<RegionRoute> = self.cache_read().values().cloned().collect();
        all.sort_by_key(|r| r.region_id);
        Ok(all)
    }

    async fn create(&self, route: RegionRoute) -> Result<bool> {
        let key = Self::key(route.region_id);
        let created = self
            .kv
            .compare_and_put(key.as_bytes(), None, &Self::encode(&route)?)
            .await?;
        if created {
            self.cache_write().insert(route.region_id, route);
        }
        Ok(created)
    }

    async fn put(&self, route: RegionRoute) -> Result<()> {
        let key = Self::key(route.region_id);
        self.kv.put(key.as_bytes(), &Self::encode(&route)?).await?;
        self.cache_write().insert(route.region_id, route);
        Ok(())
    }

    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        self.kv.delete(Self::key(region_id).as_bytes()).await?;
        Ok(self.cache_write().remove(&region_id))
    }

    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<RegionRole>>> {
        let cache = self.cache_read();
        Ok(region_ids
            .iter()
            .map(|id| cache.get(id).and_then(|r| r.role_of(node_id)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryKvBackend;

    #[tokio::test]
    async fn routes_survive_a_reload_and_create_refuses_duplicates() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        let store = KvRegionRouteStore::new(kv.clone());
        let route = RegionRoute {
            region_id: 1,
            leader: Some(10),
            followers: vec![11],
        };
        assert!(store.create(route.clone()).await.expect("create"));
        assert!(!store.create(route.clone()).await.expect("create again"));

        let reloaded = KvRegionRouteStore::new(kv);
        assert_eq!(reloaded.load().await.expect("load"), 1);
        assert_eq!(reloaded.get(1).await.expect("get"), Some(route));
        let roles = reloaded.roles_for(11, &[1, 2]).await.expect("roles");
        assert_eq!(roles, vec![Some(RegionRole::Follower), None]);
    }
}
