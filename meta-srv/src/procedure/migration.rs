//! Region migration: one procedure for failover, manual migrate and drain.
//!
//! **Steps**, each persisted in the KV backend before the next begins, each idempotent, so
//! a new leader resumes a procedure from its last recorded step:
//! 1. **AddFollower**: the route gains the target as a follower (compare-and-set), so the
//!    target's report of the region is not answered with "close it".
//! 2. **OpenCandidate**: the target opens the region as a follower (replaying its data
//!    from shared storage).
//! 3. **Fence**: the route loses its leader (`leader: None`, the old owner a follower).
//!    From here no metasrv grants the old owner a leader lease for this region.
//! 4. **Release**: the old owner must provably stop writing. In a live move (migrate,
//!    drain) it is downgraded (it revokes its lease, fenced against late grants, then
//!    flushes and answers). In a failover, or if it does not answer within a lease, the
//!    procedure waits until its lease cannot possibly be live:
//!    the last grant this leader may have given it (or, if none, the start of this
//!    leader's term, before which every earlier leader's grants lie) + the region lease +
//!    the drift margin. This is invariant S1.
//! 5. **Switch**: the route names the target as leader (compare-and-set).
//! 6. **Upgrade**: the target becomes leader. Its reply goes out on an extra heartbeat,
//!    whose response carries its lease at once: writable within a round trip.
//!
//! Before the fence, a failure rolls back: the target closes the region and leaves the
//! route. After it, the procedure only goes forward; it retries with backoff, and picks
//! another target if its target dies. The old owner, when it heartbeats again, finds the
//! region gone from the route, is told to close it, and does.
//!
//! Only regions whose data is on shared storage move (the target could not open a
//! local-only region's data); [`MigrationError::LocalOnly`] says so.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use common_proto::instruction::OpenRole;
use common_proto::{Instruction, RegionIdent};
use handlers::{
    KvBackendRef, KvRegionRouteStore, LeadershipRef, NodeKey, RegionRoute, RegionRouteStore as _,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use snafu::Snafu;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::cluster::{Cluster, Purpose, Reach};
use crate::leader::gate::LeaderGate;
use crate::leader::lease_bound::LeaseWait;
use crate::leader::term::TermTasks;
use crate::service::mailbox::Mailbox;

const PREFIX: &str = "__meta/procedure/migrate/";
const HISTORY: usize = 256;
/// The first pause after a failed step; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between retries of a step.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a region moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationReason {
    /// Its leader's node was judged failed.
    Failover,
    /// An operator asked (`POST /regions/{id}/migrate`).
    Manual,
    /// Its node is being drained (`POST /nodes/{id}/drain`).
    Drain,
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Add the target to the route as a follower.
    AddFollower,
    /// The target opens the region as follower.
    OpenCandidate,
    /// Take the leader out of the route.
    Fence,
    /// Downgrade the old owner, or wait out its lease.
    Release,
    /// Name the target leader in the route.
    Switch,
    /// Upgrade the target to leader.
    Upgrade,
    /// Finished.
    Done,
    /// Rolled back before the fence, so the route is as it was; or ended because the
    /// region was dropped (`last_error` says which).
    RolledBack,
}

/// A migration's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// The region.
    pub region_id: u64,
    /// The old leader, if the route had one.
    pub from: Option<u64>,
    /// The target.
    pub to: u64,
    /// Why.
    pub reason: MigrationReason,
    /// The next step to run.
    pub step: Step,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it finished, if it has.
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// The last error seen (it retries after the fence).
    #[serde(default)]
    pub last_error: Option<String>,
    /// How the old owner was released: `"downgraded"` or `"lease waited out"`.
    #[serde(default)]
    pub released_by: Option<String>,
}

