//! [`Stat`]: one heartbeat, parsed and validated, in the form handlers and the stats
//! store use.

use serde::{Deserialize, Serialize};

/// One region's load as reported in a heartbeat.
// `Copy`: a node's list of them is copied into the stats ring on every heartbeat, and a
// `Copy` element makes that one memcpy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatSummary {
    /// The region id.
    pub region_id: u64,
    /// The role the node reports for it (proto `RegionRole` value).
    pub role: i32,
    /// Read capacity units since the last heartbeat.
    pub rcus: i64,
    /// Write capacity units since the last heartbeat.
    pub wcus: i64,
    /// Approximate size on disk.
    pub approximate_bytes: u64,
    /// Row count.
    pub row_count: u64,
    /// Whether the data is on shared storage (any datanode can open it), so the region
    /// can fail over.
    #[serde(default)]
    pub shared_storage: bool,
    /// Set when the node cannot serve the region (its storage could not be read): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Box<str>>,
}

/// A validated heartbeat: who sent it, when, and its regions' stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's role (proto `Role` value).
    pub role: i32,
    /// The sender's advertised address.
    pub addr: String,
    /// The sender's process start time; a newer epoch means it restarted.
    pub node_epoch: u64,
    /// The sender's monotonic send time, echoed in the lease.
    pub duration_since_epoch: u64,
    /// When the metasrv received it (ms since the Unix epoch), for operators.
    pub received_at_millis: u64,
    /// Per-region load.
    pub region_stats: Vec<RegionStatSummary>,
    /// Whether the node can open regions on shared storage (so regions may move to it).
    #[serde(default)]
    pub shared_storage: bool,
}

impl Stat {
    /// Total write capacity units across the node's regions.
    pub fn total_wcus(&self) -> i64 {
        self.region_stats.iter().map(|r| r.wcus).sum()
    }
}
