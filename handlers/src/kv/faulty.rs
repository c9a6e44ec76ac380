//! [`FaultyKv`]: a memory KV that fails on demand, the test port for "persist, then
//! apply" (every caller must leave memory unchanged when a write fails, and follow what
//! the backend holds when a failed write was applied after all).
//!
//! Switches, each off by default:
//! - `fail_writes`: every write returns an error;
//! - `apply_failed`: with `fail_writes`, the write is applied before the error (an etcd
//!   request that timed out but committed);
//! - `range_delay`: range reads take this long (a loaded backend).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use snafu::IntoError as _;

use super::{BatchOp, KeyValue, KvBackend, MemoryKvBackend};
use crate::Result;

/// A memory KV with fault switches (see the module docs).
#[derive(Debug, Default)]
pub struct FaultyKv {
    inner: MemoryKvBackend,
    /// Every write fails.
    pub fail_writes: AtomicBool,
    /// A failing write is applied first.
    pub apply_failed: AtomicBool,
    /// Range reads take this many milliseconds.
    pub range_delay_ms: AtomicU64,
}

impl FaultyKv {
    /// A healthy store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes fail from now on; `applied`: each is applied before it fails.
    pub fn fail_writes(&self, applied: bool) {
        self.apply_failed.store(applied, Ordering::SeqCst);
        self.fail_writes.store(true, Ordering::SeqCst);
    }

    /// Range reads take `delay` from now on.
    pub fn slow_ranges(&self, delay: Duration) {
        self.range_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Runs `write` as the switches say: as is, or failing (applied first or not).
    async fn write<T>(
        &self,
        op: &'static str,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if !self.fail_writes.load(Ordering::SeqCst) {
            return write.await;
        }
        if self.apply_failed.load(Ordering::SeqCst) {
            write.await?;
        }
        Err(crate::error::KvSnafu {
            backend: "faulty",
            op,
            key: String::new(),
        }
        .into_error("injected failure".into()))
    }
}

#[async_trait]
impl KvBackend for FaultyKv {
    fn name(&self) -> &'static str {
        "faulty"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write("put", self.inner.put(key, value)).await
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.write("delete", self.inner.delete(key)).await
    }

    async fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let delay = self.range_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.range_prefix(prefix).await
    }

    async fn compare_and_put(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool> {
        self.write(
            "compare_and_put",
            self.inner.compare_and_put(key, expect, value),
        )
        .await
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        self.write("batch", self.inner.batch(ops)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::conformance;

    #[tokio::test]
    async fn healthy_it_passes_the_suite_and_failing_it_applies_only_when_told() {
        let kv = FaultyKv::new();
        conformance::run_all(&kv).await;
        kv.put(b"a", b"1").await.expect("put");
        kv.fail_writes(false);
        assert!(kv.put(b"a", b"2").await.is_err());
        assert_eq!(kv.get(b"a").await.expect("get"), Some(b"1".to_vec()));
        kv.fail_writes(true);
        assert!(kv.put(b"a", b"3").await.is_err());
        assert_eq!(kv.get(b"a").await.expect("get"), Some(b"3".to_vec()));
    }
}
