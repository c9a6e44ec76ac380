//! Wiring: start the heartbeat task and the keeper on their own runtime.
//!
//! The heartbeat task and the RegionAliveKeeper run on a dedicated single-threaded
//! runtime, on their own OS thread, so a busy engine or data API on the main runtime can
//! never delay a heartbeat or an expiry. [`HeartbeatHandle::stop`] stops both and joins
//! the thread; dropping the handle stops them too.

use std::sync::Arc;
use std::thread::JoinHandle;

use snafu::ResultExt;
use tokio_util::sync::CancellationToken;

use crate::alive_keeper::RegionAliveKeeper;
use crate::engine::RegionEngineRef;
use crate::error::{Result, RuntimeSnafu};
use crate::heartbeat::{HeartbeatOptions, HeartbeatTask};
use crate::lease::RegionLeases;
use crate::meta_client::MetaClient;
use crate::status::StatusCell;

/// A running heartbeat task and keeper.
#[derive(Debug)]
pub struct HeartbeatHandle {
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
    /// The keeper, shared with the data path.
    pub keeper: Arc<RegionAliveKeeper>,
    /// The heartbeat status.
    pub status: Arc<StatusCell>,
}

impl HeartbeatHandle {
    /// Stops the task and the keeper and waits for their thread.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts heartbeating for `engine` on a dedicated runtime thread. `leases` must be the
/// same [`RegionLeases`] the engine checks on every write: the keeper applies grants to it.
///
/// If the task stops, for a shutdown, an error or anything else, nothing stays writable
/// past its deadline: the write path checks the deadline itself.
pub fn start_heartbeat(
    client: MetaClient,
    opts: HeartbeatOptions,
    engine: RegionEngineRef,
    leases: Arc<RegionLeases>,
) -> Result<HeartbeatHandle> {
    let keeper = RegionAliveKeeper::new(engine.clone(), leases);
    let task = HeartbeatTask::new(client, opts, engine, keeper.clone());
    let status = task.status();
    let shutdown = CancellationToken::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context(RuntimeSnafu)?;
    let (k, t) = (keeper.clone(), shutdown.clone());
    let thread = std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            runtime.block_on(async move {
                let keeper_task = tokio::spawn(k.run(t.clone()));
                task.run(t).await;
                let _ = keeper_task.await;
            });
        })
        .context(RuntimeSnafu)?;
    Ok(HeartbeatHandle {
        shutdown,
        thread: Some(thread),
        keeper,
        status,
    })
}

/// Builds and starts a node's heartbeat: the node id given once, the epoch (this
/// process's start, which tells the metasrv about restarts) filled in, defaults for the
/// rest. The short way to [`start_heartbeat`]:
///
/// ```no_run
/// # async fn demo(engine: datanode::RegionEngineRef, leases: std::sync::Arc<datanode::RegionLeases>) -> datanode::Result<()> {
/// let handle = datanode::HeartbeatBuilder::new(7, vec!["10.0.0.1:3002".into()])
///     .advertise_addr("10.0.0.7:4001")
///     .extension("label.zone", "a")
///     .start(engine, leases)?;
/// # handle.stop(); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HeartbeatBuilder {
    node_id: u64,
    metasrv_addrs: Vec<String>,
    cluster_id: u64,
    advertise_addr: String,
    heartbeat_interval: std::time::Duration,
    rpc_timeout: std::time::Duration,
    extensions: std::collections::HashMap<String, String>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl HeartbeatBuilder {
    /// Node `node_id` of cluster 1, heartbeating to whichever of `metasrv_addrs` leads.
    pub fn new(node_id: u64, metasrv_addrs: Vec<String>) -> Self {
        Self {
            node_id,
            metasrv_addrs,
            cluster_id: 1,
            advertise_addr: String::new(),
            heartbeat_interval: std::time::Duration::from_secs(3),
            rpc_timeout: std::time::Duration::from_secs(1),
            extensions: crate::heartbeat::default_extensions(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Dials the metasrvs over TLS: the CA to trust, and a client certificate naming this
    /// node (`datanode-<id>`) when the metasrv requires mutual TLS. See
    /// [`crate::tls::ClientTlsFiles`] to load one from PEM files.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The cluster id (default 1).
    pub fn cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = cluster_id;
        self
    }

    /// The address the metasrv shows for this node.
    pub fn advertise_addr(mut self, addr: impl Into<String>) -> Self {
        self.advertise_addr = addr.into();
        self
    }

    /// The interval until the metasrv's handshake sets its own (default 3 s).
    pub fn heartbeat_interval(mut self, interval: std::time::Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Timeout of leader discovery and connect calls (default 1 s).
    pub fn rpc_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Adds an extension sent with every heartbeat (beside `version`).
    pub fn extension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.insert(key.into(), value.into());
        self
    }

    /// Starts heartbeating for `engine`, whose writes check `leases`.
    pub fn start(
        self,
        engine: RegionEngineRef,
        leases: Arc<RegionLeases>,
    ) -> Result<HeartbeatHandle> {
        let client = MetaClient::new(
            self.metasrv_addrs,
            self.cluster_id,
            self.node_id,
            self.rpc_timeout,
        );
        #[cfg(feature = "tls")]
        let client = match self.tls {
            Some(tls) => client.with_tls(tls),
            None => client,
        };
        let opts = HeartbeatOptions {
            node_id: self.node_id,
            advertise_addr: self.advertise_addr,
            node_epoch: common_proto::unix_millis(),
            initial_interval: self.heartbeat_interval,
            rpc_timeout: self.rpc_timeout,
            extensions: self.extensions,
            jitter_seed: None,
        };
        start_heartbeat(client, opts, engine, leases)
    }
}
