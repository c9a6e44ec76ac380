//! [`WatchedKv`]: the metasrv's KV backend, watched for failed writes.
//!
//! **The rule: persist, then apply.** Every change to routes, registrations, maintenance,
//! drain marks and migration records is written to the backend first and applied in
//! memory only once the backend confirmed it; a backend that refuses a write leaves its
//! own state unchanged too (the memory snapshot undoes it). So a failed write leaves
//! nothing behind, and the caller returns the error (5xx with the reason).
//!
//! What a failure must also do, and this wrapper does for every caller: log at ERROR,
//! count it (`metasrv_kv_write_failures_total{op}`), and make `/ready` false while the
//! backend keeps failing. A successful write clears the state; while it is set, `/ready`
//! tries a write of its own ([`WatchedKv::probe`]), so a backend that recovered (the disk
//! freed) shows at the next probe, not at the next change.

use std::sync::Arc;

use async_trait::async_trait;
use handlers::{BatchOp, KeyValue, KvBackend, KvBackendRef};
use parking_lot::Mutex;
use tracing::error;

/// The key `/ready` writes while writes fail.
const PROBE_KEY: &[u8] = b"__meta/ready_probe";

/// A KV backend that remembers whether its last write failed.
#[derive(Debug)]
pub struct WatchedKv {
    inner: KvBackendRef,
    /// The last write's error, while the backend keeps failing.
    failing: Mutex<Option<String>>,
}

impl WatchedKv {
    /// Watches `inner`.
    pub fn new(inner: KvBackendRef) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failing: Mutex::new(None),
        })
    }

    /// The last write's error, while writes fail.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().clone()
    }

    /// While writes fail, tries one (of a key nothing else reads); returns the error if
    /// the backend still fails, `None` when it writes (or never failed).
    /// The probe's own failure is not counted or logged again: it is the same failure.
    pub async fn probe(&self) -> Option<String> {
        self.failing()?;
        match self.inner.put(PROBE_KEY, b"1").await {
            Ok(()) => {
                self.recovered("probe");
                None
            }
            Err(err) => Some(err.to_string()),
        }
    }

    /// A write of `op` succeeded: the backend accepts writes (again, if it failed).
    fn recovered(&self, op: &'static str) {
        if self.failing.lock().take().is_some() {
            tracing::info!(op, "the KV backend accepts writes again");
        }
    }

    fn observe<T>(
        &self,
        op: &'static str,
        key: &[u8],
        r: handlers::Result<T>,
    ) -> handlers::Result<T> {
        match &r {
            Ok(_) => self.recovered(op),
            Err(err) => {
                crate::metrics::METRICS
                    .kv_write_failures
                    .with_label_values(&[op])
                    .inc();
                error!(
                    op,
                    key = %handlers::kv::key_text(key),
                    error = %err,
                    "a KV write failed: nothing was applied, and /ready is false until writes succeed"
                );
                *self.failing.lock() = Some(err.to_string());
            }
        }
        r
    }
}

#[async_trait]
impl KvBackend for WatchedKv {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &[u8]) -> handlers::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> handlers::Result<()> {
        let r = self.inner.put(key, value).await;
        self.observe("put", key, r)
    }

    async fn delete(&self, key: &[u8]) -> handlers::Result<bool> {
        let r = self.inner.delete(key).await;
        self.observe("delete", key, r)
    }

    async fn range_prefix(&self, prefix: &[u8]) -> handlers::Result<Vec<KeyValue>> {
        self.inner.range_prefix(prefix).await
    }

    async fn compare_and_put(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> handlers::Result<bool> {
        let r = self.inner.compare_and_put(key, expect, value).await;
        self.observe("compare_and_put", key, r)
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> handlers::Result<()> {
        let r = self.inner.batch(ops).await;
        self.observe("batch", b"(batch)", r)
    }
}

#[cfg(test)]
mod tests {
    use handlers::MemoryKvBackend;

    use super::*;

    #[tokio::test]
    async fn it_is_the_backend_it_watches_for_every_operation() {
        let kv = WatchedKv::new(Arc::new(MemoryKvBackend::new()));
        assert_eq!(kv.name(), "memory");
        handlers::kv::conformance::run_all(kv.as_ref()).await;
        assert_eq!(kv.failing(), None);
    }

    #[tokio::test]
    async fn every_kind_of_failed_write_is_remembered() {
        let faulty = Arc::new(handlers::FaultyKv::new());
        let kv = WatchedKv::new(faulty.clone());
        kv.put(b"a", b"1").await.expect("put");
        faulty.fail_writes(false);
        assert!(kv.delete(b"a").await.is_err());
        assert!(kv.failing().is_some(), "delete");
        faulty
            .fail_writes
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(kv.compare_and_put(b"b", None, b"2").await.expect("cas"));
        assert_eq!(kv.failing(), None, "a write that works clears it");
        faulty.fail_writes(false);
        assert!(kv.compare_and_put(b"c", None, b"3").await.is_err());
        assert!(kv.failing().is_some(), "compare_and_put");
        assert!(kv
            .batch(vec![handlers::BatchOp::Delete(b"a".to_vec())])
            .await
            .is_err());
        assert!(kv.failing().is_some(), "batch");
    }

    #[tokio::test]
    async fn a_failed_write_is_remembered_until_a_write_succeeds_and_probe_tries_one() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        let inner = MemoryKvBackend::with_snapshot(dir.join("kv.json")).expect("open");
        let kv = WatchedKv::new(Arc::new(inner));
        kv.put(b"a", b"1").await.expect("put");
        assert_eq!(kv.failing(), None);
        assert_eq!(kv.probe().await, None, "nothing to probe while healthy");
        let before = crate::metrics::METRICS
            .kv_write_failures
            .with_label_values(&["put"])
            .get();
        std::fs::remove_dir_all(&dir).expect("remove");
        assert!(kv.put(b"a", b"2").await.is_err());
        assert!(
            kv.failing().is_some_and(|e| e.contains("snapshot")),
            "{:?}",
            kv.failing()
        );
        assert!(
            crate::metrics::METRICS
                .kv_write_failures
                .with_label_values(&["put"])
                .get()
                > before
        );
        assert!(kv.probe().await.is_some(), "still failing");
        assert_eq!(kv.get(b"a").await.expect("get"), Some(b"1".to_vec()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(kv.probe().await, None, "the probe's own write succeeds");
        assert_eq!(kv.failing(), None);
    }
}
