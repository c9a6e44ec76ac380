//! The lease bound: the longest region lease any leader may have granted that can still
//! be live, stored where every future leader reads it.
//!
//! **The rule.** A region moves without its old owner's consent only once every lease the
//! owner may hold has surely run out. Members of one cluster need not be configured alike
//! (a rolling restart changes timings one member at a time), so a leader cannot take its
//! own `region_lease` as the length of leases an earlier leader granted. Instead:
//! 1. Before its gate opens (before it grants anything), a new leader writes the record
//!    `max(recorded, own)` for both its region lease and its `failover_wait` (the floor an
//!    operator set on every wait), stamped with its term. A leader that cannot write it
//!    does not lead.
//! 2. Every lease wait of the term ends at [`LeaseWait::safe_at`]: the later of the old
//!    owner's last grant in this term + `max(own lease + margin, failover_wait)`, and the
//!    term's start + `max(earlier lease + margin, earlier failover_wait)`, from the bound
//!    read at step 1 (`earlier`). Every grant of an earlier term came before this term
//!    started.
//! 3. A leader whose own timings are shorter than `earlier` lowers the record to its own
//!    once that earlier wait has passed from its term's start: from then no longer grant
//!    can be live, and no earlier floor is owed. The write is a compare-and-put against the
//!    record this term wrote, and every term writes its own term into the record, so a
//!    lowering delayed past a leader change can never overwrite a successor's (longer)
//!    bound.
//!
//! What enforces it: the record is in the KV (etcd in a cluster), written before the gate
//! opens, and read by every new leader; the gate is the only way to grant.

use std::time::Duration;

use handlers::KvBackendRef;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The KV key of the record.
pub(crate) const KEY: &str = "__meta/lease_bound";

/// The stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundRecord {
    /// The longest region lease a live grant may have, in milliseconds.
    pub max_lease_ms: u64,
    /// The longest `failover_wait` a leader with such grants ran with, in milliseconds
    /// (absent in records written before it was kept: zero).
    #[serde(default)]
    pub max_failover_wait_ms: u64,
    /// The cluster term of the leader that wrote it.
    pub term: u64,
}

/// What a bound covers: the longest region lease, and the longest `failover_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bound {
    /// The longest region lease.
    pub lease: Duration,
    /// The longest failover wait.
    pub failover_wait: Duration,
}

impl Bound {
    fn max(self, other: Bound) -> Bound {
        Bound {
            lease: self.lease.max(other.lease),
            failover_wait: self.failover_wait.max(other.failover_wait),
        }
    }
}

impl BoundRecord {
    fn bound(&self) -> Bound {
        Bound {
            lease: Duration::from_millis(self.max_lease_ms),
            failover_wait: Duration::from_millis(self.max_failover_wait_ms),
        }
    }

    fn of(bound: Bound, term: u64) -> Self {
        Self {
            max_lease_ms: bound.lease.as_millis() as u64,
            max_failover_wait_ms: bound.failover_wait.as_millis() as u64,
            term,
        }
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of two integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A record that does not parse is read as an unknown bound. Failing safe would mean an
/// infinite wait; instead the caller treats it as this long, and logs it.
pub(crate) const UNREADABLE_BOUND: Duration = Duration::from_secs(3600);

/// What a term starts from: the bound earlier terms may have granted (`earlier`), and the
/// record this term writes before it grants.
pub(crate) fn start_record(recorded: Option<&[u8]>, own: Bound, term: u64) -> (Bound, BoundRecord) {
    let earlier = match recorded {
        None => Bound::default(),
        Some(bytes) => match serde_json::from_slice::<BoundRecord>(bytes) {
            Ok(r) => r.bound(),
            Err(_) => Bound {
                lease: UNREADABLE_BOUND,
                failover_wait: UNREADABLE_BOUND,
            },
        },
    };
    (earlier, BoundRecord::of(earlier.max(own), term))
}

/// The term's start, and the bound on what earlier terms may have granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermStart {
    /// When the gate opened, on the monotonic clock.
    pub at: Instant,
    /// The bound recorded before this term (zero on a fresh cluster).
    pub earlier: Bound,
}

/// The lease waits of this member: its own lease, the drift margin, and the operator's
/// `failover_wait` (a floor, never a shortcut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWait {
    /// This member's region lease (what it grants).
    pub own: Duration,
    /// The clock-rate drift margin.
    pub margin: Duration,
    /// The operator's floor on any wait, from the last grant.
    pub failover_wait: Duration,
}

