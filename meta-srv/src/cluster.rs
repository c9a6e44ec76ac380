//! [`Cluster`]: the leader's read-only model of the cluster, and the one answer to each
//! question about it.
//!
//! - `node`: where a node stands ([`Reach`]: connected, waiting, gone), whether it is
//!   drained, and what storage it reports. Every consumer (the migration procedure,
//!   region creation, `/nodes`, the sweeper's log) asks here, so a rule such as "an
//!   expired lease means gone even while a stale stream lingers" is written once.
//! - `placement`: where a region goes. The [`RegionSelector`] chooses among candidates the
//!   model builds (alive, connected, not drained, and for a move able to open shared
//!   storage), each with the regions it leads plus the moves already planned to it. One
//!   path for create, migrate, drain and failover, so an operator's selector places every
//!   region.
//! - `region`: a region's lease state and whether it can be written now, with the
//!   reason (what `/regions` shows).
//!
//! The model reads; it never writes. A consumer gets the model plus the write ports it
//! uses (the route store for the procedure, the mailbox for instructions), not the server.

#[cfg(test)]
pub(crate) mod fixtures;
mod node;
mod placement;
mod region;

use std::sync::Arc;

use handlers::builtin::StatsCache;
use handlers::{
    KvBackendRef, KvRegionRouteStore, NodeLeaseStoreRef, RegionRoute, RegionRouteStore as _,
};

pub use node::{movable_in, NodeState, Reach};
pub use placement::{
    Candidate, LeastRegionsSelector, Purpose, RegionSelector, RegionSelectorRef, Unfit,
};
pub use region::{FailoverMode, LeaseState, RegionHealth};

use crate::maintenance::Maintenance;
use crate::service::pusher::Pushers;

/// The leader's view of nodes, their storage and their load. Cheap to clone. Built by
/// the metasrv's wiring (and the crate's tests) from the parts it reads.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Node leases: liveness and last grants.
    pub(crate) node_leases: NodeLeaseStoreRef,
    /// Who has a stream open.
    pub(crate) pushers: Arc<Pushers>,
    /// Drained nodes.
    pub(crate) maintenance: Arc<Maintenance>,
    /// Recent stats: storage kinds and reported regions.
    pub(crate) stats: Arc<StatsCache>,
    /// The KV backend, for stats flushed by earlier leaders.
    pub(crate) kv: KvBackendRef,
    /// Routes: who leads what.
    pub(crate) routes: Arc<KvRegionRouteStore>,
    /// Where regions go.
    pub(crate) selector: RegionSelectorRef,
}

impl Cluster {
    /// The routes of the regions datanode `node_id` leads, from the per-node index.
    pub async fn led_by(&self, node_id: u64) -> Vec<RegionRoute> {
        self.routes.led_by(node_id).await.unwrap_or_default()
    }

    /// Every node that leads a region, from the per-node index.
    pub async fn route_leaders(&self) -> Vec<u64> {
        self.routes.leaders().await.unwrap_or_default()
    }
}
