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

use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tests::bench::{cpu_seconds, run_load, serve_echo, status_kb, LoadResult, LoadSpec};
use tests::{Http, MetasrvProc, Proc};

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

/// A server under test: a child process and its address.
struct Target {
    /// Held so the child lives as long as the target; dropped, it is killed.
    _proc: Option<Proc>,
    grpc: String,
    http: Option<String>,
    pid: Option<u32>,
    /// The metasrv's heap (allocator statistics) before routes were imported.
    heap_idle: Option<u64>,
}

/// The metasrv's `metasrv_heap_allocated_bytes`, if it reports one.
async fn heap_bytes(target: &Target) -> Option<u64> {
    let admin = target.http.as_ref()?;
    let (_, text) = Http::new().get_text(&format!("{admin}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("metasrv_heap_allocated_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn start_metasrv(dir: &std::path::Path, name: &str, extra: &[&str]) -> Target {
    let mut args: Vec<String> = [
        "--heartbeat-interval",
        "3s",
        "--node-lease",
        "3600s",
        "--region-lease",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let m = MetasrvProc::start(name, "127.0.0.1:0", &args, &dir.join(format!("{name}.log")));
    let pid = m.proc.pid();
    Target {
        grpc: m.grpc.clone(),
        http: Some(m.http.clone()),
        pid: Some(pid),
        heap_idle: None,
        _proc: Some(m.proc),
    }
}

fn start_echo(dir: &std::path::Path) -> Target {
    let p = Proc::spawn(
        "echo",
        "heartbeat-bench",
        &["echo-server".to_string()],
        &dir.join("echo.log"),
    );
    Target {
        grpc: p.field("addr"),
        http: None,
        pid: Some(p.pid()),
        heap_idle: None,
        _proc: Some(p),
    }
}

async fn seed_routes(http: &Http, admin: &str, load: &Load) {
    let total = load.nodes * load.regions;
    let mut routes = Vec::with_capacity(20_000);
    let mut sent = 0;
    for node in 1..=load.nodes as u64 {
        let first = tests::bench::first_region(node, load.regions);
        for r in 0..load.regions as u64 {
            routes.push(json!({ "region_id": first + r, "leader": node }));
            if routes.len() == 20_000 {
                sent += post_routes(http, admin, std::mem::take(&mut routes)).await;
            }
        }
    }
    if !routes.is_empty() {
        sent += post_routes(http, admin, routes).await;
    }
    assert_eq!(sent, total, "all routes imported");
}

async fn post_routes(http: &Http, admin: &str, routes: Vec<Value>) -> usize {
    let (code, body) = http
        .post(&format!("{admin}/routes"), &Value::Array(routes))
        .await;
    assert_eq!(code, 200, "route import failed: {body}");
    body["imported"].as_u64().unwrap_or(0) as usize
}

struct Measured {
    result: LoadResult,
    cpu_s: f64,
    peak_rss_kb: u64,
    rss_kb: u64,
}

async fn measure(target: &Target, spec: &LoadSpec) -> Measured {
    let cpu0 = target.pid.map_or(0.0, cpu_seconds);
    let t0 = Instant::now();
    let result = run_load(&target.grpc, spec).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = target.pid.map_or(0.0, cpu_seconds) - cpu0;
    // CPU over the whole run, scaled to the measured window.
    let cpu_s = cpu * spec.duration.as_secs_f64() / wall.max(1e-9);
    let (peak_rss_kb, rss_kb) = target
        .pid
        .map_or((0, 0), |p| (status_kb(p, "VmHWM"), status_kb(p, "VmRSS")));
    Measured {
        result,
        cpu_s,
        peak_rss_kb,
        rss_kb,
    }
}

fn row(json_out: bool, mode: &str, target: &str, load: &Load, m: &Measured, extra: Value) -> Value {
    let r = &m.result;
    let mut v = json!({
        "mode": mode,
        "target": target,
        "nodes": load.nodes,
        "regions": load.regions,
        "connections": load.connections,
        "seconds": load.seconds,
        "heartbeats_per_s": r.rate().round(),
        "leases_per_s": (r.granted as f64 / r.elapsed.as_secs_f64()).round(),
        "p50_ms": r.quantile_ms(0.50),
        "p99_ms": r.quantile_ms(0.99),
        "p999_ms": r.quantile_ms(0.999),
        "missed": r.missed,
        "errors": r.errors,
        "server_cpu_s": (m.cpu_s * 100.0).round() / 100.0,
        "server_cpu_pct": (m.cpu_s / r.elapsed.as_secs_f64() * 100.0).round(),
        "server_peak_rss_mb": m.peak_rss_kb / 1024,
        "server_rss_mb": m.rss_kb / 1024,
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    if json_out {
        println!("{v}");
    } else {
        println!(
            "{:<10} {:<9} {:>6}x{:<4} {:>11} {:>12} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>6} {:>7.1}% {:>8} MB",
            mode, target, load.nodes, load.regions,
            v["heartbeats_per_s"], v["leases_per_s"],
            r.quantile_ms(0.50), r.quantile_ms(0.99), r.quantile_ms(0.999),
            r.missed, r.errors, m.cpu_s / r.elapsed.as_secs_f64() * 100.0, m.peak_rss_kb / 1024
        );
    }
    v
}

/// Prints one result: `json` as a line of JSON with `--json`, else the text `text` makes.
fn emit(json_out: bool, json: &Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{json}");
    } else {
        println!("{}", text());
    }
}

fn header(json_out: bool) {
    if !json_out {
        println!(
            "{:<10} {:<9} {:>11} {:>11} {:>12} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>11}",
            "mode",
            "target",
            "nodes x R",
            "hb/s",
            "leases/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "missed",
            "errors",
            "srv CPU",
            "peak RSS"
        );
    }
}

fn spec(load: &Load, open_loop: bool) -> LoadSpec {
    LoadSpec {
        nodes: load.nodes,
        regions: load.regions,
        connections: load.connections,
        duration: Duration::from_secs(load.seconds),
        warmup: Duration::from_secs(load.warmup),
        interval: open_loop.then_some(load.interval),
    }
}

async fn pipeline_target(dir: &std::path::Path, load: &Load, name: &str, extra: &[&str]) -> Target {
    let t = match &load.addr {
        Some(a) => Target {
            _proc: None,
            grpc: a.clone(),
            http: load.http_addr.clone().map(|h| format!("http://{h}")),
            pid: None,
            heap_idle: None,
        },
        None => start_metasrv(dir, name, extra),
    };
    let mut t = t;
    if let Some(admin) = &t.http {
        // An etcd-backed metasrv must win its election before it takes routes.
        let http = Http::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(&format!("{admin}/leader")).await.1["is_leader"] != true {
            assert!(
                Instant::now() < deadline,
                "the metasrv under test never became leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.heap_idle = heap_bytes(&t).await;
        seed_routes(&http, admin, load).await;
    }
    t
}

async fn handler_table(json_out: bool, target: &Target, heartbeats: u64) {
    let Some(admin) = &target.http else { return };
    let (_, timings) = Http::new().get(&format!("{admin}/handlers")).await;
    let list = timings.as_array().cloned().unwrap_or_default();
    let total: u64 = list
        .iter()
        .map(|t| t["total_nanos"].as_u64().unwrap_or(0))
        .sum();
    if !json_out {
        println!(
            "\n{:<16} {:>10} {:>14} {:>8}",
            "handler", "calls", "µs/heartbeat", "share"
        );
    }
    for t in list {
        let calls = t["calls"].as_u64().unwrap_or(0).max(1);
        let nanos = t["total_nanos"].as_u64().unwrap_or(0);
        let per = nanos as f64 / calls as f64 / 1000.0;
        let share = nanos as f64 / total.max(1) as f64 * 100.0;
        emit(
            json_out,
            &json!({"mode": "handlers", "handler": t["name"], "calls": calls, "us_per_heartbeat": per, "share_pct": share}),
            || {
                format!(
                    "{:<16} {:>10} {:>14.2} {:>7.1}%",
                    t["name"].as_str().unwrap_or("?"),
                    calls,
                    per,
                    share
                )
            },
        );
    }
    let _ = heartbeats;
}

async fn throughput(json_out: bool, load: Load, show_handlers: bool) {
    let dir = bench_dir();
    header(json_out);
    let pipeline = pipeline_target(dir.path(), &load, "metasrv", &[]).await;
    let p = measure(&pipeline, &spec(&load, false)).await;
    let pv = row(json_out, "throughput", "pipeline", &load, &p, json!({}));
    assert!(
        p.result.granted > 0 || load.regions == 0,
        "the pipeline granted no leases"
    );
    if !load.no_baseline {
        let echo = start_echo(dir.path());
        let b = measure(&echo, &spec(&load, false)).await;
        let ratio = p.result.rate() / b.result.rate().max(1e-9);
        row(
            json_out,
            "throughput",
            "baseline",
            &load,
            &b,
            json!({"pipeline_over_baseline": ratio}),
        );
        emit(
            json_out,
            &json!({"mode": "throughput", "ratio": "pipeline/baseline", "value": ratio}),
            || format!("pipeline / baseline = {ratio:.2}"),
        );
        drop(echo);
    }
    if show_handlers {
        handler_table(
            json_out,
            &pipeline,
            pv["heartbeats_per_s"].as_u64().unwrap_or(0),
        )
        .await;
    }
}

async fn scale(json_out: bool, load: Load) {
    let dir = bench_dir();
    header(json_out);
    let target = pipeline_target(dir.path(), &load, "metasrv", &[]).await;
    let idle_rss = target.pid.map_or(0, |p| status_kb(p, "VmRSS"));
    let heap_routes = heap_bytes(&target).await;
    let m = measure(&target, &spec(&load, true)).await;
    // Read right after the load stops: every node is still connected (its stream
    // closing takes a moment) and its latest stat is kept.
    let heap_loaded = heap_bytes(&target).await;
    let per_node_kb = (m.rss_kb.saturating_sub(idle_rss)) as f64 / load.nodes.max(1) as f64;
    let per_region_b = (m.rss_kb.saturating_sub(idle_rss)) as f64 * 1024.0
        / (load.nodes * load.regions).max(1) as f64;
    row(
        json_out,
        "scale",
        "pipeline",
        &load,
        &m,
        json!({"rss_after_routes_mb": idle_rss / 1024, "rss_per_node_kb": per_node_kb, "rss_per_region_bytes": per_region_b}),
    );
    if !json_out {
        println!(
            "RSS with routes loaded, before load: {} MB; per datanode: {per_node_kb:.1} KB; per region: {per_region_b:.0} B",
            idle_rss / 1024
        );
    }
    if let (Some(idle), Some(routes), Some(loaded)) = (target.heap_idle, heap_routes, heap_loaded) {
        let regions = (load.nodes * load.regions).max(1) as f64;
        let per_route = routes.saturating_sub(idle) as f64 / regions;
        let per_node = loaded.saturating_sub(routes) as f64 / load.nodes.max(1) as f64;
        emit(
            json_out,
            &json!({"mode": "scale", "heap_idle_bytes": idle, "heap_per_route_bytes": per_route, "heap_per_node_bytes": per_node}),
            || {
                format!(
                    "heap (allocator): idle {:.1} MB; per route {per_route:.0} B; per connected datanode {:.1} KB ({:.0} B per reported region)",
                    idle as f64 / 1048576.0,
                    per_node / 1024.0,
                    per_node / load.regions.max(1) as f64,
                )
            },
        );
    }
}

async fn keepalive_rate(endpoint: &str, streams: usize, seconds: u64) -> f64 {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect etcd");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut c = client.clone();
        tasks.spawn(async move {
            let lease = c.lease_grant(60, None).await.expect("grant").id();
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.expect("keep-alive");
            let mut n = 0u64;
            while Instant::now() < deadline {
                keeper.keep_alive().await.expect("keep-alive send");
                match stream.message().await {
                    Ok(Some(_)) => n += 1,
                    _ => break,
                }
            }
            let _ = c.lease_revoke(lease).await;
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap_or(0);
    }
    total as f64 / seconds as f64
}

async fn etcd_mode(json_out: bool, args: EtcdArgs) {
    let dir = bench_dir();
    header(json_out);
    let load = args.load.clone();
    let memory = pipeline_target(dir.path(), &load, "metasrv-memory", &[]).await;
    let m = measure(&memory, &spec(&load, false)).await;
    row(json_out, "etcd", "memory", &load, &m, json!({}));
    drop(memory);
    let prefix = format!("/bench-{}", std::process::id());
    let extra = [
        "--backend",
        "etcd",
        "--store-addrs",
        args.etcd.as_str(),
        "--store-key-prefix",
        prefix.as_str(),
    ];
    let etcd_target = pipeline_target(dir.path(), &load, "metasrv-etcd", &extra).await;
    let e = measure(&etcd_target, &spec(&load, false)).await;
    let ratio = e.result.rate() / m.result.rate().max(1e-9);
    row(
        json_out,
        "etcd",
        "etcd",
        &load,
        &e,
        json!({"etcd_over_memory": ratio}),
    );

    // Liveness only (R = 0) at `streams` streams, against etcd's keep-alives.
    let live = Load {
        nodes: args.streams,
        regions: 0,
        connections: args.streams.min(load.connections),
        ..load.clone()
    };
    let l = measure(&etcd_target, &spec(&live, false)).await;
    row(json_out, "etcd", "liveness", &live, &l, json!({}));
    let ka = keepalive_rate(&args.etcd, args.streams, load.seconds).await;
    let live_ratio = l.result.rate() / ka.max(1e-9);
    emit(
        json_out,
        &json!({"mode": "etcd", "etcd_over_memory": ratio, "etcd_keepalives_per_s": ka.round(), "liveness_over_keepalive": live_ratio}),
        || {
            format!("etcd backend / memory backend = {ratio:.2}\netcd lease keep-alives at {} streams: {ka:.0}/s; liveness heartbeats / keep-alives = {live_ratio:.2}", args.streams)
        },
    );
}

/// The `q` quantile of sorted durations, in ms.
fn q_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn latency(json_out: bool, streams: u64) {
    let dir = bench_dir();
    let target = start_metasrv(dir.path(), "metasrv", &[]);
    let http_base = target.http.clone().expect("admin http");
    let http = Http::new();
    let (mut first, mut rtt) = (Vec::new(), Vec::new());
    for node_id in 1..=streams {
        let t = Instant::now();
        let mut node = tests::bench::StreamNode::open(&target.grpc, node_id).await;
        first.push(t.elapsed());
        // The node answers the instruction on its stream while the admin call waits.
        let answer = tokio::spawn(async move {
            node.answer_one().await;
            node
        });
        let t = Instant::now();
        let (code, body) = http
            .post(
                &format!("{http_base}/nodes/{node_id}/instructions"),
                &json!({"type": "close_region", "region_id": 1}),
            )
            .await;
        rtt.push(t.elapsed());
        assert_eq!(code, 200, "instruction round trip: {body}");
        drop(answer.await);
    }
    first.sort();
    rtt.sort();
    emit(
        json_out,
        &json!({"mode": "latency", "streams": streams,
                "first_response_ms": {"p50": q_ms(&first, 0.5), "p99": q_ms(&first, 0.99)},
                "mailbox_rtt_ms": {"p50": q_ms(&rtt, 0.5), "p99": q_ms(&rtt, 0.99)}}),
        || {
            format!(
                "fresh streams: {streams}; first response p50 {:.2} ms, p99 {:.2} ms; mailbox round trip (via admin HTTP) p50 {:.2} ms, p99 {:.2} ms",
                q_ms(&first, 0.5),
                q_ms(&first, 0.99),
                q_ms(&rtt, 0.5),
                q_ms(&rtt, 0.99),
            )
        },
    );
}

async fn leader_kill(json_out: bool, runs: usize, datanodes: u64) {
    for run in 1..=runs {
        let r = tests::leader_kill::run_once(datanodes).await;
        let after_election = r.last_granted_ms().saturating_sub(r.elected_ms);
        emit(
            json_out,
            &json!({
                "mode": "leader-kill",
                "run": run,
                "datanodes": datanodes,
                "elected_ms": r.elected_ms,
                "granted_ms": r.granted_ms,
                "last_granted_ms": r.last_granted_ms(),
                "last_granted_after_election_ms": after_election,
            }),
            || {
                format!(
                    "leader-kill run {run}: new leader {} ms after the kill; every datanode granted by {} ms \
                    ({} ms after the election); per node: {:?} ms",
                    r.elected_ms,
                    r.last_granted_ms(),
                    after_election,
                    r.granted_ms,
                )
            },
        );
    }
}

async fn datanode_kill(json_out: bool, runs: usize) {
    // The safe floor after the last grant: region lease + the default 500 ms margin.
    let sets: [(&str, &[&str], Duration); 2] = [
        (
            "fast (heartbeat 1 s, region lease 3 s)",
            &[
                "--heartbeat-interval",
                "1s",
                "--region-lease",
                "3s",
                "--node-lease",
                "3s",
            ],
            Duration::from_millis(3_500),
        ),
        (
            "defaults (heartbeat 3 s, region lease 10 s)",
            &[],
            Duration::from_millis(10_500),
        ),
    ];
    for (name, timings, floor) in sets {
        for run in 1..=runs {
            let moved = tests::datanode_kill::run_once(timings, floor).await;
            let ms: Vec<u64> = moved
                .iter()
                .map(|m| m.after_kill.as_millis() as u64)
                .collect();
            let over: Vec<i64> = moved.iter().map(|m| m.over_floor_ms).collect();
            emit(
                json_out,
                &json!({"mode": "datanode-kill", "timings": name, "run": run, "writable_elsewhere_ms": ms, "over_safe_floor_ms": over}),
                || {
                    format!("datanode-kill, {name}, run {run}: its regions writable elsewhere after {ms:?} ms, {over:?} ms past the safe floor (last grant + lease + margin)")
                },
            );
        }
    }
}

async fn quorum_loss(json_out: bool, runs: usize, down: Duration) {
    for run in 1..=runs {
        let r = tests::quorum_loss::run_once(down).await;
        let readonly: Vec<Option<u64>> = r
            .windows
            .iter()
            .map(|w| w.to_ms.map(|to| to - w.from_ms))
            .collect();
        let all_back = r.windows.iter().filter_map(|w| w.to_ms).max();
        emit(
            json_out,
            &json!({
                "mode": "quorum-loss",
                "run": run,
                "down_ms": down.as_millis() as u64,
                "quorum_back_ms": r.quorum_back_ms,
                "leader_ms": r.leader_ms,
                "readonly_ms": readonly,
                "first_readonly_ms": r.windows.iter().map(|w| w.from_ms).min(),
                "all_writable_ms": all_back,
            }),
            || {
                format!(
                    "quorum-loss run {run}: quorum back at {} ms; leader began at {} ms ({} ms after quorum); \
                    first region readonly at {:?} ms; every region writable at {:?} ms; readonly per region: {:?} ms",
                    r.quorum_back_ms,
                    r.leader_ms,
                    r.leader_ms.saturating_sub(r.quorum_back_ms),
                    r.windows.iter().map(|w| w.from_ms).min(),
                    all_back,
                    readonly,
                )
            },
        );
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
