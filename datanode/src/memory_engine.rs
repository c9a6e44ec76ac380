//! [`MemoryRegionEngine`]: a small region engine that keeps rows per region, and really
//! refuses writes to readonly regions. The demo and the tests run on it.
//!
//! With a data directory it is durable enough to survive a restart: a manifest
//! (`regions.json`) lists the open regions and their roles, and each region's rows are an
//! append-only log (`region-<id>.log`, one JSON `[key, value]` per line) replayed on
//! open. After a restart every region comes back **readonly**: the lease flag always
//! starts false.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use snafu::ResultExt;
use tracing::info;

use crate::engine::{RegionEngine, RegionInfo};
use crate::error::{
    CorruptSnafu, LeaseExpiredSnafu, RegionFollowerSnafu, RegionNotFoundSnafu, Result, StorageSnafu,
};

#[derive(Debug)]
struct Region {
    role: RegionRole,
    lease_valid: bool,
    rows: BTreeMap<String, String>,
    bytes: u64,
    reads: u64,
    writes: u64,
}

impl Region {
    fn info(&self, region_id: u64) -> RegionInfo {
        RegionInfo {
            region_id,
            role: self.role,
            lease_valid: self.lease_valid,
            rows: self.rows.len() as u64,
            bytes: self.bytes,
            reads: self.reads,
            writes: self.writes,
        }
    }
}

