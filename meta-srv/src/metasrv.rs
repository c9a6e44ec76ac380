//! [`Metasrv`]: the wiring of ports, pipeline, pushers, mailbox and election, and its
//! lifecycle.
//!
//! Lifecycle: [`MetasrvBuilder::build`] validates the options and loads routes;
//! [`Metasrv::serve`] runs the gRPC service, the admin HTTP, the election, the lease
//! sweeper and the leadership watcher until the shutdown future resolves. Shutdown then
//! resigns leadership (so a successor is elected at once), closes every heartbeat stream,
//! stops accepting, and flushes cached stats.
//!
//! Layout: `builder` (options to a wired [`Metasrv`]), `serve` (listeners, tasks,
//! shutdown), `health` (gRPC health follows leadership); this file holds the server's
//! parts and the narrow handles it gives each consumer.

mod builder;
mod health;
mod serve;

use std::sync::Arc;

use common_proto::v1::HeartbeatConfig;
use handlers::builtin::StatsCache;
use handlers::{Context, HandlerGroup, KvRegionRouteStore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use builder::MetasrvBuilder;
pub use health::HEARTBEAT_SERVICE;

use crate::cluster::Cluster;
use crate::election::ElectionRef;
use crate::failover::supervisor::RegionSupervisor;
use crate::leader::gate::LeaderGate;
use crate::leader::LeaderScope;
use crate::maintenance::Maintenance;
use crate::procedure::migration::Migrations;
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;
use crate::service::{HeartbeatService, SessionDeps};
use crate::MetasrvOptions;

/// A metasrv: everything the heartbeat service, admin API and background tasks share.
#[derive(Debug)]
pub struct Metasrv {
    pub(crate) options: MetasrvOptions,
    pub(crate) ctx: Context,
    pub(crate) group: Arc<HandlerGroup>,
    pub(crate) pushers: Arc<Pushers>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) election: ElectionRef,
    pub(crate) gate: Arc<LeaderGate>,
    pub(crate) stats: Arc<StatsCache>,
    pub(crate) routes: Arc<KvRegionRouteStore>,
    pub(crate) cluster: Cluster,
    pub(crate) leader: Arc<LeaderScope>,
    pub(crate) shutdown: CancellationToken,
    /// Followers' client to the leader's admin HTTP (over TLS when it is on).
    pub(crate) forwarder: crate::admin::http::forward::ForwardClient,
    /// The KV backend's write health, for `/ready`.
    pub(crate) kv_health: Arc<crate::kv_health::WatchedKv>,
}

impl Metasrv {
    /// The options it runs with.
    pub fn options(&self) -> &MetasrvOptions {
        &self.options
    }

    /// The handler context (ports).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The handler pipeline, e.g. for its timings.
    pub fn handler_group(&self) -> &HandlerGroup {
        &self.group
    }

    /// The mailbox, to send instructions to nodes.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// The connected nodes' pushers.
    pub fn pushers(&self) -> &Arc<Pushers> {
        &self.pushers
    }

    /// The election.
    pub fn election(&self) -> &ElectionRef {
        &self.election
    }

    /// Leadership as handlers see it, with the grant log.
    pub fn gate(&self) -> &Arc<LeaderGate> {
        &self.gate
    }

    /// Recent stats per node.
    pub fn stats(&self) -> &Arc<StatsCache> {
        &self.stats
    }

    /// The leader's model of the cluster: nodes, storage, placement.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The region-migration procedures (failover, migrate, drain).
    pub fn migrations(&self) -> &Arc<Migrations> {
        &self.leader.migrations
    }

    /// The maintenance switch.
    pub fn maintenance(&self) -> &Arc<Maintenance> {
        &self.leader.maintenance
    }

    /// The region supervisor (failed nodes, unavailable regions).
    pub fn supervisor(&self) -> &Arc<RegionSupervisor> {
        &self.leader.supervisor
    }

    /// The handshake config sent on each stream's first response.
    pub(crate) fn heartbeat_config(&self) -> HeartbeatConfig {
        let interval = self.options.heartbeat_interval.as_millis() as u64;
        HeartbeatConfig {
            heartbeat_interval_ms: interval,
            retry_interval_ms: interval.div_ceil(3).max(1),
        }
    }

    /// The admin API's state, over only what its handlers use.
    pub fn admin_state(&self) -> crate::admin::http::AdminState {
        crate::admin::http::AdminState {
            options: Arc::new(self.options.clone()),
            kv: self.ctx.kv.clone(),
            clock: self.ctx.clock.clone(),
            routes: self.routes.clone(),
            election: self.election.clone(),
            gate: self.gate.clone(),
            mailbox: self.mailbox.clone(),
            pushers: self.pushers.clone(),
            cluster: self.cluster.clone(),
            group: self.group.clone(),
            admin: self.region_admin(),
            migrations: self.leader.migrations.clone(),
            maintenance: self.leader.maintenance.clone(),
            supervisor: self.leader.supervisor.clone(),
            forwarder: self.forwarder.clone(),
            kv_health: self.kv_health.clone(),
        }
    }

    /// Region creation and removal.
    pub fn region_admin(&self) -> crate::admin::region::RegionAdmin {
        crate::admin::region::RegionAdmin::new(
            self.ctx.leadership.clone(),
            self.routes.clone(),
            self.cluster.clone(),
            self.mailbox.clone(),
            self.leader.migrations.clone(),
            self.options.mailbox_timeout,
        )
    }

    /// The gRPC heartbeat service, over only what its sessions use.
    pub fn heartbeat_service(&self) -> HeartbeatService {
        HeartbeatService::new(SessionDeps {
            node_lease: self.options.node_lease,
            heartbeat_config: self.heartbeat_config(),
            ctx: self.ctx.clone(),
            group: self.group.clone(),
            pushers: self.pushers.clone(),
            mailbox: self.mailbox.clone(),
            election: self.election.clone(),
            gate: self.gate.clone(),
            shutdown: self.shutdown.clone(),
            self_addr: self.options.advertised_addr().to_string(),
            mtls: !self.options.tls_ca.is_empty(),
        })
    }

    /// Asks the server to stop (as the shutdown signal would).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    async fn flush_stats(&self) {
        match self.stats.flush_all(&*self.ctx.kv).await {
            Ok(0) => {}
            Ok(n) => info!(nodes = n, "flushed cached stats"),
            Err(err) => warn!(error = %err, "failed to flush cached stats on shutdown"),
        }
    }
}
