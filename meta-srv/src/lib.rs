//! The metasrv: the coordination plane's server.
//!
//! Datanodes hold one bidirectional heartbeat stream each. Every message runs through the
//! [`handlers::HandlerGroup`]; its response goes back on the same stream. Instructions go
//! down the same streams through the [`Mailbox`], and replies come back up matched by id.
//! Only the leader grants leases; standalone, one metasrv always leads on the embedded
//! in-memory backend.
//!
//! Layout:
//! - `config`: [`MetasrvOptions`] and the lease rules checked at start.
//! - `metasrv`: [`Metasrv`] and [`MetasrvBuilder`]: wiring and lifecycle.
//! - `service`: the tonic service; `service::session` runs one stream.
//! - `pusher`: [`Pushers`], the per-node downstream channels, with generations.
//! - `mailbox`: [`Mailbox`], instructions down and replies back, with per-message timers.
//! - `election`: the [`Election`] trait, [`StandaloneElection`] and `EtcdElection`.
//! - `kv_etcd`: `EtcdKvBackend`, the KV port on etcd.
//! - `leader_gate`: leadership as handlers see it: elected *and* leader state ready.
//! - `leader`: [`leader::LeaderScope`], a term's state and tasks; begins and ends terms.
//! - `sweeper`: node-lease expiry and the stats flusher.
//! - `failover`: the phi-accrual detector, the target selector, the region supervisor.
//! - `procedure`: the region-migration procedure (failover, migrate, drain).
//! - `maintenance`: the persisted switch that pauses failover.
//! - `region_admin`: create and drop regions.
//! - `http`: the admin HTTP API.
//! - `error`: typed errors and their gRPC mapping.

pub mod config;
pub mod election;
pub mod error;
pub mod failover;
pub mod http;
pub mod kv_etcd;
pub mod leader;
pub mod leader_gate;
pub mod mailbox;
pub mod maintenance;
pub mod metasrv;
pub mod procedure;
pub mod pusher;
pub mod region_admin;
mod registration;
pub mod service;
mod sweeper;

pub use config::{BackendKind, MetasrvOptions};
pub use election::{Election, ElectionRef, LeaderState, StandaloneElection};
pub use error::{Error, Result};
pub use mailbox::{Mailbox, MailboxReceiver};
pub use metasrv::{Metasrv, MetasrvBuilder};
pub use pusher::{Pusher, Pushers};
pub use region_admin::CreateRegion;
/// Re-exported so embedders and tests can drive [`Election::run`] without a direct
/// tokio-util dependency.
pub use tokio_util::sync::CancellationToken;
