//! The servers under test: a real `metasrv` process, or the bare echo baseline.

use std::time::{Duration, Instant};

use crate::Load;
use serde_json::{json, Value};
use tests::{Http, MetasrvProc, Proc};

pub(crate) struct Target {
    /// Held so the child lives as long as the target; dropped, it is killed.
    pub(crate) _proc: Option<Proc>,
    pub(crate) grpc: String,
    pub(crate) http: Option<String>,
    pub(crate) pid: Option<u32>,
    /// The metasrv's heap (allocator statistics) before routes were imported.
    pub(crate) heap_idle: Option<u64>,
}

/// The metasrv's `metasrv_heap_allocated_bytes`, if it reports one.
pub(crate) async fn heap_bytes(target: &Target) -> Option<u64> {
    let admin = target.http.as_ref()?;
    let (_, text) = Http::new().get_text(&format!("{admin}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("metasrv_heap_allocated_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub(crate) fn start_metasrv(dir: &std::path::Path, name: &str, extra: &[&str]) -> Target {
    let mut args: Vec<String> = [
        "--heartbeat-interval",
        "3s",
        "--node-lease",
        "3600s",
        "--region-lease",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let m = MetasrvProc::start(name, "127.0.0.1:0", &args, &dir.join(format!("{name}.log")));
    let pid = m.proc.pid();
    Target {
        grpc: m.grpc.clone(),
        http: Some(m.http.clone()),
        pid: Some(pid),
        heap_idle: None,
        _proc: Some(m.proc),
    }
}

pub(crate) fn start_echo(dir: &std::path::Path) -> Target {
    let p = Proc::spawn(
        "echo",
        "heartbeat-bench",
        &["echo-server".to_string()],
        &dir.join("echo.log"),
    );
    Target {
        grpc: p.field("addr"),
        http: None,
        pid: Some(p.pid()),
        heap_idle: None,
        _proc: Some(p),
    }
}

pub(crate) async fn seed_routes(http: &Http, admin: &str, load: &Load) {
    let total = load.nodes * load.regions;
    let mut routes = Vec::with_capacity(20_000);
    let mut sent = 0;
    for node in 1..=load.nodes as u64 {
        let first = tests::bench::first_region(node, load.regions);
        for r in 0..load.regions as u64 {
            routes.push(json!({ "region_id": first + r, "leader": node }));
            if routes.len() == 20_000 {
                sent += post_routes(http, admin, std::mem::take(&mut routes)).await;
            }
        }
    }
    if !routes.is_empty() {
        sent += post_routes(http, admin, routes).await;
    }
    assert_eq!(sent, total, "all routes imported");
}

pub(crate) async fn post_routes(http: &Http, admin: &str, routes: Vec<Value>) -> usize {
    let (code, body) = http
        .post(&format!("{admin}/routes"), &Value::Array(routes))
        .await;
    assert_eq!(code, 200, "route import failed: {body}");
    body["imported"].as_u64().unwrap_or(0) as usize
}

pub(crate) async fn pipeline_target(
    dir: &std::path::Path,
    load: &Load,
    name: &str,
    extra: &[&str],
) -> Target {
    let t = match &load.addr {
        Some(a) => Target {
            _proc: None,
            grpc: a.clone(),
            http: load.http_addr.clone().map(|h| format!("http://{h}")),
            pid: None,
            heap_idle: None,
        },
        None => start_metasrv(dir, name, extra),
    };
    let mut t = t;
    if let Some(admin) = &t.http {
        // An etcd-backed metasrv must win its election before it takes routes.
        let http = Http::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(&format!("{admin}/leader")).await.1["is_leader"] != true {
            assert!(
                Instant::now() < deadline,
                "the metasrv under test never became leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.heap_idle = heap_bytes(&t).await;
        seed_routes(&http, admin, load).await;
    }
    t
}
