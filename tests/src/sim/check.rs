//! The simulation's invariants, checked as the run goes: a pure record of every
//! acknowledged write, and the rules it must keep.
//!
//! - **S1, one writer.** A region's epochs change hands in order: once a write under
//!   epoch `e` is acknowledged, no write under an older epoch is acknowledged after it,
//!   and every write under one epoch comes from one node. A stale owner that still
//!   writes after its successor began, or two owners under one epoch, break it. Writers
//!   try every region they lead every few hundred milliseconds, so an owner that stays
//!   writable past its successor's first write is caught at its next write.
//! - **No acknowledged write lost.** At the end, the region's current owner serves every
//!   row ever acknowledged for it (keys are unique per write).
//! - **Liveness.** After the last fault heals, every region is written again within the
//!   bound the timings give (see `cluster::liveness_bound`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// An acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Simulated time of the acknowledgement.
    pub at: Duration,
    /// The node that acknowledged it.
    pub node: u64,
    /// The region.
    pub region: u64,
    /// The region epoch it was written under.
    pub epoch: u64,
    /// Its key, unique in the run.
    pub key: String,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two nodes acknowledged writes under one epoch of a region.
    TwoWriters {
        /// The region.
        region: u64,
        /// The epoch both wrote under.
        epoch: u64,
        /// The first writer, and the second.
        nodes: (u64, u64),
        /// When the second wrote.
        at: Duration,
    },
    /// A write under an older epoch was acknowledged after one under a newer.
    StaleWrite {
        /// The region.
        region: u64,
        /// The stale writer.
        node: u64,
        /// Its epoch.
        epoch: u64,
        /// The newest epoch already written, and by whom.
        newer: (u64, u64),
        /// When the stale write was acknowledged.
        at: Duration,
    },
    /// An acknowledged row the region's owner no longer serves.
    Lost {
        /// The region.
        region: u64,
        /// The row.
        key: String,
        /// Who the final owner is, if any.
        owner: Option<u64>,
    },
    /// A region not written after the faults healed, within the bound.
    NotWritable {
        /// The region.
        region: u64,
        /// When the faults healed.
        healed: Duration,
        /// The bound.
        bound: Duration,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoWriters {
                region,
                epoch,
                nodes,
                at,
            } => write!(
                f,
                "S1: region {region} epoch {epoch} written by node {} and then by node {} at {at:?}",
                nodes.0, nodes.1
            ),
            Violation::StaleWrite {
                region,
                node,
                epoch,
                newer,
                at,
            } => write!(
                f,
                "S1: node {node} wrote region {region} under epoch {epoch} at {at:?}, after node {} wrote epoch {}",
                newer.1, newer.0
            ),
            Violation::Lost { region, key, owner } => write!(
                f,
                "lost write: region {region} row {key} acknowledged but not served by its owner {owner:?}"
            ),
            Violation::NotWritable {
                region,
                healed,
                bound,
            } => write!(
                f,
                "liveness: region {region} not written within {bound:?} of the heal at {healed:?}"
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Region {
    /// Each epoch's writer.
    writers: BTreeMap<u64, u64>,
    /// Every acknowledged key.
    keys: BTreeSet<String>,
    /// When each write was acknowledged, in order.
    times: Vec<Duration>,
    /// Who acknowledged the newest.
    last_writer: Option<u64>,
}

/// Every acknowledged write, and what broke so far.
#[derive(Debug, Default)]
pub struct Checker {
    regions: BTreeMap<u64, Region>,
    violations: Vec<Violation>,
    writes: u64,
    digest: std::hash::DefaultHasher,
}

impl Checker {
    /// Records an acknowledged write; returns the violation it makes, if any.
    pub fn write(&mut self, w: Write) -> Option<Violation> {
        self.writes += 1;
        (w.at, w.node, w.region, w.epoch, &w.key).hash(&mut self.digest);
        let region = self.regions.entry(w.region).or_default();
        let found = if let Some((&newest, &by)) = region.writers.last_key_value() {
            if w.epoch < newest {
                Some(Violation::StaleWrite {
                    region: w.region,
                    node: w.node,
                    epoch: w.epoch,
                    newer: (newest, by),
                    at: w.at,
                })
            } else {
                match region.writers.get(&w.epoch) {
                    Some(&first) if first != w.node => Some(Violation::TwoWriters {
                        region: w.region,
                        epoch: w.epoch,
                        nodes: (first, w.node),
                        at: w.at,
                    }),
                    _ => None,
                }
            }
        } else {
            None
        };
        region.writers.entry(w.epoch).or_insert(w.node);
        region.keys.insert(w.key);
        region.times.push(w.at);
        region.last_writer = Some(w.node);
        if let Some(v) = &found {
            self.violations.push(v.clone());
        }
        found
    }

    /// Whether this is the first acknowledged write under its epoch (for the trace).
    pub fn is_new_epoch(&self, region: u64, epoch: u64) -> bool {
        self.regions
            .get(&region)
            .is_none_or(|r| !r.writers.contains_key(&epoch))
    }

    /// Checks, at the end, that each region's last writer (its owner now) serves every
    /// row acknowledged for it: `serves(node, region, key)`.
    pub fn check_nothing_lost(&mut self, serves: impl Fn(u64, u64, &str) -> bool) {
        for (&region, r) in &self.regions {
            let owner = r.last_writer;
            if let Some(key) = r
                .keys
                .iter()
                .find(|key| !owner.is_some_and(|node| serves(node, region, key)))
            {
                self.violations.push(Violation::Lost {
                    region,
                    key: key.clone(),
                    owner,
                });
            }
        }
    }

    /// Checks that each of `regions` was written within `bound` of `healed`.
    pub fn check_writable(
        &mut self,
        regions: impl IntoIterator<Item = u64>,
        healed: Duration,
        bound: Duration,
    ) {
        for region in regions {
            let written = self.regions.get(&region).is_some_and(|r| {
                let first = r.times.partition_point(|at| *at < healed);
                r.times.get(first).is_some_and(|at| *at <= healed + bound)
            });
            if !written {
                self.violations.push(Violation::NotWritable {
                    region,
                    healed,
                    bound,
                });
            }
        }
    }

    /// What broke.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// A digest of every acknowledged write (time, node, region, epoch, key), in
    /// order: two runs that acknowledged the same writes at the same instants have
    /// the same digest.
    pub fn digest(&self) -> u64 {
        self.digest.finish()
    }

    /// How many writes were acknowledged.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(at_ms: u64, node: u64, epoch: u64, key: &str) -> Write {
        Write {
            at: Duration::from_millis(at_ms),
            node,
            region: 1,
            epoch,
            key: key.into(),
        }
    }

    #[test]
    fn epochs_handed_on_in_order_are_fine() {
        let mut c = Checker::default();
        assert_eq!(c.write(w(1, 1, 1, "a")), None);
        assert_eq!(c.write(w(2, 1, 1, "b")), None);
        assert_eq!(c.write(w(3, 2, 2, "c")), None);
        assert_eq!(
            c.write(w(4, 1, 3, "d")),
            None,
            "back to node 1 under a newer epoch"
        );
        assert!(c.violations().is_empty());
    }

    #[test]
    fn a_stale_owner_writing_after_its_successor_breaks_s1() {
        let mut c = Checker::default();
        c.write(w(1, 1, 1, "a"));
        c.write(w(2, 2, 2, "b"));
        assert!(matches!(
            c.write(w(3, 1, 1, "c")),
            Some(Violation::StaleWrite {
                node: 1,
                epoch: 1,
                newer: (2, 2),
                ..
            })
        ));
    }

    #[test]
    fn two_nodes_under_one_epoch_break_s1() {
        let mut c = Checker::default();
        c.write(w(1, 1, 1, "a"));
        assert!(matches!(
            c.write(w(2, 2, 1, "b")),
            Some(Violation::TwoWriters { nodes: (1, 2), .. })
        ));
    }

    #[test]
    fn a_row_the_owner_does_not_serve_is_lost() {
        let mut c = Checker::default();
        c.write(w(1, 1, 1, "a"));
        c.write(w(2, 1, 1, "b"));
        c.check_nothing_lost(|node, _, k| node == 1 && k != "c");
        assert!(c.violations().is_empty());
        c.write(w(3, 2, 2, "c"));
        c.check_nothing_lost(|node, _, k| node == 2 && k != "b");
        assert!(matches!(
            c.violations(),
            [Violation::Lost { key, owner: Some(2), .. }] if key == "b"
        ));
    }

    #[test]
    fn a_region_not_written_after_the_heal_is_not_live() {
        let mut c = Checker::default();
        c.write(w(100, 1, 1, "a"));
        c.write(w(1_000, 1, 1, "b"));
        let healed = Duration::from_millis(500);
        c.check_writable([1], healed, Duration::from_millis(500));
        assert!(c.violations().is_empty());
        c.check_writable([1, 2], healed, Duration::from_millis(499));
        assert_eq!(c.violations().len(), 2, "{:?}", c.violations());
    }
}
