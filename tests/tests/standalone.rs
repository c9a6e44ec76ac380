//! End to end with real processes: one standalone metasrv, three datanodes.
//!
//! The datanodes persist to temporary directories; the metasrv keeps a snapshot, so it
//! can be SIGKILLed and restarted on the same port without forgetting routes.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{eventually, DatanodeProc, Http, MetasrvProc, FAST};

// Field order matters: processes drop (and print their logs on a panic) before the
// temporary directory holding those logs is removed.
struct Cluster {
    metasrv: MetasrvProc,
    datanodes: Vec<DatanodeProc>,
    http: Http,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn metasrv_args(dir: &std::path::Path) -> Vec<String> {
        let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--data-dir".to_string(),
            dir.join("metasrv").display().to_string(),
        ]);
        args
    }

    async fn start(nodes: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let metasrv = MetasrvProc::start(
            "metasrv",
            "127.0.0.1:0",
            &Self::metasrv_args(dir.path()),
            &dir.path().join("metasrv.log"),
        );
        let datanodes = (1..=nodes)
            .map(|id| {
                DatanodeProc::start(
                    id,
                    std::slice::from_ref(&metasrv.grpc),
                    &dir.path().join(format!("dn{id}")),
                    &dir.path().join(format!("dn{id}.log")),
                )
            })
            .collect();
        let c = Cluster {
            dir,
            metasrv,
            datanodes,
            http: Http::new(),
        };
        let url = format!("{}/nodes", c.metasrv.http);
        let http = c.http.clone();
        eventually("all datanodes registered", Duration::from_secs(15), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let (_, listed) = http.get(&url).await;
                let alive = listed
                    .as_array()?
                    .iter()
                    .filter(|n| n["alive"] == true && n["connected"] == true)
                    .count();
                (alive as u64 == nodes).then_some(())
            }
        })
        .await;
        c
    }

    fn node(&self, id: u64) -> &DatanodeProc {
        self.datanodes
            .iter()
            .find(|d| d.node_id == id)
            .expect("node")
    }

    async fn create_region(&self, region_id: u64, node_id: u64) {
        let (code, body) = self
            .http
            .post(
                &format!("{}/regions", self.metasrv.http),
                &json!({"region_id": region_id, "node_id": node_id}),
            )
            .await;
        assert_eq!(code, 201, "create region {region_id}: {body}");
    }

    /// Waits until a write to `region` on `node` succeeds.
    async fn until_writable(&self, node: u64, region: u64, within: Duration) {
        let url = self.node(node).http.clone();
        let http = self.http.clone();
        eventually(&format!("region {region} writable on node {node}"), within, || {
            let (http, url) = (http.clone(), url.clone());
            async move { (http.write_row(&url, region, "probe", "x").await.0 == 200).then_some(()) }
        })
        .await;
    }

    /// Waits until a write to `region` on `node` is refused as readonly; returns the body.
    async fn until_readonly(&self, node: u64, region: u64, within: Duration) -> Value {
        let url = self.node(node).http.clone();
        let http = self.http.clone();
        eventually(
            &format!("region {region} readonly on node {node}"),
            within,
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let (code, body) = http.write_row(&url, region, "probe", "x").await;
                    (code == 409).then_some(body)
                }
            },
        )
        .await
    }
}

#[tokio::test]
async fn leases_follow_the_metasrv_across_a_kill_and_a_restart() {
    let mut c = Cluster::start(3).await;
    for (region, node) in [(1, 1), (2, 2), (3, 3)] {
        c.create_region(region, node).await;
    }
    for (region, node) in [(1, 1), (2, 2), (3, 3)] {
        c.until_writable(node, region, Duration::from_secs(10))
            .await;
        let (code, body) = c
            .http
            .write_row(&c.node(node).http, region, "before", "kill")
            .await;
        assert_eq!(code, 200, "{body}");
    }
    for url in [c.metasrv.http.clone(), c.node(1).http.clone()] {
        let (code, body) = c.http.get(&format!("{url}/ready")).await;
        assert_eq!(code, 200, "{url} ready: {body}");
    }

    // SIGKILL the metasrv: within the region lease plus a margin, every region turns
    // readonly on its own, and reads still work.
    let grpc = c.metasrv.grpc.clone();
    let killed_at = std::time::Instant::now();
    c.metasrv.proc.kill();
    for (region, node) in [(1, 1), (2, 2), (3, 3)] {
        let body = c.until_readonly(node, region, Duration::from_secs(5)).await;
        assert_eq!(body["code"], "lease_expired", "{body}");
        assert!(
            body["error"]
                .as_str()
                .expect("message")
                .contains("region lease expired"),
            "{body}"
        );
        let (code, row) = c.http.read_row(&c.node(node).http, region, "before").await;
        assert_eq!(
            (code, row["value"].as_str()),
            (200, Some("kill")),
            "reads go on"
        );
    }
    let readonly_after = killed_at.elapsed();
    eprintln!(
        "all regions readonly {readonly_after:?} after the metasrv SIGKILL (region lease 2 s)"
    );

    // Restart on the same address: datanodes reconnect by themselves, leases come back,
    // and no data was lost.
    let dir = c.dir.path().to_path_buf();
    c.metasrv = MetasrvProc::start(
        "metasrv-restarted",
        &grpc,
        &Cluster::metasrv_args(&dir),
        &dir.join("metasrv2.log"),
    );
    let restarted_at = std::time::Instant::now();
    for (region, node) in [(1, 1), (2, 2), (3, 3)] {
        c.until_writable(node, region, Duration::from_secs(15))
            .await;
        let (_, row) = c.http.read_row(&c.node(node).http, region, "before").await;
        assert_eq!(row["value"], "kill", "no data lost");
    }
    eprintln!(
        "all regions writable {:?} after the metasrv restart",
        restarted_at.elapsed()
    );
}

