//! Integrity checking.
//!
//! Without reading data, `check` proves the structure: every key, index and
//! snapshot file authenticates and matches its name, every pack an index
//! lists exists with the right size, and every blob a snapshot needs is in
//! the index (trees are read and authenticated along the way). With
//! `read_data` it also downloads packs and authenticates every frame and
//! every blob id, which is the only way to find a flipped byte in file data.
//! Every problem names the object it concerns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;

use crate::backend::BackendErrorKind;
use crate::envelope::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{Index, PackRecord};
use crate::keyfile::{KeyFile, KEYS_DIR};
use crate::pack::{open_frame, read_header, verify_blobs, PACK_PREFIX_LEN};
use crate::progress::Progress;
use crate::repository::{id_from_path, pack_path, Repository};
use crate::snapshot::NodeKind;

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// This percentage of packs, chosen at random.
    Subset(f64),
}

/// What `check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Problems that mean data is missing or damaged.
    pub errors: Vec<String>,
    /// Things worth knowing that lose no data (left by interrupted backups).
    pub warnings: Vec<String>,
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The finding for a file another program put into the repository.
fn foreign(kind: FileKind, id: &Id) -> String {
    format!(
        "{}{id}: not written with this repository's keys (its bytes match its name, so it is not a damaged file of ours but one someone else added); every command skips it",
        kind.dir()
    )
}

