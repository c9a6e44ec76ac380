//! The region-route port: which datanode leads each region, and which follow.
//!
//! Routes are durable (they live in the [`KvBackend`]) but read on every heartbeat by
//! RegionLease, so [`KvRegionRouteStore`] serves reads from a write-through memory cache.
//! Only the leader writes routes, and it reloads the cache when it wins leadership, so the
//! cache cannot go stale under it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use parking_lot::RwLock;
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

    /// Writes a route unconditionally (bulk import, tests).
    async fn put(&self, route: RegionRoute) -> Result<()>;

    /// Replaces `expected` with `new` only if the stored route is still `expected`;
    /// returns whether it did. Every step of a region migration moves the route this way,
    /// so two movers (or a stale leader) can never both win.
    async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool>;

    /// Deletes a route, returning it.
    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>>;

    /// The routes `node_id` leads. Stores with a per-node index answer without a scan.
    async fn led_by(&self, node_id: u64) -> Result<Vec<RegionRoute>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.leader == Some(node_id))
            .collect())
    }

    /// Every node that leads at least one region.
    async fn leaders(&self) -> Result<Vec<u64>> {
        let mut ids: Vec<u64> = self.list().await?.iter().filter_map(|r| r.leader).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// For each id, the role `node_id` has for it (or `None`). The hot-path call: one
    /// lookup for a whole heartbeat.
    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<RegionRole>>>;
}

/// Shared route store handle.
pub type RegionRouteStoreRef = Arc<dyn RegionRouteStore>;

const ROUTE_PREFIX: &str = "__meta/route/";

/// The memory cache: routes by region, and the same routes indexed by node, kept in
/// step under one lock. The index makes a heartbeat's lookups hit one small per-node map
/// instead of the whole table (a cache miss per region at 100,000 routes).
#[derive(Debug, Default)]
struct RouteCache {
    by_region: HashMap<u64, RegionRoute>,
    by_node: HashMap<u64, HashMap<u64, RegionRole>>,
}

impl RouteCache {
    fn insert(&mut self, route: RegionRoute) {
        self.remove(route.region_id);
        let id = route.region_id;
        for (node, role) in route
            .leader
            .map(|l| (l, RegionRole::Leader))
            .into_iter()
            .chain(route.followers.iter().map(|&f| (f, RegionRole::Follower)))
        {
            // A node listed as both leader and follower is the leader.
            self.by_node
                .entry(node)
                .or_default()
                .entry(id)
                .or_insert(role);
        }
        self.by_region.insert(id, route);
    }

    fn remove(&mut self, region_id: u64) -> Option<RegionRoute> {
        let old = self.by_region.remove(&region_id)?;
        for node in old.leader.iter().chain(old.followers.iter()) {
            if let Some(regions) = self.by_node.get_mut(node) {
                regions.remove(&region_id);
                if regions.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        Some(old)
    }
}

/// Routes in a [`KvBackend`](crate::KvBackend), with a write-through memory cache.
#[derive(Debug)]
pub struct KvRegionRouteStore {
    kv: KvBackendRef,
    // A std RwLock: held only for map reads and writes, never across an await.
    cache: RwLock<RouteCache>,
}

impl KvRegionRouteStore {
    /// A store over `kv` with an empty cache; call [`load`](Self::load) to fill it from
    /// what `kv` already holds.
    pub fn new(kv: KvBackendRef) -> Self {
        Self {
            kv,
            cache: RwLock::new(RouteCache::default()),
        }
    }

    /// Replaces the cache with every route in the KV backend. Called at start and when
    /// this metasrv becomes leader. Returns how many routes were loaded.
    pub async fn load(&self) -> Result<usize> {
        let mut routes = RouteCache::default();
        for kv in self.kv.range_prefix(ROUTE_PREFIX.as_bytes()).await? {
            let route: RegionRoute =
                serde_json::from_slice(&kv.value).context(CorruptValueSnafu {
                    key: key_text(&kv.key),
                })?;
            routes.insert(route);
        }
        let n = routes.by_region.len();
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
            cache.insert(route);
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

    fn cache_read(&self) -> parking_lot::RwLockReadGuard<'_, RouteCache> {
        self.cache.read()
    }

    fn cache_write(&self) -> parking_lot::RwLockWriteGuard<'_, RouteCache> {
        self.cache.write()
    }
}

#[async_trait]
impl RegionRouteStore for KvRegionRouteStore {
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        Ok(self.cache_read().by_region.get(&region_id).cloned())
    }

