//! Repository statistics: sizes, ratios, free space and growth.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::envelope::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SourceKind};

/// Growth is averaged over the snapshots of this many last days.
pub const GROWTH_WINDOW_DAYS: i64 = 30;
/// Warn when the destination is full within this many days.
pub const FULL_WARNING_DAYS: f64 = 30.0;

/// The latest state of one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStat {
    pub path: String,
    pub kind: SourceKind,
    /// Bytes in its newest snapshot.
    pub size: u64,
    pub newest: DateTime<Utc>,
    pub snapshots: usize,
}

/// What `stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    pub snapshots: usize,
    pub sources: Vec<SourceStat>,
    /// Bytes all snapshots hold, counted once per snapshot.
    pub logical_bytes: u64,
    /// Bytes of distinct content blobs (after deduplication, before
    /// compression). Blobs of forgotten snapshots count until `prune`.
    pub unique_bytes: u64,
    /// Bytes of sealed frames in packs (after compression and encryption).
    pub packed_bytes: u64,
    /// Every object at the destination.
    pub stored_bytes: u64,
    pub blobs: usize,
    pub packs: usize,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / packed.
    pub compression_ratio: f64,
    pub free_bytes: Option<u64>,
    pub growth: Option<Growth>,
}

/// Growth of the repository, from what recent backups added.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Growth {
    pub bytes_per_day: f64,
    /// Days of history the figure is based on.
    pub over_days: f64,
    /// When the destination fills at this rate (if free space is known).
    pub days_until_full: Option<f64>,
}

impl Growth {
    /// A warning when the destination fills within 30 days, else `None`.
    pub fn warning(&self, free: Option<u64>) -> Option<String> {
        let days = self.days_until_full?;
        (days < FULL_WARNING_DAYS).then(|| {
            format!(
                "at the current growth of {} a day, the backup destination ({} free) will be full in about {:.0} day{}; free space, move it, or forget and prune old snapshots",
                human_size(self.bytes_per_day as u64),
                human_size(free.unwrap_or(0)),
                days.floor(),
                if days.floor() == 1.0 { "" } else { "s" }
            )
        })
    }
}

/// Bytes in decimal units with three significant digits: `994 MB`,
/// `12.4 MB` (the CLI prints sizes the same way).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 999.5 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 99.95 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// Growth per day over the last [`GROWTH_WINDOW_DAYS`]: the bytes stored by
/// every snapshot after the first one in the window, over the time between
/// the first and the newest. `None` with less than a day of history.
pub fn growth(snaps: &[&Snapshot], free: Option<u64>, now: DateTime<Utc>) -> Option<Growth> {
    let mut recent: Vec<&&Snapshot> = snaps
        .iter()
        .filter(|s| s.time >= now - Duration::days(GROWTH_WINDOW_DAYS))
        .collect();
    recent.sort_by_key(|s| s.time);
    let (first, last) = (recent.first()?, recent.last()?);
    let span = (last.time - first.time).num_seconds() as f64 / 86400.0;
    if span < 1.0 {
        return None;
    }
    let added: u64 = recent[1..].iter().map(|s| s.totals.bytes_stored).sum();
    let per_day = added as f64 / span;
    Some(Growth {
        bytes_per_day: per_day,
        over_days: span,
        days_until_full: free.filter(|_| per_day > 0.0).map(|f| f as f64 / per_day),
    })
}

