//! [`Heartbeat`]: one heartbeat request, validated once, at the edge, in the typed form
//! every handler reads.
//!
//! The rule: a handler never sees a request nobody checked, and never checks it again.
//! [`Heartbeat::parse`] is the only way to build one, so holding a `Heartbeat` is the proof
//! that the header, the peer and the region list passed: the metasrv's session parses each
//! message as it arrives, and a group driven on its own (an example, a test) must parse
//! too. Parsing also builds the [`Stat`] the stats store keeps, once, so no handler copies
//! the region list again.

use std::collections::HashMap;
use std::sync::Arc;

use common_proto::v1::{HeartbeatRequest, RegionRole, RequestHeader, Role};
use common_proto::PROTOCOL_VERSION;

use crate::error::{InvalidRequestSnafu, Result};
use crate::stat::RegionStatSummary;
use crate::{NodeKey, Stat};

/// A validated heartbeat: who sent it, its regions, and its free-form extensions.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    stat: Arc<Stat>,
    extensions: HashMap<String, String>,
}

impl Heartbeat {
    /// Validates `req` for a metasrv serving `cluster_id` and types it. The mailbox reply
    /// a request may carry is not part of the heartbeat: take it out first.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest), naming the first problem:
    /// no header, an unsupported protocol version, another cluster, node id 0, an
    /// unspecified or unknown role, no peer or a peer that names another node or no
    /// address, a region with an unknown role, or a region reported twice.
    pub fn parse(req: HeartbeatRequest, cluster_id: u64) -> Result<Self> {
        let key = validate_header(req.header.as_ref(), cluster_id)?;
        let Some(peer) = req.peer else {
            return invalid("missing peer: a heartbeat names the node's advertised address".into());
        };
        if peer.id != key.node_id {
            return invalid(format!(
                "peer id {} does not match header node id {}",
                peer.id, key.node_id
            ));
        }
        if peer.addr.trim().is_empty() {
            return invalid("peer address is empty: set the node's advertised address".into());
        }
        let mut region_stats = Vec::with_capacity(req.region_stats.len());
        for s in req.region_stats {
            let role = match RegionRole::try_from(s.role) {
                Ok(role @ (RegionRole::Leader | RegionRole::Follower)) => role,
                _ => {
                    return invalid(format!(
                        "region {} has an unspecified or unknown role value {}",
                        s.region_id, s.role
                    ))
                }
            };
            region_stats.push(RegionStatSummary {
                region_id: s.region_id,
                role,
                rcus: s.rcus,
                wcus: s.wcus,
                approximate_bytes: s.approximate_bytes,
                row_count: s.row_count,
                shared_storage: s.shared_storage,
                unavailable: (!s.unavailable.is_empty()).then(|| s.unavailable.into()),
            });
        }
        check_unique(&region_stats)?;
        Ok(Self {
            stat: Arc::new(Stat {
                cluster_id,
                node_id: key.node_id,
                role: key.role,
                addr: peer.addr,
                node_epoch: req.node_epoch,
                duration_since_epoch: req.duration_since_epoch,
                received_at_millis: common_proto::unix_millis(),
                region_stats,
                shared_storage: req.shared_storage,
            }),
            extensions: req.extensions,
        })
    }

    /// The sender: its role and node id.
    pub fn key(&self) -> NodeKey {
        self.stat.key()
    }

    /// The sender's role (never unspecified).
    pub fn role(&self) -> Role {
        self.stat.role
    }

    /// Everything the node reported, as the stats store keeps it.
    pub fn stat(&self) -> &Arc<Stat> {
        &self.stat
    }

    /// The reported regions, in the order sent; no id appears twice.
    pub fn regions(&self) -> &[RegionStatSummary] {
        &self.stat.region_stats
    }

    /// One extension the node sent (`version`, `label.zone`, ...).
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).map(String::as_str)
    }

    /// All extensions the node sent.
    pub fn extensions(&self) -> &HashMap<String, String> {
        &self.extensions
    }
}

fn invalid<T>(reason: String) -> Result<T> {
    InvalidRequestSnafu { reason }.fail()
}

/// Checks a request header (present, a supported protocol version, the expected cluster,
/// a real node id, a known role) and returns whose it is.
fn validate_header(header: Option<&RequestHeader>, cluster_id: u64) -> Result<NodeKey> {
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
    Ok(NodeKey {
        role,
        node_id: h.node_id,
    })
}

