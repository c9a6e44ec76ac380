//! [`MemoryRegionEngine`]: a small region engine that keeps rows per region, and really
//! refuses writes to readonly regions. The demo and the tests run on it.
//!
//! Every write checks the lease at the write, through [`RegionLeases`]: before it is
//! applied and again before it is acknowledged (fail closed; see `lease`).
//!
//! With a data directory it is durable enough to survive a restart: a manifest
//! (`regions.json`) lists the open regions and their roles, and each region's rows are a
//! fenced log (`region_log`) replayed on open. After a restart every region comes back
//! **readonly**: no lease survives a restart. A region whose log cannot be read is kept
//! aside as unavailable, with the reason (in `/status` and the heartbeat); the node starts
//! and serves its other regions.
//!
//! With a **shared directory** (standing in for the object storage GreptimeDB uses), the
//! region logs live there instead, so any datanode can open any region's data: a write is
//! appended and synced there before it is acknowledged, and a new owner replays every
//! row the old owner acknowledged. Such regions are reported as on shared storage, and
//! only they fail over. A follower that is upgraded replays the log again first, to catch
//! up with what the old leader wrote while it followed.
//!
//! **Fencing.** The first write under a region epoch takes the log over under that epoch
//! (sealing the previous owner's segment) and replays exactly what it sealed; every write
//! goes to the segment of the ticket's epoch. An old owner's late append is never
//! replayed, and an open under an older epoch than the log has seen is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use parking_lot::RwLock;
use snafu::ResultExt;
use tracing::{error, info};

use crate::engine::{RegionEngine, RegionInfo};
use crate::error::{
    CorruptSnafu, FencedSnafu, RegionFollowerSnafu, RegionNotFoundSnafu, Result, StorageSnafu,
    UnavailableSnafu,
};
use crate::lease::RegionLeases;
use crate::region_log::{LogWriter, RegionLog, Replay};

#[derive(Debug)]
struct Region {
    role: RegionRole,
    rows: BTreeMap<String, String>,
    bytes: u64,
    reads: u64,
    writes: u64,
    /// The newest region epoch given for it (instructions) or written under.
    epoch: u64,
    /// The log segment this node appends to, under its epoch; taken on the first write
    /// under a new epoch, dropped on a downgrade.
    writer: Option<LogWriter>,
    /// Rows a stale owner appended after a seal, seen (and ignored) at the last replay.
    stale_rows: u64,
}

impl Region {
    fn new(role: RegionRole, epoch: u64) -> Self {
        Region {
            role,
            rows: BTreeMap::new(),
            bytes: 0,
            reads: 0,
            writes: 0,
            epoch,
            writer: None,
            stale_rows: 0,
        }
    }

    fn info(&self, region_id: u64, shared_storage: bool) -> RegionInfo {
        RegionInfo {
            region_id,
            role: self.role,
            rows: self.rows.len() as u64,
            shared_storage,
            bytes: self.bytes,
            reads: self.reads,
            writes: self.writes,
            epoch: self.epoch,
            unavailable: None,
        }
    }

    /// Takes the rows as a replay found them.
    fn take(&mut self, replay: Replay) {
        self.rows = replay.rows;
        self.bytes = replay.bytes;
        self.stale_rows = replay.stale_rows;
    }
}

/// A region listed in the manifest whose storage could not be read at start.
#[derive(Debug, Clone)]
struct Unreadable {
    role: RegionRole,
    reason: String,
}

/// An in-memory region engine, optionally backed by a data directory.
#[derive(Debug)]
pub struct MemoryRegionEngine {
    dir: Option<PathBuf>,
    /// Where region logs live when they are shared between datanodes.
    shared: Option<PathBuf>,
    /// The deadlines every write is checked against; shared with the keeper.
    leases: Arc<RegionLeases>,
    // A synchronous lock (parking_lot): no await happens while it is held.
    regions: RwLock<HashMap<u64, Region>>,
    /// Regions whose storage could not be read; always locked after `regions`.
    unreadable: parking_lot::Mutex<BTreeMap<u64, Unreadable>>,
    /// Testing only: a sleep between a write's lease check and its append.
    append_pause: Option<std::time::Duration>,
    /// This node's name in the logs it takes over (see `region_log`).
    writer: String,
}

