//! Engine tests over real and fault-injecting backends.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;
use ledgervault_testkit::{fixtures, FaultOn, FaultyBackend};

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

/// Asserts two trees hold the same files, bytes and links.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut ea: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut eb: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    ea.sort();
    eb.sort();
    assert_eq!(ea, eb, "entries of {} and {}", a.display(), b.display());
    for name in ea {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", pa.display());
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {}",
                pa.display()
            );
            assert_eq!(
                ma.modified().unwrap(),
                mb.modified().unwrap(),
                "mtime of {}",
                pa.display()
            );
        }
    }
}

fn restore_and_compare(repo: &Repository, id: Id, src: &Path, name: &str) {
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
    assert_same_tree(src, &out.path().join(name));
}

#[test]
fn backup_restore_round_trip_and_dedup() {
    let src = tempfile::tempdir().unwrap();
    let data = src.path().join("firm");
    fixtures::mixed_tree(&data, 20_000_000, 1).unwrap();
    let repo = init(Arc::new(MemoryBackend::new()), 4 << 20);
    let s1 = backup(
        &repo,
        vec![BackupSource::Path(data.clone())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(s1.errors.is_empty());
    assert!(s1.bytes_read >= 20_000_000);
    assert!(s1.packs_written >= 2, "{s1:?}");
    restore_and_compare(&repo, s1.snapshot_id, &data, "firm");

    // An unchanged second backup stores only the snapshot.
    let s2 = backup(
        &repo,
        vec![BackupSource::Path(data.clone())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(s2.bytes_new, 0);
    assert_eq!(s2.bytes_stored, 0);

    // Partial restore with --include.
    let out = tempfile::tempdir().unwrap();
    let snap = repo.load_snapshot(&s2.snapshot_id).unwrap();
    let opts = RestoreOptions {
        include: vec!["firm/ledgers".into()],
        ..Default::default()
    };
    restore(&repo, s2.snapshot_id, &snap, out.path(), &opts, &NoProgress).unwrap();
    assert!(out.path().join("firm/ledgers").is_dir());
    assert!(!out.path().join("firm/scans").exists());
    assert_same_tree(&data.join("ledgers"), &out.path().join("firm/ledgers"));

    let r = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(r.ok(), "{:?}", r.errors);
    assert_eq!(r.snapshots, 2);
}

#[test]
fn no_plaintext_reaches_storage() {
    let src = tempfile::tempdir().unwrap();
    let marker = "MARKER-7f3c-client-ACME-payroll-ssn";
    fs::write(
        src.path().join(format!("{marker}.txt")),
        marker.repeat(1000),
    )
    .unwrap();
    fs::write(src.path().join("small.txt"), marker).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = init(Arc::new(LocalBackend::new(dir.path())), 1 << 20);
    let opts = BackupOptions {
        tags: vec![marker.into()],
        reason: Some(marker.into()),
        ..Default::default()
    };
    backup(
        &repo,
        vec![BackupSource::Path(src.path().to_path_buf())],
        &opts,
        &NoProgress,
    )
    .unwrap();
    let mut seen = 0;
    for o in LocalBackend::new(dir.path()).list("").unwrap() {
        let bytes = fs::read(dir.path().join(&o.path)).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds plaintext",
            o.path
        );
        assert!(
            !bytes.windows(10).any(|w| w == &marker.as_bytes()[..10]),
            "{} holds plaintext",
            o.path
        );
        seen += 1;
    }
    assert!(seen >= 5);
}

#[test]
fn every_failed_write_leaves_a_valid_repository() {
    let src = tempfile::tempdir().unwrap();
    let data = src.path().join("books");
    fixtures::mixed_tree(&data, 2_000_000, 2).unwrap();
    // Thirty incompressible 100 kB scans: each is its own frame, so a pack
    // (closed at 256 KiB) holds at most 3 of them and the backup stores at
    // least 10 packs. With 2 uploaders, each writing an index after every 4
    // packs, some index covering 4 packs (over 1 MB) is then written before
    // the backup's last write, however the packs are shared between them.
    let mut rng = rand_rng(7);
    for i in 0..30 {
        let mut scan = vec![0u8; 100_000];
        rand::Rng::fill(&mut rng, &mut scan[..]);
        fs::write(data.join(format!("scans/extra-{i:02}.bin")), &scan).unwrap();
    }
    let earlier = src.path().join("earlier");
    fixtures::mixed_tree(&earlier, 500_000, 3).unwrap();
    // Fail the 1st, 2nd, ... write of a backup until a backup needs fewer
    // writes than that. (Each repository has its own key, hence its own chunk
    // boundaries, so the count is found by trying, not fixed in advance.)
    let mut n = 0;
    let mut baseline_new = 0;
    let mut reused_once = false;
    loop {
        n += 1;
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let repo = init(mem.clone(), 256 * 1024);
        let first = backup(
            &repo,
            vec![BackupSource::Path(earlier.clone())],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let before: std::collections::HashSet<Id> = repo
            .list_ids(FileKind::Index)
            .unwrap()
            .into_iter()
            .collect();
        let faulty = Arc::new(FaultyBackend::new(mem.clone(), FaultOn::Write, n));
        let repo = Repository::open(faulty.clone(), b"pw").unwrap();
        let result = backup(
            &repo,
            vec![BackupSource::Path(data.clone())],
            &BackupOptions::default(),
            &NoProgress,
        );
        if result.is_ok() {
            assert!(
                faulty.count() < n,
                "write {n} was attempted but the backup did not fail"
            );
            assert!(
                n > 12,
                "a backup of 5 MB in 256 KiB packs made only {} writes",
                n - 1
            );
            break;
        }
        faulty.heal();
        // Plaintext bytes the failed backup left findable: the blobs of the
        // index files it managed to write.
        let left: u64 = repo
            .list_ids(FileKind::Index)
            .unwrap()
            .into_iter()
            .filter(|id| !before.contains(id))
            .flat_map(|id| repo.read_index_file(&id).unwrap())
            .flat_map(|p| p.frames)
            .map(|f| f.raw_len as u64)
            .sum();
        let report = check(&repo, ReadData::All, &NoProgress).unwrap();
        assert!(report.ok(), "after failing write {n}: {:?}", report.errors);
        restore_and_compare(&repo, first.snapshot_id, &earlier, "earlier");
        let again = backup(
            &repo,
            vec![BackupSource::Path(data.clone())],
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        restore_and_compare(&repo, again.snapshot_id, &data, "books");
        assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
        if n == 1 {
            baseline_new = again.bytes_new;
        } else if left > 1_000_000 {
            // Chunk boundaries differ per repository key, so the baseline
            // is only close; half of what was left must clearly be reused.
            assert!(
                again.bytes_new + left / 2 < baseline_new,
                "the next backup did not reuse what the failed one stored ({left} bytes left, {} new, baseline {baseline_new})",
                again.bytes_new
            );
            reused_once = true;
        }
    }
    assert!(reused_once);
}

#[test]
fn storage_full_is_reported_as_such() {
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 2_000_000, 4).unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    init(mem.clone(), 256 * 1024);
    let full = Arc::new(
        FaultyBackend::new(mem, FaultOn::Write, 3).with_kind(BackendErrorKind::StorageFull),
    );
    let repo = Repository::open(full, b"pw").unwrap();
    let e = backup(
        &repo,
        vec![BackupSource::Path(src.path().into())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.is_storage_full(), "{e}");
    assert!(e.to_string().contains("disk is full"), "{e}");
}

#[test]
fn read_data_detects_a_flipped_byte_in_every_file_kind() {
    let src = tempfile::tempdir().unwrap();
    fixtures::mixed_tree(src.path(), 1_000_000, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = LocalBackend::new(dir.path());
    let repo = init(Arc::new(local.clone()), 256 * 1024);
    backup(
        &repo,
        vec![BackupSource::Path(src.path().into())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    for prefix in ["data/", "index/", "snapshots/"] {
        for obj in local.list(prefix).unwrap() {
            let path = dir.path().join(&obj.path);
            let orig = fs::read(&path).unwrap();
            for pos in [0, orig.len() / 2, orig.len() - 1] {
                let mut bad = orig.clone();
                bad[pos] ^= 0x20;
                fs::write(&path, &bad).unwrap();
                let r = check(&repo, ReadData::All, &NoProgress).unwrap();
                let name = obj.path.rsplit('/').next().unwrap();
                assert!(
                    r.errors.iter().any(|e| e.contains(name)),
                    "flip at {pos} of {} not named: {:?}",
                    obj.path,
                    r.errors
                );
            }
            fs::write(&path, &orig).unwrap();
        }
    }
    assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
}

#[test]
fn concurrent_backups_both_succeed() {
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (src.path().join("a"), src.path().join("b"));
    fixtures::mixed_tree(&a, 5_000_000, 6).unwrap();
    fixtures::mixed_tree(&b, 5_000_000, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    init(Arc::new(LocalBackend::new(dir.path())), 512 * 1024);
    let ids: Vec<Id> = std::thread::scope(|s| {
        let hs: Vec<_> = [&a, &b]
            .into_iter()
            .map(|p| {
                let root = dir.path().to_path_buf();
                s.spawn(move || {
                    let repo = Repository::open(Arc::new(LocalBackend::new(root)), b"pw").unwrap();
                    backup(
                        &repo,
                        vec![BackupSource::Path(p.clone())],
                        &BackupOptions::default(),
                        &NoProgress,
                    )
                    .unwrap()
                    .snapshot_id
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let repo = Repository::open(Arc::new(LocalBackend::new(dir.path())), b"pw").unwrap();
    assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
    restore_and_compare(&repo, ids[0], &a, "a");
    restore_and_compare(&repo, ids[1], &b, "b");
}

#[test]
fn locks_block_conflicts_and_stale_locks_do_not() {
    let repo = init(Arc::new(MemoryBackend::new()), 1 << 20);
    let shared = lock(&repo, false, "backup").unwrap();
    // Two shared locks coexist; an exclusive one is refused while they live.
    let shared2 = lock(&repo, false, "backup").unwrap();
    let e = lock(&repo, true, "prune").err().unwrap();
    assert!(matches!(e, Error::Locked(_)), "{e}");
    assert!(e.to_string().contains("shared lock"), "{e}");
    drop(shared);
    drop(shared2);
    assert!(
        list_locks(&repo).unwrap().is_empty(),
        "locks are removed on drop"
    );
    let ex = lock(&repo, true, "prune").unwrap();
    assert!(lock(&repo, false, "backup").is_err());
    drop(ex);
    assert!(lock(&repo, false, "backup").is_ok());
}

#[test]
fn wrong_password_missing_repo_and_newer_format() {
    let mem = Arc::new(MemoryBackend::new());
    assert!(matches!(
        Repository::open(mem.clone(), b"pw"),
        Err(Error::RepositoryNotFound(_))
    ));
    init(mem.clone(), 1 << 20);
    assert!(matches!(
        Repository::open(mem.clone(), b"nope"),
        Err(Error::WrongPassword)
    ));
    assert!(matches!(
        Repository::init(mem.clone(), b"pw", &InitOptions::default()),
        Err(Error::AlreadyExists(_))
    ));
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&mem.read(CONFIG_PATH).unwrap()).unwrap();
    // 2 is an immutable repository's config version; 3 is the future.
    cfg["format_version"] = 3.into();
    mem.write(CONFIG_PATH, &serde_json::to_vec(&cfg).unwrap())
        .unwrap();
    let e = Repository::open(mem, b"pw").err().unwrap();
    assert!(e.to_string().contains("newer ledgervault"), "{e}");
}

#[test]
fn keys_unlocked_ahead_count_only_for_the_bytes_the_storage_holds() {
    let mem = Arc::new(MemoryBackend::new());
    init(mem.clone(), 1 << 20);
    let key = mem.list("keys/").unwrap().remove(0).path;
    let bytes = mem.read(&key).unwrap();
    let open = |pw: &[u8], ahead| {
        let found = Repository::find(mem.as_ref()).unwrap();
        Repository::unlock_with(mem.clone(), found, pw, ahead)
    };
    // Derived ahead from a copy of the very key file: used as it is (here
    // a derivation with another password, which the storage's key file
    // would have opened, shows that it is taken instead).
    let wrong = UnlockedAhead::try_copies(vec![(key.clone(), bytes.clone())], b"nope");
    assert!(matches!(open(b"pw", wrong), Err(Error::WrongPassword)));
    let right = UnlockedAhead::try_copies(vec![(key.clone(), bytes.clone())], b"pw");
    assert!(open(b"pw", right).is_ok());
    // A copy of a key file the storage no longer holds (another
    // repository's, or a replaced one) changes nothing.
    let other = Arc::new(MemoryBackend::new());
    init(other.clone(), 1 << 20);
    let stale_path = other.list("keys/").unwrap().remove(0).path;
    let stale = vec![(stale_path.clone(), other.read(&stale_path).unwrap())];
    assert!(open(b"pw", UnlockedAhead::try_copies(stale.clone(), b"pw")).is_ok());
    assert!(matches!(
        open(b"nope", UnlockedAhead::try_copies(stale, b"pw")),
        Err(Error::WrongPassword)
    ));
    // A copy whose bytes do not match its name is not tried at all.
    let renamed = vec![(key.clone(), other.read(&stale_path).unwrap())];
    assert!(matches!(
        open(b"nope", UnlockedAhead::try_copies(renamed, b"pw")),
        Err(Error::WrongPassword)
    ));
}

#[test]
fn database_images_store_changed_pages_and_small_chunk_maps() {
    let repo = init(Arc::new(MemoryBackend::new()), 1 << 20);
    let page = 4096u32;
    let mut img: Vec<u8> = (0..3000u32)
        .flat_map(|p| fixtures::ledger_text(&mut rand_rng(p as u64), page as usize))
        .collect();
    let src = |img: &Vec<u8>| BackupSource::DbImage {
        name: "firm.db".into(),
        path: "/srv/firm.db".into(),
        capture: ledgervault_testkit::ImageCapture::new(img.clone(), page),
    };
    let first = backup(
        &repo,
        vec![src(&img)],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    // New data: every page, plus a full chunk map (32 bytes per page).
    assert_eq!(first.bytes_new, img.len() as u64 + 17 + 3000 * 32);
    // Change three scattered pages: three pages and a three-entry delta are new.
    for p in [3usize, 1000, 2999] {
        img[p * page as usize + 10] ^= 0xff;
    }
    let second = backup(
        &repo,
        vec![src(&img)],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(second.bytes_new, 3 * page as u64 + 9 + 3 * 40);
    let snap = repo.load_snapshot(&second.snapshot_id).unwrap();
    let node = &snap.sources[0].node;
    assert_eq!(node.kind, NodeKind::DbImage);
    let map = node.chunk_map.as_ref().unwrap();
    assert_eq!(map.layers.len(), 2);
    assert_eq!(
        (map.layers[1].kind, map.layers[1].entries),
        (LayerKind::Delta, 3)
    );
    // Both snapshots restore their own image.
    for (s, want) in [(first.snapshot_id, None), (second.snapshot_id, Some(&img))] {
        let out = tempfile::tempdir().unwrap();
        let snap = repo.load_snapshot(&s).unwrap();
        restore(
            &repo,
            s,
            &snap,
            out.path(),
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let got = fs::read(out.path().join("firm.db")).unwrap();
        assert_eq!(got.len(), img.len());
        if let Some(w) = want {
            assert!(&got == w);
        } else {
            assert!(got != img, "the first snapshot must not see later changes");
        }
    }
    // A grown image appends; a full rewrite comes once deltas get large.
    img.extend(vec![7u8; page as usize * 2]);
    let third = backup(
        &repo,
        vec![src(&img)],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let snap = repo.load_snapshot(&third.snapshot_id).unwrap();
    assert_eq!(
        snap.sources[0].node.chunk_map.as_ref().unwrap().chunks,
        3002
    );
    for b in img.iter_mut().step_by(page as usize) {
        *b ^= 1;
    }
    let fourth = backup(
        &repo,
        vec![src(&img)],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let snap = repo.load_snapshot(&fourth.snapshot_id).unwrap();
    let map = snap.sources[0].node.chunk_map.as_ref().unwrap();
    assert_eq!((map.layers.len(), map.layers[0].kind), (1, LayerKind::Full));
    assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
}

fn rand_rng(seed: u64) -> impl rand::Rng {
    <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed)
}

/// Changes the source while a backup reads it: when the walk reaches
/// `a-first.csv` it deletes `z-vanishes.csv`, and once bytes of
/// `m-grows.csv` have been read it appends to that file.
struct Meddler {
    dir: std::path::PathBuf,
    in_grows: std::sync::atomic::AtomicBool,
    appended: std::sync::atomic::AtomicBool,
}

impl Progress for Meddler {
    fn file(&self, path: &Path) {
        use std::sync::atomic::Ordering::SeqCst;
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "a-first.csv" {
            fs::remove_file(self.dir.join("z-vanishes.csv")).unwrap();
        }
        self.in_grows.store(name == "m-grows.csv", SeqCst);
    }
    fn read(&self, _n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.in_grows.load(SeqCst) && !self.appended.swap(true, SeqCst) {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(self.dir.join("m-grows.csv"))
                .unwrap();
            f.write_all(b"2026-11-24,JE-late,1000 Cash,1.00\n").unwrap();
        }
    }
}

#[test]
fn files_that_vanish_or_change_during_a_backup_are_reported_not_fatal() {
    let src = tempfile::tempdir().unwrap();
    let d = src.path();
    fs::write(d.join("a-first.csv"), b"a,b\n").unwrap();
    fs::write(d.join("m-grows.csv"), vec![b'x'; 3_000_000]).unwrap();
    fs::write(d.join("q-steady.csv"), vec![b'q'; 10_000]).unwrap();
    fs::write(d.join("z-vanishes.csv"), b"gone soon\n").unwrap();
    let repo = init(Arc::new(MemoryBackend::new()), 1 << 20);
    let meddler = Meddler {
        dir: d.to_path_buf(),
        in_grows: false.into(),
        appended: false.into(),
    };
    let s = backup(
        &repo,
        vec![BackupSource::Path(d.to_path_buf())],
        &BackupOptions::default(),
        &meddler,
    )
    .unwrap();
    assert!(meddler.appended.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(
        s.errors[0].path.ends_with("z-vanishes.csv"),
        "{:?}",
        s.errors
    );
    assert_eq!(s.changed.len(), 1, "{:?}", s.changed);
    assert!(s.changed[0].ends_with("m-grows.csv"));
    // The snapshot holds everything that could be read.
    let snap = repo.load_snapshot(&s.snapshot_id).unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = restore(
        &repo,
        s.snapshot_id,
        &snap,
        out.path(),
        &RestoreOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(r.failed.is_empty());
    let name = d.file_name().unwrap();
    assert_eq!(
        fs::read(out.path().join(name).join("q-steady.csv")).unwrap(),
        vec![b'q'; 10_000]
    );
    assert!(out.path().join(name).join("m-grows.csv").exists());
    assert!(!out.path().join(name).join("z-vanishes.csv").exists());
    // A quiet second backup reports nothing.
    let s2 = backup(
        &repo,
        vec![BackupSource::Path(d.to_path_buf())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(s2.errors.is_empty() && s2.changed.is_empty());
    assert!(check(&repo, ReadData::All, &NoProgress).unwrap().ok());
}
