//! TLS end to end, with real processes and throwaway certificates (rcgen): a metasrv
//! serving gRPC and the admin HTTP over TLS with mutual TLS on gRPC and a bearer token on
//! the admin API, datanodes dialling it with certificates that name them, and a metasrv
//! on an etcd that requires client certificates.
//!
//! What is refused, each with the server going on serving everyone else: a plaintext
//! client, a client with no certificate, a certificate from another CA, a certificate
//! naming another node (PERMISSION_DENIED), a mutating admin call without the token, and
//! metactl without the CA.

use std::path::Path;
use std::time::Duration;

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::AskLeaderRequest;
use serde_json::{json, Value};
use tests::etcd::EtcdProc;
use tests::pki::{CertFiles, TestCa};
use tests::{eventually, heartbeat_on, DatanodeProc, Http, MetasrvProc, Stderr, CALL, FAST};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const TOKEN: &str = "tls-test-token";

fn tls_args(server: &CertFiles, ca: &TestCa) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        server.cert(),
        "--tls-key".into(),
        server.key(),
        "--tls-ca".into(),
        ca.ca(),
    ]
}

fn https(ms: &MetasrvProc) -> String {
    ms.http.replacen("http://", "https://", 1)
}

/// A gRPC channel to `grpc` over TLS trusting `ca`, presenting `identity` if given.
/// `Err` when the handshake or connect fails (a refused client).
async fn tls_channel(
    grpc: &str,
    ca: &Path,
    identity: Option<&CertFiles>,
) -> Result<tonic::transport::Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read CA")));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert).expect("cert"),
            std::fs::read(&id.key).expect("key"),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config");
    tokio::time::timeout(CALL, endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("{e:?}"))
}

async fn connected_nodes(http: &Http, url: &str) -> Option<Vec<u64>> {
    let (code, nodes) = http.get(&format!("{url}/nodes")).await;
    if code != 200 {
        return None;
    }
    Some(
        nodes
            .as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .filter_map(|n| n["node_id"].as_u64())
            .collect(),
    )
}

