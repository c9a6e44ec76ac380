//! [`EtcdPool`]: one etcd client per endpoint, and failover between them.
//!
//! etcd-client's own multi-endpoint client balances every call over all endpoints in one
//! channel, so with one member dead a share of all calls fails with a connect error (20–36 %
//! in an operator's run), and a newly elected leader whose first read hit the dead member
//! resigned. etcd's Go client fails over instead; so does this pool:
//!
//! - Each endpoint has its own lazily connected channel (TCP_NODELAY, HTTP/2 keep-alive),
//!   so a dead member fails a call at once with a connect error rather than hanging it.
//! - Calls go to the **preferred** endpoint. A connection-class failure marks that endpoint
//!   unhealthy for `avoid_for`, makes the next one preferred, and the call is retried
//!   there, within the call's own deadline. With several endpoints, one attempt may use at
//!   most half of the time left, so a hung member leaves time for another.
//! - An unhealthy endpoint is skipped until `avoid_for` has passed; when every endpoint is
//!   unhealthy they are all tried anyway, least recently failed first.
//! - **Only what is safe is retried.** A compare-and-put retried after its first attempt
//!   reached etcd could report a failure for a write that was applied; so calls that are
//!   not idempotent retry only on failures that prove the request was not applied
//!   (connection errors, etcd's "no leader"). Idempotent calls also retry on timeouts and
//!   other unavailability.
//!
//! Long-lived streams (the election's keep-alive, observe and campaign calls) take a client
//! with [`pick`](EtcdPool::pick) and report a broken stream with
//! [`failed`](EtcdPool::failed), so they reopen on another member.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::Client;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

/// Whether a call may be sent again after an attempt whose fate is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, puts, deletes, lease grants and keep-alives: applying twice is harmless.
    Idempotent,
    /// Compare-and-put and the like: retried only when the attempt surely did not apply.
    OnlyUnsent,
}

/// How the pool dials and how long it avoids a failed member.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// TCP connect timeout per endpoint.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (also while idle), so a dead member is noticed on
    /// an idle connection too.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keep_alive_timeout: Duration,
    /// How long a member that failed a call is skipped.
    pub avoid_for: Duration,
    /// TLS for every member (`None`: plaintext). Endpoints given without a scheme are
    /// dialled as `https://` when set.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl PoolOptions {
    /// Options scaled to a meta lease: dial within a third of it, ping every fifth, avoid
    /// a failed member for one lease.
    pub fn for_meta_lease(meta_lease: Duration) -> Self {
        Self {
            connect_timeout: meta_lease / 3,
            keep_alive_interval: meta_lease / 5,
            keep_alive_timeout: meta_lease / 3,
            avoid_for: meta_lease,
            tls: None,
        }
    }
}

struct Member {
    endpoint: String,
    client: Client,
    /// When it last failed; skipped until `failed_at + avoid_for`.
    failed_at: Mutex<Option<Instant>>,
}

/// etcd clients, one per endpoint, with failover.
pub struct EtcdPool {
    members: Vec<Member>,
    preferred: AtomicUsize,
    avoid_for: Duration,
}

impl std::fmt::Debug for EtcdPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdPool")
            .field("endpoints", &self.endpoints())
            .field("preferred", &self.preferred_endpoint())
            .finish()
    }
}

fn url(endpoint: &str, tls: bool) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

