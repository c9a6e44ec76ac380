//! The datanode's heartbeat loop against scripted fake metasrvs (in-process tonic
//! servers on real loopback sockets): NOT_LEADER and rediscovery, a stream error, and no
//! response within the timeout. Each fake answers `AskLeader` with the leader it names
//! (honouring `lost_leader` as a real member does) and plays one heartbeat script.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::heartbeat_server::{Heartbeat, HeartbeatServer};
use common_proto::v1::{
    AskLeaderRequest, AskLeaderResponse, ErrorCode, HeartbeatConfig, HeartbeatRequest,
    HeartbeatResponse, Peer, ResponseHeader,
};
use datanode::status::StatusCell;
use datanode::{
    HeartbeatOptions, HeartbeatTask, MemoryRegionEngine, MetaClient, RegionAliveKeeper,
    RegionLeases, DEFAULT_LEASE_MARGIN,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How a fake answers heartbeats.
#[derive(Debug, Clone)]
enum Script {
    /// Answer every heartbeat (the first with a 100 ms interval).
    Grant,
    /// Answer NOT_LEADER naming `leader`, and from then on name it in AskLeader too.
    NotLeader { leader: String },
    /// Answer the first heartbeat, then end the stream with an error.
    FailAfterFirst,
    /// Answer the first heartbeat, then nothing (the stream stays open).
    SilentAfterFirst,
}

struct Fake {
    addr: String,
    names: Mutex<String>,
    ask_delay: Duration,
    script: Script,
    streams: AtomicU64,
    heartbeats: AtomicU64,
    /// The extensions of the last heartbeat received.
    extensions: Mutex<std::collections::HashMap<String, String>>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

fn header(error: Option<(ErrorCode, String)>) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        error: error.map(|(code, message)| common_proto::v1::Error {
            code: code as i32,
            message,
        }),
        ..Default::default()
    })
}

/// The service face of a fake (the trait is foreign, so not on `Arc<Fake>` itself).
struct FakeSvc(Arc<Fake>);

impl std::ops::Deref for FakeSvc {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.0
    }
}

#[tonic::async_trait]
impl Heartbeat for FakeSvc {
    type HeartbeatStream = Outbound;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let me = self.0.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Some(req)) = inbound.message().await {
                n += 1;
                *me.extensions.lock() = req.extensions;
                me.heartbeats.fetch_add(1, Ordering::SeqCst);
                let mut resp = HeartbeatResponse {
                    header: header(None),
                    ..Default::default()
                };
                if n == 1 {
                    resp.heartbeat_config = Some(HeartbeatConfig {
                        heartbeat_interval_ms: 100,
                        retry_interval_ms: 100,
                    });
                }
                let out = match &me.script {
                    Script::Grant => Ok(resp),
                    Script::NotLeader { leader } => {
                        *me.names.lock() = leader.clone();
                        resp.header = header(Some((
                            ErrorCode::NotLeader,
                            format!("not leader; the leader is {leader}"),
                        )));
                        Ok(resp)
                    }
                    Script::FailAfterFirst if n > 1 => {
                        Err(Status::unavailable("scripted stream failure"))
                    }
                    Script::SilentAfterFirst if n > 1 => continue,
                    Script::FailAfterFirst | Script::SilentAfterFirst => Ok(resp),
                };
                let failed = out.is_err();
                if tx.send(out).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ask_leader(
        &self,
        request: Request<AskLeaderRequest>,
    ) -> Result<Response<AskLeaderResponse>, Status> {
        tokio::time::sleep(self.ask_delay).await;
        let req = request.into_inner();
        let names = self.names.lock().clone();
        // As a real member: the lost leader is no answer, unless it is this member.
        let leader =
            (names != req.lost_leader || names == self.addr).then_some(Peer { id: 0, addr: names });
        Ok(Response::new(AskLeaderResponse {
            header: header(None),
            leader,
            term: 1,
        }))
    }
}

