//! The `datanode` command: `datanode start --node-id N --metasrv-addrs a,b,c [flags]`.
//!
//! Runs the demo in-memory engine (persisted under `--data-dir` when given), the
//! heartbeat task on its own runtime, and the data API. Prints
//! `datanode ready node_id=N data=ADDR` on stdout once listening; SIGINT/SIGTERM stop it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use datanode::http::{router, HttpState};
use datanode::{
    start_heartbeat, DatanodeOptions, HeartbeatOptions, MemoryRegionEngine, MetaClient,
};
use snafu::ResultExt;
use tracing::{error, info};

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
    /// Heartbeat interval until the metasrv's handshake, e.g. 3s.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
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
            heartbeat_interval
        );
        Ok(o)
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                _ = term.recv() => info!("SIGTERM received"),
            }
        }
        Err(err) => {
            error!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn start(args: StartArgs) -> datanode::Result<()> {
    let options = args.options()?;
    options.validate()?;
    let engine = Arc::new(if options.data_dir.is_empty() {
        MemoryRegionEngine::new()
    } else {
        MemoryRegionEngine::open(std::path::Path::new(&options.data_dir))?
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
    )?;
    let state = HttpState {
        node_id: options.node_id,
        engine,
        keeper: hb.keeper.clone(),
        status: hb.status.clone(),
    };
    info!(node_id = options.node_id, data = %data_addr, metasrvs = ?options.metasrv_addrs, "datanode started");
    println!(
        "datanode ready node_id={} data={data_addr}",
        options.node_id
    );
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    hb.stop();
    info!("datanode stopped");
    served.context(datanode::error::BindSnafu {
        addr: data_addr.to_string(),
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let Command::Start(args) = Cli::parse().command;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("datanode: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "datanode failed");
            eprintln!("datanode: {err}");
            ExitCode::FAILURE
        }
    }
}
