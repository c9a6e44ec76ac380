//! The meta client: find the metasrv leader and open a heartbeat stream to it.
//!
//! Discovery asks **every** configured metasrv `AskLeader` in parallel and takes the first
//! answer that names a leader, so one dead or slow metasrv never delays it, and a cached
//! dead address is never reused: every reconnect discovers afresh, so a node never stays
//! stuck on a metasrv that died.
//!
//! The ask is a **long poll**: it names the leader the node just lost, and a member that
//! knows no other leader holds the answer until the election names one (up to the wait
//! the node chooses). So a node hunting after its leader died learns the successor the
//! moment etcd elects it, instead of retrying on a backoff that could add seconds.
//!
//! A [`Connector`] replaces TCP as the way to reach an address (a proxy, a Unix socket,
//! the deterministic simulation's network); everything above the byte stream is the same.
//!
//! [`Backoff`]: the first retry is immediate; later ones back off exponentially with
//! jitter, capped at the heartbeat interval, so a metasrv restart is not stormed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::{AskLeaderRequest, RequestHeader, Role};
use common_proto::PROTOCOL_VERSION;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snafu::ResultExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{ConnectSnafu, NoLeaderSnafu, Result, RpcSnafu};

/// Connects to metasrvs on behalf of one node.
#[derive(Debug, Clone)]
pub struct MetaClient {
    addrs: Vec<String>,
    cluster_id: u64,
    node_id: u64,
    rpc_timeout: Duration,
    /// TLS to every metasrv (`None`: plaintext).
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// How to open the byte stream to an address (`None`: TCP).
    connector: Option<Connector>,
}

/// A byte stream a [`Connector`] opens.
pub trait ConnectorIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ConnectorIo for T {}

type Connect =
    dyn Fn(Uri) -> BoxFuture<'static, std::io::Result<Box<dyn ConnectorIo>>> + Send + Sync;

/// Opens the byte stream to a metasrv's address instead of TCP.
#[derive(Clone)]
pub struct Connector(Arc<Connect>);

impl Connector {
    /// A connector that opens a stream to `uri` with `connect`.
    pub fn new<F, Fut, S>(connect: F) -> Self
    where
        F: Fn(Uri) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: ConnectorIo,
    {
        Self(Arc::new(move |uri| {
            let opening = connect(uri);
            Box::pin(async move { Ok(Box::new(opening.await?) as Box<dyn ConnectorIo>) })
        }))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl MetaClient {
    /// A client for `addrs` (host:port), acting as datanode `node_id`.
    pub fn new(addrs: Vec<String>, cluster_id: u64, node_id: u64, rpc_timeout: Duration) -> Self {
        Self {
            addrs,
            cluster_id,
            node_id,
            rpc_timeout,
            #[cfg(feature = "tls")]
            tls: None,
            connector: None,
        }
    }

    /// Opens every stream to a metasrv with `connector` instead of TCP.
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Dials every metasrv over TLS: addresses without a scheme become `https://`.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return "https";
        }
        "http"
    }

