//! [`LeaderGate`]: leadership as the handlers see it.
//!
//! Being elected is not enough to grant leases: a new leader must first reload routes
//! (another leader may have changed them) and reset leader-only state. The gate says
//! "leader" only when the election says so **and** that preparation finished for the
//! current term. A step-down closes the gate at once, since the election flips its flag
//! before anything else.
//!
//! The gate also keeps a [`GrantLog`]: per term, when leadership began and ended, when
//! this metasrv first and last answered a heartbeat as leader (granting leases), and when
//! a leader task last acted, on the wall clock. Each time is taken *before* the deadline
//! check that allowed the act, so a pause after the check cannot make a record look
//! later than the authority behind it. Tests compare the logs of every metasrv to prove
//! that no two ever acted as leader at the same time.

use std::sync::atomic::{AtomicU64, Ordering};

use handlers::{LeadershipRef, LeadershipView};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::election::LeaderState;
use crate::leader::lease_bound::{Bound, TermStart};

/// One leadership term of this metasrv, as recorded.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TermRecord {
    /// The cluster term (the same number on every member; see `LeaderState::term`).
    pub term: u64,
    /// When the gate opened (ms since the Unix epoch).
    pub began_ms: u64,
    /// When leadership ended, if it has.
    pub ended_ms: Option<u64>,
    /// The first lease grant of the term.
    pub first_grant_ms: Option<u64>,
    /// The last lease grant of the term.
    pub last_grant_ms: Option<u64>,
    /// How many heartbeats were granted leases.
    pub grants: u64,
    /// The last time a leader task (the sweeper) acted in this term.
    pub last_task_ms: Option<u64>,
}

/// Grant history, newest last; bounded.
#[derive(Debug, Default)]
pub struct GrantLog {
    // Every method is synchronous: nothing awaits while holding it.
    terms: Mutex<Vec<TermRecord>>,
}

const MAX_TERMS: usize = 256;

impl GrantLog {
    fn begin(&self, term: u64) {
        let mut terms = self.terms.lock();
        if terms.len() == MAX_TERMS {
            terms.remove(0);
        }
        terms.push(TermRecord {
            term,
            began_ms: common_proto::unix_millis(),
            ..Default::default()
        });
    }

    fn end(&self) {
        if let Some(t) = self.terms.lock().last_mut() {
            if t.ended_ms.is_none() {
                t.ended_ms = Some(common_proto::unix_millis());
            }
        }
    }

    /// Records a heartbeat answered as leader with leases, decided at `at_ms` (taken
    /// before the leadership check that allowed it).
    pub fn record_grant(&self, at_ms: u64) {
        if let Some(t) = self.terms.lock().last_mut() {
            t.first_grant_ms.get_or_insert(at_ms);
            t.last_grant_ms = Some(t.last_grant_ms.map_or(at_ms, |l| l.max(at_ms)));
            t.grants += 1;
        }
    }

    /// Records that a leader task acted at `at_ms` (taken before its leadership check).
    pub fn record_task(&self, at_ms: u64) {
        if let Some(t) = self.terms.lock().last_mut() {
            t.last_task_ms = Some(t.last_task_ms.map_or(at_ms, |l| l.max(at_ms)));
        }
    }

    /// Every recorded term.
    pub fn terms(&self) -> Vec<TermRecord> {
        self.terms.lock().clone()
    }
}

/// Elected *and* ready.
#[derive(Debug)]
pub struct LeaderGate {
    election: LeadershipRef,
    state: watch::Receiver<LeaderState>,
    /// The `LeaderState::seq` the gate is open for (0: closed).
    ready_seq: AtomicU64,
    /// When the open term began, on the monotonic clock, and the longest lease an
    /// earlier term may have granted: every grant of earlier leaders came before it, so
    /// the two bound the leases a new leader does not know about.
    term_started: Mutex<Option<TermStart>>,
    /// Told each time the gate opens, for [`LeaderGate::wait_open`].
    opened: watch::Sender<u64>,
    /// The grant history.
    pub grants: GrantLog,
}

impl LeaderGate {
    /// A closed gate over an election's view and state.
    pub fn new(election: LeadershipRef, state: watch::Receiver<LeaderState>) -> Self {
        Self {
            election,
            state,
            ready_seq: AtomicU64::new(0),
            term_started: Mutex::new(None),
            opened: watch::channel(0).0,
            grants: GrantLog::default(),
        }
    }

    /// Opens the gate for the election state numbered `seq` (cluster term `term`), once
    /// leader state is ready and the lease bound is recorded: earlier terms may have
    /// granted leases up to `earlier`.
    pub fn open(&self, seq: u64, term: u64, earlier: Bound) {
        *self.term_started.lock() = Some(TermStart {
            at: Instant::now(),
            earlier,
        });
        self.grants.begin(term);
        self.ready_seq.store(seq, Ordering::SeqCst);
        self.opened.send_replace(seq);
    }