/// No region twice. Datanodes list their regions in id order: then none repeats, with
/// no copy to sort.
fn check_unique(regions: &[RegionStatSummary]) -> Result<()> {
    if regions.windows(2).all(|w| w[0].region_id < w[1].region_id) {
        return Ok(());
    }
    let mut ids: Vec<u64> = regions.iter().map(|s| s.region_id).collect();
    ids.sort_unstable();
    match ids.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => invalid(format!("region {} is reported twice", w[0])),
        None => Ok(()),
    }
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

    fn reason<T: std::fmt::Debug>(r: Result<T>) -> String {
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
        assert_eq!(ok, NodeKey::datanode(5));
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
        let parse = |req: &HeartbeatRequest| Heartbeat::parse(req.clone(), 1);
        assert!(reason(parse(&req)).contains("peer id 4"));
        req.peer = None;
        assert!(reason(parse(&req)).contains("missing peer"));
        req.peer = Some(Peer {
            id: 3,
            addr: String::new(),
        });
        assert!(reason(parse(&req)).contains("peer address is empty"));
        req.peer = Some(Peer {
            id: 3,
            addr: "127.0.0.1:5000".into(),
        });
        req.header = None;
        assert!(reason(parse(&req)).contains("missing header"));
        req.header = Some(header(3, Role::Datanode as i32));
        req.region_stats = vec![stat(1, 0)];
        assert!(reason(parse(&req)).contains("region 1 has an unspecified"));
        req.region_stats = vec![stat(1, 1), stat(2, 2), stat(1, 2)];
        assert!(reason(parse(&req)).contains("region 1 is reported twice"));
        req.region_stats = vec![stat(1, 1), stat(2, 1), stat(2, 1)];
        assert!(
            reason(parse(&req)).contains("region 2 is reported twice"),
            "a repeat in otherwise sorted order"
        );
        req.region_stats = vec![stat(3, 1), stat(1, 2), stat(2, 1)];
        parse(&req).expect("any order is valid");
        req.region_stats.pop();
        parse(&req).expect("valid");
    }

    #[test]
    fn a_valid_request_becomes_its_stat_and_extensions() {
        let req = HeartbeatRequest {
            header: Some(header(3, Role::Datanode as i32)),
            peer: Some(Peer {
                id: 3,
                addr: "127.0.0.1:5000".into(),
            }),
            node_epoch: 11,
            duration_since_epoch: 12,
            shared_storage: true,
            region_stats: vec![
                RegionStat {
                    region_id: 1,
                    role: RegionRole::Leader as i32,
                    rcus: 2,
                    wcus: 3,
                    approximate_bytes: 4,
                    row_count: 5,
                    shared_storage: true,
                    ..Default::default()
                },
                RegionStat {
                    region_id: 2,
                    role: RegionRole::Follower as i32,
                    unavailable: "bad manifest".into(),
                    ..Default::default()
                },
            ],
            extensions: [("version".to_string(), "1.2.0".to_string())].into(),
            ..Default::default()
        };
        let hb = Heartbeat::parse(req, 1).expect("valid");
        assert_eq!(hb.key(), NodeKey::datanode(3));
        assert_eq!(hb.role(), Role::Datanode);
        assert_eq!(hb.extension("version"), Some("1.2.0"));
        assert_eq!(hb.extension("zone"), None);
        assert_eq!(
            hb.extensions(),
            &HashMap::from([("version".to_string(), "1.2.0".to_string())])
        );
        let stat = hb.stat();
        assert_eq!(
            (
                stat.cluster_id,
                stat.addr.as_str(),
                stat.node_epoch,
                stat.duration_since_epoch,
                stat.shared_storage
            ),
            (1, "127.0.0.1:5000", 11, 12, true)
        );
        assert!(stat.received_at_millis > 0);
        let regions = hb.regions();
        assert_eq!(
            regions[0],
            RegionStatSummary {
                region_id: 1,
                role: RegionRole::Leader,
                rcus: 2,
                wcus: 3,
                approximate_bytes: 4,
                row_count: 5,
                shared_storage: true,
                unavailable: None,
            }
        );
        assert_eq!(regions[1].role, RegionRole::Follower);
        assert_eq!(regions[1].unavailable.as_deref(), Some("bad manifest"));
    }
}
