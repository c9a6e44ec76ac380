//! `heartbeat-bench`: how many nodes and regions one metasrv carries, and how cheaply.
//!
//! Modes (each prints a table; `--json` prints one JSON object per result instead):
//! - `throughput`: closed-loop heartbeats against a real `metasrv` process, and in the
//!   same run against a bare tonic echo server (the baseline); prints pipeline/baseline.
//! - `scale`: open loop at the real interval (3 s), many nodes × regions; latency,
//!   missed intervals, metasrv CPU % and RSS.
//! - `handlers`: a throughput run, then the time spent in each handler per heartbeat.
//! - `latency`: the first response on each of many fresh streams, and the mailbox round
//!   trip (admin HTTP → instruction down the stream → reply up → HTTP answer); the
//!   figures TCP_NODELAY decides (Nagle held each ~40 ms without it).
//! - `leader-kill`: a 3-member cluster on a real etcd with the default timings; the
//!   leader is SIGKILLed and every datanode's first grant by the new leader is timed
//!   against the kill and the election (see `tests::leader_kill`).
//! - `datanode-kill`: a standalone metasrv and 3 datanodes on a shared directory; the
//!   busiest datanode is SIGKILLed and each of its regions is timed until writable on
//!   another node, with fast timings and with the defaults (see `tests::datanode_kill`).
//! - `quorum-loss`: the same cluster on a 3-member etcd; two members are SIGKILLed for
//!   8 s, and each region's readonly window and the time to a granting leader after
//!   quorum returns are reported (see `tests::quorum_loss`).
//! - `etcd`: the throughput run on the etcd backend next to the memory backend, and
//!   etcd's own lease keep-alive round trips at the same concurrency next to
//!   liveness-only heartbeats (R = 0).
//!
//! The servers under test are child processes, so their CPU time and peak RSS are their
//! own (read from `/proc`), not the load generator's.

mod modes;
mod report;
mod target;

use modes::{datanode_kill, etcd_mode, latency, leader_kill, quorum_loss, scale, throughput};

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tests::bench::serve_echo;

#[derive(Debug, Parser)]
#[command(
    name = "heartbeat-bench",
    about = "Benchmark the metasrv heartbeat pipeline"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// One JSON object per result instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed-loop throughput, with the echo baseline.
    Throughput(Load),
    /// Open loop at the real heartbeat interval.
    Scale(Load),
    /// Per-handler cost.
    Handlers(Load),
    /// The etcd backend and etcd's own keep-alives.
    Etcd(EtcdArgs),
    /// First-response latency of fresh streams, and the mailbox round trip.
    Latency {
        /// How many fresh streams (one node each).
        #[arg(long, default_value_t = 200)]
        streams: u64,
    },
    /// SIGKILL the leader of a 3-member etcd cluster (default timings); time the election
    /// and every datanode's first grant by the successor.
    LeaderKill {
        /// Kills, each on a fresh cluster.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Datanodes (two regions each).
        #[arg(long, default_value_t = 3)]
        datanodes: u64,
    },
    /// SIGKILL the busiest datanode; time each of its regions until writable elsewhere,
    /// with fast timings (1 s heartbeat, 3 s lease) and with the defaults.
    DatanodeKill {
        /// Kills per timing set, each on a fresh cluster.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Kill two of three etcd members for a while (default timings); report the readonly
    /// windows and the time to a granting leader after quorum returns.
    QuorumLoss {
        /// Runs, each on a fresh cluster.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// How long quorum is lost, e.g. 8s.
        #[arg(long, default_value = "8s", value_parser = humantime_parse)]
        down: Duration,
    },
    /// (internal) Serve the baseline echo server.
    EchoServer,
}

#[derive(Debug, Clone, Args)]
struct Load {
    /// Simulated datanodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Regions per datanode, all routed to it.
    #[arg(long, default_value_t = 100)]
    regions: usize,
    /// HTTP/2 connections the nodes are multiplexed over.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Heartbeat interval for `scale`.
    #[arg(long, default_value = "3s", value_parser = humantime_parse)]
    interval: Duration,
    /// Target an already running metasrv (gRPC) instead of starting one.
    #[arg(long)]
    addr: Option<String>,
    /// Its admin HTTP address, to seed routes (with `--addr`).
    #[arg(long)]
    http_addr: Option<String>,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
}

#[derive(Debug, Clone, Args)]
struct EtcdArgs {
    /// etcd endpoint, host:port.
    #[arg(long)]
    etcd: String,
    #[command(flatten)]
    load: Load,
    /// Concurrency of the keep-alive comparison.
    #[arg(long, default_value_t = 100)]
    streams: usize,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        _ => Err(format!("bad duration unit in {s:?} (use ms or s)")),
    }
}

fn main() {
    let cli = Cli::parse();
    if std::env::var("RUST_LOG").is_err() {
        // The servers under test log at warn: logging every session would be measured too.
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        match cli.mode {
            Mode::EchoServer => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                println!("echo ready addr={}", listener.local_addr().expect("addr"));
                if let Err(e) = serve_echo(listener).await {
                    eprintln!("echo server failed: {e}");
                }
            }
            Mode::Throughput(load) => throughput(cli.json, load, false).await,
            Mode::Handlers(load) => {
                throughput(
                    cli.json,
                    Load {
                        no_baseline: true,
                        ..load
                    },
                    true,
                )
                .await
            }
            Mode::Scale(load) => scale(cli.json, load).await,
            Mode::Etcd(args) => etcd_mode(cli.json, args).await,
            Mode::Latency { streams } => latency(cli.json, streams).await,
            Mode::LeaderKill { runs, datanodes } => leader_kill(cli.json, runs, datanodes).await,
            Mode::QuorumLoss { runs, down } => quorum_loss(cli.json, runs, down).await,
            Mode::DatanodeKill { runs } => datanode_kill(cli.json, runs).await,
        }
    });
}
