//! Child processes: spawning the workspace binaries, waiting for their `ready` line,
//! signalling them, and reading their logs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