impl EtcdPool {
    /// A pool over `endpoints` (`host:port` or URLs). Nothing is dialled yet: a member
    /// that is down at start costs nothing until a call needs it.
    pub async fn connect(
        endpoints: &[String],
        options: &PoolOptions,
    ) -> Result<Self, etcd_client::Error> {
        if endpoints.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoints".into()));
        }
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let mut channel =
                tonic::transport::Endpoint::from_shared(url(endpoint, options.tls.is_some()))
                    .map_err(etcd_client::Error::TransportError)?;
            if let Some(tls) = &options.tls {
                channel = channel
                    .tls_config(tls.clone())
                    .map_err(etcd_client::Error::TransportError)?;
            }
            let channel = channel
                .connect_timeout(options.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(options.keep_alive_interval)
                .keep_alive_timeout(options.keep_alive_timeout)
                .keep_alive_while_idle(true)
                .connect_lazy();
            members.push(Member {
                endpoint: endpoint.clone(),
                client: Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?,
                failed_at: Mutex::new(None),
            });
        }
        Ok(Self {
            members,
            preferred: AtomicUsize::new(0),
            avoid_for: options.avoid_for,
        })
    }

    /// Every endpoint, in the configured order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The endpoint calls go to first.
    pub fn preferred_endpoint(&self) -> String {
        self.members[self.preferred()].endpoint.clone()
    }

    /// The endpoint of member `index`.
    pub fn endpoint(&self, index: usize) -> &str {
        self.members
            .get(index)
            .map_or("(unknown)", |m| m.endpoint.as_str())
    }

    fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.members.len()
    }

    fn healthy(&self, index: usize, now: Instant) -> bool {
        self.members[index]
            .failed_at
            .lock()
            .is_none_or(|at| now >= at + self.avoid_for)
    }

    /// The order to try members in: the preferred one if healthy, the other healthy ones
    /// in configured order after it, then the unhealthy ones, least recently failed first.
    fn order(&self) -> Vec<usize> {
        let n = self.members.len();
        let now = Instant::now();
        let start = self.preferred();
        let ring = (0..n).map(|k| (start + k) % n);
        let mut healthy: Vec<usize> = ring.clone().filter(|i| self.healthy(*i, now)).collect();
        let mut unhealthy: Vec<(Instant, usize)> = ring
            .filter(|i| !self.healthy(*i, now))
            .map(|i| (self.members[i].failed_at.lock().unwrap_or(now), i))
            .collect();
        unhealthy.sort();
        healthy.extend(unhealthy.into_iter().map(|(_, i)| i));
        healthy
    }

    /// A client for a long-lived stream, and its member's index (for
    /// [`failed`](Self::failed)).
    pub fn pick(&self) -> (usize, Client) {
        let i = self.order()[0];
        (i, self.members[i].client.clone())
    }

    /// Reports that member `index` failed (`why`): it is skipped for a while, and if it was
    /// preferred the next member becomes preferred.
    pub fn failed(&self, index: usize, why: &str) {
        let Some(member) = self.members.get(index) else {
            return;
        };
        let first = member.failed_at.lock().replace(Instant::now()).is_none();
        if self.members.len() > 1 {
            let next = (index + 1) % self.members.len();
            if self
                .preferred
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                warn!(
                    failed = %member.endpoint,
                    error = why,
                    next = %self.members[next].endpoint,
                    "etcd endpoint failed; moving to the next"
                );
                return;
            }
        }
        if first {
            warn!(endpoint = %member.endpoint, error = why, "etcd endpoint failed");
        }
    }

    fn succeeded(&self, index: usize) {
        let member = &self.members[index];
        if member.failed_at.lock().take().is_some() {
            info!(endpoint = %member.endpoint, "etcd endpoint answers again");
        }
        if self.preferred() != index && !self.healthy(self.preferred(), Instant::now()) {
            self.preferred.store(index, Ordering::Relaxed);
        }
    }

    /// Runs `call` on a client, failing over between members within `timeout`.
    /// `what` names the call in errors ("`what` failed: …", "`what` timed out after …").
    pub async fn call<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        retry: Retry,
        mut call: F,
    ) -> Result<T, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + timeout;
        let order = self.order();
        let mut last: Option<String> = None;
        for (n, &i) in order.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = deadline - now;
            let attempt = if n + 1 < order.len() {
                (left / 2).max(left.min(Duration::from_millis(300)))
            } else {
                left
            };
            let endpoint = &self.members[i].endpoint;
            match tokio::time::timeout(attempt, call(self.members[i].client.clone())).await {
                Ok(Ok(v)) => {
                    self.succeeded(i);
                    return Ok(v);
                }
                Ok(Err(e)) => match classify(&e) {
                    Fate::Unsent => {
                        self.failed(i, &e.to_string());
                        last = Some(format!("{endpoint}: {e}"));
                    }
                    Fate::Unknown if retry == Retry::Idempotent => {
                        self.failed(i, &e.to_string());
                        last = Some(format!("{endpoint}: {e}"));
                    }
                    _ => return Err(format!("{what} failed: {e}")),
                },
                Err(_) => {
                    let e = format!("no answer within {attempt:?}");
                    self.failed(i, &e);
                    if retry == Retry::OnlyUnsent {
                        return Err(format!("{what} timed out on {endpoint} after {attempt:?}"));
                    }
                    last = Some(format!("{endpoint}: {e}"));
                }
            }
        }
        Err(match last {
            Some(e) if Instant::now() < deadline => {
                format!("{what} failed on every etcd endpoint; last: {e}")
            }
            Some(e) => format!("{what} timed out after {timeout:?}; last: {e}"),
            None => format!("{what} timed out after {timeout:?}"),
        })
    }
}

/// What a failed attempt says about the request.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// It surely did not reach etcd's state machine: retry anywhere.
    Unsent,
    /// It may have been applied: retry only idempotent calls.
    Unknown,
    /// etcd answered with a definite error: do not retry.
    Answered,
}

