//! The mailbox: send instructions down a pusher, match replies back by message id.
//!
//! - Ids come from an atomic counter; 0 is reserved for one-way messages.
//! - Each waiting sender holds a [`MailboxReceiver`], which times out with its own timer
//!   (`tokio::time::timeout`), not a periodic scan of all messages.
//! - Nothing leaks: the pending entry is removed when the reply arrives, when the node's
//!   session ends ([`Mailbox::on_channel_closed`] fails it with `ChannelClosed`), and when
//!   the receiver is dropped (timeout, push failure, or a caller that gave up). A reply
//!   that arrives after that is logged and dropped.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::{HeartbeatResponse, MailboxMessage, ResponseHeader, Role};
use common_proto::{Instruction, InstructionReply, JsonPayload, PROTOCOL_VERSION};
use handlers::NodeKey;
use parking_lot::Mutex;
use snafu::{OptionExt, ResultExt};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::{
    BadReplySnafu, ChannelClosedSnafu, MailboxTimeoutSnafu, PayloadSnafu, PusherNotFoundSnafu,
    Result,
};
use crate::service::pusher::{Pusher, Pushers};

#[derive(Debug)]
struct Pending {
    channel: NodeKey,
    generation: u64,
    tx: oneshot::Sender<Result<InstructionReply>>,
}

type PendingMap = Mutex<HashMap<u64, Pending>>;

fn lock(map: &PendingMap) -> parking_lot::MutexGuard<'_, HashMap<u64, Pending>> {
    map.lock()
}

/// Sends instructions to nodes and routes their replies.
#[derive(Debug)]
pub struct Mailbox {
    pushers: Arc<Pushers>,
    cluster_id: u64,
    from: String,
    next_id: AtomicU64,
    // A synchronous lock (parking_lot): held only for map updates.
    pending: Arc<PendingMap>,
}

impl Mailbox {
    /// A mailbox over `pushers`; `from` names this metasrv in message envelopes.
    pub fn new(pushers: Arc<Pushers>, cluster_id: u64, from: impl Into<String>) -> Self {
        Self {
            pushers,
            cluster_id,
            from: from.into(),
            next_id: AtomicU64::new(1),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Encodes `instruction` as message `id` to `channel`, in the response that carries
    /// it down the stream.
    fn envelope(
        &self,
        id: u64,
        channel: NodeKey,
        instruction: &Instruction,
    ) -> Result<HeartbeatResponse> {
        let msg = instruction
            .to_mailbox_message(id, &self.from, &channel.to_string())
            .context(PayloadSnafu)?;
        Ok(HeartbeatResponse {
            header: Some(ResponseHeader {
                protocol_version: PROTOCOL_VERSION,
                cluster_id: self.cluster_id,
                ..Default::default()
            }),
            mailbox_message: Some(msg),
            ..Default::default()
        })
    }

    fn pusher(&self, channel: NodeKey) -> Result<Arc<Pusher>> {
        self.pushers
            .get(channel)
            .context(PusherNotFoundSnafu { channel })
    }

    /// Sends `instruction` to `channel` and returns a receiver that resolves to the reply,
    /// or to `Timeout` after `timeout`, or `ChannelClosed` if the node disconnects first.
    /// Fails at once with `PusherNotFound` or `PushFailed`.
    pub fn send(
        &self,
        channel: NodeKey,
        instruction: &Instruction,
        timeout: Duration,
    ) -> Result<MailboxReceiver> {
        let pusher = self.pusher(channel)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let resp = self.envelope(id, channel, instruction)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            id,
            Pending {
                channel,
                generation: pusher.generation(),
                tx,
            },
        );
        // Created before the push, so a failed push drops it and removes the entry.
        let receiver = MailboxReceiver {
            id,
            channel,
            timeout,
            rx,
            pending: self.pending.clone(),
        };
        pusher.push(resp)?;
        crate::metrics::METRICS.mailbox_sent.inc();
        debug!(id, %channel, subject = instruction.subject(), "mailbox message sent");
        Ok(receiver)
    }

    /// Sends `instruction` to datanode `node_id` and waits for a successful reply; a
    /// refusal from the node is `InstructionFailed` with its reason.
    pub async fn instruct(
        &self,
        node_id: u64,
        instruction: &Instruction,
        timeout: Duration,
    ) -> Result<()> {
        let reply = self
            .send(NodeKey::datanode(node_id), instruction, timeout)?
            .await?;
        match reply.failure() {
            None => Ok(()),
            Some(message) => crate::error::InstructionFailedSnafu {
                what: instruction.subject(),
                region_id: instruction.region_id(),
                node_id,
                message,
            }
            .fail(),
        }
    }

    /// Sends without waiting for a reply (id 0).
    pub fn send_oneway(&self, channel: NodeKey, instruction: &Instruction) -> Result<()> {
        self.pusher(channel)?
            .push(self.envelope(0, channel, instruction)?)?;
        crate::metrics::METRICS.mailbox_sent.inc();
        Ok(())
    }

    /// Sends one-way to every connected node of `role`; returns how many it reached.
    /// A full or closed stream is skipped (and logged), never waited on.
    pub fn broadcast(&self, role: Role, instruction: &Instruction) -> Result<usize> {
        let mut reached = 0;
        for pusher in self.pushers.by_role(role) {
            match pusher.push(self.envelope(0, pusher.key(), instruction)?) {
                Ok(()) => {
                    crate::metrics::METRICS.mailbox_sent.inc();
                    reached += 1
                }
                Err(err) => {
                    warn!(node_id = pusher.key().node_id, error = %err, "broadcast skipped a node")
                }
            }
        }
        Ok(reached)
    }

    /// Delivers a reply that arrived on `from`'s stream to its waiting sender.
    pub fn on_recv(&self, from: NodeKey, msg: MailboxMessage) {
        if msg.id == 0 {
            debug!(%from, subject = msg.subject, "one-way mailbox message from a node ignored");
            return;
        }
        let mut pending = lock(&self.pending);
        let Some(entry) = pending.remove(&msg.id) else {
            drop(pending);
            warn!(id = msg.id, %from, subject = msg.subject, "mailbox reply with unknown id (late or bogus); dropped");
            return;
        };
        if entry.channel != from {
            warn!(id = msg.id, %from, expected = %entry.channel, "mailbox reply from the wrong node; dropped");
            pending.insert(msg.id, entry);
            return;
        }
        drop(pending);
        crate::metrics::METRICS.mailbox_replies.inc();
        let reply =
            InstructionReply::from_mailbox_message(&msg).context(BadReplySnafu { channel: from });
        // The receiver may have just given up; then there is no one to tell.
        let _ = entry.tx.send(reply);
    }

    /// Fails every message waiting on `channel`'s session `generation`: the node
    /// disconnected, so no reply can come on that stream.
    pub fn on_channel_closed(&self, channel: NodeKey, generation: u64) {
        let mut pending = lock(&self.pending);
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.channel == channel && p.generation == generation)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(entry) = pending.remove(&id) {
                let _ = entry.tx.send(ChannelClosedSnafu { id, channel }.fail());
            }
        }
    }

    /// How many messages await a reply.
    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// The mailbox as handlers see it ([`handlers::Context::mailbox`]).
