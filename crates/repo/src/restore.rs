//! The read path: snapshot → trees → frames → files.
//!
//! Each file is written to a temporary name beside its destination, filled
//! with positional writes by several threads (each reads, opens and
//! decompresses one frame, verifies every blob id, and writes the blobs at
//! their offsets), then renamed into place. A file whose data is damaged is
//! never renamed into place: its temporary file is removed and it is listed
//! in the summary, while the other files restore normally.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::backup::FileError;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::open_frame;
use crate::progress::Progress;
use crate::repository::{pack_path, Repository};
use crate::snapshot::{Node, NodeKind, Snapshot};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Restore only these paths (as `ls` prints them, e.g. `docs/2026`), and
    /// everything beneath them. Empty means everything.
    pub include: Vec<String>,
    pub threads: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            include: Vec::new(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
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

/// A frame to read and the parts of a file it fills.
struct Job {
    pack: Id,
    frame_offset: u64,
    sealed_len: u32,
    raw_len: u32,
    /// (offset in frame, length, offset in file, blob id)
    parts: Vec<(u32, u32, u64, Id)>,
}

fn plan(index: &Index, content: &[Id]) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut off = 0u64;
    for id in content {
        let loc = index.get(id).ok_or_else(|| {
            Error::corrupt(format!("blob {}", id.short()), "missing from every index")
        })?;
        let same = jobs
            .last()
            .is_some_and(|j| j.pack == loc.pack && j.frame_offset == loc.frame_offset);
        if !same {
            jobs.push(Job {
                pack: loc.pack,
                frame_offset: loc.frame_offset,
                sealed_len: loc.frame_sealed_len,
                raw_len: loc.frame_raw_len,
                parts: Vec::new(),
            });
        }
        jobs.last_mut()
            .unwrap()
            .parts
            .push((loc.offset, loc.len, off, *id));
        off += loc.len as u64;
    }
    Ok(jobs)
}

fn run_job(repo: &Repository, job: &Job, file: &fs::File, tmp: &Path) -> Result<u64> {
    let path = pack_path(&job.pack);
    let sealed = repo
        .backend()
        .read_range(&path, job.frame_offset, job.sealed_len as u64)?;
    let frame = open_frame(repo.keys(), &sealed, job.raw_len, &path)?;
    let mut n = 0;
    for &(start, len, file_off, id) in &job.parts {
        let data = frame
            .get(start as usize..(start + len) as usize)
            .ok_or_else(|| Error::corrupt(&path, "blob lies outside its frame"))?;
        if repo.keys().blob_id(data) != id {
            return Err(Error::corrupt(
                &path,
                format!("blob {} does not match its id", id.short()),
            ));
        }
        file.write_all_at(data, file_off)
            .map_err(|e| Error::io(tmp, e))?;
        n += len as u64;
    }
    Ok(n)
}

struct Ctx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    opts: &'a RestoreOptions,
    progress: &'a dyn Progress,
    include: Vec<String>,
    failed: Vec<FileError>,
    files: u64,
    dirs: u64,
    bytes: u64,
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
    progress.start(Some(snap.size()));
    let mut ctx = Ctx {
        repo,
        index: &index,
        opts,
        progress,
        include,
        failed: Vec::new(),
        files: 0,
        dirs: 0,
        bytes: 0,
    };
    for src in &snap.sources {
        ctx.node(&src.node, &target.join(&src.name), &src.name)?;
    }
    if !ctx.include.is_empty() && ctx.files + ctx.dirs == 0 && ctx.failed.is_empty() {
        return Err(Error::NotFound(format!(
            "nothing in snapshot {} matches {}",
            snapshot_id.short(),
            ctx.include.join(", ")
        )));
    }
    progress.finish();
    Ok(RestoreSummary {
        snapshot_id,
        files: ctx.files,
        dirs: ctx.dirs,
        bytes: ctx.bytes,
        duration_secs: started.elapsed().as_secs_f64(),
        failed: ctx.failed,
    })
}

impl Ctx<'_> {
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
                if inside {
                    self.dirs += 1;
                    set_meta(dest, node);
                }
            }
            NodeKind::Symlink if inside => {
                let _ = fs::remove_file(dest);
                let target = node.target.clone().unwrap_or_default();
                if let Err(e) = std::os::unix::fs::symlink(&target, dest) {
                    self.failed.push(FileError {
                        path: rel.to_string(),
                        message: e.to_string(),
                    });
                } else {
                    self.files += 1;
                }
            }
            NodeKind::File | NodeKind::Stream | NodeKind::DbImage if inside => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                match self.file(node, dest) {
                    Ok(()) => {
                        self.files += 1;
                        self.bytes += node.size;
                    }
                    // A destination we cannot write to is fatal: everything else would fail too.
                    Err(e @ Error::Io { .. }) if e.is_storage_full() => return Err(e),
                    Err(e) => self.failed.push(FileError {
                        path: rel.to_string(),
                        message: e.to_string(),
                    }),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn file(&self, node: &Node, dest: &Path) -> Result<()> {
        let jobs = plan(self.index, &node.content)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.lv-restore-{}", std::process::id()));
        let result = self.fill(&jobs, node, &tmp);
        match result {
            Ok(()) => fs::rename(&tmp, dest).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io(dest, e)
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn fill(&self, jobs: &[Job], node: &Node, tmp: &PathBuf) -> Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        file.set_len(node.size).map_err(|e| Error::io(tmp, e))?;
        let threads = self.opts.threads.max(1).min(jobs.len());
        if threads <= 1 {
            for j in jobs {
                self.progress.read(run_job(self.repo, j, &file, tmp)?);
            }
        } else {
            let next = AtomicUsize::new(0);
            let stop = AtomicBool::new(false);
            let first_err: Mutex<Option<Error>> = Mutex::new(None);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(j) = jobs.get(i) else { break };
                            match run_job(self.repo, j, &file, tmp) {
                                Ok(n) => self.progress.read(n),
                                Err(e) => {
                                    stop.store(true, Ordering::Relaxed);
                                    first_err
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .get_or_insert(e);
                                }
                            }
                        }
                    });
                }
            });
            if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
        }
        if let Some(mode) = node.mode {
            let _ = file.set_permissions(fs::Permissions::from_mode(mode & 0o7777));
        }
        if let Some(t) = node.mtime {
            let _ = file.set_modified(t.into());
        }
        Ok(())
    }
}

fn set_meta(dest: &Path, node: &Node) {
    if let Some(mode) = node.mode {
        let _ = fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o7777));
    }
    if let (Some(t), Ok(f)) = (node.mtime, fs::File::open(dest)) {
        let _ = f.set_modified(t.into());
    }
}
