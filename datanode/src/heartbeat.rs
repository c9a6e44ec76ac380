//! The heartbeat task: one long-lived stream to the metasrv leader.
//!
//! Each session: discover the leader, open the stream with a first heartbeat, apply the
//! handshake config, then heartbeat every interval. Responses feed the
//! [`RegionAliveKeeper`] (leases, closeable regions) and the instruction handler
//! (mailbox). Instruction replies go out **at once** on the same stream, piggybacked on
//! an extra heartbeat, not at the next tick.
//!
//! A session ends on NOT_LEADER, a stream error or end, or no response within
//! `2 × interval`; the task then rediscovers the leader at once, and backs off with jitter
//! on repeated failures. `duration_since_epoch` is read from the keeper at send time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::{
    ErrorCode, HeartbeatRequest, HeartbeatResponse, MailboxMessage, Peer, RegionStat,
};
use common_proto::JsonPayload;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::alive_keeper::RegionAliveKeeper;
use crate::engine::RegionEngineRef;
use crate::instruction::InstructionHandler;
use crate::meta_client::{Backoff, MetaClient};
use crate::status::StatusCell;

/// Settings of one node's heartbeat task.
#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    /// This node's id.
    pub node_id: u64,
    /// The address advertised to the metasrv.
    pub advertise_addr: String,
    /// The process start time in ms; changes on restart.
    pub node_epoch: u64,
    /// The interval until the handshake sets the metasrv's.
    pub initial_interval: Duration,
    /// Timeout of discovery and connect calls.
    pub rpc_timeout: Duration,
    /// Sent in every heartbeat's `extensions`, for the metasrv's handlers (a minimum
    /// version gate, placement by labels). [`default_extensions`] gives the version.
    pub extensions: std::collections::HashMap<String, String>,
    /// Seeds the reconnect backoff's jitter, for a deterministic simulation; `None`
    /// (production) draws it from the OS.
    pub jitter_seed: Option<u64>,
}

