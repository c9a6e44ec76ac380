//! [`EtcdElection`]: leader election through etcd's election API, with a real resign,
//! and leadership held as a **deadline** (fail closed).
//!
//! One **term** of a candidate:
//! 1. revoke any lease an earlier term could not revoke (etcd was away): etcd restores
//!    leases with a fresh TTL on restart, so that old election key would otherwise block
//!    every campaign for a full TTL after etcd returns;
//! 2. grant a lease of `meta_lease`, and register as a member (a key on the lease);
//! 3. campaign, racing the campaign against keep-alives: a candidate holds no authority,
//!    so a failed keep-alive simply ends its term;
//! 4. leadership **begins** only after the campaign returned *and* one more keep-alive was
//!    acknowledged: the deadline is that keep-alive's send time + the TTL etcd returned −
//!    the drift margin;
//! 5. while leading, a keep-alive every TTL/5; each acknowledged one moves the deadline to
//!    its own send time + TTL − margin. A failed keep-alive does **not** end the term: the
//!    leader reopens the stream and retries every TTL/20, and goes on serving until the
//!    deadline. When etcd answers again in time, the same term simply continues, so a
//!    short etcd outage costs nothing;
//! 6. leadership **ends** when the deadline passes, a rival is observed, etcd reports the
//!    lease gone, `resign` is called, or on shutdown. The lease's deadline is what
//!    CheckLeader and every leader task read, so even a stalled election task (a paused
//!    process) loses authority exactly at the deadline, before it notices.
//!
//! **Why the deadline is safe.** etcd starts the lease TTL when it *receives* a
//! keep-alive, which is after we sent it; so etcd cannot expire our election key, and no
//! rival can win, before `send time + TTL`. The margin covers clock-rate drift between us
//! and etcd and the moment between a check and its effect.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, GetOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper, ObserveStream, PutOptions,
    ResignOptions,
};
use handlers::{LeadershipRef, LeadershipView as _};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Election, LeaderInfo, LeaderSignal, LeaderState, Member};
use crate::error::{ElectionSnafu, Result};
use crate::etcd_pool::{EtcdPool, Retry};

/// Why a term ended.
enum TermEnd {
    Shutdown,
    Resigned,
    Lost(String),
}

/// Why a keep-alive round failed.
enum KeepAliveError {
    /// etcd answered that the lease no longer exists: a rival may win now.
    Gone,
    /// No answer (etcd away, a broken stream, a timeout): retry until the deadline.
    Failed(String),
}

/// A lease's open keep-alive stream, and the pool member it runs on.
struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    member: usize,
}

/// Leader election on etcd.
pub struct EtcdElection {
    pool: Arc<EtcdPool>,
    name: String,
    members_prefix: String,
    addr: String,
    http_addr: Option<String>,
    timings: Option<crate::timings::MemberTimings>,
    ttl: Duration,
    margin: Duration,
    op_timeout: Duration,
    signal: LeaderSignal,
    // parking_lot Mutexes: set and taken without awaiting.
    current: Mutex<Option<(LeaderKey, i64)>>,
    /// The lease of the running term, revoked when the term ends for any reason, so no
    /// election key outlives the term that owned it.
    term_lease: Mutex<Option<i64>>,
    /// A lease whose revoke failed (etcd was away); revoked before the next campaign.
    stale_lease: Mutex<Option<i64>>,
    /// Bumped by every resign. A counter in a `watch`, not a `Notify`: a resign that
    /// happened before a term began must never end that term (a stored `Notify` permit
    /// did, leaving the election key behind and no one leading).
    resigns: watch::Sender<u64>,
    /// The etcd endpoint the keep-alive stream runs on, for `/leader`.
    keep_alive_endpoint: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdElection")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("ttl", &self.ttl)
            .field("margin", &self.margin)
            .finish()
    }
}

fn lost(what: &str, err: impl std::fmt::Display) -> TermEnd {
    TermEnd::Lost(format!("{what}: {err}"))
}

