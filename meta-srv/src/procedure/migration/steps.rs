//! The steps of a migration, one function each. A step reads the route, acts, and says
//! where the procedure goes next (`Ok(step)`) or why it cannot: retry the same step after
//! a backoff, or roll the move back ([`StepError`]).
//!
//! **After the fence, only forward**, by the types: the steps from the release on return
//! [`Retry`], which has no way to say "roll back", so no later change can undo a fenced
//! route by mistake. Re-targeting a move whose target died after the fence is a normal
//! transition (the switch runs again for the new target), not an error.

use common_proto::instruction::OpenRole;
use common_proto::{Instruction, RegionIdent};
use handlers::{NodeKey, RegionRoute, RegionRouteStore as _};
use tokio::time::Instant;
use tracing::{info, warn};

use super::manager::Migrations;
use super::state::{MigrationReason, MigrationState, Step};
use crate::cluster::{Purpose, Reach};

/// Why a step before the fence did not move the procedure on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepError {
    /// Transient: run the same step again after a backoff.
    Retry(String),
    /// The move cannot go on (its target is gone or could not open the region, or the
    /// region's leader changed): undo it, so the route is as it was, and end.
    RollBack(String),
}

/// Why a step did not move the procedure on, when all it may do is try again: a backend
/// error, a route changed underneath, a node not connected yet, an instruction not
/// answered. The only error of the steps after the fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry(pub(crate) String);

impl From<Retry> for StepError {
    fn from(Retry(reason): Retry) -> Self {
        StepError::Retry(reason)
    }
}

fn retry<E: std::fmt::Display>(err: E) -> Retry {
    Retry(err.to_string())
}

/// A step before the fence: it may roll back.
type Undoable = Result<Step, StepError>;
/// A step from the fence on: it only goes forward.
type Forward = Result<Step, Retry>;

impl Migrations {
    /// Runs the procedure's current step.
    pub(super) async fn step(&self, state: &mut MigrationState) -> Undoable {
        match state.step {
            Step::AddFollower => self.add_follower(state).await,
            Step::OpenCandidate => self.open_candidate(state).await,
            Step::Fence => self.fence(state).await,
            Step::Release => Ok(self.release(state).await?),
            Step::Switch => Ok(self.switch(state).await?),
            Step::Upgrade => Ok(self.upgrade(state).await?),
            Step::Done | Step::RolledBack => Ok(state.step),
        }
    }

    async fn route(&self, region_id: u64) -> Result<RegionRoute, Retry> {
        self.deps
            .routes
            .get(region_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| retry("the route was deleted"))
    }