fn metactl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(tests::bin_path("metactl"))
        .args(args)
        .env_remove("METACTL_ENDPOINTS")
        .env_remove("METACTL_TOKEN")
        .env_remove("METACTL_CACERT")
        .output()
        .expect("run metactl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_nodes_and_refuses_every_wrong_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "cluster");
    let rogue = TestCa::new(dir.path(), "rogue");
    let server = ca.issue("metasrv", &["127.0.0.1", "localhost"]);
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend(tls_args(&server, &ca));
    args.extend(["--admin-token".into(), TOKEN.into()]);
    let ms = MetasrvProc::start("metasrv", "127.0.0.1:0", &args, &dir.path().join("ms.log"));
    let url = https(&ms);

    // Datanodes 1 and 2, each with a certificate naming it (2 by a URI, SPIFFE style).
    let names = [
        ("datanode-1.dn.test".to_string(), 1u64),
        ("uri:spiffe://test/datanode/2".to_string(), 2u64),
    ];
    let datanodes: Vec<DatanodeProc> = names
        .iter()
        .map(|(san, id)| {
            let cert = ca.issue(&format!("dn{id}"), &[san.as_str()]);
            DatanodeProc::start_with(
                *id,
                std::slice::from_ref(&ms.grpc),
                &dir.path().join(format!("dn{id}")),
                &dir.path().join(format!("dn{id}.log")),
                Stderr::Log,
                &[
                    "--tls-ca".into(),
                    ca.ca(),
                    "--tls-cert".into(),
                    cert.cert(),
                    "--tls-key".into(),
                    cert.key(),
                ],
            )
        })
        .collect();
    let http = Http::with_ca(&ca.ca);
    eventually(
        "both TLS datanodes connected",
        Duration::from_secs(20),
        || async {
            let mut nodes = connected_nodes(&http, &url).await?;
            nodes.sort_unstable();
            (nodes == [1, 2]).then_some(())
        },
    )
    .await;

    // The admin API: reads need no token, writes do; with it, a region is created and
    // becomes writable on its TLS datanode (its grant came over the TLS stream).
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca.ca).expect("ca")).expect("pem"),
        )
        .build()
        .expect("client");
    let create = json!({"region_id": 1, "node_id": 1});
    let refused = client
        .post(format!("{url}/regions"))
        .json(&create)
        .send()
        .await
        .expect("POST without token");
    assert_eq!(refused.status().as_u16(), 401, "a write without the token");
    let created = client
        .post(format!("{url}/regions"))
        .bearer_auth(TOKEN)
        .json(&create)
        .send()
        .await
        .expect("POST with token");
    assert_eq!(created.status().as_u16(), 201, "create with the token");
    let node1 = datanodes[0].http.clone();
    eventually(
        "region 1 writable on TLS datanode 1",
        Duration::from_secs(15),
        || async { (http.write_row(&node1, 1, "k", "v").await.0 == 200).then_some(()) },
    )
    .await;

    // Plaintext HTTP to the TLS admin port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/nodes", ms.http))
        .timeout(CALL)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // gRPC: plaintext, no client certificate, another CA's certificate: no stream.
    let plaintext = tokio::time::timeout(
        CALL,
        Endpoint::from_shared(format!("http://{}", ms.grpc))
            .expect("uri")
            .connect(),
    )
    .await
    .expect("in time");
    if let Ok(channel) = plaintext {
        let refused = heartbeat_on(channel, 5).await;
        assert!(
            refused.is_err(),
            "a plaintext heartbeat was answered: {refused:?}"
        );
    }
    let bare = tls_channel(&ms.grpc, &ca.ca, None).await;
    if let Ok(channel) = bare {
        let refused = heartbeat_on(channel, 5).await;
        assert!(
            refused.is_err(),
            "a heartbeat without a client certificate was answered: {refused:?}"
        );
    }
    let stranger = rogue.issue("dn5", &["datanode-5"]);
    if let Ok(channel) = tls_channel(&ms.grpc, &ca.ca, Some(&stranger)).await {
        let refused = heartbeat_on(channel, 5).await;
        assert!(
            refused.is_err(),
            "another CA's certificate was answered: {refused:?}"
        );
    }

    // A good certificate naming node 3 may heartbeat as 3, and not as 1.
    let three = ca.issue("dn3", &["datanode-3"]);
    let channel = tls_channel(&ms.grpc, &ca.ca, Some(&three))
        .await
        .expect("a good certificate connects");
    let denied = heartbeat_on(channel.clone(), 1)
        .await
        .expect_err("node 3's certificate speaking for node 1");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("datanode 1") && denied.message().contains("datanode-3"),
        "the refusal names the node asked for and the certificate's names: {}",
        denied.message()
    );
    let granted = heartbeat_on(channel, 3)
        .await
        .expect("node 3's certificate speaking for node 3");
    assert!(
        granted
            .header
            .as_ref()
            .and_then(|h| h.error.as_ref())
            .is_none(),
        "node 3 was answered without error: {granted:?}"
    );

    // A certificate naming no node (an operator's) may still ask who leads.
    let operator = ca.issue("operator", &["ops.test"]);
    let channel = tls_channel(&ms.grpc, &ca.ca, Some(&operator))
        .await
        .expect("operator connects");
    let leader = tokio::time::timeout(
        CALL,
        HeartbeatClient::new(channel).ask_leader(AskLeaderRequest::default()),
    )
    .await
    .expect("in time")
    .expect("AskLeader with an operator's certificate")
    .into_inner();
    assert_eq!(
        leader.leader.map(|p| p.addr),
        Some(ms.grpc.clone()),
        "the standalone member names itself"
    );

    // A datanode whose certificate names another node is refused at start (exit 2),
    // before it could try a heartbeat the metasrv would refuse.
    let wrong = ca.issue("dn4-wrong", &["datanode-1"]);
    let out = std::process::Command::new(tests::bin_path("datanode"))
        .args(["start", "--node-id", "4", "--metasrv-addrs", &ms.grpc])
        .args(["--data-addr", "127.0.0.1:0", "--tls-ca", &ca.ca()])
        .args(["--tls-cert", &wrong.cert(), "--tls-key", &wrong.key()])
        .output()
        .expect("run datanode");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not datanode 4") && stderr.contains("datanode-1"),
        "the refusal names the node and the certificate's names: {stderr}"
    );

    // A datanode trusting another CA starts, cannot connect, and its log says why.
    let five = ca.issue("dn5", &["datanode-5"]);
    let dn5_log = dir.path().join("dn5.log");
    let _dn5 = DatanodeProc::start_with(
        5,
        std::slice::from_ref(&ms.grpc),
        &dir.path().join("dn5"),
        &dn5_log,
        Stderr::Log,
        &[
            "--tls-ca".into(),
            rogue.ca(),
            "--tls-cert".into(),
            five.cert(),
            "--tls-key".into(),
            five.key(),
        ],
    );
    eventually(
        "datanode 5 logs why it cannot connect",
        Duration::from_secs(15),
        || async {
            let log = std::fs::read_to_string(&dn5_log).unwrap_or_default();
            log.contains("not signed by the CA given (tls_ca)")
                .then_some(())
        },
    )
    .await;

    // The metasrv counted the refused handshakes.
    let (_, metrics) = http.get_text(&format!("{url}/metrics")).await;
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("metasrv_tls_handshake_failures_total{listener=\"grpc\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the handshake failure series");
    assert!(
        failures >= 2.0,
        "no certificate, another CA: {failures} failures counted"
    );

    // Everyone else is still served.
    let nodes = connected_nodes(&http, &url).await.expect("nodes");
    assert!(
        nodes.contains(&1) && nodes.contains(&2) && !nodes.contains(&4) && !nodes.contains(&5),
        "the TLS datanodes stay connected, nodes 4 and 5 never registered: {nodes:?}"
    );
    assert_eq!(http.write_row(&node1, 1, "k2", "v").await.0, 200);

    // metactl: with the CA it works; without it the TLS port answers nothing (exit 3).
    let endpoint = url.trim_start_matches("https://").to_string();
    let (code, out, err) = metactl(&["--endpoints", &endpoint, "--cacert", &ca.ca(), "nodes"]);
    assert_eq!(code, 0, "metactl --cacert nodes: {out} {err}");
    assert!(out.contains('1') && out.contains('2'), "{out}");
    let (code, _, err) = metactl(&["--endpoints", &endpoint, "nodes"]);
    assert_eq!(code, 3, "metactl without the CA: {err}");
    let (code, _, err) = metactl(&["--endpoints", &endpoint, "--cacert", &rogue.ca(), "nodes"]);
    assert_eq!(code, 3, "metactl trusting another CA: {err}");
    let (code, _, err) = metactl(&[
        "--endpoints",
        &endpoint,
        "--cacert",
        &ca.ca(),
        "maintenance",
        "on",
    ]);
    assert_eq!(
        code, 1,
        "a mutating command without the token is refused: {err}"
    );
    let (code, out, err) = metactl(&[
        "--endpoints",
        &endpoint,
        "--cacert",
        &ca.ca(),
        "--token",
        TOKEN,
        "--json",
        "maintenance",
        "on",
    ]);
    assert_eq!(code, 0, "with the token: {out} {err}");
    let body: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(body["enabled"], true, "{body}");
}

