//! Persist, then apply, on real processes: a standalone metasrv whose `--data-dir`
//! refuses writes (the directory is removed under it, as a full or lost disk would), and
//! two datanodes. Every admin change either happens entirely or not at all, as seen by
//! `/regions`, the datanodes and a restart; `/ready` says the backend refuses writes, and
//! `/metrics` counts the failures. Writes work again once the directory is back.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{always_for, eventually, standalone_shared, MetasrvProc, FAST};

fn region_ids(regions: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = regions
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["region_id"].as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_backend_refused_never_happens_now_or_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("metasrv");
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend(["--data-dir".to_string(), data.display().to_string()]);
    let (mut ms, nodes, http) = standalone_shared(dir.path(), &args, 2).await;
    let url = |p: &str| format!("{}{p}", ms.http);
    for _ in 0..2 {
        let (code, body) = http.post(&url("/regions"), &json!({})).await;
        assert_eq!(code, 201, "{body}");
    }
    let (_, before) = http.get(&url("/regions")).await;
    assert_eq!(region_ids(&before), [1, 2]);
    let leader_of_1 = before[0]["leader"].as_u64().expect("leader");
    let dn1 = nodes
        .iter()
        .find(|d| d.node_id == leader_of_1)
        .expect("datanode")
        .http
        .clone();
    eventually("region 1 writable", Duration::from_secs(10), || async {
        (http.write_row(&dn1, 1, "k", "v").await.0 == 200).then_some(())
    })
    .await;
    let (code, _) = http.get(&url("/ready")).await;
    assert_eq!(code, 200);

    // The disk goes away.
    std::fs::remove_dir_all(&data).expect("remove the data dir");
    let (code, body) = http.post(&url("/regions"), &json!({})).await;
    assert!(
        code >= 500,
        "a create the backend refused fails: {code} {body}"
    );
    let (code, body) = http.delete(&url("/regions/1")).await;
    assert!(
        code >= 500,
        "a drop the backend refused fails: {code} {body}"
    );
    let (code, body) = http
        .post(&url("/maintenance"), &json!({ "enabled": true }))
        .await;
    assert!(
        code >= 500,
        "maintenance the backend refused fails: {code} {body}"
    );
    let (_, during) = http.get(&url("/regions")).await;
    assert_eq!(region_ids(&during), [1, 2], "no create, no drop: {during}");
    let (_, maintenance) = http.get(&url("/maintenance")).await;
    assert_eq!(maintenance["enabled"], false, "{maintenance}");
    let (code, ready) = http.get(&url("/ready")).await;
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready["reasons"].to_string().contains("refuses writes"),
        "{ready}"
    );
    let (_, metrics) = http.get_text(&url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("metasrv_kv_write_failures_total") && !l.ends_with(" 0")),
        "the failures are counted"
    );
    // The failed drop told nobody to close region 1: it stays writable on its leader,
    // through more than a region lease.
    always_for(
        "region 1 stays writable after the failed drop",
        Duration::from_secs(3),
        || async { http.write_row(&dn1, 1, "k", "v2").await.0 == 200 },
    )
    .await;

    // The disk is back: the next probe writes, and the ids did not move on.
    std::fs::create_dir_all(&data).expect("recreate the data dir");
    eventually("ready again", Duration::from_secs(10), || async {
        (http.get(&url("/ready")).await.0 == 200).then_some(())
    })
    .await;
    let (code, created) = http.post(&url("/regions"), &json!({})).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["region_id"], 3, "the failed create took no id");

    // A restart reads exactly what was acknowledged.
    ms.proc.kill();
    let log = dir.path().join("ms-restarted.log");
    let restarted = MetasrvProc::start("metasrv-restarted", "127.0.0.1:0", &args, &log);
    let (_, after) = http.get(&format!("{}/regions", restarted.http)).await;
    assert_eq!(region_ids(&after), [1, 2, 3], "{after}");
    let (_, maintenance) = http.get(&format!("{}/maintenance", restarted.http)).await;
    assert_eq!(maintenance["enabled"], false, "{maintenance}");
}
