//! Immutable repositories: every object locked against deletion and
//! overwrite for a number of days (S3 Object Lock, compliance mode).
//!
//! [`ImmutableBackend`] wraps the storage of a repository whose config has
//! `immutable_days`: each object it writes (but lock files and damage
//! records, which are meant to go away) is locked for that many days, and
//! the lock is read back before the write counts as done. A backup then
//! extends the locks of the packs its snapshot relies on
//! ([`Repository::retain_for_snapshot`]), so nothing the snapshots of the
//! last N days need can be removed by anyone, whatever keys they hold.
//!
//! Locks are extended past the N days by a slack (a quarter of N, 1 to 30
//! days), so a pack used every night is extended once per slack, not every
//! night; the storage remembers dates it has seen (a compliance date only
//! ever grows), so a nightly backup asks about nothing it already knows.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, BackendResult, ObjectInfo, Retention};

const DAY: Duration = Duration::from_secs(86_400);

/// The extra days a lock is extended by, past the N it must cover.
pub fn slack_days(days: u32) -> u32 {
    (days / 4).clamp(1, 30)
}

/// The span a lock must cover from now, and the date to extend it to.
pub fn lock_window(days: u32, now: SystemTime) -> (SystemTime, SystemTime) {
    let at_least = now + DAY * days;
    (at_least, at_least + DAY * slack_days(days))
}

/// Whether objects under `path` are locked when written.
pub fn locked_kind(path: &str) -> bool {
    !(path.starts_with("locks/") || path.starts_with("damaged/"))
}

/// Storage that locks what it writes (see the module documentation).
pub struct ImmutableBackend {
    inner: Arc<dyn Backend>,
    days: u32,
}

impl ImmutableBackend {
    pub fn new(inner: Arc<dyn Backend>, days: u32) -> Self {
        ImmutableBackend { inner, days }
    }

    fn lock(&self, path: &str) -> BackendResult<()> {
        if locked_kind(path) {
            let (at_least, to) = lock_window(self.days, SystemTime::now());
            self.inner.retain(path, at_least, to)?;
        }
        Ok(())
    }
}

impl Backend for ImmutableBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write(path, data)?;
        self.lock(path)
    }
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> BackendResult<()> {
        self.inner.write_parts(path, parts)?;
        self.lock(path)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.inner.delete(path)
    }
    fn free_space(&self) -> Option<u64> {
        self.inner.free_space()
    }
    fn retention(&self) -> Retention {
        self.inner.retention()
    }
    fn remote(&self) -> bool {
        self.inner.remote()
    }
    fn read_range_metadata(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range_metadata(path, offset, len)
    }
    fn keep_metadata(&self, path: &str, offset: u64, bytes: &[u8]) {
        self.inner.keep_metadata(path, offset, bytes)
    }
    fn object_lock(&self) -> BackendResult<Option<bool>> {
        self.inner.object_lock()
    }
    fn retain(&self, path: &str, at_least: SystemTime, to: SystemTime) -> BackendResult<bool> {
        self.inner.retain(path, at_least, to)
    }
    fn retained_until(&self, path: &str) -> BackendResult<Option<SystemTime>> {
        self.inner.retained_until(path)
    }
    fn replaced(&self) -> BackendResult<Vec<(String, String)>> {
        self.inner.replaced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_kinds() {
        let now = SystemTime::UNIX_EPOCH + DAY * 1000;
        let (a, b) = lock_window(30, now);
        assert_eq!(a, now + DAY * 30);
        assert_eq!(b, now + DAY * 37);
        assert_eq!(slack_days(1), 1);
        assert_eq!(slack_days(3650), 30);
        assert!(locked_kind("data/ab/abcd"));
        assert!(locked_kind("config"));
        assert!(!locked_kind("locks/x"));
        assert!(!locked_kind("damaged/x"));
    }
}
