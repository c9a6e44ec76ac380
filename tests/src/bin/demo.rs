//! The demo: one standalone metasrv and three datanodes as real processes.
//!
//! 1. starts them (embedded in-memory backend, snapshotted to a temp dir);
//! 2. creates regions through the metasrv's admin API (placed on the least loaded node);
//! 3. writes rows to each region through its leader's data API;
//! 4. prints a live status view: heartbeat age per node, and per region its leader, its
//!    lease state on the metasrv, and whether the datanode accepts writes.
//!
//! Then, unless `--no-chaos`:
//! - it SIGKILLs the metasrv to show every region turn readonly on its own within the
//!   region lease, restarts it, and shows writes coming back;
//! - it SIGKILLs the datanode leading the most regions, and shows its regions fail over:
//!   writable again on the other datanodes, with every row (the datanodes keep region data
//!   in one shared directory, standing in for object storage).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tests::{DatanodeProc, Http, MetasrvProc};

#[derive(Debug, Parser)]
#[command(about = "Run a metasrv and three datanodes, and watch their leases")]
struct Args {
    /// How many regions to create.
    #[arg(long, default_value_t = 6)]
    regions: u64,
    /// How long to watch the steady state, in seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Skip the metasrv kill and restart.
    #[arg(long)]
    no_chaos: bool,
}

const TIMINGS: &[&str] = &[
    "--heartbeat-interval",
    "1s",
    "--node-lease",
    "5s",
    "--region-lease",
    "3s",
    "--failover-wait",
    "4s",
];

async fn status_view(
    http: &Http,
    metasrv: Option<&MetasrvProc>,
    nodes: &[DatanodeProc],
    title: &str,
) {
    println!("\n=== {title} ===");
    let mut node_rows: HashMap<u64, Value> = HashMap::new();
    let mut region_states: HashMap<u64, String> = HashMap::new();
    match metasrv {
        Some(m) => {
            for n in http
                .get(&format!("{}/nodes", m.http))
                .await
                .1
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                node_rows.insert(n["node_id"].as_u64().unwrap_or(0), n);
            }
            for r in http
                .get(&format!("{}/regions", m.http))
                .await
                .1
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                region_states.insert(
                    r["region_id"].as_u64().unwrap_or(0),
                    r["lease_state"].as_str().unwrap_or("?").to_string(),
                );
            }
        }
        None => println!("(metasrv is down: lease state comes from the datanodes alone)"),
    }
    println!(
        "{:<6} {:<22} {:>14} {:>7} {:>8}",
        "node", "data addr", "hb age (ms)", "alive", "regions"
    );
    let mut regions = Vec::new();
    for dn in nodes {
        let (_, st) = http.get(&format!("{}/status", dn.http)).await;
        let meta = node_rows.get(&dn.node_id);
        let age = meta.map_or("-".into(), |n| n["lease_age_ms"].to_string());
        let alive = meta.map_or("-".into(), |n| n["alive"].to_string());
        let rs = st["regions"].as_array().cloned().unwrap_or_default();
        println!(
            "{:<6} {:<22} {:>14} {:>7} {:>8}",
            dn.node_id,
            dn.http.trim_start_matches("http://"),
            age,
            alive,
            rs.len()
        );
        for r in rs {
            regions.push((dn.node_id, r));
        }
    }
    regions.sort_by_key(|(_, r)| r["region_id"].as_u64());
    println!(
        "{:<8} {:<6} {:<9} {:<16} {:>9} {:>14} {:>6}",
        "region", "node", "role", "metasrv lease", "writable", "lease left ms", "rows"
    );
    for (node, r) in regions {
        let id = r["region_id"].as_u64().unwrap_or(0);
        let state = region_states
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<6} {:<9} {:<16} {:>9} {:>14} {:>6}",
            id,
            node,
            r["role"].as_str().unwrap_or("?"),
            state,
            r["writable"].to_string(),
            r["lease_left_ms"].to_string(),
            r["rows"].to_string()
        );
    }
}

