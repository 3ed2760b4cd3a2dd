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
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::backup::FileError;
use crate::chunker::FIXED_RUN;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
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
    pub include: Vec<String>,
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
    frame: Vec<u8>,
}

impl Decoded {
    fn part(&self, start: u32, len: u32) -> &[u8] {
        &self.frame[start as usize..(start + len) as usize]
    }
}
/// A file to write.
struct FileTask {
    node: Node,
    dest: PathBuf,
    rel: String,
    /// Index of its last job; files without content have none.
    jobs: usize,
}

/// Frames decoded ahead of the writer, at most this many per thread.
const AHEAD_PER_THREAD: usize = 4;

/// Plans the frame reads that rebuild one file from `content`. With
/// `gather`, every part a frame holds for this file joins that frame's one
/// job, so each frame is read and decoded once however its blobs are spread
/// over the file (after a night of scattered page edits, one frame of new
/// pages serves a dozen places in a database image); jobs then come in the
/// order of the file offset each first fills, and parts are written at
/// their offsets. Without, jobs follow the file's bytes strictly in order,
/// for readers that stream.
fn plan_file(
    index: &Index,
    file: usize,
    content: &[Id],
    jobs: &mut Vec<Job>,
    gather: bool,
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
    Ok(jobs.len() - first)
}

/// Reads a frame and verifies every blob of the job it holds.
fn decode(repo: &Repository, job: &Job) -> Result<Decoded> {
    let path = pack_path(&job.pack);
    let sealed = repo
        .backend()
        .read_range(&path, job.frame_offset, job.sealed_len as u64)?;
    let frame = open_frame(repo.keys(), &sealed, job.raw_len, &path)?;
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
    plan_file(index, 0, &content, &mut jobs, false)?;
    Ok(NodeReader {
        repo,
        jobs,
        next: 0,
        buf: Decoded { frame: Vec::new() },
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
            self.buf = decode(self.repo, job).map_err(std::io::Error::other)?;
            self.next += 1;
            self.part = 0;
            self.pos = 0;
        }
    }
}

struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    include: Vec<String>,
    failed: Vec<FileError>,
    files: Vec<FileTask>,
    jobs: Vec<Job>,
    /// Folders and their nodes, parents first; metadata is set at the end.
    dirs: Vec<(PathBuf, Node)>,
    links: u64,
}

