//! The write path.
//!
//! ```text
//!  walker (this thread)         workers (N threads)        packer            uploader
//!  read → chunk → keyed hash →  compress → seal frame  →  append to pack →  write pack
//!       → dedup against index                                               every few packs:
//!       → group small new chunks into frames                                write index
//! ```
//! After the pipeline drains, the snapshot is written last. Because packs and
//! their index files are written before any snapshot refers to them, a crash
//! at any moment leaves every earlier snapshot intact; the index files written
//! so far let the next backup reuse what a killed one already stored.
//!
//! Channels between the stages are bounded, so memory stays flat however
//! large the source is.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunker::{Chunker, ChunkerKind, SharedChunk};
use crate::chunkmap::{self, ChunkMap, LayerKind, MapLayer};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::guard::{FolderWatch, GuardOptions, SUSPECT_MIN_PAGES};
use crate::id::Id;
use crate::index::{IdSet, Index, PackRecord};
use crate::name::FsName;
use crate::pack::{BlobKind, FrameEntry, FrameSealer, PackBuilder};
use crate::progress::Progress;
use crate::repository::{pack_path as pack_path_for, Repository};
use crate::snapshot::{
    DatabaseInfo, Node, NodeKind, Snapshot, SnapshotTotals, Source, SourceKind, SourceSummary, Tree,
};

/// What a database capture's error says when another program held the
/// database locked for longer than the timeout: a busy database, which the
/// ransomware guard does not take for one that can no longer be read.
pub const LOCKED: &str = "stayed locked by another process";

/// Write an index file after this many packs.
const PACKS_PER_INDEX: usize = 4;
/// Packs written at once (a slow fsync or upload does not stall sealing).
const UPLOADERS: usize = 2;
/// Chunks smaller than this are grouped with their neighbours into one
/// frame; larger ones are a frame of their own, and travel to the sealing
/// workers in the chunker's buffer rather than copied.
const SHARE_MIN: usize = 64 * 1024;
/// A group of small chunks (database pages, small files) is sealed once it
/// holds this much. On the sample firm's pages zstd level 1 ran about 15%
/// faster in 256 KiB frames than in 64 KiB ones (per-frame setup and table
/// building amortised), and the full backup took 2.04 s instead of 2.22 s.
/// 1 MiB frames were no faster to back up but slowed the restore of a
/// snapshot taken after a night of scattered edits (1.9 s against 1.7 s):
/// more of each old frame is decoded for pages a later frame replaced.
const GROUP_TARGET: usize = 256 * 1024;

/// What to back up.
pub enum BackupSource {
    /// A file or directory.
    Path(PathBuf),
    /// A stream, stored under `name`.
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
        /// What the stream came from, shown as the source's path (`-`, for
        /// standard input, when `None`). Never holds credentials.
        origin: Option<String>,
    },
    /// A consistent dump of a database server's database (a text stream),
    /// cut with the repository's dump chunker and stored as a stream node
    /// with what the dump learned (tables, row counts, digests). `path`
    /// names the database and must hold no credentials.
    DbDump {
        name: String,
        path: String,
        dump: Box<dyn DbDump>,
    },
    /// A consistent database image, cut into page-aligned chunks. `path`
    /// identifies the database across snapshots (its chunk map is a delta on
    /// the last snapshot of the same path) and must hold no credentials.
    DbImage {
        name: String,
        path: String,
        capture: Box<dyn DbCapture>,
    },
}

/// A consistent image of a live database, read page by page.
pub trait DbCapture: Read + Send {
    /// Database page size in bytes; chunks are whole pages.
    fn page_size(&self) -> u32;
    /// Called after the image was read to its end: ends the capture and
    /// returns what it learned (tables, digests, damage found).
    fn finish(self: Box<Self>) -> std::result::Result<DatabaseInfo, String>;
}

/// A consistent dump of a live database, read as a stream.
pub trait DbDump: Read + Send {
    /// Called after the stream was read to its end: waits for the dump to
    /// finish and returns what it learned. An error means the stream is not
    /// a complete dump and the source is not stored.
    fn finish(self: Box<Self>) -> std::result::Result<DatabaseInfo, String>;
}

/// Recognises live databases inside folders being backed up.
pub trait DbOpener: Send + Sync {
    /// Whether `path` is a database this opener captures (a cheap check).
    fn is_database(&self, path: &Path) -> bool;
    /// Starts a consistent capture of `path`.
    fn open(&self, path: &Path) -> std::result::Result<Box<dyn DbCapture>, String>;
    /// Files beside a database that its capture already covers (journals).
    fn companions(&self, path: &Path) -> Vec<PathBuf>;
    /// Whether nothing beside the database holds data its file does not
    /// (a journal or WAL with content), so that the file alone is the
    /// database. By default: none of its companions exists.
    fn quiet(&self, path: &Path) -> bool {
        !self
            .companions(path)
            .iter()
            .any(|c| fs::symlink_metadata(c).is_ok())
    }
}

/// How to back up.
#[derive(Clone)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub reason: Option<String>,
    /// zstd level.
    pub compression_level: i32,
    /// Compression and encryption threads.
    pub threads: usize,
    /// Folders never to descend into, as canonical paths (the repository
    /// itself, when it is local).
    pub exclude: Vec<PathBuf>,
    /// Captures databases found in folders; `None` backs them up as files.
    pub db_opener: Option<std::sync::Arc<dyn DbOpener>>,
    /// Thresholds of the ransomware guard (see the `guard` module).
    pub guard: GuardOptions,
    /// Suspect findings made before the backup (a database given as such
    /// that is no longer one); they are stored with the snapshot.
    pub suspect: Vec<String>,
    /// Include and exclude rules for what is found inside folders (the
    /// sources given are always taken).
    pub filter: Option<std::sync::Arc<dyn PathFilter>>,
    /// The snapshot whose entries tell unchanged files (`--parent`); by
    /// default, for each folder or file source, the latest snapshot of this
    /// host that holds the same path.
    pub parent: Option<Id>,
    /// Read every file, trusting no earlier entry (`--force-reread`).
    pub force_reread: bool,
    /// Files of a folder announced to the kernel ahead of the one being
    /// read (`posix_fadvise(WILLNEED)` from a thread of their own), so that
    /// a slow disk or a network share has several in flight; 0: none.
    pub read_ahead: usize,
}

/// Decides which files and folders found inside a source folder are backed up.
pub trait PathFilter: Send + Sync {
    /// Whether to take `path`; a folder not taken is not descended into.
    fn keep(&self, path: &Path, is_dir: bool) -> bool;
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("tags", &self.tags)
            .field("reason", &self.reason)
            .field("compression_level", &self.compression_level)
            .field("threads", &self.threads)
            .field("exclude", &self.exclude)
            .field("db_detection", &self.db_opener.is_some())
            .field("guard", &self.guard)
            .field("filter", &self.filter.is_some())
            .field("parent", &self.parent)
            .field("force_reread", &self.force_reread)
            .field("read_ahead", &self.read_ahead)
            .finish()
    }
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            tags: Vec::new(),
            reason: None,
            compression_level: 1,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            exclude: Vec::new(),
            db_opener: None,
            guard: GuardOptions::default(),
            suspect: Vec::new(),
            filter: None,
            parent: None,
            force_reread: false,
            read_ahead: READ_AHEAD,
        }
    }
}

/// The walker's end of the read-ahead thread: where files are announced,
/// and how many announced files the thread has not closed yet.
type Ahead = (Sender<(PathBuf, u64)>, Arc<AtomicUsize>);

/// Default of [`BackupOptions::read_ahead`].
pub const READ_AHEAD: usize = 32;

/// Bytes of a file announced ahead at most: enough for a small file whole,
/// and for a large one the kernel's own readahead takes over once reading
/// starts.
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// The read-ahead thread: opens each announced file and asks the kernel
/// to start reading it. Failures are of no consequence (the walker reads
/// the file itself and reports what goes wrong).
fn read_ahead(hints: Receiver<(PathBuf, u64)>, busy: Arc<AtomicUsize>) {
    for (path, len) in hints {
        announced(&path, len);
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens `path` and asks the kernel to read its first `len` bytes.
fn announced(path: &Path, len: u64) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        // Never through a link, never waiting on a pipe put in its place.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a hint on a file descriptor `f` owns.
        unsafe {
            libc::posix_fadvise(
                f.as_raw_fd(),
                0,
                len.min(READ_AHEAD_BYTES) as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, len);
}

/// Counts pages of a database image that changed since its parent and are
/// now noise (random-looking and no longer well-formed pages).
struct EntropyWatch<'p> {
    parent: &'p [Id],
    pages: u64,
    changed: u64,
    changed_random: u64,
}

/// A source file that could not be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileError {
    pub path: String,
    pub message: String,
}

