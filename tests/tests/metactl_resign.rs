//! `metactl leader resign` against 3 real metasrvs on a real etcd: one command is one
//! leader change and exit 0, wherever the leader stands in `--endpoints`, and through a
//! follower alone. A change is never sent again to the next endpoint once it may have
//! reached a leader (a forwarded resign sees its leader go away: that is its success).

use std::time::Duration;

use tests::cluster::{ClusterSpec, EtcdCluster};
use tests::{always_for, eventually, metactl};

const TIMINGS: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--node-lease",
    "3s",
    "--region-lease",
    "3s",
    "--meta-lease",
    "3s",
];

/// Terms that began at or after `since_ms`, over every member's grant log: each is one
/// leader change.
async fn terms_since(c: &EtcdCluster, since_ms: u64) -> Vec<u64> {
    let mut terms: Vec<u64> = c
        .histories()
        .await
        .into_iter()
        .flat_map(|(_, h)| h)
        .filter(|t| t["began_ms"].as_u64().is_some_and(|b| b >= since_ms))
        .filter_map(|t| t["term"].as_u64())
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_resign_is_one_leader_change_wherever_the_leader_stands_in_the_endpoints() {
    let c = EtcdCluster::start(ClusterSpec {
        datanodes: 0,
        regions: 0,
        ..ClusterSpec::new(TIMINGS)
    })
    .await;
    let addr = |i: usize| c.ms(i).http.trim_start_matches("http://").to_string();
    for case in [
        "leader first",
        "leader second",
        "leader last",
        "a follower alone",
    ] {
        let leader = c.wait_leader(None, Duration::from_secs(15)).await;
        let f: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let order = match case {
            "leader first" => vec![leader, f[0], f[1]],
            "leader second" => vec![f[0], leader, f[1]],
            "leader last" => vec![f[0], f[1], leader],
            _ => vec![f[0]],
        };
        let endpoints = order.into_iter().map(addr).collect::<Vec<_>>().join(",");
        let since = common_proto::unix_millis();
        let out = metactl(&endpoints, &["leader", "resign"]).await;
        assert!(
            out.status.success(),
            "{case}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eventually(
            &format!("{case}: a successor leads"),
            Duration::from_secs(15),
            || async { (!terms_since(&c, since).await.is_empty()).then_some(()) },
        )
        .await;
        // Longer than a meta lease: a second resign, or an election it caused, would show.
        always_for(
            &format!("{case}: exactly one leader change"),
            Duration::from_secs(4),
            || async { terms_since(&c, since).await.len() == 1 },
        )
        .await;
    }
}
