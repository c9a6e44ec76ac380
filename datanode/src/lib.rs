//! The datanode side: the heartbeat task a storage server embeds, and a demo datanode.
//!
//! An embedder implements [`RegionEngine`] for its storage, checks every write against a
//! shared [`RegionLeases`], and calls [`start_heartbeat`]. From then on the node streams
//! heartbeats to the metasrv leader, its regions accept writes only while `now <` their
//! lease deadline (checked at the write), and it follows the metasrv's instructions. Cut off from the
//! metasrv, the node turns its regions readonly on its own, before anyone may take them
//! over.
//!
//! Layout:
//! - `engine`: the [`RegionEngine`] trait; `memory_engine`: [`MemoryRegionEngine`].
//! - `lease`: [`RegionLeases`], the deadlines every write is checked against (fail
//!   closed), and the [`WriteTicket`] an engine confirms before it acknowledges a write.
//! - `alive_keeper`: [`RegionAliveKeeper`], applies grants; one bookkeeping timer.
//! - `meta_client`: leader discovery across all metasrvs, and [`Backoff`].
//! - `heartbeat`: [`HeartbeatTask`], the stream and its sessions.
//! - `instruction`: [`InstructionHandler`], open/close/downgrade/upgrade.
//! - `datanode`: [`start_heartbeat`], the dedicated runtime.
//! - `http`: the demo's data API and status view; `config`: `DatanodeOptions` (both
//!   behind the default `demo` feature, with the binary: without it the library pulls in
//!   no axum, clap or toml).
//! - `metrics`: the node's Prometheus series, read at scrape time.
//! - `tls`: TLS to the metasrv from PEM files (the `tls` feature, on with `demo`).

pub mod alive_keeper;
#[cfg(feature = "demo")]
pub mod config;
pub mod datanode;
pub mod engine;
pub mod error;
pub mod heartbeat;
#[cfg(feature = "demo")]
pub mod http;
pub mod instruction;
pub mod lease;
pub mod memory_engine;
pub mod meta_client;
pub mod metrics;
pub mod region_log;
pub mod status;
#[cfg(feature = "tls")]
pub mod tls;

pub use alive_keeper::RegionAliveKeeper;
#[cfg(feature = "demo")]
pub use config::DatanodeOptions;
pub use datanode::{start_heartbeat, HeartbeatBuilder, HeartbeatHandle};
pub use engine::{RegionEngine, RegionEngineRef, RegionInfo};
pub use error::{Error, Result};
pub use heartbeat::{HeartbeatOptions, HeartbeatTask};
pub use instruction::InstructionHandler;
pub use lease::{RegionLeases, WriteTicket, DEFAULT_LEASE_MARGIN};
pub use memory_engine::MemoryRegionEngine;
pub use meta_client::{Backoff, Connector, ConnectorIo, MetaClient};
pub use status::{HeartbeatStatus, StatusCell};

/// Re-exported so an engine can implement [`RegionEngine`] (an `async_trait`) without
/// depending on the crate itself.
pub use async_trait::async_trait;
/// The protocol types an embedder names: region roles in [`RegionInfo`], node roles.
pub use common_proto::v1::{RegionRole, Role};
/// The shutdown token [`HeartbeatTask::run`] takes.
pub use tokio_util::sync::CancellationToken;
