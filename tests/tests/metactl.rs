//! `metactl` against real processes: a standalone metasrv and two datanodes on a shared
//! directory. Every command, its table and `--json` forms, endpoint fallback, and the exit
//! codes scripts rely on (0 done, 1 refused by the cluster, 2 usage, 3 unreachable).

use std::process::{Command, Output};

use serde_json::{json, Value};
use tests::{bin_path, metactl, DatanodeProc, Http, MetasrvProc};

struct Setup {
    _dir: tempfile::TempDir,
    ms: MetasrvProc,
    _nodes: Vec<DatanodeProc>,
    http: Http,
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut timings: Vec<String> = [
        "--heartbeat-interval",
        "500ms",
        "--region-lease",
        "3s",
        "--node-lease",
        "3s",
        "--failover-wait",
        "4s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    timings.extend(extra.iter().map(|s| s.to_string()));
    let (ms, nodes, http) = tests::standalone_shared(dir.path(), &timings, 2).await;
    Setup {
        _dir: dir,
        ms,
        _nodes: nodes,
        http,
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answers_with_a_table_or_json_and_a_trustworthy_exit_code() {
    let s = setup().await;
    let ep = s.ms.http.trim_start_matches("http://").to_string();

    // Reads, as tables.
    let out = metactl(&ep, &["nodes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("NODE_ID"), "a header row:\n{table}");
    assert_eq!(table.lines().count(), 3, "two nodes:\n{table}");
    assert!(stderr(&out).contains("answered by"), "{}", stderr(&out));
    let out = metactl(&ep, &["cluster"]).await;
    assert!(
        stdout(&out).contains("maintenance: false"),
        "{}",
        stdout(&out)
    );
    let out = metactl(&ep, &["handlers", "--json"]).await;
    assert!(
        json_out(&out).as_array().is_some_and(|h| h.len() == 5),
        "{}",
        stdout(&out)
    );

    // A region to move: created on node 1.
    let (code, route) = s
        .http
        .post(
            &format!("{}/regions", s.ms.http),
            &json!({"region_id": 9, "node_id": 1}),
        )
        .await;
    assert_eq!(code, 201, "{route}");
    let out = metactl(&ep, &["regions", "--json"]).await;
    assert_eq!(json_out(&out)[0]["leader"], 1);
    let out = metactl(&ep, &["region", "migrate", "9", "--to", "2"]).await;
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    let out = metactl(&ep, &["regions", "--json"]).await;
    assert_eq!(json_out(&out)[0]["leader"], 2, "{}", stdout(&out));
    let out = metactl(&ep, &["node", "drain", "2"]).await;
    assert!(out.status.success(), "drain: {}", stderr(&out));
    let out = metactl(&ep, &["regions", "--json"]).await;
    assert_eq!(json_out(&out)[0]["leader"], 1, "drained back to node 1");
    // A reader that stops early (`metactl regions | head -0`) is not the command's
    // failure: exit 0, no panic. The pipe's read end is closed before metactl writes
    // (it first asks the cluster).
    let mut child = Command::new(bin_path("metactl"))
        .args(["--endpoints", &ep, "regions"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn metactl");
    drop(child.stdout.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // The drain lasts until lifted.
    let out = metactl(&ep, &["cluster", "--json"]).await;
    assert_eq!(
        json_out(&out)["drained_nodes"],
        json!([2]),
        "{}",
        stdout(&out)
    );
    let out = metactl(&ep, &["node", "undrain", "2", "--json"]).await;
    assert!(out.status.success(), "undrain: {}", stderr(&out));
    assert_eq!(json_out(&out)["was_drained"], true, "{}", stdout(&out));
    let out = metactl(&ep, &["cluster", "--json"]).await;
    assert_eq!(
        json_out(&out)["drained_nodes"],
        json!([]),
        "{}",
        stdout(&out)
    );

    // Maintenance on and off.
    let out = metactl(&ep, &["maintenance", "on"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = metactl(&ep, &["cluster", "--json"]).await;
    assert_eq!(json_out(&out)["maintenance"], true);
    let out = metactl(&ep, &["maintenance", "off"]).await;
    assert!(out.status.success());

    // Refused by the cluster: exit 1, with its reason (and in JSON for scripts).
    let out = metactl(&ep, &["region", "migrate", "9", "--to", "77", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(json_out(&out)["error"].is_string(), "{}", stdout(&out));
    // Bad usage: exit 2.
    let out = metactl(&ep, &["maintenance", "maybe"]).await;
    assert_eq!(out.status.code(), Some(2));
    // Nothing reachable: exit 3. A dead endpoint first is skipped.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let out = metactl(&dead, &["nodes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = metactl(&format!("{dead},{ep}"), &["nodes", "--json"]).await;
    assert!(
        out.status.success(),
        "falls back to the next endpoint: {}",
        stderr(&out)
    );

    // Leader resign with no one to take over (standalone): refused, so the cluster is
    // never left without a leader.
    let out = metactl(&ep, &["leader", "resign"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no other member"), "{}", stderr(&out));
    let out = metactl(&ep, &["cluster", "--json"]).await;
    assert!(
        json_out(&out)["leader"].is_string(),
        "still led: {}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_every_change_and_no_read() {
    let s = setup_with(&["--admin-token", "s3cret"]).await;
    let ep = s.ms.http.trim_start_matches("http://").to_string();
    let out = metactl(&ep, &["nodes"]).await;
    assert!(
        out.status.success(),
        "reads need no token: {}",
        stderr(&out)
    );
    let out = metactl(&ep, &["maintenance", "on"]).await;
    assert_eq!(out.status.code(), Some(1), "refused without the token");
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = metactl(&ep, &["--token", "wrong", "maintenance", "on"]).await;
    assert_eq!(out.status.code(), Some(1), "refused with a wrong token");
    let out = metactl(&ep, &["--token", "s3cret", "maintenance", "on"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = metactl(&ep, &["cluster", "--json"]).await;
    assert_eq!(
        json_out(&out)["maintenance"],
        true,
        "the authorized change took"
    );
    // The raw API says why, and how to authenticate.
    let resp = reqwest::Client::new()
        .post(format!("{}/regions", s.ms.http))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
}
