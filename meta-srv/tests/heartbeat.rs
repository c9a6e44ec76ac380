//! Heartbeat sessions over real loopback sockets: handshake, leases, leadership,
//! reconnects, half-open streams and many nodes at once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, fast_options, start, start_with, FakeNode};
use common_proto::v1::{ErrorCode, GrantedRegion, RegionRole};
use handlers::{NodeKey, RegionRoute};
use meta_srv::{MetasrvBuilder, StandaloneElection};

#[tokio::test]
async fn the_first_response_carries_the_handshake_config_and_later_ones_do_not() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    let first = node.heartbeat(&[]).await.expect("first response");
    let config = first.heartbeat_config.expect("handshake config");
    assert_eq!(config.heartbeat_interval_ms, 500);
    assert!(config.retry_interval_ms > 0 && config.retry_interval_ms <= 500);
    let second = node.heartbeat(&[]).await.expect("second response");
    assert!(second.heartbeat_config.is_none());
    server.stop().await;
}

#[tokio::test]
async fn leases_are_granted_for_owned_regions_only() {
    let server = start(fast_options()).await;
    let routes = &server.srv.context().routes;
    routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![2],
            epoch: 1,
        })
        .await
        .expect("route");
    routes
        .put(RegionRoute {
            region_id: 2,
            leader: Some(2),
            followers: vec![],
            epoch: 1,
        })
        .await
        .expect("route");

    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    let req = node.request(&[1, 2, 3]);
    let sent_duration = req.duration_since_epoch;
    let resp = node.send_and_wait(req).await.expect("response");
    let lease = resp.region_lease.expect("lease");
    assert_eq!(
        lease.regions,
        vec![GrantedRegion {
            region_id: 1,
            role: RegionRole::Leader as i32,
            epoch: 1,
        }]
    );
    assert_eq!(lease.closeable_region_ids, vec![2, 3]);
    assert_eq!(lease.duration_since_epoch, sent_duration);
    assert_eq!(lease.lease_seconds, 2);

    let mut follower = FakeNode::connect(server.addr, 2, 100).await;
    let lease = follower
        .heartbeat(&[1])
        .await
        .expect("response")
        .region_lease
        .expect("lease");
    assert_eq!(
        lease.regions,
        vec![
            GrantedRegion {
                region_id: 1,
                role: RegionRole::Follower as i32,
                epoch: 1,
            },
            // Led by node 2 but not reported: granted, so the node opens it.
            GrantedRegion {
                region_id: 2,
                role: RegionRole::Leader as i32,
                epoch: 1,
            },
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_follower_answers_not_leader_and_losing_leadership_closes_streams() {
    let election = Arc::new(StandaloneElection::new("127.0.0.1:1"));
    let server = start_with(MetasrvBuilder::new(fast_options()).election(election.clone())).await;
    server
        .srv
        .context()
        .routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![],
            epoch: 1,
        })
        .await
        .expect("route");
    let mut open = FakeNode::connect(server.addr, 1, 100).await;
    assert!(open
        .heartbeat(&[1])
        .await
        .expect("ok")
        .region_lease
        .is_some());

    election.set_leader(false);
    // The open stream is closed with a status that says why.
    let status = loop {
        match open.recv().await {
            Err(status) => break status,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
        }
    };
    assert!(status.message().contains("not leader"), "{status:?}");

    // A new stream to the follower gets NOT_LEADER in the header, and no lease.
    let mut node = FakeNode::connect(server.addr, 2, 100).await;
    let resp = node.heartbeat(&[1]).await.expect("response");
    let error = resp.header.expect("header").error.expect("error");
    assert_eq!(error.code(), ErrorCode::NotLeader);
    assert!(resp.region_lease.is_none());
    assert!(
        server.srv.context().node_leases.list().is_empty(),
        "leader state was dropped"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reconnect_replaces_the_old_session_and_its_cleanup_spares_the_new_pusher() {
    let server = start(fast_options()).await;
    let mut old = FakeNode::connect(server.addr, 7, 100).await;
    old.heartbeat(&[]).await.expect("old ok");
    let old_gen = server
        .srv
        .pushers()
        .get(NodeKey::datanode(7))
        .expect("pusher")
        .generation();

    let mut new = FakeNode::connect(server.addr, 7, 100).await;
    new.heartbeat(&[]).await.expect("new ok");
    let status = old.recv().await.expect_err("old stream closed");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(
        status.message().contains("replaced by a newer stream"),
        "{status:?}"
    );
    drop(old);

    // After the old session's cleanup has run, the new pusher is still registered.
    let pushers = server.srv.pushers().clone();
    eventually("new pusher registered", || {
        pushers
            .get(NodeKey::datanode(7))
            .is_some_and(|p| p.generation() > old_gen)
    })
    .await;
    assert_eq!(server.srv.mailbox().pending_len(), 0);
    new.heartbeat(&[]).await.expect("new stream still served");
    assert!(pushers.get(NodeKey::datanode(7)).is_some());
    server.stop().await;
}

/// On the real clock: the metasrv runs the whole time (a paused clock's jump would look
/// like a stall of the metasrv itself, which grants a grace instead; see the next test),
/// and the stream's HTTP/2 keep-alives must keep flowing.
#[tokio::test]
async fn a_half_open_stream_is_expired_after_the_node_lease() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 3, 100).await;
    node.heartbeat(&[]).await.expect("response");
    let leases = server.srv.context().node_leases.clone();
    assert!(!leases.get(NodeKey::datanode(3)).expect("known").expired);

    // The node stops sending but keeps its stream open.
    eventually("node 3 expired", || {
        leases.get(NodeKey::datanode(3)).is_some_and(|l| l.expired)
    })
    .await;
    assert!(
        server.srv.pushers().get(NodeKey::datanode(3)).is_some(),
        "its stream is still open"
    );

    // A heartbeat revives it.
    node.heartbeat(&[]).await.expect("response");
    assert!(!leases.get(NodeKey::datanode(3)).expect("known").expired);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_metasrv_grants_a_grace_instead_of_expiring_every_node() {
    let server = start(fast_options()).await;
    let mut node = FakeNode::connect(server.addr, 4, 100).await;
    node.heartbeat(&[]).await.expect("response");
    let leases = server.srv.context().node_leases.clone();
    // The whole process stops for longer than the node lease (as under SIGSTOP): no task
    // runs, and the clock jumps.
    tokio::time::advance(Duration::from_secs(5)).await;
    // Let the sweeper run its delayed ticks; the node is not expired, but given a grace
    // from the moment the metasrv resumed.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = leases.get(NodeKey::datanode(4)).expect("known");
    assert!(!lease.expired, "our own stall is not the node's failure");
    // Silence after the grace is still noticed.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("node 4 expired after a node lease of real silence", || {
        leases.get(NodeKey::datanode(4)).is_some_and(|l| l.expired)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_datanodes_are_all_served() {
    let server = start(fast_options()).await;
    for id in 1..=100u64 {
        server
            .srv
            .context()
            .routes
            .put(RegionRoute {
                region_id: id,
                leader: Some(id),
                followers: vec![],
                epoch: 1,
            })
            .await
            .expect("route");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in 1..=100u64 {
        let addr = server.addr;
        tasks.spawn(async move {
            let mut node = FakeNode::connect(addr, id, 100).await;
            let mut granted = 0;
            for _ in 0..5 {
                let lease = node
                    .heartbeat(&[id])
                    .await
                    .expect("served")
                    .region_lease
                    .expect("lease");
                granted += lease.regions.len();
            }
            (id, granted)
        });
    }
    let mut done = 0;
    while let Some(res) = tasks.join_next().await {
        let (id, granted) = res.expect("task");
        assert_eq!(granted, 5, "node {id} granted on every heartbeat");
        done += 1;
    }
    assert_eq!(done, 100);
    assert_eq!(server.srv.context().node_leases.list().len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn ask_leader_names_the_advertised_address() {
    let mut options = fast_options();
    options.server_addr = "10.1.2.3:3002".into();
    let server = start(options).await;
    let mut client = common_proto::v1::heartbeat_client::HeartbeatClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("connect");
    let resp = client
        .ask_leader(common_proto::v1::AskLeaderRequest::default())
        .await
        .expect("ask")
        .into_inner();
    assert_eq!(resp.leader.expect("leader").addr, "10.1.2.3:3002");
    server.stop().await;
}

/// A handler last in the chain that ends this member's leadership while the chain runs
/// (a slow handler outliving the deadline, a process paused mid-chain).
#[derive(Debug)]
struct LosesLeadership(Arc<StandaloneElection>);

#[async_trait::async_trait]
impl handlers::HeartbeatHandler for LosesLeadership {
    fn name(&self) -> &str {
        "loses_leadership"
    }

    fn is_acceptable(&self, role: common_proto::v1::Role) -> bool {
        role == common_proto::v1::Role::Datanode
    }

    async fn handle(
        &self,
        _hb: &handlers::Heartbeat,
        _ctx: &handlers::Context,
        _acc: &mut handlers::HeartbeatAccumulator,
    ) -> handlers::Result<handlers::HandleControl> {
        self.0.set_leader(false);
        Ok(handlers::HandleControl::Continue)
    }
}

#[tokio::test]
async fn a_grant_decided_by_a_leader_that_lapsed_during_the_chain_never_leaves() {
    let election = Arc::new(StandaloneElection::new("127.0.0.1:1"));
    let loses = LosesLeadership(election.clone());
    let builder = MetasrvBuilder::new(fast_options())
        .election(election.clone())
        .handlers(move |b| b.push(loses));
    let server = start_with(builder).await;
    server
        .srv
        .context()
        .routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![],
            epoch: 1,
        })
        .await
        .expect("route");
    let mut node = FakeNode::connect(server.addr, 1, 100).await;
    // CheckLeader passed at the start of the chain; leadership ended before the end.
    match node.heartbeat(&[1]).await {
        Ok(resp) => {
            assert!(
                resp.region_lease.is_none(),
                "a lease granted after leadership lapsed: {resp:?}"
            );
            let code = resp.header.and_then(|h| h.error).map(|e| e.code);
            assert_eq!(code, Some(ErrorCode::NotLeader as i32));
        }
        // The stream closed on the step-down before the response: nothing granted either.
        Err(status) => assert!(status.message().contains("not leader"), "{status:?}"),
    }
}
