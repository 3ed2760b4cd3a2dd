//! Entry points for the fuzz targets in `fuzz/` (not a stable interface).
//!
//! Each function feeds arbitrary bytes to one decoder of the format and
//! must return, never panic, whatever the bytes are. Sealed objects are
//! also fed through their envelope with a fixed key, so the checks before
//! authentication (magic, version, lengths) are fuzzed too; what lies
//! behind a tag is fuzzed by calling the payload decoder directly, since
//! authenticated bytes cannot be forged.

use crate::crypto::{Keys, MasterKey};
use crate::envelope::{open_file, seal_file, FileKind};
use crate::pack::{decode_frames, decompress_bounded, read_header, Reader};

fn keys() -> Keys {
    Keys::derive(&MasterKey([7; 32]))
}

/// A pack: header lookup and authentication, and the frame table behind it.
pub fn pack(data: &[u8]) {
    let _ = read_header(&keys(), data, "fuzz");
    if let Ok(table) = decompress_bounded(data, "fuzz") {
        let _ = decode_frames(&mut Reader::new(&table, "fuzz"));
    }
    let _ = decode_frames(&mut Reader::new(data, "fuzz"));
}

/// An index file: envelope, then payload.
pub fn index(data: &[u8]) {
    let _ = open_file(&keys(), FileKind::Index, data, "fuzz");
    let _ = crate::index::decode_index(data, "fuzz");
}

/// A snapshot file: envelope, then the snapshot and tree JSON.
pub fn snapshot(data: &[u8]) {
    let _ = open_file(&keys(), FileKind::Snapshot, data, "fuzz");
    let _ = crate::snapshot::Snapshot::decode(data, "fuzz");
    let _ = crate::snapshot::Tree::decode(data, "fuzz");
}

/// A key file: JSON, then its parameters and hex fields, with the key
/// derivation itself skipped when the file asks for more than a little
/// memory (Argon2id is slow by design).
pub fn key_file(data: &[u8]) {
    if let Ok(kf) = crate::keyfile::KeyFile::decode(data, "fuzz") {
        if kf.kdf.params.validate().is_ok()
            && kf.kdf.params.memory_kib <= 64
            && kf.kdf.params.iterations <= 2
        {
            let _ = kf.unlock(b"pw", "fuzz");
        }
    }
}

/// The repository config.
pub fn repo_config(data: &[u8]) {
    let _ = crate::config::RepoConfig::decode(data);
}

/// A chunk-map layer blob, applied to a small map.
pub fn chunk_map(data: &[u8]) {
    let mut ids = vec![None; 64];
    let _ = crate::chunkmap::apply_blob(&mut ids, data, "fuzz");
}

