//! Writing under a restore target without ever following a link in it.
//!
//! A restore writes what a snapshot says into a folder the user names (the
//! target). Neither the snapshot nor the target can be trusted to be free
//! of tricks: a stored tree may name a link and then a file "through" it,
//! and a target may already hold a link where the snapshot has a folder,
//! or get one swapped in while the restore runs. So below the target no
//! path is ever resolved by the kernel as a whole. Each folder is opened
//! one component at a time relative to its parent's handle with
//! `O_NOFOLLOW | O_DIRECTORY`; files are created relative to their folder's
//! handle with `O_CREAT | O_EXCL | O_NOFOLLOW`, and renamed into place with
//! `renameat`, which replaces a link rather than writing through it; modes
//! and times are set on open handles (`fchmod`, `futimens`), never by path.
//!
//! The rule for a link found in the target where the snapshot has a folder
//! or a file: the link itself is replaced (removed, and the folder or file
//! made in its place); nothing is written where it points. A link that
//! appears *during* the restore, in place of a folder already made, is an
//! attack or a race with another program: what would go beneath it is
//! refused and named, not written.
//!
//! The target path itself, as the user gave it, is resolved normally: it
//! is the user's own choice, links and all.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::name::FsName;

/// The restore target: its path (for messages and for the database placer)
/// and an open handle on it, under which everything is resolved.
pub(crate) struct Target {
    root: OwnedFd,
    path: PathBuf,
}

/// Why a folder below the target could not be opened.
#[derive(Debug)]
pub(crate) enum DirError {
    /// A component is a link that was not there when the restore made the
    /// folder (or, when not replacing, any link).
    Link(PathBuf),
    /// A component is something else than a folder (a file, a device).
    NotDir(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for DirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirError::Link(p) => write!(
                f,
                "{}: is a symbolic link where the restore made a folder (put there while the restore ran?); nothing written through it",
                p.display()
            ),
            DirError::NotDir(p) => write!(
                f,
                "{}: is in the way: the snapshot has a folder here, the target has something else; nothing written beneath it",
                p.display()
            ),
            DirError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Target {
    /// Opens `path`, making it (and its parents) first when missing.
    pub fn open(path: &Path) -> io::Result<Target> {
        std::fs::create_dir_all(path)?;
        let root = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Target {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The path of `rel` below the target, for messages and placers.
    pub fn path_of(&self, rel: &[FsName]) -> PathBuf {
        let mut p = self.path.clone();
        for c in rel {
            p.push(c.as_os_str());
        }
        p
    }

    /// Opens the folder `rel` below the target, one component at a time,
    /// never following a link. With `make`, missing folders are made and a
    /// link in the way is replaced by a folder (see the module's rule);
    /// without, any link or missing folder is an error.
    pub fn dir(&self, rel: &[FsName], make: bool) -> Result<OwnedFd, DirError> {
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in rel.iter().enumerate() {
            let parent = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.root.as_fd());
            let here = || self.path_of(&rel[..=i]);
            let next = match rfs::openat(parent, c.as_os_str(), DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if e == rustix::io::Errno::NOENT && make => {
                    match rfs::mkdirat(parent, c.as_os_str(), Mode::from_raw_mode(0o777)) {
                        Ok(()) => {}
                        Err(e) if e == rustix::io::Errno::EXIST => {}
                        Err(e) => return Err(DirError::Io(here(), e.into())),
                    }
                    rfs::openat(parent, c.as_os_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.classify(parent, c, here(), e))?
                }
                Err(e)
                    if make && (e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR) =>
                {
                    match rfs::statat(parent, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            rfs::unlinkat(parent, c.as_os_str(), AtFlags::empty())
                                .map_err(|e| DirError::Io(here(), e.into()))?;
                            rfs::mkdirat(parent, c.as_os_str(), Mode::from_raw_mode(0o777))
                                .map_err(|e| DirError::Io(here(), e.into()))?;
                            rfs::openat(parent, c.as_os_str(), DIR_FLAGS, Mode::empty())
                                .map_err(|e| self.classify(parent, c, here(), e))?
                        }
                        Ok(_) => return Err(DirError::NotDir(here())),
                        Err(e) => return Err(DirError::Io(here(), e.into())),
                    }
                }
                Err(e) => return Err(self.classify(parent, c, here(), e)),
            };
            cur = Some(next);
        }
        match cur {
            Some(fd) => Ok(fd),
            None => rfs::openat(&self.root, ".", DIR_FLAGS, Mode::empty())
                .map_err(|e| DirError::Io(self.path.clone(), e.into())),
        }
    }

    fn classify(
        &self,
        parent: std::os::fd::BorrowedFd<'_>,
        c: &FsName,
        here: PathBuf,
        e: rustix::io::Errno,
    ) -> DirError {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
            match rfs::statat(parent, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    DirError::Link(here)
                }
                _ => DirError::NotDir(here),
            }
        } else {
            DirError::Io(here, e.into())
        }
    }

