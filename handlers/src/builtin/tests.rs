//! Unit tests for the built-in handlers, the group and the builder, on the in-memory
//! backends and a manual clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common_proto::v1::{
    ErrorCode, GrantedRegion, HeartbeatRequest, Peer, RegionRole, RegionStat, RequestHeader, Role,
};
use common_proto::PROTOCOL_VERSION;

use super::names::*;
use super::{PersistedStats, StatsCache};
use crate::{
    Context, Error, ErrorPolicy, HandleControl, HandlerGroup, HandlerGroupBuilder,
    HeartbeatAccumulator, HeartbeatHandler, LeaderFlag, LeaseOptions, ManualClock, NodeKey,
    RegionRoute, Result,
};

const CLUSTER: u64 = 1;

struct Fixture {
    ctx: Context,
    clock: Arc<ManualClock>,
    leader: Arc<LeaderFlag>,
    stats: Arc<StatsCache>,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new());
    let leader = Arc::new(LeaderFlag::new(true, Some("127.0.0.1:3002".into())));
    let mut ctx = Context::in_memory(CLUSTER, LeaseOptions::default());
    ctx.clock = clock.clone();
    ctx.leadership = leader.clone();
    Fixture {
        ctx,
        clock,
        leader,
        stats: Arc::new(StatsCache::new(3, 2)),
    }
}