/// What a backup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    pub snapshot_id: Id,
    /// Object locks extended so the snapshot's packs stay locked (immutable
    /// repositories only).
    pub locks_extended: usize,
    pub files: u64,
    /// Files found unchanged since the parent snapshot, not read (see
    /// [`BackupOptions::force_reread`]), and their bytes.
    pub files_unchanged: u64,
    pub bytes_unchanged: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub packs_written: u64,
    pub duration_secs: f64,
    /// Files that could not be read; the snapshot holds everything else.
    pub errors: Vec<FileError>,
    /// Files that changed while they were being read. They are stored as
    /// read, which may mix old and new content; the next backup takes them
    /// again.
    pub changed: Vec<String>,
    /// Why the snapshot is suspect (ransomware alarm); empty normally.
    pub suspect: Vec<String>,
    /// Locks of dead or silent processes that were ignored.
    pub stale_locks: Vec<String>,
    /// Packs left without an index (an interrupted backup, a full disk)
    /// that this backup checked and indexed, and so reused.
    pub packs_adopted: usize,
    /// Packs the index lists that are missing, truncated or recorded as
    /// damaged; nothing is deduplicated against them.
    pub weak_packs: usize,
    /// Blobs that were only in such packs and that this backup stored again.
    pub blobs_stored_again: u64,
}

/// A blob's bytes on their way to a sealing worker: its own copy, or a
/// large chunk still in the chunker's buffer.
enum BlobBytes {
    Owned(Vec<u8>),
    Shared(SharedChunk),
}

impl AsRef<[u8]> for BlobBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            BlobBytes::Owned(v) => v,
            BlobBytes::Shared(c) => c.as_ref(),
        }
    }
}

type FrameJob = Vec<(BlobKind, Id, BlobBytes)>;

struct PackerOut {
    packs: u64,
    bytes: u64,
    ids: Vec<Id>,
    /// The last packs written, in no index file yet.
    unindexed: Vec<PackRecord>,
}

/// Buffers the uploaders hand back to the sealing workers once a pack is
/// written. Frames are about a megabyte each; allocating every one afresh
/// faulted in (and zeroed) new pages. Bounded, so returns cannot pin
/// memory without limit.
#[derive(Clone)]
struct Spares {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Spares {
    /// Buffers smaller than this are not worth keeping.
    const MIN: usize = 32 * 1024;

    fn new(keep: usize) -> Self {
        let (tx, rx) = bounded(keep);
        Spares { tx, rx }
    }

    /// An empty buffer, reused when one is spare.
    fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    /// Keeps `buf` for reuse if there is room; drops it otherwise.
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= Self::MIN {
            buf.clear();
            let _ = self.tx.try_send(buf);
        }
    }
}

/// The sending end of the pipeline, owned by the walker.
struct Writer<'a> {
    keys: Arc<Keys>,
    index: &'a Index,
    pending: IdSet,
    /// Packs holding blobs this backup deduplicated against: they must all
    /// still exist when the snapshot is written.
    used_packs: HashSet<Id>,
    /// Blobs the index knew only in a missing or damaged pack, stored again.
    stored_again: u64,
    /// Small new blobs waiting to be compressed together as one frame: data
    /// and trees apart, so that the trees of a folder walk share frames
    /// (reading them back costs a few frames, not one frame of file data
    /// per tree).
    group: FrameJob,
    group_len: usize,
    trees: FrameJob,
    trees_len: usize,
    jobs: Option<Sender<FrameJob>>,
    bytes_new: u64,
}

/// The pipeline stopped because a later stage failed; the real error comes
/// from joining that stage.
struct Closed;

impl Writer<'_> {
    fn put(&mut self, kind: BlobKind, data: Vec<u8>) -> std::result::Result<Id, Closed> {
        let id = self.keys.blob_id(&data);
        self.put_id(kind, id, BlobBytes::Owned(data))
    }

    /// Whether a blob with this id is on its way or stored soundly (then
    /// its pack is noted as one the snapshot relies on).
    fn has(&mut self, id: &Id) -> bool {
        self.pending.contains(id) || self.dedup(id)
    }

    /// Deduplicates against the index: true (and the pack noted as used)
    /// when the blob is in a sound pack.
    fn dedup(&mut self, id: &Id) -> bool {
        match self.index.get(id) {
            Some(loc) if self.index.is_sound(id) => {
                self.used_packs.insert(loc.pack);
                true
            }
            Some(_) => {
                if !self.pending.contains(id) {
                    self.stored_again += 1;
                }
                false
            }
            None => false,
        }
    }

    /// Stores a chunk with its id already computed. A large chunk travels
    /// in the chunker's buffer; a small one is copied, since it waits in a
    /// group and would hold that buffer longer.
    fn put_chunk(
        &mut self,
        kind: BlobKind,
        id: Id,
        chunk: SharedChunk,
    ) -> std::result::Result<(), Closed> {
        let bytes = if chunk.as_ref().len() >= SHARE_MIN {
            BlobBytes::Shared(chunk)
        } else {
            BlobBytes::Owned(chunk.as_ref().to_vec())
        };
        self.put_id(kind, id, bytes).map(|_| ())
    }

    fn put_id(
        &mut self,
        kind: BlobKind,
        id: Id,
        data: BlobBytes,
    ) -> std::result::Result<Id, Closed> {
        if self.dedup(&id) || !self.pending.insert(id) {
            return Ok(id);
        }
        let len = data.as_ref().len();
        self.bytes_new += len as u64;
        if len >= SHARE_MIN {
            self.send(vec![(kind, id, data)])?;
        } else if kind == BlobKind::Tree {
            self.trees_len += len;
            self.trees.push((kind, id, data));
            if self.trees_len >= GROUP_TARGET {
                let g = std::mem::take(&mut self.trees);
                self.trees_len = 0;
                self.send(g)?;
            }
        } else {
            self.group_len += len;
            self.group.push((kind, id, data));
            if self.group_len >= GROUP_TARGET {
                let g = std::mem::take(&mut self.group);
                self.group_len = 0;
                self.send(g)?;
            }
        }
        Ok(id)
    }

    fn flush(&mut self) -> std::result::Result<(), Closed> {
        for g in [
            std::mem::take(&mut self.group),
            std::mem::take(&mut self.trees),
        ] {
            if !g.is_empty() {
                self.send(g)?;
            }
        }
        self.group_len = 0;
        self.trees_len = 0;
        Ok(())
    }

    fn send(&self, job: FrameJob) -> std::result::Result<(), Closed> {
        self.jobs
            .as_ref()
            .ok_or(Closed)?
            .send(job)
            .map_err(|_| Closed)
    }
}

fn worker(
    keys: Arc<Keys>,
    mut sealer: FrameSealer,
    jobs: Receiver<FrameJob>,
    out: Sender<(Vec<u8>, FrameEntry)>,
    spares: Spares,
) {
    for job in jobs {
        let sealed = sealer.seal_into(&keys, &job, spares.take());
        drop(job); // lets the chunker reuse its buffer sooner
        if out.send(sealed).is_err() {
            return;
        }
    }
}

/// Appends sealed frames to packs and hands each full pack to the uploader,
/// so sealing never waits for storage.
fn packer(repo: &Repository, frames: Receiver<(Vec<u8>, FrameEntry)>, packs: Sender<PackBuilder>) {
    let pack_size = repo.config().pack_size as usize;
    let mut builder = PackBuilder::new();
    for (sealed, entry) in frames {
        builder.add_frame(sealed, entry);
        if builder.len() >= pack_size && packs.send(std::mem::take(&mut builder)).is_err() {
            return; // the uploader failed; its error is reported when it is joined
        }
    }
    if !builder.is_empty() {
        let _ = packs.send(builder);
    }
}

/// Writes packs, then an index file for every few packs written. An index
/// file only ever lists packs that are already durable.
fn uploader(
    repo: &Repository,
    packs: Receiver<PackBuilder>,
    progress: &dyn Progress,
    spares: Spares,
) -> Result<PackerOut> {
    let mut unindexed: Vec<PackRecord> = Vec::new();
    let mut out = PackerOut {
        packs: 0,
        bytes: 0,
        ids: Vec::new(),
        unindexed: Vec::new(),
    };
    for builder in packs {
        let pack = builder.finish(repo.keys());
        let parts: Vec<&[u8]> = pack.parts.iter().map(|p| p.as_slice()).collect();
        let path = pack_path_for(&pack.id);
        repo.backend().write_parts(&path, &parts)?;
        // Frames of trees and chunk maps: the next backup reads them, and a
        // remote repository's cache may keep them now (the parts are the
        // magic and version, then one part per frame in order, then the
        // header).
        let mut offset = pack.parts.first().map_or(0, |p| p.len() as u64);
        for (frame, bytes) in pack.frames.iter().zip(pack.parts.iter().skip(1)) {
            if bytes.len() != frame.sealed_len as usize {
                break; // not the layout above: keep nothing
            }
            if frame.blobs.iter().any(|b| b.kind != BlobKind::Data) {
                repo.backend().keep_metadata(&path, offset, bytes);
            }
            offset += frame.sealed_len as u64;
        }
        out.packs += 1;
        out.bytes += pack.size;
        out.ids.push(pack.id);
        progress.stored(pack.size);
        drop(parts);
        for part in pack.parts {
            spares.give(part);
        }
        release_freed_memory();
        unindexed.push(PackRecord {
            id: pack.id,
            size: pack.size,
            frames: pack.frames,
        });
        if unindexed.len() >= PACKS_PER_INDEX {
            out.bytes += repo.write_index(&unindexed)?.1;
            unindexed.clear();
        }
    }
    out.unindexed = unindexed;
    Ok(out)
}