/// An in-memory region engine, optionally backed by a data directory.
#[derive(Debug, Default)]
pub struct MemoryRegionEngine {
    dir: Option<PathBuf>,
    // A std RwLock: no await happens while it is held.
    regions: RwLock<HashMap<u64, Region>>,
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
    /// A purely in-memory engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine persisted under `dir`; reopens the regions listed there, readonly.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).context(StorageSnafu {
            path: dir.display().to_string(),
        })?;
        let engine = Self {
            dir: Some(dir.to_path_buf()),
            regions: RwLock::default(),
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
            let region = engine.load_region(region_id, role_from(&role))?;
            info!(
                region_id,
                rows = region.rows.len(),
                "region reopened readonly"
            );
            engine.write_lock().insert(region_id, region);
        }
        Ok(engine)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Region>> {
        self.regions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Region>> {
        self.regions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir
            .as_deref()
            .unwrap_or(Path::new("."))
            .join("regions.json")
    }

    fn log_path(&self, region_id: u64) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("region-{region_id}.log")))
    }

    fn load_region(&self, region_id: u64, role: RegionRole) -> Result<Region> {
        let mut region = Region {
            role,
            lease_valid: false,
            rows: BTreeMap::new(),
            bytes: 0,
            reads: 0,
            writes: 0,
        };
        let Some(path) = self.log_path(region_id) else {
            return Ok(region);
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(region),
            Err(e) => {
                return Err(e).context(StorageSnafu {
                    path: path.display().to_string(),
                })
            }
        };
        for line in std::io::BufReader::new(file).lines() {
            let line = line.context(StorageSnafu {
                path: path.display().to_string(),
            })?;
            if line.is_empty() {
                continue;
            }
            let (k, v): (String, String) = serde_json::from_str(&line).context(CorruptSnafu {
                path: path.display().to_string(),
            })?;
            region.bytes += (k.len() + v.len()) as u64;
            region.rows.insert(k, v);
        }
        Ok(region)
    }

    fn save_manifest(&self, regions: &HashMap<u64, Region>) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let path = self.manifest_path();
        let listed: BTreeMap<u64, &str> = regions
            .iter()
            .map(|(id, r)| (*id, role_name(r.role)))
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
    /// lease is not live.
    pub fn write(&self, region_id: u64, key: &str, value: &str) -> Result<()> {
        let mut regions = self.write_lock();
        let region = regions
            .get_mut(&region_id)
            .ok_or_else(|| RegionNotFoundSnafu { region_id }.build())?;
        if region.role != RegionRole::Leader {
            return RegionFollowerSnafu { region_id }.fail();
        }
        if !region.lease_valid {
            return LeaseExpiredSnafu { region_id }.fail();
        }
        if let Some(path) = self.log_path(region_id) {
            let line = serde_json::to_string(&(key, value)).context(CorruptSnafu {
                path: path.display().to_string(),
            })?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .context(StorageSnafu {
                    path: path.display().to_string(),
                })?;
            writeln!(f, "{line}").context(StorageSnafu {
                path: path.display().to_string(),
            })?;
        }
        region.bytes += (key.len() + value.len()) as u64;
        region.writes += 1;
        region.rows.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Reads a row; works on readonly regions too.
    pub fn read(&self, region_id: u64, key: &str) -> Result<Option<String>> {
        let mut regions = self.write_lock();
        let region = regions
            .get_mut(&region_id)
            .ok_or_else(|| RegionNotFoundSnafu { region_id }.build())?;
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
        let mut all: Vec<RegionInfo> = self.read_lock().iter().map(|(id, r)| r.info(*id)).collect();
        all.sort_by_key(|r| r.region_id);
        all
    }

    fn region(&self, region_id: u64) -> Option<RegionInfo> {
        self.read_lock().get(&region_id).map(|r| r.info(region_id))
    }

    async fn open_region(&self, region_id: u64, role: RegionRole) -> Result<()> {
        let mut regions = self.write_lock();
        if let Some(region) = regions.get_mut(&region_id) {
            region.role = role;
        } else {
            let region = self.load_region(region_id, role)?;
            regions.insert(region_id, region);
        }
        self.save_manifest(&regions)
    }

    async fn close_region(&self, region_id: u64) -> Result<bool> {
        let mut regions = self.write_lock();
        let existed = regions.remove(&region_id).is_some();
        if existed {
            self.save_manifest(&regions)?;
        }
        Ok(existed)
    }

    fn set_role(&self, region_id: u64, role: RegionRole) -> Result<()> {
        let mut regions = self.write_lock();
        let region = regions
            .get_mut(&region_id)
            .ok_or_else(|| RegionNotFoundSnafu { region_id }.build())?;
        region.role = role;
        self.save_manifest(&regions)
    }

    fn set_lease_valid(&self, region_id: u64, valid: bool) {
        if let Some(region) = self.write_lock().get_mut(&region_id) {
            region.lease_valid = valid;
        }
    }

    async fn flush(&self, region_id: u64) -> Result<()> {
        // Every write is appended before it is acknowledged, so there is nothing to flush
        // beyond checking the region exists.
        if self.read_lock().contains_key(&region_id) {
            Ok(())
        } else {
            RegionNotFoundSnafu { region_id }.fail()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_need_the_leader_role_and_a_live_lease_and_reads_always_work() {
        let engine = MemoryRegionEngine::new();
        engine
            .open_region(1, RegionRole::Leader)
            .await
            .expect("open");
        let err = engine.write(1, "k", "v").expect_err("no lease yet");
        assert!(err.to_string().contains("region lease expired"), "{err}");
        engine.set_lease_valid(1, true);
        engine.write(1, "k", "v").expect("leader with lease");
        engine.set_role(1, RegionRole::Follower).expect("role");
        let err = engine.write(1, "k", "v2").expect_err("follower");
        assert!(err.to_string().contains("region is follower"), "{err}");
        assert_eq!(engine.read(1, "k").expect("read"), Some("v".into()));
        assert!(engine
            .write(9, "k", "v")
            .expect_err("absent")
            .to_string()
            .contains("not found"));
    }

    #[tokio::test]
    async fn a_reopened_engine_keeps_its_rows_and_starts_readonly() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine = MemoryRegionEngine::open(dir.path()).expect("open");
            engine
                .open_region(3, RegionRole::Leader)
                .await
                .expect("open region");
            engine.set_lease_valid(3, true);
            engine.write(3, "a", "1").expect("write");
            engine.write(3, "b", "2").expect("write");
        }
        let engine = MemoryRegionEngine::open(dir.path()).expect("reopen");
        let info = engine.region(3).expect("region back");
        assert_eq!(
            (info.role, info.lease_valid, info.rows),
            (RegionRole::Leader, false, 2)
        );
        assert_eq!(engine.read(3, "b").expect("read"), Some("2".into()));
        assert!(engine.close_region(3).await.expect("close"));
        assert!(MemoryRegionEngine::open(dir.path())
            .expect("reopen")
            .regions()
            .is_empty());
    }
}
