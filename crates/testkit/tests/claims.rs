//! A backup never claims what the repository cannot give back, and locks
//! belong to whoever took them.
//!
//! Each test damages a real repository on disk the way a disk error, a
//! careless cleanup or an attacker would (a pack deleted, a byte flipped,
//! index files lost, a lock removed and a prune run during a backup), then
//! proves that what the backup reports saved restores.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;
use ledgervault_testkit::fixtures;

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    repo_dir: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("share");
    fixtures::mixed_tree(&src, 3_000_000, 5).unwrap();
    let repo_dir = root.join("repo");
    Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        b"pw",
        &InitOptions {
            pack_size: 256 * 1024,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap();
    Setup {
        _dir: dir,
        root,
        src,
        repo_dir,
    }
}

fn open(dir: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(dir)), b"pw").unwrap()
}

fn open_on(backend: Arc<dyn Backend>) -> Repository {
    Repository::open(backend, b"pw").unwrap()
}

fn backup_of(repo: &Repository, src: &Path) -> Result<BackupSummary> {
    backup(
        repo,
        vec![BackupSource::Path(src.to_path_buf())],
        &BackupOptions::default(),
        &NoProgress,
    )
}

fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_symlink() {
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

/// Restores snapshot `id` and asserts it is the source, byte for byte.
fn assert_restores(repo: &Repository, id: &Id, src: &Path, out: &Path) {
    let (id, snap) = repo.find_snapshot(&id.to_hex()).unwrap();
    let sum = restore(
        repo,
        id,
        &snap,
        out,
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(sum.failed.is_empty(), "{:?}", sum.failed);
    assert_eq!(files(&out.join("share")), files(src));
}

fn packs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(dir.join("data")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(p.unwrap().path());
        }
    }
    out.sort();
    out
}

/// The biggest pack: it holds file data, not only trees.
fn biggest_pack(dir: &Path) -> PathBuf {
    packs(dir)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

/// Damages a file the way a failing disk does: one bit, size unchanged.
fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[100] ^= 0x40;
    fs::write(path, &bytes).unwrap();
}

#[test]
fn data_of_a_deleted_pack_is_stored_again_and_the_snapshot_restores() {
    let s = setup();
    let repo = open(&s.repo_dir);
    backup_of(&repo, &s.src).unwrap();
    // Delete one data pack (the biggest: file data, not only trees).
    fs::remove_file(biggest_pack(&s.repo_dir)).unwrap();

    // Three nightly backups of the unchanged share: each must restore.
    for night in 0..3 {
        let repo = open(&s.repo_dir);
        let sum = backup_of(&repo, &s.src).unwrap();
        if night == 0 {
            assert_eq!(sum.weak_packs, 1, "{sum:?}");
            assert!(sum.blobs_stored_again > 0, "{sum:?}");
            assert!(sum.bytes_new > 0, "{sum:?}");
        } else {
            assert_eq!(sum.blobs_stored_again, 0, "stored once is enough: {sum:?}");
        }
        assert_restores(
            &repo,
            &sum.snapshot_id,
            &s.src,
            &s.root.join(format!("out{night}")),
        );
    }
}

#[test]
fn data_that_check_found_damaged_is_stored_again() {
    let s = setup();
    let repo = open(&s.repo_dir);
    backup_of(&repo, &s.src).unwrap();
    flip_a_byte(&biggest_pack(&s.repo_dir));

    // Without check, nothing is known: the damage is found by check, which
    // records it and says that the next backup stores the data again.
    let report = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(!report.ok());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the next backup stores again")),
        "{:?}",
        report.warnings
    );
    let sum = backup_of(&open(&s.repo_dir), &s.src).unwrap();
    assert_eq!(sum.weak_packs, 1, "{sum:?}");
    assert!(sum.blobs_stored_again > 0, "{sum:?}");
    assert_restores(&repo, &sum.snapshot_id, &s.src, &s.root.join("out"));

    // repair index then drops the damaged pack, and its record with it.
    repair_index(&repo, &RepairOptions::default(), &NoProgress).unwrap();
    assert!(repo.damaged_packs().unwrap().is_empty());
    assert_restores(&repo, &sum.snapshot_id, &s.src, &s.root.join("out2"));
}

