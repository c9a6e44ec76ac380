//! A few seconds of `heartbeat-bench`, so the benchmark cannot rot. It checks that each
//! mode completed and that the pipeline granted leases; it asserts no speed.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(tests::bin_path("heartbeat-bench"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run heartbeat-bench");
    assert!(
        out.status.success(),
        "heartbeat-bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn throughput_with_baseline_completes_and_grants_leases() {
    let rows = bench(&[
        "throughput",
        "--nodes",
        "8",
        "--regions",
        "5",
        "--connections",
        "2",
        "--seconds",
        "1",
        "--warmup",
        "0",
    ]);
    let pipeline = rows
        .iter()
        .find(|r| r["target"] == "pipeline")
        .expect("pipeline row");
    assert!(
        pipeline["leases_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{pipeline}"
    );
    assert_eq!(pipeline["errors"], 0, "{pipeline}");
    assert!(
        rows.iter().any(|r| r["target"] == "baseline"),
        "baseline measured: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r["ratio"] == "pipeline/baseline"),
        "ratio printed: {rows:?}"
    );
}

#[test]
fn scale_and_handlers_modes_complete() {
    let rows = bench(&[
        "scale",
        "--nodes",
        "20",
        "--regions",
        "5",
        "--connections",
        "2",
        "--seconds",
        "2",
        "--warmup",
        "0",
        "--interval",
        "500ms",
    ]);
    let scale = rows
        .iter()
        .find(|r| r["mode"] == "scale")
        .expect("scale row");
    assert!(
        scale["leases_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{scale}"
    );
    let rows = bench(&[
        "handlers",
        "--nodes",
        "4",
        "--regions",
        "5",
        "--connections",
        "1",
        "--seconds",
        "1",
        "--warmup",
        "0",
    ]);
    let names: Vec<&str> = rows.iter().filter_map(|r| r["handler"].as_str()).collect();
    assert_eq!(
        names,
        [
            "collect_stats",
            "check_leader",
            "keep_lease",
            "region_lease",
            "persist_stats"
        ]
    );
}

#[test]
fn etcd_mode_completes_against_a_real_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = tests::etcd::EtcdProc::start(dir.path());
    let endpoint = etcd.endpoint();
    let rows = bench(&[
        "etcd",
        "--etcd",
        &endpoint,
        "--nodes",
        "4",
        "--regions",
        "5",
        "--connections",
        "1",
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--streams",
        "4",
    ]);
    let summary = rows
        .iter()
        .find(|r| r.get("etcd_keepalives_per_s").is_some())
        .expect("summary row");
    assert!(
        summary["etcd_keepalives_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
    let etcd_row = rows
        .iter()
        .find(|r| r["target"] == "etcd")
        .expect("etcd row");
    assert!(
        etcd_row["leases_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{etcd_row}"
    );
}

#[test]
fn latency_mode_measures_fresh_streams_and_mailbox_round_trips() {
    let results = bench(&["latency", "--streams", "5"]);
    let r = results
        .iter()
        .find(|r| r["mode"] == "latency")
        .expect("a latency result");
    assert_eq!(r["streams"], 5);
    for key in ["first_response_ms", "mailbox_rtt_ms"] {
        let p99 = r[key]["p99"].as_f64().expect("p99");
        assert!(p99 > 0.0, "{key} was measured: {r}");
    }
}

#[test]
fn leader_kill_mode_times_the_successors_grants() {
    let rows = bench(&["leader-kill", "--runs", "1", "--datanodes", "1"]);
    let run = rows
        .iter()
        .find(|r| r["mode"] == "leader-kill")
        .expect("a leader-kill result");
    let elected = run["elected_ms"].as_u64().expect("elected_ms");
    let granted = run["last_granted_ms"].as_u64().expect("last_granted_ms");
    assert!(elected > 0, "a successor was elected after the kill: {run}");
    // Two processes' millisecond clocks: allow their rounding, not a real reordering.
    assert!(
        granted + 10 >= elected,
        "the node's grant came from the successor, so after its election: {run}"
    );
    assert_eq!(run["granted_ms"].as_array().map(Vec::len), Some(1), "{run}");
}

#[test]
fn quorum_loss_mode_reports_the_leader_after_quorum_returns() {
    let rows = bench(&["quorum-loss", "--down", "2s"]);
    let run = rows
        .iter()
        .find(|r| r["mode"] == "quorum-loss")
        .expect("a quorum-loss result");
    let back = run["quorum_back_ms"].as_u64().expect("quorum_back_ms");
    assert!(back >= 2000, "quorum was lost for the 2 s asked: {run}");
    assert!(run["leader_ms"].as_u64().is_some(), "{run}");
    assert!(run["readonly_ms"].is_array(), "{run}");
}

#[test]
fn datanode_kill_mode_times_every_moved_region() {
    let rows = bench(&["datanode-kill"]);
    let runs: Vec<&Value> = rows
        .iter()
        .filter(|r| r["mode"] == "datanode-kill")
        .collect();
    assert_eq!(runs.len(), 2, "fast timings and defaults: {rows:?}");
    for run in runs {
        let times = run["writable_elsewhere_ms"].as_array().expect("times");
        assert!(!times.is_empty(), "the killed node led regions: {run}");
        // Never writable elsewhere before the old owner's lease surely ran out (S1).
        let over = run["over_safe_floor_ms"]
            .as_array()
            .expect("over the floor");
        assert_eq!(over.len(), times.len(), "{run}");
        assert!(
            over.iter().all(|o| o.as_i64().is_some_and(|ms| ms >= 0)),
            "writable before the safe floor: {run}"
        );
    }
}
