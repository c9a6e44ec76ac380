//! The `metasrv` command: `metasrv start [--config FILE] [flags]`.
//!
//! Every setting can come from the TOML file or a flag; a flag wins. Prints one line
//! `metasrv ready grpc=ADDR http=ADDR` on stdout once listening (ports may be 0, for
//! tests), and shuts down gracefully on SIGINT or SIGTERM. Logging, the panic policy (any
//! panic aborts) and signals come from `common_proto::process`, shared with the
//! `datanode` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common_proto::process;
use meta_srv::{BackendKind, MetasrvBuilder, MetasrvOptions};
use tokio::net::TcpListener;
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "metasrv",
    version,
    about = "The metasrv: heartbeats, leases and region routes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a metasrv.
    Start(StartArgs),
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long)]
    bind_addr: Option<String>,
    /// Address advertised to datanodes and peers (default: the bound address).
    #[arg(long)]
    server_addr: Option<String>,
    /// Admin HTTP listen address ("" disables it).
    #[arg(long)]
    http_addr: Option<String>,
    /// KV backend.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Standalone: directory for the memory backend's snapshot (routes survive restarts).
    #[arg(long)]
    data_dir: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(long, value_delimiter = ',')]
    store_addrs: Option<Vec<String>>,
    /// Key prefix in etcd.
    #[arg(long)]
    store_key_prefix: Option<String>,
    /// Cluster id.
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Heartbeat interval, e.g. 3s.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Node lease, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    node_lease: Option<Duration>,
    /// Region lease, e.g. 10s (whole seconds).
    #[arg(long, value_parser = humantime::parse_duration)]
    region_lease: Option<Duration>,
    /// Failover wait after the last grant, e.g. 12s.
    #[arg(long, value_parser = humantime::parse_duration)]
    failover_wait: Option<Duration>,
    /// Election lease in etcd, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    meta_lease: Option<Duration>,
    /// Margin for clock drift: added to failover waits, taken off leadership, e.g. 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    lease_drift_margin: Option<Duration>,
    /// Automatic region failover on (true) or off (false).
    #[arg(long)]
    region_failover: Option<bool>,
    /// The etcd cluster's own raft election timeout (etcd's --election-timeout), e.g. 1s:
    /// the leadership must outlast one etcd election.
    #[arg(long, value_parser = humantime::parse_duration)]
    etcd_election_timeout: Option<Duration>,
}

impl StartArgs {
    fn options(self) -> meta_srv::Result<MetasrvOptions> {
        let mut o = match &self.config {
            Some(path) => MetasrvOptions::from_file(path)?,
            None => MetasrvOptions::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { o.$field = v; } )* };
        }
        set!(
            bind_addr,
            server_addr,
            http_addr,
            backend,
            data_dir,
            store_addrs,
            store_key_prefix,
            cluster_id
        );
        set!(
            heartbeat_interval,
            node_lease,
            region_lease,
            failover_wait,
            meta_lease,
            lease_drift_margin,
            region_failover,
            etcd_election_timeout
        );
        Ok(o)
    }
}

async fn bind(what: &'static str, addr: &str) -> meta_srv::Result<(TcpListener, SocketAddr)> {
    use snafu::ResultExt;
    let listener = TcpListener::bind(addr)
        .await
        .context(meta_srv::error::BindSnafu { what, addr })?;
    let local = listener
        .local_addr()
        .context(meta_srv::error::BindSnafu { what, addr })?;
    Ok((listener, local))
}

async fn start(args: StartArgs) -> meta_srv::Result<()> {
    let mut options = args.options()?;
    options.validate()?;
    let (grpc, grpc_addr) = bind("gRPC", &options.bind_addr).await?;
    // With port 0, advertise the port actually bound.
    options.bind_addr = grpc_addr.to_string();
    let http = if options.http_addr.is_empty() {
        None
    } else {
        Some(bind("HTTP", &options.http_addr).await?)
    };
    let http_addr = http
        .as_ref()
        .map_or(String::from("disabled"), |(_, a)| a.to_string());
    if let Some((_, bound)) = &http {
        // With port 0, register the port actually bound (followers forward to it).
        options.http_addr = bound.to_string();
    }
    let srv = MetasrvBuilder::new(options).build().await?;
    info!(grpc = %grpc_addr, http = %http_addr, backend = ?srv.options().backend, "metasrv started");
    // Handlers first: a SIGTERM right after the ready line must resign, not kill.
    let signal = process::shutdown_signal();
    process::announce(&format!("metasrv ready grpc={grpc_addr} http={http_addr}"));
    srv.serve(grpc, http.map(|(l, _)| l), signal).await
}

fn main() -> ExitCode {
    let Command::Start(args) = Cli::parse().command;
    process::run("metasrv", start(args))
}
