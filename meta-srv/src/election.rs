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
use handlers::{LeaderLease, LeadershipRef, LeadershipView as _};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Result;

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod standalone;

#[cfg(feature = "etcd")]
pub use etcd::EtcdElection;
pub use standalone::StandaloneElection;

/// The election's current view, as broadcast to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderState {
    /// Whether this process leads.
    pub is_leader: bool,
    /// The **cluster** term of the leader named here: on etcd, the creation revision of
    /// its election key, so every member reports the same number for the same leader and
    /// a later leader always has a larger one (0: unknown).
    pub term: u64,
    /// The current leader's advertised address, if known.
    pub leader_addr: Option<String>,
    /// A local counter, bumped on every change this process sees: subscribers compare it
    /// to notice a change (the cluster term alone does not change when this process
    /// steps down and no successor is known yet).
    pub seq: u64,
}

/// A leader as the election names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Its advertised gRPC address.
    pub addr: String,
    /// Its cluster term (see [`LeaderState::term`]; 0: unknown).
    pub term: u64,
}

/// A metasrv candidate, as registered with the election.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its advertised gRPC address (what AskLeader names).
    pub addr: String,
    /// Its admin HTTP address, where followers forward admin requests (`None`: HTTP off).
    #[serde(default)]
    pub http_addr: Option<String>,
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

    /// The current leader and its term, for AskLeader; may ask the backend.
    async fn leader(&self) -> Result<Option<LeaderInfo>>;

    /// The current leader's address; may ask the backend.
    async fn leader_addr(&self) -> Result<Option<String>> {
        Ok(self.leader().await?.map(|l| l.addr))
    }

    /// Every candidate, for `GET /cluster` and for forwarding admin requests.
    async fn members(&self) -> Result<Vec<Member>>;

    /// Whether a resign can hand leadership to someone else. A standalone metasrv cannot:
    /// resigning would leave it with no leader at all, so the admin API refuses.
    fn can_hand_over(&self) -> bool {
        true
    }

    /// How this member reaches its store, for `GET /leader` (the etcd endpoints, the one
    /// calls go to first, the one carrying the keep-alive stream); `None` when there is
    /// no remote store.
    fn store_view(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Shared election handle.
pub type ElectionRef = Arc<dyn Election>;

/// The longest an AskLeader long poll may wait, whatever the caller asks.
pub const MAX_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Who leads, as a long poll: answers at once when a leader other than `lost` is known
/// (or when `lost` is this very process and it still leads); otherwise waits, up to
/// `wait`, for the election to name one, and answers the moment it does. At the
/// deadline it answers with whatever is known then (perhaps nothing, perhaps `lost`).
///
/// This is what makes leader discovery fast: a node that lost its leader asks every
/// member with the dead leader as `lost`, and is told the successor as soon as the
/// election names it, instead of polling on a backoff.
pub async fn await_leader(
    election: &dyn Election,
    lost: Option<&str>,
    wait: std::time::Duration,
) -> Result<Option<LeaderInfo>> {
    let deadline = Instant::now() + wait.min(MAX_LEADER_WAIT);
    // Subscribe before reading, so a change between the two is not missed.
    let mut rx = election.subscribe();
    rx.borrow_and_update();
    let mut known = election.leader().await;
    loop {
        if let Ok(Some(leader)) = &known {
            let leads_itself = election.leadership().leader_addr().as_deref()
                == Some(leader.addr.as_str())
                && election.leadership().is_leader();
            if lost != Some(leader.addr.as_str()) || leads_itself {
                return known;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return known,
            changed = rx.changed() => if changed.is_err() { return known },
        }
        let state = rx.borrow_and_update().clone();
        if let Some(addr) = state.leader_addr {
            known = Ok(Some(LeaderInfo {
                addr,
                term: state.term,
            }));
        }
    }
}

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

    /// Begins leading in cluster term `term`, until `deadline` (`None`: no deadline,
    /// standalone), then tells subscribers.
    pub fn lead(&self, addr: String, term: u64, deadline: Option<Instant>) {
        // Every change happens inside the watch's lock, so `lead`, `follow` and
        // `observed` never interleave.
        self.tx.send_modify(|s| {
            match deadline {
                Some(d) => self.lease.lead_until(d, Some(addr.clone())),
                None => self.lease.set(true, Some(addr.clone())),
            }
            Self::apply(s, true, Some(addr), term);
        });
    }

    /// Stops leading at once, then tells subscribers: the lease ends first, so CheckLeader
    /// stops granting before anyone is told. The last known term is kept.
    pub fn follow(&self, leader_addr: Option<String>) {
        self.tx.send_modify(|s| {
            self.lease.step_down(leader_addr.clone());
            let term = s.term;
            Self::apply(s, false, leader_addr, term);
        });
    }

    /// Records the leader the election names (from watching it), unless this process
    /// leads: a follower learns its leader and the cluster term. Never touches authority.
    pub fn observed(&self, leader: &LeaderInfo) {
        self.tx.send_if_modified(|s| {
            if s.is_leader || self.lease.is_leader() {
                return false;
            }
            if s.leader_addr.as_deref() == Some(leader.addr.as_str()) && s.term == leader.term {
                return false;
            }
            self.lease.note_leader(Some(leader.addr.clone()));
            Self::apply(s, false, Some(leader.addr.clone()), leader.term);
            true
        });
    }

    fn apply(s: &mut LeaderState, is_leader: bool, leader_addr: Option<String>, term: u64) {
        if s.is_leader != is_leader || s.leader_addr != leader_addr || s.term != term {
            s.seq += 1;
        }
        if s.term != term {
            let m = &crate::metrics::METRICS;
            m.leader_changes.inc();
            m.term.set(term as i64);
        }
        s.is_leader = is_leader;
        s.leader_addr = leader_addr;
        s.term = term;
    }
}

impl Default for LeaderSignal {
    fn default() -> Self {
        Self::new()
    }
}
