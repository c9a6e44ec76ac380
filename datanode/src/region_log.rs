//! [`RegionLog`]: the demo engine's region log, fenced by region epoch.
//!
//! **The rule.** Once a new owner has written under epoch `E`, nothing an older owner
//! appends afterwards is ever replayed, by any node, on any later open. A lease stops an
//! old owner from *deciding* to write; only the storage can stop a write that was decided
//! before a pause (the fencing-token problem), so the log enforces it itself.
//!
//! **Design: one segment per writer, sealed by the next.** A region's log is a chain of
//! *generations*, each a small manifest `region-<id>/gen-<n>.json` naming the epoch it
//! was written under, the earlier segments **sealed** at a length, and its own current
//! segment `region-<id>/seg-<n>.log`. A writer opening under epoch `E`:
//! 1. reads the newest generation; if its epoch is above `E`, the writer is stale and is
//!    refused ([`Error::Fenced`](crate::Error::Fenced)); so is a writer under the same
//!    epoch from another node (the store never gives two nodes one epoch; the log does not
//!    rely on it);
//! 2. seals that generation's segment at the length of its complete rows, as read now;
//! 3. publishes generation `n + 1` with `link(2)`, which fails if the name exists: of two
//!    writers racing for the same generation exactly one wins, and the loser starts over
//!    from step 1 (where it may find itself fenced);
//! 4. replays exactly the sealed rows, then appends to its own, new segment.
//!
//! Replay reads each sealed segment only up to its sealed length, then the current
//! segment's complete rows. An old owner's late append lands in its own segment, past the
//! seal, and is never read: it is counted as a stale row, nothing more. Every generation
//! copies the seals of the one it followed, so the chain is a single line however the
//! writers raced: a generation that lost (or was never followed) is simply not part of it.
//!
//! Why not one shared log with an epoch per row: replay would have to ignore an old
//! epoch's rows only *after* the first newer row, and a paused writer's append can land
//! between two rows of the new owner. Segments make "after the seal" a byte offset.
//! (Object storage would publish with a conditional put instead of `link(2)`.)
//!
//! Each takeover adds a generation and a segment; nothing compacts them (a demo). The
//! new segment's name and the generation's are synced into the directory before the
//! first row is written under them.
//!
//! **Rows.** A row is one `write(2)` of `<crc32 hex> <json [key, value]>\n`, synced before
//! it is acknowledged (on shared storage; the one fsync of the write path). A torn tail (a
//! writer killed or paused mid-append) has no newline and is never sealed or read; a line
//! whose checksum does not match (a stale append that landed inside another row) is
//! skipped and counted, never parsed as data and never fatal. A log written before
//! generations existed (`region-<id>.log`, plain JSON lines) is the first sealed segment
//! of the first generation.
//!
//! **Acknowledged rows are replayed** because the lease orders them: an owner
//! acknowledges only while its lease is live, and the metasrv names the next owner only
//! after that lease has ended, so every acknowledged row was synced before the next owner
//! sealed the segment (README, "Failover").

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use snafu::ResultExt;
use tracing::warn;

use crate::error::{CorruptSnafu, FencedSnafu, Result, StorageSnafu, UnreadableSnafu};

/// How many times an opener starts over after losing the race for a generation.
const PUBLISH_ATTEMPTS: usize = 16;

/// One segment sealed at a length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sealed {
    /// The segment's path, relative to the log root.
    segment: String,
    /// The epoch it was written under.
    epoch: u64,
    /// Bytes of it that count; anything after was appended after the seal.
    len: u64,
}

/// One generation of a region's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    epoch: u64,
    /// The node that took the log over (only it may take it again under this epoch).
    writer: String,
    sealed: Vec<Sealed>,
    /// This generation's own segment, relative to the log root.
    current: String,
}

/// What replaying a region's log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The rows, last write wins.
    pub rows: BTreeMap<String, String>,
    /// Bytes of keys and values replayed.
    pub bytes: u64,
    /// The epoch of the newest generation (0 when there is none).
    pub epoch: u64,
    /// Rows appended to sealed segments after their seal: a stale owner's writes, never
    /// replayed.
    pub stale_rows: u64,
    /// Lines skipped: torn tails and rows whose checksum did not match.
    pub skipped: u64,
}

/// One region's log under a root directory (the shared directory, or the node's own),
/// as written by one node (`writer`: its stable name, e.g. its node id).
#[derive(Debug, Clone)]
pub struct RegionLog {
    root: PathBuf,
    region_id: u64,
    writer: String,
}

/// An open segment, appended to under one epoch.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    epoch: u64,
    durable: bool,
}

