//! Plain gRPC clients of the heartbeat service, as an outside client would build them.

use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::HeartbeatResponse;

/// An outer deadline for one awaited gRPC call.
pub const CALL: Duration = Duration::from_secs(10);

/// A plaintext gRPC channel to `grpc` (`host:port`), connected within [`CALL`].
pub async fn grpc_channel(grpc: &str) -> tonic::transport::Channel {
    tokio::time::timeout(
        CALL,
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect(),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// The first response to a one-message heartbeat stream from a made-up datanode 99
/// (cluster 1), as an outside client built from the proto would send it: what a member
/// answers a node, e.g. NOT_LEADER naming the leader on a follower.
pub async fn heartbeat_once(grpc: &str) -> HeartbeatResponse {
    heartbeat_on(grpc_channel(grpc).await, 99)
        .await
        .expect("a response")
}

/// The first response to a one-message heartbeat stream from datanode `node_id` over
/// `channel` (plaintext or TLS), or the status that refused it.
pub async fn heartbeat_on(
    channel: tonic::transport::Channel,
    node_id: u64,
) -> Result<HeartbeatResponse, tonic::Status> {
    let mut client = HeartbeatClient::new(channel);
    let request = crate::bench::heartbeat(node_id, 0, 0);
    let mut stream =
        tokio::time::timeout(CALL, client.heartbeat(tokio_stream::iter(vec![request])))
            .await
            .expect("the call returns in time")?
            .into_inner();
    match tokio::time::timeout(CALL, stream.message())
        .await
        .expect("a response in time")
    {
        Ok(Some(resp)) => Ok(resp),
        Ok(None) => Err(tonic::Status::unknown(
            "the stream ended without a response",
        )),
        Err(status) => Err(status),
    }
}
