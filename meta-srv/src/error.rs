//! The metasrv's typed errors, and their one mapping to gRPC statuses.

use handlers::NodeKey;
use snafu::Snafu;

/// Errors from the metasrv's services, mailbox, admin paths and startup.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub))]
pub enum Error {
    /// The configuration breaks a lease rule or is otherwise unusable.
    #[snafu(display("invalid configuration: {reason}"))]
    InvalidConfig {
        /// Which rule, with the values involved.
        reason: String,
    },
    /// The config file could not be read.
    #[snafu(display("cannot read config file {path}: {source}"))]
    ReadConfig {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`MetasrvOptions`](crate::MetasrvOptions).
    #[snafu(display("cannot parse config file {path}: {source}"))]
    ParseConfig {
        /// The file.
        path: String,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// Binding a listener failed.
    #[snafu(display("cannot bind {what} on {addr}: {source}"))]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// An election operation failed.
    #[snafu(display("election: {message}"))]
    Election {
        /// What failed.
        message: String,
    },
    /// Connecting to etcd failed.
    #[cfg(feature = "etcd")]
    #[snafu(display("cannot connect to etcd at {endpoints}: {source}"))]
    EtcdConnect {
        /// The endpoints.
        endpoints: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// The gRPC server failed.
    #[snafu(display("gRPC server failed: {source}"))]
    Serve {
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The admin HTTP server failed.
    #[snafu(display("admin HTTP server failed: {source}"))]
    HttpServe {
        /// The IO error.
        source: std::io::Error,
    },
    /// A KV, route or handler operation failed.
    #[snafu(display("failed to {op}: {source}"))]
    Store {
        /// What was being done.
        op: String,
        /// The handlers-crate error.
        source: handlers::Error,
    },
    /// A request is malformed.
    #[snafu(display("{reason}"))]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// Another live stream already holds this node id.
    #[snafu(display("{message}"))]
    NodeAlreadyConnected {
        /// Explains which node and why.
        message: String,
    },
    /// This metasrv is not the leader.
    #[snafu(display("not leader; the leader is {}", leader.as_deref().unwrap_or("unknown")))]
    NotLeader {
        /// The leader's address, when known.
        leader: Option<String>,
    },
    /// No stream is connected for the node.
    #[snafu(display("no pusher for {channel}: the node is not connected"))]
    PusherNotFound {
        /// The node.
        channel: NodeKey,
    },
    /// The node's stream queue is full or closed.
    #[snafu(display("cannot push to {channel}: {reason}"))]
    PushFailed {
        /// The node.
        channel: NodeKey,
        /// `queue full` or `stream closed`.
        reason: &'static str,
    },
    /// No reply arrived in time.
    #[snafu(display("mailbox message {id} to {channel} timed out after {timeout:?}"))]
    MailboxTimeout {
        /// The message id.
        id: u64,
        /// The node.
        channel: NodeKey,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The node disconnected before replying.
    #[snafu(display("{channel} disconnected before replying to mailbox message {id}"))]
    ChannelClosed {
        /// The message id.
        id: u64,
        /// The node.
        channel: NodeKey,
    },
    /// An instruction could not be encoded.
    #[snafu(display("mailbox payload error: {source}"))]
    Payload {
        /// The codec error.
        source: common_proto::Error,
    },
    /// A node answered an instruction with a reply that does not decode: the node's
    /// fault, not ours (502 on the admin API).
    #[snafu(display("{channel} sent a malformed instruction reply: {source}"))]
    BadReply {
        /// The node.
        channel: NodeKey,
        /// The codec error.
        source: common_proto::Error,
    },
    /// The region already has a route.
    #[snafu(display("region {region_id} already exists"))]
    RegionExists {
        /// The region.
        region_id: u64,
    },
    /// The region has no route.
    #[snafu(display("region {region_id} not found"))]
    RegionNotFound {
        /// The region.
        region_id: u64,
    },
    /// No live datanode can take a region.
    #[snafu(display("no live datanode is connected (and not drained) to place the region on"))]
    NoAliveDatanode,
    /// The chosen datanode is not alive and connected.
    #[snafu(display("datanode {node_id} is not alive and connected"))]
    NodeNotAlive {
        /// The node.
        node_id: u64,
    },
    /// A migration of an earlier region with this id has not ended yet.
    #[snafu(display(
        "region {region_id} still has a migration (to node {to}) in flight from before it was dropped; it ends at its next step, retry shortly"
    ))]
    RegionMigrating {
        /// The region id.
        region_id: u64,
        /// The migration's target.
        to: u64,
    },
    /// The chosen datanode is drained: it takes no new regions until returned to service.
    #[snafu(display(
        "datanode {node_id} is drained and takes no new regions (DELETE /nodes/{node_id}/drain returns it to service)"
    ))]
    NodeDrained {
        /// The node.
        node_id: u64,
    },
    /// The node answered an instruction with a failure.
    #[snafu(display("datanode {node_id} failed {what} for region {region_id}: {message}"))]
    InstructionFailed {
        /// The instruction kind.
        what: &'static str,
        /// The region.
        region_id: u64,
        /// The node.
        node_id: u64,
        /// The node's reason.
        message: String,
    },
}

/// Result with the metasrv's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Status;
        let msg = err.to_string();
        match err {
            Error::InvalidRequest { .. } | Error::InvalidConfig { .. } => {
                Status::invalid_argument(msg)
            }
            Error::NodeAlreadyConnected { .. } | Error::RegionExists { .. } => {
                Status::already_exists(msg)
            }
            Error::NotLeader { .. } => Status::failed_precondition(msg),
            Error::RegionNotFound { .. } | Error::PusherNotFound { .. } => Status::not_found(msg),
            Error::MailboxTimeout { .. } => Status::deadline_exceeded(msg),
            Error::ChannelClosed { .. }
            | Error::PushFailed { .. }
            | Error::NoAliveDatanode
            | Error::NodeNotAlive { .. } => Status::unavailable(msg),
            Error::NodeDrained { .. } | Error::RegionMigrating { .. } => {
                Status::failed_precondition(msg)
            }
            _ => Status::internal(msg),
        }
    }
}
