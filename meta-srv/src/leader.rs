//! [`LeaderScope`]: everything that exists only while this metasrv leads, per term.
//!
//! A **term** begins when the election says "leader" and ends when it says otherwise.
//! Beginning: forget old leader state, reload routes, load node registrations (each known
//! node gets a grace of one node lease, since it is unknown until its first heartbeat),
//! read maintenance mode, record the lease bound ([`lease_bound`]: a leader that cannot
//! does not lead), open the gate (from here handlers may grant), then start the
//! term's tasks ([`term::TermTasks`]): the region supervisor, the node-lease sweeper, the
//! stats flusher, the lowering of the lease bound, and every migration an earlier leader
//! left unfinished. Ending: cancel the term's tasks, close the gate, wait until every
//! task has stopped, then drop leader-only state (leases, stats).
//!
//! Layout: `gate` ([`gate::LeaderGate`], leadership as handlers see it, and the grant
//! log); `term` (a term's tasks, cancelled and joined together); `stall` (one rule for
//! telling this process's own stalls from late ticks); `sweeper` (node-lease expiry and
//! the stats flusher).
//!
//! The scope holds narrow handles, not the whole server: sessions and HTTP reach the
//! parts they use through [`Metasrv`](crate::Metasrv) accessors.

pub mod gate;
pub mod lease_bound;
pub mod stall;
pub mod sweeper;
pub mod term;

use std::sync::Arc;

use handlers::builtin::StatsCache;
use handlers::{Context, KvRegionRouteStore};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::election::ElectionRef;
use crate::failover::supervisor::RegionSupervisor;
use crate::leader::gate::LeaderGate;
use crate::leader::sweeper::Sweeper;
use crate::leader::term::TermTasks;
use crate::maintenance::Maintenance;
use crate::procedure::migration::Migrations;

/// Lowers the recorded lease bound to this term's own lease at `at`, when no longer
/// grant of an earlier term can be live (see [`lease_bound`]); a term task.
async fn lower_bound_at(
    kv: handlers::KvBackendRef,
    gate: Arc<LeaderGate>,
    written: lease_bound::BoundRecord,
    own: lease_bound::Bound,
    at: tokio::time::Instant,
) {
    tokio::time::sleep_until(at).await;
    if !handlers::LeadershipView::is_leader(gate.as_ref()) {
        return;
    }
    match lease_bound::lower(&kv, written, own).await {
        Ok(true) => info!(
            lease_bound_ms = own.lease.as_millis() as u64,
            "the earlier terms' longer leases have run out; lease bound lowered to this term's"
        ),
        Ok(false) => info!("the lease bound changed since this term recorded it; left alone"),
        Err(err) => {
            warn!(error = %err, "could not lower the lease bound; lease waits stay long until the next term")
        }
    }
}

/// Leader-only state and the current term's tasks.
#[derive(Debug)]
pub struct LeaderScope {
    pub(crate) election: ElectionRef,
    pub(crate) gate: Arc<LeaderGate>,
    pub(crate) ctx: Context,
    pub(crate) routes: Arc<KvRegionRouteStore>,
    pub(crate) stats: Arc<StatsCache>,
    pub(crate) migrations: Arc<Migrations>,
    pub(crate) maintenance: Arc<Maintenance>,
    pub(crate) supervisor: Arc<RegionSupervisor>,
    /// The node-lease sweeper and the stats flusher, run as term tasks.
    pub(crate) sweeper: Sweeper,
    /// The server's shutdown; every term token is its child.
    pub(crate) shutdown: CancellationToken,
    /// The running term's tasks.
    term: Mutex<Option<TermTasks>>,
}