fn role_name(role: RegionRole) -> &'static str {
    role.label()
}

fn role_from(name: &str) -> RegionRole {
    match name {
        "leader" => RegionRole::Leader,
        _ => RegionRole::Follower,
    }
}

impl MemoryRegionEngine {
    /// A purely in-memory engine whose writes are checked against `leases`.
    pub fn new(leases: Arc<RegionLeases>) -> Self {
        Self {
            dir: None,
            shared: None,
            leases,
            regions: RwLock::default(),
            unreadable: Default::default(),
            append_pause: None,
            writer: String::new(),
        }
    }

    /// Names this node in the region logs it takes over: stable across restarts and
    /// distinct per node (the demo uses `datanode-<id>`), so a log refuses another node
    /// under the same epoch. Unset, every engine is the same writer.
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// Testing only: every write sleeps `pause` after its lease check and before its
    /// append, so a test can freeze the process with a write inside the write path (the
    /// paused-writer case the storage fence exists for).
    pub fn with_append_pause(mut self, pause: Option<std::time::Duration>) -> Self {
        self.append_pause = pause;
        self
    }

    /// An engine persisted under `dir`; reopens the regions listed there, readonly.
    pub fn open(dir: &Path, leases: Arc<RegionLeases>) -> Result<Self> {
        Self::open_with(dir, None, leases)
    }

    /// An engine whose manifest is under `dir` and whose region logs are under `shared`
    /// when given (created if missing), which every datanode of the cluster can open:
    /// its regions can fail over. Reopens the regions the manifest lists, readonly.
    pub fn open_with(dir: &Path, shared: Option<&Path>, leases: Arc<RegionLeases>) -> Result<Self> {
        for d in std::iter::once(dir).chain(shared) {
            std::fs::create_dir_all(d).context(StorageSnafu {
                path: d.display().to_string(),
            })?;
        }
        let engine = Self {
            dir: Some(dir.to_path_buf()),
            shared: shared.map(Path::to_path_buf),
            leases,
            regions: RwLock::default(),
            unreadable: Default::default(),
            append_pause: None,
            writer: String::new(),
        };
        let manifest = engine.manifest_path();
        let listed: BTreeMap<u64, String> = match std::fs::read(&manifest) {
            Ok(bytes) => serde_json::from_slice(&bytes).context(CorruptSnafu {
                path: manifest.display().to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(e).context(StorageSnafu {
                    path: manifest.display().to_string(),
                })
            }
        };
        for (region_id, role) in listed {
            let role = role_from(&role);
            match engine.load_region(region_id, role, 0) {
                Ok(region) => {
                    info!(
                        region_id,
                        rows = region.rows.len(),
                        "region reopened readonly"
                    );
                    engine.write_lock().insert(region_id, region);
                }
                Err(err) => {
                    error!(
                        region_id,
                        error = %err,
                        "region storage unreadable; the region is unavailable, the others are served"
                    );
                    let reason = err.to_string();
                    engine
                        .unreadable
                        .lock()
                        .insert(region_id, Unreadable { role, reason });
                }
            }
        }
        Ok(engine)
    }

    fn write_lock(&self) -> parking_lot::RwLockWriteGuard<'_, HashMap<u64, Region>> {
        self.regions.write()
    }

