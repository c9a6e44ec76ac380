//! The failover measurement behind `heartbeat-bench datanode-kill`: a standalone metasrv
//! and 3 datanodes on a shared directory, 6 regions; the datanode leading the most
//! regions is SIGKILLed, and each of its regions is timed from the kill until a write to
//! its new owner succeeds, and against the safe floor: the victim's last grant (read from
//! `/nodes` just before the kill) + the region lease + the drift margin, the earliest S1
//! allows. A figure, not an assertion (the failover process tests check the mechanism:
//! one writer, no lost row).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{eventually, DatanodeProc};

/// One moved region's figures.
#[derive(Debug, Clone, Copy)]
pub struct Moved {
    /// From the kill until a write to the new owner succeeded.
    pub after_kill: Duration,
    /// How far past the safe floor that was (ms; negative would break S1).
    pub over_floor_ms: i64,
}

/// Starts the cluster with the metasrv flags `timings`, kills the busiest datanode, and
/// returns, per region it led, when the region was writable elsewhere. `floor` is the
/// region lease + drift margin those timings give.
pub async fn run_once(timings: &[&str], floor: Duration) -> Vec<Moved> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<String> = timings.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--data-dir".into(),
        dir.path().join("ms").display().to_string(),
    ]);
    let (ms, mut nodes, http) = crate::standalone_shared(dir.path(), &args, 3).await;
    let url_of = |node: u64, nodes: &[DatanodeProc]| {
        nodes
            .iter()
            .find(|d| d.node_id == node)
            .map(|d| d.http.clone())
    };
    let mut placement = Vec::new();
    for _ in 0..6 {
        let (code, route) = http.post(&format!("{}/regions", ms.http), &json!({})).await;
        assert_eq!(code, 201, "create region: {route}");
        placement.push((
            route["region_id"].as_u64().expect("id"),
            route["leader"].as_u64().expect("leader"),
        ));
    }
    for (region, node) in &placement {
        let url = url_of(*node, &nodes).expect("node");
        eventually("region writable", Duration::from_secs(20), || async {
            (http.write_row(&url, *region, "k", "v").await.0 == 200).then_some(())
        })
        .await;
    }
    let victim = (1..=3u64)
        .max_by_key(|n| placement.iter().filter(|(_, l)| l == n).count())
        .expect("a node");
    let moved: Vec<u64> = placement
        .iter()
        .filter(|(_, l)| *l == victim)
        .map(|(r, _)| *r)
        .collect();
    let granted_ms_ago = crate::granted_ms_ago(&http, &ms.http, victim)
        .await
        .expect("the victim was granted");
    let killed_at = Instant::now();
    let floor_at = (killed_at - Duration::from_millis(granted_ms_ago)) + floor;
    if let Some(d) = nodes.iter_mut().find(|d| d.node_id == victim) {
        d.proc.kill();
    }
    let mut times = Vec::new();
    for region in moved {
        let nodes = &nodes;
        let at = eventually(
            &format!("region {region} writable on another node"),
            Duration::from_secs(60),
            || async {
                let (_, regions) = http.get(&format!("{}/regions", ms.http)).await;
                let leader = regions
                    .as_array()?
                    .iter()
                    .find(|r| r["region_id"] == region)?["leader"]
                    .as_u64()?;
                if leader == victim {
                    return None;
                }
                let url = url_of(leader, nodes)?;
                (http.try_write_row(&url, region, "after", "v").await == Some(200))
                    .then(Instant::now)
            },
        )
        .await;
        let over_floor_ms = if at >= floor_at {
            (at - floor_at).as_millis() as i64
        } else {
            -((floor_at - at).as_millis() as i64)
        };
        times.push(Moved {
            after_kill: at - killed_at,
            over_floor_ms,
        });
    }
    times
}
