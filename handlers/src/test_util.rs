//! The fixtures shared by the unit tests: a [`Context`] on the in-memory backends and a
//! manual clock, a request builder, a one-call group runner (which parses the request, as
//! the session does) and the `Probe` test handler.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::{HeartbeatRequest, Peer, RegionRole, RegionStat, RequestHeader, Role};
use common_proto::PROTOCOL_VERSION;

use crate::builtin::StatsCache;
use crate::{
    Context, Error, ErrorPolicy, HandleControl, HandlerGroup, HandlerGroupBuilder, Heartbeat,
    HeartbeatAccumulator, HeartbeatHandler, LeaderLease, LeaseOptions, ManualClock, Result,
};

pub(crate) const CLUSTER: u64 = 1;

pub(crate) struct Fixture {
    pub(crate) ctx: Context,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) leader: Arc<LeaderLease>,
    pub(crate) stats: Arc<StatsCache>,
}

pub(crate) fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new());
    let leader = Arc::new(LeaderLease::new(true, Some("127.0.0.1:3002".into())));
    let mut ctx = Context::in_memory(CLUSTER, LeaseOptions::default());
    ctx.clock = clock.clone();
    ctx.leadership = leader.clone();
    Fixture {
        ctx,
        clock,
        leader,
        stats: Arc::new(StatsCache::new(3, 2)),
    }
}

pub(crate) fn request(
    node_id: u64,
    role: Role,
    regions: &[u64],
    duration: u64,
) -> HeartbeatRequest {
    HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            node_id,
            role: role as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: format!("127.0.0.1:{}", 4000 + node_id),
        }),
        node_epoch: 100,
        duration_since_epoch: duration,
        region_stats: regions
            .iter()
            .map(|&id| RegionStat {
                region_id: id,
                role: RegionRole::Leader as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) async fn run(
    group: &HandlerGroup,
    ctx: &Context,
    req: &HeartbeatRequest,
) -> HeartbeatAccumulator {
    let hb = Heartbeat::parse(req.clone(), CLUSTER).expect("a valid request");
    let mut acc = HeartbeatAccumulator::new(CLUSTER);
    group.handle(&hb, ctx, &mut acc).await;
    acc
}

/// A handler with a fixed name and behaviour, for builder and policy tests.
pub(crate) struct Probe {
    pub(crate) name: &'static str,
    pub(crate) fail: bool,
    pub(crate) policy: ErrorPolicy,
    pub(crate) roles: &'static [Role],
    pub(crate) calls: Arc<AtomicUsize>,
}

impl Probe {
    pub(crate) fn named(name: &'static str) -> Self {
        Self {
            name,
            fail: false,
            policy: ErrorPolicy::Continue,
            roles: &[Role::Datanode],
            calls: Default::default(),
        }
    }
    pub(crate) fn failing(name: &'static str, policy: ErrorPolicy) -> Self {
        Self {
            fail: true,
            policy,
            ..Self::named(name)
        }
    }
}

#[async_trait]
impl HeartbeatHandler for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn is_acceptable(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
    fn error_policy(&self) -> ErrorPolicy {
        self.policy
    }
    async fn handle(
        &self,
        _: &Heartbeat,
        _: &Context,
        _: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(Error::custom(format!("{} exploded", self.name)));
        }
        Ok(HandleControl::Continue)
    }
}

pub(crate) fn defaults() -> HandlerGroupBuilder {
    HandlerGroupBuilder::with_defaults(Arc::new(StatsCache::default()))
}
