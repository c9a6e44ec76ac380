//! The storage fence, on real processes: a standalone metasrv and three datanodes on one
//! shared directory.
//!
//! **The zombie replay.** Eight writers hammer four keys of one region; its owner is
//! frozen (SIGSTOP) at a random moment, with a write inside its write path (the hidden
//! `--debug-append-pause` holds each write between its lease check and its append). The
//! region fails over, the new owner writes a newer value to every key, the old owner
//! resumes and its in-flight write reaches the log, then the region is migrated to the
//! third node, which replays the log. Every key must read its last acknowledged value.
//! Without the fence the resumed write lands after the new owner's rows and wins the
//! replay (see BENCHMARKS.md, issue 23).
//!
//! **A torn or unreadable log.** A datanode killed, its region log left ending in half a
//! row (and another region's manifest damaged), starts again: the torn region opens with
//! every acknowledged row, the damaged one is reported unavailable with the reason, and the
//! rest are served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{eventually, standalone_shared_with, DatanodeProc, Http, Stderr};

const KEYS: usize = 4;
const WRITERS: usize = 8;

/// The fast timings without their `--failover-wait` (the default, lease + margin, is
/// shorter), and a data directory.
fn metasrv_args(dir: &std::path::Path) -> Vec<String> {
    let timings = tests::FAST
        .iter()
        .take_while(|a| **a != "--failover-wait")
        .map(|s| s.to_string());
    timings
        .chain([
            "--data-dir".to_string(),
            dir.join("ms").display().to_string(),
        ])
        .collect()
}

/// The region's route as `/regions` shows it.
async fn route(http: &Http, ms: &str, region: u64) -> Option<Value> {
    let (_, regions) = http.get(&format!("{ms}/regions")).await;
    regions
        .as_array()?
        .iter()
        .find(|r| r["region_id"] == region)
        .cloned()
}

/// The region's entry in a datanode's `/status`, if it has the region open.
async fn status_of(http: &Http, node: &str, region: u64) -> Option<Value> {
    let (code, status) = http.get(&format!("{node}/status")).await;
    if code != 200 {
        return None;
    }
    status["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region_id"] == region)
        .cloned()
}

