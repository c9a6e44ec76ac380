//! [`HandlerGroup`]: runs the handlers in order, applies each one's error policy, and
//! times every handler.
//!
//! Timing is recorded three ways: a `tracing` span per handler run (`heartbeat_handler`,
//! field `handler`), for traces; a Prometheus histogram per handler
//! ([`metrics`](crate::metrics), resolved when the group is built); and cheap atomic
//! counters per handler ([`HandlerTiming`]), which `/handlers` and the benchmark read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tracing::{warn, Instrument};

use crate::metrics::HandlerSeries;
use crate::{
    Context, ErrorPolicy, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler,
};

/// Cumulative counters for one handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerTiming {
    /// The handler's name.
    pub name: String,
    /// How many times it ran.
    pub calls: u64,
    /// How many runs returned an error.
    pub errors: u64,
    /// Heartbeats this handler refused: it stopped the chain with an error in the
    /// response (a custom gate refusing a node, or CheckLeader on a follower).
    pub refusals: u64,
    /// Total time spent in it, in nanoseconds.
    pub total_nanos: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    refusals: AtomicU64,
    nanos: AtomicU64,
}

pub(crate) struct Entry {
    pub(crate) handler: Arc<dyn HeartbeatHandler>,
    counters: Counters,
    series: HandlerSeries,
}

impl Entry {
    pub(crate) fn new(handler: Arc<dyn HeartbeatHandler>) -> Self {
        let series = HandlerSeries::new(handler.name());
        Self {
            handler,
            counters: Counters::default(),
            series,
        }
    }
}

/// An ordered, immutable list of handlers; build one with
/// [`HandlerGroupBuilder`](crate::HandlerGroupBuilder).
pub struct HandlerGroup {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for HandlerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerGroup")
            .field("handlers", &self.names())
            .finish()
    }
}

impl HandlerGroup {
    pub(crate) fn from_entries(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    /// The handler names, in run order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.handler.name()).collect()
    }

    /// Runs one heartbeat through the handlers that accept its role, in order, until one
    /// returns [`HandleControl::Done`] or fails with [`ErrorPolicy::Stop`].
    ///
    /// Never fails: handler errors are recorded in `acc` (and so in the response header),
    /// counted and logged, which is what keeps a failing non-critical handler from costing
    /// a node its lease.
    pub async fn handle(&self, hb: &Heartbeat, ctx: &Context, acc: &mut HeartbeatAccumulator) {
        let role = hb.role();
        for entry in &self.entries {
            let handler = &entry.handler;
            if !handler.is_acceptable(role) {
                continue;
            }
            let name = handler.name();
            let span = tracing::debug_span!("heartbeat_handler", handler = name);
            let start = Instant::now();
            let had_error = acc.error.is_some();
            let result = handler.handle(hb, ctx, acc).instrument(span).await;
            let elapsed = start.elapsed();
            entry.counters.calls.fetch_add(1, Ordering::Relaxed);
            entry
                .counters
                .nanos
                .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
            entry.series.duration.observe(elapsed.as_secs_f64());
            match result {
                Ok(HandleControl::Continue) => {}
                Ok(HandleControl::Done) => {
                    if !had_error {
                        if let Some(err) = &acc.error {
                            // A refusal leaves a trace: counted, and logged with the node.
                            entry.counters.refusals.fetch_add(1, Ordering::Relaxed);
                            entry.series.refusals.inc();
                            let node_id = hb.key().node_id;
                            if err.code() == common_proto::v1::ErrorCode::NotLeader {
                                tracing::debug!(
                                    handler = name,
                                    node_id,
                                    "heartbeat refused: not leader"
                                );
                            } else {
                                warn!(handler = name, node_id, code = ?err.code(), message = err.message, "heartbeat refused by a handler");
                            }
                        }
                    }
                    return;
                }
                Err(err) => {
                    entry.counters.errors.fetch_add(1, Ordering::Relaxed);
                    entry.series.errors.inc();
                    let policy = handler.error_policy();
                    warn!(handler = name, ?policy, error = %err, "heartbeat handler failed");
                    acc.record_failure(name, err.to_string());
                    if policy == ErrorPolicy::Stop {
                        acc.set_error(
                            common_proto::v1::ErrorCode::HandlerFailed,
                            format!("handler {name} failed: {err}"),
                        );
                        return;
                    }
                }
            }
        }
    }

