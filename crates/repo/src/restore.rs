//! The read path: snapshot → trees → frames → files.
//!
//! Restore first walks the snapshot's trees, creating folders and links and
//! planning, for every file, the frames to read: each frame once per file,
//! with every place in the file its blobs fill. Then one pipeline runs over
//! the frames of all files in order: worker threads read, authenticate and
//! decompress frames and verify every blob id, out of order and a bounded
//! distance ahead; this thread takes them in order and writes each blob at
//! its offset in a temporary file beside each destination, and renames the file into place
//! after its last byte checked out. A file whose data is damaged is never
//! renamed into place: its temporary file is removed and it is listed in the
//! summary, while the other files restore normally.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::backup::FileError;
use crate::chunker::FIXED_RUN;
use crate::confine::{
    create_temp, is_link, path_bytes, remove_in, rename_in, set_meta_fd, symlink_in, DirError,
    Target,
};
use crate::error::{Error, Result};
use crate::frames::FrameCache;
use crate::id::Id;
use crate::index::Index;
use crate::name::{escape_bytes, FsName};
use crate::pack::{open_frame, verify_run, BlobMismatch};
use crate::progress::Progress;
use crate::repository::{pack_path, Repository};
use crate::snapshot::{Node, NodeKind, Snapshot};

/// Puts restored database images in place. A plain rename over a live
/// database would leave its old `-wal` file to be replayed onto the new
/// image, and open connections on the old file; a source that knows the
/// database engine does it safely.
pub trait DbPlacer: Send + Sync {
    /// Moves the complete restored image `tmp` to `dest`, replacing what is
    /// there safely; `tmp` is gone afterwards, whatever the outcome. `record`
    /// is what the backup recorded about the database, to check it against.
    fn place(
        &self,
        tmp: &Path,
        dest: &Path,
        record: Option<&crate::snapshot::DatabaseInfo>,
    ) -> std::result::Result<(), String>;
}

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Restore only these paths (as `ls` prints them, e.g. `docs/2026`), and
    /// everything beneath them. Empty means everything.
    pub include: Vec<PathBuf>,
    pub threads: usize,
    /// Places database images; `None` renames them like other files (right
    /// for a fresh folder).
    pub db_placer: Option<std::sync::Arc<dyn DbPlacer>>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("include", &self.include)
            .field("threads", &self.threads)
            .field("db_placer", &self.db_placer.is_some())
            .finish()
    }
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            include: Vec::new(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            db_placer: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub snapshot_id: Id,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub duration_secs: f64,
    /// Files not restored because their data is damaged or unreadable.
    pub failed: Vec<FileError>,
}

/// A frame to read and the parts of one file it fills.
struct Job {
    file: usize,
    pack: Id,
    frame_offset: u64,
    sealed_len: u32,
    raw_len: u32,
    /// (offset in frame, length, blob id, offset in the file)
    parts: Vec<(u32, u32, Id, u64)>,
}

/// A decoded frame, every blob of the job verified against its id.
struct Decoded {
    frame: Arc<Vec<u8>>,
}

impl Decoded {
    fn part(&self, start: u32, len: u32) -> &[u8] {
        &self.frame[start as usize..(start + len) as usize]
    }
}

/// A file to write.
struct FileTask {
    node: Node,
    /// Its folder, an index into the folders made.
    folder: usize,
    name: FsName,
    /// Its path below the target, for people.
    rel: String,
    /// Index of its last job; files without content have none.
    jobs: usize,
}

/// Decoded bytes restore's frame cache keeps at most; frames leave it at
/// their last use in a batch, so it is seldom full.
const RESTORE_FRAME_CACHE: usize = 32 << 20;

/// Frames decoded ahead of the writer, at most this many per thread.
const AHEAD_PER_THREAD: usize = 4;

/// Plans the frame reads that rebuild one file from `content`. With
/// `gather`, every part a frame holds for this file joins that frame's one
/// job, so each frame is read and decoded once however its blobs are spread
/// over the file (after a night of scattered page edits, one frame of new
/// pages serves a dozen places in a database image); jobs then come in the
/// order of the file offset each first fills, and parts are written at
/// their offsets. Without, jobs follow the file's bytes strictly in order,
/// for readers that stream. With `by_pack` (gathering, for remote storage,
/// where a request costs a round trip), jobs go pack by pack instead, so
/// each needed stretch of a pack is fetched once.
fn plan_file(
    index: &Index,
    file: usize,
    content: &[Id],
    jobs: &mut Vec<Job>,
    gather: bool,
    by_pack: bool,
) -> Result<usize> {
    let first = jobs.len();
    let mut of_frame: HashMap<(Id, u64), usize> = HashMap::new();
    let mut at = 0u64;
    for id in content {
        let loc = index.get(id).ok_or_else(|| {
            Error::corrupt(format!("blob {}", id.short()), "missing from every index")
        })?;
        let key = (loc.pack, loc.frame_offset);
        let existing = if gather {
            of_frame.get(&key).copied()
        } else {
            (jobs.len() > first)
                .then(|| jobs.len() - 1)
                .filter(|&j| (jobs[j].pack, jobs[j].frame_offset) == key)
        };
        let j = match existing {
            Some(j) => j,
            None => {
                jobs.push(Job {
                    file,
                    pack: loc.pack,
                    frame_offset: loc.frame_offset,
                    sealed_len: loc.frame_sealed_len,
                    raw_len: loc.frame_raw_len,
                    parts: Vec::new(),
                });
                if gather {
                    of_frame.insert(key, jobs.len() - 1);
                }
                jobs.len() - 1
            }
        };
        jobs[j].parts.push((loc.offset, loc.len, *id, at));
        at += loc.len as u64;
    }
    if by_pack {
        // Packs in the order the file first needs them, each pack's frames
        // in their order in it: the reads of one pack follow each other.
        let mut rank: HashMap<Id, usize> = HashMap::new();
        for j in &jobs[first..] {
            let next = rank.len();
            rank.entry(j.pack).or_insert(next);
        }
        jobs[first..].sort_by_key(|j| (rank[&j.pack], j.frame_offset));
    }
    Ok(jobs.len() - first)
}

