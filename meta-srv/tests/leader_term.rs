//! A term's start, in-process over real sockets: a re-elected leader grants nothing
//! before it has reloaded the routes another leader may have changed meanwhile.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fast_options, start_with};
use handlers::{FaultyKv, KvBackend as _, RegionRoute};
use meta_srv::{MetasrvBuilder, StandaloneElection};

fn led_by(leader: u64) -> RegionRoute {
    RegionRoute {
        region_id: 1,
        leader: Some(leader),
        followers: vec![],
        epoch: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_elected_leader_opens_its_gate_only_after_reloading_the_routes() {
    let kv = Arc::new(FaultyKv::new());
    let election = Arc::new(StandaloneElection::new("127.0.0.1:1"));
    let server = start_with(
        MetasrvBuilder::new(fast_options())
            .kv(kv.clone())
            .election(election.clone()),
    )
    .await;
    let ctx = server.srv.context().clone();
    common::eventually("leading", || ctx.leadership.is_leader()).await;
    ctx.routes.put(led_by(1)).await.expect("route");

    // Another leader moves the region while this member follows.
    election.set_leader(false);
    common::eventually("following", || !ctx.leadership.is_leader()).await;
    let moved = serde_json::to_vec(&led_by(2)).expect("encode");
    kv.put(b"__meta/route/1", &moved).await.expect("put");
    kv.slow_ranges(Duration::from_millis(300));

    // Re-elected: the moment the gate opens, the routes are the reloaded ones.
    election.set_leader(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ctx.leadership.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "never led again");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let route = ctx.routes.get(1).await.expect("get").expect("routed");
    assert_eq!(
        route.leader,
        Some(2),
        "the gate opened on the previous term's cached routes"
    );
}
