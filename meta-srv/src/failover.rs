//! Failure detection and region failover (README, "Failover").
//!
//! - `detector`: [`PhiAccrualDetector`](detector::PhiAccrualDetector), pure code, one per
//!   datanode, parameters derived from the heartbeat interval and the region lease.
//! - `judgement`: which datanodes are failed on a tick (the detectors, the graces, the
//!   supervisor's own stalls), pure code over instants.
//! - `selector`: [`RegionSelector`](selector::RegionSelector), where a moving region goes;
//!   the default picks the alive node leading the fewest regions.
//! - `supervisor`: [`RegionSupervisor`](supervisor::RegionSupervisor), the leader task
//!   that judges nodes and schedules failovers through the one migration procedure
//!   (`procedure::migration`).

pub mod detector;
pub(crate) mod judgement;
pub mod selector;
pub mod supervisor;
