//! `forget`, `prune`, `stats` and `snapshot protect|unprotect|clear-suspect`.

use anyhow::Result;
use ledgervault_repo::{
    self as engine, ForgetOptions, Guards, Mark, MarkKind, Policy, PruneOptions, Repository,
};
use serde_json::json;

use crate::args::{ForgetArgs, PruneArgs, SnapshotCommand};
use crate::commands::Globals;
use crate::ui::{self, exit, Bar};

/// The policy from `--keep-*` flags, or `None` when none was given.
fn flag_policy(a: &ForgetArgs) -> Option<Policy> {
    let p = Policy {
        last: a.keep_last.unwrap_or(0),
        hourly: a.keep_hourly.unwrap_or(0),
        daily: a.keep_daily.unwrap_or(0),
        weekly: a.keep_weekly.unwrap_or(0),
        monthly: a.keep_monthly.unwrap_or(0),
        yearly: a.keep_yearly.unwrap_or(0),
        within: a.keep_within,
        tags: a.keep_tags.clone(),
    };
    let given = a.keep_last.is_some()
        || a.keep_hourly.is_some()
        || a.keep_daily.is_some()
        || a.keep_weekly.is_some()
        || a.keep_monthly.is_some()
        || a.keep_yearly.is_some()
        || a.keep_within.is_some()
        || !a.keep_tags.is_empty();
    given.then_some(p)
}

pub fn forget(g: &Globals, a: ForgetArgs) -> Result<i32> {
    let config = g.config()?;
    let policy = flag_policy(&a).unwrap_or_else(|| config.policy());
    let protect_days = a.protect_days.or(config.forget.protect_days).unwrap_or(90);
    let repo = g.open()?;
    let opts = ForgetOptions {
        policy: policy.clone(),
        guards: Guards {
            protect_age: chrono::Duration::days(protect_days as i64),
            now: chrono::Utc::now(),
        },
        dry_run: a.dry_run,
    };
    let r = engine::forget(&repo, &opts)?;
    // `--prune` runs on the same session: no second password prompt, and
    // one JSON document.
    let pruned = if a.prune && !a.dry_run {
        let quiet_text = Globals {
            json: true,
            ..g.clone()
        };
        Some(run_prune(
            &quiet_text,
            &repo,
            &PruneArgs {
                repack_threshold: 10.0,
                dry_run: false,
                min_pack_age: engine::STALE_AFTER,
            },
        )?)
    } else {
        None
    };
    for u in &r.unreadable {
        eprintln!("ledgervault: warning: {u} (kept: unreadable snapshots are never removed)");
    }
    let kept = r.decisions.iter().filter(|d| d.keep).count();
    let gone = r.decisions.len() - kept;
    if g.json {
        g.print_json(&json!({
            "dry_run": r.dry_run,
            "policy": policy,
            "protect_days": protect_days,
            "kept": kept,
            "removed": r.removed,
            "locked": r.locked.iter().map(|(id, until)| json!({"id": id, "locked_until": until})).collect::<Vec<_>>(),
            "decisions": r.decisions,
            "prune": pruned,
        }));
    } else if !g.quiet {
        let mut groups: Vec<&str> = r.decisions.iter().map(|d| d.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            println!("snapshots of {group}:");
            for d in r.decisions.iter().filter(|d| d.group == group) {
                let t = d
                    .time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M");
                if d.keep {
                    println!("  keep    {}  {t}  {}", d.id.short(), d.reasons.join("; "));
                } else {
                    println!(
                        "  {}  {}  {t}",
                        if r.dry_run { "would remove" } else { "remove " },
                        d.id.short()
                    );
                }
            }
        }
        if r.dry_run {
            println!(
                "dry run: {kept} snapshot(s) would be kept and {gone} removed; nothing was changed"
            );
        } else {
            println!(
                "{kept} snapshot(s) kept, {} removed; run `ledgervault prune` to free their data",
                gone - r.locked.len()
            );
            for (id, until) in &r.locked {
                println!(
                    "  {} stays: it is locked until {until} (Object Lock); a later forget removes it",
                    id.short()
                );
            }
        }
    }
    if let (Some(p), false, false) = (&pruned, g.json, g.quiet) {
        println!(
            "prune: freed {}, repacked {} pack(s), deleted {} pack(s)",
            ui::size(p.bytes_deleted),
            p.packs_repacked,
            p.packs_deleted + p.packs_unindexed
        );
    }
    Ok(exit::OK)
}

pub fn prune(g: &Globals, a: PruneArgs) -> Result<i32> {
    let repo = g.open()?;
    let r = run_prune(g, &repo, &a)?;
    if g.json {
        g.print_json(&serde_json::to_value(&r)?);
    }
    Ok(exit::OK)
}

