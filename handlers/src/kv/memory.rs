//! The embedded in-memory [`KvBackend`]: the standalone default, not a mock.
//!
//! A `BTreeMap` behind a std `RwLock` (no await happens while it is held), so prefix
//! ranges come out in key order like etcd's.
//!
//! Optionally durable: [`MemoryKvBackend::with_snapshot`] loads a JSON snapshot file and
//! rewrites it (to a temporary file, then renamed, so a crash leaves the old or the new
//! one, never half of one) after every mutation. That lets a standalone metasrv restart
//! without forgetting its region routes; without it, a restart starts empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use parking_lot::RwLock;
use snafu::IntoError;

use super::{BatchOp, KeyValue, KvBackend};
use crate::error::KvSnafu;
use crate::Result;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An ordered in-memory key-value store, optionally snapshotted to a file.
#[derive(Debug, Default)]
pub struct MemoryKvBackend {
    map: RwLock<Map>,
    snapshot: Option<PathBuf>,
}

fn kv_error(
    op: &'static str,
    path: &Path,
    source: impl Into<crate::error::BoxedError>,
) -> crate::Error {
    KvSnafu {
        backend: "memory",
        op,
        key: path.display().to_string(),
    }
    .into_error(source.into())
}

impl MemoryKvBackend {
    /// An empty, purely in-memory store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store persisted to `path`: loads it if it exists, and rewrites it after every
    /// mutation.
    pub fn with_snapshot(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = serde_json::from_slice(&bytes)
                    .map_err(|e| kv_error("load snapshot", &path, e))?;
                pairs.into_iter().collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(kv_error("load snapshot", &path, e)),
        };
        Ok(Self {
            map: RwLock::new(map),
            snapshot: Some(path),
        })
    }

    /// Writes the snapshot, if configured. Called with the write lock held, so snapshots
    /// are written in mutation order.
    fn persist(&self, map: &Map) -> Result<()> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        let pairs: Vec<(&Vec<u8>, &Vec<u8>)> = map.iter().collect();
        let bytes = serde_json::to_vec(&pairs).map_err(|e| kv_error("encode snapshot", path, e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| kv_error("write snapshot", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| kv_error("write snapshot", path, e))
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Map> {
        self.map.read()
    }

    fn write(&self) -> parking_lot::RwLockWriteGuard<'_, Map> {
        self.map.write()
    }
}

#[async_trait]
impl KvBackend for MemoryKvBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().get(key).cloned())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut map = self.write();
        map.insert(key.to_vec(), value.to_vec());
        self.persist(&map)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let mut map = self.write();
        let existed = map.remove(key).is_some();
        if existed {
            self.persist(&map)?;
        }
        Ok(existed)
    }

    async fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        Ok(self
            .read()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect())
    }

    async fn compare_and_put(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool> {
        let mut map = self.write();
        if map.get(key).map(Vec::as_slice) != expect {
            return Ok(false);
        }
        map.insert(key.to_vec(), value.to_vec());
        self.persist(&map)?;
        Ok(true)
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let mut map = self.write();
        for op in ops {
            match op {
                BatchOp::Put(kv) => {
                    map.insert(kv.key, kv.value);
                }
                BatchOp::Delete(key) => {
                    map.remove(&key);
                }
            }
        }
        self.persist(&map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::conformance;

    #[tokio::test]
    async fn memory_backend_passes_the_conformance_suite() {
        conformance::run_all(&MemoryKvBackend::new()).await;
    }

    #[tokio::test]
    async fn a_snapshot_survives_a_restart_and_passes_the_suite() {
        let dir = std::env::temp_dir().join(format!("kv-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("kv.json");
        let _ = std::fs::remove_file(&path);
        {
            let kv = MemoryKvBackend::with_snapshot(&path).expect("open");
            conformance::run_all(&kv).await;
            kv.put(b"route/1", b"a").await.expect("put");
            kv.put(b"route/2", b"b").await.expect("put");
            kv.delete(b"route/2").await.expect("delete");
        }
        let kv = MemoryKvBackend::with_snapshot(&path).expect("reopen");
        assert_eq!(kv.get(b"route/1").await.expect("get"), Some(b"a".to_vec()));
        assert_eq!(kv.get(b"route/2").await.expect("get"), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