    /// Replaces `expected` by `new`; a route changed underneath is retried.
    async fn cas(&self, expected: &RegionRoute, new: RegionRoute) -> Result<(), Retry> {
        match self.deps.routes.compare_and_put(expected, new).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(retry("the route changed; retrying")),
            Err(err) => Err(retry(err)),
        }
    }

    async fn instruct(&self, node_id: u64, ins: Instruction) -> Result<(), String> {
        self.deps
            .mailbox
            .instruct(node_id, &ins, self.deps.instruction_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether the target is there: `Ok(true)` connected, `Ok(false)` gone, a retry
    /// while it is known but not connected yet.
    fn target_present(&self, node_id: u64) -> Result<bool, Retry> {
        match self.deps.cluster.reach(node_id) {
            Reach::Connected => Ok(true),
            Reach::Waiting => Err(retry(format!("target {node_id} is not connected yet"))),
            Reach::Gone => Ok(false),
        }
    }

    /// Someone else moved the region's leadership before the fence: step aside.
    fn leader_changed(route: &RegionRoute) -> StepError {
        StepError::RollBack(format!("the route's leader changed to {:?}", route.leader))
    }

    /// 1. The route gains the target as a follower.
    async fn add_follower(&self, state: &MigrationState) -> Undoable {
        let route = self.route(state.region_id).await?;
        if route.leader != state.from {
            return Err(Self::leader_changed(&route));
        }
        if !route.followers.contains(&state.to) {
            let mut next = route.clone();
            next.followers.push(state.to);
            self.cas(&route, next).await?;
        }
        Ok(Step::OpenCandidate)
    }

    /// 2. The target opens the region as a follower, once the route lists it as one:
    ///    otherwise its next heartbeat is told to close what it just opened. (A procedure
    ///    resumed after a restart that cut its rollback short may find the follower gone.)
    async fn open_candidate(&self, state: &MigrationState) -> Undoable {
        if !self.target_present(state.to)? {
            return Err(StepError::RollBack(format!("target {} is gone", state.to)));
        }
        let route = self.route(state.region_id).await?;
        if !route.followers.contains(&state.to) {
            return Ok(Step::AddFollower);
        }
        let open = Instruction::OpenRegion {
            region_id: state.region_id,
            role: OpenRole::Follower,
            epoch: route.epoch,
        };
        match self.instruct(state.to, open).await {
            Ok(()) => Ok(Step::Fence),
            Err(err) => Err(StepError::RollBack(format!(
                "the target could not open it: {err}"
            ))),
        }
    }

    /// 3. The route loses its leader: no metasrv grants the old owner a leader lease for
    ///    the region from here on.
    async fn fence(&self, state: &MigrationState) -> Undoable {
        let route = self.route(state.region_id).await?;
        if route.leader.is_none() {
            return Ok(Step::Release); // already fenced (a resumed procedure)
        }
        if route.leader == Some(state.to) {
            return Ok(Step::Upgrade);
        }
        if route.leader != state.from {
            return Err(Self::leader_changed(&route));
        }
        let mut followers = vec![state.to];
        followers.extend(state.from);
        self.cas(&route, route.successor(None, followers)).await?;
        info!("route fenced: no node holds a leader grant for the region from now on");
        Ok(Step::Release)
    }

    /// 4. The old owner provably stops writing: downgraded when it is live and answers,
    ///    else its lease is waited out (S1).
    async fn release(&self, state: &mut MigrationState) -> Forward {
        let Some(from) = state.from else {
            return Ok(Step::Switch);
        };
        // A failed-over owner was judged dead: asking it would only wait for a timeout.
        // A live one (migrate, drain) is asked, for at most a lease: past that, waiting
        // out its lease is as fast.
        if state.reason != MigrationReason::Failover
            && self.deps.cluster.reach(from) == Reach::Connected
        {
            let downgrade = Instruction::DowngradeRegion(RegionIdent {
                region_id: state.region_id,
            });
            let timeout = self.deps.instruction_timeout.min(self.deps.lease_wait.own);
            match self.deps.mailbox.instruct(from, &downgrade, timeout).await {
                Ok(()) => {
                    state.released_by = Some("downgraded".into());
                    return Ok(Step::Switch);
                }
                Err(err) => warn!(
                    from,
                    error = %err,
                    "downgrade failed; waiting out the old lease instead"
                ),
            }
        }
        // S1: every leader grant the old owner may hold was given before the fence, and
        // was recorded (before the route was read) in this term's store, or came from an
        // earlier leader, before this term began, for at most the recorded lease bound.
        let term = self
            .deps
            .gate
            .term_start()
            .ok_or_else(|| retry("no leader term"))?;
        let last_grant = self
            .deps
            .cluster
            .node(NodeKey::datanode(from))
            .and_then(|n| n.lease.last_granted);
        let wait = &self.deps.lease_wait;
        let safe_at = wait.safe_at(last_grant, term);
        info!(
            from,
            wait_ms = safe_at
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            own_lease_ms = wait.own.as_millis() as u64,
            earlier_bound_ms = term.earlier.lease.as_millis() as u64,
            earlier_failover_wait_ms = term.earlier.failover_wait.as_millis() as u64,
            failover_wait_ms = wait.failover_wait.as_millis() as u64,
            "waiting out the old owner's lease"
        );
        tokio::time::sleep_until(safe_at).await;
        state.released_by = Some("lease waited out".into());
        Ok(Step::Switch)
    }

    /// 5. The route names the target leader, under a new region epoch.
    async fn switch(&self, state: &mut MigrationState) -> Forward {
        let route = self.route(state.region_id).await?;
        if route.leader == Some(state.to) {
            return Ok(Step::Upgrade);
        }
        if route.leader.is_some() {
            return Err(retry(format!(
                "the route's leader is unexpectedly {:?}",
                route.leader
            )));
        }
        if !self.target_present(state.to)? {
            return self.retarget(state, &route).await;
        }
        let switched = route.successor(Some(state.to), Vec::new());
        let epoch = switched.epoch;
        self.cas(&route, switched).await?;
        info!(
            epoch,
            "route switched to the target under a new region epoch"
        );
        Ok(Step::Upgrade)
    }

    /// The target died after the fence: another takes its place (no rollback now), and
    /// the switch runs again for it.
    async fn retarget(&self, state: &mut MigrationState, route: &RegionRoute) -> Forward {
        let region_id = state.region_id;
        let mut exclude = vec![state.to];
        exclude.extend(state.from);
        let planned = self.planned_targets();
        let Some(next) = self
            .deps
            .cluster
            .place(region_id, Purpose::Move, &exclude, &planned)
            .await
        else {
            return Err(retry(format!(
                "target {} is gone and no other node is available",
                state.to
            )));
        };
        warn!(
            old_target = state.to,
            new_target = next,
            "the target is gone; re-targeting"
        );
        let mut moved = route.clone();
        moved.followers.retain(|f| *f != state.to);
        // A retry after a failed open finds `next` already there.
        if !moved.followers.contains(&next) {
            moved.followers.push(next);
        }
        self.cas(route, moved).await?;
        let open = Instruction::OpenRegion {
            region_id,
            role: OpenRole::Follower,
            epoch: route.epoch,
        };
        self.instruct(next, open).await.map_err(Retry)?;
        state.to = next;
        self.running.lock().insert(region_id, next);
        Ok(Step::Switch)
    }

    /// 6. The target becomes leader.
    async fn upgrade(&self, state: &mut MigrationState) -> Forward {
        if !self.target_present(state.to)? {
            // The route names it; its own failure now starts a new failover (from it,
            // waiting out whatever lease it may hold).
            state.last_error = Some(format!("target {} died before its upgrade", state.to));
            return Ok(Step::Done);
        }
        // The epoch the switch wrote, read back: a resumed procedure (a new leader) never
        // reuses or invents one.
        let route = self.route(state.region_id).await?;
        if route.leader != Some(state.to) {
            return Err(retry(format!(
                "the route's leader is {:?}, not the target",
                route.leader
            )));
        }
        let upgrade = Instruction::UpgradeRegion {
            region_id: state.region_id,
            epoch: route.epoch,
        };
        self.instruct(state.to, upgrade).await.map_err(Retry)?;
        Ok(Step::Done)
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
    pub(super) async fn dropped(&self, mut state: MigrationState) {
        warn!(step = ?state.step, "the region was dropped during the move; ending it");
        self.close_on_target(&state).await;
        state.last_error = Some("the region was dropped during the move".into());
        self.finish(state, Step::RolledBack).await;
    }

    /// Before the fence: undo, so the route is as it was.
    pub(super) async fn roll_back(
        &self,
        state: &mut MigrationState,
        reason: String,
    ) -> Result<(), Retry> {
        warn!(reason, "rolling the migration back");
        let route = self.route(state.region_id).await?;
        if route.leader == Some(state.to) {
            // The target leads by other means (an operator's route edit): nothing of this
            // procedure's to undo, and closing the region would stop its leader.
            state.last_error = Some(reason);
            return Ok(());
        }
        if route.followers.contains(&state.to) {
            let mut undone = route.clone();
            undone.followers.retain(|f| *f != state.to);
            self.deps
                .routes
                .compare_and_put(&route, undone)
                .await
                .map_err(retry)?
                .then_some(())
                .ok_or_else(|| retry("the route changed during the rollback"))?;
        }
        state.last_error = Some(reason);
        self.close_on_target(state).await;
        Ok(())
    }
}