/// Gives memory freed since the last call back to the system. Chunks of
/// 0.5-4 MiB are allocated by the reading thread and freed by others; with
/// glibc that pattern leaves freed pages in the heaps, and the process grew
/// with the size of the backup (411 MiB peak for a 50 GiB stream). Called
/// once per pack, it keeps the peak flat at a negligible cost.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

struct Walker<'w, 'a> {
    writer: &'w mut Writer<'a>,
    cdc: ChunkerKind,
    progress: &'w dyn Progress,
    exclude: &'w [PathBuf],
    filter: Option<&'w dyn PathFilter>,
    opener: Option<&'w dyn DbOpener>,
    errors: Vec<FileError>,
    /// Files that changed while being read.
    changed: Vec<String>,
    /// Ransomware-like findings.
    suspect: Vec<String>,
    guard: &'w GuardOptions,
    summary: SourceSummary,
    /// The source path as given, to name files relative to it.
    root: PathBuf,
    /// The folder source's latest earlier unsuspected snapshot, which the
    /// guard compares with (walked beside the folder: see [`Walker::walk`]).
    earlier_snapshot: Option<Id>,
    /// What the walk of a folder source saw, for the guard.
    watch: FolderWatch,
    /// Where the parent's and the earlier snapshot's trees are read from.
    repo: &'w Repository,
    /// Databases of the folder being walked whose journal sits beside them.
    with_journal: HashSet<PathBuf>,
    /// Where files about to be read are announced (see [`read_ahead`]),
    /// and how many announced files the thread has not yet closed.
    ahead: Option<Ahead>,
    /// How many files ahead.
    ahead_by: usize,
}

/// For each folder source, its root in the latest earlier unsuspected
/// snapshot that holds it: the guard compares tonight's folder with it,
/// folder by folder, and a database found inside gets its delta map and
/// checks from it. Suspect snapshots do not count, so an alarm stands
/// until a person clears it.
fn earlier_roots(
    snaps: &[(Id, Snapshot)],
    sources: &[BackupSource],
) -> HashMap<String, (Id, Node)> {
    let mut out = HashMap::new();
    for src in sources {
        let BackupSource::Path(p) = src else { continue };
        if !p.is_dir() {
            continue;
        }
        let Ok(folder) = fs::canonicalize(p) else {
            continue;
        };
        let folder = folder.display().to_string();
        let earlier = snaps
            .iter()
            .rev()
            .filter(|(_, s)| !s.is_suspect())
            .find_map(|(id, s)| {
                s.sources
                    .iter()
                    .find(|x| x.kind == SourceKind::Path && x.path == folder)
                    .map(|x| (*id, x.node.clone()))
            });
        if let Some(e) = earlier {
            out.insert(folder, e);
        }
    }
    out
}

/// How deep [`Walker::gone_folder`] follows a folder of the earlier
/// snapshot that is gone.
const MAX_GONE_DEPTH: usize = 256;

// One per entry, moved straight into its tree: boxing would add an
// allocation per file for nothing.
#[allow(clippy::large_enum_variant)]
enum Walk {
    Node(Node),
    Skipped,
}

fn mtime_of(md: &fs::Metadata) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(md.mtime(), md.mtime_nsec() as u32)
}

impl Walker<'_, '_> {
    fn fail(&mut self, path: &Path, e: impl std::fmt::Display) -> Walk {
        self.errors.push(FileError {
            path: crate::name::shown(path),
            message: e.to_string(),
        });
        self.summary.errors += 1;
        Walk::Skipped
    }

    /// Chunks a reader and stores its content; returns ids and size.
    fn store_stream(
        &mut self,
        reader: impl Read,
        kind: ChunkerKind,
        hint: u64,
    ) -> std::result::Result<std::io::Result<(Vec<Id>, u64)>, Closed> {
        self.store_watched(reader, kind, hint, None)
    }