/// What one trial saw.
#[derive(Debug, Default)]
struct Trial {
    acked_before_freeze: usize,
    stale_rows_ignored: u64,
    regressed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owners_in_flight_write_never_replaces_a_newer_acknowledged_value() {
    let trials: usize = std::env::var("FENCING_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("FENCING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fencing: {trials} trials, seed {seed} (FENCING_SEED replays the freeze moments)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let pause = ["--debug-append-pause".to_string(), "20ms".to_string()];
    let (ms, mut nodes, http) =
        standalone_shared_with(dir.path(), &metasrv_args(dir.path()), 3, &pause).await;
    let mut seen = Vec::new();
    for trial in 0..trials {
        let victim = (trial % 3) as u64 + 1;
        let freeze_after = Duration::from_millis(rng.random_range(100..400));
        let t = zombie_trial(&ms.http, &mut nodes, &http, trial, victim, freeze_after).await;
        eprintln!("fencing trial {trial}: {t:?}");
        seen.push(t);
    }
    let stale: u64 = seen.iter().map(|t| t.stale_rows_ignored).sum();
    let with_stale = seen.iter().filter(|t| t.stale_rows_ignored > 0).count();
    let regressed: Vec<&String> = seen.iter().flat_map(|t| &t.regressed).collect();
    let acked: usize = seen.iter().map(|t| t.acked_before_freeze).sum();
    eprintln!(
        "MEASURE fencing: {trials} trials, {acked} writes acknowledged before the freezes, \
         {with_stale} trials with a zombie append after the seal ({stale} rows, never \
         replayed), values regressed: {}",
        regressed.len()
    );
    assert!(
        regressed.is_empty(),
        "acknowledged values lost: {regressed:?}"
    );
    assert!(
        with_stale > 0,
        "no trial froze a write inside the write path: the test checked nothing"
    );
}

async fn zombie_trial(
    ms: &str,
    nodes: &mut [DatanodeProc],
    http: &Http,
    trial: usize,
    victim: u64,
    freeze_after: Duration,
) -> Trial {
    let url = |id: u64| nodes[(id - 1) as usize].http.clone();
    eventually(
        "all three datanodes connected",
        Duration::from_secs(20),
        || async {
            let (_, n) = http.get(&format!("{ms}/nodes")).await;
            let connected = n
                .as_array()?
                .iter()
                .filter(|n| n["connected"] == true)
                .count();
            (connected == 3).then_some(())
        },
    )
    .await;
    // A fresh id each trial: a dropped region's log stays, and would be counted again.
    let (code, created) = http
        .post(
            &format!("{ms}/regions"),
            &json!({ "region_id": 100 + trial, "node_id": victim }),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let region = created["region_id"].as_u64().expect("region id");
    let owner_url = url(victim);
    eventually(
        "the region writable on its owner",
        Duration::from_secs(10),
        || async {
            (http.write_row(&owner_url, region, "warm", "up").await.0 == 200).then_some(())
        },
    )
    .await;

    // Writers, each recording what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<usize>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (http, url, stop, acked) =
                (http.clone(), owner_url.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", (w + n) % KEYS);
                    let value = format!("t{trial}-w{w}-{n}");
                    let within = Duration::from_millis(1500);
                    if http
                        .try_write_row_within(&url, region, &key, &value, within)
                        .await
                        == Some(200)
                    {
                        *acked.lock() += 1;
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // The fault: a random moment, not a wait for state.
    tokio::time::sleep(freeze_after).await;
    nodes[(victim - 1) as usize].proc.freeze();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked_before_freeze = *acked.lock();

    // The region fails over; the new owner writes a newer value to every key.
    let new_owner = eventually(
        "the region failed over",
        Duration::from_secs(20),
        || async {
            let r = route(http, ms, region).await?;
            r["leader"].as_u64().filter(|l| *l != victim)
        },
    )
    .await;
    let mut expected = BTreeMap::new();
    for k in 0..KEYS {
        let (key, value) = (format!("k{k}"), format!("t{trial}-new-{k}"));
        let new_url = url(new_owner);
        eventually(
            "the new owner accepts the write",
            Duration::from_secs(10),
            || async {
                (http.write_row(&new_url, region, &key, &value).await.0 == 200).then_some(())
            },
        )
        .await;
        expected.insert(key, value);
    }

    // The old owner resumes: its in-flight write reaches the log, then it learns the
    // region moved and closes it.
    nodes[(victim - 1) as usize].proc.thaw();
    eventually(
        "the old owner closed the region",
        Duration::from_secs(20),
        || async {
            let (code, _) = http.get(&format!("{owner_url}/status")).await;
            (code == 200 && status_of(http, &owner_url, region).await.is_none()).then_some(())
        },
    )
    .await;

    // A third node replays the log.
    let third = (1..=3)
        .find(|n| *n != victim && *n != new_owner)
        .expect("a third node");
    let (code, body) = http
        .post(
            &format!("{ms}/regions/{region}/migrate"),
            &json!({ "to": third }),
        )
        .await;
    assert!(code == 200 || code == 202, "migrate: {code} {body}");
    eventually(
        "the region led by the third node",
        Duration::from_secs(20),
        || async {
            let r = route(http, ms, region).await?;
            (r["leader"] == third && r["availability"] == "available").then_some(())
        },
    )
    .await;
    let third_url = url(third);
    let mut regressed = Vec::new();
    for (key, value) in &expected {
        let (code, body) = http.read_row(&third_url, region, key).await;
        if code != 200 || body["value"] != json!(value) {
            regressed.push(format!(
                "trial {trial}: {key} read {code} {body}, last acknowledged {value:?}"
            ));
        }
    }
    let stale_rows_ignored = status_of(http, &third_url, region)
        .await
        .and_then(|s| s["stale_rows_ignored"].as_u64())
        .unwrap_or(0);
    let (code, body) = http.delete(&format!("{ms}/regions/{region}")).await;
    assert_eq!(code, 200, "drop: {body}");
    Trial {
        acked_before_freeze,
        stale_rows_ignored,
        regressed,
    }
}

/// The newest segment of a region's log (the one its owner appends to).
fn newest_segment(shared: &std::path::Path, region: u64) -> std::path::PathBuf {
    let dir = shared.join(format!("region-{region}"));
    std::fs::read_dir(&dir)
        .expect("region dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n: u64 = name
                .strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, dir.join(name)))
        })
        .max()
        .expect("a segment")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_restarts_over_a_torn_log_and_a_damaged_one_and_serves_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ms, mut nodes, http) =
        standalone_shared_with(dir.path(), &metasrv_args(dir.path()), 1, &[]).await;
    let mut regions = Vec::new();
    for _ in 0..3 {
        let (code, created) = http.post(&format!("{}/regions", ms.http), &json!({})).await;
        assert_eq!(code, 201, "{created}");
        regions.push(created["region_id"].as_u64().expect("id"));
    }
    let node = nodes[0].http.clone();
    for &region in &regions {
        eventually("writable", Duration::from_secs(10), || async {
            (http.write_row(&node, region, "k0", "v0").await.0 == 200).then_some(())
        })
        .await;
        for i in 1..5 {
            let (code, body) = http.write_row(&node, region, &format!("k{i}"), "v").await;
            assert_eq!(code, 200, "{body}");
        }
    }
    let (torn, damaged, healthy) = (regions[0], regions[1], regions[2]);
    nodes[0].proc.kill();
    let shared = dir.path().join("shared");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest_segment(&shared, torn))
        .expect("segment");
    std::io::Write::write_all(&mut f, b"0badc0de [\"k9\",\"half").expect("tear");
    std::fs::write(
        shared.join(format!("region-{damaged}/gen-1.json")),
        b"{oops",
    )
    .expect("damage");

    let restarted = DatanodeProc::start_with(
        1,
        std::slice::from_ref(&ms.grpc),
        &dir.path().join("dn1"),
        &dir.path().join("dn1-again.log"),
        Stderr::Log,
        &["--shared-dir".to_string(), shared.display().to_string()],
    );
    let node = restarted.http.clone();
    for region in [torn, healthy] {
        eventually(
            "writable again after the restart",
            Duration::from_secs(15),
            || async {
                (http.write_row(&node, region, "after", "restart").await.0 == 200).then_some(())
            },
        )
        .await;
        for i in 0..5 {
            let (code, body) = http.read_row(&node, region, &format!("k{i}")).await;
            assert_eq!(code, 200, "region {region} k{i}: {body}");
        }
        let (code, _) = http.read_row(&node, region, "k9").await;
        assert_eq!(code, 404, "the torn half-row is not data");
    }
    let (code, body) = http.write_row(&node, damaged, "k", "v").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let s = status_of(&http, &node, damaged).await.expect("listed");
    assert!(
        s["unavailable"]
            .as_str()
            .is_some_and(|r| r.contains("gen-1.json")),
        "{s}"
    );
    let why = eventually(
        "the metasrv names the reason",
        Duration::from_secs(10),
        || async {
            let r = route(&http, &ms.http, damaged).await?;
            r["reason"]
                .as_str()
                .filter(|w| w.contains("cannot read the region's storage"))
                .map(str::to_string)
        },
    )
    .await;
    assert!(why.contains("gen-1.json"), "{why}");
    nodes[0] = restarted;
}
