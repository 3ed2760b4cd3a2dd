//! Copying snapshots to another repository (the "other backup location").
//!
//! Blob ids are keyed hashes, so two repositories with different master keys
//! name the same bytes differently. A copy therefore reads each blob it
//! needs from the source (authenticated and id-checked), names it with the
//! destination's key, and writes it only when the destination lacks it.
//! Trees and chunk maps hold blob ids, so they are rewritten with the new
//! names. When both repositories share a master key (a key file of one
//! opens the other's data), ids agree and blobs the destination already has
//! are skipped without being read.
//!
//! Order of writes, as in backup: packs, then an index file naming them
//! (after every pack, so an interrupted copy loses at most the pack it was
//! writing), then the snapshot. A second run sees the indexed blobs and
//! writes only what is still missing. Snapshots already copied are
//! recognised by their lineage (`Snapshot::origin`), so copying twice, or
//! copying a copy onwards, does not duplicate snapshots.
//!
//! With different keys, a nightly copy would read every blob of the new
//! snapshot to learn its name in the destination, though most were copied
//! the night before. So the newest snapshot the destination already holds
//! a copy of is first walked side by side with that copy, metadata only
//! (trees and chunk maps): where both have the same entry with the same
//! shape, the source's ids and the copy's ids are paired. A blob or tree of
//! a pair is then taken as the destination's without being read, when the
//! destination's index has it. Only a copy that carries the source's seal
//! (`Snapshot::copy_seal`, a tag made with the source's key) is paired, so
//! a snapshot forged by someone holding only the destination's key cannot
//! make a copy take the wrong blobs. Copies that `repair` rewrote (tagged
//! `repaired`) are never paired.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::chunkmap::{self, ChunkMap, LayerKind, MapLayer};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::prune::Repacker;
use crate::repository::Repository;
use crate::snapshot::{Node, NodeKind, Tree};

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Source snapshot ids; empty copies every snapshot.
    pub snapshots: Vec<Id>,
    /// zstd level for re-sealed frames.
    pub compression_level: i32,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            snapshots: Vec::new(),
            compression_level: 1,
        }
    }
}

/// One copied snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// Its id in the source repository.
    pub from: Id,
    /// Its id in the destination.
    pub to: Id,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots the destination already had (same lineage).
    pub already_present: usize,
    /// Whether the two repositories share a master key (ids agree).
    pub same_keys: bool,
    /// Blobs read from the source.
    pub blobs_read: u64,
    /// Blobs and trees found in the destination through an earlier copy of
    /// the same data, without being read.
    pub blobs_known: u64,
    /// Blobs written to the destination (it lacked them).
    pub blobs_written: u64,
    /// Plain bytes of the blobs written.
    pub bytes_written: u64,
    /// Bytes added to the destination (packs and index files).
    pub bytes_stored: u64,
    pub packs_written: u64,
    pub duration_ms: u64,
}

