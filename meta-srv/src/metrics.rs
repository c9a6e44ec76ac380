//! Prometheus metrics of the metasrv, served at `GET /metrics` on the admin HTTP (every
//! member answers for itself; it is never forwarded).
//!
//! One registry per process (a metasrv is one process; tests that run several in one
//! process share it, which only sums their counters). Series on the heartbeat path are
//! resolved once (no label lookup per heartbeat) and cost an atomic add each; gauges of
//! sizes (pushers, pending mailbox messages) are read at scrape time.
//!
//! Heartbeat path:
//! - `metasrv_handler_duration_seconds{handler}`, `metasrv_handler_errors_total`,
//!   `metasrv_handler_refusals_total`: per handler (see [`handlers::metrics`]);
//! - `metasrv_heartbeats_total{role, outcome}`: outcome `ok`, `not_leader` (this member
//!   does not lead), `refused` (a handler ended the chain with an error) or `invalid`
//!   (malformed; the stream is ended with INVALID_ARGUMENT);
//! - `metasrv_heartbeat_streams`: open heartbeat streams; `metasrv_pushers`: registered
//!   pushers (one per connected node);
//! - `metasrv_region_leases_granted_total`, `metasrv_regions_closeable_total`: regions in
//!   the leases sent, and regions nodes were told to close.
//!
//! Mailbox: `metasrv_mailbox_sent_total`, `metasrv_mailbox_replies_total`,
//! `metasrv_mailbox_timeouts_total`, `metasrv_mailbox_pending`.
//!
//! Leadership and nodes:
//! - `metasrv_is_leader`, `metasrv_leadership_remaining_seconds` (read at scrape time
//!   from the leadership deadline, like every other leader check);
//! - `metasrv_term` (the cluster term this member knows), `metasrv_leader_changes_total`
//!   (changes of term this member saw);
//! - `metasrv_node_expiries_total`: nodes whose lease ran out.
//!
//! Backend: `metasrv_kv_write_failures_total{op}` (writes refused: nothing applied, see
//! [`crate::kv_health`]); `metasrv_etcd_request_duration_seconds{op}`,
//! `metasrv_etcd_errors_total{op}`;
//! `metasrv_stats_flushes_total{outcome}` and `metasrv_stats_flushed_nodes_total`.
//!
//! TLS: `metasrv_tls_handshake_failures_total{listener}` (`grpc`, `admin`): clients
//! refused at the handshake (no or an untrusted certificate, plaintext).
//!
//! Failover: `metasrv_failed_datanodes`, `metasrv_unavailable_regions`,
//! `metasrv_migrations_total{reason, outcome}`, `metasrv_migrations_in_flight`.
//!
//! Cluster: `metasrv_timings_differ_from_leader`, members whose timings differ from the
//! leader's (see [`crate::timings`]).
//!
//! Memory: `metasrv_heap_allocated_bytes`, the heap in use by the allocator's own count
//! (see [`crate::heap`]), read at scrape time; on glibc only.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use common_proto::v1::Role;
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// What became of one heartbeat, for `metasrv_heartbeats_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Answered without an error.
    Ok,
    /// Answered NOT_LEADER.
    NotLeader,
    /// A handler refused it (an error in the response other than NOT_LEADER).
    Refused,
    /// Malformed; the stream was ended with a status.
    Invalid,
}

const OUTCOMES: [(HeartbeatOutcome, &str); 4] = [
    (HeartbeatOutcome::Ok, "ok"),
    (HeartbeatOutcome::NotLeader, "not_leader"),
    (HeartbeatOutcome::Refused, "refused"),
    (HeartbeatOutcome::Invalid, "invalid"),
];

const ROLES: [Role; 4] = [
    Role::Unspecified,
    Role::Datanode,
    Role::Frontend,
    Role::Flownode,
];

/// `metasrv_heartbeats_total`, one resolved counter per role and outcome.
#[derive(Debug)]
pub struct HeartbeatCounters {
    by_role: Vec<[IntCounter; 4]>,
}

impl HeartbeatCounters {
    /// Counts one heartbeat.
    pub fn inc(&self, role: Role, outcome: HeartbeatOutcome) {
        let r = ROLES.iter().position(|x| *x == role).unwrap_or(0);
        let o = OUTCOMES
            .iter()
            .position(|(x, _)| *x == outcome)
            .unwrap_or(0);
        self.by_role[r][o].inc();
    }
}