/// Why a migration could not start or finished badly.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum MigrationError {
    /// The region has no route.
    #[snafu(display("region {region_id} not found"))]
    NoRoute {
        /// The region.
        region_id: u64,
    },
    /// A migration of the region is already under way.
    #[snafu(display("region {region_id} is already migrating to node {to}"))]
    AlreadyMigrating {
        /// The region.
        region_id: u64,
        /// Its target.
        to: u64,
    },
    /// The route changed (the region was dropped and created again) while the
    /// migration started; nothing was done.
    #[snafu(display(
        "region {region_id}'s route changed while the migration started; nothing was moved, retry"
    ))]
    RouteChanged {
        /// The region.
        region_id: u64,
    },
    /// The selector found no node to take the region.
    #[snafu(display("no datanode can take region {region_id}: no other datanode is alive, connected, on shared storage and not drained"))]
    NoTarget {
        /// The region.
        region_id: u64,
    },
    /// The target cannot take the region.
    #[snafu(display("node {node_id} cannot take region {region_id}: {reason}"))]
    BadTarget {
        /// The region.
        region_id: u64,
        /// The target.
        node_id: u64,
        /// Why.
        reason: String,
    },
    /// The region's data is local to its node.
    #[snafu(display("region {region_id} is unavailable for moving: {reason}"))]
    LocalOnly {
        /// The region.
        region_id: u64,
        /// Why (local-only storage, or unknown storage).
        reason: String,
    },
    /// Reading or writing the procedure state failed.
    #[snafu(display("migration of region {region_id}: {message}"))]
    Store {
        /// The region.
        region_id: u64,
        /// What failed.
        message: String,
    },
    /// Rolled back before the route changed.
    #[snafu(display("migration of region {region_id} to node {to} rolled back: {reason}"))]
    RolledBack {
        /// The region.
        region_id: u64,
        /// The target.
        to: u64,
        /// Why.
        reason: String,
    },
}

/// What the procedures use: the cluster model, and the write ports they need.
#[derive(Debug, Clone)]
pub struct MigrationDeps {
    /// Procedure records.
    pub kv: KvBackendRef,
    /// Routes (compare-and-set).
    pub routes: Arc<KvRegionRouteStore>,
    /// Nodes, storage and placement.
    pub cluster: Cluster,
    /// Instructions.
    pub mailbox: Arc<Mailbox>,
    /// Leadership, checked before every step.
    pub leadership: LeadershipRef,
    /// The term's start, the bound on earlier leaders' grants.
    pub gate: Arc<LeaderGate>,
    /// How long a lease wait lasts: own lease, drift margin, `failover_wait`; with the
    /// term's start and the earlier terms' bound ([`LeaderGate::term_start`]).
    pub lease_wait: LeaseWait,
    /// How long one instruction may take.
    pub instruction_timeout: Duration,
}

/// The pause after a step failed `backoff` ago: doubled, at most [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// Records a finished procedure, keeping the newest [`HISTORY`].
fn remember(history: &mut VecDeque<MigrationState>, state: MigrationState) {
    if history.len() >= HISTORY {
        history.pop_front();
    }
    history.push_back(state);
}

/// The `migrations` counter's labels for a finished procedure: its reason, and whether
/// it finished (`done`) or rolled back.
fn outcome_labels(state: &MigrationState) -> [&'static str; 2] {
    let reason = match state.reason {
        MigrationReason::Failover => "failover",
        MigrationReason::Manual => "manual",
        MigrationReason::Drain => "drain",
    };
    let outcome = match state.step {
        Step::Done => "done",
        _ => "rolled_back",
    };
    [reason, outcome]
}

impl MigrationDeps {
    /// Whether the target is there: `Ok(true)` connected, `Ok(false)` gone, `Err` while
    /// it is known but not connected yet (retry).
    fn target_present(&self, node_id: u64) -> Result<bool, String> {
        match self.cluster.reach(node_id) {
            Reach::Connected => Ok(true),
            Reach::Waiting => Err(format!("target {node_id} is not connected yet")),
            Reach::Gone => Ok(false),
        }
    }
}

/// A procedure running in this process: counted in flight until it finishes or its term
/// ends (the task is dropped then, and so is this).
struct Running {
    migrations: Arc<Migrations>,
    region_id: u64,
}

