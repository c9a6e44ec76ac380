//! [`Metasrv`]: the wiring of ports, pipeline, pushers, mailbox and election, and its
//! lifecycle.
//!
//! Lifecycle: [`MetasrvBuilder::build`] validates the options and loads routes;
//! [`Metasrv::serve`] runs the gRPC service, the admin HTTP, the election, the lease
//! sweeper and the leadership watcher until the shutdown future resolves. Shutdown then
//! resigns leadership (so a successor is elected at once), closes every heartbeat stream,
//! stops accepting, and flushes cached stats.

use std::future::Future;
use std::sync::Arc;

use common_proto::v1::heartbeat_server::HeartbeatServer;
use common_proto::v1::HeartbeatConfig;
use futures::StreamExt;
use handlers::builtin::StatsCache;
use handlers::{
    Context, HandlerGroup, HandlerGroupBuilder, KvBackendRef, KvRegionRouteStore, LeaseOptions,
    MemoryKvBackend, MemoryNodeLeaseStore, TokioClock,
};
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::{Cluster, LeastRegionsSelector, RegionSelectorRef};
use crate::election::{ElectionRef, StandaloneElection};
use crate::error::{HttpServeSnafu, Result, ServeSnafu, StoreSnafu};
use crate::failover::detector::PhiOptions;
use crate::failover::supervisor::{RegionSupervisor, SupervisorOptions};
use crate::leader::gate::LeaderGate;
use crate::leader::LeaderScope;
use crate::maintenance::Maintenance;
use crate::procedure::migration::{MigrationDeps, Migrations};
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;
use crate::service::{HeartbeatService, SessionDeps};
use crate::timings::MemberTimings;
use crate::MetasrvOptions;

/// The heartbeat service's name, as gRPC health and reflection report it.
pub const HEARTBEAT_SERVICE: &str = "meta.v1.Heartbeat";

type Customizer = Box<dyn FnOnce(HandlerGroupBuilder) -> HandlerGroupBuilder + Send>;

/// Builds a [`Metasrv`]; the place operators plug in their handlers, backend or election.
///
/// ```no_run
/// use meta_srv::{MetasrvBuilder, MetasrvOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let srv = MetasrvBuilder::new(MetasrvOptions::default())
///     .bound_to(&grpc, Some(&http))? // advertise what is really listening
///     .handlers(|group| group)       // insert, replace or remove handlers here
///     .build()
///     .await?;
/// srv.serve(grpc, Some(http), async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct MetasrvBuilder {
    options: MetasrvOptions,
    kv: Option<KvBackendRef>,
    election: Option<ElectionRef>,
    customize: Vec<Customizer>,
    selector: Option<RegionSelectorRef>,
}

impl std::fmt::Debug for MetasrvBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetasrvBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MetasrvBuilder {
    /// Starts from options; memory backend and standalone election unless set.
    pub fn new(options: MetasrvOptions) -> Self {
        Self {
            options,
            kv: None,
            election: None,
            customize: Vec::new(),
            selector: None,
        }
    }

    /// Uses this KV backend.
    pub fn kv(mut self, kv: KvBackendRef) -> Self {
        self.kv = Some(kv);
        self
    }

    /// Uses this election.
    pub fn election(mut self, election: ElectionRef) -> Self {
        self.election = Some(election);
        self
    }

    /// Places moving regions with this selector instead of the least-loaded default.
    pub fn selector(mut self, selector: RegionSelectorRef) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Advertises the addresses `grpc` (and `http`) are bound to, for serving on
    /// listeners of one's own (port 0 in tests, a socket from systemd): the election, the
    /// members' records and AskLeader answers name what is really listening. An explicit
    /// `server_addr` still wins for the gRPC address. Serve on the same listeners with
    /// [`Metasrv::serve`].
    pub fn bound_to(
        mut self,
        grpc: &TcpListener,
        http: Option<&TcpListener>,
    ) -> std::io::Result<Self> {
        self.options.bind_addr = grpc.local_addr()?.to_string();
        self.options.http_addr = match http {
            Some(l) => l.local_addr()?.to_string(),
            None => String::new(),
        };
        Ok(self)
    }

