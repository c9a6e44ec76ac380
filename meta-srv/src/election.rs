//! The [`Election`] trait: who leads, and how the rest of the server learns of changes.
//!
//! An election owns a [`LeaderLease`] (the synchronous view CheckLeader reads on every
//! heartbeat: leadership as a *deadline*, checked at each read) and a `watch` channel of
//! [`LeaderState`]. The watch tells tasks that leadership *changed* (to reset state, close
//! streams); it never grants authority. Authority is the lease's deadline alone, so a
//! late or missed notification cannot extend it. `watch` keeps only the latest value, so
//! a lagging subscriber can never block the election or see a stale queue of changes.
//!
//! Implementations: [`StandaloneElection`] (always leader, the embedded default) and
//! [`EtcdElection`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use handlers::{LeaderLease, LeadershipRef};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Result;

pub mod etcd;
pub mod standalone;

pub use etcd::EtcdElection;
pub use standalone::StandaloneElection;

/// The election's current view, as broadcast to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderState {
    /// Whether this process leads.
    pub is_leader: bool,
    /// Increases on every change of leadership seen by this process.
    pub term: u64,
    /// The current leader's advertised address, if known.
    pub leader_addr: Option<String>,
}

/// Leader election for a metasrv.
#[async_trait]
pub trait Election: Send + Sync + Debug + 'static {
    /// The synchronous leadership view handlers read.
    fn leadership(&self) -> LeadershipRef;

    /// A receiver of leadership changes (latest value only).
    fn subscribe(&self) -> watch::Receiver<LeaderState>;

    /// Campaigns and keeps leadership until `shutdown` fires. Returns when it does.
    async fn run(&self, shutdown: CancellationToken) -> Result<()>;

    /// Gives up leadership now, so a successor is elected at once instead of after a TTL.
    async fn resign(&self) -> Result<()>;

    /// The current leader's address, for AskLeader; may ask the backend.
    async fn leader_addr(&self) -> Result<Option<String>>;

    /// The advertised addresses of every candidate, for `GET /cluster`.
    async fn members(&self) -> Result<Vec<String>> {
        Ok(self.leader_addr().await?.into_iter().collect())
    }
}

/// Shared election handle.
pub type ElectionRef = Arc<dyn Election>;

/// State shared by election implementations: the lease and the watch sender, kept in
/// step.
#[derive(Debug)]
pub struct LeaderSignal {
    lease: Arc<LeaderLease>,
    tx: watch::Sender<LeaderState>,
}

impl LeaderSignal {
    /// Starts as a follower with no known leader.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(LeaderState::default());
        Self {
            lease: Arc::new(LeaderLease::default()),
            tx,
        }
    }

    /// The lease, as a leadership view.
    pub fn view(&self) -> LeadershipRef {
        self.lease.clone()
    }

    /// The lease itself, for its deadline.
    pub fn lease(&self) -> &LeaderLease {
        &self.lease
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.tx.subscribe()
    }

    /// The current published state (what subscribers saw last; for authority, ask the
    /// lease).
    pub fn current(&self) -> LeaderState {
        self.tx.borrow().clone()
    }

    /// Begins leading, until `deadline` (`None`: no deadline, standalone), then tells
    /// subscribers.
    pub fn lead(&self, addr: String, deadline: Option<Instant>) {
        match deadline {
            Some(d) => self.lease.lead_until(d, Some(addr.clone())),
            None => self.lease.set(true, Some(addr.clone())),
        }
        self.publish(true, Some(addr));
    }

    /// Stops leading at once, then tells subscribers: the lease ends first, so CheckLeader
    /// stops granting before anyone is told.
    pub fn follow(&self, leader_addr: Option<String>) {
        self.lease.step_down(leader_addr.clone());
        self.publish(false, leader_addr);
    }

    fn publish(&self, is_leader: bool, leader_addr: Option<String>) {
        self.tx.send_modify(|s| {
            if s.is_leader != is_leader || s.leader_addr != leader_addr {
                s.term += 1;
            }
            s.is_leader = is_leader;
            s.leader_addr = leader_addr;
        });
    }
}

impl Default for LeaderSignal {
    fn default() -> Self {
        Self::new()
    }
}
