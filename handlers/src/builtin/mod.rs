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

use common_proto::v1::{HeartbeatRequest, Role};

use crate::NodeKey;

/// Any real role; `Unspecified` never reaches handlers (validation refuses it).
fn any_known_role(role: Role) -> bool {
    role != Role::Unspecified
}

/// The sender's key, from its (already validated) header.
fn node_key(req: &HeartbeatRequest) -> Option<NodeKey> {
    let h = req.header.as_ref()?;
    Some(NodeKey {
        role: h.role(),
        node_id: h.node_id,
    })
}

#[cfg(test)]
mod tests {
    use common_proto::v1::Role;

    use super::*;
    use crate::test_util::{fixture, request, run};
    use crate::{HandlerGroupBuilder, HeartbeatHandler};

    #[test]
    fn the_builtins_that_act_on_a_node_accept_every_real_role_and_no_other() {
        let handlers: [&dyn HeartbeatHandler; 2] = [&CheckLeaderHandler, &KeepLeaseHandler];
        for h in handlers {
            for role in [Role::Datanode, Role::Frontend, Role::Flownode] {
                assert!(h.is_acceptable(role), "{} takes {role:?}", h.name());
            }
            assert!(
                !h.is_acceptable(Role::Unspecified),
                "{} ignores a role validation would have refused",
                h.name()
            );
        }
    }

    #[tokio::test]
    async fn a_heartbeat_without_a_role_records_nothing_even_if_it_gets_past_validation() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        let acc = run(&group, &f.ctx, &request(7, Role::Unspecified, &[], 5)).await;
        assert!(acc.region_lease.is_none());
        assert!(
            f.ctx.node_leases.list().is_empty(),
            "no lease for a roleless node"
        );
    }
}
