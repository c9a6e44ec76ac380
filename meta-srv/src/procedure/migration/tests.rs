//! The migration procedure in-process, step by step: a memory KV, real pushers and a real
//! mailbox, and fake datanodes (a task per node reading its pusher's channel and
//! answering the mailbox) whose answers each test chooses. tokio's paused clock runs the
//! lease waits and instruction timeouts at once.
//!
//! The process suites (`meta-srv/tests/migration.rs`, `tests/tests/failover.rs`) show the
//! procedure end to end; these pin down its decisions: who counts as reachable, where a
//! resumed procedure picks up, what the persisted record says at each step, and what a
//! rollback leaves behind.

use std::collections::{HashMap, HashSet, VecDeque};

use common_proto::{InstructionReply, JsonPayload, RegionReply};
use handlers::builtin::{PersistedStats, StatsCache};
use handlers::{LeaderLease, MemoryKvBackend, MemoryNodeLeaseStore, RegionRouteStore};
use tokio::sync::mpsc;

use std::sync::Arc;
use std::time::Duration;

use common_proto::Instruction;
use handlers::{KvBackendRef, KvRegionRouteStore, NodeKey, RegionRoute};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::manager::*;
use super::state::*;
use crate::cluster::{Candidate, LeastRegionsSelector};
use crate::cluster::{Cluster, Purpose, Reach};
use crate::election::LeaderState;
use crate::leader::gate::LeaderGate;
use crate::leader::lease_bound::Bound;
use crate::leader::lease_bound::LeaseWait;
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;
use crate::service::pusher::ResponseTx;

const LEASE: Duration = Duration::from_secs(10);
const REGION: u64 = 7;
/// A bound on every wait, far beyond what any step takes on the paused clock.
const WITHIN: Duration = Duration::from_secs(600);

/// How a fake node answers one kind of instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Fail,
    Silent,
}

/// A metasrv's migration side, with fake nodes.
struct Harness {
    migrations: Arc<Migrations>,
    deps: MigrationDeps,
    /// The election's view under the gate: set it to lose leadership.
    lease: Arc<LeaderLease>,
    /// The election's announcements, which the gate's term must match.
    election: tokio::sync::watch::Sender<LeaderState>,
    term: CancellationToken,
    /// Every instruction the fake nodes received, in order.
    log: Arc<Mutex<Vec<(u64, Instruction)>>>,
    /// Per node and instruction subject, how the node answers (default: ok).
    answers: Arc<Mutex<HashMap<(u64, &'static str), Answer>>>,
}

impl Harness {
    /// A leader whose term began, with no nodes.
    async fn new() -> Self {
        Self::over(Arc::new(MemoryKvBackend::new())).await
    }

    /// As [`new`](Self::new), over `kv`.
    async fn over(kv: KvBackendRef) -> Self {
        let pushers = Arc::new(Pushers::new());
        let lease = Arc::new(LeaderLease::new(true, None));
        // The term this gate opens is the one the election names (seq 1), as in a leader
        // whose term began.
        let elected = LeaderState {
            is_leader: true,
            term: 1,
            leader_addr: None,
            seq: 1,
        };
        let (election, announced) = tokio::sync::watch::channel(elected);
        let gate = Arc::new(LeaderGate::new(lease.clone(), announced));
        gate.open(1, 1, Bound::default());
        let routes = Arc::new(KvRegionRouteStore::new(kv.clone()));
        let deps = MigrationDeps {
            kv: kv.clone(),
            routes: routes.clone(),
            cluster: Cluster {
                node_leases: Arc::new(MemoryNodeLeaseStore::new()),
                pushers: pushers.clone(),
                maintenance: Arc::new(crate::maintenance::Maintenance::new(kv.clone())),
                stats: Arc::new(StatsCache::default()),
                kv,
                routes,
                selector: Arc::new(LeastRegionsSelector),
            },
            mailbox: Arc::new(Mailbox::new(pushers, 1, "ms")),
            gate,
            lease_wait: LeaseWait {
                own: LEASE,
                margin: Duration::from_secs(1),
                failover_wait: LEASE + Duration::from_secs(1),
            },
            instruction_timeout: Duration::from_secs(2),
        };
        let migrations = Arc::new(Migrations::new(deps.clone()));
        let term = CancellationToken::new();
        migrations.begin_term(term.clone()).await;
        Self {
            migrations,
            deps,
            lease,
            election,
            term,
            log: Arc::default(),
            answers: Arc::default(),
        }
    }

