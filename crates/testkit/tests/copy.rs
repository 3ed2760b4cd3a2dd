//! `copy` between repositories: different keys, shared keys, interrupted and
//! resumed, append-only destinations.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;
use ledgervault_testkit::{fixtures, FaultOn, FaultyBackend, ImageCapture};

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn opts() -> InitOptions {
    InitOptions {
        pack_size: 256 * 1024,
        kdf: FAST_KDF,
        immutable_days: None,
    }
}

fn local(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(LocalBackend::new(dir))
}

/// A folder and a database image, backed up twice with changes between.
fn source_repo(dir: &Path, data: &Path) -> Repository {
    let repo = Repository::init(local(dir), b"source-pw", &opts()).unwrap();
    fixtures::mixed_tree(data, 3 << 20, 7).unwrap();
    // Incompressible bytes, so the copy spans several packs.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(data.join("scan-noise.bin"), noise).unwrap();
    let mut img: Vec<u8> = (0..512 * 4096u32).map(|i| (i % 251) as u8).collect();
    for night in 0..2u8 {
        if night == 1 {
            fs::write(data.join("new-invoice.txt"), b"invoice 1042: 310.00").unwrap();
            img[4096 * 10..4096 * 11].fill(night + 1);
        }
        let sources = vec![
            BackupSource::Path(data.to_path_buf()),
            BackupSource::DbImage {
                name: "firm.db".into(),
                path: "/srv/firm.db".into(),
                capture: ImageCapture::new(img.clone(), 4096),
            },
        ];
        backup(&repo, sources, &BackupOptions::default(), &NoProgress).unwrap();
    }
    repo
}

type Files = Vec<(String, Vec<u8>)>;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn restored(repo: &Repository, id: Id) -> Files {
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
    let mut files = Vec::new();
    let mut stack = vec![out.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(out.path()).unwrap().display().to_string();
                files.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Blob entries over every index file: counts a blob stored twice twice.
fn indexed_blob_entries(repo: &Repository) -> usize {
    repo.list_ids(FileKind::Index)
        .unwrap()
        .iter()
        .flat_map(|id| repo.read_index_file(id).unwrap())
        .flat_map(|p| p.frames)
        .map(|f| f.blobs.len())
        .sum()
}

/// Options that copy the one snapshot `id`.
fn only(id: Id) -> CopyOptions {
    CopyOptions {
        snapshots: vec![id],
        ..Default::default()
    }
}

fn sorted_snapshots(repo: &Repository) -> Vec<(Id, Snapshot)> {
    let (mut s, bad) = repo.snapshots().unwrap();
    assert!(bad.is_empty());
    s.sort_by_key(|(_, s)| s.time);
    s
}

/// The second night's copy read under a quarter of the blobs the first
/// read: what the first night already brought over is not read again.
fn assert_reads_only_changes(first: &CopyReport, second: &CopyReport) {
    assert!(
        second.blobs_read * 4 < first.blobs_read,
        "second {} vs first {}",
        second.blobs_read,
        first.blobs_read
    );
}

fn assert_same_contents(a: &Repository, b: &Repository) {
    let (sa, sb) = (sorted_snapshots(a), sorted_snapshots(b));
    assert_eq!(sa.len(), sb.len());
    for ((ia, a_snap), (ib, b_snap)) in sa.iter().zip(&sb) {
        assert_eq!(a_snap.time, b_snap.time);
        assert_eq!(b_snap.lineage(ib), a_snap.lineage(ia));
        assert_eq!(restored(a, *ia), restored(b, *ib));
    }
    let report = check(b, ReadData::All, &NoProgress).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn copy_between_repositories_with_different_keys_re_encrypts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let b = Repository::init(local(&tmp.path().join("b")), b"other-pw", &opts()).unwrap();

    let r = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap();
    assert!(!r.same_keys);
    assert_eq!(r.copied.len(), 2);
    assert!(r.blobs_written > 0);
    assert_same_contents(&a, &b);
    // The destination opens with its own password only.
    assert!(Repository::open(local(&tmp.path().join("b")), b"source-pw").is_err());

    // Nothing left to copy: no snapshot and no blob is written again.
    let again = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap();
    assert_eq!((again.copied.len(), again.already_present), (0, 2));
    assert_eq!(again.blobs_written, 0);
    assert_eq!(sorted_snapshots(&b).len(), 2);

    // A copy of the copy keeps the lineage: copying it back adds nothing.
    let back = copy(&b, &a, &CopyOptions::default(), &NoProgress).unwrap();
    assert_eq!((back.copied.len(), back.already_present), (0, 2));
}

#[test]
fn copy_with_shared_keys_skips_blobs_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let b =
        Repository::init_sharing_keys(local(&tmp.path().join("b")), b"b-pw", &opts(), &a).unwrap();
    let snaps = sorted_snapshots(&a);
    let first = copy(&a, &b, &only(snaps[0].0), &NoProgress).unwrap();
    assert!(first.same_keys);
    assert_eq!(first.copied.len(), 1);
    // The second night shares almost everything with the first: only the
    // changed blobs are read.
    let second = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap();
    assert_eq!((second.copied.len(), second.already_present), (1, 1));
    assert_reads_only_changes(&first, &second);
    assert_same_contents(&a, &b);
}

#[test]
fn a_nightly_copy_with_its_own_key_reads_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let b = Repository::init(local(&tmp.path().join("b")), b"b-pw", &opts()).unwrap();
    let snaps = sorted_snapshots(&a);
    let first = copy(&a, &b, &only(snaps[0].0), &NoProgress).unwrap();
    assert!(!first.same_keys);
    assert_eq!(first.blobs_known, 0);
    // The second night: the blobs the first night's copy already holds are
    // known through it, and only the changes are read.
    let second = copy(&a, &b, &only(snaps[1].0), &NoProgress).unwrap();
    assert_eq!(second.copied.len(), 1);
    assert!(second.blobs_known > 0, "{second:?}");
    assert_reads_only_changes(&first, &second);
    assert_same_contents(&a, &b);
}

