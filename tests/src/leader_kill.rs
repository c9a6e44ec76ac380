//! The leader-kill measurement behind `heartbeat-bench leader-kill`: with the default
//! timings (3 s heartbeat, 5 s meta lease), SIGKILL the metasrv leader of a 3-member
//! cluster on etcd and time, from the kill:
//! - the new leader's election (its term's `began_ms` in `/leader/history`: the moment
//!   its gate opened, state loaded);
//! - each datanode's first leader grant after the kill (from its `/status`
//!   `last_grant_ms_ago`, so the figure is the node's own, not the poller's).
//!
//! A figure, not an assertion: the goal is every datanode granted within 0.5 s of
//! the election (≤ 6 s from the kill).

use std::time::Duration;

use common_proto::unix_millis;

use crate::cluster::{ClusterSpec, EtcdCluster};
use crate::eventually;

/// One kill's timings, in ms after the kill.
#[derive(Debug, Clone)]
pub struct KillRun {
    /// The new leader's gate opened.
    pub elected_ms: u64,
    /// Each datanode's first grant by the new leader.
    pub granted_ms: Vec<u64>,
}

impl KillRun {
    /// The last datanode's grant.
    pub fn last_granted_ms(&self) -> u64 {
        self.granted_ms.iter().copied().max().unwrap_or(0)
    }
}

/// Starts a cluster of `datanodes` (two regions each) with the default timings, kills
/// its leader once, and measures.
pub async fn run_once(datanodes: u64) -> KillRun {
    let spec = ClusterSpec {
        datanodes,
        regions: datanodes as usize * 2,
        ..ClusterSpec::new(&[])
    };
    let mut c = EtcdCluster::start(spec).await;
    let old = c.wait_leader(None, Duration::from_secs(20)).await;
    // Every node holds a grant from the old leader before the kill.
    c.wait_all_granted(old, Duration::from_secs(20)).await;
    let killed_at = unix_millis();
    c.metasrvs[old].as_mut().expect("running").proc.kill();
    c.metasrvs[old] = None;
    let new = c.wait_leader(Some(old), Duration::from_secs(30)).await;
    let began = eventually(
        "the new leader's term in its history",
        Duration::from_secs(10),
        || async {
            c.history(new)
                .await
                .iter()
                .filter_map(|t| t["began_ms"].as_u64())
                .filter(|b| *b >= killed_at)
                .max()
        },
    )
    .await;
    let mut granted_ms = Vec::new();
    for dn in &c.datanodes {
        let url = format!("{}/status", dn.http);
        let at = eventually(
            &format!("node {} granted after the kill", dn.node_id),
            Duration::from_secs(30),
            || async {
                let (_, status) = c.http.get(&url).await;
                let ago = status["heartbeat"]["last_grant_ms_ago"].as_u64()?;
                let at = unix_millis().saturating_sub(ago);
                (at > killed_at).then_some(at)
            },
        )
        .await;
        granted_ms.push(at - killed_at);
    }
    KillRun {
        elected_ms: began.saturating_sub(killed_at),
        granted_ms,
    }
}
