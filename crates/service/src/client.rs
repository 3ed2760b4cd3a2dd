//! One client's books: listing the clients of a firm database, and
//! restoring one client out of a snapshot into a firm database (the same
//! one or another), after a dry run if the caller wants one. The snapshot
//! is a client archive, or a whole firm's database that is copied into
//! scratch space (through its [`DatabaseKind`]) to take the client out.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ledgervault_repo::{self as engine, Id, Progress, Repository, Snapshot};
use ledgervault_sources::drill::builtin_checks;
use ledgervault_tenant::sql::{Db, Value};
use ledgervault_tenant::{
    export, find_client, import_telling, list_clients, Archive, ClientInfo, ImportOptions,
    ImportReport, Mode, TenantConfig, TenantMap,
};
use serde::Serialize;

use crate::db::{self, CaptureOptions, ScratchFrom};
use crate::drill::{is_database, is_safety_snapshot, CLIENT_ARCHIVE_TAG};
use crate::restore::TakeSafety;

/// Builds the tenant map of the database at `spec`.
pub fn open_map(db: &dyn Db, config: &TenantConfig, spec: &str) -> Result<TenantMap> {
    TenantMap::build(db, config).with_context(|| crate::redact::url(spec))
}

/// The clients of the firm database at `spec`, and its tenant map.
pub fn clients(spec: &str, config: &TenantConfig) -> Result<(Vec<ClientInfo>, TenantMap)> {
    let kind = db::of_target(spec)?;
    let (db, _) = kind.open_sql(spec, false)?;
    let map = open_map(db.as_ref(), config, spec)?;
    let clients = list_clients(db.as_ref(), &map)?;
    Ok((clients, map))
}

/// Restore one client.
#[derive(Debug, Clone)]
pub struct ClientRestore {
    /// `latest`, or a snapshot id (or its prefix).
    pub snapshot: String,
    /// The client's key or code or name, as `find_client` takes it.
    pub client: String,
    /// The firm database to restore into: a SQLite file or an address.
    pub into: String,
    pub mode: Mode,
    /// Values to set on the client's root row.
    pub set: Vec<(String, Value)>,
    /// With [`Mode::Replace`]: replace this other client of the target.
    pub replace_other: Option<Value>,
    /// Plan only: nothing is changed and no safety snapshot is taken.
    pub dry_run: bool,
    /// Which database of a firm snapshot holding several.
    pub database: Option<String>,
}

/// What a client restore did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRestored {
    pub from_snapshot: Id,
    /// The import's own report (its `dry_run` says whether it was a plan).
    #[serde(flatten)]
    pub report: ImportReport,
    /// The snapshot of the target as it was, taken before any change.
    pub safety_snapshot: Option<Id>,
    pub import_secs: f64,
}

/// `latest` for a client restore: the newest snapshot that can supply a
/// client (a client archive, or a snapshot holding a database, `database`
/// when given), passing over the safety snapshots restores take of their
/// targets: after restoring one client, "latest" would otherwise be the
/// target firm as it was, not the backup the person means.
pub fn latest_source(repo: &Repository, database: Option<&str>) -> Result<(Id, Snapshot)> {
    let (all, _damaged) = repo.snapshots()?;
    all.into_iter()
        .rev()
        .find(|(_, s)| {
            !is_safety_snapshot(s)
                && (s.tags.iter().any(|t| t == CLIENT_ARCHIVE_TAG)
                    || s.sources
                        .iter()
                        .any(|src| is_database(src) && database.is_none_or(|d| d == src.name)))
        })
        .ok_or_else(|| {
            anyhow!(
                "no snapshot holds a client archive or {}: back one up first",
                database
                    .map(|d| format!("a database named {d}"))
                    .unwrap_or_else(|| "a database".into())
            )
        })
}

