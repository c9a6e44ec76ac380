//! The [`KvBackend`] port: the durable store for routes, node registrations and flushed
//! stats.
//!
//! A small required core (get, put, delete, prefix range, compare-and-put, batch) that
//! both the embedded memory backend and etcd implement with the same semantics; the
//! shared conformance suite in `kv::conformance` pins them. Leases and recent stats are
//! deliberately not here: they live in the leader's memory, so heartbeat throughput is
//! not bounded by KV writes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;

pub mod conformance;
pub mod faulty;
pub mod memory;

pub use faulty::FaultyKv;
pub use memory::MemoryKvBackend;

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// One operation of an atomic [`KvBackend::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(KeyValue),
    /// Remove `key` (absent is fine).
    Delete(Vec<u8>),
}

/// A key-value store with the operations the metasrv needs.
#[async_trait]
pub trait KvBackend: Send + Sync + Debug + 'static {
    /// A short name for logs and errors (`memory`, `etcd`).
    fn name(&self) -> &'static str;

    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Writes one key unconditionally.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Deletes one key; returns whether it existed.
    async fn delete(&self, key: &[u8]) -> Result<bool>;

    /// All keys starting with `prefix`, in key order.
    async fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>>;

    /// Writes `value` only if the current value equals `expect` (`None`: the key must be
    /// absent). Returns whether it wrote. The basis for races that must have one winner.
    async fn compare_and_put(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool>;

    /// Applies all operations atomically: all or none become visible.
    async fn batch(&self, ops: Vec<BatchOp>) -> Result<()>;
}

/// Shared KV handle.
pub type KvBackendRef = Arc<dyn KvBackend>;

/// Lossy text of a key, for error messages and logs.
pub fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
