//! Snapshots and trees.
//!
//! A snapshot is a sealed JSON document naming the sources that were backed
//! up (files and directories, database images, streams), when, by whom and
//! why, with a summary per source. Each source carries a root [`Node`].
//! Directories point to tree blobs: sealed JSON lists of child nodes, stored
//! in packs like data and deduplicated like data, so an unchanged directory
//! costs nothing in the next snapshot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunkmap::ChunkMap;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::name::FsName;

/// Version of snapshot documents. 2: names and link targets in trees may be
/// byte strings (`{"bytes":"<hex>"}`) when they are not UTF-8. 3: file
/// nodes carry `ctime` and `inode`, so a later backup can tell an unchanged
/// file without reading it. Versions 1 and 2 still read (their files are
/// read again once, having no `ctime`).
pub const SNAPSHOT_VERSION: u32 = 3;

/// The type of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// Data read from a stream (standard input, a dump program).
    Stream,
    /// A consistent image of a database file, cut in page-aligned chunks.
    DbImage,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name, byte-exact (see [`FsName`]).
    pub name: FsName,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<DateTime<Utc>>,
    /// Status change time of a file (version 3): with `mtime`, `size` and
    /// `inode`, what tells the next backup that the file is unchanged and
    /// need not be read (see `backup::unchanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<DateTime<Utc>>,
    /// Inode number of a file (version 3), for the same purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Bytes of content (files, streams, images).
    #[serde(default)]
    pub size: u64,
    /// Data blob ids, in order (files, streams, images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Tree blob id (directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Link target (symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<FsName>,
    /// Page size of a database image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Chunk map of a database image (its `content` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_map: Option<ChunkMap>,
    /// What was captured of a live database: tables, row counts, digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Box<DatabaseInfo>>,
}

impl Node {
    pub fn new(name: impl Into<FsName>, kind: NodeKind) -> Node {
        Node {
            name: name.into(),
            kind,
            mode: None,
            mtime: None,
            ctime: None,
            inode: None,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            page_size: None,
            chunk_map: None,
            database: None,
        }
    }
}

/// The contents of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tree serializes")
    }

    pub fn decode(bytes: &[u8], object: &str) -> Result<Tree> {
        serde_json::from_slice(bytes).map_err(|e| decode_error(object, e))
    }
}

fn decode_error(object: &str, e: serde_json::Error) -> Error {
    let msg = e.to_string();
    if msg.contains("unknown variant") {
        Error::Invalid(format!(
            "{object} uses a node or source type this ledgervault {} does not know ({msg}); it was written by a newer ledgervault",
            env!("CARGO_PKG_VERSION")
        ))
    } else {
        Error::corrupt(object, format!("bad JSON: {msg}"))
    }
}

/// Where a source came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A file or directory path.
    Path,
    /// Standard input or another stream.
    Stream,
    /// A database captured as an image.
    Database,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Counts for one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub files: u64,
    /// Files found unchanged since the parent snapshot and not read
    /// (their bytes are counted in `bytes` all the same).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_unchanged: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_unchanged: u64,
    pub dirs: u64,
    /// Bytes of content the source holds: read, or taken unchanged from
    /// the parent snapshot (`bytes_unchanged` of them).
    pub bytes: u64,
    /// Files that could not be read.
    pub errors: u64,
}

/// Row count and content digest of one table at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStat {
    pub name: String,
    pub rows: u64,
    /// Hex BLAKE3 of the table's rows in key order (see docs/FORMAT.md).
    pub digest: String,
}

/// What was captured of a live database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// `sqlite` or `postgresql`.
    pub engine: String,
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub journal_mode: String,
    #[serde(default)]
    pub tables: Vec<TableStat>,
    /// Damage found while capturing (the snapshot holds the data as it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// What a restore needs to recreate the database alike (PostgreSQL:
    /// `server_version`, `encoding`, `collate`, `ctype`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
}

/// One source of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Unique within the snapshot; the top folder in `ls` and `restore`.
    pub name: String,
    pub kind: SourceKind,
    /// The path or URL as given (never with credentials).
    pub path: String,
    pub node: Node,
    pub summary: SourceSummary,
}

/// Totals for the whole snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTotals {
    pub bytes_read: u64,
    /// Plaintext bytes of blobs that were new to the repository.
    pub bytes_new: u64,
    /// Bytes this backup added to the repository (packs and index files).
    pub bytes_stored: u64,
    pub duration_ms: u64,
    pub errors: u64,
}