    /// [`store_stream`](Walker::store_stream), counting changed pages that
    /// look random when `watch` is given.
    fn store_watched(
        &mut self,
        reader: impl Read,
        kind: ChunkerKind,
        hint: u64,
        mut watch: Option<&mut EntropyWatch<'_>>,
    ) -> std::result::Result<std::io::Result<(Vec<Id>, u64)>, Closed> {
        let mut ch = Chunker::with_size_hint(reader, kind, hint);
        let mut ids = Vec::new();
        let mut size = 0u64;
        if let ChunkerKind::Fixed { size: chunk } = kind {
            // Pages come in runs, hashed side by side.
            let chunk = chunk as usize;
            loop {
                let run = match ch.next_run() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => return Ok(Err(e)),
                };
                let run_len = run.len();
                let run_ids = self.writer.keys.blob_ids_of_run(run, chunk);
                for (k, id) in run_ids.into_iter().enumerate() {
                    let at = k * chunk..((k + 1) * chunk).min(run_len);
                    size += at.len() as u64;
                    let bytes = &ch.last()[at.clone()];
                    self.take_chunk(id, bytes, || ch.share_in_run(at), &mut watch, &mut ids)?;
                }
            }
        } else {
            loop {
                match ch.next_chunk() {
                    Ok(Some(c)) => {
                        size += c.len() as u64;
                        let id = self.writer.keys.blob_id(c);
                        self.take_chunk(id, ch.last(), || ch.share_last(), &mut watch, &mut ids)?;
                    }
                    Ok(None) => break,
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        self.summary.bytes += size;
        Ok(Ok((ids, size)))
    }

    /// One chunk of a stream, with its id: progress, the entropy watch, and
    /// storing it when new (`share` makes its handle, only then).
    fn take_chunk(
        &mut self,
        id: Id,
        bytes: &[u8],
        share: impl FnOnce() -> SharedChunk,
        watch: &mut Option<&mut EntropyWatch<'_>>,
        ids: &mut Vec<Id>,
    ) -> std::result::Result<(), Closed> {
        self.progress.read(bytes.len() as u64);
        if let Some(w) = watch.as_deref_mut() {
            w.pages += 1;
            if w.parent.get(ids.len()) != Some(&id) {
                w.changed += 1;
                if crate::guard::page_is_noise(bytes, ids.len()) {
                    w.changed_random += 1;
                }
            }
        }
        // Only a new chunk needs a handle of its own.
        if !self.writer.has(&id) {
            self.writer.put_chunk(BlobKind::Data, id, share())?;
        }
        ids.push(id);
        Ok(())
    }

    /// Captures a database into an image node; its chunk map is a delta on
    /// `parent`'s when that is cheaper.
    fn db_node(
        &mut self,
        mut node: Node,
        path: &Path,
        mut capture: Box<dyn DbCapture>,
        parent: Option<&(ChunkMap, Vec<Id>)>,
        earlier_info: Option<(&DatabaseInfo, String)>,
    ) -> std::result::Result<Walk, Closed> {
        let chunk_size = capture.page_size();
        let mut watch = parent.map(|(_, ids)| EntropyWatch {
            parent: ids.as_slice(),
            pages: 0,
            changed: 0,
            changed_random: 0,
        });
        let stored = self.store_watched(
            &mut capture,
            ChunkerKind::Fixed { size: chunk_size },
            u64::MAX,
            watch.as_mut(),
        )?;
        let finished = capture.finish();
        match (stored, finished) {
            (Ok((ids, size)), Ok(info)) => {
                for p in &info.problems {
                    self.fail(path, format!("database is damaged: {p}"));
                }
                if let Some(p) = info.problems.first() {
                    self.suspect.push(format!(
                        "{}: no longer a valid database ({p})",
                        crate::name::shown(path)
                    ));
                }
                if let Some((before, snapshot)) = earlier_info {
                    self.suspect.extend(crate::guard::database_findings(
                        &crate::name::shown(path),
                        before,
                        &info,
                        &snapshot,
                        self.guard,
                    ));
                }
                if let Some(w) = &watch {
                    let share = w.changed_random as f64 / w.pages.max(1) as f64;
                    if w.changed_random >= SUSPECT_MIN_PAGES && share >= self.guard.page_share {
                        self.suspect.push(format!(
                            "{}: {:.0}% of its pages ({} of {}) changed into random-looking bytes that are no longer database pages since the last backup, as when ransomware encrypts a file",
                            crate::name::shown(path),
                            share * 100.0,
                            w.changed_random,
                            w.pages
                        ));
                    }
                }
                node.kind = NodeKind::DbImage;
                node.size = size;
                node.page_size = Some(chunk_size);
                node.chunk_map = Some(self.store_map(&ids, chunk_size, parent)?);
                node.database = Some(Box::new(info));
                self.summary.files += 1;
                Ok(Walk::Node(node))
            }
            (stored, finished) => {
                let e = match (stored, finished) {
                    (Err(e), _) => e.to_string(),
                    (_, Err(e)) => e,
                    _ => unreachable!("both succeeded above"),
                };
                // A database that was captured before and cannot be now is
                // what encryption looks like, not only a read error; one
                // another program keeps locked is not.
                if let (Some((_, snapshot)), false) = (&earlier_info, e.contains(LOCKED)) {
                    self.suspect.push(format!(
                        "{}: was a database in snapshot {snapshot} and can no longer be read ({e})",
                        crate::name::shown(path)
                    ));
                }
                Ok(self.fail(path, e))
            }
        }
    }

    /// The entry of a database found unchanged since `was`, its entry in
    /// the parent snapshot: the same chunk map and what was learned of it,
    /// once every blob it names (pages and map) is known sound and noted as
    /// relied on. None when one is not: it is captured again.
    fn unchanged_db(&mut self, node: &Node, was: &Node) -> Option<Node> {
        let map = was.chunk_map.as_ref()?;
        let ids = self.repo.resolve_map(self.writer.index, map).ok()?;
        let mut all = map.layers.iter().flat_map(|l| &l.blobs).chain(&ids);
        if !all.clone().all(|id| self.writer.index.is_sound(id)) {
            return None;
        }
        if !all.all(|id| self.writer.dedup(id)) {
            return None;
        }
        let mut n = node.clone();
        n.kind = NodeKind::DbImage;
        n.size = was.size;
        n.page_size = was.page_size;
        n.chunk_map = was.chunk_map.clone();
        n.database = was.database.clone();
        n.ctime = was.ctime;
        n.inode = was.inode;
        self.summary.files += 1;
        self.summary.files_unchanged += 1;
        self.summary.bytes += n.size;
        self.summary.bytes_unchanged += n.size;
        self.progress.read(n.size);
        Some(n)
    }

    /// The guard's findings for a folder source once walked: documents
    /// broken, renamed or deleted in large numbers (databases gone from it
    /// are named as the walk finds them).
    fn folder_findings(&mut self, shown: &str) {
        self.suspect.extend(crate::guard::folder_findings(
            shown,
            &self.watch,
            self.guard,
        ));
    }

    /// A folder of the earlier snapshot that is gone: each file under it
    /// counts as deleted, and each database as gone.
    fn gone_folder(&mut self, node: &Node, rel: &Path, depth: usize) {
        // A forged snapshot could nest (or share) subtrees without end.
        if depth > MAX_GONE_DEPTH {
            return;
        }
        let Some(t) = node.subtree else { return };
        let Ok(tree) = self.repo.load_tree(self.writer.index, &t) else {
            return;
        };
        for c in &tree.nodes {
            if c.name.unsafe_reason().is_some() {
                continue;
            }
            let r = rel.join(c.name.as_os_str());
            match c.kind {
                NodeKind::Dir => self.gone_folder(c, &r, depth + 1),
                NodeKind::File | NodeKind::DbImage => {
                    if c.kind == NodeKind::DbImage {
                        self.gone_database(&r);
                    }
                    self.watch.deleted(r);
                }
                _ => {}
            }
        }
    }

    /// Waits until the read-ahead thread holds no file open (at most ten
    /// seconds: a hint stuck on hung storage concerns another file).
    fn read_ahead_idle(&self) {
        let Some((_, busy)) = &self.ahead else { return };
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while busy.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn gone_database(&mut self, rel: &Path) {
        if let Some(snap) = self.earlier_snapshot {
            self.suspect.push(format!(
                "{}: was a database in snapshot {} and is gone (renamed away or deleted)",
                crate::name::shown(&self.root.join(rel)),
                snap.short()
            ));
        }
    }

    /// Stores the chunk map of an image: a delta on its parent's map when
    /// that is cheaper, a full layer otherwise.
    fn store_map(
        &mut self,
        ids: &[Id],
        chunk_size: u32,
        parent: Option<&(ChunkMap, Vec<Id>)>,
    ) -> std::result::Result<ChunkMap, Closed> {
        // A delta reuses the parent's layers: only when each is soundly
        // stored (and then its pack must outlive this backup).
        let parent = parent.filter(|(m, _)| {
            m.layers
                .iter()
                .flat_map(|l| &l.blobs)
                .all(|b| self.writer.dedup(b))
        });
        let (mut layers, kind, entries, blobs) =
            match chunkmap::plan(ids, parent.map(|(m, p)| (m, p.as_slice())), chunk_size) {
                chunkmap::Plan::Delta(changes) => (
                    parent.map(|(m, _)| m.layers.clone()).unwrap_or_default(),
                    LayerKind::Delta,
                    changes.len() as u64,
                    chunkmap::encode_delta(&changes),
                ),
                chunkmap::Plan::Full => (
                    Vec::new(),
                    LayerKind::Full,
                    ids.len() as u64,
                    chunkmap::encode_full(ids),
                ),
            };
        let mut blob_ids = Vec::with_capacity(blobs.len());
        for b in blobs {
            blob_ids.push(self.writer.put(BlobKind::Map, b)?);
        }
        layers.push(MapLayer {
            kind,
            entries,
            blobs: blob_ids,
        });
        Ok(ChunkMap {
            chunk_size,
            chunks: ids.len() as u64,
            layers,
        })
    }

    /// Backs up `path` as `name`. `parent` is its entry in the parent
    /// snapshot (what tells unchanged files), `earlier` its entry in the
    /// snapshot the guard compares with; often the same. Both snapshots'
    /// trees are read folder by folder beside the walk, so memory follows
    /// the depth of the folder, not its number of files.
    fn walk(
        &mut self,
        path: &Path,
        name: FsName,
        parent: Option<&Node>,
        earlier: Option<&Node>,
        md: Option<fs::Metadata>,
        known_db: Option<bool>,
    ) -> std::result::Result<Walk, Closed> {
        let md = match md.map(Ok).unwrap_or_else(|| fs::symlink_metadata(path)) {
            Ok(m) => m,
            Err(e) => return Ok(self.fail(path, e)),
        };
        let ft = md.file_type();
        if let Some(f) = self.filter {
            if path != self.root && !f.keep(path, ft.is_dir()) {
                return Ok(Walk::Skipped);
            }
        }
        let mut node = Node::new(name, NodeKind::File);
        node.mode = Some(md.permissions().mode());
        node.mtime = mtime_of(&md);
        if ft.is_dir() {
            // Excluded paths are canonical; so is what they are compared to,
            // whatever form (relative, through links) the source was given in.
            if !self.exclude.is_empty()
                && fs::canonicalize(path).is_ok_and(|c| self.exclude.contains(&c))
            {
                return Ok(Walk::Skipped);
            }
            node.kind = NodeKind::Dir;
            let mut entries: Vec<(FsName, PathBuf)> = match fs::read_dir(path) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| (FsName::from(e.file_name()), e.path()))
                    .collect(),
                Err(e) => return Ok(self.fail(path, e)),
            };
            entries.sort();
            // Journals of databases found here are covered by their capture.
            // Only an entry with a companion beside it needs its header read.
            if let Some(opener) = self.opener {
                let present: HashSet<&PathBuf> = entries.iter().map(|(_, p)| p).collect();
                let mut skip: HashSet<PathBuf> = HashSet::new();
                for (_, p) in &entries {
                    let c = opener.companions(p);
                    if c.iter().any(|c| present.contains(c)) && opener.is_database(p) {
                        skip.extend(c);
                        // Its journal is not backed up: it is never taken
                        // as an unchanged plain file (its last commits may
                        // be in the journal alone).
                        self.with_journal.insert(p.clone());
                    }
                }
                entries.retain(|(_, p)| !skip.contains(p));
            }
            // The parent's and the earlier snapshot's entries of this
            // folder, sorted like `entries`; an unreadable tree only means
            // reading (or comparing with nothing).
            let subtree = |n: Option<&Node>| n.filter(|n| n.kind == NodeKind::Dir)?.subtree;
            let load = |t: Option<Id>| -> Vec<Node> {
                t.and_then(|t| self.repo.load_tree(self.writer.index, &t).ok())
                    .map(|t| t.nodes)
                    .unwrap_or_default()
            };
            let before = load(subtree(parent));
            let same = subtree(parent).is_some() && subtree(parent) == subtree(earlier);
            let then_own = if same {
                Vec::new()
            } else {
                load(subtree(earlier))
            };
            let then: &[Node] = if same { &before } else { &then_own };
            let find = |nodes: &[Node], n: &FsName| -> Option<usize> {
                nodes.binary_search_by(|b| b.name.cmp(n)).ok()
            };
            let rel_dir = path
                .strip_prefix(&self.root)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            // What went from this folder since the earlier snapshot.
            let mut gone = Vec::new();
            let mut before_files = 0u64;
            if subtree(earlier).is_some() {
                for t in then {
                    let present = entries.binary_search_by(|(n, _)| n.cmp(&t.name)).is_ok();
                    match t.kind {
                        NodeKind::File | NodeKind::DbImage => {
                            before_files += 1;
                            if !present && t.name.unsafe_reason().is_none() {
                                if t.kind == NodeKind::DbImage {
                                    self.gone_database(&rel_dir.join(t.name.as_os_str()));
                                }
                                gone.push(PathBuf::from(t.name.as_os_str()));
                            }
                        }
                        NodeKind::Dir if !present && t.name.unsafe_reason().is_none() => {
                            self.gone_folder(t, &rel_dir.join(t.name.as_os_str()), 0);
                        }
                        _ => {}
                    }
                }
            }
            let mut added = Vec::new();
            let mut tree = Tree::default();
            let comparing = subtree(earlier).is_some();
            // Each entry is stat'ed once, here; files that will be read
            // are announced a few entries ahead.
            let metas: Vec<Option<fs::Metadata>> = entries
                .iter()
                .map(|(_, p)| fs::symlink_metadata(p).ok())
                .collect();
            let to_read: Vec<bool> = entries
                .iter()
                .zip(&metas)
                .map(|((n, _), m)| {
                    m.as_ref().is_some_and(|m| {
                        m.is_file()
                            && m.len() > 0
                            && !find(&before, n).is_some_and(|i| unchanged(&before[i], m))
                    })
                })
                .collect();
            // Which of those are databases, asked once here: they are
            // captured through SQLite, never announced (SQLite's locks
            // belong to the process, and any other open and close of the
            // file could drop them; a live database's writer then sees
            // our reads race its commits).
            let is_db: Vec<Option<bool>> = entries
                .iter()
                .zip(&to_read)
                .map(|((_, p), &r)| match self.opener {
                    Some(o) if r => Some(o.is_database(p)),
                    None if r => Some(false),
                    _ => None,
                })
                .collect();
            let to_read: Vec<bool> = to_read
                .iter()
                .zip(&is_db)
                .map(|(&r, d)| r && *d == Some(false))
                .collect();
            let announce = |w: &Walker<'_, '_>, j: usize| {
                if let (Some((tx, busy)), true) = (&w.ahead, to_read.get(j) == Some(&true)) {
                    let len = metas[j].as_ref().map_or(0, |m| m.len());
                    // Never waits: a hint that does not fit is dropped.
                    busy.fetch_add(1, Ordering::SeqCst);
                    if tx.try_send((entries[j].1.clone(), len)).is_err() {
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            };
            for j in 0..self.ahead_by.min(entries.len()) {
                announce(self, j);
            }
            for (i, ((n, p), md)) in entries.iter().zip(metas.iter()).enumerate() {
                announce(self, i + self.ahead_by);
                let was = find(&before, n).map(|i| &before[i]);
                let then_node = find(then, n).map(|i| &then[i]);
                let walked = self.walk(p, n.clone(), was, then_node, md.clone(), is_db[i])?;
                let now_kind = match &walked {
                    Walk::Node(child) => Some(child.kind),
                    // Not taken (filtered out, unreadable): what the folder's
                    // pass saw on disk.
                    Walk::Skipped => md.as_ref().filter(|m| m.is_file()).map(|_| NodeKind::File),
                };
                let is_file =
                    |k: Option<NodeKind>| matches!(k, Some(NodeKind::File | NodeKind::DbImage));
                if comparing && n.unsafe_reason().is_none() {
                    let name = PathBuf::from(n.as_os_str());
                    match then_node.map(|t| t.kind) {
                        // New here, as a file (read or not).
                        None if is_file(now_kind) => added.push(name),
                        // A folder then, something else or nothing now.
                        Some(NodeKind::Dir) if now_kind != Some(NodeKind::Dir) => {
                            let t = then_node.expect("matched");
                            self.gone_folder(t, &rel_dir.join(&name), 0);
                        }
                        // A file then, not a file now (a folder, a link, or
                        // not taken): gone, as if deleted.
                        Some(k @ (NodeKind::File | NodeKind::DbImage)) if !is_file(now_kind) => {
                            if k == NodeKind::DbImage {
                                self.gone_database(&rel_dir.join(&name));
                            }
                            gone.push(name);
                        }
                        _ => {}
                    }
                }
                if let Walk::Node(child) = walked {
                    tree.nodes.push(child);
                }
            }
            if comparing {
                self.watch.folder(&rel_dir, before_files, &gone, &added);
            }
            self.summary.dirs += 1;
            node.subtree = Some(self.writer.put(BlobKind::Tree, tree.encode())?);
        } else if ft.is_symlink() {
            node.kind = NodeKind::Symlink;
            match fs::read_link(path) {
                Ok(t) => node.target = Some(FsName::from(t.into_os_string())),
                Err(e) => return Ok(self.fail(path, e)),
            }
        } else if ft.is_file() {
            self.progress.file(path);
            let rel = path.strip_prefix(&self.root).ok().map(Path::to_path_buf);
            // The database this was in the earlier snapshot, if it was one.
            let earlier_db = earlier.filter(|e| e.kind == NodeKind::DbImage);
            // An unchanged plain file is what it was: not a database (and
            // if the guard's snapshot says it was one, it is looked at).
            // The guard's snapshot must agree with the parent: after an
            // alarm the parent is the suspect snapshot, and a document
            // encrypted in place must go on being judged against the last
            // good one.
            let agrees = |was: &Node| {
                earlier
                    .is_none_or(|e| e.size == was.size && e.content.first() == was.content.first())
            };
            let reusable = parent.filter(|p| {
                earlier_db.is_none()
                    && !self.with_journal.contains(path)
                    && unchanged(p, &md)
                    && agrees(p)
                    && p.content.iter().all(|id| self.writer.index.is_sound(id))
            });
            if let Some(was) = reusable {
                // Noted as relied on (every id is known sound).
                if was.content.iter().all(|id| self.writer.dedup(id)) {
                    node.content = was.content.clone();
                    node.size = was.size;
                    node.ctime = was.ctime;
                    node.inode = was.inode;
                    self.summary.files += 1;
                    self.summary.files_unchanged += 1;
                    self.summary.bytes += node.size;
                    self.summary.bytes_unchanged += node.size;
                    self.progress.read(node.size);
                    // Counted for the guard like any document, as one
                    // that did not change.
                    if crate::guard::matches_its_name(path, &[]).is_some() {
                        self.watch.known += 1;
                    }
                    return Ok(Walk::Node(node));
                }
            }
            // An unchanged database is what it was, like an unchanged file:
            // nothing beside it that holds data (checked first), then the
            // size, times and inode that its last capture recorded (only
            // when nothing moved while it was read; see `db_settled`). The
            // guard's snapshot must agree, and a damaged one is read again.
            let db_reusable = parent.filter(|p| {
                p.kind == NodeKind::DbImage
                    && p.database.as_ref().is_some_and(|d| d.problems.is_empty())
                    && earlier.is_none_or(|e| e.chunk_map == p.chunk_map)
                    && same_stat(p, &md)
            });
            if let (Some(was), Some(opener)) = (db_reusable, self.opener) {
                let unmoved = || fs::symlink_metadata(path).is_ok_and(|now| same_stat(was, &now));
                if opener.quiet(path) && unmoved() {
                    if let Some(n) = self.unchanged_db(&node, was) {
                        return Ok(Walk::Node(n));
                    }
                }
            }
            let earlier_snap = self.earlier_snapshot.map(|s| s.short());
            if let Some(opener) = self
                .opener
                .filter(|o| known_db.unwrap_or_else(|| o.is_database(path)))
            {
                // Its chunk map then, resolved: the parent of tonight's image.
                let map = earlier_db.and_then(|e| {
                    let m = e.chunk_map.as_ref()?;
                    let ids = self.repo.resolve_map(self.writer.index, m).ok()?;
                    Some((m.clone(), ids))
                });
                let before =
                    earlier_db.and_then(|e| Some((e.database.as_deref()?, earlier_snap.clone()?)));
                // SQLite's locks belong to the process and any close of the
                // file drops them: the read-ahead thread must be done with
                // every file before a database is opened (it opens none
                // afterwards while this capture runs).
                self.read_ahead_idle();
                // Whether its times vouch is decided before it is read, as
                // for a file (a long capture must not make fresh times old).
                let vouch = settled(&md);
                return match opener.open(path) {
                    Ok(capture) => Ok(
                        match self.db_node(node, path, capture, map.as_ref(), before)? {
                            Walk::Node(mut n) if n.kind == NodeKind::DbImage => {
                                (n.ctime, n.inode) = db_settled(path, &md, vouch, opener);
                                Walk::Node(n)
                            }
                            walked => walked,
                        },
                    ),
                    Err(e) => {
                        let locked = e.to_string().contains(LOCKED);
                        if let (Some(_), Some(snap), false) = (earlier_db, &earlier_snap, locked) {
                            self.suspect.push(format!(
                                "{}: was a database in snapshot {snap} and can no longer be read ({e})",
                                crate::name::shown(path),
                            ));
                        }
                        Ok(self.fail(path, e))
                    }
                };
            }
            if let (Some(_), Some(_), Some(snap)) = (earlier_db, self.opener, &earlier_snap) {
                self.suspect.push(format!(
                    "{}: was a database in snapshot {snap} and is no longer a valid one (its header is gone: encrypted or overwritten?)",
                    crate::name::shown(path),
                ));
            }
            (node.ctime, node.inode) = settled(&md);
            let f = match fs::File::open(path) {
                Ok(f) => f,
                Err(e) => return Ok(self.fail(path, e)),
            };
            match self.store_stream(f, self.cdc, md.len())? {
                Ok((ids, size)) => {
                    node.content = ids;
                    node.size = size;
                    self.summary.files += 1;
                    // A document that changed since the earlier snapshot is
                    // judged by what its name promises (its first bytes,
                    // still in the page cache).
                    let changed = earlier.is_some_and(|e| {
                        e.content.first() != node.content.first() || e.size != size
                    });
                    if let Some(fits) =
                        crate::guard::matches_its_name(path, &head_of(path, changed))
                    {
                        self.watch.known += 1;
                        if changed && !fits {
                            self.watch
                                .broken(rel.clone().unwrap_or_else(|| path.to_path_buf()));
                        }
                    }
                    // Size or mtime moved while reading: say so (the copy
                    // may be torn), but keep it: it is the best there is.
                    let after = fs::symlink_metadata(path).ok();
                    let same = after.as_ref().is_some_and(|a| {
                        a.len() == size && mtime_of(a) == node.mtime && a.len() == md.len()
                    });
                    if !same {
                        self.changed.push(crate::name::shown(path));
                    }
                }
                Err(e) => return Ok(self.fail(path, e)),
            }
        } else {
            // Sockets, pipes and devices hold no data worth restoring.
            return Ok(Walk::Skipped);
        }
        Ok(Walk::Node(node))
    }
}

/// Whether a file is what its entry `was` in the parent snapshot says,
/// without reading it: same size, modification time, status change time
/// and inode. The status change time is what makes this safe against
/// tools that put a modification time back (`touch -d`, unpacking an
/// archive, copying with times kept): the kernel sets it on every write,
/// rename or change of mode, and no system call can set it to a chosen
/// value. An entry without a change time (one taken by a version before
/// 3, or one the file's times were too fresh to trust; see [`settled`])
/// is never unchanged.
fn unchanged(was: &Node, md: &fs::Metadata) -> bool {
    was.kind == NodeKind::File && same_stat(was, md)
}

/// Whether `md` shows the size, times and inode recorded in `was` (which
/// must have a change time).
fn same_stat(was: &Node, md: &fs::Metadata) -> bool {
    was.ctime.is_some()
        && was.size == md.len()
        && was.mtime == mtime_of(md)
        && was.ctime == ctime_of(md)
        && was.inode == Some(md.ino())
}

/// The change time and inode to record for a database just captured:
/// `vouch` (what [`settled`] said of `md`, its stat taken before it was
/// opened) when nothing moved while it was read (nothing beside it holds
/// data now, checked first, and then the same size, times and inode). A commit in WAL
/// mode stays in the WAL file until a checkpoint writes it into the
/// database file, which moves the file's times, and only then may the WAL
/// be emptied: so a quiet database whose file has not moved holds what
/// this capture read. Otherwise nothing, and the next backup captures it
/// again.
fn db_settled(
    path: &Path,
    md: &fs::Metadata,
    vouch: (Option<chrono::DateTime<chrono::Utc>>, Option<u64>),
    opener: &dyn DbOpener,
) -> (Option<chrono::DateTime<chrono::Utc>>, Option<u64>) {
    let companion = !opener.quiet(path);
    let still = fs::symlink_metadata(path).is_ok_and(|a| {
        a.len() == md.len()
            && mtime_of(&a) == mtime_of(md)
            && ctime_of(&a) == ctime_of(md)
            && a.ino() == md.ino()
    });
    if companion || !still {
        (None, None)
    } else {
        vouch
    }
}

/// The change time and inode to record for a file about to be read, or
/// nothing when its times are too fresh to vouch for what is read. A file
/// written within the last two seconds (or "in the future", after the
/// clock went back) could change again within the same tick of a coarse
/// clock (FAT and some network filesystems count in whole or even
/// seconds) without its times moving; such an entry is read again next
/// time, as git does with its racily clean index entries. Times in whole
/// seconds (both with no nanoseconds) never vouch either: they come from a
/// coarse filesystem or from a server whose clock is not this one's.
fn settled(md: &fs::Metadata) -> (Option<chrono::DateTime<chrono::Utc>>, Option<u64>) {
    const FRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
    let now = chrono::Utc::now();
    let ctime = ctime_of(md);
    let fresh = |t: Option<chrono::DateTime<chrono::Utc>>| t.is_none_or(|t| now - t < FRESH);
    // Whole seconds: a filesystem (or a server, whose clock is not ours)
    // that keeps coarse times; no margin on our clock can vouch for them.
    let coarse = md.mtime_nsec() == 0 && md.ctime_nsec() == 0;
    if coarse || fresh(mtime_of(md)) || fresh(ctime) {
        (None, None)
    } else {
        (ctime, Some(md.ino()))
    }
}

fn ctime_of(md: &fs::Metadata) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(md.ctime(), md.ctime_nsec() as u32)
}

/// The first bytes of a file that changed (empty when it did not, or on
/// error), for the guard's format check.
fn head_of(path: &Path, changed: bool) -> Vec<u8> {
    let mut head = Vec::new();
    if changed {
        if let Ok(f) = fs::File::open(path) {
            let _ = f.take(4096).read_to_end(&mut head);
        }
    }
    head
}

/// Indexes the packs on storage that no index lists, after checking each
/// whole (name, header, every blob id), so their data is reused instead of
/// stored again. An interrupted backup or a full disk leaves such packs;
/// one that does not check out is left alone (prune removes it later).
fn adopt_unindexed(repo: &Repository, index: &mut Index) -> Result<usize> {
    let mut adopted = Vec::new();
    for (id, _) in index.unindexed() {
        if let Ok(rec) = crate::check::read_verified_pack(repo, &id, None) {
            adopted.push(rec);
        }
    }
    if adopted.is_empty() {
        return Ok(0);
    }
    // Only in an index file of its own is an adopted pack found by others.
    repo.write_index(&adopted)?;
    for rec in &adopted {
        index.add_pack(rec);
    }
    Ok(adopted.len())
}

/// The chunk maps of the latest snapshot of each database path, resolved.
/// A parent whose map cannot be read is skipped: the next map is then full.
fn find_parents(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, Snapshot)],
    paths: &HashSet<&str>,
) -> HashMap<String, (ChunkMap, Vec<Id>)> {
    let mut found = HashMap::new();
    if paths.is_empty() {
        return found;
    }
    for (_, snap) in snaps.iter().rev() {
        for src in &snap.sources {
            if src.kind != SourceKind::Database
                || !paths.contains(src.path.as_str())
                || found.contains_key(&src.path)
            {
                continue;
            }
            if let Some(map) = &src.node.chunk_map {
                if let Ok(ids) = repo.resolve_map(index, map) {
                    found.insert(src.path.clone(), (map.clone(), ids));
                }
            }
        }
        if found.len() == paths.len() {
            break;
        }
    }
    found
}