#[async_trait::async_trait]
impl handlers::InstructionSender for Mailbox {
    fn send_oneway(&self, node: NodeKey, instruction: &Instruction) -> handlers::Result<()> {
        Mailbox::send_oneway(self, node, instruction)
            .map_err(|e| handlers::Error::custom(e.to_string()))
    }

    async fn instruct(
        &self,
        node: NodeKey,
        instruction: &Instruction,
        timeout: Duration,
    ) -> handlers::Result<InstructionReply> {
        self.send(node, instruction, timeout)
            .map_err(|e| handlers::Error::custom(e.to_string()))?
            .await
            .map_err(|e| handlers::Error::custom(e.to_string()))
    }
}

/// Waits for one reply. Await it (it implements `IntoFuture`) or call
/// [`wait`](Self::wait). Dropping it withdraws the message.
#[derive(Debug)]
pub struct MailboxReceiver {
    id: u64,
    channel: NodeKey,
    timeout: Duration,
    rx: oneshot::Receiver<Result<InstructionReply>>,
    pending: Arc<PendingMap>,
}

impl MailboxReceiver {
    /// The message id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves to the reply, or `Timeout`, or `ChannelClosed`.
    pub async fn wait(mut self) -> Result<InstructionReply> {
        let (id, channel, timeout) = (self.id, self.channel, self.timeout);
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => ChannelClosedSnafu { id, channel }.fail(),
            Err(_) => {
                crate::metrics::METRICS.mailbox_timeouts.inc();
                MailboxTimeoutSnafu {
                    id,
                    channel,
                    timeout,
                }
                .fail()
            }
        }
        // Drop removes the entry if it is still there (the timeout case).
    }
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.id);
    }
}

impl IntoFuture for MailboxReceiver {
    type Output = Result<InstructionReply>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

#[cfg(test)]
mod tests {
    //! The mailbox against in-process pushers (channels stand in for streams), with
    //! tokio's paused clock where time matters, so a timeout bug fails here at once.

    use common_proto::instruction::OpenRole;
    use common_proto::RegionReply;
    use tokio::sync::mpsc;

    use super::*;
    use crate::error::Error;
    use crate::service::pusher::ResponseTx;

    type Inbox = mpsc::Receiver<std::result::Result<Box<HeartbeatResponse>, tonic::Status>>;

    const LEASE: Duration = Duration::from_secs(10);

    fn open(region_id: u64) -> Instruction {
        Instruction::OpenRegion {
            region_id,
            role: OpenRole::Leader,
            epoch: 1,
        }
    }

    fn reply_to(id: u64) -> MailboxMessage {
        InstructionReply::OpenRegion(RegionReply {
            region_id: 1,
            ok: true,
            error: None,
        })
        .to_mailbox_message(id, "dn", "ms")
        .expect("encode")
    }

