//! The [`RegionEngine`] trait: what the heartbeat task needs from an embedder's storage.
//!
//! A region is writable only when **both** hold: its role is leader (set by
//! instructions), and its lease is live (set by the RegionAliveKeeper). The engine keeps
//! the two flags apart so neither path can make a region writable alone.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use serde::Serialize;

use crate::Result;

/// One region's state and load, as the heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegionInfo {
    /// The region id.
    pub region_id: u64,
    /// Leader or follower.
    #[serde(serialize_with = "role_label")]
    pub role: RegionRole,
    /// Whether the lease is live (writes also need the leader role).
    pub lease_valid: bool,
    /// Rows stored.
    pub rows: u64,
    /// Approximate bytes stored.
    pub bytes: u64,
    /// Reads served since open.
    pub reads: u64,
    /// Writes served since open.
    pub writes: u64,
}

fn role_label<S: serde::Serializer>(role: &RegionRole, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.label())
}

impl RegionInfo {
    /// Whether writes are accepted now.
    pub fn writable(&self) -> bool {
        self.role == RegionRole::Leader && self.lease_valid
    }
}

/// The storage side a datanode embeds. All methods must be idempotent: instructions may
/// be redelivered.
#[async_trait]
pub trait RegionEngine: Send + Sync + Debug + 'static {
    /// Every open region, for heartbeat stats. Called on every heartbeat: keep it cheap.
    fn regions(&self) -> Vec<RegionInfo>;

    /// One region's state.
    fn region(&self, region_id: u64) -> Option<RegionInfo>;

    /// Opens (or creates) a region in `role`, with **no** valid lease: it stays readonly
    /// until a grant arrives. Opening an open region only updates its role.
    async fn open_region(&self, region_id: u64, role: RegionRole) -> Result<()>;

    /// Closes a region; returns whether it was open.
    async fn close_region(&self, region_id: u64) -> Result<bool>;

    /// Sets a region's role.
    fn set_role(&self, region_id: u64, role: RegionRole) -> Result<()>;

    /// Sets whether the region's lease is live; called by the keeper only.
    fn set_lease_valid(&self, region_id: u64, valid: bool);

    /// Makes the region's data durable (before a downgrade hands it over).
    async fn flush(&self, region_id: u64) -> Result<()>;
}

/// Shared engine handle.
pub type RegionEngineRef = Arc<dyn RegionEngine>;
