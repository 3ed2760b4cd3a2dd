//! The ledgervault repository engine.
//!
//! An encrypted, deduplicated, compressed store of snapshots, on any storage
//! that implements the small [`Backend`] trait. This crate owns the on-disk
//! format (described byte by byte in `docs/FORMAT.md`), the crypto, chunking,
//! packing and indexing, and the operations built on them: backup, restore
//! and check. It has no command line, async runtime or web server in it;
//! operations take option structs, report through a [`Progress`], and return
//! summaries.
//!
//! ```
//! use std::sync::Arc;
//! use ledgervault_repo::{backup, BackupOptions, BackupSource, InitOptions, KdfParams, MemoryBackend, NoProgress, Repository};
//!
//! let backend = Arc::new(MemoryBackend::new());
//! let opts = InitOptions { kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, ..Default::default() };
//! let repo = Repository::init(backend, b"secret", &opts).unwrap();
//! let src = BackupSource::Stream { name: "ledger.csv".into(), reader: Box::new(&b"date,amount\n"[..]), origin: None };
//! let summary = backup(&repo, vec![src], &BackupOptions::default(), &NoProgress).unwrap();
//! assert_eq!(summary.bytes_read, 12);
//! ```

mod backend;
mod backup;
mod check;
mod chunker;
mod chunkmap;
mod compress;
mod config;
mod confine;
mod copy;
mod crypto;
mod envelope;
mod error;
mod fault;
#[doc(hidden)]
pub mod forge;
mod frames;
#[doc(hidden)]
pub mod fuzz;
mod guard;
mod id;
mod idbatch;
mod immutable;
mod index;
mod keyfile;
mod lock;
mod marks;
mod name;
mod pack;
mod progress;
mod prune;
mod redact;
mod repair;
mod repository;
mod restore;
mod retention;
mod snapshot;
mod stats;

pub use backend::{
    short_object, AppendOnlyBackend, Backend, BackendError, BackendErrorKind, BackendResult,
    MemoryBackend, ObjectInfo, Retention,
};
pub use backup::LOCKED as DATABASE_LOCKED;
pub use backup::{
    backup, BackupOptions, BackupSource, BackupSummary, DbCapture, DbDump, DbOpener, FileError,
    PathFilter, READ_AHEAD,
};
pub use check::{check, CheckReport, ReadData};
pub use chunker::{CdcParams, Chunker, ChunkerKind, SharedChunk};
pub use chunkmap::{ChunkMap, LayerKind, MapLayer};
pub use config::{RepoConfig, CONFIG_PATH};
pub use confine::rename_no_replace;
pub use copy::{copy, CopiedSnapshot, CopyOptions, CopyReport};
pub use crypto::KdfParams;
pub use envelope::FileKind;
pub use error::{Error, Result};
pub use fault::{FaultOn, FaultyBackend};
pub use guard::{looks_random, well_formed_page, GuardOptions, DEFAULT_SUSPECT_SHARE};
pub use id::Id;
pub use immutable::{lock_window, slack_days, ImmutableBackend};
pub use index::Index;
pub use lock::{
    list_locks, lock, read_lock, remove_locks, FoundLock, LockGuard, LockInfo, STALE_AFTER,
};
pub use marks::{Mark, MarkKind, SnapshotState};
pub use name::{escape_bytes, shown, FsName};
pub use progress::{NoProgress, Progress};
pub use prune::{prune, PruneOptions, PruneReport};
pub use redact::redact_url;
pub use repair::{
    repair_index, repair_snapshots, DamagedPack, RepairIndexReport, RepairOptions,
    RepairSnapshotsReport, RepairedSnapshot,
};
pub use repository::{pack_path, Found, InitOptions, KeyInfo, Repository, UnlockedAhead};
pub use restore::{node_reader, restore, DbPlacer, NodeReader, RestoreOptions, RestoreSummary};
pub use retention::{forget, plan, Decision, ForgetOptions, ForgetReport, Guards, Policy};
pub use snapshot::{
    DatabaseInfo, Node, NodeKind, Snapshot, SnapshotTotals, Source, SourceKind, SourceSummary,
    TableStat, Tree, SNAPSHOT_VERSION,
};
pub use stats::{growth_now, human_size, stats, Growth, RepoStats, SourceStat};

/// The repository format version this ledgervault writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The user running ledgervault.
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid{}", unsafe { libc::getuid() })
        })
}