    fn read_lock(&self) -> parking_lot::RwLockReadGuard<'_, HashMap<u64, Region>> {
        self.regions.read()
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir
            .as_deref()
            .unwrap_or(Path::new("."))
            .join("regions.json")
    }

    fn log(&self, region_id: u64) -> Option<RegionLog> {
        self.shared
            .as_ref()
            .or(self.dir.as_ref())
            .map(|root| RegionLog::new(root, region_id, &self.writer))
    }

    /// Reads a region's rows from its log. Opening as leader under an epoch older than
    /// the log has seen is refused: the instruction is stale.
    fn load_region(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<Region> {
        let mut region = Region::new(role, epoch);
        let Some(log) = self.log(region_id) else {
            return Ok(region);
        };
        let replay = log.replay()?;
        if role == RegionRole::Leader && epoch > 0 && replay.epoch > epoch {
            return FencedSnafu {
                region_id,
                epoch,
                storage_epoch: replay.epoch,
            }
            .fail();
        }
        region.take(replay);
        Ok(region)
    }

    fn save_manifest(&self, regions: &HashMap<u64, Region>) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let path = self.manifest_path();
        let unreadable = self.unreadable.lock();
        let listed: BTreeMap<u64, &str> = regions
            .iter()
            .map(|(id, r)| (*id, role_name(r.role)))
            .chain(unreadable.iter().map(|(id, u)| (*id, role_name(u.role))))
            .collect();
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&listed).context(CorruptSnafu {
            path: path.display().to_string(),
        })?;
        std::fs::write(&tmp, bytes).context(StorageSnafu {
            path: tmp.display().to_string(),
        })?;
        std::fs::rename(&tmp, &path).context(StorageSnafu {
            path: path.display().to_string(),
        })
    }

    /// Writes a row. Refused with a clear error when the region is a follower or its
    /// lease is not live *now*; a write whose lease lapsed while it was applied is not
    /// acknowledged (it returns `LeaseExpired`, and may or may not have been applied).
    /// The first write under a new region epoch takes the log over (`Fenced` if the log
    /// has seen a newer one).
    pub fn write(&self, region_id: u64, key: &str, value: &str) -> Result<()> {
        let mut regions = self.write_lock();
        let region = match regions.get_mut(&region_id) {
            Some(region) => region,
            None => return Err(self.absent(region_id)),
        };
        if region.role != RegionRole::Leader {
            return RegionFollowerSnafu { region_id }.fail();
        }
        let ticket = self.leases.begin_write(region_id)?;
        let epoch = ticket.region_epoch();
        if let Some(log) = self.log(region_id) {
            if region.writer.as_ref().map(LogWriter::epoch) != Some(epoch) {
                // The first write under this epoch: seal the older owner's segment, and
                // serve exactly what was sealed.
                let (writer, replay) = log.open_writer(epoch, self.shared.is_some())?;
                region.take(replay);
                region.writer = Some(writer);
                region.epoch = region.epoch.max(epoch);
            }
            if let Some(pause) = self.append_pause {
                std::thread::sleep(pause);
            }
            if let Some(writer) = region.writer.as_mut() {
                if let Err(err) = writer.append(key, value) {
                    // A partial row may be on the log: never append after it. The next
                    // write takes a new segment, sealed before the damage, and serves
                    // what was sealed.
                    region.writer = None;
                    return Err(err);
                }
            }
        }
        region.bytes += (key.len() + value.len()) as u64;
        region.writes += 1;
        region.rows.insert(key.to_string(), value.to_string());
        ticket.confirm()
    }

    /// The error for a region that is not open: unavailable (with why) if its storage
    /// could not be read, else not found.
    fn absent(&self, region_id: u64) -> crate::Error {
        match self.unreadable.lock().get(&region_id) {
            Some(u) => UnavailableSnafu {
                region_id,
                reason: u.reason.clone(),
            }
            .build(),
            None => RegionNotFoundSnafu { region_id }.build(),
        }
    }

    /// Rows a stale owner appended after a seal, which the last replay of the region
    /// ignored.
    pub fn stale_rows(&self, region_id: u64) -> Option<u64> {
        self.read_lock().get(&region_id).map(|r| r.stale_rows)
    }

    /// Reads a row; works on readonly regions too.
    pub fn read(&self, region_id: u64, key: &str) -> Result<Option<String>> {
        let mut regions = self.write_lock();
        let Some(region) = regions.get_mut(&region_id) else {
            return Err(self.absent(region_id));
        };
        region.reads += 1;
        Ok(region.rows.get(key).cloned())
    }

    /// How many rows a region holds.
    pub fn row_count(&self, region_id: u64) -> Result<usize> {
        let regions = self.read_lock();
        let region = regions
            .get(&region_id)
            .ok_or_else(|| RegionNotFoundSnafu { region_id }.build())?;
        Ok(region.rows.len())
    }
}

