//! Process bootstrap shared by the `metasrv` and `datanode` binaries (feature `process`).
//!
//! Both binaries promise the same thing to an operator: **nothing that logs can kill the
//! process, and a panic always does.** A half-dead process (a heartbeat thread gone, the
//! rest still serving) is the worst case for leases, so:
//! - **Logging never fails upward.** Lines go through a lossy non-blocking queue to a
//!   writer that swallows (and counts) its own errors. A closed stderr pipe (EPIPE), a
//!   full disk or a reader that stopped reading cannot panic, block or stall any thread:
//!   lines are dropped instead. tracing-subscriber's own `eprintln!` on write errors is
//!   switched off (it panics when stderr is broken).
//! - **A panic aborts.** The hook writes the message best-effort (bounded wait, so a
//!   blocked stderr cannot hold it up), then aborts the process, so a supervisor
//!   restarts it; no thread limps on without its siblings.
//! - **Signals do not depend on the logger.** SIGINT and SIGTERM resolve
//!   [`shutdown_signal`] whatever state logging is in.
//! - The **ready line** on stdout is written with errors ignored, never `println!`.
//!
//! Operators also get the same surface from both: [`VERSION`] (with the git commit),
//! `--log-format text|json` ([`LogFormat`]), and a `RUST_LOG` that does not parse is an
//! error at start (exit code 2), not silently ignored.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{error, info};

static LOG_WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// How many log writes to stderr failed (and were dropped) since start.
pub fn log_write_errors() -> u64 {
    LOG_WRITE_ERRORS.load(Ordering::Relaxed)
}

/// stderr that never reports an error: a failed write is counted and dropped.
#[derive(Debug, Clone, Copy)]
struct SafeStderr;

impl Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            LOG_WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Keeps the log writer thread alive; dropping it flushes what is queued (waiting at most
/// about a second, so a blocked stderr cannot hold up exit).
#[derive(Debug)]
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// The version both binaries print: the crate version and the git commit it was built
/// from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("GIT_COMMIT"), ")");

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (text or json)")),
        }
    }
}

/// The filter from `RUST_LOG` (default `info`); a value that does not parse is an error,
/// so a typo never silently logs at the wrong level.
fn log_filter() -> Result<tracing_subscriber::EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => tracing_subscriber::EnvFilter::builder()
            .parse(&spec)
            .map_err(|e| format!("RUST_LOG={spec:?} does not parse: {e}")),
        _ => Ok(tracing_subscriber::EnvFilter::new("info")),
    }
}

/// Installs the global tracing subscriber: `RUST_LOG` (default `info`), to stderr in
/// `format`, through a lossy non-blocking queue that can never fail, block or panic a
/// caller. Fails only on a `RUST_LOG` that does not parse.
pub fn init_logging(format: LogFormat) -> Result<LogGuard, String> {
    let filter = log_filter()?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("log-writer")
        .finish(SafeStderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
    Ok(LogGuard(guard))
}

/// Makes any panic, in any thread, abort the process after a best-effort message.
pub fn abort_on_panic(binary: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current()
            .name()
            .unwrap_or("<unnamed>")
            .to_string();
        let backtrace = std::backtrace::Backtrace::capture();
        let message = format!(
            "{binary}: panic in thread '{thread}': {info}\n{backtrace}\n{binary}: aborting so \
             that a supervisor restarts the process\n"
        );
        // Write from another thread and wait a bounded time: stderr may be a pipe that
        // nobody reads.
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new().spawn(move || {
            let _ = std::io::stderr().write_all(message.as_bytes());
            let _ = tx.send(());
        });
        if writer.is_ok() {
            let _ = rx.recv_timeout(Duration::from_millis(500));
        }
        std::process::abort();
    }));
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// **called**, not when the future is first polled: call it before announcing readiness,
/// so a signal that arrives right after the ready line is never the default (fatal) one.
/// Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            (term, int) => {
                let err = term.err().or(int.err()).map(|e| e.to_string());
                error!(error = ?err, "cannot listen for SIGTERM/SIGINT; only ctrl-c stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Prints one line on stdout (the ready line harnesses wait for), ignoring errors: a
/// closed stdout must not panic the process.
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The body of a binary's `main`: installs the panic policy and logging (in `format`),
/// runs `main` on a multi-threaded runtime, and turns its error into a logged message and
/// exit code 1 (2 for a `RUST_LOG` that does not parse).
pub fn run<E, F>(binary: &'static str, format: LogFormat, main: F) -> ExitCode
where
    E: std::fmt::Display,
    F: Future<Output = Result<(), E>>,
{
    abort_on_panic(binary);
    let _log = match init_logging(format) {
        Ok(guard) => guard,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{binary}: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(main);
    // Stop the runtime's tasks before the log guard flushes.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = %err, "{binary} failed");
            let _ = writeln!(std::io::stderr(), "{binary}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Appends each setting's default to its flag's help in `subcommand` (`--help` shows
/// them), reading the defaults from `defaults` serialized as TOML: a flag named like a
/// config key (`--meta-lease` / `meta_lease`) gets that key's default. Flags stay
/// optional, so a config file's value is not overridden by a default.
pub fn help_with_defaults<T: serde::Serialize>(
    cmd: clap::Command,
    subcommand: &str,
    defaults: &T,
) -> clap::Command {
    let table = toml::Table::try_from(defaults).unwrap_or_default();
    cmd.mut_subcommand(subcommand, |sc| {
        sc.mut_args(|arg| {
            let Some(value) = table.get(arg.get_id().as_str()) else {
                return arg;
            };
            let shown = match value {
                toml::Value::String(s) if s.is_empty() => "\"\"".to_string(),
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

/// Prints the effective config as TOML on stdout (`--print-config`).
pub fn print_config<T: serde::Serialize>(options: &T) -> Result<(), String> {
    let text = toml::to_string(options).map_err(|e| format!("cannot render the config: {e}"))?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}
