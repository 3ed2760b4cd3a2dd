//! `restore … --target postgres://…`: the command line's side of a restore
//! to a database server (`ledgervault_service::restore::restore_to_address`):
//! the arguments, the safety snapshot's note, the result printed.

use std::path::Path;

use anyhow::Result;
use ledgervault_repo::{BackupSource, Id, Repository, Snapshot};
use ledgervault_service::restore::{restore_to_address, ServerRestore};

use crate::args::RestoreArgs;
use crate::commands::{safety_snapshot, Globals, PRE_RESTORE_TAG};
use crate::ui::{self, exit};

pub fn restore(
    g: &Globals,
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    a: &RestoreArgs,
) -> Result<i32> {
    let req = ServerRestore {
        target: a.target.to_string_lossy().into_owned(),
        database: None,
        include: a
            .include
            .iter()
            .map(|i| i.to_string_lossy().trim_matches('/').to_string())
            .collect(),
        replace: a.force,
        no_owner: a.no_owner,
        roles: a.globals,
    };
    let mut take_safety = |sources: Vec<BackupSource>, reason: String, target: &Path| {
        let what = target.display().to_string();
        let s = safety_snapshot(g, repo, sources, PRE_RESTORE_TAG, reason, &what)?;
        if !g.quiet && !g.json {
            println!(
                "safety snapshot {} of the current {what} saved (tag pre-restore)",
                s.short()
            );
        }
        Ok(s)
    };
    // No bar: the safety snapshot before the restore prints its own lines.
    let r = restore_to_address(
        repo,
        id,
        snap,
        &req,
        &mut take_safety,
        &ledgervault_repo::NoProgress,
    )?;
    if g.json {
        g.print_json(&serde_json::to_value(&r)?);
    } else if !g.quiet {
        println!(
            "restored {} from snapshot {} to {} ({} of SQL) in {}{}",
            r.source,
            id.short(),
            crate::redact::url(&req.target),
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
