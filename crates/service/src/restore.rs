//! Restoring one database (SQLite) out of a snapshot: to a new file, put
//! in place only once it is checked, or over the live database, after a
//! `pre-restore` safety snapshot of it, through SQLite's backup API so
//! that open connections see the restored books. The caller holds a read
//! lock on the repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use ledgervault_repo::{
    self as engine, BackupOptions, BackupSource, Error, Id, Progress, Repository, RestoreOptions,
    Snapshot,
};
use ledgervault_sources::place_restored;
use serde::Serialize;

use crate::backup::Verdict;
use crate::db::{sqlite_source, DatabaseKind, Sqlite};

/// How long a restore waits for a database another process holds.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes a safety snapshot of `sources`, tagged `tag`, before work that
/// replaces what they hold. A suspect one still counts (the data about to
/// be replaced may well be what an attack left: that is why it is being
/// restored); one that could not read everything stops the work.
pub fn safety_snapshot(
    repo: &Repository,
    sources: Vec<BackupSource>,
    tag: &str,
    reason: String,
    what: &str,
    exclude: Option<PathBuf>,
    progress: &dyn Progress,
) -> Result<Id> {
    let mut opts = BackupOptions {
        tags: vec![tag.to_string()],
        reason: Some(reason),
        ..Default::default()
    };
    opts.exclude.extend(exclude);
    let o = crate::backup::run(repo, sources, opts, progress)?;
    if o.verdict == Verdict::Incomplete {
        let unread: Vec<String> = o
            .summary
            .errors
            .iter()
            .take(3)
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        bail!(
            "the safety snapshot {} of {what} is not clean (not read: {}); nothing was restored",
            o.summary.snapshot_id.short(),
            unread.join("; ")
        );
    }
    Ok(o.summary.snapshot_id)
}

/// Takes the safety snapshot of what a restore replaces: its sources, the
/// reason, the path; returns the snapshot's id.
pub type TakeSafety<'a> = dyn FnMut(Vec<BackupSource>, String, &Path) -> Result<Id> + 'a;

/// One database out of a snapshot, to a file.
#[derive(Debug, Clone)]
pub struct DbRestore {
    /// The snapshot source (or path inside the snapshot) holding the image.
    pub database: String,
    /// The file to write; a folder gets the database's name inside it.
    pub target: PathBuf,
    /// Replace the database that is there (after a safety snapshot of it).
    pub replace: bool,
    /// Run SQLite's full `integrity_check` (slower) instead of the quick one.
    pub full_check: bool,
    /// Never back up the repository into itself (a local one's folder).
    pub exclude: Option<PathBuf>,
}

/// What a database restore did.
#[derive(Debug, Serialize)]
pub struct DbRestored {
    pub snapshot_id: Id,
    pub database: String,
    pub target: PathBuf,
    /// The check the restored image passed.
    pub check: &'static str,
    /// The live database was replaced (open connections see the data).
    pub replaced_live: bool,
    /// The snapshot of what was there before.
    pub safety_snapshot: Option<Id>,
    /// Stale `-wal`, `-shm` or `-journal` files removed.
    pub removed_stale: Vec<PathBuf>,
    pub duration_secs: f64,
}

/// Restores the database image `req.database` of snapshot `id` to
/// `req.target`. Over an existing database, `take_safety` first takes the
/// safety snapshot of it (its sources, the reason, the path), as the front
/// end does it: the command line shows that backup's warnings as a backup
/// does, the console reports them in the task.
pub fn restore_database(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    req: &DbRestore,
    mut opts: RestoreOptions,
    progress: &dyn Progress,
    take_safety: &mut TakeSafety<'_>,
) -> Result<DbRestored> {
    let started = std::time::Instant::now();
    let name = req.database.as_str();
    let mut target = req.target.clone();
    if target.is_dir() {
        target = target.join(name);
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("the target folder {} does not exist", parent.display());
    }
    let mut safety = None;
    if target.exists() {
        if !req.replace {
            bail!(
                "{} exists; add --force to replace it (a pre-restore safety snapshot of it is taken first)",
                target.display()
            );
        }
        if !Sqlite.is_file(&target) {
            bail!(
                "{} exists and is not a SQLite database; refusing to replace it",
                target.display()
            );
        }
        let src = sqlite_source(&target, BUSY_TIMEOUT)?;
        let reason = format!(
            "safety snapshot before restoring snapshot {} over {}",
            id.short(),
            target.display()
        );
        safety = Some(take_safety(vec![src], reason, &target)?);
    }
    let scratch = parent.join(format!(".ledgervault-restore-{}", std::process::id()));
    opts.include = vec![name.into()];
    // The image lands in the private scratch folder as a plain file and is
    // checked once, by place_restored below.
    opts.db_placer = None;
    let result = (|| -> Result<ledgervault_sources::Placed> {
        let s = engine::restore(repo, id, snap, &scratch, &opts, progress)?;
        if let Some(f) = s.failed.first() {
            return Err(anyhow::Error::new(Error::corrupt(
                f.path.clone(),
                f.message.clone(),
            )));
        }
        let record = snap
            .sources
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.node.database.as_deref());
        place_restored(
            &scratch.join(name),
            &target,
            BUSY_TIMEOUT,
            record,
            req.full_check,
        )
        .map_err(|e| anyhow!(e))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let placed = result?;
    Ok(DbRestored {
        snapshot_id: id,
        database: name.to_string(),
        target,
        check: placed.check,
        replaced_live: placed.replaced_live,
        safety_snapshot: safety,
        removed_stale: placed.removed_stale,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}
