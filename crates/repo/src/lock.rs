//! Repository locks.
//!
//! A lock is a sealed file in `locks/`. Backups, restores and checks of data
//! take shared locks; operations that delete data take exclusive ones. To
//! take a lock, a process writes its lock file first and then lists the
//! others, so two processes racing for conflicting locks cannot both win (at
//! worst both back off).
//!
//! A lock is **stale** when its process is gone (same host, pid not alive) or
//! it has not been refreshed for [`STALE_AFTER`]. Stale locks never block;
//! they are reported, and `unlock` removes them. Holders refresh their lock
//! every [`REFRESH_EVERY`].

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::crypto::Keys;
use crate::envelope::{open_file, seal_file, FileKind};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;

/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// The content of a lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub user: String,
    pub exclusive: bool,
    pub operation: String,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

impl LockInfo {
    /// Why this lock is stale, or `None` if its holder may still be working.
    pub fn stale_reason(&self) -> Option<String> {
        if self.host == crate::host_name() && !pid_alive(self.pid) {
            return Some(format!("process {} on this host is gone", self.pid));
        }
        let age = Utc::now().signed_duration_since(self.refreshed);
        if age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false) {
            return Some(format!("not refreshed for {} minutes", age.num_minutes()));
        }
        None
    }

    /// One line describing the lock.
    pub fn describe(&self) -> String {
        format!(
            "{} lock by {}@{} pid {} for `{}` since {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.user,
            self.host,
            self.pid,
            self.operation,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A lock file found in the repository.
#[derive(Debug, Clone)]
pub struct FoundLock {
    pub id: Id,
    pub info: Option<LockInfo>,
    /// Why it is stale, if it is; unreadable locks say so here.
    pub stale: Option<String>,
}

impl FoundLock {
    /// One line: the lock and, if stale, why.
    pub fn describe(&self) -> String {
        let what = match &self.info {
            Some(i) => i.describe(),
            None => format!("lock {}", self.id.short()),
        };
        match &self.stale {
            Some(why) => format!("{what} ({why})"),
            None => what,
        }
    }
}

/// Lists lock files and decides which are stale.
pub fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    locks_but(repo, None)
}

/// The lock files but `mine` (which is neither read nor returned: the
/// caller wrote it and knows what it says).
fn locks_but(repo: &Repository, mine: Option<Id>) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for id in repo.list_ids(FileKind::Lock)? {
        if Some(id) == mine {
            continue;
        }
        let path = format!("locks/{id}");
        let info = match repo.backend().read(&path) {
            Ok(b) => open_file(repo.keys(), FileKind::Lock, &b, &path)
                .ok()
                .and_then(|p| serde_json::from_slice::<LockInfo>(&p).ok()),
            // Removed between list and read: its holder finished.
            Err(e) if e.kind == crate::backend::BackendErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let stale = match &info {
            Some(i) => i.stale_reason(),
            None => Some("unreadable lock file".into()),
        };
        out.push(FoundLock { id, info, stale });
    }
    Ok(out)
}

/// Removes stale locks (or all locks with `all`); returns what was removed.
///
/// Needs a full-access key: a lock, even one that looks stale, may guard a
/// backup still running, and removing it lets a prune delete that backup's
/// packs. An append-only session removes only the locks it took itself.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<Vec<FoundLock>> {
    let found = list_locks(repo)?;
    if found.iter().any(|l| all || l.stale.is_some()) {
        repo.ensure_may_delete("removing another process's lock")?;
    }
    let mut removed = Vec::new();
    for l in found {
        if all || l.stale.is_some() {
            repo.backend().delete(&format!("locks/{}", l.id))?;
            removed.push(l);
        }
    }
    Ok(removed)
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    path: Mutex<String>,
}

/// A held lock. Dropping it removes the lock file.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    refresher: Option<JoinHandle<()>>,
    /// Stale locks seen while locking (reported, not blocking).
    pub stale: Vec<FoundLock>,
}

