//! Rebuilding what damage left behind.
//!
//! [`repair_index`] reads every pack and writes a fresh index from what is
//! really there: intact packs as they are; from a damaged pack, every frame
//! that still authenticates (its blobs are copied into a new pack) while
//! the frames that do not are reported as lost; packs that an index names
//! but storage lacks are dropped. Frame boundaries come from the pack's own
//! header, or, when the header itself is damaged or cut off, from an index
//! file that still lists the pack.
//!
//! [`repair_snapshots`] then walks every snapshot. A file, stream or
//! database image whose data is no longer all in the index, and a folder
//! whose listing is unreadable, are taken out; the rest is written as a new
//! snapshot tagged `repaired`. What was taken out is listed by path, so the
//! loss is exactly what the damage destroyed and nothing more. A partial
//! database image is never kept: restoring half a ledger is worse than
//! restoring none of it.
//!
//! Both take the exclusive lock and refuse append-only sessions. Order of
//! writes, as everywhere: new packs, then the index files naming them, then
//! deletion of what they replace, so a repair that is interrupted can be run
//! again.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::BackendErrorKind;
use crate::envelope::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{Index, PackRecord};
use crate::pack::{open_frame, read_header, verify_blobs, BlobKind, FrameEntry, PACK_PREFIX_LEN};
use crate::progress::Progress;
use crate::prune::Repacker;
use crate::repository::{id_from_path, pack_path, Repository};
use crate::snapshot::{Node, NodeKind, Tree};

/// Packs listed per index file that `repair index` writes.
const PACKS_PER_INDEX: usize = 256;

/// Options for both repairs.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
    /// `repair snapshots`: delete each damaged snapshot once its repaired
    /// version is stored, and unreadable snapshot files.
    pub forget: bool,
}

/// A pack that could not be used whole.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    /// Why.
    pub problem: String,
    pub frames_salvaged: usize,
    pub frames_lost: usize,
    /// Blobs of lost frames that no other pack holds.
    pub blobs_lost: usize,
}

/// What `repair index` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    pub packs_read: usize,
    pub packs_indexed: usize,
    /// Index files that failed to read (they are replaced).
    pub damaged_index_files: Vec<String>,
    /// Packs some index listed that storage does not have.
    pub missing_packs: Vec<String>,
    pub damaged_packs: Vec<DamagedPack>,
    /// Blobs the old index listed that the new one cannot (missing or
    /// damaged packs), counting each blob once.
    pub blobs_lost: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    pub packs_written: usize,
    pub packs_removed: usize,
}