/// What the latest earlier (unsuspected) snapshot recorded of each database
/// named as a source, and that snapshot's short id.
fn find_earlier_infos(
    snaps: &[(Id, Snapshot)],
    paths: &HashSet<&str>,
) -> HashMap<String, (Box<DatabaseInfo>, String)> {
    let mut found = HashMap::new();
    for (id, snap) in snaps.iter().rev().filter(|(_, s)| !s.is_suspect()) {
        for src in &snap.sources {
            if src.kind == SourceKind::Database
                && paths.contains(src.path.as_str())
                && !found.contains_key(&src.path)
            {
                if let Some(info) = &src.node.database {
                    found.insert(src.path.clone(), (info.clone(), id.short()));
                }
            }
        }
        if found.len() == paths.len() {
            break;
        }
    }
    found
}

/// A source's name in the snapshot: the last part of `path` (`root` when
/// there is none), made unique among `taken`.
fn source_name(path: &Path, taken: &HashSet<String>) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_string());
    unique_name(base, taken)
}

/// A folder's name in the snapshot: its own name, also when it was given
/// as `.` or `..` (the folder they stand for, as the system resolves it);
/// `root` for `/`.
fn folder_name(path: &Path, taken: &HashSet<String>) -> String {
    match (path.file_name(), fs::canonicalize(path)) {
        (None, Ok(real)) => source_name(&real, taken),
        _ => source_name(path, taken),
    }
}

