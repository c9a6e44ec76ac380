//! The `datanode` command: `datanode start --node-id N --metasrv-addrs a,b,c [flags]`.
//!
//! Runs the demo in-memory engine (persisted under `--data-dir` when given), the
//! heartbeat task on its own runtime, and the data API. Prints
//! `datanode ready node_id=N data=ADDR` on stdout once listening; SIGINT/SIGTERM stop it.
//! Logging, the panic policy (any panic aborts) and signals come from
//! `common_proto::process`, shared with the `metasrv` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common_proto::process;
use datanode::http::{router, HttpState};
use datanode::{
    start_heartbeat, DatanodeOptions, HeartbeatOptions, MemoryRegionEngine, MetaClient,
    RegionLeases,
};
use snafu::ResultExt;
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "datanode",
    version,
    about = "A demo datanode that heartbeats to the metasrv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a datanode.
    Start(StartArgs),
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (1 or more).
    #[arg(long)]
    node_id: Option<u64>,
    /// Cluster id.
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Metasrv gRPC addresses, comma separated.
    #[arg(long, value_delimiter = ',')]
    metasrv_addrs: Option<Vec<String>>,
    /// Data API listen address.
    #[arg(long)]
    data_addr: Option<String>,
    /// Address advertised to the metasrv.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Directory to persist regions in.
    #[arg(long)]
    data_dir: Option<String>,
    /// Directory every datanode shares for region data (regions can then fail over).
    #[arg(long)]
    shared_dir: Option<String>,
    /// Heartbeat interval until the metasrv's handshake, e.g. 3s.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Taken off every region lease for clock drift and scheduling slack, e.g. 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    lease_margin: Option<Duration>,
}

impl StartArgs {
    fn options(self) -> datanode::Result<DatanodeOptions> {
        let mut o = match &self.config {
            Some(path) => DatanodeOptions::from_file(path)?,
            None => DatanodeOptions::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { o.$field = v; } )* };
        }
        set!(
            node_id,
            cluster_id,
            metasrv_addrs,
            data_addr,
            advertise_addr,
            data_dir,
            shared_dir,
            heartbeat_interval,
            lease_margin
        );
        Ok(o)
    }
}

async fn start(args: StartArgs) -> datanode::Result<()> {
    let options = args.options()?;
    options.validate()?;
    let leases = RegionLeases::new(options.lease_margin);
    let engine = Arc::new(if options.data_dir.is_empty() {
        MemoryRegionEngine::new(leases.clone())
    } else {
        let shared =
            (!options.shared_dir.is_empty()).then(|| std::path::Path::new(&options.shared_dir));
        MemoryRegionEngine::open_with(
            std::path::Path::new(&options.data_dir),
            shared,
            leases.clone(),
        )?
    });
    let listener = tokio::net::TcpListener::bind(&options.data_addr)
        .await
        .context(datanode::error::BindSnafu {
            addr: &options.data_addr,
        })?;
    let data_addr = listener.local_addr().context(datanode::error::BindSnafu {
        addr: &options.data_addr,
    })?;
    let advertise = if options.advertise_addr.is_empty() {
        data_addr.to_string()
    } else {
        options.advertise_addr.clone()
    };
    let client = MetaClient::new(
        options.metasrv_addrs.clone(),
        options.cluster_id,
        options.node_id,
        options.rpc_timeout,
    );
    let hb = start_heartbeat(
        client,
        HeartbeatOptions {
            node_id: options.node_id,
            advertise_addr: advertise,
            node_epoch: common_proto::unix_millis(),
            initial_interval: options.heartbeat_interval,
            rpc_timeout: options.rpc_timeout,
        },
        engine.clone(),
        leases,
    )?;
    let state = HttpState {
        node_id: options.node_id,
        engine,
        keeper: hb.keeper.clone(),
        status: hb.status.clone(),
    };
    info!(node_id = options.node_id, data = %data_addr, metasrvs = ?options.metasrv_addrs, "datanode started");
    // Handlers first: a SIGTERM right after the ready line must stop gracefully.
    let signal = process::shutdown_signal();
    process::announce(&format!(
        "datanode ready node_id={} data={data_addr}",
        options.node_id
    ));
    // Small request/response exchanges: no Nagle delay on the data API either.
    let listener = {
        use axum::serve::ListenerExt;
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    };
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .await;
    hb.stop();
    info!("datanode stopped");
    served.context(datanode::error::BindSnafu {
        addr: data_addr.to_string(),
    })
}

fn main() -> ExitCode {
    let Command::Start(args) = Cli::parse().command;
    process::run("datanode", start(args))
}
