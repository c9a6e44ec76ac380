//! CollectStats: validate the request and parse it into a [`Stat`].

use async_trait::async_trait;
use common_proto::v1::{HeartbeatRequest, Role};

use super::{any_known_role, names};
use crate::stat::RegionStatSummary;
use crate::validate::validate_request;
use crate::{
    Context, ErrorPolicy, HandleControl, HeartbeatAccumulator, HeartbeatHandler, Result, Stat,
};

/// Puts a validated [`Stat`] into the accumulator. Its errors stop the chain: a request
/// it cannot parse must not be granted anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectStatsHandler;

#[async_trait]
impl HeartbeatHandler for CollectStatsHandler {
    fn name(&self) -> &str {
        names::COLLECT_STATS
    }

    fn is_acceptable(&self, role: Role) -> bool {
        any_known_role(role)
    }

    fn error_policy(&self) -> ErrorPolicy {
        ErrorPolicy::Stop
    }

    async fn handle(
        &self,
        req: &HeartbeatRequest,
        ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let header = validate_request(req, ctx.cluster_id)?;
        acc.stat = Some(Stat {
            cluster_id: header.cluster_id,
            node_id: header.node_id,
            role: header.role as i32,
            addr: req
                .peer
                .as_ref()
                .map(|p| p.addr.clone())
                .unwrap_or_default(),
            node_epoch: req.node_epoch,
            duration_since_epoch: req.duration_since_epoch,
            received_at_millis: common_proto::unix_millis(),
            shared_storage: req.shared_storage,
            region_stats: req
                .region_stats
                .iter()
                .map(|s| RegionStatSummary {
                    region_id: s.region_id,
                    role: s.role,
                    rcus: s.rcus,
                    wcus: s.wcus,
                    approximate_bytes: s.approximate_bytes,
                    row_count: s.row_count,
                    shared_storage: s.shared_storage,
                    unavailable: (!s.unavailable.is_empty()).then(|| s.unavailable.as_str().into()),
                })
                .collect(),
        });
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use common_proto::v1::{ErrorCode, Role};

    use crate::test_util::{fixture, request, run};
    use crate::HandlerGroupBuilder;

    #[tokio::test]
    async fn collect_stats_rejects_invalid_requests_and_stops() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        let mut req = request(5, Role::Datanode, &[1, 1], 9);
        let acc = run(&group, &f.ctx, &req).await;
        assert_eq!(acc.error_code(), Some(ErrorCode::HandlerFailed));
        assert!(acc.failures[0]
            .message
            .contains("region 1 is reported twice"));
        assert!(
            f.ctx.node_leases.list().is_empty(),
            "nothing granted to a bad request"
        );

        req.region_stats.pop();
        let acc = run(&group, &f.ctx, &req).await;
        let stat = acc.stat.expect("parsed");
        assert_eq!(
            (stat.node_id, stat.node_epoch, stat.region_stats.len()),
            (5, 100, 1)
        );
    }
}
