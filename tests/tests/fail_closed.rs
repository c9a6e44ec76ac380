//! Fail closed, tried as an operator would: real `metasrv` and `datanode` processes,
//! broken log pipes, SIGSTOP and SIGCONT.
//!
//! The promise under test: a region accepts a write only while its lease deadline has not
//! passed, decided at the write itself. Nothing that stalls, kills or breaks a background
//! task (a dead logger, a frozen process, frozen metasrvs) may leave a region writable
//! past that deadline. The checks use evidence from outside: the HTTP answers the data API
//! gives, timed by the test.
//!
//! Timings: 500 ms heartbeats, 2 s region lease (`FAST`); the datanode takes its default
//! 500 ms drift margin off every lease.

use std::time::Duration;

use serde_json::json;
use tests::{eventually, DatanodeProc, Http, MetasrvProc, Stderr, FAST};
use tokio::time::Instant;

/// The region lease the metasrvs here grant (`FAST`).
const REGION_LEASE: Duration = Duration::from_secs(2);
const REGIONS: [u64; 3] = [1, 2, 3];

// Field order: processes stop (printing logs on a panic) before the directory goes.
struct Standalone {
    metasrv: MetasrvProc,
    datanode: DatanodeProc,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Standalone {
    /// One metasrv, one datanode hosting `REGIONS` as leader, every region writable.
    async fn start(stderr: Stderr) -> Standalone {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--data-dir".into(),
            dir.path().join("ms").display().to_string(),
        ]);
        let metasrv = MetasrvProc::start_with(
            "metasrv",
            "127.0.0.1:0",
            &args,
            &dir.path().join("metasrv.log"),
            stderr,
        );
        let datanode = DatanodeProc::start_with(
            1,
            std::slice::from_ref(&metasrv.grpc),
            &dir.path().join("dn1"),
            &dir.path().join("dn1.log"),
            stderr,
            &[],
        );
        let c = Standalone {
            metasrv,
            datanode,
            http: Http::new(),
            _dir: dir,
        };
        let nodes = format!("{}/nodes", c.metasrv.http);
        let http = c.http.clone();
        eventually("the datanode connected", Duration::from_secs(15), || {
            let (http, nodes) = (http.clone(), nodes.clone());
            async move {
                let (_, listed) = http.get(&nodes).await;
                listed
                    .as_array()?
                    .iter()
                    .any(|n| n["alive"] == true && n["connected"] == true)
                    .then_some(())
            }
        })
        .await;
        for region in REGIONS {
            let (code, body) = c
                .http
                .post(
                    &format!("{}/regions", c.metasrv.http),
                    &json!({"region_id": region, "node_id": 1}),
                )
                .await;
            assert_eq!(code, 201, "create region {region}: {body}");
        }
        c.until_all_writable().await;
        c
    }

    async fn until_all_writable(&self) {
        for region in REGIONS {
            let (http, url) = (self.http.clone(), self.datanode.http.clone());
            eventually(
                &format!("region {region} writable"),
                Duration::from_secs(15),
                || {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        (http.write_row(&url, region, "probe", "x").await.0 == 200).then_some(())
                    }
                },
            )
            .await;
        }
    }
}

/// Writes counted against a lapsed deadline.
#[derive(Debug, Default)]
struct Tally {
    attempted: u64,
    accepted: Vec<String>,
    refused_lease_expired: u64,
}

impl Tally {
    fn record(&mut self, what: &str, code: u16, body: &serde_json::Value) {
        self.attempted += 1;
        if code == 200 {
            self.accepted.push(format!("{what}: accepted"));
        } else if body["code"] == "lease_expired" {
            self.refused_lease_expired += 1;
        }
    }

    fn assert_none_accepted(&self, scenario: &str) {
        assert!(self.attempted > 0, "{scenario}: no write was attempted");
        assert!(
            self.accepted.is_empty(),
            "{scenario}: {} of {} writes past the deadline were accepted:\n{}",
            self.accepted.len(),
            self.attempted,
            self.accepted.join("\n")
        );
    }
}

