//! The modes: each sets up what it measures, runs it, and prints its rows.

use std::time::{Duration, Instant};

use crate::report::{emit, header, measure, row, spec};
use crate::target::{bench_dir, heap_bytes, pipeline_target, start_echo, start_metasrv, Target};
use crate::{EtcdArgs, Load};
use serde_json::json;
use tests::bench::status_kb;
use tests::Http;

pub(crate) async fn handler_table(json_out: bool, target: &Target, heartbeats: u64) {
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

pub(crate) async fn throughput(json_out: bool, load: Load, show_handlers: bool) {
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

pub(crate) async fn scale(json_out: bool, load: Load) {
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

pub(crate) async fn keepalive_rate(endpoint: &str, streams: usize, seconds: u64) -> f64 {
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

pub(crate) async fn etcd_mode(json_out: bool, args: EtcdArgs) {
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
pub(crate) fn q_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub(crate) async fn latency(json_out: bool, streams: u64) {
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

pub(crate) async fn leader_kill(json_out: bool, runs: usize, datanodes: u64) {
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

pub(crate) async fn datanode_kill(json_out: bool, runs: usize) {
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

pub(crate) async fn quorum_loss(json_out: bool, runs: usize, down: Duration) {
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
