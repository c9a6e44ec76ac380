//! [`EtcdKvBackend`]: the [`KvBackend`] port on etcd.
//!
//! Every key is stored under a prefix, so several clusters can share one etcd.
//! Compare-and-put is one txn (absent: `create_revision == 0`; present: value equality).
//! A batch is one txn; etcd caps a txn at 128 operations by default, so a larger batch is
//! applied in 128-op chunks, each atomic. Every call has a timeout, so a partitioned etcd
//! fails a call instead of hanging a handler, and is timed and counted by operation
//! (`metasrv_etcd_request_duration_seconds`, `metasrv_etcd_errors_total`).
//!
//! Calls go through the [`EtcdPool`]: a dead etcd member costs a retry on another one,
//! within the same timeout, not a failed call. Compare-and-put is retried only when its
//! first attempt surely did not reach etcd (see [`Retry`]).

use std::time::Duration;

use async_trait::async_trait;
use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use handlers::error::KvSnafu;
use handlers::kv::{key_text, BatchOp, KeyValue, KvBackend};
use snafu::IntoError;

use crate::etcd_pool::{EtcdPool, Retry};

const MAX_TXN_OPS: usize = 128;

/// The etcd KV backend.
#[derive(Clone)]
pub struct EtcdKvBackend {
    pool: Arc<EtcdPool>,
    prefix: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdKvBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKvBackend")
            .field("prefix", &key_text(&self.prefix))
            .finish()
    }
}

fn fail(
    op: &'static str,
    key: &[u8],
    err: impl Into<handlers::error::BoxedError>,
) -> handlers::Error {
    KvSnafu {
        backend: "etcd",
        op,
        key: key_text(key),
    }
    .into_error(err.into())
}

impl EtcdKvBackend {
    /// A backend on `pool`, keeping keys under `prefix` (e.g. `/metasrv`).
    pub fn new(pool: Arc<EtcdPool>, prefix: &str, timeout: Duration) -> Self {
        let mut prefix = prefix.trim_end_matches('/').as_bytes().to_vec();
        prefix.push(b'/');
        Self {
            pool,
            prefix,
            timeout,
        }
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// Runs `call` through the pool under the timeout, timed and counted as `op`.
    async fn timed<T, F, Fut>(
        &self,
        op: &'static str,
        key: &[u8],
        retry: Retry,
        call: F,
    ) -> handlers::Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        crate::metrics::etcd_call(op, self.pool.call(op, self.timeout, retry, call))
            .await
            .map_err(|e| fail(op, key, e))
    }
}

#[async_trait]
impl KvBackend for EtcdKvBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &[u8]) -> handlers::Result<Option<Vec<u8>>> {
        let full = self.full(key);
        let resp = self
            .timed("get", key, Retry::Idempotent, |c| {
                let full = full.clone();
                async move { c.kv_client().get(full, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> handlers::Result<()> {
        let full = self.full(key);
        self.timed("put", key, Retry::Idempotent, |c| {
            let (full, value) = (full.clone(), value.to_vec());
            async move { c.kv_client().put(full, value, None).await }
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> handlers::Result<bool> {
        let full = self.full(key);
        // Retried only when unsent: a repeated delete would report "nothing deleted".
        let resp = self
            .timed("delete", key, Retry::OnlyUnsent, |c| {
                let full = full.clone();
                async move { c.kv_client().delete(full, None::<DeleteOptions>).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn range_prefix(&self, prefix: &[u8]) -> handlers::Result<Vec<KeyValue>> {
        let full = self.full(prefix);
        let resp = self
            .timed("range", prefix, Retry::Idempotent, |c| {
                let full = full.clone();
                async move {
                    c.kv_client()
                        .get(full, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let strip = self.prefix.len();
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| KeyValue {
                key: kv.key()[strip..].to_vec(),
                value: kv.value().to_vec(),
            })
            .collect())
    }

    async fn compare_and_put(
        &self,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
    ) -> handlers::Result<bool> {
        let full = self.full(key);
        let cmp = match expect {
            None => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::value(full.clone(), CompareOp::Equal, v.to_vec()),
        };
        let txn = Txn::new()
            .when(vec![cmp])
            .and_then(vec![TxnOp::put(full, value.to_vec(), None)]);
        let resp = self
            .timed("compare_and_put", key, Retry::OnlyUnsent, |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    async fn batch(&self, ops: Vec<BatchOp>) -> handlers::Result<()> {
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let txn_ops: Vec<TxnOp> = chunk
                .iter()
                .map(|op| match op {
                    BatchOp::Put(kv) => TxnOp::put(self.full(&kv.key), kv.value.clone(), None),
                    BatchOp::Delete(key) => TxnOp::delete(self.full(key), None),
                })
                .collect();
            let txn = Txn::new().and_then(txn_ops);
            self.timed("batch", b"(batch)", Retry::Idempotent, |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        }
        Ok(())
    }
}
