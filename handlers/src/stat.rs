//! [`Stat`]: one heartbeat, parsed and validated, in the form handlers and the stats
//! store use. Roles are typed here; the stored JSON keeps the proto's integer values, so
//! stats flushed by an older leader still read.

use common_proto::v1::{RegionRole, Role};
use serde::{Deserialize, Serialize};

use crate::NodeKey;

/// One region's load as reported in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatSummary {
    /// The region id.
    pub region_id: u64,
    /// The role the node reports for it (leader or follower).
    #[serde(with = "proto_enum")]
    pub role: RegionRole,
    /// Read capacity units since the last heartbeat.
    pub rcus: i64,
    /// Write capacity units since the last heartbeat.
    pub wcus: i64,
    /// Approximate size on disk.
    pub approximate_bytes: u64,
    /// Row count.
    pub row_count: u64,
    /// Whether the data is on shared storage (any datanode can open it), so the region
    /// can fail over.
    #[serde(default)]
    pub shared_storage: bool,
    /// Set when the node cannot serve the region (its storage could not be read): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<Box<str>>,
}

/// A validated heartbeat: who sent it, when, and its regions' stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's role (never unspecified).
    #[serde(with = "proto_enum")]
    pub role: Role,
    /// The sender's advertised address.
    pub addr: String,
    /// The sender's process start time; a newer epoch means it restarted.
    pub node_epoch: u64,
    /// The sender's monotonic send time, echoed in the lease.
    pub duration_since_epoch: u64,
    /// When the metasrv received it (ms since the Unix epoch), for operators.
    pub received_at_millis: u64,
    /// Per-region load.
    pub region_stats: Vec<RegionStatSummary>,
    /// Whether the node can open regions on shared storage (so regions may move to it).
    #[serde(default)]
    pub shared_storage: bool,
}

impl Stat {
    /// The sender's key.
    pub fn key(&self) -> NodeKey {
        NodeKey {
            role: self.role,
            node_id: self.node_id,
        }
    }

    /// Total write capacity units across the node's regions.
    pub fn total_wcus(&self) -> i64 {
        self.region_stats.iter().map(|r| r.wcus).sum()
    }
}

/// A proto enum stored as its integer value; an unknown value (written by a newer
/// version) is an error, never a silent default.
mod proto_enum {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<E, S>(value: &E, s: S) -> Result<S::Ok, S::Error>
    where
        E: Copy + Into<i32>,
        S: Serializer,
    {
        s.serialize_i32((*value).into())
    }

    pub(super) fn deserialize<'de, E, D>(d: D) -> Result<E, D::Error>
    where
        E: TryFrom<i32>,
        D: Deserializer<'de>,
    {
        let value = i32::deserialize(d)?;
        E::try_from(value).map_err(|_| D::Error::custom(format!("unknown enum value {value}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_stored_as_their_proto_values() {
        let stat = Stat {
            cluster_id: 1,
            node_id: 2,
            role: Role::Datanode,
            addr: "a".into(),
            node_epoch: 3,
            duration_since_epoch: 4,
            received_at_millis: 5,
            region_stats: vec![RegionStatSummary {
                region_id: 7,
                role: RegionRole::Follower,
                rcus: 0,
                wcus: 0,
                approximate_bytes: 0,
                row_count: 0,
                shared_storage: false,
                unavailable: None,
            }],
            shared_storage: true,
        };
        let json = serde_json::to_value(&stat).expect("encode");
        assert_eq!(json["role"], Role::Datanode as i32);
        assert_eq!(json["region_stats"][0]["role"], RegionRole::Follower as i32);
        let back: Stat = serde_json::from_value(json.clone()).expect("decode");
        assert_eq!(back, stat);
        let mut unknown = json;
        unknown["role"] = 42.into();
        let err = serde_json::from_value::<Stat>(unknown).expect_err("unknown role");
        assert!(err.to_string().contains("unknown enum value 42"), "{err}");
    }
}