fn unique_name(base: String, taken: &HashSet<String>) -> String {
    let mut name = base.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

/// Backs up `sources` into `repo` and writes a snapshot.
///
/// Unreadable files are skipped and listed in the summary; the snapshot
/// holds everything else. Storage errors abort the backup, leaving earlier
/// snapshots untouched.
pub fn backup(
    repo: &Repository,
    sources: Vec<BackupSource>,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    if sources.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let lock = crate::lock::lock(repo, false, "backup")?;
    // Earlier snapshots, read once: parents of databases named on the
    // command line and in folders, and what each path was before. A backup
    // of standard input alone needs none of it. Read while the index loads
    // (on remote storage both are round trips).
    let only_streams = sources
        .iter()
        .all(|s| matches!(s, BackupSource::Stream { .. }));
    let (index, earlier) = std::thread::scope(|s| {
        let earlier = s.spawn(|| {
            if only_streams {
                Ok(Vec::new())
            } else {
                repo.snapshots().map(|(all, _)| all)
            }
        });
        (repo.load_index(), crate::repository::joined(earlier))
    });
    let (mut index, earlier) = (index?, earlier?);
    let packs_adopted = adopt_unindexed(repo, &mut index)?;
    let db_paths: HashSet<&str> = sources
        .iter()
        .filter_map(|s| match s {
            BackupSource::DbImage { path, .. } | BackupSource::DbDump { path, .. } => {
                Some(path.as_str())
            }
            _ => None,
        })
        .collect();
    let parents = find_parents(repo, &index, &earlier, &db_paths);
    let earlier_dbs = find_earlier_infos(&earlier, &db_paths);
    let folders = earlier_roots(&earlier, &sources);
    let roots = if opts.force_reread {
        HashMap::new()
    } else {
        parent_roots(&earlier, &sources, opts.parent)?
    };
    let keys = repo.keys().clone();
    let threads = opts.threads.max(1);
    let sealers = (0..threads)
        .map(|_| FrameSealer::new(opts.compression_level))
        .collect::<Result<Vec<_>>>()?;
    let (job_tx, job_rx) = bounded::<FrameJob>(threads * 2);
    let (frame_tx, frame_rx) = bounded(threads * 2);
    // A few spare frame buffers; more measured no faster and held more memory.
    let frame_spares = Spares::new(4);
    let cdc = ChunkerKind::ContentDefined {
        params: repo.config().chunker,
        seed: keys.chunker_seed(),
    };
    let dump_cdc = ChunkerKind::ContentDefined {
        params: repo.config().dump_chunker,
        seed: keys.chunker_seed(),
    };

    let total: u64 = if progress.wants_total() {
        sources
            .iter()
            .map(|s| match s {
                BackupSource::Path(p) => disk_usage(p),
                _ => 0,
            })
            .sum()
    } else {
        0
    };
    progress.start(Some(total).filter(|&t| t > 0));

    // Last packs of uploaders that succeeded, when another failed.
    let mut leftover: Vec<PackRecord> = Vec::new();
    let (walk_result, mut packer_result) = std::thread::scope(|scope| {
        for (i, sealer) in sealers.into_iter().enumerate() {
            let (k, rx, tx) = (keys.clone(), job_rx.clone(), frame_tx.clone());
            let spares = frame_spares.clone();
            std::thread::Builder::new()
                .name(format!("seal-{i}"))
                .spawn_scoped(scope, move || worker(k, sealer, rx, tx, spares))
                .expect("spawn worker thread");
        }
        drop(job_rx);
        drop(frame_tx);
        let (pack_tx, pack_rx) = bounded::<PackBuilder>(UPLOADERS);
        std::thread::Builder::new()
            .name("packer".into())
            .spawn_scoped(scope, move || packer(repo, frame_rx, pack_tx))
            .expect("spawn packer thread");
        // Each uploader writes its own index files, listing only the packs it
        // has already written, so no index ever runs ahead of its packs.
        let uploaders: Vec<_> = (0..UPLOADERS)
            .map(|i| {
                let (rx, spares) = (pack_rx.clone(), frame_spares.clone());
                std::thread::Builder::new()
                    .name(format!("uploader-{i}"))
                    .spawn_scoped(scope, move || uploader(repo, rx, progress, spares))
                    .expect("spawn uploader thread")
            })
            .collect();
        drop(pack_rx);

        let mut writer = Writer {
            keys: keys.clone(),
            index: &index,
            pending: IdSet::new(),
            used_packs: HashSet::new(),
            stored_again: 0,
            group: Vec::new(),
            group_len: 0,
            trees: Vec::new(),
            trees_len: 0,
            jobs: Some(job_tx),
            bytes_new: 0,
        };
        let ahead = (opts.read_ahead > 0).then(|| {
            let (tx, rx) = bounded::<(PathBuf, u64)>(opts.read_ahead);
            let busy = Arc::new(AtomicUsize::new(0));
            let b = busy.clone();
            std::thread::Builder::new()
                .name("read-ahead".into())
                .spawn_scoped(scope, move || read_ahead(rx, b))
                .expect("spawn read-ahead thread");
            (tx, busy)
        });
        let walked = walk_sources(
            &mut writer,
            repo,
            ahead,
            sources,
            &Earlier {
                parents: &parents,
                dbs: &earlier_dbs,
                folders: &folders,
                roots: &roots,
            },
            (cdc, dump_cdc),
            opts,
            progress,
        );
        let walked = walked.and_then(|w| writer.flush().map(|_| w));
        writer.jobs = None; // close the pipeline so the stages drain and stop
        let mut packed = Ok(PackerOut {
            packs: 0,
            bytes: 0,
            ids: Vec::new(),
            unindexed: Vec::new(),
        });
        for u in uploaders {
            let r = u
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("an uploader thread panicked".into())));
            packed = match (packed, r) {
                (Ok(mut a), Ok(b)) => {
                    a.ids.extend(b.ids);
                    a.unindexed.extend(b.unindexed);
                    Ok(PackerOut {
                        packs: a.packs + b.packs,
                        bytes: a.bytes + b.bytes,
                        ids: a.ids,
                        unindexed: a.unindexed,
                    })
                }
                (Ok(a), Err(e)) => {
                    leftover.extend(a.unindexed);
                    Err(e)
                }
                (Err(e), Ok(b)) => {
                    leftover.extend(b.unindexed);
                    Err(e)
                }
                (Err(e), Err(_)) => Err(e),
            };
        }
        let used = std::mem::take(&mut writer.used_packs);
        let again = writer.stored_again;
        (walked.map(|w| (w, writer.bytes_new, used, again)), packed)
    });
    // Every pack is written: one index file for the uploaders' last packs,
    // also when an uploader failed (the packs the others wrote stay
    // indexed, not left for the next backup to adopt).
    let leftover = match &mut packer_result {
        Ok(p) => std::mem::take(&mut p.unindexed),
        Err(_) => leftover,
    };
    let indexed = if leftover.is_empty() {
        Ok(0)
    } else {
        repo.write_index(&leftover).map(|(_, size)| size)
    };
    let mut packed = packer_result?;
    packed.bytes += indexed?;
    // Then the listing that proves below that every pack the snapshot
    // relies on is there. It comes after the index write, so that packs a
    // prune deleted meanwhile are seen too.
    let present = repo.list_packs()?;
    let ((src_list, errors, mut suspect, changed), bytes_new, mut used_packs, stored_again) =
        match walk_result {
            Ok(w) => w,
            Err(Closed) => {
                return Err(Error::Invalid(
                    "backup pipeline stopped unexpectedly".into(),
                ))
            }
        };

    if src_list.is_empty() {
        let why = errors
            .first()
            .map(|e| format!("{}: {}", e.path, e.message))
            .unwrap_or_default();
        return Err(Error::NotFound(format!(
            "nothing was backed up, no source could be read ({why})"
        )));
    }
    suspect.extend(lost_databases(&earlier, &src_list));
    let mut snap = Snapshot::new_now(src_list, opts.tags.clone(), opts.reason.clone());
    snap.suspect = suspect.clone();
    // What was read: the sources' bytes but for the unchanged files'.
    let bytes_read = snap.size()
        - snap
            .sources
            .iter()
            .map(|s| s.summary.bytes_unchanged)
            .sum::<u64>();
    snap.totals = SnapshotTotals {
        bytes_read,
        bytes_new,
        bytes_stored: packed.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        errors: errors.len() as u64,
    };
    // The proof that the snapshot restores as far as storage goes: every
    // pack it relies on, old or new, is there now. A prune run while this
    // backup's lock was gone (removed by hand, or not refreshed in time)
    // could have deleted some; then no snapshot is written.
    used_packs.extend(packed.ids.iter().copied());
    let vanished: Vec<&Id> = used_packs
        .iter()
        .filter(|p| !present.contains_key(p))
        .collect();
    if !vanished.is_empty() {
        return Err(Error::corrupt(
            format!("{} pack(s), e.g. {}", vanished.len(), pack_path_for(vanished[0])),
            "vanished while this backup ran (a prune after its lock was removed?); no snapshot was written, so none claims data that is gone. Run the backup again: it stores that data anew",
        ));
    }
    // An immutable repository: what this snapshot needs stays locked for
    // the next N days, old packs included.
    let locks_extended = repo.retain_for_snapshot(&used_packs)?;
    let snapshot_id = repo.save_snapshot(&snap)?;
    progress.finish();
    Ok(BackupSummary {
        locks_extended,
        packs_adopted,
        weak_packs: index.weak_packs().len(),
        blobs_stored_again: stored_again,
        snapshot_id,
        files: snap.sources.iter().map(|s| s.summary.files).sum(),
        files_unchanged: snap.sources.iter().map(|s| s.summary.files_unchanged).sum(),
        bytes_unchanged: snap.sources.iter().map(|s| s.summary.bytes_unchanged).sum(),
        dirs: snap.sources.iter().map(|s| s.summary.dirs).sum(),
        bytes_read,
        bytes_new,
        bytes_stored: packed.bytes,
        packs_written: packed.packs,
        duration_secs: started.elapsed().as_secs_f64(),
        errors,
        changed,
        suspect,
        stale_locks: lock.stale.iter().map(|l| l.describe()).collect(),
    })
}

