//! `verify`: restore drills, run by `ledgervault_service::drill`; this is
//! the command line's side: the arguments, the lock, the report printed.

use anyhow::Result;
use chrono::Utc;
use ledgervault_service::drill::{self, DrillReport, DrillRequest};
use serde_json::json;

use crate::args::VerifyArgs;
use crate::commands::Globals;
use crate::ui::{self, exit, Bar};

pub fn verify(g: &Globals, a: VerifyArgs) -> Result<i32> {
    let config = g.config()?;
    let repo = g.open()?;
    if let Some(age) = a.if_older_than {
        if let Some(t) = drill::passed_within(&repo, age)? {
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
    let req = DrillRequest {
        snapshot: a.snapshot.clone(),
        all_sources: a.all_sources,
        scratch: a.scratch.clone(),
        scratch_server: a.scratch_server.clone(),
        threads: a.threads,
    };
    let bar = Bar::new(g.quiet || g.json, "restore drill");
    let report = drill::run(&repo, &config, &req, &bar);
    drop(bar);
    let report = report?;
    print_report(g, &report);
    Ok(if report.passed {
        exit::OK
    } else if !report.damaged.is_empty() {
        exit::DAMAGED
    } else {
        exit::DRILL_FAILED
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