#[test]
fn a_copy_forged_with_the_destinations_key_alone_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let snaps = sorted_snapshots(&a);
    // The forgery beside the genuine copy, then in its place.
    for keep_genuine in [true, false] {
        let b_dir = tmp.path().join(format!("b-{keep_genuine}"));
        let b = Repository::init(local(&b_dir), b"b-pw", &opts()).unwrap();
        let b_id = b.config().id;
        copy(&a, &b, &only(snaps[0].0), &NoProgress).unwrap();
        let (genuine_id, genuine) = sorted_snapshots(&b).remove(0);
        assert!(genuine.sealed_by(a.keys(), &b_id));
        assert!(!genuine.sealed_by(b.keys(), &b_id));
        assert!(!genuine.sealed_by(a.keys(), &a.config().id));

        // Someone with the destination's key (not the source's) rewrites
        // the first night's copy: the scan now points at a blob of theirs,
        // in as many pieces, with the same size, so its shape still matches.
        let index = b.load_index().unwrap();
        let mut forged = genuine.clone();
        let folder = forged
            .sources
            .iter_mut()
            .find(|s| s.node.kind == NodeKind::Dir)
            .unwrap();
        let mut tree = b.load_tree(&index, &folder.node.subtree.unwrap()).unwrap();
        let theirs = forge::store_data(&b, b"pay the ransom to ...").unwrap();
        let scan = tree
            .nodes
            .iter_mut()
            .find(|n| n.name == "scan-noise.bin")
            .unwrap();
        assert!(scan.content.len() > 1);
        scan.content = vec![theirs; scan.content.len()];
        folder.node.subtree = Some(forge::store_tree(&b, &tree).unwrap());
        assert!(
            !forged.sealed_by(a.keys(), &b_id),
            "the old tag no longer fits"
        );
        forge::save_snapshot(&b, &forged).unwrap();
        if !keep_genuine {
            b.backend()
                .delete(&format!("snapshots/{genuine_id}"))
                .unwrap();
        }

        // The second night's copy takes no ids from the forgery: with the
        // genuine copy there, it pairs with that one; without it, the scan
        // is read again. Either way it restores as it was backed up.
        let second = copy(&a, &b, &only(snaps[1].0), &NoProgress).unwrap();
        assert_eq!(second.copied.len(), 1);
        assert_eq!(second.blobs_known > 0, keep_genuine, "{second:?}");
        let copied = second.copied[0].to;
        assert!(b.load_snapshot(&copied).unwrap().sealed_by(a.keys(), &b_id));
        assert_eq!(restored(&a, snaps[1].0), restored(&b, copied));
    }
}

