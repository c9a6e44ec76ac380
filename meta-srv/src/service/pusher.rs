//! Pushers: one downstream channel per connected node, keyed by `(role, node id)`.
//!
//! Each registration gets a fresh **generation**. A session removes only the pusher with
//! its own generation when it ends, so an old session's cleanup can never delete the
//! pusher of the session that replaced it.
//!
//! Registration rules for a key that already has a pusher:
//! - the old stream is gone (its receiver dropped): replace it;
//! - same node epoch and address: the same process reconnecting: replace it and close the
//!   old stream;
//! - the old stream has been silent for longer than the node lease: replace and close;
//! - otherwise a *second live* process claims the id: refuse with ALREADY_EXISTS.
//!
//! Pushing never blocks: `try_send` on a bounded queue, so a slow or full stream fails
//! its own push and never delays sends to other nodes. The map lock is held only to clone
//! an `Arc`, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::{HeartbeatResponse, Role};
use handlers::NodeKey;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::error::{NodeAlreadyConnectedSnafu, PushFailedSnafu, Result};

/// The sending half of a heartbeat stream's responses. Boxed: a queue slot of the
/// unboxed 320-byte response made every idle stream hold a 10 KB block (tokio allocates
/// 32 slots at a time), 100 MB at 10,000 nodes.
pub type ResponseTx = mpsc::Sender<Result<Box<HeartbeatResponse>, Status>>;

/// One connected node's downstream channel.
#[derive(Debug)]
pub struct Pusher {
    key: NodeKey,
    generation: u64,
    node_epoch: u64,
    addr: String,
    tx: ResponseTx,
    /// Cancelled when a newer session replaces this one; the session then ends.
    replaced: CancellationToken,
    // A synchronous lock (parking_lot): updated on every heartbeat, never held across an await.
    last_seen: Mutex<Instant>,
}

impl Pusher {
    /// The node this pusher reaches.
    pub fn key(&self) -> NodeKey {
        self.key
    }

    /// This registration's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node's epoch when it connected.
    pub fn node_epoch(&self) -> u64 {
        self.node_epoch
    }

    /// The node's advertised address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a response without waiting: fails at once if the stream is full or closed.
    pub fn push(&self, resp: HeartbeatResponse) -> Result<()> {
        self.tx.try_send(Ok(Box::new(resp))).map_err(|e| {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "stream closed",
            };
            PushFailedSnafu {
                channel: self.key,
                reason,
            }
            .build()
        })
    }

    /// Records that a message arrived on this stream.
    pub fn touch(&self, now: Instant) {
        let mut seen = self.last_seen.lock();
        *seen = (*seen).max(now);
    }

    /// Resolves when a newer session has replaced this one.
    pub async fn replaced(&self) {
        self.replaced.cancelled().await
    }

    fn last_seen(&self) -> Instant {
        *self.last_seen.lock()
    }
}

/// The registry of pushers.
#[derive(Debug, Default)]
pub struct Pushers {
    // A synchronous lock (parking_lot): every method is synchronous.
    map: Mutex<HashMap<NodeKey, Arc<Pusher>>>,
    next_generation: AtomicU64,
}

