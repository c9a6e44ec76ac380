//! The [`Election`] trait: who leads, and how the rest of the server learns of changes.
//!
//! An election owns a [`LeaderFlag`] (the synchronous view CheckLeader reads on every
//! heartbeat) and a `watch` channel of [`LeaderState`]. `watch` keeps only the latest
//! value, so a lagging subscriber can never block the election or see a stale queue of
//! changes: it sees the current state when it looks.
//!
//! Implementations: [`StandaloneElection`] (always leader, the embedded default) and
//! [`EtcdElection`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use handlers::{LeaderFlag, LeadershipRef};
use tokio::sync::watch;
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

/// State shared by election implementations: the flag and the watch sender, kept in step.
#[derive(Debug)]
pub struct LeaderSignal {
    flag: Arc<LeaderFlag>,
    tx: watch::Sender<LeaderState>,
}

impl LeaderSignal {
    /// Starts as a follower with no known leader.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(LeaderState::default());
        Self {
            flag: Arc::new(LeaderFlag::new(false, None)),
            tx,
        }
    }

    /// The flag, as a leadership view.
    pub fn view(&self) -> LeadershipRef {
        self.flag.clone()
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn current(&self) -> LeaderState {
        self.tx.borrow().clone()
    }

    /// Publishes a change; the flag flips first so CheckLeader stops granting before
    /// anyone is told.
    pub fn set(&self, is_leader: bool, leader_addr: Option<String>) {
        self.flag.set(is_leader, leader_addr.clone());
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
