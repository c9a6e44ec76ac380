//! Procedures: multi-step operations whose state lives in the KV backend, so a new leader
//! resumes (or rolls back) what an old one started.
//!
//! - `migration`: [`Migrations`](migration::Migrations), the one region-move procedure
//!   behind failover, `POST /regions/{id}/migrate` and `POST /nodes/{id}/drain`.
//! - `drain`: [`drain`](drain::drain) a datanode: mark it, move what it leads, report.

pub mod drain;
pub mod migration;