#[async_trait]
impl RegionEngine for MemoryRegionEngine {
    fn regions(&self) -> Vec<RegionInfo> {
        let shared = self.shared.is_some();
        let regions = self.read_lock();
        let mut all: Vec<RegionInfo> = regions
            .iter()
            .map(|(id, r)| r.info(*id, shared))
            .chain(
                self.unreadable
                    .lock()
                    .iter()
                    .map(|(id, u)| unreadable_info(*id, u, shared)),
            )
            .collect();
        all.sort_by_key(|r| r.region_id);
        all
    }

    fn region(&self, region_id: u64) -> Option<RegionInfo> {
        let shared = self.shared.is_some();
        match self.read_lock().get(&region_id) {
            Some(r) => Some(r.info(region_id, shared)),
            None => self
                .unreadable
                .lock()
                .get(&region_id)
                .map(|u| unreadable_info(region_id, u, shared)),
        }
    }

    async fn open_region(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<()> {
        let mut regions = self.write_lock();
        if let Some(region) = regions.get_mut(&region_id) {
            if role != RegionRole::Leader {
                region.writer = None;
            }
            region.role = role;
            region.epoch = region.epoch.max(epoch);
        } else {
            // An unreadable region is tried again: the operator may have repaired it.
            let region = self.load_region(region_id, role, epoch)?;
            regions.insert(region_id, region);
            self.unreadable.lock().remove(&region_id);
        }
        self.save_manifest(&regions)
    }

    async fn close_region(&self, region_id: u64) -> Result<bool> {
        let mut regions = self.write_lock();
        let existed = regions.remove(&region_id).is_some()
            | self.unreadable.lock().remove(&region_id).is_some();
        if existed {
            self.save_manifest(&regions)?;
        }
        Ok(existed)
    }

    fn set_role(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<()> {
        let mut regions = self.write_lock();
        let Some(region) = regions.get_mut(&region_id) else {
            return Err(self.absent(region_id));
        };
        if role == RegionRole::Leader && region.role != RegionRole::Leader && self.shared.is_some()
        {
            // Catch up with what the previous leader wrote while this copy followed.
            let fresh = self.load_region(region_id, role, epoch)?;
            let (reads, writes) = (region.reads, region.writes);
            *region = fresh;
            region.reads = reads;
            region.writes = writes;
        }
        if role != RegionRole::Leader {
            // A follower appends nothing; a later leader here seals this segment first.
            region.writer = None;
        }
        region.role = role;
        region.epoch = region.epoch.max(epoch);
        self.save_manifest(&regions)
    }

    fn shared_storage(&self) -> bool {
        self.shared.is_some()
    }

    async fn flush(&self, region_id: u64) -> Result<()> {
        // Every write is appended before it is acknowledged, so there is nothing to flush
        // beyond checking the region exists.
        if self.read_lock().contains_key(&region_id) {
            Ok(())
        } else {
            Err(self.absent(region_id))
        }
    }
}

fn unreadable_info(region_id: u64, u: &Unreadable, shared_storage: bool) -> RegionInfo {
    RegionInfo {
        region_id,
        role: u.role,
        rows: 0,
        bytes: 0,
        reads: 0,
        writes: 0,
        shared_storage,
        epoch: 0,
        unavailable: Some(u.reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn engine() -> (Arc<RegionLeases>, MemoryRegionEngine) {
        let leases = RegionLeases::new(Duration::ZERO);
        (leases.clone(), MemoryRegionEngine::new(leases))
    }

    #[tokio::test]
    async fn writes_need_the_leader_role_and_a_live_lease_and_reads_always_work() {
        let (leases, engine) = engine();
        engine
            .open_region(1, RegionRole::Leader, 1)
            .await
            .expect("open");
        leases.track(1);
        let err = engine.write(1, "k", "v").expect_err("no lease yet");
        assert!(err.to_string().contains("region lease expired"), "{err}");
        leases.grant(1, leases.duration_since_epoch(), LEASE);
        engine.write(1, "k", "v").expect("leader with lease");
        engine.set_role(1, RegionRole::Follower, 1).expect("role");
        let err = engine.write(1, "k", "v2").expect_err("follower");
        assert!(err.to_string().contains("region is follower"), "{err}");
        assert_eq!(engine.read(1, "k").expect("read"), Some("v".into()));
        assert!(engine
            .write(9, "k", "v")
            .expect_err("absent")
            .to_string()
            .contains("not found"));
    }

    /// No keeper, no timer task at all: the write path alone refuses writes from the
    /// deadline on. This is what a stalled, panicked or SIGSTOPped timer leaves behind.
    #[tokio::test(start_paused = true)]
    async fn with_no_timer_running_writes_are_refused_from_the_deadline_on() {
        let (leases, engine) = engine();
        engine
            .open_region(1, RegionRole::Leader, 1)
            .await
            .expect("open");
        leases.track(1);
        let deadline = leases.grant(1, 0, LEASE).expect("granted");
        tokio::time::advance(LEASE - Duration::from_millis(1)).await;
        engine
            .write(1, "before", "v")
            .expect("1 ms before the deadline");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(tokio::time::Instant::now(), deadline);
        for i in 0..100 {
            let err = engine
                .write(1, &format!("after{i}"), "v")
                .expect_err("at or after the deadline");
            assert!(err.to_string().contains("lease expired"), "{err}");
            tokio::time::advance(Duration::from_millis(7)).await;
        }
        assert_eq!(engine.row_count(1).expect("rows"), 1);
    }

    #[tokio::test]
    async fn a_reopened_engine_keeps_its_rows_and_starts_readonly() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (leases, _) = engine();
            let engine = MemoryRegionEngine::open(dir.path(), leases.clone()).expect("open");
            engine
                .open_region(3, RegionRole::Leader, 1)
                .await
                .expect("open region");
            leases.track(3);
            leases.grant(3, leases.duration_since_epoch(), LEASE);
            engine.write(3, "a", "1").expect("write");
            engine.write(3, "b", "2").expect("write");
        }
        let (leases, _) = engine();
        let engine = MemoryRegionEngine::open(dir.path(), leases.clone()).expect("reopen");
        let info = engine.region(3).expect("region back");
        assert_eq!((info.role, info.rows), (RegionRole::Leader, 2));
        leases.track(3);
        assert!(
            engine.write(3, "c", "3").is_err(),
            "readonly after a restart"
        );
        assert_eq!(engine.read(3, "b").expect("read"), Some("2".into()));
        assert!(engine.close_region(3).await.expect("close"));
        assert!(MemoryRegionEngine::open(dir.path(), leases)
            .expect("reopen")
            .regions()
            .is_empty());
    }

    #[tokio::test]
    async fn on_a_shared_dir_a_new_owner_reads_every_acknowledged_row_and_catches_up_on_upgrade() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("shared");
        let (la, _) = engine();
        let a = MemoryRegionEngine::open_with(&dir.path().join("a"), Some(&shared), la.clone())
            .expect("open a");
        let (lb, _) = engine();
        let b = MemoryRegionEngine::open_with(&dir.path().join("b"), Some(&shared), lb.clone())
            .expect("open b");
        a.open_region(5, RegionRole::Leader, 1).await.expect("open");
        la.track(5);
        la.grant(5, la.duration_since_epoch(), LEASE);
        a.write(5, "k1", "v1").expect("write");
        // b opens it as a follower and sees what a acknowledged…
        b.open_region(5, RegionRole::Follower, 1)
            .await
            .expect("open");
        assert_eq!(b.read(5, "k1").expect("read"), Some("v1".into()));
        assert!(b.region(5).expect("open").shared_storage);
        // …a writes more while b follows…
        a.write(5, "k2", "v2").expect("write");
        // …and b, upgraded, catches up before it leads.
        b.set_role(5, RegionRole::Leader, 1).expect("upgrade");
        assert_eq!(b.read(5, "k2").expect("read"), Some("v2".into()));
        assert_eq!(b.row_count(5).expect("rows"), 2);
    }

    /// One engine on the shared directory, as its own datanode.
    fn node(dir: &Path, name: &str) -> (Arc<RegionLeases>, MemoryRegionEngine) {
        let (leases, _) = engine();
        let e = MemoryRegionEngine::open_with(
            &dir.join(name),
            Some(&dir.join("shared")),
            leases.clone(),
        )
        .expect("open engine")
        .with_writer(name);
        (leases, e)
    }

    /// Makes `region` writable on a node under `epoch`, as an upgrade and a grant would.
    async fn lead(leases: &RegionLeases, e: &MemoryRegionEngine, region: u64, epoch: u64) {
        e.open_region(region, RegionRole::Leader, epoch)
            .await
            .expect("open");
        leases.track(region);
        leases.raise_region_epoch(region, epoch);
        leases
            .grant_under(region, epoch, leases.duration_since_epoch(), LEASE)
            .expect("granted");
    }

    /// The storage fence holds even where the lease cannot: the old owner here still
    /// holds a live lease on its own clock (a pause it has not noticed), and its write
    /// is acknowledged; still no later owner ever reads it.
    #[tokio::test]
    async fn an_old_owners_write_after_the_new_owner_wrote_is_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (la, a) = node(dir.path(), "a");
        let (lb, b) = node(dir.path(), "b");
        lead(&la, &a, 5, 1).await;
        a.write(5, "k", "old").expect("write");
        b.open_region(5, RegionRole::Follower, 1)
            .await
            .expect("open");
        b.set_role(5, RegionRole::Leader, 2).expect("upgrade");
        lb.track(5);
        lb.grant_under(5, 2, lb.duration_since_epoch(), LEASE)
            .expect("granted");
        b.write(5, "k", "new").expect("the new owner writes");
        a.write(5, "k", "stale")
            .expect("the old owner's segment takes it");
        let (_, c) = node(dir.path(), "c");
        c.open_region(5, RegionRole::Follower, 2)
            .await
            .expect("open");
        assert_eq!(c.read(5, "k").expect("read"), Some("new".into()));
        assert_eq!(c.stale_rows(5), Some(1));
        // And the old owner, told to lead under its old epoch again, is refused.
        let (_, a2) = node(dir.path(), "a2");
        a2.open_region(5, RegionRole::Leader, 1)
            .await
            .expect_err("stale");
    }

