//! One simulated cluster run: a standalone metasrv (its KV persisted, so it can be
//! killed and restarted) and datanodes on shared storage, each writing to every region
//! it leads, under the faults its seed draws; every acknowledged write goes through the
//! invariant checker as it happens.
//!
//! The real code runs: the metasrv's `serve_with_incoming` (sessions, handler group,
//! leader scope with its supervisor, detector and migrations), and on each datanode the
//! heartbeat task, the keeper, the lease check and the fenced region log.
//!
//! **Liveness bound.** After the last fault heals at `H`, every region is written again
//! by `H + B`, where `B = node_lease + failover_wait + mailbox_timeout + 4 ×
//! heartbeat_interval`: a node must be judged failed (node lease), its old owner's
//! grant waited out (failover wait), an instruction lost at the heal waited out (mailbox
//! timeout), and the reconnect, discovery, open and first grant each take at most an
//! interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common_proto::v1::RegionRole;
use datanode::{MemoryRegionEngine, RegionEngine, RegionLeases};
use meta_srv::MetasrvOptions;
use parking_lot::Mutex;

use super::check::{Checker, Violation, Write};
use super::faults::{Action, Fault, Plan, LONGEST_LEASE};
use super::{incoming, start_heartbeat, GRPC_PORT};

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Datanodes.
    pub nodes: u64,
    /// Regions, led round-robin at the start.
    pub regions: u64,
    /// Faults begin after this.
    pub warmup: Duration,
    /// Faults begin before this.
    pub faults_until: Duration,
    /// Whether to inject faults at all.
    pub faults: bool,
    /// How often each datanode tries a write to every region.
    pub write_every: Duration,
    /// The simulation's step: every host runs once per step, and timers fire at step
    /// boundaries.
    pub tick: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: 3,
            regions: 6,
            warmup: Duration::from_secs(20),
            faults_until: Duration::from_secs(120),
            faults: true,
            write_every: Duration::from_millis(250),
            tick: Duration::from_millis(10),
        }
    }
}

/// What a run did and broke.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// What happened, one line per event, with its simulated time.
    pub trace: Vec<String>,
    /// The invariants broken.
    pub violations: Vec<Violation>,
    /// Acknowledged writes.
    pub writes: u64,
    /// Simulated time the run covered.
    pub simulated: Duration,
}

/// The metasrv's options in the simulation.
pub fn metasrv_options(data_dir: &Path) -> MetasrvOptions {
    MetasrvOptions {
        server_addr: format!("ms:{GRPC_PORT}"),
        data_dir: data_dir.display().to_string(),
        ..Default::default()
    }
}

/// `B` of the module docs, for `options` with the longest region lease any start uses.
pub fn liveness_bound(options: &MetasrvOptions) -> Duration {
    let longest = MetasrvOptions {
        region_lease: LONGEST_LEASE.max(options.region_lease),
        ..options.clone()
    };
    longest.node_lease
        + longest.effective_failover_wait()
        + longest.mailbox_timeout
        + 4 * longest.heartbeat_interval
}

/// What the hosts share with the driver: the checker, the trace, and each datanode's
/// engine (of its current process).
#[derive(Default)]
struct Shared {
    checker: Checker,
    trace: Vec<String>,
    engines: BTreeMap<u64, Arc<MemoryRegionEngine>>,
    boots: BTreeMap<u64, u64>,
    metasrv_boots: usize,
    /// Operator actions due, for the metasrv's operator task.
    actions: Vec<Action>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

impl Shared {
    fn note(&mut self, at: Duration, line: impl std::fmt::Display) {
        self.trace
            .push(format!("{:>9.3}s {line}", at.as_secs_f64()));
    }
}

/// The directories a run keeps across process restarts: the metasrv's KV snapshot, each
/// datanode's manifest, and the shared region logs. On tmpfs when the machine has one:
/// the logs sync every write.
struct Dirs {
    _root: tempfile::TempDir,
    path: PathBuf,
}

impl Dirs {
    fn new() -> std::io::Result<Self> {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::Builder::new().prefix("sim-").tempdir_in(shm)?
        } else {
            tempfile::Builder::new().prefix("sim-").tempdir()?
        };
        let path = root.path().to_path_buf();
        Ok(Self { _root: root, path })
    }

    fn metasrv(&self) -> PathBuf {
        self.path.join("ms")
    }

    fn node(&self, id: u64) -> PathBuf {
        self.path.join(format!("dn{id}"))
    }

    fn shared(&self) -> PathBuf {
        self.path.join("shared")
    }
}

/// Installs the simulated wall clock (once per process) and returns a builder whose
/// every choice is drawn from `seed`.
pub fn builder(seed: u64, duration: Duration, tick: Duration) -> turmoil::Builder {
    common_proto::wall_clock::install(|| turmoil::since_epoch().map(|d| d.as_millis() as u64));
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(duration)
        .tick_duration(tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(50))
        .enable_random_order();
    builder
}

