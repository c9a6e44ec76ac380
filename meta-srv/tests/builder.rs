//! `MetasrvBuilder` as an embedder uses it.

mod common;

use async_trait::async_trait;
use common::{fast_options, start_with, FakeNode};
use common_proto::instruction::OpenRole;
use common_proto::v1::Role;
use common_proto::{Instruction, JsonPayload};
use handlers::NodeKey;
use handlers::{Context, HandleControl, HeartbeatAccumulator, HeartbeatHandler};
use meta_srv::MetasrvBuilder;

/// A handler that only has a name.
struct Named(&'static str);

#[async_trait]
impl HeartbeatHandler for Named {
    fn name(&self) -> &str {
        self.0
    }

    fn is_acceptable(&self, _role: Role) -> bool {
        true
    }

    async fn handle(
        &self,
        _hb: &handlers::Heartbeat,
        _ctx: &Context,
        _acc: &mut HeartbeatAccumulator,
    ) -> handlers::Result<HandleControl> {
        Ok(HandleControl::Continue)
    }
}

#[tokio::test]
async fn handler_customizers_compose_in_order() {
    let srv = MetasrvBuilder::new(fast_options())
        .handlers(|b| b.push(Named("from_a_library")))
        .handlers(|b| b.insert_before("from_a_library", Named("from_its_user")))
        .build()
        .await
        .expect("build");
    let names = srv.handler_group().names();
    let at = |n: &str| names.iter().position(|x| *x == n);
    assert!(
        at("from_a_library").is_some(),
        "the first call kept: {names:?}"
    );
    assert!(
        at("from_its_user") < at("from_a_library"),
        "the second call saw the first: {names:?}"
    );
}

#[tokio::test]
async fn serving_on_ones_own_listeners_advertises_their_addresses() {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (g, h) = (
        grpc.local_addr().expect("addr").to_string(),
        http.local_addr().expect("addr").to_string(),
    );
    let srv = MetasrvBuilder::new(fast_options())
        .bound_to(&grpc, Some(&http))
        .expect("bound")
        .build()
        .await
        .expect("build");
    assert_eq!(
        srv.options().advertised_addr(),
        g,
        "not the default 127.0.0.1:3002"
    );
    assert_eq!(srv.options().http_addr, h);
}

/// On each heartbeat from node 2, tells node 1 to open region 42 (one way), through the
/// mailbox the context gives handlers.
#[derive(Debug)]
struct Relay;

#[async_trait]
impl HeartbeatHandler for Relay {
    fn name(&self) -> &str {
        "relay"
    }

    fn is_acceptable(&self, role: Role) -> bool {
        role == Role::Datanode
    }

    async fn handle(
        &self,
        hb: &handlers::Heartbeat,
        ctx: &Context,
        _acc: &mut HeartbeatAccumulator,
    ) -> handlers::Result<HandleControl> {
        if hb.key().node_id == 2 {
            let mailbox = ctx
                .mailbox
                .as_ref()
                .expect("the metasrv gives handlers its mailbox");
            let open = Instruction::OpenRegion {
                region_id: 42,
                role: OpenRole::Leader,
                epoch: 1,
            };
            mailbox.send_oneway(NodeKey::datanode(1), &open)?;
        }
        Ok(HandleControl::Continue)
    }
}

#[tokio::test]
async fn a_handler_can_instruct_another_node_through_the_context() {
    let server = start_with(MetasrvBuilder::new(fast_options()).handlers(|b| b.push(Relay))).await;
    let mut one = FakeNode::connect(server.addr, 1, 100).await;
    one.heartbeat(&[]).await.expect("node 1 registered");
    let mut two = FakeNode::connect(server.addr, 2, 100).await;
    two.heartbeat(&[]).await.expect("node 2 registered");
    let msg = one.next_mailbox().await;
    assert_eq!(
        Instruction::from_mailbox_message(&msg).expect("decode"),
        Instruction::OpenRegion {
            region_id: 42,
            role: OpenRole::Leader,
            epoch: 1,
        }
    );
    server.stop().await;
}
