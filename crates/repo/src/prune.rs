//! Prune: delete data that no snapshot needs.
//!
//! 1. Under an exclusive lock, mark every blob some snapshot uses (trees,
//!    file content, chunk-map blobs and the pages they name).
//! 2. Judge each pack: all its blobs used → keep; none → delete; partly →
//!    repack when its unused share is above the threshold, else keep.
//!    Packs that no index lists (left by killed backups) are deleted.
//! 3. Repack: copy the used blobs of those packs into new packs. Frames whose
//!    blobs are all used are copied as they are, after authenticating them;
//!    others are opened and their used blobs sealed into new frames.
//! 4. Write new index files for every pack that stays, then delete the old
//!    index files, then delete the packs that are no longer listed.
//!
//! The order is what makes prune crash-safe: at every moment, every index
//! file lists only packs that exist, and every used blob is listed by some
//! index file. A prune killed anywhere leaves extra files (new packs no index
//! names yet, or two index files listing the same pack), never missing ones;
//! the next prune removes the extras.
//!
//! Memory: while marking, the index (about 100 bytes per blob) and the map
//! of used blob ids (about 50 bytes per blob); then the index is dropped and
//! the per-pack frame tables (about 45 bytes per blob) are loaded instead;
//! plus, per repacking worker (one per core, at most four), the pack it reads
//! and the pack it fills. It does not grow with the number of
//! snapshots.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::envelope::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, PackRecord};
use crate::pack::{open_frame, verify_blobs, BlobKind, FrameSealer, PackBuilder, PACK_PREFIX_LEN};
use crate::progress::Progress;
use crate::repository::{id_from_path, pack_path, Repository};
use crate::snapshot::{Node, NodeKind};

/// Packs listed per index file that prune writes.
const PACKS_PER_INDEX_FILE: usize = 256;
/// Blobs smaller than this are grouped into one frame when resealed.
const FRAME_TARGET: usize = 64 * 1024;

/// Options for [`prune`].
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this fraction (0..=1) of its bytes is
    /// unused.
    pub repack_threshold: f64,
    /// Only report what would be done.
    pub dry_run: bool,
    /// zstd level for resealed frames.
    pub compression_level: i32,
    /// Packs written less than this long ago are never deleted or
    /// repacked, indexed or not: they may belong to a backup still running
    /// whose lock was removed or could not be refreshed. Defaults to the
    /// lock staleness window; zero turns the rule off.
    pub min_pack_age: std::time::Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            repack_threshold: 0.10,
            dry_run: false,
            compression_level: 1,
            min_pack_age: crate::lock::STALE_AFTER,
        }
    }
}

/// What [`prune`] did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_used: usize,
    pub blobs_unused: usize,
    pub packs_before: usize,
    pub packs_kept: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    /// Packs on storage that no index lists (from interrupted backups),
    /// old enough to delete.
    pub packs_unindexed: usize,
    /// Packs that would have been deleted or repacked but were written
    /// less than `min_pack_age` ago, so were kept.
    pub packs_too_young: usize,
    /// Packs that would have been deleted or repacked but are still locked
    /// (immutable repositories), and when the first lock ends.
    pub packs_locked: usize,
    pub locked_until: Option<String>,
    pub packs_written: usize,
    pub index_files_before: usize,
    pub index_files_written: usize,
    /// Bytes in packs and index files before.
    pub bytes_before: u64,
    /// Bytes deleted (packs and index files).
    pub bytes_deleted: u64,
    /// Bytes written (new packs and index files).
    pub bytes_written: u64,
    pub duration_secs: f64,
}

enum Fate {
    Keep,
    Delete,
    Repack,
}

