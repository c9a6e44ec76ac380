//! The datanode's typed errors.

use snafu::Snafu;

/// Errors from the engine, the heartbeat task and startup.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub))]
pub enum Error {
    /// The region is not open here.
    #[snafu(display("region {region_id} not found on this datanode"))]
    RegionNotFound {
        /// The region.
        region_id: u64,
    },
    /// The region's lease lapsed (or was never granted): writes are refused until the
    /// metasrv grants it again. Reads go on.
    #[snafu(display("region {region_id} is readonly: region lease expired (or not yet granted)"))]
    LeaseExpired {
        /// The region.
        region_id: u64,
    },
    /// The region is a follower here: writes go to its leader.
    #[snafu(display("region {region_id} is readonly: region is follower"))]
    RegionFollower {
        /// The region.
        region_id: u64,
    },
    /// Reading or writing the data directory failed.
    #[snafu(display("storage error at {path}: {source}"))]
    Storage {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A stored file is corrupt.
    #[snafu(display("corrupt data at {path}: {source}"))]
    Corrupt {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The configuration is unusable.
    #[snafu(display("invalid configuration: {reason}"))]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// No metasrv named a leader.
    #[snafu(display("no metasrv named a leader (asked {addrs}): {last_error}"))]
    NoLeader {
        /// The addresses asked.
        addrs: String,
        /// The last failure seen.
        last_error: String,
    },
    /// Connecting to a metasrv failed.
    #[snafu(display("cannot connect to metasrv {addr}: {source}"))]
    Connect {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// A metasrv call failed.
    #[snafu(display("metasrv {addr} call failed: {source}"))]
    Rpc {
        /// The address.
        addr: String,
        /// The status.
        source: tonic::Status,
    },
    /// Binding a listener failed.
    #[snafu(display("cannot bind {addr}: {source}"))]
    Bind {
        /// The address.
        addr: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The heartbeat runtime could not start.
    #[snafu(display("cannot start the heartbeat runtime: {source}"))]
    Runtime {
        /// The IO error.
        source: std::io::Error,
    },
}

/// Result with the datanode's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
