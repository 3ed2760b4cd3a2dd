//! PostgreSQL on the command line: `backup postgres://…`, `restore …
//! --target postgres://…`, and the sources verify drills.

use anyhow::{anyhow, bail, Result};
use ledgervault_postgres::restore::RestoreOptions as PgRestoreOptions;
use ledgervault_postgres::{database_exists, restore_dump, PgTarget};
use ledgervault_repo::{self as engine, Id, Repository, Snapshot};
use ledgervault_service::db::{CaptureOptions, DatabaseKind, Postgres};
use serde_json::json;

use crate::args::RestoreArgs;
use crate::commands::{safety_snapshot, Globals};
use crate::ui::{self, exit};

/// Whether a snapshot source is a PostgreSQL dump.
pub fn is_pg_source(s: &engine::Source) -> bool {
    s.node
        .database
        .as_ref()
        .is_some_and(|d| d.engine == "postgresql")
}

/// `restore SNAPSHOT --target postgres://…`.
pub fn restore(
    g: &Globals,
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    a: &RestoreArgs,
) -> Result<i32> {
    let url = a.target.to_string_lossy().to_string();
    let target = PgTarget::parse(&url)?;
    let dumps: Vec<&engine::Source> = snap
        .sources
        .iter()
        .filter(|s| is_pg_source(s))
        .filter(|s| {
            a.include.is_empty()
                || a.include
                    .iter()
                    .any(|i| i.to_string_lossy().trim_matches('/') == s.name)
        })
        .collect();
    let src = match dumps.as_slice() {
        [one] => *one,
        [] => bail!(
            "snapshot {} holds no PostgreSQL database{}",
            id.short(),
            if a.include.is_empty() {
                ""
            } else {
                " under --include"
            }
        ),
        many => bail!(
            "snapshot {} holds {} PostgreSQL databases ({}); choose one with --include",
            id.short(),
            many.len(),
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let info = src.node.database.as_deref().cloned().unwrap_or_default();
    let index = repo.load_index()?;

    if a.globals {
        let gname = src.name.trim_end_matches(".sql").to_string() + ".globals.sql";
        let Some(gsrc) = snap.sources.iter().find(|s| s.name == gname) else {
            bail!(
                "snapshot {} holds no roles for {} (back up with --globals to save them)",
                id.short(),
                src.name
            );
        };
        restore_globals(repo, &index, gsrc, &target)?;
    }

    let mut safety = None;
    if database_exists(&target)? {
        if !a.force {
            bail!(
                "database {:?} exists on {}; add --force to replace it (a pre-restore safety snapshot of it is taken first)",
                target.dbname,
                target.server()
            );
        }
        let s = safety_snapshot(
            g,
            repo,
            DatabaseKind::capture(
                &Postgres,
                std::path::Path::new(&url),
                &CaptureOptions {
                    timeout: std::time::Duration::from_secs(60),
                    globals: false,
                },
            )?,
            crate::commands::PRE_RESTORE_TAG,
            format!(
                "safety snapshot before restoring snapshot {} over {}",
                id.short(),
                target
            ),
            &target.to_string(),
        )?;
        safety = Some(s);
        if !g.quiet && !g.json {
            println!(
                "safety snapshot {} of the current {} saved (tag pre-restore)",
                s.short(),
                target
            );
        }
    }
    let mut reader = engine::node_reader(repo, &index, &src.node)?;
    let r = restore_dump(
        &target,
        &mut reader,
        &info.settings,
        &PgRestoreOptions {
            force: a.force,
            no_owner: a.no_owner,
        },
    )?;
    if g.json {
        g.print_json(&json!({
            "snapshot_id": id, "database": r.database, "server": r.server,
            "replaced": r.replaced, "closed_connections": r.closed_connections,
            "bytes": r.bytes, "safety_snapshot": safety, "duration_secs": r.duration_secs,
        }));
    } else if !g.quiet {
        println!(
            "restored {} from snapshot {} to {target} ({} of SQL) in {}{}",
            src.name,
            id.short(),
            ui::size(r.bytes),
            ui::secs(r.duration_secs),
            if r.replaced {
                format!(
                    "; it replaced the old database ({} open connection{} closed)",
                    r.closed_connections,
                    if r.closed_connections == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        );
    }
    Ok(exit::OK)
}

/// Runs the saved roles script against the server; roles that already
/// exist are left as they are.
fn restore_globals(
    repo: &Repository,
    index: &engine::Index,
    src: &engine::Source,
    target: &PgTarget,
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
