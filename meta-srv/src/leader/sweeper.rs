//! Two term tasks: the node-lease sweeper and the stats flusher. Each acts only under the
//! leadership deadline.
//!
//! The sweeper marks nodes expired by time alone, so a half-open stream (TCP still up,
//! no heartbeats) cannot keep a dead node alive.

use std::sync::Arc;
use std::time::Duration;

use handlers::builtin::StatsCache;
use handlers::Context;
use tracing::warn;

use crate::leader::gate::LeaderGate;
use crate::leader::stall::StallClock;

/// What the sweeper and the stats flusher use: a narrow handle, not the whole server.
#[derive(Debug, Clone)]
pub(crate) struct Sweeper {
    pub(crate) ctx: Context,
    pub(crate) cluster: crate::cluster::Cluster,
    pub(crate) gate: Arc<LeaderGate>,
    pub(crate) stats: Arc<StatsCache>,
    pub(crate) node_lease: Duration,
    pub(crate) sweep_interval: Duration,
    pub(crate) flush_interval: Duration,
}

/// Expires silent nodes every `sweep_interval` while leading.
///
/// Each tick is a leader action, so it is taken only under the leadership deadline, read
/// at the tick (fail closed): a deposed leader resuming from a pause finds its deadline
/// passed and does nothing. The expiry uses the same `now` as the check, so even a pause
/// between the two cannot act on a later time than the authority covered.
///
/// **Our own stalls are not node failures.** If the gap since the previous tick is far
/// longer than the interval, this process was not running (SIGSTOP, a starved runtime):
/// it heard no heartbeats for that time through no fault of the nodes. It then gives
/// every live node a fresh grace of one node lease instead of expiring them all.
pub(crate) async fn run(srv: Sweeper) {
    let interval = srv.sweep_interval;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = StallClock::new(interval, srv.ctx.clock.now());
    loop {
        ticker.tick().await;
        let at_ms = common_proto::unix_millis();
        let now = srv.ctx.clock.now();
        let stalled = stall.stalled(now);
        if !srv.ctx.leadership.is_leader() {
            continue;
        }
        srv.gate.grants.record_task(at_ms);
        if let Some(gap) = stalled {
            warn!(
                gap_ms = gap.as_millis() as u64,
                interval_ms = interval.as_millis() as u64,
                "this metasrv was stalled; giving every live node a fresh grace instead of expiring it"
            );
            srv.ctx.node_leases.grace(now);
            continue;
        }
        for lease in srv.ctx.node_leases.expire(now, srv.node_lease) {
            crate::metrics::METRICS.node_expiries.inc();
            let silent_ms = now.saturating_duration_since(lease.last_seen).as_millis() as u64;
            let connected = srv.cluster.is_connected(lease.key);
            warn!(
                node_id = lease.key.node_id,
                role = lease.key.role.label(),
                addr = %lease.addr,
                silent_ms,
                connected,
                "node {} expired",
                lease.key.node_id
            );
        }
    }
}

/// Writes the stats marked for flushing, in one batch, every `stats_flush_interval`.
/// Heartbeats never wait on it.
pub(crate) async fn flush_stats(srv: Sweeper) {
    let mut ticker =
        tokio::time::interval(srv.flush_interval.max(std::time::Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Leader state is written only under the leadership deadline.
        if !srv.ctx.leadership.is_leader() {
            continue;
        }
        let m = &crate::metrics::METRICS;
        match srv.stats.flush(&*srv.ctx.kv).await {
            Ok(0) => {}
            Ok(n) => {
                m.stats_flushes.with_label_values(&["ok"]).inc();
                m.stats_flushed_nodes.inc_by(n as u64);
                tracing::debug!(nodes = n, "stats flushed");
            }
            Err(err) => {
                m.stats_flushes.with_label_values(&["failed"]).inc();
                warn!(error = %err, "stats flush failed; the next flush writes newer stats")
            }
        }
    }
}