/// Computes the statistics.
pub fn stats(repo: &Repository) -> Result<RepoStats> {
    let (snaps, _) = repo.snapshots()?;
    let mut sources: BTreeMap<String, SourceStat> = BTreeMap::new();
    for (_, s) in &snaps {
        for src in &s.sources {
            let e = sources.entry(src.path.clone()).or_insert(SourceStat {
                path: src.path.clone(),
                kind: src.kind,
                size: 0,
                newest: s.time,
                snapshots: 0,
            });
            e.snapshots += 1;
            if s.time >= e.newest {
                e.newest = s.time;
                e.size = src.summary.bytes;
                e.kind = src.kind;
            }
        }
    }
    let logical: u64 = snaps.iter().map(|(_, s)| s.size()).sum();
    let mut seen = HashSet::<Id>::new();
    let (mut unique, mut packed, mut packs) = (0u64, 0u64, HashSet::new());
    for id in repo.list_ids(FileKind::Index)? {
        for p in repo.read_own_index_file(&id)?.unwrap_or_default() {
            if !packs.insert(p.id) {
                continue;
            }
            for f in &p.frames {
                let mut new_raw = 0u64;
                for b in &f.blobs {
                    if seen.insert(b.id) && b.kind == crate::pack::BlobKind::Data {
                        new_raw += b.len as u64;
                    }
                }
                unique += new_raw;
                // A frame's sealed bytes, shared by its blobs.
                if f.raw_len > 0 {
                    packed += (f.sealed_len as u128 * new_raw as u128 / f.raw_len as u128) as u64;
                }
            }
        }
    }
    let free = repo.backend().free_space();
    let refs: Vec<&Snapshot> = snaps.iter().map(|(_, s)| s).collect();
    Ok(RepoStats {
        snapshots: snaps.len(),
        sources: sources.into_values().collect(),
        logical_bytes: logical,
        unique_bytes: unique,
        packed_bytes: packed,
        stored_bytes: repo.stored_size()?,
        blobs: seen.len(),
        packs: packs.len(),
        dedup_ratio: if unique > 0 {
            logical as f64 / unique as f64
        } else {
            1.0
        },
        compression_ratio: if packed > 0 {
            unique as f64 / packed as f64
        } else {
            1.0
        },
        free_bytes: free,
        growth: growth(&refs, free, Utc::now()),
    })
}

/// Growth and its warning for a backup summary, from the snapshots alone.
pub fn growth_now(repo: &Repository) -> Result<Option<Growth>> {
    let (snaps, _) = repo.snapshots()?;
    let refs: Vec<&Snapshot> = snaps.iter().map(|(_, s)| s).collect();
    Ok(growth(&refs, repo.backend().free_space(), Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(days_ago: i64, stored: u64, now: DateTime<Utc>) -> Snapshot {
        let mut s = Snapshot::new_now(vec![], vec![], None);
        s.time = now - Duration::days(days_ago);
        s.totals.bytes_stored = stored;
        s
    }

    #[test]
    fn growth_ignores_the_first_backup_and_warns_within_30_days() {
        let now = Utc::now();
        // A 10 GB first backup 10 days ago, then 1 GB a day.
        let mut v = vec![snap(10, 10_000_000_000, now)];
        for d in 0..10 {
            v.push(snap(d, 1_000_000_000, now));
        }
        let refs: Vec<&Snapshot> = v.iter().collect();
        let g = growth(&refs, Some(20_000_000_000), now).unwrap();
        assert!((g.bytes_per_day - 1e9).abs() < 1e6, "{g:?}");
        assert!((g.days_until_full.unwrap() - 20.0).abs() < 0.1);
        let w = g.warning(Some(20_000_000_000)).unwrap();
        assert!(
            w.contains("full in about 19 days") || w.contains("full in about 20 days"),
            "{w}"
        );
        // With 100 GB free there are 100 days: no warning.
        let g = growth(&refs, Some(100_000_000_000), now).unwrap();
        assert!(g.warning(Some(100_000_000_000)).is_none());
        // One backup, or a few within an hour, say nothing.
        assert!(growth(&refs[..1], Some(1), now).is_none());
        // Snapshots older than the window do not count.
        let old: Vec<Snapshot> = vec![snap(100, 5, now), snap(90, 5, now)];
        let refs: Vec<&Snapshot> = old.iter().collect();
        assert!(growth(&refs, Some(1), now).is_none());
    }
}
