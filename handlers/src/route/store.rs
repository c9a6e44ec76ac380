//! [`KvRegionRouteStore`]: routes in a [`KvBackend`](crate::KvBackend), with a
//! write-through memory table.
//!
//! Only the leader writes routes, and it reloads the table when it wins leadership, so
//! the table cannot go stale under it. A metasrv whose KV is memory anyway keeps routes in
//! the table alone ([`KvRegionRouteStore::memory_only`]).
//!
//! **Compare by meaning.** Every change is a compare-and-put of what the table holds
//! against what the backend holds. A route written by an older version is encoded
//! differently (no `epoch`), so when the bytes differ the value is read back and compared
//! as a route: same meaning, the put is retried against the stored bytes; another
//! meaning, the table takes the stored value and the change loses.
//!
//! **Tombstones.** A drop writes `{"region_id":R,"dropped_epoch":E}` in place of the
//! route, so the next `create` of R compares against it and starts at `E + 1`.

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use super::table::{Entry, RouteTable};
use super::{Holding, RegionRoute, RegionRouteStore};
use crate::error::{ConflictSnafu, CorruptValueSnafu, EncodeValueSnafu, InvalidRouteChangeSnafu};
use crate::kv::{key_text, KvBackendRef};
use crate::Result;

const ROUTE_PREFIX: &str = "__meta/route/";

/// How many times a create or delete re-reads and retries after losing a compare.
const ATTEMPTS: usize = 3;

/// A route key's value: a dropped region's tombstone, or a route. Untagged, tombstone
/// first: a route has no `dropped_epoch`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Dropped { region_id: u64, dropped_epoch: u64 },
    Route(RegionRoute),
}

/// Routes in a [`KvBackend`](crate::KvBackend), with a write-through memory table; or,
/// for a metasrv whose KV is memory anyway, in the table alone
/// ([`memory_only`](KvRegionRouteStore::memory_only)).
#[derive(Debug)]
pub struct KvRegionRouteStore {
    /// Where routes persist; `None`: only in `cache`.
    kv: Option<KvBackendRef>,
    // A synchronous lock (parking_lot): held only for table reads and writes, never across an await.
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
    /// (about 280 bytes a route as keyed JSON, against about 50). Compare-and-put and
    /// create are decided under the table's lock, as the KV would decide them.
    pub fn memory_only() -> Self {
        Self {
            kv: None,
            cache: RwLock::new(RouteTable::default()),
        }
    }

    /// Replaces the cache with every route (and tombstone) in the KV backend. Called at
    /// start and when this metasrv becomes leader. Returns how many routes were loaded.
    /// A memory-only store keeps what it has: it is its own source.
    pub async fn load(&self) -> Result<usize> {
        let Some(kv) = &self.kv else {
            return Ok(self.cache.read().len());
        };
        let mut routes = RouteTable::default();
        for kv in kv.range_prefix(ROUTE_PREFIX.as_bytes()).await? {
            let stored: Stored = serde_json::from_slice(&kv.value).context(CorruptValueSnafu {
                key: key_text(&kv.key),
            })?;
            match stored {
                Stored::Route(route) => {
                    routes.insert(route);
                }
                Stored::Dropped {
                    region_id,
                    dropped_epoch,
                } => routes.apply(region_id, Entry::Dropped(dropped_epoch)),
            }
        }
        let n = routes.len();
        *self.cache.write() = routes;
        Ok(n)
    }

    /// Writes many routes in one KV batch (bulk import, restore from backup, benchmark
    /// setup). Existing routes with the same ids are overwritten, epochs as given but
    /// never below what the epoch rule requires after the route (or tombstone) they
    /// replace, so an import of an old backup cannot hand out an epoch again.
    pub async fn put_many(&self, mut routes: Vec<RegionRoute>) -> Result<usize> {
        {
            let cache = self.cache.read();
            for route in &mut routes {
                let floor = match cache.entry(route.region_id) {
                    Entry::Route(old) => old.successor(route.leader, Vec::new()).epoch,
                    Entry::Dropped(epoch) => epoch + 1,
                    Entry::Absent => 0,
                };
                route.epoch = route.epoch.max(floor);
            }
        }
        if let Some(kv) = &self.kv {
            let mut ops = Vec::with_capacity(routes.len());
            for route in &routes {
                ops.push(crate::BatchOp::Put(crate::KeyValue {
                    key: Self::key(route.region_id).into_bytes(),
                    value: encode_route(route)?,
                }));
            }
            kv.batch(ops).await?;
        }
        let n = routes.len();
        let mut cache = self.cache.write();
        cache.reserve(n);
        for route in routes {
            cache.insert(route);
        }
        Ok(n)
    }