#[test]
fn a_restore_that_meets_damage_records_it_for_the_next_backup() {
    let s = setup();
    let repo = open(&s.repo_dir);
    let first = backup_of(&repo, &s.src).unwrap();
    flip_a_byte(&biggest_pack(&s.repo_dir));
    let (id, snap) = repo.find_snapshot(&first.snapshot_id.to_hex()).unwrap();
    let sum = restore(
        &repo,
        id,
        &snap,
        &s.root.join("bad"),
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(!sum.failed.is_empty());
    assert_eq!(repo.damaged_packs().unwrap().len(), 1, "{:?}", sum.failed);
    let next = backup_of(&open(&s.repo_dir), &s.src).unwrap();
    assert!(next.blobs_stored_again > 0, "{next:?}");
    assert_restores(&repo, &next.snapshot_id, &s.src, &s.root.join("out"));
}

#[test]
fn packs_left_without_an_index_are_checked_and_reused() {
    let s = setup();
    let repo = open(&s.repo_dir);
    let first = backup_of(&repo, &s.src).unwrap();
    // As if the backup had died before writing its index files (a full
    // disk, a kill): the packs are there, no index lists them.
    for e in fs::read_dir(s.repo_dir.join("index")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let before = packs(&s.repo_dir).len();
    let repo = open(&s.repo_dir);
    let sum = backup_of(&repo, &s.src).unwrap();
    assert_eq!(sum.packs_adopted, before, "{sum:?}");
    assert_eq!(sum.bytes_new, 0, "nothing is stored twice: {sum:?}");
    assert_eq!(packs(&s.repo_dir).len(), before);
    assert_restores(&repo, &sum.snapshot_id, &s.src, &s.root.join("out"));
    // The first snapshot restores again too, through the adopted packs.
    assert_restores(&repo, &first.snapshot_id, &s.src, &s.root.join("out-first"));
    assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
}

/// What a [`BeforeWrite`] does before each write: given the storage it
/// wraps and the path about to be written, an error fails that write.
type WriteHook = Box<dyn Fn(&dyn Backend, &str) -> BackendResult<()> + Send + Sync>;

/// A backend that runs a hook before every write and passes the rest
/// through: storage that something else acts on meanwhile.
struct BeforeWrite {
    inner: Arc<dyn Backend>,
    hook: WriteHook,
}

impl Backend for BeforeWrite {
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
        (self.hook)(self.inner.as_ref(), path)?;
        self.inner.write(path, data)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.inner.delete(path)
    }
}

/// A backend that, the first time a backup writes an index file, deletes
/// every pack in `old`: a prune by someone who removed the backup's lock.
/// `done` tells whether it happened.
fn prune_midway(inner: Arc<dyn Backend>, old: Vec<String>, done: Arc<AtomicBool>) -> BeforeWrite {
    BeforeWrite {
        inner,
        hook: Box::new(move |inner, path| {
            if path.starts_with("index/") && !done.swap(true, Ordering::SeqCst) {
                for p in &old {
                    inner.delete(p).unwrap();
                }
            }
            Ok(())
        }),
    }
}

#[test]
fn a_backup_whose_packs_vanish_while_it_runs_writes_no_snapshot() {
    let s = setup();
    let repo = open(&s.repo_dir);
    backup_of(&repo, &s.src).unwrap();
    let snaps_before = repo.snapshots().unwrap().0.len();
    // The share grows by one file, so the backup writes a pack and an index
    // file, and deduplicates the rest against the old packs.
    fs::write(s.src.join("new.csv"), vec![b'x'; 300_000]).unwrap();
    let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(&s.repo_dir));
    let old = inner
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let repo = open_on(Arc::new(prune_midway(inner, old, done.clone())));
    let e = backup_of(&repo, &s.src).unwrap_err();
    assert!(done.load(Ordering::SeqCst), "the packs were deleted midway");
    assert!(
        e.to_string().contains("vanished while this backup ran"),
        "{e}"
    );
    assert_eq!(
        repo.snapshots().unwrap().0.len(),
        snaps_before,
        "no snapshot claims them"
    );
    // The next backup stores the data anew, and its snapshot restores.
    let repo = open(&s.repo_dir);
    let sum = backup_of(&repo, &s.src).unwrap();
    assert_restores(&repo, &sum.snapshot_id, &s.src, &s.root.join("out"));
}

/// Only the packs of unchanged file data vanish (the folder's tree is new
/// tonight): the proof must cover data deduplicated against old packs, not
/// only trees and maps.
#[test]
fn a_backup_whose_old_data_packs_vanish_writes_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("share");
    fs::create_dir_all(&src).unwrap();
    let mut old = vec![0u8; 1_000_000];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut old);
    fs::write(src.join("old.bin"), &old).unwrap();
    let repo_dir = dir.path().join("repo");
    Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        b"pw",
        &InitOptions {
            pack_size: 256 * 1024,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap();
    let first = backup_of(&open(&repo_dir), &src).unwrap();
    fs::write(src.join("new.bin"), b"tonight's new file").unwrap();
    let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let old_packs = inner
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let backend = prune_midway(inner, old_packs, done.clone());
    let e = backup_of(&open_on(Arc::new(backend)), &src).unwrap_err();
    assert!(done.load(Ordering::SeqCst));
    assert!(
        e.to_string().contains("vanished while this backup ran"),
        "{e}"
    );
    let repo = open(&repo_dir);
    assert_eq!(repo.snapshots().unwrap().0.len(), 1);
    assert_eq!(repo.snapshots().unwrap().0[0].0, first.snapshot_id);
}