/// Runs prune and prints its summary for people (not JSON).
fn run_prune(g: &Globals, repo: &Repository, a: &PruneArgs) -> Result<engine::PruneReport> {
    let opts = PruneOptions {
        repack_threshold: a.repack_threshold / 100.0,
        dry_run: a.dry_run,
        min_pack_age: a.min_pack_age,
        ..Default::default()
    };
    let bar = Bar::new(g.quiet || a.dry_run, "repack");
    let r = engine::prune(repo, &opts, &bar)?;
    drop(bar);
    if !g.json && !g.quiet {
        let verb = if r.dry_run { "would be " } else { "" };
        println!(
            "{} snapshot(s) use {} blobs; {} blob copies are unused",
            r.snapshots, r.blobs_used, r.blobs_unused
        );
        println!(
            "packs: {} kept, {} {verb}deleted, {} {verb}repacked, {} left by interrupted backups {verb}deleted",
            r.packs_kept,
            r.packs_deleted,
            r.packs_repacked,
            r.packs_unindexed
        );
        if r.packs_locked > 0 {
            println!(
                "{} pack(s) no longer needed are still locked (Object Lock) and stay until their locks end (the first on {}); a later prune frees them",
                r.packs_locked,
                r.locked_until.as_deref().unwrap_or("?")
            );
        }
        if r.packs_too_young > 0 {
            println!(
                "{} pack(s) written less than {} ago kept whatever their use (a backup may still be writing them; --min-pack-age)",
                r.packs_too_young,
                ui::secs(opts.min_pack_age.as_secs_f64())
            );
        }
        if r.dry_run {
            println!(
                "dry run: about {} would be freed; nothing was changed",
                ui::size(r.bytes_deleted)
            );
        } else {
            println!(
                "freed {} and wrote {} ({} new pack(s), {} index file(s)): the repository went from {} to {} in {}",
                ui::size(r.bytes_deleted),
                ui::size(r.bytes_written),
                r.packs_written,
                r.index_files_written,
                ui::size(r.bytes_before),
                ui::size((r.bytes_before + r.bytes_written).saturating_sub(r.bytes_deleted)),
                ui::secs(r.duration_secs)
            );
        }
    }
    Ok(r)
}

pub fn stats(g: &Globals) -> Result<i32> {
    let repo = g.open()?;
    let s = engine::stats(&repo)?;
    let warning = s.growth.as_ref().and_then(|gr| gr.warning(s.free_bytes));
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        v["warning"] = json!(warning);
        g.print_json(&v);
    } else {
        println!("snapshots:          {}", s.snapshots);
        println!("sources (newest snapshot):");
        for src in &s.sources {
            println!(
                "  {:>9}  {}  ({:?}, {} snapshot{}, newest {})",
                ui::size(src.size),
                src.path,
                src.kind,
                src.snapshots,
                if src.snapshots == 1 { "" } else { "s" },
                src.newest
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
            );
        }
        println!("all snapshots hold: {}", ui::size(s.logical_bytes));
        println!(
            "after dedup:        {} in {} blobs (dedup ratio {:.1}x)",
            ui::size(s.unique_bytes),
            s.blobs,
            s.dedup_ratio
        );
        println!(
            "after compression:  {} in {} packs (compression ratio {:.2}x)",
            ui::size(s.packed_bytes),
            s.packs,
            s.compression_ratio
        );
        println!("stored in total:    {}", ui::size(s.stored_bytes));
        match s.free_bytes {
            Some(f) => println!("free at destination: {}", ui::size(f)),
            None => println!("free at destination: unknown"),
        }
        match &s.growth {
            Some(gr) => {
                let full = gr
                    .days_until_full
                    .map(|d| format!("; full in about {d:.0} days at this rate"))
                    .unwrap_or_default();
                println!(
                    "growth:             {} a day over the last {:.0} days{full}",
                    ui::size(gr.bytes_per_day as u64),
                    gr.over_days
                );
            }
            None => println!("growth:             not enough history yet (needs a day of backups)"),
        }
    }
    if let Some(w) = warning {
        eprintln!("ledgervault: warning: {w}");
    }
    Ok(exit::OK)
}

pub fn snapshot(g: &Globals, cmd: SnapshotCommand) -> Result<i32> {
    let repo = g.open()?;
    let (spec, kind, note) = match cmd {
        SnapshotCommand::Protect { id, note } => (id, MarkKind::Protect, note),
        SnapshotCommand::Unprotect { id } => {
            repo.ensure_may_delete("unprotecting a snapshot")?;
            (id, MarkKind::Unprotect, None)
        }
        SnapshotCommand::ClearSuspect { id, note } => {
            repo.ensure_may_delete("clearing a suspect alarm")?;
            (id, MarkKind::ClearSuspect, note)
        }
    };
    let (id, snap) = repo.find_snapshot(&spec)?;
    if kind == MarkKind::ClearSuspect && !snap.is_suspect() {
        anyhow::bail!("snapshot {} is not suspect; nothing to clear", id.short());
    }
    let mark_id = repo.add_mark(&Mark::new(id, kind, note))?;
    if g.json {
        g.print_json(&json!({"snapshot": id, "mark": mark_id, "kind": kind}));
    } else if !g.quiet {
        let what = match kind {
            MarkKind::Protect => "protected",
            MarkKind::Unprotect => "unprotected",
            MarkKind::ClearSuspect => "suspect alarm cleared for",
            MarkKind::DrillPassed | MarkKind::DrillFailed => "drill recorded for",
        };
        println!("{what} snapshot {}", id.short());
    }
    Ok(exit::OK)
}
