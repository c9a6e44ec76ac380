//! CheckLeader: a follower answers NOT_LEADER and stops the chain.

use async_trait::async_trait;
use common_proto::v1::{ErrorCode, Role};

use super::names;
use crate::{Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Result};

/// Stops the chain on a follower, so a follower never grants or records a lease. The
/// error message names the leader when known, so the node can go straight there.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckLeaderHandler;

#[async_trait]
impl HeartbeatHandler for CheckLeaderHandler {
    fn name(&self) -> &str {
        names::CHECK_LEADER
    }

    fn is_acceptable(&self, _role: Role) -> bool {
        true
    }

    async fn handle(
        &self,
        _hb: &Heartbeat,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use common_proto::v1::{ErrorCode, Role};

    use crate::test_util::{fixture, request, run, Probe};
    use crate::{HandlerGroupBuilder, RegionRoute};

    #[tokio::test]
    async fn follower_answers_not_leader_and_stops_the_chain() {
        let f = fixture();
        f.leader.set(false, Some("10.0.0.9:3002".into()));
        let tail = Probe::named("tail");
        let tail_calls = tail.calls.clone();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .push(tail)
            .build()
            .expect("build");
        f.ctx
            .routes
            .put(RegionRoute {
                region_id: 1,
                leader: Some(1),
                followers: vec![],
                epoch: 1,
            })
            .await
            .expect("route");

        let acc = run(&group, &f.ctx, &request(1, Role::Datanode, &[1], 5)).await;
        assert_eq!(acc.error_code(), Some(ErrorCode::NotLeader));
        assert!(acc
            .error
            .as_ref()
            .expect("error")
            .message
            .contains("10.0.0.9:3002"));
        assert!(acc.region_lease.is_none(), "a follower never grants");
        assert!(
            f.ctx.node_leases.list().is_empty(),
            "a follower never records a lease"
        );
        assert_eq!(tail_calls.load(Ordering::SeqCst), 0, "Done stops the chain");
    }

    #[tokio::test]
    async fn a_follower_refuses_every_role_not_only_datanodes() {
        let f = fixture();
        f.leader.set(false, Some("10.0.0.9:3002".into()));
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        for (node, role) in [
            (1, Role::Datanode),
            (2, Role::Frontend),
            (3, Role::Flownode),
        ] {
            let acc = run(&group, &f.ctx, &request(node, role, &[], 5)).await;
            assert_eq!(
                acc.error_code(),
                Some(ErrorCode::NotLeader),
                "{role:?} served by a follower"
            );
        }
        assert!(
            f.ctx.node_leases.list().is_empty(),
            "a follower records no lease for any role"
        );
    }
}