/// Checks the repository.
pub fn check(
    repo: &Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    // Read-only storage (an archive disk, an immutable copy) takes no lock
    // file; nothing can prune it either, so it is checked without one.
    let lock = crate::lock::read_lock(repo, "check")?;
    let mut r = CheckReport::default();
    match &lock {
        None => r
            .warnings
            .push("cannot write a lock file (read-only storage?); checked without one".into()),
        // One line however many: a crash test leaves dozens.
        Some(lock) => match lock.stale.as_slice() {
            [] => {}
            [one] => r.warnings.push(format!(
                "stale lock: {}; `ledgervault unlock` removes it",
                one.describe()
            )),
            [first, ..] => r.warnings.push(format!(
                "{} stale locks (the first: {}); `ledgervault unlock` removes them",
                lock.stale.len(),
                first.describe()
            )),
        },
    }
    let backend = repo.backend();

    // Storage that keeps versions: objects someone overwrote or hid behind
    // a delete marker. Reads take the version that matches its name, so
    // nothing is lost, but someone with write access changed the bucket.
    for (path, why) in backend.replaced()? {
        r.errors.push(format!(
            "{path}: {why}; ledgervault reads the version it wrote, which is still stored, but someone changed the bucket"
        ));
    }

    for k in backend.list(KEYS_DIR)? {
        let ok = backend
            .read(&k.path)
            .map_err(crate::error::Error::from)
            .and_then(|b| {
                if id_from_path(&k.path) != Some(Id::of_object(&b)) {
                    return Err(crate::error::Error::corrupt(
                        &k.path,
                        "content does not match its name",
                    ));
                }
                KeyFile::decode(&b, &k.path)
            });
        if let Err(e) = ok {
            r.errors.push(e.to_string());
        }
    }

    // Index files.
    let mut index = Index::new();
    let mut records: HashMap<Id, PackRecord> = HashMap::new();
    for id in repo.list_ids(FileKind::Index)? {
        match repo.read_index_file(&id) {
            Ok(packs) => {
                for p in packs {
                    index.add_pack(&p);
                    records.entry(p.id).or_insert(p);
                }
            }
            Err(_) if repo.is_foreign(FileKind::Index, &id) => {
                r.errors.push(foreign(FileKind::Index, &id))
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    r.blobs = index.blob_count();

    // Packs on storage against the index.
    let stored: HashMap<Id, u64> = backend
        .list("data/")?
        .into_iter()
        .filter_map(|o| match id_from_path(&o.path) {
            Some(id) => Some((id, o.size)),
            None => {
                r.warnings
                    .push(format!("{}: not a pack name, ignored", o.path));
                None
            }
        })
        .collect();
    r.packs = stored.len();
    for (id, rec) in &records {
        match stored.get(id) {
            None => r.errors.push(format!(
                "{}: listed in the index but missing (the next backup stores again what it held)",
                pack_path(id)
            )),
            Some(&size) if size != rec.size => r.errors.push(format!(
                "{}: {} bytes on storage, the index says {} (truncated or replaced; the next backup stores again what it held)",
                pack_path(id),
                size,
                rec.size
            )),
            _ => {}
        }
    }
    let unindexed = stored.keys().filter(|id| !records.contains_key(id)).count();
    if unindexed > 0 {
        r.warnings.push(format!(
            "{unindexed} pack(s) are in no index (left by an interrupted backup; they hold no snapshot's data): the next backup checks them and reuses their data"
        ));
    }

    // Snapshots and the trees they reach.
    let mut seen_trees = HashSet::new();
    for id in repo.list_ids(FileKind::Snapshot)? {
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(_) if repo.is_foreign(FileKind::Snapshot, &id) => {
                r.errors.push(foreign(FileKind::Snapshot, &id));
                continue;
            }
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        r.snapshots += 1;
        for src in &snap.sources {
            let mut stack = vec![(src.node.clone(), src.name.clone())];
            while let Some((node, path)) = stack.pop() {
                let content = match repo.node_content(&index, &node) {
                    Ok(c) => c,
                    Err(e) => {
                        r.errors
                            .push(format!("snapshot {}: {path}: {e}", id.short()));
                        Vec::new()
                    }
                };
                let missing = content.iter().filter(|b| !index.contains(b)).count();
                if missing > 0 {
                    r.errors.push(format!(
                        "snapshot {}: {path}: {missing} data blob(s) missing from the index",
                        id.short()
                    ));
                }
                if let (NodeKind::Dir, Some(t)) = (node.kind, node.subtree) {
                    if !seen_trees.insert(t) {
                        continue;
                    }
                    match repo.load_tree(&index, &t) {
                        Ok(tree) => {
                            for c in tree.nodes {
                                let p = format!("{path}/{}", c.name);
                                stack.push((c, p));
                            }
                        }
                        Err(e) => r
                            .errors
                            .push(format!("snapshot {}: {path}/: {e}", id.short())),
                    }
                }
            }
        }
    }

    // Pack data.
    let mut to_read: Vec<Id> = records
        .keys()
        .filter(|id| stored.contains_key(id))
        .copied()
        .collect();
    to_read.sort();
    match read_data {
        ReadData::None => to_read.clear(),
        ReadData::All => {}
        ReadData::Subset(pct) => {
            let n = ((to_read.len() as f64) * pct.clamp(0.0, 100.0) / 100.0).ceil() as usize;
            to_read.shuffle(&mut rand::thread_rng());
            to_read.truncate(n);
        }
    }
    progress.start(Some(to_read.iter().map(|id| records[id].size).sum()));
    // Packs are checked on every core; errors are reported in pack order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(to_read.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut found: Vec<(usize, String)> = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut errors = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = to_read.get(i) else { break };
                        if let Err(e) = check_pack(repo, &records[id]) {
                            errors.push((i, e));
                        }
                        progress.read(records[id].size);
                    }
                    errors
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(errors) => found.extend(errors),
                Err(_) => found.push((
                    usize::MAX,
                    "a pack-checking thread stopped unexpectedly".into(),
                )),
            }
        }
    });
    found.sort_by_key(|(i, _)| *i);
    r.packs_read += to_read.len();
    // Damaged packs are recorded, so the next backup stores again the data
    // it meets that they held instead of deduplicating against them.
    let damaged: Vec<Id> = found
        .iter()
        .filter(|(i, e)| *i != usize::MAX && !e.ends_with(": missing"))
        .map(|(i, _)| to_read[*i])
        .collect();
    if !damaged.is_empty() {
        let unrecorded = damaged
            .iter()
            .filter(|id| repo.record_damaged(id, "check").is_err())
            .count();
        r.warnings.push(if unrecorded == 0 {
            format!(
                "{} damaged pack(s) recorded: the next backup stores again, and says so, the data it meets that they held; `ledgervault repair index` salvages the rest",
                damaged.len()
            )
        } else {
            format!(
                "{unrecorded} of {} damaged pack(s) could not be recorded (read-only storage?): until they are, backups deduplicate against them; run `ledgervault repair index` where the repository is writable",
                damaged.len()
            )
        });
    }
    r.errors.extend(found.into_iter().map(|(_, e)| e));
    progress.finish();
    Ok(r)
}

fn check_pack(repo: &Repository, rec: &PackRecord) -> std::result::Result<(), String> {
    read_verified_pack(repo, &rec.id, Some(rec)).map(|_| ())
}

