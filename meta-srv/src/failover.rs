//! Failure detection and region failover (README, "Failover").
//!
//! - `detector`: [`PhiAccrualDetector`](detector::PhiAccrualDetector), pure code, one per
//!   datanode, parameters derived from the heartbeat interval and the region lease.
//! - `judgement`: which datanodes are failed on a tick (the detectors, the graces, the
//!   supervisor's own stalls), pure code over instants.
//! - `supervisor`: [`RegionSupervisor`](supervisor::RegionSupervisor), the leader task
//!   that judges nodes and schedules failovers through the one migration procedure
//!   (`procedure::migration`), placed by the cluster model (`cluster`).

pub mod detector;
pub(crate) mod judgement;
pub mod supervisor;
