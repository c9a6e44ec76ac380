//! Leader-side background tasks: the node-lease sweeper and the leadership watcher.
//!
//! The sweeper marks nodes expired by time alone, so a half-open stream (TCP still up,
//! no heartbeats) cannot keep a dead node alive. The watcher resets leader-only state on
//! every leadership change: a new leader starts empty (every node gets a grace of one
//! node lease, since it is unknown until its first heartbeat) and reloads routes; a
//! leader that steps down forgets its leases and stats.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Metasrv;

/// Expires silent nodes every `sweep_interval` while leading.
pub(crate) async fn run(srv: Arc<Metasrv>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(srv.options.sweep_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !srv.ctx.leadership.is_leader() {
            continue;
        }
        let now = srv.ctx.clock.now();
        for lease in srv.ctx.node_leases.expire(now, srv.options.node_lease) {
            let silent_ms = now.saturating_duration_since(lease.last_seen).as_millis() as u64;
            let connected = srv.pushers.get(lease.key).is_some();
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

/// Resets leader-only state on every leadership change.
pub(crate) async fn watch_leadership(srv: Arc<Metasrv>, shutdown: CancellationToken) {
    let mut rx = srv.election.subscribe();
    let mut was_leader = rx.borrow().is_leader;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let state = rx.borrow_and_update().clone();
        if state.is_leader == was_leader {
            continue;
        }
        was_leader = state.is_leader;
        srv.ctx.node_leases.clear();
        srv.stats.clear();
        if state.is_leader {
            match srv.routes.load().await {
                Ok(n) => info!(
                    term = state.term,
                    routes = n,
                    "became leader; leader state reset"
                ),
                Err(err) => warn!(error = %err, "became leader but could not reload routes"),
            }
        } else {
            info!(term = state.term, leader = ?state.leader_addr, "stepped down; leader state dropped");
        }
    }
}
