//! A metasrv with an operator's own heartbeat handler, served on listeners of one's own:
//! datanodes without a `label.zone` extension (`datanode start --labels zone=a`) are
//! refused before they get a node lease.
//!
//! Run: `cargo run -p meta-srv --example metasrv_with_handler`, then start datanodes.

use common_proto::v1::{ErrorCode, Role};
use handlers::builtin::names;
use handlers::{Context, HandleControl, Heartbeat, HeartbeatAccumulator, HeartbeatHandler, Result};
use meta_srv::{MetasrvBuilder, MetasrvOptions};

/// Refuses datanodes that do not say which zone they run in.
struct RequireZone;

#[async_trait::async_trait]
impl HeartbeatHandler for RequireZone {
    fn name(&self) -> &str {
        "require_zone"
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
        if hb.extension("label.zone").is_some() {
            return Ok(HandleControl::Continue);
        }
        acc.set_error(ErrorCode::InvalidArgument, "datanode has no zone label");
        Ok(HandleControl::Done)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let metasrv = MetasrvBuilder::new(MetasrvOptions::default())
        .bound_to(&grpc, Some(&http))?
        .handlers(|group| group.insert_before(names::KEEP_LEASE, RequireZone))
        .build()
        .await?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    metasrv.serve(grpc, Some(http), stop).await?;
    Ok(())
}
