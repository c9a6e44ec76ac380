//! Ready-made clusters and tool runs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{bin_path, eventually, DatanodeProc, Http, MetasrvProc, Stderr};

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
    standalone(dir, metasrv_args, nodes, true, datanode_args).await
}

/// A standalone metasrv and datanodes `1..=nodes` (with `datanode_args`), on one shared
/// region-data directory if `shared`, each on its own data directory otherwise; waited on
/// until every datanode is connected.
pub async fn standalone(
    dir: &Path,
    metasrv_args: &[String],
    nodes: u64,
    shared: bool,
    datanode_args: &[String],
) -> (MetasrvProc, Vec<DatanodeProc>, Http) {
    let ms = MetasrvProc::start("metasrv", "127.0.0.1:0", metasrv_args, &dir.join("ms.log"));
    let mut args = Vec::new();
    if shared {
        args.push("--shared-dir".to_string());
        args.push(dir.join("shared").display().to_string());
    }
    args.extend(datanode_args.iter().cloned());
    let datanodes: Vec<DatanodeProc> = (1..=nodes)
        .map(|id| {
            DatanodeProc::start_with(
                id,
                std::slice::from_ref(&ms.grpc),
                &dir.join(format!("dn{id}")),
                &dir.join(format!("dn{id}.log")),
                Stderr::Log,
                &args,
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
