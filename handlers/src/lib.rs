//! The heartbeat handler pipeline, and the narrow ports its handlers use.
//!
//! Every heartbeat a node sends is validated once, at the edge, into a [`Heartbeat`], and
//! runs through a [`HandlerGroup`]: an ordered list of [`HeartbeatHandler`]s that each
//! read it and fill a shared [`HeartbeatAccumulator`], which becomes the response. Operators depend on this crate
//! alone to write their own handler and place it in the group by name.
//!
//! Handlers reach the outside world only through the ports in [`Context`]: a
//! [`KvBackend`], a [`LeadershipView`], a [`NodeLeaseStore`], a [`RegionRouteStore`] and a
//! [`Clock`]. The metasrv supplies production implementations (etcd, election); the
//! in-memory ones here are the embedded standalone backend and what unit tests drive.
//!
//! Layout:
//! - `handler`: the [`HeartbeatHandler`] trait, [`HandleControl`], [`ErrorPolicy`].
//! - `accumulator`: [`HeartbeatAccumulator`] and the one conversion into a response.
//! - `group` / `builder`: [`HandlerGroup`] (runs, times, applies the error policy) and
//!   [`HandlerGroupBuilder`] (named insert/replace/remove, checked at build).
//! - `context`: [`Context`], the bundle of ports handed to every handler;
//!   `instructions`: [`InstructionSender`], the mailbox as a port.
//! - `builtin`: CollectStats, CheckLeader, KeepLease, RegionLease, PersistStats.
//! - `heartbeat`, `stat`: the validated request ([`Heartbeat`], the only way to build one
//!   is to parse and check a request) and the per-node stats it carries ([`Stat`]).
//! - ports: `kv` (+ `kv::memory`), `leadership`, `node_lease`, `route`, `clock`.
//! - `error`: the crate's typed errors.
//! - `metrics`: the pipeline's Prometheus series (per-handler latency, errors, refusals).

pub mod accumulator;
pub mod builder;
pub mod builtin;
pub mod clock;
pub mod context;
pub mod error;
pub mod group;
pub mod handler;
pub mod heartbeat;
pub mod instructions;
pub mod kv;
pub mod leadership;
pub mod metrics;
pub mod node_lease;
pub mod route;
pub mod stat;

#[cfg(test)]
pub(crate) mod test_util;

pub use accumulator::HeartbeatAccumulator;
pub use builder::HandlerGroupBuilder;
pub use clock::{Clock, ClockRef, ManualClock, TokioClock};
pub use context::{Context, LeaseOptions};
pub use error::{Error, Result};
pub use group::{HandlerGroup, HandlerTiming};
pub use handler::{ErrorPolicy, HandleControl, HeartbeatHandler};
pub use heartbeat::Heartbeat;
pub use instructions::{InstructionSender, InstructionSenderRef};
pub use kv::{BatchOp, FaultyKv, KeyValue, KvBackend, KvBackendRef, MemoryKvBackend};
pub use leadership::{LeaderLease, LeadershipRef, LeadershipView};
pub use node_lease::{MemoryNodeLeaseStore, NodeKey, NodeLease, NodeLeaseStore, NodeLeaseStoreRef};
pub use route::{KvRegionRouteStore, RegionRoute, RegionRouteStore, RegionRouteStoreRef};
pub use stat::Stat;

/// Re-exported so a custom handler can implement [`HeartbeatHandler`] (an `async_trait`)
/// without depending on the crate itself.
pub use async_trait::async_trait;
/// The protocol types a handler names.
pub use common_proto::v1::{HeartbeatRequest, RegionRole, Role};