    /// Makes `region_id` hold `new` if it holds `expected` now; returns whether it did.
    /// Decided under the table's lock for a memory-only store, by a compare-and-put (by
    /// meaning, see the module docs) otherwise.
    async fn swap(&self, region_id: u64, expected: &Entry, new: Entry) -> Result<bool> {
        let Some(kv) = &self.kv else {
            let mut cache = self.cache.write();
            if cache.entry(region_id) != *expected {
                return Ok(false);
            }
            cache.apply(region_id, new);
            return Ok(true);
        };
        let key = Self::key(region_id);
        let Some(value) = encode(region_id, &new)? else {
            return InvalidRouteChangeSnafu {
                region_id,
                reason: "a route cannot be swapped for nothing",
            }
            .fail();
        };
        let mut expect = encode(region_id, expected)?;
        for last in [false, true] {
            match kv
                .compare_and_put(key.as_bytes(), expect.as_deref(), &value)
                .await
            {
                Ok(true) => {
                    self.cache.write().apply(region_id, new);
                    return Ok(true);
                }
                Ok(false) => {
                    let held_bytes = kv.get(key.as_bytes()).await?;
                    let held = decode(&key, held_bytes.as_deref())?;
                    if held != *expected || last {
                        self.cache.write().apply(region_id, held);
                        return Ok(false);
                    }
                    // The same value in another encoding: compare against those bytes.
                    expect = held_bytes;
                }
                Err(err) => return self.settle(kv, region_id, &new, err).await.map(|()| true),
            }
        }
        Ok(false)
    }

