//! One heartbeat stream's session: init, run, cleanup.
//!
//! - **init**: the first message must parse into a [`Heartbeat`] (validated here, once,
//!   for every handler); its header binds the stream to one `(role, node id)`, which under
//!   mutual TLS the client certificate must name (else PERMISSION_DENIED), and registers a
//!   pusher (or is refused with ALREADY_EXISTS).
//! - **run**: every message is parsed the same way (a stream cannot switch node), its
//!   mailbox reply is delivered first (so a reply never waits behind a slow handler), then
//!   the handler group builds the response. The first response carries the handshake
//!   config.
//! - **end**: the node closes the stream; a newer session replaces this one; the metasrv
//!   shuts down; or this metasrv loses leadership. Each ends with a clear status.
//! - **cleanup**: deregister this session's pusher (by generation only) and fail the
//!   mailbox messages that were waiting on it.
//!
//! Generic over the inbound stream so it can be driven without tonic.

use std::time::Duration;

use common_proto::v1::{ErrorCode, HeartbeatRequest, HeartbeatResponse, MailboxMessage, Role};
use futures::{Stream, StreamExt};
use handlers::{Heartbeat, HeartbeatAccumulator, NodeKey};
use tonic::Status;
use tracing::{info, warn, Instrument};

use super::SessionDeps;
use crate::metrics::{HeartbeatOutcome, StreamGuard, METRICS};
use crate::registration::Registration;
use crate::service::pusher::{Pusher, ResponseTx};

/// Runs a session to its end. `identity`: under mutual TLS, who the client certificate
/// says the peer is (`None`: no mTLS, any node key is accepted).
pub(crate) async fn run<S>(
    srv: SessionDeps,
    identity: Option<common_proto::tls::NodeIdentity>,
    mut inbound: S,
    tx: ResponseTx,
) where
    S: Stream<Item = Result<HeartbeatRequest, Status>> + Unpin + Send + 'static,
{
    let _stream = StreamGuard::open();
    let mut first = match inbound.next().await {
        Some(Ok(req)) => req,
        Some(Err(status)) => {
            METRICS
                .heartbeats
                .inc(Role::Unspecified, HeartbeatOutcome::Invalid);
            warn!(error = %status, "heartbeat stream failed before its first message");
            let _ = tx.send(Err(receive_error(status))).await;
            return;
        }
        None => return,
    };
    let role = first
        .header
        .as_ref()
        .map_or(Role::Unspecified, |h| h.role());
    let first_reply = first.mailbox_message.take();
    let first = match Heartbeat::parse(first, srv.ctx.cluster_id) {
        Ok(hb) => hb,
        Err(err) => {
            METRICS.heartbeats.inc(role, HeartbeatOutcome::Invalid);
            warn!(error = %err, "rejected a heartbeat stream");
            let _ = tx
                .send(Err(Status::invalid_argument(err.to_string())))
                .await;
            return;
        }
    };
    let key = first.key();
    if let Some(identity) = identity.filter(|id| !id.permits(key.role, key.node_id)) {
        METRICS.heartbeats.inc(key.role, HeartbeatOutcome::Refused);
        warn!(node_id = key.node_id, role = key.role.label(), names = ?identity.names(), "refused a heartbeat for a node the client certificate does not name");
        let _ = tx
            .send(Err(Status::permission_denied(format!(
                "this client certificate may not heartbeat as {} {}: its subjectAltNames {:?} name no such node (expected {})",
                key.role.label(),
                key.node_id,
                identity.names(),
                common_proto::tls::expected_names(key.role, key.node_id),
            ))))
            .await;
        return;
    }
    let span = tracing::info_span!(
        "heartbeat_session",
        node_id = key.node_id,
        role = key.role.label()
    );
    async move {
        let addr = first.stat().addr.clone();
        let node_epoch = first.stat().node_epoch;
        let now = srv.ctx.clock.now();
        let pusher =
            match srv
                .pushers
                .register(key, node_epoch, &addr, tx.clone(), now, srv.node_lease)
            {
                Ok(p) => p,
                Err(err) => {
                    warn!(error = %err, "refused a second stream for a connected node");
                    let _ = tx.send(Err(Status::from(err))).await;
                    return;
                }
            };
        info!(generation = pusher.generation(), %addr, node_epoch, "session started");
        register(&srv, key, &addr, node_epoch).await;
        let reason = serve(&srv, key, &pusher, (first, first_reply), &mut inbound, &tx).await;
        info!(generation = pusher.generation(), reason, "session ended");
        srv.pushers.deregister(key, pusher.generation());
        srv.mailbox.on_channel_closed(key, pusher.generation());
    }
    .instrument(span)
    .await
}

/// The status a node gets for a message the server could not receive: gRPC says a
/// message over the receive limit is RESOURCE_EXHAUSTED (tonic reports OUT_OF_RANGE).
fn receive_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_string())
    } else {
        status
    }
}