    /// The configured metasrv addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{}://{addr}", self.scheme())
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))
            .context(RpcSnafu { addr })?;
        #[cfg(feature = "tls")]
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| tonic::Status::invalid_argument(format!("TLS: {e}")))
                .context(RpcSnafu { addr })?,
            None => endpoint,
        };
        Ok(endpoint
            .connect_timeout(self.rpc_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(self.rpc_timeout * 3)
            .keep_alive_while_idle(true))
    }

    /// Connects a channel to `addr`.
    pub async fn connect(&self, addr: &str) -> Result<Channel> {
        let endpoint = self.endpoint(addr)?;
        let connected = match &self.connector {
            None => endpoint.connect().await,
            Some(Connector(connect)) => {
                let connect = connect.clone();
                let service = tower::service_fn(move |uri: Uri| {
                    let opening = connect(uri);
                    async move { opening.await.map(TokioIo::new) }
                });
                endpoint.connect_with_connector(service).await
            }
        };
        connected.context(ConnectSnafu { addr })
    }

    /// The request header this node sends.
    pub fn header(&self) -> RequestHeader {
        RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            role: Role::Datanode as i32,
        }
    }

    async fn ask(
        &self,
        addr: String,
        lost: Option<&str>,
        wait: Duration,
    ) -> Result<Option<String>> {
        let channel = self.connect(&addr).await?;
        let mut client = HeartbeatClient::new(channel);
        let req = AskLeaderRequest {
            header: Some(self.header()),
            wait_ms: wait.as_millis() as u64,
            lost_leader: lost.unwrap_or_default().to_string(),
        };
        let resp = tokio::time::timeout(self.rpc_timeout + wait, client.ask_leader(req))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("AskLeader timed out"))
            .and_then(|r| r)
            .context(RpcSnafu { addr: &addr })?;
        Ok(resp
            .into_inner()
            .leader
            .map(|p| p.addr)
            .filter(|a| !a.is_empty()))
    }

    /// Asks every metasrv in parallel; the first to name a leader wins. `lost` is the
    /// leader this node just lost, if any; members that know no other leader wait up to
    /// `wait` for the election to name one (see the module docs).
    pub async fn discover_leader(&self, lost: Option<&str>, wait: Duration) -> Result<String> {
        let mut asks: FuturesUnordered<_> = self
            .addrs
            .iter()
            .map(|a| self.ask(a.clone(), lost, wait))
            .collect();
        let mut last_error = String::from("no metasrv answered");
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => last_error = "a metasrv knows no leader right now".into(),
                Err(err) => last_error = err.to_string(),
            }
        }
        NoLeaderSnafu {
            addrs: self.addrs.join(","),
            last_error,
        }
        .fail()
    }
}

/// Retry delays: immediate first, then exponential with jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: StdRng,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`; jitter drawn from the OS.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::seeded(base, cap, None)
    }

    /// [`new`](Self::new), with the jitter drawn from `seed` when given (a deterministic
    /// simulation), else from the OS.
    pub fn seeded(base: Duration, cap: Duration, seed: Option<u64>) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
            jitter: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_rng(&mut rand::rng()),
            },
        }
    }

    /// Call after a success: the next failure retries at once.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Changes the cap (the heartbeat interval may change at the handshake).
    pub fn set_cap(&mut self, cap: Duration) {
        self.cap = cap;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self.base.saturating_mul(1u32 << (attempt - 1).min(16));
        let full = exp.min(self.cap);
        // Jitter in [50 %, 100 %] of the delay, so nodes that lost the same leader spread out.
        let factor = self.jitter.random_range(0.5..=1.0);
        full.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_first_then_grows_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::ZERO);
        let second = b.next_delay();
        assert!(
            second >= Duration::from_millis(50) && second <= Duration::from_millis(100),
            "{second:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
    }

    #[test]
    fn a_seeded_backoff_draws_the_same_jitter_and_another_seed_another() {
        let delays = |seed| {
            let mut b = Backoff::seeded(
                Duration::from_millis(100),
                Duration::from_secs(10),
                Some(seed),
            );
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[tokio::test]
    async fn discovery_fails_clearly_when_nothing_answers() {
        // Two loopback ports this test holds bound but never listens on: connections
        // are refused at once, and no other process can take the ports meanwhile.
        let closed = || {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.1:0".parse().expect("addr"))
                .expect("bind");
            let addr = socket.local_addr().expect("addr").to_string();
            (socket, addr)
        };
        let ((_a, a), (_b, b)) = (closed(), closed());
        let client = MetaClient::new(vec![a, b], 1, 1, Duration::from_millis(300));
        let err = client
            .discover_leader(None, Duration::ZERO)
            .await
            .expect_err("no leader");
        assert!(
            err.to_string().contains("no metasrv named a leader"),
            "{err}"
        );
    }
}