    async fn list(&self) -> Result<Vec<RegionRoute>> {
        let mut all: Vec<RegionRoute> = self.cache_read().by_region.values().cloned().collect();
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
            self.cache_write().insert(route);
        }
        Ok(created)
    }

    async fn put(&self, route: RegionRoute) -> Result<()> {
        let key = Self::key(route.region_id);
        self.kv.put(key.as_bytes(), &Self::encode(&route)?).await?;
        self.cache_write().insert(route);
        Ok(())
    }

    async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool> {
        let key = Self::key(new.region_id);
        let swapped = self
            .kv
            .compare_and_put(
                key.as_bytes(),
                Some(&Self::encode(expected)?),
                &Self::encode(&new)?,
            )
            .await?;
        if swapped {
            self.cache_write().insert(new);
        }
        Ok(swapped)
    }

    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        self.kv.delete(Self::key(region_id).as_bytes()).await?;
        Ok(self.cache_write().remove(region_id))
    }

    async fn led_by(&self, node_id: u64) -> Result<Vec<RegionRoute>> {
        let cache = self.cache_read();
        let Some(owned) = cache.by_node.get(&node_id) else {
            return Ok(Vec::new());
        };
        let mut led: Vec<RegionRoute> = owned
            .iter()
            .filter(|(_, role)| **role == RegionRole::Leader)
            .filter_map(|(id, _)| cache.by_region.get(id).cloned())
            .collect();
        led.sort_by_key(|r| r.region_id);
        Ok(led)
    }

    async fn leaders(&self) -> Result<Vec<u64>> {
        let cache = self.cache_read();
        let mut ids: Vec<u64> = cache
            .by_node
            .iter()
            .filter(|(_, owned)| owned.values().any(|r| *r == RegionRole::Leader))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<RegionRole>>> {
        let cache = self.cache_read();
        let Some(owned) = cache.by_node.get(&node_id) else {
            return Ok(vec![None; region_ids.len()]);
        };
        Ok(region_ids.iter().map(|id| owned.get(id).copied()).collect())
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

    #[tokio::test]
    async fn compare_and_put_swaps_only_the_expected_route() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        let store = KvRegionRouteStore::new(kv);
        let a = RegionRoute {
            region_id: 1,
            leader: Some(10),
            followers: vec![],
        };
        store.create(a.clone()).await.expect("create");
        let b = RegionRoute {
            leader: None,
            followers: vec![11, 10],
            ..a.clone()
        };
        assert!(store.compare_and_put(&a, b.clone()).await.expect("cas"));
        assert!(
            !store
                .compare_and_put(&a, a.clone())
                .await
                .expect("stale cas"),
            "a stale expectation loses"
        );
        assert_eq!(store.get(1).await.expect("get"), Some(b.clone()));
        assert_eq!(
            store.roles_for(10, &[1]).await.expect("roles"),
            vec![Some(RegionRole::Follower)]
        );
        assert!(
            store.led_by(10).await.expect("led").is_empty(),
            "a follower now"
        );
        assert_eq!(store.leaders().await.expect("leaders"), Vec::<u64>::new());
        let c = RegionRoute {
            leader: Some(11),
            followers: vec![],
            ..b.clone()
        };
        assert!(store.compare_and_put(&b, c.clone()).await.expect("cas"));
        assert_eq!(store.led_by(11).await.expect("led"), vec![c]);
        assert_eq!(store.leaders().await.expect("leaders"), vec![11]);
    }

    #[tokio::test]
    async fn the_node_index_follows_every_route_change() {
        let store = KvRegionRouteStore::new(Arc::new(MemoryKvBackend::new()));
        let roles = |node| {
            let store = &store;
            async move { store.roles_for(node, &[1, 2]).await.expect("roles") }
        };
        store
            .put(RegionRoute {
                region_id: 1,
                leader: Some(10),
                followers: vec![11],
            })
            .await
            .expect("put");
        store
            .put_many(vec![RegionRoute {
                region_id: 2,
                leader: Some(11),
                followers: vec![],
            }])
            .await
            .expect("put_many");
        assert_eq!(roles(10).await, vec![Some(RegionRole::Leader), None]);
        assert_eq!(
            roles(11).await,
            vec![Some(RegionRole::Follower), Some(RegionRole::Leader)]
        );
        // Failover: region 1 moves to node 12; node 10 must lose it at once.
        store
            .put(RegionRoute {
                region_id: 1,
                leader: Some(12),
                followers: vec![],
            })
            .await
            .expect("move");
        assert_eq!(roles(10).await, vec![None, None]);
        assert_eq!(roles(11).await, vec![None, Some(RegionRole::Leader)]);
        assert_eq!(roles(12).await, vec![Some(RegionRole::Leader), None]);
        store.delete(2).await.expect("delete");
        assert_eq!(roles(11).await, vec![None, None]);
        // Listed as both leader and follower: the leader role wins.
        store
            .put(RegionRoute {
                region_id: 2,
                leader: Some(13),
                followers: vec![13],
            })
            .await
            .expect("put");
        assert_eq!(roles(13).await, vec![None, Some(RegionRole::Leader)]);
    }
}
