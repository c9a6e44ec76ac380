//! A harness for end-to-end tests and the demo: real `metasrv` and `datanode`
//! processes on loopback, with temporary data directories, stopped when dropped.
//!
//! Processes print one `... ready ...` line on stdout once listening; the harness waits
//! for it (ports are chosen by the OS: `:0`). Their logs go to files in the cluster's
//! temporary directory, and the tail of each is printed if a test panics.
//!
//! The binaries come from the workspace's target directory; `scripts/test` builds them
//! (`cargo build --workspace --bins`) before the tests run.

pub mod bench;
pub mod cluster;
pub mod datanode_kill;
pub mod etcd;
pub mod leader_kill;
pub mod pki;
pub mod proxy;
pub mod quorum_loss;
pub mod writers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_proto::v1::heartbeat_client::HeartbeatClient;
use common_proto::v1::{HeartbeatRequest, HeartbeatResponse, Peer, RequestHeader, Role};
use common_proto::PROTOCOL_VERSION;
use serde_json::Value;

/// Where the workspace's binaries are.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// A label for logs.
    pub name: String,
    child: Option<Child>,
    /// The ready line's `key=value` fields.
    pub fields: Vec<(String, String)>,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin args…`, logging stderr to `log`, and waits for its ready line.
    pub fn spawn(name: &str, bin: &str, args: &[String], log: &Path) -> Proc {
        Self::spawn_with(name, bin, args, log, Stderr::Log)
    }

    /// Starts `bin args…` with its stderr as `stderr` says, and waits for its ready line.
    pub fn spawn_with(name: &str, bin: &str, args: &[String], log: &Path, stderr: Stderr) -> Proc {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let stderr_cfg = match stderr {
            Stderr::Log => Stdio::from(log_file),
            Stderr::BrokenPipe => Stdio::piped(),
        };
        let mut child = Command::new(bin_path(bin))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_cfg)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        // The read end goes away now: every write to stderr fails with EPIPE.
        drop(child.stderr.take());
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not become ready; log:\n{}", tail(log));
            }
        };
        let fields = line
            .split_whitespace()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Proc {
            name: name.to_string(),
            child: Some(child),
            fields,
            log: log.to_path_buf(),
        }
    }

    /// A field of the ready line.
    pub fn field(&self, key: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{} printed no {key}", self.name))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig).unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.name));
    }

    /// SIGSTOP, and wait until it took effect (a signal is delivered asynchronously: a
    /// request sent in between would still be served).
    pub fn freeze(&self) {
        self.signal("STOP");
        self.wait_stopped(true);
    }

    /// SIGCONT, and wait until the process runs again.
    pub fn thaw(&self) {
        self.signal("CONT");
        self.wait_stopped(false);
    }

    fn wait_stopped(&self, stopped: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_stopped() != stopped {
            assert!(
                Instant::now() < deadline,
                "{}: stopped={stopped} did not take effect within 5 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the process is stopped (SIGSTOP took effect), from `/proc/PID/stat`.
    pub fn is_stopped(&self) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a graceful exit; returns whether it exited in time.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = send_signal(c.id(), "TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log tail ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
        self.kill();
    }
}

/// Where a child's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Appended to its log file.
    Log,
    /// A pipe whose read end is closed at once: every write fails with EPIPE, as when the
    /// reader of a process's log pipe went away.
    BrokenPipe,
}

/// Sends `sig` (`KILL`, `TERM`, `STOP`, `CONT`, `INT`) to `pid`, through libc: no `kill`
/// binary needed.
pub fn send_signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let signo = match sig {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "INT" => libc::SIGINT,
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown signal {other}"),
            ))
        }
    };
    let pid = libc::pid_t::try_from(pid)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signo) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Fast timings for tests: 500 ms heartbeats, 2 s leases.
pub const FAST: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--node-lease",
    "2s",
    "--region-lease",
    "2s",
    "--failover-wait",
    "3s",
];

/// A metasrv process.
#[derive(Debug)]
pub struct MetasrvProc {
    /// The process.
    pub proc: Proc,
    /// gRPC address.
    pub grpc: String,
    /// Admin HTTP base URL.
    pub http: String,
}

impl MetasrvProc {
    /// Starts `metasrv start` with `extra` flags; `bind` may be `127.0.0.1:0`.
    pub fn start(name: &str, bind: &str, extra: &[String], log: &Path) -> MetasrvProc {
        Self::start_with(name, bind, extra, log, Stderr::Log)
    }

    /// As [`start`](Self::start), with its stderr as `stderr` says.
    pub fn start_with(
        name: &str,
        bind: &str,
        extra: &[String],
        log: &Path,
        stderr: Stderr,
    ) -> MetasrvProc {
        let mut args: Vec<String> = ["start", "--bind-addr", bind, "--http-addr", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().cloned());
        let proc = Proc::spawn_with(name, "metasrv", &args, log, stderr);
        let grpc = proc.field("grpc");
        let http = format!("http://{}", proc.field("http"));
        MetasrvProc { proc, grpc, http }
    }
}

/// A datanode process.
#[derive(Debug)]
pub struct DatanodeProc {
    /// The process.
    pub proc: Proc,
    /// Its id.
    pub node_id: u64,
    /// Data API base URL.
    pub http: String,
}

impl DatanodeProc {
    /// Starts `datanode start` for `node_id`, persisting under `data_dir`.
    pub fn start(node_id: u64, metasrvs: &[String], data_dir: &Path, log: &Path) -> DatanodeProc {
        Self::start_with(node_id, metasrvs, data_dir, log, Stderr::Log, &[])
    }

    /// As [`start`](Self::start), with its stderr as `stderr` says and `extra` flags
    /// (e.g. `--shared-dir DIR`).
    pub fn start_with(
        node_id: u64,
        metasrvs: &[String],
        data_dir: &Path,
        log: &Path,
        stderr: Stderr,
        extra: &[String],
    ) -> DatanodeProc {
        let mut args: Vec<String> = vec![
            "start".into(),
            "--node-id".into(),
            node_id.to_string(),
            "--metasrv-addrs".into(),
            metasrvs.join(","),
            "--data-addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--heartbeat-interval".into(),
            "500ms".into(),
        ];
        args.extend(extra.iter().cloned());
        let proc = Proc::spawn_with(
            &format!("datanode-{node_id}"),
            "datanode",
            &args,
            log,
            stderr,
        );
        let http = format!("http://{}", proc.field("data"));
        DatanodeProc {
            proc,
            node_id,
            http,
        }
    }
}

/// A small blocking-free HTTP helper around reqwest.
#[derive(Debug, Clone, Default)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client with a short timeout, so a stopped process fails a call instead of
    /// hanging it.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { client }
    }

    /// A client that trusts only the CA in `ca` (PEM), for a TLS admin HTTP.
    pub fn with_ca(ca: &Path) -> Self {
        let pem = std::fs::read(ca).expect("read CA");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
            .build()
            .expect("client");
        Self { client }
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none). A
    /// transport failure fails the test, naming the call.
    async fn send(&self, what: &str, url: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (code, body, _) = self.send_with_headers(what, url, req).await;
        (code, body)
    }

    /// GET.
    pub async fn get(&self, url: &str) -> (u16, Value) {
        self.send("GET", url, self.client.get(url)).await
    }

    /// GET, with the reply's headers (e.g. which metasrv answered).
    pub async fn get_with_headers(&self, url: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        self.send_with_headers("GET", url, self.client.get(url))
            .await
    }

    /// POST JSON, with the reply's headers.
    pub async fn post_with_headers(
        &self,
        url: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.send_with_headers("POST", url, self.client.post(url).json(body))
            .await
    }

    async fn send_with_headers(
        &self,
        what: &str,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what} {url}: {e}"));
        let headers = resp.headers().clone();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
            headers,
        )
    }

    /// GET a text body (e.g. Prometheus `/metrics`).
    pub async fn get_text(&self, url: &str) -> (u16, String) {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let code = resp.status().as_u16();
        (code, resp.text().await.unwrap_or_default())
    }

    /// POST JSON.
    pub async fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        self.send("POST", url, self.client.post(url).json(body))
            .await
    }

    /// PUT a text body.
    pub async fn put(&self, url: &str, body: &str) -> (u16, Value) {
        self.send("PUT", url, self.client.put(url).body(body.to_string()))
            .await
    }

    /// DELETE.
    pub async fn delete(&self, url: &str) -> (u16, Value) {
        self.send("DELETE", url, self.client.delete(url)).await
    }

    /// Writes a row to a datanode.
    pub async fn write_row(&self, node: &str, region: u64, key: &str, value: &str) -> (u16, Value) {
        self.put(&format!("{node}/regions/{region}/rows/{key}"), value)
            .await
    }

    /// Writes a row; `None` when the node did not answer (stopped, gone): for probes
    /// that expect some nodes to be unreachable.
    pub async fn try_write_row(
        &self,
        node: &str,
        region: u64,
        key: &str,
        value: &str,
    ) -> Option<u16> {
        self.try_write_row_within(node, region, key, value, Duration::from_secs(2))
            .await
    }

    /// As [`try_write_row`](Self::try_write_row), waiting at most `within` for the answer
    /// (a write queued on a stopped node is answered when it resumes).
    pub async fn try_write_row_within(
        &self,
        node: &str,
        region: u64,
        key: &str,
        value: &str,
        within: Duration,
    ) -> Option<u16> {
        let url = format!("{node}/regions/{region}/rows/{key}");
        self.client
            .put(&url)
            .timeout(within)
            .body(value.to_string())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Reads a row from a datanode.
    pub async fn read_row(&self, node: &str, region: u64, key: &str) -> (u16, Value) {
        self.get(&format!("{node}/regions/{region}/rows/{key}"))
            .await
    }
}

/// Asserts `check` on every poll for the whole `window` (a "this never happens" window:
/// a single failing poll fails the test, naming `what`).
pub async fn always_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let mut polls = 0u64;
    while start.elapsed() < window {
        polls += 1;
        assert!(
            check().await,
            "{what}: violated after {:?} (poll {polls})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(polls > 0, "{what}: never checked");
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An outer deadline for one awaited gRPC call.
pub const CALL: Duration = Duration::from_secs(10);

/// A plaintext gRPC channel to `grpc` (`host:port`), connected within [`CALL`].
pub async fn grpc_channel(grpc: &str) -> tonic::transport::Channel {
    tokio::time::timeout(
        CALL,
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect(),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// The first response to a one-message heartbeat stream from a made-up datanode 99
/// (cluster 1), as an outside client built from the proto would send it: what a member
/// answers a node, e.g. NOT_LEADER naming the leader on a follower.
pub async fn heartbeat_once(grpc: &str) -> HeartbeatResponse {
    heartbeat_on(grpc_channel(grpc).await, 99)
        .await
        .expect("a response")
}

/// The first response to a one-message heartbeat stream from datanode `node_id` over
/// `channel` (plaintext or TLS), or the status that refused it.
pub async fn heartbeat_on(
    channel: tonic::transport::Channel,
    node_id: u64,
) -> Result<HeartbeatResponse, tonic::Status> {
    let mut client = HeartbeatClient::new(channel);
    let request = HeartbeatRequest {
        header: Some(RequestHeader {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: 1,
            node_id,
            role: Role::Datanode as i32,
        }),
        peer: Some(Peer {
            id: node_id,
            addr: "127.0.0.1:9".into(),
        }),
        node_epoch: 1,
        ..Default::default()
    };
    let mut stream =
        tokio::time::timeout(CALL, client.heartbeat(tokio_stream::iter(vec![request])))
            .await
            .expect("the call returns in time")?
            .into_inner();
    match tokio::time::timeout(CALL, stream.message())
        .await
        .expect("a response in time")
    {
        Ok(Some(resp)) => Ok(resp),
        Ok(None) => Err(tonic::Status::unknown(
            "the stream ended without a response",
        )),
        Err(status) => Err(status),
    }
}

/// Runs `metactl --endpoints endpoints args…` (blocking, off the async runtime's threads).
pub async fn metactl(endpoints: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin_path("metactl"));
    cmd.arg("--endpoints").arg(endpoints).args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run metactl"))
        .await
        .expect("join")
}

/// How long ago the metasrv at `ms_http` last granted datanode `node_id` leases, from its
/// `/nodes`; `None` if it never did.
pub async fn granted_ms_ago(http: &Http, ms_http: &str, node_id: u64) -> Option<u64> {
    let (_, nodes) = http.get(&format!("{ms_http}/nodes")).await;
    nodes.as_array()?.iter().find(|n| n["node_id"] == node_id)?["granted_ms_ago"].as_u64()
}

/// A standalone metasrv (flags `metasrv_args`, logs and data under `dir`) and datanodes
/// `1..=nodes` sharing one region-data directory (so regions can move), waited on until
/// every datanode is connected.
pub async fn standalone_shared(
    dir: &Path,
    metasrv_args: &[String],
    nodes: u64,
) -> (MetasrvProc, Vec<DatanodeProc>, Http) {
    standalone_shared_with(dir, metasrv_args, nodes, &[]).await
}

/// As [`standalone_shared`], with `datanode_args` for every datanode.
pub async fn standalone_shared_with(
    dir: &Path,
    metasrv_args: &[String],
    nodes: u64,
    datanode_args: &[String],
) -> (MetasrvProc, Vec<DatanodeProc>, Http) {
    let ms = MetasrvProc::start("metasrv", "127.0.0.1:0", metasrv_args, &dir.join("ms.log"));
    let mut shared = vec![
        "--shared-dir".to_string(),
        dir.join("shared").display().to_string(),
    ];
    shared.extend(datanode_args.iter().cloned());
    let datanodes: Vec<DatanodeProc> = (1..=nodes)
        .map(|id| {
            DatanodeProc::start_with(
                id,
                std::slice::from_ref(&ms.grpc),
                &dir.join(format!("dn{id}")),
                &dir.join(format!("dn{id}.log")),
                Stderr::Log,
                &shared,
            )
        })
        .collect();
    let http = Http::new();
    eventually(
        "every datanode connected",
        Duration::from_secs(20),
        || async {
            let (_, n) = http.get(&format!("{}/nodes", ms.http)).await;
            let connected = n
                .as_array()?
                .iter()
                .filter(|n| n["connected"] == true)
                .count();
            (connected as u64 == nodes).then_some(())
        },
    )
    .await;
    (ms, datanodes, http)
}