/// A snapshot document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<Utc>,
    pub host: String,
    pub user: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ledgervault X.Y.Z`.
    pub program: String,
    pub sources: Vec<Source>,
    pub totals: SnapshotTotals,
    /// What made this snapshot suspect (a database that stopped being valid,
    /// or pages turned into random-looking bytes). Empty for a normal one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Vec<String>,
    /// For a snapshot made by `copy`: the id the snapshot had in the
    /// repository where it was first taken. Copies of copies keep the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::id::Id>,
    /// For a snapshot made by `copy`: the source repository's tag over the
    /// destination's id and this document encoded without the field
    /// (`Keys::copy_seal`). A later copy from that source takes ids from a
    /// copy only when its tag holds, so a holder of the destination's key
    /// alone cannot make it trust a forged one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_seal: Option<crate::id::Id>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serializes")
    }

    pub fn decode(bytes: &[u8], object: &str) -> Result<Snapshot> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| decode_error(object, e))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        let version = version.min(u32::MAX as u64) as u32;
        if version > SNAPSHOT_VERSION {
            return Err(Error::NewerFormat {
                what: object.to_string(),
                found: version,
                supported: SNAPSHOT_VERSION,
                program: env!("CARGO_PKG_VERSION"),
            });
        }
        crate::pack::check_version(version.min(1), object)?;
        serde_json::from_value(v).map_err(|e| decode_error(object, e))
    }

    /// Whether ransomware-like damage was seen when this snapshot was taken.
    pub fn is_suspect(&self) -> bool {
        !self.suspect.is_empty()
    }

    /// The set of sources, as a key grouping snapshots of the same data
    /// (host and sorted source paths).
    pub fn group_key(&self) -> String {
        let mut paths: Vec<&str> = self.sources.iter().map(|s| s.path.as_str()).collect();
        paths.sort_unstable();
        paths.dedup();
        format!("{} {}", self.host, paths.join(" "))
    }

    /// Sum of source sizes.
    pub fn size(&self) -> u64 {
        self.sources.iter().map(|s| s.summary.bytes).sum()
    }

    pub fn new_now(sources: Vec<Source>, tags: Vec<String>, reason: Option<String>) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: Utc::now(),
            host: crate::host_name(),
            user: crate::user_name(),
            tags,
            reason,
            program: format!("ledgervault {}", env!("CARGO_PKG_VERSION")),
            sources,
            totals: SnapshotTotals::default(),
            suspect: Vec::new(),
            origin: None,
            copy_seal: None,
        }
    }

    /// Seals this snapshot, a copy about to be written to the repository
    /// `dest`, with the keys of the repository it is copied from.
    pub fn seal_copy(&mut self, source: &crate::crypto::Keys, dest: &crate::id::Id) {
        self.copy_seal = None;
        let tag = source.copy_seal(dest, &self.encode());
        self.copy_seal = Some(crate::id::Id(*tag.as_bytes()));
    }

    /// Whether this snapshot, read from the repository `dest`, is a copy
    /// sealed for it by the repository whose keys are `source` (compared in
    /// constant time). A document re-encoded by a reader that does not know
    /// one of its fields does not verify: only the pairing is lost.
    pub fn sealed_by(&self, source: &crate::crypto::Keys, dest: &crate::id::Id) -> bool {
        let Some(tag) = self.copy_seal else {
            return false;
        };
        let mut doc = self.clone();
        doc.copy_seal = None;
        source.copy_seal(dest, &doc.encode()) == blake3::Hash::from(tag.0)
    }

    /// The id that names this snapshot across copies: its origin, or `id`
    /// (its own id) when it was taken here.
    pub fn lineage(&self, id: &crate::id::Id) -> crate::id::Id {
        self.origin.unwrap_or(*id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trip(name in "[a-z]{1,10}", size in any::<u64>(), tags in proptest::collection::vec("[a-z]{1,5}", 0..3), reason in proptest::option::of(".{0,20}")) {
            let mut node = Node::new(name.clone(), NodeKind::File);
            node.size = size;
            node.content = vec![Id([1; 32])];
            let s = Snapshot::new_now(vec![Source { name, kind: SourceKind::Path, path: "/x".into(), node, summary: SourceSummary::default() }], tags, reason);
            prop_assert_eq!(Snapshot::decode(&s.encode(), "s").unwrap(), s);
        }

        #[test]
        fn tree_round_trip(names in proptest::collection::vec("[a-zA-Z0-9 ._-]{1,12}", 0..8)) {
            let t = Tree { nodes: names.into_iter().map(|n| Node::new(n, NodeKind::Dir)).collect() };
            prop_assert_eq!(Tree::decode(&t.encode(), "t").unwrap(), t);
        }
    }

    #[test]
    fn unknown_node_type_says_newer() {
        let e =
            Tree::decode(br#"{"nodes":[{"name":"a","type":"hologram"}]}"#, "tree x").unwrap_err();
        assert!(e.to_string().contains("newer ledgervault"), "{e}");
        let e = Snapshot::decode(br#"{"version":9}"#, "snapshots/x").unwrap_err();
        assert!(matches!(e, Error::NewerFormat { .. }));
    }
}