    /// Node `id` heartbeats (its lease is live) and reports its storage: every region in
    /// `regions` on shared storage, and the node able to open shared regions, if `shared`.
    async fn alive(&self, id: u64, regions: &[u64], shared: bool) {
        let key = NodeKey::datanode(id);
        self.deps
            .cluster
            .node_leases
            .keep_alive(key, "a", 1, regions.len(), Instant::now());
        let regions: Vec<_> = regions.iter().map(|&r| (r, shared, None)).collect();
        let stat = crate::cluster::fixtures::stat(id, shared, &regions);
        // Only in the KV, as a new leader finds it before the node's first heartbeat.
        let persisted = serde_json::to_vec(&PersistedStats {
            node_epoch: 1,
            stat,
        })
        .expect("encode");
        self.deps
            .kv
            .put(StatsCache::kv_key(key).as_bytes(), &persisted)
            .await
            .expect("put stats");
    }

    /// Node `id` opens its stream: a task answers its instructions as `answers` says.
    fn connect(&self, id: u64) {
        let (tx, mut rx): (ResponseTx, _) = mpsc::channel(16);
        self.deps
            .cluster
            .pushers
            .register(NodeKey::datanode(id), 1, "a", tx, Instant::now(), LEASE)
            .expect("register");
        let (mailbox, log, answers) = (
            self.deps.mailbox.clone(),
            self.log.clone(),
            self.answers.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(resp)) = rx.recv().await {
                let Some(msg) = resp.mailbox_message else {
                    continue;
                };
                let ins = Instruction::from_mailbox_message(&msg).expect("an instruction");
                log.lock().push((id, ins.clone()));
                let answer = answers
                    .lock()
                    .get(&(id, ins.subject()))
                    .copied()
                    .unwrap_or(Answer::Ok);
                let r = RegionReply {
                    region_id: ins.region_id(),
                    ok: answer == Answer::Ok,
                    error: (answer == Answer::Fail).then(|| "refused by the test".into()),
                };
                let reply = match ins {
                    Instruction::OpenRegion { .. } => InstructionReply::OpenRegion(r),
                    Instruction::CloseRegion(_) => InstructionReply::CloseRegion(r),
                    Instruction::DowngradeRegion(_) => InstructionReply::DowngradeRegion(r),
                    Instruction::UpgradeRegion { .. } => InstructionReply::UpgradeRegion(r),
                };
                if answer != Answer::Silent {
                    let msg = reply
                        .to_mailbox_message(msg.id, "dn", "ms")
                        .expect("encode");
                    mailbox.on_recv(NodeKey::datanode(id), msg);
                }
            }
        });
    }

    /// Node `id`'s stream closes (its lease stays as it was).
    fn disconnect(&self, id: u64) {
        let key = NodeKey::datanode(id);
        let pusher = self.deps.cluster.pushers.get(key).expect("connected");
        self.deps
            .cluster
            .pushers
            .deregister(key, pusher.generation());
    }

    fn answer(&self, id: u64, subject: &'static str, answer: Answer) {
        self.answers.lock().insert((id, subject), answer);
    }

    async fn put_route(&self, leader: Option<u64>, followers: Vec<u64>) {
        self.deps
            .routes
            .put(RegionRoute {
                region_id: REGION,
                leader,
                followers,
                epoch: 1,
            })
            .await
            .expect("put route");
    }

    async fn route(&self) -> RegionRoute {
        self.deps
            .routes
            .get(REGION)
            .await
            .expect("read")
            .expect("routed")
    }

    /// A procedure as an earlier term left it, at `step`.
    async fn persist(&self, from: Option<u64>, to: u64, step: Step, reason: MigrationReason) {
        let state = MigrationState {
            region_id: REGION,
            from,
            to,
            reason,
            step,
            started_ms: 1,
            finished_ms: None,
            last_error: None,
            released_by: None,
        };
        let value = serde_json::to_vec(&state).expect("encode");
        self.deps
            .kv
            .put(key(REGION).as_bytes(), &value)
            .await
            .expect("persist");
    }

    /// The persisted record, polled until `ready` holds for it.
    async fn record_until(&self, ready: impl Fn(&MigrationState) -> bool) -> MigrationState {
        until("the record got there", || async {
            self.migrations.in_flight(REGION).await.filter(&ready)
        })
        .await
    }

    /// Nodes 1 and 2 heartbeat and are connected, on shared storage; node 1 leads the
    /// region; a move to node 2 starts. Answers chosen before this hold for the move.
    async fn move_1_to_2(&self, reason: MigrationReason) -> MigrationState {
        for id in [1, 2] {
            self.alive(id, &[REGION], true).await;
            self.connect(id);
        }
        self.put_route(Some(1), vec![]).await;
        self.migrations
            .start(REGION, Some(2), reason)
            .await
            .expect("started")
    }

    async fn finished(&self) -> MigrationState {
        self.migrations
            .wait(REGION, WITHIN)
            .await
            .expect("the procedure finished")
    }

    /// What each node was told, as `(node, subject)`.
    fn told(&self) -> Vec<(u64, &'static str)> {
        self.log
            .lock()
            .iter()
            .map(|(n, i)| (*n, i.subject()))
            .collect()
    }
}

