//! Hostile trees and hostile targets: a restore writes only inside its
//! target, and every name comes back byte-exact.
//!
//! Trees here are forged the way anyone holding a key could write them
//! (`forge`), and targets are prepared with links to an "outside" folder at
//! every depth. After each restore the outside folder must be exactly as it
//! was: same entries, same bytes, same modes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ledgervault_repo::*;
use proptest::prelude::*;

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
            kdf: FAST_KDF,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Everything under `dir`, never following links: path → (kind, mode, bytes or link target).
fn state(dir: &Path) -> BTreeMap<PathBuf, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if md.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        'l',
                        0,
                        fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
                    ),
                );
            } else if md.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, ('f', mode, fs::read(&p).unwrap()));
            }
        }
    }
    let md = fs::metadata(dir).unwrap();
    out.insert(
        PathBuf::from("."),
        ('d', md.permissions().mode() & 0o7777, Vec::new()),
    );
    out
}

/// A scratch place with an `outside` folder holding a file and a database
/// stand-in, and an empty `target`.
struct Scene {
    _tmp: tempfile::TempDir,
    outside: PathBuf,
    target: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim.txt"), b"do not touch").unwrap();
    fs::write(outside.join("f"), b"outside f").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o750)).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    Scene {
        _tmp: tmp,
        outside,
        target,
    }
}

fn file(repo: &Repository, name: impl Into<FsName>, content: &[u8]) -> Node {
    let mut n = Node::new(name, NodeKind::File);
    n.size = content.len() as u64;
    n.content = vec![forge::store_data(repo, content).unwrap()];
    n.mode = Some(0o777);
    n
}

fn link(name: impl Into<FsName>, target: &Path) -> Node {
    let mut n = Node::new(name, NodeKind::Symlink);
    n.target = Some(FsName::from(target.as_os_str()));
    n
}

fn dir(repo: &Repository, name: impl Into<FsName>, nodes: Vec<Node>) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.subtree = Some(forge::store_tree(repo, &Tree { nodes }).unwrap());
    // A mode that would open the folder to everyone, were it applied
    // through a link to the outside.
    n.mode = Some(0o777);
    n
}

fn snapshot_of(repo: &Repository, source_name: &str, root: Node) -> (Id, Snapshot) {
    let snap = Snapshot::new_now(
        vec![Source {
            name: source_name.into(),
            kind: SourceKind::Path,
            path: "/srv/share".into(),
            node: root,
            summary: SourceSummary::default(),
        }],
        Vec::new(),
        None,
    );
    let id = forge::save_snapshot(repo, &snap).unwrap();
    (id, snap)
}

fn restore_into(repo: &Repository, id: Id, snap: &Snapshot, target: &Path) -> RestoreSummary {
    restore_with(repo, id, snap, target, None)
}

fn restore_with(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    target: &Path,
    placer: Option<Arc<dyn DbPlacer>>,
) -> RestoreSummary {
    let opts = RestoreOptions {
        db_placer: placer,
        threads: 2,
        ..Default::default()
    };
    restore(repo, id, snap, target, &opts, &NoProgress).unwrap()
}

#[test]
fn a_link_then_a_folder_of_the_same_name_never_writes_outside() {
    for link_first in [true, false] {
        let s = scene();
        let r = repo();
        let before = state(&s.outside);
        let l = link("d", &s.outside);
        let d = dir(
            &r,
            "d",
            vec![file(&r, "f", b"inside f"), file(&r, "new", b"new")],
        );
        let nodes = if link_first { vec![l, d] } else { vec![d, l] };
        let root = dir(&r, "share", nodes);
        let (id, snap) = snapshot_of(&r, "share", root);
        let _ = restore_into(&r, id, &snap, &s.target);
        assert_eq!(state(&s.outside), before, "link first: {link_first}");
    }
}

