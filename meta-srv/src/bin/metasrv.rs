//! The `metasrv` command:
//! - `metasrv start [--config FILE] [flags]` runs a metasrv;
//! - `metasrv start ... --print-config` prints the effective config as TOML and exits;
//! - `metasrv check-config FILE` validates a config file (exit 0 when valid).
//!
//! Every setting comes from, lowest first: the defaults (`--help` shows them), the TOML
//! file, a `METASRV_*` environment variable (`METASRV_META_LEASE=5s`), a flag. Prints one
//! line `metasrv ready grpc=ADDR http=ADDR` on stdout once listening (ports may be 0, for
//! tests), and shuts down gracefully on SIGINT or SIGTERM. Logging (`--log-format`), the
//! panic policy (any panic aborts), signals and `--version` come from
//! `common_proto::process`, shared with the `datanode` binary.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use common_proto::process;
use meta_srv::{BackendKind, MetasrvBuilder, MetasrvOptions};
use tokio::net::TcpListener;
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "metasrv",
    version = process::VERSION,
    about = "The metasrv: heartbeats, leases and region routes"
)]
struct Cli {
    /// Log line format: text or json.
    #[arg(long, global = true, default_value = "text", env = "METASRV_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: process::LogFormat,
    #[command(subcommand)]
    command: Command,
}