    /// Checks, just before a path-based tool (SQLite) is handed
    /// `path_of(rel)`, that every folder on the way is still the one held
    /// open (`dir`) and no component is a link. What is left is the instant
    /// between this check and the tool's own open.
    pub fn still_confined(&self, rel: &[FsName], dir: &OwnedFd) -> Result<(), DirError> {
        let mut p = self.path.clone();
        for c in rel {
            p.push(c.as_os_str());
            let md = std::fs::symlink_metadata(&p).map_err(|e| DirError::Io(p.clone(), e))?;
            if md.file_type().is_symlink() {
                return Err(DirError::Link(p));
            }
        }
        let held = rfs::fstat(dir).map_err(|e| DirError::Io(p.clone(), e.into()))?;
        let now = rfs::stat(&p).map_err(|e| DirError::Io(p.clone(), e.into()))?;
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino) {
            return Err(DirError::Link(p));
        }
        Ok(())
    }
}

/// A fresh temporary file in `dir`, never a link: a name no other restore
/// of this process uses, created exclusively. Short whatever the final
/// name's length, so a 255-byte name still restores.
pub(crate) fn create_temp(dir: &OwnedFd) -> io::Result<(File, FsName)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = FsName::from(format!(".lv-restore-{}-{n}", std::process::id()));
        match rfs::openat(
            dir,
            name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((File::from(fd), name)),
            // Left by an earlier process with the same id: take another.
            Err(e) if e == rustix::io::Errno::EXIST => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Renames `from` to `to` inside `dir`. A link at `to` is replaced, not
/// followed; a folder at `to` is an error.
pub(crate) fn rename_in(dir: &OwnedFd, from: &FsName, to: &FsName) -> io::Result<()> {
    rfs::renameat(dir, from.as_os_str(), dir, to.as_os_str()).map_err(Into::into)
}

/// Renames `from` to `to` only if nothing is at `to`: an entry there (one
/// that appeared since the caller looked) is an `AlreadyExists` error and
/// is left as it is. `renameat2(RENAME_NOREPLACE)`; on a file system
/// without it (some network shares), a hard link, which never replaces,
/// and the removal of `from`; on one without hard links either, a look
/// for `to` right before a plain rename (a window of microseconds instead
/// of none).
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::io::Errno;
    match rfs::renameat_with(rfs::CWD, from, rfs::CWD, to, rfs::RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        // Not supported here (a network share, an old kernel, a filter
        // on system calls): the next way.
        Err(e)
            if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP || e == Errno::PERM => {
        }
        Err(e) => return Err(e.into()),
    }
    match std::fs::hard_link(from, to) {
        // In place; `from`, a second name of it, goes (or stays behind in
        // the caller's scratch space, which is removed anyway).
        Ok(()) => {
            let _ = std::fs::remove_file(from);
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    match std::fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(from, to),
        Err(e) => Err(e),
    }
}

/// Removes the entry `name` of `dir` if it is not a folder (a link is
/// removed, never followed).
pub(crate) fn remove_in(dir: &OwnedFd, name: &FsName) -> io::Result<()> {
    match rfs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the entry `name` of `dir` is a symbolic link.
pub(crate) fn is_link(dir: &OwnedFd, name: &FsName) -> bool {
    rfs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// Makes a link `name` in `dir` pointing to `target`, replacing a file or
/// link of that name (a folder of that name is an error).
pub(crate) fn symlink_in(dir: &OwnedFd, name: &FsName, target: &FsName) -> io::Result<()> {
    remove_in(dir, name)?;
    rfs::symlinkat(target.as_os_str(), dir, name.as_os_str()).map_err(Into::into)
}

/// Sets mode and modification time on an open handle (a folder's or a
/// file's), never through a path. Failures are ignored, as a restore by a
/// user who does not own the files cannot set them and the data matters
/// more. The set-user-id and set-group-id bits are never restored: a tree
/// is input anyone with a key can write, and a forged one restored by root
/// must not make a setuid-root program.
pub(crate) fn set_meta_fd(
    fd: impl AsFd,
    mode: Option<u32>,
    mtime: Option<chrono::DateTime<chrono::Utc>>,
) {
    if let Some(m) = mode {
        let _ = rfs::fchmod(&fd, Mode::from_raw_mode((m & 0o1777) as _));
    }
    if let Some(t) = mtime {
        let ts = Timespec {
            tv_sec: t.timestamp(),
            tv_nsec: t.timestamp_subsec_nanos() as _,
        };
        let omit = Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        };
        let _ = rfs::futimens(
            &fd,
            &Timestamps {
                last_access: omit,
                last_modification: ts,
            },
        );
    }
}

/// Bytes of a path as given, for matching restore selections.
pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