impl Running {
    fn new(migrations: Arc<Migrations>, region_id: u64) -> Self {
        crate::metrics::METRICS.migrations_in_flight.inc();
        Self {
            migrations,
            region_id,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.migrations.running.lock().remove(&self.region_id);
        crate::metrics::METRICS.migrations_in_flight.dec();
    }
}

/// Runs and tracks every migration; one per region at a time.
#[derive(Debug)]
pub struct Migrations {
    deps: MigrationDeps,
    /// Regions whose procedure runs in this process now, with their targets.
    running: Mutex<HashMap<u64, u64>>,
    /// The term's procedures; they stop, and are joined, when the term ends.
    term: Mutex<Option<TermTasks>>,
    /// Finished procedures, newest last, for operators and for the supervisor's backoff.
    history: Mutex<VecDeque<MigrationState>>,
    /// Told each time a procedure finishes, for callers that wait.
    done: tokio::sync::watch::Sender<()>,
}

fn key(region_id: u64) -> String {
    format!("{PREFIX}{region_id}")
}

impl Migrations {
    /// A manager over `deps`; no procedure runs until a term begins.
    pub fn new(deps: MigrationDeps) -> Self {
        Self {
            deps,
            running: Mutex::default(),
            term: Mutex::default(),
            history: Mutex::default(),
            done: tokio::sync::watch::channel(()).0,
        }
    }

    /// What the procedures use.
    pub fn deps(&self) -> &MigrationDeps {
        &self.deps
    }

    /// A term began: resume every persisted procedure under `term`.
    pub async fn begin_term(self: &Arc<Self>, term: CancellationToken) {
        *self.term.lock() = Some(TermTasks::new(term));
        for state in self.persisted().await {
            info!(region_id = state.region_id, to = state.to, step = ?state.step, "resuming a migration left by an earlier term");
            self.spawn(state);
        }
    }

    /// The term ended: procedures stop (their state stays persisted for the next leader);
    /// returns once each has.
    pub async fn end_term(&self) {
        let tasks = self.term.lock().take();
        if let Some(tasks) = tasks {
            info!(
                procedures = tasks.len(),
                "term ended; the next leader resumes its migrations"
            );
            tasks.end().await;
        }
        self.running.lock().clear();
    }

    /// Every persisted (unfinished) procedure.
    pub async fn persisted(&self) -> Vec<MigrationState> {
        match self.deps.kv.range_prefix(PREFIX.as_bytes()).await {
            Ok(kvs) => kvs
                .into_iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect(),
            Err(err) => {
                warn!(error = %err, "cannot list migrations");
                Vec::new()
            }
        }
    }

    /// Finished procedures, newest last.
    pub fn history(&self) -> Vec<MigrationState> {
        self.history.lock().iter().cloned().collect()
    }

    /// The target of every procedure running in this process (one per region), for
    /// placement: a move under way counts toward its target's load.
    pub fn planned_targets(&self) -> Vec<u64> {
        self.running.lock().values().copied().collect()
    }

    /// The regions whose procedure runs in this process now. Under a term every
    /// persisted procedure runs (the term resumes them), so this answers "is the region
    /// moving" without reading the KV backend.
    pub fn running_regions(&self) -> HashSet<u64> {
        self.running.lock().keys().copied().collect()
    }

    /// Whether a procedure for the region is persisted or running.
    pub async fn in_flight(&self, region_id: u64) -> Option<MigrationState> {
        match self.deps.kv.get(key(region_id).as_bytes()).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        }
    }

    /// When the region last finished a failover, for the supervisor's backoff.
    pub fn last_finished(&self, region_id: u64) -> Option<MigrationState> {
        self.history
            .lock()
            .iter()
            .rev()
            .find(|s| s.region_id == region_id)
            .cloned()
    }

