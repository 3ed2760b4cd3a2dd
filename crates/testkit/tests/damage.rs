//! Corruption of every kind of object the repository stores: a flipped byte,
//! a truncation and a deletion of the config, key files, packs, index files
//! and snapshots. After each: `check` names the damaged object, `restore`
//! refuses damaged data and names the files it affects, and `repair index`
//! plus `repair snapshots` bring back a repository that checks clean, in
//! which exactly what the damage destroyed is gone and everything else
//! restores byte-identical.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;
use ledgervault_testkit::fixtures;

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Regular files under `root`, relative path → bytes.
fn files(root: &Path) -> HashMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &e.path(), out);
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = HashMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// The intact repository everything is damaged from, with the restores of
/// its snapshots as references.
struct Base {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    /// snapshot id → files as restored from the intact repository.
    reference: HashMap<Id, HashMap<String, Vec<u8>>>,
}

fn base() -> Base {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("books");
    fixtures::mixed_tree(&src, 6_000_000, 17).unwrap();
    let repo_dir = dir.path().join("repo");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let repo = Repository::init(
        backend,
        b"pw",
        &InitOptions {
            pack_size: 256 * 1024,
            kdf: FAST_KDF,
            immutable_days: None,
        },
    )
    .unwrap();
    repo.add_key(b"second", FAST_KDF, false).unwrap();
    let opts = BackupOptions::default();
    backup(
        &repo,
        vec![BackupSource::Path(src.clone())],
        &opts,
        &NoProgress,
    )
    .unwrap();
    // A day of work: one file edited, one added, one removed.
    fs::write(
        src.join("ledgers/journal-2026-11.csv"),
        b"2026-11-24,JE-9,1000 Cash,5.00\n",
    )
    .unwrap();
    let mut names: Vec<PathBuf> = fs::read_dir(src.join("ledgers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    fs::remove_file(&names[0]).unwrap();
    backup(
        &repo,
        vec![BackupSource::Path(src.clone())],
        &opts,
        &NoProgress,
    )
    .unwrap();
    let mut reference = HashMap::new();
    let (snaps, bad) = repo.snapshots().unwrap();
    assert!(bad.is_empty());
    for (id, snap) in snaps {
        let out = dir.path().join(format!("ref-{}", id.short()));
        let s = restore(
            &repo,
            id,
            &snap,
            &out,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(s.failed.is_empty());
        reference.insert(id, files(&out));
    }
    Base {
        _dir: dir,
        repo: repo_dir,
        reference,
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

fn damage(path: &Path, how: Damage, at: usize) {
    match how {
        Damage::Flip => {
            let mut b = fs::read(path).unwrap();
            b[at] ^= 0x01;
            fs::write(path, b).unwrap();
        }
        Damage::Truncate => {
            let b = fs::read(path).unwrap();
            fs::write(path, &b[..at]).unwrap();
        }
        Damage::Delete => fs::remove_file(path).unwrap(),
    }
}

/// Panics unless `check` reports an error naming `object`.
fn check_names(repo: &Repository, read: ReadData, object: &Id, case: &str) {
    let r = check(repo, read, &NoProgress).unwrap();
    assert!(
        r.errors.iter().any(|e| e.contains(&object.to_hex())),
        "{case}: check did not name {}: {:?}",
        object.to_hex(),
        r.errors
    );
}

fn open(repo: &Path, pw: &[u8]) -> Result<Repository> {
    Repository::open(Arc::new(LocalBackend::new(repo)), pw)
}

/// Where every blob lives: blob → list of (pack, frame start, frame end).
fn frame_map(repo: &Repository) -> HashMap<Id, Vec<(Id, u64, u64)>> {
    let mut out: HashMap<Id, Vec<(Id, u64, u64)>> = HashMap::new();
    for id in repo.list_ids(FileKind::Index).unwrap() {
        for p in repo.read_index_file(&id).unwrap() {
            let mut off = 5u64;
            for f in &p.frames {
                let end = off + f.sealed_len as u64;
                for b in &f.blobs {
                    out.entry(b.id).or_default().push((p.id, off, end));
                }
                off = end;
            }
        }
    }
    out
}

/// Files of each snapshot that need one of `lost` blobs, directly or
/// through a folder listing: computed on the intact repository.
fn affected(repo: &Repository, lost: &HashSet<Id>) -> HashMap<Id, BTreeSet<String>> {
    let index = repo.load_index().unwrap();
    let mut out = HashMap::new();
    let (snaps, _) = repo.snapshots().unwrap();
    for (id, snap) in snaps {
        let mut set = BTreeSet::new();
        for s in &snap.sources {
            let mut stack = vec![(s.node.clone(), s.name.clone(), false)];
            while let Some((node, path, gone)) = stack.pop() {
                match node.kind {
                    NodeKind::Dir => {
                        let t = node.subtree.unwrap();
                        let gone = gone || lost.contains(&t);
                        for c in repo.load_tree(&index, &t).unwrap().nodes {
                            let p = format!("{path}/{}", c.name);
                            stack.push((c, p, gone));
                        }
                    }
                    NodeKind::File => {
                        let c = repo.node_content(&index, &node).unwrap();
                        if gone || c.iter().any(|b| lost.contains(b)) {
                            set.insert(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.insert(id, set);
    }
    out
}

/// Runs both repairs, then proves: check --read-data is clean, every
/// snapshot's repaired version restores, the files it lacks are exactly
/// `expected_lost` and every other file is byte-identical.
fn repair_and_prove(
    b: &Base,
    repo_dir: &Path,
    expected_lost: &HashMap<Id, BTreeSet<String>>,
    case: &str,
) {
    let repo = open(repo_dir, b"pw").unwrap();
    let opts = RepairOptions {
        dry_run: false,
        forget: true,
    };
    repair_index(&repo, &opts, &NoProgress).unwrap_or_else(|e| panic!("{case}: repair index: {e}"));
    let rs = repair_snapshots(&repo, &opts, &NoProgress).unwrap();
    let r = check(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(r.ok(), "{case}: check after repair: {:?}", r.errors);
    let (snaps, bad) = repo.snapshots().unwrap();
    assert!(bad.is_empty(), "{case}");
    assert_eq!(
        snaps.len(),
        b.reference.len(),
        "{case}: snapshots after repair"
    );
    for (id, snap) in snaps {
        // A repaired snapshot says which one it came from.
        let orig = rs
            .repaired
            .iter()
            .find(|x| x.repaired == Some(id))
            .map(|x| x.snapshot)
            .unwrap_or(id);
        let want = &b.reference[&orig];
        let lost = expected_lost.get(&orig).cloned().unwrap_or_default();
        let out = tempfile::tempdir().unwrap();
        let s = restore(
            &repo,
            id,
            &snap,
            out.path(),
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(s.failed.is_empty(), "{case}: {:?}", s.failed);
        let got = files(out.path());
        let missing: BTreeSet<String> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .cloned()
            .collect();
        assert_eq!(
            missing,
            lost,
            "{case}: files lost from snapshot {}",
            orig.short()
        );
        for (k, v) in &got {
            assert!(want.get(k) == Some(v), "{case}: {k} differs after repair");
        }
        let reported: BTreeSet<String> = rs
            .repaired
            .iter()
            .filter(|x| x.snapshot == orig)
            .flat_map(|x| {
                x.lost
                    .iter()
                    .map(|l| l.split(" (").next().unwrap().to_string())
            })
            .collect();
        if !lost.is_empty() {
            assert!(
                lost.iter().all(|l| reported
                    .iter()
                    .any(|r| l.starts_with(r.trim_end_matches('/')))),
                "{case}: reported {reported:?}, lost {lost:?}"
            );
        }
    }
}

#[test]
fn damaged_packs_lose_only_the_frames_that_were_hit() {
    let b = base();
    let intact = open(&b.repo, b"pw").unwrap();
    let frames = frame_map(&intact);
    // Pick the pack holding the most blobs, and a pack holding a tree.
    let mut per_pack: HashMap<Id, usize> = HashMap::new();
    for locs in frames.values() {
        *per_pack.entry(locs[0].0).or_default() += 1;
    }
    let big = *per_pack.iter().max_by_key(|(id, n)| (**n, **id)).unwrap().0;
    let (snaps, _) = intact.snapshots().unwrap();
    let root_tree = snaps[0].1.sources[0].node.subtree.unwrap();
    let tree_pack = frames[&root_tree][0].0;
    let pack_file = |repo: &Path, id: &Id| repo.join(pack_path(id));

    for (pack, how, which) in [
        (big, Damage::Flip, "middle"),
        (big, Damage::Flip, "header"),
        (big, Damage::Truncate, "middle"),
        (big, Damage::Delete, ""),
        (tree_pack, Damage::Flip, "tree"),
    ] {
        let case = format!("pack {} {how:?} {which}", pack.short());
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        copy_dir(&b.repo, &repo_dir);
        let path = pack_file(&repo_dir, &pack);
        let size = fs::metadata(&path).unwrap().len();
        // The frames of this pack, in order.
        let mut pack_frames: Vec<(u64, u64)> = frames
            .values()
            .flat_map(|l| l.iter().filter(|x| x.0 == pack).map(|x| (x.1, x.2)))
            .collect();
        pack_frames.sort();
        pack_frames.dedup();
        let at = match (how, which) {
            (_, "header") => size - 10,
            (_, "tree") => {
                let (s, e) = frames[&root_tree]
                    .iter()
                    .find(|x| x.0 == pack)
                    .map(|x| (x.1, x.2))
                    .unwrap();
                (s + e) / 2
            }
            _ => {
                let (s, e) = pack_frames[pack_frames.len() / 2];
                (s + e) / 2
            }
        };
        damage(&path, how, at as usize);
        let hit: Vec<(u64, u64)> = match how {
            Damage::Flip => pack_frames
                .iter()
                .filter(|(s, e)| *s <= at && at < *e)
                .copied()
                .collect(),
            Damage::Truncate => pack_frames
                .iter()
                .filter(|(_, e)| *e > at)
                .copied()
                .collect(),
            Damage::Delete => pack_frames.clone(),
        };
        let lost: HashSet<Id> = frames
            .iter()
            .filter(|(_, locs)| {
                locs.iter()
                    .all(|l| l.0 == pack && hit.contains(&(l.1, l.2)))
            })
            .map(|(id, _)| *id)
            .collect();
        if which != "header" {
            assert!(!lost.is_empty(), "{case}: the damage must hit some blob");
        }
        let expected = affected(&intact, &lost);

        // check names the pack.
        let repo = open(&repo_dir, b"pw").unwrap();
        check_names(&repo, ReadData::All, &pack, &case);
        // restore refuses the damaged files and names them; the rest is exact.
        for (id, snap) in repo.snapshots().unwrap().0 {
            let out = tempfile::tempdir().unwrap();
            match restore(
                &repo,
                id,
                &snap,
                out.path(),
                &RestoreOptions::default(),
                &NoProgress,
            ) {
                Ok(s) => {
                    let failed: BTreeSet<String> = s
                        .failed
                        .iter()
                        .map(|f| f.path.trim_start_matches('/').to_string())
                        .collect();
                    let got = files(out.path());
                    for (k, v) in &got {
                        assert!(
                            b.reference[&id].get(k) == Some(v),
                            "{case}: {k} restored wrong"
                        );
                    }
                    for f in &expected[&id] {
                        assert!(!got.contains_key(f), "{case}: damaged {f} was written");
                        assert!(
                            failed.iter().any(|x| f.starts_with(x.as_str())),
                            "{case}: {f} not named among {failed:?}"
                        );
                    }
                }
                Err(e) => {
                    // Only a lost root listing stops a restore outright.
                    assert!(which == "tree", "{case}: restore failed: {e}");
                }
            }
        }
        drop(repo);
        repair_and_prove(&b, &repo_dir, &expected, &case);
    }
}

#[test]
fn damaged_index_files_are_rebuilt_with_nothing_lost() {
    let b = base();
    let none = HashMap::new();
    for how in [Damage::Flip, Damage::Truncate, Damage::Delete] {
        let case = format!("index {how:?}");
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        copy_dir(&b.repo, &repo_dir);
        let idx = fs::read_dir(repo_dir.join("index"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let name = idx.file_name().unwrap().to_str().unwrap().to_string();
        let len = fs::metadata(&idx).unwrap().len() as usize;
        damage(&idx, how, len / 2);
        let repo = open(&repo_dir, b"pw").unwrap();
        let r = check(&repo, ReadData::All, &NoProgress).unwrap();
        assert!(!r.ok(), "{case}");
        match how {
            // A deleted index file leaves no name behind; its packs show up
            // unindexed and the snapshots' data as missing.
            Damage::Delete => {
                assert!(
                    r.errors
                        .iter()
                        .any(|e| e.contains("not in any index")
                            || e.contains("missing from the index")),
                    "{case}: {:?}",
                    r.errors
                );
                assert!(
                    r.warnings.iter().any(|w| w.contains("in no index")),
                    "{case}: {:?}",
                    r.warnings
                );
            }
            _ => assert!(
                r.errors.iter().any(|e| e.contains(&name)),
                "{case}: {:?}",
                r.errors
            ),
        }
        let (id, snap) = repo.find_snapshot("latest").unwrap();
        let out = tempfile::tempdir().unwrap();
        match restore(
            &repo,
            id,
            &snap,
            out.path(),
            &RestoreOptions::default(),
            &NoProgress,
        ) {
            Err(e) => assert!(e.to_string().contains(&name), "{case}: {e}"),
            Ok(s) => assert!(!s.failed.is_empty(), "{case}: restore ignored the damage"),
        }
        drop(repo);
        repair_and_prove(&b, &repo_dir, &none, &case);
    }
}

#[test]
fn damaged_snapshots_are_named_and_only_they_are_lost() {
    let b = base();
    for how in [Damage::Flip, Damage::Truncate] {
        let case = format!("snapshot {how:?}");
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        copy_dir(&b.repo, &repo_dir);
        let repo = open(&repo_dir, b"pw").unwrap();
        let (snaps, _) = repo.snapshots().unwrap();
        let (victim, _) = snaps[0].clone();
        let (other, other_snap) = snaps[1].clone();
        let path = repo_dir.join("snapshots").join(victim.to_hex());
        let len = fs::metadata(&path).unwrap().len() as usize;
        damage(&path, how, len / 2);
        check_names(&repo, ReadData::All, &victim, &case);
        assert!(repo.find_snapshot(&victim.to_hex()).is_err());
        // The other snapshot is untouched.
        let out = tempfile::tempdir().unwrap();
        restore(
            &repo,
            other,
            &other_snap,
            out.path(),
            &RestoreOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(files(out.path()), b.reference[&other], "{case}");
        let rs = repair_snapshots(
            &repo,
            &RepairOptions {
                dry_run: false,
                forget: true,
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(rs.unreadable.len(), 1, "{case}");
        assert_eq!(rs.removed, 1, "{case}");
        assert!(rs.repaired.is_empty(), "{case}");
        assert!(
            check(&repo, ReadData::All, &NoProgress).unwrap().ok(),
            "{case}"
        );
        let (left, _) = repo.snapshots().unwrap();
        assert_eq!(
            left.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![other],
            "{case}"
        );
    }
}

#[test]
fn damaged_keys_and_config_are_named() {
    let b = base();
    let repo = open(&b.repo, b"second").unwrap();
    let second_key = repo.key_id();
    drop(repo);
    for how in [Damage::Flip, Damage::Truncate] {
        let case = format!("key {how:?}");
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        copy_dir(&b.repo, &repo_dir);
        let key = repo_dir.join("keys").join(second_key.to_hex());
        let len = fs::metadata(&key).unwrap().len() as usize;
        // The middle of the wrapped master key, or the middle of the file.
        let text = fs::read_to_string(&key).unwrap();
        let at = match how {
            Damage::Flip => text.find("\"master_key\"").unwrap() + 30,
            _ => len / 2,
        };
        damage(&key, how, at);
        // Its password now fails, naming the key file instead of blaming the password.
        let e = open(&repo_dir, b"second")
            .err()
            .expect("damaged key opened");
        assert!(e.to_string().contains(&second_key.to_hex()), "{case}: {e}");
        // The other key still opens, and check names the damaged one.
        let repo = open(&repo_dir, b"pw").unwrap();
        check_names(&repo, ReadData::None, &second_key, &case);
        // Every snapshot still restores byte-identical.
        for (id, snap) in repo.snapshots().unwrap().0 {
            let out = tempfile::tempdir().unwrap();
            restore(
                &repo,
                id,
                &snap,
                out.path(),
                &RestoreOptions::default(),
                &NoProgress,
            )
            .unwrap();
            assert_eq!(files(out.path()), b.reference[&id], "{case}");
        }
        // Removing the damaged key makes check clean again.
        repo.remove_key(&second_key.to_hex()[..8]).unwrap();
        assert!(
            check(&repo, ReadData::All, &NoProgress).unwrap().ok(),
            "{case}"
        );
    }

    let cfg_text = fs::read_to_string(b.repo.join("config")).unwrap();
    // A flipped digit that still parses, a flip that does not, a cut, a deletion.
    let digit = cfg_text.find("\"pack_size\": ").unwrap() + "\"pack_size\": ".len() + 2;
    for (how, at) in [
        (Damage::Flip, digit),
        (Damage::Flip, 1),
        (Damage::Truncate, cfg_text.len() / 2),
        (Damage::Delete, 0),
    ] {
        let case = format!("config {how:?} at {at}");
        let work = tempfile::tempdir().unwrap();
        let repo_dir = work.path().join("repo");
        copy_dir(&b.repo, &repo_dir);
        damage(&repo_dir.join("config"), how, at);
        let e = open(&repo_dir, b"pw")
            .err()
            .unwrap_or_else(|| panic!("{case}: opened"));
        let msg = e.to_string();
        assert!(msg.starts_with("config is damaged"), "{case}: {msg}");
        assert!(!msg.contains('\n'), "{case}: {msg}");
    }
}