/// Copies snapshots from `src` to `dst`. Only adds to `dst`, so it runs in
/// an append-only session too.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    if src.config().id == dst.config().id {
        return Err(Error::Invalid(
            "the source and destination are the same repository".into(),
        ));
    }
    let _src_lock = crate::lock::lock(src, false, "copy (source)")?;
    let _dst_lock = crate::lock::lock(dst, false, "copy")?;

    let (all, bad) = src.snapshots()?;
    let everything = all.clone();
    let chosen: Vec<_> = if opts.snapshots.is_empty() {
        if let Some(e) = bad.into_iter().next() {
            return Err(e);
        }
        all
    } else {
        let mut out = Vec::new();
        for want in &opts.snapshots {
            let found = all.iter().find(|(id, _)| id == want).cloned();
            out.push(found.ok_or_else(|| {
                Error::NotFound(format!("snapshot {} is not in the source", want.short()))
            })?);
        }
        out.sort_by_key(|(_, s)| s.time);
        out.dedup_by_key(|(id, _)| *id);
        out
    };
    let (present, _) = dst.snapshots()?;
    let lineages: HashSet<Id> = present.iter().map(|(id, s)| s.lineage(id)).collect();

    let probe = b"ledgervault copy: do the two repositories share a master key?";
    let same_keys = src.keys().blob_id(probe) == dst.keys().blob_id(probe);
    let mut report = CopyReport {
        same_keys,
        ..CopyReport::default()
    };
    let todo: Vec<_> = chosen
        .into_iter()
        .filter(|(id, s)| {
            let have = lineages.contains(&s.lineage(id));
            if have {
                report.already_present += 1;
            }
            !have
        })
        .collect();
    progress.start(Some(todo.iter().map(|(_, s)| s.size()).sum()));
    if todo.is_empty() {
        progress.finish();
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    let mut t = Translator {
        src,
        src_index: src.load_index()?,
        dst,
        dst_index: dst.load_index()?,
        writer: Repacker::new(dst, opts.compression_level)?,
        pending: HashSet::new(),
        memo: HashMap::new(),
        known: HashMap::new(),
        paired_trees: HashSet::new(),
        same_keys,
        progress,
        report: &mut report,
    };
    if !same_keys {
        // The newest source snapshot with an unrepaired copy here that
        // this source sealed.
        let pair = everything
            .iter()
            .filter_map(|(sid, ss)| {
                let lineage = ss.lineage(sid);
                present
                    .iter()
                    .find(|(did, ds)| {
                        ds.lineage(did) == lineage
                            && !ds.tags.iter().any(|t| t == "repaired")
                            && ds.sealed_by(src.keys(), &dst.config().id)
                    })
                    .map(|(_, ds)| (ss, ds))
            })
            .max_by_key(|(ss, _)| ss.time);
        if let Some((ss, ds)) = pair {
            for s in &ss.sources {
                if let Some(d) = ds.sources.iter().find(|d| d.name == s.name) {
                    t.pair(&s.node, &d.node);
                }
            }
        }
    }
    let mut copied = Vec::new();
    for (id, snap) in todo {
        let mut out = snap.clone();
        for s in &mut out.sources {
            s.node = t.node(&s.node)?;
        }
        t.flush()?;
        out.origin = Some(snap.lineage(&id));
        out.seal_copy(src.keys(), &dst.config().id);
        let to = dst.save_snapshot(&out)?;
        copied.push(CopiedSnapshot {
            from: id,
            to,
            time: snap.time,
        });
    }
    drop(t);
    report.copied = copied;
    progress.finish();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

struct Translator<'a> {
    src: &'a Repository,
    src_index: Index,
    dst: &'a Repository,
    /// The destination's index, grown as packs are indexed.
    dst_index: Index,
    writer: Repacker<'a>,
    /// Blobs handed to the writer whose packs are not indexed yet.
    pending: HashSet<Id>,
    /// Source id → destination id, for blobs and trees seen this run.
    memo: HashMap<Id, Id>,
    /// Source id → destination id, from an earlier copy walked beside its
    /// source: used when the destination's index has the id. Blobs only:
    /// a tree is always rewritten, so that each blob below it is checked.
    known: HashMap<Id, Id>,
    /// Source folders already walked by `pair`.
    paired_trees: HashSet<Id>,
    same_keys: bool,
    progress: &'a dyn Progress,
    report: &'a mut CopyReport,
}