    /// Starts moving `region_id` to `to` (or a target the selector picks). Checks the
    /// route, the storage and the target, persists the procedure (refusing a second one
    /// for the region), and runs it in the background.
    pub async fn start(
        self: &Arc<Self>,
        region_id: u64,
        to: Option<u64>,
        reason: MigrationReason,
    ) -> Result<MigrationState, MigrationError> {
        let route = self
            .deps
            .routes
            .get(region_id)
            .await
            .ok()
            .flatten()
            .ok_or(MigrationError::NoRoute { region_id })?;
        if let Some(existing) = self.in_flight(region_id).await {
            return AlreadyMigratingSnafu {
                region_id,
                to: existing.to,
            }
            .fail();
        }
        let from = route.leader;
        let cluster = &self.deps.cluster;
        cluster
            .check_movable(region_id, from)
            .await
            .map_err(|reason| MigrationError::LocalOnly { region_id, reason })?;
        let exclude: Vec<u64> = from.into_iter().collect();
        let to = match to {
            Some(to) => to,
            None => cluster
                .place(region_id, Purpose::Move, &exclude, &self.planned_targets())
                .await
                .ok_or(MigrationError::NoTarget { region_id })?,
        };
        if Some(to) == from {
            return BadTargetSnafu {
                region_id,
                node_id: to,
                reason: "it already leads the region",
            }
            .fail();
        }
        if let Some(unfit) = cluster.unfit(to, Purpose::Move).await {
            return BadTargetSnafu {
                region_id,
                node_id: to,
                reason: unfit.reason(to),
            }
            .fail();
        }
        let state = MigrationState {
            region_id,
            from,
            to,
            reason,
            step: Step::AddFollower,
            started_ms: common_proto::unix_millis(),
            finished_ms: None,
            last_error: None,
            released_by: None,
        };
        let value = serde_json::to_vec(&state).map_err(|e| MigrationError::Store {
            region_id,
            message: e.to_string(),
        })?;
        let created = match self
            .deps
            .kv
            .compare_and_put(key(region_id).as_bytes(), None, &value)
            .await
        {
            Ok(created) => created,
            // A failure may still have been applied (an etcd request that timed out): the
            // record is read back, so an applied start runs instead of leaving a record
            // behind a reported failure, to be resumed by the next leader.
            Err(e) => match self.deps.kv.get(key(region_id).as_bytes()).await {
                Ok(Some(held)) if held == value => true,
                _ => {
                    return Err(MigrationError::Store {
                        region_id,
                        message: e.to_string(),
                    })
                }
            },
        };
        if !created {
            return AlreadyMigratingSnafu { region_id, to }.fail();
        }
        // The route must still be the one checked above. A drop (and a create of the same
        // id) in between would otherwise hand this procedure a region it never checked;
        // from here on, a create of the id sees the record and waits.
        let now = self.deps.routes.get(region_id).await.ok().flatten();
        if now.as_ref() != Some(&route) {
            if let Err(err) = self.deps.kv.delete(key(region_id).as_bytes()).await {
                warn!(region_id, error = %err, "cannot delete the record of a move that did not start; its first step ends it");
            }
            return match now {
                None => NoRouteSnafu { region_id }.fail(),
                Some(_) => RouteChangedSnafu { region_id }.fail(),
            };
        }
        info!(region_id, ?from, to, ?reason, "migration started");
        self.spawn(state.clone());
        Ok(state)
    }