impl Pushers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> parking_lot::MutexGuard<'_, HashMap<NodeKey, Arc<Pusher>>> {
        self.map.lock()
    }

    /// Registers a new session's pusher under the rules in the module docs.
    pub fn register(
        &self,
        key: NodeKey,
        node_epoch: u64,
        addr: &str,
        tx: ResponseTx,
        now: Instant,
        silent_after: Duration,
    ) -> Result<Arc<Pusher>> {
        let mut map = self.map();
        if let Some(old) = map.get(&key) {
            let gone = old.tx.is_closed();
            let same_process = old.node_epoch == node_epoch && old.addr == addr;
            let silent = now.saturating_duration_since(old.last_seen()) > silent_after;
            if !(gone || same_process || silent) {
                return NodeAlreadyConnectedSnafu {
                    message: format!(
                        "node {key} is already connected from {} with epoch {}; this stream claims epoch {node_epoch} from {addr}",
                        old.addr, old.node_epoch
                    ),
                }
                .fail();
            }
            tracing::info!(
                node_id = key.node_id,
                role = key.role.label(),
                old_generation = old.generation,
                gone,
                same_process,
                silent,
                "replacing the previous session"
            );
            old.replaced.cancel();
        }
        let pusher = Arc::new(Pusher {
            key,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed) + 1,
            node_epoch,
            addr: addr.to_string(),
            tx,
            replaced: CancellationToken::new(),
            last_seen: Mutex::new(now),
        });
        map.insert(key, pusher.clone());
        Ok(pusher)
    }

    /// Removes the pusher for `key` only if it still has `generation`. Returns whether it
    /// removed it.
    pub fn deregister(&self, key: NodeKey, generation: u64) -> bool {
        let mut map = self.map();
        if map.get(&key).is_some_and(|p| p.generation == generation) {
            map.remove(&key);
            true
        } else {
            false
        }
    }

    /// The pusher for `key`.
    pub fn get(&self, key: NodeKey) -> Option<Arc<Pusher>> {
        self.map().get(&key).cloned()
    }

    /// Every pusher of a role.
    pub fn by_role(&self, role: Role) -> Vec<Arc<Pusher>> {
        self.map()
            .values()
            .filter(|p| p.key.role == role)
            .cloned()
            .collect()
    }

    /// How many nodes are connected.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no node is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn chan() -> (
        ResponseTx,
        mpsc::Receiver<Result<Box<HeartbeatResponse>, Status>>,
    ) {
        mpsc::channel(1)
    }

    #[tokio::test]
    async fn an_old_session_cleanup_never_removes_a_newer_pusher() {
        let pushers = Pushers::new();
        let key = NodeKey::datanode(1);
        let now = Instant::now();
        let (tx1, _rx1) = chan();
        let old = pushers
            .register(key, 5, "a", tx1, now, LEASE)
            .expect("first");
        let (tx2, _rx2) = chan();
        let new = pushers
            .register(key, 5, "a", tx2, now, LEASE)
            .expect("reconnect");
        assert!(new.generation() > old.generation());
        // The old session was told to stop.
        tokio::time::timeout(Duration::from_secs(1), old.replaced())
            .await
            .expect("old closed");
        assert!(
            !pushers.deregister(key, old.generation()),
            "stale cleanup is a no-op"
        );
        assert_eq!(
            pushers.get(key).expect("still there").generation(),
            new.generation()
        );
        assert!(pushers.deregister(key, new.generation()));
        assert!(pushers.is_empty());
    }

    #[tokio::test]
    async fn a_second_live_process_is_refused_unless_the_first_is_gone_or_silent() {
        let pushers = Pushers::new();
        let key = NodeKey::datanode(2);
        let now = Instant::now();
        let (tx1, rx1) = chan();
        pushers
            .register(key, 5, "a", tx1, now, LEASE)
            .expect("first");
        let (tx2, rx2) = chan();
        let err = pushers
            .register(key, 6, "b", tx2.clone(), now, LEASE)
            .expect_err("refused");
        assert!(err.to_string().contains("already connected"), "{err}");
        // Silent past the node lease: replaced.
        let later = now + LEASE + Duration::from_millis(1);
        pushers
            .register(key, 6, "b", tx2, later, LEASE)
            .expect("silent one replaced");
        drop(rx1);
        // The current stream (epoch 6, seen at `later`) is live: another process is refused.
        let (tx3, _rx3) = chan();
        pushers
            .register(key, 7, "c", tx3.clone(), later, LEASE)
            .expect_err("epoch 6 is live and not silent");
        // Gone (the current stream's receiver dropped): replaced at once, however recent.
        drop(rx2);
        let p = pushers
            .register(key, 7, "c", tx3, later, LEASE)
            .expect("a gone stream is replaced at once");
        assert_eq!(
            pushers.get(key).map(|x| x.generation()),
            Some(p.generation())
        );
    }

    #[tokio::test]
    async fn a_pusher_names_its_node_and_generations_start_at_one() {
        let pushers = Pushers::new();
        assert!(pushers.is_empty());
        let (tx, _rx) = chan();
        let p = pushers
            .register(
                NodeKey::datanode(4),
                77,
                "10.0.0.4:1",
                tx,
                Instant::now(),
                LEASE,
            )
            .expect("reg");
        assert_eq!(p.node_epoch(), 77);
        assert_eq!(p.addr(), "10.0.0.4:1");
        assert_eq!(p.key(), NodeKey::datanode(4));
        assert!(
            p.generation() >= 1,
            "0 is never a live generation, so a cleanup with a default never matches one"
        );
        assert!(!pushers.is_empty());
        assert_eq!(pushers.len(), 1);
    }

    #[tokio::test]
    async fn a_node_heard_from_is_not_silent_and_silence_means_strictly_longer_than_the_lease() {
        let pushers = Pushers::new();
        let key = NodeKey::datanode(5);
        let t0 = Instant::now();
        let (tx1, _rx1) = chan();
        let first = pushers
            .register(key, 1, "a", tx1, t0, LEASE)
            .expect("first");
        // Exactly one lease after the last heartbeat: not yet silent.
        let (tx2, _rx2) = chan();
        pushers
            .register(key, 2, "b", tx2.clone(), t0 + LEASE, LEASE)
            .expect_err("silent only past the lease");
        // A heartbeat then keeps it from being silent a lease later.
        first.touch(t0 + LEASE);
        pushers
            .register(
                key,
                2,
                "b",
                tx2.clone(),
                t0 + LEASE * 2 - Duration::from_millis(1),
                LEASE,
            )
            .expect_err("heard from a moment ago");
        pushers
            .register(
                key,
                2,
                "b",
                tx2,
                t0 + LEASE * 2 + Duration::from_millis(1),
                LEASE,
            )
            .expect("silent past a lease since its last heartbeat");
    }

    #[tokio::test]
    async fn a_full_queue_fails_fast() {
        let pushers = Pushers::new();
        let (tx, _rx) = chan();
        let p = pushers
            .register(NodeKey::datanode(3), 1, "a", tx, Instant::now(), LEASE)
            .expect("reg");
        p.push(HeartbeatResponse::default()).expect("one fits");
        let err = p.push(HeartbeatResponse::default()).expect_err("full");
        assert!(err.to_string().contains("queue full"), "{err}");
    }
}
