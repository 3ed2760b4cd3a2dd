//! Immutable repositories over a storage that keeps locks the way S3 Object
//! Lock does in compliance mode (a date can only grow; a locked object
//! cannot be deleted or overwritten), in memory: the engine's side of
//! `init --immutable-days`. The real thing runs against Ceph in
//! crates/cli/tests/s3.rs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ledgervault_repo::*;
use ledgervault_testkit::fixtures;

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// Memory storage with Object Lock: `retain` sets (never shortens) a date,
/// delete and overwrite of a locked object fail, and every `retain` call
/// is recorded.
#[derive(Default)]
struct Locking {
    inner: MemoryBackend,
    until: Mutex<HashMap<String, SystemTime>>,
    /// (path, at_least) of every retain call that extended a lock.
    extended: Mutex<Vec<(String, SystemTime)>>,
}

impl Locking {
    fn locked(&self, path: &str) -> Option<SystemTime> {
        self.until
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .filter(|t| *t > SystemTime::now())
    }
    /// Moves every lock `by` into the past, as if that much time went by.
    fn age(&self, by: Duration) {
        for t in self.until.lock().unwrap().values_mut() {
            *t -= by;
        }
    }
}

impl Backend for Locking {
    fn location(&self) -> String {
        "locking memory".into()
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
        if self.locked(path).is_some() {
            return Err(BackendError::new(
                BackendErrorKind::PermissionDenied,
                path,
                "locked",
            ));
        }
        self.inner.write(path, data)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        if self.locked(path).is_some() {
            return Err(BackendError::new(
                BackendErrorKind::PermissionDenied,
                path,
                "locked",
            ));
        }
        self.inner.delete(path)
    }
    fn object_lock(&self) -> BackendResult<Option<bool>> {
        Ok(Some(true))
    }
    fn retain(&self, path: &str, at_least: SystemTime, to: SystemTime) -> BackendResult<bool> {
        let mut until = self.until.lock().unwrap();
        let t = until
            .entry(path.to_string())
            .or_insert(SystemTime::UNIX_EPOCH);
        if *t >= at_least {
            return Ok(false);
        }
        *t = (*t).max(to);
        self.extended
            .lock()
            .unwrap()
            .push((path.to_string(), at_least));
        Ok(true)
    }
    fn retained_until(&self, path: &str) -> BackendResult<Option<SystemTime>> {
        Ok(self.locked(path))
    }
}

fn backup_path(repo: &Repository, p: &Path) -> BackupSummary {
    backup(
        repo,
        vec![BackupSource::Path(p.to_path_buf())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap()
}

fn keep_last_one() -> ForgetOptions {
    ForgetOptions {
        policy: Policy {
            last: 1,
            ..Policy::none()
        },
        guards: Guards::default(),
        dry_run: false,
    }
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn every_object_is_locked_and_backups_extend_what_they_still_use() {
    let store = Arc::new(Locking::default());
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 2_000_000, 3).unwrap();
    let repo = Repository::init(
        store.clone(),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: Some(10),
        },
    )
    .unwrap();
    assert_eq!(repo.config().format_version, 2);
    let first = backup_path(&repo, src.path());
    // Every object but lock files is locked for at least ten days.
    let soon = SystemTime::now() + DAY * 10 - Duration::from_secs(60);
    for o in store.list("").unwrap() {
        if o.path.starts_with("locks/") {
            continue;
        }
        let until = store.locked(&o.path);
        assert!(
            until.is_some_and(|t| t > soon),
            "{} not locked: {until:?}",
            o.path
        );
    }
    let packs: Vec<String> = store
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert!(!packs.is_empty());

    // Nine days later nothing changed: the next backup extends the locks
    // of the packs its snapshot still uses, and of config and keys.
    store.age(DAY * 9);
    store.extended.lock().unwrap().clear();
    let reopened = Repository::open(store.clone(), b"pw").unwrap();
    let second = backup_path(&reopened, src.path());
    assert_ne!(first.snapshot_id, second.snapshot_id);
    assert!(
        second.locks_extended >= packs.len() + 2,
        "{}",
        second.locks_extended
    );
    let extended: Vec<String> = store
        .extended
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.0.clone())
        .collect();
    for p in packs.iter().chain([&"config".to_string()]) {
        assert!(extended.contains(p), "{p} not extended");
        assert!(store.locked(p).unwrap() > SystemTime::now() + DAY * 10 - Duration::from_secs(60));
    }
    // A backup right after extends nothing more.
    let third = backup_path(&reopened, src.path());
    assert_eq!(third.locks_extended, 0);
}

