//! The migration procedure and the region supervisor against an in-process metasrv on
//! real loopback streams, with scripted datanodes (`Node`): every step in order, the
//! rollback, the lease wait that S1 needs, the storage check, and the supervisor's choice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{admin, admin_at, eventually, fast_options, start, FakeNode, TestServer};
use common_proto::{Instruction, InstructionReply, JsonPayload, RegionReply};
use handlers::RegionRoute;
use meta_srv::procedure::migration::{MigrationError, MigrationReason, Step};
use meta_srv::MetasrvOptions;
use parking_lot::Mutex;
use tokio::time::Instant;

/// What a scripted node does with an instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Refuse,
}

/// A scripted datanode: heartbeats every 200 ms reporting `regions` (on shared storage
/// unless told otherwise), answers every instruction as `answer` says, and logs them.
struct Node {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(
        server: &TestServer,
        id: u64,
        regions: &[u64],
        shared: bool,
        answer: Answer,
        log: Arc<Mutex<Vec<(u64, Instruction)>>>,
    ) -> Node {
        let mut fake = FakeNode::connect(server.addr, id, 100).await;
        let regions = Arc::new(Mutex::new(regions.to_vec()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (r, l) = (regions, log);
        let request = move |fake: &mut FakeNode, r: &Mutex<Vec<u64>>| {
            let mut req = fake.request(&r.lock());
            req.shared_storage = shared;
            for s in &mut req.region_stats {
                s.shared_storage = shared;
            }
            req
        };
        let first = request(&mut fake, &r);
        fake.send_and_wait(first).await.expect("registered");
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {
                        let req = request(&mut fake, &r);
                        fake.send(req).await;
                    }
                    msg = fake.rx.message() => {
                        let Ok(Some(resp)) = msg else { return };
                        let Some(m) = resp.mailbox_message else { continue };
                        let Ok(ins) = Instruction::from_mailbox_message(&m) else { continue };
                        l.lock().push((id, ins.clone()));
                        let ok = answer == Answer::Ok;
                        let rr = RegionReply { region_id: ins.region_id(), ok, error: (!ok).then(|| "refused by the script".to_string()) };
                        let reply = match ins {
                            Instruction::OpenRegion { .. } => InstructionReply::OpenRegion(rr),
                            Instruction::CloseRegion(_) => InstructionReply::CloseRegion(rr),
                            Instruction::DowngradeRegion(_) => InstructionReply::DowngradeRegion(rr),
                            Instruction::UpgradeRegion { .. } => InstructionReply::UpgradeRegion(rr),
                        };
                        let mut req = request(&mut fake, &r);
                        req.mailbox_message = reply.to_mailbox_message(m.id, "dn", &m.from).ok();
                        fake.send(req).await;
                    }
                }
            }
        });
        Node { stop, task }
    }

    /// Stops heartbeating and closes the stream, as a SIGKILL would.
    async fn kill(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn options() -> MetasrvOptions {
    MetasrvOptions {
        // Procedures are driven by hand here; the supervisor test turns it on.
        region_failover: false,
        ..fast_options()
    }
}

async fn route(server: &TestServer, region_id: u64) -> RegionRoute {
    server
        .srv
        .context()
        .routes
        .get(region_id)
        .await
        .expect("get")
        .expect("route")
}

async fn put_route(server: &TestServer, region_id: u64, leader: u64) {
    server
        .srv
        .context()
        .routes
        .put(RegionRoute {
            region_id,
            leader: Some(leader),
            followers: vec![],
            epoch: 1,
        })
        .await
        .expect("route");
}

/// Region 5 led by node 1, with nodes 2 and 3 alive and empty; node 1 dies, so a move of
/// region 5 fences, then waits out node 1's lease (about 2.5 s).
async fn dead_owner(server: &TestServer) -> (Arc<Mutex<Vec<(u64, Instruction)>>>, [Node; 2]) {
    put_route(server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(server, 2, &[], true, Answer::Ok, log.clone()).await;
    let n3 = Node::start(server, 3, &[], true, Answer::Ok, log.clone()).await;
    n1.kill().await;
    (log, [n2, n3])
}

fn subjects(log: &Mutex<Vec<(u64, Instruction)>>) -> Vec<(u64, &'static str)> {
    log.lock().iter().map(|(n, i)| (*n, i.subject())).collect()
}

#[tokio::test]
async fn a_live_migration_opens_fences_downgrades_switches_and_upgrades_in_that_order() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Ok, log.clone()).await;
    let migrations = server.srv.migrations().clone();
    let state = migrations
        .start(5, Some(2), MigrationReason::Manual)
        .await
        .expect("started");
    assert_eq!((state.from, state.to), (Some(1), 2));
    // A second one for the same region is refused while the first runs.
    assert!(matches!(
        migrations.start(5, Some(2), MigrationReason::Manual).await,
        Err(MigrationError::AlreadyMigrating { .. }) | Err(MigrationError::BadTarget { .. })
    ));
    let done = migrations
        .wait(5, Duration::from_secs(10))
        .await
        .expect("finished");
    assert_eq!(done.step, Step::Done);
    assert_eq!(done.released_by.as_deref(), Some("downgraded"));
    assert_eq!(
        subjects(&log),
        vec![
            (2, "open_region"),
            (1, "downgrade_region"),
            (2, "upgrade_region")
        ]
    );
    assert_eq!(
        route(&server, 5).await,
        RegionRoute {
            region_id: 5,
            leader: Some(2),
            followers: vec![],
            epoch: 2,
        }
    );
    assert!(migrations.in_flight(5).await.is_none(), "its state is gone");
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_target_that_cannot_open_the_region_rolls_the_route_back() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Refuse, log.clone()).await;
    let migrations = server.srv.migrations().clone();
    migrations
        .start(5, Some(2), MigrationReason::Manual)
        .await
        .expect("started");
    let done = migrations
        .wait(5, Duration::from_secs(10))
        .await
        .expect("finished");
    assert_eq!(done.step, Step::RolledBack);
    assert_eq!(
        route(&server, 5).await,
        RegionRoute {
            region_id: 5,
            leader: Some(1),
            followers: vec![],
            epoch: 1,
        },
        "the route is as it was"
    );
    assert_eq!(
        subjects(&log),
        vec![(2, "open_region"), (2, "close_region")],
        "the old owner was never touched"
    );
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_owner_is_waited_out_for_its_whole_lease_before_the_switch() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Ok, log.clone()).await;
    // Node 1 dies right after a grant.
    n1.kill().await;
    let last_grant = server
        .srv
        .context()
        .node_leases
        .get(handlers::NodeKey::datanode(1))
        .and_then(|l| l.last_granted)
        .expect("granted");
    let safe_at = last_grant + Duration::from_secs(2) + Duration::from_millis(500);
    let migrations = server.srv.migrations().clone();
    migrations
        .start(5, Some(2), MigrationReason::Failover)
        .await
        .expect("started");
    // S1: until the old lease surely lapsed, the route never names the target.
    while Instant::now() < safe_at - Duration::from_millis(50) {
        assert_ne!(
            route(&server, 5).await.leader,
            Some(2),
            "switched too early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = migrations
        .wait(5, Duration::from_secs(10))
        .await
        .expect("finished");
    assert_eq!(done.released_by.as_deref(), Some("lease waited out"));
    assert_eq!(route(&server, 5).await.leader, Some(2));
    assert!(
        !subjects(&log).contains(&(1, "downgrade_region")),
        "a dead owner is not asked"
    );
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_region_on_local_storage_is_not_moved() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], false, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Ok, log.clone()).await;
    // Wait until node 1's report is in the stats.
    let stats = server.srv.stats().clone();
    eventually("node 1 reported region 5", || {
        stats
            .latest(handlers::NodeKey::datanode(1))
            .is_some_and(|s| s.region_stats.iter().any(|r| r.region_id == 5))
    })
    .await;
    let err = server
        .srv
        .migrations()
        .start(5, Some(2), MigrationReason::Manual)
        .await
        .expect_err("local-only");
    assert!(
        matches!(err, MigrationError::LocalOnly { .. }) && err.to_string().contains("local"),
        "{err}"
    );
    assert!(log.lock().is_empty(), "nothing was instructed");
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn the_supervisor_moves_a_silent_nodes_regions_to_the_least_loaded_live_node() {
    let server = start(MetasrvOptions {
        region_failover: true,
        ..fast_options()
    })
    .await;
    put_route(&server, 5, 1).await;
    put_route(&server, 6, 2).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[6], true, Answer::Ok, log.clone()).await;
    let n3 = Node::start(&server, 3, &[], true, Answer::Ok, log.clone()).await;
    // Past the supervisor's grace of one node lease (2 s) with everyone heartbeating.
    let srv = server.srv.clone();
    let start = Instant::now();
    eventually("the grace passed", || {
        start.elapsed() > Duration::from_millis(2_500)
    })
    .await;
    assert!(
        srv.supervisor().failed_nodes().is_empty(),
        "no one failed yet"
    );
    n1.kill().await;
    let migrations = srv.migrations().clone();
    eventually("region 5 failed over", || {
        migrations
            .history()
            .iter()
            .any(|s| s.region_id == 5 && s.step == Step::Done)
    })
    .await;
    assert_eq!(
        route(&server, 5).await.leader,
        Some(3),
        "the least loaded, never node 1"
    );
    assert_eq!(
        route(&server, 6).await.leader,
        Some(2),
        "a live node's region stays"
    );
    assert_eq!(srv.supervisor().failed_nodes(), vec![1]);
    n2.kill().await;
    n3.kill().await;
    server.stop().await;
}

