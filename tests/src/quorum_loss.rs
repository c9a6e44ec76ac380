//! The quorum-loss measurement behind `heartbeat-bench quorum-loss`: a 3-member etcd, 3
//! metasrvs and 3 datanodes with the default timings (3 s heartbeat, 5 s meta lease, 10 s
//! region lease). Two etcd members are SIGKILLed for `down` (8 s by default), then
//! restarted. A prober writes to every region every 100 ms and records, from the kill:
//! - each region's readonly window (first refused write to the next accepted one);
//! - when quorum came back, when a leader began its term, when every region was writable.
//!
//! A report, not an assertion: without quorum nothing can be granted; the figures say
//! what it costs.

use std::sync::Arc;
use std::time::Duration;

use common_proto::unix_millis;
use parking_lot::Mutex;

use crate::cluster::{ClusterSpec, EtcdCluster};
use crate::eventually;

/// One region's readonly window, in ms after the kill.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The region.
    pub region: u64,
    /// The first refused write.
    pub from_ms: u64,
    /// The next accepted write (`None`: never writable again within the run).
    pub to_ms: Option<u64>,
}

/// One run's figures, in ms after the kill.
#[derive(Debug, Clone)]
pub struct QuorumRun {
    /// When the two members were restarted.
    pub quorum_back_ms: u64,
    /// When the leader that grants after it began its term.
    pub leader_ms: u64,
    /// Each region's readonly window.
    pub windows: Vec<Window>,
}

/// Kills two of three etcd members for `down`, and measures.
pub async fn run_once(down: Duration) -> QuorumRun {
    let spec = ClusterSpec {
        etcd_members: 3,
        ..ClusterSpec::new(&[])
    };
    let mut c = EtcdCluster::start(spec).await;
    let leader = c.wait_leader(None, Duration::from_secs(20)).await;
    c.wait_all_granted(leader, Duration::from_secs(20)).await;
    // (time since the kill in ms, region, accepted)
    let log: Arc<Mutex<Vec<(u64, u64, bool)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed_at = unix_millis();
    let prober = {
        let (http, placement, log, stop) = (
            c.http.clone(),
            c.placement.clone(),
            log.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (region, node) in &placement {
                    n += 1;
                    let ok = http
                        .try_write_row(node, *region, &format!("q{n}"), "v")
                        .await
                        == Some(200);
                    log.lock()
                        .push((unix_millis().saturating_sub(killed_at), *region, ok));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    c.members().kill(1);
    c.members().kill(2);
    tokio::time::sleep(down).await;
    c.members().restart(1);
    c.members().restart(2);
    let quorum_back_ms = unix_millis().saturating_sub(killed_at);
    let regions: Vec<u64> = c.placement.iter().map(|p| p.0).collect();
    eventually(
        "every region writable again",
        Duration::from_secs(60),
        || async {
            let log = log.lock();
            regions
                .iter()
                .all(|r| {
                    log.iter()
                        .rev()
                        .find(|(_, region, _)| region == r)
                        .is_some_and(|(t, _, ok)| *ok && *t > quorum_back_ms)
                })
                .then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = prober.await;
    let now_leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let began = c
        .history(now_leader)
        .await
        .iter()
        .filter_map(|t| t["began_ms"].as_u64())
        .max()
        .unwrap_or(killed_at);
    let log = log.lock().clone();
    let windows = regions
        .iter()
        .filter_map(|r| {
            let mine: Vec<&(u64, u64, bool)> = log.iter().filter(|e| e.1 == *r).collect();
            let from = mine.iter().position(|e| !e.2)?;
            let to = mine[from..].iter().find(|e| e.2).map(|e| e.0);
            Some(Window {
                region: *r,
                from_ms: mine[from].0,
                to_ms: to,
            })
        })
        .collect();
    QuorumRun {
        quorum_back_ms,
        leader_ms: began.saturating_sub(killed_at),
        windows,
    }
}
