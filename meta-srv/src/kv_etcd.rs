//! [`EtcdKvBackend`]: the [`KvBackend`] port on etcd.
//!
//! Every key is stored under a prefix, so several clusters can share one etcd.
//! Compare-and-put is one txn (absent: `create_revision == 0`; present: value equality).
//! A batch is one txn; etcd caps a txn at 128 operations by default, so a larger batch is
//! applied in 128-op chunks, each atomic. Every call has a timeout, so a partitioned etcd
//! fails a call instead of hanging a handler, and is timed and counted by operation
//! (`metasrv_etcd_request_duration_seconds`, `metasrv_etcd_errors_total`).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use handlers::error::KvSnafu;
use handlers::kv::{key_text, BatchOp, KeyValue, KvBackend};
use snafu::IntoError;

const MAX_TXN_OPS: usize = 128;

/// The etcd KV backend.
#[derive(Clone)]
pub struct EtcdKvBackend {
    client: Client,
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
    /// A backend on `client`, keeping keys under `prefix` (e.g. `/metasrv`).
    pub fn new(client: Client, prefix: &str, timeout: Duration) -> Self {
        let mut prefix = prefix.trim_end_matches('/').as_bytes().to_vec();
        prefix.push(b'/');
        Self {
            client,
            prefix,
            timeout,
        }
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        key: &[u8],
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> handlers::Result<T> {
        crate::metrics::etcd_call(op, async {
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(fail(op, key, e)),
                Err(_) => Err(fail(op, key, format!("timed out after {:?}", self.timeout))),
            }
        })
        .await
    }
}

#[async_trait]
impl KvBackend for EtcdKvBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &[u8]) -> handlers::Result<Option<Vec<u8>>> {
        let mut kv = self.client.kv_client();
        let resp = self.timed("get", key, kv.get(self.full(key), None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> handlers::Result<()> {
        let mut kv = self.client.kv_client();
        self.timed("put", key, kv.put(self.full(key), value.to_vec(), None))
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> handlers::Result<bool> {
        let mut kv = self.client.kv_client();
        let resp = self
            .timed(
                "delete",
                key,
                kv.delete(self.full(key), None::<DeleteOptions>),
            )
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn range_prefix(&self, prefix: &[u8]) -> handlers::Result<Vec<KeyValue>> {
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new().with_prefix();
        let resp = self
            .timed("range", prefix, kv.get(self.full(prefix), Some(opts)))
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
        let mut kv = self.client.kv_client();
        let resp = self.timed("compare_and_put", key, kv.txn(txn)).await?;
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
            let mut kv = self.client.kv_client();
            self.timed("batch", b"(batch)", kv.txn(Txn::new().and_then(txn_ops)))
                .await?;
        }
        Ok(())
    }
}