impl LeaseWait {
    /// This member's own bound (what it records).
    pub fn bound(&self) -> Bound {
        Bound {
            lease: self.own,
            failover_wait: self.failover_wait,
        }
    }

    /// How long after an earlier term's last grant (at the latest, this term's start) a
    /// move may happen.
    fn earlier_wait(&self, earlier: Bound) -> Duration {
        (earlier.lease + self.margin).max(earlier.failover_wait)
    }

    /// When no lease the old owner may hold can still be live: see the module docs.
    /// `last_grant` is the owner's last grant in this term, if any.
    pub fn safe_at(&self, last_grant: Option<Instant>, term: TermStart) -> Instant {
        let base = last_grant.map_or(term.at, |g| g.max(term.at));
        let this_term = base + (self.own + self.margin).max(self.failover_wait);
        let earlier_terms = term.at + self.earlier_wait(term.earlier);
        this_term.max(earlier_terms)
    }

    /// When a longer bound recorded by an earlier term may be lowered to this member's
    /// own; `None` when there is nothing to lower.
    pub fn lowerable_at(&self, term: TermStart) -> Option<Instant> {
        let longer =
            term.earlier.lease > self.own || term.earlier.failover_wait > self.failover_wait;
        longer.then(|| term.at + self.earlier_wait(term.earlier))
    }
}

/// Reads the record and writes this term's; returns `earlier`. Called before the gate
/// opens: an error means this member must not lead yet.
pub(crate) async fn record(
    kv: &KvBackendRef,
    own: Bound,
    term: u64,
) -> handlers::Result<(Bound, BoundRecord)> {
    let recorded = kv.get(KEY.as_bytes()).await?;
    let (earlier, next) = start_record(recorded.as_deref(), own, term);
    if !kv
        .compare_and_put(KEY.as_bytes(), recorded.as_deref(), &next.encode())
        .await?
    {
        // Only a leader writes it; a lost race means another leader acted meanwhile.
        return Err(handlers::Error::Conflict {
            key: KEY.into(),
            what: "this term recorded its lease bound".into(),
        });
    }
    Ok((earlier, next))
}

