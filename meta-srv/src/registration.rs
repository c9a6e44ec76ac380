//! Node registrations: who has ever connected, kept in the KV backend.
//!
//! A session writes its node's registration once, when it starts (never on the
//! heartbeat path). A new leader reads them all and gives every known node a grace of
//! one node lease, so a node is never declared dead just because leadership moved.

use common_proto::v1::Role;
use handlers::NodeKey;
use serde::{Deserialize, Serialize};

/// The KV prefix of registrations.
pub(crate) const PREFIX: &str = "__meta/node/";

/// One node's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) role: i32,
    pub(crate) node_id: u64,
    pub(crate) addr: String,
    pub(crate) node_epoch: u64,
}

impl Registration {
    pub(crate) fn key(&self) -> NodeKey {
        NodeKey {
            role: Role::try_from(self.role).unwrap_or_default(),
            node_id: self.node_id,
        }
    }

    pub(crate) fn kv_key(key: NodeKey) -> String {
        format!("{PREFIX}{}/{}", key.role.label(), key.node_id)
    }
}

pub(crate) fn decode(value: &[u8]) -> Option<Registration> {
    serde_json::from_slice(value).ok()
}
