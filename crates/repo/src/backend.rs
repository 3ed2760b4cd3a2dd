//! The storage seam.
//!
//! A [`Backend`] stores opaque objects under slash-separated paths such as
//! `data/3f/3f2a…` and knows nothing of chunks, packs or snapshots. The trait
//! is deliberately small so that a local directory and an S3 bucket fit it
//! equally: there is no rename, no append and no partial write. Features such
//! as fault injection wrap a backend rather than living inside one.
//!
//! The paths the engine uses are listed in `docs/FORMAT.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// One stored object, as returned by [`Backend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full path of the object, e.g. `index/ab12…`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, when the storage says.
    pub modified: Option<std::time::SystemTime>,
}

/// What kind of failure a backend reports; callers branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The object does not exist.
    NotFound,
    /// The destination has no space left.
    StorageFull,
    /// Access was refused.
    PermissionDenied,
    /// A failure that may go away if retried (timeouts, throttling).
    Temporary,
    /// Anything else.
    Other,
}

/// An error from a backend, naming the object it concerns.
#[derive(Debug, Clone)]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub path: String,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: BackendErrorKind, path: &str, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// Classifies a `std::io::Error` raised while handling `path`.
    pub fn from_io(path: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => BackendErrorKind::NotFound,
            K::PermissionDenied => BackendErrorKind::PermissionDenied,
            K::TimedOut | K::Interrupted | K::WouldBlock => BackendErrorKind::Temporary,
            _ if e.raw_os_error() == Some(libc::ENOSPC)
                || e.raw_os_error() == Some(libc::EDQUOT) =>
            {
                BackendErrorKind::StorageFull
            }
            _ => BackendErrorKind::Other,
        };
        let message = match kind {
            BackendErrorKind::StorageFull => "the destination disk is full".to_string(),
            _ => e.to_string(),
        };
        BackendError::new(kind, path, message)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "storage: {}", self.message)
        } else {
            write!(f, "storage object {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for BackendError {}

/// Result of a backend call.
pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// Object storage as the engine needs it.
///
/// Contracts every implementation keeps:
/// - **Whole-object writes.** [`write`](Backend::write) stores all of `data`
///   or nothing. A reader, concurrent or after a crash at any moment, sees
///   either no object or the complete one, never a prefix.
/// - **Durability.** When `write` returns `Ok`, the object survives a power
///   loss (local: the file and its directory are fsynced).
/// - **Objects are immutable by convention.** The engine names data objects by
///   the hash of their bytes and never rewrites them; writing to an existing
///   path replaces it atomically (only lock files are ever rewritten).
/// - **No rename, no append.** Nothing here relies on them, so S3 fits.
/// - **Listing** returns every object whose path starts with `prefix`, which
///   is always empty or ends in `/`, in no particular order. Objects written
///   before the call began are included; objects being written or deleted
///   concurrently may or may not be, and a concurrent delete is never an
///   error of the listing.
/// - **Errors name the object** and carry a [`BackendErrorKind`].
pub trait Backend: Send + Sync + 'static {
    /// Where this backend stores things, for messages (`/srv/backup`, `s3://…`).
    /// Never contains credentials.
    fn location(&self) -> String;

    /// Lists objects under `prefix` (empty or ending in `/`).
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;

    /// Reads a whole object.
    fn read(&self, path: &str) -> BackendResult<Vec<u8>>;

    /// Reads `len` bytes at `offset`. Reading past the end is an error of kind
    /// `Other` that says the object is shorter than expected.
    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>>;

    /// Reads `len` bytes at `offset` that the engine will read again on
    /// later runs (the frames of trees and chunk maps, which every backup
    /// reads from its parent): a backend that keeps a local cache may serve
    /// them from it. Same contract as [`read_range`](Backend::read_range).
    fn read_range_metadata(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.read_range(path, offset, len)
    }

    /// Tells a backend with a local cache that `bytes`, just written at
    /// `offset` of `path`, will be read with
    /// [`read_range_metadata`](Backend::read_range_metadata) later (the
    /// frames of trees and chunk maps a backup wrote): it may keep them.
    fn keep_metadata(&self, _path: &str, _offset: u64, _bytes: &[u8]) {}

    /// Writes a whole object atomically and durably (see the trait contracts).
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()>;

    /// Writes a whole object given in pieces, with the same guarantees as
    /// [`write`](Backend::write). Backends that can write pieces without
    /// joining them first (vectored I/O, multipart upload) override this.
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> BackendResult<()> {
        self.write(path, &parts.concat())
    }

    /// Deletes an object. Deleting a missing object is `Ok`.
    fn delete(&self, path: &str) -> BackendResult<()>;

    /// Free space at the destination in bytes, when the storage can tell.
    fn free_space(&self) -> Option<u64> {
        None
    }

    /// Whether each request costs a network round trip (object storage):
    /// readers then fetch neighbouring data together and keep more
    /// requests in flight.
    fn remote(&self) -> bool {
        false
    }

    /// Whether the storage keeps older versions of objects (S3 versioning),
    /// so that an overwrite or a delete by others can be undone.
    fn retention(&self) -> Retention {
        Retention::None
    }

    /// Whether the storage can lock objects against deletion (S3 Object
    /// Lock): `Some(true)` enabled, `Some(false)` supported but off, `None`
    /// not supported at all.
    fn object_lock(&self) -> BackendResult<Option<bool>> {
        Ok(None)
    }

    /// Makes sure `path` cannot be deleted or overwritten before
    /// `at_least`: when its retention ends earlier, extends it to
    /// `extend_to` (compliance mode) and reads the date back. Returns
    /// whether a request to extend was made.
    fn retain(
        &self,
        path: &str,
        _at_least: std::time::SystemTime,
        _extend_to: std::time::SystemTime,
    ) -> BackendResult<bool> {
        Err(BackendError::new(
            BackendErrorKind::Other,
            path,
            "this storage cannot lock objects (no S3 Object Lock)",
        ))
    }

    /// Until when `path` is locked against deletion, if it is now.
    fn retained_until(&self, _path: &str) -> BackendResult<Option<std::time::SystemTime>> {
        Ok(None)
    }

    /// Objects named by their content whose current version is not the one
    /// the repository wrote (overwritten, or hidden by a delete marker), with
    /// the reason. Only storage that keeps versions can tell.
    fn replaced(&self) -> BackendResult<Vec<(String, String)>> {
        Ok(vec![])
    }
}

/// What the storage keeps of replaced or deleted objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Nothing: an overwrite or delete is final.
    None,
    /// Older versions are kept (and may be locked).
    Versioned,
}

