//! `MetasrvBuilder` as an embedder uses it.

mod common;

use async_trait::async_trait;
use common::fast_options;
use common_proto::v1::{HeartbeatRequest, Role};
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
        _req: &HeartbeatRequest,
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
