//! A rolling timing change on real processes: metasrv 0 grants 20 s region leases, 1 and
//! 2 grant 3 s ones (the cluster is half way through lowering its lease). Metasrv 0 leads
//! and grants a region on datanode A; A is frozen (SIGSTOP) with a write queued on it, and
//! metasrv 0 resigns. The successor must wait out the 20 s lease metasrv 0 granted, not
//! its own 3 s one: no write may be accepted by A after the first write datanode B
//! acknowledged for the region. On a successor that waited out its own lease, B was
//! writable about 5 s after the stop and A accepted its queued write when thawed at 9.8 s.

use std::time::{Duration, Instant};

use tests::cluster::{ClusterSpec, EtcdCluster};
use tests::eventually;

const TIMINGS: &[&str] = &["--heartbeat-interval", "1s", "--node-lease", "3s"];

fn flags(lease: &str, wait: &str) -> Vec<String> {
    ["--region-lease", lease, "--failover-wait", wait]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_waits_out_the_longer_lease_its_predecessor_granted() {
    let spec = ClusterSpec {
        datanodes: 2,
        shared: true,
        regions: 1,
        member_args: vec![flags("20s", "21s"), flags("3s", "4s"), flags("3s", "4s")],
        ..ClusterSpec::new(TIMINGS)
    };
    let mut c = EtcdCluster::start(spec).await;
    // Metasrv 0 (20 s leases) must lead: others resign until it does.
    let http = c.http.clone();
    eventually("metasrv 0 leads", Duration::from_secs(60), || async {
        let leader = c.leaders().await;
        match leader.as_slice() {
            [0] => Some(()),
            [other] => {
                let _ = http
                    .post(
                        &format!("{}/leader/resign", c.ms(*other).http),
                        &serde_json::json!({}),
                    )
                    .await;
                None
            }
            _ => None,
        }
    })
    .await;
    let (region, a_url) = c.placement[0].clone();
    let a = c.datanodes.iter().position(|d| d.http == a_url).expect("A");
    let b_url = c.datanodes[1 - a].http.clone();
    // A holds a 20 s lease from metasrv 0.
    eventually("A holds a 20 s lease", Duration::from_secs(15), || async {
        let (_, status) = http.get(&format!("{a_url}/status")).await;
        let left = status["regions"][0]["lease_left_ms"].as_u64()?;
        (left > 15_000).then_some(())
    })
    .await;

    // The successor needs A's storage kind (shared) from A's stats, flushed to etcd.
    let a_id = c.datanodes[a].node_id;
    let endpoint = c.etcd().endpoint();
    let etcd = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("etcd client");
    let stats_key = format!("/test-cluster/__meta/stats/datanode/{a_id}");
    let reported = format!("\"region_id\":{region}");
    eventually(
        "A's stats with the region in etcd",
        Duration::from_secs(15),
        || {
            let (mut etcd, key, reported) = (etcd.clone(), stats_key.clone(), reported.clone());
            async move {
                let resp = etcd.get(key, None).await.ok()?;
                let value = resp.kvs().first()?.value_str().ok()?.to_string();
                value.contains(&reported).then_some(())
            }
        },
    )
    .await;

    c.datanodes[a].proc.freeze();
    let stopped = Instant::now();
    // A write queued on the frozen A: answered when it resumes.
    let queued = {
        let (http, a_url) = (http.clone(), a_url.clone());
        tokio::spawn(async move {
            let code = http
                .try_write_row_within(&a_url, region, "c", "stale", Duration::from_secs(60))
                .await;
            (code, Instant::now())
        })
    };
    // SIGTERM resigns: the successor leads within milliseconds.
    let mut m0 = c.metasrvs[0].take().expect("metasrv 0 runs");
    assert!(
        m0.proc.terminate(Duration::from_secs(10)),
        "metasrv 0 exits"
    );
    let successor = c.wait_leader(Some(0), Duration::from_secs(15)).await;

    // B's first acknowledged write, polled every 50 ms; A thaws at 9.8 s.
    let mut b_first_sent: Option<Instant> = None;
    let mut thawed = false;
    while b_first_sent.is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "the region never became writable on B"
        );
        if !thawed && stopped.elapsed() >= Duration::from_millis(9_800) {
            c.datanodes[a].proc.thaw();
            thawed = true;
        }
        let sent = Instant::now();
        if http.try_write_row(&b_url, region, "b", "new").await == Some(200) {
            b_first_sent = Some(sent);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let b_first_sent = b_first_sent.expect("set above");
    if !thawed {
        c.datanodes[a].proc.thaw();
    }
    let (code, answered) = queued.await.expect("join");
    // Every write A accepted was answered before B's first acknowledged write was sent.
    let mut a_late = Vec::new();
    if code == Some(200) && answered >= b_first_sent {
        a_late.push(format!(
            "the queued write, answered {:?} after B's first",
            answered - b_first_sent
        ));
    }
    // A keeps being offered writes for a while: none may succeed now.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if http.try_write_row(&a_url, region, "d", "stale").await == Some(200) {
            a_late.push("a write sent after B's first".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "MEASURE rolling timings: B writable {:?} after A froze; A's queued write: {:?}; A accepted after B's first: {}",
        b_first_sent - stopped,
        code,
        a_late.len()
    );
    assert!(
        a_late.is_empty(),
        "two writers for region {region}: {a_late:?}"
    );
    // The successor said which bound it honoured.
    let log = std::fs::read_to_string(c.dir.path().join(format!("metasrv{successor}.log")))
        .unwrap_or_default();
    assert!(
        log.contains("earlier_bound_ms=20000"),
        "the successor logs the 20 s bound it waited out"
    );
}
