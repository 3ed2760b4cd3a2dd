//! Reviewer PoC (temporary).
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ledgervault_backends::LocalBackend;
use ledgervault_repo::*;

const FAST_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn rnd(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Deletes the given packs the first time an index file is written
/// (a prune by someone who removed the backup's lock).
struct PruneMidway {
    inner: Arc<dyn Backend>,
    old: Mutex<Vec<String>>,
    done: AtomicBool,
}
impl Backend for PruneMidway {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, p: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(p)
    }
    fn read(&self, p: &str) -> BackendResult<Vec<u8>> {
        self.inner.read(p)
    }
    fn read_range(&self, p: &str, o: u64, l: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(p, o, l)
    }
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        if path.starts_with("index/") && !self.done.swap(true, Ordering::SeqCst) {
            for p in self.old.lock().unwrap().iter() {
                self.inner.delete(p).unwrap();
            }
        }
        self.inner.write(path, data)
    }
    fn delete(&self, p: &str) -> BackendResult<()> {
        self.inner.delete(p)
    }
}

fn bk(repo: &Repository, src: &Path) -> Result<BackupSummary> {
    backup(
        repo,
        vec![BackupSource::Path(src.to_path_buf())],
        &BackupOptions::default(),
        &NoProgress,
    )
}

#[test]
fn poc_deduplicated_file_data_is_not_in_the_vanished_pack_proof() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("share");
    fs::create_dir_all(&src).unwrap();
    // Flat folder: the only tree is the root, which changes below.
    fs::write(src.join("old.bin"), rnd(1_000_000, 1)).unwrap();
    let repo_dir = dir.path().join("repo");
    Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        b"pw",
        &InitOptions {
            pack_size: 256 * 1024,
            kdf: FAST_KDF,
        },
    )
    .unwrap();
    let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), b"pw").unwrap();
    bk(&repo, &src).unwrap();
    fs::write(src.join("new.bin"), rnd(300_000, 2)).unwrap();
    let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let old: Vec<String> = inner
        .list("data/")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    let backend = Arc::new(PruneMidway {
        inner,
        old: Mutex::new(old),
        done: AtomicBool::new(false),
    });
    let repo = Repository::open(backend.clone(), b"pw").unwrap();
    let r = bk(&repo, &src);
    assert!(backend.done.load(Ordering::SeqCst));
    let sum = match r {
        Err(e) => {
            println!("backup refused (good): {e}");
            return;
        }
        Ok(s) => s,
    };
    println!(
        "BUG: backup claimed snapshot {} with its old packs gone",
        sum.snapshot_id.short()
    );
    let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), b"pw").unwrap();
    let (id, snap) = repo.find_snapshot(&sum.snapshot_id.to_hex()).unwrap();
    let out = dir.path().join("out");
    let rs = restore(
        &repo,
        id,
        &snap,
        &out,
        &RestoreOptions::default(),
        &NoProgress,
    );
    println!("restore: {:?}", rs.as_ref().map(|s| &s.failed));
    panic!("snapshot written although packs it relies on vanished");
}
