//! [`EtcdElection`]: leader election through etcd's election API, with a real resign.
//!
//! One **term** of a candidate:
//! 1. grant a lease of `meta_lease` and keep it alive every TTL/3, each keep-alive under a
//!    TTL/3 timeout, so a failure is noticed at least TTL/3 before etcd expires the
//!    lease, and thus before any rival can win;
//! 2. register as a member (a key on the lease, so it vanishes with us);
//! 3. campaign, racing the campaign against the keep-alives: a lease lost while waiting
//!    ends the term;
//! 4. leadership **begins** only after the campaign returned *and* one more keep-alive
//!    confirmed the lease;
//! 5. leadership **ends at once** when a keep-alive fails or times out, the lease is
//!    reported expired, the observed leader is someone else, or `resign` is called. The
//!    flag flips first, so CheckLeader stops granting before anything else happens.
//!
//! Then the candidate campaigns again, after a short pause.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, GetOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper, PutOptions, ResignOptions,
};
use handlers::LeadershipRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Election, LeaderSignal, LeaderState};
use crate::error::{ElectionSnafu, Result};

/// Why a term ended.
enum TermEnd {
    Shutdown,
    Resigned,
    Lost(String),
}

/// Leader election on etcd.
pub struct EtcdElection {
    client: Client,
    name: String,
    members_prefix: String,
    addr: String,
    ttl: Duration,
    op_timeout: Duration,
    signal: LeaderSignal,
    // A std Mutex: set and taken without awaiting.
    current: Mutex<Option<(LeaderKey, i64)>>,
    /// The lease of the running term, revoked when the term ends for any reason, so no
    /// election key outlives the term that owned it.
    term_lease: Mutex<Option<i64>>,
    /// Bumped by every resign. A counter in a `watch`, not a `Notify`: a resign that
    /// happened before a term began must never end that term (a stored `Notify` permit
    /// did, leaving the election key behind and no one leading).
    resigns: watch::Sender<u64>,
}

impl std::fmt::Debug for EtcdElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdElection")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

fn lost(what: &str, err: impl std::fmt::Display) -> TermEnd {
    TermEnd::Lost(format!("{what}: {err}"))
}

impl EtcdElection {
    /// A candidate advertising `addr`, in the election under `prefix`.
    pub fn new(client: Client, prefix: &str, addr: &str, ttl: Duration) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            client,
            name: format!("{prefix}/__election"),
            members_prefix: format!("{prefix}/__members/"),
            addr: addr.to_string(),
            ttl,
            op_timeout: (ttl / 3).max(Duration::from_millis(300)),
            signal: LeaderSignal::new(),
            current: Mutex::new(None),
            term_lease: Mutex::new(None),
            resigns: watch::channel(0).0,
        }
    }

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(1) as i64
    }

    /// Runs one etcd call under the operation timeout; the error names the call, so
    /// every failure reads "`what` failed: …" or "`what` timed out after …".
    async fn timed<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.op_timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what} failed: {e}")),
            Err(_) => Err(format!("{what} timed out after {:?}", self.op_timeout)),
        }
    }

    async fn keep_alive_once(
        &self,
        keeper: &mut LeaseKeeper,
        stream: &mut LeaseKeepAliveStream,
    ) -> Result<(), String> {
        let round = async {
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            match stream.message().await {
                Ok(Some(resp)) if resp.ttl() > 0 => Ok(()),
                Ok(Some(_)) => Err("lease expired".to_string()),
                Ok(None) => Err("keep-alive stream closed".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match tokio::time::timeout(self.op_timeout, round).await {
            Ok(r) => r,
            Err(_) => Err(format!("keep-alive timed out after {:?}", self.op_timeout)),
        }
    }

    async fn term(&self, shutdown: &CancellationToken) -> TermEnd {
        let mut client = self.client.clone();
        let lease = match self
            .timed("lease grant", client.lease_grant(self.ttl_secs(), None))
            .await
        {
            Ok(l) => l.id(),
            Err(e) => return TermEnd::Lost(e),
        };
        *self.term_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
        let (mut keeper, mut stream) = match self
            .timed("keep-alive open", client.lease_keep_alive(lease))
            .await
        {
            Ok(ks) => ks,
            Err(e) => return TermEnd::Lost(e),
        };
        let member_key = format!("{}{}", self.members_prefix, self.addr);
        let put = client.put(
            member_key,
            self.addr.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        if let Err(e) = self.timed("member registration", put).await {
            return TermEnd::Lost(e);
        }
        let mut ticker = tokio::time::interval(self.ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut campaign_client = self.client.clone();
        let campaign = campaign_client.campaign(self.name.clone(), self.addr.clone(), lease);
        tokio::pin!(campaign);
        let leader_key = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return TermEnd::Shutdown,
                _ = ticker.tick() => {
                    if let Err(e) = self.keep_alive_once(&mut keeper, &mut stream).await {
                        return lost("keep-alive failed while campaigning", e);
                    }
                }
                won = &mut campaign => match won {
                    Ok(mut resp) => match resp.take_leader() {
                        Some(key) => break key,
                        None => return lost("campaign", "returned no leader key"),
                    },
                    Err(e) => return lost("campaign failed", e),
                },
            }
        };
        if let Err(e) = self.keep_alive_once(&mut keeper, &mut stream).await {
            return lost("keep-alive failed right after winning", e);
        }
        let mut resigns = self.resigns.subscribe();
        resigns.borrow_and_update();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader_key, lease));
        self.signal.set(true, Some(self.addr.clone()));
        info!(addr = %self.addr, lease, "became leader");

        let mut observe = match self
            .timed("observe", client.observe(self.name.clone()))
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(
                    error = e,
                    "cannot observe the election; relying on keep-alives alone"
                );
                None
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return TermEnd::Shutdown,
                _ = resigns.changed() => return TermEnd::Resigned,
                _ = ticker.tick() => {
                    if let Err(e) = self.keep_alive_once(&mut keeper, &mut stream).await {
                        return lost("keep-alive failed", e);
                    }
                }
                seen = async { observe.as_mut()?.message().await.ok()? }, if observe.is_some() => match seen {
                    Some(resp) => {
                        let leader = resp.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                        if leader.as_deref() != Some(self.addr.as_str()) {
                            return lost("another leader observed", leader.unwrap_or_default());
                        }
                    }
                    None => {
                        warn!("election observe stream ended; relying on keep-alives alone");
                        observe = None;
                    }
                },
            }
        }
    }
}