/// Polls `probe` until it yields a value, within [`WITHIN`] on the paused clock.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn retries_back_off_doubling_up_to_five_seconds() {
    assert_eq!(next_backoff(FIRST_BACKOFF), Duration::from_millis(400));
    assert_eq!(next_backoff(Duration::from_secs(2)), Duration::from_secs(4));
    assert_eq!(next_backoff(Duration::from_secs(4)), MAX_BACKOFF);
    assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
}

fn finished_state(region_id: u64, reason: MigrationReason, step: Step) -> MigrationState {
    MigrationState {
        region_id,
        from: Some(1),
        to: 2,
        reason,
        step,
        started_ms: 1,
        finished_ms: Some(2),
        last_error: None,
        released_by: None,
    }
}

#[test]
fn the_history_keeps_the_newest_procedures_in_order() {
    let mut history = VecDeque::new();
    for region in 0..HISTORY as u64 + 3 {
        remember(
            &mut history,
            finished_state(region, MigrationReason::Manual, Step::Done),
        );
        assert_eq!(history.len(), (region as usize + 1).min(HISTORY));
    }
    let regions: Vec<u64> = history.iter().map(|s| s.region_id).collect();
    let newest: Vec<u64> = (3..HISTORY as u64 + 3).collect();
    assert_eq!(
        regions, newest,
        "the oldest three dropped, the rest in order"
    );
}

#[test]
fn finished_procedures_are_counted_by_reason_and_outcome() {
    let labels = |reason, step| outcome_labels(&finished_state(1, reason, step));
    assert_eq!(
        labels(MigrationReason::Failover, Step::Done),
        ["failover", "done"]
    );
    assert_eq!(
        labels(MigrationReason::Manual, Step::RolledBack),
        ["manual", "rolled_back"]
    );
    assert_eq!(
        labels(MigrationReason::Drain, Step::Done),
        ["drain", "done"]
    );
}

#[test]
fn each_region_has_its_own_record_under_the_procedure_prefix() {
    // Operators and the next leader find procedures by this prefix.
    assert_eq!(key(7), "__meta/procedure/migrate/7");
    assert_ne!(key(7), key(8));
}

#[tokio::test(start_paused = true)]
async fn a_live_move_opens_downgrades_switches_and_upgrades_and_leaves_only_history() {
    let h = Harness::new().await;
    let began = Instant::now();
    let started = h.move_1_to_2(MigrationReason::Manual).await;
    assert_eq!((started.from, started.to), (Some(1), 2));

    let done = h.finished().await;
    assert!(
        Instant::now() < began + FIRST_BACKOFF,
        "every node answered at once, so no step was retried (the paused clock stood still)"
    );
    assert_eq!(done.step, Step::Done);
    assert_eq!(done.released_by.as_deref(), Some("downgraded"));
    assert_eq!(done.last_error, None);
    assert_eq!(
        h.told(),
        [
            (2, "open_region"),
            (1, "downgrade_region"),
            (2, "upgrade_region")
        ]
    );
    let route = h.route().await;
    assert_eq!((route.leader, route.followers), (Some(2), vec![]));
    assert!(h.migrations.in_flight(REGION).await.is_none());
    assert!(h.migrations.persisted().await.is_empty());
    assert_eq!(h.migrations.history(), [done]);
}