    /// Adjusts the default handler group: insert, replace or remove handlers by name.
    /// Calls compose, in order: a second call sees what the first one built, so a library
    /// and its user can each add their handlers.
    pub fn handlers(
        mut self,
        f: impl FnOnce(HandlerGroupBuilder) -> HandlerGroupBuilder + Send + 'static,
    ) -> Self {
        self.customize.push(Box::new(f));
        self
    }

    /// Validates the options, loads routes and assembles the server.
    pub async fn build(self) -> Result<Arc<Metasrv>> {
        let options = self.options;
        options.validate()?;
        let (etcd_kv, etcd_election) = match (&self.kv, &self.election, options.backend) {
            (None, _, crate::BackendKind::Etcd) | (_, None, crate::BackendKind::Etcd) => {
                let (kv, election) = etcd_backends(&options).await?;
                (Some(kv), Some(election))
            }
            _ => (None, None),
        };
        // `durable`: whether the KV outlives this process or this leader. Without a
        // data_dir the memory KV survives nothing, so routes live only in the route table
        // and stats only in the stats cache: one compact copy instead of two.
        let (kv, durable): (KvBackendRef, bool) = match (self.kv, etcd_kv) {
            (Some(kv), _) => (kv, true),
            (None, Some(kv)) => (kv, true),
            (None, None) if options.data_dir.is_empty() => {
                warn!(
                    "memory backend without data_dir: region routes are not persisted; after a \
                     restart every reported region is unknown and datanodes will close it"
                );
                (Arc::new(MemoryKvBackend::new()), false)
            }
            (None, None) => {
                let dir = std::path::Path::new(&options.data_dir);
                std::fs::create_dir_all(dir).map_err(|e| crate::Error::InvalidConfig {
                    reason: format!("cannot create data_dir {}: {e}", dir.display()),
                })?;
                let kv = MemoryKvBackend::with_snapshot(dir.join("metasrv-kv.json")).context(
                    StoreSnafu {
                        op: "open the memory backend snapshot",
                    },
                )?;
                (Arc::new(kv), true)
            }
        };
        // Every write is watched: a failure is logged, counted, and shown by /ready.
        let kv_health = crate::kv_health::WatchedKv::new(kv);
        let kv: KvBackendRef = kv_health.clone();
        let election: ElectionRef = match (self.election, etcd_election) {
            (Some(e), _) => e,
            (None, Some(e)) => e,
            (None, None) => Arc::new(
                StandaloneElection::new(options.advertised_addr())
                    .with_http_addr(options.advertised_http_addr())
                    .with_timings(MemberTimings::from(&options)),
            ),
        };
        let gate = Arc::new(LeaderGate::new(election.leadership(), election.subscribe()));
        let pushers = Arc::new(Pushers::new());
        let mailbox = Arc::new(Mailbox::new(
            pushers.clone(),
            options.cluster_id,
            format!("metasrv@{}", options.advertised_addr()),
        ));
        let routes = Arc::new(if durable {
            KvRegionRouteStore::new(kv.clone())
        } else {
            KvRegionRouteStore::memory_only()
        });
        let ctx = Context {
            cluster_id: options.cluster_id,
            kv,
            leadership: gate.clone(),
            node_leases: Arc::new(MemoryNodeLeaseStore::new()),
            routes: routes.clone(),
            clock: Arc::new(TokioClock),
            leases: LeaseOptions {
                region_lease: options.region_lease,
                node_lease: options.node_lease,
            },
            mailbox: Some(mailbox.clone()),
        };
        // Flushed stats are for a successor leader; a memory KV has none.
        let stats = Arc::new(if durable {
            StatsCache::new(options.stats_flush_every, options.stats_keep)
        } else {
            StatsCache::without_flush(options.stats_keep)
        });
        let mut builder = HandlerGroupBuilder::with_defaults(stats.clone());
        for customize in self.customize {
            builder = customize(builder);
        }
        let group = builder.build().context(StoreSnafu {
            op: "build the handler group",
        })?;
        info!(handlers = ?group.names(), "heartbeat pipeline");
        let shutdown = CancellationToken::new();
        let maintenance = Arc::new(Maintenance::new(ctx.kv.clone()));
        let cluster = Cluster {
            node_leases: ctx.node_leases.clone(),
            pushers: pushers.clone(),
            maintenance: maintenance.clone(),
            stats: stats.clone(),
            kv: ctx.kv.clone(),
            routes: routes.clone(),
            selector: self
                .selector
                .unwrap_or_else(|| Arc::new(LeastRegionsSelector)),
        };
        let migrations = Arc::new(Migrations::new(MigrationDeps {
            kv: ctx.kv.clone(),
            routes: routes.clone(),
            cluster: cluster.clone(),
            mailbox: mailbox.clone(),
            leadership: ctx.leadership.clone(),
            gate: gate.clone(),
            lease_wait: options.lease_wait(),
            instruction_timeout: options.mailbox_timeout,
        }));
        let supervisor = Arc::new(RegionSupervisor::new(
            SupervisorOptions {
                enabled: options.region_failover,
                tick: (options.heartbeat_interval / 4).max(std::time::Duration::from_millis(20)),
                node_lease: options.node_lease,
                phi: PhiOptions::from_timings(options.heartbeat_interval, options.region_lease),
                silence_limit: crate::failover::judgement::silence_limit(
                    options.heartbeat_interval,
                    options.region_lease,
                    options.lease_drift_margin,
                ),
            },
            migrations.clone(),
            maintenance.clone(),
            cluster.clone(),
            ctx.node_leases.clone(),
            ctx.leadership.clone(),
        ));
        let sweeper = crate::leader::sweeper::Sweeper {
            ctx: ctx.clone(),
            cluster: cluster.clone(),
            gate: gate.clone(),
            stats: stats.clone(),
            node_lease: options.node_lease,
            sweep_interval: options.sweep_interval(),
            flush_interval: options.stats_flush_interval,
        };
        let leader = Arc::new(LeaderScope::new(
            election.clone(),
            gate.clone(),
            ctx.clone(),
            routes.clone(),
            stats.clone(),
            migrations,
            maintenance,
            supervisor,
            sweeper,
            shutdown.clone(),
        ));
        // Already leading (standalone): begin the term now, so the first heartbeat is
        // served.
        let state = election.subscribe().borrow().clone();
        if state.is_leader {
            leader
                .begin(state.seq, state.term)
                .await
                .context(StoreSnafu {
                    op: "load leader state",
                })?;
            info!(backend = ctx.kv.name(), "leading from the start");
        }
        let forwarder = crate::admin::http::forward::client(&options.tls())?;
        Ok(Arc::new(Metasrv {
            forwarder,
            kv_health,
            options,
            ctx,
            group: Arc::new(group),
            pushers,
            mailbox,
            election,
            gate,
            stats,
            routes,
            cluster,
            leader,
            shutdown,
        }))
    }
}

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
            ctx: self.ctx.clone(),
            routes: self.routes.clone(),
            election: self.election.clone(),
            gate: self.gate.clone(),
            mailbox: self.mailbox.clone(),
            pushers: self.pushers.clone(),
            cluster: self.cluster.clone(),
            group: self.group.clone(),
            admin: self.region_admin(),
            leader: self.leader.clone(),
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
            cluster_id: self.options.cluster_id,
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

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn serve(
        self: &Arc<Self>,
        grpc: TcpListener,
        http: Option<TcpListener>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        if let Ok(bound) = grpc.local_addr() {
            if self.options.server_addr.is_empty() && bound.to_string() != self.options.bind_addr {
                warn!(
                    advertised = %self.options.advertised_addr(),
                    bound = %bound,
                    "serving on a listener other than the advertised address: nodes will dial \
                     the advertised one (build with MetasrvBuilder::bound_to, or set server_addr)"
                );
            }
        }
        // TLS first: a listener that cannot serve fails the start before anything runs.
        // Handshakes happen in `TlsIncoming`, not in tonic or axum, so each failure is
        // logged and counted; tonic still reads the client certificate from the stream.
        let tls = self.options.tls();
        let grpc = if tls.enabled() {
            let addr = self.options.bind_addr.clone();
            Accepting::Tls(
                crate::tls::TlsIncoming::new(grpc, tls.grpc_server()?, "grpc")
                    .context(crate::error::BindSnafu { what: "gRPC", addr })?,
            )
        } else {
            Accepting::Plain(grpc)
        };
        let http = match http {
            Some(listener) if tls.enabled() => {
                let addr = self.options.http_addr.clone();
                Some(Accepting::Tls(
                    crate::tls::TlsIncoming::new(listener, tls.http_server()?, "admin").context(
                        crate::error::BindSnafu {
                            what: "admin HTTP",
                            addr,
                        },
                    )?,
                ))
            }
            Some(listener) => Some(Accepting::Plain(listener)),
            None => None,
        };
        let token = self.shutdown.clone();
        let mut tasks = tokio::task::JoinSet::new();
        {
            let election = self.election.clone();
            let t = token.child_token();
            tasks.spawn(async move {
                if let Err(err) = election.run(t).await {
                    error!(error = %err, "election stopped with an error");
                }
            });
        }
        tasks.spawn(self.leader.clone().watch());
        tasks.spawn(crate::timings::watch_agreement(
            self.election.clone(),
            self.options.advertised_addr().to_string(),
            MemberTimings::from(&self.options),
            token.clone(),
        ));
        {
            let srv = self.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = signal => info!("shutdown requested"),
                    _ = srv.shutdown.cancelled() => {}
                }
                if let Err(err) = srv.election.resign().await {
                    warn!(error = %err, "resign failed; a successor waits for the lease TTL");
                }
                srv.shutdown.cancel();
            });
        }

        // gRPC health: the server is SERVING while it runs; `meta.v1.Heartbeat` is
        // SERVING only while this metasrv leads (read from the leadership deadline at every
        // announced change, and every tick, so a lapse shows even if nobody announced it).
        let (health, health_service) = tonic_health::server::health_reporter();
        {
            let leadership = self.ctx.leadership.clone();
            let mut changes = self.election.subscribe();
            let t = token.clone();
            let every =
                (self.options.heartbeat_interval / 4).max(std::time::Duration::from_millis(50));
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(every);
                let mut last = None;
                loop {
                    tokio::select! {
                        _ = t.cancelled() => {
                            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                            return;
                        }
                        _ = tick.tick() => {}
                        // Announced changes show at once; the tick catches a silent lapse.
                        Ok(()) = changes.changed() => {}
                    }
                    let leading = leadership.is_leader();
                    if last != Some(leading) {
                        let status = if leading {
                            tonic_health::ServingStatus::Serving
                        } else {
                            tonic_health::ServingStatus::NotServing
                        };
                        health.set_service_status(HEARTBEAT_SERVICE, status).await;
                        last = Some(leading);
                    }
                }
            });
        }
        // Reflection in both protocol versions: grpcurl speaks v1, older tools v1alpha.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(common_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| crate::Error::InvalidConfig {
            reason: format!("gRPC reflection: {e}"),
        };
        let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
        let reflection_alpha = reflection_builder()
            .build_v1alpha()
            .map_err(reflection_error)?;
        let service = HeartbeatServer::new(self.heartbeat_service())
            .max_decoding_message_size(self.options.max_message_bytes)
            .max_encoding_message_size(self.options.max_message_bytes);
        let grpc_router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(self.options.heartbeat_interval))
            .http2_keepalive_timeout(Some(self.options.node_lease))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(service);
        let grpc_fut = async {
            match grpc {
                Accepting::Tls(incoming) => {
                    grpc_router
                        .serve_with_incoming_shutdown(
                            incoming.into_stream(),
                            token.clone().cancelled_owned(),
                        )
                        .await
                }
                Accepting::Plain(listener) => {
                    // `tcp_nodelay` on the builder applies only to listeners tonic opens
                    // itself; on our own listener every accepted socket is set here.
                    // Without it, Nagle held the first data frame of every new stream and
                    // every mailbox push ~40 ms.
                    let incoming = TcpListenerStream::new(listener).map(|conn| {
                        if let Ok(stream) = &conn {
                            if let Err(err) = stream.set_nodelay(true) {
                                warn!(error = %err, "cannot set TCP_NODELAY on an accepted stream");
                            }
                        }
                        conn
                    });
                    grpc_router
                        .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned())
                        .await
                }
            }
        };
        let http_fut = async {
            let router = crate::admin::http::router(self.admin_state());
            let stop = token.clone().cancelled_owned();
            match http {
                Some(Accepting::Tls(incoming)) => axum::serve(incoming, router)
                    .with_graceful_shutdown(stop)
                    .await
                    .context(HttpServeSnafu),
                Some(Accepting::Plain(listener)) => {
                    use axum::serve::ListenerExt;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                        .context(HttpServeSnafu)
                }
                None => Ok(()),
            }
        };
        let (grpc_res, http_res) = tokio::join!(grpc_fut, http_fut);
        // Whatever ended first, everything stops.
        token.cancel();
        while tasks.join_next().await.is_some() {}
        self.flush_stats().await;
        info!("metasrv stopped");
        grpc_res.context(ServeSnafu)?;
        http_res
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