#[test]
fn prune_never_deletes_a_young_pack_indexed_or_not() {
    let s = setup();
    let repo = open(&s.repo_dir);
    let first = backup_of(&repo, &s.src).unwrap();
    // One pack no index lists, as a backup still running leaves it.
    fs::remove_file(
        fs::read_dir(s.repo_dir.join("index"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    // And the snapshot forgotten, so the indexed packs are unused too.
    fs::remove_file(s.repo_dir.join(format!("snapshots/{}", first.snapshot_id))).unwrap();
    let before = packs(&s.repo_dir);
    let r = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(
        r.packs_deleted + r.packs_repacked + r.packs_unindexed,
        0,
        "{r:?}"
    );
    assert_eq!(r.packs_too_young, before.len(), "{r:?}");
    assert_eq!(packs(&s.repo_dir), before);
    // Once they are old enough, they go.
    let r = prune(
        &repo,
        &PruneOptions {
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.packs_too_young, 0);
    assert!(packs(&s.repo_dir).is_empty(), "{r:?}");
}

#[test]
fn an_append_only_session_removes_only_its_own_locks() {
    let s = setup();
    let full = open(&s.repo_dir);
    full.add_key(b"ao", FAST_KDF, true).unwrap();
    // Another process's lock (held by this test, so alive), and a lock left
    // by a process that died.
    let held = lock(&full, false, "backup").unwrap();
    let dead = LockInfo {
        host: "elsewhere".into(),
        pid: 1,
        user: "u".into(),
        exclusive: false,
        operation: "backup".into(),
        created: chrono::Utc::now() - chrono::Duration::hours(2),
        refreshed: chrono::Utc::now() - chrono::Duration::hours(2),
    };
    forge::write_lock(&full, &dead).unwrap();
    assert_eq!(list_locks(&full).unwrap().len(), 2);

    let mut ao = Repository::open(Arc::new(LocalBackend::new(&s.repo_dir)), b"ao").unwrap();
    ao.set_append_only();
    for all in [false, true] {
        let e = remove_locks(&ao, all).unwrap_err();
        assert!(matches!(e, Error::AppendOnly(_)), "{e}");
    }
    // Even straight at the storage wrapper, another's lock is refused.
    let other = list_locks(&full).unwrap()[0].id;
    let e = ao.backend().delete(&format!("locks/{other}")).unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::PermissionDenied);
    assert_eq!(list_locks(&full).unwrap().len(), 2);
    // Its own lock comes and goes as usual.
    let mine = lock(&ao, false, "backup").unwrap();
    assert_eq!(list_locks(&full).unwrap().len(), 3);
    drop(mine);
    assert_eq!(list_locks(&full).unwrap().len(), 2);
    // A full key may remove the stale one.
    assert_eq!(remove_locks(&full, false).unwrap().len(), 1);
    drop(held);
    assert!(list_locks(&full).unwrap().is_empty());
}

/// When one uploader fails, the packs the others wrote are still listed in
/// an index file: the next backup has nothing to adopt.
#[test]
fn a_failed_upload_leaves_the_other_packs_indexed() {
    let s = setup();
    // A store that refuses the second pack written; everything else goes
    // through.
    let packs = std::sync::atomic::AtomicUsize::new(0);
    let backend = BeforeWrite {
        inner: Arc::new(LocalBackend::new(&s.repo_dir)),
        hook: Box::new(move |_, path| {
            if path.starts_with("data/") && packs.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(BackendError {
                    kind: BackendErrorKind::Other,
                    path: path.to_string(),
                    message: "refused by the store".into(),
                });
            }
            Ok(())
        }),
    };
    let e = backup_of(&open_on(Arc::new(backend)), &s.src).unwrap_err();
    assert!(e.to_string().contains("refused by the store"), "{e}");
    let repo = open(&s.repo_dir);
    let left = repo.list_packs().unwrap().len();
    assert!(left >= 1, "no pack was written before the failure");
    let sum = backup_of(&repo, &s.src).unwrap();
    assert_eq!(sum.packs_adopted, 0, "packs were left without an index");
    assert_restores(&repo, &sum.snapshot_id, &s.src, &s.root.join("out"));
}
