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
    /// Its version (`None`: a member that registered none).
    #[serde(default)]
    pub version: Option<String>,
    /// Its timings (`None`: a member that registered none).
    #[serde(default)]
    pub timings: Option<crate::timings::MemberTimings>,
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
        Self::count_term(s.term, term);
        s.is_leader = is_leader;
        s.leader_addr = leader_addr;
        s.term = term;
    }
}

impl LeaderSignal {
    /// The term and leader-change series (metrics only).
    fn count_term(old: u64, new: u64) {
        if old != new {
            let m = &crate::metrics::METRICS;
            m.leader_changes.inc();
            m.term.set(new as i64);
        }
    }
}

impl Default for LeaderSignal {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    //! The parts every election shares, on tokio's paused clock: the long poll's
    //! deadline and its "leads itself" rule, and how [`LeaderSignal`] publishes changes.

    use std::time::Duration;

    use handlers::LeadershipView as _;
    use parking_lot::Mutex;

    use super::*;

    /// An election whose backend answer is set by the test, over a real signal.
    #[derive(Debug, Default)]
    struct Fake {
        signal: LeaderSignal,
        backend: Mutex<Option<LeaderInfo>>,
    }

    #[async_trait]
    impl Election for Fake {
        fn leadership(&self) -> LeadershipRef {
            self.signal.view()
        }
        fn subscribe(&self) -> watch::Receiver<LeaderState> {
            self.signal.subscribe()
        }
        async fn run(&self, _shutdown: CancellationToken) -> Result<()> {
            Ok(())
        }
        async fn resign(&self) -> Result<()> {
            Ok(())
        }
        async fn leader(&self) -> Result<Option<LeaderInfo>> {
            Ok(self.backend.lock().clone())
        }
        async fn members(&self) -> Result<Vec<Member>> {
            Ok(Vec::new())
        }
    }

    fn info(addr: &str, term: u64) -> LeaderInfo {
        LeaderInfo {
            addr: addr.into(),
            term,
        }
    }

    fn with_backend(leader: Option<LeaderInfo>) -> Arc<Fake> {
        let fake = Arc::new(Fake::default());
        *fake.backend.lock() = leader;
        fake
    }

    const WAIT: Duration = Duration::from_secs(5);

    /// A long poll, in its own task, by a caller that lost leader `a:1`.
    fn poll_past_a1(fake: &Arc<Fake>) -> tokio::task::JoinHandle<Result<Option<LeaderInfo>>> {
        let fake = fake.clone();
        tokio::spawn(async move { await_leader(fake.as_ref(), Some("a:1"), WAIT).await })
    }