/// A listener, plain or behind TLS handshakes.
enum Accepting {
    Plain(TcpListener),
    Tls(crate::tls::TlsIncoming),
}

/// The etcd KV backend and election, over one pool: one lazily connected client per
/// endpoint, with failover between them (see [`crate::etcd_pool`]). Nothing is dialled
/// here, so a member that is down at start, or etcd starting a moment after the
/// metasrv, costs nothing but a retried call.
#[cfg(feature = "etcd")]
async fn etcd_backends(options: &MetasrvOptions) -> Result<(handlers::KvBackendRef, ElectionRef)> {
    use crate::etcd_pool::{EtcdPool, PoolOptions};
    let endpoints = options.store_addrs.clone();
    let mut pool_options = PoolOptions::for_meta_lease(options.meta_lease);
    let etcd_tls = options.etcd_tls();
    if etcd_tls.enabled() {
        pool_options.tls = Some(etcd_tls.grpc_client()?);
    }
    let pool = EtcdPool::connect(&endpoints, &pool_options).await.context(
        crate::error::EtcdConnectSnafu {
            endpoints: endpoints.join(","),
        },
    )?;
    if endpoints.len() == 1 {
        warn!(
            endpoint = %endpoints[0],
            "one etcd endpoint: if it fails there is nothing to fail over to; list every etcd member in store_addrs"
        );
    }
    info!(endpoints = ?endpoints, "etcd endpoints configured");
    let pool = Arc::new(pool);
    let kv = Arc::new(crate::kv_etcd::EtcdKvBackend::new(
        pool.clone(),
        &options.store_key_prefix,
        options.meta_lease,
    ));
    let election = Arc::new(
        crate::election::EtcdElection::new(
            pool,
            &options.store_key_prefix,
            options.advertised_addr(),
            options.meta_lease,
            options.lease_drift_margin,
        )
        .with_http_addr(options.advertised_http_addr())
        .with_timings(crate::timings::MemberTimings::from(options)),
    );
    Ok((kv, election))
}

/// Built without etcd: asking for it is a configuration error, said at start.
#[cfg(not(feature = "etcd"))]
async fn etcd_backends(_options: &MetasrvOptions) -> Result<(handlers::KvBackendRef, ElectionRef)> {
    crate::error::InvalidConfigSnafu {
        reason: "backend etcd: this metasrv was built without the `etcd` feature".to_string(),
    }
    .fail()
}