/// Lowers the record from `written` (this term's) to `own`; returns whether it did (a
/// later term's record is left alone).
pub(crate) async fn lower(
    kv: &KvBackendRef,
    written: BoundRecord,
    own: Bound,
) -> handlers::Result<bool> {
    let lowered = BoundRecord::of(own, written.term);
    kv.compare_and_put(KEY.as_bytes(), Some(&written.encode()), &lowered.encode())
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use handlers::MemoryKvBackend;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// A bound of a lease and a failover wait, in seconds.
    fn b(lease: u64, wait: u64) -> Bound {
        Bound {
            lease: S(lease),
            failover_wait: S(wait),
        }
    }

    fn started(at: Instant, earlier: Bound) -> TermStart {
        TermStart { at, earlier }
    }

    const WAIT: LeaseWait = LeaseWait {
        own: Duration::from_secs(3),
        margin: Duration::from_millis(500),
        failover_wait: Duration::from_millis(3_500),
    };

    #[test]
    fn a_term_records_the_longer_of_its_own_timings_and_the_recorded_ones() {
        let (earlier, rec) = start_record(None, b(3, 4), 4);
        assert_eq!(earlier, Bound::default());
        assert_eq!(rec, BoundRecord::of(b(3, 4), 4));
        let before = BoundRecord::of(b(20, 21), 2).encode();
        let (earlier, rec) = start_record(Some(&before), b(3, 40), 5);
        assert_eq!(earlier, b(20, 21));
        assert_eq!(rec, BoundRecord::of(b(20, 40), 5), "each the longer");
        // A record written before failover waits were kept reads as a zero wait.
        let old = br#"{"max_lease_ms":20000,"term":2}"#;
        assert_eq!(start_record(Some(old), b(3, 4), 6).0, b(20, 0));
        let (earlier, _) = start_record(Some(b"not json"), b(3, 4), 7);
        assert_eq!(
            earlier,
            Bound {
                lease: UNREADABLE_BOUND,
                failover_wait: UNREADABLE_BOUND
            },
            "an unreadable bound is long, not zero"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_honours_the_earlier_bound_the_own_lease_and_failover_wait() {
        let at = Instant::now();
        let longer = started(at, b(20, 0));
        // A predecessor's 20 s lease outlasts our own 3 s, whatever the last grant.
        assert_eq!(
            WAIT.safe_at(None, longer),
            at + Duration::from_millis(20_500)
        );
        assert_eq!(
            WAIT.safe_at(Some(at + S(1)), longer),
            at + Duration::from_millis(20_500)
        );
        // A grant of this term late enough: its own lease + margin from it.
        assert_eq!(
            WAIT.safe_at(Some(at + S(30)), longer),
            at + Duration::from_millis(33_500)
        );
        // A predecessor's failover wait is a floor from the term's start too.
        assert_eq!(WAIT.safe_at(None, started(at, b(20, 40))), at + S(40));
        // Our own failover_wait above lease + margin is a floor from the last grant.
        let slow = LeaseWait {
            failover_wait: S(30),
            ..WAIT
        };
        let fresh = started(at, b(3, 0));
        assert_eq!(slow.safe_at(Some(at + S(2)), fresh), at + S(32));
        // A grant recorded before the term began counts from the term's start.
        let early = at
            .checked_sub(S(1))
            .expect("paused clock is past its origin");
        assert_eq!(
            WAIT.safe_at(Some(early), fresh),
            at + Duration::from_millis(3_500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_records_its_own_timings_and_never_waits_less_than_its_lease() {
        assert_eq!(
            WAIT.bound(),
            Bound {
                lease: S(3),
                failover_wait: Duration::from_millis(3_500)
            }
        );
        // Even with a failover wait below lease + margin (the config refuses it; the
        // wait does not rely on that), the lease + margin is waited from the last grant.
        let at = Instant::now();
        let unchecked = LeaseWait {
            failover_wait: Duration::ZERO,
            ..WAIT
        };
        assert_eq!(
            unchecked.safe_at(Some(at + S(1)), started(at, Bound::default())),
            at + Duration::from_millis(4_500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_longer_earlier_bound_is_lowered_and_only_after_it_ran_out() {
        let at = Instant::now();
        assert_eq!(
            WAIT.lowerable_at(started(at, b(20, 0))),
            Some(at + Duration::from_millis(20_500))
        );
        assert_eq!(
            WAIT.lowerable_at(started(at, b(3, 40))),
            Some(at + S(40)),
            "a longer failover wait alone is lowered too, once it passed"
        );
        assert_eq!(WAIT.lowerable_at(started(at, WAIT.bound())), None);
    }

    #[tokio::test]
    async fn a_delayed_lowering_never_overwrites_a_successors_record() {
        let kv: KvBackendRef = Arc::new(MemoryKvBackend::new());
        // Term 1 leads with 20 s; term 2 with 3 s records 20 s and may lower it later.
        record(&kv, b(20, 21), 1).await.expect("term 1");
        let (earlier, written) = record(&kv, b(3, 4), 2).await.expect("term 2");
        assert_eq!(earlier, b(20, 21));
        // Term 3 leads with 20 s again before term 2's lowering lands.
        let (_, third) = record(&kv, b(20, 21), 3).await.expect("term 3");
        assert_eq!(third.max_lease_ms, 20_000);
        assert!(
            !lower(&kv, written, b(3, 4)).await.expect("lower"),
            "refused"
        );
        let (earlier, _) = record(&kv, b(3, 4), 4).await.expect("term 4");
        assert_eq!(earlier, b(20, 21), "term 3's bound survived");
        // A lowering against its own term's record goes through.
        let (_, fifth) = record(&kv, b(3, 4), 5).await.expect("term 5");
        assert!(lower(&kv, fifth, b(3, 4)).await.expect("lower"));
        let (earlier, _) = record(&kv, b(3, 4), 6).await.expect("term 6");
        assert_eq!(earlier, b(3, 4));
    }
}
