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
use crate::heartbeat::{HeartbeatOptions, HeartbeatTask, StatusCell};
use crate::lease::RegionLeases;
use crate::meta_client::MetaClient;

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
