//! Losing one etcd member costs nothing: a real 3-member etcd cluster, 3 `metasrv`
//! processes given all three endpoints, 3 `datanode` processes and a writer per region.
//!
//! Each scenario SIGKILLs one etcd member, chosen by its role (the raft leader, the member
//! carrying the metasrv leader's keep-alive stream, or a follower member, each made
//! distinct first by moving etcd's raft leadership), and checks, on every poll over a
//! window longer than a meta lease: the same metasrv leader in the same term, every
//! member's admin API answering, and no write refused.
//!
//! Timings: heartbeat 1 s, region lease 6 s, meta lease 8 s. The shortest meta lease the
//! metasrv accepts (4 s) outlasts one uncontested etcd election at etcd's default 1 s
//! election timeout, with 2.7 s of slack. Losing the raft leader can cost more: a split
//! vote is a second round of 1–2 s, and the new raft leader renews leases only after it
//! commits an entry of its own term. On a loaded 2-core CI machine that took over 2.7 s
//! (a failed run). 8 s leaves 5.9 s, two full rounds and more.

use std::time::Duration;

use serde_json::Value;
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
    "--meta-lease",
    "8s",
];

/// Which etcd member a scenario kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    RaftLeader,
    KeepAliveMember,
    FollowerMember,
}

async fn leader_view(c: &EtcdCluster, i: usize) -> Value {
    let (code, body) = c.http.get(&format!("{}/leader", c.ms(i).http)).await;
    assert_eq!(code, 200, "metasrv {i} /leader: {body}");
    body
}

/// Arranges the raft leader and the keep-alive member to differ, then names the victim.
async fn choose(c: &mut EtcdCluster, leader: usize, victim: Victim) -> usize {
    let view = eventually(
        "the leader reports its keep-alive endpoint",
        Duration::from_secs(10),
        || async {
            let v = leader_view(c, leader).await;
            v["store"]["keep_alive_endpoint"].as_str().map(String::from)
        },
    )
    .await;
    let ka = c.members().index_of(&view).expect("a member's endpoint");
    let raft = eventually("etcd names a raft leader", Duration::from_secs(10), || {
        let m = c.etcd_members.as_ref().expect("members");
        async move { m.raft_leader().await }
    })
    .await;
    let raft = if raft == ka {
        let to = (ka + 1) % 3;
        c.members().move_leader(to).await;
        let m = c.etcd_members.as_ref().expect("members");
        eventually("raft leadership moved", Duration::from_secs(10), || async {
            (m.raft_leader().await == Some(to)).then_some(to)
        })
        .await
    } else {
        raft
    };
    match victim {
        Victim::RaftLeader => raft,
        Victim::KeepAliveMember => ka,
        Victim::FollowerMember => (0..3).find(|i| *i != raft && *i != ka).expect("a third"),
    }
}

async fn lose_one_member(victim: Victim) {
    let _serial = SERIAL.lock().await;
    let spec = ClusterSpec {
        etcd_members: 3,
        ..ClusterSpec::new(TIMINGS)
    };
    let mut c = EtcdCluster::start(spec).await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let term = leader_view(&c, leader).await["term"].clone();
    assert!(term.as_u64().is_some(), "a term: {term}");
    let killed = choose(&mut c, leader, victim).await;
    let writers = Writers::start(&c.http, &c.placement);
    c.writes_go_on(&writers).await;
    c.members().kill(killed);
    // Longer than the leader's deadline after its last acknowledged keep-alive (meta lease
    // − drift margin = 7.5 s) plus a successor's election: a leader that lost its term
    // would show here.
    always_for(
        &format!("{victim:?} (etcd member {killed}) killed: same leader, same term, every member answers"),
        Duration::from_secs(10),
        || async {
            if c.leaders().await != vec![leader] {
                return false;
            }
            if leader_view(&c, leader).await["term"] != term {
                return false;
            }
            for i in 0..3 {
                for (path, n) in [("nodes", 3), ("regions", 6)] {
                    let (code, body) = c.http.get(&format!("{}/{path}", c.ms(i).http)).await;
                    if code != 200 || body.as_array().map(Vec::len) != Some(n) {
                        eprintln!("metasrv {i} /{path} answered {code}: {body}");
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    c.writes_go_on(&writers).await;
    let (written, failures) = writers.stop().await;
    eprintln!(
        "{victim:?} (etcd member {killed}) SIGKILLed: leader {leader} kept term {term}; {written} writes, {} refused",
        failures.len()
    );
    assert!(written > 0, "the writers wrote");
    assert!(
        failures.is_empty(),
        "{victim:?}: {} writes refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The leader's term record shows one unbroken term.
    let history = c.history(leader).await;
    assert_eq!(
        history.iter().filter(|t| t["ended_ms"].is_null()).count(),
        1,
        "one open term on the leader: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_raft_leader_changes_no_metasrv_leader() {
    lose_one_member(Victim::RaftLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_member_carrying_the_keep_alives_changes_no_metasrv_leader() {
    lose_one_member(Victim::KeepAliveMember).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_etcd_member_changes_nothing() {
    lose_one_member(Victim::FollowerMember).await;
}