/// A metasrv member on etcd over TLS: its own TLS (gRPC, admin HTTP, mutual with
/// `ca`), and `etcd_client` presented to etcd when given.
fn etcd_member(
    dir: &Path,
    name: &str,
    etcd: &EtcdProc,
    etcd_ca: &TestCa,
    etcd_client: Option<&CertFiles>,
    own: (&CertFiles, &TestCa),
) -> MetasrvProc {
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--backend".into(),
        "etcd".into(),
        "--store-addrs".into(),
        etcd.endpoint(),
        "--meta-lease".into(),
        "3s".into(),
        "--etcd-tls-ca".into(),
        etcd_ca.ca(),
    ]);
    if let Some(client) = etcd_client {
        args.extend([
            "--etcd-tls-cert".into(),
            client.cert(),
            "--etcd-tls-key".into(),
            client.key(),
        ]);
    }
    args.extend(tls_args(own.0, own.1));
    MetasrvProc::start(name, "127.0.0.1:0", &args, &dir.join(format!("{name}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_members_on_an_etcd_that_requires_client_certificates_lead_and_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd_ca = TestCa::new(dir.path(), "etcd");
    let etcd_server = etcd_ca.issue("server", &["127.0.0.1", "localhost"]);
    let etcd = EtcdProc::start_tls(dir.path(), &etcd_server, &etcd_ca.ca);
    let etcd_client = etcd_ca.issue("metasrv-client", &["metasrv"]);
    let ca = TestCa::new(dir.path(), "cluster");
    let member_cert = ca.issue("member", &["127.0.0.1"]);
    let own = (&member_cert, &ca);
    let members: Vec<MetasrvProc> = ["ms-a", "ms-b"]
        .iter()
        .map(|name| etcd_member(dir.path(), name, &etcd, &etcd_ca, Some(&etcd_client), own))
        .collect();
    let http = Http::with_ca(&ca.ca);
    let leader = eventually(
        "a member leads over TLS etcd",
        Duration::from_secs(20),
        || async {
            for (i, m) in members.iter().enumerate() {
                let (code, body) = http.get(&format!("{}/leader?local=true", https(m))).await;
                if code == 200 && body["is_leader"] == true {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    let follower = &members[1 - leader];

    // Writes reach etcd: routes are imported and read back from the store.
    let (code, body) = http
        .post(
            &format!("{}/routes", https(&members[leader])),
            &json!([{"region_id": 7, "leader": 1}]),
        )
        .await;
    assert_eq!(code, 200, "routes over TLS etcd: {body}");
    // The follower forwards to the leader over TLS, verifying it with tls_ca; the
    // client speaks HTTP/2 (negotiated by ALPN, as curl and load balancers do), the hop
    // to the leader HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca.ca).expect("ca")).expect("pem"),
        )
        .build()
        .expect("client");
    let resp = h2
        .get(format!("{}/regions", https(follower)))
        .send()
        .await
        .expect("GET the follower");
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose HTTP/2"
    );
    let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
    let regions: Value = resp.json().await.expect("json");
    assert_eq!(code, 200, "forwarded over TLS: {regions}");
    assert!(
        headers.contains_key("x-metasrv-forwarded-by"),
        "the follower forwarded it: {headers:?}"
    );
    assert!(
        regions
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["region_id"] == 7)),
        "{regions}"
    );

    // Without the client certificate etcd refuses a member, which never leads and says
    // why at /ready.
    let anonymous = etcd_member(dir.path(), "ms-anonymous", &etcd, &etcd_ca, None, own);
    let not_ready = eventually(
        "the anonymous member reports etcd failing",
        Duration::from_secs(20),
        || async {
            let (code, body) = http.get(&format!("{}/ready", https(&anonymous))).await;
            (code == 503).then_some(body)
        },
    )
    .await;
    assert!(
        not_ready["reasons"].to_string().contains("etcd endpoint"),
        "the reason is etcd refusing it: {not_ready}"
    );
    let (_, still) = http
        .get(&format!("{}/leader?local=true", https(&members[leader])))
        .await;
    assert_eq!(
        still["is_leader"], true,
        "the certified member still leads: {still}"
    );
}
