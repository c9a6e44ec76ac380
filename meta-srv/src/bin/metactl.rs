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
//! - 3: no endpoint could be reached;
//! - 4: a change was sent but its reply was lost: it may or may not have been applied.
//!
//! A read goes to the next endpoint whenever one cannot answer for the cluster. A change
//! (`POST`, `DELETE`) goes to the next endpoint only when it surely reached no leader: the
//! connection was refused, or the member says so (`x-metasrv-not-applied`). So a change
//! never runs twice. A resign whose leader went away while it was in flight counts as
//! done. Migrate and drain are idempotent anyway: a repeat of a running move returns it.
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
    /// Regions: leader, epoch, lease state, availability.
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
    /// A change was sent but no reply came: it may or may not have been applied, so it
    /// is not sent again.
    Uncertain(String),
    /// The command line cannot work as given (a CA file that cannot be read).
    Usage(String),
}

struct Reply {
    status: u16,
    body: Value,
    answered_by: Option<String>,
    /// A change whose reply was a gateway error that may have reached the leader.
    outcome_unknown: bool,
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
    let idempotent = method == reqwest::Method::GET;
    let mut errors = Vec::new();
    // The last member that answered (502–504) while others went on: its answer beats
    // "unreachable" if every later endpoint fails to connect.
    let mut answered: Option<(u16, String, Option<String>)> = None;
    for (n, endpoint) in cli.endpoints.iter().enumerate() {
        let last = n + 1 == cli.endpoints.len();
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
            Ok(resp) => {
                let status = resp.status().as_u16();
                let not_applied = resp
                    .headers()
                    .get("x-metasrv-not-applied")
                    .is_some_and(|v| v == "true");
                let answered_by = resp
                    .headers()
                    .get("x-metasrv-answered-by")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let text = resp.text().await.unwrap_or_default();
                let attempt = Attempt::Answered {
                    status,
                    not_applied,
                };
                match next(idempotent, attempt, last) {
                    Next::TryNext => {
                        errors.push(format!("{endpoint}: {status} {text}"));
                        answered = Some((status, text, answered_by));
                    }
                    Next::Stop => {
                        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                        return Ok(Reply {
                            status,
                            body,
                            answered_by,
                            outcome_unknown: uncertain(idempotent, attempt),
                        });
                    }
                }
            }
            Err(e) => {
                let mut why = common_proto::error::explain(&e);
                // Plain HTTP to a TLS port fails oddly (the connection closes, or rustls's
                // alert reads as HTTP/0.9): say what to try.
                if cli.cacert.is_none() && (e.is_request() || why.contains("HTTP/0.9")) {
                    why.push_str(" (if the admin HTTP serves TLS, pass --cacert CA.pem)");
                }
                errors.push(format!("{endpoint}: {why}"));
                let attempt = if e.is_connect() {
                    Attempt::Refused
                } else {
                    Attempt::Lost
                };
                // A change that may have reached a leader stops here; anything else goes on
                // to the next endpoint, and past the last one is "unreachable".
                // (With endpoints left, the rule stops only a change that may have applied.)
                if next(idempotent, attempt, false) == Next::Stop {
                    return Err(Failure::Uncertain(errors.join("; ")));
                }
            }
        }
    }
    if let Some((status, text, answered_by)) = answered {
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return Ok(Reply {
            status,
            body,
            answered_by,
            outcome_unknown: false,
        });
    }
    Err(Failure::Unreachable(errors.join("; ")))
}

/// How one attempt at an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// The connection was refused: nothing was sent.
    Refused,
    /// Sent, but no reply came (a reset, a timeout): it may have been applied.
    Lost,
    /// A reply came; `not_applied` when the member says no leader saw the request.
    Answered { status: u16, not_applied: bool },
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    TryNext,
    Stop,
}

/// The retry rule: a read may go to the next endpoint after any failure to get an
/// answer for the cluster (refused, lost, 502–504); a change only when it surely reached
/// no leader (refused, or marked not applied), so it never runs twice. The last endpoint
/// has no next.
fn next(idempotent: bool, attempt: Attempt, last: bool) -> Next {
    let retry = match attempt {
        Attempt::Refused => true,
        Attempt::Lost => idempotent,
        Attempt::Answered {
            status,
            not_applied,
        } => matches!(status, 502..=504) && (idempotent || not_applied),
    };
    if retry && !last {
        Next::TryNext
    } else {
        Next::Stop
    }
}

/// Whether a change's final reply leaves its outcome unknown: a gateway error that may
/// have reached the leader.
fn uncertain(idempotent: bool, attempt: Attempt) -> bool {
    !idempotent
        && matches!(
            attempt,
            Attempt::Answered {
                status: 502..=504,
                not_applied: false
            }
        )
}

