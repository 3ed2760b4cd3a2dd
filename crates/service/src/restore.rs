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
    // A link (even one pointing nowhere) is never restored through.
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{}: is a symbolic link; a database is never placed through one",
            target.display()
        );
    }
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
        // Only what the safety snapshot covers may be replaced: a file
        // that appears at the target while the restore runs is left alone.
        place_restored(
            &scratch.join(name),
            &target,
            BUSY_TIMEOUT,
            record,
            req.full_check,
            safety.is_some(),
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

/// One database out of a snapshot, to a database server.
#[derive(Debug, Clone)]
pub struct ServerRestore {
    /// The address to restore to (`postgres://…/DBNAME`).
    pub target: String,
    /// Another database on the same server, instead of the address's own.
    pub database: Option<String>,
    /// Names of the snapshot's sources to choose from (empty: any).
    pub include: Vec<String>,
    /// Replace the database that is there (after a safety snapshot of it).
    pub replace: bool,
    /// Leave ownership to the restoring role (PostgreSQL `--no-owner`).
    pub no_owner: bool,
    /// Restore the server's roles saved beside the dump first.
    pub roles: bool,
}

/// What a restore to a server did.
#[derive(Debug, Serialize)]
pub struct ServerRestored {
    pub snapshot_id: Id,
    /// The snapshot source restored.
    pub source: String,
    /// The database's name on the server.
    pub database: String,
    pub server: String,
    /// An existing database was replaced.
    pub replaced: bool,
    /// Connections to the old database closed for the swap.
    pub closed_connections: u64,
    pub bytes: u64,
    /// The snapshot of what was there before.
    pub safety_snapshot: Option<Id>,
    pub duration_secs: f64,
}

/// Restores the one database of snapshot `id` that the kind of
/// `req.target` holds (among `req.include` when given) to that address.
pub fn restore_to_address(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    req: &ServerRestore,
    take_safety: &mut TakeSafety<'_>,
    progress: &dyn Progress,
) -> Result<ServerRestored> {
    let kind = crate::db::by_address(&req.target).ok_or_else(|| {
        anyhow!(
            "{} is not the address of a database server",
            crate::redact::url(&req.target)
        )
    })?;
    let found: Vec<&engine::Source> = snap
        .sources
        .iter()
        .filter(|s| kind.holds(s))
        .filter(|s| req.include.is_empty() || req.include.contains(&s.name))
        .collect();
    let src = match found.as_slice() {
        [one] => *one,
        [] => bail!(
            "snapshot {} holds no {} database{}",
            id.short(),
            kind.name(),
            if req.include.is_empty() {
                ""
            } else {
                " under --include"
            }
        ),
        many => bail!(
            "snapshot {} holds {} {} databases ({}); choose one with --include",
            id.short(),
            many.len(),
            kind.name(),
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let from = crate::db::ScratchFrom {
        repo,
        id,
        snapshot: snap,
        source: src,
        progress,
    };
    kind.restore_to_address(&from, req, take_safety)
}

/// PostgreSQL: the dump replayed into a temporary database, renamed over
/// the target in one transaction (see `ledgervault_postgres::restore`).
pub(crate) fn restore_postgres(
    from: &crate::db::ScratchFrom<'_>,
    req: &ServerRestore,
    take_safety: &mut TakeSafety<'_>,
) -> Result<ServerRestored> {
    use ledgervault_postgres::restore::RestoreOptions as PgRestoreOptions;
    use ledgervault_postgres::{database_exists, restore_dump, PgTarget};
    let (repo, id, snap, src) = (from.repo, from.id, from.snapshot, from.source);
    let target = PgTarget::parse(&req.target)?;
    let target = match &req.database {
        Some(name) => target.with_dbname(name),
        None => target,
    };
    let info = src.node.database.as_deref().cloned().unwrap_or_default();
    let index = repo.load_index()?;
    if req.roles {
        let gname = src.name.trim_end_matches(".sql").to_string() + ".globals.sql";
        let Some(gsrc) = snap.sources.iter().find(|s| s.name == gname) else {
            bail!(
                "snapshot {} holds no roles for {} (back up with --globals to save them)",
                id.short(),
                src.name
            );
        };
        restore_roles(repo, &index, gsrc, &target)?;
    }
    let mut safety = None;
    if database_exists(&target)? {
        if !req.replace {
            bail!(
                "database {:?} exists on {}; add --force to replace it (a pre-restore safety snapshot of it is taken first)",
                target.dbname,
                target.server()
            );
        }
        if req.database.is_some() {
            bail!(
                "database {:?} exists on {}; nothing is restored over it here",
                target.dbname,
                target.server()
            );
        }
        let sources = crate::db::Postgres.capture(
            Path::new(&req.target),
            &crate::db::CaptureOptions {
                timeout: Duration::from_secs(60),
                globals: false,
            },
        )?;
        let reason = format!(
            "safety snapshot before restoring snapshot {} over {}",
            id.short(),
            target
        );
        safety = Some(take_safety(
            sources,
            reason,
            Path::new(&target.to_string()),
        )?);
    }
    let mut reader = from.reader(&index)?;
    let r = restore_dump(
        &target,
        &mut reader,
        &info.settings,
        &PgRestoreOptions {
            force: req.replace,
            no_owner: req.no_owner,
        },
    )?;
    Ok(ServerRestored {
        snapshot_id: id,
        source: src.name.clone(),
        database: r.database,
        server: r.server,
        replaced: r.replaced,
        closed_connections: r.closed_connections,
        bytes: r.bytes,
        safety_snapshot: safety,
        duration_secs: r.duration_secs,
    })
}

/// Runs the saved roles script against the server; roles that already
/// exist are left as they are.
fn restore_roles(
    repo: &Repository,
    index: &engine::Index,
    src: &engine::Source,
    target: &ledgervault_postgres::PgTarget,
) -> Result<()> {
    use std::io::Read;
    let mut text = String::new();
    engine::node_reader(repo, index, &src.node)?.read_to_string(&mut text)?;
    let mut admin = ledgervault_postgres::restore::admin(target)?;
    let mut failed = Vec::new();
    for stmt in text.lines().filter(|l| {
        let l = l.trim_start();
        l.starts_with("CREATE ROLE") || l.starts_with("ALTER ROLE") || l.starts_with("GRANT ")
    }) {
        if let Err(e) = admin.batch_execute(stmt) {
            let msg = ledgervault_postgres::conn::one_line(&e);
            if !msg.contains("already exists") {
                failed.push(msg);
            }
        }
    }
    if let Some(f) = failed.first() {
        return Err(anyhow!(
            "restoring the roles failed ({} statement(s)); the first: {f}",
            failed.len()
        ));
    }
    Ok(())
}