impl LeaderScope {
    /// A scope with no term running.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        election: ElectionRef,
        gate: Arc<LeaderGate>,
        ctx: Context,
        routes: Arc<KvRegionRouteStore>,
        stats: Arc<StatsCache>,
        migrations: Arc<Migrations>,
        maintenance: Arc<Maintenance>,
        supervisor: Arc<RegionSupervisor>,
        sweeper: Sweeper,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            election,
            gate,
            ctx,
            routes,
            stats,
            migrations,
            maintenance,
            supervisor,
            sweeper,
            shutdown,
            term: Mutex::new(None),
        }
    }

    /// Begins `term`: loads leader state, opens the gate, starts the term's tasks.
    pub(crate) async fn begin(&self, seq: u64, term: u64) -> handlers::Result<()> {
        self.end().await;
        let (routes, nodes) = self.prepare().await?;
        let maintenance = match self.maintenance.load().await {
            Ok(m) => m,
            Err(err) => {
                // Unknown means paused: failing safe costs only automatic failover.
                warn!(error = %err, "cannot read maintenance mode; pausing failover until it can be read");
                true
            }
        };
        let wait = self.migrations.deps().lease_wait;
        let own = wait.bound();
        let (earlier, written) = lease_bound::record(&self.ctx.kv, own, term).await?;
        self.gate.open(seq, term, earlier);
        let token = self.shutdown.child_token();
        let mut tasks = TermTasks::new(token.clone());
        if let Some(at) = self.gate.term_start().and_then(|t| wait.lowerable_at(t)) {
            info!(
                earlier_ms = earlier.lease.as_millis() as u64,
                earlier_failover_wait_ms = earlier.failover_wait.as_millis() as u64,
                own_ms = own.lease.as_millis() as u64,
                "an earlier term granted longer region leases (or waited longer); every lease wait honours them until they have run out"
            );
            tasks.spawn(
                "lower_lease_bound",
                lower_bound_at(self.ctx.kv.clone(), self.gate.clone(), written, own, at),
            );
        }
        self.migrations.begin_term(token.child_token()).await;
        tasks.spawn("supervisor", self.supervisor.clone().run());
        tasks.spawn("sweeper", sweeper::run(self.sweeper.clone()));
        tasks.spawn("stats_flusher", sweeper::flush_stats(self.sweeper.clone()));
        *self.term.lock() = Some(tasks);
        info!(
            term,
            routes,
            nodes,
            maintenance,
            lease_bound_ms = written.max_lease_ms,
            "leading: routes reloaded, known nodes granted a grace of one node lease"
        );
        Ok(())
    }

    /// Ends the running term, if any: cancels its tasks and closes the gate, waits until
    /// every task has stopped, then drops leader-only state. Returns whether a term was
    /// running.
    pub(crate) async fn end(&self) -> bool {
        let running = self.term.lock().take();
        if let Some(tasks) = &running {
            tasks.token().cancel();
        }
        self.gate.close();
        self.migrations.end_term().await;
        let was_running = running.is_some();
        if let Some(tasks) = running {
            tasks.end().await;
        }
        self.ctx.node_leases.clear();
        self.stats.clear();
        was_running
    }

    /// Loads routes and node registrations; returns how many of each.
    async fn prepare(&self) -> handlers::Result<(usize, usize)> {
        let routes = self.routes.load().await?;
        let now = self.ctx.clock.now();
        let mut nodes = 0;
        for kv in self
            .ctx
            .kv
            .range_prefix(crate::registration::PREFIX.as_bytes())
            .await?
        {
            if let Some(reg) = crate::registration::decode(&kv.value) {
                self.ctx
                    .node_leases
                    .keep_alive(reg.key(), &reg.addr, reg.node_epoch, 0, now);
                nodes += 1;
            }
        }
        Ok((routes, nodes))
    }

    /// Begins a term, retrying the state load while this member still leads (each read
    /// already fails over between etcd members; a retry covers an etcd election in
    /// progress). Resigns only when leadership would otherwise sit idle: after every
    /// retry failed, a successor that can read does better than a leader that cannot.
    async fn begin_or_resign(&self, seq: u64, term: u64) {
        const ATTEMPTS: u32 = 5;
        for attempt in 1..=ATTEMPTS {
            let err = match self.begin(seq, term).await {
                Ok(()) => return,
                Err(err) => err,
            };
            let still_leading = self.election.leadership().is_leader()
                && self.election.subscribe().borrow().seq == seq;
            if !still_leading {
                self.end().await;
                return;
            }
            if attempt == ATTEMPTS {
                warn!(error = %err, attempts = ATTEMPTS, "became leader but could not load leader state; resigning");
                self.end().await;
                if let Err(e) = self.election.resign().await {
                    warn!(error = %e, "resign failed");
                }
                return;
            }
            warn!(error = %err, attempt, "became leader but could not load leader state yet; retrying");
            let pause = std::time::Duration::from_millis(200 * u64::from(attempt));
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Follows the election: begins a term when it says "leader", ends it otherwise.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut rx = self.election.subscribe();
        let mut handled = 0;
        loop {
            let state = rx.borrow_and_update().clone();
            if state.seq != handled && self.gate.ready_seq() != state.seq {
                handled = state.seq;
                if state.is_leader {
                    self.begin_or_resign(state.seq, state.term).await;
                } else if self.end().await {
                    info!(term = state.term, leader = ?state.leader_addr, "not leading; leader state dropped");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.end().await;
                    return;
                }
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }
}
