//! [`MetasrvBuilder`]: validates the options, picks the backends (etcd, a snapshot
//! file, or memory), and wires the ports, the handler pipeline, the cluster model, the
//! procedures and the leader scope into a [`Metasrv`].

use std::sync::Arc;

use handlers::builtin::StatsCache;
use handlers::{
    Context, HandlerGroupBuilder, KvBackendRef, KvRegionRouteStore, LeaseOptions, MemoryKvBackend,
    MemoryNodeLeaseStore, TokioClock,
};
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Metasrv;
use crate::cluster::{Cluster, LeastRegionsSelector, RegionSelectorRef};
use crate::election::{ElectionRef, StandaloneElection};
use crate::error::{Result, StoreSnafu};
use crate::failover::detector::PhiOptions;
use crate::failover::supervisor::{RegionSupervisor, SupervisorOptions};
use crate::leader::gate::LeaderGate;
use crate::leader::LeaderScope;
use crate::maintenance::Maintenance;
use crate::procedure::migration::{MigrationDeps, Migrations};
use crate::service::mailbox::Mailbox;
use crate::service::pusher::Pushers;
use crate::timings::MemberTimings;
use crate::MetasrvOptions;

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
