//! The [`RegionEngine`] trait: what the heartbeat task needs from an embedder's storage.
//!
//! A region is writable only when **both** hold, at the moment of the write: its role is
//! leader (set by instructions, kept by the engine), and `now < deadline` of its lease
//! (kept by [`RegionLeases`](crate::lease::RegionLeases), applied by the RegionAliveKeeper). Neither alone makes a
//! region writable, and no flag stands in for the deadline.
//!
//! **The safety rule for implementors.** An engine's write path must call
//! [`RegionLeases::begin_write`](crate::lease::RegionLeases::begin_write) before it applies a write, and
//! [`WriteTicket::confirm`](crate::lease::WriteTicket::confirm) before it acknowledges it;
//! and must refuse the write unless the region's role is leader. A write path that skips
//! either check can accept writes on a lapsed lease, while the metasrv may already have
//! granted the region to another node: two writers (invariant S1 broken).
//!
//! **The fencing rule for shared storage.** A lease stops this node from *deciding* to
//! write; it cannot stop a write decided just before a pause from reaching storage after
//! the region moved. So every write is stamped with the **region epoch** of its ticket
//! ([`WriteTicket::region_epoch`](crate::lease::WriteTicket::region_epoch)), which grows each time
//! the region's writable owner changes; the engine receives it too when a region is opened
//! or upgraded to leader. Storage must refuse, or ignore on replay, anything written under
//! an epoch older than the newest it has seen for that region. The demo engine does it with
//! one log segment per owner, sealed by the next (`region_log`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::RegionRole;
use serde::Serialize;

use crate::Result;

/// One region's state and load, as the heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionInfo {
    /// The region id.
    pub region_id: u64,
    /// Leader or follower.
    #[serde(serialize_with = "role_label")]
    pub role: RegionRole,
    /// Rows stored.
    pub rows: u64,
    /// Approximate bytes stored.
    pub bytes: u64,
    /// Reads served since open.
    pub reads: u64,
    /// Writes served since open.
    pub writes: u64,
    /// Whether the region's data lives on shared storage that any datanode can open
    /// (reported to the metasrv: only such a region can fail over).
    pub shared_storage: bool,
    /// The newest region epoch this node holds the region under.
    pub epoch: u64,
    /// Set when the region's storage could not be read: the reason. Such a region takes
    /// no writes, and is reported so the metasrv and operators see it.
    pub unavailable: Option<String>,
}

fn role_label<S: serde::Serializer>(role: &RegionRole, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.label())
}

/// The storage side a datanode embeds. All methods must be idempotent: instructions may
/// be redelivered.
#[async_trait]
pub trait RegionEngine: Send + Sync + Debug + 'static {
    /// Every open region, for heartbeat stats. Called on every heartbeat: keep it cheap.
    fn regions(&self) -> Vec<RegionInfo>;

    /// One region's state.
    fn region(&self, region_id: u64) -> Option<RegionInfo>;

    /// Opens (or creates) a region in `role`, under the route's region `epoch`. It stays
    /// readonly until a lease is granted (the keeper tracks it from then on). Opening an
    /// open region only updates its role and epoch. Refuse it if the storage has already
    /// seen a newer epoch: the instruction is stale.
    async fn open_region(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<()>;

    /// Closes a region; returns whether it was open.
    async fn close_region(&self, region_id: u64) -> Result<bool>;

    /// Sets a region's role, under the route's region `epoch` (the one naming this node
    /// leader, on an upgrade). Becoming leader on shared storage must first catch up with
    /// what the previous leader wrote there; its first write fences older writers.
    fn set_role(&self, region_id: u64, role: RegionRole, epoch: u64) -> Result<()>;

    /// Whether this engine can open regions on the cluster's shared storage, reported to
    /// the metasrv: only then may regions move here. Local-only engines keep the default.
    fn shared_storage(&self) -> bool {
        false
    }

    /// Makes the region's data durable (before a downgrade hands it over).
    async fn flush(&self, region_id: u64) -> Result<()>;
}

/// Shared engine handle.
pub type RegionEngineRef = Arc<dyn RegionEngine>;
