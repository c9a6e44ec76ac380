//! A migration's persisted record ([`MigrationState`], its [`Step`]s and reasons), the
//! errors a start reports, and the pure helpers over them.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use snafu::Snafu;

pub(super) const PREFIX: &str = "__meta/procedure/migrate/";
pub(super) const HISTORY: usize = 256;

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

/// Records a finished procedure, keeping the newest [`HISTORY`].
pub(super) fn remember(history: &mut VecDeque<MigrationState>, state: MigrationState) {
    if history.len() >= HISTORY {
        history.pop_front();
    }
    history.push_back(state);
}

/// The `migrations` counter's labels for a finished procedure: its reason, and whether
/// it finished (`done`) or rolled back.
pub(super) fn outcome_labels(state: &MigrationState) -> [&'static str; 2] {
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

pub(super) fn key(region_id: u64) -> String {
    format!("{PREFIX}{region_id}")
}

/// The regions whose procedures are in flight, by region, with their targets (for the
/// supervisor and `/regions`).
pub fn targets(states: &[MigrationState]) -> HashMap<u64, u64> {
    states.iter().map(|s| (s.region_id, s.to)).collect()
}