/// Wraps a backend so it can only add: deleting anything but a lock file,
/// or writing over an existing object, fails with `PermissionDenied`.
///
/// An append-only session runs on this, so no code path, however it is
/// reached, can remove or replace backed-up data. (It guards ledgervault's
/// own use of the storage; protection against other programs on the same
/// machine needs storage that enforces it, see the README.)
pub struct AppendOnlyBackend {
    inner: std::sync::Arc<dyn Backend>,
    /// Lock files this session wrote: the only objects it may delete.
    own_locks: Mutex<std::collections::HashSet<String>>,
}

impl AppendOnlyBackend {
    pub fn new(inner: std::sync::Arc<dyn Backend>) -> Self {
        AppendOnlyBackend {
            inner,
            own_locks: Mutex::new(Default::default()),
        }
    }

    fn own_locks(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.own_locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn may_write(&self, path: &str) -> BackendResult<()> {
        if path.starts_with("locks/") {
            return Ok(());
        }
        match self.inner.read_range(path, 0, 0) {
            Err(e) if e.kind == BackendErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(BackendError::new(
                BackendErrorKind::PermissionDenied,
                path,
                "exists already, and an append-only session never overwrites",
            )),
        }
    }
}

impl Backend for AppendOnlyBackend {
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
        self.may_write(path)?;
        self.inner.write(path, data)?;
        if path.starts_with("locks/") {
            self.own_locks().insert(path.to_string());
        }
        Ok(())
    }
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> BackendResult<()> {
        self.may_write(path)?;
        self.inner.write_parts(path, parts)?;
        if path.starts_with("locks/") {
            self.own_locks().insert(path.to_string());
        }
        Ok(())
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        // Its own locks only: another process's lock, stale or not, may
        // guard a backup in flight, and removing it would let a prune
        // delete that backup's packs.
        if path.starts_with("locks/") && self.own_locks().remove(path) {
            return self.inner.delete(path);
        }
        Err(BackendError::new(
            BackendErrorKind::PermissionDenied,
            path,
            if path.starts_with("locks/") {
                "not deleted: an append-only session removes only the locks it took itself; removing another's needs a full-access key"
            } else {
                "not deleted: this session is append-only"
            },
        ))
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
    fn retain(
        &self,
        path: &str,
        at_least: std::time::SystemTime,
        extend_to: std::time::SystemTime,
    ) -> BackendResult<bool> {
        // Extending a lock only ever protects more: allowed.
        self.inner.retain(path, at_least, extend_to)
    }
    fn retained_until(&self, path: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.inner.retained_until(path)
    }
    fn replaced(&self) -> BackendResult<Vec<(String, String)>> {
        self.inner.replaced()
    }
}

/// A backend held in memory, for tests and for wrapping by test backends.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (Vec<u8>, std::time::SystemTime)>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, std::time::SystemTime)>> {
        // A panic while holding the lock cannot leave the map half-updated:
        // each operation is a single insert or remove.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, t))| ObjectInfo {
                path: k.clone(),
                size: v.len() as u64,
                modified: Some(*t),
            })
            .collect())
    }

    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        self.lock()
            .get(path)
            .map(|(v, _)| v.clone())
            .ok_or_else(|| BackendError::new(BackendErrorKind::NotFound, path, "not found"))
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let objects = self.lock();
        let (data, _) = objects
            .get(path)
            .ok_or_else(|| BackendError::new(BackendErrorKind::NotFound, path, "not found"))?;
        let end = offset.checked_add(len).filter(|&e| e <= data.len() as u64);
        match end {
            Some(end) => Ok(data[offset as usize..end as usize].to_vec()),
            None => Err(short_object(path, offset, len, data.len() as u64)),
        }
    }

    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        self.lock().insert(
            path.to_string(),
            (data.to_vec(), std::time::SystemTime::now()),
        );
        Ok(())
    }

    fn delete(&self, path: &str) -> BackendResult<()> {
        self.lock().remove(path);
        Ok(())
    }
}

/// The error for a range read past the end of an object.
pub fn short_object(path: &str, offset: u64, len: u64, size: u64) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        path,
        format!(
            "object is {size} bytes, too short to read {len} bytes at offset {offset} (truncated?)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_contract() {
        let b = MemoryBackend::new();
        b.write("data/ab/ab1", b"hello").unwrap();
        b.write("data/cd/cd1", b"world!").unwrap();
        b.write("index/x", b"i").unwrap();
        let mut l = b.list("data/").unwrap();
        l.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].size, 6);
        assert_eq!(b.read_range("data/ab/ab1", 1, 3).unwrap(), b"ell");
        assert!(b.read_range("data/ab/ab1", 3, 3).is_err());
        assert_eq!(b.read("nope").unwrap_err().kind, BackendErrorKind::NotFound);
        b.delete("data/ab/ab1").unwrap();
        b.delete("data/ab/ab1").unwrap();
        assert_eq!(b.list("").unwrap().len(), 2);
    }
}
