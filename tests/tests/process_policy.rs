//! The process policy both binaries share (`common_proto::process`), and what a stopped
//! heartbeat task leaves behind.
//!
//! - Nothing that logs can kill a process: with stderr a pipe whose reader is gone, a
//!   process logs thousands of lines and carries on.
//! - A panic in any thread ends the whole process at once (SIGABRT), so a supervisor
//!   restarts it; a half-dead process must not go on serving.
//! - SIGTERM works with a broken stderr.
//! - When the heartbeat task stops, every region turns readonly by its deadline: the
//!   write path checks the deadline itself (in process: a real metasrv on loopback, the
//!   `datanode` library, the demo engine).

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common_proto::v1::RegionRole;
use datanode::{
    start_heartbeat, HeartbeatOptions, MemoryRegionEngine, MetaClient, RegionEngine as _,
    RegionLeases,
};
use handlers::RegionRoute;
use meta_srv::{MetasrvBuilder, MetasrvOptions};
use tests::{bin_path, eventually, send_signal};
use tokio::time::Instant;

/// Runs the probe with a broken stderr; returns its child and its stdout lines.
fn probe(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(bin_path("process-probe"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn process-probe");
    drop(child.stderr.take()); // every write to stderr now fails with EPIPE
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the probe did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn logging_into_a_broken_pipe_never_kills_the_process() {
    let (mut child, rx) = probe(&["log", "20000"]);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exited with {status:?}");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("done")
    );
}

#[test]
fn a_panic_in_any_thread_aborts_the_whole_process() {
    let (mut child, rx) = probe(&["panic"]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("ready")
    );
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "aborted, not lingering: {status:?}"
    );
}

#[test]
fn sigterm_stops_a_process_whose_stderr_is_broken() {
    let (mut child, rx) = probe(&["wait"]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("ready")
    );
    send_signal(child.id(), "TERM").expect("SIGTERM");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "a clean exit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_heartbeat_task_leaves_nothing_writable_past_the_deadline() {
    // A real metasrv on loopback: 500 ms heartbeats, 2 s region lease.
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let options = MetasrvOptions {
        // AskLeader answers with the advertised address: the one actually bound.
        bind_addr: addr.to_string(),
        heartbeat_interval: Duration::from_millis(500),
        node_lease: Duration::from_secs(2),
        region_lease: Duration::from_secs(2),
        ..MetasrvOptions::default()
    };
    let srv = MetasrvBuilder::new(options).build().await.expect("build");
    let server = {
        let srv = srv.clone();
        tokio::spawn(async move { srv.serve(grpc, None, std::future::pending()).await })
    };
    srv.context()
        .routes
        .put(RegionRoute {
            region_id: 1,
            leader: Some(7),
            followers: vec![],
            epoch: 1,
        })
        .await
        .expect("route");

    // The embedder's side: engine, leases, heartbeat task.
    let leases = RegionLeases::new(Duration::from_millis(500));
    let engine = Arc::new(MemoryRegionEngine::new(leases.clone()));
    engine
        .open_region(1, RegionRole::Leader, 1)
        .await
        .expect("open");
    let client = MetaClient::new(vec![addr.to_string()], 1, 7, Duration::from_secs(1));
    let handle = start_heartbeat(
        client,
        HeartbeatOptions {
            node_id: 7,
            advertise_addr: "127.0.0.1:1".into(),
            node_epoch: common_proto::unix_millis(),
            initial_interval: Duration::from_millis(500),
            rpc_timeout: Duration::from_secs(1),
            extensions: datanode::heartbeat::default_extensions(),
            jitter_seed: None,
        },
        engine.clone(),
        leases.clone(),
    )
    .expect("start heartbeat");
    eventually("region 1 writable", Duration::from_secs(10), || async {
        engine.write(1, "k", "v").is_ok().then_some(())
    })
    .await;

    // The task stops (as on an error, a panic or a shutdown); the metasrv runs on.
    let stopped = Instant::now();
    handle.stop();
    let lapsed_by = stopped + Duration::from_secs(2);
    let (mut attempted, mut accepted) = (0u64, 0u64);
    while Instant::now() < lapsed_by + Duration::from_secs(1) {
        let before = Instant::now();
        let ok = engine.write(1, "k", "v").is_ok();
        if before >= lapsed_by {
            attempted += 1;
            accepted += u64::from(ok);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(attempted > 0);
    assert_eq!(
        accepted, 0,
        "{accepted} of {attempted} writes past the deadline accepted"
    );
    srv.shutdown();
    let _ = server.await;
}
