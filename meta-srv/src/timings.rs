//! Member timings: what each metasrv runs with, registered beside its address, so that
//! members that disagree are seen.
//!
//! Safety does not rest on agreement: every lease wait honours the longest lease any
//! earlier leader recorded ([`crate::leader::lease_bound`]). But a member configured
//! differently behaves differently once it leads (slower failover, other node-lease
//! expiry), which an operator should know before it happens. So each member registers its
//! timings and version with the election ([`crate::election::Member`]), `/cluster` and
//! `metactl cluster` show them, and every member compares its own with the leader's at
//! start and at every leader change: a difference is a warning naming each timing, and
//! `metasrv_timings_differ_from_leader` counts the members that differ (refreshed every
//! 10 s, as members come and go).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::MetasrvOptions;
use crate::election::{ElectionRef, Member};

/// The timings that must agree across members, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberTimings {
    /// `heartbeat_interval`.
    pub heartbeat_interval_ms: u64,
    /// `node_lease`.
    pub node_lease_ms: u64,
    /// `region_lease`.
    pub region_lease_ms: u64,
    /// The failover wait in force.
    pub failover_wait_ms: u64,
    /// `meta_lease`.
    pub meta_lease_ms: u64,
    /// `lease_drift_margin`.
    pub lease_drift_margin_ms: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl From<&MetasrvOptions> for MemberTimings {
    fn from(o: &MetasrvOptions) -> Self {
        Self {
            heartbeat_interval_ms: ms(o.heartbeat_interval),
            node_lease_ms: ms(o.node_lease),
            region_lease_ms: ms(o.region_lease),
            failover_wait_ms: ms(o.effective_failover_wait()),
            meta_lease_ms: ms(o.meta_lease),
            lease_drift_margin_ms: ms(o.lease_drift_margin),
        }
    }
}

impl MemberTimings {
    /// Each timing that differs, as `name: mine ms here, theirs ms on the leader`.
    pub fn differences(&self, leader: &MemberTimings) -> Vec<String> {
        let pairs = [
            (
                "heartbeat_interval",
                self.heartbeat_interval_ms,
                leader.heartbeat_interval_ms,
            ),
            ("node_lease", self.node_lease_ms, leader.node_lease_ms),
            ("region_lease", self.region_lease_ms, leader.region_lease_ms),
            (
                "failover_wait",
                self.failover_wait_ms,
                leader.failover_wait_ms,
            ),
            ("meta_lease", self.meta_lease_ms, leader.meta_lease_ms),
            (
                "lease_drift_margin",
                self.lease_drift_margin_ms,
                leader.lease_drift_margin_ms,
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("{name}: {a} ms here, {b} ms on the leader"))
            .collect()
    }
}

/// The members whose registered timings differ from the leader's (members that
/// registered none, older versions, are not counted).
pub fn differing<'a>(members: &'a [Member], leader_addr: &str) -> Vec<&'a Member> {
    let Some(leader) = members
        .iter()
        .find(|m| m.addr == leader_addr)
        .and_then(|m| m.timings)
    else {
        return Vec::new();
    };
    members
        .iter()
        .filter(|m| m.timings.is_some_and(|t| t != leader))
        .collect()
}

/// How often the gauge is refreshed between leader changes (members come and go).
const REFRESH: Duration = Duration::from_secs(10);

/// At start and at every leader change: compares this member's timings with the
/// leader's and warns on a difference; every `REFRESH`, recounts the members that
/// differ for the gauge. Runs until `shutdown`.
pub async fn watch_agreement(
    election: ElectionRef,
    me: String,
    mine: MemberTimings,
    shutdown: CancellationToken,
) {
    let mut changes = election.subscribe();
    let mut checked: Option<(u64, String)> = None;
    loop {
        let state = changes.borrow_and_update().clone();
        if let Some(leader) = state.leader_addr.clone() {
            match election.members().await {
                Ok(members) => {
                    let theirs = members
                        .iter()
                        .find(|m| m.addr == leader)
                        .and_then(|m| m.timings);
                    // The leader registers as it is elected: a missing record is looked
                    // for again at the next wake.
                    if let Some(theirs) = theirs {
                        crate::metrics::METRICS
                            .timings_differ
                            .set(differing(&members, &leader).len() as i64);
                        let key = (state.term, leader.clone());
                        if checked.as_ref() != Some(&key) {
                            checked = Some(key);
                            let diff = mine.differences(&theirs);
                            if diff.is_empty() {
                                info!(leader = %leader, "this member's timings agree with the leader's");
                            } else {
                                warn!(
                                    me = %me,
                                    leader = %leader,
                                    differences = %diff.join("; "),
                                    "this member's timings differ from the leader's: it will behave differently when it leads (lease waits stay safe: they honour the longest recorded lease)"
                                );
                            }
                        }
                    }
                }
                Err(err) => warn!(error = %err, "cannot read the members' timings"),
            }
        }
        let pause = if checked.is_none() && state.leader_addr.is_some() {
            Duration::from_secs(1)
        } else {
            REFRESH
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, region_lease_ms: Option<u64>) -> Member {
        let base = MemberTimings::from(&MetasrvOptions::default());
        Member {
            addr: addr.into(),
            http_addr: None,
            version: None,
            timings: region_lease_ms.map(|r| MemberTimings {
                region_lease_ms: r,
                ..base
            }),
        }
    }

    #[test]
    fn differences_name_each_timing_with_both_values() {
        let a = MemberTimings::from(&MetasrvOptions::default());
        assert!(a.differences(&a).is_empty());
        let b = MemberTimings {
            region_lease_ms: 20_000,
            failover_wait_ms: 21_000,
            ..a
        };
        assert_eq!(
            b.differences(&a),
            [
                "region_lease: 20000 ms here, 10000 ms on the leader",
                "failover_wait: 21000 ms here, 10500 ms on the leader"
            ]
        );
    }

    #[test]
    fn members_that_differ_from_the_leader_are_counted_and_unregistered_ones_are_not() {
        let members = [
            member("m1", Some(20_000)),
            member("m2", Some(3_000)),
            member("m3", Some(3_000)),
            member("old", None),
        ];
        let differ: Vec<_> = differing(&members, "m2")
            .iter()
            .map(|m| m.addr.as_str())
            .collect();
        assert_eq!(differ, ["m1"]);
        assert_eq!(differing(&members, "m1").len(), 2);
        assert!(
            differing(&members, "old").is_empty(),
            "no leader record: nothing to compare"
        );
    }
}