impl EtcdElection {
    /// A candidate advertising `addr`, in the election under `prefix`, on a lease of `ttl`;
    /// it leads until each acknowledged keep-alive's send time + TTL − `margin`.
    pub fn new(
        pool: Arc<EtcdPool>,
        prefix: &str,
        addr: &str,
        ttl: Duration,
        margin: Duration,
    ) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            pool,
            name: format!("{prefix}/__election"),
            members_prefix: format!("{prefix}/__members/"),
            addr: addr.to_string(),
            http_addr: None,
            timings: None,
            ttl,
            margin,
            op_timeout: (ttl / 3).max(Duration::from_millis(300)),
            signal: LeaderSignal::new(),
            current: Mutex::new(None),
            term_lease: Mutex::new(None),
            stale_lease: Mutex::new(None),
            resigns: watch::channel(0).0,
            keep_alive_endpoint: Mutex::new(None),
        }
    }

    /// Registers this member's admin HTTP address with it, so followers can forward admin
    /// requests to the leader.
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

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(1) as i64
    }

    /// How often a leader sends a keep-alive while etcd answers.
    fn keep_alive_every(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(50))
    }

    /// How often a leader retries while keep-alives fail.
    fn retry_every(&self) -> Duration {
        (self.ttl / 20).max(Duration::from_millis(50))
    }

    /// The leadership deadline a keep-alive sent at `sent`, acknowledged with `ttl`,
    /// allows; `None` if the margin leaves nothing.
    fn deadline_after(&self, sent: Instant, ttl: Duration) -> Option<Instant> {
        let usable = ttl.min(self.ttl).checked_sub(self.margin)?;
        (!usable.is_zero()).then(|| sent + usable)
    }

    /// Runs one etcd call under the operation timeout, failing over between etcd members
    /// (see [`EtcdPool`]); the error names the call, so every failure reads "`what`
    /// failed: …" or "`what` timed out after …".
    async fn timed<T, F, Fut>(&self, what: &str, retry: Retry, call: F) -> Result<T, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        crate::metrics::etcd_call(what, self.pool.call(what, self.op_timeout, retry, call)).await
    }

    /// Opens a long-lived call (a stream, or the campaign) on the preferred member; a
    /// failure marks that member, so the next open goes to another.
    async fn open_on<T, F, Fut>(&self, what: &str, open: F) -> Result<(usize, T), String>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (member, client) = self.pool.pick();
        let opened = crate::metrics::etcd_call(what, async {
            match tokio::time::timeout(self.op_timeout, open(client)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(format!(
                    "{what} failed on {}: {e}",
                    self.pool.endpoint(member)
                )),
                Err(_) => Err(format!(
                    "{what} timed out on {} after {:?}",
                    self.pool.endpoint(member),
                    self.op_timeout
                )),
            }
        })
        .await;
        match opened {
            Ok(v) => Ok((member, v)),
            Err(e) => {
                self.pool.failed(member, &e);
                Err(e)
            }
        }
    }

    /// One keep-alive round for `lease`, within `limit`, opening the stream first if there
    /// is none. Returns the TTL etcd acknowledged. Any failure drops the stream, so the
    /// next round reopens it (etcd may have restarted).
    async fn keep_alive(
        &self,
        ka: &mut Option<KeepAlive>,
        lease: i64,
        limit: Duration,
    ) -> Result<Duration, KeepAliveError> {
        let round = async {
            if ka.is_none() {
                let (member, mut client) = self.pool.pick();
                let (keeper, stream) = match client.lease_keep_alive(lease).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        let e = format!(
                            "keep-alive open failed on {}: {e}",
                            self.pool.endpoint(member)
                        );
                        self.pool.failed(member, &e);
                        return Err(KeepAliveError::Failed(e));
                    }
                };
                *self.keep_alive_endpoint.lock() = Some(self.pool.endpoint(member).to_string());
                *ka = Some(KeepAlive {
                    keeper,
                    stream,
                    member,
                });
            }
            let Some(k) = ka.as_mut() else {
                return Err(KeepAliveError::Failed("no keep-alive stream".into()));
            };
            k.keeper
                .keep_alive()
                .await
                .map_err(|e| KeepAliveError::Failed(format!("keep-alive send failed: {e}")))?;
            match k.stream.message().await {
                Ok(Some(resp)) if resp.ttl() > 0 => Ok(Duration::from_secs(resp.ttl() as u64)),
                Ok(Some(_)) => Err(KeepAliveError::Gone),
                Ok(None) => Err(KeepAliveError::Failed("keep-alive stream closed".into())),
                Err(e) => Err(KeepAliveError::Failed(format!("keep-alive failed: {e}"))),
            }
        };
        let result = crate::metrics::etcd_call("keep-alive", async {
            match tokio::time::timeout(limit, round).await {
                Ok(r) => r,
                Err(_) => Err(KeepAliveError::Failed(format!(
                    "keep-alive timed out after {limit:?}"
                ))),
            }
        })
        .await;
        if let Err(err) = &result {
            // The stream's member failed us: reopen on another one next round (a lease that
            // is gone is gone everywhere, so that is not the member's fault).
            if let (Some(k), KeepAliveError::Failed(e)) = (ka.as_ref(), err) {
                self.pool.failed(k.member, e);
            }
            *ka = None;
        }
        result
    }

    /// Opens a watch of the election; `None` (logged) if no member answers now.
    async fn open_observe(&self) -> Option<ObserveStream> {
        let name = self.name.clone();
        match self
            .open_on("observe", |mut c| async move { c.observe(name).await })
            .await
        {
            Ok((_, s)) => Some(s),
            Err(e) => {
                warn!(
                    error = e,
                    "cannot observe the election; relying on keep-alives until it reopens"
                );
                None
            }
        }
    }

    /// Revokes the lease of a term whose revoke failed, so its election key cannot block
    /// this campaign.
    async fn revoke_stale_lease(&self) {
        let Some(lease) = *self.stale_lease.lock() else {
            return;
        };
        match self
            .timed("lease revoke", Retry::Idempotent, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) => {
                info!(lease, "revoked the lease of an earlier term");
                self.stale_lease.lock().take();
            }
            // Not found means etcd already expired it: done too.
            Err(e) if e.contains("not found") => {
                self.stale_lease.lock().take();
            }
            Err(e) => warn!(
                lease,
                error = e,
                "cannot revoke the lease of an earlier term yet"
            ),
        }
    }

    /// Campaigns, term after term, until shutdown.
    async fn campaign(&self, shutdown: &CancellationToken) -> Result<()> {
        loop {
            let end = self.term(shutdown).await;
            let state = self.signal.current();
            let was_leader = state.is_leader;
            // Stop granting first; everything else comes after. A candidate's term ending
            // changes nothing about who leads: keep naming the observed leader (unless it
            // was this member), so NOT_LEADER answers still say where to go.
            let known = state.leader_addr.filter(|a| *a != self.addr);
            self.signal.follow(known);
            self.current.lock().take();
            let lease = self.term_lease.lock().take();
            if let Some(lease) = lease {
                // If etcd is away, revoke it before the next campaign instead: etcd
                // restores leases with a fresh TTL when it restarts.
                let revoked = self
                    .timed("lease revoke", Retry::Idempotent, |mut c| async move {
                        c.lease_revoke(lease).await
                    })
                    .await;
                if let Err(e) = revoked {
                    warn!(
                        lease,
                        error = e,
                        "cannot revoke the term's lease now; will retry before campaigning"
                    );
                    *self.stale_lease.lock() = Some(lease);
                }
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

    /// Watches who leads, on every member, for as long as the process runs: each change
    /// is logged here with the old leader, the new one and the cluster term, and
    /// followers learn their leader at once (AskLeader long polls wake on it). etcd's
    /// observe sends the current leader first, then each new one; it sends nothing when a
    /// leader's key goes without a successor, so a follower keeps naming the last leader
    /// until the next one is elected, as a direct read of etcd would until the key expires.
    async fn observe_leaders(&self, shutdown: &CancellationToken) {
        let mut last: Option<LeaderInfo> = None;
        loop {
            if let Some(mut stream) = self.open_observe().await {
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = stream.message() => msg,
                    };
                    let resp = match msg {
                        Ok(Some(resp)) => resp,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(error = %e, "the election watch failed; reopening it");
                            break;
                        }
                    };
                    let Some(kv) = resp.kv() else { continue };
                    let seen = LeaderInfo {
                        addr: String::from_utf8_lossy(kv.value()).into_owned(),
                        term: kv.create_revision().max(0) as u64,
                    };
                    if last.as_ref() != Some(&seen) {
                        info!(
                            old = last.as_ref().map_or("none", |l| l.addr.as_str()),
                            old_term = last.as_ref().map_or(0, |l| l.term),
                            new = %seen.addr,
                            term = seen.term,
                            this_member = seen.addr == self.addr,
                            "leader changed"
                        );
                        self.signal.observed(&seen);
                        last = Some(seen);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.retry_every()) => {}
            }
        }
    }

    async fn term(&self, shutdown: &CancellationToken) -> TermEnd {
        self.revoke_stale_lease().await;
        let ttl = self.ttl_secs();
        let lease = match self
            .timed("lease grant", Retry::Idempotent, |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await
        {
            Ok(l) => l.id(),
            Err(e) => return TermEnd::Lost(e),
        };
        *self.term_lease.lock() = Some(lease);
        let member_key = format!("{}{}", self.members_prefix, self.addr);
        let member = Member {
            addr: self.addr.clone(),
            http_addr: self.http_addr.clone(),
            version: Some(common_proto::process::VERSION.to_string()),
            timings: self.timings,
        };
        let record = serde_json::to_string(&member).unwrap_or_else(|_| self.addr.clone());
        let put = self
            .timed("member registration", Retry::Idempotent, |mut c| {
                let (key, record) = (member_key.clone(), record.clone());
                async move {
                    c.put(key, record, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await;
        if let Err(e) = put {
            return TermEnd::Lost(e);
        }
        let mut ka = None;
        let mut ticker = tokio::time::interval(self.keep_alive_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // The campaign blocks until this candidate wins; if its member dies, the call fails
        // and the term ends (a candidate holds no authority), marking that member.
        let (campaign_member, mut campaign_client) = self.pool.pick();
        let campaign = campaign_client.campaign(self.name.clone(), self.addr.clone(), lease);
        tokio::pin!(campaign);
        let leader_key = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return TermEnd::Shutdown,
                _ = ticker.tick() => match self.keep_alive(&mut ka, lease, self.op_timeout).await {
                    Ok(_) => {}
                    Err(KeepAliveError::Gone) => return lost("campaign", "the lease expired"),
                    Err(KeepAliveError::Failed(e)) => return lost("keep-alive failed while campaigning", e),
                },
                won = &mut campaign => match won {
                    Ok(mut resp) => match resp.take_leader() {
                        Some(key) => break key,
                        None => return lost("campaign", "returned no leader key"),
                    },
                    Err(e) => {
                        self.pool.failed(campaign_member, &e.to_string());
                        return lost("campaign failed", e);
                    }
                },
            }
        };
        // Authority begins with a keep-alive acknowledged after the win.
        let sent = Instant::now();
        let mut deadline = match self.keep_alive(&mut ka, lease, self.op_timeout).await {
            Ok(ttl) => match self.deadline_after(sent, ttl) {
                Some(d) if Instant::now() < d => d,
                _ => return lost("won, but", "the lease TTL left no time to lead"),
            },
            Err(KeepAliveError::Gone) => return lost("won, but", "the lease expired"),
            Err(KeepAliveError::Failed(e)) => {
                return lost("keep-alive failed right after winning", e)
            }
        };
        let mut resigns = self.resigns.subscribe();
        resigns.borrow_and_update();
        // The key's creation revision is the cluster term: every member sees the same.
        let term = leader_key.rev().max(0) as u64;
        *self.current.lock() = Some((leader_key, lease));
        self.signal.lead(self.addr.clone(), term, Some(deadline));
        info!(addr = %self.addr, lease, term, leads_for_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64, "became leader");

        let mut observe = self.open_observe().await;
        let mut next = sent + self.keep_alive_every();
        let mut failing: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return TermEnd::Shutdown,
                _ = resigns.changed() => return TermEnd::Resigned,
                _ = tokio::time::sleep_until(deadline) => {
                    return lost(
                        "leadership deadline passed with no keep-alive acknowledged",
                        failing.unwrap_or_else(|| "no answer".into()),
                    );
                }
                _ = tokio::time::sleep_until(next) => {
                    let sent = Instant::now();
                    let limit = self.op_timeout.min(deadline.saturating_duration_since(sent));
                    match self.keep_alive(&mut ka, lease, limit).await {
                        Ok(ttl) => {
                            if Instant::now() >= deadline {
                                return lost("leadership deadline passed", "the keep-alive was acknowledged too late");
                            }
                            if let Some(d) = self.deadline_after(sent, ttl).filter(|d| *d > deadline) {
                                deadline = d;
                                self.signal.lease().extend_to(d);
                            }
                            if let Some(e) = failing.take() {
                                info!(last_error = e, "etcd acknowledges keep-alives again; the term goes on");
                            }
                            if observe.is_none() {
                                observe = self.open_observe().await;
                            }
                            next = sent + self.keep_alive_every();
                        }
                        Err(KeepAliveError::Gone) => return lost("etcd reports the election lease gone", "lease expired"),
                        Err(KeepAliveError::Failed(e)) => {
                            if failing.is_none() {
                                let left_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
                                warn!(error = e, left_ms, "keep-alive failed; still leading until the deadline, retrying");
                            }
                            failing = Some(e);
                            next = Instant::now() + self.retry_every();
                        }
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
                        warn!("election observe stream ended; reopening it after the next keep-alive");
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
        let (campaigned, ()) =
            tokio::join!(self.campaign(&shutdown), self.observe_leaders(&shutdown));
        campaigned
    }

    async fn resign(&self) -> Result<()> {
        let current = self.current.lock().take();
        self.signal.follow(None);
        let Some((key, lease)) = current else {
            return Ok(());
        };
        let resigned = self
            .timed("resign", Retry::Idempotent, |mut c| {
                let key = key.clone();
                async move { c.resign(Some(ResignOptions::new().with_leader(key))).await }
            })
            .await;
        let _ = self
            .timed("lease revoke", Retry::Idempotent, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        self.resigns.send_modify(|n| *n += 1);
        resigned.map_err(|message| ElectionSnafu { message }.build())?;
        info!("resigned leadership");
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        if self.signal.lease().is_leader() {
            return Ok(Some(LeaderInfo {
                addr: self.addr.clone(),
                term: self.signal.current().term,
            }));
        }
        let name = self.name.clone();
        match self
            .timed("reading the leader", Retry::Idempotent, |mut c| {
                let name = name.clone();
                async move { c.leader(name).await }
            })
            .await
        {
            Ok(resp) => Ok(resp.kv().map(|kv| LeaderInfo {
                addr: String::from_utf8_lossy(kv.value()).into_owned(),
                term: kv.create_revision().max(0) as u64,
            })),
            // etcd 3.4 answers Unknown "election: no leader", not NotFound.
            Err(e) if e.contains("no leader") => Ok(None),
            Err(message) => ElectionSnafu { message }.fail(),
        }
    }

    fn store_view(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "etcd_endpoints": self.pool.endpoints(),
            "preferred_endpoint": self.pool.preferred_endpoint(),
            "keep_alive_endpoint": *self.keep_alive_endpoint.lock(),
        }))
    }

    async fn members(&self) -> Result<Vec<Member>> {
        let prefix = self.members_prefix.clone();
        let resp = self
            .timed("listing members", Retry::Idempotent, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(|message| ElectionSnafu { message }.build())?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                // A record is JSON; a bare address is what older members wrote.
                serde_json::from_slice(kv.value()).unwrap_or_else(|_| Member {
                    addr: String::from_utf8_lossy(kv.value()).into_owned(),
                    http_addr: None,
                    version: None,
                    timings: None,
                })
            })
            .collect())
    }
}
