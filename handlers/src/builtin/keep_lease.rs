//! KeepLease: record that the node is alive, on the leader's monotonic clock.

use async_trait::async_trait;
use common_proto::v1::{HeartbeatRequest, Role};

use super::{any_known_role, names, node_key};
use crate::{Context, HandleControl, HeartbeatAccumulator, HeartbeatHandler, Result};

/// Stamps `last_seen` for the sender. Reads the request directly rather than the `Stat`,
/// so that it does not depend on any earlier non-critical handler.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepLeaseHandler;

#[async_trait]
impl HeartbeatHandler for KeepLeaseHandler {
    fn name(&self) -> &str {
        names::KEEP_LEASE
    }

    fn is_acceptable(&self, role: Role) -> bool {
        any_known_role(role)
    }

    async fn handle(
        &self,
        req: &HeartbeatRequest,
        ctx: &Context,
        _acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let Some(key) = node_key(req) else {
            return Ok(HandleControl::Continue);
        };
        let addr = req.peer.as_ref().map_or("", |p| p.addr.as_str());
        ctx.node_leases.keep_alive(
            key,
            addr,
            req.node_epoch,
            req.region_stats.len(),
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
