//! The leadership view handlers consult: is this metasrv the leader right now?
//!
//! It is a synchronous read of local state (an atomic), never a network call: CheckLeader
//! runs on every heartbeat. The election implementation keeps it current.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Read-only view of this metasrv's leadership.
pub trait LeadershipView: Send + Sync + Debug + 'static {
    /// Whether this process is the leader and may grant leases.
    fn is_leader(&self) -> bool;

    /// The leader's advertised address, if known, to point followers' callers at it.
    fn leader_addr(&self) -> Option<String>;
}

/// Shared leadership handle.
pub type LeadershipRef = Arc<dyn LeadershipView>;

/// A leadership view backed by a flag and an address, set by whoever runs the election.
/// Standalone mode sets it once; the etcd election flips it on win and step-down.
#[derive(Debug, Default)]
pub struct LeaderFlag {
    leader: AtomicBool,
    // A std RwLock: nothing awaits while holding it.
    leader_addr: RwLock<Option<String>>,
}

impl LeaderFlag {
    /// A flag that says "leader" (with our own address) or "follower".
    pub fn new(is_leader: bool, leader_addr: Option<String>) -> Self {
        Self {
            leader: AtomicBool::new(is_leader),
            leader_addr: RwLock::new(leader_addr),
        }
    }

    /// Updates leadership; called by the election on every change.
    pub fn set(&self, is_leader: bool, leader_addr: Option<String>) {
        *self.leader_addr.write().unwrap_or_else(|p| p.into_inner()) = leader_addr;
        self.leader.store(is_leader, Ordering::SeqCst);
    }
}

impl LeadershipView for LeaderFlag {
    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn leader_addr(&self) -> Option<String> {
        self.leader_addr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