impl LogWriter {
    /// The epoch this writer writes under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends one row with one `write(2)`, synced first when `durable`.
    pub fn append(&mut self, key: &str, value: &str) -> Result<()> {
        let line = encode_row(key, value).context(CorruptSnafu {
            path: self.path.display().to_string(),
        })?;
        self.file.write_all(&line).context(StorageSnafu {
            path: self.path.display().to_string(),
        })?;
        if self.durable {
            // Durable where the next owner will read it, before the acknowledgement.
            self.file.sync_data().context(StorageSnafu {
                path: self.path.display().to_string(),
            })?;
        }
        Ok(())
    }
}

fn encode_row(key: &str, value: &str) -> serde_json::Result<Vec<u8>> {
    let json = serde_json::to_vec(&(key, value))?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// A row from one line (without its newline), or `None` if it is not a whole row.
fn decode_row(line: &[u8], legacy: bool) -> Option<(String, String)> {
    if legacy {
        return serde_json::from_slice(line).ok();
    }
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if line.get(8) != Some(&b' ') || crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// What reading one segment found.
#[derive(Debug, Default)]
struct Segment {
    rows: Vec<(String, String)>,
    /// Bytes up to the end of the last complete line read.
    complete_len: u64,
    skipped: u64,
    /// Complete lines past the limit.
    beyond: u64,
}

impl RegionLog {
    /// The log of `region_id` under `root`, written as `writer` (stable across
    /// restarts, distinct per node).
    pub fn new(root: &Path, region_id: u64, writer: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            region_id,
            writer: writer.to_string(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(format!("region-{}", self.region_id))
    }

    fn legacy_name(&self) -> String {
        format!("region-{}.log", self.region_id)
    }

    fn text(path: &Path) -> String {
        path.display().to_string()
    }

    /// The newest generation, if any.
    fn newest(&self) -> Result<Option<Manifest>> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).context(StorageSnafu {
                    path: Self::text(&dir),
                })
            }
        };
        let mut newest = None;
        for entry in entries {
            let entry = entry.context(StorageSnafu {
                path: Self::text(&dir),
            })?;
            let name = entry.file_name();
            let generation = name
                .to_str()
                .and_then(|n| n.strip_prefix("gen-")?.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(g) = generation {
                newest = newest.max(Some(g));
            }
        }
        let Some(generation) = newest else {
            return Ok(None);
        };
        let path = dir.join(format!("gen-{generation}.json"));
        let bytes = std::fs::read(&path).context(StorageSnafu {
            path: Self::text(&path),
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes).context(CorruptSnafu {
            path: Self::text(&path),
        })?;
        Ok(Some(manifest))
    }

    /// Reads a segment up to `limit` bytes (all complete lines when `None`).
    fn read_segment(&self, name: &str, limit: Option<u64>) -> Result<Segment> {
        let path = self.root.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && limit.unwrap_or(0) == 0 => {
                return Ok(Segment::default());
            }
            Err(e) => {
                return Err(e).context(StorageSnafu {
                    path: Self::text(&path),
                })
            }
        };
        let upto = match limit {
            Some(len) if len > bytes.len() as u64 => {
                return UnreadableSnafu {
                    path: Self::text(&path),
                    reason: format!(
                        "sealed at {len} bytes but only {} are there (truncated?)",
                        bytes.len()
                    ),
                }
                .fail();
            }
            Some(len) => len as usize,
            None => bytes.len(),
        };
        let legacy = name == self.legacy_name();
        let mut seg = Segment::default();
        let mut start = 0;
        while let Some(end) = bytes[start..upto].iter().position(|b| *b == b'\n') {
            let line = &bytes[start..start + end];
            start += end + 1;
            if line.is_empty() {
                continue;
            }
            match decode_row(line, legacy) {
                Some(row) => seg.rows.push(row),
                None => seg.skipped += 1,
            }
        }
        seg.complete_len = start as u64;
        if start < upto {
            seg.skipped += 1; // a torn tail
        }
        seg.beyond = bytes[upto..].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(seg)
    }

    /// Replays a generation: its sealed segments up to their seals, then its current
    /// segment's complete rows (`with_current`).
    fn replay_of(&self, manifest: Option<&Manifest>, with_current: bool) -> Result<Replay> {
        let mut replay = Replay::default();
        let mut parts: Vec<(String, Option<u64>)> = Vec::new();
        match manifest {
            Some(m) => {
                replay.epoch = m.epoch;
                parts.extend(m.sealed.iter().map(|s| (s.segment.clone(), Some(s.len))));
                if with_current {
                    parts.push((m.current.clone(), None));
                }
            }
            None => parts.push((self.legacy_name(), None)),
        }
        for (name, limit) in parts {
            let seg = self.read_segment(&name, limit)?;
            replay.stale_rows += seg.beyond;
            replay.skipped += seg.skipped;
            for (k, v) in seg.rows {
                replay.bytes += (k.len() + v.len()) as u64;
                replay.rows.insert(k, v);
            }
        }
        report_ignored(self.region_id, &replay);
        Ok(replay)
    }

    /// Replays the log as it stands, without writing anything: for a follower, or a
    /// region reopened readonly.
    pub fn replay(&self) -> Result<Replay> {
        let newest = self.newest()?;
        self.replay_of(newest.as_ref(), true)
    }

    /// Takes the log over under `epoch`: seals the newest generation's segment, publishes
    /// the next generation, and returns its writer with the rows as sealed. Refused with
    /// `Fenced` if the log was already taken over under a newer epoch.
    pub fn open_writer(&self, epoch: u64, durable: bool) -> Result<(LogWriter, Replay)> {
        let dir = self.dir();
        if !dir.exists() {
            std::fs::create_dir_all(&dir).context(StorageSnafu {
                path: Self::text(&dir),
            })?;
            sync_dir(&self.root)?;
        }
        for _ in 0..PUBLISH_ATTEMPTS {
            let newest = self.newest()?;
            let (generation, sealed) = match &newest {
                Some(m) if m.epoch > epoch || (m.epoch == epoch && m.writer != self.writer) => {
                    return FencedSnafu {
                        region_id: self.region_id,
                        epoch,
                        storage_epoch: m.epoch,
                    }
                    .fail();
                }
                Some(m) => {
                    let len = self.read_segment(&m.current, None)?.complete_len;
                    let mut sealed = m.sealed.clone();
                    sealed.push(Sealed {
                        segment: m.current.clone(),
                        epoch: m.epoch,
                        len,
                    });
                    (m.generation + 1, sealed)
                }
                None => {
                    let legacy = self.read_segment(&self.legacy_name(), None)?;
                    let sealed = (legacy.complete_len != 0).then(|| Sealed {
                        segment: self.legacy_name(),
                        epoch: 0,
                        len: legacy.complete_len,
                    });
                    (1, sealed.into_iter().collect())
                }
            };
            let manifest = Manifest {
                generation,
                epoch,
                writer: self.writer.clone(),
                sealed,
                current: format!("region-{}/seg-{generation}.log", self.region_id),
            };
            if !self.publish(&manifest)? {
                continue; // another writer took this generation: look again
            }
            let path = self.root.join(&manifest.current);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .context(StorageSnafu {
                    path: Self::text(&path),
                })?;
            // Both new names are durable before anything is written under them.
            sync_dir(&dir)?;
            let replay = self.replay_of(Some(&manifest), false)?;
            let writer = LogWriter {
                file,
                path,
                epoch,
                durable,
            };
            return Ok((writer, replay));
        }
        UnreadableSnafu {
            path: Self::text(&dir),
            reason: format!("lost the race for a new generation {PUBLISH_ATTEMPTS} times"),
        }
        .fail()
    }

    /// Publishes a generation under its name if no other has it: written and synced
    /// under a private name, then linked (`link(2)` fails if the name exists). Returns
    /// whether this one won.
    fn publish(&self, manifest: &Manifest) -> Result<bool> {
        let dir = self.dir();
        let path = dir.join(format!("gen-{}.json", manifest.generation));
        let tmp = dir.join(format!(
            "gen-{}.json.{}-{:x}.tmp",
            manifest.generation,
            std::process::id(),
            rand::random::<u64>()
        ));
        let bytes = serde_json::to_vec(manifest).context(CorruptSnafu {
            path: Self::text(&path),
        })?;
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })();
        written.context(StorageSnafu {
            path: Self::text(&tmp),
        })?;
        let linked = std::fs::hard_link(&tmp, &path);
        // The private name goes either way; a leftover one is harmless.
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).context(StorageSnafu {
                path: Self::text(&path),
            }),
        }
    }
}