/// Largest span of a pack read in one request from remote storage.
const SPAN_MAX: u64 = 16 << 20;
/// The first span's largest size; each next one may be twice the one
/// before, up to `SPAN_MAX`, so the writer's first frames arrive before all
/// fetchers share the link.
const SPAN_FIRST: u64 = 1 << 20;
/// Frames of one pack at most this far apart join one span.
const SPAN_GAP: u64 = 1 << 20;
/// A span serves jobs at most this far apart in the plan.
const SPAN_REACH: usize = 256;
/// Bytes of spans fetched ahead of the writer and kept for frames still to
/// come, at most (spans the decoders need at once may add to it briefly).
const SPANS_KEPT: u64 = 128 << 20;
/// Fetchers reading spans ahead of the decoders from remote storage (the
/// decoders, as many as for a local restore, read a span themselves when
/// no fetcher has got to it yet).
const FETCHERS: usize = 8;

type SpanSlot = Arc<std::sync::OnceLock<std::result::Result<Arc<Vec<u8>>, crate::BackendError>>>;

/// A stretch of a pack read in one request.
struct Span {
    pack: Id,
    start: u64,
    end: u64,
    /// The first and the last job reading from it.
    first_job: usize,
    last_job: usize,
}

struct SpanState {
    /// Spans being read or kept.
    slots: HashMap<usize, SpanSlot>,
    /// Spans dropped: their frames, if still wanted, are read alone.
    gone: Vec<bool>,
    /// Bytes of the spans in `slots`.
    kept: u64,
    /// Jobs the writer has taken.
    written: usize,
    /// The first job of the span a waiting fetcher waits to read (the
    /// writer wakes fetchers only when that comes within reach).
    gate: usize,
    stop: bool,
}

/// Remote storage answers a request after a round trip, whatever its size:
/// neighbouring frames of a pack are fetched as one span, read once however
/// many threads ask for it. Fetchers read spans in the order the writer
/// first needs them, ahead of it within a memory budget, and a span is
/// dropped once the writer has taken its last job (or, at twice the
/// budget, once its first job is taken; a frame of it wanted later is read
/// alone).
struct Spans {
    /// The span each job reads its frame from.
    of: Vec<usize>,
    spans: Vec<Span>,
    state: Mutex<SpanState>,
    changed: Condvar,
    next: AtomicUsize,
    /// Jobs the decoders may run ahead of the writer.
    window: usize,
}