    /// Waits until the region's procedure finished (or `within` passed); returns its
    /// final state, if it finished.
    pub async fn wait(&self, region_id: u64, within: Duration) -> Option<MigrationState> {
        let mut rx = self.done.subscribe();
        let deadline = Instant::now() + within;
        loop {
            if self.in_flight(region_id).await.is_none() {
                return self.last_finished(region_id);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    fn spawn(self: &Arc<Self>, state: MigrationState) {
        let mut term = self.term.lock();
        let Some(tasks) = term.as_mut() else {
            warn!(
                region_id = state.region_id,
                "no leader term: the migration waits for the next one"
            );
            return;
        };
        match self.running.lock().entry(state.region_id) {
            std::collections::hash_map::Entry::Occupied(_) => return,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(state.to);
            }
        }
        let span = tracing::info_span!("migration", region_id = state.region_id, to = state.to);
        let running = Running::new(self.clone(), state.region_id);
        tasks.spawn(
            "migration",
            async move {
                running.migrations.run(state).await;
                drop(running);
            }
            .instrument(span),
        );
    }

    async fn save(&self, state: &MigrationState) -> Result<(), String> {
        let value = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        self.deps
            .kv
            .put(key(state.region_id).as_bytes(), &value)
            .await
            .map_err(|e| e.to_string())
    }

    async fn finish(&self, mut state: MigrationState, step: Step) {
        state.step = step;
        state.finished_ms = Some(common_proto::unix_millis());
        let region_id = state.region_id;
        let took_ms = state
            .finished_ms
            .unwrap_or(0)
            .saturating_sub(state.started_ms);
        info!(from = ?state.from, ?step, took_ms, released_by = ?state.released_by, "migration finished");
        let labels = outcome_labels(&state);
        // History first, then the persisted record: a waiter that finds the record gone
        // must find the outcome already in the history, never neither.
        remember(&mut self.history.lock(), state);
        if let Err(err) = self.deps.kv.delete(key(region_id).as_bytes()).await {
            warn!(error = %err, "cannot delete the finished migration; the next leader re-runs its idempotent last step");
        }
        crate::metrics::METRICS
            .migrations
            .with_label_values(&labels)
            .inc();
        self.done.send_replace(());
    }

    /// Runs the procedure from its recorded step until it finishes or the term ends.
    async fn run(&self, mut state: MigrationState) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if !self.deps.leadership.is_leader() {
                return;
            }
            // A dropped region has nothing left to move: end, rather than retry against
            // a route that is gone or, once the id is reused, belongs to a new region.
            if let Ok(None) = self.deps.routes.get(state.region_id).await {
                self.dropped(state).await;
                return;
            }
            // A step that reports its own outcome (an upgrade whose target died) sets
            // `last_error` itself; an error from an earlier, retried attempt is stale.
            state.last_error = None;
            match self.step(&mut state).await {
                Ok(next) => {
                    state.step = next;
                    backoff = FIRST_BACKOFF;
                    if matches!(next, Step::Done | Step::RolledBack) {
                        self.finish(state, next).await;
                        return;
                    }
                    if let Err(err) = self.save(&state).await {
                        warn!(error = err, "cannot record the migration step; retrying");
                        state.last_error = Some(err);
                        tokio::time::sleep(backoff).await;
                    }
                }
                Err(err) => {
                    warn!(step = ?state.step, error = err, "migration step failed; retrying");
                    state.last_error = Some(err);
                    let _ = self.save(&state).await;
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    async fn route(&self, region_id: u64) -> Result<RegionRoute, String> {
        self.deps
            .routes
            .get(region_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the route was deleted".to_string())
    }

    async fn cas(&self, expected: &RegionRoute, new: RegionRoute) -> Result<bool, String> {
        self.deps
            .routes
            .compare_and_put(expected, new)
            .await
            .map_err(|e| e.to_string())
    }

    async fn instruct(&self, node_id: u64, ins: Instruction) -> Result<(), String> {
        self.deps
            .mailbox
            .instruct(node_id, &ins, self.deps.instruction_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Tells the target to close its copy, best effort: an unrouted copy is closed on
    /// the node's next heartbeat anyway (it comes back as closeable).
    async fn close_on_target(&self, state: &MigrationState) {
        let close = Instruction::CloseRegion(RegionIdent {
            region_id: state.region_id,
        });
        if let Err(err) = self.instruct(state.to, close).await {
            info!(
                to = state.to,
                error = err,
                "the target did not confirm the close"
            );
        }
    }

    /// The region was dropped while it moved: the target may have opened it after the
    /// drop closed the route's holders, so it is told to close it too (best effort: the
    /// region is unrouted, so its lease lapses anyway), and the procedure ends.
    async fn dropped(&self, mut state: MigrationState) {
        warn!(step = ?state.step, "the region was dropped during the move; ending it");
        self.close_on_target(&state).await;
        state.last_error = Some("the region was dropped during the move".into());
        self.finish(state, Step::RolledBack).await;
    }

    /// Before the fence: undo, so the route is as it was.
    async fn roll_back(&self, state: &mut MigrationState, reason: String) -> Result<Step, String> {
        warn!(reason, "rolling the migration back");
        let route = self.route(state.region_id).await?;
        if route.leader == Some(state.to) {
            // The target leads by other means (an operator's route edit): nothing of
            // this procedure's to undo, and closing the region would stop its leader.
            state.last_error = Some(reason);
            return Ok(Step::RolledBack);
        }
        if route.followers.contains(&state.to) {
            let mut undone = route.clone();
            undone.followers.retain(|f| *f != state.to);
            if !self.cas(&route, undone).await? {
                return Err("the route changed during the rollback".into());
            }
        }
        state.last_error = Some(reason);
        self.close_on_target(state).await;
        Ok(Step::RolledBack)
    }

    /// Someone else moved the region's leadership before the fence: step aside.
    async fn leader_changed(
        &self,
        state: &mut MigrationState,
        route: &RegionRoute,
    ) -> Result<Step, String> {
        let reason = format!("the route's leader changed to {:?}", route.leader);
        self.roll_back(state, reason).await
    }

    /// Runs one step; `Ok(next))` moves on, `Err` retries.
    async fn step(&self, state: &mut MigrationState) -> Result<Step, String> {
        let region_id = state.region_id;
        match state.step {
            Step::AddFollower => {
                let route = self.route(region_id).await?;
                if route.leader != state.from {
                    return self.leader_changed(state, &route).await;
                }
                if !route.followers.contains(&state.to) {
                    let mut next = route.clone();
                    next.followers.push(state.to);
                    if !self.cas(&route, next).await? {
                        return Err("the route changed; retrying".into());
                    }
                }
                Ok(Step::OpenCandidate)
            }
            Step::OpenCandidate => {
                if !self.deps.target_present(state.to)? {
                    return self
                        .roll_back(state, format!("target {} is gone", state.to))
                        .await;
                }
                let open = Instruction::OpenRegion {
                    region_id,
                    role: OpenRole::Follower,
                    epoch: self.route(region_id).await?.epoch,
                };
                match self.instruct(state.to, open).await {
                    Ok(()) => Ok(Step::Fence),
                    Err(err) => {
                        self.roll_back(state, format!("the target could not open it: {err}"))
                            .await
                    }
                }
            }
            Step::Fence => {
                let route = self.route(region_id).await?;
                if route.leader.is_none() {
                    return Ok(Step::Release); // already fenced (a resumed procedure)
                }
                if route.leader == Some(state.to) {
                    return Ok(Step::Upgrade);
                }
                if route.leader != state.from {
                    return self.leader_changed(state, &route).await;
                }
                let mut followers = vec![state.to];
                followers.extend(state.from);
                let fenced = route.successor(None, followers);
                if !self.cas(&route, fenced).await? {
                    return Err("the route changed; retrying".into());
                }
                info!("route fenced: no node holds a leader grant for the region from now on");
                Ok(Step::Release)
            }
            Step::Release => {
                let Some(from) = state.from else {
                    return Ok(Step::Switch);
                };
                // A failed-over owner was judged dead: asking it would only wait for a
                // timeout. A live one (migrate, drain) is asked, for at most a lease: past
                // that, waiting out its lease is as fast.
                if state.reason != MigrationReason::Failover
                    && self.deps.cluster.reach(from) == Reach::Connected
                {
                    let downgrade = Instruction::DowngradeRegion(RegionIdent { region_id });
                    let timeout = self.deps.instruction_timeout.min(self.deps.lease_wait.own);
                    let asked = self
                        .deps
                        .mailbox
                        .instruct(from, &downgrade, timeout)
                        .await
                        .map_err(|e| e.to_string());
                    match asked {
                        Ok(()) => {
                            state.released_by = Some("downgraded".into());
                            return Ok(Step::Switch);
                        }
                        Err(err) => warn!(
                            from,
                            error = err,
                            "downgrade failed; waiting out the old lease instead"
                        ),
                    }
                }
                // S1: every leader grant the old owner may hold was given before the fence,
                // and was recorded (before the route was read) in this term's store, or came
                // from an earlier leader, before this term began, for at most the recorded
                // lease bound.
                let term = self.deps.gate.term_start().ok_or("no leader term")?;
                let last_grant = self
                    .deps
                    .cluster
                    .node(NodeKey::datanode(from))
                    .and_then(|n| n.lease.last_granted);
                let safe_at = self.deps.lease_wait.safe_at(last_grant, term);
                let wait = safe_at.saturating_duration_since(Instant::now());
                info!(
                    from,
                    wait_ms = wait.as_millis() as u64,
                    own_lease_ms = self.deps.lease_wait.own.as_millis() as u64,
                    earlier_bound_ms = term.earlier.lease.as_millis() as u64,
                    earlier_failover_wait_ms = term.earlier.failover_wait.as_millis() as u64,
                    failover_wait_ms = self.deps.lease_wait.failover_wait.as_millis() as u64,
                    "waiting out the old owner's lease"
                );
                tokio::time::sleep_until(safe_at).await;
                state.released_by = Some("lease waited out".into());
                Ok(Step::Switch)
            }
            Step::Switch => {
                let route = self.route(region_id).await?;
                if route.leader == Some(state.to) {
                    return Ok(Step::Upgrade);
                }
                if route.leader.is_some() {
                    return Err(format!(
                        "the route's leader is unexpectedly {:?}",
                        route.leader
                    ));
                }
                if !self.deps.target_present(state.to)? {
                    // The target died after the fence: pick another (no rollback now).
                    let mut exclude = vec![state.to];
                    exclude.extend(state.from);
                    let planned = self.planned_targets();
                    let next = self
                        .deps
                        .cluster
                        .place(region_id, Purpose::Move, &exclude, &planned)
                        .await;
                    let Some(next) = next else {
                        return Err(format!(
                            "target {} is gone and no other node is available",
                            state.to
                        ));
                    };
                    warn!(
                        old_target = state.to,
                        new_target = next,
                        "the target is gone; re-targeting"
                    );
                    let mut route2 = route.clone();
                    route2.followers.retain(|f| *f != state.to);
                    // A retry after a failed open finds `next` already there.
                    if !route2.followers.contains(&next) {
                        route2.followers.push(next);
                    }
                    if !self.cas(&route, route2).await? {
                        return Err("the route changed; retrying".into());
                    }
                    self.instruct(
                        next,
                        Instruction::OpenRegion {
                            region_id,
                            role: OpenRole::Follower,
                            epoch: route.epoch,
                        },
                    )
                    .await?;
                    state.to = next;
                    self.running.lock().insert(region_id, next);
                    return Err("re-targeted; switching next".into());
                }
                let switched = route.successor(Some(state.to), Vec::new());
                let epoch = switched.epoch;
                if !self.cas(&route, switched).await? {
                    return Err("the route changed; retrying".into());
                }
                info!(
                    epoch,
                    "route switched to the target under a new region epoch"
                );
                Ok(Step::Upgrade)
            }
            Step::Upgrade => {
                if !self.deps.target_present(state.to)? {
                    // The route names it; its own failure now starts a new failover (from
                    // it, waiting out whatever lease it may hold).
                    state.last_error = Some(format!("target {} died before its upgrade", state.to));
                    return Ok(Step::Done);
                }
                // The epoch the switch wrote, read back: a resumed procedure (a new
                // leader) never reuses or invents one.
                let route = self.route(region_id).await?;
                if route.leader != Some(state.to) {
                    return Err(format!(
                        "the route's leader is {:?}, not the target",
                        route.leader
                    ));
                }
                self.instruct(
                    state.to,
                    Instruction::UpgradeRegion {
                        region_id,
                        epoch: route.epoch,
                    },
                )
                .await?;
                Ok(Step::Done)
            }
            Step::Done | Step::RolledBack => Ok(state.step),
        }
    }
}

/// The regions whose procedures are in flight, by region, with their targets (for the
/// supervisor and `/regions`).
pub fn targets(states: &[MigrationState]) -> HashMap<u64, u64> {
    states.iter().map(|s| (s.region_id, s.to)).collect()
}

#[cfg(test)]
mod tests;
