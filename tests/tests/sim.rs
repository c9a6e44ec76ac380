//! The real heartbeat service on simulated hosts, network and time (`tests::sim`): a
//! standalone metasrv and three nodes heartbeating for 90 simulated seconds, each run a
//! function of its seed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::{HeartbeatRequest, Peer, RequestHeader, Role};
use futures::StreamExt;
use tests::sim::{channel, serve_heartbeats, GRPC_PORT};
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
        serve_heartbeats(&metasrv).await
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

/// When the partition between the datanode and its metasrv begins and ends.
const CUT: Duration = Duration::from_secs(30);
const HEAL: Duration = Duration::from_secs(60);
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// One run of a real datanode (heartbeat task, keeper, lease check, memory engine) that
/// leads region 1, cut off from its metasrv from `CUT` to `HEAL`: the simulated time of
/// every write it tried, and whether it was accepted.
fn cut_off(seed: u64) -> Vec<(Duration, bool)> {
    let writes = Arc::new(Mutex::new(Vec::new()));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(seed)
        .build();
    sim.host("ms", || async {
        let options = meta_srv::MetasrvOptions {
            server_addr: format!("ms:{GRPC_PORT}"),
            ..Default::default()
        };
        let metasrv = meta_srv::MetasrvBuilder::new(options).build().await?;
        let route = handlers::RegionRoute {
            region_id: 1,
            leader: Some(1),
            followers: vec![],
            epoch: 1,
        };
        metasrv.context().routes.put(route).await?;
        serve_heartbeats(&metasrv).await
    });
    let log = writes.clone();
    sim.client("dn1", async move {
        use datanode::RegionEngine;
        let leases = datanode::RegionLeases::new(datanode::DEFAULT_LEASE_MARGIN);
        let engine = Arc::new(datanode::MemoryRegionEngine::new(leases.clone()));
        engine
            .open_region(1, common_proto::v1::RegionRole::Leader, 1)
            .await?;
        let shutdown = tests::sim::start_heartbeat(1, 1, seed, engine.clone(), leases);
        let mut n = 0u64;
        while turmoil::sim_elapsed().unwrap_or_default() < Duration::from_secs(90) {
            n += 1;
            let accepted = engine.write(1, "k", &n.to_string()).is_ok();
            let at = turmoil::sim_elapsed().unwrap_or_default();
            log.lock().expect("log").push((at, accepted));
            tokio::time::sleep(WRITE_EVERY).await;
        }
        shutdown.cancel();
        Ok(())
    });
    let (mut cut, mut healed) = (false, false);
    while !sim.step().expect("the simulation runs") {
        let now = sim.elapsed();
        if !cut && now >= CUT {
            sim.partition("dn1", "ms");
            cut = true;
        }
        if !healed && now >= HEAL {
            sim.repair("dn1", "ms");
            healed = true;
        }
    }
    let writes = writes.lock().expect("log").clone();
    writes
}

#[test]
fn a_datanode_cut_off_from_its_metasrv_stops_writing_within_its_lease_and_resumes_after() {
    let lease = meta_srv::MetasrvOptions::default().region_lease;
    let writes = cut_off(3);
    let accepted = |from: Duration, to: Duration| {
        writes
            .iter()
            .filter(|(at, ok)| *ok && *at >= from && *at < to)
            .count()
    };
    assert!(
        accepted(Duration::ZERO, CUT) > 0,
        "writable once granted: {writes:?}"
    );
    // No grant can reach the node after the cut, and each counts from a heartbeat sent
    // before it: nothing is accepted past the cut plus one lease.
    let last = writes
        .iter()
        .filter(|(at, ok)| *ok && *at >= CUT && *at < HEAL)
        .map(|(at, _)| *at)
        .max();
    assert!(
        last.is_none_or(|at| at <= CUT + lease),
        "a write accepted at {last:?}, past the cut at {CUT:?} plus the lease {lease:?}"
    );
    assert_eq!(accepted(CUT + lease, HEAL), 0, "readonly while cut off");
    assert!(
        accepted(HEAL, Duration::from_secs(90)) > 0,
        "writable again after the partition heals: {:?}",
        writes
            .iter()
            .filter(|(at, _)| *at >= HEAL)
            .take(5)
            .collect::<Vec<_>>()
    );
}
