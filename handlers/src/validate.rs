//! Request validation, in one place: the metasrv's session rejects bad input with a gRPC
//! status before any handler runs, and CollectStats re-checks it so a handler group used
//! on its own is no less strict.

use common_proto::v1::{HeartbeatRequest, RegionRole, RequestHeader, Role};
use common_proto::PROTOCOL_VERSION;

use crate::error::{InvalidRequestSnafu, Result};

/// A header that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidHeader {
    /// The cluster id (equal to the expected one).
    pub cluster_id: u64,
    /// The node id (never 0).
    pub node_id: u64,
    /// The role (never unspecified).
    pub role: Role,
}

fn invalid<T>(reason: String) -> Result<T> {
    InvalidRequestSnafu { reason }.fail()
}

/// Checks a request header: present, a supported protocol version, the expected cluster,
/// a real node id and a known role.
pub fn validate_header(header: Option<&RequestHeader>, cluster_id: u64) -> Result<ValidHeader> {
    let Some(h) = header else {
        return invalid("missing header".into());
    };
    if h.protocol_version != PROTOCOL_VERSION {
        return invalid(format!(
            "unsupported protocol version {} (this metasrv speaks {PROTOCOL_VERSION})",
            h.protocol_version
        ));
    }
    if h.cluster_id != cluster_id {
        return invalid(format!(
            "cluster id mismatch: request is for cluster {}, this metasrv serves cluster {cluster_id}",
            h.cluster_id
        ));
    }
    if h.node_id == 0 {
        return invalid("node id 0 is reserved; set a node id of 1 or more".into());
    }
    let role = match Role::try_from(h.role) {
        Ok(Role::Unspecified) => return invalid("role is unspecified".into()),
        Ok(role) => role,
        Err(_) => return invalid(format!("unknown role value {}", h.role)),
    };
    Ok(ValidHeader {
        cluster_id,
        node_id: h.node_id,
        role,
    })
}

/// Checks a whole heartbeat: the header, the peer (if sent) and the region stats (known
/// roles, no region reported twice).
pub fn validate_request(req: &HeartbeatRequest, cluster_id: u64) -> Result<ValidHeader> {
    let header = validate_header(req.header.as_ref(), cluster_id)?;
    let Some(peer) = &req.peer else {
        return invalid("missing peer: a heartbeat names the node's advertised address".into());
    };
    if peer.id != header.node_id {
        return invalid(format!(
            "peer id {} does not match header node id {}",
            peer.id, header.node_id
        ));
    }
    if peer.addr.trim().is_empty() {
        return invalid("peer address is empty: set the node's advertised address".into());
    }
    for stat in &req.region_stats {
        match RegionRole::try_from(stat.role) {
            Ok(RegionRole::Leader | RegionRole::Follower) => {}
            _ => {
                return invalid(format!(
                    "region {} has an unspecified or unknown role value {}",
                    stat.region_id, stat.role
                ))
            }
        }
    }
    // Datanodes list their regions in id order: then no two are equal, with no copy to
    // sort (this runs on every heartbeat, twice: in the session and in CollectStats).
    let ascending = req
        .region_stats
        .windows(2)
        .all(|w| w[0].region_id < w[1].region_id);
    if !ascending {
        let mut ids: Vec<u64> = req.region_stats.iter().map(|s| s.region_id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return invalid(format!("region {} is reported twice", w[0]));
        }
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common_proto::v1::{Peer, RegionStat};

    fn header(node_id: u64, role: i32) -> RequestHeader {
        RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: 1,
            node_id,
            role,
        }
    }

    fn reason(r: Result<ValidHeader>) -> String {
        r.expect_err("should be invalid").to_string()
    }

    #[test]
    fn each_bad_header_names_its_problem() {
        assert!(reason(validate_header(None, 1)).contains("missing header"));
        let mut h = header(1, Role::Datanode as i32);
        h.protocol_version = 9;
        assert!(reason(validate_header(Some(&h), 1)).contains("unsupported protocol version 9"));
        assert!(reason(validate_header(Some(&header(1, 1)), 2)).contains("cluster id mismatch"));
        assert!(reason(validate_header(Some(&header(0, 1)), 1)).contains("node id 0"));
        assert!(reason(validate_header(Some(&header(1, 0)), 1)).contains("unspecified"));
        assert!(reason(validate_header(Some(&header(1, 42)), 1)).contains("unknown role value 42"));
        let ok = validate_header(Some(&header(5, Role::Datanode as i32)), 1).expect("valid");
        assert_eq!((ok.node_id, ok.role), (5, Role::Datanode));
    }

    #[test]
    fn bad_bodies_are_rejected() {
        let stat = |id, role| RegionStat {
            region_id: id,
            role,
            ..Default::default()
        };
        let mut req = HeartbeatRequest {
            header: Some(header(3, Role::Datanode as i32)),
            peer: Some(Peer {
                id: 4,
                addr: "x".into(),
            }),
            ..Default::default()
        };
        assert!(reason(validate_request(&req, 1)).contains("peer id 4"));
        req.peer = None;
        assert!(reason(validate_request(&req, 1)).contains("missing peer"));
        req.peer = Some(Peer {
            id: 3,
            addr: String::new(),
        });
        assert!(reason(validate_request(&req, 1)).contains("peer address is empty"));
        req.peer = Some(Peer {
            id: 3,
            addr: "127.0.0.1:5000".into(),
        });
        req.region_stats = vec![stat(1, 0)];
        assert!(reason(validate_request(&req, 1)).contains("region 1 has an unspecified"));
        req.region_stats = vec![stat(1, 1), stat(2, 2), stat(1, 2)];
        assert!(reason(validate_request(&req, 1)).contains("region 1 is reported twice"));
        req.region_stats = vec![stat(1, 1), stat(2, 1), stat(2, 1)];
        assert!(
            reason(validate_request(&req, 1)).contains("region 2 is reported twice"),
            "a repeat in otherwise sorted order"
        );
        req.region_stats = vec![stat(3, 1), stat(1, 2), stat(2, 1)];
        validate_request(&req, 1).expect("any order is valid");
        req.region_stats.pop();
        validate_request(&req, 1).expect("valid");
    }
}
