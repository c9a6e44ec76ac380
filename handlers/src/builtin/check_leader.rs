//! CheckLeader: a follower answers NOT_LEADER and stops the chain.

use async_trait::async_trait;
use common_proto::v1::{ErrorCode, HeartbeatRequest, Role};

use super::{any_known_role, names};
use crate::{Context, HandleControl, HeartbeatAccumulator, HeartbeatHandler, Result};

/// Stops the chain on a follower, so a follower never grants or records a lease. The
/// error message names the leader when known, so the node can go straight there.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckLeaderHandler;

#[async_trait]
impl HeartbeatHandler for CheckLeaderHandler {
    fn name(&self) -> &str {
        names::CHECK_LEADER
    }

    fn is_acceptable(&self, role: Role) -> bool {
        any_known_role(role)
    }

    async fn handle(
        &self,
        _req: &HeartbeatRequest,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        if ctx.leadership.is_leader() {
            return Ok(HandleControl::Continue);
        }
        let message = match ctx.leadership.leader_addr() {
            Some(addr) => format!("not leader; the leader is {addr}"),
            None => "not leader; no leader is known right now".to_string(),
        };
        acc.set_error(ErrorCode::NotLeader, message);
        Ok(HandleControl::Done)
    }
}
