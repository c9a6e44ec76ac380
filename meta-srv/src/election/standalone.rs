//! [`StandaloneElection`]: one metasrv, always the leader.
//!
//! The embedded default. It also lets an operator (or a test) demote the process to a
//! follower by hand, which makes every heartbeat answer NOT_LEADER: the same code path a
//! real step-down takes.

use async_trait::async_trait;
use handlers::LeadershipRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Election, LeaderSignal, LeaderState};
use crate::Result;

/// Always leader, unless demoted by hand.
#[derive(Debug)]
pub struct StandaloneElection {
    addr: String,
    signal: LeaderSignal,
}

impl StandaloneElection {
    /// Leads at once, advertising `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        let signal = LeaderSignal::new();
        signal.lead(addr.clone(), None);
        Self { addr, signal }
    }

    /// Sets leadership by hand: `false` makes this metasrv a follower with no leader
    /// known, `true` restores it.
    pub fn set_leader(&self, is_leader: bool) {
        if is_leader {
            self.signal.lead(self.addr.clone(), None);
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

    async fn resign(&self) -> Result<()> {
        self.set_leader(false);
        Ok(())
    }

    async fn leader_addr(&self) -> Result<Option<String>> {
        Ok(self.signal.current().leader_addr)
    }
}
