//! A metasrv cluster on a real etcd: 1 etcd, 3 `metasrv` processes (each reaching etcd
//! through its own TCP proxy, so any one can be partitioned), 3 `datanode` processes, and
//! a writer per region that writes continuously while each scenario runs.
//!
//! Timings are scaled down from the defaults but keep their ratios: heartbeat 1 s,
//! meta lease 3 s, region lease 6 s (longer than the meta lease plus rediscovery).
//! The scenarios run one at a time, so they do not compete for the machine's two cores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::cluster::{ClusterSpec, EtcdCluster};
use tests::writers::Writers;
use tests::{always_for, eventually};

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
    let mut c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
    let writers = Writers::start(&c.http, &c.placement);
    let leader = c.wait_leader(None, Duration::from_secs(5)).await;
    let follower = (leader + 1) % 3;
    c.metasrvs[follower].as_mut().expect("running").proc.kill();
    c.metasrvs[follower] = None;
    // Watch for longer than a region lease: every node stays alive on the leader.
    always_for(
        "every datanode stays alive on the leader",
        Duration::from_secs(8),
        || async { c.nodes_alive(leader).await == 3 },
    )
    .await;
    assert_eq!(c.leaders().await, vec![leader], "leadership did not move");
    let (written, failures) = writers.stop().await;
    assert_no_refusals("follower SIGKILL", written, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_every_node_to_a_new_leader_without_a_readonly_region() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
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
    c.writes_go_on(&writers).await;
    let (written, failures) = writers.stop().await;
    assert_no_refusals("leader SIGKILL", written, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_resigns_so_a_successor_leads_at_once() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
    let writers = Writers::start(&c.http, &c.placement);
    let old = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.ms(old).proc.signal("TERM");
    // Watch the others only: the old one is going away.
    let new = eventually(
        "a successor after SIGTERM",
        Duration::from_secs(10),
        || async {
            for i in (0..3).filter(|&i| i != old) {
                let (_, body) = c.http.get(&format!("{}/leader", c.ms(i).http)).await;
                if body["is_leader"] == true {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    eprintln!(
        "MEASURE leader SIGTERM: successor leads after {:?}",
        t0.elapsed()
    );
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
    c.writes_go_on(&writers).await;
    let (written, failures) = writers.stop().await;
    assert_no_refusals("leader SIGTERM", written, &failures);
    // The successor took over through a resign, not a lease expiry: the mechanism, from
    // the old leader's own log.
    let log =
        std::fs::read_to_string(c.dir.path().join(format!("metasrv{old}.log"))).unwrap_or_default();
    assert!(
        log.contains("resigned leadership"),
        "the old leader resigned on SIGTERM"
    );
}

/// An etcd outage longer than the meta lease: the leader serves until its leadership
/// deadline, then steps down (nobody else can be elected while etcd is away); after etcd
/// returns exactly one leader grants again. The figures are reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_longer_than_the_meta_lease_ends_with_exactly_one_leader() {
    let _serial = SERIAL.lock().await;
    let mut c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
    let writers = Writers::start(&c.http, &c.placement);
    let before = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.etcd().kill();
    // With etcd gone, keep-alives fail; the leader serves until its deadline.
    eventually(
        "the leader stepped down at its deadline",
        Duration::from_secs(10),
        || async { c.leaders().await.is_empty().then_some(()) },
    )
    .await;
    let stepped_down = t0.elapsed();
    // Not ready while etcd is away, on any member: /health says up, /ready says why not;
    // a request for the leader's state is refused with the reason, not answered stale.
    for i in 0..3 {
        let base = &c.ms(i).http;
        let (code, body) = c.http.get(&format!("{base}/ready")).await;
        assert_eq!(code, 503, "member {i}: {body}");
        assert!(
            body["reasons"].to_string().contains("KV backend"),
            "member {i}: {body}"
        );
        let (code, _) = c.http.get(&format!("{base}/health")).await;
        assert_eq!(code, 200, "member {i} is up");
        let (code, body) = c.http.get(&format!("{base}/nodes")).await;
        assert_eq!(code, 503, "member {i} /nodes with no leader: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("leader")),
            "{body}"
        );
    }
    c.etcd().restart();
    let back = t0.elapsed();
    let leader = c.wait_leader(None, Duration::from_secs(20)).await;
    let elected = t0.elapsed();
    c.wait_all_granted(leader, Duration::from_secs(20)).await;
    let granted = t0.elapsed();
    for i in 0..3 {
        let url = format!("{}/ready", c.ms(i).http);
        eventually(
            &format!("member {i} ready again once etcd is back"),
            Duration::from_secs(10),
            || async { (c.http.get(&url).await.0 == 200).then_some(()) },
        )
        .await;
    }
    // It stays the only leader.
    always_for("exactly one leader", Duration::from_secs(2), || async {
        c.leaders().await == vec![leader]
    })
    .await;
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
    let (written, failures) = writers.stop().await;
    eprintln!(
        "MEASURE etcd outage (meta lease 3 s, region lease 6 s): leader stepped down {stepped_down:?} after the kill; \
         etcd back at {back:?}; new leader at {elected:?}; every datanode granted at {granted:?}; \
         {} writes refused of {} (first: {:?}, last: {:?})",
        failures.len(),
        written + failures.len() as u64,
        failures.first(),
        failures.last()
    );
    let log = std::fs::read_to_string(c.dir.path().join(format!("metasrv{before}.log")))
        .unwrap_or_default();
    assert!(
        log.contains("stepped down") && log.contains("leadership deadline passed"),
        "the old leader stepped down at its deadline, not at the first failed keep-alive"
    );
}

/// etcd away for less than the leader's remaining deadline: nothing changes. The leader
/// keeps its term (it retries keep-alives, and etcd restores the lease with a fresh TTL
/// on restart), and no region turns readonly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_etcd_outage_changes_no_leader_and_turns_no_region_readonly() {
    let _serial = SERIAL.lock().await;
    // The default meta lease (5 s): keep-alives every 1 s, so at any instant the leader
    // has at least 5 − 1 − 0.5 (margin) = 3.5 s of authority left.
    let timings: Vec<&str> = TIMINGS
        .chunks(2)
        .filter(|kv| kv[0] != "--meta-lease")
        .flatten()
        .copied()
        .chain(["--meta-lease", "5s"])
        .collect();
    let mut c = EtcdCluster::start(ClusterSpec::new(&timings)).await;
    let writers = Writers::start(&c.http, &c.placement);
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let terms_before = c.history(leader).await.len();
    let t0 = Instant::now();
    c.etcd().kill();
    // Away for 1.5 s, then back (restart() waits until it serves again).
    always_for(
        "the leader leads on",
        Duration::from_millis(1_500),
        || async { c.leaders().await == vec![leader] },
    )
    .await;
    c.etcd().restart();
    let outage = t0.elapsed();
    // Long enough for keep-alives to resume and for a lost term to show.
    always_for(
        "the same leader, in the same term",
        Duration::from_secs(6),
        || async { c.leaders().await == vec![leader] },
    )
    .await;
    let history = c.history(leader).await;
    assert_eq!(
        history.len(),
        terms_before,
        "no new term began: {history:?}"
    );
    assert!(
        history.last().is_some_and(|t| t["ended_ms"].is_null()),
        "the term never ended: {history:?}"
    );
    // The followers' candidate terms ended with etcd away; they still name the leader
    // when they refuse a node.
    let leader_grpc = c.ms(leader).grpc.clone();
    for i in (0..3).filter(|i| *i != leader) {
        let refusal = tests::heartbeat_once(&c.ms(i).grpc).await;
        let message = refusal
            .header
            .and_then(|h| h.error)
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(
            message.contains(&leader_grpc),
            "follower {i} names the leader {leader_grpc}: {message:?}"
        );
    }
    c.writes_go_on(&writers).await;
    let (written, failures) = writers.stop().await;
    eprintln!(
        "MEASURE short etcd outage of {outage:?}: leader kept, {written} writes, {} refused",
        failures.len()
    );
    assert_no_refusals("short etcd outage", written, &failures);
}

/// A leader SIGSTOPped past its meta lease, then SIGCONTed after a successor took over,
/// twenty times with pauses around the meta lease. From every member's grant log: no
/// member answers a heartbeat as leader (a grant) or runs a leader task after a later
/// term on another member began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_never_acts_after_its_successor_began() {
    let _serial = SERIAL.lock().await;
    let c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
    let writers = Writers::start(&c.http, &c.placement);
    // Around the 3 s meta lease: some shorter (the leader may keep its term), most until
    // a successor leads, then a little longer.
    let pauses: [Option<u64>; 5] = [Some(1_500), None, Some(2_800), None, Some(4_000)];
    let mut successions = 0;
    for trial in 0..20 {
        let old = c.wait_leader(None, Duration::from_secs(15)).await;
        c.ms(old).proc.freeze();
        match pauses[trial % pauses.len()] {
            // The pause itself is the scenario: how long the leader stays frozen.
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                c.wait_leader(Some(old), Duration::from_secs(15)).await;
                // Frozen a little longer still, varied per trial.
                tokio::time::sleep(Duration::from_millis(100 * (trial as u64 % 4))).await;
            }
        }
        c.ms(old).proc.thaw();
        let now = c.wait_leader(None, Duration::from_secs(15)).await;
        if now != old {
            successions += 1;
        }
    }
    let histories = c.histories().await;
    assert_no_leader_acts_after_a_successor_began(&histories);
    let (written, failures) = writers.stop().await;
    eprintln!(
        "MEASURE 20 leader pauses: {successions} successions; {written} writes, {} refused",
        failures.len()
    );
    assert!(
        successions >= 8,
        "most pauses outlasted the meta lease: {successions}"
    );
}

/// For every two terms on different members, the later-begun one began after the earlier
/// one's last grant and last leader task.
fn assert_no_leader_acts_after_a_successor_began(histories: &[(usize, Vec<Value>)]) {
    let mut terms = Vec::new();
    for (i, list) in histories {
        for t in list {
            let began = t["began_ms"].as_u64().expect("began_ms");
            let last_act = [t["last_grant_ms"].as_u64(), t["last_task_ms"].as_u64()]
                .into_iter()
                .flatten()
                .max();
            terms.push((*i, began, last_act));
        }
    }
    let mut pairs = 0;
    for a in &terms {
        for b in &terms {
            if a.0 == b.0 || b.1 <= a.1 {
                continue;
            }
            pairs += 1;
            if let Some(last) = a.2 {
                assert!(
                    last < b.1,
                    "metasrv{} acted as leader at {last} ms, after metasrv{}'s term began at {} ms",
                    a.0,
                    b.0,
                    b.1
                );
            }
        }
    }
    assert!(pairs > 0, "no leader change to check: {terms:?}");
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
    let c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
    let writers = Writers::start(&c.http, &c.placement);
    let old = c.wait_leader(None, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    c.proxies[old].set_blocked(true);
    let new = c.wait_leader(Some(old), Duration::from_secs(15)).await;
    eprintln!("MEASURE partition: new leader after {:?}", t0.elapsed());
    c.wait_all_granted(new, Duration::from_secs(15)).await;
    c.writes_go_on(&writers).await;
    let histories: Vec<(usize, Vec<Value>)> =
        vec![(old, c.history(old).await), (new, c.history(new).await)];
    let old_last = histories[0].1.last().cloned().unwrap_or_default();
    assert!(
        old_last["ended_ms"].as_u64().is_some(),
        "the partitioned leader ended its term: {old_last}"
    );
    assert_grants_never_overlap(&histories);
    c.proxies[old].set_blocked(false);
    always_for(
        "after healing, one leader: the new one",
        Duration::from_secs(3),
        || async { c.leaders().await == vec![new] },
    )
    .await;
    let (written, failures) = writers.stop().await;
    eprintln!("partition: {written} writes, {} refused", failures.len());
    assert!(written > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_forced_leader_changes_in_a_minute_turn_nothing_readonly() {
    let _serial = SERIAL.lock().await;
    let c = EtcdCluster::start(ClusterSpec::new(TIMINGS)).await;
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
    eprintln!(
        "MEASURE 10 forced leader changes took {:?}: {leaders:?}",
        t0.elapsed()
    );
    always_for(
        "exactly one leader at the end",
        Duration::from_secs(2),
        || async { c.leaders().await == vec![leader] },
    )
    .await;
    let histories = c.histories().await;
    assert_grants_never_overlap(&histories);
    assert_no_leader_acts_after_a_successor_began(&histories);
    let (written, failures) = writers.stop().await;
    assert_no_refusals("ten leader changes", written, &failures);
}
