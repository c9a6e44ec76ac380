//! The faults of one simulated run, drawn from its seed before it starts: what happens
//! to whom, when, and for how long. A pure plan; `cluster` applies it.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The metasrv's region lease at its first start.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The region leases a restarted metasrv may run with.
const LEASES: [Duration; 3] = [
    Duration::from_secs(7),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// The longest region lease any start may use.
pub const LONGEST_LEASE: Duration = LEASES[2];

/// One fault, on one datanode (by id) or on the metasrv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The node and the metasrv cannot reach each other.
    Partition(u64),
    /// The node's messages to the metasrv are lost; the metasrv's still arrive.
    NodeToMetasrvLost(u64),
    /// The metasrv's messages to the node are lost; the node's still arrive.
    MetasrvToNodeLost(u64),
    /// Messages between the node and the metasrv are held, then delivered late at once.
    Hold(u64),
    /// The node's process is killed, and started again when the fault ends.
    Crash(u64),
    /// The metasrv's process is killed, and started again when the fault ends.
    CrashMetasrv,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(n) => write!(f, "partition dn{n} <-> ms"),
            Fault::NodeToMetasrvLost(n) => write!(f, "partition dn{n} -> ms"),
            Fault::MetasrvToNodeLost(n) => write!(f, "partition ms -> dn{n}"),
            Fault::Hold(n) => write!(f, "hold dn{n} <-> ms"),
            Fault::Crash(n) => write!(f, "crash dn{n}"),
            Fault::CrashMetasrv => write!(f, "crash ms"),
        }
    }
}

/// What an operator does, through the metasrv's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Moves a region to a node, or to one the selector picks.
    Migrate {
        /// The region.
        region: u64,
        /// The target, if named.
        to: Option<u64>,
    },
    /// Drains a node: it leads nothing, and is no target, until undrained.
    Drain(u64),
    /// Lifts a drain.
    Undrain(u64),
    /// Turns maintenance mode (no automatic failover) on or off.
    Maintenance(bool),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Migrate {
                region,
                to: Some(to),
            } => write!(f, "migrate region {region} to dn{to}"),
            Action::Migrate { region, to: None } => write!(f, "migrate region {region}"),
            Action::Drain(n) => write!(f, "drain dn{n}"),
            Action::Undrain(n) => write!(f, "undrain dn{n}"),
            Action::Maintenance(on) => write!(f, "maintenance {}", if *on { "on" } else { "off" }),
        }
    }
}

/// A fault and its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When it begins.
    pub from: Duration,
    /// When it ends.
    pub until: Duration,
    /// What it is.
    pub fault: Fault,
}

/// A run's faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The faults, by start time.
    pub windows: Vec<Window>,
    /// When every fault has ended (and every crashed process runs again).
    pub healed: Duration,
    /// The region lease the metasrv runs with at each of its starts: an operator may
    /// change it between restarts, and a successor must honour what its predecessor
    /// granted.
    pub metasrv_leases: Vec<Duration>,
    /// Operator actions, by time; every drain and maintenance window ends by `healed`.
    pub actions: Vec<(Duration, Action)>,
}

impl Plan {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            windows: Vec::new(),
            healed: Duration::ZERO,
            metasrv_leases: vec![DEFAULT_LEASE],
            actions: Vec::new(),
        }
    }

    /// Draws faults on `nodes` datanodes and the metasrv, starting in `[warmup, until)`:
    /// one every 2 to 12 s, each lasting 1 to 40 s (a metasrv is restarted within 10 s).
    /// They may overlap.
    /// Operator actions on `regions` come every 5 to 25 s in the same span.
    pub fn draw(seed: u64, nodes: u64, regions: u64, warmup: Duration, until: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut windows = Vec::new();
        let mut at = warmup + Duration::from_millis(rng.random_range(0..10_000));
        while at < until {
            let node = rng.random_range(1..=nodes);
            let fault = match rng.random_range(0..12) {
                0..=2 => Fault::Partition(node),
                3 | 4 => Fault::NodeToMetasrvLost(node),
                5 | 6 => Fault::MetasrvToNodeLost(node),
                7 | 8 => Fault::Hold(node),
                9 | 10 => Fault::Crash(node),
                _ => Fault::CrashMetasrv,
            };
            // A killed metasrv is restarted soon, as a process supervisor would.
            let longest = if fault == Fault::CrashMetasrv {
                10_000
            } else {
                40_000
            };
            let lasts = Duration::from_millis(rng.random_range(1_000..longest));
            windows.push(Window {
                from: at,
                until: at + lasts,
                fault,
            });
            at += Duration::from_millis(rng.random_range(2_000..12_000));
        }
        let mut actions = Vec::new();
        let mut at = warmup + Duration::from_millis(rng.random_range(0..10_000));
        let mut busy_until = Duration::ZERO;
        while at < until {
            let lasts = Duration::from_millis(rng.random_range(5_000..40_000));
            match rng.random_range(0..10) {
                0..=5 => {
                    let region = rng.random_range(1..=regions);
                    let to = rng.random_bool(0.5).then(|| rng.random_range(1..=nodes));
                    actions.push((at, Action::Migrate { region, to }));
                }
                // One drain or maintenance window at a time.
                6..=8 if at >= busy_until => {
                    let node = rng.random_range(1..=nodes);
                    actions.push((at, Action::Drain(node)));
                    actions.push((at + lasts, Action::Undrain(node)));
                    busy_until = at + lasts;
                }
                9 if at >= busy_until => {
                    actions.push((at, Action::Maintenance(true)));
                    actions.push((at + lasts, Action::Maintenance(false)));
                    busy_until = at + lasts;
                }
                _ => {}
            }
            at += Duration::from_millis(rng.random_range(5_000..25_000));
        }
        actions.sort_by_key(|(at, _)| *at);
        let healed = windows
            .iter()
            .map(|w| w.until)
            .chain(actions.iter().map(|(at, _)| *at))
            .max()
            .unwrap_or(warmup);
        let restarts = windows
            .iter()
            .filter(|w| w.fault == Fault::CrashMetasrv)
            .count();
        let metasrv_leases = std::iter::once(DEFAULT_LEASE)
            .chain((0..=restarts).map(|_| LEASES[rng.random_range(0..LEASES.len())]))
            .collect();
        Self {
            windows,
            healed,
            metasrv_leases,
            actions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_its_seed() {
        let (warmup, until) = (Duration::from_secs(10), Duration::from_secs(120));
        let a = Plan::draw(1, 3, 6, warmup, until);
        assert_eq!(a, Plan::draw(1, 3, 6, warmup, until));
        assert_ne!(a, Plan::draw(2, 3, 6, warmup, until));
        assert!(!a.windows.is_empty());
        for w in &a.windows {
            assert!(
                w.from >= warmup && w.from < until && w.until > w.from,
                "{w:?}"
            );
            assert!(w.until <= a.healed);
        }
    }
}