fn request(node_id: u64, role: Role, regions: &[u64], duration: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            node_id,
            role: role as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: format!("127.0.0.1:{}", 4000 + node_id),
        }),
        node_epoch: 100,
        duration_since_epoch: duration,
        region_stats: regions
            .iter()
            .map(|&id| RegionStat {
                region_id: id,
                role: RegionRole::Leader as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn run(group: &HandlerGroup, ctx: &Context, req: &HeartbeatRequest) -> HeartbeatAccumulator {
    let role = req.header.as_ref().map(|h| h.role()).unwrap_or_default();
    let mut acc = HeartbeatAccumulator::new(CLUSTER);
    group.handle(role, req, ctx, &mut acc).await;
    acc
}

/// A handler with a fixed name and behaviour, for builder and policy tests.
struct Probe {
    name: &'static str,
    fail: bool,
    policy: ErrorPolicy,
    roles: &'static [Role],
    calls: Arc<AtomicUsize>,
}

impl Probe {
    fn named(name: &'static str) -> Self {
        Self {
            name,
            fail: false,
            policy: ErrorPolicy::Continue,
            roles: &[Role::Datanode],
            calls: Default::default(),
        }
    }
    fn failing(name: &'static str, policy: ErrorPolicy) -> Self {
        Self {
            fail: true,
            policy,
            ..Self::named(name)
        }
    }
}

#[async_trait]
impl HeartbeatHandler for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn is_acceptable(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
    fn error_policy(&self) -> ErrorPolicy {
        self.policy
    }
    async fn handle(
        &self,
        _: &HeartbeatRequest,
        _: &Context,
        _: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(Error::custom(format!("{} exploded", self.name)));
        }
        Ok(HandleControl::Continue)
    }
}

fn defaults() -> HandlerGroupBuilder {
    HandlerGroupBuilder::with_defaults(Arc::new(StatsCache::default()))
}

#[test]
fn default_order_is_pinned() {
    let group = defaults().build().expect("defaults build");
    assert_eq!(
        group.names(),
        vec![
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS
        ]
    );
}

#[test]
fn builder_inserts_replaces_and_removes_by_name() {
    let names = |b: HandlerGroupBuilder| {
        b.build()
            .expect("valid")
            .names()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(defaults().insert_before(COLLECT_STATS, Probe::named("first"))),
        [
            "first",
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS
        ]
    );
    assert_eq!(
        names(defaults().insert_after(CHECK_LEADER, Probe::named("x"))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            "x",
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS
        ]
    );
    assert_eq!(
        names(defaults().insert_after(PERSIST_STATS, Probe::named("last"))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS,
            "last"
        ]
    );
    assert_eq!(
        names(defaults().insert_before(PERSIST_STATS, Probe::named("y"))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            "y",
            PERSIST_STATS
        ]
    );
    assert_eq!(
        names(defaults().push(Probe::named("tail"))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS,
            "tail"
        ]
    );
    assert_eq!(
        names(defaults().replace(PERSIST_STATS, Probe::named("my_stats"))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            "my_stats"
        ]
    );
    assert_eq!(
        names(defaults().replace(KEEP_LEASE, Probe::named(KEEP_LEASE))),
        [
            COLLECT_STATS,
            CHECK_LEADER,
            KEEP_LEASE,
            REGION_LEASE,
            PERSIST_STATS
        ]
    );
    assert_eq!(
        names(defaults().remove(CHECK_LEADER)),
        [COLLECT_STATS, KEEP_LEASE, REGION_LEASE, PERSIST_STATS]
    );
    assert_eq!(
        names(HandlerGroupBuilder::new().push(Probe::named("only"))),
        ["only"]
    );
}

#[test]
fn unknown_names_are_typed_errors_for_every_operation() {
    let cases = [
        (
            "insert_before",
            defaults().insert_before("nope", Probe::named("a")),
        ),
        (
            "insert_after",
            defaults().insert_after("nope", Probe::named("a")),
        ),
        ("replace", defaults().replace("nope", Probe::named("a"))),
        ("remove", defaults().remove("nope")),
    ];
    for (op, builder) in cases {
        match builder.build() {
            Err(Error::UnknownHandler {
                op: got,
                name,
                known,
            }) => {
                assert_eq!((got, name.as_str()), (op, "nope"));
                assert!(
                    known.contains(KEEP_LEASE),
                    "the error lists known names: {known}"
                );
            }
            other => panic!("{op}: expected UnknownHandler, got {other:?}"),
        }
    }
}

#[test]
fn duplicate_and_empty_names_are_typed_errors() {
    let dup = |b: HandlerGroupBuilder| matches!(b.build(), Err(Error::DuplicateHandler { name }) if name == KEEP_LEASE);
    assert!(dup(defaults().push(Probe::named(KEEP_LEASE))));
    assert!(dup(
        defaults().insert_after(CHECK_LEADER, Probe::named(KEEP_LEASE))
    ));
    assert!(dup(
        defaults().insert_before(CHECK_LEADER, Probe::named(KEEP_LEASE))
    ));
    assert!(dup(
        defaults().replace(REGION_LEASE, Probe::named(KEEP_LEASE))
    ));
    assert!(matches!(
        defaults().push(Probe::named("")).build(),
        Err(Error::EmptyHandlerName)
    ));
    // The first error wins, later operations do not hide it.
    let err = defaults()
        .remove("a")
        .remove("b")
        .build()
        .expect_err("invalid");
    assert!(
        matches!(err, Error::UnknownHandler { ref name, .. } if name == "a"),
        "{err}"
    );
}

#[tokio::test]
async fn role_filtering_skips_handlers_that_do_not_accept_the_role() {
    let f = fixture();
    let frontend_only = Probe {
        roles: &[Role::Frontend],
        ..Probe::named("frontend_only")
    };
    let calls = frontend_only.calls.clone();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .push(frontend_only)
        .build()
        .expect("build");

    let acc = run(&group, &f.ctx, &request(1, Role::Datanode, &[], 1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(
        acc.region_lease.is_some(),
        "region_lease runs for datanodes"
    );

    let acc = run(&group, &f.ctx, &request(2, Role::Frontend, &[], 1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(acc.region_lease.is_none(), "region_lease skips frontends");
    assert!(
        f.ctx
            .node_leases
            .get(NodeKey {
                role: Role::Frontend,
                node_id: 2
            })
            .is_some(),
        "keep_lease accepts frontends"
    );
    let timings = group.timings();
    let region = timings
        .iter()
        .find(|t| t.name == REGION_LEASE)
        .expect("timed");
    assert_eq!(region.calls, 1, "skipped runs are not timed");
}

#[tokio::test]
async fn follower_answers_not_leader_and_stops_the_chain() {
    let f = fixture();
    f.leader.set(false, Some("10.0.0.9:3002".into()));
    let tail = Probe::named("tail");
    let tail_calls = tail.calls.clone();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .push(tail)
        .build()
        .expect("build");
    f.ctx
        .routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![],
        })
        .await
        .expect("route");

    let acc = run(&group, &f.ctx, &request(1, Role::Datanode, &[1], 5)).await;
    assert_eq!(acc.error_code(), Some(ErrorCode::NotLeader));
    assert!(acc
        .error
        .as_ref()
        .expect("error")
        .message
        .contains("10.0.0.9:3002"));
    assert!(acc.region_lease.is_none(), "a follower never grants");
    assert!(
        f.ctx.node_leases.list().is_empty(),
        "a follower never records a lease"
    );
    assert_eq!(tail_calls.load(Ordering::SeqCst), 0, "Done stops the chain");
}

#[tokio::test]
async fn keep_lease_stamps_last_seen_on_the_leader_clock() {
    let f = fixture();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .build()
        .expect("build");
    run(&group, &f.ctx, &request(3, Role::Datanode, &[], 1)).await;
    let first = f
        .ctx
        .node_leases
        .get(NodeKey::datanode(3))
        .expect("recorded")
        .last_seen;
    f.clock.advance(Duration::from_secs(2));
    run(&group, &f.ctx, &request(3, Role::Datanode, &[], 2)).await;
    let lease = f
        .ctx
        .node_leases
        .get(NodeKey::datanode(3))
        .expect("recorded");
    assert_eq!(lease.last_seen - first, Duration::from_secs(2));
    assert_eq!(lease.addr, "127.0.0.1:4003");
}

#[tokio::test]
async fn region_lease_grants_owned_roles_echoes_duration_and_lists_closeable() {
    let f = fixture();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .build()
        .expect("build");
    for route in [
        RegionRoute {
            region_id: 1,
            leader: Some(7),
            followers: vec![8],
        },
        RegionRoute {
            region_id: 2,
            leader: Some(8),
            followers: vec![7],
        },
        RegionRoute {
            region_id: 3,
            leader: Some(8),
            followers: vec![],
        },
    ] {
        f.ctx.routes.put(route).await.expect("route");
    }
    // Region 4 has no route at all.
    let acc = run(
        &group,
        &f.ctx,
        &request(7, Role::Datanode, &[1, 2, 3, 4], 123_456),
    )
    .await;
    assert_eq!(acc.error, None);
    let lease = acc.region_lease.expect("granted");
    assert_eq!(
        lease.regions,
        vec![
            GrantedRegion {
                region_id: 1,
                role: RegionRole::Leader as i32
            },
            GrantedRegion {
                region_id: 2,
                role: RegionRole::Follower as i32
            },
        ]
    );
    assert_eq!(lease.duration_since_epoch, 123_456);
    assert_eq!(lease.lease_seconds, 10);
    assert_eq!(lease.closeable_region_ids, vec![3, 4]);
    assert!(f
        .ctx
        .node_leases
        .get(NodeKey::datanode(7))
        .expect("known")
        .last_granted
        .is_some());
}

#[tokio::test]
async fn a_failing_handler_does_not_cost_the_lease() {
    let f = fixture();
    f.ctx
        .routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(5),
            followers: vec![],
        })
        .await
        .expect("route");
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .insert_before(
            KEEP_LEASE,
            Probe::failing("flaky_quota", ErrorPolicy::Continue),
        )
        .build()
        .expect("build");
    let acc = run(&group, &f.ctx, &request(5, Role::Datanode, &[1], 9)).await;
    assert!(
        f.ctx.node_leases.get(NodeKey::datanode(5)).is_some(),
        "keep_lease still ran"
    );
    assert_eq!(acc.region_lease.as_ref().expect("granted").regions.len(), 1);
    assert_eq!(acc.failures.len(), 1);
    assert_eq!(acc.failures[0].handler, "flaky_quota");
    assert!(acc.failures[0].message.contains("flaky_quota exploded"));
    assert_eq!(acc.error, None, "a Continue failure is not a request error");
    let t = group
        .timings()
        .into_iter()
        .find(|t| t.name == "flaky_quota")
        .expect("timed");
    assert_eq!((t.calls, t.errors), (1, 1));

    // Reported in the response header.
    let resp = acc.into_response();
    assert_eq!(resp.header.expect("header").handler_failures.len(), 1);
}

#[tokio::test]
async fn a_stop_policy_failure_stops_the_chain_with_an_error() {
    let f = fixture();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .insert_before(KEEP_LEASE, Probe::failing("gate", ErrorPolicy::Stop))
        .build()
        .expect("build");
    let acc = run(&group, &f.ctx, &request(5, Role::Datanode, &[], 9)).await;
    assert_eq!(acc.error_code(), Some(ErrorCode::HandlerFailed));
    assert!(f.ctx.node_leases.list().is_empty());
}

#[tokio::test]
async fn collect_stats_rejects_invalid_requests_and_stops() {
    let f = fixture();
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .build()
        .expect("build");
    let mut req = request(5, Role::Datanode, &[1, 1], 9);
    let acc = run(&group, &f.ctx, &req).await;
    assert_eq!(acc.error_code(), Some(ErrorCode::HandlerFailed));
    assert!(acc.failures[0]
        .message
        .contains("region 1 is reported twice"));
    assert!(
        f.ctx.node_leases.list().is_empty(),
        "nothing granted to a bad request"
    );

    req.region_stats.pop();
    let acc = run(&group, &f.ctx, &req).await;
    let stat = acc.stat.expect("parsed");
    assert_eq!(
        (stat.node_id, stat.node_epoch, stat.region_stats.len()),
        (5, 100, 1)
    );
}

/// Runs the flusher once (as the metasrv's background task would), then reads the KV.
async fn flushed(f: &Fixture, node_id: u64) -> Option<PersistedStats> {
    f.stats.flush(&*f.ctx.kv).await.expect("flush");
    persisted(&f.ctx, node_id).await
}

async fn persisted(ctx: &Context, node_id: u64) -> Option<PersistedStats> {
    let raw = ctx
        .kv
        .get(StatsCache::kv_key(NodeKey::datanode(node_id)).as_bytes())
        .await
        .expect("get")?;
    Some(serde_json::from_slice(&raw).expect("valid json"))
}

#[tokio::test]
async fn persist_stats_flushes_in_batches_and_on_epoch_change() {
    let f = fixture(); // flush every 3, keep 2
    let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
        .build()
        .expect("build");
    let mut req = request(9, Role::Datanode, &[], 1);

    run(&group, &f.ctx, &req).await;
    assert!(
        persisted(&f.ctx, 9).await.is_none(),
        "the handler itself never writes"
    );
    assert_eq!(
        f.stats.pending_len(),
        1,
        "the first epoch is marked at once"
    );
    let first = flushed(&f, 9)
        .await
        .expect("the first epoch is flushed at once");
    assert_eq!(first.stat.duration_since_epoch, 1);

    req.duration_since_epoch = 2;
    run(&group, &f.ctx, &req).await;
    req.duration_since_epoch = 3;
    run(&group, &f.ctx, &req).await;
    assert_eq!(
        flushed(&f, 9).await,
        Some(first),
        "no write before the batch is full"
    );

    req.duration_since_epoch = 4;
    run(&group, &f.ctx, &req).await;
    let batch = flushed(&f, 9).await.expect("flushed");
    assert_eq!(
        batch.stat.duration_since_epoch, 4,
        "the latest stat is flushed"
    );
    let recent: Vec<u64> = f
        .stats
        .recent(NodeKey::datanode(9))
        .iter()
        .map(|s| s.duration_since_epoch)
        .collect();
    assert_eq!(recent, vec![3, 4], "memory keeps the last 2");

    // Restart: a newer epoch clears the old stats and flushes at once.
    req.node_epoch = 200;
    req.duration_since_epoch = 1;
    run(&group, &f.ctx, &req).await;
    let restarted = flushed(&f, 9).await.expect("flushed");
    assert_eq!(restarted.node_epoch, 200);
    assert_eq!(restarted.stat.node_epoch, 200);
    assert_eq!(
        f.stats.recent(NodeKey::datanode(9)).len(),
        1,
        "the old epoch was cleared"
    );

    // A stale message from the old epoch is ignored.
    req.node_epoch = 100;
    req.duration_since_epoch = 99;
    run(&group, &f.ctx, &req).await;
    let latest = f.stats.latest(NodeKey::datanode(9)).expect("cached");
    assert_eq!((latest.node_epoch, latest.duration_since_epoch), (200, 1));

    // The shutdown flush writes every node's latest stat, marked or not.
    req.node_epoch = 200;
    req.duration_since_epoch = 2;
    run(&group, &f.ctx, &req).await;
    assert_eq!(f.stats.pending_len(), 0, "not due for a flush yet");
    assert_eq!(f.stats.flush_all(&*f.ctx.kv).await.expect("flush_all"), 1);
    let last = persisted(&f.ctx, 9).await.expect("flushed");
    assert_eq!(last.stat.duration_since_epoch, 2);
}