/// Valid inputs for each target, made with the targets' fixed key so that
/// sealed seeds authenticate and the fuzzer starts behind the tag: a pack
/// of three frames, an index listing it, a snapshot with a tree, a key
/// file, a repository config and chunk-map layers, each both sealed and as
/// the bare payload. `(target, name, bytes)`; `fuzz/corpus` is made from
/// these (`cargo run -p ledgervault-repo --example fuzz_seeds`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::chunkmap::{encode_delta, encode_full};
    use crate::id::Id;
    use crate::index::{encode_index, PackRecord};
    use crate::pack::{BlobKind, FrameSealer, PackBuilder};
    use crate::snapshot::{Node, NodeKind, Snapshot, Source, SourceKind, SourceSummary, Tree};

    let keys = keys();
    let mut out = Vec::new();
    let id = |b: &[u8]| keys.blob_id(b);

    // A pack: a data frame, a frame of two blobs, a tree frame.
    let csv = b"date,entry,account,amount\n2026-11-24,JE-1,1000 Cash,12.00\n".repeat(8);
    let pdf = b"%PDF-1.7 invoice 1042".to_vec();
    let mut file = Node::new("ledger.csv", NodeKind::File);
    file.size = csv.len() as u64;
    file.content = vec![id(&csv)];
    file.mode = Some(0o644);
    let tree = Tree { nodes: vec![file] };
    let tree_bytes = tree.encode();
    let mut sealer = FrameSealer::new(3).expect("level 3");
    let mut pack = PackBuilder::new();
    for blobs in [
        vec![(BlobKind::Data, id(&csv), csv.clone())],
        vec![
            (BlobKind::Data, id(&pdf), pdf.clone()),
            (BlobKind::Data, id(b"x"), b"x".to_vec()),
        ],
        vec![(BlobKind::Tree, id(&tree_bytes), tree_bytes.clone())],
    ] {
        let (sealed, entry) = sealer.seal(&keys, &blobs);
        pack.add_frame(sealed, entry);
    }
    let pack = pack.finish(&keys);
    out.push(("pack", "pack".to_string(), pack.parts.concat()));
    let mut table = Vec::new();
    crate::pack::encode_frames(&pack.frames, &mut table);
    out.push(("pack", "frame-table".to_string(), table));

    let record = PackRecord {
        id: pack.id,
        size: pack.size,
        frames: pack.frames.clone(),
    };
    let index = encode_index(&[record]);
    out.push((
        "index",
        "index".to_string(),
        seal_file(&keys, FileKind::Index, &index),
    ));
    out.push(("index", "index-payload".to_string(), index));

    let mut root = Node::new("books", NodeKind::Dir);
    root.subtree = Some(id(&tree_bytes));
    let snap = Snapshot::new_now(
        vec![Source {
            name: "books".into(),
            kind: SourceKind::Path,
            path: "/srv/firm/books".into(),
            node: root,
            summary: SourceSummary::default(),
        }],
        vec!["nightly".into()],
        Some("year-end close FY2026".into()),
    );
    let snap = snap.encode();
    out.push((
        "snapshot",
        "snapshot".to_string(),
        seal_file(&keys, FileKind::Snapshot, &snap),
    ));
    out.push(("snapshot", "snapshot-json".to_string(), snap));
    out.push(("snapshot", "tree-json".to_string(), tree_bytes));

    let config = crate::config::RepoConfig::new(16 * 1024 * 1024).expect("valid config");
    let config = config.encode();
    let params = crate::crypto::KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let kf = crate::keyfile::KeyFile::create(&MasterKey([7; 32]), b"pw", params, false, &config)
        .expect("key file");
    out.push(("key_file", "key".to_string(), kf.encode()));
    out.push(("repo_config", "config".to_string(), config));

    let ids: Vec<Id> = (0u8..5).map(|i| id(&[i])).collect();
    for (i, b) in encode_full(&ids).into_iter().enumerate() {
        out.push(("chunk_map", format!("full-{i}"), b));
    }
    for (i, b) in encode_delta(&[(1, ids[4]), (3, ids[0])])
        .into_iter()
        .enumerate()
    {
        out.push(("chunk_map", format!("delta-{i}"), b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what they claim: each decodes where it should.
    #[test]
    fn seeds_decode() {
        let keys = keys();
        for (target, name, bytes) in seeds() {
            let ok = match (target, name.as_str()) {
                ("pack", "pack") => read_header(&keys, &bytes, "seed").map(|_| ()),
                ("pack", _) => decode_frames(&mut Reader::new(&bytes, "seed")).map(|_| ()),
                ("index", "index") => open_file(&keys, FileKind::Index, &bytes, "seed")
                    .and_then(|p| crate::index::decode_index(&p, "seed"))
                    .map(|_| ()),
                ("index", _) => crate::index::decode_index(&bytes, "seed").map(|_| ()),
                ("snapshot", "snapshot") => open_file(&keys, FileKind::Snapshot, &bytes, "seed")
                    .and_then(|p| crate::snapshot::Snapshot::decode(&p, "seed"))
                    .map(|_| ()),
                ("snapshot", "tree-json") => {
                    crate::snapshot::Tree::decode(&bytes, "seed").map(|_| ())
                }
                ("snapshot", _) => crate::snapshot::Snapshot::decode(&bytes, "seed").map(|_| ()),
                ("key_file", _) => crate::keyfile::KeyFile::decode(&bytes, "seed")
                    .and_then(|k| k.unlock(b"pw", "seed"))
                    .map(|m| assert!(m.is_some(), "the seed key opens with its password")),
                ("repo_config", _) => crate::config::RepoConfig::decode(&bytes).map(|_| ()),
                ("chunk_map", _) => {
                    let mut ids = vec![None; 5];
                    crate::chunkmap::apply_blob(&mut ids, &bytes, "seed")
                }
                _ => panic!("unknown target {target}"),
            };
            ok.unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
        }
    }
}
