//! [`Migrations`]: starts, runs, resumes and remembers the procedures, one per region;
//! each runs in its term's task list and stops when the term ends. The steps themselves
//! are in `steps`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use handlers::{KvBackendRef, KvRegionRouteStore, LeadershipView as _, RegionRouteStore as _};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::state::{
    key, outcome_labels, remember, AlreadyMigratingSnafu, BadTargetSnafu, MigrationError,
    MigrationReason, MigrationState, NoRouteSnafu, RouteChangedSnafu, Step, PREFIX,
};
use super::steps::{Retry, StepError};
use crate::cluster::{Cluster, Purpose};
use crate::leader::gate::LeaderGate;
use crate::leader::lease_bound::LeaseWait;
use crate::leader::term::TermTasks;
use crate::service::mailbox::Mailbox;

/// The first pause after a failed step; it doubles up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between retries of a step.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// Leadership, checked before every step, and the term's start, the bound on
    /// earlier leaders' grants.
    pub gate: Arc<LeaderGate>,
    /// How long a lease wait lasts: own lease, drift margin, `failover_wait`; with the
    /// term's start and the earlier terms' bound ([`LeaderGate::term_start`]).
    pub lease_wait: LeaseWait,
    /// How long one instruction may take.
    pub instruction_timeout: Duration,
}

/// The pause after a step failed `backoff` ago: doubled, at most [`MAX_BACKOFF`].
pub(super) fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
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
    pub(super) deps: MigrationDeps,
    /// Regions whose procedure runs in this process now, with their targets.
    pub(super) running: Mutex<HashMap<u64, u64>>,
    /// The term's procedures; they stop, and are joined, when the term ends.
    term: Mutex<Option<TermTasks>>,
    /// Finished procedures, newest last, for operators and for the supervisor's backoff.
    history: Mutex<VecDeque<MigrationState>>,
    /// Told each time a procedure finishes, for callers that wait.
    done: tokio::sync::watch::Sender<()>,
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

    pub(super) async fn finish(&self, mut state: MigrationState, step: Step) {
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
            if !self.deps.gate.is_leader() {
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
            // Only a step before the fence can ask to roll back (the later ones return
            // `Retry`, which cannot).
            let outcome = match self.step(&mut state).await {
                Err(StepError::RollBack(reason)) => self
                    .roll_back(&mut state, reason)
                    .await
                    .map(|()| Step::RolledBack)
                    .map_err(|Retry(reason)| reason),
                Err(StepError::Retry(reason)) => Err(reason),
                Ok(next) => Ok(next),
            };
            match outcome {
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
}