#[test]
fn unsafe_names_in_a_forged_tree_are_refused_and_named() {
    let s = scene();
    let r = repo();
    let before = state(&s.outside);
    // The restore goes into target/share; "../../outside/f" from a deeper
    // folder, "..", "." and names with '/' or NUL all aim outside or at
    // nothing.
    let bad: Vec<&[u8]> = vec![b"", b".", b"..", b"../outside/f", b"a/b", b"x\0y", b"/abs"];
    let mut nodes: Vec<Node> = bad
        .iter()
        .map(|n| file(&r, FsName::from_bytes(n.to_vec()), b"evil"))
        .collect();
    nodes.push(dir(&r, "..", vec![file(&r, "f", b"evil")]));
    nodes.push(file(&r, "ok.txt", b"fine"));
    let root = dir(&r, "share", vec![dir(&r, "sub", nodes)]);
    let (id, snap) = snapshot_of(&r, "share", root);
    let sum = restore_into(&r, id, &snap, &s.target);
    assert_eq!(state(&s.outside), before);
    assert_eq!(
        fs::read(s.target.join("share/sub/ok.txt")).unwrap(),
        b"fine"
    );
    assert_eq!(sum.failed.len(), bad.len() + 1, "{:?}", sum.failed);
    for f in &sum.failed {
        assert!(f.message.contains("refusing an entry"), "{f:?}");
        assert!(!f.path.contains('\0') && !f.path.contains('\n'), "{f:?}");
    }
    // Nothing else appeared in the target's parent.
    let parent: Vec<_> = fs::read_dir(s.target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parent.len(), 2, "{parent:?}");
}

#[test]
fn a_forged_source_name_cannot_leave_the_target() {
    let s = scene();
    let r = repo();
    let before = state(&s.outside);
    for name in ["..", "../outside", "/tmp", ""] {
        let root = dir(&r, "x", vec![file(&r, "victim.txt", b"evil")]);
        let (id, snap) = snapshot_of(&r, name, root);
        let sum = restore_into(&r, id, &snap, &s.target);
        assert_eq!(sum.failed.len(), 1, "{name}: {:?}", sum.failed);
        assert!(
            sum.failed[0].message.contains("refusing a source"),
            "{:?}",
            sum.failed
        );
    }
    assert_eq!(state(&s.outside), before);
}

