//! Real `etcd` processes for tests: free loopback ports, their own temporary data
//! directories, stopped when dropped.
//!
//! - [`EtcdProc`]: one single-member etcd. It can be killed and restarted on the same
//!   ports and data, to test a metasrv cluster through an etcd restart.
//! - [`EtcdMembers`]: a 3-member etcd cluster, as production runs it, whose members can
//!   be killed and restarted one by one; it names the raft leader and can move it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released: another process may take it before it
/// is used, so whoever binds it must be ready to retry on a new one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One etcd member process: its ports, data and log, and how it joins its cluster.
#[derive(Debug)]
struct Member {
    name: String,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// `--initial-cluster`.
    cluster: String,
    /// Client TLS: (certificate, key, CA of client certificates); `None`: plaintext.
    tls: Option<(String, String, String)>,
}

impl Member {
    fn new(dir: &Path, name: &str) -> Member {
        Member {
            name: name.to_string(),
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(format!("{name}-data")),
            log: dir.join(format!("{name}.log")),
            cluster: String::new(),
            tls: None,
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts the process; does not wait (a cluster member is ready only with quorum).
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = self.peer_url();
        let mut cmd = Command::new("etcd");
        if let Some((cert, key, ca)) = &self.tls {
            cmd.args(["--cert-file", cert, "--key-file", key]).args([
                "--trusted-ca-file",
                ca,
                "--client-cert-auth",
            ]);
        }
        let child = cmd
            .args(["--name", &self.name, "--data-dir"])
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
            .args(["--initial-cluster", &self.cluster])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd is not installed: run scripts/test, which installs Debian's etcd-server");
        self.child = Some(child);
    }

    /// Waits until this member serves clients after its last start. `Err` if the process
    /// exited instead (its port was taken between [`free_port`] and its bind: the caller
    /// starts over on new ports).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "etcd {} exited with {status}:\n{}",
                    self.name,
                    crate::tail(&self.log)
                ));
            }
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            // Each (re)start appends; look for a ready line after the last start.
            let last_start = text
                .rfind("starting an etcd server")
                .or_else(|| text.rfind("etcd Version"))
                .unwrap_or(0);
            if text[last_start..].contains("ready to serve client requests")
                && std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} did not become ready:\n{}",
                self.name,
                crate::tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- etcd {} log tail ----\n{}",
                self.name,
                crate::tail(&self.log)
            );
        }
        self.kill();
    }
}

/// A single-member etcd server.
#[derive(Debug)]
pub struct EtcdProc {
    member: Member,
}

impl EtcdProc {
    /// Starts etcd with its data under `dir`; fails the test if `etcd` is missing
    /// (`scripts/test` installs it), never skips.
    pub fn start(dir: &Path) -> EtcdProc {
        Self::start_with(dir, None)
    }

    /// As [`start`](Self::start), serving clients over TLS with `certs` (server
    /// certificate for 127.0.0.1), and requiring client certificates signed by `ca`.
    pub fn start_tls(dir: &Path, certs: &crate::pki::CertFiles, ca: &Path) -> EtcdProc {
        Self::start_with(
            dir,
            Some((certs.cert(), certs.key(), ca.display().to_string())),
        )
    }

    fn start_with(dir: &Path, tls: Option<(String, String, String)>) -> EtcdProc {
        let mut last = String::new();
        for attempt in 0..3 {
            let mut member = Member::new(dir, &format!("etcd{attempt}"));
            member.tls = tls.clone();
            member.cluster = format!("{}={}", member.name, member.peer_url());
            member.spawn();
            match member.wait_ready() {
                Ok(()) => return EtcdProc { member },
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start on fresh ports three times; last: {last}")
    }

    /// The client endpoint, `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts again on the same ports and data.
    pub fn restart(&mut self) {
        self.member.kill();
        // The same ports (clients know them): retried while the old socket lingers.
        for _ in 0..3 {
            self.member.spawn();
            if self.member.wait_ready().is_ok() {
                return;
            }
        }
        panic!(
            "etcd did not restart on its ports:\n{}",
            crate::tail(&self.member.log)
        );
    }
}

/// A 3-member etcd cluster.
#[derive(Debug)]
pub struct EtcdMembers {
    members: Vec<Member>,
}

impl EtcdMembers {
    /// Starts three members under `dir` and waits until each serves.
    pub fn start(dir: &Path) -> EtcdMembers {
        let mut last = String::new();
        for attempt in 0..3 {
            let mut members: Vec<Member> = (0..3)
                .map(|i| Member::new(dir, &format!("etcd{attempt}-{i}")))
                .collect();
            let cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            for m in &mut members {
                m.cluster = cluster.clone();
                m.spawn();
            }
            match members.iter_mut().try_for_each(Member::wait_ready) {
                Ok(()) => return EtcdMembers { members },
                Err(e) => last = e,
            }
        }
        panic!("the etcd cluster did not start on fresh ports three times; last: {last}")
    }

    /// Every member's client endpoint, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Which member has `endpoint`.
    pub fn index_of(&self, endpoint: &str) -> Option<usize> {
        self.members.iter().position(|m| m.endpoint() == endpoint)
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again on its ports and data (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill();
        self.members[i].spawn();
    }

    /// Waits until member `i` serves again (it needs a quorum to).
    pub fn wait_ready(&mut self, i: usize) {
        if let Err(e) = self.members[i].wait_ready() {
            panic!("{e}");
        }
    }

    /// Asks each running member for its status: `(index, member id, raft leader id)`.
    async fn statuses(&self) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([m.endpoint()], None),
            )
            .await
            else {
                continue;
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                let id = s.header().map_or(0, |h| h.member_id());
                out.push((i, id, s.leader()));
            }
        }
        out
    }

    /// The member that is raft leader now, if the running members agree on one.
    pub async fn raft_leader(&self) -> Option<usize> {
        let statuses = self.statuses().await;
        let leader_id = statuses.first()?.2;
        if leader_id == 0 || statuses.iter().any(|s| s.2 != leader_id) {
            return None;
        }
        statuses
            .iter()
            .find(|(_, id, _)| *id == leader_id)
            .map(|s| s.0)
    }

    /// Moves raft leadership to member `to` (etcd's move-leader, asked of the current
    /// leader), so a scenario can choose which member leads.
    pub async fn move_leader(&self, to: usize) {
        let statuses = self.statuses().await;
        let target = statuses
            .iter()
            .find(|s| s.0 == to)
            .map(|s| s.1)
            .expect("target member answers");
        let leader = self.raft_leader().await.expect("a raft leader");
        if leader == to {
            return;
        }
        let mut c = etcd_client::Client::connect([self.members[leader].endpoint()], None)
            .await
            .expect("connect to the raft leader");
        c.move_leader(target).await.expect("move leader");
    }
}
