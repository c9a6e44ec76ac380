//! Draining a datanode: it is marked drained first, so no region lands back on it while
//! its regions move; then a move starts for every region it leads, and the caller waits
//! for them within a bound. What still moves when the bound passes goes on in the
//! background. A move that rolled back or could not start is retried by the supervisor
//! for as long as the node stays drained, so a drain outlasts this call and a leader
//! change.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use snafu::Snafu;
use tokio::time::Instant;

use super::migration::{MigrationError, MigrationReason, MigrationState, Migrations, Step};
use crate::cluster::Cluster;
use crate::maintenance::Maintenance;

/// A region whose move could not start, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The region.
    pub region_id: u64,
    /// Why its move did not start.
    pub error: String,
}

/// What a drain did within its bound.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainReport {
    /// Moves that ended (done or rolled back).
    pub finished: Vec<MigrationState>,
    /// Moves still under way when the bound passed.
    pub running: Vec<MigrationState>,
    /// Regions whose move could not start.
    pub refused: Vec<Refused>,
}

/// A drain's outcome, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every region moved off the node.
    Moved,
    /// Some still move, or rolled back and will be retried.
    Moving,
    /// Some could not start at all.
    Refused,
}

impl DrainReport {
    /// The outcome: refused if any move could not start, moved if every move finished
    /// and none rolled back, else moving.
    pub fn outcome(&self) -> DrainOutcome {
        let rolled_back = self.finished.iter().any(|s| s.step == Step::RolledBack);
        if !self.refused.is_empty() {
            DrainOutcome::Refused
        } else if self.running.is_empty() && !rolled_back {
            DrainOutcome::Moved
        } else {
            DrainOutcome::Moving
        }
    }
}

/// Why a drain did not begin.
#[derive(Debug, Snafu)]
pub enum DrainError {
    /// The leader has no record of the node.
    #[snafu(display("datanode {node_id} is not known to this leader"))]
    UnknownNode {
        /// The node.
        node_id: u64,
    },
    /// The drained mark could not be stored.
    #[snafu(display("cannot mark datanode {node_id} drained: {source}"))]
    Mark {
        /// The node.
        node_id: u64,
        /// The store's error.
        source: crate::Error,
    },
}

/// Drains `node_id`, waiting at most `within` for its moves.
pub async fn drain(
    cluster: &Cluster,
    maintenance: &Maintenance,
    migrations: &Arc<Migrations>,
    node_id: u64,
    within: Duration,
) -> Result<DrainReport, DrainError> {
    if cluster.node(handlers::NodeKey::datanode(node_id)).is_none() {
        return UnknownNodeSnafu { node_id }.fail();
    }
    maintenance
        .set_drained(node_id, true)
        .await
        .map_err(|source| DrainError::Mark { node_id, source })?;
    let mut report = DrainReport::default();
    let mut started = Vec::new();
    for r in cluster.led_by(node_id).await {
        match migrations
            .start(r.region_id, None, MigrationReason::Drain)
            .await
        {
            Ok(state) => started.push(state),
            // Already moving (the supervisor keeps drains going, and may have started this
            // one a moment ago): wait for it like the others.
            Err(MigrationError::AlreadyMigrating { .. }) => {
                started.extend(migrations.in_flight(r.region_id).await);
            }
            Err(err) => report.refused.push(Refused {
                region_id: r.region_id,
                error: err.to_string(),
            }),
        }
    }
    let deadline = Instant::now() + within;
    for s in started {
        let left = deadline.saturating_duration_since(Instant::now());
        match migrations.wait(s.region_id, left).await {
            Some(done) => report.finished.push(done),
            None => report.running.push(s),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: Step) -> MigrationState {
        MigrationState {
            region_id: 1,
            from: Some(1),
            to: 2,
            reason: MigrationReason::Drain,
            step,
            started_ms: 0,
            finished_ms: None,
            last_error: None,
            released_by: None,
        }
    }

    #[test]
    fn the_outcome_is_refused_then_moving_then_moved() {
        let mut report = DrainReport::default();
        assert_eq!(report.outcome(), DrainOutcome::Moved, "nothing to move");
        report.finished.push(state(Step::Done));
        assert_eq!(report.outcome(), DrainOutcome::Moved);
        report.finished.push(state(Step::RolledBack));
        assert_eq!(
            report.outcome(),
            DrainOutcome::Moving,
            "a rollback is retried"
        );
        report.finished.pop();
        report.running.push(state(Step::Release));
        assert_eq!(report.outcome(), DrainOutcome::Moving);
        report.refused.push(Refused {
            region_id: 3,
            error: "local".into(),
        });
        assert_eq!(report.outcome(), DrainOutcome::Refused);
    }
}
