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