    /// After a write the backend failed (`err`), which may still have been applied (an
    /// etcd request that timed out): reads the key back and makes the cache what the
    /// backend holds, so memory never disagrees with what a restart or the next leader
    /// reads. `Ok` when the backend holds `wanted`, else `err`. If the read fails too,
    /// the cache is left as it was, and `err` returns.
    async fn settle(
        &self,
        kv: &KvBackendRef,
        region_id: u64,
        wanted: &Entry,
        err: crate::Error,
    ) -> Result<()> {
        let key = Self::key(region_id);
        let Ok(bytes) = kv.get(key.as_bytes()).await else {
            return Err(err);
        };
        let Ok(held) = decode(&key, bytes.as_deref()) else {
            return Err(err);
        };
        let applied = held == *wanted;
        self.cache.write().apply(region_id, held);
        if applied {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// How many regions `node_id` leads, from the per-node index (no scan).
    pub fn leading_count(&self, node_id: u64) -> usize {
        self.cache.read().leading_count(node_id)
    }

    fn key(region_id: u64) -> String {
        format!("{ROUTE_PREFIX}{region_id}")
    }
}

fn encode_route(route: &RegionRoute) -> Result<Vec<u8>> {
    serde_json::to_vec(route).context(EncodeValueSnafu {
        key: KvRegionRouteStore::key(route.region_id),
    })
}

/// The bytes `entry` is stored as; `None` for an absent key.
fn encode(region_id: u64, entry: &Entry) -> Result<Option<Vec<u8>>> {
    match entry {
        Entry::Absent => Ok(None),
        Entry::Route(route) => encode_route(route).map(Some),
        Entry::Dropped(epoch) => serde_json::to_vec(&Stored::Dropped {
            region_id,
            dropped_epoch: *epoch,
        })
        .map(Some)
        .context(EncodeValueSnafu {
            key: KvRegionRouteStore::key(region_id),
        }),
    }
}

fn decode(key: &str, bytes: Option<&[u8]>) -> Result<Entry> {
    let Some(bytes) = bytes else {
        return Ok(Entry::Absent);
    };
    let stored: Stored = serde_json::from_slice(bytes).context(CorruptValueSnafu { key })?;
    Ok(match stored {
        Stored::Route(route) => Entry::Route(route),
        Stored::Dropped { dropped_epoch, .. } => Entry::Dropped(dropped_epoch),
    })
}

#[async_trait]
impl RegionRouteStore for KvRegionRouteStore {
    async fn get(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        Ok(self.cache.read().get(region_id))
    }

    async fn list(&self) -> Result<Vec<RegionRoute>> {
        Ok(self.cache.read().list())
    }

    async fn create(&self, route: RegionRoute) -> Result<Option<RegionRoute>> {
        let region_id = route.region_id;
        for _ in 0..ATTEMPTS {
            let current = self.cache.read().entry(region_id);
            let epoch = match current {
                Entry::Route(_) => return Ok(None),
                Entry::Dropped(epoch) => epoch + 1,
                Entry::Absent => 1,
            };
            let created = RegionRoute {
                epoch,
                ..route.clone()
            };
            if self
                .swap(region_id, &current, Entry::Route(created.clone()))
                .await?
            {
                return Ok(Some(created));
            }
        }
        ConflictSnafu {
            key: Self::key(region_id),
            what: "creating the route",
        }
        .fail()
    }

    async fn put(&self, route: RegionRoute) -> Result<()> {
        if let Some(kv) = &self.kv {
            let key = Self::key(route.region_id);
            if let Err(err) = kv.put(key.as_bytes(), &encode_route(&route)?).await {
                let region_id = route.region_id;
                return self.settle(kv, region_id, &Entry::Route(route), err).await;
            }
        }
        self.cache.write().insert(route);
        Ok(())
    }

    async fn compare_and_put(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool> {
        if let Some(reason) = expected.refuses(&new) {
            return InvalidRouteChangeSnafu {
                region_id: expected.region_id,
                reason,
            }
            .fail();
        }
        self.swap(
            new.region_id,
            &Entry::Route(expected.clone()),
            Entry::Route(new),
        )
        .await
    }

    async fn delete(&self, region_id: u64) -> Result<Option<RegionRoute>> {
        for _ in 0..ATTEMPTS {
            let current = self.cache.read().entry(region_id);
            let Entry::Route(route) = &current else {
                return Ok(None);
            };
            let tombstone = Entry::Dropped(route.epoch);
            if self.swap(region_id, &current, tombstone).await? {
                return Ok(Some(route.clone()));
            }
        }
        ConflictSnafu {
            key: Self::key(region_id),
            what: "dropping the route",
        }
        .fail()
    }

    async fn led_by(&self, node_id: u64) -> Result<Vec<RegionRoute>> {
        let cache = self.cache.read();
        Ok(cache
            .led_by(node_id)
            .into_iter()
            .filter_map(|id| cache.get(id))
            .collect())
    }

    async fn leaders(&self) -> Result<Vec<u64>> {
        Ok(self.cache.read().leaders())
    }

    async fn roles_for(&self, node_id: u64, region_ids: &[u64]) -> Result<Vec<Option<Holding>>> {
        Ok(self.cache.read().roles_for(node_id, region_ids))
    }

    async fn led_count(&self, node_id: u64) -> Result<usize> {
        Ok(self.leading_count(node_id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common_proto::v1::RegionRole;

    use super::*;
    use crate::MemoryKvBackend;

    fn route(region_id: u64, leader: Option<u64>, followers: &[u64], epoch: u64) -> RegionRoute {
        RegionRoute {
            region_id,
            leader,
            followers: followers.to_vec(),
            epoch,
        }
    }

    fn led_by(region_id: u64, leader: u64) -> RegionRoute {
        route(region_id, Some(leader), &[], 1)
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
        async fn create(&self, route: RegionRoute) -> Result<Option<RegionRoute>> {
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
        ) -> Result<Vec<Option<Holding>>> {
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
        for node in [7, 8, 9] {
            assert_eq!(
                store.led_count(node).await.expect("count"),
                store.0.led_count(node).await.expect("count"),
                "node {node}"
            );
        }
        assert_eq!(store.led_count(7).await.expect("count"), 2);
        assert_eq!(store.leaders().await.expect("leaders"), [7, 8]);
        assert_eq!(
            store.0.leaders().await.expect("leaders"),
            store.leaders().await.expect("leaders")
        );
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
        let moved = led_by(1, 1).successor(Some(2), vec![]);
        assert!(store.compare_and_put(&led_by(1, 1), moved).await.is_err());
        assert!(store.put(led_by(1, 3)).await.is_err());
        assert!(store.delete(1).await.is_err());
        assert_eq!(store.list().await.expect("list"), [led_by(1, 1)]);
    }

    #[tokio::test]
    async fn a_failed_write_that_was_applied_is_read_back_and_reported_done() {
        let store = over_failing(true).await;
        assert_eq!(
            store
                .create(led_by(2, 1))
                .await
                .expect("created, read back"),
            Some(led_by(2, 1))
        );
        let moved = led_by(1, 1).successor(Some(2), vec![]);
        assert!(store
            .compare_and_put(&led_by(1, 1), moved.clone())
            .await
            .expect("swapped, read back"));
        assert_eq!(store.get(1).await.expect("get"), Some(moved.clone()));
        assert_eq!(
            store.delete(2).await.expect("deleted, read back"),
            Some(led_by(2, 1))
        );
        assert_eq!(store.list().await.expect("list"), [moved]);
    }

    #[tokio::test]
    async fn routes_survive_a_reload_and_create_refuses_duplicates() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        let store = KvRegionRouteStore::new(kv.clone());
        let asked = route(1, Some(10), &[11], 77);
        let created = store
            .create(asked.clone())
            .await
            .expect("create")
            .expect("new");
        assert_eq!(
            created,
            route(1, Some(10), &[11], 1),
            "the store sets epoch 1"
        );
        assert_eq!(store.create(asked).await.expect("create again"), None);

        let reloaded = KvRegionRouteStore::new(kv);
        assert_eq!(reloaded.load().await.expect("load"), 1);
        assert_eq!(reloaded.get(1).await.expect("get"), Some(created));
        let roles = reloaded.roles_for(11, &[1, 2]).await.expect("roles");
        let follower = Holding {
            role: RegionRole::Follower,
            epoch: 1,
        };
        assert_eq!(roles, vec![Some(follower), None]);
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
        let created = store.create(led_by(1, 10)).await.expect("create");
        assert_eq!(created, Some(led_by(1, 10)));
        assert_eq!(store.create(led_by(1, 10)).await.expect("again"), None);
        // A re-election reloads: the table is the only copy, so it must stay.
        assert_eq!(store.load().await.expect("load"), 1);
        assert_eq!(store.get(1).await.expect("get"), Some(led_by(1, 10)));
    }

    #[tokio::test]
    async fn a_region_created_again_after_a_drop_starts_above_the_dropped_epoch() {
        for store in stores() {
            store.put(route(4, Some(10), &[], 6)).await.expect("seed");
            assert_eq!(
                store.delete(4).await.expect("drop"),
                Some(route(4, Some(10), &[], 6))
            );
            assert_eq!(store.get(4).await.expect("get"), None);
            assert!(store.list().await.expect("list").is_empty());
            assert_eq!(store.delete(4).await.expect("drop again"), None);
            // The reload a new leader does keeps the tombstone.
            store.load().await.expect("load");
            let again = store.create(led_by(4, 11)).await.expect("create");
            assert_eq!(again, Some(route(4, Some(11), &[], 7)));
        }
    }

    #[tokio::test]
    async fn an_import_never_lowers_an_epoch() {
        for store in stores() {
            store.put(route(1, Some(10), &[], 5)).await.expect("seed");
            store.put(route(2, Some(10), &[], 5)).await.expect("seed");
            store.delete(2).await.expect("drop");
            let old_backup = vec![
                route(1, Some(10), &[], 1),
                route(2, Some(10), &[], 1),
                route(3, Some(10), &[], 4),
            ];
            store.put_many(old_backup).await.expect("import");
            let epochs: Vec<u64> = store
                .list()
                .await
                .expect("list")
                .iter()
                .map(|r| r.epoch)
                .collect();
            assert_eq!(epochs, [5, 6, 4], "kept, above the tombstone, as given");
        }
    }

    #[tokio::test]
    async fn a_change_that_breaks_the_epoch_rule_is_refused_and_writes_nothing() {
        for store in stores() {
            store.put(led_by(1, 10)).await.expect("seed");
            let reused = route(1, Some(11), &[], 1);
            let err = store
                .compare_and_put(&led_by(1, 10), reused)
                .await
                .expect_err("a new owner under the old epoch");
            assert!(
                matches!(err, crate::Error::InvalidRouteChange { .. }),
                "{err}"
            );
            assert_eq!(store.get(1).await.expect("get"), Some(led_by(1, 10)));
        }
    }

    /// A route an older version wrote has no `epoch` in its bytes; a compare against it
    /// is decided by meaning, not by encoding.
    #[tokio::test]
    async fn a_route_stored_by_an_older_version_is_compared_by_meaning() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        kv.put(
            b"__meta/route/1",
            br#"{"region_id":1,"leader":10,"followers":[]}"#,
        )
        .await
        .expect("seed");
        let store = KvRegionRouteStore::new(kv.clone());
        store.load().await.expect("load");
        let old = route(1, Some(10), &[], 0);
        assert_eq!(store.get(1).await.expect("get"), Some(old.clone()));
        let fenced = old.successor(None, vec![11, 10]);
        assert!(store
            .compare_and_put(&old, fenced.clone())
            .await
            .expect("cas"));
        let switched = fenced.successor(Some(11), vec![]);
        assert!(store
            .compare_and_put(&fenced, switched.clone())
            .await
            .expect("cas"));
        let reloaded = KvRegionRouteStore::new(kv);
        reloaded.load().await.expect("load");
        assert_eq!(reloaded.get(1).await.expect("get"), Some(switched));
        // A compare whose meaning differs still loses, and the table learns the truth.
        assert!(!store
            .compare_and_put(&old, old.successor(Some(12), vec![]))
            .await
            .expect("stale"));
    }

    #[tokio::test]
    async fn compare_and_put_swaps_only_the_expected_route() {
        for store in stores() {
            compare_and_put_on(store).await;
        }
    }

    async fn compare_and_put_on(store: KvRegionRouteStore) {
        let a = store
            .create(led_by(1, 10))
            .await
            .expect("create")
            .expect("new");
        let b = a.successor(None, vec![11, 10]);
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
            vec![Some(Holding {
                role: RegionRole::Follower,
                epoch: 1
            })]
        );
        assert!(
            store.led_by(10).await.expect("led").is_empty(),
            "a follower now"
        );
        assert_eq!(store.leaders().await.expect("leaders"), Vec::<u64>::new());
        let c = b.successor(Some(11), vec![]);
        assert_eq!(c.epoch, 2);
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
            async move {
                store
                    .roles_for(node, &[1, 2])
                    .await
                    .expect("roles")
                    .into_iter()
                    .map(|h| h.map(|h| h.role))
                    .collect::<Vec<_>>()
            }
        };
        store.put(route(1, Some(10), &[11], 1)).await.expect("put");
        store.put_many(vec![led_by(2, 11)]).await.expect("put_many");
        assert_eq!(roles(10).await, vec![Some(RegionRole::Leader), None]);
        assert_eq!((store.leading_count(10), store.leading_count(11)), (1, 1));
        assert_eq!(
            roles(11).await,
            vec![Some(RegionRole::Follower), Some(RegionRole::Leader)]
        );
        // Failover: region 1 moves to node 12; node 10 must lose it at once.
        store.put(route(1, Some(12), &[], 2)).await.expect("move");
        assert_eq!(roles(10).await, vec![None, None]);
        assert_eq!(roles(11).await, vec![None, Some(RegionRole::Leader)]);
        assert_eq!(roles(12).await, vec![Some(RegionRole::Leader), None]);
        assert_eq!((store.leading_count(10), store.leading_count(12)), (0, 1));
        store.delete(2).await.expect("delete");
        assert_eq!(roles(11).await, vec![None, None]);
        assert_eq!(store.leading_count(11), 0);
        // Listed as both leader and follower: the leader role wins.
        store.put(route(2, Some(13), &[13], 2)).await.expect("put");
        assert_eq!(roles(13).await, vec![None, Some(RegionRole::Leader)]);
    }
}