/// Reads the archive of `client` out of a client archive snapshot, or
/// exports the client out of a firm snapshot's database copied into
/// scratch space (on the target's server when both are servers). Of a
/// snapshot holding several databases, `database` names the one, or else
/// the one backed up from `origin` (the target, as snapshots name it) is
/// taken. The caller holds a read lock.
#[allow(clippy::too_many_arguments)]
pub fn archive_from_snapshot(
    repo: &Repository,
    spec: &str,
    client: &str,
    database: Option<&str>,
    origin: Option<&str>,
    into: &str,
    config: &TenantConfig,
    note: &dyn Fn(String),
    progress: &dyn Progress,
) -> Result<(Id, Archive)> {
    let (id, snap) = if spec == "latest" {
        latest_source(repo, database)?
    } else {
        repo.find_snapshot(spec)?
    };
    if snap.tags.iter().any(|t| t == CLIENT_ARCHIVE_TAG) {
        let src = snap
            .sources
            .first()
            .ok_or_else(|| anyhow!("snapshot {} holds no archive", id.short()))?;
        let scratch = tempfile::Builder::new()
            .prefix("ledgervault-client-")
            .tempdir()
            .context("cannot make a scratch folder")?;
        let from = ScratchFrom {
            repo,
            id,
            snapshot: &snap,
            source: src,
            progress,
        };
        db::restore_sources(&from, std::slice::from_ref(&src.name), scratch.path())?;
        let mut bytes = Vec::new();
        std::fs::File::open(scratch.path().join(&src.name))?.read_to_end(&mut bytes)?;
        let a = Archive::decode(&bytes)?;
        if !a.is_client(client) {
            bail!(
                "snapshot {} is the archive of client {} ({}), not {client:?}",
                id.short(),
                a.client,
                a.label
            );
        }
        return Ok((id, a));
    }
    let dbs: Vec<&engine::Source> = snap
        .sources
        .iter()
        .filter(|s| is_database(s))
        .filter(|s| database.is_none_or(|d| d == s.name))
        .collect();
    // Several: the one backed up from the target itself, if it is one.
    let same: Vec<&engine::Source> = dbs
        .iter()
        .copied()
        .filter(|s| origin.is_some_and(|o| o == s.path))
        .collect();
    let src = match (dbs.as_slice(), same.as_slice()) {
        ([one], _) | (_, [one]) => *one,
        ([], _) => bail!(
            "snapshot {} holds no {}database and is not a client archive",
            id.short(),
            database.map(|d| format!("{d} ")).unwrap_or_default()
        ),
        _ => bail!(
            "snapshot {} holds several databases ({}); choose one (--database NAME)",
            id.short(),
            dbs.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let kind = db::of_source(src).ok_or_else(|| {
        anyhow!(
            "{} in snapshot {} is a database of a kind this version cannot read",
            src.name,
            id.short()
        )
    })?;
    let from = ScratchFrom {
        repo,
        id,
        snapshot: &snap,
        source: src,
        progress,
    };
    let mut archive = None;
    kind.with_scratch_copy(
        &from,
        Some(into),
        &|m| note(format!("{m} to take client {client:?} out of it")),
        &mut |db| {
            let map = open_map(db, config, &src.name)?;
            let (key, _) = find_client(db, &map, client)?;
            archive = Some(export(db, &map, &key, kind.engine())?);
            Ok(())
        },
    )?;
    Ok((id, archive.expect("the work ran")))
}

/// Restores one client (or plans it, with `dry_run`). Refusals that need
/// no work (schemas that differ, a client already there) come before the
/// safety snapshot, which `take_safety` takes of the target before any
/// change. The archive is read under a read lock taken here.
pub fn restore_client(
    repo: &Repository,
    req: &ClientRestore,
    config: &TenantConfig,
    note: &dyn Fn(String),
    take_safety: &mut TakeSafety<'_>,
    progress: &dyn Progress,
) -> Result<ClientRestored> {
    let kind = db::of_target(&req.into)?;
    let (target, origin) = kind.open_sql(&req.into, true)?;
    let target = target.as_ref();
    // The repository is read under a read lock (so prune deletes nothing
    // the archive comes from), released before the target is touched: the
    // import needs nothing from the repository, and a failure to remove
    // the lock must not follow a committed import.
    let (from, archive) = {
        let lock = engine::read_lock(repo, "client restore")?;
        if lock.is_none() {
            note(format!(
                "cannot write a lock file in {} (read-only storage?); reading without one",
                repo.backend().location()
            ));
        }
        archive_from_snapshot(
            repo,
            &req.snapshot,
            &req.client,
            req.database.as_deref(),
            Some(&origin),
            &req.into,
            config,
            note,
            progress,
        )?
    };
    let map = open_map(target, config, &req.into)?;
    // The accounting invariants that apply to the target's schema.
    let invariants: Vec<(String, String)> = builtin_checks()
        .into_iter()
        .filter(|c| {
            c.applies(|t| {
                target
                    .columns(t)
                    .map(|cols| cols.into_iter().map(|c| c.name).collect())
                    .unwrap_or_default()
            })
        })
        .map(|c| (c.name, c.sql))
        .collect();
    ledgervault_tenant::preflight(
        target,
        &map,
        config,
        &archive,
        req.mode,
        req.replace_other.as_ref(),
    )?;
    let mut safety = None;
    if !req.dry_run {
        let sources = kind.capture(
            std::path::Path::new(&req.into),
            &CaptureOptions {
                timeout: Duration::from_secs(60),
                globals: false,
            },
        )?;
        let shown = crate::redact::url(&req.into);
        let reason = format!(
            "safety snapshot before restoring client {} ({}) into {shown}",
            archive.client, archive.label
        );
        safety = Some(take_safety(
            sources,
            reason,
            std::path::Path::new(&req.into),
        )?);
    }
    let started = Instant::now();
    let opts = ImportOptions {
        mode: req.mode,
        dry_run: req.dry_run,
        set: req.set.clone(),
        invariants,
        replace_other: req.replace_other.clone(),
    };
    let report = import_telling(target, &map, config, &archive, &opts, &|step, secs| {
        progress.step(&format!("{step}: {secs:.1} s"))
    })?;
    Ok(ClientRestored {
        from_snapshot: from,
        report,
        safety_snapshot: safety,
        import_secs: started.elapsed().as_secs_f64(),
    })
}

/// A value given as text: an integer when it reads as one.
pub fn value(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Text(s.to_string()),
    }
}