    #[tokio::test(start_paused = true)]
    async fn the_trait_defaults_name_the_leader_hand_over_and_show_no_store() {
        let fake = with_backend(Some(info("a:1", 3)));
        assert_eq!(fake.leader_addr().await.expect("addr"), Some("a:1".into()));
        *fake.backend.lock() = None;
        assert_eq!(fake.leader_addr().await.expect("addr"), None);
        assert!(fake.can_hand_over());
        assert_eq!(fake.store_view(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_other_than_the_lost_one_is_answered_at_once() {
        let fake = with_backend(Some(info("b:1", 4)));
        let start = Instant::now();
        let got = await_leader(fake.as_ref(), Some("a:1"), WAIT)
            .await
            .expect("ok");
        assert_eq!(got, Some(info("b:1", 4)));
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait");
        let got = await_leader(fake.as_ref(), None, WAIT).await.expect("ok");
        assert_eq!(got, Some(info("b:1", 4)), "nothing lost: answered at once");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn asking_about_the_lost_leader_waits_for_a_successor_and_answers_it_at_once() {
        let fake = with_backend(Some(info("a:1", 4)));
        let start = Instant::now();
        let poll = poll_past_a1(&fake);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!poll.is_finished(), "the lost leader is not an answer");
        fake.signal.observed(&info("b:1", 5));
        let got = poll.await.expect("join").expect("ok");
        assert_eq!(got, Some(info("b:1", 5)));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "answered on the change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_successor_the_poll_answers_what_it_knows_at_the_deadline() {
        let fake = with_backend(Some(info("a:1", 4)));
        let start = Instant::now();
        let got = await_leader(fake.as_ref(), Some("a:1"), WAIT)
            .await
            .expect("ok");
        assert_eq!(got, Some(info("a:1", 4)), "whatever is known then");
        assert_eq!(start.elapsed(), WAIT, "held for the whole wait, not less");
        let start = Instant::now();
        let got = await_leader(fake.as_ref(), Some("a:1"), Duration::from_secs(3600))
            .await
            .expect("ok");
        assert_eq!(got, Some(info("a:1", 4)));
        assert_eq!(start.elapsed(), MAX_LEADER_WAIT, "capped");
        let none = with_backend(None);
        let start = Instant::now();
        assert_eq!(
            await_leader(none.as_ref(), None, WAIT).await.expect("ok"),
            None
        );
        assert_eq!(start.elapsed(), WAIT, "no leader known: waits for one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_names_no_leader_keeps_the_poll_waiting() {
        let fake = with_backend(Some(info("a:1", 4)));
        let start = Instant::now();
        let poll = poll_past_a1(&fake);
        tokio::time::sleep(Duration::from_secs(1)).await;
        fake.signal.follow(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!poll.is_finished(), "\"no leader\" is not an answer");
        let got = poll.await.expect("join").expect("ok");
        assert_eq!(got, Some(info("a:1", 4)));
        assert_eq!(start.elapsed(), WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lost_leader_is_answered_at_once_only_by_itself_while_it_leads() {
        // This process is a:1 and leads: a node that lost it (a broken stream) may
        // come straight back.
        let fake = with_backend(Some(info("a:1", 4)));
        fake.signal.lead("a:1".into(), 4, None);
        let start = Instant::now();
        let got = await_leader(fake.as_ref(), Some("a:1"), WAIT)
            .await
            .expect("ok");
        assert_eq!(got, Some(info("a:1", 4)));
        assert_eq!(start.elapsed(), Duration::ZERO);

        // This process knows a:1 as leader but does not lead: it waits.
        let follower = with_backend(Some(info("a:1", 4)));
        follower.signal.observed(&info("a:1", 4));
        let start = Instant::now();
        await_leader(follower.as_ref(), Some("a:1"), WAIT)
            .await
            .expect("ok");
        assert_eq!(start.elapsed(), WAIT, "a follower does not vouch for a:1");

        // This process leads as c:1 while the backend still names the lost a:1: not
        // itself, so it waits too.
        let other = with_backend(Some(info("a:1", 4)));
        other.signal.lead("c:1".into(), 5, None);
        let start = Instant::now();
        await_leader(other.as_ref(), Some("a:1"), WAIT)
            .await
            .expect("ok");
        assert_eq!(
            start.elapsed(),
            WAIT,
            "leading under another name is not a:1 leading"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn observed_teaches_a_follower_its_leader_once_and_never_touches_a_leader() {
        let signal = LeaderSignal::new();
        let mut rx = signal.subscribe();
        signal.observed(&info("a:1", 4));
        assert!(rx.has_changed().expect("open"), "subscribers are told");
        let seen = rx.borrow_and_update().clone();
        assert_eq!(
            (
                seen.is_leader,
                seen.leader_addr.as_deref(),
                seen.term,
                seen.seq
            ),
            (false, Some("a:1"), 4, 1)
        );
        assert_eq!(signal.view().leader_addr().as_deref(), Some("a:1"));
        assert!(!signal.view().is_leader(), "observing grants nothing");

        signal.observed(&info("a:1", 4));
        assert!(
            !rx.has_changed().expect("open"),
            "the same leader again is no change"
        );
        signal.observed(&info("a:1", 5));
        assert!(
            rx.has_changed().expect("open"),
            "a new term of the same address is"
        );
        assert_eq!(rx.borrow_and_update().term, 5);
        signal.observed(&info("b:1", 5));
        assert!(
            rx.has_changed().expect("open"),
            "a new address in the same term is"
        );
        assert_eq!(rx.borrow_and_update().leader_addr.as_deref(), Some("b:1"));

        // Leading: what a watch reports cannot change the leader's own view.
        signal.lead("me:1".into(), 6, None);
        rx.borrow_and_update();
        signal.observed(&info("b:1", 7));
        assert!(!rx.has_changed().expect("open"));
        assert_eq!(signal.current().leader_addr.as_deref(), Some("me:1"));
        assert_eq!(signal.view().leader_addr().as_deref(), Some("me:1"));

        // The lease leads before the state says so (mid-`lead`): still untouched.
        let racing = LeaderSignal::new();
        racing.lease().set(true, Some("me:1".into()));
        let rx = racing.subscribe();
        racing.observed(&info("b:1", 7));
        assert!(!rx.has_changed().expect("open"));
        assert_eq!(racing.view().leader_addr().as_deref(), Some("me:1"));
        // And the published state alone leading (the lease lapsed) also keeps it.
        let lapsed = LeaderSignal::new();
        lapsed.lead("me:1".into(), 8, Some(Instant::now()));
        assert!(!lapsed.view().is_leader(), "a deadline of now has passed");
        let rx = lapsed.subscribe();
        lapsed.observed(&info("b:1", 9));
        assert!(
            !rx.has_changed().expect("open"),
            "follow() steps down, not a watch"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_kind_of_change_bumps_seq_and_nothing_else_does() {
        let signal = LeaderSignal::new();
        let seq = || signal.current().seq;
        signal.lead("a:1".into(), 1, None);
        assert_eq!(seq(), 1);
        assert!(
            signal.lease().is_leader(),
            "the lease is the one that leads"
        );
        assert_eq!(signal.lease().deadline(), None, "standalone: no deadline");
        signal.lead("a:1".into(), 1, None);
        assert_eq!(seq(), 1, "the same state is no change");
        signal.follow(Some("a:1".into()));
        assert_eq!(seq(), 2, "is_leader alone changed");
        assert_eq!(signal.current().term, 1, "following keeps the term");
        signal.follow(Some("b:1".into()));
        assert_eq!(seq(), 3, "the address alone changed");
        signal.observed(&info("b:1", 2));
        assert_eq!(seq(), 4, "the term alone changed");
        let deadline = Instant::now() + Duration::from_secs(3);
        signal.lead("a:1".into(), 3, Some(deadline));
        assert_eq!(signal.lease().deadline(), Some(deadline));
    }
}