pub(crate) fn write_lock(backend: &dyn Backend, keys: &Keys, info: &LockInfo) -> Result<String> {
    let bytes = seal_file(
        keys,
        FileKind::Lock,
        &serde_json::to_vec(info).expect("lock serializes"),
    );
    let path = format!("locks/{}", Id::of_object(&bytes));
    backend.write(&path, &bytes)?;
    Ok(path)
}

/// Takes a lock for `operation`. While another live process holds a
/// conflicting lock, retries until the session's lock wait is spent
/// ([`Repository::set_lock_wait`]), then fails with [`Error::Locked`].
pub fn lock(repo: &Repository, exclusive: bool, operation: &str) -> Result<LockGuard> {
    let deadline = std::time::Instant::now() + repo.lock_wait();
    let mut delay = Duration::from_millis(50);
    loop {
        match try_lock(repo, exclusive, operation) {
            Err(Error::Locked(why)) => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(Error::Locked(why));
                }
                // Jitter, so two processes that collided do not collide again.
                let jitter = u64::from(rand::random::<u16>()) % (delay.as_millis() as u64 + 1);
                let sleep = (delay + Duration::from_millis(jitter)).min(deadline - now);
                std::thread::sleep(sleep);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// A shared lock for reading snapshot data (restore, ls, verify), so that
/// a prune cannot delete the packs being read. Storage that refuses the
/// lock file (a read-only disk) gives `None`: nothing can prune it either,
/// so reading goes ahead unlocked. A conflicting lock still fails, after
/// the session's lock wait, with [`Error::Locked`].
pub fn read_lock(repo: &Repository, operation: &str) -> Result<Option<LockGuard>> {
    match lock(repo, false, operation) {
        Ok(g) => Ok(Some(g)),
        Err(Error::Backend(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn try_lock(repo: &Repository, exclusive: bool, operation: &str) -> Result<LockGuard> {
    let now = Utc::now();
    let mut info = LockInfo {
        host: crate::host_name(),
        pid: std::process::id(),
        user: crate::user_name(),
        exclusive,
        operation: operation.to_string(),
        created: now,
        refreshed: now,
    };
    let path = write_lock(repo.backend().as_ref(), repo.keys(), &info)?;
    let mine = crate::repository::id_from_path(&path);
    let mut stale = Vec::new();
    let others = match locks_but(repo, mine) {
        Ok(o) => o,
        Err(e) => {
            let _ = repo.backend().delete(&path);
            return Err(e);
        }
    };
    for l in others {
        if l.stale.is_some() {
            stale.push(l);
            continue;
        }
        let other = l.info.as_ref().expect("fresh locks are readable");
        if exclusive || other.exclusive {
            let _ = repo.backend().delete(&path);
            return Err(Error::Locked(format!(
                "{}; wait for it to finish, or run `ledgervault unlock` if that process is gone",
                other.describe()
            )));
        }
    }
    let shared = Arc::new(Shared {
        stop: Mutex::new(false),
        wake: Condvar::new(),
        path: Mutex::new(path),
    });
    let backend = repo.backend().clone();
    let keys = repo.keys().clone();
    let sh = shared.clone();
    let refresher = std::thread::Builder::new()
        .name("lock-refresh".into())
        .spawn(move || loop {
            let stop = sh.stop.lock().unwrap_or_else(|p| p.into_inner());
            // Checks the flag before sleeping, so a stop that came first is not missed.
            let (stop, _) = sh
                .wake
                .wait_timeout_while(stop, REFRESH_EVERY, |stop| !*stop)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
            drop(stop);
            info.refreshed = Utc::now();
            // A failed refresh is retried next round; the old file stays.
            if let Ok(new_path) = write_lock(backend.as_ref(), &keys, &info) {
                let mut p = sh.path.lock().unwrap_or_else(|p| p.into_inner());
                let _ = backend.delete(&p);
                *p = new_path;
            }
        })
        .map_err(|e| Error::io("lock refresh thread", e))?;
    Ok(LockGuard {
        backend: repo.backend().clone(),
        shared,
        refresher: Some(refresher),
        stale,
    })
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let p = self.shared.path.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.backend.delete(&p);
    }
}
