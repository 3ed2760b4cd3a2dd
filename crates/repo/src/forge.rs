//! Writing arbitrary trees and snapshots, as anyone holding a key can.
//!
//! Restore, check and the other readers must treat what they read as
//! input: a repository may have been written by a buggy or hostile
//! program. Tests use these functions to write such repositories (trees
//! with unsafe names, links before folders). Hidden; not an API.

use crate::error::Result;
use crate::id::Id;
use crate::index::PackRecord;
use crate::pack::{BlobKind, FrameSealer, PackBuilder};
use crate::repository::{pack_path, Repository};
use crate::snapshot::{Snapshot, Tree};

/// Stores `blobs` (data or tree blobs) in one new pack with its index file;
/// returns their ids.
pub fn store_blobs(repo: &Repository, blobs: Vec<(bool, Vec<u8>)>) -> Result<Vec<Id>> {
    let keys = repo.keys();
    let mut sealer = FrameSealer::new(1).expect("zstd level 1");
    let mut pack = PackBuilder::new();
    let mut ids = Vec::new();
    for (is_tree, bytes) in blobs {
        let id = keys.blob_id(&bytes);
        ids.push(id);
        let kind = if is_tree {
            BlobKind::Tree
        } else {
            BlobKind::Data
        };
        let (sealed, entry) = sealer.seal(keys, &[(kind, id, bytes)]);
        pack.add_frame(sealed, entry);
    }
    let pack = pack.finish(keys);
    let parts: Vec<&[u8]> = pack.parts.iter().map(|p| p.as_slice()).collect();
    repo.backend().write_parts(&pack_path(&pack.id), &parts)?;
    repo.write_index(&[PackRecord {
        id: pack.id,
        size: pack.size,
        frames: pack.frames,
    }])?;
    Ok(ids)
}

/// Stores a tree exactly as given; returns its id.
pub fn store_tree(repo: &Repository, tree: &Tree) -> Result<Id> {
    Ok(store_blobs(repo, vec![(true, tree.encode())])?[0])
}

/// Stores a data blob; returns its id.
pub fn store_data(repo: &Repository, bytes: &[u8]) -> Result<Id> {
    Ok(store_blobs(repo, vec![(false, bytes.to_vec())])?[0])
}

/// Saves a snapshot exactly as given; returns its id.
pub fn save_snapshot(repo: &Repository, snap: &Snapshot) -> Result<Id> {
    repo.save_snapshot(snap)
}

/// Writes a lock file as given (another process's, a dead one's); returns
/// its path.
pub fn write_lock(repo: &Repository, info: &crate::lock::LockInfo) -> Result<String> {
    crate::lock::write_lock(repo.backend().as_ref(), repo.keys(), info)
}