impl Translator<'_> {
    fn dst_has(&self, id: &Id) -> bool {
        self.dst_index.contains(id) || self.pending.contains(id)
    }

    /// Stores `data` in the destination under `id` unless it is there.
    fn put(&mut self, kind: BlobKind, id: Id, data: Vec<u8>) -> Result<()> {
        if self.dst_has(&id) {
            return Ok(());
        }
        self.report.blobs_written += 1;
        self.report.bytes_written += data.len() as u64;
        self.pending.insert(id);
        self.writer.add_blobs(vec![(kind, id, data)])?;
        self.index_written()
    }

    /// Indexes packs the writer has finished, one index file per pack.
    fn index_written(&mut self) -> Result<()> {
        for pack in self.writer.take_written() {
            let (_, index_size) = self.dst.write_index(std::slice::from_ref(&pack))?;
            self.report.packs_written += 1;
            self.report.bytes_stored += pack.size + index_size;
            self.progress.stored(pack.size + index_size);
            for f in &pack.frames {
                for b in &f.blobs {
                    self.pending.remove(&b.id);
                }
            }
            self.dst_index.add_pack(&pack);
        }
        Ok(())
    }

    /// Writes out everything handed to the writer and indexes it.
    fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        self.index_written()
    }

    /// Pairs the ids of `s` (a source node) with those of `d`, its copy in
    /// the destination, where both have the same shape: same name, kind and
    /// size, as many content blobs, chunk maps of as many chunks, folders
    /// whose entries pair by name. Reads metadata only; what cannot be
    /// read is left unpaired (and copied as usual).
    fn pair(&mut self, s: &Node, d: &Node) {
        if s.name != d.name || s.kind != d.kind || s.size != d.size {
            return;
        }
        if s.content.len() == d.content.len() {
            self.known
                .extend(s.content.iter().copied().zip(d.content.iter().copied()));
        }
        if let (Some(sm), Some(dm)) = (&s.chunk_map, &d.chunk_map) {
            if sm.chunks == dm.chunks && sm.chunk_size == dm.chunk_size {
                let si = self.src.resolve_map(&self.src_index, sm);
                let di = self.dst.resolve_map(&self.dst_index, dm);
                // Unreadable on either side: the blobs are read as usual.
                if let (Ok(si), Ok(di)) = (si, di) {
                    if si.len() == di.len() {
                        self.known.extend(si.into_iter().zip(di));
                    }
                }
            }
        }
        if let (NodeKind::Dir, Some(st), Some(dt)) = (s.kind, s.subtree, d.subtree) {
            if !self.paired_trees.insert(st) {
                return;
            }
            let (Ok(stree), Ok(dtree)) = (
                self.src.load_tree(&self.src_index, &st),
                self.dst.load_tree(&self.dst_index, &dt),
            ) else {
                // Unreadable on either side: nothing paired below.
                return;
            };
            let by_name: HashMap<&crate::name::FsName, &Node> =
                dtree.nodes.iter().map(|n| (&n.name, n)).collect();
            // A folder listing a name twice (a damaged or forged tree) is
            // not paired below.
            if by_name.len() != dtree.nodes.len() {
                return;
            }
            for n in &stree.nodes {
                if let Some(m) = by_name.get(&n.name) {
                    self.pair(n, m);
                }
            }
        }
    }

    /// The destination id an earlier copy gave `id`, when the destination
    /// still has it.
    fn known_here(&mut self, id: &Id) -> Option<Id> {
        let d = *self.known.get(id)?;
        if !self.dst_has(&d) {
            return None;
        }
        self.report.blobs_known += 1;
        self.memo.insert(*id, d);
        Some(d)
    }

    /// The destination id of the source blob `id`, copying it if needed.
    fn blob(&mut self, kind: BlobKind, id: &Id) -> Result<Id> {
        if let Some(d) = self.memo.get(id) {
            return Ok(*d);
        }
        if self.same_keys && self.dst_has(id) {
            self.memo.insert(*id, *id);
            return Ok(*id);
        }
        if let Some(d) = self.known_here(id) {
            if kind == BlobKind::Data {
                if let Some(loc) = self.src_index.get(id) {
                    self.progress.read(loc.len as u64);
                }
            }
            return Ok(d);
        }
        let data = self.src.read_blob(&self.src_index, id)?;
        self.report.blobs_read += 1;
        if kind == BlobKind::Data {
            self.progress.read(data.len() as u64);
        }
        let to = self.dst.keys().blob_id(&data);
        self.put(kind, to, data)?;
        self.memo.insert(*id, to);
        Ok(to)
    }

    fn node(&mut self, node: &Node) -> Result<Node> {
        let mut out = node.clone();
        out.content = node
            .content
            .iter()
            .map(|id| self.blob(BlobKind::Data, id))
            .collect::<Result<_>>()?;
        if let Some(map) = &node.chunk_map {
            out.chunk_map = Some(self.chunk_map(map)?);
        }
        if let (NodeKind::Dir, Some(t)) = (node.kind, node.subtree) {
            out.subtree = Some(self.tree(&t)?);
        }
        Ok(out)
    }

    fn chunk_map(&mut self, map: &ChunkMap) -> Result<ChunkMap> {
        let ids = self.src.resolve_map(&self.src_index, map)?;
        let mut translated = Vec::with_capacity(ids.len());
        for id in &ids {
            translated.push(self.blob(BlobKind::Data, id)?);
        }
        if self.same_keys {
            // The map blobs name the same ids here: keep the layers as they are.
            let mut out = map.clone();
            for layer in &mut out.layers {
                for b in &mut layer.blobs {
                    *b = self.blob(BlobKind::Map, b)?;
                }
            }
            return Ok(out);
        }
        let mut blobs = Vec::new();
        for data in chunkmap::encode_full(&translated) {
            let id = self.dst.keys().blob_id(&data);
            self.put(BlobKind::Map, id, data)?;
            blobs.push(id);
        }
        Ok(ChunkMap {
            chunk_size: map.chunk_size,
            chunks: map.chunks,
            layers: vec![MapLayer {
                kind: LayerKind::Full,
                entries: translated.len() as u64,
                blobs,
            }],
        })
    }

    fn tree(&mut self, id: &Id) -> Result<Id> {
        if let Some(d) = self.memo.get(id) {
            return Ok(*d);
        }
        let tree = self.src.load_tree(&self.src_index, id)?;
        self.report.blobs_read += 1;
        let nodes = tree
            .nodes
            .iter()
            .map(|n| self.node(n))
            .collect::<Result<Vec<_>>>()?;
        let data = Tree { nodes }.encode();
        let to = self.dst.keys().blob_id(&data);
        self.put(BlobKind::Tree, to, data)?;
        self.memo.insert(*id, to);
        Ok(to)
    }
}
