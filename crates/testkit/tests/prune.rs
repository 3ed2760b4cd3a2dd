//! Forget and prune over real and fault-injecting backends, and the
//! append-only guard.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;
use ledgervault_testkit::{fixtures, FaultOn, FaultyBackend};

/// Prune options for these tests: no backup runs beside them, so packs
/// are judged whatever their age.
fn no_age() -> PruneOptions {
    PruneOptions {
        min_pack_age: Duration::ZERO,
        ..Default::default()
    }
}

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn init(backend: Arc<dyn Backend>, pack_size: u32) -> Repository {
    Repository::init(
        backend,
        b"pw",
        &InitOptions {
            pack_size,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap()
}

fn backup_path(repo: &Repository, p: &Path) -> Id {
    let opts = BackupOptions {
        threads: 2,
        ..Default::default()
    };
    backup(
        repo,
        vec![BackupSource::Path(p.to_path_buf())],
        &opts,
        &NoProgress,
    )
    .unwrap()
    .snapshot_id
}

/// Restores snapshot `id` and returns every file's bytes by relative path.
fn restored_files(repo: &Repository, id: Id) -> Files {
    let out = tempfile::tempdir().unwrap();
    let snap = repo.load_snapshot(&id).unwrap();
    let s = restore(
        repo,
        id,
        &snap,
        out.path(),
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    files_of(out.path())
}

fn files_of(root: &Path) -> Files {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Three generations of a folder: each replaces a third of the files, so
/// forgetting the first two leaves packs that are wholly and partly unused.
/// Files by relative path, with their bytes.
type Files = Vec<(String, Vec<u8>)>;

fn three_generations(repo: &Repository, dir: &Path) -> Vec<(Id, Files)> {
    let mut out = Vec::new();
    for gen in 0..3u64 {
        for f in 0..6u64 {
            if f % 3 == gen || gen == 0 {
                let mut rng =
                    <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(gen * 100 + f);
                let data = fixtures::ledger_text(&mut rng, 700_000);
                fs::write(dir.join(format!("ledger-{f}.csv")), data).unwrap();
            }
        }
        let id = backup_path(repo, dir);
        // Names as restore lays them out: the source folder's name first.
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let files = files_of(dir)
            .into_iter()
            .map(|(p, d)| (format!("{name}/{p}"), d))
            .collect();
        out.push((id, files));
    }
    out
}

fn forget_all_but_last(repo: &Repository) -> ForgetReport {
    forget(
        repo,
        &ForgetOptions {
            policy: Policy {
                last: 1,
                ..Policy::none()
            },
            guards: Guards::default(),
            dry_run: false,
        },
    )
    .unwrap()
}

fn stored(backend: &dyn Backend, prefix: &str) -> u64 {
    backend.list(prefix).unwrap().iter().map(|o| o.size).sum()
}

#[test]
fn forget_then_prune_frees_space_and_keeps_what_remains_restorable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    fs::create_dir(&dir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let repo = init(backend.clone(), 1 << 20);
    let gens = three_generations(&repo, &dir);
    let before = stored(backend.as_ref(), "data/");

    // A dry run changes nothing.
    let dry = prune(
        &repo,
        &PruneOptions {
            dry_run: true,
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        dry.packs_deleted + dry.packs_repacked,
        0,
        "nothing is unused yet"
    );

    let r = forget_all_but_last(&repo);
    assert_eq!(r.removed.len(), 2);
    let dry = prune(
        &repo,
        &PruneOptions {
            dry_run: true,
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(dry.packs_deleted + dry.packs_repacked > 0, "{dry:?}");
    assert_eq!(stored(backend.as_ref(), "data/"), before);

    let r = prune(&repo, &no_age(), &NoProgress).unwrap();
    assert!(r.packs_deleted + r.packs_repacked > 0, "{r:?}");
    let after = stored(backend.as_ref(), "data/");
    // The last generation holds 6 of the 12 distinct files written.
    assert!(after < before * 3 / 4, "{after} of {before}");
    let (last_id, last_files) = &gens[2];
    assert_eq!(&restored_files(&repo, *last_id), last_files);
    let c = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // A second prune has nothing left to do.
    let again = prune(&repo, &no_age(), &NoProgress).unwrap();
    assert_eq!(
        again.packs_deleted + again.packs_repacked + again.packs_unindexed,
        0
    );
    assert_eq!(again.bytes_deleted, 0);
}

#[test]
fn partly_used_packs_are_repacked_above_the_threshold_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    fs::create_dir(&dir).unwrap();
    // Big packs: each generation's files share packs with the others'.
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = init(backend.clone(), 16 << 20);
    let gens = three_generations(&repo, &dir);
    forget_all_but_last(&repo);
    let keep_all = prune(
        &repo,
        &PruneOptions {
            repack_threshold: 1.0,
            dry_run: true,
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert_eq!(keep_all.packs_repacked, 0);
    let r = prune(
        &repo,
        &PruneOptions {
            repack_threshold: 0.0,
            min_pack_age: Duration::ZERO,
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(r.packs_repacked > 0 && r.packs_written > 0, "{r:?}");
    let (last_id, last_files) = &gens[2];
    assert_eq!(&restored_files(&repo, *last_id), last_files);
    let c = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(c.ok(), "{:?}", c.errors);
    // Repacked data takes about what the remaining snapshot needs.
    let s = stats(&repo).unwrap();
    assert!(s.packed_bytes as f64 <= s.unique_bytes as f64, "{s:?}");
    assert!(
        (s.dedup_ratio - 1.0).abs() < 0.01,
        "one snapshot left: {s:?}"
    );
}

/// A prune that fails at every possible write or delete leaves a repository
/// whose remaining snapshots restore byte for byte, and a later prune
/// finishes the job.
#[test]
fn a_prune_failing_at_any_write_or_delete_loses_nothing() {
    for on in [FaultOn::Write, FaultOn::Delete] {
        let mut n = 1;
        loop {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("books");
            fs::create_dir(&dir).unwrap();
            let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            let repo = init(mem.clone(), 1 << 20);
            let gens = three_generations(&repo, &dir);
            forget_all_but_last(&repo);
            let faulty = Arc::new(FaultyBackend::new(mem.clone(), on, n));
            let frepo = Repository::open(faulty.clone(), b"pw").unwrap();
            let opts = PruneOptions {
                repack_threshold: 0.0,
                min_pack_age: Duration::ZERO,
                ..Default::default()
            };
            let result = prune(&frepo, &opts, &NoProgress);
            drop(frepo);
            let (last_id, last_files) = &gens[2];
            // Whatever happened, the data is all there. (The failed prune
            // could not delete its own lock; a dead process's would be stale.)
            let repo = Repository::open(mem.clone(), b"pw").unwrap();
            remove_locks(&repo, true).unwrap();
            let c = check(&repo, ReadData::All, &NoProgress).unwrap();
            assert!(c.ok(), "{on:?} fault at {n}: {:?}", c.errors);
            assert_eq!(
                &restored_files(&repo, *last_id),
                last_files,
                "{on:?} at {n}"
            );
            if result.is_ok() {
                break; // the fault came after the last operation
            }
            // A clean prune afterwards finishes and leaves no extras.
            prune(&repo, &opts, &NoProgress).unwrap();
            let c = check(&repo, ReadData::All, &NoProgress).unwrap();
            assert!(
                c.ok() && c.warnings.is_empty(),
                "{:?} {:?}",
                c.errors,
                c.warnings
            );
            assert_eq!(&restored_files(&repo, *last_id), last_files);
            n += 1;
            assert!(n < 200, "prune never finished");
        }
        assert!(n > 2, "{on:?}: prune made only {n} operations");
    }
}

#[test]
fn an_append_only_session_cannot_delete_or_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    fs::create_dir(&dir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = init(backend.clone(), 1 << 20);
    three_generations(&repo, &dir);
    repo.add_key(b"nightly", FAST_KDF, true).unwrap();

    let ao = Repository::open(backend.clone(), b"nightly").unwrap();
    assert!(ao.is_append_only());
    // It can back up...
    backup_path(&ao, &dir);
    // ...but not forget, prune, remove keys, change its password, or add a
    // full-access key.
    let e = forget_err(&ao);
    assert!(matches!(e, Error::AppendOnly(_)), "{e}");
    let e = prune(&ao, &no_age(), &NoProgress).unwrap_err();
    assert!(matches!(e, Error::AppendOnly(_)), "{e}");
    let first = repo.list_keys().unwrap()[0].id.to_hex();
    assert!(matches!(ao.remove_key(&first), Err(Error::AppendOnly(_))));
    assert!(matches!(
        ao.add_key(b"x", FAST_KDF, false),
        Err(Error::AppendOnly(_))
    ));
    ao.add_key(b"y", FAST_KDF, true).unwrap();
    // Even the storage handle refuses, whatever code path reaches it.
    let snap = ao.list_ids(FileKind::Snapshot).unwrap()[0];
    let path = format!("snapshots/{snap}");
    let e = ao.backend().delete(&path).unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::PermissionDenied);
    let e = ao.backend().write(&path, b"ransom note").unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::PermissionDenied);
    assert_eq!(ao.snapshots().unwrap().0.len(), 4);
    // A full-access session given --append-only behaves the same.
    let mut full = Repository::open(backend.clone(), b"pw").unwrap();
    full.set_append_only();
    assert!(matches!(forget_err(&full), Error::AppendOnly(_)));
    // A dry run is allowed: it deletes nothing.
    let plan = forget(
        &ao,
        &ForgetOptions {
            policy: Policy::accounting_default(),
            guards: Guards::default(),
            dry_run: true,
        },
    )
    .unwrap();
    assert!(plan.removed.is_empty());
}

fn forget_err(repo: &Repository) -> Error {
    forget(
        repo,
        &ForgetOptions {
            policy: Policy {
                last: 1,
                ..Policy::none()
            },
            guards: Guards::default(),
            dry_run: false,
        },
    )
    .unwrap_err()
}

#[test]
fn marks_protect_snapshots_and_forget_removes_marks_with_their_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    fs::create_dir(&dir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = init(backend.clone(), 1 << 20);
    let gens = three_generations(&repo, &dir);
    repo.add_mark(&Mark::new(gens[0].0, MarkKind::Protect, None))
        .unwrap();
    repo.add_mark(&Mark::new(gens[1].0, MarkKind::Protect, None))
        .unwrap();
    repo.add_mark(&Mark::new(gens[1].0, MarkKind::Unprotect, None))
        .unwrap();
    let r = forget_all_but_last(&repo);
    assert_eq!(r.removed, vec![gens[1].0]);
    // The removed snapshot's marks went with it; the protected one's stay.
    let (marks, bad) = repo.marks().unwrap();
    assert!(bad.is_empty());
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].1.snapshot, gens[0].0);
    assert!(repo.snapshot_states().unwrap()[&gens[0].0].protected);
}

/// A backend that reports little free space, like a nearly full disk.
struct SmallDisk(Arc<dyn Backend>, u64);

impl Backend for SmallDisk {
    fn location(&self) -> String {
        self.0.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.0.list(prefix)
    }
    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        self.0.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.0.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        self.0.write(path, data)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.0.delete(path)
    }
    fn free_space(&self) -> Option<u64> {
        Some(self.1)
    }
}

#[test]
fn stats_warn_when_the_destination_fills_within_30_days() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("books");
    fs::create_dir(&dir).unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = init(mem.clone(), 1 << 20);
    let first = backup_path(&repo, &dir.parent().unwrap().join("books"));
    // Ten nightly snapshots that each stored 50 MB, dated over ten days.
    let mut snap = repo.load_snapshot(&first).unwrap();
    for d in (0..10).rev() {
        snap.time = chrono::Utc::now() - chrono::Duration::days(d);
        snap.totals.bytes_stored = 50_000_000;
        repo.save_snapshot(&snap).unwrap();
    }
    // 1 GB free: full in about 20 days.
    let small = Repository::open(Arc::new(SmallDisk(mem.clone(), 1_000_000_000)), b"pw").unwrap();
    let g = growth_now(&small).unwrap().unwrap();
    assert!((g.bytes_per_day - 50e6).abs() < 1e6, "{g:?}");
    let w = g.warning(Some(1_000_000_000)).unwrap();
    assert!(w.contains("full in about"), "{w}");
    let s = stats(&small).unwrap();
    assert_eq!(s.growth.as_ref(), Some(&g));
    assert_eq!(s.free_bytes, Some(1_000_000_000));
    // 10 GB free: 200 days, no warning.
    let big = Repository::open(Arc::new(SmallDisk(mem, 10_000_000_000)), b"pw").unwrap();
    let g = growth_now(&big).unwrap().unwrap();
    assert!(g.warning(Some(10_000_000_000)).is_none());
}