/// Before the fix: a datanode whose stderr pipe lost its reader panicked on its next log
/// line (tracing-subscriber's `eprintln!`), the heartbeat thread died with the lease
/// timer, and the regions stayed writable forever after the metasrv went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_broken_stderr_regions_still_turn_readonly_at_the_deadline_and_sigterm_works() {
    let mut c = Standalone::start(Stderr::BrokenPipe).await;
    // The metasrv, logging into the same broken pipe, still stops on SIGTERM. Its last
    // grant was before the signal, so every deadline is before `stopped + lease`.
    let signalled = Instant::now();
    assert!(
        c.metasrv.proc.terminate(Duration::from_secs(10)),
        "a metasrv with a broken stderr exits on SIGTERM"
    );
    let lapsed_by = signalled + REGION_LEASE;
    let mut tally = Tally::default();
    let mut accepted_before = 0;
    // Write on every region until well past the lease; the node logs its lost stream
    // (into the broken pipe) all along.
    while Instant::now() < lapsed_by + Duration::from_secs(3) {
        for region in REGIONS {
            let sent = Instant::now();
            let (code, body) = c.http.write_row(&c.datanode.http, region, "k", "v").await;
            if sent >= lapsed_by {
                tally.record(&format!("region {region}"), code, &body);
            } else if code == 200 {
                accepted_before += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally.assert_none_accepted("broken stderr");
    let (code, body) = c.http.get(&format!("{}/ready", c.datanode.http)).await;
    assert_eq!(
        code, 503,
        "cut off, with lapsed leases, it is not ready: {body}"
    );
    assert_eq!(
        tally.refused_lease_expired, tally.attempted,
        "every write past the deadline was refused as lease_expired: {tally:?}"
    );
    assert!(
        !c.datanode.proc.has_exited(),
        "the datanode kept serving reads and refusals"
    );
    eprintln!(
        "MEASURE broken stderr: {} writes attempted after the deadline, {} accepted ({accepted_before} accepted before it)",
        tally.attempted,
        tally.accepted.len()
    );
    assert!(
        c.datanode.proc.terminate(Duration::from_secs(10)),
        "a datanode with a broken stderr exits on SIGTERM"
    );
}

/// Before the fix: PUTs queued on open connections while a datanode was SIGSTOPped were
/// answered 200 a few ms after SIGCONT, before its lease timer ran, seconds past the
/// deadline. Here the metasrv is frozen too before the SIGCONT, so no re-grant can arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_datanode_accepts_no_write_after_its_deadline_with_the_metasrv_frozen() {
    let c = Standalone::start(Stderr::Log).await;
    let mut tally = Tally::default();
    const TRIALS: usize = 5;
    for trial in 0..TRIALS {
        c.until_all_writable().await;
        // Every grant so far was anchored before this instant.
        let stopped = Instant::now();
        c.datanode.proc.freeze();
        // Writes queued while it is stopped: the kernel accepts them; the process will
        // handle them after SIGCONT, past the deadline.
        let queued: Vec<_> = (0..12u64)
            .map(|i| {
                let (http, url) = (c.http.clone(), c.datanode.http.clone());
                let region = REGIONS[(i % 3) as usize];
                tokio::spawn(async move {
                    let (code, body) = http.write_row(&url, region, &format!("q{i}"), "v").await;
                    (region, code, body)
                })
            })
            .collect();
        // Past the lease, then freeze the metasrv too, then resume the datanode.
        let pause = REGION_LEASE + Duration::from_millis(500 + 300 * trial as u64);
        tokio::time::sleep_until(stopped + pause).await;
        c.metasrv.proc.freeze();
        c.datanode.proc.signal("CONT");
        // Write at once, in a tight loop.
        let until = Instant::now() + Duration::from_secs(1);
        let mut i = 0u64;
        while Instant::now() < until {
            let region = REGIONS[(i % 3) as usize];
            let (code, body) = c
                .http
                .write_row(&c.datanode.http, region, &format!("t{trial}-{i}"), "v")
                .await;
            tally.record(
                &format!("trial {trial}: tight-loop write to region {region}"),
                code,
                &body,
            );
            i += 1;
        }
        for q in queued {
            let (region, code, body) = q.await.expect("queued write task");
            tally.record(
                &format!("trial {trial}: queued write to region {region}"),
                code,
                &body,
            );
        }
        c.metasrv.proc.thaw();
    }
    tally.assert_none_accepted("SIGSTOP");
    eprintln!(
        "MEASURE SIGSTOP ({TRIALS} trials): {} writes attempted after a lapsed deadline, {} accepted, {} refused as lease_expired",
        tally.attempted,
        tally.accepted.len(),
        tally.refused_lease_expired
    );
    // And the node recovers: the metasrv grants again once it runs.
    c.until_all_writable().await;
}
