//! The embedded in-memory [`KvBackend`]: the standalone default, not a mock.
//!
//! A `BTreeMap` behind a std `RwLock` (no await happens while it is held), so prefix
//! ranges come out in key order like etcd's.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{BatchOp, KeyValue, KvBackend};
use crate::Result;

/// An ordered in-memory key-value store.
#[derive(Debug, Default)]
pub struct MemoryKvBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryKvBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
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
        self.write().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.write().remove(key).is_some())
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
        Ok(())
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
}
