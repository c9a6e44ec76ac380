//! The binaries' command lines, as an operator uses them: the effective config printed
//! with its precedence (defaults < file < environment < flags), `check-config`, `--help`
//! with defaults, `--version` with the commit, JSON logs, and the mistakes refused at
//! start (a `RUST_LOG` that does not parse, an unspecified advertised address).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tests::{bin_path, MetasrvProc};

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin_path(bin));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn print_config_shows_the_effective_config_with_its_precedence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.toml");
    std::fs::write(&file, "meta_lease = \"6s\"\nregion_lease = \"11s\"\nfailover_wait = \"13s\"\nnode_lease = \"9s\"\n")
        .expect("write");
    let out = run(
        "metasrv",
        &[
            "start",
            "--config",
            &file.display().to_string(),
            "--node-lease",
            "8s",
            "--print-config",
        ],
        &[("METASRV_META_LEASE", "7s"), ("METASRV_NODE_LEASE", "4s")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: toml::Table = toml::from_str(&text(&out.stdout)).expect("TOML on stdout");
    assert_eq!(
        printed["region_lease"].as_str(),
        Some("11s"),
        "from the file"
    );
    assert_eq!(
        printed["meta_lease"].as_str(),
        Some("7s"),
        "the environment beats the file"
    );
    assert_eq!(
        printed["node_lease"].as_str(),
        Some("8s"),
        "a flag beats the environment"
    );
    assert_eq!(
        printed["heartbeat_interval"].as_str(),
        Some("3s"),
        "a default"
    );
    let out = run(
        "metasrv",
        &["start", "--print-config"],
        &[
            ("METASRV_STATS_KEEP", "9"),
            ("METASRV_MAILBOX_TIMEOUT", "3s"),
            ("METASRV_ADMIN_TOKEN", "s3cret"),
        ],
    );
    let printed: toml::Table = toml::from_str(&text(&out.stdout)).expect("TOML on stdout");
    assert_eq!(
        printed["stats_keep"].as_integer(),
        Some(9),
        "every key has its variable"
    );
    assert_eq!(printed["mailbox_timeout"].as_str(), Some("3s"));
    assert!(
        !text(&out.stdout).contains("s3cret"),
        "the token is not printed"
    );

    let out = run(
        "datanode",
        &["start", "--print-config"],
        &[
            ("DATANODE_NODE_ID", "3"),
            ("DATANODE_METASRV_ADDRS", "a:1,b:2"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: toml::Table = toml::from_str(&text(&out.stdout)).expect("TOML on stdout");
    assert_eq!(printed["node_id"].as_integer(), Some(3));
    assert_eq!(
        printed["metasrv_addrs"].as_array().map(Vec::len),
        Some(2),
        "a list from the environment"
    );
}

#[test]
fn check_config_accepts_the_sample_and_refuses_a_broken_file_with_the_reason() {
    let out = run(
        "metasrv",
        &["check-config", &sample("metasrv.example.toml")],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": ok"));

    // Checked as `start` would run it: the environment applies.
    let out = run(
        "metasrv",
        &["check-config", &sample("metasrv.example.toml")],
        &[("METASRV_REGION_LEASE", "4s")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let dir = tempfile::tempdir().expect("tempdir");
    let open = dir.path().join("open.toml");
    std::fs::write(&open, "http_addr = \"0.0.0.0:4000\"\n").expect("write");
    let out = run(
        "metasrv",
        &["check-config", &open.display().to_string()],
        &[("METASRV_ADMIN_TOKEN", "t")],
    );
    assert!(
        out.status.success(),
        "the token from the environment counts: {}",
        text(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region_lease = \"4s\"\n").expect("write");
    let out = run(
        "metasrv",
        &["check-config", &bad.display().to_string()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("heartbeat_interval"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&bad, "no_such_key = 1\n").expect("write");
    let out = run(
        "metasrv",
        &["check-config", &bad.display().to_string()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no_such_key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_shows_defaults_and_version_the_commit() {
    let out = run("metasrv", &["start", "--help"], &[]);
    let help = text(&out.stdout);
    assert!(
        help.contains("[default: 5s]"),
        "meta lease default:\n{help}"
    );
    assert!(help.contains("METASRV_META_LEASE"), "its variable:\n{help}");
    let out = run("datanode", &["start", "--help"], &[]);
    assert!(
        text(&out.stdout).contains("[default: 500ms]"),
        "lease margin default"
    );
    for bin in ["metasrv", "datanode"] {
        let v = text(&run(bin, &["--version"], &[]).stdout);
        assert!(v.contains("(git "), "{bin} --version names the commit: {v}");
    }
}

#[test]
fn mistakes_are_refused_at_start_with_what_to_do() {
    let out = run(
        "metasrv",
        &["start", "--bind-addr", "127.0.0.1:0", "--http-addr", ""],
        &[("RUST_LOG", "meta_srv=loud")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("RUST_LOG"),
        "{}",
        text(&out.stderr)
    );

    let out = run("metasrv", &["start", "--http-addr", "0.0.0.0:0"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an open admin HTTP needs a token"
    );
    assert!(
        text(&out.stderr).contains("admin_token"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        "metasrv",
        &[
            "start",
            "--http-addr",
            "0.0.0.0:0",
            "--insecure",
            "--print-config",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "--insecure allows it: {}",
        text(&out.stderr)
    );
    let out = run(
        "metasrv",
        &["start", "--http-addr", "0.0.0.0:0", "--print-config"],
        &[("METASRV_ADMIN_TOKEN", "t")],
    );
    assert!(
        out.status.success(),
        "so does a token: {}",
        text(&out.stderr)
    );

    let out = run("metasrv", &["start", "--bind-addr", "0.0.0.0:0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--server-addr"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        "datanode",
        &["start", "--node-id", "1", "--data-addr", "0.0.0.0:0"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--advertise-addr"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ms.log");
    let mut ms = MetasrvProc::start(
        "metasrv",
        "127.0.0.1:0",
        &["--log-format".into(), "json".into()],
        &log,
    );
    assert!(
        ms.proc.terminate(Duration::from_secs(10)),
        "stops on SIGTERM"
    );
    let lines = std::fs::read_to_string(&log).expect("log");
    let mut parsed = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        parsed += 1;
    }
    assert!(
        lines.contains("lease timings"),
        "the timings are logged at start"
    );
    assert!(parsed >= 2, "{lines}");
}