/// `metactl cluster`'s timing columns and the `/cluster` keys they show.
const TIMING_COLUMNS: [(&str, &str); 5] = [
    ("heartbeat", "heartbeat_interval_ms"),
    ("region_lease", "region_lease_ms"),
    ("failover_wait", "failover_wait_ms"),
    ("node_lease", "node_lease_ms"),
    ("meta_lease", "meta_lease_ms"),
];

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
                "epoch",
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
            // Each member's timings, one column each, in seconds as configured.
            let members: Vec<Value> = body["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut m| {
                    for (column, key) in TIMING_COLUMNS {
                        let secs = m["timings"][key]
                            .as_u64()
                            .map_or(Value::Null, |ms| json!(format!("{}s", ms as f64 / 1000.0)));
                        m[column] = secs;
                    }
                    m
                })
                .collect();
            let mut columns = vec!["addr", "http_addr", "leader"];
            columns.extend(TIMING_COLUMNS.iter().map(|(c, _)| *c));
            columns.push("version");
            let mut out = format!(
                "leader: {}  term: {}  maintenance: {}  region_failover: {}  drained: {}\n{}",
                cell(&body["leader"]),
                cell(&body["term"]),
                cell(&body["maintenance"]),
                cell(&body["region_failover"]),
                cell(&body["drained_nodes"]),
                table(&members, &columns)
            );
            if let Some(differ) = body["members_with_other_timings"]
                .as_array()
                .filter(|d| !d.is_empty())
            {
                out.push_str(&format!(
                    "\nwarning: timings differ from the leader's on: {}",
                    cell(&Value::Array(differ.clone()))
                ));
            }
            out
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
    let resign = matches!(
        cli.command,
        Cmd::Leader {
            action: LeaderCmd::Resign
        }
    );
    let reply = match call(cli, method, &path, body).await {
        // A resign whose reply was lost, or whose leader changed while it was forwarded,
        // did its work: the leader it reached is gone. Sending it again would only
        // depose the successor.
        Err(Failure::Uncertain(why)) if resign => return Ok(resign_done(why)),
        other => other?,
    };
    if reply.outcome_unknown && resign {
        return Ok(resign_done(cell(&reply.body)));
    }
    if reply.status >= 400 {
        return Err(Failure::Answered(reply.status, reply.body));
    }
    Ok(reply)
}

/// The reply of a resign whose leader went away while it was in flight.
fn resign_done(why: String) -> Reply {
    Reply {
        status: 200,
        body: json!({
            "resigned": true,
            "note": format!("the leader went away while the resign was in flight; counted as done ({why})"),
        }),
        answered_by: None,
        outcome_unknown: false,
    }
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
        Err(Failure::Uncertain(why)) => {
            eprintln!(
                "metactl: sent, but no reply came; it may or may not have been applied, and is not sent again (check with a read): {why}"
            );
            ExitCode::from(4)
        }
        Err(Failure::Usage(why)) => {
            eprintln!("metactl: {why}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: [u16; 3] = [502, 503, 504];

    #[test]
    fn a_change_goes_to_the_next_endpoint_only_when_it_surely_reached_no_leader() {
        assert_eq!(next(false, Attempt::Refused, false), Next::TryNext);
        assert_eq!(next(false, Attempt::Lost, false), Next::Stop);
        for status in GATEWAY {
            let maybe = Attempt::Answered {
                status,
                not_applied: false,
            };
            assert_eq!(next(false, maybe, false), Next::Stop, "{status}");
            assert!(uncertain(false, maybe), "{status}");
            let unapplied = Attempt::Answered {
                status,
                not_applied: true,
            };
            assert_eq!(next(false, unapplied, false), Next::TryNext, "{status}");
            assert!(!uncertain(false, unapplied));
        }
        let refused = Attempt::Answered {
            status: 409,
            not_applied: false,
        };
        assert_eq!(next(false, refused, false), Next::Stop);
        assert!(
            !uncertain(false, refused),
            "a 409 is an answer, not an unknown"
        );
    }

    #[test]
    fn a_read_goes_to_the_next_endpoint_after_any_failure_and_the_last_has_none() {
        assert_eq!(next(true, Attempt::Refused, false), Next::TryNext);
        assert_eq!(next(true, Attempt::Lost, false), Next::TryNext);
        for status in GATEWAY {
            let a = Attempt::Answered {
                status,
                not_applied: false,
            };
            assert_eq!(next(true, a, false), Next::TryNext);
            assert_eq!(next(true, a, true), Next::Stop);
            assert!(!uncertain(true, a), "a read is never uncertain");
        }
        let ok = Attempt::Answered {
            status: 200,
            not_applied: false,
        };
        assert_eq!(next(true, ok, false), Next::Stop);
        assert_eq!(next(false, Attempt::Refused, true), Next::Stop);
    }
}
