//! Region migration: one procedure for failover, manual migrate and drain.
//!
//! **Steps**, each persisted in the KV backend before the next begins, each idempotent, so
//! a new leader resumes a procedure from its last recorded step:
//! 1. **AddFollower**: the route gains the target as a follower (compare-and-set), so the
//!    target's report of the region is not answered with "close it".
//! 2. **OpenCandidate**: the target opens the region as a follower (replaying its data
//!    from shared storage).
//! 3. **Fence**: the route loses its leader (`leader: None`, the old owner a follower).
//!    From here no metasrv grants the old owner a leader lease for this region.
//! 4. **Release**: the old owner must provably stop writing. In a live move (migrate,
//!    drain) it is downgraded (it revokes its lease, fenced against late grants, then
//!    flushes and answers). In a failover, or if it does not answer within a lease, the
//!    procedure waits until its lease cannot possibly be live:
//!    the last grant this leader may have given it (or, if none, the start of this
//!    leader's term, before which every earlier leader's grants lie) + the region lease +
//!    the drift margin. This is invariant S1.
//! 5. **Switch**: the route names the target as leader (compare-and-set).
//! 6. **Upgrade**: the target becomes leader. Its reply goes out on an extra heartbeat,
//!    whose response carries its lease at once: writable within a round trip.
//!
//! Before the fence, a failure rolls back: the target closes the region and leaves the
//! route. After it, the procedure only goes forward; it retries with backoff, and picks
//! another target if its target dies. The old owner, when it heartbeats again, finds the
//! region gone from the route, is told to close it, and does.
//!
//! Only regions whose data is on shared storage move (the target could not open a
//! local-only region's data); [`MigrationError::LocalOnly`] says so.

//!
//! Layout: `state` (the persisted record and the start errors), `manager`
//! ([`Migrations`]: start, run loop, resume, history), `steps` (one function per step;
//! those before the fence may retry or roll back, those after it may only retry, by
//! their return type).

mod manager;
mod state;
mod steps;

pub use manager::{MigrationDeps, Migrations};
pub use state::{targets, MigrationError, MigrationReason, MigrationState, Step};

#[cfg(test)]
mod tests;
