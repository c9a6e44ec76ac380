//! The embedded in-memory [`KvBackend`]: the standalone default, not a mock.
//!
//! A `BTreeMap` behind a std `RwLock` (no await happens while it is held), so prefix
//! ranges come out in key order like etcd's.
//!
//! Optionally durable: [`MemoryKvBackend::with_snapshot`] loads a JSON snapshot file and
//! rewrites it (to a temporary file, synced, then renamed, so a crash leaves the old or
//! the new one, never half of one) after every mutation. **A write is applied only if
//! its snapshot is written:** when persisting fails (a full disk), the change is undone
//! and the error returned, so memory, the file and every later restart agree that it
//! did not happen. That lets a standalone metasrv restart
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

    /// Writes the snapshot, if configured, and syncs it to disk before it replaces the
    /// old one. Called with the write lock held, so snapshots are written in mutation
    /// order.
    fn persist(&self, map: &Map) -> Result<()> {
        use std::io::Write as _;
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        let pairs: Vec<(&Vec<u8>, &Vec<u8>)> = map.iter().collect();
        let bytes = serde_json::to_vec(&pairs).map_err(|e| kv_error("encode snapshot", path, e))?;
        let tmp = path.with_extension("tmp");
        let write = |tmp: &Path| -> std::io::Result<()> {
            let mut file = std::fs::File::create(tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(kv_error("write snapshot", &tmp, e));
        }
        std::fs::rename(&tmp, path).map_err(|e| kv_error("write snapshot", path, e))?;
        // The rename itself is durable once the directory is synced.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| kv_error("sync snapshot directory", dir, e))?;
        }
        Ok(())
    }

    /// Applies `changes` (a key and its new value, `None` to delete) to `map` (the
    /// locked map) and persists them; if persisting fails, every change is undone before
    /// the error returns, so a failed write never shows, now or after a restart.
    fn apply(&self, map: &mut Map, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut undo = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let old = match value {
                Some(v) => map.insert(key.clone(), v),
                None => map.remove(&key),
            };
            undo.push((key, old));
        }
        if let Err(err) = self.persist(map) {
            for (key, old) in undo.into_iter().rev() {
                match old {
                    Some(v) => map.insert(key, v),
                    None => map.remove(&key),
                };
            }
            return Err(err);
        }
        Ok(())
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
        self.apply(
            &mut self.write(),
            vec![(key.to_vec(), Some(value.to_vec()))],
        )
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        // Decided and applied under one lock: a concurrent writer cannot slip between.
        let mut map = self.write();
        if !map.contains_key(key) {
            return Ok(false);
        }
        self.apply(&mut map, vec![(key.to_vec(), None)])?;
        Ok(true)
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
        self.apply(&mut map, vec![(key.to_vec(), Some(value.to_vec()))])?;
        Ok(true)
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let changes = ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put(kv) => (kv.key, Some(kv.value)),
                BatchOp::Delete(key) => (key, None),
            })
            .collect();
        self.apply(&mut self.write(), changes)
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

    #[test]
    fn a_snapshot_that_cannot_be_read_is_an_error_not_an_empty_store() {
        let root = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading it fails, and not as "absent".
        let err = MemoryKvBackend::with_snapshot(root.path()).expect_err("unreadable");
        assert!(err.to_string().contains("load snapshot"), "{err}");
        assert_eq!(MemoryKvBackend::new().name(), "memory");
    }

    #[tokio::test]
    async fn a_write_whose_snapshot_fails_is_undone_in_memory_and_after_a_restart() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("kv.json");
        let kv = MemoryKvBackend::with_snapshot(&path).expect("open");
        kv.put(b"a", b"1").await.expect("put");
        kv.put(b"b", b"2").await.expect("put");
        let saved = std::fs::read(&path).expect("snapshot");
        // The disk goes away: every kind of write fails and leaves nothing behind.
        std::fs::remove_dir_all(&dir).expect("remove");
        assert!(kv.put(b"a", b"changed").await.is_err());
        assert!(kv.put(b"c", b"new").await.is_err());
        assert!(kv.delete(b"b").await.is_err());
        assert!(kv.compare_and_put(b"a", Some(b"1"), b"x").await.is_err());
        assert!(kv.compare_and_put(b"d", None, b"x").await.is_err());
        let batch = vec![
            BatchOp::Put(KeyValue {
                key: b"e".to_vec(),
                value: b"x".to_vec(),
            }),
            BatchOp::Delete(b"a".to_vec()),
        ];
        assert!(kv.batch(batch).await.is_err());
        let all = kv.range_prefix(b"").await.expect("range");
        let pairs: Vec<(&[u8], &[u8])> = all
            .iter()
            .map(|p| (p.key.as_slice(), p.value.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [(&b"a"[..], &b"1"[..]), (b"b", b"2")],
            "memory unchanged"
        );
        // The disk is back: a restart reads what was acknowledged, and nothing else.
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(&path, &saved).expect("restore");
        kv.put(b"f", b"3").await.expect("writes work again");
        let reopened = MemoryKvBackend::with_snapshot(&path).expect("reopen");
        let keys: Vec<Vec<u8>> = reopened
            .range_prefix(b"")
            .await
            .expect("range")
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"f".to_vec()]);
        assert_eq!(reopened.get(b"a").await.expect("get"), Some(b"1".to_vec()));
    }
}
