//! The region-route port: which datanode leads each region, and which follow.
//!
//! Routes are durable (they live in the [`KvBackend`]) but read on every heartbeat by
//! RegionLease, so [`KvRegionRouteStore`] serves reads from a write-through memory cache.
//! Only the leader writes routes, and it reloads the cache when it wins leadership, so the
//! cache cannot go stale under it. A metasrv whose KV is memory anyway keeps routes in
//! the table alone ([`KvRegionRouteStore::memory_only`]); the table's layout is in
//! `route/table.rs`.

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

mod table;

use table::RouteTable;

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

/// Routes in a [`KvBackend`](crate::KvBackend), with a write-through memory table; or,
/// for a metasrv whose KV is memory anyway, in the table alone
/// ([`memory_only`](KvRegionRouteStore::memory_only)).
#[derive(Debug)]
pub struct KvRegionRouteStore {
    /// Where routes persist; `None`: only in `cache`.
    kv: Option<KvBackendRef>,
    // A std RwLock: held only for table reads and writes, never across an await.
    cache: RwLock<RouteTable>,
}

impl KvRegionRouteStore {
    /// A store over `kv` with an empty cache; call [`load`](Self::load) to fill it from
    /// what `kv` already holds.
    pub fn new(kv: KvBackendRef) -> Self {
        Self {
            kv: Some(kv),
            cache: RwLock::new(RouteTable::default()),
        }
    }

    /// A store that keeps routes only in its memory table. For a standalone metasrv
    /// with no data directory: its KV backend is memory too, so a copy there would
    /// survive nothing the table does not, and would cost more than the table itself
    /// (about 280 bytes a route as keyed JSON, against about 40). Compare-and-put and
    /// create are decided under the table's lock, as the KV would decide them.
    pub fn memory_only() -> Self {
        Self {
            kv: None,
            cache: RwLock::new(RouteTable::default()),
        }
    }

    /// Replaces the cache with every route in the KV backend. Called at start and when
    /// this metasrv becomes leader. Returns how many routes were loaded. A memory-only
    /// store keeps what it has: it is its own source.
    pub async fn load(&self) -> Result<usize> {
        let Some(kv) = &self.kv else {
            return Ok(self.cache_read().len());
        };
        let mut routes = RouteTable::default();
        for kv in kv.range_prefix(ROUTE_PREFIX.as_bytes()).await? {
            let route: RegionRoute =
                serde_json::from_slice(&kv.value).context(CorruptValueSnafu {
                    key: key_text(&kv.key),
                })?;
            routes.insert(route);
        }
        let n = routes.len();
        *self.cache_write() = routes;
        Ok(n)
    }

    /// Writes many routes in one KV batch (bulk import, restore from backup, benchmark
    /// setup). Existing routes with the same ids are overwritten.
    pub async fn put_many(&self, routes: Vec<RegionRoute>) -> Result<usize> {
        if let Some(kv) = &self.kv {
            let mut ops = Vec::with_capacity(routes.len());
            for route in &routes {
                ops.push(crate::BatchOp::Put(crate::KeyValue {
                    key: Self::key(route.region_id).into_bytes(),
                    value: Self::encode(route)?,
                }));
            }
            kv.batch(ops).await?;
        }
        let n = routes.len();
        let mut cache = self.cache_write();
        cache.reserve(n);
        for route in routes {
            cache.insert(route);
        }
        Ok(n)
    }

    /// After a write the backend failed (`err`), which may still have been applied (an
    /// etcd request that timed out): reads the route back and makes the cache what the
    /// backend holds, so memory never disagrees with what a restart or the next leader
    /// reads. `Ok` when the backend holds what was written (`wanted`; `None`: deleted),
    /// else `err`. If the read fails too, the cache is left as it was, and `err` returns.
    async fn settle(
        &self,
        kv: &KvBackendRef,
        region_id: u64,
        wanted: Option<&RegionRoute>,
        err: crate::Error,
    ) -> Result<()> {
        let Ok(bytes) = kv.get(Self::key(region_id).as_bytes()).await else {
            return Err(err);
        };
        let held = match bytes {
            Some(b) => match serde_json::from_slice::<RegionRoute>(&b) {
                Ok(route) => Some(route),
                Err(_) => return Err(err),
            },
            None => None,
        };
        let applied = held.as_ref() == wanted;
        let mut cache = self.cache_write();
        match held {
            Some(route) => {
                cache.insert(route);
            }
            None => {
                cache.remove(region_id);
            }
        }
        if applied {
            Ok(())
        } else {
            Err(err)
        }
    }