#[tokio::test(start_paused = true)]
async fn a_new_term_resumes_a_persisted_procedure_from_its_recorded_step() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(None, vec![2, 1]).await; // fenced by the earlier leader
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Failover)
        .await;
    assert_eq!(h.migrations.persisted().await.len(), 1);

    h.migrations.end_term().await;
    assert!(
        h.term.is_cancelled(),
        "ending the term stops its procedures"
    );
    h.migrations.begin_term(CancellationToken::new()).await;

    let done = h.finished().await;
    assert_eq!(done.step, Step::Done);
    assert_eq!(
        h.told(),
        [(2, "upgrade_region")],
        "no step before the recorded one runs again"
    );
    assert_eq!(h.route().await.leader, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_record_follows_each_step_and_a_retried_steps_error_does_not_outlive_it() {
    let h = Harness::new().await;
    h.answer(2, "upgrade_region", Answer::Silent);
    h.move_1_to_2(MigrationReason::Manual).await;

    let stuck = h
        .record_until(|s| s.step == Step::Upgrade && s.last_error.is_some())
        .await;
    assert_eq!(
        stuck.released_by.as_deref(),
        Some("downgraded"),
        "the record carries what earlier steps did"
    );
    assert_eq!(
        h.route().await.leader,
        Some(2),
        "switched before the upgrade"
    );

    h.answer(2, "upgrade_region", Answer::Ok);
    let done = h.finished().await;
    assert_eq!(done.step, Step::Done);
    assert_eq!(done.last_error, None, "the timeout was retried away");
}

#[tokio::test(start_paused = true)]
async fn a_target_that_died_before_its_upgrade_finishes_the_move_with_the_reason() {
    let h = Harness::new().await;
    h.put_route(Some(2), vec![]).await; // switched by the earlier leader
    h.persist(Some(1), 2, Step::Upgrade, MigrationReason::Failover)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let done = h.finished().await;
    assert_eq!(done.step, Step::Done);
    let error = done.last_error.expect("the reason is kept");
    assert!(error.contains("died before its upgrade"), "{error}");
    assert!(h.told().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_route_whose_leader_changed_before_the_fence_rolls_back_and_closes_the_target() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(Some(3), vec![2]).await; // moved elsewhere since the procedure began
    h.persist(Some(1), 2, Step::AddFollower, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let done = h.finished().await;
    assert_eq!(done.step, Step::RolledBack);
    let error = done.last_error.expect("the reason is kept");
    assert!(error.contains("leader changed"), "{error}");
    assert_eq!(h.told(), [(2, "close_region")]);
    let route = h.route().await;
    assert_eq!((route.leader, route.followers), (Some(3), vec![]));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_never_closes_the_region_on_a_target_that_leads_it() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(Some(2), vec![]).await; // an operator put the target in charge
    h.persist(Some(1), 2, Step::AddFollower, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let done = h.finished().await;
    assert_eq!(done.step, Step::RolledBack);
    assert!(h.told().is_empty(), "told: {:?}", h.told());
    assert_eq!(h.route().await.leader, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_target_known_but_not_yet_connected_is_waited_for_not_rolled_back() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await; // live lease, no stream: a new leader's first seconds
    h.put_route(Some(1), vec![2]).await;
    h.persist(Some(1), 2, Step::OpenCandidate, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let waiting = h.record_until(|s| s.last_error.is_some()).await;
    assert_eq!(waiting.step, Step::OpenCandidate);
    let error = waiting.last_error.expect("why it waits");
    assert!(error.contains("not connected yet"), "{error}");

    h.connect(2);
    h.record_until(|s| s.step == Step::Fence || s.step == Step::Release)
        .await;
    assert_eq!(h.told().first(), Some(&(2, "open_region")));
}

#[tokio::test(start_paused = true)]
async fn a_target_gone_before_the_fence_is_taken_off_the_route() {
    let h = Harness::new().await;
    h.answer(2, "open_region", Answer::Fail);
    h.move_1_to_2(MigrationReason::Manual).await;
    let done = h.finished().await;
    assert_eq!(done.step, Step::RolledBack);
    assert!(
        done.last_error
            .as_deref()
            .is_some_and(|e| e.contains("could not open")),
        "{done:?}"
    );
    assert_eq!(h.told(), [(2, "open_region"), (2, "close_region")]);

    // Now the target disappears entirely (its lease expired): a second attempt from a
    // persisted record rolls back without instructing it.
    h.disconnect(2);
    h.deps.cluster.node_leases.remove(NodeKey::datanode(2));
    h.put_route(Some(1), vec![2]).await;
    h.persist(Some(1), 2, Step::OpenCandidate, MigrationReason::Manual)
        .await;
    h.migrations.end_term().await;
    h.migrations.begin_term(CancellationToken::new()).await;
    let done = h.finished().await;
    assert_eq!(done.step, Step::RolledBack);
    assert!(done.last_error.is_some_and(|e| e.contains("is gone")));
    let route = h.route().await;
    assert_eq!((route.leader, route.followers), (Some(1), vec![]));
}

#[tokio::test(start_paused = true)]
async fn only_live_connected_datanodes_on_shared_storage_are_candidates() {
    let h = Harness::new().await;
    h.alive(1, &[], true).await;
    h.connect(1);
    h.alive(2, &[], true).await; // not connected
    h.alive(3, &[], false).await; // local storage only
    h.connect(3);
    h.alive(4, &[], true).await;
    h.connect(4);
    h.alive(5, &[], true).await;
    h.connect(5);
    // A frontend is never a candidate, whatever its id.
    h.deps.cluster.node_leases.keep_alive(
        NodeKey {
            role: common_proto::v1::Role::Frontend,
            node_id: 9,
        },
        "f",
        1,
        0,
        Instant::now(),
    );
    // Node 5's lease expired.
    tokio::time::advance(LEASE * 2).await;
    for id in [1, 3, 4] {
        h.deps
            .cluster
            .node_leases
            .keep_alive(NodeKey::datanode(id), "a", 1, 0, Instant::now());
    }
    h.deps.cluster.node_leases.expire(Instant::now(), LEASE);
    h.put_route(Some(1), vec![]).await;

    let candidates: Vec<(u64, usize)> = h
        .deps
        .cluster
        .candidates(Purpose::Move, &[4])
        .await
        .iter()
        .map(|c| (c.node_id, c.leading))
        .collect();
    assert_eq!(
        candidates,
        [(1, 1), (4, 1)],
        "node 1 leads region {REGION}; node 4 is a move's target"
    );
    let reach = |id| h.deps.cluster.reach(id);
    assert_eq!(reach(1), Reach::Connected);
    assert_eq!(
        (reach(2), reach(5)),
        (Reach::Gone, Reach::Gone),
        "both expired"
    );
}

#[tokio::test(start_paused = true)]
async fn the_model_lists_each_node_with_its_stream_and_only_a_datanodes_drain() {
    use common_proto::v1::Role;
    let h = Harness::new().await;
    h.alive(1, &[], true).await;
    h.connect(1);
    h.alive(2, &[], true).await;
    let frontend = NodeKey {
        role: Role::Frontend,
        node_id: 2,
    };
    h.deps
        .cluster
        .node_leases
        .keep_alive(frontend, "f", 1, 0, Instant::now());
    h.deps
        .cluster
        .maintenance
        .set_drained(2, true)
        .await
        .expect("drain");
    let mut nodes: Vec<_> = h
        .deps
        .cluster
        .nodes()
        .into_iter()
        .map(|n| {
            (
                n.lease.key.node_id,
                n.lease.key.role as i32,
                n.connected,
                n.drained,
            )
        })
        .collect();
    nodes.sort();
    let (dn, fe) = (Role::Datanode as i32, Role::Frontend as i32);
    let mut want = vec![
        (1, dn, true, false),
        (2, dn, false, true),
        (2, fe, false, false),
    ];
    want.sort();
    assert_eq!(nodes, want);
}

#[tokio::test(start_paused = true)]
async fn a_start_whose_record_write_failed_runs_only_if_the_backend_applied_it() {
    for applied in [true, false] {
        let kv = Arc::new(handlers::FaultyKv::new());
        let h = Harness::over(kv.clone()).await;
        for id in [1, 2] {
            h.alive(id, &[REGION], true).await;
            h.connect(id);
        }
        h.put_route(Some(1), vec![]).await;
        kv.fail_writes(applied);
        let started = h
            .migrations
            .start(REGION, Some(2), MigrationReason::Manual)
            .await;
        let record = h.migrations.in_flight(REGION).await;
        if applied {
            let state = started.expect("the record is there: the move runs");
            assert_eq!(record.map(|r| r.to), Some(state.to));
        } else {
            assert!(
                matches!(started, Err(MigrationError::Store { .. })),
                "{started:?}"
            );
            assert!(record.is_none(), "nothing was written, nothing runs");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_drained_node_is_no_candidate_and_refused_as_a_target_until_returned() {
    let h = Harness::new().await;
    h.alive(1, &[REGION], true).await;
    h.connect(1);
    for id in [2, 3] {
        h.alive(id, &[], true).await;
        h.connect(id);
    }
    h.put_route(Some(1), vec![]).await;
    h.deps
        .cluster
        .maintenance
        .set_drained(2, true)
        .await
        .expect("drain");
    let ids = |c: Vec<Candidate>| -> Vec<u64> { c.iter().map(|c| c.node_id).collect() };
    assert_eq!(
        ids(h.deps.cluster.candidates(Purpose::Move, &[]).await),
        [1, 3]
    );
    let err = h
        .migrations
        .start(REGION, Some(2), MigrationReason::Manual)
        .await
        .expect_err("a drained target");
    assert!(
        matches!(err, MigrationError::BadTarget { node_id: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("drained"), "{err}");
    assert!(h.told().is_empty(), "nothing was sent: {:?}", h.told());
    // With node 3 drained too, the selector finds nobody.
    h.deps
        .cluster
        .maintenance
        .set_drained(3, true)
        .await
        .expect("drain");
    let err = h
        .migrations
        .start(REGION, None, MigrationReason::Drain)
        .await
        .expect_err("nobody left");
    assert!(err.to_string().contains("not drained"), "{err}");
    // Returned to service: a candidate again.
    h.deps
        .cluster
        .maintenance
        .set_drained(2, false)
        .await
        .expect("undrain");
    assert_eq!(
        ids(h.deps.cluster.candidates(Purpose::Move, &[]).await),
        [1, 2]
    );
}

#[tokio::test(start_paused = true)]
async fn storage_kinds_are_read_from_the_flushed_stats_when_memory_has_none() {
    let h = Harness::new().await;
    h.alive(1, &[REGION], true).await;
    h.alive(2, &[8], false).await;
    assert!(h.deps.cluster.can_host(1).await);
    assert!(!h.deps.cluster.can_host(2).await);
    assert!(!h.deps.cluster.can_host(3).await, "never reported");
    assert_eq!(h.deps.cluster.check_movable(REGION, Some(1)).await, Ok(()));
    let local = h
        .deps
        .cluster
        .check_movable(8, Some(2))
        .await
        .expect_err("local");
    assert!(local.contains("local storage"), "{local}");
    assert_eq!(h.deps.cluster.check_movable(REGION, None).await, Ok(()));
}

impl Harness {
    /// Fails the region over from node 1, last granted `after` from now, to node 2, and
    /// waits for the end; returns the last grant. The move must wait out the lease.
    async fn fail_over_1_to_2(&self, after: Duration) -> Instant {
        self.alive(1, &[REGION], true).await;
        self.alive(2, &[], true).await;
        self.connect(2);
        let granted = Instant::now() + after;
        tokio::time::advance(after).await;
        self.deps
            .cluster
            .node_leases
            .record_grant(NodeKey::datanode(1), granted);
        self.put_route(Some(1), vec![]).await;
        self.persist(Some(1), 2, Step::AddFollower, MigrationReason::Failover)
            .await;
        self.migrations.begin_term(CancellationToken::new()).await;
        let done = self.finished().await;
        assert_eq!(done.step, Step::Done);
        assert_eq!(done.released_by.as_deref(), Some("lease waited out"));
        granted
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_over_owner_is_waited_out_from_its_last_grant_not_asked() {
    let h = Harness::new().await;
    // Judged failed, though its stream is still open (a stalled process): asking it
    // would only wait out the instruction timeout.
    h.connect(1);
    let granted = h.fail_over_1_to_2(Duration::from_secs(3)).await;
    assert!(
        Instant::now() >= granted + LEASE + h.deps.lease_wait.margin,
        "the switch came before the last grant's lease could have run out"
    );
    assert_eq!(
        h.told(),
        [(2, "open_region"), (2, "upgrade_region")],
        "the failed owner is not asked to downgrade"
    );
}

/// Fails region 7 over from node 1 (last granted a second into the term) to node 2, with
/// lease waits `wait` and earlier terms bounded by `earlier`; returns the last grant and
/// the instant of the switch.
async fn failover_switch_time(wait: LeaseWait, earlier: Duration) -> (Instant, Instant) {
    let earlier = Bound {
        lease: earlier,
        failover_wait: Duration::ZERO,
    };
    let mut h = Harness::new().await;
    h.deps.lease_wait = wait;
    h.migrations = Arc::new(Migrations::new(h.deps.clone()));
    h.election.send_modify(|s| s.seq = 2);
    h.deps.gate.open(2, 2, earlier);
    let granted = h.fail_over_1_to_2(Duration::from_secs(1)).await;
    (granted, Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_longer_lease_an_earlier_term_granted_is_waited_out_whatever_our_own() {
    // This member grants LEASE (10 s); the term before it recorded 20 s.
    let wait = LeaseWait {
        own: LEASE,
        margin: Duration::from_secs(1),
        failover_wait: LEASE + Duration::from_secs(1),
    };
    let start = Instant::now();
    let (_, switched) = failover_switch_time(wait, Duration::from_secs(20)).await;
    assert!(
        switched >= start + Duration::from_secs(21),
        "switched {:?} after the term began, before the predecessor's 20 s lease + margin",
        switched - start
    );
}

#[tokio::test(start_paused = true)]
async fn failover_wait_longer_than_the_lease_is_waited_from_the_last_grant() {
    let wait = LeaseWait {
        own: LEASE,
        margin: Duration::from_secs(1),
        failover_wait: Duration::from_secs(30),
    };
    let (granted, switched) = failover_switch_time(wait, Duration::ZERO).await;
    assert!(
        switched >= granted + Duration::from_secs(30),
        "switched {:?} after the last grant, before failover_wait",
        switched - granted
    );
    // And no later than needed: the floor is the wait itself.
    assert!(switched < granted + Duration::from_secs(31));
}

#[tokio::test(start_paused = true)]
async fn an_owner_that_does_not_answer_the_downgrade_is_waited_out_from_the_term_start() {
    let h = Harness::new().await;
    let term_started = h.deps.gate.term_started().expect("a term");
    h.answer(1, "downgrade_region", Answer::Fail);
    h.move_1_to_2(MigrationReason::Drain).await;

    let done = h.finished().await;
    assert_eq!(done.released_by.as_deref(), Some("lease waited out"));
    assert!(Instant::now() >= term_started + LEASE + h.deps.lease_wait.margin);
    assert_eq!(
        h.told(),
        [
            (2, "open_region"),
            (1, "downgrade_region"),
            (2, "upgrade_region")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_gone_after_the_fence_is_replaced_by_another_not_rolled_back() {
    let h = Harness::new().await;
    h.alive(3, &[], true).await;
    h.connect(3);
    h.answer(3, "open_region", Answer::Silent);
    h.put_route(None, vec![2, 1]).await; // fenced; target 2 has since vanished
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Failover)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    // The new target does not answer: the re-targeting is retried.
    until("the re-targeting was retried", || async {
        (h.told().len() >= 2).then_some(())
    })
    .await;
    let route = h.route().await;
    assert_eq!(
        (route.leader, route.followers),
        (None, vec![1, 3]),
        "the vanished target leaves the route, the old owner stays a follower, and a retry adds the new one only once"
    );
    h.answer(3, "open_region", Answer::Ok);
    let done = h.finished().await;
    assert_eq!((done.step, done.to), (Step::Done, 3));
    let told = h.told();
    let (upgrade, opens) = told.split_last().expect("told");
    assert_eq!(upgrade, &(3, "upgrade_region"));
    assert!(opens.iter().all(|t| *t == (3, "open_region")), "{told:?}");
    let route = h.route().await;
    assert_eq!((route.leader, route.followers), (Some(3), vec![]));
}

#[tokio::test(start_paused = true)]
async fn a_switch_over_a_route_led_by_a_stranger_retries_instead_of_overwriting_it() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(Some(5), vec![2]).await;
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let stuck = h.record_until(|s| s.last_error.is_some()).await;
    assert_eq!(stuck.step, Step::Switch);
    assert!(stuck.last_error.is_some_and(|e| e.contains("unexpectedly")));
    assert_eq!(h.route().await.leader, Some(5), "never overwritten");
    assert!(h.told().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_switch_is_a_compare_and_put_so_a_route_changed_underneath_is_never_overwritten() {
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(None, vec![2, 1]).await;
    // Another writer (a stale leader, an operator's tool) changed the stored route after
    // this leader's copy was read.
    let stranger = RegionRoute {
        region_id: REGION,
        leader: Some(5),
        followers: vec![],
        epoch: 1,
    };
    let key = format!("__meta/route/{REGION}");
    h.deps
        .kv
        .put(
            key.as_bytes(),
            &serde_json::to_vec(&stranger).expect("encode"),
        )
        .await
        .expect("put");
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;

    let stuck = h.record_until(|s| s.last_error.is_some()).await;
    assert_eq!(stuck.step, Step::Switch);
    let stored: RegionRoute = serde_json::from_slice(
        &h.deps
            .kv
            .get(key.as_bytes())
            .await
            .expect("get")
            .expect("stored"),
    )
    .expect("decode");
    assert_eq!(
        stored, stranger,
        "the switch never overwrote a route it did not read"
    );
    assert!(h.told().is_empty(), "nobody upgraded");
}

#[tokio::test(start_paused = true)]
async fn a_member_that_no_longer_leads_takes_no_step() {
    let mut h = Harness::new().await;
    h.migrations = Arc::new(Migrations::new(h.deps.clone()));
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(None, vec![2, 1]).await;
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Failover)
        .await;
    // Leadership is lost just as the term's procedures resume.
    h.lease.set(false, None);
    h.migrations.begin_term(CancellationToken::new()).await;
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(h.route().await.leader, None, "still fenced: no switch");
    assert!(h.told().is_empty(), "no instruction from a former leader");
}

#[tokio::test(start_paused = true)]
async fn a_resumed_fence_skips_what_the_route_shows_was_done() {
    // Already switched to the target: straight to the upgrade.
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(Some(2), vec![]).await;
    h.persist(Some(1), 2, Step::Fence, MigrationReason::Manual)
        .await;
    h.migrations.begin_term(CancellationToken::new()).await;
    assert_eq!(h.finished().await.step, Step::Done);
    assert_eq!(h.told(), [(2, "upgrade_region")]);

    // Already fenced, with no old owner: straight to the switch, with no lease to wait.
    let h = Harness::new().await;
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(None, vec![2]).await;
    h.persist(None, 2, Step::Fence, MigrationReason::Failover)
        .await;
    let before = Instant::now();
    h.migrations.begin_term(CancellationToken::new()).await;
    let done = h.finished().await;
    assert_eq!((done.step, done.released_by), (Step::Done, None));
    assert!(Instant::now() < before + LEASE, "nothing to wait out");
    assert_eq!(h.route().await.leader, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_target_joins_the_route_as_a_follower_before_it_is_asked_to_open() {
    let h = Harness::new().await;
    h.answer(2, "open_region", Answer::Silent);
    h.move_1_to_2(MigrationReason::Manual).await;
    // While the target opens, its reports of the region must not be answered "close it".
    h.record_until(|s| s.step == Step::OpenCandidate).await;
    let route = h.route().await;
    assert_eq!((route.leader, route.followers), (Some(1), vec![2]));
    assert_eq!(h.told(), [(2, "open_region")]);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_open_whose_route_lost_the_follower_adds_it_back_before_opening() {
    // The earlier leader's rollback took the target off the route, then it died before
    // the record said so: the record still says OpenCandidate. Opening now would have
    // the target's next heartbeat told to close the region (found by the simulation).
    let h = Harness::new().await;
    h.alive(1, &[1], true).await;
    h.connect(1);
    h.alive(2, &[], true).await;
    h.connect(2);
    h.put_route(Some(1), vec![]).await;
    h.persist(Some(1), 2, Step::OpenCandidate, MigrationReason::Manual)
        .await;
    h.answer(2, "open_region", Answer::Silent);
    h.migrations.begin_term(CancellationToken::new()).await;
    h.record_until(|s| s.step == Step::OpenCandidate).await;
    until("the target is asked to open", || async {
        h.told().contains(&(2, "open_region")).then_some(())
    })
    .await;
    let route = h.route().await;
    assert_eq!(
        (route.leader, route.followers),
        (Some(1), vec![2]),
        "listed as a follower before it was asked to open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_running_move_counts_toward_its_targets_load_until_it_ends() {
    let h = Harness::new().await;
    h.answer(2, "open_region", Answer::Silent);
    h.move_1_to_2(MigrationReason::Manual).await;
    assert_eq!(h.migrations.planned_targets(), [2]);
    assert_eq!(h.migrations.running_regions(), HashSet::from([REGION]));
    h.deps.routes.delete(REGION).await.expect("drop");
    h.finished().await;
    until("the procedure left the running set", || async {
        h.migrations.planned_targets().is_empty().then_some(())
    })
    .await;
    assert!(h.migrations.running_regions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_region_dropped_during_its_move_ends_the_move_and_closes_the_target() {
    let h = Harness::new().await;
    h.answer(2, "open_region", Answer::Silent);
    h.move_1_to_2(MigrationReason::Manual).await;
    h.record_until(|s| s.step == Step::OpenCandidate).await;
    // The drop: the route goes while the target has not answered.
    h.deps.routes.delete(REGION).await.expect("drop");
    let done = h.finished().await;
    assert_eq!(done.step, Step::RolledBack);
    assert_eq!(
        done.last_error.as_deref(),
        Some("the region was dropped during the move")
    );
    assert_eq!(h.told(), [(2, "open_region"), (2, "close_region")]);
    assert!(h.migrations.in_flight(REGION).await.is_none(), "no record");
    assert_eq!(
        h.deps.routes.get(REGION).await.expect("get"),
        None,
        "the procedure wrote no route back"
    );
}

#[test]
fn the_regions_view_names_each_moving_regions_target() {
    let states = [
        finished_state(7, MigrationReason::Manual, Step::Fence),
        MigrationState {
            to: 5,
            ..finished_state(8, MigrationReason::Drain, Step::Switch)
        },
    ];
    assert_eq!(targets(&states), HashMap::from([(7, 2), (8, 5)]));
    assert!(targets(&[]).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_drain_marks_the_node_and_moves_what_it_leads_within_its_bound() {
    use crate::procedure::drain::{drain, DrainError, DrainOutcome};
    let h = Harness::new().await;
    for id in [1, 2] {
        h.alive(id, &[REGION], true).await;
        h.connect(id);
    }
    h.put_route(Some(1), vec![]).await;
    let cluster = &h.deps.cluster;
    let unknown = drain(cluster, &cluster.maintenance, &h.migrations, 9, WITHIN).await;
    assert!(
        matches!(unknown, Err(DrainError::UnknownNode { node_id: 9 })),
        "{unknown:?}"
    );
    assert!(!cluster.maintenance.is_drained(9), "nothing marked");

    let report = drain(cluster, &cluster.maintenance, &h.migrations, 1, WITHIN)
        .await
        .expect("drained");
    assert!(cluster.maintenance.is_drained(1));
    assert_eq!(report.outcome(), DrainOutcome::Moved, "{report:?}");
    assert_eq!(report.finished.len(), 1);
    assert_eq!(
        (report.finished[0].reason, report.finished[0].to),
        (MigrationReason::Drain, 2)
    );
    assert_eq!(h.route().await.leader, Some(2));
}

/// Re-targeting is a transition, not a failure: with a new target that answers, the
/// switch runs again for it at once, with no backoff and no error on the record.
#[tokio::test(start_paused = true)]
async fn a_retarget_that_works_goes_straight_on_without_a_backoff_or_an_error() {
    let h = Harness::new().await;
    h.alive(3, &[], true).await;
    h.connect(3);
    h.put_route(None, vec![2, 1]).await; // fenced; target 2 has since vanished
    h.persist(Some(1), 2, Step::Switch, MigrationReason::Failover)
        .await;
    let began = Instant::now();
    h.migrations.begin_term(CancellationToken::new()).await;
    let done = h.finished().await;
    assert_eq!((done.step, done.to), (Step::Done, 3));
    assert_eq!(done.last_error, None);
    assert!(
        Instant::now() < began + FIRST_BACKOFF,
        "no step waited out a backoff (the paused clock stood still)"
    );
    assert_eq!(h.told(), [(3, "open_region"), (3, "upgrade_region")]);
}
