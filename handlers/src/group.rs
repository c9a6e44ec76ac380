//! [`HandlerGroup`]: runs the handlers in order, applies each one's error policy, and
//! times every handler.
//!
//! Timing is recorded twice: a `tracing` span per handler run (`heartbeat_handler`,
//! field `handler`), for traces; and cheap atomic counters per handler
//! ([`HandlerTiming`]), which the metrics endpoint and the benchmark read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common_proto::v1::{HeartbeatRequest, Role};
use tracing::{warn, Instrument};

use crate::{Context, ErrorPolicy, HandleControl, HeartbeatAccumulator, HeartbeatHandler};

/// Cumulative counters for one handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerTiming {
    /// The handler's name.
    pub name: String,
    /// How many times it ran.
    pub calls: u64,
    /// How many runs returned an error.
    pub errors: u64,
    /// Total time spent in it, in nanoseconds.
    pub total_nanos: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

pub(crate) struct Entry {
    pub(crate) handler: Arc<dyn HeartbeatHandler>,
    counters: Counters,
}

impl Entry {
    pub(crate) fn new(handler: Arc<dyn HeartbeatHandler>) -> Self {
        Self {
            handler,
            counters: Counters::default(),
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

    /// Runs one heartbeat through the handlers that accept `role`, in order, until one
    /// returns [`HandleControl::Done`] or fails with [`ErrorPolicy::Stop`].
    ///
    /// Never fails: handler errors are recorded in `acc` (and so in the response header),
    /// counted and logged, which is what keeps a failing non-critical handler from costing
    /// a node its lease.
    pub async fn handle(
        &self,
        role: Role,
        req: &HeartbeatRequest,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) {
        for entry in &self.entries {
            let handler = &entry.handler;
            if !handler.is_acceptable(role) {
                continue;
            }
            let name = handler.name();
            let span = tracing::debug_span!("heartbeat_handler", handler = name);
            let start = Instant::now();
            let result = handler.handle(req, ctx, acc).instrument(span).await;
            let elapsed = start.elapsed().as_nanos() as u64;
            entry.counters.calls.fetch_add(1, Ordering::Relaxed);
            entry.counters.nanos.fetch_add(elapsed, Ordering::Relaxed);
            match result {
                Ok(HandleControl::Continue) => {}
                Ok(HandleControl::Done) => return,
                Err(err) => {
                    entry.counters.errors.fetch_add(1, Ordering::Relaxed);
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
                total_nanos: e.counters.nanos.load(Ordering::Relaxed),
            })
            .collect()
    }
}
