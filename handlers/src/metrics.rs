//! Prometheus series of the handler pipeline, registered into the metasrv's registry
//! with [`register`].
//!
//! The pipeline runs on every heartbeat, so every series here is resolved once, when a
//! group is built (one child per handler), and costs an atomic add or two per run: no
//! label lookup, no lock, no allocation on the hot path.
//!
//! - `metasrv_handler_duration_seconds{handler}`: how long each handler took per run;
//! - `metasrv_handler_errors_total{handler}`: runs that failed;
//! - `metasrv_handler_refusals_total{handler}`: heartbeats a handler refused (it ended
//!   the chain with an error in the response: CheckLeader on a follower, a custom gate).

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// Latency buckets for one handler run, in seconds: 1 µs to 100 ms. Handlers take
/// microseconds; the upper buckets catch a slow KV call or a stalled process.
pub const HANDLER_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1,
];

/// The pipeline's metric families (register them with [`register`]).
#[derive(Debug)]
pub struct HandlerMetrics {
    /// Run time per handler.
    pub duration: HistogramVec,
    /// Failed runs per handler.
    pub errors: IntCounterVec,
    /// Refused heartbeats per handler.
    pub refusals: IntCounterVec,
}

/// The process's pipeline metrics. A process with several groups (tests) sums them.
pub static HANDLER_METRICS: LazyLock<HandlerMetrics> = LazyLock::new(|| HandlerMetrics {
    duration: HistogramVec::new(
        HistogramOpts::new(
            "metasrv_handler_duration_seconds",
            "Time one heartbeat handler took per run.",
        )
        .buckets(HANDLER_BUCKETS.to_vec()),
        &["handler"],
    )
    .expect("a valid histogram"),
    errors: IntCounterVec::new(
        Opts::new(
            "metasrv_handler_errors_total",
            "Heartbeat handler runs that failed.",
        ),
        &["handler"],
    )
    .expect("a valid counter"),
    refusals: IntCounterVec::new(
        Opts::new(
            "metasrv_handler_refusals_total",
            "Heartbeats a handler refused (ended the chain with an error).",
        ),
        &["handler"],
    )
    .expect("a valid counter"),
});

/// One handler's series, resolved once when its group is built.
#[derive(Debug, Clone)]
pub(crate) struct HandlerSeries {
    pub(crate) duration: Histogram,
    pub(crate) errors: IntCounter,
    pub(crate) refusals: IntCounter,
}

impl HandlerSeries {
    pub(crate) fn new(handler: &str) -> Self {
        let m = &*HANDLER_METRICS;
        Self {
            duration: m.duration.with_label_values(&[handler]),
            errors: m.errors.with_label_values(&[handler]),
            refusals: m.refusals.with_label_values(&[handler]),
        }
    }
}

/// Adds the pipeline's families to `registry` (once per registry).
pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    let m = &*HANDLER_METRICS;
    registry.register(Box::new(m.duration.clone()))?;
    registry.register(Box::new(m.errors.clone()))?;
    registry.register(Box::new(m.refusals.clone()))?;
    Ok(())
}
