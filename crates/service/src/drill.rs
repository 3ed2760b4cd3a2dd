//! Restore drills: a snapshot's databases (or every source) restored into
//! a fresh scratch folder, never the live path, the checks of
//! `ledgervault_sources::drill` run on every database restored (PostgreSQL
//! dumps into a scratch database), the restore timed (the firm's recovery
//! time), the report stored in the repository as a mark (`drill_passed` /
//! `drill_failed`), and the scratch folder removed, whatever happened.
//!
//! The caller holds a read lock on the repository for the drill (the
//! command line says when the storage takes none).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use ledgervault_repo::{
    self as engine, Id, Mark, MarkKind, Node, NodeKind, Progress, Repository, RestoreOptions,
    Snapshot, SourceKind,
};
use ledgervault_sources::drill::{builtin_checks, drill_sqlite, CheckOutcome, SqlCheck};
use serde::Serialize;

use crate::config::{Config, CustomCheck};

/// Tag of the safety snapshot a restore takes of the database it replaces.
pub const PRE_RESTORE_TAG: &str = "pre-restore";
/// Tag of the safety snapshot a client restore takes of its target.
pub const PRE_CLIENT_RESTORE_TAG: &str = "pre-client-restore";
/// Tag of a snapshot that holds one client's archive.
pub const CLIENT_ARCHIVE_TAG: &str = "client-archive";

/// Whether `s` is a safety snapshot a restore took of its target.
pub fn is_safety_snapshot(s: &Snapshot) -> bool {
    s.tags
        .iter()
        .any(|t| t == PRE_RESTORE_TAG || t == PRE_CLIENT_RESTORE_TAG)
}

/// Whether a source is a database: an image (SQLite) or a dump of a kind
/// ledgervault knows (PostgreSQL).
pub fn is_database(src: &engine::Source) -> bool {
    src.node.kind == NodeKind::DbImage || crate::db::of_source(src).is_some()
}

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    /// `latest` (the newest backup, passing over safety snapshots and
    /// client archives) or an id.
    pub snapshot: String,
    /// Every source, not only the databases.
    pub all_sources: bool,
    /// Where the scratch folder goes (default: `[verify] scratch`, else
    /// the system's temporary folder).
    pub scratch: Option<PathBuf>,
    /// A PostgreSQL server for scratch databases (default: `[verify]
    /// scratch_postgres`, else the server the dump came from).
    pub scratch_server: Option<String>,
    pub threads: Option<u32>,
}

impl Default for DrillRequest {
    fn default() -> Self {
        DrillRequest {
            snapshot: "latest".into(),
            all_sources: false,
            scratch: None,
            scratch_server: None,
            threads: None,
        }
    }
}

/// What a drill checked on one restored source.
#[derive(Debug, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub path: String,
    pub kind: SourceKind,
    pub checks: Vec<DbReport>,
}

/// The checks on one restored database (or the restore of plain files).
#[derive(Debug, Serialize)]
pub struct DbReport {
    /// Path inside the snapshot, as `ls` shows it.
    pub path: String,
    pub checks: Vec<CheckOutcome>,
}

/// The drill report, stored with the mark.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub snapshot: Id,
    pub snapshot_time: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub passed: bool,
    /// Seconds to restore: the recovery time.
    pub restore_secs: f64,
    pub total_secs: f64,
    pub restored_files: u64,
    pub restored_bytes: u64,
    /// Files the restore refused because their stored data is damaged.
    pub damaged: Vec<engine::FileError>,
    pub sources: Vec<SourceReport>,
    pub checks_run: usize,
    pub checks_failed: usize,
}

/// When the last drill passed, if that is less than `age` ago (the
/// daemon's drill runs only when none did).
pub fn passed_within(repo: &Repository, age: chrono::Duration) -> Result<Option<DateTime<Utc>>> {
    let states = repo.snapshot_states()?;
    let last = states.values().filter_map(|s| s.drill_passed).max();
    Ok(last.filter(|t| Utc::now() - *t < age))
}