/// Reads pack `id` whole and proves it: its bytes hash to its name, its
/// header authenticates (and equals `expected`'s frame table when given),
/// every frame authenticates and every blob matches its id. Returns its
/// record.
pub(crate) fn read_verified_pack(
    repo: &Repository,
    id: &Id,
    expected: Option<&PackRecord>,
) -> std::result::Result<PackRecord, String> {
    let path = pack_path(id);
    let bytes = match repo.backend().read(&path) {
        Ok(b) => b,
        Err(e) if e.kind == BackendErrorKind::NotFound => return Err(format!("{path}: missing")),
        Err(e) => return Err(e.to_string()),
    };
    if Id::of_object(&bytes) != *id {
        return Err(format!("{path}: content does not match its name (damaged)"));
    }
    let frames = read_header(repo.keys(), &bytes, &path).map_err(|e| e.to_string())?;
    if expected.is_some_and(|rec| frames != rec.frames) {
        return Err(format!("{path}: header differs from the index"));
    }
    let mut off = PACK_PREFIX_LEN as usize;
    for f in &frames {
        let sealed = &bytes[off..off + f.sealed_len as usize];
        let plain = open_frame(repo.keys(), sealed, f.raw_len, &path).map_err(|e| e.to_string())?;
        verify_blobs(repo.keys(), &plain, &f.blobs).map_err(|m| format!("{path}: {m}"))?;
        off += f.sealed_len as usize;
    }
    Ok(PackRecord {
        id: *id,
        size: bytes.len() as u64,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::KdfParams;
    use crate::pack::{BlobKind, FrameSealer, PackBuilder};
    use crate::repository::InitOptions;
    use crate::NoProgress;

    /// A repository holding one pack of one frame of `pages` 4 KiB pages,
    /// the page at `wrong` (if any) filed under another page's id.
    fn repo_with_pages(pages: usize, wrong: Option<usize>) -> (Repository, Vec<Id>) {
        let backend = Arc::new(MemoryBackend::new());
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..Default::default()
        };
        let repo = Repository::init(backend, b"pw", &opts).unwrap();
        let keys = repo.keys();
        let mut blobs = Vec::new();
        for p in 0..pages {
            let page: Vec<u8> = (0..4096).map(|i| (i * 31 + p * 7 + i / 97) as u8).collect();
            let id = if Some(p) == wrong {
                keys.blob_id(b"some other page")
            } else {
                keys.blob_id(&page)
            };
            blobs.push((BlobKind::Data, id, page));
        }
        let mut sealer = FrameSealer::new(1).unwrap();
        let (sealed, entry) = sealer.seal_into(keys, &blobs, Vec::new());
        let mut builder = PackBuilder::new();
        builder.add_frame(sealed, entry);
        let pack = builder.finish(keys);
        let parts: Vec<&[u8]> = pack.parts.iter().map(|p| p.as_slice()).collect();
        repo.backend()
            .write_parts(&pack_path(&pack.id), &parts)
            .unwrap();
        repo.write_index(&[PackRecord {
            id: pack.id,
            size: pack.size,
            frames: pack.frames,
        }])
        .unwrap();
        (repo, blobs.into_iter().map(|b| b.1).collect())
    }

    #[test]
    fn read_data_passes_pages_that_match_their_ids() {
        let (repo, _) = repo_with_pages(40, None);
        let r = check(&repo, ReadData::All, &NoProgress).unwrap();
        assert_eq!(r.packs_read, 1);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }

    #[test]
    fn read_data_names_a_page_inside_a_run_that_does_not_match_its_id() {
        // Page 21 sits in the middle of the second run of 16.
        let (repo, ids) = repo_with_pages(40, Some(21));
        let r = check(&repo, ReadData::All, &NoProgress).unwrap();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let want = format!("blob {} does not match its id", ids[21].short());
        assert!(r.errors[0].contains(&want), "{:?}", r.errors);
    }

    /// Reads the pages back through the restore path (every blob verified).
    fn read_back(repo: &Repository, ids: &[Id]) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let node = crate::snapshot::Node {
            content: ids.to_vec(),
            ..crate::snapshot::Node::new("image", NodeKind::File)
        };
        let index = repo.load_index().unwrap();
        let mut out = Vec::new();
        crate::restore::node_reader(repo, &index, &node)
            .unwrap()
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn restore_verifies_each_page_of_a_run() {
        let (repo, ids) = repo_with_pages(40, None);
        assert_eq!(read_back(&repo, &ids).unwrap().len(), 40 * 4096);
        // The same page twice in a row, and pages out of frame order.
        let mixed = [ids[3], ids[3], ids[30], ids[2], ids[4], ids[5]];
        assert_eq!(read_back(&repo, &mixed).unwrap().len(), 6 * 4096);

        let (repo, ids) = repo_with_pages(40, Some(21));
        let e = read_back(&repo, &ids).unwrap_err().to_string();
        let want = format!("blob {} does not match its id", ids[21].short());
        assert!(e.contains(&want), "{e}");
    }
}
