//! Test fixtures: node leases and stats as a leader holds them.

use handlers::stat::RegionStatSummary;
use handlers::{NodeKey, NodeLease, Stat};
use tokio::time::Instant;

/// Datanode `node_id`'s lease record, seen now.
pub(crate) fn lease(node_id: u64, expired: bool, last_granted: Option<Instant>) -> NodeLease {
    let now = Instant::now();
    NodeLease {
        key: NodeKey::datanode(node_id),
        addr: "a".into(),
        node_epoch: 1,
        first_seen: now,
        last_seen: now,
        last_granted,
        region_count: 0,
        expired,
    }
}

/// Datanode `node_id`'s stats: able to open shared storage if `shared`, reporting each
/// region with its storage kind and, if any, why it cannot be read.
pub(crate) fn stat(node_id: u64, shared: bool, regions: &[(u64, bool, Option<&str>)]) -> Stat {
    Stat {
        cluster_id: 1,
        node_id,
        role: common_proto::v1::Role::Datanode,
        addr: "a".into(),
        node_epoch: 1,
        duration_since_epoch: 0,
        received_at_millis: 0,
        region_stats: regions
            .iter()
            .map(
                |&(region_id, shared_storage, unavailable)| RegionStatSummary {
                    region_id,
                    role: common_proto::v1::RegionRole::Leader,
                    rcus: 0,
                    wcus: 0,
                    approximate_bytes: 0,
                    row_count: 0,
                    shared_storage,
                    unavailable: unavailable.map(Into::into),
                },
            )
            .collect(),
        shared_storage: shared,
    }
}
