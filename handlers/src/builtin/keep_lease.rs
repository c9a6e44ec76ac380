//! KeepLease: record that the node is alive, on the leader's monotonic clock.

use async_trait::async_trait;
use common_proto::v1::Role;

use super::names;
use crate::{Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Result};

/// Stamps `last_seen` for the sender. Reads the heartbeat itself, not the accumulator's
/// stat, so that it does not depend on any earlier handler.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepLeaseHandler;

#[async_trait]
impl HeartbeatHandler for KeepLeaseHandler {
    fn name(&self) -> &str {
        names::KEEP_LEASE
    }

    fn is_acceptable(&self, _role: Role) -> bool {
        true
    }

    async fn handle(
        &self,
        hb: &Heartbeat,
        ctx: &Context,
        _acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let stat = hb.stat();
        ctx.node_leases.keep_alive(
            hb.key(),
            &stat.addr,
            stat.node_epoch,
            stat.region_stats.len(),
            ctx.clock.now(),
        );
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use common_proto::v1::Role;

    use crate::test_util::{fixture, request, run};
    use crate::{HandlerGroupBuilder, NodeKey};

    #[tokio::test]
    async fn keep_lease_stamps_last_seen_on_the_leader_clock() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        run(&group, &f.ctx, &request(3, Role::Datanode, &[], 1)).await;
        let first = f
            .ctx
            .node_leases
            .get(NodeKey::datanode(3))
            .expect("recorded")
            .last_seen;
        f.clock.advance(Duration::from_secs(2));
        run(&group, &f.ctx, &request(3, Role::Datanode, &[], 2)).await;
        let lease = f
            .ctx
            .node_leases
            .get(NodeKey::datanode(3))
            .expect("recorded");
        assert_eq!(lease.last_seen - first, Duration::from_secs(2));
        assert_eq!(lease.addr, "127.0.0.1:4003");
    }
}