#[test]
fn blobs_the_destination_lost_are_copied_again_not_taken_as_known() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let first_dir = tmp.path().join("b-first");
    let b = Repository::init(local(&first_dir), b"b-pw", &opts()).unwrap();
    let snaps = sorted_snapshots(&a);
    copy(&a, &b, &only(snaps[0].0), &NoProgress).unwrap();
    let packs: Vec<String> = b
        .backend()
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert!(packs.len() >= 2, "{packs:?}");
    // The destination loses one pack (each in turn: data, folders, maps),
    // and its index is rebuilt from what is there; the first copy's
    // snapshot still names what was lost.
    for (n, lost) in packs.iter().enumerate() {
        let b_dir = tmp.path().join(format!("b-{n}"));
        copy_tree(&first_dir, &b_dir);
        fs::remove_file(b_dir.join(lost)).unwrap();
        let b = Repository::open(local(&b_dir), b"b-pw").unwrap();
        repair_index(&b, &RepairOptions::default(), &NoProgress).unwrap();
        let b = Repository::open(local(&b_dir), b"b-pw").unwrap();
        let second = copy(&a, &b, &CopyOptions::default(), &NoProgress)
            .unwrap_or_else(|e| panic!("{lost}: {e}"));
        assert_eq!(second.copied.len(), 1, "{lost}");
        // The second night's snapshot restores whole from the destination.
        let (sid, _) = snaps[1];
        let (bid, _) = sorted_snapshots(&b)
            .into_iter()
            .find(|(i, s)| s.lineage(i) == sid)
            .unwrap();
        assert_eq!(restored(&a, sid), restored(&b, bid), "{lost}");
    }
}

#[test]
fn an_interrupted_copy_resumes_without_storing_anything_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let b_dir = tmp.path().join("b");
    Repository::init(local(&b_dir), b"b-pw", &opts()).unwrap();

    // A reference copy, uninterrupted, into a third repository.
    let c = Repository::init(local(&tmp.path().join("c")), b"c-pw", &opts()).unwrap();
    let full = copy(&a, &c, &CopyOptions::default(), &NoProgress).unwrap();
    assert!(full.packs_written >= 4, "{full:?}");

    // Fail the destination's writes halfway through.
    let fail_at = full.packs_written;
    let faulty = Arc::new(FaultyBackend::new(local(&b_dir), FaultOn::Write, fail_at));
    let b = Repository::open(faulty.clone(), b"b-pw").unwrap();
    let err = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let packs_before = b.list_ids(FileKind::Index).unwrap().len();
    assert!(packs_before > 0);
    ledgervault_repo::remove_locks(&b, true).unwrap();

    faulty.heal();
    let resumed = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap();
    assert_eq!(resumed.copied.len() + resumed.already_present, 2);
    // Everything indexed before the interruption was kept, not sent again.
    assert!(resumed.blobs_written < full.blobs_written);
    assert_eq!(indexed_blob_entries(&b), indexed_blob_entries(&c));
    assert_same_contents(&a, &b);
}

#[test]
fn copy_into_an_append_only_session() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let b_dir = tmp.path().join("b");
    let owner = Repository::init(local(&b_dir), b"owner", &opts()).unwrap();
    owner.add_key(b"nightly", FAST_KDF, true).unwrap();
    let b = Repository::open(local(&b_dir), b"nightly").unwrap();
    assert!(b.is_append_only());
    let r = copy(&a, &b, &CopyOptions::default(), &NoProgress).unwrap();
    assert_eq!(r.copied.len(), 2);
    assert_same_contents(&a, &b);
}

#[test]
fn copy_refuses_the_same_repository_and_unknown_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source_repo(&tmp.path().join("a"), &tmp.path().join("data"));
    let a2 = Repository::open(local(&tmp.path().join("a")), b"source-pw").unwrap();
    assert!(copy(&a, &a2, &CopyOptions::default(), &NoProgress).is_err());
    let b = Repository::init(local(&tmp.path().join("b")), b"b", &opts()).unwrap();
    let err = copy(
        &a,
        &b,
        &CopyOptions {
            snapshots: vec![Id::random()],
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not in the source"), "{err}");
}
