//! Building blocks of `heartbeat-bench`: the load generator (simulated datanodes), the
//! baseline echo server, and process statistics from `/proc`.
//!
//! **Load.** N simulated datanodes, each one heartbeat stream, multiplexed over C HTTP/2
//! connections (the open-file limit here is 20,000, so 10,000 nodes cannot each have a
//! socket). Closed loop: a node sends its next heartbeat as soon as the last response
//! arrives. Open loop: every `interval`, staggered, as real datanodes do; a heartbeat
//! whose response arrives after the next one was due is a missed interval.
//!
//! **Baseline.** A bare tonic server that answers every request with a response of the
//! same shape the metasrv sends (header, plus a lease naming every reported region), with
//! no handler work: what the transport alone costs on this machine.

use std::pin::Pin;
use std::time::{Duration, Instant};

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::heartbeat_server::{Heartbeat, HeartbeatServer};
use common_proto::v1::{
    AskLeaderRequest, AskLeaderResponse, GrantedRegion, HeartbeatRequest, HeartbeatResponse, Peer,
    RegionLease, RegionRole, RegionStat, RequestHeader, ResponseHeader, Role,
};
use common_proto::PROTOCOL_VERSION;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Simulated datanodes.
    pub nodes: usize,
    /// Regions per datanode.
    pub regions: usize,
    /// HTTP/2 connections to spread them over.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// `None`: closed loop; `Some(i)`: one heartbeat per node every `i`.
    pub interval: Option<Duration>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Heartbeats answered in the measured window.
    pub heartbeats: u64,
    /// Region leases granted in the measured window.
    pub granted: u64,
    /// Streams that failed.
    pub errors: u64,
    /// Open loop: heartbeats answered after the next one was due.
    pub missed: u64,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The measured window.
    pub elapsed: Duration,
}