/// The region's first leader.
fn first_leader(region: u64, nodes: u64) -> u64 {
    (region - 1) % nodes + 1
}

/// Runs `seed` under `config`.
pub fn run(seed: u64, config: &Config) -> Result<Outcome, Box<dyn std::error::Error>> {
    let dirs = Dirs::new()?;
    let options = metasrv_options(&dirs.metasrv());
    let plan = if config.faults {
        Plan::draw(
            seed,
            config.nodes,
            config.regions,
            config.warmup,
            config.faults_until,
        )
    } else {
        Plan::none()
    };
    let healed = plan.healed.max(config.warmup);
    let bound = liveness_bound(&options);
    let end = healed + bound + Duration::from_secs(10);
    let shared: SharedRef = Arc::default();
    let mut sim = builder(seed, end + Duration::from_secs(60), config.tick).build();

    let regions = config.regions;
    let nodes = config.nodes;
    let leases = plan.metasrv_leases.clone();
    let ms_shared = shared.clone();
    sim.host("ms", move || {
        let (shared, leases) = (ms_shared.clone(), leases.clone());
        let mut options = options.clone();
        async move {
            {
                let mut shared = shared.lock();
                shared.metasrv_boots += 1;
                let boot = shared.metasrv_boots;
                options.region_lease = leases[(boot - 1).min(leases.len() - 1)];
                shared.note(
                    now(),
                    format_args!(
                        "ms starts (boot {boot}, region lease {:?})",
                        options.region_lease
                    ),
                );
            }
            let metasrv = meta_srv::MetasrvBuilder::new(options).build().await?;
            let routes = &metasrv.context().routes;
            if routes.get(1).await?.is_none() {
                for region_id in 1..=regions {
                    routes
                        .put(handlers::RegionRoute {
                            region_id,
                            leader: Some(first_leader(region_id, nodes)),
                            followers: vec![],
                            epoch: 1,
                        })
                        .await?;
                }
            }
            tokio::spawn(operate(metasrv.clone(), shared));
            metasrv
                .serve_with_incoming(incoming(GRPC_PORT).await?, std::future::pending())
                .await?;
            Ok(())
        }
    });
    for id in 1..=nodes {
        let node = NodeHost {
            id,
            seed,
            nodes,
            regions,
            local: dirs.node(id),
            shared_dir: dirs.shared(),
            write_every: config.write_every,
            shared: shared.clone(),
        };
        sim.host(format!("dn{id}"), move || node.clone().run());
    }

    let mut events: Vec<(Duration, bool, Fault)> = plan
        .windows
        .iter()
        .flat_map(|w| [(w.from, true, w.fault), (w.until, false, w.fault)])
        .collect();
    events.sort_by_key(|(at, _, _)| *at);
    let mut events = events.into_iter().peekable();
    let mut actions = plan.actions.iter().peekable();
    let mut heal_done = false;
    while sim.elapsed() < end {
        sim.step()?;
        let at = sim.elapsed();
        while let Some((_, begins, fault)) = events.next_if(|(when, _, _)| *when <= at) {
            apply(&mut sim, fault, begins);
            let verb = if begins { "begins" } else { "ends" };
            shared
                .lock()
                .note(at, format_args!("fault {verb}: {fault}"));
        }
        while let Some((_, action)) = actions.next_if(|(when, _)| *when <= at) {
            shared.lock().actions.push(*action);
        }
        if !heal_done && at >= healed {
            heal_done = true;
            heal(&mut sim, nodes);
            shared.lock().note(at, "every fault healed");
        }
    }

    let mut shared = shared.lock();
    let Shared {
        checker,
        engines,
        trace,
        ..
    } = &mut *shared;
    checker.check_writable(1..=regions, healed, bound);
    checker.check_nothing_lost(|node, region, key| {
        engines
            .get(&node)
            .is_some_and(|e| matches!(e.read(region, key), Ok(Some(_))))
    });
    let violations = checker.violations().to_vec();
    for v in &violations {
        trace.push(format!("VIOLATION {v}"));
    }
    trace.push(format!(
        "end at {:?}: {} writes acknowledged (digest {:016x}), {} violations",
        sim.elapsed(),
        checker.writes(),
        checker.digest(),
        violations.len()
    ));
    Ok(Outcome {
        seed,
        trace: trace.clone(),
        violations,
        writes: checker.writes(),
        simulated: sim.elapsed(),
    })
}

