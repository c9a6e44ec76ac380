//! The metasrv: the coordination plane's server.
//!
//! Datanodes hold one bidirectional heartbeat stream each. Every message is validated
//! once, where the session receives it, into a [`handlers::Heartbeat`], and runs through
//! the [`handlers::HandlerGroup`]; its response goes back on the same stream. Instructions go
//! down the same streams through the [`Mailbox`], and replies come back up matched by id.
//! Only the leader grants leases; standalone, one metasrv always leads on the embedded
//! in-memory backend.
//!
//! Layout (folders follow the architecture):
//! - `config`: [`MetasrvOptions`] and the lease rules checked at start.
//! - `metasrv/`: [`Metasrv`] and its narrow handles; `builder` ([`MetasrvBuilder`], the
//!   wiring), `serve` (listeners, tasks, shutdown), `health` (gRPC health follows
//!   leadership).
//! - `service/`: the tonic service and its sessions; [`Pushers`], the per-node downstream
//!   channels with generations; the [`Mailbox`], instructions down and replies back.
//! - `election/`: the [`Election`] trait, [`StandaloneElection`] and `EtcdElection`,
//!   leadership held as a deadline.
//! - `leader/`: [`leader::LeaderScope`], a term's state and tasks; `leader::gate`,
//!   leadership as handlers see it; `leader::lease_bound`, the longest region lease any
//!   leader may have granted, recorded for every successor; `leader::sweeper`, node-lease
//!   expiry and stats flushes.
//! - `timings`: each member's registered timings, and the warning when they differ.
//! - `cluster/`: [`cluster::Cluster`], the leader's read-only model of nodes (one
//!   `reach`), their storage, and placement (the `RegionSelector`, for every path).
//! - `failover/`: the phi-accrual detector, the judgement, the region supervisor.
//! - `procedure/`: the region-migration procedure (failover, migrate, drain: its record,
//!   manager and steps) and the drain of a node.
//! - `maintenance`: the persisted switch that pauses failover.
//! - `metrics`: the Prometheus registry behind `GET /metrics`.
//! - `admin/`: the admin HTTP API and region creation and removal.
//! - `kv_health`: the KV backend watched for failed writes (persist, then apply; `/ready`).
//! - `kv_etcd`: `EtcdKvBackend`, the KV port on etcd; `etcd_pool`: [`EtcdPool`], one
//!   client per etcd endpoint with failover between them.
//! - `tls`: TLS for the gRPC port, the admin HTTP, the forwarder and etcd, and the node
//!   identity a client certificate carries.
//! - `error`: typed errors and their gRPC mapping.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod election;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd_pool;
pub mod failover;
pub mod heap;
#[cfg(feature = "etcd")]
pub mod kv_etcd;
pub mod kv_health;
pub mod leader;
pub mod maintenance;
pub mod metasrv;
pub mod metrics;
pub mod procedure;
mod registration;
pub mod service;
pub mod timings;
pub mod tls;

pub use admin::region::{CreateRegion, RegionAdmin};
pub use config::{BackendKind, MetasrvOptions};
pub use election::{Election, ElectionRef, LeaderState, StandaloneElection};
pub use error::{Error, Result};
#[cfg(feature = "etcd")]
pub use etcd_pool::EtcdPool;
pub use metasrv::{Metasrv, MetasrvBuilder};
pub use service::mailbox::{Mailbox, MailboxReceiver};
pub use service::pusher::{Pusher, Pushers};
/// Re-exported so embedders and tests can drive [`Election::run`] without a direct
/// tokio-util dependency.
pub use tokio_util::sync::CancellationToken;
