//! CollectStats: put the heartbeat's stat into the accumulator.

use async_trait::async_trait;
use common_proto::v1::Role;

use super::names;
use crate::{Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Result};

/// Puts the heartbeat's [`Stat`](crate::Stat) into the accumulator, where PersistStats
/// reads it. The heartbeat was validated when it was parsed, so this shares the parsed
/// stat (no copy) and cannot fail. A handler placed between the two may replace or drop
/// the stat (to redact or filter what is kept); removing this handler keeps no stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectStatsHandler;

#[async_trait]
impl HeartbeatHandler for CollectStatsHandler {
    fn name(&self) -> &str {
        names::COLLECT_STATS
    }

    fn is_acceptable(&self, _role: Role) -> bool {
        true
    }

    async fn handle(
        &self,
        hb: &Heartbeat,
        _ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        acc.stat = Some(hb.stat().clone());
        Ok(HandleControl::Continue)
    }
}

#[cfg(test)]
mod tests {
    use common_proto::v1::Role;

    use crate::builtin::names;
    use crate::test_util::{fixture, request, run};
    use crate::HandlerGroupBuilder;

    #[tokio::test]
    async fn collect_stats_shares_the_parsed_stat() {
        let f = fixture();
        let group = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .build()
            .expect("build");
        let acc = run(&group, &f.ctx, &request(5, Role::Datanode, &[1, 2], 9)).await;
        let stat = acc.stat.expect("collected");
        assert_eq!(
            (stat.node_id, stat.node_epoch, stat.region_stats.len()),
            (5, 100, 2)
        );
        let kept = f.stats.latest(stat.key()).expect("persist_stats kept it");
        assert!(
            std::sync::Arc::ptr_eq(&kept, &stat),
            "the parsed stat itself, not a copy"
        );

        let without = HandlerGroupBuilder::with_defaults(f.stats.clone())
            .remove(names::COLLECT_STATS)
            .build()
            .expect("build");
        let acc = run(&without, &f.ctx, &request(6, Role::Datanode, &[1], 9)).await;
        assert!(acc.stat.is_none());
        assert!(
            f.stats.latest(crate::NodeKey::datanode(6)).is_none(),
            "without collect_stats nothing is kept"
        );
    }
}