#[test]
fn forget_and_prune_skip_what_is_locked_and_free_it_later() {
    let store = Arc::new(Locking::default());
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 5).unwrap();
    let repo = Repository::init(
        store.clone(),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: Some(3),
        },
    )
    .unwrap();
    backup_path(&repo, src.path());
    // Replace everything: the first snapshot's data is no longer used.
    std::fs::remove_dir_all(src.path()).unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 6).unwrap();
    backup_path(&repo, src.path());
    let opts = keep_last_one();
    let f = forget(&repo, &opts).unwrap();
    assert!(f.removed.is_empty(), "{:?}", f.removed);
    assert_eq!(f.locked.len(), 1);
    assert_eq!(repo.list_ids(FileKind::Snapshot).unwrap().len(), 2);

    // Five days on (three days and a slack of one), every lock has ended:
    // forget removes the old snapshot, and prune its data.
    store.age(DAY * 5);
    let f = forget(&repo, &opts).unwrap();
    assert_eq!(f.removed.len(), 1, "{:?}", f.locked);
    let prune_opts = PruneOptions {
        min_pack_age: Duration::ZERO,
        ..Default::default()
    };
    let r = prune(&repo, &prune_opts, &NoProgress).unwrap();
    assert!(
        r.packs_deleted + r.packs_repacked > 0 && r.bytes_deleted > 0,
        "{r:?}"
    );
    assert_eq!(r.packs_locked, 0, "{r:?}");
    let c = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
}

#[test]
fn prune_keeps_locked_packs_and_says_until_when() {
    let store = Arc::new(Locking::default());
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 8).unwrap();
    let repo = Repository::init(
        store.clone(),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: Some(30),
        },
    )
    .unwrap();
    let first = backup_path(&repo, src.path());
    std::fs::remove_dir_all(src.path()).unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 9).unwrap();
    backup_path(&repo, src.path());
    // The first snapshot goes (its lock is aged away alone), its packs
    // are still locked: prune keeps them, counts them and stops cleanly.
    store.until.lock().unwrap().insert(
        format!("snapshots/{}", first.snapshot_id),
        SystemTime::now(),
    );
    let f = forget(&repo, &keep_last_one()).unwrap();
    assert_eq!(f.removed, vec![first.snapshot_id]);
    let r = prune(
        &repo,
        &PruneOptions {
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.packs_locked > 0, "{r:?}");
    assert_eq!(r.packs_deleted + r.packs_repacked, 0, "{r:?}");
    assert!(r.locked_until.is_some());
    let c = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
}

#[test]
fn storage_without_object_lock_refuses_an_immutable_repository() {
    let e = Repository::init(
        Arc::new(MemoryBackend::new()),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: Some(7),
        },
    )
    .err()
    .expect("refused");
    assert!(e.to_string().contains("no Object Lock"), "{e}");
}

/// Storage that records what a backup offers to keep as metadata.
#[derive(Default)]
struct Keeping {
    inner: MemoryBackend,
    kept: Mutex<Vec<(String, u64, Vec<u8>)>>,
}

impl Backend for Keeping {
    fn location(&self) -> String {
        "keeping memory".into()
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
        self.inner.write(path, data)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.inner.delete(path)
    }
    fn keep_metadata(&self, path: &str, offset: u64, bytes: &[u8]) {
        self.kept
            .lock()
            .unwrap()
            .push((path.to_string(), offset, bytes.to_vec()));
    }
}

#[test]
fn frames_offered_to_a_metadata_cache_are_the_bytes_at_their_offsets() {
    let store = Arc::new(Keeping::default());
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 11).unwrap();
    let repo = Repository::init(
        store.clone(),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap();
    backup_path(&repo, src.path());
    let kept = store.kept.lock().unwrap();
    assert!(!kept.is_empty(), "no tree frame was offered");
    for (path, offset, bytes) in kept.iter() {
        let stored = store
            .inner
            .read_range(path, *offset, bytes.len() as u64)
            .unwrap();
        assert!(
            stored == *bytes,
            "{path} at {offset}: not the bytes stored there"
        );
    }
}
