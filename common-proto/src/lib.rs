//! The heartbeat protocol shared by the metasrv and every node that heartbeats to it.
//!
//! Two layers live here:
//! - the protobuf messages and the tonic `Heartbeat` service, generated from
//!   `proto/heartbeat.proto` (re-exported as [`v1`]);
//! - the typed mailbox payloads, [`Instruction`] and [`InstructionReply`], which travel as
//!   JSON inside a [`v1::MailboxMessage`]. JSON keeps them readable in logs and lets an
//!   old node answer an unknown instruction with an error instead of failing to decode the
//!   whole heartbeat.
//!
//! Layout:
//! - `v1`: generated messages, `heartbeat_client` and `heartbeat_server`.
//! - `instruction`: `Instruction`, `InstructionReply` and their JSON helpers.
//! - `error`: the crate's error type.
//! - `process` (feature `process`): the bootstrap both binaries share: logging that cannot
//!   kill the process, a panic policy that always does, signals. It lives here because
//!   this is the one crate both binaries depend on.
//! - `tls` (feature `tls`): how a client certificate names a node, and PEM loading with
//!   the checks both sides make at start.

pub mod error;
pub mod instruction;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wall_clock;

pub use error::{Error, Result};
pub use instruction::{
    Instruction, InstructionReply, JsonPayload, RegionIdent, RegionReply, ReplyError,
};

/// Generated protobuf and tonic code for package `meta.v1`.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("meta.v1");
}

/// The encoded `FileDescriptorSet` of `heartbeat.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/heartbeat_descriptor.bin"));

/// The protocol version this build speaks. The metasrv refuses others, so that a node
/// that misreads the lease fields can never be granted a lease.
///
/// 2: region epochs. Grants and instructions carry the epoch, and the demo engine's log
/// is fenced by it; a node of version 1 would ignore both (and append to the old,
/// unfenced log), so versions 1 and 2 never share a cluster.
pub const PROTOCOL_VERSION: u32 = 2;

pub use wall_clock::unix_millis;

impl v1::Role {
    /// A short lowercase name for logs, keys and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            v1::Role::Unspecified => "unspecified",
            v1::Role::Datanode => "datanode",
            v1::Role::Frontend => "frontend",
            v1::Role::Flownode => "flownode",
        }
    }
}

impl v1::RegionRole {
    /// A short lowercase name for logs and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            v1::RegionRole::Unspecified => "unspecified",
            v1::RegionRole::Leader => "leader",
            v1::RegionRole::Follower => "follower",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn heartbeat_request_round_trips_through_protobuf() {
        let req = HeartbeatRequest {
            header: Some(RequestHeader {
                protocol_version: super::PROTOCOL_VERSION,
                cluster_id: 7,
                node_id: 42,
                role: Role::Datanode as i32,
            }),
            peer: Some(Peer {
                id: 42,
                addr: "127.0.0.1:4001".into(),
            }),
            node_epoch: 1_700_000_000_000,
            duration_since_epoch: 1234,
            region_stats: vec![RegionStat {
                region_id: 9,
                role: RegionRole::Leader as i32,
                rcus: 1,
                wcus: 2,
                approximate_bytes: 3,
                row_count: 4,
                shared_storage: true,
                epoch: 3,
                unavailable: String::new(),
            }],
            mailbox_message: None,
            extensions: [("version".to_string(), "1.2.0".to_string())].into(),
            shared_storage: true,
        };
        let bytes = req.encode_to_vec();
        let back = HeartbeatRequest::decode(bytes.as_slice()).expect("valid encoding");
        assert_eq!(back, req);
    }

    #[test]
    fn zero_values_are_unspecified() {
        assert_eq!(Role::try_from(0), Ok(Role::Unspecified));
        assert_eq!(RegionRole::try_from(0), Ok(RegionRole::Unspecified));
        assert_eq!(ErrorCode::try_from(0), Ok(ErrorCode::Unspecified));
        // An unset role on a granted region must not read as leader.
        assert_eq!(GrantedRegion::default().role(), RegionRole::Unspecified);
    }
}
