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
