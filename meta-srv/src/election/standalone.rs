//! [`StandaloneElection`]: one metasrv, always the leader.
//!
//! The embedded default. It also lets an operator (or a test) demote the process to a
//! follower by hand, which makes every heartbeat answer NOT_LEADER: the same code path a
//! real step-down takes.

use async_trait::async_trait;
use handlers::LeadershipRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Election, LeaderInfo, LeaderSignal, LeaderState, Member};
use crate::Result;

/// Always leader, unless demoted by hand.
#[derive(Debug)]
pub struct StandaloneElection {
    addr: String,
    http_addr: Option<String>,
    timings: Option<crate::timings::MemberTimings>,
    signal: LeaderSignal,
}

impl StandaloneElection {
    /// Leads at once, advertising `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        let signal = LeaderSignal::new();
        signal.lead(addr.clone(), 1, None);
        Self {
            addr,
            http_addr: None,
            timings: None,
            signal,
        }
    }

    /// Names this member's admin HTTP address in `members()`.
    pub fn with_http_addr(mut self, http_addr: Option<String>) -> Self {
        self.http_addr = http_addr;
        self
    }

    /// Registers this member's timings (and version) with it, for `/cluster` and the
    /// agreement check ([`crate::timings`]).
    pub fn with_timings(mut self, timings: crate::timings::MemberTimings) -> Self {
        self.timings = Some(timings);
        self
    }

    /// Sets leadership by hand: `false` makes this metasrv a follower with no leader
    /// known, `true` restores it.
    pub fn set_leader(&self, is_leader: bool) {
        if is_leader {
            // Alone, each new term of leadership simply counts up.
            let term = self.signal.current().term + 1;
            self.signal.lead(self.addr.clone(), term, None);
        } else {
            self.signal.follow(None);
        }
    }
}

#[async_trait]
impl Election for StandaloneElection {
    fn leadership(&self) -> LeadershipRef {
        self.signal.view()
    }

    fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.signal.subscribe()
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }

    fn can_hand_over(&self) -> bool {
        false
    }

    async fn resign(&self) -> Result<()> {
        self.set_leader(false);
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let state = self.signal.current();
        Ok(state.leader_addr.map(|addr| LeaderInfo {
            addr,
            term: state.term,
        }))
    }

    async fn members(&self) -> Result<Vec<Member>> {
        Ok(vec![Member {
            addr: self.addr.clone(),
            http_addr: self.http_addr.clone(),
            version: Some(common_proto::process::VERSION.to_string()),
            timings: self.timings,
        }])
    }
}
