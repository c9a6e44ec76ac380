//! Prometheus metrics of the metasrv, served at `GET /metrics` on the admin HTTP.
//!
//! One registry per process (a metasrv is one process; tests that run several in one
//! process share it, which only sums their counters). This first set covers leadership
//! and failover; the heartbeat path's own series come with their benchmark.
//!
//! - `metasrv_is_leader`: 1 while this process may act as leader (read at scrape time
//!   from the leadership deadline, like every other leader check).
//! - `metasrv_leadership_remaining_seconds`: time left on the leadership deadline.
//! - `metasrv_failed_datanodes`: datanodes the supervisor judges failed.
//! - `metasrv_unavailable_regions`: regions whose node failed and that cannot move
//!   (local-only storage); `GET /regions` and the logs say why.
//! - `metasrv_migrations_total{reason, outcome}`: finished migrations.
//! - `metasrv_migrations_in_flight`: migrations running in this process.

use std::sync::LazyLock;

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The metasrv's registered metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Datanodes judged failed.
    pub failed_datanodes: IntGauge,
    /// Regions that cannot fail over.
    pub unavailable_regions: IntGauge,
    /// Finished migrations by reason and outcome.
    pub migrations: IntCounterVec,
    /// Migrations running in this process.
    pub migrations_in_flight: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let migrations = IntCounterVec::new(
        Opts::new("metasrv_migrations_total", "Finished region migrations."),
        &["reason", "outcome"],
    )
    .expect("a valid metric");
    registry
        .register(Box::new(migrations.clone()))
        .expect("registered once");
    Metrics {
        failed_datanodes: gauge(
            &registry,
            "metasrv_failed_datanodes",
            "Datanodes the region supervisor judges failed.",
        ),
        unavailable_regions: gauge(
            &registry,
            "metasrv_unavailable_regions",
            "Regions whose datanode failed and that cannot move (local-only storage).",
        ),
        migrations,
        migrations_in_flight: gauge(
            &registry,
            "metasrv_migrations_in_flight",
            "Region migrations running in this process.",
        ),
        registry,
    }
});

/// Renders every metric in the Prometheus text format, with the leadership series
/// computed now from `leadership_remaining` (`None`: not leading; `Some(None)`: leading
/// with no deadline).
pub fn render(leadership_remaining: Option<Option<std::time::Duration>>) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics.
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let (leader, remaining) = match leadership_remaining {
        None => (0, 0.0),
        Some(None) => (1, f64::INFINITY),
        Some(Some(d)) => (1, d.as_secs_f64()),
    };
    text.push_str(&format!(
        "# HELP metasrv_is_leader 1 while this metasrv may act as leader.\n# TYPE metasrv_is_leader gauge\nmetasrv_is_leader {leader}\n\
         # HELP metasrv_leadership_remaining_seconds Time left on the leadership deadline.\n# TYPE metasrv_leadership_remaining_seconds gauge\nmetasrv_leadership_remaining_seconds {}\n",
        if remaining.is_infinite() { "+Inf".to_string() } else { format!("{remaining:.3}") }
    ));
    text
}
