//! The deterministic simulation's harness: the real metasrv and clients on simulated
//! hosts, a simulated network and simulated time, all decided by one seed.
//!
//! **Why turmoil, not madsim.** madsim replaces tokio, tonic and etcd-client with its own
//! crates across the whole build (a `cfg` over every crate, and its simulated etcd client
//! must track the etcd-client API in use). turmoil leaves the build alone: each host is a
//! tokio runtime on tokio's paused clock, its TCP is simulated, and tonic runs over it
//! through the same `serve_with_incoming` and `connect_with_connector` seams production
//! code can take. What turmoil does not simulate must come through the project's own
//! seams: etcd (behind the `Election` and KV traits) and the wall clock.
//!
//! Rule: a run is a function of its seed. Every delay and ordering is drawn from it, and
//! nothing sleeps in real time; the same seed gives the same trace.
//!
//! What runs on it: the heartbeat service alone (`tests/tests/sim.rs`), and the whole
//! cluster under seeded faults with its invariants checked as it runs (`cluster`, with
//! `faults` for what a seed draws and `check` for the invariants; `scripts/sim`).
//! Not simulated yet: etcd (so one metasrv), process pauses and clock drift.

pub mod check;
pub mod cluster;
pub mod faults;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use common_proto::v1::heartbeat_server::HeartbeatServer;
use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// The port every simulated metasrv serves gRPC on.
pub const GRPC_PORT: u16 = 3002;

/// A simulated TCP stream, as tonic's server and client take one.
#[derive(Debug)]
pub struct SimIo(turmoil::net::TcpStream);

impl AsyncRead for SimIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Serves `metasrv`'s heartbeat service on the current simulated host's [`GRPC_PORT`]
/// until the simulation ends.
pub async fn serve_heartbeats(metasrv: &meta_srv::Metasrv) -> turmoil::Result {
    tonic::transport::Server::builder()
        .add_service(HeartbeatServer::new(metasrv.heartbeat_service()))
        .serve_with_incoming(incoming(GRPC_PORT).await?)
        .await?;
    Ok(())
}

/// The connections a simulated host accepts on `port`, for `serve_with_incoming`.
pub async fn incoming(port: u16) -> io::Result<impl Stream<Item = io::Result<SimIo>>> {
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), port)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| SimIo(stream));
        Some((conn, listener))
    }))
}

/// Opens a simulated TCP stream from the current host to `uri`'s host and port.
async fn open(uri: Uri) -> io::Result<SimIo> {
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(GRPC_PORT);
    turmoil::net::TcpStream::connect((host, port))
        .await
        .map(SimIo)
}

/// A gRPC channel from the current simulated host to `host:port`.
pub async fn channel(host: &str, port: u16) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{host}:{port}"))?
        .connect_with_connector(tower::service_fn(|uri: Uri| async move {
            open(uri).await.map(TokioIo::new)
        }))
        .await
}

/// Starts node `id`'s heartbeat task and keeper for `engine` (whose writes check
/// `leases`) on the current simulated host, dialling the metasrv on host `ms`;
/// `node_epoch` is its process start, and the reconnect jitter comes from
/// `jitter_seed`. Cancel the token to stop both.
pub fn start_heartbeat(
    id: u64,
    node_epoch: u64,
    jitter_seed: u64,
    engine: std::sync::Arc<datanode::MemoryRegionEngine>,
    leases: std::sync::Arc<datanode::RegionLeases>,
) -> datanode::CancellationToken {
    let keeper = datanode::RegionAliveKeeper::new(engine.clone(), leases);
    let options = meta_srv::MetasrvOptions::default();
    let rpc_timeout = std::time::Duration::from_secs(1);
    let client = datanode::MetaClient::new(
        vec![format!("ms:{GRPC_PORT}")],
        options.cluster_id,
        id,
        rpc_timeout,
    )
    .with_connector(connector());
    let opts = datanode::HeartbeatOptions {
        node_id: id,
        advertise_addr: format!("dn{id}:4001"),
        node_epoch,
        initial_interval: options.heartbeat_interval,
        rpc_timeout,
        extensions: datanode::heartbeat::default_extensions(),
        jitter_seed: Some(jitter_seed),
    };
    let task = datanode::HeartbeatTask::new(client, opts, engine, keeper.clone());
    let shutdown = datanode::CancellationToken::new();
    tokio::spawn(keeper.run(shutdown.clone()));
    tokio::spawn(task.run(shutdown.clone()));
    shutdown
}

/// A datanode's way to its metasrvs over the simulated network.
pub fn connector() -> datanode::Connector {
    datanode::Connector::new(open)
}
