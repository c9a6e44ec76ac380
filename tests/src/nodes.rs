//! `metasrv` and `datanode` processes with the flags the tests use.

use std::path::Path;

use crate::process::{Proc, Stderr};

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