/// Starts a fake on a fresh loopback port; `names: None` names itself.
async fn fake(script: Script, names: Option<&str>, ask_delay: Duration) -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let f = Arc::new(Fake {
        names: Mutex::new(names.map_or_else(|| addr.clone(), String::from)),
        addr,
        ask_delay,
        script,
        streams: AtomicU64::new(0),
        heartbeats: AtomicU64::new(0),
        extensions: Mutex::default(),
    });
    let svc = HeartbeatServer::new(FakeSvc(f.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    f
}

/// Starts node 7's heartbeat task against `metasrvs`.
fn start_node(metasrvs: &[&Arc<Fake>]) -> (Arc<StatusCell>, CancellationToken) {
    let leases = RegionLeases::new(DEFAULT_LEASE_MARGIN);
    let engine = Arc::new(MemoryRegionEngine::new(leases.clone()));
    let keeper = RegionAliveKeeper::new(engine.clone(), leases);
    let client = MetaClient::new(
        metasrvs.iter().map(|f| f.addr.clone()).collect(),
        1,
        7,
        Duration::from_millis(500),
    );
    let task = HeartbeatTask::new(
        client,
        HeartbeatOptions {
            node_id: 7,
            advertise_addr: "127.0.0.1:7007".into(),
            node_epoch: 1,
            initial_interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_millis(500),
            extensions: datanode::DatanodeOptions {
                labels: [("zone".to_string(), "a".to_string())].into(),
                ..Default::default()
            }
            .extensions(),
            jitter_seed: None,
        },
        engine,
        keeper,
    );
    let status = task.status();
    let shutdown = CancellationToken::new();
    tokio::spawn(task.run(shutdown.clone()));
    (status, shutdown)
}

/// Polls `check` every 20 ms until it holds, failing after 10 s with `what`.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn not_leader_sends_the_node_to_find_the_leader_again() {
    // B is the leader, but slow to answer AskLeader, so the node first follows A, which
    // claims to lead and then refuses with NOT_LEADER.
    let b = fake(Script::Grant, None, Duration::from_millis(300)).await;
    let a = fake(
        Script::NotLeader {
            leader: b.addr.clone(),
        },
        None,
        Duration::ZERO,
    )
    .await;
    let (status, stop) = start_node(&[&a, &b]);
    until("the node streams to B", || {
        let s = status.get();
        s.connected && s.leader.as_deref() == Some(b.addr.as_str())
    })
    .await;
    assert!(a.heartbeats.load(Ordering::SeqCst) >= 1, "it tried A first");
    let heartbeats_at_b = b.heartbeats.load(Ordering::SeqCst);
    until("it keeps heartbeating B", || {
        b.heartbeats.load(Ordering::SeqCst) > heartbeats_at_b + 2
    })
    .await;
    assert_eq!(
        a.streams.load(Ordering::SeqCst),
        1,
        "it never went back to A"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_stream_error_ends_the_session_and_the_node_reconnects() {
    let a = fake(Script::FailAfterFirst, None, Duration::ZERO).await;
    let (status, stop) = start_node(&[&a]);
    until("two sessions lost and a third opened", || {
        status.get().reconnects >= 2 && a.streams.load(Ordering::SeqCst) >= 3
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn no_response_within_the_timeout_ends_the_session() {
    let a = fake(Script::SilentAfterFirst, None, Duration::ZERO).await;
    let (status, stop) = start_node(&[&a]);
    until("the silent session given up and a new one opened", || {
        status.get().reconnects >= 1 && a.streams.load(Ordering::SeqCst) >= 2
    })
    .await;
    // The node kept sending while it waited (the stream was open; only answers lacked).
    assert!(a.heartbeats.load(Ordering::SeqCst) > 2);
    stop.cancel();
}

#[tokio::test]
async fn every_heartbeat_carries_the_version_and_the_labels() {
    let a = fake(Script::Grant, None, Duration::ZERO).await;
    let (_status, stop) = start_node(&[&a]);
    until("a heartbeat arrived", || {
        a.heartbeats.load(Ordering::SeqCst) >= 2
    })
    .await;
    let ext = a.extensions.lock().clone();
    assert_eq!(
        ext.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{ext:?}"
    );
    assert_eq!(
        ext.get("label.zone").map(String::as_str),
        Some("a"),
        "{ext:?}"
    );
    stop.cancel();
}
