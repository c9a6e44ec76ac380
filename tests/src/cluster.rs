//! [`EtcdCluster`]: one real etcd, 3 `metasrv` processes (each reaching etcd through its
//! own TCP proxy, so any one can be partitioned), N `datanode` processes, and regions
//! created on them. Shared by the etcd, fail-closed and failover suites.
//!
//! With [`ClusterSpec::etcd_members`] = 3 the etcd is a real 3-member cluster instead, and
//! every metasrv is given all three endpoints directly (no proxies), metasrv `i` listing
//! member `i` first.

use std::time::Duration;

use serde_json::{json, Value};

use crate::etcd::{EtcdMembers, EtcdProc};
use crate::proxy::TcpProxy;
use crate::writers::Writers;
use crate::{eventually, DatanodeProc, Http, MetasrvProc, Stderr};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Flags for every metasrv (timings).
    pub metasrv_args: Vec<String>,
    /// How many datanodes.
    pub datanodes: u64,
    /// Whether the datanodes share a region-data directory (regions can fail over).
    pub shared: bool,
    /// How many regions to create (placed by the metasrv).
    pub regions: usize,
    /// 1: one etcd, reached through a proxy per metasrv; 3: a 3-member etcd cluster.
    pub etcd_members: usize,
    /// Flags for metasrv `i` alone, after `metasrv_args` (members configured apart).
    pub member_args: Vec<Vec<String>>,
}

impl ClusterSpec {
    /// 3 datanodes, 6 regions, local storage, with `timings`.
    pub fn new(timings: &[&str]) -> Self {
        Self {
            metasrv_args: timings.iter().map(|s| s.to_string()).collect(),
            datanodes: 3,
            shared: false,
            regions: 6,
            etcd_members: 1,
            member_args: Vec::new(),
        }
    }
}