    /// A snapshot of every handler's counters, in run order.
    pub fn timings(&self) -> Vec<HandlerTiming> {
        self.entries
            .iter()
            .map(|e| HandlerTiming {
                name: e.handler.name().to_string(),
                calls: e.counters.calls.load(Ordering::Relaxed),
                errors: e.counters.errors.load(Ordering::Relaxed),
                refusals: e.counters.refusals.load(Ordering::Relaxed),
                total_nanos: e.counters.nanos.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use common_proto::v1::{ErrorCode, Role};

    use crate::builtin::names::*;
    use crate::test_util::{fixture, request, run, Probe};
    use crate::{ErrorPolicy, HandlerGroupBuilder, NodeKey, RegionRoute};

    #[tokio::test]
    async fn role_filtering_skips_handlers_that_do_not_accept_the_role() {
        let f = fixture();
        let frontend_only = Probe {
            roles: &[Role::Frontend],
            ..Probe::named("frontend_only")
        };
        let calls = frontend_only.calls.clone();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .push(frontend_only)
            .build()
            .expect("build");

        let acc = run(&group, &f.ctx, &request(1, Role::Datanode, &[], 1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(
            acc.region_lease.is_some(),
            "region_lease runs for datanodes"
        );

        let acc = run(&group, &f.ctx, &request(2, Role::Frontend, &[], 1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(acc.region_lease.is_none(), "region_lease skips frontends");
        assert!(
            f.ctx
                .node_leases
                .get(NodeKey {
                    role: Role::Frontend,
                    node_id: 2
                })
                .is_some(),
            "keep_lease accepts frontends"
        );
        let timings = group.timings();
        let region = timings
            .iter()
            .find(|t| t.name == REGION_LEASE)
            .expect("timed");
        assert_eq!(region.calls, 1, "skipped runs are not timed");
    }

    #[tokio::test]
    async fn a_failing_handler_does_not_cost_the_lease() {
        let f = fixture();
        f.ctx
            .routes
            .put(RegionRoute {
                region_id: 1,
                leader: Some(5),
                followers: vec![],
                epoch: 1,
            })
            .await
            .expect("route");
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .insert_before(
                KEEP_LEASE,
                Probe::failing("flaky_quota", ErrorPolicy::Continue),
            )
            .build()
            .expect("build");
        let acc = run(&group, &f.ctx, &request(5, Role::Datanode, &[1], 9)).await;
        assert!(
            f.ctx.node_leases.get(NodeKey::datanode(5)).is_some(),
            "keep_lease still ran"
        );
        assert_eq!(acc.region_lease.as_ref().expect("granted").regions.len(), 1);
        assert_eq!(acc.failures.len(), 1);
        assert_eq!(acc.failures[0].handler, "flaky_quota");
        assert!(acc.failures[0].message.contains("flaky_quota exploded"));
        assert_eq!(acc.error, None, "a Continue failure is not a request error");
        let t = group
            .timings()
            .into_iter()
            .find(|t| t.name == "flaky_quota")
            .expect("timed");
        assert_eq!((t.calls, t.errors), (1, 1));

        // Reported in the response header.
        let resp = acc.into_response();
        assert_eq!(resp.header.expect("header").handler_failures.len(), 1);
    }

    #[tokio::test]
    async fn a_stop_policy_failure_stops_the_chain_with_an_error() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .insert_before(KEEP_LEASE, Probe::failing("gate", ErrorPolicy::Stop))
            .build()
            .expect("build");
        let acc = run(&group, &f.ctx, &request(5, Role::Datanode, &[], 9)).await;
        assert_eq!(acc.error_code(), Some(ErrorCode::HandlerFailed));
        assert!(f.ctx.node_leases.list().is_empty());
    }

    /// Refuses every heartbeat, as an operator's gate would.
    #[derive(Debug)]
    struct Gate;

    #[async_trait::async_trait]
    impl crate::HeartbeatHandler for Gate {
        fn name(&self) -> &str {
            "gate"
        }

        fn is_acceptable(&self, _role: Role) -> bool {
            true
        }

        async fn handle(
            &self,
            _hb: &crate::Heartbeat,
            _ctx: &crate::Context,
            acc: &mut crate::HeartbeatAccumulator,
        ) -> crate::Result<crate::HandleControl> {
            acc.set_error(ErrorCode::InvalidArgument, "version too old");
            Ok(crate::HandleControl::Done)
        }
    }

    #[tokio::test]
    async fn a_handler_that_refuses_a_node_is_counted() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .insert_before(KEEP_LEASE, Gate)
            .build()
            .expect("build");
        let acc = run(&group, &f.ctx, &request(1, Role::Datanode, &[], 1)).await;
        assert_eq!(acc.error_code(), Some(ErrorCode::InvalidArgument));
        let gate = group
            .timings()
            .into_iter()
            .find(|t| t.name == "gate")
            .expect("gate timing");
        assert_eq!((gate.calls, gate.refusals, gate.errors), (1, 1, 0));
        let check = group
            .timings()
            .into_iter()
            .find(|t| t.name == CHECK_LEADER)
            .expect("timing");
        assert_eq!(check.refusals, 0, "a leader refuses nobody");
    }
}
