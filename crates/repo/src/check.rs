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

use rand::seq::SliceRandom;

use crate::backend::BackendErrorKind;
use crate::envelope::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{Index, PackRecord};
use crate::keyfile::{KeyFile, KEYS_DIR};
use crate::pack::{open_frame, read_header, PACK_PREFIX_LEN};
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

/// Checks the repository.
pub fn check(
    repo: &Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let lock = crate::lock::lock(repo, false, "check")?;
    let mut r = CheckReport::default();
    for l in &lock.stale {
        r.warnings.push(format!(
            "stale lock: {}; `ledgervault unlock` removes it",
            l.describe()
        ));
    }
    let backend = repo.backend();

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
                "{}: listed in the index but missing",
                pack_path(id)
            )),
            Some(&size) if size != rec.size => r.errors.push(format!(
                "{}: {} bytes on storage, the index says {} (truncated or replaced)",
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
            "{unindexed} pack(s) are in no index (left by an interrupted backup; they hold no snapshot's data)"
        ));
    }

    // Snapshots and the trees they reach.
    let mut seen_trees = HashSet::new();
    for id in repo.list_ids(FileKind::Snapshot)? {
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
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
    for id in &to_read {
        r.packs_read += 1;
        if let Err(e) = check_pack(repo, &records[id]) {
            r.errors.push(e);
        }
        progress.read(records[id].size);
    }
    progress.finish();
    Ok(r)
}

fn check_pack(repo: &Repository, rec: &PackRecord) -> std::result::Result<(), String> {
    let path = pack_path(&rec.id);
    let bytes = match repo.backend().read(&path) {
        Ok(b) => b,
        Err(e) if e.kind == BackendErrorKind::NotFound => return Err(format!("{path}: missing")),
        Err(e) => return Err(e.to_string()),
    };
    if Id::of_object(&bytes) != rec.id {
        return Err(format!("{path}: content does not match its name (damaged)"));
    }
    let frames = read_header(repo.keys(), &bytes, &path).map_err(|e| e.to_string())?;
    if frames != rec.frames {
        return Err(format!("{path}: header differs from the index"));
    }
    let mut off = PACK_PREFIX_LEN as usize;
    for f in &frames {
        let sealed = &bytes[off..off + f.sealed_len as usize];
        let plain = open_frame(repo.keys(), sealed, f.raw_len, &path).map_err(|e| e.to_string())?;
        let mut inner = 0usize;
        for b in &f.blobs {
            let data = &plain[inner..inner + b.len as usize];
            if repo.keys().blob_id(data) != b.id {
                return Err(format!(
                    "{path}: blob {} does not match its id",
                    b.id.short()
                ));
            }
            inner += b.len as usize;
        }
        off += f.sealed_len as usize;
    }
    Ok(())
}
