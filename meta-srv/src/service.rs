//! The streaming side: the tonic `Heartbeat` service (one session per stream, and
//! `AskLeader`), the per-node [`pusher`]s, and the [`mailbox`] that carries instructions
//! down them and matches replies.

pub mod mailbox;
pub mod pusher;
mod session;

use std::pin::Pin;
use std::sync::Arc;

use common_proto::v1::heartbeat_server::Heartbeat;
use common_proto::v1::{
    AskLeaderRequest, AskLeaderResponse, HeartbeatRequest, HeartbeatResponse, Peer, ResponseHeader,
};
use common_proto::PROTOCOL_VERSION;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use std::time::Duration;

use common_proto::v1::HeartbeatConfig;
use handlers::{Context, HandlerGroup};
use tokio_util::sync::CancellationToken;

use crate::election::ElectionRef;
use crate::leader::gate::LeaderGate;
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;

/// How many pushes may queue on one stream before further pushes to it fail fast.
pub(crate) const STREAM_QUEUE: usize = 64;

/// What a heartbeat session needs, and nothing more: a narrow handle instead of the
/// whole server, so the session depends on the parts it uses.
#[derive(Debug, Clone)]
pub struct SessionDeps {
    pub(crate) node_lease: Duration,
    /// The handshake config sent on each stream's first response.
    pub(crate) heartbeat_config: HeartbeatConfig,
    pub(crate) ctx: Context,
    pub(crate) group: Arc<HandlerGroup>,
    pub(crate) pushers: Arc<Pushers>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) election: ElectionRef,
    pub(crate) gate: Arc<LeaderGate>,
    pub(crate) shutdown: CancellationToken,
    /// This member's advertised address (the election names members by it).
    pub(crate) self_addr: String,
    /// Mutual TLS is on: a stream may speak only for the node its client certificate
    /// names ([`common_proto::tls::NodeIdentity`]).
    pub(crate) mtls: bool,
}

/// The gRPC face of a metasrv.
#[derive(Debug, Clone)]
pub struct HeartbeatService {
    srv: SessionDeps,
}

impl HeartbeatService {
    /// Serves sessions over `deps` (see [`crate::Metasrv::heartbeat_service`]).
    pub fn new(deps: SessionDeps) -> Self {
        Self { srv: deps }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Heartbeat for HeartbeatService {
    type HeartbeatStream = ResponseStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        // The identity is read once, from the verified handshake: a stream cannot change
        // certificates, and every later message must keep the first one's node key.
        let identity = self.srv.mtls.then(|| match request.peer_certs() {
            Some(certs) => common_proto::tls::NodeIdentity::from_certs(&certs),
            None => common_proto::tls::NodeIdentity::default(),
        });
        let inbound = request.into_inner();
        Ok(Response::new(Box::pin(session::responses(
            self.srv.clone(),
            identity,
            inbound,
        ))))
    }

    async fn ask_leader(
        &self,
        request: Request<AskLeaderRequest>,
    ) -> Result<Response<AskLeaderResponse>, Status> {
        let cluster_id = self.srv.ctx.cluster_id;
        if let Some(h) = &request.get_ref().header {
            if h.cluster_id != cluster_id {
                return Err(Status::invalid_argument(format!(
                    "cluster id mismatch: request is for cluster {}, this metasrv serves cluster {cluster_id}",
                    h.cluster_id
                )));
            }
        }
        let req = request.into_inner();
        let lost = (!req.lost_leader.is_empty()).then_some(req.lost_leader.as_str());
        let leader = crate::election::await_leader(
            self.srv.election.as_ref(),
            lost,
            Duration::from_millis(req.wait_ms),
        )
        .await
        .map_err(Status::from)?;
        Ok(Response::new(AskLeaderResponse {
            header: Some(ResponseHeader {
                protocol_version: PROTOCOL_VERSION,
                cluster_id,
                ..Default::default()
            }),
            term: leader.as_ref().map_or(0, |l| l.term),
            leader: leader.map(|l| Peer {
                id: 0,
                addr: l.addr,
            }),
        }))
    }
}
