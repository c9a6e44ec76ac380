//! One heartbeat stream's session: init, run, cleanup.
//!
//! - **init**: the first message must parse into a [`Heartbeat`] (validated here, once,
//!   for every handler); its header binds the stream to one `(role, node id)`, which under
//!   mutual TLS the client certificate must name (else PERMISSION_DENIED), and registers a
//!   pusher (or is refused with ALREADY_EXISTS).
//! - **run**: every message is parsed the same way (a stream cannot switch node), its
//!   mailbox reply is delivered first (so a reply never waits behind a slow handler), then
//!   the handler group builds the response. The first response carries the handshake
//!   config. Pushes queued on the pusher are merged into the same response stream.
//! - **end**: the node closes the stream; a newer session replaces this one; the metasrv
//!   shuts down; or this metasrv loses leadership. Each ends with a clear status.
//! - **cleanup**: deregister this session's pusher (by generation only) and fail the
//!   mailbox messages that were waiting on it. Cleanup runs when the session is dropped,
//!   so it also runs when the transport drops the response stream mid-heartbeat.
//!
//! The session *is* the response stream: the transport polls it, and each poll reads the
//! inbound stream and runs the handlers inline. No task or queue sits between a request
//! and its response; only pushes, which come from other tasks, go through the pusher's
//! bounded queue.
//!
//! Generic over the inbound stream so it can be driven without tonic.

use std::time::Duration;

use common_proto::v1::{ErrorCode, HeartbeatRequest, HeartbeatResponse, MailboxMessage, Role};
use futures::{Stream, StreamExt};
use handlers::{Heartbeat, HeartbeatAccumulator, NodeKey};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{info, warn, Instrument, Span};

use super::{SessionDeps, STREAM_QUEUE};
use crate::election::LeaderState;
use crate::metrics::{HeartbeatOutcome, StreamGuard, METRICS};
use crate::registration::Registration;
use crate::service::pusher::Pusher;

/// One item of a session's response stream.
type Item = Result<HeartbeatResponse, Status>;

/// The response stream of one heartbeat stream. `identity`: under mutual TLS, who the
/// client certificate says the peer is (`None`: no mTLS, any node key is accepted).
pub(crate) fn responses<S>(
    srv: SessionDeps,
    identity: Option<common_proto::tls::NodeIdentity>,
    inbound: S,
) -> impl Stream<Item = Item> + Send
where
    S: Stream<Item = Result<HeartbeatRequest, Status>> + Unpin + Send + 'static,
{
    let start = Phase::Start(Start {
        srv,
        identity,
        inbound,
        guard: StreamGuard::open(),
    });
    futures::stream::unfold(start, |phase| async move {
        match phase {
            Phase::Start(start) => start.open().await,
            Phase::Live(live) => live.next().await,
            Phase::Ended => None,
        }
    })
}

/// Where a session is: waiting for its first message, serving, or over.
enum Phase<S> {
    Start(Start<S>),
    Live(Live<S>),
    Ended,
}

/// What the next poll yields: an item and the phase after it, or the end of the stream.
type Next<S> = Option<(Item, Phase<S>)>;

/// A session before its first message.
struct Start<S> {
    srv: SessionDeps,
    identity: Option<common_proto::tls::NodeIdentity>,
    inbound: S,
    guard: StreamGuard,
}