impl LoadResult {
    /// The `q` quantile of latency, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    /// Heartbeats per second.
    pub fn rate(&self) -> f64 {
        self.heartbeats as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A heartbeat of datanode `node_id` reporting regions `first..first + regions`.
pub fn heartbeat(node_id: u64, first_region: u64, regions: usize) -> HeartbeatRequest {
    HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: 1,
            node_id,
            role: Role::Datanode as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: format!("10.0.{}.{}:4001", node_id / 256, node_id % 256),
        }),
        node_epoch: 1,
        duration_since_epoch: 0,
        region_stats: (0..regions as u64)
            .map(|i| RegionStat {
                region_id: first_region + i,
                role: RegionRole::Leader as i32,
                rcus: 120,
                wcus: 80,
                approximate_bytes: 64 << 20,
                row_count: 1_000_000,
                shared_storage: false,
                epoch: 1,
                unavailable: String::new(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The first region id of node `node_id` (1-based) when each node has `regions`.
pub fn first_region(node_id: u64, regions: usize) -> u64 {
    (node_id - 1) * regions as u64 + 1
}

async fn connect(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid address")
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await
        .expect("connect to the server under test")
}

struct NodeResult {
    heartbeats: u64,
    granted: u64,
    missed: u64,
    error: bool,
    latencies: Vec<u32>,
}

async fn run_node(
    channel: Channel,
    node_id: u64,
    spec: LoadSpec,
    start: Instant,
    measure_from: Instant,
    measure_to: Instant,
) -> NodeResult {
    let mut r = NodeResult {
        heartbeats: 0,
        granted: 0,
        missed: 0,
        error: false,
        latencies: Vec::new(),
    };
    let mut client = HeartbeatClient::new(channel).max_decoding_message_size(64 << 20);
    let mut req = heartbeat(node_id, first_region(node_id, spec.regions), spec.regions);
    let (tx, rx) = mpsc::channel(4);
    // Open loop: spread the nodes over one interval.
    let mut next_send = match spec.interval {
        Some(i) => start + i.mul_f64((node_id % 997) as f64 / 997.0),
        None => start,
    };
    tokio::time::sleep_until(next_send.into()).await;
    let sent = Instant::now();
    if tx.send(req.clone()).await.is_err() {
        r.error = true;
        return r;
    }
    let mut inbound = match client.heartbeat(ReceiverStream::new(rx)).await {
        Ok(resp) => resp.into_inner(),
        Err(_) => {
            r.error = true;
            return r;
        }
    };
    let mut sent_at = sent;
    loop {
        match inbound.message().await {
            Ok(Some(resp)) => {
                let now = Instant::now();
                if now >= measure_from && sent_at < measure_to {
                    r.heartbeats += 1;
                    r.latencies.push(
                        now.duration_since(sent_at)
                            .as_micros()
                            .min(u32::MAX as u128) as u32,
                    );
                    r.granted += resp
                        .region_lease
                        .as_ref()
                        .map_or(0, |l| l.regions.len() as u64);
                    if let Some(i) = spec.interval {
                        if now > next_send + i {
                            r.missed += 1;
                        }
                    }
                }
            }
            _ => {
                r.error = true;
                return r;
            }
        }
        if let Some(i) = spec.interval {
            next_send += i;
            tokio::time::sleep_until(next_send.into()).await;
        }
        if Instant::now() >= measure_to {
            return r;
        }
        req.duration_since_epoch += 1;
        sent_at = Instant::now();
        if tx.send(req.clone()).await.is_err() {
            r.error = true;
            return r;
        }
    }
}

/// Runs the load against `addr` and gathers the results.
pub async fn run_load(addr: &str, spec: &LoadSpec) -> LoadResult {
    let mut channels = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        channels.push(connect(addr).await);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + spec.warmup;
    let measure_to = measure_from + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.nodes {
        let channel = channels[i % channels.len()].clone();
        tasks.spawn(run_node(
            channel,
            i as u64 + 1,
            spec.clone(),
            start,
            measure_from,
            measure_to,
        ));
    }
    let mut out = LoadResult {
        elapsed: spec.duration,
        ..Default::default()
    };
    while let Some(res) = tasks.join_next().await {
        let Ok(n) = res else {
            out.errors += 1;
            continue;
        };
        out.heartbeats += n.heartbeats;
        out.granted += n.granted;
        out.missed += n.missed;
        out.errors += n.error as u64;
        out.latencies_us.extend(n.latencies);
    }
    out.latencies_us.sort_unstable();
    out
}

/// The baseline server: echoes each heartbeat with a same-shaped response.
#[derive(Debug, Default, Clone)]
pub struct EchoServer;

type EchoStream = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Heartbeat for EchoServer {
    type HeartbeatStream = EchoStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let out = request.into_inner().map(|req| {
            let req = req?;
            Ok(HeartbeatResponse {
                header: Some(ResponseHeader {
                    protocol_version: PROTOCOL_VERSION,
                    cluster_id: 1,
                    ..Default::default()
                }),
                region_lease: Some(RegionLease {
                    regions: req
                        .region_stats
                        .iter()
                        .map(|s| GrantedRegion {
                            region_id: s.region_id,
                            role: s.role,
                            epoch: s.epoch,
                        })
                        .collect(),
                    duration_since_epoch: req.duration_since_epoch,
                    lease_seconds: 10,
                    closeable_region_ids: vec![],
                    owners: vec![],
                }),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn ask_leader(
        &self,
        _: Request<AskLeaderRequest>,
    ) -> Result<Response<AskLeaderResponse>, Status> {
        Ok(Response::new(AskLeaderResponse::default()))
    }
}

/// Serves the echo server on `listener` forever.
pub async fn serve_echo(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(HeartbeatServer::new(EchoServer).max_decoding_message_size(64 << 20))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM` is peak RSS, `VmRSS` current).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One datanode on its own fresh stream, for latency probes: opens the stream with a
/// first heartbeat (waiting for its response), and answers instructions.
#[derive(Debug)]
pub struct StreamNode {
    node_id: u64,
    tx: tokio::sync::mpsc::Sender<HeartbeatRequest>,
    rx: tonic::Streaming<common_proto::v1::HeartbeatResponse>,
}

impl StreamNode {
    /// Connects a new channel and stream, sends the first heartbeat and waits for its
    /// response.
    pub async fn open(addr: &str, node_id: u64) -> StreamNode {
        let mut client =
            common_proto::v1::heartbeat_client::HeartbeatClient::new(connect(addr).await);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(heartbeat(node_id, 0, 0)).await.expect("queue");
        let mut rx = client
            .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open stream")
            .into_inner();
        rx.message()
            .await
            .expect("first response")
            .expect("stream open");
        StreamNode { node_id, tx, rx }
    }

    /// Waits for the next mailbox message and answers it with success.
    pub async fn answer_one(&mut self) {
        use common_proto::JsonPayload;
        loop {
            let Ok(Some(resp)) = self.rx.message().await else {
                return;
            };
            let Some(msg) = resp.mailbox_message else {
                continue;
            };
            let Ok(ins) = common_proto::Instruction::from_mailbox_message(&msg) else {
                return;
            };
            let reply = common_proto::InstructionReply::CloseRegion(common_proto::RegionReply {
                region_id: ins.region_id(),
                ok: true,
                error: None,
            });
            let mut req = heartbeat(self.node_id, 0, 0);
            req.mailbox_message = reply.to_mailbox_message(msg.id, "bench", &msg.from).ok();
            let _ = self.tx.send(req).await;
            return;
        }
    }
}