impl Spans {
    fn plan(jobs: &[Job], window: usize) -> Spans {
        let mut spans: Vec<Span> = Vec::new();
        let mut of = Vec::with_capacity(jobs.len());
        let mut of_frame: HashMap<(Id, u64), usize> = HashMap::new();
        let mut current: HashMap<Id, usize> = HashMap::new();
        // A span serves the jobs of one stretch of the plan: a frame wanted
        // again much later (a blob two distant files share) is read again
        // then rather than holding its span in memory all along.
        let near = |sp: &Span, ji: usize| ji - sp.last_job <= SPAN_REACH;
        for (ji, j) in jobs.iter().enumerate() {
            let key = (j.pack, j.frame_offset);
            if let Some(&si) = of_frame.get(&key).filter(|&&si| near(&spans[si], ji)) {
                spans[si].last_job = ji;
                of.push(si);
                continue;
            }
            let end = j.frame_offset + j.sealed_len as u64;
            let extend = current.get(&j.pack).copied().filter(|&si| {
                let sp = &spans[si];
                near(sp, ji)
                    && j.frame_offset >= sp.start
                    && j.frame_offset <= sp.end + SPAN_GAP
                    && end - sp.start <= (SPAN_FIRST << si.min(8)).min(SPAN_MAX)
            });
            let si = match extend {
                Some(si) => {
                    spans[si].end = spans[si].end.max(end);
                    spans[si].last_job = ji;
                    si
                }
                None => {
                    spans.push(Span {
                        pack: j.pack,
                        start: j.frame_offset,
                        end,
                        first_job: ji,
                        last_job: ji,
                    });
                    current.insert(j.pack, spans.len() - 1);
                    spans.len() - 1
                }
            };
            of_frame.insert(key, si);
            of.push(si);
        }
        let n = spans.len();
        Spans {
            of,
            spans,
            state: Mutex::new(SpanState {
                slots: HashMap::new(),
                gone: vec![false; n],
                kept: 0,
                written: 0,
                gate: usize::MAX,
                stop: false,
            }),
            changed: Condvar::new(),
            next: AtomicUsize::new(0),
            window,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fill(&self, repo: &Repository, si: usize, slot: &SpanSlot) -> Result<Arc<Vec<u8>>> {
        let sp = &self.spans[si];
        Ok(slot
            .get_or_init(|| {
                repo.backend()
                    .read_range(&pack_path(&sp.pack), sp.start, sp.end - sp.start)
                    .map(Arc::new)
            })
            .clone()?)
    }

    /// A fetcher: reads spans ahead of the writer until all are read or the
    /// restore stops.
    fn fetch_ahead(&self, repo: &Repository) {
        loop {
            let si = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(sp) = self.spans.get(si) else {
                return;
            };
            let len = sp.end - sp.start;
            let slot = {
                let mut st = self.lock();
                while !st.stop
                    && !st.gone[si]
                    && !st.slots.contains_key(&si)
                    && st.kept + len > SPANS_KEPT
                    && sp.first_job >= st.written + self.window
                {
                    st.gate = st.gate.min(sp.first_job);
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stop {
                    return;
                }
                if st.gone[si] || sp.last_job < st.written {
                    continue;
                }
                self.slot(&mut st, si)
            };
            // Errors reach the decoder that needs the span.
            let _ = self.fill(repo, si, &slot);
        }
    }

    /// The writer has taken jobs up to `written`: spans it no longer needs
    /// go, and, far over the budget, spans already begun.
    fn advance(&self, written: usize) {
        let mut st = self.lock();
        st.written = written;
        let kept = st.kept;
        let done: Vec<usize> = st
            .slots
            .keys()
            .copied()
            .filter(|&si| self.spans[si].last_job < written)
            .collect();
        for si in done {
            self.drop_span(&mut st, si);
        }
        // Far over the budget (spans the decoders made, each still wanted
        // within reach): drop those begun, the longest-lived first; a frame
        // of theirs still wanted is then read alone.
        if st.kept > 2 * SPANS_KEPT {
            let mut begun: Vec<usize> = st
                .slots
                .keys()
                .copied()
                .filter(|&si| self.spans[si].first_job < written)
                .collect();
            begun.sort_unstable_by_key(|&si| std::cmp::Reverse(self.spans[si].last_job));
            for si in begun {
                if st.kept <= SPANS_KEPT {
                    break;
                }
                self.drop_span(&mut st, si);
            }
        }
        if st.kept < kept || st.gate < written + self.window {
            st.gate = usize::MAX;
            drop(st);
            self.changed.notify_all();
        }
    }

    /// The slot of span `si`, made (and counted as kept) if it has none.
    fn slot(&self, st: &mut SpanState, si: usize) -> SpanSlot {
        if let Some(s) = st.slots.get(&si) {
            return s.clone();
        }
        let sp = &self.spans[si];
        st.kept += sp.end - sp.start;
        st.slots.entry(si).or_default().clone()
    }

    fn drop_span(&self, st: &mut SpanState, si: usize) {
        if st.slots.remove(&si).is_some() {
            st.kept -= self.spans[si].end - self.spans[si].start;
        }
        st.gone[si] = true;
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The sealed frame of job `ji`: the bytes it lies in and where in them
    /// (not copied out of its span).
    fn read(
        &self,
        repo: &Repository,
        ji: usize,
        job: &Job,
    ) -> Result<(Arc<Vec<u8>>, std::ops::Range<usize>)> {
        let (offset, len) = (job.frame_offset, job.sealed_len as u64);
        let path = pack_path(&job.pack);
        let slot = self.of.get(ji).and_then(|&si| {
            let mut st = self.lock();
            if st.gone[si] {
                return None;
            }
            Some((si, self.slot(&mut st, si)))
        });
        let Some((si, slot)) = slot else {
            let alone = repo.backend().read_range(&path, offset, len)?;
            let n = alone.len();
            return Ok((Arc::new(alone), 0..n));
        };
        let span = self.fill(repo, si, &slot)?;
        let at = (offset - self.spans[si].start) as usize;
        let within = at..at + len as usize;
        if span.get(within.clone()).is_none() {
            return Err(Error::corrupt(&path, "a frame lies outside the span read"));
        }
        Ok((span, within))
    }
}

/// Reads a frame and verifies every blob of the job it holds.
fn decode(
    repo: &Repository,
    job: &Job,
    cache: Option<&FrameCache>,
    spans: Option<(&Spans, usize)>,
) -> Result<Decoded> {
    let decoded = decode_unrecorded(repo, job, cache, spans);
    if let Err(Error::Corrupt { .. }) = &decoded {
        // Recorded so the next backup stores that data again rather than
        // deduplicating against it (best effort: storage may be read-only).
        let _ = repo.record_damaged(&job.pack, "restore");
    }
    decoded
}

fn decode_unrecorded(
    repo: &Repository,
    job: &Job,
    cache: Option<&FrameCache>,
    spans: Option<(&Spans, usize)>,
) -> Result<Decoded> {
    let path = pack_path(&job.pack);
    let open = || -> Result<Vec<u8>> {
        match spans {
            Some((s, ji)) => {
                let (buf, within) = s.read(repo, ji, job)?;
                open_frame(repo.keys(), &buf[within], job.raw_len, &path)
            }
            None => {
                let sealed =
                    repo.backend()
                        .read_range(&path, job.frame_offset, job.sealed_len as u64)?;
                open_frame(repo.keys(), &sealed, job.raw_len, &path)
            }
        }
    };
    let frame = match cache {
        Some(c) => c.get((job.pack, job.frame_offset), job.raw_len, open)?,
        None => Arc::new(open()?),
    };
    // A blob used at several places (an empty page) is verified once.
    let mut verified: Option<(u32, u32, Id)> = None;
    let parts = &job.parts;
    let mut i = 0;
    while i < parts.len() {
        let (start, len, id, _) = parts[i];
        if verified == Some((start, len, id)) {
            i += 1;
            continue;
        }
        // Blobs of one size lying end to end in the frame (database pages)
        // are hashed side by side, up to a run at a time.
        let mut k = 1;
        while k < FIXED_RUN
            && parts.get(i + k).is_some_and(|&(s, l, _, _)| {
                len > 0 && l == len && s as u64 == start as u64 + k as u64 * len as u64
            })
        {
            k += 1;
        }
        frame
            .get(start as usize..(start as usize).saturating_add(k * len as usize))
            .ok_or(BlobMismatch::Outside)
            .and_then(|data| {
                verify_run(
                    repo.keys(),
                    data,
                    len as usize,
                    parts[i..i + k].iter().map(|p| p.2),
                )
            })
            .map_err(|m| Error::corrupt(&path, m.to_string()))?;
        let (s, l, last, _) = parts[i + k - 1];
        verified = Some((s, l, last));
        i += k;
    }
    Ok(Decoded { frame })
}

/// A file or stream node's content as a reader, frame by frame, every blob
/// verified against its id (for piping a dump into a restore tool).
pub struct NodeReader<'a> {
    repo: &'a Repository,
    jobs: Vec<Job>,
    next: usize,
    buf: Decoded,
    /// The part of `buf` being read, and the position in it.
    part: usize,
    pos: usize,
}

/// Opens `node`'s content for reading.
pub fn node_reader<'a>(repo: &'a Repository, index: &Index, node: &Node) -> Result<NodeReader<'a>> {
    let content = repo.node_content(index, node)?;
    let mut jobs = Vec::new();
    plan_file(index, 0, &content, &mut jobs, false, false)?;
    Ok(NodeReader {
        repo,
        jobs,
        next: 0,
        buf: Decoded {
            frame: Arc::new(Vec::new()),
        },
        part: 0,
        pos: 0,
    })
}

impl std::io::Read for NodeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // The job being read is jobs[next - 1]; its parts follow the
            // stream's bytes in order (planned without gathering).
            if let Some(job) = self.next.checked_sub(1).map(|j| &self.jobs[j]) {
                if let Some(&(start, len, _, _)) = job.parts.get(self.part) {
                    let data = self.buf.part(start, len);
                    if self.pos < data.len() {
                        let n = out.len().min(data.len() - self.pos);
                        out[..n].copy_from_slice(&data[self.pos..self.pos + n]);
                        self.pos += n;
                        return Ok(n);
                    }
                    self.part += 1;
                    self.pos = 0;
                    continue;
                }
            }
            let Some(job) = self.jobs.get(self.next) else {
                return Ok(0);
            };
            self.buf = decode(self.repo, job, None, None).map_err(std::io::Error::other)?;
            self.next += 1;
            self.part = 0;
            self.pos = 0;
        }
    }
}

struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    target: &'a Target,
    include: Vec<Vec<u8>>,
    failed: Vec<FileError>,
    files: Vec<FileTask>,
    jobs: Vec<Job>,
    /// Every folder made, as components below the target; the first is the
    /// target itself.
    folders: Vec<Vec<FsName>>,
    /// Selected folders (an index into `folders`) and their nodes, parents
    /// first; their metadata is set at the end.
    dirs: Vec<(usize, Node)>,
    links: u64,
    /// Files planned so far, over every batch.
    planned: u64,
    /// How batches are written, and what they wrote.
    threads: usize,
    placer: Option<&'a dyn DbPlacer>,
    progress: &'a dyn Progress,
    written: (u64, u64),
}

/// Files planned before they are written, at most: memory stays flat
/// however many files a snapshot holds (their nodes, names and frame
/// plans wait here), while a batch is long enough to keep the workers busy.
const FILE_BATCH: usize = 4096;

/// Restores `snap` under `target`, each source in `target/<source name>`.
///
/// Nothing is written outside `target`: below it no link is followed (see
/// the `confine` module for the rule).
pub fn restore(
    repo: &Repository,
    snapshot_id: Id,
    snap: &Snapshot,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let index = repo.load_index()?;
    let target = Target::open(target).map_err(|e| Error::io(target, e))?;
    let include: Vec<Vec<u8>> = opts
        .include
        .iter()
        .map(|p| trim_slashes(path_bytes(p)).to_vec())
        .filter(|p| !p.is_empty())
        .collect();
    let mut w = Walk {
        repo,
        index: &index,
        target: &target,
        include,
        failed: Vec::new(),
        files: Vec::new(),
        jobs: Vec::new(),
        folders: vec![Vec::new()],
        dirs: Vec::new(),
        links: 0,
        planned: 0,
        threads: opts.threads.max(1),
        placer: opts.db_placer.as_deref(),
        progress,
        written: (0, 0),
    };
    // The total is the sources' size as recorded; a partial restore's is
    // not known before its walk, which now writes as it goes.
    progress.start(if opts.include.is_empty() {
        Some(snap.sources.iter().map(|s| s.summary.bytes).sum())
    } else {
        None
    });
    for src in &snap.sources {
        let name = FsName::from(src.name.as_str());
        if let Some(why) = name.unsafe_reason() {
            w.failed.push(FileError {
                path: name.display(),
                message: format!("refusing a source with {why} (a damaged or forged snapshot)"),
            });
            continue;
        }
        w.node(&src.node, 0, &[name])?;
    }
    w.flush()?;
    if !w.include.is_empty()
        && w.planned == 0
        && w.dirs.is_empty()
        && w.links == 0
        && w.failed.is_empty()
    {
        return Err(Error::NotFound(format!(
            "nothing in snapshot {} matches {}",
            snapshot_id.short(),
            w.include
                .iter()
                .map(|p| escape_bytes(p))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (files, bytes) = w.written;
    for (folder, node) in w.dirs.iter().rev() {
        // A folder replaced by a link since it was made gets nothing.
        if let Ok(fd) = target.dir(&w.folders[*folder], false) {
            set_meta_fd(&fd, node.mode, node.mtime);
        }
    }
    progress.finish();
    Ok(RestoreSummary {
        snapshot_id,
        files: files + w.links,
        dirs: w.dirs.len() as u64,
        bytes,
        duration_secs: started.elapsed().as_secs_f64(),
        failed: w.failed,
    })
}

fn trim_slashes(mut b: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b'/'] = b {
        b = rest;
    }
    b
}

/// `a/b/c` of components, as bytes.
fn joined(path: &[FsName]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in path.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    out
}

impl Walk<'_> {
    /// Writes the files planned so far and forgets their plans.
    fn flush(&mut self) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        if self.placer.is_some() {
            databases_first(&mut self.files, &mut self.jobs);
        }
        let (files, bytes) = write_files(
            self.repo,
            self.target,
            &self.folders,
            &self.files,
            &self.jobs,
            self.threads,
            self.placer,
            self.progress,
            &mut self.failed,
        )?;
        self.written.0 += files;
        self.written.1 += bytes;
        self.files.clear();
        self.jobs.clear();
        Ok(())
    }

    /// Whether `rel` is selected: it is inside an include path, or is a
    /// directory on the way to one.
    fn wanted(&self, rel: &[u8]) -> (bool, bool) {
        if self.include.is_empty() {
            return (true, true);
        }
        let under = |long: &[u8], short: &[u8]| {
            long.len() > short.len() && long.starts_with(short) && long[short.len()] == b'/'
        };
        let inside = self.include.iter().any(|p| rel == p || under(rel, p));
        let ancestor = self.include.iter().any(|p| under(p, rel));
        (inside, inside || ancestor)
    }

    /// Plans `node`, whose path below the target is `path` (its last
    /// component is its name) and whose folder is `parent`.
    fn node(&mut self, node: &Node, parent: usize, path: &[FsName]) -> Result<()> {
        let rel_bytes = joined(path);
        let (inside, visit) = self.wanted(&rel_bytes);
        if !visit {
            return Ok(());
        }
        let rel = escape_bytes(&rel_bytes);
        let name = path.last().expect("a node has a name");
        match node.kind {
            NodeKind::Dir => {
                if let Err(e) = self.target.dir(path, true) {
                    if let DirError::Io(p, e) = &e {
                        if e.raw_os_error() == Some(libc::ENOSPC) {
                            return Err(Error::io(
                                p,
                                std::io::Error::from_raw_os_error(libc::ENOSPC),
                            ));
                        }
                    }
                    self.failed.push(FileError {
                        path: format!("{rel}/"),
                        message: e.to_string(),
                    });
                    return Ok(());
                }
                let folder = self.folders.len();
                self.folders.push(path.to_vec());
                if inside {
                    self.dirs.push((folder, node.clone()));
                }
                let tree = match node.subtree.map(|id| self.repo.load_tree(self.index, &id)) {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => {
                        self.failed.push(FileError {
                            path: format!("{rel}/"),
                            message: format!(
                                "directory listing is damaged, nothing beneath it restored: {e}"
                            ),
                        });
                        return Ok(());
                    }
                    None => Default::default(),
                };
                let mut child_path = path.to_vec();
                for child in &tree.nodes {
                    if let Some(why) = child.name.unsafe_reason() {
                        self.failed.push(FileError {
                            path: format!("{rel}/{}", child.name.display()),
                            message: format!(
                                "refusing an entry with {why} (a damaged or forged tree)"
                            ),
                        });
                        continue;
                    }
                    child_path.push(child.name.clone());
                    self.node(child, folder, &child_path)?;
                    child_path.pop();
                }
            }
            NodeKind::Symlink if inside => {
                let target = node.target.clone().unwrap_or_default();
                let made = self
                    .target
                    .dir(&self.folders[parent], false)
                    .map_err(|e| e.to_string())
                    .and_then(|dir| symlink_in(&dir, name, &target).map_err(|e| e.to_string()));
                match made {
                    Ok(()) => self.links += 1,
                    Err(e) => self.failed.push(FileError {
                        path: rel,
                        message: e,
                    }),
                }
            }
            NodeKind::File | NodeKind::Stream | NodeKind::DbImage if inside => {
                let file = self.files.len();
                let planned = self
                    .repo
                    .node_content(self.index, node)
                    .and_then(|content| {
                        plan_file(
                            self.index,
                            file,
                            &content,
                            &mut self.jobs,
                            true,
                            self.repo.backend().remote(),
                        )
                    });
                match planned {
                    Ok(jobs) => {
                        self.files.push(FileTask {
                            node: node.clone(),
                            folder: parent,
                            name: name.clone(),
                            rel,
                            jobs,
                        });
                        self.planned += 1;
                        if self.files.len() >= FILE_BATCH {
                            self.flush()?;
                        }
                    }
                    Err(e) => {
                        // Undo the jobs planned before the missing blob.
                        self.jobs.retain(|j| j.file != file);
                        self.failed.push(FileError {
                            path: rel,
                            message: e.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decoded frames waiting for the writer.
struct Ahead {
    written: usize,
    ready: BTreeMap<usize, Result<Decoded>>,
    stop: bool,
}

/// The file being written.
struct Open {
    file: Option<fs::File>,
    tmp: FsName,
    /// Set once a frame failed: the rest of the file's frames are skipped.
    failed: bool,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// Writeback of a file being restored from local storage starts every this
/// many bytes, so the fsync before a database is checked and placed finds
/// little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Writes a decoded frame's parts at their offsets, parts that continue each
/// other in both the frame and the file in one write.
fn write_parts(
    f: &fs::File,
    d: &Decoded,
    parts: &[(u32, u32, Id, u64)],
    unflushed: &mut u64,
    writeback_every: u64,
) -> std::io::Result<()> {
    let mut i = 0;
    while i < parts.len() {
        let (start, mut len, _, at) = parts[i];
        let mut j = i + 1;
        while let Some(&(s, l, _, a)) = parts.get(j) {
            if s != start + len || a != at + len as u64 {
                break;
            }
            len += l;
            j += 1;
        }
        f.write_all_at(d.part(start, len), at)?;
        *unflushed += len as u64;
        i = j;
    }
    if *unflushed >= writeback_every {
        *unflushed = 0;
        start_writeback(f);
    }
    Ok(())
}

/// Asks the kernel to start writing a file's dirty pages to disk without
/// waiting for them (a hint: failure is harmless, the fsync still follows).
fn start_writeback(f: &fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on a file descriptor owned by `f`.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// Runs the frame pipeline over all files; returns files and bytes written.
#[allow(clippy::too_many_arguments)]
fn write_files(
    repo: &Repository,
    target: &Target,
    folders: &[Vec<FsName>],
    files: &[FileTask],
    jobs: &[Job],
    threads: usize,
    placer: Option<&dyn DbPlacer>,
    progress: &dyn Progress,
    failed: &mut Vec<FileError>,
) -> Result<(u64, u64)> {
    // Remote storage: neighbouring frames fetched together, ahead.
    let remote = repo.backend().remote();
    let window = threads * AHEAD_PER_THREAD;
    let spans = remote.then(|| Spans::plan(jobs, window));
    // From remote storage the writer is what keeps the link busy: it does
    // not stop to start writeback (starting it took 0.5 s of 4.9 in the
    // writer when restoring the 1 GiB firm from Garage, against a later
    // fsync that the databases' own thread waits for).
    let writeback_every = if remote { u64::MAX } else { WRITEBACK_EVERY };
    let next = AtomicUsize::new(0);
    let state = Mutex::new(Ahead {
        written: 0,
        ready: BTreeMap::new(),
        stop: false,
    });
    let changed = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let mut uses: HashMap<(Id, u64), usize> = HashMap::new();
    for j in jobs {
        *uses.entry((j.pack, j.frame_offset)).or_default() += 1;
    }
    let frames = FrameCache::with_uses(RESTORE_FRAME_CACHE, uses);

    std::thread::scope(|s| {
        // Databases are checked and placed on a thread of their own.
        // Bounded: each waiting image holds two descriptors, and the writer
        // must not outrun the checks by more than a few (many small client
        // databases would exhaust the process's open files).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Placing>(PLACING_QUEUE);
        let to_place = placer.map(|_| tx);
        let placing = placer.map(|p| {
            s.spawn(move || {
                let mut outcomes = Vec::new();
                for job in rx {
                    let task = &files[job.file];
                    let placed =
                        sync_and_place(target, folders, &job.dir, task, job.handle, &job.tmp, p);
                    match &placed {
                        Ok(()) => progress.file(Path::new(&task.rel)),
                        Err(_) => {
                            let _ = remove_in(&job.dir, &job.tmp);
                        }
                    }
                    outcomes.push((job.file, placed));
                }
                outcomes
            })
        });
        if let Some(spans) = &spans {
            for _ in 0..FETCHERS.min(spans.spans.len()) {
                s.spawn(|| spans.fetch_ahead(repo));
            }
        }
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() {
                    return;
                }
                {
                    let mut st = lock();
                    while i >= st.written + window && !st.stop {
                        st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    if st.stop {
                        return;
                    }
                }
                let result = decode(
                    repo,
                    &jobs[i],
                    Some(&frames),
                    spans.as_ref().map(|s| (s, i)),
                );
                lock().ready.insert(i, result);
                changed.notify_all();
            });
        }

        let result = (|| -> Result<(u64, u64)> {
            let (mut done, mut bytes) = (0u64, 0u64);
            let mut job = 0usize;
            // The folder of the file being written, held open: files come
            // folder by folder, so each folder is opened about once.
            let mut held: Option<(usize, std::os::fd::OwnedFd)> = None;
            for (fi, task) in files.iter().enumerate() {
                if held.as_ref().map(|h| h.0) != Some(task.folder) {
                    held = None;
                    match target.dir(&folders[task.folder], false) {
                        Ok(fd) => held = Some((task.folder, fd)),
                        Err(e) => failed.push(FileError {
                            path: task.rel.clone(),
                            message: e.to_string(),
                        }),
                    }
                }
                let dir = held.as_ref().map(|h| &h.1);
                let (file, tmp) = match dir.map(create_temp) {
                    Some(Ok((f, tmp))) => (Some(f), tmp),
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        return Err(Error::io(target.path_of(&folders[task.folder]), e))
                    }
                    Some(Err(e)) => {
                        failed.push(FileError {
                            path: task.rel.clone(),
                            message: Error::io(target.path_of(&folders[task.folder]), e)
                                .to_string(),
                        });
                        (None, FsName::default())
                    }
                    None => (None, FsName::default()),
                };
                let mut open = Open {
                    failed: file.is_none(),
                    file,
                    tmp,
                    unflushed: 0,
                };
                for _ in 0..task.jobs {
                    debug_assert_eq!(jobs[job].file, fi);
                    let data = {
                        let mut st = lock();
                        loop {
                            if let Some(r) = st.ready.remove(&job) {
                                st.written = job + 1;
                                break r;
                            }
                            st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                    };
                    changed.notify_all();
                    job += 1;
                    if let Some(spans) = &spans {
                        spans.advance(job);
                    }
                    match data {
                        _ if open.failed => {}
                        Ok(d) => {
                            let f = open
                                .file
                                .as_ref()
                                .expect("a file that has not failed is open");
                            let parts = &jobs[job - 1].parts;
                            if let Err(e) =
                                write_parts(f, &d, parts, &mut open.unflushed, writeback_every)
                            {
                                if let Some(dir) = dir {
                                    let _ = remove_in(dir, &open.tmp);
                                }
                                return Err(Error::io(
                                    target
                                        .path_of(&folders[task.folder])
                                        .join(task.name.as_os_str()),
                                    e,
                                ));
                            }
                            progress.read(parts.iter().map(|p| p.1 as u64).sum());
                        }
                        Err(e) => {
                            open.failed = true;
                            failed.push(FileError {
                                path: task.rel.clone(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                let (Some(dir), Some(file), false) = (dir, open.file, open.failed) else {
                    if let Some(dir) = dir {
                        let _ = remove_in(dir, &open.tmp);
                    }
                    continue;
                };
                set_meta_fd(&file, task.node.mode, task.node.mtime);
                let placed = match placer.filter(|_| task.node.kind == NodeKind::DbImage) {
                    Some(p) => {
                        // Checked and placed beside the writer, which goes
                        // on with the next files.
                        match (&to_place, dir.try_clone()) {
                            (Some(tx), Ok(fd)) => {
                                let placing = Placing {
                                    file: fi,
                                    handle: file,
                                    dir: fd,
                                    tmp: std::mem::take(&mut open.tmp),
                                };
                                match tx.send(placing) {
                                    Ok(()) => continue,
                                    Err(back) => {
                                        open.tmp = back.0.tmp;
                                        Err("the database check stopped early".to_string())
                                    }
                                }
                            }
                            _ => sync_and_place(target, folders, dir, task, file, &open.tmp, p),
                        }
                    }
                    None => {
                        drop(file);
                        rename_in(dir, &open.tmp, &task.name).map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = placed {
                    let _ = remove_in(dir, &open.tmp);
                    failed.push(FileError {
                        path: task.rel.clone(),
                        message: e,
                    });
                    continue;
                }
                done += 1;
                bytes += task.node.size;
                progress.file(Path::new(&task.rel));
            }
            Ok((done, bytes))
        })();
        // Release the workers whatever happened (a full disk ends the restore).
        lock().stop = true;
        changed.notify_all();
        if let Some(spans) = &spans {
            spans.stop();
        }
        drop(to_place);
        let outcomes = match placing.map(|h| h.join()) {
            Some(Ok(o)) => o,
            Some(Err(_)) => return Err(Error::corrupt("restore", "a database check panicked")),
            None => Vec::new(),
        };
        // Databases that failed their check are named even when the writer
        // stopped on an error of its own.
        let (mut placed_files, mut placed_bytes) = (0, 0);
        for (fi, placed) in outcomes {
            match placed {
                Ok(()) => {
                    placed_files += 1;
                    placed_bytes += files[fi].node.size;
                }
                Err(message) => failed.push(FileError {
                    path: files[fi].rel.clone(),
                    message,
                }),
            }
        }
        let (done, bytes) = result?;
        Ok((done + placed_files, bytes + placed_bytes))
    })
}

/// Puts a batch's database images first, so that their checks (on a thread
/// of their own) overlap the writing of the other files; the order among
/// databases and among other files is kept.
fn databases_first(files: &mut Vec<FileTask>, jobs: &mut Vec<Job>) {
    let is_db = |f: &FileTask| f.node.kind == NodeKind::DbImage;
    let n = files.len();
    let order: Vec<usize> = (0..n)
        .filter(|&i| is_db(&files[i]))
        .chain((0..n).filter(|&i| !is_db(&files[i])))
        .collect();
    if order.iter().enumerate().all(|(k, &i)| k == i) {
        return;
    }
    let mut first_job = Vec::with_capacity(n);
    let mut at = 0;
    for f in files.iter() {
        first_job.push(at);
        at += f.jobs;
    }
    let mut old_jobs: Vec<Option<Job>> = std::mem::take(jobs).into_iter().map(Some).collect();
    let mut old_files: Vec<Option<FileTask>> =
        std::mem::take(files).into_iter().map(Some).collect();
    for (new, &old) in order.iter().enumerate() {
        let task = old_files[old].take().expect("each file is moved once");
        for slot in &mut old_jobs[first_job[old]..first_job[old] + task.jobs] {
            let mut job = slot.take().expect("each job is moved once");
            job.file = new;
            jobs.push(job);
        }
        files.push(task);
    }
}

/// Database images written and waiting for their check, at most.
const PLACING_QUEUE: usize = 8;

/// A restored database image on its way to the placer.
struct Placing {
    /// Its index among the batch's files.
    file: usize,
    handle: fs::File,
    /// Its folder, held open.
    dir: std::os::fd::OwnedFd,
    tmp: FsName,
}

/// Flushes a restored database image to disk (the placer reads it back)
/// and places it.
fn sync_and_place(
    target: &Target,
    folders: &[Vec<FsName>],
    dir: &std::os::fd::OwnedFd,
    task: &FileTask,
    file: fs::File,
    tmp: &FsName,
    placer: &dyn DbPlacer,
) -> std::result::Result<(), String> {
    file.sync_all().map_err(|e| e.to_string())?;
    drop(file);
    place_db(target, &folders[task.folder], dir, task, tmp, placer)
}

/// Hands a restored database image to the placer, which works by path
/// (SQLite opens files by name). A link where the database goes is replaced
/// first, like any file's, and the folders on the way are checked to be the
/// ones held open, so the placer never writes through a link.
fn place_db(
    target: &Target,
    folder: &[FsName],
    dir: &std::os::fd::OwnedFd,
    task: &FileTask,
    tmp: &FsName,
    placer: &dyn DbPlacer,
) -> std::result::Result<(), String> {
    if is_link(dir, &task.name) {
        remove_in(dir, &task.name).map_err(|e| e.to_string())?;
    }
    target
        .still_confined(folder, dir)
        .map_err(|e| e.to_string())?;
    let base = target.path_of(folder);
    placer.place(
        &base.join(tmp.as_os_str()),
        &base.join(task.name.as_os_str()),
        task.node.database.as_deref(),
    )
}
