//! Continuous writers: one task per region, writing to its datanode every few tens of
//! milliseconds and recording every refusal. A scenario that must not turn any region
//! readonly asserts that none was recorded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::Http;

/// Running writers.
#[derive(Debug)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Writers {
    /// Starts one writer per `(region, datanode URL)`.
    pub fn start(http: &Http, placement: &[(u64, String)]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks = placement
            .iter()
            .map(|(region, url)| {
                let (http, url, region) = (http.clone(), url.clone(), *region);
                let (stop, failures, written) = (stop.clone(), failures.clone(), written.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let (code, body) =
                            http.write_row(&url, region, &format!("w{i}"), "v").await;
                        if code == 200 {
                            written.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let at = started.elapsed();
                            failures.lock().push(format!(
                                "region {region} at {at:?}: {code} {}",
                                body["error"].as_str().unwrap_or("?")
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                })
            })
            .collect();
        Writers {
            stop,
            failures,
            written,
            tasks,
            started,
        }
    }

    /// Refusals so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().clone()
    }

    /// Successful writes so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops the writers; returns (successful writes, refusals).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.started;
        (
            self.written.load(Ordering::Relaxed),
            self.failures.lock().clone(),
        )
    }
}

/// One accepted write, as the client saw it.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The region.
    pub region: u64,
    /// The datanode that accepted it.
    pub node: u64,
    /// The row key (unique).
    pub key: String,
    /// The probe's sequence number (per region and node).
    pub round: u64,
    /// When it was sent and when the answer came.
    pub sent: Instant,
    /// When the answer came.
    pub answered: Instant,
}

/// Writers that follow regions wherever they move: for every region and every datanode,
/// a task writes a unique row every 30 ms, and each acceptance is logged with its node
/// and times. A region accepted by a node after another node had taken it over is a
/// breach of the one-writer rule (S1), seen from outside.
#[derive(Debug)]
pub struct RegionProbes {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Accepted>>>,
    tasks: Vec<JoinHandle<()>>,
    /// When the probes started.
    pub started: Instant,
}

impl RegionProbes {
    /// Starts one probe task per region and datanode (`nodes`: node id, data URL), so a
    /// stopped node slows only its own probes.
    pub fn start(http: &Http, regions: &[u64], nodes: &[(u64, String)]) -> RegionProbes {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &region in regions {
            for (node, url) in nodes {
                let (http, url, node) = (http.clone(), url.clone(), *node);
                let (stop, log) = (stop.clone(), log.clone());
                tasks.push(tokio::spawn(async move {
                    let mut round = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        round += 1;
                        let key = format!("r{region}-n{node}-{round}");
                        let sent = Instant::now();
                        if http.try_write_row(&url, region, &key, "v").await == Some(200) {
                            log.lock().push(Accepted {
                                region,
                                node,
                                key,
                                round,
                                sent,
                                answered: Instant::now(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }));
            }
        }
        RegionProbes {
            stop,
            log,
            tasks,
            started: Instant::now(),
        }
    }

    /// Every acceptance so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.log.lock().clone()
    }

    /// The node that last accepted a write to `region`, and when.
    pub fn last_owner(&self, region: u64) -> Option<(u64, Instant)> {
        self.log
            .lock()
            .iter()
            .rev()
            .find(|a| a.region == region)
            .map(|a| (a.node, a.answered))
    }

    /// Stops the probes; returns every acceptance.
    pub async fn stop(self) -> Vec<Accepted> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let log = self.log.lock().clone();
        log
    }
}

/// The one-writer rule, checked from the probes' log: per region, in the order the
/// acceptances were answered, ownership only moves forward: a node that was succeeded
/// never accepts again (two writable nodes at once show up as such an interleaving, as
/// every node is probed every 30 ms). A scenario that moves a region back to an earlier
/// owner cannot use this check. Returns the breaches, described.
pub fn s1_breaches(log: &[Accepted]) -> Vec<String> {
    use std::collections::{BTreeMap, HashSet};
    let mut out = Vec::new();
    let mut by_region: BTreeMap<u64, Vec<&Accepted>> = BTreeMap::new();
    for a in log {
        by_region.entry(a.region).or_default().push(a);
    }
    for (region, mut accepts) in by_region {
        accepts.sort_by_key(|a| a.answered);
        let mut succeeded = HashSet::new();
        let mut owner: Option<&Accepted> = None;
        for a in accepts {
            match owner {
                Some(o) if o.node == a.node => {}
                Some(o) => {
                    if succeeded.contains(&a.node) {
                        out.push(format!(
                            "region {region}: node {} accepted {} after it was succeeded",
                            a.node, a.key
                        ));
                    }
                    succeeded.insert(o.node);
                }
                None => {}
            }
            owner = Some(a);
        }
    }
    out
}

/// How long `region` accepted nothing while it moved away from `old`: from the last write
/// `old` acknowledged to the first any other node acknowledged after it.
pub fn handover_gap(log: &[Accepted], region: u64, old: u64) -> Option<Duration> {
    let last_old = log
        .iter()
        .filter(|a| a.region == region && a.node == old)
        .map(|a| a.answered)
        .max()?;
    let first_new = log
        .iter()
        .filter(|a| a.region == region && a.node != old && a.answered > last_old)
        .map(|a| a.answered)
        .min()?;
    Some(first_new - last_old)
}
