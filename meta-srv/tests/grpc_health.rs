//! gRPC health and reflection on the metasrv's gRPC port, as Kubernetes probes and
//! `grpcurl` would use them.

mod common;

use std::time::Duration;

use common::{fast_options, start};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

async fn status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

#[tokio::test]
async fn the_server_is_serving_and_the_heartbeat_service_only_while_leading() {
    let server = start(fast_options()).await;
    let mut client = HealthClient::new(channel(server.addr).await);
    assert_eq!(status(&mut client, "").await, ServingStatus::Serving as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&mut client, "meta.v1.Heartbeat").await != ServingStatus::Serving as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader's service not SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Step down: the server still serves, the heartbeat service does not.
    server.srv.election().resign().await.expect("resign");
    while status(&mut client, "meta.v1.Heartbeat").await != ServingStatus::NotServing as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "follower's service still SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&mut client, "").await, ServingStatus::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_heartbeat_service() {
    let server = start(fast_options()).await;
    let mut client = ServerReflectionClient::new(channel(server.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = responses
        .message()
        .await
        .expect("answer")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("not a service list: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "meta.v1.Heartbeat"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    server.stop().await;
}
