//! A real `etcd` process for tests: free loopback ports, its own temporary data
//! directory, stopped when dropped. It can be killed and restarted on the same ports and
//! data, to test a metasrv cluster through an etcd restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An etcd server.
#[derive(Debug)]
pub struct EtcdProc {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

impl EtcdProc {
    /// Starts etcd with its data under `dir`; fails the test if `etcd` is missing
    /// (`scripts/test` installs it), never skips.
    pub fn start(dir: &Path) -> EtcdProc {
        let mut e = EtcdProc {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
        };
        e.spawn();
        e
    }

    /// The client endpoint, `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd is not installed: run scripts/test, which installs Debian's etcd-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let start_len = 0;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            // Each (re)start appends; look for a ready line after the last start.
            let last_start = text
                .rfind("starting an etcd server")
                .or_else(|| text.rfind("etcd Version"))
                .unwrap_or(start_len);
            if text[last_start..].contains("ready to serve client requests")
                && std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready:\n{}",
                crate::tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EtcdProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- etcd log tail ----\n{}", crate::tail(&self.log));
        }
        self.kill();
    }
}