#[test]
fn links_in_the_target_are_replaced_at_every_depth_never_followed() {
    // The snapshot: share/a/b/c/{f, victim.txt}, and share/top.txt.
    let r = repo();
    let leaf = dir(
        &r,
        "c",
        vec![
            file(&r, "f", b"restored f"),
            file(&r, "victim.txt", b"restored victim"),
        ],
    );
    let root = dir(
        &r,
        "share",
        vec![
            dir(&r, "a", vec![dir(&r, "b", vec![leaf])]),
            file(&r, "top.txt", b"top"),
        ],
    );
    let (id, snap) = snapshot_of(&r, "share", root);
    // A link to the outside in place of each folder in turn (share, a, b,
    // c), then of the files.
    for depth in 1..=5 {
        let s = scene();
        let before = state(&s.outside);
        let mut at = s.target.clone();
        let names = ["share", "a", "b", "c"];
        for n in names.iter().take(depth.min(4)) {
            at.push(n);
        }
        if depth <= 4 {
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(&s.outside, &at).unwrap();
        } else {
            // A link to the outside file where the snapshot has a file.
            fs::create_dir_all(&at).unwrap();
            symlink(s.outside.join("victim.txt"), at.join("victim.txt")).unwrap();
            symlink(s.outside.join("f"), s.target.join("share/top.txt")).unwrap();
        }
        let sum = restore_into(&r, id, &snap, &s.target);
        assert!(sum.failed.is_empty(), "depth {depth}: {:?}", sum.failed);
        assert_eq!(state(&s.outside), before, "depth {depth}");
        let c = s.target.join("share/a/b/c");
        assert!(!fs::symlink_metadata(&c).unwrap().file_type().is_symlink());
        assert_eq!(
            fs::read(c.join("f")).unwrap(),
            b"restored f",
            "depth {depth}"
        );
        assert_eq!(fs::read(c.join("victim.txt")).unwrap(), b"restored victim");
        assert!(!fs::symlink_metadata(c.join("victim.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(s.target.join("share/top.txt")).unwrap(), b"top");
    }
}

/// A placer that, when the restore reaches the database, swaps a folder the
/// restore already made (and has files still to write in) for a link to the
/// outside, as another program racing the restore could.
struct Swapper {
    folder: PathBuf,
    outside: PathBuf,
    placed: Mutex<Vec<PathBuf>>,
}

impl DbPlacer for Swapper {
    fn place(&self, tmp: &Path, dest: &Path, _: Option<&DatabaseInfo>) -> Result<(), String> {
        let aside = self.folder.with_extension("aside");
        fs::rename(&self.folder, &aside).unwrap();
        symlink(&self.outside, &self.folder).unwrap();
        fs::rename(tmp, dest).map_err(|e| e.to_string())?;
        self.placed.lock().unwrap().push(dest.to_path_buf());
        Ok(())
    }
}

#[test]
fn a_link_swapped_in_while_the_restore_runs_is_refused() {
    let s = scene();
    let r = repo();
    let before = state(&s.outside);
    let mut db = file(&r, "books.db", b"SQLite format 3\0 not really");
    db.kind = NodeKind::DbImage;
    let root = dir(
        &r,
        "share",
        vec![
            dir(&r, "a-db", vec![db]),
            dir(
                &r,
                "later",
                vec![
                    file(&r, "f", b"evil if outside"),
                    file(&r, "victim.txt", b"x"),
                ],
            ),
        ],
    );
    let (id, snap) = snapshot_of(&r, "share", root);
    let swapper = Arc::new(Swapper {
        folder: s.target.join("share/later"),
        outside: s.outside.clone(),
        placed: Mutex::new(Vec::new()),
    });
    let sum = restore_with(&r, id, &snap, &s.target, Some(swapper.clone()));
    assert_eq!(swapper.placed.lock().unwrap().len(), 1, "the swap happened");
    assert_eq!(state(&s.outside), before);
    // Databases are placed beside the writer, which goes on meanwhile: each
    // later file was either written before the swap (into the folder the
    // restore made, now moved aside) or refused after it; none went out.
    for f in &sum.failed {
        assert!(f.message.contains("symbolic link"), "{f:?}");
    }
    let aside = s.target.join("share/later.aside");
    for (name, bytes) in [("f", &b"evil if outside"[..]), ("victim.txt", b"x")] {
        let refused = sum
            .failed
            .iter()
            .any(|f| f.path == format!("share/later/{name}"));
        let written = fs::read(aside.join(name)).ok();
        assert!(
            refused != written.is_some(),
            "{name}: refused {refused}, written {written:?}; {:?}",
            sum.failed
        );
        if let Some(w) = written {
            assert_eq!(w, bytes);
        }
    }
}

#[test]
fn folder_modes_are_never_applied_through_a_link() {
    let s = scene();
    let r = repo();
    let before = state(&s.outside);
    // The snapshot's folder "d" has mode 0777; in the target "d" is a link
    // to the outside, whose mode is 0750.
    let root = dir(&r, "share", vec![dir(&r, "d", vec![])]);
    let (id, snap) = snapshot_of(&r, "share", root);
    fs::create_dir(s.target.join("share")).unwrap();
    symlink(&s.outside, s.target.join("share/d")).unwrap();
    let sum = restore_into(&r, id, &snap, &s.target);
    assert!(sum.failed.is_empty(), "{:?}", sum.failed);
    assert_eq!(state(&s.outside), before);
    let md = fs::symlink_metadata(s.target.join("share/d")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o777);
}

#[test]
fn setuid_and_setgid_bits_of_a_forged_tree_are_never_restored() {
    let s = scene();
    let r = repo();
    let mut f = file(&r, "tool", b"#!/bin/sh\n");
    f.mode = Some(0o6755);
    let mut d = dir(&r, "bin", vec![f]);
    d.mode = Some(0o3775);
    let root = dir(&r, "share", vec![d]);
    let (id, snap) = snapshot_of(&r, "share", root);
    let sum = restore_into(&r, id, &snap, &s.target);
    assert!(sum.failed.is_empty(), "{:?}", sum.failed);
    let mode = |p: &str| fs::metadata(s.target.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("share/bin/tool"), 0o755);
    // The sticky bit is harmless and kept; set-group-id is not.
    assert_eq!(mode("share/bin"), 0o1775);
}

fn backup_dir(r: &Repository, src: &Path) -> (Id, Snapshot) {
    let sum = backup(
        r,
        vec![BackupSource::Path(src.to_path_buf())],
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let (id, snap) = r.find_snapshot(&sum.snapshot_id.to_hex()).unwrap();
    (id, snap)
}

#[test]
fn names_that_differ_only_in_invalid_bytes_stay_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("share");
    fs::create_dir(&src).unwrap();
    // Latin-1 "résumé.doc", the same in UTF-8, and two names that differ
    // only in a byte that is not UTF-8; a link named in Latin-1 pointing to
    // a Latin-1 target.
    let names: Vec<&[u8]> = vec![
        b"r\xe9sum\xe9.doc",
        "résumé.doc".as_bytes(),
        b"a\xff",
        b"a\xfe",
        b"line\nbreak",
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(src.join(OsStr::from_bytes(n)), format!("file {i}")).unwrap();
    }
    let sub = src.join(OsStr::from_bytes(b"dossier \xe0 part"));
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join(OsStr::from_bytes(b"\xfc")), b"deep").unwrap();
    symlink(
        OsStr::from_bytes(b"r\xe9sum\xe9.doc"),
        src.join(OsStr::from_bytes(b"lien \xe9")),
    )
    .unwrap();

    let r = repo();
    let (id, snap) = backup_dir(&r, &src);
    let out = tmp.path().join("out");
    let sum = restore_into(&r, id, &snap, &out);
    assert!(sum.failed.is_empty(), "{:?}", sum.failed);
    let back = out.join("share");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read(back.join(OsStr::from_bytes(n))).unwrap(),
            format!("file {i}").as_bytes()
        );
    }
    let count = fs::read_dir(&back).unwrap().count();
    assert_eq!(count, names.len() + 2);
    assert_eq!(
        fs::read(
            back.join(OsStr::from_bytes(b"dossier \xe0 part"))
                .join(OsStr::from_bytes(b"\xfc"))
        )
        .unwrap(),
        b"deep"
    );
    assert_eq!(
        fs::read_link(back.join(OsStr::from_bytes(b"lien \xe9")))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"r\xe9sum\xe9.doc"
    );
    // Selecting one of them by its bytes restores that one alone.
    let only = tmp.path().join("only");
    let opts = RestoreOptions {
        include: vec![PathBuf::from(OsStr::from_bytes(b"share/a\xfe"))],
        ..Default::default()
    };
    restore(&r, id, &snap, &only, &opts, &NoProgress).unwrap();
    let got: Vec<_> = fs::read_dir(only.join("share"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(got, vec![OsStr::from_bytes(b"a\xfe").to_os_string()]);
}

#[test]
fn a_version_1_snapshot_still_restores() {
    // Written as ledgervault wrote snapshots before names were bytes:
    // version 1, every name a string.
    let r = repo();
    let data = forge::store_data(&r, b"old books").unwrap();
    let tree = format!(
        r#"{{"nodes":[{{"name":"ledger.csv","type":"file","mode":420,"size":9,"content":["{}"]}}]}}"#,
        data.to_hex()
    );
    let tree_id = forge::store_blobs(&r, vec![(true, tree.into_bytes())]).unwrap()[0];
    let mut snap = Snapshot::new_now(
        vec![Source {
            name: "books".into(),
            kind: SourceKind::Path,
            path: "/srv/books".into(),
            node: {
                let mut n = Node::new("books", NodeKind::Dir);
                n.subtree = Some(tree_id);
                n
            },
            summary: SourceSummary::default(),
        }],
        Vec::new(),
        None,
    );
    snap.version = 1;
    let id = forge::save_snapshot(&r, &snap).unwrap();
    let (_, loaded) = r.find_snapshot(&id.to_hex()).unwrap();
    assert_eq!(loaded.version, 1);
    let tmp = tempfile::tempdir().unwrap();
    let sum = restore_into(&r, id, &loaded, tmp.path());
    assert!(sum.failed.is_empty());
    assert_eq!(
        fs::read(tmp.path().join("books/ledger.csv")).unwrap(),
        b"old books"
    );
    // A snapshot from a newer ledgervault is refused as such.
    snap.version = SNAPSHOT_VERSION + 1;
    let newer = forge::save_snapshot(&r, &snap).unwrap();
    let e = r.load_snapshot(&newer).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any name the filesystem allows comes back byte-exact, with its own
    /// content.
    #[test]
    fn arbitrary_byte_names_round_trip(
        names in proptest::collection::btree_set(
            proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..40)
                .prop_filter("not . or ..", |n| n != b"." && n != b".."),
            1..8,
        )
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("s");
        fs::create_dir(&src).unwrap();
        for (i, n) in names.iter().enumerate() {
            fs::write(src.join(OsStr::from_bytes(n)), i.to_string()).unwrap();
        }
        let r = repo();
        let (id, snap) = backup_dir(&r, &src);
        let out = tmp.path().join("o");
        let sum = restore_into(&r, id, &snap, &out);
        prop_assert!(sum.failed.is_empty());
        let mut got: Vec<Vec<u8>> = fs::read_dir(out.join("s")).unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
        got.sort();
        let want: Vec<Vec<u8>> = names.iter().cloned().collect();
        prop_assert_eq!(&got, &want);
        for (i, n) in names.iter().enumerate() {
            prop_assert_eq!(fs::read(out.join("s").join(OsStr::from_bytes(n))).unwrap(), i.to_string().into_bytes());
        }
    }
}
