//! `metactl`: the operator's command line for a metasrv cluster, over the admin HTTP API.
//!
//! `--endpoints` takes any members' admin addresses; metactl asks them in order until
//! one answers. Any member gives the leader's answer (followers forward), and metactl
//! says which member answered. Tables for people by default, `--json` for scripts.
//!
//! Exit codes scripts can trust:
//! - 0: done;
//! - 1: the cluster answered with an error (4xx/5xx: refused, not found, no leader);
//! - 2: bad usage (clap's own code);
//! - 3: no endpoint could be reached.
//!
//! A TLS admin HTTP: `--cacert ca.pem` (or `METACTL_CACERT`) dials `https://` and
//! verifies the members against that CA.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "metactl",
    version = common_proto::process::VERSION,
    about = "Operate a metasrv cluster through its admin HTTP API"
)]
struct Cli {
    /// Admin HTTP addresses of any members (host:port), comma separated; tried in order.
    #[arg(
        long,
        env = "METACTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:4000"
    )]
    endpoints: Vec<String>,
    /// The admin token, for commands that change the cluster (prefer the variable).
    #[arg(long, env = "METACTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA bundle (PEM) of a TLS admin HTTP: endpoints without a scheme are dialled as
    /// https:// and verified against it.
    #[arg(long, env = "METACTL_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// How long one call may take (a migration waits for its procedure), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Members, the leader and its term, maintenance and failover switches.
    Cluster,
    /// Nodes: heartbeat age, liveness, connection, regions.
    Nodes,
    /// Regions: leader, lease state, availability.
    Regions,
    /// Handlers: calls, errors, refusals, time.
    Handlers,
    /// Leadership.
    Leader {
        #[command(subcommand)]
        action: LeaderCmd,
    },
    /// Maintenance mode (pauses automatic failover).
    Maintenance {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// One region.
    Region {
        #[command(subcommand)]
        action: RegionCmd,
    },
    /// One node.
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
}

#[derive(Debug, Subcommand)]
enum LeaderCmd {
    /// Hand leadership over: the leader resigns, a successor is elected at once.
    Resign,
}

