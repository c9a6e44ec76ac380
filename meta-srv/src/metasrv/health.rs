//! gRPC health for the metasrv: the server is SERVING while it runs, and the heartbeat
//! service (`meta.v1.Heartbeat`) is SERVING only while this metasrv leads. Leadership is
//! read from its deadline at every announced change and on every tick, so a lapse shows
//! even if nobody announced it: a load balancer that routes by health never sends nodes
//! to a member whose leadership ran out.

use std::time::Duration;

use handlers::LeadershipRef;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::election::LeaderState;

/// The heartbeat service's name, as gRPC health and reflection report it.
pub const HEARTBEAT_SERVICE: &str = "meta.v1.Heartbeat";

/// Keeps the heartbeat service's status equal to "this member leads" until `stop`, then
/// reports the whole server NOT_SERVING.
pub(super) async fn report_leadership(
    health: HealthReporter,
    leadership: LeadershipRef,
    mut changes: tokio::sync::watch::Receiver<LeaderState>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                health.set_service_status("", ServingStatus::NotServing).await;
                return;
            }
            _ = tick.tick() => {}
            // Announced changes show at once; the tick catches a silent lapse.
            Ok(()) = changes.changed() => {}
        }
        let leading = leadership.is_leader();
        if last != Some(leading) {
            let status = if leading {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(HEARTBEAT_SERVICE, status).await;
            last = Some(leading);
        }
    }
}