    /// Waits until the gate is open, at most `within`; returns whether it is. A
    /// heartbeat that reaches a just-elected leader waits here the few milliseconds its
    /// state takes to load, instead of being sent away as NOT_LEADER.
    pub async fn wait_open(&self, within: std::time::Duration) -> bool {
        let mut opened = self.opened.subscribe();
        let wait = async {
            loop {
                if self.is_leader() {
                    return;
                }
                if opened.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.is_leader()
    }

    /// When the open term began (monotonic); `None` while closed.
    pub fn term_started(&self) -> Option<Instant> {
        self.term_start().map(|t| t.at)
    }

    /// When the open term began and the bound on earlier terms' leases; `None` while
    /// closed.
    pub fn term_start(&self) -> Option<TermStart> {
        *self.term_started.lock()
    }

    /// The election state the gate is open for (0: closed).
    pub fn ready_seq(&self) -> u64 {
        self.ready_seq.load(Ordering::SeqCst)
    }

    /// Closes the gate (records the end of the term).
    pub fn close(&self) {
        self.ready_seq.store(0, Ordering::SeqCst);
        *self.term_started.lock() = None;
        self.grants.end();
    }
}

impl LeadershipView for LeaderGate {
    fn is_leader(&self) -> bool {
        let ready = self.ready_seq.load(Ordering::SeqCst);
        if ready == 0 || !self.election.is_leader() {
            return false;
        }
        self.state.borrow().seq == ready
    }

    fn leader_addr(&self) -> Option<String> {
        self.election.leader_addr()
    }

    fn deadline(&self) -> Option<Instant> {
        self.election.deadline()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use handlers::LeaderLease;

    use super::*;

    /// A gate over a lease leading until `deadline`, with the election at `seq`.
    fn gate(seq: u64) -> (Arc<LeaderLease>, watch::Sender<LeaderState>, LeaderGate) {
        let lease = Arc::new(LeaderLease::new(false, Some("me:1".into())));
        let (tx, rx) = watch::channel(LeaderState {
            is_leader: true,
            term: 7,
            leader_addr: Some("me:1".into()),
            seq,
        });
        let g = LeaderGate::new(lease.clone(), rx);
        (lease, tx, g)
    }

    #[tokio::test(start_paused = true)]
    async fn open_for_the_current_state_and_only_while_the_election_holds() {
        let (lease, tx, g) = gate(5);
        lease.lead_until(Instant::now() + Duration::from_secs(3), Some("me:1".into()));
        assert!(!g.is_leader(), "closed until opened");
        assert_eq!(g.ready_seq(), 0);
        assert_eq!(g.term_started(), None);
        g.open(5, 7, Bound::default());
        assert!(g.is_leader());
        assert_eq!(g.ready_seq(), 5);
        assert_eq!(g.term_started(), Some(Instant::now()));
        assert_eq!(g.leader_addr().as_deref(), Some("me:1"));
        assert_eq!(g.deadline(), lease.deadline());
        // The election's deadline passes with no new state announced: closed anyway.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            !g.is_leader(),
            "the gate never outlives the election's deadline"
        );
        // A newer election state than the one opened for: closed.
        lease.lead_until(Instant::now() + Duration::from_secs(3), None);
        assert!(g.is_leader());
        tx.send_modify(|s| s.seq = 6);
        assert!(!g.is_leader(), "opened for seq 5, the election is at 6");
        g.close();
        assert_eq!(g.ready_seq(), 0);
        assert_eq!(g.term_started(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_open_returns_when_opened_or_at_its_bound() {
        let (lease, _tx, g) = gate(3);
        lease.lead_until(Instant::now() + Duration::from_secs(30), None);
        let g = Arc::new(g);
        assert!(
            !g.wait_open(Duration::from_millis(100)).await,
            "still closed"
        );
        let opener = {
            let g = g.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                g.open(3, 1, Bound::default());
            })
        };
        let start = Instant::now();
        assert!(
            g.wait_open(Duration::from_secs(5)).await,
            "opened meanwhile"
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "at once, not at the bound"
        );
        opener.await.expect("opener");
    }

    #[test]
    fn the_grant_log_records_each_term_its_grants_and_tasks() {
        let log = GrantLog::default();
        log.record_grant(1);
        assert!(log.terms().is_empty(), "no term, nothing recorded");
        log.begin(9);
        log.record_grant(200);
        log.record_grant(150);
        log.record_task(120);
        log.record_task(110);
        let t = log.terms().pop().expect("a term");
        assert_eq!(t.term, 9);
        assert!(t.began_ms > 0);
        assert_eq!(t.first_grant_ms, Some(200));
        assert_eq!(
            t.last_grant_ms,
            Some(200),
            "the latest, not the last recorded"
        );
        assert_eq!(t.grants, 2);
        assert_eq!(t.last_task_ms, Some(120));
        assert_eq!(t.ended_ms, None);
        log.end();
        let ended = log.terms().pop().expect("a term").ended_ms;
        assert!(ended.is_some());
        log.end();
        assert_eq!(
            log.terms().pop().expect("a term").ended_ms,
            ended,
            "ends once"
        );
        log.begin(10);
        assert_eq!(log.terms().len(), 2);
    }
}