async fn write_all(http: &Http, placement: &[(u64, String)], tag: &str) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for (region, url) in placement {
        let (code, body) = http
            .write_row(url, *region, &format!("{tag}-{region}"), tag)
            .await;
        if code == 200 {
            ok += 1;
        } else {
            refused += 1;
            println!(
                "  write to region {region} refused: {}",
                body["error"].as_str().unwrap_or("?")
            );
        }
    }
    (ok, refused)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let mut ms_args: Vec<String> = TIMINGS.iter().map(|s| s.to_string()).collect();
    ms_args.extend(["--data-dir".into(), d.join("metasrv").display().to_string()]);
    println!(
        "starting a standalone metasrv and 3 datanodes (logs in {})",
        d.display()
    );
    let mut metasrv =
        MetasrvProc::start("metasrv", "127.0.0.1:0", &ms_args, &d.join("metasrv.log"));
    let shared = vec![
        "--shared-dir".to_string(),
        d.join("shared").display().to_string(),
    ];
    let mut nodes: Vec<DatanodeProc> = (1..=3)
        .map(|id| {
            DatanodeProc::start_with(
                id,
                &[metasrv.grpc.clone()],
                &d.join(format!("dn{id}")),
                &d.join(format!("dn{id}.log")),
                tests::Stderr::Log,
                &shared,
            )
        })
        .collect();
    println!("metasrv grpc={} admin={}", metasrv.grpc, metasrv.http);
    let http = Http::new();

    // Wait for the nodes, then create regions.
    let start = Instant::now();
    loop {
        let (_, n) = http.get(&format!("{}/nodes", metasrv.http)).await;
        if n.as_array().is_some_and(|a| a.len() == 3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "datanodes did not register"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut placement = Vec::new();
    for _ in 0..args.regions {
        let (code, route) = http
            .post(&format!("{}/regions", metasrv.http), &json!({}))
            .await;
        assert_eq!(code, 201, "create region: {route}");
        let (region, leader) = (
            route["region_id"].as_u64().unwrap_or(0),
            route["leader"].as_u64().unwrap_or(0),
        );
        println!("created region {region} on datanode {leader}");
        let url = nodes
            .iter()
            .find(|n| n.node_id == leader)
            .map(|n| n.http.clone())
            .unwrap_or_default();
        placement.push((region, url));
    }
    // Leases arrive with the next heartbeat.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, refused) = write_all(&http, &placement, "steady").await;
    println!("wrote one row to every region: {ok} accepted, {refused} refused");

    let until = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < until {
        status_view(&http, Some(&metasrv), &nodes, "steady state").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if args.no_chaos {
        return;
    }

    println!("\n>>> SIGKILL the metasrv: no more lease renewals");
    let grpc = metasrv.grpc.clone();
    metasrv.proc.kill();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    status_view(
        &http,
        None,
        &nodes,
        "3.5 s after the metasrv died (region lease 3 s)",
    )
    .await;
    let (ok, refused) = write_all(&http, &placement, "orphaned").await;
    println!("writes while cut off: {ok} accepted, {refused} refused (reads still work)");

    println!("\n>>> restart the metasrv on {grpc}");
    metasrv = MetasrvProc::start("metasrv", &grpc, &ms_args, &d.join("metasrv-2.log"));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (ok, refused) = write_all(&http, &placement, "recovered").await;
    println!("writes after the restart: {ok} accepted, {refused} refused");
    status_view(&http, Some(&metasrv), &nodes, "after the restart").await;
    let kept = count_readable(&http, &placement, "steady").await;
    println!(
        "\nrows written before the kill still readable: {kept}/{}",
        placement.len()
    );

    // Act 3: a datanode dies; its regions fail over to the others, with their rows.
    let mut led: HashMap<u64, Vec<u64>> = HashMap::new();
    for (region, url) in &placement {
        if let Some(n) = nodes.iter().find(|n| &n.http == url) {
            led.entry(n.node_id).or_default().push(*region);
        }
    }
    let Some((victim, moved)) = led.into_iter().max_by_key(|(id, rs)| (rs.len(), *id)) else {
        return;
    };
    println!("\n>>> SIGKILL datanode {victim}, which leads regions {moved:?}");
    let t0 = Instant::now();
    if let Some(n) = nodes.iter_mut().find(|n| n.node_id == victim) {
        n.proc.kill();
    }
    nodes.retain(|n| n.node_id != victim);
    // Poll the routes until none names the dead node and every moved region accepts a
    // write on its new owner.
    let deadline = Instant::now() + Duration::from_secs(60);
    let placement = loop {
        let (_, routes) = http.get(&format!("{}/regions", metasrv.http)).await;
        let now: Vec<(u64, String)> = routes
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let leader = r["leader"].as_u64()?;
                let url = nodes.iter().find(|n| n.node_id == leader)?.http.clone();
                Some((r["region_id"].as_u64()?, url))
            })
            .collect();
        if now.len() == placement.len() {
            let (ok, _) = write_quiet(&http, &now).await;
            if ok == now.len() {
                break now;
            }
        }
        if Instant::now() > deadline {
            println!("the regions did not all come back within 60 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "every region writable again {:.1} s after the kill (heartbeat 1 s, region lease 3 s)",
        t0.elapsed().as_secs_f64()
    );
    status_view(&http, Some(&metasrv), &nodes, "after the failover").await;
    let kept = count_readable(&http, &placement, "steady").await;
    println!(
        "\nrows written before either kill, read from the regions' new owners: {kept}/{}",
        placement.len()
    );
}

/// How many regions still return the row written with `tag`.
async fn count_readable(http: &Http, placement: &[(u64, String)], tag: &str) -> usize {
    let mut kept = 0;
    for (region, url) in placement {
        if http
            .read_row(url, *region, &format!("{tag}-{region}"))
            .await
            .0
            == 200
        {
            kept += 1;
        }
    }
    kept
}

/// Writes one probe row to every region; returns (accepted, refused) without printing.
async fn write_quiet(http: &Http, placement: &[(u64, String)]) -> (usize, usize) {
    let mut ok = 0;
    for (region, url) in placement {
        if http.try_write_row(url, *region, "probe", "x").await == Some(200) {
            ok += 1;
        }
    }
    (ok, placement.len() - ok)
}
