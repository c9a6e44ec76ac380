//! An operator's own heartbeat handler, placed in the default pipeline by name.
//!
//! `MinVersionHandler` refuses datanodes that report a version older than a minimum in
//! the `version` extension: they get an INVALID_ARGUMENT error and no lease, because it
//! runs before `keep_lease` and returns `Done`. Accepted nodes get their response tagged
//! with the minimum, so they can warn before the next bump.
//!
//! Run: `cargo run -p handlers --example custom_handler`

use std::sync::Arc;

use async_trait::async_trait;
use common_proto::v1::{
    ErrorCode, HeartbeatRequest, Peer, RegionRole, RegionStat, RequestHeader, Role,
};
use handlers::builtin::{names, StatsCache};
use handlers::{
    Context, HandleControl, HandlerGroupBuilder, Heartbeat, HeartbeatAccumulator, HeartbeatHandler,
    LeaseOptions, RegionRoute, Result,
};

/// Refuses datanodes older than `min`, a `(major, minor, patch)` triple.
struct MinVersionHandler {
    min: (u32, u32, u32),
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.trim_start_matches('v').split('.').map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

#[async_trait]
impl HeartbeatHandler for MinVersionHandler {
    fn name(&self) -> &str {
        "min_version"
    }

    fn is_acceptable(&self, role: Role) -> bool {
        role == Role::Datanode
    }

    async fn handle(
        &self,
        hb: &Heartbeat,
        _ctx: &Context,
        acc: &mut HeartbeatAccumulator,
    ) -> Result<HandleControl> {
        let (a, b, c) = self.min;
        let reported = hb.extension("version").unwrap_or("");
        match parse_version(reported) {
            Some(v) if v >= self.min => {
                acc.extensions
                    .insert("min_version".into(), format!("{a}.{b}.{c}"));
                Ok(HandleControl::Continue)
            }
            _ => {
                acc.set_error(
                    ErrorCode::InvalidArgument,
                    format!("datanode version {reported:?} is older than the minimum {a}.{b}.{c}"),
                );
                Ok(HandleControl::Done)
            }
        }
    }
}

fn heartbeat(node_id: u64, version: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: common_proto::PROTOCOL_VERSION,
            cluster_id: 1,
            node_id,
            role: Role::Datanode as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: format!("127.0.0.1:{}", 4000 + node_id),
        }),
        node_epoch: common_proto::unix_millis(),
        duration_since_epoch: 1_000,
        region_stats: vec![RegionStat {
            region_id: 1,
            role: RegionRole::Leader as i32,
            ..Default::default()
        }],
        extensions: [("version".to_string(), version.to_string())].into(),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::in_memory(1, LeaseOptions::default());
    // Node 1 leads region 1 and node 2 follows it.
    ctx.routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![2],
            epoch: 1,
        })
        .await?;

    let group = HandlerGroupBuilder::with_defaults(Arc::new(StatsCache::default()))
        .insert_before(names::KEEP_LEASE, MinVersionHandler { min: (1, 4, 0) })
        .build()?;
    println!("pipeline: {}", group.names().join(" -> "));

    for (node_id, version) in [(1, "1.4.2"), (2, "1.3.9")] {
        // The metasrv's session validates every request into a `Heartbeat` at the edge.
        let hb = Heartbeat::parse(heartbeat(node_id, version), ctx.cluster_id)?;
        let mut acc = HeartbeatAccumulator::new(ctx.cluster_id);
        group.handle(&hb, &ctx, &mut acc).await;
        let resp = acc.into_response();
        let error = resp.header.as_ref().and_then(|h| h.error.as_ref());
        let granted = resp.region_lease.as_ref().map_or(0, |l| l.regions.len());
        println!(
            "node {node_id} (version {version}): error={:?} leases granted={granted} extensions={:?}",
            error.map(|e| e.message.as_str()),
            resp.extensions,
        );
    }
    println!(
        "nodes with a lease: {:?}",
        ctx.node_leases
            .list()
            .iter()
            .map(|l| l.key.node_id)
            .collect::<Vec<_>>()
    );
    Ok(())
}