/// The operator: runs the actions the driver queued, through the metasrv's API, as an
/// operator's tool would (each in its own task: a drain waits for its moves).
async fn operate(metasrv: Arc<meta_srv::Metasrv>, shared: SharedRef) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due = std::mem::take(&mut shared.lock().actions);
        for action in due {
            let (metasrv, shared) = (metasrv.clone(), shared.clone());
            tokio::spawn(async move {
                let result = match action {
                    Action::Migrate { region, to } => metasrv
                        .migrations()
                        .start(
                            region,
                            to,
                            meta_srv::procedure::migration::MigrationReason::Manual,
                        )
                        .await
                        .map(|s| format!("to dn{}", s.to))
                        .map_err(|e| e.to_string()),
                    Action::Drain(node) => meta_srv::procedure::drain::drain(
                        metasrv.cluster(),
                        metasrv.maintenance(),
                        metasrv.migrations(),
                        node,
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|r| format!("{:?}", r.outcome()))
                    .map_err(|e| e.to_string()),
                    Action::Undrain(node) => metasrv
                        .maintenance()
                        .set_drained(node, false)
                        .await
                        .map(|_| "lifted".to_string())
                        .map_err(|e| e.to_string()),
                    Action::Maintenance(on) => metasrv
                        .maintenance()
                        .set(on)
                        .await
                        .map(|()| "set".to_string())
                        .map_err(|e| e.to_string()),
                };
                let line = match result {
                    Ok(what) => format!("operator: {action}: {what}"),
                    Err(why) => format!("operator: {action} refused: {why}"),
                };
                shared.lock().note(now(), line);
            });
        }
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, fault: Fault, begins: bool) {
    let dn = |n: u64| format!("dn{n}");
    match (fault, begins) {
        (Fault::Partition(n), true) => sim.partition(dn(n), "ms"),
        (Fault::Partition(n), false) => sim.repair(dn(n), "ms"),
        (Fault::NodeToMetasrvLost(n), true) => sim.partition_oneway(dn(n), "ms"),
        (Fault::NodeToMetasrvLost(n), false) => sim.repair_oneway(dn(n), "ms"),
        (Fault::MetasrvToNodeLost(n), true) => sim.partition_oneway("ms", dn(n)),
        (Fault::MetasrvToNodeLost(n), false) => sim.repair_oneway("ms", dn(n)),
        (Fault::Hold(n), true) => sim.hold(dn(n), "ms"),
        (Fault::Hold(n), false) => sim.release(dn(n), "ms"),
        (Fault::Crash(n), true) => sim.crash(dn(n)),
        (Fault::Crash(n), false) => restart(sim, &dn(n)),
        (Fault::CrashMetasrv, true) => sim.crash("ms"),
        (Fault::CrashMetasrv, false) => restart(sim, "ms"),
    }
}

fn restart(sim: &mut turmoil::Sim<'_>, host: &str) {
    if !sim.is_host_running(host) {
        sim.bounce(host);
    }
}

fn heal(sim: &mut turmoil::Sim<'_>, nodes: u64) {
    for n in 1..=nodes {
        let dn = format!("dn{n}");
        sim.repair(dn.as_str(), "ms");
        sim.release(dn.as_str(), "ms");
        restart(sim, &dn);
    }
    restart(sim, "ms");
}

/// A datanode's process: what it needs to start, again after every restart.
#[derive(Clone)]
struct NodeHost {
    id: u64,
    seed: u64,
    nodes: u64,
    regions: u64,
    local: PathBuf,
    shared_dir: PathBuf,
    write_every: Duration,
    shared: SharedRef,
}

impl NodeHost {
    async fn run(self) -> turmoil::Result {
        let id = self.id;
        let boot = {
            let mut shared = self.shared.lock();
            let boot = shared.boots.entry(id).or_default();
            *boot += 1;
            let boot = *boot;
            shared.note(now(), format_args!("dn{id} starts (boot {boot})"));
            boot
        };
        let leases = RegionLeases::new(datanode::DEFAULT_LEASE_MARGIN);
        let engine = Arc::new(
            MemoryRegionEngine::open_with(&self.local, Some(&self.shared_dir), leases.clone())?
                .with_writer(format!("datanode-{id}")),
        );
        if boot == 1 {
            for region in (1..=self.regions).filter(|r| first_leader(*r, self.nodes) == id) {
                engine.open_region(region, RegionRole::Leader, 1).await?;
            }
        }
        self.shared.lock().engines.insert(id, engine.clone());
        let _heartbeat = start_heartbeat(
            id,
            common_proto::unix_millis(),
            self.seed ^ (id << 32) ^ (boot << 48),
            engine.clone(),
            leases.clone(),
        );
        let mut n = 0u64;
        loop {
            tokio::time::sleep(self.write_every).await;
            for region in 1..=self.regions {
                n += 1;
                let key = format!("{id}.{boot}.{n}");
                if engine.write(region, &key, "v").is_err() {
                    continue;
                }
                let epoch = leases.region_epoch(region).unwrap_or_default();
                let at = now();
                let mut shared = self.shared.lock();
                if shared.checker.is_new_epoch(region, epoch) {
                    shared.note(
                        at,
                        format_args!("dn{id} writes region {region} under epoch {epoch}"),
                    );
                }
                if let Some(v) = shared.checker.write(Write {
                    at,
                    node: id,
                    region,
                    epoch,
                    key,
                }) {
                    shared.note(at, format_args!("VIOLATION {v}"));
                }
            }
        }
    }
}
