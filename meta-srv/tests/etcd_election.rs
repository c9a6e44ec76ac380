#![cfg(feature = "etcd")]
//! [`EtcdElection`] against a real etcd process (started here on a free port with its own
//! data directory), in-process, so the election's own code is tested in seconds: who
//! leads and who follows, terms every member agrees on, keep-alives that hold the lease
//! for many TTLs, resign and shutdown handing over with the lease revoked, and leadership
//! that ends at its deadline when etcd stops answering (fail closed).
//!
//! Fails (never skips) without `etcd` on the PATH: `scripts/test` installs Debian's
//! `etcd-server`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use meta_srv::election::EtcdElection;
use meta_srv::etcd_pool::{EtcdPool, PoolOptions};
use meta_srv::{CancellationToken, Election};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(200);
const WITHIN: Duration = Duration::from_secs(15);

/// One etcd process on loopback ports; killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd, retrying on new ports if one was taken in between.
    async fn start() -> Etcd {
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = |_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("port")
            };
            let (client, peer) = (port(0), port(1));
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
            let mut child = Command::new("etcd")
                .args(["--name", "e", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("e={peer_url}")])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("etcd is not installed: run scripts/test, which installs etcd-server");
            let endpoint = format!("127.0.0.1:{client}");
            let deadline = Instant::now() + WITHIN;
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // the port was taken: start over
                }
                let probe = async {
                    let mut c = etcd_client::Client::connect([endpoint.as_str()], None).await?;
                    c.get("probe", None).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                    break true;
                }
                assert!(Instant::now() < deadline, "etcd did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if ready {
                return Etcd {
                    child,
                    endpoint,
                    _dir: dir,
                };
            }
        }
        panic!("etcd did not start on fresh ports three times")
    }

    /// Sends `signo` (through libc: a fresh machine may have no `kill` binary).
    fn signal(&self, signo: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(pid, signo) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signo}): {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SAFETY: as in `signal`; errors (a reaped child) are of no interest here.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running candidate.
struct Candidate {
    election: Arc<EtcdElection>,
    stop: CancellationToken,
    task: JoinHandle<meta_srv::Result<()>>,
}

impl Candidate {
    async fn start(etcd: &Etcd, addr: &str) -> Candidate {
        Self::start_with(etcd, addr, TTL).await
    }

    /// A candidate on a meta lease of `ttl`.
    async fn start_with(etcd: &Etcd, addr: &str, ttl: Duration) -> Candidate {
        Self::start_at(&etcd.endpoint, addr, ttl).await
    }

    /// A candidate reaching etcd at `endpoint` (a proxy, say), on a meta lease of `ttl`.
    async fn start_at(endpoint: &str, addr: &str, ttl: Duration) -> Candidate {
        let pool = EtcdPool::connect(&[endpoint.to_string()], &PoolOptions::for_meta_lease(ttl))
            .await
            .expect("pool");
        let election = Arc::new(
            EtcdElection::new(Arc::new(pool), "/test", addr, ttl, MARGIN)
                .with_http_addr(Some(format!("{addr}-http"))),
        );
        let stop = CancellationToken::new();
        let task = {
            let (e, s) = (election.clone(), stop.clone());
            tokio::spawn(async move { e.run(s).await })
        };
        Candidate {
            election,
            stop,
            task,
        }
    }

    fn leads(&self) -> bool {
        self.election.leadership().is_leader()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("run returns on shutdown")
            .expect("join")
            .expect("run ends without error");
    }
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Which of `cs` leads, once exactly one does.
async fn the_leader(cs: &[&Candidate]) -> usize {
    eventually("exactly one leader", || async {
        let leading: Vec<usize> = (0..cs.len()).filter(|i| cs[*i].leads()).collect();
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_other_follows_and_both_name_the_same_leader_and_term() {
    let etcd = Etcd::start().await;
    let a = Candidate::start(&etcd, "a:1").await;
    let b = Candidate::start(&etcd, "b:1").await;
    let cs = [&a, &b];
    let l = the_leader(&cs).await;
    let (leader, follower) = (cs[l], cs[1 - l]);
    let addr = if l == 0 { "a:1" } else { "b:1" };
    let info = eventually("the follower names the leader", || async {
        let seen = follower.election.leader().await.ok()??;
        let state = follower.election.subscribe().borrow().clone();
        (state.leader_addr.as_deref() == Some(addr) && !state.is_leader).then_some(seen)
    })
    .await;
    assert_eq!(info.addr, addr);
    assert!(info.term > 0, "the term is the key's creation revision");
    let own = leader
        .election
        .leader()
        .await
        .expect("leader")
        .expect("some");
    assert_eq!(own, info, "both members agree on leader and term");
    assert_eq!(leader.election.subscribe().borrow().term, info.term);
    assert_eq!(
        follower.election.leadership().leader_addr().as_deref(),
        Some(addr)
    );

    let mut members = follower.election.members().await.expect("members");
    members.sort_by(|x, y| x.addr.cmp(&y.addr));
    let listed: Vec<(String, Option<String>)> =
        members.into_iter().map(|m| (m.addr, m.http_addr)).collect();
    assert_eq!(
        listed,
        vec![
            ("a:1".to_string(), Some("a:1-http".to_string())),
            ("b:1".to_string(), Some("b:1-http".to_string()))
        ]
    );
    let view = leader.election.store_view().expect("a store view");
    assert_eq!(view["etcd_endpoints"][0], etcd.endpoint.as_str());
    assert_eq!(view["keep_alive_endpoint"], etcd.endpoint.as_str());
    assert!(leader.election.can_hand_over());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_leadership_for_many_ttls_moving_the_deadline_ahead() {
    let etcd = Etcd::start().await;
    let a = Candidate::start(&etcd, "a:1").await;
    let b = Candidate::start(&etcd, "b:1").await;
    let cs = [&a, &b];
    let l = the_leader(&cs).await;
    let term = cs[l].election.subscribe().borrow().term;
    let first = cs[l].election.leadership().deadline().expect("a deadline");
    let keep_alives = || {
        meta_srv::metrics::METRICS
            .etcd_duration
            .with_label_values(&["keep_alive"])
            .get_sample_count()
    };
    let sent_before = keep_alives();
    // Three TTLs, checked on every poll: the same member leads, in the same term, and its
    // deadline stays ahead of now but never beyond now + TTL − margin.
    let until = Instant::now() + TTL * 3;
    let mut last = first;
    while Instant::now() < until {
        assert!(cs[l].leads(), "leadership lapsed");
        assert!(!cs[1 - l].leads(), "two leaders");
        let d = cs[l].election.leadership().deadline().expect("a deadline");
        let now = Instant::now();
        assert!(d > now, "the deadline passed while leading");
        assert!(d <= now + TTL - MARGIN, "a deadline beyond TTL − margin");
        assert!(d >= last, "the deadline moved back");
        last = d;
        assert_eq!(cs[l].election.subscribe().borrow().term, term);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last > first + TTL, "keep-alives moved the deadline on");
    // Every TTL/5 = 400 ms: about 15 in 3 TTLs, plus the other tests' in this binary;
    // keep-alives without a pause would be thousands.
    let sent = keep_alives() - sent_before;
    assert!(sent <= 500, "{sent} keep-alives in 3 TTLs: a storm");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_hands_over_to_a_new_term_and_the_resigned_member_follows() {
    let etcd = Etcd::start().await;
    let a = Candidate::start(&etcd, "a:1").await;
    let b = Candidate::start(&etcd, "b:1").await;
    let cs = [&a, &b];
    let l = the_leader(&cs).await;
    let old_term = cs[l].election.subscribe().borrow().term;
    cs[l].election.resign().await.expect("resign");
    assert!(!cs[l].leads(), "authority ends with the resign call");
    let new_addr = if l == 0 { "b:1" } else { "a:1" };
    eventually("the other member leads", || async {
        cs[1 - l].leads().then_some(())
    })
    .await;
    let new_term = cs[1 - l].election.subscribe().borrow().term;
    assert!(
        new_term > old_term,
        "a new term: {new_term} after {old_term}"
    );
    eventually("the resigned member names its successor", || async {
        let s = cs[l].election.subscribe().borrow().clone();
        (s.leader_addr.as_deref() == Some(new_addr) && s.term == new_term).then_some(())
    })
    .await;
    // The resigned member campaigns again after a pause, and waits behind the leader.
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        assert!(
            cs[1 - l].leads() && !cs[l].leads(),
            "leadership moved again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A resign on a follower changes nothing.
    cs[l].election.resign().await.expect("follower resign");
    assert!(cs[1 - l].leads());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_revokes_the_lease_so_a_successor_need_not_wait_for_it() {
    let etcd = Etcd::start().await;
    // 3 s, not 2: etcd rounds a shorter lease up to its minimum (about 2 s here), so a
    // lease granted for 2 s could not tell the meta lease from a wrong TTL.
    let a = Candidate::start_with(&etcd, "a:1", Duration::from_secs(3)).await;
    the_leader(&[&a]).await;
    let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("client");
    let key = client
        .leader("/test/__election")
        .await
        .expect("leader")
        .kv()
        .map(|kv| kv.lease())
        .expect("a leader key on a lease");
    let granted = client
        .lease_time_to_live(key, None)
        .await
        .expect("time to live")
        .granted_ttl();
    assert_eq!(granted, 3, "the term's lease is granted for the meta lease");
    a.stop().await;
    let ttl = client
        .lease_time_to_live(key, None)
        .await
        .expect("time to live")
        .ttl();
    assert_eq!(ttl, -1, "the term's lease was revoked, not left to expire");
    // So a newcomer wins at once, in a later term.
    let b = Candidate::start(&etcd, "b:1").await;
    the_leader(&[&b]).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_ends_at_its_deadline_when_etcd_stops_answering_and_returns_after() {
    let etcd = Etcd::start().await;
    let a = Candidate::start(&etcd, "a:1").await;
    the_leader(&[&a]).await;
    // Let a keep-alive or two pass, then freeze etcd: no acknowledgement comes again.
    tokio::time::sleep(TTL / 2).await;
    etcd.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    let deadline = a.election.leadership().deadline().expect("a deadline");
    assert!(deadline <= frozen_at + TTL - MARGIN);
    // Leading right up to the deadline (retrying), and not a moment after it.
    while Instant::now() + Duration::from_millis(100) < deadline {
        assert!(a.leads(), "stepped down before the deadline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep_until(deadline).await;
    assert!(!a.leads(), "still leading past the deadline");
    // Its term over (etcd still frozen, so nothing else can have been observed), it
    // names no leader rather than itself: NOT_LEADER answers must not point back here.
    let state = eventually("the term's end recorded", || async {
        let state = a.election.subscribe().borrow().clone();
        (!state.is_leader).then_some(state)
    })
    .await;
    assert_eq!(
        state.leader_addr, None,
        "a member that stepped down names itself"
    );
    etcd.signal(libc::SIGCONT);
    eventually("leading again once etcd answers", || async {
        a.leads().then_some(())
    })
    .await;
    a.stop().await;
}

/// Waits until `c`'s deadline moves (a keep-alive was just acknowledged), and returns it.
async fn next_ack(c: &Candidate) -> Instant {
    let before = c.election.leadership().deadline().expect("a deadline");
    eventually("a keep-alive acknowledged", || async {
        let d = c.election.leadership().deadline()?;
        (d > before).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_stall_shorter_than_the_deadline_costs_nothing_as_keep_alives_are_retried() {
    // With a 4 s lease: keep-alives every 800 ms, each given 1.33 s, retried every 200 ms
    // once one failed; the deadline is 3.8 s after the last acknowledged one.
    let ttl = Duration::from_secs(4);
    let etcd = Etcd::start().await;
    let a = Candidate::start_with(&etcd, "a:1", ttl).await;
    the_leader(&[&a]).await;
    let term = a.election.subscribe().borrow().term;
    let deadline = next_ack(&a).await;
    etcd.signal(libc::SIGSTOP);
    // The next keep-alive times out (about 2.1 s after the last acknowledgement); etcd
    // comes back at 2.7 s, before the 3.8 s deadline: only a retry can hold the term.
    let acked = deadline - (ttl - MARGIN);
    tokio::time::sleep_until(acked + Duration::from_millis(2700)).await;
    assert!(a.leads(), "stepped down before the deadline");
    etcd.signal(libc::SIGCONT);
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        assert!(
            a.leads(),
            "the term ended over a stall shorter than the deadline"
        );
        assert_eq!(a.election.subscribe().borrow().term, term, "a new term");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.election.leadership().deadline().expect("a deadline") > deadline,
        "a retried keep-alive moved the deadline on"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_gone_keep_alives_are_retried_at_a_pace_not_in_a_storm() {
    let etcd = Etcd::start().await;
    let a = Candidate::start(&etcd, "a:1").await;
    the_leader(&[&a]).await;
    let failures = || {
        meta_srv::metrics::METRICS
            .etcd_errors
            .with_label_values(&["keep_alive"])
            .get()
    };
    next_ack(&a).await;
    let before = failures();
    drop(etcd); // SIGKILL: every call now fails at once (connection refused)
    eventually("the term ends at its deadline", || async {
        (!a.leads()).then_some(())
    })
    .await;
    // TTL − margin = 1.8 s of retries every TTL/20 = 100 ms: about 18 (other tests in
    // this binary add a few). A retry without a pause would fail thousands of times.
    let failed = failures() - before;
    assert!(failed >= 1, "no keep-alive failed while etcd was gone");
    assert!(failed <= 200, "{failed} keep-alive failures: a retry storm");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_leader_tells_no_leader_from_an_etcd_that_cannot_answer() {
    let etcd = Etcd::start().await;
    // A member that does not campaign: it only asks.
    let pool = EtcdPool::connect(
        std::slice::from_ref(&etcd.endpoint),
        &PoolOptions::for_meta_lease(TTL),
    )
    .await
    .expect("pool");
    let asker = EtcdElection::new(Arc::new(pool), "/test", "x:1", TTL, MARGIN);
    let none = tokio::time::timeout(WITHIN, asker.leader()).await;
    assert_eq!(
        none.expect("in time").expect("an answer"),
        None,
        "nobody leads"
    );
    drop(etcd);
    let unreachable = tokio::time::timeout(WITHIN, asker.leader()).await;
    let err = unreachable.expect("in time").expect_err("etcd is gone");
    assert!(
        err.to_string().contains("reading the leader"),
        "the error names the call: {err}"
    );
}

/// A TCP proxy in front of etcd whose answers (etcd to client) can be delayed or held
/// back, while requests still go through: an answer that is late, or lost after its
/// request was applied.
struct SlowAnswers {
    endpoint: String,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl SlowAnswers {
    async fn start(target: &str) -> SlowAnswers {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = listener.local_addr().expect("addr").to_string();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, h, target) = (delay_ms.clone(), hold.clone(), target.to_string());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_r, mut client_w) = inbound.into_split();
                let (mut etcd_r, mut etcd_w) = outbound.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_r, &mut etcd_w).await;
                });
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                let delay = d.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = etcd_r.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let at = Instant::now() + Duration::from_millis(delay.load(SeqCst));
                        if tx.send((at, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                let hold = h.clone();
                tokio::spawn(async move {
                    while let Some((at, bytes)) = rx.recv().await {
                        while hold.load(SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        tokio::time::sleep_until(at).await;
                        if client_w.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowAnswers {
            endpoint,
            delay_ms,
            hold,
            task,
        }
    }
}

impl Drop for SlowAnswers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// etcd starts a lease's TTL when it receives the keep-alive, so the leadership deadline
/// counts from the keep-alive's send time: an acknowledgement that comes late must not
/// move the deadline further than the send time allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_counts_from_the_keep_alives_send_time_not_its_late_acknowledgement() {
    const LATE: Duration = Duration::from_millis(300);
    let etcd = Etcd::start().await;
    let proxy = SlowAnswers::start(&etcd.endpoint).await;
    let c = Candidate::start_at(&proxy.endpoint, "m1:1", TTL).await;
    eventually("m1 leads", || async {
        c.election.leadership().is_leader().then_some(())
    })
    .await;
    proxy
        .delay_ms
        .store(LATE.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    // Past the answers already in flight, every acknowledgement is LATE after its send.
    tokio::time::sleep(TTL / 2).await;
    let mut most = Duration::ZERO;
    let until = Instant::now() + 2 * TTL;
    while Instant::now() < until {
        let left = c
            .election
            .leadership()
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        most = most.max(left);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        c.election.leadership().is_leader(),
        "still leading through late answers"
    );
    let allowed = TTL - MARGIN - LATE + Duration::from_millis(60);
    assert!(
        most <= allowed,
        "leadership reached {most:?} ahead, more than TTL - margin - the answer's delay ({allowed:?}): the deadline counted from the acknowledgement"
    );
    c.stop().await;
}

/// A compare-and-put whose answer was lost may have been applied: it is not sent again
/// to another member (where it would find its own write and report "not written").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_put_whose_answer_was_lost_is_not_sent_to_another_member() {
    use handlers::KvBackend as _;
    let etcd = Etcd::start().await;
    let proxy = SlowAnswers::start(&etcd.endpoint).await;
    let pool = EtcdPool::connect(
        &[proxy.endpoint.clone(), etcd.endpoint.clone()],
        &PoolOptions::for_meta_lease(TTL),
    )
    .await
    .expect("pool");
    let kv = meta_srv::kv_etcd::EtcdKvBackend::new(Arc::new(pool), "/cas", Duration::from_secs(2));
    // The connection through the proxy is up (the first member is preferred).
    kv.get(b"warm").await.expect("get through the proxy");
    proxy.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = kv.compare_and_put(b"k", None, b"v").await;
    proxy.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        outcome.is_err(),
        "an unanswered compare-and-put is reported as unknown, not retried: {outcome:?}"
    );
    let mut direct = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("client");
    let held = direct.get("/cas/k", None).await.expect("get");
    assert_eq!(
        held.kvs().first().map(|kv| kv.value().to_vec()),
        Some(b"v".to_vec()),
        "it was applied: the failure really was ambiguous"
    );
}