fn classify(e: &etcd_client::Error) -> Fate {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => Fate::Unsent,
        E::GRpcStatus(s) => {
            let m = s.message().to_ascii_lowercase();
            match s.code() {
                // Only failures before a connection carried the request: "connect" alone
                // would also match "connection reset", after the request went out.
                tonic::Code::Unavailable
                    if m.contains("connect error")
                        || m.contains("error trying to connect")
                        || m.contains("connection refused")
                        || m.contains("no leader")
                        || m.contains("dns error") =>
                {
                    Fate::Unsent
                }
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Aborted => Fate::Unknown,
                tonic::Code::Unknown
                    if m.contains("transport")
                        || m.contains("connection")
                        || m.contains("broken pipe")
                        || m.contains("h2 protocol") =>
                {
                    Fate::Unknown
                }
                _ => Fate::Answered,
            }
        }
        _ => Fate::Answered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PoolOptions {
        PoolOptions {
            tls: None,
            connect_timeout: Duration::from_millis(200),
            keep_alive_interval: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(1),
            avoid_for: Duration::from_secs(5),
        }
    }

    #[test]
    fn only_failures_that_prove_nothing_was_applied_count_as_unsent() {
        let status =
            |code, msg: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg));
        assert_eq!(
            classify(&status(tonic::Code::Unavailable, "tcp connect error")),
            Fate::Unsent
        );
        assert_eq!(
            classify(&status(tonic::Code::Unavailable, "etcdserver: no leader")),
            Fate::Unsent
        );
        assert_eq!(
            classify(&status(
                tonic::Code::Unavailable,
                "etcdserver: request timed out"
            )),
            Fate::Unknown
        );
        // The request went out before the connection broke: it may have been applied.
        for broken in [
            "connection reset by peer",
            "transport error: connection closed before message completed",
            "error reading a body from connection",
        ] {
            assert_eq!(
                classify(&status(tonic::Code::Unavailable, broken)),
                Fate::Unknown,
                "{broken}"
            );
        }
        assert_eq!(
            classify(&status(
                tonic::Code::Unavailable,
                "error trying to connect: tcp connect error: Connection refused"
            )),
            Fate::Unsent
        );
        assert_eq!(
            classify(&status(tonic::Code::Unknown, "election: no leader")),
            Fate::Answered
        );
        assert_eq!(
            classify(&status(
                tonic::Code::NotFound,
                "etcdserver: requested lease not found"
            )),
            Fate::Answered
        );
    }

    #[tokio::test]
    async fn a_failed_member_is_skipped_and_the_next_becomes_preferred() {
        let pool = EtcdPool::connect(&["127.0.0.1:1".into(), "127.0.0.1:2".into()], &opts())
            .await
            .expect("pool");
        assert_eq!(pool.order(), vec![0, 1]);
        pool.failed(0, "refused");
        assert_eq!(pool.preferred_endpoint(), "127.0.0.1:2");
        assert_eq!(pool.order(), vec![1, 0], "the failed member comes last");
        pool.failed(1, "refused");
        assert_eq!(
            pool.order(),
            vec![0, 1],
            "all failed: least recently failed first"
        );
        pool.succeeded(1);
        assert_eq!(pool.order()[0], 1, "an answering member is preferred again");
    }

    #[tokio::test]
    async fn a_call_fails_over_from_a_dead_endpoint_to_one_that_answers() {
        // One endpoint refuses (a closed port), the other answers every call; the call
        // must succeed on the second within its deadline, and the second stays preferred.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_addr = dead.local_addr().expect("addr").to_string();
        drop(dead);
        let pool = EtcdPool::connect(&[dead_addr, "127.0.0.1:9".into()], &opts())
            .await
            .expect("pool");
        let mut tried = Vec::new();
        let result: Result<u32, String> = pool
            .call("probe", Duration::from_secs(2), Retry::OnlyUnsent, |_c| {
                tried.push(());
                let n = tried.len();
                async move {
                    if n == 1 {
                        Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                            "tcp connect error: Connection refused",
                        )))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(result, Ok(7));
        assert_eq!(tried.len(), 2);
        assert_eq!(pool.preferred_endpoint(), "127.0.0.1:9");
    }

    #[tokio::test]
    async fn a_compare_and_put_is_not_resent_after_an_ambiguous_failure() {
        let pool = EtcdPool::connect(&["127.0.0.1:1".into(), "127.0.0.1:2".into()], &opts())
            .await
            .expect("pool");
        let mut calls = 0;
        let result: Result<(), String> = pool
            .call("cas", Duration::from_secs(2), Retry::OnlyUnsent, |_c| {
                calls += 1;
                async {
                    Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                        "etcdserver: request timed out",
                    )))
                }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "an attempt that may have applied is not repeated");
    }
}