#[tokio::test]
async fn a_restarted_datanode_comes_back_readonly_then_writable_with_its_data() {
    let mut c = Cluster::start(1).await;
    c.create_region(7, 1).await;
    c.until_writable(1, 7, Duration::from_secs(10)).await;
    assert_eq!(c.http.write_row(&c.node(1).http, 7, "k", "v1").await.0, 200);

    let dir = c.dir.path().to_path_buf();
    let grpc = c.metasrv.grpc.clone();
    c.datanodes[0].proc.kill();
    c.datanodes[0] =
        DatanodeProc::start(1, &[grpc], &dir.join("dn1"), &dir.join("dn1-restarted.log"));
    c.until_writable(1, 7, Duration::from_secs(15)).await;
    let (_, row) = c.http.read_row(&c.node(1).http, 7, "k").await;
    assert_eq!(row["value"], "v1");
    // The log shows the order: reopened readonly, then writable on the first grant.
    let log = std::fs::read_to_string(dir.join("dn1-restarted.log")).expect("log");
    let reopened = log
        .find("region reopened readonly")
        .expect("reopened readonly");
    let granted = log
        .find("region lease granted; region is writable")
        .expect("granted");
    assert!(
        reopened < granted,
        "readonly first, writable after the grant"
    );
}

#[tokio::test]
async fn every_instruction_round_trips_and_a_stopped_node_times_out() {
    let c = Cluster::start(2).await;
    let ms = c.metasrv.http.clone();
    c.create_region(1, 1).await; // OpenRegion
    c.until_writable(1, 1, Duration::from_secs(10)).await;

    let send = |node: u64, ins: Value, timeout_ms: u64| {
        let (http, ms) = (c.http.clone(), ms.clone());
        async move {
            http.post(
                &format!("{ms}/nodes/{node}/instructions?timeout_ms={timeout_ms}"),
                &ins,
            )
            .await
        }
    };
    // Downgrade: leader → readonly follower.
    let (code, body) = send(1, json!({"type": "downgrade_region", "region_id": 1}), 5000).await;
    assert_eq!((code, &body["ok"]), (200, &json!(true)), "{body}");
    let (code, body) = c.http.write_row(&c.node(1).http, 1, "k", "v").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("follower")),
        "{body}"
    );
    // Redelivered: same result.
    let (_, body) = send(1, json!({"type": "downgrade_region", "region_id": 1}), 5000).await;
    assert_eq!(body["ok"], true, "{body}");
    // Upgrade: writable again once the leader lease is applied.
    let (_, body) = send(1, json!({"type": "upgrade_region", "region_id": 1}), 5000).await;
    assert_eq!(body["ok"], true, "{body}");
    c.until_writable(1, 1, Duration::from_secs(5)).await;
    // Open a follower copy on node 2. The route does not list node 2, so its next
    // heartbeat gets the region back as closeable, and the node closes it by itself.
    let (_, body) = send(
        2,
        json!({"type": "open_region", "region_id": 1, "role": "follower"}),
        5000,
    )
    .await;
    assert_eq!(body["ok"], true, "{body}");
    let status_url = format!("{}/status", c.node(2).http);
    let http = c.http.clone();
    eventually("the unrouted copy closed", Duration::from_secs(5), || {
        let (http, url) = (http.clone(), status_url.clone());
        async move {
            http.get(&url).await.1["regions"]
                .as_array()?
                .is_empty()
                .then_some(())
        }
    })
    .await;
    // Closing again is idempotent.
    let (_, body) = send(2, json!({"type": "close_region", "region_id": 1}), 5000).await;
    assert_eq!(body["ok"], true, "{body}");
    // Upgrading a region the node does not have fails clearly.
    let (_, body) = send(2, json!({"type": "upgrade_region", "region_id": 1}), 5000).await;
    assert_eq!(body["ok"], false, "{body}");
    assert!(
        body["reply"]["upgrade_region"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not found")
            || body.to_string().contains("not found"),
        "{body}"
    );
    // Bad instruction JSON is refused by the metasrv before it is sent.
    let (code, body) = send(1, json!({"type": "format_disk"}), 5000).await;
    assert_eq!(code, 400, "{body}");

    // A stopped node never replies: the instruction times out.
    c.node(2).proc.signal("STOP");
    let (code, body) = send(
        2,
        json!({"type": "open_region", "region_id": 9, "role": "leader"}),
        500,
    )
    .await;
    c.node(2).proc.signal("CONT");
    assert_eq!(code, 504, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("timed out"),
        "{body}"
    );
}
