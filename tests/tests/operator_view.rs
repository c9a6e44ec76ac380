//! What an operator sees from outside a 3-metasrv cluster on a real etcd, with real
//! datanodes: every member gives the leader's answer (followers forward), each reports
//! itself on gRPC health, reflection lists the service, and `/metrics` on the metasrvs
//! and the datanodes parses as Prometheus text and moves under load.
//!
//! (Readiness with etcd stopped and back is in `etcd_cluster.rs`, which has the outage.)

use std::collections::HashMap;
use std::time::Duration;

use common_proto::v1::ErrorCode;
use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::{json, Value};
use tests::cluster::{ClusterSpec, EtcdCluster};
use tests::{eventually, CALL};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

const TIMINGS: &[&str] = &[
    "--heartbeat-interval",
    "1s",
    "--node-lease",
    "6s",
    "--region-lease",
    "6s",
    "--meta-lease",
    "3s",
];

const ANSWERED_BY: &str = "x-metasrv-answered-by";

fn answered_by(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(ANSWERED_BY)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

async fn health(grpc: &str, service: &str) -> i32 {
    let mut client = HealthClient::new(tests::grpc_channel(grpc).await);
    tokio::time::timeout(
        CALL,
        client.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .expect("health answers in time")
    .expect("health check")
    .into_inner()
    .status
}

async fn listed_services(grpc: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(tests::grpc_channel(grpc).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = tokio::time::timeout(
        CALL,
        client.server_reflection_info(tokio_stream::iter(vec![request])),
    )
    .await
    .expect("reflection answers in time")
    .expect("reflection")
    .into_inner();
    let resp = tokio::time::timeout(CALL, stream.message())
        .await
        .expect("a reflection message in time")
        .expect("reflection message")
        .expect("one response");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// A parsed `/metrics`.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(c: &EtcdCluster, base: &str) -> Metrics {
        let (code, text) = c.http.get_text(&format!("{base}/metrics")).await;
        assert_eq!(code, 200, "GET {base}/metrics: {text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("{base}/metrics is not Prometheus text: {e}\n{text}"));
        Metrics(scrape)
    }

    /// The sum of every sample of `name` whose labels include `labels` (`None` if the
    /// series is absent). A histogram counts its observations.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in &self.0.samples {
            if s.metric != name || !labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
                continue;
            }
            let v = match &s.value {
                PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => *v,
                PromValue::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                PromValue::Summary(_) => continue,
            };
            found = Some(found.unwrap_or(0.0) + v);
        }
        found
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let names: std::collections::BTreeSet<_> =
                self.0.samples.iter().map(|s| s.metric.as_str()).collect();
            panic!("series {name}{labels:?} is missing; present: {names:?}")
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_answers_for_the_leader_and_reports_itself() {
    let spec = ClusterSpec {
        datanodes: 2,
        regions: 2,
        ..ClusterSpec::new(TIMINGS)
    };
    let c = EtcdCluster::start(spec).await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let leader_grpc = c.ms(leader).grpc.clone();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Followers forward: the leader's answer from every member, and which one gave it.
    for i in 0..3 {
        let base = &c.ms(i).http;
        let (code, nodes, headers) = c.http.get_with_headers(&format!("{base}/nodes")).await;
        assert_eq!(code, 200, "member {i} /nodes: {nodes}");
        assert_eq!(
            nodes.as_array().map(Vec::len),
            Some(2),
            "member {i}: {nodes}"
        );
        assert_eq!(answered_by(&headers), leader_grpc, "member {i} /nodes");
        let (code, regions, headers) = c.http.get_with_headers(&format!("{base}/regions")).await;
        assert_eq!(code, 200, "member {i} /regions: {regions}");
        assert_eq!(
            regions.as_array().map(Vec::len),
            Some(2),
            "member {i}: {regions}"
        );
        assert_eq!(answered_by(&headers), leader_grpc, "member {i} /regions");
        if i != leader {
            assert_eq!(
                headers
                    .get("x-metasrv-forwarded-by")
                    .map(|v| v.to_str().unwrap_or_default().to_string()),
                Some(c.ms(i).grpc.clone()),
                "a forwarded reply names the member that forwarded it"
            );
        }
    }
    // A write through a follower is the leader's write: every member then lists it.
    let f = followers[0];
    let (code, route, headers) = c
        .http
        .post_with_headers(&format!("{}/regions", c.ms(f).http), &json!({}))
        .await;
    assert_eq!(code, 201, "POST /regions through follower {f}: {route}");
    assert_eq!(answered_by(&headers), leader_grpc);
    let new_region = route["region_id"].as_u64().expect("region id");
    for i in 0..3 {
        let (_, regions) = c.http.get(&format!("{}/regions", c.ms(i).http)).await;
        let ids: Vec<u64> = regions
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["region_id"].as_u64()).collect())
            .unwrap_or_default();
        assert!(
            ids.contains(&new_region),
            "member {i} lists {new_region}: {ids:?}"
        );
    }
    // ?local=true answers from the member itself; so do /leader and /health.
    let (code, _, headers) = c
        .http
        .get_with_headers(&format!("{}/nodes?local=true", c.ms(f).http))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        answered_by(&headers),
        c.ms(f).grpc,
        "?local=true stays local"
    );
    let (code, me, headers) = c
        .http
        .get_with_headers(&format!("{}/leader", c.ms(f).http))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        answered_by(&headers),
        c.ms(f).grpc,
        "/leader describes the member"
    );
    assert_eq!(me["is_leader"], false);
    assert_eq!(
        me["leader_addr"],
        Value::String(leader_grpc.clone()),
        "{me}"
    );

    // gRPC health: the process serves everywhere; the Heartbeat service only on the leader.
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(health(&leader_grpc, "").await, serving);
    // (The reporter follows the election; give it the moment it takes to hear.)
    eventually(
        "the leader's Heartbeat service is SERVING",
        Duration::from_secs(5),
        || async { (health(&leader_grpc, "meta.v1.Heartbeat").await == serving).then_some(()) },
    )
    .await;
    for &i in &followers {
        assert_eq!(health(&c.ms(i).grpc, "").await, serving, "follower {i}");
        assert_eq!(
            health(&c.ms(i).grpc, "meta.v1.Heartbeat").await,
            not_serving,
            "follower {i} does not serve heartbeats"
        );
    }
    // A heartbeat sent to a follower is refused with the leader's address, so a node
    // (or an outside client built from the proto) knows where to go.
    for &i in &followers {
        let refusal = tests::heartbeat_once(&c.ms(i).grpc).await;
        let error = refusal
            .header
            .and_then(|h| h.error)
            .expect("a follower refuses the heartbeat");
        assert_eq!(error.code(), ErrorCode::NotLeader, "{error:?}");
        assert!(
            error.message.contains(&leader_grpc),
            "follower {i}'s NOT_LEADER names the leader {leader_grpc}: {}",
            error.message
        );
    }
    // Reflection, as `grpcurl list` uses it, on a follower.
    let services = listed_services(&c.ms(f).grpc).await;
    assert!(
        services.iter().any(|s| s == "meta.v1.Heartbeat"),
        "{services:?}"
    );

    // Metrics on the leader: present, and moving under the heartbeat load.
    let base = c.ms(leader).http.clone();
    let first = Metrics::scrape(&c, &base).await;
    let ok = [("role", "datanode"), ("outcome", "ok")];
    let hb0 = first.must("metasrv_heartbeats_total", &ok);
    let granted0 = first.must("metasrv_region_leases_granted_total", &[]);
    let handler0 = first.must(
        "metasrv_handler_duration_seconds",
        &[("handler", "region_lease")],
    );
    assert_eq!(first.must("metasrv_is_leader", &[]), 1.0);
    assert_eq!(first.must("metasrv_heartbeat_streams", &[]), 2.0);
    assert_eq!(first.must("metasrv_pushers", &[]), 2.0);
    assert!(first.must("metasrv_term", &[]) > 0.0);
    assert!(first.must("metasrv_leader_changes_total", &[]) >= 1.0);
    assert!(first.must("metasrv_etcd_request_duration_seconds", &[]) > 0.0);
    assert!(
        first.must("metasrv_mailbox_sent_total", &[]) >= 3.0,
        "each region created was opened by an instruction"
    );
    assert!(first.must("metasrv_mailbox_replies_total", &[]) >= 3.0);
    first.must("metasrv_mailbox_timeouts_total", &[]);
    first.must("metasrv_mailbox_pending", &[]);
    first.must("metasrv_regions_closeable_total", &[]);
    first.must("metasrv_node_expiries_total", &[]);
    first.must(
        "metasrv_handler_errors_total",
        &[("handler", "region_lease")],
    );
    let moved = eventually(
        "the leader's heartbeat series move",
        Duration::from_secs(15),
        || async {
            let m = Metrics::scrape(&c, &base).await;
            let moved = m.must("metasrv_heartbeats_total", &ok) > hb0
                && m.must("metasrv_region_leases_granted_total", &[]) > granted0
                && m.must(
                    "metasrv_handler_duration_seconds",
                    &[("handler", "region_lease")],
                ) > handler0
                && m.value("metasrv_stats_flushes_total", &[("outcome", "ok")])
                    .is_some_and(|n| n > 0.0);
            moved.then_some(m)
        },
    )
    .await;
    // Every member knows the same term, and counts the follower's refusals as such.
    let term = moved.must("metasrv_term", &[]);
    for &i in &followers {
        let m = Metrics::scrape(&c, &c.ms(i).http).await;
        assert_eq!(m.must("metasrv_term", &[]), term, "follower {i}'s term");
        assert_eq!(m.must("metasrv_is_leader", &[]), 0.0);
    }

    // Datanode metrics: writable regions, grants, round trips, moving.
    let mut rtts = HashMap::new();
    for dn in &c.datanodes {
        let m = Metrics::scrape(&c, &dn.http).await;
        let writable = m.must("datanode_regions", &[("state", "writable")]);
        m.must("datanode_regions", &[("state", "readonly")]);
        assert!(writable >= 1.0, "node {} leads a region", dn.node_id);
        assert!(m.must("datanode_seconds_since_last_grant", &[]) < 6.0);
        assert_eq!(m.must("datanode_connected", &[]), 1.0);
        m.must("datanode_lease_expiries_total", &[]);
        m.must("datanode_reconnects_total", &[]);
        m.must("datanode_leader_switches_total", &[]);
        rtts.insert(dn.node_id, m.must("datanode_heartbeat_rtt_seconds", &[]));
    }
    for dn in &c.datanodes {
        let before = rtts[&dn.node_id];
        eventually(
            &format!("node {}'s round trips are counted", dn.node_id),
            Duration::from_secs(10),
            || async {
                let m = Metrics::scrape(&c, &dn.http).await;
                (m.must("datanode_heartbeat_rtt_seconds", &[]) > before).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_to_a_stalled_leader_ends_when_a_successor_is_elected() {
    let spec = ClusterSpec {
        datanodes: 1,
        regions: 1,
        ..ClusterSpec::new(TIMINGS)
    };
    let c = EtcdCluster::start(spec).await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    c.ms(leader).proc.freeze();
    // Forwarded at once to the stalled leader, which accepts the connection and never
    // answers. (A client of its own with a long timeout: the request must end because
    // the follower ends it, not because a client gave up.)
    let url = format!("{}/nodes", c.ms(follower).http);
    let request = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("the follower answers");
        let by = resp
            .headers()
            .get(ANSWERED_BY)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        (
            resp.status().as_u16(),
            by,
            resp.text().await.unwrap_or_default(),
        )
    });
    let successor = c.wait_leader(Some(leader), Duration::from_secs(20)).await;
    let (code, by, body) = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the request ended once a successor was elected")
        .expect("request task");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("leader changed"), "{body}");
    assert_eq!(
        by.as_deref(),
        Some(c.ms(follower).grpc.as_str()),
        "the follower answered"
    );
    // Asked again, the follower forwards to the successor.
    let (code, _, headers) = c
        .http
        .get_with_headers(&format!("{}/nodes", c.ms(follower).http))
        .await;
    assert_eq!(code, 200);
    assert_eq!(answered_by(&headers), c.ms(successor).grpc);
    c.ms(leader).proc.thaw();
}