/// What earlier snapshots hold of this backup's sources.
struct Earlier<'a> {
    /// Chunk maps of databases named as sources, resolved.
    parents: &'a HashMap<String, (ChunkMap, Vec<Id>)>,
    /// What was recorded of databases named as sources, and in which snapshot.
    dbs: &'a HashMap<String, (Box<DatabaseInfo>, String)>,
    /// Each folder source's root in its latest earlier unsuspected
    /// snapshot, and that snapshot.
    folders: &'a HashMap<String, (Id, Node)>,
    /// Each folder or file source's entry in its parent snapshot.
    roots: &'a HashMap<String, Node>,
}

/// Each folder or file source's entry in its parent snapshot: `parent`
/// when given, else the latest snapshot of this host that holds the same
/// path (a snapshot of another machine's disk says nothing of this one's
/// inodes).
fn parent_roots(
    snaps: &[(Id, Snapshot)],
    sources: &[BackupSource],
    parent: Option<Id>,
) -> Result<HashMap<String, Node>> {
    if !sources.iter().any(|s| matches!(s, BackupSource::Path(_))) {
        return Ok(HashMap::new());
    }
    let host = crate::host_name();
    let candidates: Vec<&Snapshot> = match parent {
        Some(id) => vec![snaps
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
            .ok_or_else(|| Error::Invalid(format!("--parent {}: no such snapshot", id.short())))?],
        None => snaps
            .iter()
            .rev()
            .map(|(_, s)| s)
            .filter(|s| s.host == host)
            .collect(),
    };
    let mut out = HashMap::new();
    for src in sources {
        let BackupSource::Path(p) = src else { continue };
        let Ok(path) = fs::canonicalize(p) else {
            continue;
        };
        let path = path.display().to_string();
        let found = candidates.iter().find_map(|s| {
            s.sources
                .iter()
                .find(|x| x.kind == SourceKind::Path && x.path == path)
        });
        if let Some(x) = found {
            out.insert(path, x.node.clone());
        }
    }
    Ok(out)
}

