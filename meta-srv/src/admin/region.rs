//! Creating and dropping regions: write the route, instruct the datanode, wait.
//!
//! Create: place the region (the node asked for, if it is fit, else the cluster model's
//! placement, the same selector that places moves), write the route (compare-and-put, so two creates cannot both win),
//! send `OpenRegion` through the mailbox and wait for the reply. If the node refuses or
//! does not answer, the route is removed again, so no route points at a node that never
//! opened the region. RegionLease grants the lease on the node's next heartbeat.
//!
//! Drop: delete the route first (so RegionLease stops granting and lists the region as
//! closeable), then ask every holder to close it. A drop wins over a migration of the
//! region: the procedure sees the route gone at its next step and ends, and until it
//! has, a create of the same id is refused (409), so the old procedure never acts on the
//! new region.

use std::sync::Arc;
use std::time::Duration;

use common_proto::instruction::OpenRole;
use common_proto::{Instruction, RegionIdent};
use handlers::{KvRegionRouteStore, LeadershipRef, RegionRoute, RegionRouteStore as _};
use serde::{Deserialize, Serialize};
use snafu::ResultExt;
use tracing::{info, warn};

use crate::cluster::{Cluster, Purpose, Unfit};
use crate::error::{
    InvalidRequestSnafu, NoAliveDatanodeSnafu, NodeDrainedSnafu, NodeNotAliveSnafu, NotLeaderSnafu,
    RegionExistsSnafu, RegionMigratingSnafu, RegionNotFoundSnafu, Result, StoreSnafu,
};
use crate::procedure::migration::Migrations;
use crate::service::mailbox::Mailbox;

/// A request to create a region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRegion {
    /// The region id; chosen automatically when absent.
    pub region_id: Option<u64>,
    /// The datanode to lead it; the least loaded live one when absent.
    pub node_id: Option<u64>,
}

/// The id an automatic create takes: one above the highest in use (1 on an empty
/// cluster), so it never lands in a gap an operator left on purpose. Past `u64::MAX`
/// there is no such id: the caller must give one, rather than the count wrapping to 0.
fn next_region_id(routes: &[RegionRoute]) -> Result<u64> {
    match routes.iter().map(|r| r.region_id).max() {
        None => Ok(1),
        Some(max) => max.checked_add(1).ok_or_else(|| {
            InvalidRequestSnafu {
                reason: format!(
                    "region {max} is the highest id possible, so none follows it: give region_id"
                ),
            }
            .build()
        }),
    }
}

/// Region creation and removal: a narrow handle over the parts they use.
#[derive(Debug, Clone)]
pub struct RegionAdmin {
    leadership: LeadershipRef,
    routes: Arc<KvRegionRouteStore>,
    cluster: Cluster,
    mailbox: Arc<Mailbox>,
    migrations: Arc<Migrations>,
    mailbox_timeout: Duration,
}

impl RegionAdmin {
    /// An admin over these parts, acting while `leadership` holds; instructions wait at
    /// most `mailbox_timeout`.
    pub fn new(
        leadership: LeadershipRef,
        routes: Arc<KvRegionRouteStore>,
        cluster: Cluster,
        mailbox: Arc<Mailbox>,
        migrations: Arc<Migrations>,
        mailbox_timeout: Duration,
    ) -> Self {
        Self {
            leadership,
            routes,
            cluster,
            mailbox,
            migrations,
            mailbox_timeout,
        }
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            NotLeaderSnafu {
                leader: self.leadership.leader_addr(),
            }
            .fail()
        }
    }

    /// Creates a region and waits until its datanode has opened it.
    pub async fn create_region(&self, req: CreateRegion) -> Result<RegionRoute> {
        self.ensure_leader()?;
        let region_id = match req.region_id {
            Some(id) => id,
            None => {
                let routes = self
                    .routes
                    .list()
                    .await
                    .context(StoreSnafu { op: "list routes" })?;
                next_region_id(&routes)?
            }
        };
        let node_id = match req.node_id {
            Some(id) => match self.cluster.unfit(id, Purpose::Create).await {
                None => id,
                Some(Unfit::Drained) => return NodeDrainedSnafu { node_id: id }.fail(),
                Some(_) => return NodeNotAliveSnafu { node_id: id }.fail(),
            },
            None => self
                .cluster
                .place(
                    region_id,
                    Purpose::Create,
                    &[],
                    &self.migrations.planned_targets(),
                )
                .await
                .ok_or_else(|| NoAliveDatanodeSnafu.build())?,
        };
        let route = RegionRoute {
            region_id,
            leader: Some(node_id),
            followers: vec![],
            epoch: 0, // assigned by the store
        };
        // A migration of a dropped region with this id ends at its next step; until
        // then it could act on the new route, so the id waits.
        if let Some(m) = self.migrations.in_flight(region_id).await {
            return RegionMigratingSnafu {
                region_id,
                to: m.to,
            }
            .fail();
        }
        let Some(route) = self
            .routes
            .create(route)
            .await
            .context(StoreSnafu { op: "create route" })?
        else {
            return RegionExistsSnafu { region_id }.fail();
        };
        let ins = Instruction::OpenRegion {
            region_id,
            role: OpenRole::Leader,
            epoch: route.epoch,
        };
        match self.instruct(node_id, &ins).await {
            Ok(()) => {
                info!(region_id, node_id, "region created");
                Ok(route)
            }
            Err(err) => {
                warn!(region_id, node_id, error = %err, "open failed; removing the route");
                if let Err(e) = self.routes.delete(region_id).await {
                    warn!(region_id, error = %e, "could not remove the route of a failed create");
                }
                Err(err)
            }
        }
    }

    /// Drops a region: the route goes, then every holder is told to close it.
    pub async fn drop_region(&self, region_id: u64) -> Result<RegionRoute> {
        self.ensure_leader()?;
        let route = self
            .routes
            .delete(region_id)
            .await
            .context(StoreSnafu { op: "delete route" })?
            .ok_or_else(|| RegionNotFoundSnafu { region_id }.build())?;
        let ins = Instruction::CloseRegion(RegionIdent { region_id });
        for node_id in route.leader.iter().chain(route.followers.iter()) {
            if let Err(err) = self.instruct(*node_id, &ins).await {
                // The route is gone, so the node's next heartbeat lists the region as
                // closeable and it closes itself; no need to fail the drop.
                warn!(region_id, node_id, error = %err, "close not confirmed; the lease lapses instead");
            }
        }
        info!(region_id, "region dropped");
        Ok(route)
    }

    /// Sends an instruction to a datanode and waits for a successful reply.
    pub async fn instruct(&self, node_id: u64, ins: &Instruction) -> Result<()> {
        self.mailbox
            .instruct(node_id, ins, self.mailbox_timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(region_id: u64) -> RegionRoute {
        RegionRoute {
            region_id,
            leader: Some(1),
            followers: vec![],
            epoch: 1,
        }
    }

    #[test]
    fn an_automatic_id_is_one_above_the_highest_and_never_wraps() {
        assert_eq!(next_region_id(&[]).expect("empty"), 1);
        assert_eq!(next_region_id(&[route(9), route(3)]).expect("after 9"), 10);
        let err = next_region_id(&[route(u64::MAX), route(0)]).expect_err("no id follows");
        assert!(matches!(err, crate::error::Error::InvalidRequest { .. }));
        assert!(err.to_string().contains("give region_id"), "{err}");
    }
}
