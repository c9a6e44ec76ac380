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
    /// The region's storage was taken over under a newer region epoch: this node's
    /// ownership is stale, and its writes would never be replayed.
    #[snafu(display(
        "region {region_id} moved: its storage was taken over under epoch {storage_epoch}, \
         newer than this node's epoch {epoch}"
    ))]
    Fenced {
        /// The region.
        region_id: u64,
        /// The epoch this node holds.
        epoch: u64,
        /// The newest epoch the storage has seen.
        storage_epoch: u64,
    },
    /// The region's storage could not be read when it was opened; it takes no writes
    /// until it opens cleanly (the rest of the node serves on).
    #[snafu(display(
        "region {region_id} is unavailable: its storage could not be read: {reason}"
    ))]
    Unavailable {
        /// The region.
        region_id: u64,
        /// Why.
        reason: String,
    },
    /// A stored file is not what it should be (other than unparsable JSON).
    #[snafu(display("unreadable data at {path}: {reason}"))]
    Unreadable {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
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
    #[snafu(display(
        "cannot connect to metasrv {addr}: {}",
        common_proto::error::explain(source)
    ))]
    Connect {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// A metasrv call failed.
    #[snafu(display("metasrv {addr} call failed: {}", common_proto::error::explain(source)))]
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
    /// An embedder's engine failed: its own error, kept whole (the instruction reply
    /// carries its message; `source()` gives the original to the engine's own code).
    #[snafu(display("engine error: {source}"))]
    Engine {
        /// The engine's error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Wraps an engine's own error, so an engine's methods can return it with `?`
    /// (`.map_err(Error::engine)`).
    pub fn engine(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Error::Engine { source: err.into() }
    }
}

/// Result with the datanode's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct DiskFull;

    impl std::fmt::Display for DiskFull {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk full")
        }
    }

    impl std::error::Error for DiskFull {}

    #[test]
    fn an_engines_own_error_is_kept_whole() {
        let err = Error::engine(DiskFull);
        assert_eq!(err.to_string(), "engine error: disk full");
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.is::<DiskFull>(), "the engine gets its own type back");
    }
}
