//! `verify`: restore drills.
//!
//! A drill restores a snapshot's databases (or every source) into a fresh
//! scratch folder, never the live path, and runs the checks of
//! `ledgervault_sources::drill` on every database image it restored. The
//! restore is timed: that is the firm's recovery time. The report is stored
//! in the repository as a mark (`drill_passed` / `drill_failed`), and the
//! scratch folder is removed, whatever happened.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;
use ledgervault_repo::{
    self as engine, Id, Mark, MarkKind, Node, NodeKind, RestoreOptions, Snapshot, SourceKind,
};
use ledgervault_sources::drill::{builtin_checks, drill_sqlite, CheckOutcome, SqlCheck};
use serde::Serialize;
use serde_json::json;

use crate::args::VerifyArgs;
use crate::commands::Globals;
use crate::config::CustomCheck;
use crate::ui::{self, exit, Bar};

/// What a drill checked on one restored source.
#[derive(Debug, Serialize)]
struct SourceReport {
    name: String,
    path: String,
    kind: SourceKind,
    checks: Vec<DbReport>,
}

/// The checks on one restored database (or the restore of plain files).
#[derive(Debug, Serialize)]
struct DbReport {
    /// Path inside the snapshot, as `ls` shows it.
    path: String,
    checks: Vec<CheckOutcome>,
}

/// The drill report, stored with the mark.
#[derive(Debug, Serialize)]
struct DrillReport {
    snapshot: Id,
    snapshot_time: chrono::DateTime<Utc>,
    started: chrono::DateTime<Utc>,
    passed: bool,
    /// Seconds to restore: the recovery time.
    restore_secs: f64,
    total_secs: f64,
    restored_files: u64,
    restored_bytes: u64,
    /// Files the restore refused because their stored data is damaged.
    damaged: Vec<engine::FileError>,
    sources: Vec<SourceReport>,
    checks_run: usize,
    checks_failed: usize,
}

/// Every database image under `node` (at `path` inside the snapshot).
fn databases(
    repo: &engine::Repository,
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

pub fn verify(g: &Globals, a: VerifyArgs) -> Result<i32> {
    let config = g.config()?;
    let repo = g.open()?;
    if let Some(age) = a.if_older_than {
        let states = repo.snapshot_states()?;
        let last = states.values().filter_map(|s| s.drill_passed).max();
        if let Some(t) = last.filter(|t| Utc::now() - *t < age) {
            let days = (Utc::now() - t).num_hours() as f64 / 24.0;
            if g.json {
                g.print_json(&json!({"skipped": true, "last_passed": t}));
            } else if !g.quiet {
                println!(
                    "skipped: the last restore drill passed {days:.1} days ago ({}), within --if-older-than",
                    t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
                );
            }
            return Ok(exit::OK);
        }
    }
    let _lock = g.read_lock(&repo, "verify")?;
    let (id, snap) = if a.snapshot == "latest" {
        latest_backup(&repo)?
    } else {
        repo.find_snapshot(&a.snapshot)?
    };
    let selected: Vec<&engine::Source> = {
        let dbs: Vec<&engine::Source> = snap
            .sources
            .iter()
            .filter(|s| crate::commands::is_database(s))
            .collect();
        if a.all_sources || dbs.is_empty() {
            snap.sources.iter().collect()
        } else {
            dbs
        }
    };
    let scratch_root = a
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
        g,
        &repo,
        id,
        &snap,
        &selected,
        scratch.path(),
        a.threads,
        &config.verify.checks,
        a.scratch_server
            .as_deref()
            .or(config.verify.scratch_postgres.as_deref()),
        config.client.root.as_deref(),
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
    print_report(g, &report);
    Ok(if report.passed {
        exit::OK
    } else if !report.damaged.is_empty() {
        exit::DAMAGED
    } else {
        exit::DRILL_FAILED
    })
}

/// `latest` for a drill: the newest snapshot that is a backup, passing over
/// the safety snapshots restores take and client archives (a drill is about
/// the firm's books); the newest of any kind when there is no other.
fn latest_backup(repo: &engine::Repository) -> Result<(Id, engine::Snapshot)> {
    let found = crate::commands::newest_snapshot(repo, |s| {
        !crate::commands::is_safety_snapshot(s)
            && !s.tags.iter().any(|t| t == crate::client::ARCHIVE_TAG)
    })?;
    match found {
        Some(f) => Ok(f),
        None => Ok(repo.find_snapshot("latest")?),
    }
}

#[allow(clippy::too_many_arguments)]
fn drill(
    g: &Globals,
    repo: &engine::Repository,
    id: Id,
    snap: &Snapshot,
    selected: &[&engine::Source],
    scratch: &Path,
    threads: Option<u32>,
    custom: &[CustomCheck],
    scratch_server: Option<&str>,
    client_table: Option<&str>,
) -> Result<DrillReport> {
    let started_at = Utc::now();
    let started = Instant::now();
    // PostgreSQL dumps are restored into a scratch database instead.
    let mut opts = RestoreOptions {
        include: selected
            .iter()
            .filter(|s| !crate::pg::is_pg_source(s))
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
        let bar = Bar::new(g.quiet || g.json, "restore drill");
        let restored = engine::restore(repo, id, snap, scratch, &opts, &bar);
        drop(bar);
        match restored {
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
        if crate::pg::is_pg_source(src) {
            let info = src.node.database.as_deref().cloned().unwrap_or_default();
            let server = match scratch_server {
                Some(u) => ledgervault_postgres::PgTarget::parse(u)?,
                None => ledgervault_postgres::PgTarget::parse(&src.path)?,
            };
            let mut checks = builtin.clone();
            checks.extend(custom_checks(custom, &src.name));
            let t = Instant::now();
            let mut reader = engine::node_reader(repo, &index, &src.node)?;
            let d = ledgervault_postgres::drill::drill_postgres(
                &server,
                &mut reader,
                &info,
                &checks,
                client_table,
            )?;
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
                    path: format!(
                        "{} (scratch database {} on {})",
                        src.name, d.scratch, d.server
                    ),
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

fn print_report(g: &Globals, r: &DrillReport) {
    if g.json {
        g.print_json(&serde_json::to_value(r).expect("report serializes"));
        return;
    }
    let mut failures = Vec::new();
    for s in &r.sources {
        for d in &s.checks {
            for c in &d.checks {
                if !g.quiet {
                    println!(
                        "  {} {}: {}{}",
                        if c.passed { "ok  " } else { "FAIL" },
                        d.path,
                        c.name,
                        if c.detail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", c.detail)
                        }
                    );
                }
                if !c.passed {
                    failures.push((d.path.clone(), c));
                }
            }
        }
    }
    if r.passed {
        if !g.quiet {
            println!(
                "restore drill PASSED for snapshot {} ({}): {} checks passed; restoring {} took {} (your recovery time), the whole drill {}",
                r.snapshot.short(),
                r.snapshot_time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M"),
                r.checks_run,
                ui::size(r.restored_bytes),
                ui::secs(r.restore_secs),
                ui::secs(r.total_secs)
            );
        }
        return;
    }
    for (path, c) in &failures {
        eprintln!(
            "ledgervault: drill check failed: {path}: {}: {}",
            c.name, c.detail
        );
        for row in &c.rows {
            eprintln!("    {}", row.join(" | "));
        }
    }
    eprintln!(
        "ledgervault: restore drill FAILED for snapshot {}: {} of {} checks failed; `--json` gives the full report",
        r.snapshot.short(),
        r.checks_failed.max(usize::from(!r.damaged.is_empty())),
        r.checks_run
    );
}