    /// Connects node `id` (epoch 1, address "a"); returns its pusher's generation and
    /// the inbox its messages arrive in.
    fn connect(pushers: &Pushers, id: u64) -> (u64, Inbox) {
        let (tx, rx): (ResponseTx, Inbox) = mpsc::channel(8);
        let p = pushers
            .register(
                NodeKey::datanode(id),
                1,
                "a",
                tx,
                tokio::time::Instant::now(),
                LEASE,
            )
            .expect("register");
        (p.generation(), rx)
    }

    fn sent_id(inbox: &mut Inbox) -> u64 {
        inbox
            .try_recv()
            .expect("a message was pushed")
            .expect("not an error")
            .mailbox_message
            .expect("a mailbox message")
            .id
    }

    fn setup() -> (Arc<Pushers>, Mailbox) {
        let pushers = Arc::new(Pushers::new());
        let mailbox = Mailbox::new(pushers.clone(), 1, "ms");
        (pushers, mailbox)
    }

    #[tokio::test(start_paused = true)]
    async fn the_envelope_carries_the_cluster_and_protocol_and_the_receiver_its_id() {
        let (pushers, mailbox) = setup();
        let (_, mut inbox) = connect(&pushers, 1);
        let first = mailbox
            .send(NodeKey::datanode(1), &open(1), Duration::from_secs(5))
            .expect("sent");
        let second = mailbox
            .send(NodeKey::datanode(1), &open(2), Duration::from_secs(5))
            .expect("sent");
        for rx in [&first, &second] {
            let resp = inbox.try_recv().expect("pushed").expect("not an error");
            let header = resp.header.expect("a header");
            assert_eq!(header.cluster_id, 1);
            assert_eq!(header.protocol_version, PROTOCOL_VERSION);
            let msg = resp.mailbox_message.expect("a message");
            assert_eq!(msg.id, rx.id(), "the receiver knows its message's id");
        }
        assert_ne!(first.id(), second.id());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_from_another_node_is_dropped_and_the_addressees_reply_lands() {
        let (pushers, mailbox) = setup();
        let (_, mut inbox1) = connect(&pushers, 1);
        let (_, _inbox2) = connect(&pushers, 2);
        let rx = mailbox
            .send(NodeKey::datanode(1), &open(1), Duration::from_secs(5))
            .expect("sent");
        let id = sent_id(&mut inbox1);
        mailbox.on_recv(NodeKey::datanode(2), reply_to(id));
        assert_eq!(
            mailbox.pending_len(),
            1,
            "node 2 cannot answer node 1's message"
        );
        mailbox.on_recv(NodeKey::datanode(1), reply_to(id));
        let reply = tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .expect("delivered at once")
            .expect("the addressee's reply");
        assert!(reply.failure().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn closing_an_old_session_fails_only_that_sessions_messages() {
        let (pushers, mailbox) = setup();
        let (old_gen, mut old_inbox) = connect(&pushers, 1);
        let old_rx = mailbox
            .send(NodeKey::datanode(1), &open(1), Duration::from_secs(5))
            .expect("sent on the old session");
        sent_id(&mut old_inbox);
        // The node reconnects (same process): a new session, a new generation.
        let (new_gen, mut new_inbox) = connect(&pushers, 1);
        assert!(new_gen > old_gen);
        let new_rx = mailbox
            .send(NodeKey::datanode(1), &open(2), Duration::from_secs(5))
            .expect("sent on the new session");
        let new_id = sent_id(&mut new_inbox);
        // The old session's cleanup runs late.
        mailbox.on_channel_closed(NodeKey::datanode(1), old_gen);
        let err = tokio::time::timeout(Duration::from_secs(1), old_rx)
            .await
            .expect("failed at once")
            .expect_err("its stream is gone");
        assert!(matches!(err, Error::ChannelClosed { .. }), "{err}");
        assert_eq!(
            mailbox.pending_len(),
            1,
            "the newer session's message waits on"
        );
        mailbox.on_recv(NodeKey::datanode(1), reply_to(new_id));
        tokio::time::timeout(Duration::from_secs(1), new_rx)
            .await
            .expect("delivered")
            .expect("the newer session's reply");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_fires_at_its_configured_duration_not_later() {
        let (pushers, mailbox) = setup();
        let (_, mut inbox) = connect(&pushers, 1);
        let timeout = Duration::from_millis(250);
        let rx = mailbox
            .send(NodeKey::datanode(1), &open(1), timeout)
            .expect("sent");
        sent_id(&mut inbox);
        let start = tokio::time::Instant::now();
        // The paused clock jumps straight to the next timer: whatever fires first ends
        // this, and it must be the mailbox's own timeout at exactly 250 ms.
        let err = tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .expect("the mailbox timed out before the test's deadline")
            .expect_err("no reply came");
        assert!(matches!(err, Error::MailboxTimeout { .. }), "{err}");
        assert_eq!(start.elapsed(), timeout, "fired at the configured duration");
        assert_eq!(mailbox.pending_len(), 0, "no entry leaked");
    }
}
