//! `failover_wait` acts, on real processes: a standalone metasrv with 1 s heartbeats, a
//! 3 s region lease and `--failover-wait 8s`, two datanodes on a shared directory. The
//! region's owner is SIGKILLed; the region must not be writable on the other node before
//! the owner's last grant + 8 s (the lease alone would allow it at 3.5 s), and must be
//! writable soon after.

use std::time::{Duration, Instant};

use serde_json::json;
use tests::{eventually, granted_ms_ago, standalone_shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_wait_longer_than_the_lease_is_honoured_from_the_last_grant() {
    const WAIT: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "--heartbeat-interval",
        "1s",
        "--region-lease",
        "3s",
        "--node-lease",
        "3s",
        "--failover-wait",
        "8s",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.path().join("ms").display().to_string()])
    .collect();
    let (ms, mut nodes, http) = standalone_shared(dir.path(), &args, 2).await;
    let (code, route) = http.post(&format!("{}/regions", ms.http), &json!({})).await;
    assert_eq!(code, 201, "{route}");
    let region = route["region_id"].as_u64().expect("id");
    let owner = route["leader"].as_u64().expect("leader");
    let (mut victim, other): (Vec<_>, Vec<_>) = nodes.iter_mut().partition(|d| d.node_id == owner);
    let other_url = other[0].http.clone();
    let owner_url = victim[0].http.clone();
    eventually(
        "the region writable on its owner",
        Duration::from_secs(10),
        || async { (http.write_row(&owner_url, region, "k", "v").await.0 == 200).then_some(()) },
    )
    .await;
    // Past the supervisor's grace, so only the wait decides.
    let granted_ms_ago = eventually("a fresh grant", Duration::from_secs(10), || async {
        granted_ms_ago(&http, &ms.http, owner)
            .await
            .filter(|ms| *ms < 200)
    })
    .await;
    let last_grant = Instant::now() - Duration::from_millis(granted_ms_ago);
    victim[0].proc.kill();
    // Poll the other node until it accepts the region's writes.
    let writable_at = loop {
        assert!(
            last_grant.elapsed() < WAIT + Duration::from_secs(20),
            "never writable on the other node"
        );
        if http.try_write_row(&other_url, region, "after", "v").await == Some(200) {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = writable_at - last_grant;
    eprintln!("MEASURE failover_wait 8 s: writable elsewhere {after:?} after the last grant");
    assert!(
        after >= WAIT,
        "writable elsewhere {after:?} after the last grant, before failover_wait ({WAIT:?})"
    );
}