impl<S> Start<S>
where
    S: Stream<Item = Result<HeartbeatRequest, Status>> + Unpin + Send + 'static,
{
    /// Admits the stream on its first message and answers it.
    async fn open(self) -> Next<S> {
        let Start {
            srv,
            identity,
            mut inbound,
            guard,
        } = self;
        let mut first = match inbound.next().await {
            Some(Ok(req)) => req,
            Some(Err(status)) => {
                METRICS
                    .heartbeats
                    .inc(Role::Unspecified, HeartbeatOutcome::Invalid);
                warn!(error = %status, "heartbeat stream failed before its first message");
                return refuse(receive_error(status));
            }
            None => return None,
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
                return refuse(Status::invalid_argument(err.to_string()));
            }
        };
        let key = first.key();
        if let Some(identity) = identity.filter(|id| !id.permits(key.role, key.node_id)) {
            METRICS.heartbeats.inc(key.role, HeartbeatOutcome::Refused);
            warn!(node_id = key.node_id, role = key.role.label(), names = ?identity.names(), "refused a heartbeat for a node the client certificate does not name");
            return refuse(Status::permission_denied(format!(
                "this client certificate may not heartbeat as {} {}: its subjectAltNames {:?} name no such node (expected {})",
                key.role.label(),
                key.node_id,
                identity.names(),
                common_proto::tls::expected_names(key.role, key.node_id),
            )));
        }
        let span = tracing::info_span!(
            "heartbeat_session",
            node_id = key.node_id,
            role = key.role.label()
        );
        let addr = first.stat().addr.clone();
        let node_epoch = first.stat().node_epoch;
        let (tx, pushes) = mpsc::channel(STREAM_QUEUE);
        let now = srv.ctx.clock.now();
        let pusher = match srv
            .pushers
            .register(key, node_epoch, &addr, tx, now, srv.node_lease)
        {
            Ok(p) => p,
            Err(err) => {
                span.in_scope(
                    || warn!(error = %err, "refused a second stream for a connected node"),
                );
                return refuse(Status::from(err));
            }
        };
        span.in_scope(
            || info!(generation = pusher.generation(), %addr, node_epoch, "session started"),
        );
        let leader_rx = srv.election.subscribe();
        let mut live = Live {
            srv,
            key,
            pusher,
            pushes,
            inbound,
            leader_rx,
            handshake: true,
            span,
            reason: "node went away",
            _guard: guard,
        };
        let span = live.span.clone();
        async move {
            register(&live.srv, key, &addr, node_epoch).await;
            live.await_gate().await;
            live.answer(first, first_reply).await
        }
        .instrument(span)
        .await
    }
}

/// Ends the stream with `status`.
fn refuse<S>(status: Status) -> Next<S> {
    Some((Err(status), Phase::Ended))
}

/// A session bound to one node, with its pusher registered.
struct Live<S> {
    srv: SessionDeps,
    key: NodeKey,
    pusher: std::sync::Arc<Pusher>,
    /// Responses pushed by other tasks through the pusher.
    pushes: mpsc::Receiver<Result<Box<HeartbeatResponse>, Status>>,
    inbound: S,
    leader_rx: watch::Receiver<LeaderState>,
    /// The next response is the stream's first (it carries the handshake config).
    handshake: bool,
    span: Span,
    /// Why the session ended, logged at cleanup (the default: the transport dropped it).
    reason: &'static str,
    _guard: StreamGuard,
}

/// What woke a live session. A temporary on the stack, consumed at once: boxing the
/// message to even out the variants would cost an allocation per heartbeat.
#[allow(clippy::large_enum_variant)]
enum Event {
    Replaced,
    Shutdown,
    LostLeadership,
    Push(Result<Box<HeartbeatResponse>, Status>),
    Message(Option<Result<HeartbeatRequest, Status>>),
}