/// A running cluster. Field order: processes stop (printing logs on a panic) before etcd
/// and the directory go.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The metasrvs (`None` once killed for good).
    pub metasrvs: Vec<Option<MetasrvProc>>,
    /// The datanodes.
    pub datanodes: Vec<DatanodeProc>,
    /// Each metasrv's proxy to etcd (single-member etcd only).
    pub proxies: Vec<TcpProxy>,
    /// Each created region and its first datanode's data URL.
    pub placement: Vec<(u64, String)>,
    /// An HTTP client.
    pub http: Http,
    /// The single-member etcd (`etcd_members` = 1).
    pub etcd_proc: Option<EtcdProc>,
    /// The 3-member etcd (`etcd_members` = 3).
    pub etcd_members: Option<EtcdMembers>,
    /// Logs, data, the shared directory.
    pub dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts the cluster of `spec`, waits for a leader and every datanode, creates the
    /// regions and waits until each is writable.
    pub async fn start(spec: ClusterSpec) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (etcd_proc, etcd_members) = if spec.etcd_members == 3 {
            (None, Some(EtcdMembers::start(dir.path())))
        } else {
            (Some(EtcdProc::start(dir.path())), None)
        };
        let mut proxies = Vec::new();
        let mut metasrvs = Vec::new();
        for i in 0..3 {
            let store_addrs = match (&etcd_proc, &etcd_members) {
                (Some(etcd), _) => {
                    let proxy = TcpProxy::start(etcd.endpoint()).await;
                    let addr = proxy.addr.to_string();
                    proxies.push(proxy);
                    addr
                }
                (None, Some(members)) => {
                    // Each metasrv prefers a different member, so every member carries
                    // some metasrv's calls and streams, as in production.
                    let mut endpoints = members.endpoints();
                    endpoints.rotate_left(i);
                    endpoints.join(",")
                }
                (None, None) => unreachable!("one etcd or the other"),
            };
            let mut args = spec.metasrv_args.clone();
            args.extend(spec.member_args.get(i).into_iter().flatten().cloned());
            args.extend(
                [
                    "--backend",
                    "etcd",
                    "--store-key-prefix",
                    "/test-cluster",
                    "--store-addrs",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            args.push(store_addrs);
            let log = dir.path().join(format!("metasrv{i}.log"));
            metasrvs.push(Some(MetasrvProc::start(
                &format!("metasrv{i}"),
                "127.0.0.1:0",
                &args,
                &log,
            )));
        }
        let grpcs: Vec<String> = metasrvs.iter().flatten().map(|m| m.grpc.clone()).collect();
        let shared: Vec<String> = if spec.shared {
            vec![
                "--shared-dir".into(),
                dir.path().join("shared").display().to_string(),
            ]
        } else {
            Vec::new()
        };
        let datanodes = (1..=spec.datanodes)
            .map(|id| {
                let d = dir.path();
                DatanodeProc::start_with(
                    id,
                    &grpcs,
                    &d.join(format!("dn{id}")),
                    &d.join(format!("dn{id}.log")),
                    Stderr::Log,
                    &shared,
                )
            })
            .collect();
        let mut c = EtcdCluster {
            metasrvs,
            datanodes,
            proxies,
            placement: Vec::new(),
            http: Http::new(),
            etcd_proc,
            etcd_members,
            dir,
        };
        let leader = c.wait_leader(None, Duration::from_secs(20)).await;
        eventually(
            "every datanode connected to the leader",
            Duration::from_secs(20),
            || async { (c.nodes_alive(leader).await == spec.datanodes as usize).then_some(()) },
        )
        .await;
        let url = c.ms(leader).http.clone();
        for _ in 0..spec.regions {
            let (code, route) = c.http.post(&format!("{url}/regions"), &json!({})).await;
            assert_eq!(code, 201, "create region: {route}");
            let node = route["leader"].as_u64().expect("leader");
            let dn = c
                .datanodes
                .iter()
                .find(|d| d.node_id == node)
                .expect("datanode")
                .http
                .clone();
            c.placement
                .push((route["region_id"].as_u64().expect("id"), dn));
        }
        for (region, dn) in c.placement.clone() {
            let http = c.http.clone();
            eventually(
                &format!("region {region} writable"),
                Duration::from_secs(10),
                || {
                    let (http, dn) = (http.clone(), dn.clone());
                    async move {
                        (http.write_row(&dn, region, "probe", "x").await.0 == 200).then_some(())
                    }
                },
            )
            .await;
        }
        c
    }

    /// The single-member etcd (the spec's default).
    pub fn etcd(&mut self) -> &mut EtcdProc {
        self.etcd_proc.as_mut().expect("a single-member etcd")
    }

    /// The 3-member etcd.
    pub fn members(&mut self) -> &mut EtcdMembers {
        self.etcd_members.as_mut().expect("a 3-member etcd")
    }

    /// Metasrv `i`, which must be running.
    pub fn ms(&self, i: usize) -> &MetasrvProc {
        self.metasrvs[i].as_ref().expect("metasrv running")
    }

    /// Which running metasrvs say they lead (and are ready). Stopped (SIGSTOP) ones are
    /// not asked: they cannot answer.
    pub async fn leaders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, m) in self.metasrvs.iter().enumerate() {
            let Some(m) = m else { continue };
            if m.proc.is_stopped() {
                continue;
            }
            let (code, body) = self.http.get(&format!("{}/leader", m.http)).await;
            if code == 200 && body["is_leader"] == true {
                out.push(i);
            }
        }
        out
    }

    /// Waits until exactly one metasrv leads, other than `not`.
    pub async fn wait_leader(&self, not: Option<usize>, within: Duration) -> usize {
        eventually("a single new leader", within, || async {
            let l = self.leaders().await;
            (l.len() == 1 && Some(l[0]) != not).then(|| l[0])
        })
        .await
    }

    /// Waits until `leader` has granted leases to every datanode.
    pub async fn wait_all_granted(&self, leader: usize, within: Duration) {
        let n_datanodes = self.datanodes.len();
        let url = format!("{}/nodes", self.ms(leader).http);
        let http = self.http.clone();
        eventually("every datanode granted by the leader", within, || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (_, nodes) = http.get(&url).await;
                let n = nodes.as_array()?;
                let granted = n
                    .iter()
                    .filter(|n| {
                        n["alive"] == true
                            && n["granted_ms_ago"].as_u64().is_some_and(|ms| ms < 1500)
                    })
                    .count();
                (granted == n_datanodes).then_some(())
            }
        })
        .await;
    }

    /// How many datanodes `leader` sees alive and connected.
    pub async fn nodes_alive(&self, leader: usize) -> usize {
        let (_, nodes) = self
            .http
            .get(&format!("{}/nodes", self.ms(leader).http))
            .await;
        nodes.as_array().map_or(0, |n| {
            n.iter()
                .filter(|n| n["alive"] == true && n["connected"] == true)
                .count()
        })
    }

    /// Waits until the writers have written 30 more rows: the cluster serves writes.
    pub async fn writes_go_on(&self, writers: &Writers) {
        let from = writers.written();
        eventually(
            "the writers go on writing",
            Duration::from_secs(10),
            || async { (writers.written() >= from + 30).then_some(()) },
        )
        .await;
    }

    /// Every member's grant log.
    pub async fn histories(&self) -> Vec<(usize, Vec<Value>)> {
        let mut h = Vec::new();
        for i in 0..self.metasrvs.len() {
            if self.metasrvs[i].is_some() {
                h.push((i, self.history(i).await));
            }
        }
        h
    }

    /// Metasrv `i`'s grant log.
    pub async fn history(&self, i: usize) -> Vec<Value> {
        let (_, body) = self
            .http
            .get(&format!("{}/leader/history", self.ms(i).http))
            .await;
        body.as_array().cloned().unwrap_or_default()
    }
}