/// The metasrv's registered metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Heartbeats by role and outcome.
    pub heartbeats: HeartbeatCounters,
    /// Open heartbeat streams.
    pub streams: IntGauge,
    /// Registered pushers (set at scrape time).
    pub pushers: IntGauge,
    /// Regions in the leases sent.
    pub regions_granted: IntCounter,
    /// Regions nodes were told to close.
    pub regions_closeable: IntCounter,
    /// Mailbox messages sent (with or without a reply expected).
    pub mailbox_sent: IntCounter,
    /// Mailbox replies matched to their sender.
    pub mailbox_replies: IntCounter,
    /// Mailbox messages whose reply did not come in time.
    pub mailbox_timeouts: IntCounter,
    /// Mailbox messages awaiting a reply (set at scrape time).
    pub mailbox_pending: IntGauge,
    /// Nodes whose lease ran out.
    pub node_expiries: IntCounter,
    /// Changes of the cluster term this member saw.
    pub leader_changes: IntCounter,
    /// The cluster term this member knows.
    pub term: IntGauge,
    /// etcd call latency by operation.
    pub etcd_duration: HistogramVec,
    /// Failed etcd calls by operation.
    pub etcd_errors: IntCounterVec,
    /// Stats flushes by outcome.
    pub stats_flushes: IntCounterVec,
    /// Nodes whose stats were flushed.
    pub stats_flushed_nodes: IntCounter,
    /// Datanodes judged failed.
    pub failed_datanodes: IntGauge,
    /// Regions that cannot fail over.
    pub unavailable_regions: IntGauge,
    /// Finished migrations by reason and outcome.
    pub migrations: IntCounterVec,
    /// Migrations running in this process.
    pub migrations_in_flight: IntGauge,
    /// TLS handshakes that failed, by listener.
    pub tls_handshake_failures: IntCounterVec,
    /// Members whose registered timings differ from the leader's (refreshed every 10 s).
    pub timings_differ: IntGauge,
    /// KV writes the backend refused, by operation.
    pub kv_write_failures: IntCounterVec,
}

