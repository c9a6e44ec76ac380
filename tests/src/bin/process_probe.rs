//! `process-probe`: a tiny binary on the same bootstrap as `metasrv` and `datanode`
//! (`common_proto::process::run`), so the tests can check the process policy itself:
//! - `process-probe log N`: logs N lines, then prints `done` on stdout and exits 0 (with a
//!   broken stderr this must still finish);
//! - `process-probe panic`: a background thread panics while the main task keeps going;
//!   the whole process must abort at once.
//! - `process-probe wait`: prints `ready` and waits for SIGTERM/SIGINT, then exits 0.

use std::process::ExitCode;
use std::time::Duration;

use common_proto::process;

async fn probe(mode: String, n: u64) -> Result<(), String> {
    match mode.as_str() {
        "log" => {
            for i in 0..n {
                tracing::info!(line = i, "a log line no one can read");
            }
            process::announce("done");
            Ok(())
        }
        "panic" => {
            process::announce("ready");
            std::thread::spawn(|| panic!("a background thread panicked"));
            // The rest of the process would serve on: it must not get the chance.
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err("still alive 60 s after a panic".into())
        }
        "wait" => {
            let signal = process::shutdown_signal();
            process::announce("ready");
            signal.await;
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    process::run("process-probe", process::LogFormat::Text, probe(mode, n))
}