/// The extensions a node sends unless told otherwise: `version`, this crate's version.
pub fn default_extensions() -> std::collections::HashMap<String, String> {
    [("version".to_string(), env!("CARGO_PKG_VERSION").to_string())].into()
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// The heartbeat task of one datanode.
#[derive(Debug)]
pub struct HeartbeatTask {
    client: MetaClient,
    opts: HeartbeatOptions,
    engine: RegionEngineRef,
    keeper: Arc<RegionAliveKeeper>,
    handler: InstructionHandler,
    status: Arc<StatusCell>,
}

impl HeartbeatTask {
    /// A task for `opts`, over `engine` and `keeper`.
    pub fn new(
        client: MetaClient,
        opts: HeartbeatOptions,
        engine: RegionEngineRef,
        keeper: Arc<RegionAliveKeeper>,
    ) -> Self {
        let handler = InstructionHandler::new(engine.clone(), keeper.clone());
        Self {
            client,
            opts,
            engine,
            keeper,
            handler,
            status: Arc::default(),
        }
    }

    /// The task's status, shared.
    pub fn status(&self) -> Arc<StatusCell> {
        self.status.clone()
    }

    fn request(&self, mailbox_message: Option<MailboxMessage>) -> HeartbeatRequest {
        let leases = self.keeper.leases();
        let region_stats = self
            .engine
            .regions()
            .into_iter()
            .map(|r| RegionStat {
                region_id: r.region_id,
                role: r.role as i32,
                rcus: r.reads as i64,
                wcus: r.writes as i64,
                approximate_bytes: r.bytes,
                row_count: r.rows,
                shared_storage: r.shared_storage,
                // A grant may have moved the region to a newer epoch than the engine saw.
                epoch: leases.region_epoch(r.region_id).unwrap_or(0).max(r.epoch),
                unavailable: r.unavailable.unwrap_or_default(),
            })
            .collect();
        self.status.update(|s| s.status.sent += 1);
        HeartbeatRequest {
            header: Some(self.client.header()),
            peer: Some(Peer {
                id: self.opts.node_id,
                addr: self.opts.advertise_addr.clone(),
            }),
            node_epoch: self.opts.node_epoch,
            // Taken last, as close to the send as possible.
            duration_since_epoch: self.keeper.duration_since_epoch(),
            region_stats,
            mailbox_message,
            shared_storage: self.engine.shared_storage(),
            extensions: self.opts.extensions.clone(),
        }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!(
            "heartbeat_task",
            node_id = self.opts.node_id,
            role = "datanode"
        );
        async move {
            let mut interval = self.opts.initial_interval;
            let mut backoff =
                Backoff::seeded(Duration::from_millis(100), interval, self.opts.jitter_seed);
            // The leader this node last lost: discovery waits for another one.
            let mut lost: Option<String> = None;
            loop {
                let delay = backoff.next_delay();
                if !delay.is_zero() {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let wait = leader_wait(interval);
                let asked = Instant::now();
                let leader = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    found = self.client.discover_leader(lost.as_deref(), wait) => match found {
                        Ok(leader) => leader,
                        Err(err) => {
                            warn!(error = %err, lost = ?lost, "leader discovery failed");
                            if asked.elapsed() >= wait {
                                // The members held the ask for the whole wait: that
                                // already paced this retry.
                                backoff.reset();
                            }
                            continue;
                        }
                    },
                };
                if lost.as_deref() != Some(leader.as_str()) {
                    let hunted_ms = asked.elapsed().as_millis() as u64;
                    info!(%leader, lost = ?lost, hunted_ms, "found the metasrv leader");
                }
                match self
                    .session(&leader, &mut interval, &mut backoff, &shutdown)
                    .await
                {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Lost(reason) => {
                        warn!(%leader, reason, "heartbeat session lost; rediscovering the leader");
                        lost = Some(leader.clone());
                        self.status.update(|s| {
                            s.status.connected = false;
                            s.status.leader = None;
                            s.status.reconnects += 1;
                        });
                    }
                }
            }
            info!("heartbeat task stopped");
        }
        .instrument(span)
        .await
    }

    async fn session(
        &self,
        leader: &str,
        interval: &mut Duration,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let channel = match self.client.connect(leader).await {
            Ok(c) => c,
            Err(err) => return SessionEnd::Lost(err.to_string()),
        };
        let (tx, rx) = mpsc::channel(16);
        // When each request in flight was sent: the stream answers every request once, in
        // order, so the oldest is the one the next response answers.
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        if tx.send(self.request(None)).await.is_err() {
            return SessionEnd::Lost("request queue closed".into());
        }
        in_flight.push_back(Instant::now());
        let mut client = HeartbeatClient::new(channel);
        let opened = tokio::time::timeout(
            self.opts.rpc_timeout,
            client.heartbeat(ReceiverStream::new(rx)),
        )
        .await;
        let mut inbound = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                return SessionEnd::Lost(format!("opening the stream failed: {status}"))
            }
            Err(_) => return SessionEnd::Lost("opening the stream timed out".into()),
        };
        let (reply_tx, mut reply_rx) = mpsc::channel::<MailboxMessage>(64);
        let mut ticker = new_ticker(*interval);
        let mut response_timeout = response_timeout_for(*interval);
        let mut deadline = Instant::now() + response_timeout;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = ticker.tick() => {
                    if tx.send(self.request(None)).await.is_err() {
                        return SessionEnd::Lost("request stream closed".into());
                    }
                    in_flight.push_back(Instant::now());
                }
                Some(reply) = reply_rx.recv() => {
                    if tx.send(self.request(Some(reply))).await.is_err() {
                        return SessionEnd::Lost("request stream closed".into());
                    }
                    in_flight.push_back(Instant::now());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return SessionEnd::Lost(format!("no response within {response_timeout:?}"));
                }
                msg = inbound.message() => match msg {
                    Ok(Some(resp)) => {
                        if let Some(sent) = in_flight.pop_front() {
                            self.status.rtt().observe(sent.elapsed().as_secs_f64());
                        }
                        deadline = Instant::now() + response_timeout;
                        if let Some(cfg) = &resp.heartbeat_config {
                            *interval = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
                            response_timeout = response_timeout_for(*interval);
                            deadline = Instant::now() + response_timeout;
                            ticker = new_ticker(*interval);
                            backoff.set_cap(*interval);
                            backoff.reset();
                            info!(%leader, interval_ms = cfg.heartbeat_interval_ms, "heartbeat stream established");
                            self.status.update(|s| {
                                if s.last_leader.as_deref().is_some_and(|l| l != leader) {
                                    s.status.leader_switches += 1;
                                }
                                s.last_leader = Some(leader.to_string());
                                s.status.connected = true;
                                s.status.leader = Some(leader.to_string());
                                s.status.interval_ms = cfg.heartbeat_interval_ms;
                            });
                        }
                        if let Some(end) = self.on_response(resp, &reply_tx).await {
                            return end;
                        }
                    }
                    Ok(None) => return SessionEnd::Lost("stream closed by the metasrv".into()),
                    Err(status) => return SessionEnd::Lost(format!("stream error: {}", common_proto::error::explain(&status))),
                },
            }
        }
    }

    /// Applies one response; returns `Some` when the session must end.
    async fn on_response(
        &self,
        resp: HeartbeatResponse,
        reply_tx: &mpsc::Sender<MailboxMessage>,
    ) -> Option<SessionEnd> {
        self.status
            .update(|s| s.last_response = Some(Instant::now()));
        if let Some(err) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
            if err.code() == ErrorCode::NotLeader {
                return Some(SessionEnd::Lost(format!("NOT_LEADER: {}", err.message)));
            }
            warn!(code = ?err.code(), message = err.message, "metasrv reported an error");
        }
        for failure in resp.header.iter().flat_map(|h| h.handler_failures.iter()) {
            debug!(
                handler = failure.handler,
                message = failure.message,
                "metasrv handler failed"
            );
        }
        if let Some(lease) = &resp.region_lease {
            let outcome = self.keeper.on_lease(lease);
            if outcome.renewed > 0 {
                self.status.update(|s| s.last_grant = Some(Instant::now()));
            }
            for (region_id, epoch) in outcome.to_open {
                let handler = self.handler.clone();
                // Beside the stream, as instructions run: an open replays a log.
                tokio::spawn(async move { handler.open_granted(region_id, epoch).await });
            }
            for region_id in outcome.to_close {
                match self.keeper.close(region_id).await {
                    Ok(true) => info!(region_id, "closed a region the metasrv does not route here"),
                    Ok(false) => {}
                    Err(err) => {
                        warn!(region_id, error = %err, "failed to close a closeable region")
                    }
                }
            }
        }
        if let Some(msg) = resp.mailbox_message {
            let handler = self.handler.clone();
            let reply_tx = reply_tx.clone();
            let from = format!("datanode-{}", self.opts.node_id);
            // Instructions run beside the stream, so a slow one never delays heartbeats.
            tokio::spawn(async move {
                let reply = handler.handle_message(&msg).await;
                if msg.id == 0 {
                    return;
                }
                match reply.to_mailbox_message(msg.id, &from, &msg.from) {
                    Ok(m) => {
                        let _ = reply_tx.send(m).await;
                    }
                    Err(err) => warn!(id = msg.id, error = %err, "cannot encode instruction reply"),
                }
            });
        }
        None
    }
}

/// How long a leader hunt may wait on members' long polls: two heartbeat intervals
/// (enough for an election with the default timings), between 1 s and 10 s.
fn leader_wait(interval: Duration) -> Duration {
    (interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// How long a session waits for any response before it gives the leader up: two
/// heartbeat intervals, and never less than 500 ms.
fn response_timeout_for(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_millis(500))
}

fn new_ticker(interval: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(Instant::now() + interval, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
