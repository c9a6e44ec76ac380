//! Shared helpers for the metasrv integration tests: an in-process metasrv on real
//! loopback sockets, and a raw tonic client acting as a datanode.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::{
    HeartbeatRequest, HeartbeatResponse, MailboxMessage, Peer, RegionRole, RegionStat,
    RequestHeader, Role,
};
use common_proto::PROTOCOL_VERSION;
use meta_srv::{Metasrv, MetasrvBuilder, MetasrvOptions};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub srv: Arc<Metasrv>,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    task: JoinHandle<meta_srv::Result<()>>,
}

impl TestServer {
    pub async fn stop(self) {
        self.srv.shutdown();
        let res = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time");
        res.expect("server task").expect("server result");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }
}

pub fn fast_options() -> MetasrvOptions {
    MetasrvOptions {
        heartbeat_interval: Duration::from_millis(500),
        node_lease: Duration::from_secs(2),
        region_lease: Duration::from_secs(2),
        mailbox_timeout: Duration::from_secs(5),
        ..MetasrvOptions::default()
    }
}

pub async fn start(options: MetasrvOptions) -> TestServer {
    start_with(MetasrvBuilder::new(options)).await
}

pub async fn start_with(builder: MetasrvBuilder) -> TestServer {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let addr = grpc.local_addr().expect("addr");
    let http_addr = http.local_addr().expect("addr");
    let srv = builder
        .bound_to(&grpc, Some(&http))
        .expect("bound")
        .build()
        .await
        .expect("build metasrv");
    let s = srv.clone();
    let task = tokio::spawn(async move { s.serve(grpc, Some(http), std::future::pending()).await });
    TestServer {
        srv,
        addr,
        http_addr,
        task,
    }
}

/// A raw heartbeat stream acting as one datanode.
pub struct FakeNode {
    pub node_id: u64,
    pub role: Role,
    pub epoch: u64,
    pub cluster_id: u64,
    pub addr: String,
    tx: mpsc::Sender<HeartbeatRequest>,
    pub rx: Streaming<HeartbeatResponse>,
    mailbox: Vec<MailboxMessage>,
    seq: u64,
}

impl FakeNode {
    pub async fn connect(server: SocketAddr, node_id: u64, epoch: u64) -> FakeNode {
        Self::connect_as(server, node_id, Role::Datanode, epoch).await
    }

    pub async fn connect_as(server: SocketAddr, node_id: u64, role: Role, epoch: u64) -> FakeNode {
        let mut client = HeartbeatClient::connect(format!("http://{server}"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .heartbeat(ReceiverStream::new(rx))
            .await
            .expect("open stream")
            .into_inner();
        FakeNode {
            node_id,
            role,
            epoch,
            cluster_id: 1,
            addr: format!("127.0.0.1:{}", 20000 + node_id),
            tx,
            rx,
            mailbox: Vec::new(),
            seq: 0,
        }
    }

    pub fn request(&mut self, regions: &[u64]) -> HeartbeatRequest {
        self.seq += 1;
        HeartbeatRequest {
            header: Some(RequestHeader {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: self.cluster_id,
                node_id: self.node_id,
                role: self.role as i32,
            }),
            peer: Some(Peer {
                id: self.node_id,
                addr: self.addr.clone(),
            }),
            node_epoch: self.epoch,
            duration_since_epoch: self.seq * 1000,
            region_stats: regions
                .iter()
                .map(|&id| RegionStat {
                    region_id: id,
                    role: RegionRole::Leader as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub async fn send(&self, req: HeartbeatRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// Next message from the server, whatever it is.
    pub async fn recv(&mut self) -> Result<Option<HeartbeatResponse>, Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("server answers in time")
    }

    /// Sends a heartbeat and returns its response, setting aside mailbox pushes.
    pub async fn heartbeat(&mut self, regions: &[u64]) -> Result<HeartbeatResponse, Status> {
        let req = self.request(regions);
        self.send_and_wait(req).await
    }

    pub async fn send_and_wait(
        &mut self,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, Status> {
        self.send(req).await;
        self.next_response().await
    }

    async fn next_response(&mut self) -> Result<HeartbeatResponse, Status> {
        loop {
            match self.recv().await? {
                Some(resp) => match resp.mailbox_message {
                    Some(msg) => self.mailbox.push(msg),
                    None => return Ok(resp),
                },
                None => return Err(Status::cancelled("stream ended")),
            }
        }
    }

    /// The next mailbox message pushed to this node.
    pub async fn next_mailbox(&mut self) -> MailboxMessage {
        if !self.mailbox.is_empty() {
            return self.mailbox.remove(0);
        }
        loop {
            let resp = self.recv().await.expect("stream ok").expect("stream open");
            if let Some(msg) = resp.mailbox_message {
                return msg;
            }
        }
    }

    /// Sends a reply to a mailbox message piggybacked on a heartbeat.
    pub async fn reply(&mut self, msg: MailboxMessage, regions: &[u64]) -> HeartbeatResponse {
        let mut req = self.request(regions);
        req.mailbox_message = Some(msg);
        self.send_and_wait(req).await.expect("heartbeat with reply")
    }
}

/// Polls `f` until it returns true, or panics after `WAIT`.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `fut` under the suite's outer deadline, so a broken timer fails the test
/// (naming `what`) instead of hanging it.
pub async fn within<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// One admin API call with an optional raw JSON body: the status and the JSON answer.
pub async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    admin_at(server.url(path), method, body).await
}

/// [`admin`] by URL, for a call spawned to run beside the test.
pub async fn admin_at(
    url: String,
    method: reqwest::Method,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("send");
    let code = resp.status().as_u16();
    (code, resp.json().await.expect("a JSON body"))
}
