//! RegionLease: grant leases for the regions a datanode owns.

use async_trait::async_trait;
use common_proto::v1::{GrantedRegion, HeartbeatRequest, RegionLease, Role};

use super::{names, node_key};
use crate::{Context, HandleControl, HeartbeatAccumulator, HeartbeatHandler, Result};

/// For each region the datanode reports, grants a lease in the role the route table gives
/// it (leader or follower); lists reported regions it does not own as closeable.
///
/// The lease echoes the request's `duration_since_epoch`, so the datanode anchors it to
/// its own monotonic clock at send time: network delay only shortens it, and clock skew
/// does not matter. The grant time is recorded on the leader's clock, which is always
/// after the datanode's anchor, so "last grant + lease" is a safe bound for failover.
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionLeaseHandler;

#[async_trait]
impl HeartbeatHandler for RegionLeaseHandler {
    fn name(&self) -> &str {
        names::REGION_LEASE
    }

    fn is_acceptable(&self, role: Role) -> bool {
        role == Role::Datanode
    }

    async fn handle(
        &self,
        req: &HeartbeatRequest,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let Some(key) = node_key(req) else {
            return Ok(HandleControl::Continue);
        };
        let ids: Vec<u64> = req.region_stats.iter().map(|s| s.region_id).collect();
        // Recorded *before* the routes are read: any grant that saw a route as it was
        // before a migration fenced it is then visible to that migration, which waits
        // out `last_granted + lease` (S1). An over-estimate only delays a failover.
        if !ids.is_empty() {
            ctx.node_leases.record_grant(key, ctx.clock.now());
        }
        let roles = ctx.routes.roles_for(key.node_id, &ids).await?;
        let mut regions = Vec::with_capacity(ids.len());
        let mut closeable_region_ids = Vec::new();
        for (region_id, role) in ids.into_iter().zip(roles) {
            match role {
                Some(role) => regions.push(GrantedRegion {
                    region_id,
                    role: role as i32,
                }),
                None => closeable_region_ids.push(region_id),
            }
        }
        acc.region_lease = Some(RegionLease {
            regions,
            duration_since_epoch: req.duration_since_epoch,
            lease_seconds: ctx.leases.region_lease.as_secs(),
            closeable_region_ids,
        });
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use common_proto::v1::{GrantedRegion, RegionRole, Role};

    use crate::test_util::{fixture, request, run};
    use crate::{HandlerGroupBuilder, NodeKey, RegionRoute};

    #[tokio::test]
    async fn region_lease_grants_owned_roles_echoes_duration_and_lists_closeable() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        for route in [
            RegionRoute {
                region_id: 1,
                leader: Some(7),
                followers: vec![8],
            },
            RegionRoute {
                region_id: 2,
                leader: Some(8),
                followers: vec![7],
            },
            RegionRoute {
                region_id: 3,
                leader: Some(8),
                followers: vec![],
            },
        ] {
            f.ctx.routes.put(route).await.expect("route");
        }
        // Region 4 has no route at all.
        let acc = run(
            &group,
            &f.ctx,
            &request(7, Role::Datanode, &[1, 2, 3, 4], 123_456),
        )
        .await;
        assert_eq!(acc.error, None);
        let lease = acc.region_lease.expect("granted");
        assert_eq!(
            lease.regions,
            vec![
                GrantedRegion {
                    region_id: 1,
                    role: RegionRole::Leader as i32
                },
                GrantedRegion {
                    region_id: 2,
                    role: RegionRole::Follower as i32
                },
            ]
        );
        assert_eq!(lease.duration_since_epoch, 123_456);
        assert_eq!(lease.lease_seconds, 10);
        assert_eq!(lease.closeable_region_ids, vec![3, 4]);
        assert!(f
            .ctx
            .node_leases
            .get(NodeKey::datanode(7))
            .expect("known")
            .last_granted
            .is_some());
    }
}
