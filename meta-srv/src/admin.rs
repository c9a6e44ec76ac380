//! The operator's side: the admin HTTP API and the region operations behind it.
//!
//! - `http`: the axum router over a narrow [`http::AdminState`]; `http::failover`: the
//!   migrate, drain, maintenance and procedure endpoints.
//! - `region`: [`region::RegionAdmin`], creating and dropping regions.

pub mod http;
pub mod region;
