//! The `datanode` command: `datanode start --node-id N --metasrv-addrs a,b,c [flags]`
//! (`--print-config` prints the effective config as TOML and exits).
//!
//! Runs the demo in-memory engine (persisted under `--data-dir` when given), the
//! heartbeat task on its own runtime, and the data API. Every setting comes from, lowest
//! first: the defaults (`--help` shows them), the TOML file, a `DATANODE_*` environment
//! variable, a flag. Prints `datanode ready node_id=N data=ADDR` on stdout once
//! listening; SIGINT/SIGTERM stop it. Logging (`--log-format`), the panic policy (any
//! panic aborts), signals and `--version` come from `common_proto::process`, shared with
//! the `metasrv` binary.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use common_proto::process;
use datanode::http::{router, HttpState};
use datanode::{DatanodeOptions, HeartbeatBuilder, MemoryRegionEngine, RegionLeases};
use snafu::ResultExt;
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "datanode",
    version = process::VERSION,
    about = "A demo datanode that heartbeats to the metasrv"
)]
struct Cli {
    /// Log line format: text or json.
    #[arg(long, global = true, default_value = "text", env = "DATANODE_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: process::LogFormat,
    #[command(subcommand)]
    command: Command,
}

fn parse_log_format(s: &str) -> Result<process::LogFormat, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a datanode.
    Start(StartArgs),
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// TOML config file; environment variables and flags override it.
    #[arg(long, env = "DATANODE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// This node's id (1 or more).
    #[arg(long, env = "DATANODE_NODE_ID")]
    node_id: Option<u64>,
    /// Cluster id.
    #[arg(long, env = "DATANODE_CLUSTER_ID")]
    cluster_id: Option<u64>,
    /// Metasrv gRPC addresses, comma separated.
    #[arg(long, env = "DATANODE_METASRV_ADDRS", value_delimiter = ',')]
    metasrv_addrs: Option<Vec<String>>,
    /// Data API listen address.
    #[arg(long, env = "DATANODE_DATA_ADDR")]
    data_addr: Option<String>,
    /// Address advertised to the metasrv.
    #[arg(long, env = "DATANODE_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// Directory to persist regions in.
    #[arg(long, env = "DATANODE_DATA_DIR")]
    data_dir: Option<String>,
    /// Directory every datanode shares for region data (regions can then fail over).
    #[arg(long, env = "DATANODE_SHARED_DIR")]
    shared_dir: Option<String>,
    /// Heartbeat interval until the metasrv's handshake, e.g. 3s.
    #[arg(long, env = "DATANODE_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Taken off every region lease for clock drift and scheduling slack, e.g. 500ms.
    #[arg(long, env = "DATANODE_LEASE_MARGIN", value_parser = humantime::parse_duration)]
    lease_margin: Option<Duration>,
    /// Timeout of leader discovery and connect calls, e.g. 1s.
    #[arg(long, env = "DATANODE_RPC_TIMEOUT", value_parser = humantime::parse_duration)]
    rpc_timeout: Option<Duration>,
    /// CA bundle (PEM) of the metasrv's certificate: dial the metasrvs over TLS.
    #[arg(long, env = "DATANODE_TLS_CA")]
    tls_ca: Option<String>,
    /// This node's certificate (PEM) for mutual TLS; must name datanode-<node_id>.
    #[arg(long, env = "DATANODE_TLS_CERT")]
    tls_cert: Option<String>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "DATANODE_TLS_KEY")]
    tls_key: Option<String>,
    /// Verify the metasrv's certificate against this name instead of the dialled host.
    #[arg(long, env = "DATANODE_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// Labels sent to the metasrv with every heartbeat, e.g. zone=a,rack=7.
    #[arg(long, env = "DATANODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    labels: Option<Vec<(String, String)>>,
    /// Testing only: each write sleeps this long after its lease check, before it reaches
    /// the log, so a test can freeze the process with a write inside the write path.
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    debug_append_pause: Option<Duration>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("a label is key=value, got {s:?}")),
    }
}

impl StartArgs {
    fn options(self) -> datanode::Result<(DatanodeOptions, Option<Duration>)> {
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
            lease_margin,
            rpc_timeout,
            tls_ca,
            tls_cert,
            tls_key,
            tls_server_name
        );
        if let Some(labels) = self.labels {
            o.labels = labels.into_iter().collect();
        }
        Ok((o, self.debug_append_pause))
    }
}

async fn start(options: DatanodeOptions, append_pause: Option<Duration>) -> datanode::Result<()> {
    info!(
        heartbeat_interval = ?options.heartbeat_interval,
        rpc_timeout = ?options.rpc_timeout,
        lease_margin = ?options.lease_margin,
        "timings (the metasrv's handshake sets the heartbeat interval)"
    );
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
        .with_append_pause(append_pause)
        .with_writer(format!("datanode-{}", options.node_id))
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
    let mut builder = HeartbeatBuilder::new(options.node_id, options.metasrv_addrs.clone())
        .cluster_id(options.cluster_id)
        .advertise_addr(advertise)
        .heartbeat_interval(options.heartbeat_interval)
        .rpc_timeout(options.rpc_timeout);
    for (k, v) in options.extensions() {
        builder = builder.extension(k, v);
    }
    let tls = options.tls();
    if tls.enabled() {
        builder = builder.tls(tls.load(options.node_id)?);
    }
    let hb = builder.start(engine.clone(), leases)?;
    let state = HttpState {
        node_id: options.node_id,
        engine,
        keeper: hb.keeper.clone(),
        status: hb.status.clone(),
    };
    info!(node_id = options.node_id, data = %data_addr, metasrvs = ?options.metasrv_addrs, tls = tls.enabled(), mutual_tls = !tls.cert.is_empty(), "datanode started");
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
    let cmd = process::help_with_defaults(Cli::command(), "start", &DatanodeOptions::default());
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let Command::Start(args) = cli.command;
    let print = args.print_config;
    let (options, append_pause) = match args
        .options()
        .and_then(|(o, pause)| o.validate().map(|()| (o, pause)))
    {
        Ok(o) => o,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "datanode: {err}");
            return ExitCode::from(2);
        }
    };
    if print {
        return match process::print_config(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "datanode: {err}");
                ExitCode::from(2)
            }
        };
    }
    process::run("datanode", cli.log_format, start(options, append_pause))
}