    #[tokio::test]
    async fn a_write_under_an_older_epoch_than_the_storage_has_seen_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (la, a) = node(dir.path(), "a");
        let (lb, b) = node(dir.path(), "b");
        lead(&la, &a, 5, 1).await;
        lead(&lb, &b, 5, 2).await;
        b.write(5, "k", "new").expect("write");
        // a had not written under epoch 1 yet: its first write finds the log taken.
        let err = a.write(5, "k", "stale").expect_err("fenced");
        assert!(
            matches!(
                err,
                crate::Error::Fenced {
                    storage_epoch: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(b.read(5, "k").expect("read"), Some("new".into()));
    }

    #[tokio::test]
    async fn a_region_whose_log_cannot_be_read_is_unavailable_and_the_rest_are_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (la, a) = node(dir.path(), "a");
            lead(&la, &a, 1, 1).await;
            lead(&la, &a, 2, 1).await;
            a.write(1, "k", "v").expect("write");
            a.write(2, "k", "v").expect("write");
        }
        std::fs::write(dir.path().join("shared/region-1/gen-1.json"), b"{not json")
            .expect("damage");
        // A torn half-row at the end of region 2's log: not fatal, not data.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("shared/region-2/seg-1.log"))
            .expect("open");
        f.write_all(b"0000abcd [\"half").expect("tear");
        let (la, a) = node(dir.path(), "a");
        let info = a.region(1).expect("listed");
        let why = info.unavailable.expect("unavailable");
        assert!(why.contains("gen-1.json"), "{why}");
        let err = a.write(1, "k", "v").expect_err("unavailable");
        assert!(matches!(err, crate::Error::Unavailable { .. }), "{err}");
        assert_eq!(a.regions().len(), 2, "both still reported");
        lead(&la, &a, 2, 1).await;
        assert_eq!(a.read(2, "k").expect("read"), Some("v".into()));
        a.write(2, "k2", "v2").expect("served");
        // Still listed after a restart (the manifest keeps it), until it is closed.
        drop(a);
        let (_, a) = node(dir.path(), "a");
        assert!(a.region(1).expect("listed").unavailable.is_some());
        assert!(a.close_region(1).await.expect("close"));
        assert!(a.region(1).is_none());
    }
}