/// Removes unused data. See the module documentation.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    if !opts.dry_run {
        repo.ensure_may_delete("prune")?;
    }
    let _lock = crate::lock::lock(repo, !opts.dry_run, "prune")?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // Every index file, and the packs they list (each pack once).
    let index_ids = repo.list_ids(FileKind::Index)?;
    report.index_files_before = index_ids.len();
    let index_sizes: HashMap<String, u64> = repo
        .backend()
        .list(FileKind::Index.dir())?
        .into_iter()
        .map(|o| (o.path, o.size))
        .collect();
    // The index, for reading trees and chunk maps while marking. It is
    // dropped before the per-pack records are loaded, so the two are never
    // in memory together.
    let mut index = Index::new();
    for id in &index_ids {
        for p in repo.read_own_index_file(id)?.unwrap_or_default() {
            index.add_pack(&p);
        }
    }

    // 1. Mark.
    let (snaps, bad) = repo.snapshots()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(Error::Invalid(format!(
            "prune needs every snapshot readable to know what is in use, and one is not ({e}); run `ledgervault check`"
        )));
    }
    report.snapshots = snaps.len();
    let mut used = Used::default();
    for (sid, snap) in &snaps {
        for src in &snap.sources {
            mark_node(repo, &index, &src.node, &mut used).map_err(|e| {
                Error::Invalid(format!(
                    "snapshot {} cannot be walked ({e}); prune stops so nothing it needs is deleted. Run `ledgervault check`",
                    sid.short()
                ))
            })?;
        }
    }
    drop(index);
    let mut records: Vec<PackRecord> = Vec::new();
    let mut seen_packs = HashSet::new();
    for id in &index_ids {
        for p in repo.read_own_index_file(id)?.unwrap_or_default() {
            if seen_packs.insert(p.id) {
                records.push(p);
            }
        }
    }
    drop(seen_packs);

    // 2. Judge the packs.
    let listing = repo.backend().list("data/")?;
    let present: HashMap<Id, u64> = listing
        .iter()
        .filter_map(|o| id_from_path(&o.path).map(|id| (id, o.size)))
        .collect();
    let now = std::time::SystemTime::now();
    let young: HashSet<Id> = listing
        .iter()
        .filter(|o| {
            !opts.min_pack_age.is_zero()
                && o.modified
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age < opts.min_pack_age)
        })
        .filter_map(|o| id_from_path(&o.path))
        .collect();
    drop(listing);
    // A blob is claimed by the first pack holding it: sound packs first,
    // so a copy that a backup stored again (after its pack went missing or
    // was found damaged) is the one kept.
    let damaged = repo.damaged_packs()?;
    records.sort_by_key(|p| {
        let weak = match present.get(&p.id) {
            None => 2,
            Some(&size) if size != p.size || damaged.contains(&p.id) => 1,
            _ => 0,
        };
        weak
    });
    // Each used blob is claimed by the first pack holding it; other copies
    // count as unused.
    let mut fates = Vec::with_capacity(records.len());
    for (pi, p) in records.iter().enumerate() {
        let pi = pi as u32;
        let mut used_raw = 0u64;
        let mut total_raw = 0u64;
        let mut any_used = false;
        for f in &p.frames {
            for b in &f.blobs {
                total_raw += b.len as u64;
                if used.claim(&b.id, pi) {
                    used_raw += b.len as u64;
                    any_used = true;
                } else {
                    report.blobs_unused += 1;
                }
            }
        }
        if !present.contains_key(&p.id) {
            if any_used {
                return Err(Error::corrupt(
                    pack_path(&p.id),
                    "listed in the index and holding data in use, but missing from storage; prune stops. Run `ledgervault check`",
                ));
            }
            fates.push(Fate::Delete);
            continue;
        }
        let unused = 1.0 - used_raw as f64 / total_raw.max(1) as f64;
        fates.push(if young.contains(&p.id) {
            if !any_used || (unused > opts.repack_threshold && used_raw < total_raw) {
                report.packs_too_young += 1;
            }
            Fate::Keep
        } else if !any_used {
            Fate::Delete
        } else if unused > opts.repack_threshold && used_raw < total_raw {
            Fate::Repack
        } else {
            Fate::Keep
        });
    }
    // 2b. An immutable repository: what is still locked stays, and so do
    // the packs that a locked index file lists (that file cannot go, and
    // must not name packs that are gone).
    let mut locked_index: HashSet<Id> = HashSet::new();
    let mut unindexed_locked: HashSet<Id> = HashSet::new();
    if repo.immutable_days().is_some() {
        let mut earliest: Option<std::time::SystemTime> = None;
        let mut note = |t: std::time::SystemTime| {
            earliest = Some(earliest.map_or(t, |e: std::time::SystemTime| e.min(t)));
        };
        let mut pinned: HashSet<Id> = HashSet::new();
        for id in &index_ids {
            let path = format!("{}{}", FileKind::Index.dir(), id);
            if let Some(t) = repo.backend().retained_until(&path)? {
                locked_index.insert(*id);
                note(t);
                pinned.extend(
                    repo.read_own_index_file(id)?
                        .unwrap_or_default()
                        .iter()
                        .map(|p| p.id),
                );
            }
        }
        for (p, f) in records.iter().zip(fates.iter_mut()) {
            if matches!(f, Fate::Keep) || !present.contains_key(&p.id) {
                continue;
            }
            let until = match repo.backend().retained_until(&pack_path(&p.id))? {
                Some(t) => Some(t),
                None if pinned.contains(&p.id) => Some(std::time::SystemTime::now()),
                None => None,
            };
            if let Some(t) = until {
                *f = Fate::Keep;
                report.packs_locked += 1;
                note(t);
            }
        }
        let indexed: HashSet<Id> = records.iter().map(|r| r.id).collect();
        for id in present.keys().filter(|id| !indexed.contains(id)) {
            if let Some(t) = repo.backend().retained_until(&pack_path(id))? {
                unindexed_locked.insert(*id);
                report.packs_locked += 1;
                note(t);
            }
        }
        report.locked_until =
            earliest.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
    }
    if let Some(missing) = used.unclaimed() {
        return Err(Error::corrupt(
            format!("blob {}", missing.short()),
            "in use but in no index; prune stops. Run `ledgervault check`",
        ));
    }
    report.blobs_used = used.0.len();
    let listed: HashSet<Id> = records.iter().map(|p| p.id).collect();
    let unindexed: Vec<(Id, u64)> = present
        .iter()
        .filter(|(id, _)| !listed.contains(id) && !unindexed_locked.contains(id))
        .map(|(id, s)| (*id, *s))
        .collect();
    let (young_unindexed, unindexed): (Vec<_>, Vec<_>) = unindexed
        .into_iter()
        .partition(|(id, _)| young.contains(id));
    report.packs_too_young += young_unindexed.len();
    report.packs_before = present.len();
    report.packs_unindexed = unindexed.len();
    report.bytes_before = present.values().sum::<u64>() + index_sizes.values().sum::<u64>();
    for f in &fates {
        match f {
            Fate::Keep => report.packs_kept += 1,
            Fate::Delete => report.packs_deleted += 1,
            Fate::Repack => report.packs_repacked += 1,
        }
    }
    let nothing_to_do = report.packs_deleted == 0 && report.packs_repacked == 0;
    let deleted_size = |p: &PackRecord| present.get(&p.id).copied().unwrap_or(0);
    if opts.dry_run || (nothing_to_do && unindexed.is_empty()) {
        report.bytes_deleted = records
            .iter()
            .zip(&fates)
            .filter(|(_, f)| !matches!(f, Fate::Keep))
            .map(|(p, _)| deleted_size(p))
            .sum::<u64>()
            + unindexed.iter().map(|u| u.1).sum::<u64>();
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // 3. Repack.
    let to_repack: u64 = records
        .iter()
        .zip(&fates)
        .filter(|(_, f)| matches!(f, Fate::Repack))
        .map(|(p, _)| p.size)
        .sum();
    progress.start(Some(to_repack));
    let jobs: Vec<(u32, &PackRecord)> = records
        .iter()
        .zip(&fates)
        .enumerate()
        .filter(|(_, (_, f))| matches!(f, Fate::Repack))
        .map(|(i, (p, _))| (i as u32, p))
        .collect();
    let new_packs = repack(repo, &jobs, &used, opts.compression_level, progress)?;
    report.packs_written = new_packs.len();
    report.bytes_written = new_packs.iter().map(|p| p.size).sum();

    // 4. New index files for everything that stays, then delete.
    let mut keep: Vec<PackRecord> = records
        .iter()
        .zip(&fates)
        .filter(|(_, f)| matches!(f, Fate::Keep))
        .map(|(p, _)| p.clone())
        .collect();
    keep.extend(new_packs);
    let mut new_index = HashSet::new();
    for chunk in keep.chunks(PACKS_PER_INDEX_FILE) {
        let (id, size) = repo.write_index(chunk)?;
        new_index.insert(id);
        report.bytes_written += size;
    }
    report.index_files_written = new_index.len();
    for id in &index_ids {
        // An old file identical to a new one has the same name: it stays.
        // A locked one stays too (its packs were kept above).
        if new_index.contains(id) || locked_index.contains(id) {
            continue;
        }
        let path = format!("{}{}", FileKind::Index.dir(), id);
        repo.backend().delete(&path)?;
        report.bytes_deleted += index_sizes.get(&path).copied().unwrap_or(0);
    }
    for (p, f) in records.iter().zip(&fates) {
        if !matches!(f, Fate::Keep) {
            repo.backend().delete(&pack_path(&p.id))?;
            report.bytes_deleted += deleted_size(p);
        }
    }
    for (id, size) in &unindexed {
        repo.backend().delete(&pack_path(id))?;
        report.bytes_deleted += size;
    }
    repo.forget_damaged_gone()?;
    progress.finish();
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Repacks `jobs` (each a pack and its place in the claims of `used`):
/// the blobs each pack holds the kept copy of go into new packs. Opening
/// a frame and sealing a new one cost most of the time, so the packs are
/// shared out between workers (one per core, at most four), each writing
/// packs of its own. Returns the packs written (durable, not indexed).
fn repack(
    repo: &Repository,
    jobs: &[(u32, &PackRecord)],
    used: &Used,
    level: i32,
    progress: &dyn Progress,
) -> Result<Vec<PackRecord>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<Vec<PackRecord>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Repacker::new(repo, level).inspect_err(|_| {
                        stop.store(true, Ordering::Relaxed);
                    })?;
                    while !stop.load(Ordering::Relaxed) {
                        let Some(&(pi, p)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(e) = repack_pack(repo, used, pi, p, &mut out) {
                            // The others stop at their next pack; what they
                            // wrote is unindexed and goes at the next prune.
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        progress.read(p.size);
                        // The pack read and the frames opened are freed
                        // here; glibc keeps such pages unless asked.
                        crate::backup::release_freed_memory();
                    }
                    out.finish()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut written = Vec::new();
    for r in results {
        written.extend(r?);
    }
    Ok(written)
}

/// Moves the blobs of pack `p` (number `pi` in the claims) that it holds
/// the kept copy of into `out`: whole frames as they are, the rest
/// resealed. Every frame is authenticated first.
fn repack_pack(
    repo: &Repository,
    used: &Used,
    pi: u32,
    p: &PackRecord,
    out: &mut Repacker<'_>,
) -> Result<()> {
    let path = pack_path(&p.id);
    let bytes = repo.backend().read(&path)?;
    let mut off = PACK_PREFIX_LEN as usize;
    for fr in &p.frames {
        let end = off + fr.sealed_len as usize;
        let sealed = bytes
            .get(off..end)
            .ok_or_else(|| Error::corrupt(&path, "shorter than its frame table says"))?;
        off = end;
        let wanted: Vec<bool> = fr
            .blobs
            .iter()
            .map(|b| used.0.get(&b.id) == Some(&pi))
            .collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        // Authenticate before copying anything: damaged data is never
        // spread into new packs, and the original stays.
        let plain = open_frame(repo.keys(), sealed, fr.raw_len, &path)?;
        verify_blobs(repo.keys(), &plain, &fr.blobs)
            .map_err(|m| Error::corrupt(&path, format!("{m}; prune stops")))?;
        let mut inner = 0usize;
        let mut blobs = Vec::new();
        for (b, &w) in fr.blobs.iter().zip(&wanted) {
            // In bounds: verify_blobs checked every blob's place.
            let data = &plain[inner..inner + b.len as usize];
            inner += b.len as usize;
            if w {
                blobs.push((b.kind, b.id, data.to_vec()));
            }
        }
        if blobs.len() == fr.blobs.len() {
            out.copy_frame(sealed.to_vec(), fr.clone())?;
        } else {
            out.add_blobs(blobs)?;
        }
    }
    Ok(())
}

/// The blobs in use, each with the pack that holds its kept copy
/// ([`UNCLAIMED`] until the packs are judged). One map serves both steps.
#[derive(Default)]
struct Used(HashMap<Id, u32>);

const UNCLAIMED: u32 = u32::MAX;

impl Used {
    fn insert(&mut self, id: Id) -> bool {
        self.0.insert(id, UNCLAIMED).is_none()
    }

    fn extend(&mut self, ids: impl IntoIterator<Item = Id>) {
        for id in ids {
            self.0.insert(id, UNCLAIMED);
        }
    }

    /// Claims `id` for pack `pack` if it is used and not claimed yet.
    fn claim(&mut self, id: &Id, pack: u32) -> bool {
        match self.0.get_mut(id) {
            Some(p) if *p == UNCLAIMED => {
                *p = pack;
                true
            }
            _ => false,
        }
    }

    fn unclaimed(&self) -> Option<&Id> {
        self.0
            .iter()
            .find(|(_, &p)| p == UNCLAIMED)
            .map(|(id, _)| id)
    }
}

/// Adds every blob `node` needs to `used`, reading trees and chunk maps.
fn mark_node(repo: &Repository, index: &Index, node: &Node, used: &mut Used) -> Result<()> {
    used.extend(node.content.iter().copied());
    if let Some(map) = &node.chunk_map {
        for layer in &map.layers {
            used.extend(layer.blobs.iter().copied());
        }
        used.extend(repo.resolve_map(index, map)?);
    }
    if let (NodeKind::Dir, Some(t)) = (node.kind, node.subtree) {
        if used.insert(t) {
            let tree = repo.load_tree(index, &t)?;
            for child in &tree.nodes {
                mark_node(repo, index, child, used)?;
            }
        }
    }
    Ok(())
}

/// Writes repacked frames into new packs (also used by `copy`).
pub(crate) struct Repacker<'a> {
    repo: &'a Repository,
    sealer: FrameSealer,
    builder: PackBuilder,
    group: Vec<(BlobKind, Id, Vec<u8>)>,
    group_len: usize,
    written: Vec<PackRecord>,
}

impl<'a> Repacker<'a> {
    pub(crate) fn new(repo: &'a Repository, level: i32) -> Result<Self> {
        Ok(Repacker {
            repo,
            sealer: FrameSealer::new(level)?,
            builder: PackBuilder::new(),
            group: Vec::new(),
            group_len: 0,
            written: Vec::new(),
        })
    }

    pub(crate) fn copy_frame(
        &mut self,
        sealed: Vec<u8>,
        entry: crate::pack::FrameEntry,
    ) -> Result<()> {
        self.builder.add_frame(sealed, entry);
        self.maybe_write()
    }

    pub(crate) fn add_blobs(&mut self, blobs: Vec<(BlobKind, Id, Vec<u8>)>) -> Result<()> {
        for b in blobs {
            self.group_len += b.2.len();
            self.group.push(b);
            if self.group_len >= FRAME_TARGET {
                self.seal_group()?;
            }
        }
        Ok(())
    }

    fn seal_group(&mut self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        let (sealed, entry) = self.sealer.seal(self.repo.keys(), &self.group);
        self.group.clear();
        self.group_len = 0;
        self.builder.add_frame(sealed, entry);
        self.maybe_write()
    }

    fn maybe_write(&mut self) -> Result<()> {
        if self.builder.len() >= self.repo.config().pack_size as usize {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<()> {
        let b = std::mem::take(&mut self.builder);
        if b.is_empty() {
            return Ok(());
        }
        let pack = b.finish(self.repo.keys());
        let parts: Vec<&[u8]> = pack.parts.iter().map(|p| p.as_slice()).collect();
        self.repo
            .backend()
            .write_parts(&pack_path(&pack.id), &parts)?;
        self.written.push(PackRecord {
            id: pack.id,
            size: pack.size,
            frames: pack.frames,
        });
        Ok(())
    }

    /// Seals the open frame and writes the open pack.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.seal_group()?;
        self.write()
    }

    /// Packs written since the last call (durable, not yet indexed).
    pub(crate) fn take_written(&mut self) -> Vec<PackRecord> {
        std::mem::take(&mut self.written)
    }

    pub(crate) fn finish(mut self) -> Result<Vec<PackRecord>> {
        self.seal_group()?;
        self.write()?;
        Ok(self.written)
    }
}