/// Runs the drill `req` asks for on `repo`; the report is also stored as a
/// mark on the snapshot.
pub fn run(
    repo: &Repository,
    config: &Config,
    req: &DrillRequest,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let (id, snap) = if req.snapshot == "latest" {
        latest_backup(repo)?
    } else {
        repo.find_snapshot(&req.snapshot)?
    };
    let selected: Vec<&engine::Source> = {
        let dbs: Vec<&engine::Source> = snap.sources.iter().filter(|s| is_database(s)).collect();
        if req.all_sources || dbs.is_empty() {
            snap.sources.iter().collect()
        } else {
            dbs
        }
    };
    let scratch_root = req
        .scratch
        .clone()
        .or(config.verify.scratch.clone())
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("ledgervault-drill-")
        .tempdir_in(&scratch_root)
        .with_context(|| {
            format!(
                "cannot make a scratch folder in {} (choose another with --scratch)",
                scratch_root.display()
            )
        })?;
    let report = drill(
        repo,
        id,
        &snap,
        &selected,
        scratch.path(),
        req.threads,
        &config.verify.checks,
        req.scratch_server
            .as_deref()
            .or(config.verify.scratch_postgres.as_deref()),
        config.client.root.as_deref(),
        progress,
    )?;
    // Remove the restored copy now, not at exit: it may be the whole firm.
    let scratch_path = scratch.path().to_path_buf();
    scratch.close().with_context(|| {
        format!(
            "cannot remove the scratch folder {}",
            scratch_path.display()
        )
    })?;
    let kind = if report.passed {
        MarkKind::DrillPassed
    } else {
        MarkKind::DrillFailed
    };
    let mut mark = Mark::new(
        id,
        kind,
        Some(format!(
            "{} of {} checks passed; restore took {:.1} s",
            report.checks_run - report.checks_failed,
            report.checks_run,
            report.restore_secs
        )),
    );
    mark.report = Some(serde_json::to_value(&report)?);
    repo.add_mark(&mark)?;
    Ok(report)
}

/// The drills stored in `repo`, newest first: each mark, with the
/// snapshot it drilled.
pub fn history(repo: &Repository) -> Result<Vec<Mark>> {
    let (marks, _) = repo.marks()?;
    let mut drills: Vec<Mark> = marks
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| matches!(m.kind, MarkKind::DrillPassed | MarkKind::DrillFailed))
        .collect();
    drills.sort_by_key(|m| std::cmp::Reverse(m.time));
    Ok(drills)
}

/// `latest` for a drill: the newest snapshot that is a backup, passing over
/// the safety snapshots restores take and client archives (a drill is about
/// the firm's books); the newest of any kind when there is no other.
fn latest_backup(repo: &Repository) -> Result<(Id, Snapshot)> {
    let (all, _damaged) = repo.snapshots()?;
    let found = all
        .into_iter()
        .rev()
        .find(|(_, s)| !is_safety_snapshot(s) && !s.tags.iter().any(|t| t == CLIENT_ARCHIVE_TAG));
    match found {
        Some(f) => Ok(f),
        None => Ok(repo.find_snapshot("latest")?),
    }
}

