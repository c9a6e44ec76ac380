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
