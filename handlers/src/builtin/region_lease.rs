//! RegionLease: grant leases for the regions a datanode owns.

use async_trait::async_trait;
use common_proto::v1::{GrantedRegion, RegionLease, RegionOwner, RegionRole, Role};

use super::names;
use crate::{Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Result};

/// For each region the datanode reports, grants a lease in the role the route table gives
/// it (leader or follower) under the route's region epoch; lists reported regions it does
/// not own as closeable; and, for those it does not lead, names the current owner (so the
/// node can send a refused writer there).
///
/// Routes that name the node the leader of a region it did not report are granted too:
/// the node opens them (a move's upgrade can be lost, and a node can restart or close its
/// copy between a move's steps). The route is the authority both ways: reported and not
/// routed here is closed, routed here as leader and not reported is opened. A node whose
/// reports match its routes costs one count.
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
        hb: &Heartbeat,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let key = hb.key();
        let ids: Vec<u64> = hb.regions().iter().map(|s| s.region_id).collect();
        // Recorded *before* the routes are read, for every heartbeat (the routes may name
        // regions the node did not report): any grant that saw a route as it was before
        // a migration fenced it is then visible to that migration, which waits out
        // `last_granted + lease` (S1). An over-estimate only delays a failover.
        ctx.node_leases.record_grant(key, ctx.clock.now());
        let roles = ctx.routes.roles_for(key.node_id, &ids).await?;
        let mut regions = Vec::with_capacity(ids.len());
        let mut closeable_region_ids = Vec::new();
        let mut not_led = Vec::new();
        let mut led_reported = 0;
        for (&region_id, role) in ids.iter().zip(roles) {
            match role {
                Some(held) => {
                    if held.role == RegionRole::Leader {
                        led_reported += 1;
                    } else {
                        not_led.push(region_id);
                    }
                    regions.push(GrantedRegion {
                        region_id,
                        role: held.role as i32,
                        epoch: held.epoch,
                    });
                }
                None => {
                    closeable_region_ids.push(region_id);
                    not_led.push(region_id);
                }
            }
        }
        if ctx.routes.led_count(key.node_id).await? > led_reported {
            let reported: std::collections::HashSet<u64> = ids.iter().copied().collect();
            for route in ctx.routes.led_by(key.node_id).await? {
                if !reported.contains(&route.region_id) {
                    regions.push(GrantedRegion {
                        region_id: route.region_id,
                        role: RegionRole::Leader as i32,
                        epoch: route.epoch,
                    });
                }
            }
        }
        let mut owners = Vec::new();
        for region_id in not_led {
            let Some(route) = ctx.routes.get(region_id).await? else {
                continue;
            };
            if let Some(node_id) = route.leader {
                let addr = ctx
                    .node_leases
                    .get(crate::NodeKey::datanode(node_id))
                    .map(|l| l.addr)
                    .unwrap_or_default();
                owners.push(RegionOwner {
                    region_id,
                    node_id,
                    addr,
                    epoch: route.epoch,
                });
            }
        }
        acc.region_lease = Some(RegionLease {
            regions,
            duration_since_epoch: hb.stat().duration_since_epoch,
            lease_seconds: ctx.leases.region_lease.as_secs(),
            closeable_region_ids,
            owners,
        });
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use common_proto::v1::{GrantedRegion, RegionRole, Role};

    use crate::test_util::{fixture, request, run};
    use crate::{HandlerGroupBuilder, NodeKey, RegionRoute};

    /// A route store that notes, at each read the handler makes (`roles_for`,
    /// `led_count`), the node's last grant as the lease store holds it then; and counts
    /// the `led_by` scans.
    #[derive(Debug)]
    struct NotesGrantAtRead {
        inner: crate::RegionRouteStoreRef,
        leases: crate::NodeLeaseStoreRef,
        seen: parking_lot::Mutex<Vec<Option<tokio::time::Instant>>>,
        scans: std::sync::atomic::AtomicUsize,
    }

    impl NotesGrantAtRead {
        fn note(&self, node_id: u64) {
            let granted = self
                .leases
                .get(NodeKey::datanode(node_id))
                .and_then(|l| l.last_granted);
            self.seen.lock().push(granted);
        }
    }

    #[async_trait::async_trait]
    impl crate::RegionRouteStore for NotesGrantAtRead {
        async fn get(&self, region_id: u64) -> crate::Result<Option<RegionRoute>> {
            self.inner.get(region_id).await
        }
        async fn list(&self) -> crate::Result<Vec<RegionRoute>> {
            self.inner.list().await
        }
        async fn create(&self, route: RegionRoute) -> crate::Result<Option<RegionRoute>> {
            self.inner.create(route).await
        }
        async fn put(&self, route: RegionRoute) -> crate::Result<()> {
            self.inner.put(route).await
        }
        async fn compare_and_put(
            &self,
            expected: &RegionRoute,
            new: RegionRoute,
        ) -> crate::Result<bool> {
            self.inner.compare_and_put(expected, new).await
        }
        async fn delete(&self, region_id: u64) -> crate::Result<Option<RegionRoute>> {
            self.inner.delete(region_id).await
        }
        async fn roles_for(
            &self,
            node_id: u64,
            region_ids: &[u64],
        ) -> crate::Result<Vec<Option<crate::route::Holding>>> {
            self.note(node_id);
            self.inner.roles_for(node_id, region_ids).await
        }
        async fn led_count(&self, node_id: u64) -> crate::Result<usize> {
            self.note(node_id);
            self.inner.led_count(node_id).await
        }
        async fn led_by(&self, node_id: u64) -> crate::Result<Vec<RegionRoute>> {
            self.scans
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.led_by(node_id).await
        }
    }

    /// S1 across a migration: a grant that read the route before the fence must be
    /// visible to the migration, which waits out `last_granted + lease`. So the grant is
    /// recorded before the route is read, never after.
    #[tokio::test]
    async fn the_grant_is_recorded_before_the_routes_are_read() {
        let mut f = fixture();
        let notes = std::sync::Arc::new(NotesGrantAtRead {
            inner: f.ctx.routes.clone(),
            leases: f.ctx.node_leases.clone(),
            seen: parking_lot::Mutex::default(),
            scans: Default::default(),
        });
        f.ctx.routes = notes.clone();
        f.ctx
            .routes
            .put(RegionRoute {
                region_id: 1,
                leader: Some(7),
                followers: vec![],
                epoch: 1,
            })
            .await
            .expect("route");
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        let now = f.ctx.clock.now();
        run(&group, &f.ctx, &request(7, Role::Datanode, &[1], 1)).await;
        assert_eq!(
            *notes.seen.lock(),
            [Some(now), Some(now)],
            "recorded when the routes were read"
        );
        let scans = || notes.scans.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            scans(),
            0,
            "its report matches its routes: one count, no scan"
        );
        tokio::time::pause();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let later = f.ctx.clock.now();
        run(&group, &f.ctx, &request(7, Role::Datanode, &[], 1)).await;
        assert_eq!(scans(), 1, "region 1 unreported: its routes are read");
        assert_eq!(
            notes.seen.lock()[2..],
            [Some(later), Some(later)],
            "recorded though it reported nothing, before the routes were read"
        );
    }

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
                epoch: 3,
            },
            RegionRoute {
                region_id: 2,
                leader: Some(8),
                followers: vec![7],
                epoch: 5,
            },
            RegionRoute {
                region_id: 3,
                leader: Some(8),
                followers: vec![],
                epoch: 1,
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
                    role: RegionRole::Leader as i32,
                    epoch: 3,
                },
                GrantedRegion {
                    region_id: 2,
                    role: RegionRole::Follower as i32,
                    epoch: 5,
                },
            ]
        );
        assert_eq!(lease.duration_since_epoch, 123_456);
        assert_eq!(lease.lease_seconds, 10);
        assert_eq!(lease.closeable_region_ids, vec![3, 4]);
        // Where the regions it does not lead are led now (node 8 never heartbeat here,
        // so its address is unknown); region 4 has no owner to name.
        let owner = |region_id, epoch| common_proto::v1::RegionOwner {
            region_id,
            node_id: 8,
            addr: String::new(),
            epoch,
        };
        assert_eq!(lease.owners, vec![owner(2, 5), owner(3, 1)]);
        assert!(f
            .ctx
            .node_leases
            .get(NodeKey::datanode(7))
            .expect("known")
            .last_granted
            .is_some());
    }

    #[tokio::test]
    async fn regions_routed_here_as_leader_but_not_reported_are_granted_so_the_node_opens_them() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        for (region_id, leader, epoch) in [(1, 7, 3), (2, 7, 4), (3, 8, 1)] {
            f.ctx
                .routes
                .put(RegionRoute {
                    region_id,
                    leader: Some(leader),
                    followers: vec![],
                    epoch,
                })
                .await
                .expect("route");
        }
        let lease = |acc: crate::HeartbeatAccumulator| acc.region_lease.expect("granted").regions;
        let leader = |region_id, epoch| GrantedRegion {
            region_id,
            role: RegionRole::Leader as i32,
            epoch,
        };
        let both = run(&group, &f.ctx, &request(7, Role::Datanode, &[1, 2], 1)).await;
        assert_eq!(lease(both), vec![leader(1, 3), leader(2, 4)]);
        let one = run(&group, &f.ctx, &request(7, Role::Datanode, &[1], 1)).await;
        assert_eq!(
            lease(one),
            vec![leader(1, 3), leader(2, 4)],
            "region 2 is routed here as leader: granted, so the node opens it"
        );
        let none = run(&group, &f.ctx, &request(7, Role::Datanode, &[], 1)).await;
        assert_eq!(lease(none), vec![leader(1, 3), leader(2, 4)]);
        let other = run(&group, &f.ctx, &request(9, Role::Datanode, &[], 1)).await;
        assert_eq!(lease(other), vec![], "nothing routed to node 9");
    }
}
