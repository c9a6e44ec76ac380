//! [`StatusCell`]: what a heartbeat task knows about itself (connected, to which
//! leader, when it last heard and was granted). The heartbeat task writes it; the status
//! page and the metrics read it, so neither depends on the task.

use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts};
use serde::Serialize;
use tokio::time::Instant;

/// Buckets of the heartbeat round trip, in seconds: 100 µs to 5 s (a loopback round trip
/// is well under a millisecond; a loaded or distant leader, tens).
const RTT_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fresh, unregistered round-trip histogram (one per heartbeat task).
fn rtt_histogram() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "datanode_heartbeat_rtt_seconds",
            "Heartbeat round trip: request sent to its response.",
        )
        .buckets(RTT_BUCKETS.to_vec()),
    )
    .expect("a valid histogram")
}

/// What the task knows about itself, for the status view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeartbeatStatus {
    /// The leader it streams to, if connected.
    pub leader: Option<String>,
    /// Whether a stream is established (handshake done).
    pub connected: bool,
    /// Milliseconds since the last response; `None` before the first.
    pub last_response_ms_ago: Option<u64>,
    /// Heartbeats sent.
    pub sent: u64,
    /// Sessions lost and re-established.
    pub reconnects: u64,
    /// Sessions established with a different leader than the one before.
    pub leader_switches: u64,
    /// Milliseconds since the last response that granted a leader lease; `None` before
    /// the first.
    pub last_grant_ms_ago: Option<u64>,
    /// The current heartbeat interval.
    pub interval_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatusInner {
    pub(crate) status: HeartbeatStatus,
    pub(crate) last_response: Option<Instant>,
    pub(crate) last_grant: Option<Instant>,
    /// The leader of the last established session (a switch is a different one).
    pub(crate) last_leader: Option<String>,
}

/// Shared, readable status of a heartbeat task, and its round-trip histogram.
#[derive(Debug)]
pub struct StatusCell {
    inner: Mutex<StatusInner>,
    rtt: prometheus::Histogram,
}

impl Default for StatusCell {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            rtt: rtt_histogram(),
        }
    }
}

impl StatusCell {
    pub(crate) fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock());
    }

    /// A snapshot.
    pub fn get(&self) -> HeartbeatStatus {
        let inner = self.inner.lock();
        let mut s = inner.status.clone();
        s.last_response_ms_ago = inner.last_response.map(|t| t.elapsed().as_millis() as u64);
        s.last_grant_ms_ago = inner.last_grant.map(|t| t.elapsed().as_millis() as u64);
        s
    }

    /// Heartbeat round-trip times (request sent to its response), for `/metrics`.
    pub fn rtt(&self) -> &prometheus::Histogram {
        &self.rtt
    }
}