/// Restores `snap` under `target`, each source in `target/<source name>`.
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
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let include: Vec<String> = opts
        .include
        .iter()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let mut w = Walk {
        repo,
        index: &index,
        include,
        failed: Vec::new(),
        files: Vec::new(),
        jobs: Vec::new(),
        dirs: Vec::new(),
        links: 0,
    };
    for src in &snap.sources {
        w.node(&src.node, &target.join(&src.name), &src.name)?;
    }
    if !w.include.is_empty()
        && w.files.is_empty()
        && w.dirs.is_empty()
        && w.links == 0
        && w.failed.is_empty()
    {
        return Err(Error::NotFound(format!(
            "nothing in snapshot {} matches {}",
            snapshot_id.short(),
            w.include.join(", ")
        )));
    }
    progress.start(Some(w.files.iter().map(|f| f.node.size).sum()));
    let (files, bytes) = write_files(
        repo,
        &w.files,
        &w.jobs,
        opts.threads.max(1),
        opts.db_placer.as_deref(),
        progress,
        &mut w.failed,
    )?;
    for (dir, node) in w.dirs.iter().rev() {
        set_meta(dir, node);
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

impl Walk<'_> {
    /// Whether `rel` is selected: it is inside an include path, or is a
    /// directory on the way to one.
    fn wanted(&self, rel: &str) -> (bool, bool) {
        if self.include.is_empty() {
            return (true, true);
        }
        let inside = self
            .include
            .iter()
            .any(|p| rel == p || rel.starts_with(&format!("{p}/")));
        let ancestor = self
            .include
            .iter()
            .any(|p| p.starts_with(&format!("{rel}/")));
        (inside, inside || ancestor)
    }

    fn node(&mut self, node: &Node, dest: &Path, rel: &str) -> Result<()> {
        let (inside, visit) = self.wanted(rel);
        if !visit {
            return Ok(());
        }
        match node.kind {
            NodeKind::Dir => {
                fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
                if inside {
                    self.dirs.push((dest.to_path_buf(), node.clone()));
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
                for child in &tree.nodes {
                    if child.name.is_empty()
                        || child.name == "."
                        || child.name == ".."
                        || child.name.contains('/')
                    {
                        self.failed.push(FileError {
                            path: format!("{rel}/{}", child.name),
                            message: "refusing an unsafe file name".into(),
                        });
                        continue;
                    }
                    self.node(
                        child,
                        &dest.join(&child.name),
                        &format!("{rel}/{}", child.name),
                    )?;
                }
            }
            NodeKind::Symlink if inside => {
                let _ = fs::remove_file(dest);
                let target = node.target.clone().unwrap_or_default();
                match std::os::unix::fs::symlink(&target, dest) {
                    Ok(()) => self.links += 1,
                    Err(e) => self.failed.push(FileError {
                        path: rel.to_string(),
                        message: e.to_string(),
                    }),
                }
            }
            NodeKind::File | NodeKind::Stream | NodeKind::DbImage if inside => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                let file = self.files.len();
                let planned = self
                    .repo
                    .node_content(self.index, node)
                    .and_then(|content| {
                        plan_file(self.index, file, &content, &mut self.jobs, true)
                    });
                match planned {
                    Ok(jobs) => self.files.push(FileTask {
                        node: node.clone(),
                        dest: dest.to_path_buf(),
                        rel: rel.to_string(),
                        jobs,
                    }),
                    Err(e) => {
                        // Undo the jobs planned before the missing blob.
                        self.jobs.retain(|j| j.file != file);
                        self.failed.push(FileError {
                            path: rel.to_string(),
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

/// The temporary name a file is written under.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.lv-restore-{}", std::process::id()))
}

/// The file being written.
struct Open {
    file: Option<fs::File>,
    tmp: PathBuf,
    /// Set once a frame failed: the rest of the file's frames are skipped.
    failed: bool,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// Writeback of a file being restored starts every this many bytes, so the
/// fsync before a database is checked and placed finds little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Writes a decoded frame's parts at their offsets, parts that continue each
/// other in both the frame and the file in one write.
fn write_parts(
    f: &fs::File,
    d: &Decoded,
    parts: &[(u32, u32, Id, u64)],
    unflushed: &mut u64,
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
    if *unflushed >= WRITEBACK_EVERY {
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
fn write_files(
    repo: &Repository,
    files: &[FileTask],
    jobs: &[Job],
    threads: usize,
    placer: Option<&dyn DbPlacer>,
    progress: &dyn Progress,
    failed: &mut Vec<FileError>,
) -> Result<(u64, u64)> {
    let window = threads * AHEAD_PER_THREAD;
    let next = AtomicUsize::new(0);
    let state = Mutex::new(Ahead {
        written: 0,
        ready: BTreeMap::new(),
        stop: false,
    });
    let changed = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());

    std::thread::scope(|s| {
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
                let result = decode(repo, &jobs[i]);
                lock().ready.insert(i, result);
                changed.notify_all();
            });
        }

        let result = (|| -> Result<(u64, u64)> {
            let (mut done, mut bytes) = (0u64, 0u64);
            let mut job = 0usize;
            for (fi, task) in files.iter().enumerate() {
                let tmp = temp_path(&task.dest);
                let file = match fs::File::create(&tmp) {
                    Ok(f) => Some(f),
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        return Err(Error::io(&tmp, e))
                    }
                    Err(e) => {
                        failed.push(FileError {
                            path: task.rel.clone(),
                            message: Error::io(&tmp, e).to_string(),
                        });
                        None
                    }
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
                    match data {
                        _ if open.failed => {}
                        Ok(d) => {
                            let f = open
                                .file
                                .as_ref()
                                .expect("a file that has not failed is open");
                            let parts = &jobs[job - 1].parts;
                            if let Err(e) = write_parts(f, &d, parts, &mut open.unflushed) {
                                let _ = fs::remove_file(&open.tmp);
                                return Err(Error::io(&task.dest, e));
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
                let file = match open.file {
                    Some(f) if !open.failed => f,
                    _ => {
                        let _ = fs::remove_file(&open.tmp);
                        continue;
                    }
                };
                if let Some(mode) = task.node.mode {
                    let _ = file.set_permissions(fs::Permissions::from_mode(mode & 0o7777));
                }
                if let Some(t) = task.node.mtime {
                    let _ = file.set_modified(t.into());
                }
                let placed = match placer.filter(|_| task.node.kind == NodeKind::DbImage) {
                    Some(p) => {
                        // The placer may read the file back: it must be complete on disk.
                        let synced = file.sync_all();
                        drop(file);
                        synced.map_err(|e| e.to_string()).and_then(|_| {
                            p.place(&open.tmp, &task.dest, task.node.database.as_deref())
                        })
                    }
                    None => {
                        drop(file);
                        fs::rename(&open.tmp, &task.dest).map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = placed {
                    let _ = fs::remove_file(&open.tmp);
                    failed.push(FileError {
                        path: task.rel.clone(),
                        message: e,
                    });
                    continue;
                }
                done += 1;
                bytes += task.node.size;
            }
            Ok((done, bytes))
        })();
        // Release the workers whatever happened (a full disk ends the restore).
        lock().stop = true;
        changed.notify_all();
        result
    })
}

fn set_meta(dest: &Path, node: &Node) {
    if let Some(mode) = node.mode {
        let _ = fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o7777));
    }
    if let (Some(t), Ok(f)) = (node.mtime, fs::File::open(dest)) {
        let _ = f.set_modified(t.into());
    }
}
