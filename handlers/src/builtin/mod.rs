//! The five built-in handlers of the default pipeline, one per file, and their names.

mod check_leader;
mod collect_stats;
mod keep_lease;
mod persist_stats;
mod region_lease;

pub use check_leader::CheckLeaderHandler;
pub use collect_stats::CollectStatsHandler;
pub use keep_lease::KeepLeaseHandler;
pub use persist_stats::{PersistStatsHandler, PersistedStats, StatsCache};
pub use region_lease::RegionLeaseHandler;

/// The built-in handler names, for `insert_before`/`insert_after`/`replace`/`remove`.
pub mod names {
    /// [`CollectStatsHandler`](super::CollectStatsHandler).
    pub const COLLECT_STATS: &str = "collect_stats";
    /// [`CheckLeaderHandler`](super::CheckLeaderHandler).
    pub const CHECK_LEADER: &str = "check_leader";
    /// [`KeepLeaseHandler`](super::KeepLeaseHandler).
    pub const KEEP_LEASE: &str = "keep_lease";
    /// [`RegionLeaseHandler`](super::RegionLeaseHandler).
    pub const REGION_LEASE: &str = "region_lease";
    /// [`PersistStatsHandler`](super::PersistStatsHandler).
    pub const PERSIST_STATS: &str = "persist_stats";
}

#[cfg(test)]
mod tests {
    use common_proto::v1::Role;

    use super::*;
    use crate::HeartbeatHandler;

    #[test]
    fn the_builtins_that_act_on_a_node_accept_every_role() {
        let handlers: [&dyn HeartbeatHandler; 4] = [
            &CollectStatsHandler,
            &CheckLeaderHandler,
            &KeepLeaseHandler,
            &PersistStatsHandler::new(Default::default()),
        ];
        for h in handlers {
            for role in [Role::Datanode, Role::Frontend, Role::Flownode] {
                assert!(h.is_acceptable(role), "{} takes {role:?}", h.name());
            }
        }
        assert!(RegionLeaseHandler.is_acceptable(Role::Datanode));
        assert!(!RegionLeaseHandler.is_acceptable(Role::Frontend));
    }
}