impl<S> Live<S>
where
    S: Stream<Item = Result<HeartbeatRequest, Status>> + Unpin + Send + 'static,
{
    /// Elected a moment ago (or named by etcd, with the first keep-alive of the term still
    /// on its way): the leader state is loading. Nodes are told of a new leader the instant
    /// etcd names it, so they often arrive first; they wait here the few milliseconds it
    /// takes rather than being sent away as NOT_LEADER.
    async fn await_gate(&mut self) {
        let srv = &self.srv;
        let named_here =
            self.leader_rx.borrow().leader_addr.as_deref() == Some(srv.self_addr.as_str());
        if !srv.ctx.leadership.is_leader() && (srv.election.leadership().is_leader() || named_here)
        {
            srv.gate
                .wait_open(srv.node_lease.min(Duration::from_secs(2)))
                .await;
        }
    }

    /// The next item: a push, or the answer to the next message, or the end.
    async fn next(mut self) -> Next<S> {
        let span = self.span.clone();
        async move {
            loop {
                let event = tokio::select! {
                    biased;
                    _ = self.pusher.replaced() => Event::Replaced,
                    _ = self.srv.shutdown.cancelled() => Event::Shutdown,
                    changed = self.leader_rx.changed() => {
                        if changed.is_err() || !self.leader_rx.borrow_and_update().is_leader {
                            Event::LostLeadership
                        } else {
                            continue;
                        }
                    }
                    // The pusher holds the sender as long as this session holds the pusher.
                    Some(push) = self.pushes.recv() => Event::Push(push),
                    msg = self.inbound.next() => Event::Message(msg),
                };
                return match event {
                    Event::Replaced => {
                        let status = Status::aborted(format!(
                            "replaced by a newer stream for node {}",
                            self.key
                        ));
                        self.end("replaced", Some(status))
                    }
                    Event::Shutdown => self.end(
                        "shutdown",
                        Some(Status::unavailable("metasrv is shutting down")),
                    ),
                    Event::LostLeadership => {
                        let leader = self
                            .srv
                            .ctx
                            .leadership
                            .leader_addr()
                            .unwrap_or_else(|| "unknown".into());
                        let status = Status::unavailable(format!(
                            "not leader: this metasrv lost leadership; the leader is {leader}"
                        ));
                        self.end("lost leadership", Some(status))
                    }
                    Event::Push(push) => Some((push.map(|b| *b), Phase::Live(self))),
                    Event::Message(Some(Ok(req))) => match parse(&self.srv, self.key, req) {
                        Ok((hb, reply)) => self.answer(hb, reply).await,
                        Err(status) => {
                            METRICS
                                .heartbeats
                                .inc(self.key.role, HeartbeatOutcome::Invalid);
                            warn!(error = %status, "rejected a heartbeat");
                            self.end("invalid heartbeat", Some(status))
                        }
                    },
                    Event::Message(Some(Err(status))) => {
                        warn!(error = %status, "heartbeat stream error");
                        // Oversized or undecodable messages: tell the node why.
                        self.end("stream error", Some(receive_error(status)))
                    }
                    Event::Message(None) => self.end("closed by node", None),
                };
            }
        }
        .instrument(span)
        .await
    }

    /// Answers one heartbeat; the session goes on.
    async fn answer(mut self, hb: Heartbeat, reply: Option<MailboxMessage>) -> Next<S> {
        let resp = handle(
            &self.srv,
            self.key,
            &self.pusher,
            &hb,
            reply,
            self.handshake,
        )
        .await;
        METRICS.heartbeats.inc(self.key.role, outcome(&resp));
        self.handshake = false;
        Some((Ok(resp), Phase::Live(self)))
    }

    /// Ends the session for `reason`: with `status`, or quietly (the node closed its side).
    fn end(mut self, reason: &'static str, status: Option<Status>) -> Next<S> {
        self.reason = reason;
        drop(self);
        status.and_then(refuse)
    }
}

impl<S> Drop for Live<S> {
    fn drop(&mut self) {
        // Closed first: a push racing this cleanup then fails at once, and one that got in
        // before left its mailbox entry before `on_channel_closed` below fails it.
        self.pushes.close();
        let generation = self.pusher.generation();
        self.span
            .in_scope(|| info!(generation, reason = self.reason, "session ended"));
        self.srv.pushers.deregister(self.key, generation);
        self.srv.mailbox.on_channel_closed(self.key, generation);
    }
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

#[cfg(test)]
mod tests {
    //! A session driven in process, without a transport: the inbound stream is a
    //! channel, and the test holds the response stream the transport would poll.

    use common_proto::v1::{Peer, RequestHeader};
    use common_proto::PROTOCOL_VERSION;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::{MetasrvBuilder, MetasrvOptions};

