//! Unchanged files are not read again, and nothing that changed passes
//! for unchanged: a time put back, a file replaced by another of the same
//! size and times, a file too fresh to vouch for, data lost from the
//! repository.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ledgervault_repo::*;

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn repo() -> Repository {
    Repository::init(
        Arc::new(MemoryBackend::new()),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap()
}

fn run(repo: &Repository, dir: &Path, opts: &BackupOptions) -> BackupSummary {
    let s = backup(
        repo,
        vec![BackupSource::Path(dir.to_path_buf())],
        opts,
        &NoProgress,
    )
    .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    s
}

/// The bytes of `rel` in snapshot `id`, restored.
fn restored(repo: &Repository, id: Id, rel: &str) -> Vec<u8> {
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
    fs::read(out.path().join("docs").join(rel)).unwrap()
}

/// Sets a file's modification time back to `to` (what `touch -d` and
/// archive tools do); its change time moves on regardless.
fn set_mtime(path: &Path, to: &fs::Metadata) {
    let f = fs::File::options().write(true).open(path).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::new(to.mtime() as u64, to.mtime_nsec() as u32);
    f.set_modified(t).unwrap();
}

/// Files whose times are settled (older than the two seconds a coarse
/// clock could hide a change in).
fn settled_folder(root: &Path) -> std::path::PathBuf {
    let dir = root.join("docs");
    fs::create_dir_all(dir.join("2026")).unwrap();
    for i in 0..50 {
        fs::write(
            dir.join("2026").join(format!("letter-{i}.txt")),
            format!("engagement letter {i}\n").repeat(40),
        )
        .unwrap();
    }
    fs::write(dir.join("ledger.csv"), "date,account,amount\n".repeat(100)).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    dir
}

#[test]
fn unchanged_files_are_taken_from_the_parent_without_reading() {
    let root = tempfile::tempdir().unwrap();
    let dir = settled_folder(root.path());
    let repo = repo();
    let first = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(first.files, 51);
    assert_eq!(first.files_unchanged, 0);

    let second = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(second.files_unchanged, 51, "{second:?}");
    assert_eq!(second.bytes_read, 0);
    assert_eq!(
        restored(&repo, second.snapshot_id, "ledger.csv"),
        fs::read(dir.join("ledger.csv")).unwrap()
    );

    // --force-reread reads them all.
    let forced = run(
        &repo,
        &dir,
        &BackupOptions {
            force_reread: true,
            ..Default::default()
        },
    );
    assert_eq!(forced.files_unchanged, 0);
    assert!(forced.bytes_read > 0);
}

#[test]
fn a_change_with_its_time_put_back_is_read() {
    let root = tempfile::tempdir().unwrap();
    let dir = settled_folder(root.path());
    let repo = repo();
    run(&repo, &dir, &BackupOptions::default());

    // Same size, same modification time, other bytes.
    let p = dir.join("ledger.csv");
    let before = fs::metadata(&p).unwrap();
    let forged = "date,account,AMOUNT\n".repeat(100);
    fs::write(&p, &forged).unwrap();
    set_mtime(&p, &before);
    let after = fs::metadata(&p).unwrap();
    assert_eq!((after.len(), after.mtime()), (before.len(), before.mtime()));
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());

    // Another file put in place of a letter: a new inode, same size and
    // modification time (a restore from another copy, a sync tool).
    let q = dir.join("2026/letter-7.txt");
    let qb = fs::metadata(&q).unwrap();
    let other = dir.join("2026/.swap");
    fs::write(&other, "ENGAGEMENT letter 7\n".repeat(40)).unwrap();
    set_mtime(&other, &qb);
    fs::rename(&other, &q).unwrap();
    assert_ne!(fs::metadata(&q).unwrap().ino(), qb.ino());

    let s = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(s.files_unchanged, 49, "{s:?}");
    assert_eq!(
        restored(&repo, s.snapshot_id, "ledger.csv"),
        forged.as_bytes()
    );
    assert_eq!(
        restored(&repo, s.snapshot_id, "2026/letter-7.txt"),
        "ENGAGEMENT letter 7\n".repeat(40).as_bytes()
    );

    // Fresh from that change, they are read again next time too (their
    // times are too new to vouch for a later change in the same tick).
    let again = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(again.files_unchanged, 49, "{again:?}");
    std::thread::sleep(Duration::from_millis(2100));
    run(&repo, &dir, &BackupOptions::default());
    let settled = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(settled.files_unchanged, 51, "{settled:?}");
}

#[test]
fn data_gone_from_the_repository_is_read_again_not_trusted() {
    let root = tempfile::tempdir().unwrap();
    let dir = settled_folder(root.path());
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(
        backend.clone(),
        b"pw",
        &InitOptions {
            pack_size: 1 << 20,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap();
    run(&repo, &dir, &BackupOptions::default());
    // Every data pack is lost.
    for id in repo.list_packs().unwrap().keys() {
        backend.delete(&pack_path(id)).unwrap();
    }
    let repo = Repository::open(backend.clone(), b"pw").unwrap();
    let s = run(&repo, &dir, &BackupOptions::default());
    assert_eq!(s.files_unchanged, 0, "{s:?}");
    assert_eq!(
        restored(&repo, s.snapshot_id, "ledger.csv"),
        fs::read(dir.join("ledger.csv")).unwrap()
    );
}

#[test]
fn the_parent_can_be_named_and_must_exist() {
    let root = tempfile::tempdir().unwrap();
    let dir = settled_folder(root.path());
    let repo = repo();
    let first = run(&repo, &dir, &BackupOptions::default());
    let s = run(
        &repo,
        &dir,
        &BackupOptions {
            parent: Some(first.snapshot_id),
            ..Default::default()
        },
    );
    assert_eq!(s.files_unchanged, 51);
    let e = backup(
        &repo,
        vec![BackupSource::Path(dir.clone())],
        &BackupOptions {
            parent: Some(Id::from_hex(&"ab".repeat(32)).expect("an id")),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no such snapshot"), "{e}");
}