    fn key(region_id: u64) -> String {
        format!("{ROUTE_PREFIX}{region_id}")
    }

    fn encode(route: &RegionRoute) -> Result<Vec<u8>> {
        serde_json::to_vec(route).context(EncodeValueSnafu {
            key: Self::key(route.region_id),
        })
    }

    fn cache_read(&self) -> parking_lot::RwLockReadGuard<'_, RouteTable> {
        self.cache.read()
    }

    fn cache_write(&self) -> parking_lot::RwLockWriteGuard<'_, RouteTable> {
        self.cache.write()
    }
}

#[async_trait]
impl RegionRouteStore for KvRegionRouteStore {
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        Ok(self.cache_read().get(region_id))
    }

    async fn list(&self) -> Result<Vec<RegionRoute>> {
        Ok(self.cache_read().list())
    }

    async fn create(&self, route: RegionRoute) -> Result<bool> {
        let Some(kv) = &self.kv else {
            let mut cache = self.cache_write();
            if cache.get(route.region_id).is_some() {
                return Ok(false);
            }
            cache.insert(route);
            return Ok(true);
        };
        let key = Self::key(route.region_id);
        let created = match kv
            .compare_and_put(key.as_bytes(), None, &Self::encode(&route)?)
            .await
        {
            Ok(created) => created,
            Err(err) => {
                return self
                    .settle(kv, route.region_id, Some(&route), err)
                    .await
                    .map(|_| true)
            }
        };
        if created {
            self.cache_write().insert(route);
        }
        Ok(created)
    }

    async fn put(&self, route: RegionRoute) -> Result<()> {
        if let Some(kv) = &self.kv {
            let key = Self::key(route.region_id);
            if let Err(err) = kv.put(key.as_bytes(), &Self::encode(&route)?).await {
                return self.settle(kv, route.region_id, Some(&route), err).await;
            }
        }
        self.cache_write().insert(route);
        Ok(())
    }

    async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool> {
        let Some(kv) = &self.kv else {
            let mut cache = self.cache_write();
            if cache.get(new.region_id).as_ref() != Some(expected) {
                return Ok(false);
            }
            cache.insert(new);
            return Ok(true);
        };
        let key = Self::key(new.region_id);
        let swapped = match kv
            .compare_and_put(
                key.as_bytes(),
                Some(&Self::encode(expected)?),
                &Self::encode(&new)?,
            )
            .await
        {
            Ok(swapped) => swapped,
            Err(err) => {
                return self
                    .settle(kv, new.region_id, Some(&new), err)
                    .await
                    .map(|_| true)
            }
        };
        if swapped {
            self.cache_write().insert(new);
        }
        Ok(swapped)
    }

    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        if let Some(kv) = &self.kv {
            if let Err(err) = kv.delete(Self::key(region_id).as_bytes()).await {
                let old = self.cache_read().get(region_id);
                return self.settle(kv, region_id, None, err).await.map(|_| old);
            }
        }
        Ok(self.cache_write().remove(region_id))
    }

    async fn led_by(&self, node_id: u64) -> Result<Vec<RegionRoute>> {
        let cache = self.cache_read();
        Ok(cache
            .led_by(node_id)
            .into_iter()
            .filter_map(|id| cache.get(id))
            .collect())
    }

    async fn leaders(&self) -> Result<Vec<u64>> {
        Ok(self.cache_read().leaders())
    }

    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<RegionRole>>> {
        Ok(self.cache_read().roles_for(node_id, region_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryKvBackend;

    #[test]
    fn a_route_names_each_nodes_role() {
        let r = RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![2],
        };
        assert_eq!(r.role_of(1), Some(RegionRole::Leader));
        assert_eq!(r.role_of(2), Some(RegionRole::Follower));
        assert_eq!(r.role_of(3), None);
    }

    /// A store with only the required methods: the trait's own `led_by` and `leaders`.
    #[derive(Debug)]
    struct RequiredOnly(KvRegionRouteStore);

    #[async_trait]
    impl RegionRouteStore for RequiredOnly {
        async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>> {
            self.0.get(region_id).await
        }
        async fn list(&self) -> Result<Vec<RegionRoute>> {
            self.0.list().await
        }
        async fn create(&self, route: RegionRoute) -> Result<bool> {
            self.0.create(route).await
        }
        async fn put(&self, route: RegionRoute) -> Result<()> {
            self.0.put(route).await
        }
        async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool> {
            self.0.compare_and_put(expected, new).await
        }
        async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>> {
            self.0.delete(region_id).await
        }
        async fn roles_for(
            &self,
            node_id: u64,
            region_ids: &[u64],
        ) -> Result<Vec<Option<RegionRole>>> {
            self.0.roles_for(node_id, region_ids).await
        }
    }

    #[tokio::test]
    async fn the_default_led_by_and_leaders_answer_as_the_indexed_ones() {
        let store = RequiredOnly(KvRegionRouteStore::memory_only());
        for (region, leader) in [(1, 7), (2, 8), (3, 7)] {
            store.put(led_by(region, leader)).await.expect("put");
        }
        let led: Vec<u64> = store
            .led_by(7)
            .await
            .expect("led_by")
            .iter()
            .map(|r| r.region_id)
            .collect();
        assert_eq!(led, [1, 3]);
        assert_eq!(store.leaders().await.expect("leaders"), [7, 8]);
        assert_eq!(
            store.0.leaders().await.expect("leaders"),
            store.leaders().await.expect("leaders")
        );
    }

    fn led_by(region_id: u64, leader: u64) -> RegionRoute {
        RegionRoute {
            region_id,
            leader: Some(leader),
            followers: vec![],
        }
    }

    /// A store over a backend that holds region 1 led by node 1, whose writes fail from
    /// now on (after being applied, if `applied`).
    async fn over_failing(applied: bool) -> KvRegionRouteStore {
        let kv = Arc::new(crate::FaultyKv::new());
        let store = KvRegionRouteStore::new(kv.clone());
        store.put(led_by(1, 1)).await.expect("seed");
        kv.fail_writes(applied);
        store
    }

    #[tokio::test]
    async fn a_failed_write_that_was_not_applied_leaves_memory_unchanged() {
        let store = over_failing(false).await;
        assert!(store.create(led_by(2, 1)).await.is_err());
        assert!(store
            .compare_and_put(&led_by(1, 1), led_by(1, 2))
            .await
            .is_err());
        assert!(store.put(led_by(1, 3)).await.is_err());
        assert!(store.delete(1).await.is_err());
        assert_eq!(store.list().await.expect("list"), [led_by(1, 1)]);
    }

    #[tokio::test]
    async fn a_failed_write_that_was_applied_is_read_back_and_reported_done() {
        let store = over_failing(true).await;
        assert!(store
            .create(led_by(2, 1))
            .await
            .expect("created, read back"));
        assert!(store
            .compare_and_put(&led_by(1, 1), led_by(1, 2))
            .await
            .expect("swapped, read back"));
        assert_eq!(store.get(1).await.expect("get"), Some(led_by(1, 2)));
        assert_eq!(
            store.delete(2).await.expect("deleted, read back"),
            Some(led_by(2, 1))
        );
        assert_eq!(store.list().await.expect("list"), [led_by(1, 2)]);
    }

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

    /// One store of each kind: their behaviour must not differ.
    fn stores() -> [KvRegionRouteStore; 2] {
        [
            KvRegionRouteStore::new(Arc::new(MemoryKvBackend::new())),
            KvRegionRouteStore::memory_only(),
        ]
    }

    #[tokio::test]
    async fn a_memory_only_store_keeps_its_routes_across_a_reload_and_refuses_duplicates() {
        let store = KvRegionRouteStore::memory_only();
        let route = RegionRoute {
            region_id: 1,
            leader: Some(10),
            followers: vec![],
        };
        assert!(store.create(route.clone()).await.expect("create"));
        assert!(!store.create(route.clone()).await.expect("create again"));
        // A re-election reloads: the table is the only copy, so it must stay.
        assert_eq!(store.load().await.expect("load"), 1);
        assert_eq!(store.get(1).await.expect("get"), Some(route));
    }

    #[tokio::test]
    async fn compare_and_put_swaps_only_the_expected_route() {
        for store in stores() {
            compare_and_put_on(store).await;
        }
    }

    async fn compare_and_put_on(store: KvRegionRouteStore) {
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
        for store in stores() {
            node_index_on(store).await;
        }
    }

    async fn node_index_on(store: KvRegionRouteStore) {
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