    fn request(node_id: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            header: Some(RequestHeader {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: MetasrvOptions::default().cluster_id,
                node_id,
                role: Role::Datanode as i32,
            }),
            peer: Some(Peer {
                id: node_id,
                addr: format!("127.0.0.1:{}", 20000 + node_id),
            }),
            node_epoch: 1,
            ..Default::default()
        }
    }

    type Inbound = mpsc::Sender<Result<HeartbeatRequest, Status>>;
    type Responses = std::pin::Pin<Box<dyn Stream<Item = Item> + Send>>;

    async fn standalone() -> std::sync::Arc<crate::Metasrv> {
        MetasrvBuilder::new(MetasrvOptions::default())
            .build()
            .await
            .expect("a standalone metasrv")
    }

    /// A session over `deps`, as the transport would open it: its inbound side and the
    /// response stream the transport polls.
    fn open(
        deps: SessionDeps,
        identity: Option<common_proto::tls::NodeIdentity>,
    ) -> (Inbound, Responses) {
        let (tx, rx) = mpsc::channel(4);
        let stream = responses(deps, identity, ReceiverStream::new(rx));
        (tx, Box::pin(stream))
    }

    async fn session() -> (std::sync::Arc<crate::Metasrv>, Inbound, Responses) {
        let metasrv = standalone().await;
        let (tx, stream) = open(metasrv.heartbeat_service().srv, None);
        (metasrv, tx, stream)
    }

    #[tokio::test]
    async fn a_session_dropped_by_its_transport_mid_stream_still_cleans_up() {
        let (metasrv, tx, mut stream) = session().await;
        tx.send(Ok(request(7))).await.expect("inbound open");
        let first = stream
            .next()
            .await
            .expect("an answer")
            .expect("not refused");
        assert!(
            first.heartbeat_config.is_some(),
            "the first answer is the handshake"
        );
        let key = NodeKey::datanode(7);
        assert!(
            metasrv.pushers().get(key).is_some(),
            "registered while live"
        );

        // The transport drops the stream while the session waits for the next message.
        drop(stream);
        assert!(
            metasrv.pushers().get(key).is_none(),
            "the pusher is deregistered the moment the session is dropped"
        );
    }

    #[tokio::test]
    async fn under_mtls_a_stream_may_speak_only_for_the_node_its_certificate_names() {
        let metasrv = standalone().await;
        let nameless = common_proto::tls::NodeIdentity::default();
        let (tx, mut stream) = open(metasrv.heartbeat_service().srv, Some(nameless));
        tx.send(Ok(request(9))).await.expect("inbound open");
        let refused = stream
            .next()
            .await
            .expect("an answer")
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(stream.next().await.is_none(), "the stream ends");
        assert!(metasrv.pushers().get(NodeKey::datanode(9)).is_none());
    }

    /// An election whose authority and published state the test sets apart.
    #[derive(Debug)]
    struct Scripted(crate::election::LeaderSignal);

    #[async_trait::async_trait]
    impl crate::election::Election for Scripted {
        fn leadership(&self) -> handlers::LeadershipRef {
            self.0.view()
        }
        fn subscribe(&self) -> watch::Receiver<LeaderState> {
            self.0.subscribe()
        }
        async fn run(&self, shutdown: tokio_util::sync::CancellationToken) -> crate::Result<()> {
            shutdown.cancelled().await;
            Ok(())
        }
        async fn resign(&self) -> crate::Result<()> {
            Ok(())
        }
        async fn leader(&self) -> crate::Result<Option<crate::election::LeaderInfo>> {
            Ok(None)
        }
        async fn members(&self) -> crate::Result<Vec<crate::election::Member>> {
            Ok(vec![])
        }
    }

    /// A session of a metasrv whose election is `scripted` and whose gate is closed.
    async fn electing(
        scripted: std::sync::Arc<Scripted>,
    ) -> (
        SessionDeps,
        std::sync::Arc<crate::leader::gate::LeaderGate>,
        std::sync::Arc<crate::Metasrv>,
    ) {
        let metasrv = standalone().await;
        let mut deps = metasrv.heartbeat_service().srv;
        let gate = std::sync::Arc::new(crate::leader::gate::LeaderGate::new(
            scripted.0.view(),
            scripted.0.subscribe(),
        ));
        deps.election = scripted;
        deps.gate = gate.clone();
        deps.ctx.leadership = gate.clone();
        (deps, gate, metasrv)
    }

