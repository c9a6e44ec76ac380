//! The [`KvBackend`] conformance suite: one set of checks that every backend must pass,
//! so the memory and etcd backends cannot drift apart. Public so `meta-srv` runs it
//! against a real etcd.
//!
//! Each check uses its own key prefix and cleans up, so one backend instance can run them
//! all in sequence. Failures panic with the operation named.

use super::{BatchOp, KeyValue, KvBackend};

/// Runs every check against `kv`.
pub async fn run_all(kv: &impl KvBackend) {
    put_get_delete(kv).await;
    range_prefix_is_ordered_and_bounded(kv).await;
    compare_and_put_has_one_winner(kv).await;
    batch_applies_all(kv).await;
}

/// Put then get returns the value; delete reports existence.
pub async fn put_get_delete(kv: &impl KvBackend) {
    kv.put(b"conf/a", b"1").await.expect("put");
    assert_eq!(kv.get(b"conf/a").await.expect("get"), Some(b"1".to_vec()));
    kv.put(b"conf/a", b"2").await.expect("overwrite");
    assert_eq!(kv.get(b"conf/a").await.expect("get"), Some(b"2".to_vec()));
    assert!(kv.delete(b"conf/a").await.expect("delete"));
    assert!(!kv.delete(b"conf/a").await.expect("delete absent"));
    assert_eq!(kv.get(b"conf/a").await.expect("get absent"), None);
}

/// A prefix range returns exactly the keys under the prefix, in key order.
pub async fn range_prefix_is_ordered_and_bounded(kv: &impl KvBackend) {
    for key in ["range/b", "range/a", "range/c", "rangf/x", "rang"] {
        kv.put(key.as_bytes(), key.as_bytes()).await.expect("put");
    }
    let keys: Vec<Vec<u8>> = kv
        .range_prefix(b"range/")
        .await
        .expect("range")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            b"range/a".to_vec(),
            b"range/b".to_vec(),
            b"range/c".to_vec()
        ]
    );
    for key in ["range/b", "range/a", "range/c", "rangf/x", "rang"] {
        kv.delete(key.as_bytes()).await.expect("cleanup");
    }
    assert!(kv.range_prefix(b"range/").await.expect("range").is_empty());
}

/// Compare-and-put writes only on a match; absent means `None`.
pub async fn compare_and_put_has_one_winner(kv: &impl KvBackend) {
    assert!(kv
        .compare_and_put(b"cas/k", None, b"v1")
        .await
        .expect("cas create"));
    assert!(!kv
        .compare_and_put(b"cas/k", None, b"v2")
        .await
        .expect("cas create again"));
    assert!(!kv
        .compare_and_put(b"cas/k", Some(b"wrong"), b"v2")
        .await
        .expect("cas mismatch"));
    assert!(kv
        .compare_and_put(b"cas/k", Some(b"v1"), b"v2")
        .await
        .expect("cas match"));
    assert_eq!(kv.get(b"cas/k").await.expect("get"), Some(b"v2".to_vec()));
    kv.delete(b"cas/k").await.expect("cleanup");
}

/// A batch of puts and deletes is applied whole.
pub async fn batch_applies_all(kv: &impl KvBackend) {
    kv.put(b"batch/gone", b"x").await.expect("put");
    kv.batch(vec![
        BatchOp::Put(KeyValue {
            key: b"batch/1".to_vec(),
            value: b"a".to_vec(),
        }),
        BatchOp::Put(KeyValue {
            key: b"batch/2".to_vec(),
            value: b"b".to_vec(),
        }),
        BatchOp::Delete(b"batch/gone".to_vec()),
    ])
    .await
    .expect("batch");
    let got = kv.range_prefix(b"batch/").await.expect("range");
    assert_eq!(
        got,
        vec![
            KeyValue {
                key: b"batch/1".to_vec(),
                value: b"a".to_vec()
            },
            KeyValue {
                key: b"batch/2".to_vec(),
                value: b"b".to_vec()
            },
        ]
    );
    kv.batch(vec![
        BatchOp::Delete(b"batch/1".to_vec()),
        BatchOp::Delete(b"batch/2".to_vec()),
    ])
    .await
    .expect("batch delete");
    assert!(kv.range_prefix(b"batch/").await.expect("range").is_empty());
}