/// A server with failover on, region 5 led by node 1 (on shared storage if
/// `shared_1`), and nodes 1 and 2 (shared) heartbeating; with the log of what they were
/// told.
async fn failover_pair(
    shared_1: bool,
) -> (TestServer, Node, Node, Arc<Mutex<Vec<(u64, Instruction)>>>) {
    let server = start(MetasrvOptions {
        region_failover: true,
        ..fast_options()
    })
    .await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], shared_1, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Ok, log.clone()).await;
    (server, n1, n2, log)
}

/// Waits past the supervisor's grace of one node lease (2 s).
async fn past_the_grace() {
    let start = Instant::now();
    eventually("the grace passed", || {
        start.elapsed() > Duration::from_millis(2_500)
    })
    .await;
}

/// Asserts on every poll for `window` that region 5 is led by node 1, with no move.
async fn stays_on_node_1(server: &TestServer, window: Duration) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert_eq!(route(server, 5).await.leader, Some(1), "region 5 moved");
        assert!(
            server.srv.migrations().in_flight(5).await.is_none(),
            "a move of region 5 started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Maintenance mode pauses automatic failover: a silent node is judged failed, and
/// nothing of it moves until the mode is lifted.
#[tokio::test]
async fn maintenance_mode_keeps_a_failed_nodes_regions_where_they_are_until_lifted() {
    let (server, n1, n2, _) = failover_pair(true).await;
    let srv = server.srv.clone();
    srv.maintenance().set(true).await.expect("maintenance on");
    n1.kill().await;
    eventually("node 1 judged failed", || {
        srv.supervisor().failed_nodes() == vec![1]
    })
    .await;
    // Well past the failover's lease wait (2.5 s): still where it was.
    stays_on_node_1(&server, Duration::from_secs(4)).await;
    srv.maintenance().set(false).await.expect("maintenance off");
    let migrations = srv.migrations().clone();
    eventually("region 5 failed over once lifted", || {
        migrations
            .history()
            .iter()
            .any(|s| s.region_id == 5 && s.step == Step::Done)
    })
    .await;
    assert_eq!(route(&server, 5).await.leader, Some(2));
    n2.kill().await;
    server.stop().await;
}

/// A stall of the leader's own (here the whole runtime, blocked for longer than the
/// silence limit) is not the nodes' silence: the supervisor judges nobody on that gap.
#[tokio::test]
async fn a_stall_of_the_leaders_own_fails_over_nothing() {
    let (server, n1, n2, _) = failover_pair(true).await;
    let srv = server.srv.clone();
    past_the_grace().await;
    // Every task of this process stops for 4 s (a SIGSTOP, a starved runtime).
    std::thread::sleep(Duration::from_secs(4));
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            srv.supervisor().failed_nodes().is_empty(),
            "judged on its own stall"
        );
        stays_on_node_1(&server, Duration::from_millis(20)).await;
    }
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_dead_nodes_local_only_region_is_reported_unavailable_not_moved() {
    let (server, n1, n2, log) = failover_pair(false).await;
    let srv = server.srv.clone();
    past_the_grace().await;
    n1.kill().await;
    eventually("region 5 reported unavailable", || {
        srv.supervisor().unavailable().contains_key(&5)
    })
    .await;
    let reason = srv.supervisor().unavailable()[&5].clone();
    assert!(reason.contains("local storage"), "{reason}");
    let (code, body) = reqwest::get(server.url("/regions"))
        .await
        .expect("GET /regions")
        .json::<serde_json::Value>()
        .await
        .map(|b| (200, b))
        .expect("json");
    assert_eq!(code, 200);
    assert_eq!(body[0]["availability"], "unavailable", "{body}");
    assert!(
        body[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("local")),
        "{body}"
    );
    assert_eq!(
        route(&server, 5).await.leader,
        Some(1),
        "not moved to an empty copy"
    );
    assert!(log.lock().is_empty(), "nothing was instructed");
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_region_never_moves_to_a_node_without_shared_storage() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], false, Answer::Ok, log.clone()).await;
    let migrations = server.srv.migrations().clone();
    let err = migrations
        .start(5, Some(2), MigrationReason::Manual)
        .await
        .expect_err("a local-only target would open an empty copy");
    assert!(err.to_string().contains("shared storage"), "{err}");
    let err = migrations
        .start(5, None, MigrationReason::Manual)
        .await
        .expect_err("no eligible target to pick");
    assert!(err.to_string().contains("shared storage"), "{err}");
    assert!(log.lock().is_empty(), "nothing was instructed");
    assert_eq!(route(&server, 5).await.leader, Some(1));
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_to_the_move_endpoints_get_clear_json_errors() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let call = |method: reqwest::Method, path: &'static str, body: Option<&'static str>| {
        let server = &server;
        async move {
            let (code, body) = admin(server, method, path, body).await;
            (code, body["error"].as_str().unwrap_or_default().to_string())
        }
    };
    use reqwest::Method;
    let cases: Vec<(Method, &str, Option<&str>, u16, &str)> = vec![
        (
            Method::POST,
            "/regions/abc/migrate",
            Some("{}"),
            400,
            "invalid id",
        ),
        (
            Method::POST,
            "/regions/999/migrate",
            Some("{}"),
            404,
            "region 999 not found",
        ),
        (
            Method::POST,
            "/regions/5/migrate",
            Some(r#"{"to": 42}"#),
            409,
            "not alive",
        ),
        (
            Method::POST,
            "/regions/5/migrate",
            Some(r#"{"to": 1}"#),
            409,
            "already leads",
        ),
        (
            Method::POST,
            "/regions/5/migrate",
            Some("{oops"),
            400,
            "invalid request body",
        ),
        (
            Method::POST,
            "/regions/5/migrate",
            Some(r#"{"to": 1, "x": 1}"#),
            400,
            "unknown field",
        ),
        // No body at all: the selector picks, and finds nobody else on shared storage.
        (
            Method::POST,
            "/regions/5/migrate",
            None,
            409,
            "shared storage",
        ),
        (Method::POST, "/nodes/99/drain", None, 404, "not known"),
        (Method::POST, "/nodes/abc/drain", None, 400, "invalid id"),
        (
            Method::POST,
            "/maintenance",
            Some(r#"{"enabled": "yes"}"#),
            400,
            "invalid request body",
        ),
        (Method::GET, "/regions/5/migrate", None, 405, "not allowed"),
        (Method::GET, "/no/such/thing", None, 404, "no such endpoint"),
    ];
    for (method, path, body, code, needle) in cases {
        let (got, error) = call(method.clone(), path, body).await;
        assert_eq!(got, code, "{method} {path}: {error}");
        assert!(
            error.contains(needle),
            "{method} {path}: {error:?} lacks {needle:?}"
        );
    }
    // Still serving.
    assert_eq!(route(&server, 5).await.leader, Some(1));
    n1.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_target_that_dies_after_the_fence_is_replaced_not_rolled_back() {
    let server = start(options()).await;
    // The old owner dies: the procedure fences, then waits out its lease (about 2.5 s)…
    let (log, [n2, n3]) = dead_owner(&server).await;
    let migrations = server.srv.migrations().clone();
    migrations
        .start(5, Some(2), MigrationReason::Failover)
        .await
        .expect("started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while route(&server, 5).await.leader.is_some() {
        assert!(
            Instant::now() < deadline,
            "the route was not fenced in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and meanwhile its target dies too.
    n2.kill().await;
    let done = migrations
        .wait(5, Duration::from_secs(15))
        .await
        .expect("finished");
    assert_eq!(done.step, Step::Done);
    assert_eq!(done.to, 3, "re-targeted to the other live node");
    assert_eq!(route(&server, 5).await.leader, Some(3));
    let seen = subjects(&log);
    assert!(
        seen.contains(&(3, "open_region")) && seen.contains(&(3, "upgrade_region")),
        "{seen:?}"
    );
    n3.kill().await;
    server.stop().await;
}

/// A drain lasts: the drained node is refused as an explicit target and skipped by
/// automatic placement and the selector, across calls, until `DELETE /nodes/{id}/drain`.
#[tokio::test]
async fn a_drained_node_takes_no_new_regions_until_returned_to_service() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Ok, log.clone()).await;
    let call = |method: reqwest::Method, path: &'static str, body: Option<serde_json::Value>| {
        let server = &server;
        async move { admin(server, method, path, body.map(|b| b.to_string()).as_deref()).await }
    };
    use reqwest::Method;
    use serde_json::json;

    // Node 2 leads nothing: the drain moves nothing, and marks it.
    let (code, body) = call(Method::POST, "/nodes/2/drain", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["drained"], true, "{body}");
    let (_, nodes) = call(Method::GET, "/nodes", None).await;
    let drained: Vec<(u64, bool)> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["node_id"].as_u64().expect("id"), n["drained"] == true))
        .collect();
    assert_eq!(drained, [(1, false), (2, true)], "{nodes}");
    let (_, m) = call(Method::GET, "/maintenance", None).await;
    assert_eq!(m["drained_nodes"], json!([2]), "{m}");

    // Automatic placement skips it, though it leads fewer regions than node 1.
    let (code, created) = call(Method::POST, "/regions", Some(json!({}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["leader"], 1, "{created}");
    // Explicit placement and migration to it are refused, naming the way out.
    for (method, path, body) in [
        (Method::POST, "/regions", Some(json!({"node_id": 2}))),
        (Method::POST, "/regions/5/migrate", Some(json!({"to": 2}))),
    ] {
        let (code, body) = call(method, path, body).await;
        assert_eq!(code, 409, "{path}: {body}");
        let msg = body["error"].as_str().expect("error");
        assert!(msg.contains("DELETE /nodes/2/drain"), "{path}: {msg}");
    }
    // The selector finds nobody else.
    let (code, body) = call(Method::POST, "/regions/5/migrate", None).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("not drained"),
        "{body}"
    );
    assert_eq!(route(&server, 5).await.leader, Some(1), "nothing moved");
    assert!(
        subjects(&log).iter().all(|(n, _)| *n == 1),
        "node 2 was told nothing: {:?}",
        subjects(&log)
    );

    // Returned to service: it takes regions again.
    let (code, body) = call(Method::DELETE, "/nodes/2/drain", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["was_drained"], true, "{body}");
    let (code, body) = call(Method::DELETE, "/nodes/2/drain", None).await;
    assert_eq!((code, &body["was_drained"]), (200, &json!(false)), "{body}");
    let (code, created) = call(Method::POST, "/regions", Some(json!({"node_id": 2}))).await;
    assert_eq!(code, 201, "{created}");
    let (_, m) = call(Method::GET, "/maintenance", None).await;
    assert_eq!(m["drained_nodes"], json!([]), "{m}");
    n1.kill().await;
    n2.kill().await;
    server.stop().await;
}

/// A drop wins over a migration: the procedure ends at its next step, and until it has, a
/// create of the same id is refused (409), so the old procedure never acts on the new
/// region.
#[tokio::test]
async fn a_region_dropped_while_it_moves_ends_the_move_and_its_id_waits_for_that() {
    let server = start(options()).await;
    // Node 1 dies, so the move waits out its lease (about 2.5 s) in its Release step.
    let (_log, [n2, n3]) = dead_owner(&server).await;
    let migrations = server.srv.migrations().clone();
    let migrate = tokio::spawn(admin_at(
        server.url("/regions/5/migrate"),
        reqwest::Method::POST,
        Some(r#"{"to": 2}"#),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while migrations.in_flight(5).await.map(|s| s.step) != Some(Step::Release) {
        assert!(Instant::now() < deadline, "the move never reached Release");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, body) = admin(&server, reqwest::Method::DELETE, "/regions/5", None).await;
    assert_eq!(code, 200, "{body}");
    let create = r#"{"region_id": 5, "node_id": 2}"#;
    let (code, body) = admin(&server, reqwest::Method::POST, "/regions", Some(create)).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("still has a migration"),
        "{body}"
    );
    // The move ends with the drop as its reason, and writes no route.
    let done = migrations
        .wait(5, Duration::from_secs(10))
        .await
        .expect("the move ended");
    assert_eq!(done.step, Step::RolledBack);
    assert_eq!(
        done.last_error.as_deref(),
        Some("the region was dropped during the move")
    );
    assert!(server
        .srv
        .context()
        .routes
        .get(5)
        .await
        .expect("get")
        .is_none());
    // The caller that asked for the move learns the region is gone.
    let (code, body) = migrate.await.expect("task");
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("dropped")),
        "{body}"
    );
    // Now the id is free, and the new region is left alone.
    let (code, body) = admin(&server, reqwest::Method::POST, "/regions", Some(create)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        route(&server, 5).await,
        RegionRoute {
            region_id: 5,
            leader: Some(2),
            followers: vec![],
            epoch: 2,
        }
    );
    assert!(migrations.in_flight(5).await.is_none());
    n2.kill().await;
    n3.kill().await;
    server.stop().await;
}

/// A drain keeps going after the HTTP call: a move that rolled back (its target could
/// not open the region) is retried by the leader, even with failover off, until the
/// drained node leads nothing.
#[tokio::test]
async fn a_drain_move_that_rolled_back_is_retried_until_the_node_leads_nothing() {
    let server = start(options()).await;
    put_route(&server, 5, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let n1 = Node::start(&server, 1, &[5], true, Answer::Ok, log.clone()).await;
    let n2 = Node::start(&server, 2, &[], true, Answer::Refuse, log.clone()).await;
    let (code, body) = admin(&server, reqwest::Method::POST, "/nodes/1/drain", None).await;
    assert_eq!(code, 202, "rolled back, to be retried: {body}");
    assert_eq!(body["finished"][0]["step"], "rolled_back", "{body}");
    assert_eq!(route(&server, 5).await.leader, Some(1));
    // The refusing node goes; a willing one comes. Nobody calls drain again.
    n2.kill().await;
    let n3 = Node::start(&server, 3, &[], true, Answer::Ok, log.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while route(&server, 5).await.leader != Some(3) {
        assert!(
            Instant::now() < deadline,
            "the drain was not retried: {:?}",
            subjects(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The route names the target before the upgrade finishes: wait for the procedure's
    // own end, not the route's switch.
    let done = server
        .srv
        .migrations()
        .wait(5, Duration::from_secs(10))
        .await
        .expect("finished");
    assert_eq!(
        (done.reason, done.step),
        (MigrationReason::Drain, Step::Done)
    );
    n1.kill().await;
    n3.kill().await;
    server.stop().await;
}
