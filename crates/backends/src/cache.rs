//! A local cache of a remote repository's metadata.
//!
//! Index, snapshot, mark and key files are kept in a local folder under
//! their object names. Those names are the BLAKE3 hash of the bytes, so a
//! cached copy is checked on every use: a damaged or edited file is
//! dropped and fetched again, never trusted. Listing the repository still
//! asks the storage (what exists is the storage's word); only the bytes of
//! objects already seen are not downloaded again. Entries whose object is
//! gone from a listing are removed, so the cache holds no more than the
//! repository's metadata. The folder can be deleted at any time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ledgervault_repo::{Backend, BackendResult, ObjectInfo, Retention};

/// The largest range kept (a tree or chunk-map frame is far smaller).
const MAX_RANGE: u64 = 16 << 20;

/// The prefixes whose objects are cached.
const CACHED: [&str; 4] = ["index/", "snapshots/", "marks/", "keys/"];

fn cacheable(path: &str) -> bool {
    CACHED.iter().any(|p| {
        path.strip_prefix(p).is_some_and(|n| {
            n.len() == 64
                && n.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    })
}

fn verifies(path: &str, bytes: &[u8]) -> bool {
    path.rsplit('/').next() == Some(blake3::hash(bytes).to_hex().as_str())
}

/// The copies kept in the cache folder `dir` of the objects under
/// `prefix` (one of the cached prefixes), as path and bytes, each checked
/// against its name. No request is made: the storage may no longer hold
/// them, so they are only good for work that is checked again later.
pub fn kept_copies(dir: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    if !CACHED.contains(&prefix) {
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(dir.join(prefix)) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    for e in rd.flatten() {
        let path = format!("{prefix}{}", e.file_name().to_string_lossy());
        if !cacheable(&path) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path()) {
            if verifies(&path, &bytes) {
                kept.push((path, bytes));
            }
        }
    }
    kept
}

/// A backend whose metadata reads are served from a local folder when the
/// folder holds a copy that still matches its name.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
}

impl CachedBackend {
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        CachedBackend { inner, dir }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cached(&self, path: &str) -> Option<Vec<u8>> {
        let f = self.dir.join(path);
        let bytes = std::fs::read(&f).ok()?;
        if verifies(path, &bytes) {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&f);
            None
        }
    }

    /// Stores a copy; a failure only means the next read downloads again.
    fn store(&self, path: &str, bytes: &[u8]) {
        self.store_file(&self.dir.join(path), bytes)
    }

    fn store_file(&self, f: &Path, bytes: &[u8]) {
        let Some(parent) = f.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let tmp = parent.join(format!(".tmp-{}", rand::random::<u64>()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, f).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(&tmp);
    }

    /// Where a range of a pack is kept, if it may be.
    fn range_file(&self, path: &str, offset: u64, len: u64) -> Option<PathBuf> {
        (path.starts_with("data/") && !path.contains("..") && len <= MAX_RANGE).then(|| {
            self.dir
                .join("ranges")
                .join(path)
                .join(format!("{offset}-{len}"))
        })
    }

    /// Keeps a range: its bytes, then their BLAKE3 hash.
    fn store_range(&self, f: &Path, bytes: &[u8]) {
        let mut stored = bytes.to_vec();
        stored.extend_from_slice(blake3::hash(bytes).as_bytes());
        self.store_file(f, &stored);
    }

    /// Drops cached ranges of packs that the storage no longer lists.
    fn forget_missing_packs(&self, listed: &[ObjectInfo]) {
        let root = self.dir.join("ranges").join("data");
        let Ok(dirs) = std::fs::read_dir(&root) else {
            return;
        };
        let names: std::collections::HashSet<&str> =
            listed.iter().map(|o| o.path.as_str()).collect();
        for d in dirs.flatten() {
            let Ok(packs) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for p in packs.flatten() {
                let path = format!(
                    "data/{}/{}",
                    d.file_name().to_string_lossy(),
                    p.file_name().to_string_lossy()
                );
                if !names.contains(path.as_str()) {
                    let _ = std::fs::remove_dir_all(p.path());
                }
            }
        }
    }

    /// Drops cached files of `prefix` that the storage no longer lists.
    fn forget_missing(&self, prefix: &str, listed: &[ObjectInfo]) {
        let Ok(rd) = std::fs::read_dir(self.dir.join(prefix)) else {
            return;
        };
        let names: std::collections::HashSet<&str> = listed
            .iter()
            .filter_map(|o| o.path.strip_prefix(prefix))
            .collect();
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !names.contains(name.as_ref()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let listed = self.inner.list(prefix)?;
        if CACHED.contains(&prefix) {
            self.forget_missing(prefix, &listed);
        }
        if prefix == "data/" {
            self.forget_missing_packs(&listed);
        }
        Ok(listed)
    }
    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        if !cacheable(path) {
            return self.inner.read(path);
        }
        if let Some(b) = self.cached(path) {
            return Ok(b);
        }
        let bytes = self.inner.read(path)?;
        if verifies(path, &bytes) {
            self.store(path, &bytes);
        }
        Ok(bytes)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn keep_metadata(&self, path: &str, offset: u64, bytes: &[u8]) {
        if let Some(f) = self.range_file(path, offset, bytes.len() as u64) {
            self.store_range(&f, bytes);
        }
    }
    fn read_range_metadata(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        // Kept as ranges/<pack path>/<offset>-<len>: the bytes, then the
        // BLAKE3 hash of the bytes, checked on every use.
        let Some(f) = self.range_file(path, offset, len) else {
            return self.inner.read_range(path, offset, len);
        };
        if let Ok(mut stored) = std::fs::read(&f) {
            if stored.len() as u64 == len + 32 {
                let sum = stored.split_off(len as usize);
                if blake3::hash(&stored).as_bytes()[..] == sum[..] {
                    return Ok(stored);
                }
            }
            let _ = std::fs::remove_file(&f);
        }
        let bytes = self.inner.read_range(path, offset, len)?;
        self.store_range(&f, &bytes);
        Ok(bytes)
    }
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write(path, data)?;
        if cacheable(path) && verifies(path, data) {
            self.store(path, data);
        }
        Ok(())
    }
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> BackendResult<()> {
        self.inner.write_parts(path, parts)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.inner.delete(path)?;
        if cacheable(path) {
            let _ = std::fs::remove_file(self.dir.join(path));
        }
        Ok(())
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
    use ledgervault_repo::MemoryBackend;

    #[test]
    fn serves_verified_copies_and_refetches_damaged_ones() {
        let mem = Arc::new(MemoryBackend::new());
        let tmp = tempfile::tempdir().unwrap();
        let c = CachedBackend::new(mem.clone(), tmp.path().join("c"));
        let body = b"an index file".to_vec();
        let path = format!("index/{}", blake3::hash(&body).to_hex());
        c.write(&path, &body).unwrap();
        assert!(tmp.path().join("c").join(&path).exists());
        // Served from the cache even when the storage no longer answers it.
        mem.delete(&path).unwrap();
        assert_eq!(c.read(&path).unwrap(), body);
        // A damaged copy is dropped, and the storage is asked again.
        std::fs::write(tmp.path().join("c").join(&path), b"tampered").unwrap();
        assert!(c.read(&path).is_err());
        mem.write(&path, &body).unwrap();
        assert_eq!(c.read(&path).unwrap(), body);
        // What a listing no longer shows leaves the cache.
        mem.delete(&path).unwrap();
        assert!(c.list("index/").unwrap().is_empty());
        assert!(!tmp.path().join("c").join(&path).exists());
        // Ranges of packs read as metadata are kept with their hash.
        let pack = format!("data/ab/{}", blake3::hash(b"pack").to_hex());
        mem.write(&pack, b"0123456789").unwrap();
        assert_eq!(c.read_range_metadata(&pack, 2, 3).unwrap(), b"234");
        mem.write(&pack, b"xxxxxxxxxx").unwrap();
        assert_eq!(c.read_range_metadata(&pack, 2, 3).unwrap(), b"234");
        let f = tmp.path().join("c/ranges").join(&pack).join("2-3");
        let mut stored = std::fs::read(&f).unwrap();
        stored[0] ^= 1;
        std::fs::write(&f, stored).unwrap();
        assert_eq!(c.read_range_metadata(&pack, 2, 3).unwrap(), b"xxx");
        mem.delete(&pack).unwrap();
        c.list("data/").unwrap();
        assert!(!f.exists());
        // What a backup wrote is kept without being read back.
        mem.write(&pack, b"abcdefgh").unwrap();
        c.keep_metadata(&pack, 4, b"efgh");
        mem.write(&pack, b"--------").unwrap();
        assert_eq!(c.read_range_metadata(&pack, 4, 4).unwrap(), b"efgh");
        // Objects that are not named by their content are never cached.
        c.write("config", b"x").unwrap();
        assert!(!tmp.path().join("c/config").exists());
    }
}