/// Registers `metric` (a valid, once-registered family; a failure here is a bug in this
/// file, caught by the first test that touches metrics).
fn reg<T: Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    reg(registry, IntGauge::new(name, help).expect("a valid metric"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    reg(
        registry,
        IntCounter::new(name, help).expect("a valid metric"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"),
    )
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    handlers::metrics::register(&r).expect("the pipeline's metrics register once");
    let heartbeats = counter_vec(
        &r,
        "metasrv_heartbeats_total",
        "Heartbeats received, by node role and outcome.",
        &["role", "outcome"],
    );
    let by_role = ROLES
        .iter()
        .map(|role| {
            OUTCOMES.map(|(_, outcome)| heartbeats.with_label_values(&[role.label(), outcome]))
        })
        .collect();
    let etcd_duration = reg(
        &r,
        HistogramVec::new(
            HistogramOpts::new(
                "metasrv_etcd_request_duration_seconds",
                "etcd call latency, by operation.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["op"],
        )
        .expect("a valid metric"),
    );
    let m = Metrics {
        heartbeats: HeartbeatCounters { by_role },
        streams: gauge(&r, "metasrv_heartbeat_streams", "Open heartbeat streams."),
        pushers: gauge(
            &r,
            "metasrv_pushers",
            "Registered pushers (one per connected node).",
        ),
        regions_granted: counter(
            &r,
            "metasrv_region_leases_granted_total",
            "Regions in the region leases sent to datanodes.",
        ),
        regions_closeable: counter(
            &r,
            "metasrv_regions_closeable_total",
            "Regions datanodes were told to close (not routed to them).",
        ),
        mailbox_sent: counter(&r, "metasrv_mailbox_sent_total", "Mailbox messages sent."),
        mailbox_replies: counter(
            &r,
            "metasrv_mailbox_replies_total",
            "Mailbox replies matched to their sender.",
        ),
        mailbox_timeouts: counter(
            &r,
            "metasrv_mailbox_timeouts_total",
            "Mailbox messages whose reply did not come in time.",
        ),
        mailbox_pending: gauge(
            &r,
            "metasrv_mailbox_pending",
            "Mailbox messages awaiting a reply.",
        ),
        node_expiries: counter(
            &r,
            "metasrv_node_expiries_total",
            "Nodes whose lease ran out.",
        ),
        leader_changes: counter(
            &r,
            "metasrv_leader_changes_total",
            "Changes of the cluster term this member saw (each is a new leader).",
        ),
        term: gauge(&r, "metasrv_term", "The cluster term this member knows."),
        etcd_duration,
        etcd_errors: counter_vec(
            &r,
            "metasrv_etcd_errors_total",
            "Failed etcd calls, by operation.",
            &["op"],
        ),
        stats_flushes: counter_vec(
            &r,
            "metasrv_stats_flushes_total",
            "Batched writes of node stats to the backend, by outcome.",
            &["outcome"],
        ),
        stats_flushed_nodes: counter(
            &r,
            "metasrv_stats_flushed_nodes_total",
            "Nodes whose stats were written to the backend.",
        ),
        failed_datanodes: gauge(
            &r,
            "metasrv_failed_datanodes",
            "Datanodes the region supervisor judges failed.",
        ),
        unavailable_regions: gauge(
            &r,
            "metasrv_unavailable_regions",
            "Regions whose datanode failed and that cannot move (local-only storage).",
        ),
        migrations: counter_vec(
            &r,
            "metasrv_migrations_total",
            "Finished region migrations.",
            &["reason", "outcome"],
        ),
        migrations_in_flight: gauge(
            &r,
            "metasrv_migrations_in_flight",
            "Region migrations running in this process.",
        ),
        tls_handshake_failures: counter_vec(
            &r,
            "metasrv_tls_handshake_failures_total",
            "TLS handshakes that failed (no or an untrusted client certificate, plaintext, timeouts), by listener.",
            &["listener"],
        ),
        timings_differ: gauge(
            &r,
            "metasrv_timings_differ_from_leader",
            "Members whose registered timings differ from the leader's (refreshed every 10 s).",
        ),
        kv_write_failures: counter_vec(
            &r,
            "metasrv_kv_write_failures_total",
            "KV writes the backend refused (nothing was applied), by operation.",
            &["op"],
        ),
        registry: r,
    };
    for op in ETCD_OPS {
        m.etcd_errors.with_label_values(&[op]);
    }
    for outcome in ["ok", "failed"] {
        m.stats_flushes.with_label_values(&[outcome]);
    }
    for listener in ["grpc", "admin"] {
        m.tls_handshake_failures.with_label_values(&[listener]);
    }
    m
});

/// The etcd operations, as labels: every one is exported from the start (at 0), so an
/// alert on `metasrv_etcd_errors_total` needs no first error to see the series.
const ETCD_OPS: &[&str] = &[
    "get",
    "put",
    "delete",
    "range",
    "compare_and_put",
    "batch",
    "lease_grant",
    "lease_revoke",
    "member_registration",
    "reading_the_leader",
    "listing_members",
    "resign",
    "observe",
    "keep_alive",
];

/// A call's name as a label: `snake_case` ("lease grant" → `lease_grant`).
fn op_label(op: &str) -> std::borrow::Cow<'_, str> {
    if op.contains([' ', '-']) {
        op.replace([' ', '-'], "_").into()
    } else {
        op.into()
    }
}

/// Times one etcd call as `op`, and counts it if it fails.
pub async fn etcd_call<T, E>(op: &str, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let start = Instant::now();
    let result = call.await;
    let label = op_label(op);
    METRICS
        .etcd_duration
        .with_label_values(&[&*label])
        .observe(start.elapsed().as_secs_f64());
    if result.is_err() {
        METRICS.etcd_errors.with_label_values(&[&*label]).inc();
    }
    result
}

/// Counts one open heartbeat stream while it lives.
#[derive(Debug)]
pub struct StreamGuard(());

impl StreamGuard {
    /// A stream opened.
    pub fn open() -> Self {
        METRICS.streams.inc();
        StreamGuard(())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        METRICS.streams.dec();
    }
}

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
    if let Some(bytes) = crate::heap::allocated_bytes() {
        text.push_str(&format!(
            "# HELP metasrv_heap_allocated_bytes Heap bytes allocated and not freed, from the allocator's statistics.\n# TYPE metasrv_heap_allocated_bytes gauge\nmetasrv_heap_allocated_bytes {bytes}\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_and_heartbeats_count_by_role_and_outcome() {
        METRICS
            .heartbeats
            .inc(Role::Frontend, HeartbeatOutcome::Refused);
        let text = render(None);
        assert!(text.contains("metasrv_heartbeats_total{outcome=\"refused\",role=\"frontend\"}"));
        assert!(text.contains("metasrv_is_leader 0"));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(text.contains("\nmetasrv_heap_allocated_bytes "));
    }
}
