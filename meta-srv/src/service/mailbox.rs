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
    // A std Mutex: held only for map updates.
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