/// Sources, unreadable files and suspect findings of a walk.
type Walked = (Vec<Source>, Vec<FileError>, Vec<String>, Vec<String>);

/// Findings for sources that were databases in their latest earlier
/// (unsuspected) snapshot and are now backed up as plain files: their header
/// no longer says SQLite.
fn lost_databases(snaps: &[(Id, Snapshot)], sources: &[Source]) -> Vec<String> {
    let files: Vec<&Source> = sources
        .iter()
        .filter(|s| s.kind == SourceKind::Path && s.node.kind == NodeKind::File)
        .collect();
    let mut out = Vec::new();
    for f in files {
        // Suspect snapshots do not count: after an attack the file stays
        // "no longer a database" until a person looks.
        let before = snaps
            .iter()
            .rev()
            .filter(|(_, s)| !s.is_suspect())
            .find_map(|(id, s)| s.sources.iter().find(|x| x.path == f.path).map(|x| (id, x)));
        if let Some((id, prev)) = before {
            if prev.kind == SourceKind::Database {
                out.push(format!(
                    "{}: was a database in snapshot {} and is no longer a valid one (its header is gone: encrypted or overwritten?)",
                    f.path,
                    id.short()
                ));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn walk_sources(
    writer: &mut Writer<'_>,
    repo: &Repository,
    ahead: Option<Ahead>,
    sources: Vec<BackupSource>,
    earlier: &Earlier<'_>,
    (cdc, dump_cdc): (ChunkerKind, ChunkerKind),
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> std::result::Result<Walked, Closed> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    let mut suspect = opts.suspect.clone();
    let mut taken = HashSet::new();
    for src in sources {
        let mut w = Walker {
            writer: &mut *writer,
            cdc,
            progress,
            exclude: &opts.exclude,
            filter: opts.filter.as_deref(),
            opener: opts.db_opener.as_deref(),
            errors: Vec::new(),
            changed: Vec::new(),
            suspect: Vec::new(),
            guard: &opts.guard,
            summary: SourceSummary::default(),
            root: PathBuf::new(),
            earlier_snapshot: None,
            watch: FolderWatch::default(),
            repo,
            with_journal: HashSet::new(),
            ahead: ahead.clone(),
            ahead_by: opts.read_ahead,
        };
        let entry = match src {
            BackupSource::Path(p) => {
                let name = folder_name(&p, &taken);
                let shown = fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                w.root = p.clone();
                let then = earlier.folders.get(&shown.display().to_string());
                w.earlier_snapshot = then.map(|(id, _)| *id);
                w.watch.snapshot = then.map(|(id, _)| id.short());
                let parent = earlier.roots.get(&shown.display().to_string());
                let walked = w.walk(
                    &p,
                    FsName::from(name.as_str()),
                    parent,
                    then.map(|(_, n)| n),
                    None,
                    None,
                )?;
                if matches!(&walked, Walk::Node(n) if n.kind == NodeKind::Dir) {
                    w.folder_findings(&shown.display().to_string());
                }
                match walked {
                    Walk::Node(node) => Some(Source {
                        name,
                        kind: SourceKind::Path,
                        path: shown.display().to_string(),
                        node,
                        summary: w.summary.clone(),
                    }),
                    Walk::Skipped => None,
                }
            }
            BackupSource::Stream {
                name,
                reader,
                origin,
            } => {
                let name = source_name(Path::new(&name), &taken);
                match w.store_stream(reader, cdc, u64::MAX)? {
                    Ok((ids, size)) => {
                        let mut node = Node::new(name.clone(), NodeKind::Stream);
                        node.content = ids;
                        node.size = size;
                        node.mtime = Some(chrono::Utc::now());
                        node.mode = Some(0o600);
                        w.summary.files += 1;
                        Some(Source {
                            name,
                            kind: SourceKind::Stream,
                            path: origin.unwrap_or_else(|| "-".into()),
                            node,
                            summary: w.summary.clone(),
                        })
                    }
                    Err(e) => {
                        w.fail(Path::new(&name), e);
                        None
                    }
                }
            }
            BackupSource::DbDump {
                name,
                path,
                mut dump,
            } => {
                let name = source_name(Path::new(&name), &taken);
                let stored = w.store_stream(&mut dump, dump_cdc, u64::MAX)?;
                match (stored, dump.finish()) {
                    (Ok((ids, size)), Ok(info)) => {
                        if let Some((before, snap)) = earlier.dbs.get(&path) {
                            w.suspect.extend(crate::guard::database_findings(
                                &path,
                                before,
                                &info,
                                snap,
                                &opts.guard,
                            ));
                        }
                        let mut node = Node::new(name.clone(), NodeKind::Stream);
                        // A chunk map, as for images: a night's snapshot
                        // lists only the chunks that changed (chunk size 0:
                        // content-defined, sizes vary).
                        node.chunk_map = Some(w.store_map(&ids, 0, earlier.parents.get(&path))?);
                        node.size = size;
                        node.mtime = Some(chrono::Utc::now());
                        node.mode = Some(0o600);
                        node.database = Some(Box::new(info));
                        w.summary.files += 1;
                        Some(Source {
                            name,
                            kind: SourceKind::Database,
                            path,
                            node,
                            summary: w.summary.clone(),
                        })
                    }
                    (Err(e), _) => {
                        w.fail(Path::new(&path), e);
                        None
                    }
                    (_, Err(e)) => {
                        w.fail(Path::new(&path), e);
                        None
                    }
                }
            }
            BackupSource::DbImage {
                name,
                path,
                capture,
            } => {
                let name = source_name(Path::new(&name), &taken);
                let mut node = Node::new(name.clone(), NodeKind::DbImage);
                node.mtime = Some(chrono::Utc::now());
                node.mode = Some(0o600);
                let before = earlier
                    .dbs
                    .get(&path)
                    .map(|(info, snap)| (info.as_ref(), snap.clone()));
                match w.db_node(
                    node,
                    Path::new(&path),
                    capture,
                    earlier.parents.get(&path),
                    before,
                )? {
                    Walk::Node(node) => Some(Source {
                        name,
                        kind: SourceKind::Database,
                        path,
                        node,
                        summary: w.summary.clone(),
                    }),
                    Walk::Skipped => None,
                }
            }
        };
        errors.append(&mut w.errors);
        changed.append(&mut w.changed);
        suspect.append(&mut w.suspect);
        if let Some(e) = entry {
            taken.insert(e.name.clone());
            out.push(e);
        }
    }
    Ok((out, errors, suspect, changed))
}

/// Bytes of regular files under `path` (for the progress bar's total).
fn disk_usage(path: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    if md.is_dir() {
        fs::read_dir(path)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| disk_usage(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else if md.is_file() {
        md.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_given_as_dot_is_named_after_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let books = tmp.path().join("books");
        fs::create_dir_all(books.join("2026")).unwrap();
        let none = HashSet::new();
        // Tests run in their package's folder.
        let here = std::env::current_dir().unwrap().canonicalize().unwrap();
        let here = here.file_name().unwrap().to_string_lossy();
        assert_eq!(folder_name(Path::new("."), &none), here);
        assert_eq!(folder_name(&books.join("2026/.."), &none), "books");
        assert_eq!(folder_name(&books.join("2026"), &none), "2026");
        assert_eq!(folder_name(Path::new("/"), &none), "root");
        let taken = HashSet::from(["books".to_string()]);
        assert_eq!(folder_name(&books.join("2026/.."), &taken), "books-2");
        // A stream or database named `.` by hand is not named after a
        // folder of this machine.
        assert_eq!(source_name(Path::new("."), &none), "root");
    }

    /// Read-ahead hints for what is not a plain file by the time they are
    /// taken (a pipe, a link to one, something gone) never block: the
    /// thread finishes as soon as its hints are.
    #[test]
    fn read_ahead_never_waits_on_what_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path string we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink(&fifo, dir.path().join("link")).unwrap();
        fs::write(dir.path().join("file"), b"data").unwrap();
        let (tx, rx) = bounded(8);
        for name in ["pipe", "link", "gone", "file"] {
            tx.send((dir.path().join(name), 4)).unwrap();
        }
        drop(tx);
        let (done_tx, done_rx) = bounded(1);
        let busy = Arc::new(AtomicUsize::new(4));
        std::thread::spawn(move || {
            read_ahead(rx, busy);
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("read-ahead finished");
    }
}