/// The message loop; returns why it ended.
async fn serve<S>(
    srv: &SessionDeps,
    key: NodeKey,
    pusher: &Pusher,
    first: (Heartbeat, Option<MailboxMessage>),
    inbound: &mut S,
    tx: &ResponseTx,
) -> &'static str
where
    S: Stream<Item = Result<HeartbeatRequest, Status>> + Unpin,
{
    let mut leader_rx = srv.election.subscribe();
    let named_here = leader_rx.borrow().leader_addr.as_deref() == Some(srv.self_addr.as_str());
    if !srv.ctx.leadership.is_leader() && (srv.election.leadership().is_leader() || named_here) {
        // Elected a moment ago (or named by etcd, with the first keep-alive of the term
        // still on its way): the leader state is loading. Nodes are told of a new leader
        // the instant etcd names it, so they often arrive first; they wait here the few
        // milliseconds it takes rather than being sent away as NOT_LEADER.
        srv.gate
            .wait_open(srv.node_lease.min(Duration::from_secs(2)))
            .await;
    }
    let mut next = Some(first);
    let mut handshake = true;
    loop {
        let (hb, reply) = match next.take() {
            Some(parsed) => parsed,
            None => tokio::select! {
                biased;
                _ = pusher.replaced() => {
                    let _ = tx.send(Err(Status::aborted(format!("replaced by a newer stream for node {key}")))).await;
                    return "replaced";
                }
                _ = srv.shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("metasrv is shutting down"))).await;
                    return "shutdown";
                }
                changed = leader_rx.changed() => {
                    if changed.is_err() || !leader_rx.borrow_and_update().is_leader {
                        let leader = srv.ctx.leadership.leader_addr().unwrap_or_else(|| "unknown".into());
                        let _ = tx.send(Err(Status::unavailable(format!("not leader: this metasrv lost leadership; the leader is {leader}")))).await;
                        return "lost leadership";
                    }
                    continue;
                }
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => match parse(srv, key, req) {
                        Ok(parsed) => parsed,
                        Err(status) => {
                            METRICS.heartbeats.inc(key.role, HeartbeatOutcome::Invalid);
                            warn!(error = %status, "rejected a heartbeat");
                            let _ = tx.send(Err(status)).await;
                            return "invalid heartbeat";
                        }
                    },
                    Some(Err(status)) => {
                        warn!(error = %status, "heartbeat stream error");
                        // Oversized or undecodable messages: tell the node why.
                        let _ = tx.send(Err(receive_error(status))).await;
                        return "stream error";
                    }
                    None => return "closed by node",
                },
            },
        };
        let resp = handle(srv, key, pusher, &hb, reply, handshake).await;
        METRICS.heartbeats.inc(key.role, outcome(&resp));
        if tx.send(Ok(Box::new(resp))).await.is_err() {
            return "node went away";
        }
        handshake = false;
    }
}

/// The outcome a response records in `metasrv_heartbeats_total`.
fn outcome(resp: &HeartbeatResponse) -> HeartbeatOutcome {
    match resp.header.as_ref().and_then(|h| h.error.as_ref()) {
        None => HeartbeatOutcome::Ok,
        Some(e) if e.code() == ErrorCode::NotLeader => HeartbeatOutcome::NotLeader,
        Some(_) => HeartbeatOutcome::Refused,
    }
}

/// A later message of the stream, parsed: its heartbeat (for the node the stream is
/// bound to) and the mailbox reply it carries.
fn parse(
    srv: &SessionDeps,
    key: NodeKey,
    mut req: HeartbeatRequest,
) -> Result<(Heartbeat, Option<MailboxMessage>), Status> {
    let reply = req.mailbox_message.take();
    let hb = Heartbeat::parse(req, srv.ctx.cluster_id)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if hb.key() != key {
        return Err(Status::invalid_argument(format!(
            "this stream is bound to node {key}; got a heartbeat for node {}",
            hb.key()
        )));
    }
    Ok((hb, reply))
}

/// One heartbeat: deliver the mailbox reply, run the handlers.
async fn handle(
    srv: &SessionDeps,
    key: NodeKey,
    pusher: &Pusher,
    hb: &Heartbeat,
    reply: Option<MailboxMessage>,
    handshake: bool,
) -> HeartbeatResponse {
    pusher.touch(srv.ctx.clock.now());
    if let Some(msg) = reply {
        srv.mailbox.on_recv(key, msg);
    }
    let mut acc = HeartbeatAccumulator::new(srv.ctx.cluster_id);
    if handshake {
        acc.heartbeat_config = Some(srv.heartbeat_config);
    }
    srv.group.handle(hb, &srv.ctx, &mut acc).await;
    if acc.error_code() != Some(ErrorCode::NotLeader) {
        // Fail closed: CheckLeader decided at the start of the chain, and leadership is a
        // deadline that may have passed since (a slow handler, a paused process). Check it
        // again now, before anything granted leaves; the time is taken first, so the
        // grant log never records a grant later than the authority behind it.
        let at_ms = common_proto::unix_millis();
        if !srv.ctx.leadership.is_leader() {
            let mut lapsed = HeartbeatAccumulator::new(srv.ctx.cluster_id);
            lapsed.heartbeat_config = acc.heartbeat_config.take();
            lapsed.set_error(
                ErrorCode::NotLeader,
                "not leader: this metasrv's leadership lapsed while it handled the heartbeat",
            );
            return lapsed.into_response();
        }
        if let Some(lease) = &acc.region_lease {
            srv.gate.grants.record_grant(at_ms);
            METRICS.regions_granted.inc_by(lease.regions.len() as u64);
            METRICS
                .regions_closeable
                .inc_by(lease.closeable_region_ids.len() as u64);
        }
    }
    acc.into_response()
}

/// Writes the node's registration, once per session, only on the leader. A failure is
/// logged: it costs the node nothing now, only its grace after a leader change.
async fn register(srv: &SessionDeps, key: NodeKey, addr: &str, node_epoch: u64) {
    if !srv.ctx.leadership.is_leader() {
        return;
    }
    let reg = Registration {
        role: key.role as i32,
        node_id: key.node_id,
        addr: addr.to_string(),
        node_epoch,
    };
    let Ok(value) = serde_json::to_vec(&reg) else {
        return;
    };
    if let Err(err) = srv
        .ctx
        .kv
        .put(Registration::kv_key(key).as_bytes(), &value)
        .await
    {
        warn!(error = %err, "could not record the node registration");
    }
}
