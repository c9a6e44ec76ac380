//! The etcd KV backend and election against a real etcd process.

use std::sync::Arc;
use std::time::Duration;

use handlers::kv::conformance;
use handlers::KvBackend;
use meta_srv::election::EtcdElection;
use meta_srv::etcd_pool::{EtcdPool, PoolOptions};
use meta_srv::kv_etcd::EtcdKvBackend;
use meta_srv::CancellationToken;
use meta_srv::Election;
use tests::etcd::EtcdProc;
use tests::{always_for, eventually};

async fn client(etcd: &EtcdProc) -> Arc<EtcdPool> {
    let opts = PoolOptions::for_meta_lease(Duration::from_secs(2));
    Arc::new(
        EtcdPool::connect(&[etcd.endpoint()], &opts)
            .await
            .expect("connect etcd"),
    )
}

#[tokio::test]
async fn the_etcd_backend_passes_the_conformance_suite_and_keeps_prefixes_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProc::start(dir.path());
    let c = client(&etcd).await;
    let a = EtcdKvBackend::new(c.clone(), "/cluster-a", Duration::from_secs(2));
    let b = EtcdKvBackend::new(c, "/cluster-b", Duration::from_secs(2));
    conformance::run_all(&a).await;
    a.put(b"shared/key", b"from a").await.expect("put");
    assert_eq!(
        b.get(b"shared/key").await.expect("get"),
        None,
        "prefixes keep clusters apart"
    );
    assert_eq!(
        a.range_prefix(b"shared/").await.expect("range")[0].key,
        b"shared/key".to_vec(),
        "keys come back without the prefix"
    );
    // A batch larger than one etcd txn (128 ops) still applies.
    let ops = (0..300)
        .map(|i| {
            handlers::BatchOp::Put(handlers::KeyValue {
                key: format!("big/{i:03}").into_bytes(),
                value: b"v".to_vec(),
            })
        })
        .collect();
    a.batch(ops).await.expect("large batch");
    assert_eq!(a.range_prefix(b"big/").await.expect("range").len(), 300);
}

#[tokio::test]
async fn a_killed_etcd_fails_calls_with_a_clear_error_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = EtcdProc::start(dir.path());
    let kv = EtcdKvBackend::new(client(&etcd).await, "/x", Duration::from_millis(500));
    kv.put(b"k", b"v").await.expect("put");
    etcd.kill();
    let err = kv.get(b"k").await.expect_err("etcd is gone");
    assert!(
        err.to_string().contains("etcd KV backend failed to get"),
        "{err}"
    );
}

fn election(c: &Arc<EtcdPool>, addr: &str) -> Arc<EtcdElection> {
    Arc::new(EtcdElection::new(
        c.clone(),
        "/elect",
        addr,
        Duration::from_secs(2),
        Duration::from_millis(200),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_candidate_leads_a_resign_hands_over_and_a_stale_resign_ends_no_later_term() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdProc::start(dir.path());
    let c = client(&etcd).await;
    let (a, b) = (election(&c, "a:1"), election(&c, "b:1"));
    assert_eq!(
        a.leader_addr().await.expect("no leader is not an error"),
        None
    );
    let stop = CancellationToken::new();
    tokio::spawn({
        let (a, s) = (a.clone(), stop.clone());
        async move { a.run(s).await }
    });
    eventually("a leads", Duration::from_secs(10), || async {
        a.leadership().is_leader().then_some(())
    })
    .await;
    tokio::spawn({
        let (b, s) = (b.clone(), stop.clone());
        async move { b.run(s).await }
    });
    eventually("b sees a", Duration::from_secs(10), || async {
        (b.leader_addr().await.ok()? == Some("a:1".into())).then_some(())
    })
    .await;
    assert!(!b.leadership().is_leader());
    eventually(
        "both candidates registered",
        Duration::from_secs(10),
        || async {
            let members = a.members().await.ok()?;
            let has = |addr: &str| members.iter().any(|m| m.addr == addr);
            (has("a:1") && has("b:1")).then_some(())
        },
    )
    .await;

    // Resign: b takes over without waiting for a's lease to expire. The mechanism, not
    // a timing: the moment resign returns, etcd no longer names a (an expiry would leave
    // a's key in place for up to a TTL).
    a.resign().await.expect("resign");
    assert!(!a.leadership().is_leader(), "a stops leading at once");
    let named = c
        .pick()
        .1
        .leader("/elect/__election")
        .await
        .ok()
        .and_then(|r| r.kv().map(|kv| kv.value().to_vec()));
    assert_ne!(
        named.as_deref(),
        Some(&b"a:1"[..]),
        "a's election key was deleted by the resign"
    );
    eventually("b leads", Duration::from_secs(10), || async {
        b.leadership().is_leader().then_some(())
    })
    .await;
    // One term for the cluster: a, now a follower, learns b and b's term from watching
    // the election, and it is the term b itself reports.
    let b_term = b.leader().await.expect("leader").expect("b leads").term;
    assert!(
        b_term > 0,
        "the term is etcd's revision of b's election key"
    );
    eventually("a learns b's term", Duration::from_secs(10), || async {
        let seen = a.subscribe().borrow().clone();
        (seen.leader_addr.as_deref() == Some("b:1") && seen.term == b_term).then_some(())
    })
    .await;

    // b resigns; a (campaigning again) wins, and must keep leading: the earlier resign
    // of a must not end this new term.
    b.resign().await.expect("resign");
    eventually("a leads again", Duration::from_secs(10), || async {
        a.leadership().is_leader().then_some(())
    })
    .await;
    // Longer than the lease: every keep-alive renews it, and the stale resign ends nothing.
    always_for("a's new term survives", Duration::from_secs(3), || async {
        a.leadership().is_leader()
    })
    .await;
    let again = b.leader().await.expect("leader").expect("a leads");
    assert_eq!(again.addr, "a:1");
    assert!(again.term > b_term, "a later leader has a larger term");
    stop.cancel();
}