#[async_trait]
impl Election for EtcdElection {
    fn leadership(&self) -> LeadershipRef {
        self.signal.view()
    }

    fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.signal.subscribe()
    }

    async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        loop {
            let end = self.term(&shutdown).await;
            let was_leader = self.signal.current().is_leader;
            // Stop granting first; everything else comes after.
            self.signal.set(false, None);
            self.current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let lease = self
                .term_lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(lease) = lease {
                // Best effort: unreachable etcd expires it by TTL instead.
                let mut client = self.client.clone();
                let _ = self.timed("lease revoke", client.lease_revoke(lease)).await;
            }
            let pause = match end {
                TermEnd::Shutdown => return Ok(()),
                TermEnd::Resigned => {
                    info!("resigned; campaigning again after a pause");
                    self.ttl
                }
                TermEnd::Lost(reason) => {
                    if was_leader {
                        warn!(reason, "stepped down");
                    } else {
                        warn!(reason, "candidate term ended");
                    }
                    self.ttl / 3
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn resign(&self) -> Result<()> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.signal.set(false, None);
        let Some((key, lease)) = current else {
            return Ok(());
        };
        let mut client = self.client.clone();
        let resigned = self
            .timed(
                "resign",
                client.resign(Some(ResignOptions::new().with_leader(key))),
            )
            .await;
        let _ = self.timed("lease revoke", client.lease_revoke(lease)).await;
        self.resigns.send_modify(|n| *n += 1);
        resigned.map_err(|message| ElectionSnafu { message }.build())?;
        info!("resigned leadership");
        Ok(())
    }

    async fn leader_addr(&self) -> Result<Option<String>> {
        if self.signal.current().is_leader {
            return Ok(Some(self.addr.clone()));
        }
        let mut client = self.client.clone();
        match self
            .timed("reading the leader", client.leader(self.name.clone()))
            .await
        {
            Ok(resp) => Ok(resp
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // etcd 3.4 answers Unknown "election: no leader", not NotFound.
            Err(e) if e.contains("no leader") => Ok(None),
            Err(message) => ElectionSnafu { message }.fail(),
        }
    }

    async fn members(&self) -> Result<Vec<String>> {
        let mut client = self.client.clone();
        let get = client.get(
            self.members_prefix.clone(),
            Some(GetOptions::new().with_prefix()),
        );
        let resp = self
            .timed("listing members", get)
            .await
            .map_err(|message| ElectionSnafu { message }.build())?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }
}
