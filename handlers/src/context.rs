//! [`Context`]: the ports handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use crate::{
    ClockRef, KvBackendRef, KvRegionRouteStore, LeaderLease, LeadershipRef, MemoryKvBackend,
    MemoryNodeLeaseStore, NodeLeaseStoreRef, RegionRouteStoreRef, TokioClock,
};

/// The lease timings handlers need. Derived from the metasrv config, where they are
/// validated against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a region lease lasts from the datanode's send time.
    pub region_lease: Duration,
    /// How long a node may stay silent before it is expired.
    pub node_lease: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            region_lease: Duration::from_secs(10),
            node_lease: Duration::from_secs(10),
        }
    }
}

/// Everything a handler may touch, as narrow traits. Cheap to clone (all `Arc`s).
#[derive(Debug, Clone)]
pub struct Context {
    /// The cluster this metasrv serves.
    pub cluster_id: u64,
    /// Durable storage (routes, registrations, flushed stats).
    pub kv: KvBackendRef,
    /// Whether we lead.
    pub leadership: LeadershipRef,
    /// Node liveness, in leader memory.
    pub node_leases: NodeLeaseStoreRef,
    /// Region routes.
    pub routes: RegionRouteStoreRef,
    /// The monotonic clock.
    pub clock: ClockRef,
    /// Lease timings.
    pub leases: LeaseOptions,
    /// Sends instructions to other nodes (the metasrv's mailbox); `None` without one.
    pub mailbox: Option<crate::InstructionSenderRef>,
}

impl Context {
    /// A context on the embedded in-memory backends, leading, on tokio's clock: the
    /// standalone configuration, and what examples and tests start from.
    pub fn in_memory(cluster_id: u64, leases: LeaseOptions) -> Self {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        Self {
            cluster_id,
            routes: Arc::new(KvRegionRouteStore::new(kv.clone())),
            kv,
            leadership: Arc::new(LeaderLease::new(true, None)),
            node_leases: Arc::new(MemoryNodeLeaseStore::new()),
            clock: Arc::new(TokioClock),
            leases,
            mailbox: None,
        }
    }
}