/// Warns when a replay ignored rows past a seal or skipped damaged lines.
fn report_ignored(region_id: u64, replay: &Replay) {
    if replay.stale_rows > 0 || replay.skipped > 0 {
        warn!(
            region_id,
            stale_rows = replay.stale_rows,
            skipped = replay.skipped,
            "region log: ignored rows appended after a seal, and skipped torn or damaged lines"
        );
    }
}

/// Makes the names in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(StorageSnafu {
            path: RegionLog::text(dir),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &tempfile::TempDir) -> RegionLog {
        RegionLog::new(dir.path(), 4, "node-1")
    }

    fn rows(replay: &Replay) -> Vec<(&str, &str)> {
        replay
            .rows
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn append_raw(log: &RegionLog, segment: &str, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log.root.join(segment))
            .expect("open");
        f.write_all(bytes).expect("write");
    }

    #[test]
    fn a_stale_writers_appends_after_the_seal_are_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut old, _) = log.open_writer(1, true).expect("epoch 1");
        old.append("k", "v1").expect("append");
        let (mut new, replay) = log.open_writer(2, true).expect("epoch 2");
        assert_eq!(rows(&replay), [("k", "v1")]);
        assert_eq!((old.epoch(), new.epoch()), (1, 2));
        assert_eq!(replay.bytes, 3, "the bytes of the rows read");
        // The paused old owner resumes after the new owner sealed its segment…
        old.append("k", "stale").expect("the file takes it");
        new.append("k", "v2").expect("append");
        old.append("other", "stale").expect("the file takes it");
        // …and no later open, as writer or reader, ever sees it.
        let read = log.replay().expect("replay");
        assert_eq!(rows(&read), [("k", "v2")]);
        assert_eq!(read.stale_rows, 2);
        let (_, next) = RegionLog::new(dir.path(), 4, "node-2")
            .open_writer(3, true)
            .expect("epoch 3");
        assert_eq!(rows(&next), [("k", "v2")]);
        assert_eq!((next.epoch, next.stale_rows), (3, 2));
    }

    #[test]
    fn a_writer_under_an_older_epoch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        log.open_writer(5, true).expect("epoch 5");
        let err = log.open_writer(4, true).expect_err("stale");
        assert!(
            matches!(
                err,
                crate::Error::Fenced {
                    epoch: 4,
                    storage_epoch: 5,
                    ..
                }
            ),
            "{err}"
        );
        // The same epoch again (a restart of the same owner) takes a new generation;
        // another node under the same epoch is refused.
        let (_, replay) = log.open_writer(5, true).expect("same epoch");
        assert_eq!(replay.epoch, 5);
        let other = RegionLog::new(dir.path(), 4, "node-2");
        assert!(matches!(
            other.open_writer(5, true),
            Err(crate::Error::Fenced {
                epoch: 5,
                storage_epoch: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_crash_between_the_seal_and_the_first_write_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut a, _) = log.open_writer(1, true).expect("epoch 1");
        a.append("a", "1").expect("append");
        drop(log.open_writer(2, true).expect("epoch 2, then a crash"));
        let (mut c, replay) = log.open_writer(3, true).expect("epoch 3");
        assert_eq!(rows(&replay), [("a", "1")]);
        c.append("c", "3").expect("append");
        assert_eq!(
            rows(&log.replay().expect("replay")),
            [("a", "1"), ("c", "3")]
        );
    }

    #[test]
    fn several_sealed_segments_replay_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        for epoch in 1..=4 {
            let (mut w, replay) = log.open_writer(epoch, true).expect("open");
            let expected = if epoch == 1 { 0 } else { epoch };
            assert_eq!(
                replay.rows.len() as u64,
                expected,
                "k and only1..only{epoch}"
            );
            w.append("k", &format!("v{epoch}")).expect("append");
            w.append(&format!("only{epoch}"), "x").expect("append");
        }
        let replay = log.replay().expect("replay");
        assert_eq!(replay.rows["k"], "v4");
        assert_eq!(replay.rows.len(), 5);
        assert_eq!(replay.epoch, 4);
    }

    #[test]
    fn a_region_created_again_under_a_higher_epoch_fences_the_old_incarnation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut dropped, _) = log.open_writer(3, true).expect("epoch 3");
        dropped.append("k", "old").expect("append");
        // Dropped at epoch 3; created again at 4 (the store starts above the tombstone).
        let (mut again, _) = log.open_writer(4, true).expect("epoch 4");
        again.append("k", "new").expect("append");
        dropped.append("k", "zombie").expect("the file takes it");
        assert_eq!(log.replay().expect("replay").rows["k"], "new");
        assert!(
            log.open_writer(3, true).is_err(),
            "the old incarnation cannot reopen"
        );
    }

    #[test]
    fn a_torn_tail_is_skipped_never_parsed_and_never_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut w, _) = log.open_writer(1, true).expect("open");
        w.append("a", "1").expect("append");
        let full = encode_row("b", "2").expect("encode");
        append_raw(&log, "region-4/seg-1.log", &full[..full.len() / 2]);
        let read = log.replay().expect("replay");
        assert_eq!((rows(&read), read.skipped), (vec![("a", "1")], 1));
        // The next owner seals before the torn bytes; they stay out for good.
        let (mut next, replay) = log.open_writer(2, true).expect("open");
        assert_eq!(rows(&replay), [("a", "1")]);
        next.append("c", "3").expect("append");
        let read = log.replay().expect("replay");
        assert_eq!(rows(&read), [("a", "1"), ("c", "3")]);
        assert_eq!((read.skipped, read.stale_rows), (0, 0));
    }

    #[test]
    fn a_stale_append_inside_a_row_is_skipped_and_not_taken_for_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut w, _) = log.open_writer(1, true).expect("open");
        w.append("a", "1").expect("append");
        // Half a row, a whole stale row glued into it, then the row's other half.
        let row = encode_row("b", "2").expect("encode");
        let stale = encode_row("b", "stale").expect("encode");
        let mut glued = row[..row.len() / 2].to_vec();
        glued.extend_from_slice(&stale);
        glued.extend_from_slice(&row[row.len() / 2..]);
        append_raw(&log, "region-4/seg-1.log", &glued);
        w.append("c", "3").expect("append");
        let read = log.replay().expect("replay");
        assert_eq!(rows(&read), [("a", "1"), ("c", "3")]);
        assert_eq!(read.skipped, 2, "two damaged lines, neither read as a row");
    }

    #[test]
    fn a_log_from_before_generations_is_the_first_sealed_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        append_raw(
            &log,
            "region-4.log",
            b"[\"a\",\"1\"]\n[\"b\",\"2\"]\n[\"b\",\"3\"][\"c\"",
        );
        let read = log.replay().expect("replay");
        assert_eq!(rows(&read), [("a", "1"), ("b", "2")]);
        let (mut w, replay) = log.open_writer(1, true).expect("open");
        assert_eq!(rows(&replay), [("a", "1"), ("b", "2")]);
        w.append("b", "4").expect("append");
        append_raw(&log, "region-4.log", b"\n[\"a\",\"late\"]\n");
        let read = log.replay().expect("replay");
        assert_eq!(rows(&read), [("a", "1"), ("b", "4")]);
        assert_eq!(read.stale_rows, 2);
    }

    #[test]
    fn a_line_whose_checksum_or_separator_does_not_match_is_not_data() {
        let row = encode_row("k", "v1").expect("encode");
        let line = &row[..row.len() - 1];
        assert_eq!(decode_row(line, false), Some(("k".into(), "v1".into())));
        // Changed after the checksum was taken, and still valid JSON: not data.
        let changed = String::from_utf8(line.to_vec())
            .expect("utf-8")
            .replace("v1", "v2");
        assert_eq!(decode_row(changed.as_bytes(), false), None);
        let mut separator = line.to_vec();
        separator[8] = b'x';
        assert_eq!(decode_row(&separator, false), None);
    }

    #[test]
    fn a_missing_sealed_segment_or_an_unlistable_region_is_an_error_never_an_empty_region() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut w, _) = log.open_writer(1, true).expect("open");
        w.append("a", "1").expect("append");
        log.open_writer(2, true).expect("seal");
        std::fs::remove_file(dir.path().join("region-4/seg-1.log")).expect("remove");
        assert!(log.replay().is_err(), "a sealed segment is gone");
        // The region's directory is a file: its generations cannot be listed.
        std::fs::write(dir.path().join("region-5"), b"not a directory").expect("write");
        let other = RegionLog::new(dir.path(), 5, "node-1");
        assert!(other.replay().is_err(), "unlistable");
    }

    #[test]
    fn a_sealed_segment_shorter_than_its_seal_is_unreadable_not_silently_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        let (mut w, _) = log.open_writer(1, true).expect("open");
        w.append("a", "1").expect("append");
        log.open_writer(2, true).expect("seal");
        std::fs::write(dir.path().join("region-4/seg-1.log"), b"").expect("truncate");
        let err = log.replay().expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn of_two_writers_racing_for_one_generation_one_wins_and_the_older_is_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(&dir);
        log.open_writer(1, true).expect("epoch 1");
        // Epoch 3 publishes generation 2 first; epoch 2, which read generation 1, loses
        // the link, looks again, and finds itself fenced.
        let lost = Manifest {
            generation: 2,
            epoch: 2,
            writer: "node-1".into(),
            sealed: vec![],
            current: "region-4/seg-2.log".into(),
        };
        log.open_writer(3, true).expect("epoch 3");
        assert!(!log.publish(&lost).expect("publish"), "the name is taken");
        assert!(matches!(
            log.open_writer(2, true),
            Err(crate::Error::Fenced {
                storage_epoch: 3,
                ..
            })
        ));
    }
}