    /// The first answer of a stream to `deps`, and how long it took.
    async fn first_answer(deps: SessionDeps) -> (Item, Duration) {
        let (tx, mut stream) = open(deps, None);
        tx.send(Ok(request(5))).await.expect("inbound open");
        let started = tokio::time::Instant::now();
        let answer = stream.next().await.expect("an answer");
        (answer, started.elapsed())
    }

    fn not_leader(item: &Item) -> bool {
        let header = item.as_ref().ok().and_then(|r| r.header.as_ref());
        header
            .and_then(|h| h.error.as_ref())
            .is_some_and(|e| e.code() == ErrorCode::NotLeader)
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_reaches_a_leader_named_a_moment_ago_waits_for_its_gate() {
        let scripted = std::sync::Arc::new(Scripted(crate::election::LeaderSignal::new()));
        let (deps, gate, _metasrv) = electing(scripted.clone()).await;
        // Named by the election, its first keep-alive still on its way: not yet leading.
        scripted.0.observed(&crate::election::LeaderInfo {
            addr: deps.self_addr.clone(),
            term: 2,
        });
        let self_addr = deps.self_addr.clone();
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            scripted.0.lead(self_addr, 2, None);
            let seq = scripted.0.current().seq;
            gate.open(seq, 2, crate::leader::lease_bound::Bound::default());
        });
        let (answer, took) = first_answer(deps).await;
        opener.await.expect("opened");
        assert!(
            !not_leader(&answer),
            "answered once the gate opened: {answer:?}"
        );
        assert!(
            answer.is_ok() && took >= Duration::from_millis(300),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_reaches_a_follower_is_sent_away_at_once() {
        let scripted = std::sync::Arc::new(Scripted(crate::election::LeaderSignal::new()));
        let (deps, _gate, _metasrv) = electing(scripted.clone()).await;
        scripted.0.observed(&crate::election::LeaderInfo {
            addr: "elsewhere:1".into(),
            term: 2,
        });
        let (answer, took) = first_answer(deps).await;
        assert!(not_leader(&answer), "{answer:?}");
        assert!(
            took < Duration::from_millis(100),
            "no wait for a gate: {took:?}"
        );
    }

    #[test]
    fn only_an_oversized_message_is_resource_exhausted() {
        let oversized = Status::out_of_range("decoded message length too large");
        assert_eq!(
            receive_error(oversized).code(),
            tonic::Code::ResourceExhausted
        );
        for other in [
            Status::out_of_range("something else"),
            Status::internal("frame too large"),
        ] {
            let code = other.code();
            assert_eq!(receive_error(other).code(), code);
        }
    }

    #[tokio::test]
    async fn a_push_reaches_a_silent_node_between_its_answers() {
        let (metasrv, tx, mut stream) = session().await;
        tx.send(Ok(request(8))).await.expect("inbound open");
        stream
            .next()
            .await
            .expect("an answer")
            .expect("not refused");
        let pusher = metasrv
            .pushers()
            .get(NodeKey::datanode(8))
            .expect("registered");

        // No message arrives; the push is delivered on its own.
        let pushed = HeartbeatResponse {
            heartbeat_config: None,
            ..Default::default()
        };
        pusher.push(pushed.clone()).expect("queued");
        let got = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the push is not held back until the next heartbeat")
            .expect("an item")
            .expect("not an error");
        assert_eq!(got, pushed);

        // The session goes on answering.
        tx.send(Ok(request(8))).await.expect("inbound open");
        let next = stream
            .next()
            .await
            .expect("an answer")
            .expect("not refused");
        assert!(next.heartbeat_config.is_none());
    }
}