#[derive(Debug, Subcommand)]
enum RegionCmd {
    /// Move a region's leadership to another node (the selector picks without --to).
    Migrate {
        /// The region id.
        id: u64,
        /// The target node id.
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Drain a node: it takes no new regions, and every region it leads moves elsewhere
    /// (before maintenance on it). Lasts until `undrain`.
    Drain {
        /// The node id.
        id: u64,
    },
    /// Return a drained node to service: it may take new regions again (nothing moves
    /// back by itself).
    Undrain {
        /// The node id.
        id: u64,
    },
}

/// Why a call failed, and the exit code it maps to.
enum Failure {
    /// The cluster answered with an error status.
    Answered(u16, Value),
    /// No endpoint answered.
    Unreachable(String),
    /// The command line cannot work as given (a CA file that cannot be read).
    Usage(String),
}

struct Reply {
    status: u16,
    body: Value,
    answered_by: Option<String>,
}

/// Sends `method path` with `body` to the first endpoint that answers.
async fn call(
    cli: &Cli,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Reply, Failure> {
    let mut builder = reqwest::Client::builder()
        .timeout(cli.timeout)
        .connect_timeout(Duration::from_secs(2));
    if let Some(path) = &cli.cacert {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::Usage(format!("cannot read the CA bundle {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Failure::Usage(format!("the CA bundle {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Failure::Usage(format!(
                "the CA bundle {} holds no PEM certificate",
                path.display()
            )));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| Failure::Unreachable(format!("cannot build an HTTP client: {e}")))?;
    let scheme = if cli.cacert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut errors = Vec::new();
    for endpoint in &cli.endpoints {
        let base = if endpoint.starts_with("http") {
            endpoint.clone()
        } else {
            format!("{scheme}://{endpoint}")
        };
        let mut req = client.request(method.clone(), format!("{base}{path}"));
        if let Some(token) = &cli.token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        match req.send().await {
            // A member that cannot answer for the cluster right now (no leader known, the
            // leader unreachable): another endpoint may.
            Ok(resp)
                if matches!(resp.status().as_u16(), 502..=504)
                    && endpoint != cli.endpoints.last().unwrap_or(endpoint) =>
            {
                let status = resp.status().as_u16();
                errors.push(format!(
                    "{endpoint}: {status} {}",
                    resp.text().await.unwrap_or_default()
                ));
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let answered_by = resp
                    .headers()
                    .get("x-metasrv-answered-by")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let text = resp.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                return Ok(Reply {
                    status,
                    body,
                    answered_by,
                });
            }
            Err(e) => {
                let mut why = common_proto::error::explain(&e);
                // Plain HTTP to a TLS port fails oddly (the connection closes, or rustls's
                // alert reads as HTTP/0.9): say what to try.
                if cli.cacert.is_none() && (e.is_request() || why.contains("HTTP/0.9")) {
                    why.push_str(" (if the admin HTTP serves TLS, pass --cacert CA.pem)");
                }
                errors.push(format!("{endpoint}: {why}"));
            }
        }
    }
    Err(Failure::Unreachable(errors.join("; ")))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A table of `rows` (JSON objects) with `columns`, aligned for people.
fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

/// Renders a successful reply for people.
fn human(cmd: &Cmd, body: &Value) -> String {
    let rows = body.as_array().cloned().unwrap_or_default();
    match cmd {
        Cmd::Nodes => table(
            &rows,
            &[
                "node_id",
                "role",
                "addr",
                "alive",
                "connected",
                "region_count",
                "lease_age_ms",
                "granted_ms_ago",
                "drained",
            ],
        ),
        Cmd::Regions => table(
            &rows,
            &[
                "region_id",
                "leader",
                "followers",
                "lease_state",
                "availability",
                "reason",
            ],
        ),
        Cmd::Handlers => table(
            &rows,
            &["name", "calls", "errors", "refusals", "total_nanos"],
        ),
        Cmd::Cluster => {
            let members = body["members"].as_array().cloned().unwrap_or_default();
            format!(
                "leader: {}  term: {}  maintenance: {}  region_failover: {}  drained: {}\n{}",
                cell(&body["leader"]),
                cell(&body["term"]),
                cell(&body["maintenance"]),
                cell(&body["region_failover"]),
                cell(&body["drained_nodes"]),
                table(&members, &["addr", "http_addr", "leader"])
            )
        }
        _ => match body {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{k}: {}", cell(v)))
                .collect::<Vec<_>>()
                .join("\n"),
            other => cell(other),
        },
    }
}

async fn execute(cli: &Cli) -> Result<Reply, Failure> {
    use reqwest::Method;
    let (method, path, body) = match &cli.command {
        Cmd::Cluster => (Method::GET, "/cluster".to_string(), None),
        Cmd::Nodes => (Method::GET, "/nodes".to_string(), None),
        Cmd::Regions => (Method::GET, "/regions".to_string(), None),
        Cmd::Handlers => (Method::GET, "/handlers".to_string(), None),
        Cmd::Leader {
            action: LeaderCmd::Resign,
        } => (Method::POST, "/leader/resign".to_string(), None),
        Cmd::Maintenance { state } => (
            Method::POST,
            "/maintenance".to_string(),
            Some(json!({ "enabled": state == "on" })),
        ),
        Cmd::Region {
            action: RegionCmd::Migrate { id, to },
        } => (
            Method::POST,
            format!("/regions/{id}/migrate"),
            Some(to.map_or_else(|| json!({}), |to| json!({ "to": to }))),
        ),
        Cmd::Node {
            action: NodeCmd::Drain { id },
        } => (Method::POST, format!("/nodes/{id}/drain"), None),
        Cmd::Node {
            action: NodeCmd::Undrain { id },
        } => (Method::DELETE, format!("/nodes/{id}/drain"), None),
    };
    let reply = call(cli, method, &path, body).await?;
    if reply.status >= 400 {
        return Err(Failure::Answered(reply.status, reply.body));
    }
    Ok(reply)
}

/// Prints a result line. A reader that closed the pipe early (`metactl regions | head`)
/// is not an error of the command: the exit code stays the command's, where `println!`
/// would panic.
fn out(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metactl: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(execute(&cli)) {
        Ok(reply) => {
            if cli.json {
                out(&reply.body.to_string());
            } else {
                out(&human(&cli.command, &reply.body));
                if let Some(by) = reply.answered_by {
                    eprintln!("(answered by {by})");
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Answered(status, body)) => {
            let message = body["error"]
                .as_str()
                .map_or_else(|| cell(&body), String::from);
            if cli.json {
                out(&json!({ "status": status, "error": message }).to_string());
            }
            eprintln!("metactl: {status}: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("metactl: no endpoint answered: {why}");
            ExitCode::from(3)
        }
        Err(Failure::Usage(why)) => {
            eprintln!("metactl: {why}");
            ExitCode::from(2)
        }
    }
}
