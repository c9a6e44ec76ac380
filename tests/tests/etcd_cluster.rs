//! A metasrv cluster on a real etcd: 1 etcd, 3 `metasrv` processes (each reaching etcd
//! through its own TCP proxy, so any one can be partitioned), 3 `datanode` processes, and
//! a writer per region that writes continuously while each scenario runs.
//!
//! Timings are scaled down from the defaults but keep their ratios: heartbeat 1 s,
//! meta lease 3 s, region lease 6 s (longer than the meta lease plus rediscovery).
//! The scenarios run one at a time, so they do not compete for the machine's two cores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::etcd::EtcdProc;
use tests::proxy::TcpProxy;
use tests::writers::Writers;
use tests::{eventually, DatanodeProc, Http, MetasrvProc};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TIMINGS: &[&str] = &[
    "--heartbeat-interval",
    "1s",
    "--node-lease",
    "6s",
    "--region-lease",
    "6s",
    "--failover-wait",
    "8s",
    "--meta-lease",
    "3s",
];

// Field order: processes stop (printing logs on a panic) before etcd and the directory go.
struct EtcdCluster {
    metasrvs: Vec<Option<MetasrvProc>>,
    datanodes: Vec<DatanodeProc>,
    proxies: Vec<TcpProxy>,
    placement: Vec<(u64, String)>,
    http: Http,
    etcd: EtcdProc,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    async fn start() -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = EtcdProc::start(dir.path());
        let mut proxies = Vec::new();
        let mut metasrvs = Vec::new();
        for i in 0..3 {
            let proxy = TcpProxy::start(etcd.endpoint()).await;
            let mut args: Vec<String> = TIMINGS.iter().map(|s| s.to_string()).collect();
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
            args.push(proxy.addr.to_string());
            let log = dir.path().join(format!("metasrv{i}.log"));
            metasrvs.push(Some(MetasrvProc::start(
                &format!("metasrv{i}"),
                "127.0.0.1:0",
                &args,
                &log,
            )));
            proxies.push(proxy);
        }
        let grpcs: Vec<String> = metasrvs.iter().flatten().map(|m| m.grpc.clone()).collect();
        let datanodes = (1..=3)
            .map(|id| {
                let d = dir.path();
                DatanodeProc::start(
                    id,
                    &grpcs,
                    &d.join(format!("dn{id}")),
                    &d.join(format!("dn{id}.log")),
                )
            })
            .collect();
        let mut c = EtcdCluster {
            metasrvs,
            datanodes,
            proxies,
            placement: Vec::new(),
            http: Http::new(),
            etcd,
            dir,
        };
        let leader = c.wait_leader(None, Duration::from_secs(20)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.nodes_alive(leader).await < 3 {
            assert!(
                Instant::now() < deadline,
                "datanodes did not all connect to the leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = c.ms(leader).http.clone();
        for _ in 0..6 {
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

    fn ms(&self, i: usize) -> &MetasrvProc {
        self.metasrvs[i].as_ref().expect("metasrv running")
    }

    /// Which live metasrvs say they lead (and are ready).
    async fn leaders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, m) in self.metasrvs.iter().enumerate() {
            let Some(m) = m else { continue };
            let (code, body) = self.http.get(&format!("{}/leader", m.http)).await;
            if code == 200 && body["is_leader"] == true {
                out.push(i);
            }
        }
        out
    }

    /// Waits until exactly one metasrv leads, other than `not`.
    async fn wait_leader(&self, not: Option<usize>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let l = self.leaders().await;
            if l.len() == 1 && Some(l[0]) != not {
                return l[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single new leader within {within:?} (saw {l:?})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `leader` has granted leases to every datanode.
    async fn wait_all_granted(&self, leader: usize, within: Duration) {
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
                (granted == 3).then_some(())
            }
        })
        .await;
    }

    async fn nodes_alive(&self, leader: usize) -> usize {
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

    async fn history(&self, i: usize) -> Vec<Value> {
        let (_, body) = self
            .http
            .get(&format!("{}/leader/history", self.ms(i).http))
            .await;
        body.as_array().cloned().unwrap_or_default()
    }
}

fn assert_no_refusals(what: &str, written: u64, failures: &[String]) {
    assert!(written > 0, "{what}: the writers wrote nothing");
    assert!(
        failures.is_empty(),
        "{what}: {} writes refused (a region turned readonly):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_costs_no_node_and_no_region() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start().await;
    let writers = Writers::start(&c.http, &c.placement);
    let leader = c.wait_leader(None, Duration::from_secs(5)).await;
    let follower = (leader + 1) % 3;
    c.metasrvs[follower].as_mut().expect("running").proc.kill();
    c.metasrvs[follower] = None;
    // Watch for longer than a region lease: every node stays alive on the leader.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert_eq!(c.nodes_alive(leader).await, 3, "a datanode left /nodes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(c.leaders().await, vec![leader], "leadership did not move");
    let (written, failures) = writers.stop().await;
    assert_no_refusals("follower SIGKILL", written, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_every_node_to_a_new_leader_without_a_readonly_region() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start().await;
    let writers = Writers::start(&c.http, &c.placement);
    let old = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.metasrvs[old].as_mut().expect("running").proc.kill();
    c.metasrvs[old] = None;
    let new = c.wait_leader(Some(old), Duration::from_secs(15)).await;
    let elected = t0.elapsed();
    c.wait_all_granted(new, Duration::from_secs(15)).await;
    let granted = t0.elapsed();
    eprintln!("MEASURE leader SIGKILL: new leader after {elected:?}, last datanode granted by it after {granted:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (written, failures) = writers.stop().await;
    assert_no_refusals("leader SIGKILL", written, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_resigns_so_a_successor_leads_at_once() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start().await;
    let writers = Writers::start(&c.http, &c.placement);
    let old = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.ms(old).proc.signal("TERM");
    // Watch the others only: the old one is going away.
    let new = loop {
        let mut found = None;
        for i in (0..3).filter(|&i| i != old) {
            let (_, body) = c.http.get(&format!("{}/leader", c.ms(i).http)).await;
            if body["is_leader"] == true {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no successor after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t0.elapsed();
    eprintln!("MEASURE leader SIGTERM: successor leads after {took:?}");
    assert!(
        c.metasrvs[old]
            .as_mut()
            .expect("running")
            .proc
            .terminate(Duration::from_secs(10)),
        "the old leader exits gracefully"
    );
    c.metasrvs[old] = None;
    c.wait_all_granted(new, Duration::from_secs(10)).await;
    eprintln!(
        "MEASURE leader SIGTERM: every datanode granted by the successor after {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (written, failures) = writers.stop().await;
    assert_no_refusals("leader SIGTERM", written, &failures);
    // The successor took over through a resign, not a lease expiry (3 s).
    assert!(
        took < Duration::from_secs(3),
        "successor after {took:?}: the resign did not take effect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_ends_with_exactly_one_leader() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start().await;
    let before = c.wait_leader(None, Duration::from_secs(5)).await;
    c.etcd.kill();
    // With etcd gone, the leader's keep-alives fail and it steps down.
    eventually(
        "the leader stepped down",
        Duration::from_secs(10),
        || async { c.leaders().await.is_empty().then_some(()) },
    )
    .await;
    c.etcd.restart();
    let leader = c.wait_leader(None, Duration::from_secs(20)).await;
    // It stays the only leader.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(c.leaders().await, vec![leader]);
    }
    c.wait_all_granted(leader, Duration::from_secs(20)).await;
    for (region, dn) in c.placement.clone() {
        let http = c.http.clone();
        eventually(
            &format!("region {region} writable again"),
            Duration::from_secs(10),
            || {
                let (http, dn) = (http.clone(), dn.clone());
                async move {
                    (http.write_row(&dn, region, "after", "restart").await.0 == 200).then_some(())
                }
            },
        )
        .await;
    }
    let log = std::fs::read_to_string(c.dir.path().join(format!("metasrv{before}.log")))
        .unwrap_or_default();
    assert!(
        log.contains("stepped down"),
        "the old leader logged its step-down"
    );
}

/// Every pair of terms on different metasrvs: their grant windows must not overlap.
fn assert_grants_never_overlap(histories: &[(usize, Vec<Value>)]) {
    let mut windows = Vec::new();
    for (i, terms) in histories {
        for t in terms {
            if let (Some(first), Some(last)) =
                (t["first_grant_ms"].as_u64(), t["last_grant_ms"].as_u64())
            {
                windows.push((*i, first, last));
            }
        }
    }
    for a in &windows {
        for b in &windows {
            if a.0 != b.0 {
                assert!(
                    a.2 < b.1 || b.2 < a.1,
                    "metasrv{} granted during [{}, {}] and metasrv{} during [{}, {}]",
                    a.0,
                    a.1,
                    a.2,
                    b.0,
                    b.1,
                    b.2
                );
            }
        }
    }
    assert!(
        windows.len() >= 2,
        "expected grant windows on two metasrvs, got {windows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_partitioned_from_etcd_stops_granting_before_a_new_one_starts() {
    let _serial = SERIAL.lock().await;
    let c = EtcdCluster::start().await;
    let writers = Writers::start(&c.http, &c.placement);
    let old = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.proxies[old].set_blocked(true);
    let new = c.wait_leader(Some(old), Duration::from_secs(15)).await;
    eprintln!("MEASURE partition: new leader after {:?}", t0.elapsed());
    c.wait_all_granted(new, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let histories: Vec<(usize, Vec<Value>)> =
        vec![(old, c.history(old).await), (new, c.history(new).await)];
    let old_last = histories[0].1.last().cloned().unwrap_or_default();
    assert!(
        old_last["ended_ms"].as_u64().is_some(),
        "the partitioned leader ended its term: {old_last}"
    );
    assert_grants_never_overlap(&histories);
    c.proxies[old].set_blocked(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.leaders().await, vec![new], "after healing, one leader");
    let (written, failures) = writers.stop().await;
    eprintln!("partition: {written} writes, {} refused", failures.len());
    assert!(written > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_forced_leader_changes_in_a_minute_turn_nothing_readonly() {
    let _serial = SERIAL.lock().await;
    let c = EtcdCluster::start().await;
    let writers = Writers::start(&c.http, &c.placement);
    let t0 = Instant::now();
    let mut leader = c.wait_leader(None, Duration::from_secs(5)).await;
    let mut leaders = vec![leader];
    for change in 0..10 {
        let (code, body) = c
            .http
            .post(&format!("{}/leader/resign", c.ms(leader).http), &json!({}))
            .await;
        assert_eq!(code, 200, "resign {change}: {body}");
        leader = c.wait_leader(Some(leader), Duration::from_secs(5)).await;
        leaders.push(leader);
        c.wait_all_granted(leader, Duration::from_secs(5)).await;
    }
    let took = t0.elapsed();
    eprintln!("MEASURE 10 forced leader changes took {took:?}: {leaders:?}");
    assert!(took < Duration::from_secs(60), "ten changes took {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.leaders().await.len(), 1, "exactly one leader at the end");
    let histories: Vec<(usize, Vec<Value>)> = {
        let mut h = Vec::new();
        for i in 0..3 {
            h.push((i, c.history(i).await));
        }
        h
    };
    assert_grants_never_overlap(&histories);
    let (written, failures) = writers.stop().await;
    assert_no_refusals("ten leader changes", written, &failures);
}