/// Every database image under `node` (at `path` inside the snapshot).
fn databases(
    repo: &Repository,
    index: &engine::Index,
    node: &Node,
    path: String,
    out: &mut Vec<(String, Node)>,
) -> Result<()> {
    match node.kind {
        NodeKind::DbImage => out.push((path, node.clone())),
        NodeKind::Dir => {
            if let Some(t) = node.subtree {
                for c in repo.load_tree(index, &t)?.nodes {
                    let p = format!("{path}/{}", c.name);
                    databases(repo, index, &c, p, out)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The configured checks that apply to the database file `db_name`.
fn custom_checks(checks: &[CustomCheck], db_name: &str) -> Vec<SqlCheck> {
    checks
        .iter()
        .filter(|c| c.database.as_deref().is_none_or(|d| d == db_name))
        .map(|c| SqlCheck::custom(&c.name, &c.sql))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn drill(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    selected: &[&engine::Source],
    scratch: &Path,
    threads: Option<u32>,
    custom: &[CustomCheck],
    scratch_server: Option<&str>,
    client_table: Option<&str>,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let started_at = Utc::now();
    let started = Instant::now();
    // Kinds drilled on a server (PostgreSQL) are restored there instead.
    let apart = |s: &engine::Source| crate::db::of_source(s).filter(|k| k.drilled_apart());
    let mut opts = RestoreOptions {
        include: selected
            .iter()
            .filter(|s| apart(s).is_none())
            .map(|s| s.name.clone().into())
            .collect(),
        ..Default::default()
    };
    if let Some(t) = threads {
        opts.threads = t as usize;
    }
    let (files, mut bytes, damaged) = if opts.include.is_empty() {
        (0, 0, Vec::new())
    } else {
        match engine::restore(repo, id, snap, scratch, &opts, progress) {
            Ok(s) => (s.files, s.bytes, s.failed),
            Err(e) => (
                0,
                0,
                vec![engine::FileError {
                    path: "(the whole snapshot)".into(),
                    message: e.to_string(),
                }],
            ),
        }
    };
    let mut restore_secs = started.elapsed().as_secs_f64();
    let index = repo.load_index()?;
    let builtin = builtin_checks();
    let mut sources = Vec::new();
    for src in selected {
        if let Some(kind) = apart(src) {
            let mut checks = builtin.clone();
            checks.extend(custom_checks(custom, &src.name));
            let t = Instant::now();
            let from = crate::db::ScratchFrom {
                repo,
                id,
                snapshot: snap,
                source: src,
                progress,
            };
            let d = kind.drill_apart(&from, scratch_server, &checks, client_table)?;
            restore_secs += d
                .outcomes
                .first()
                .map(|o| o.secs)
                .unwrap_or_else(|| t.elapsed().as_secs_f64());
            bytes += src.node.size;
            sources.push(SourceReport {
                name: src.name.clone(),
                path: src.path.clone(),
                kind: src.kind,
                checks: vec![DbReport {
                    path: d.place,
                    checks: d.outcomes,
                }],
            });
            continue;
        }
        let mut dbs = Vec::new();
        databases(repo, &index, &src.node, src.name.clone(), &mut dbs)?;
        let mut reports = Vec::new();
        // The restore itself: every byte of every file authenticated and
        // checked against its content id.
        let broken: Vec<&engine::FileError> = damaged
            .iter()
            .filter(|f| {
                f.path == "(the whole snapshot)"
                    || f.path == src.name
                    || f.path.starts_with(&format!("{}/", src.name))
            })
            .collect();
        let t = Instant::now();
        let mut restore_check = CheckOutcome {
            name: "restore: every byte authenticated and matching its content id".into(),
            origin: "restore".into(),
            passed: broken.is_empty(),
            detail: if broken.is_empty() {
                format!("{} restored into the scratch folder", src.name)
            } else {
                format!("{} file(s) could not be restored", broken.len())
            },
            offending: broken.len() as u64,
            rows: broken
                .iter()
                .take(ledgervault_sources::drill::SAMPLE_ROWS)
                .map(|f| vec![f.path.clone(), f.message.clone()])
                .collect(),
            secs: 0.0,
        };
        restore_check.secs = t.elapsed().as_secs_f64();
        reports.push(DbReport {
            path: src.name.clone(),
            checks: vec![restore_check],
        });
        for (path, node) in dbs {
            let file = scratch.join(&path);
            if !file.is_file() {
                continue; // damaged: already reported by the restore check
            }
            let name = Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let mut checks = builtin.clone();
            checks.extend(custom_checks(custom, &name));
            let outcomes = drill_sqlite(&file, node.database.as_deref(), &checks, client_table);
            reports.push(DbReport {
                path,
                checks: outcomes,
            });
        }
        sources.push(SourceReport {
            name: src.name.clone(),
            path: src.path.clone(),
            kind: src.kind,
            checks: reports,
        });
    }
    let all: Vec<&CheckOutcome> = sources
        .iter()
        .flat_map(|s| s.checks.iter().flat_map(|d| d.checks.iter()))
        .collect();
    let failed = all.iter().filter(|c| !c.passed).count();
    Ok(DrillReport {
        snapshot: id,
        snapshot_time: snap.time,
        started: started_at,
        passed: failed == 0 && damaged.is_empty(),
        restore_secs,
        total_secs: started.elapsed().as_secs_f64(),
        restored_files: files,
        restored_bytes: bytes,
        damaged,
        checks_run: all.len(),
        checks_failed: failed,
        sources,
    })
}
