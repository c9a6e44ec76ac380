//! The real heartbeat service on simulated hosts, network and time (`tests::sim`): a
//! standalone metasrv and three nodes heartbeating for 90 simulated seconds, each run a
//! function of its seed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::heartbeat_server::HeartbeatServer;
use common_proto::v1::{HeartbeatRequest, Peer, RequestHeader, Role};
use futures::StreamExt;
use tests::sim::{channel, incoming, GRPC_PORT};
use tokio_stream::wrappers::ReceiverStream;

const NODES: u64 = 3;
const BEATS: u64 = 30;
const INTERVAL: Duration = Duration::from_secs(3);

fn request(node_id: u64, seq: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: common_proto::PROTOCOL_VERSION,
            cluster_id: meta_srv::MetasrvOptions::default().cluster_id,
            node_id,
            role: Role::Datanode as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: format!("dn{node_id}:4001"),
        }),
        node_epoch: 1,
        duration_since_epoch: seq,
        ..Default::default()
    }
}

/// One run: every answer each node got, with the simulated time it arrived.
fn run(seed: u64) -> Vec<String> {
    let trace = Arc::new(Mutex::new(Vec::new()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(BEATS * INTERVAL.as_secs() + 30))
        .rng_seed(seed)
        .build();
    sim.host("ms", || async {
        let metasrv = meta_srv::MetasrvBuilder::new(meta_srv::MetasrvOptions::default())
            .build()
            .await?;
        tonic::transport::Server::builder()
            .add_service(HeartbeatServer::new(metasrv.heartbeat_service()))
            .serve_with_incoming(incoming(GRPC_PORT).await?)
            .await?;
        Ok(())
    });
    for node_id in 1..=NODES {
        let trace = trace.clone();
        sim.client(format!("dn{node_id}"), async move {
            let mut client = HeartbeatClient::new(channel("ms", GRPC_PORT).await?);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut answers = client
                .heartbeat(ReceiverStream::new(rx))
                .await?
                .into_inner();
            for seq in 0..BEATS {
                tx.send(request(node_id, seq)).await?;
                let answer = answers.next().await.ok_or("the stream ended")??;
                let lease = answer.region_lease.ok_or("an answer without a lease")?;
                trace.lock().expect("trace").push(format!(
                    "{:?} node {node_id} beat {seq}: lease {} s for {:?}, handshake {}",
                    turmoil::sim_elapsed().unwrap_or_default(),
                    lease.lease_seconds,
                    lease.duration_since_epoch,
                    answer.heartbeat_config.is_some(),
                ));
                tokio::time::sleep(INTERVAL).await;
            }
            Ok(())
        });
    }
    sim.run()
        .expect("the simulation ends with every node served");
    let trace = trace.lock().expect("trace").clone();
    trace
}

#[test]
fn every_node_is_answered_on_every_beat_over_the_simulated_network() {
    let trace = run(7);
    assert_eq!(trace.len() as u64, NODES * BEATS, "{trace:#?}");
    for node_id in 1..=NODES {
        let first = format!("node {node_id} beat 0:");
        let handshakes: Vec<_> = trace
            .iter()
            .filter(|l| l.contains("handshake true"))
            .collect();
        assert!(
            handshakes.iter().any(|l| l.contains(&first)),
            "node {node_id}'s first answer carries the handshake: {handshakes:#?}"
        );
    }
    assert_eq!(
        trace
            .iter()
            .filter(|l| l.contains("handshake true"))
            .count() as u64,
        NODES,
        "only the first answer of each stream carries it"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let a = run(11);
    assert_eq!(a, run(11), "a run is a function of its seed");
    assert_ne!(a, run(12), "the seed decides the network's delays");
}