/// Rebuilds the index from the packs.
pub fn repair_index(
    repo: &Repository,
    opts: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairIndexReport> {
    repo.ensure_may_delete("repair index")?;
    let _lock = crate::lock::lock(repo, true, "repair index")?;
    let backend = repo.backend();
    let mut report = RepairIndexReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // What the old index files say, as a fallback for damaged headers.
    let old_index_ids = repo.list_ids(FileKind::Index)?;
    let mut listed: HashMap<Id, PackRecord> = HashMap::new();
    for id in &old_index_ids {
        match repo.read_index_file(id) {
            Ok(packs) => {
                for p in packs {
                    listed.entry(p.id).or_insert(p);
                }
            }
            Err(e) => report.damaged_index_files.push(e.to_string()),
        }
    }
    let listed_blobs: HashSet<Id> = listed
        .values()
        .flat_map(|p| p.frames.iter().flat_map(|f| f.blobs.iter().map(|b| b.id)))
        .collect();

    let stored: Vec<(Id, u64)> = backend
        .list("data/")?
        .into_iter()
        .filter_map(|o| id_from_path(&o.path).map(|id| (id, o.size)))
        .collect();
    let stored_ids: HashSet<Id> = stored.iter().map(|(id, _)| *id).collect();
    let mut missing: Vec<Id> = listed
        .keys()
        .filter(|id| !stored_ids.contains(id))
        .copied()
        .collect();
    missing.sort();
    report.missing_packs = missing.iter().map(pack_path).collect();

    progress.start(Some(stored.iter().map(|(_, s)| s).sum()));
    let mut good: Vec<PackRecord> = Vec::new();
    // Frames to salvage: (pack, sealed bytes, entry).
    let mut salvage: Vec<(FrameEntry, Vec<u8>)> = Vec::new();
    let mut damaged: Vec<Id> = Vec::new();
    let mut lost_frames: Vec<(usize, FrameEntry)> = Vec::new();
    for (id, size) in &stored {
        let path = pack_path(id);
        let bytes = match backend.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind == BackendErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        report.packs_read += 1;
        progress.read(*size);
        if Id::of_object(&bytes) == *id {
            match read_header(repo.keys(), &bytes, &path) {
                Ok(frames) => {
                    good.push(PackRecord {
                        id: *id,
                        size: bytes.len() as u64,
                        frames,
                    });
                    continue;
                }
                Err(e) => {
                    // Intact bytes but no readable header: not ours, or
                    // written with another key. Leave it alone.
                    damaged.push(*id);
                    report.damaged_packs.push(DamagedPack {
                        pack: path,
                        problem: e.to_string(),
                        frames_salvaged: 0,
                        frames_lost: 0,
                        blobs_lost: 0,
                    });
                    continue;
                }
            }
        }
        // Damaged: find the frames from the header or an old index.
        let (frames, problem) = match read_header(repo.keys(), &bytes, &path) {
            Ok(f) => (Some(f), "content does not match its name".to_string()),
            Err(e) => (
                listed.get(id).map(|r| r.frames.clone()),
                format!("content does not match its name; {e}"),
            ),
        };
        damaged.push(*id);
        let Some(frames) = frames else {
            report.damaged_packs.push(DamagedPack {
                pack: path,
                problem: format!("{problem}; no index lists its frames, so all of it is lost"),
                frames_salvaged: 0,
                frames_lost: 0,
                blobs_lost: 0,
            });
            continue;
        };
        let slot = report.damaged_packs.len();
        let mut dp = DamagedPack {
            pack: path.clone(),
            problem,
            frames_salvaged: 0,
            frames_lost: 0,
            blobs_lost: 0,
        };
        let mut off = PACK_PREFIX_LEN as usize;
        for f in frames {
            let end = off + f.sealed_len as usize;
            let ok = bytes
                .get(off..end)
                .and_then(|sealed| {
                    let plain = open_frame(repo.keys(), sealed, f.raw_len, &path).ok()?;
                    verify_blobs(repo.keys(), &plain, &f.blobs).ok()?;
                    Some(sealed.to_vec())
                })
                .map(|sealed| (f.clone(), sealed));
            match ok {
                Some(s) => {
                    dp.frames_salvaged += 1;
                    salvage.push(s);
                }
                None => {
                    dp.frames_lost += 1;
                    lost_frames.push((slot, f));
                }
            }
            off = end;
        }
        report.damaged_packs.push(dp);
    }
    progress.finish();

    // Blobs that survive somewhere.
    let mut have: HashSet<Id> = good
        .iter()
        .flat_map(|p| p.frames.iter().flat_map(|f| f.blobs.iter().map(|b| b.id)))
        .collect();
    have.extend(
        salvage
            .iter()
            .flat_map(|(f, _)| f.blobs.iter().map(|b| b.id)),
    );
    for (slot, f) in &lost_frames {
        report.damaged_packs[*slot].blobs_lost +=
            f.blobs.iter().filter(|b| !have.contains(&b.id)).count();
    }
    report.blobs_lost = listed_blobs.iter().filter(|b| !have.contains(b)).count();

    let old_set: HashSet<Id> = listed.keys().copied().collect();
    let new_set: HashSet<Id> = good.iter().map(|p| p.id).collect();
    let unchanged = report.damaged_index_files.is_empty()
        && damaged.is_empty()
        && missing.is_empty()
        && old_set == new_set;
    if opts.dry_run || unchanged {
        report.packs_indexed = good.len() + usize::from(!salvage.is_empty());
        return Ok(report);
    }

    // 1. Salvaged frames go, sealed as they are, into new packs.
    let mut writer = Repacker::new(repo, 1)?;
    for (entry, sealed) in salvage {
        writer.copy_frame(sealed, entry)?;
    }
    let written = writer.finish()?;
    report.packs_written = written.len();
    good.extend(written);
    good.sort_by_key(|p| p.id);
    report.packs_indexed = good.len();

    // 2. New index files for everything that is there.
    let mut new_ids = HashSet::new();
    for part in good.chunks(PACKS_PER_INDEX) {
        let (id, _) = repo.write_index(part)?;
        new_ids.insert(id);
        report.index_files_written += 1;
    }
    // 3. Then the old index files, and the damaged packs they named.
    for id in old_index_ids.iter().filter(|id| !new_ids.contains(id)) {
        let path = format!("{}{}", FileKind::Index.dir(), id);
        // Locked storage (an immutable repository): an old index file
        // still locked stays; the new ones list everything that is there.
        if repo.immutable_days().is_some() && backend.retained_until(&path)?.is_some() {
            continue;
        }
        backend.delete(&path)?;
        report.index_files_removed += 1;
    }
    for id in &damaged {
        if let Some(dp) = report
            .damaged_packs
            .iter()
            .find(|d| d.pack == pack_path(id))
        {
            // A pack whose header never opened and that no index knew may
            // belong to someone else: keep it.
            if dp.frames_salvaged == 0 && dp.frames_lost == 0 {
                continue;
            }
        }
        backend.delete(&pack_path(id))?;
        report.packs_removed += 1;
    }
    // Damage records of the packs just removed have served their purpose.
    repo.forget_damaged_gone()?;
    Ok(report)
}

/// One snapshot that lost something.
#[derive(Debug, Clone, Serialize)]
pub struct RepairedSnapshot {
    pub snapshot: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The repaired snapshot (none in a dry run).
    pub repaired: Option<Id>,
    /// Paths taken out, each with why.
    pub lost: Vec<String>,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub intact: usize,
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshot files that could not be read at all.
    pub unreadable: Vec<String>,
    /// Snapshots deleted (`--forget`).
    pub removed: usize,
}

/// Writes repaired versions of snapshots whose data is partly gone.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairSnapshotsReport> {
    if opts.forget {
        repo.ensure_may_delete("repair snapshots --forget")?;
    }
    let _lock = crate::lock::lock(repo, true, "repair snapshots")?;
    let mut report = RepairSnapshotsReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut unreadable_ids = Vec::new();
    let mut snaps = Vec::new();
    for id in repo.list_ids(FileKind::Snapshot)? {
        match repo.load_snapshot(&id) {
            Ok(s) => snaps.push((id, s)),
            Err(e) => {
                report.unreadable.push(e.to_string());
                unreadable_ids.push(id);
            }
        }
    }
    snaps.sort_by_key(|(_, s)| s.time);
    report.snapshots = snaps.len();
    let index = repo.load_index()?;
    let mut w = Rewriter {
        repo,
        index: &index,
        writer: Repacker::new(repo, 1)?,
        pending: HashSet::new(),
        memo: HashMap::new(),
        dry_run: opts.dry_run,
    };
    progress.start(Some(snaps.len() as u64));
    for (id, snap) in snaps {
        progress.read(1);
        let mut lost = Vec::new();
        let mut out = snap.clone();
        out.sources.clear();
        // Rewritten here, it is no longer what its source vouched for.
        out.copy_seal = None;
        for src in &snap.sources {
            match w.node(&src.node, &src.name, &mut lost)? {
                Some(node) => {
                    let mut s = src.clone();
                    s.node = node;
                    out.sources.push(s);
                }
                None => continue,
            }
        }
        if lost.is_empty() {
            report.intact += 1;
            continue;
        }
        let mut repaired = None;
        if !opts.dry_run {
            w.flush()?;
            if !out.tags.iter().any(|t| t == "repaired") {
                out.tags.push("repaired".into());
            }
            let note = format!(
                "repaired from snapshot {}: {} item(s) lost to damage",
                id.short(),
                lost.len()
            );
            out.reason = Some(match &snap.reason {
                Some(r) => format!("{r} ({note})"),
                None => note,
            });
            let new_id = repo.save_snapshot(&out)?;
            repaired = Some(new_id);
            if opts.forget {
                repo.backend()
                    .delete(&format!("{}{}", FileKind::Snapshot.dir(), id))?;
                report.removed += 1;
            }
        }
        report.repaired.push(RepairedSnapshot {
            snapshot: id,
            time: snap.time,
            repaired,
            lost,
        });
    }
    if opts.forget && !opts.dry_run {
        for id in unreadable_ids {
            repo.backend()
                .delete(&format!("{}{}", FileKind::Snapshot.dir(), id))?;
            report.removed += 1;
        }
    }
    progress.finish();
    Ok(report)
}

struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    writer: Repacker<'a>,
    /// Tree blobs written but not yet indexed.
    pending: HashSet<Id>,
    /// Old tree id → (new tree id, what was lost under it, relative paths).
    memo: HashMap<Id, (Id, Vec<String>)>,
    dry_run: bool,
}

impl Rewriter<'_> {
    /// The node with damaged parts taken out, or `None` when the node itself
    /// is lost. Lost paths are appended to `lost`.
    fn node(&mut self, node: &Node, path: &str, lost: &mut Vec<String>) -> Result<Option<Node>> {
        match node.kind {
            NodeKind::Dir => {
                let Some(t) = node.subtree else {
                    return Ok(Some(node.clone()));
                };
                let (new_t, under) = self.tree(&t)?;
                lost.extend(under.iter().map(|p| {
                    if p.is_empty() {
                        format!("{path}/ (the folder's listing is unreadable: everything in it)")
                    } else {
                        format!("{path}/{p}")
                    }
                }));
                let mut out = node.clone();
                out.subtree = Some(new_t);
                Ok(Some(out))
            }
            NodeKind::Symlink => Ok(Some(node.clone())),
            _ => {
                let content = match self.repo.node_content(self.index, node) {
                    Ok(c) => c,
                    Err(e) => {
                        lost.push(format!("{path} (chunk map unreadable: {e})"));
                        return Ok(None);
                    }
                };
                let missing = content.iter().filter(|b| !self.index.contains(b)).count();
                if missing > 0 {
                    lost.push(format!(
                        "{path} ({missing} of {} chunks lost)",
                        content.len()
                    ));
                    return Ok(None);
                }
                Ok(Some(node.clone()))
            }
        }
    }

    /// A tree with damaged entries taken out; returns its (possibly new) id
    /// and the paths lost under it, relative to it.
    fn tree(&mut self, id: &Id) -> Result<(Id, Vec<String>)> {
        if let Some(m) = self.memo.get(id) {
            return Ok(m.clone());
        }
        let tree = match self.repo.load_tree(self.index, id) {
            Ok(t) => Some(t),
            Err(crate::error::Error::Backend(e)) if e.kind != BackendErrorKind::NotFound => {
                return Err(e.into())
            }
            Err(_) => None,
        };
        let (nodes, lost) = match tree {
            // An empty relative path stands for the folder itself.
            None => (Vec::new(), vec![String::new()]),
            Some(tree) => {
                let mut lost = Vec::new();
                let mut nodes = Vec::new();
                for n in &tree.nodes {
                    let mut under = Vec::new();
                    let kept = self.node(n, &n.name.display(), &mut under)?;
                    lost.extend(under);
                    if let Some(n) = kept {
                        nodes.push(n);
                    }
                }
                (nodes, lost)
            }
        };
        let new_id = if lost.is_empty() {
            *id
        } else {
            let data = Tree { nodes }.encode();
            let new_id = self.repo.keys().blob_id(&data);
            if !self.dry_run && !self.index.contains(&new_id) && self.pending.insert(new_id) {
                self.writer
                    .add_blobs(vec![(BlobKind::Tree, new_id, data)])?;
            }
            new_id
        };
        self.memo.insert(*id, (new_id, lost.clone()));
        Ok((new_id, lost))
    }

    /// Writes the trees made so far and indexes them.
    fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        let packs = self.writer.take_written();
        if !packs.is_empty() {
            self.repo.write_index(&packs)?;
        }
        self.pending.clear();
        Ok(())
    }
}