fn parse_log_format(s: &str) -> Result<process::LogFormat, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a metasrv.
    Start(Box<StartArgs>),
    /// Check a config file: parse it, apply the lease rules, print the result.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// TOML config file; environment variables and flags override it.
    #[arg(long, env = "METASRV_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// gRPC listen address.
    #[arg(long, env = "METASRV_BIND_ADDR")]
    bind_addr: Option<String>,
    /// Address advertised to datanodes and peers (default: the bound address).
    #[arg(long, env = "METASRV_SERVER_ADDR")]
    server_addr: Option<String>,
    /// Admin HTTP listen address ("" disables it).
    #[arg(long, env = "METASRV_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Bearer token for mutating admin requests (prefer the variable to the flag: flags
    /// show in `ps`).
    #[arg(long, env = "METASRV_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Allow a non-loopback admin HTTP without a token.
    #[arg(long, env = "METASRV_INSECURE")]
    insecure: bool,
    /// TLS certificate chain (PEM) for gRPC and the admin HTTP.
    #[arg(long, env = "METASRV_TLS_CERT")]
    tls_cert: Option<String>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "METASRV_TLS_KEY")]
    tls_key: Option<String>,
    /// CA bundle (PEM): requires client certificates on gRPC (mTLS) that name the node;
    /// members verify each other with it.
    #[arg(long, env = "METASRV_TLS_CA")]
    tls_ca: Option<String>,
    /// CA bundle (PEM) of etcd's server certificates; dials etcd over TLS.
    #[arg(long, env = "METASRV_ETCD_TLS_CA")]
    etcd_tls_ca: Option<String>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, env = "METASRV_ETCD_TLS_CERT")]
    etcd_tls_cert: Option<String>,
    /// Private key (PEM) of --etcd-tls-cert.
    #[arg(long, env = "METASRV_ETCD_TLS_KEY")]
    etcd_tls_key: Option<String>,
    /// KV backend.
    #[arg(long, env = "METASRV_BACKEND", value_enum)]
    backend: Option<BackendKind>,
    /// Standalone: directory for the memory backend's snapshot (routes survive restarts).
    #[arg(long, env = "METASRV_DATA_DIR")]
    data_dir: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(long, env = "METASRV_STORE_ADDRS", value_delimiter = ',')]
    store_addrs: Option<Vec<String>>,
    /// Key prefix in etcd.
    #[arg(long, env = "METASRV_STORE_KEY_PREFIX")]
    store_key_prefix: Option<String>,
    /// Cluster id.
    #[arg(long, env = "METASRV_CLUSTER_ID")]
    cluster_id: Option<u64>,
    /// Heartbeat interval, e.g. 3s.
    #[arg(long, env = "METASRV_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// Node lease, e.g. 10s.
    #[arg(long, env = "METASRV_NODE_LEASE", value_parser = humantime::parse_duration)]
    node_lease: Option<Duration>,
    /// Region lease, e.g. 10s (whole seconds).
    #[arg(long, env = "METASRV_REGION_LEASE", value_parser = humantime::parse_duration)]
    region_lease: Option<Duration>,
    /// The shortest wait from an old owner's last grant before its region is granted
    /// elsewhere, e.g. 30s; at least region lease + drift margin (the default).
    #[arg(long, env = "METASRV_FAILOVER_WAIT", value_parser = humantime::parse_duration)]
    failover_wait: Option<Duration>,
    /// Election lease in etcd, e.g. 5s.
    #[arg(long, env = "METASRV_META_LEASE", value_parser = humantime::parse_duration)]
    meta_lease: Option<Duration>,
    /// Margin for clock drift: added to failover waits, taken off leadership, e.g. 500ms.
    #[arg(long, env = "METASRV_LEASE_DRIFT_MARGIN", value_parser = humantime::parse_duration)]
    lease_drift_margin: Option<Duration>,
    /// Automatic region failover on (true) or off (false).
    #[arg(long, env = "METASRV_REGION_FAILOVER")]
    region_failover: Option<bool>,
    /// Default reply timeout of mailbox instructions, e.g. 10s.
    #[arg(long, env = "METASRV_MAILBOX_TIMEOUT", value_parser = humantime::parse_duration)]
    mailbox_timeout: Option<Duration>,
    /// Largest gRPC message, in bytes.
    #[arg(long, env = "METASRV_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Flush a node's latest stat every this many heartbeats.
    #[arg(long, env = "METASRV_STATS_FLUSH_EVERY")]
    stats_flush_every: Option<usize>,
    /// How often stats are flushed, e.g. 1s.
    #[arg(long, env = "METASRV_STATS_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    stats_flush_interval: Option<Duration>,
    /// Recent stats kept per node.
    #[arg(long, env = "METASRV_STATS_KEEP")]
    stats_keep: Option<usize>,
    /// The etcd cluster's own raft election timeout (etcd's --election-timeout), e.g. 1s:
    /// the leadership must outlast one etcd election.
    #[arg(long, env = "METASRV_ETCD_ELECTION_TIMEOUT", value_parser = humantime::parse_duration)]
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
        if self.insecure {
            o.insecure = true;
        }
        if let Some(wait) = self.failover_wait {
            o.failover_wait = Some(wait);
        }
        set!(
            admin_token,
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
            tls_cert,
            tls_key,
            tls_ca,
            etcd_tls_ca,
            etcd_tls_cert,
            etcd_tls_key
        );
        set!(
            heartbeat_interval,
            node_lease,
            region_lease,
            meta_lease,
            lease_drift_margin,
            region_failover,
            etcd_election_timeout,
            mailbox_timeout,
            max_message_bytes,
            stats_flush_every,
            stats_flush_interval,
            stats_keep
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

async fn start(options: MetasrvOptions) -> meta_srv::Result<()> {
    info!(
        heartbeat_interval = ?options.heartbeat_interval,
        node_lease = ?options.node_lease,
        region_lease = ?options.region_lease,
        failover_wait = ?options.effective_failover_wait(),
        meta_lease = ?options.meta_lease,
        lease_drift_margin = ?options.lease_drift_margin,
        backend = ?options.backend,
        "lease timings"
    );
    let (grpc, grpc_addr) = bind("gRPC", &options.bind_addr).await?;
    let http = if options.http_addr.is_empty() {
        None
    } else {
        Some(bind("HTTP", &options.http_addr).await?)
    };
    let http_addr = http
        .as_ref()
        .map_or(String::from("disabled"), |(_, a)| a.to_string());
    // With port 0, advertise and register the ports actually bound.
    let srv = MetasrvBuilder::new(options)
        .bound_to(&grpc, http.as_ref().map(|(l, _)| l))
        .map_err(|source| meta_srv::Error::Bind {
            what: "gRPC",
            addr: grpc_addr.to_string(),
            source,
        })?
        .build()
        .await?;
    let o = srv.options();
    info!(
        grpc = %grpc_addr,
        http = %http_addr,
        backend = ?o.backend,
        tls = o.tls().mode(),
        etcd_tls = o.etcd_tls().mode(),
        "metasrv started"
    );
    // Handlers first: a SIGTERM right after the ready line must resign, not kill.
    let signal = process::shutdown_signal();
    process::announce(&format!("metasrv ready grpc={grpc_addr} http={http_addr}"));
    srv.serve(grpc, http.map(|(l, _)| l), signal).await
}

/// Reports a config problem before anything starts: exit code 2.
fn config_error(err: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "metasrv: {err}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cmd = process::help_with_defaults(Cli::command(), "start", &MetasrvOptions::default());
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::CheckConfig { file } => {
            // The file as `start` would run it: with the METASRV_* variables applied.
            let checked = Cli::command()
                .try_get_matches_from(["metasrv", "start", "--config", &file.display().to_string()])
                .and_then(|m| Cli::from_arg_matches(&m))
                .map_err(|e| e.to_string());
            let options = match checked {
                Ok(Cli {
                    command: Command::Start(args),
                    ..
                }) => args.options(),
                Ok(_) => unreachable!("parsed as start"),
                Err(e) => return config_error(e),
            };
            match options.and_then(|o| o.validate()) {
                Ok(()) => {
                    process::announce(&format!(
                        "{}: ok (with the METASRV_* variables set here applied)",
                        file.display()
                    ));
                    ExitCode::SUCCESS
                }
                Err(err) => config_error(err),
            }
        }
        Command::Start(args) => {
            let print = args.print_config;
            let options = match args.options().and_then(|o| o.validate().map(|()| o)) {
                Ok(o) => o,
                Err(err) => return config_error(err),
            };
            if print {
                let mut shown = options.clone();
                if !shown.admin_token.is_empty() {
                    shown.admin_token = meta_srv::config::PRINTED_TOKEN.into();
                }
                return match process::print_config(&shown) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(err) => config_error(err),
                };
            }
            process::run("metasrv", cli.log_format, start(options))
        }
    }
}
