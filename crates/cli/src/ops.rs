//! Unattended operation: `copy`, `daemon`, `status`, `config check`,
//! `init-config` and `alert test`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{Local, Utc};
use ledgervault_repo::{self as engine, Id};
use serde_json::json;

use crate::alert::{self, Alert, AlertKind};
use crate::args::{CopyArgs, DaemonArgs};
use crate::commands::{repo_stats, usage, Globals};
use crate::config::Config;
use crate::daemon::{self, Daemon, ProcessRunner, SystemClock};
use crate::history::History;
use crate::ui::{self, exit, Bar};

/// The config file, which these commands cannot do without.
pub(crate) fn required_config(g: &Globals, command: &str) -> Result<Config> {
    if g.config.is_none() {
        return Err(usage(format!(
            "`{command}` needs a config file: use -c FILE (ledgervault init-config writes an example)"
        )));
    }
    g.config()
}

/// Where a `--from`/`--to` points: a `[[copy]]` name or a folder.
pub(crate) fn location(
    g: &Globals,
    cfg: &Config,
    spec: Option<&str>,
    password_file: Option<PathBuf>,
) -> Globals {
    let mut out = g.clone();
    match spec {
        None => {
            if password_file.is_some() {
                out.password_file = password_file;
            }
        }
        Some(name) => match cfg.copy_location(name) {
            Some(c) => {
                out.repo = Some(c.path.get_ref().clone());
                out.password_file =
                    password_file.or(c.password_file.clone().map(|p| p.into_inner()));
            }
            None => {
                out.repo = Some(name.to_string());
                out.password_file = password_file;
            }
        },
    }
    out
}

pub fn copy(g: &Globals, a: CopyArgs) -> Result<i32> {
    let cfg = g.config()?;
    let from = location(g, &cfg, a.from.as_deref(), a.from_password_file.clone());
    let to = location(g, &cfg, Some(&a.to), a.to_password_file.clone());
    let src = from.open()?;
    let mut dst = to.open_with("LEDGERVAULT_TO_PASSWORD", "destination repository password")?;
    if g.append_only {
        dst.set_append_only();
    }
    let mut ids: Vec<Id> = Vec::new();
    for spec in &a.snapshots {
        ids.push(src.find_snapshot(spec)?.0);
    }
    let bar = Bar::new(g.quiet, "copy");
    let r = engine::copy(
        &src,
        &dst,
        &engine::CopyOptions {
            snapshots: ids,
            ..Default::default()
        },
        &bar,
    )?;
    drop(bar);
    let stats = repo_stats(&dst)?;
    let growth = engine::growth_now(&dst)?;
    let days_until_full = growth.as_ref().and_then(|gr| gr.days_until_full);
    let warning = growth.and_then(|gr| gr.warning(stats.free));
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["repository"] = json!({
            "location": dst.backend().location(),
            "snapshots": stats.snapshots, "stored_bytes": stats.stored,
            "free_bytes": stats.free, "days_until_full": days_until_full,
        });
        v["warning"] = json!(warning);
        g.print_json(&v);
    } else if !g.quiet {
        println!(
            "copied {} snapshot{} to {} ({} already there): {} blobs written, {} of data, {} stored{}. It holds {} snapshots in {}.",
            r.copied.len(),
            if r.copied.len() == 1 { "" } else { "s" },
            dst.backend().location(),
            r.already_present,
            r.blobs_written,
            ui::size(r.bytes_written),
            ui::size(r.bytes_stored),
            if r.same_keys { "" } else { " (re-encrypted)" },
            stats.snapshots,
            ui::size(stats.stored),
        );
    }
    if let Some(w) = warning {
        eprintln!("ledgervault: warning: {w}");
    }
    Ok(exit::OK)
}

fn log_line(msg: &str) {
    eprintln!(
        "{} ledgervault daemon: {msg}",
        Local::now().format("%Y-%m-%d %H:%M:%S")
    );
}

pub fn daemon(g: &Globals, a: DaemonArgs) -> Result<i32> {
    let cfg = required_config(g, "daemon")?;
    if a.install_systemd {
        return install_systemd(g, &cfg, &a.systemd_dir);
    }
    if cfg.repository.is_none() {
        return Err(usage("the config file has no [repository]"));
    }
    let history_path = cfg
        .history_path()
        .ok_or_else(|| usage("no place for the run history: set [daemon] history"))?;
    let _lock = daemon::lock_daemon(&history_path)?;
    let history = History::open(&history_path)?;
    daemon::install_signal_handlers();
    for problem in cfg.unreachable() {
        log_line(&format!("warning: {problem}"));
    }
    // The console, when the config asks for it: on threads of its own,
    // for as long as the daemon runs.
    // A console that cannot start stops no backup: said in the log, and
    // the schedule runs.
    let _console = match &cfg.console.listen {
        Some(_) if !a.once => match crate::console::start(g, &cfg, None, false) {
            Ok(c) => {
                log_line(&format!("console on {}", c.url()));
                if let Some(f) = c.fingerprint() {
                    log_line(&format!("console certificate fingerprint (SHA-256): {f}"));
                }
                Some(c)
            }
            Err(e) => {
                log_line(&format!("warning: the console is not served: {e:#}"));
                None
            }
        },
        _ => None,
    };
    let clock = SystemClock;
    let mut in_process;
    let mut process;
    let runner: &mut dyn daemon::Runner = if cfg.daemon.jobs.as_deref() == Some("process") {
        process = ProcessRunner { cfg: &cfg };
        &mut process
    } else {
        in_process = crate::jobs::InProcessRunner::new(g.clone());
        &mut in_process
    };
    // The alert channels follow the config file when it changes.
    let channels = std::rc::Rc::new(std::cell::RefCell::new(cfg.alerts.clone()));
    let reloaded = channels.clone();
    let mut notify = move |al: &Alert| alert::send(&channels.borrow(), al);
    let mut log = |m: &str| log_line(m);
    let mut d = Daemon::from_config(&cfg, history, &clock, runner, &mut notify, &mut log);
    if let Some(path) = cfg.file.clone() {
        d.reload = Some(daemon::Reload {
            seen: daemon::Reload::stamp(&path),
            path,
            applied: Box::new(move |c: &Config| *reloaded.borrow_mut() = c.alerts.clone()),
        });
    }
    let primary = g.clone();
    d.disk = Some(Box::new(move || {
        disk_probe(&primary, ledgervault_service::status::PROBE_TIMEOUT)
    }));
    if a.once {
        d.run_due()?;
        return Ok(exit::OK);
    }
    log_line(&format!(
        "started (pid {}); jobs: {}",
        std::process::id(),
        d.jobs
            .iter()
            .map(|j| format!("{} ({})", j.name, j.schedule))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    d.run_forever()?;
    log_line("stopped");
    Ok(exit::OK)
}

fn install_systemd(g: &Globals, cfg: &Config, dir: &Path) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the ledgervault program")?;
    let config = cfg
        .file
        .as_ref()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
        .ok_or_else(|| usage("--install-systemd needs -c FILE"))?;
    let (exe, config) = (exe.display(), config.display());
    let service = format!(
        "[Unit]
Description=ledgervault backups (daemon: schedules, copies, drills, alerts)
Documentation=man:ledgervault(1)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exe} --config {config} daemon
# SIGTERM lets the running job finish; give it time.
KillMode=mixed
TimeoutStopSec=2h
Restart=on-failure
RestartSec=30s
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7

[Install]
WantedBy=multi-user.target
"
    );
    let oneshot = format!(
        "[Unit]
Description=ledgervault backups: run the jobs that are due, then exit (timer alternative)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={exe} --config {config} daemon --once
Nice=10
"
    );
    let timer = "[Unit]
Description=ledgervault backups: run due jobs every 15 minutes (alternative to ledgervault.service)

[Timer]
OnBootSec=5min
OnCalendar=*:0/15
Persistent=true

[Install]
WantedBy=timers.target
";
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = [
        ("ledgervault.service", service.as_str()),
        ("ledgervault-run.service", oneshot.as_str()),
        ("ledgervault-run.timer", timer),
    ];
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if g.json {
        g.print_json(
            &json!({"written": files.iter().map(|(n, _)| dir.join(n)).collect::<Vec<_>>()}),
        );
    } else if !g.quiet {
        println!(
            "wrote ledgervault.service, ledgervault-run.service and ledgervault-run.timer in {}.",
            dir.display()
        );
        println!("Either:   systemctl daemon-reload && systemctl enable --now ledgervault.service");
        println!(
            "Or:       systemctl daemon-reload && systemctl enable --now ledgervault-run.timer"
        );
        println!("(not both: the daemon refuses to run twice on one config).");
    }
    Ok(exit::OK)
}

/// The primary repository's free space, asked on a thread (storage that
/// hangs costs `wait`, not forever):
/// `Err` when the storage does not answer within `wait`.
fn disk_probe(g: &Globals, wait: std::time::Duration) -> daemon::DiskReading {
    let g = g.clone();
    let free = ledgervault_service::status::within(wait, move || {
        g.backend().ok().and_then(|b| {
            ledgervault_repo::Repository::read_config(b.as_ref()).ok()?;
            b.free_space()
        })
    });
    free.map_err(|_| {
        format!(
            "did not answer within {}s (storage hung or unreachable?)",
            wait.as_secs()
        )
    })
}

/// A location for `status`: where it is, and its password as `g` reads it.
pub(crate) fn status_location(name: &str, g: Globals) -> ledgervault_service::status::Location {
    let target = g.target();
    ledgervault_service::status::Location {
        name: name.to_string(),
        target,
        password: std::sync::Arc::new(move || {
            Ok(ledgervault_service::repo::Secret::new(g.password(false)?))
        }),
    }
}

pub fn status(g: &Globals) -> Result<i32> {
    use ledgervault_service::status::LocationStatus;
    let cfg = std::sync::Arc::new(required_config(g, "status")?);
    let mut locations = Vec::new();
    if cfg.repository.is_some() || g.repo.is_some() {
        locations.push(status_location("primary", g.clone()));
    }
    for c in &cfg.copy {
        locations.push(status_location(
            &c.name,
            location(g, &cfg, Some(&c.name), None),
        ));
    }
    let report = ledgervault_service::status::status(&cfg, locations, Utc::now(), 20)?;
    if g.json {
        g.print_json(&serde_json::to_value(&report)?);
        return Ok(exit::OK);
    }
    let when = |t: Option<chrono::DateTime<Utc>>| -> String {
        t.map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "never".into())
    };
    println!(
        "{:<16}  {:<28}  {:<16}  {:<16}  Last run",
        "Job", "Schedule", "Last success", "Next run"
    );
    for j in &report.jobs {
        let last = j
            .last_run
            .as_ref()
            .map(|r| serde_json::to_value(r.outcome).unwrap_or_default())
            .and_then(|o| o.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16}  {:<28}  {:<16}  {:<16}  {last}",
            j.job,
            j.schedule,
            when(j.last_success),
            when(j.next_run),
        );
    }
    println!();
    for l in &report.locations {
        match l {
            LocationStatus::Unchecked {
                name,
                location,
                error,
            } => println!("{name} ({}): {error}", location.as_deref().unwrap_or("")),
            LocationStatus::Checked {
                name,
                location,
                snapshots,
                stored_bytes,
                free_bytes,
                sources,
                ..
            } => {
                println!(
                    "{name} ({location}): {snapshots} snapshots, {} stored{}",
                    ui::size(*stored_bytes),
                    free_bytes
                        .map(|f| format!(", {} free", ui::size(f)))
                        .unwrap_or_default(),
                );
                for s in sources {
                    println!(
                        "  {:<40}  latest {}  verified {}{}",
                        s.source,
                        when(s.latest_time),
                        when(s.last_verified),
                        if s.suspect { "  SUSPECT" } else { "" }
                    );
                }
            }
        }
    }
    if !report.warnings.is_empty() {
        println!();
        for w in &report.warnings {
            println!("warning: {w}");
        }
    }
    Ok(exit::OK)
}

pub fn config_check(g: &Globals) -> Result<i32> {
    let cfg = required_config(g, "config check")?;
    let mut problems = cfg.unreachable();
    let mut warnings = Vec::new();
    if let Some(r) = &cfg.repository {
        if r.password_file.is_none() {
            warnings.push(
                "[repository] has no password_file: the daemon cannot open the repository unattended"
                    .to_string(),
            );
        }
        if problems.is_empty() && r.password_file.is_some() {
            let rg = Globals {
                repo: Some(r.path.get_ref().clone()),
                password_file: r.password_file.clone().map(|p| p.into_inner()),
                ..g.clone()
            };
            match rg.open() {
                Ok(repo) if !repo.is_append_only() => warnings.push(
                    "the [repository] password_file opens a full-access key: give the daemon an \
                     append-only key (`ledgervault key add --append-only`) so it cannot delete history"
                        .to_string(),
                ),
                Ok(_) => {}
                Err(e) => problems.push(format!(
                    "repository {}: {e:#}",
                    crate::redact::url(r.path.get_ref())
                )),
            }
        }
    } else {
        warnings.push("no [repository]: the daemon needs one".into());
    }
    if cfg.alerts.channels() == 0 {
        warnings.push("no alert channels: nobody hears about failures ([[alerts.email]] or [[alerts.webhook]])".into());
    }
    if cfg.copy.is_empty() {
        warnings.push("no [[copy]] location: keep a second copy on another disk or offsite".into());
    }
    if cfg.source.is_empty() {
        warnings.push("no [[source]]: the scheduled backup has nothing to take".into());
    }
    let jobs: Vec<_> = daemon::jobs(&cfg)
        .into_iter()
        .map(|j| json!({"job": j.name, "schedule": j.schedule.to_string()}))
        .collect();
    if g.json {
        g.print_json(&json!({"ok": problems.is_empty(), "problems": problems, "warnings": warnings, "jobs": jobs}));
    } else {
        for p in &problems {
            eprintln!("ledgervault: error: {p}");
        }
        for w in &warnings {
            eprintln!("ledgervault: warning: {w}");
        }
        if problems.is_empty() && !g.quiet {
            println!(
                "config file {} is valid: {} source(s), {} copy location(s), {} alert channel(s); jobs: {}",
                cfg.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default(),
                cfg.source.len(),
                cfg.copy.len(),
                cfg.alerts.channels(),
                jobs.iter()
                    .map(|j| format!("{} ({})", j["job"].as_str().unwrap_or(""), j["schedule"].as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::ERROR
    })
}

/// The example `init-config` writes.
pub const EXAMPLE_CONFIG: &str = include_str!("../ledgervault.example.toml");

pub fn init_config(g: &Globals, path: &Path) -> Result<i32> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow!("{} already exists; not overwriting it", path.display())
            }
            _ => anyhow!("cannot create {}: {e}", path.display()),
        })?;
    std::io::Write::write_all(&mut f, EXAMPLE_CONFIG.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if !g.quiet {
        println!(
            "wrote {}; edit it, then run `ledgervault -c {} config check`",
            path.display(),
            path.display()
        );
    }
    Ok(exit::OK)
}

pub fn alert_test(g: &Globals) -> Result<i32> {
    let cfg = required_config(g, "alert test")?;
    if cfg.alerts.channels() == 0 {
        return Err(usage(
            "no alert channels configured ([[alerts.email]] or [[alerts.webhook]])",
        ));
    }
    let a = Alert::new(
        AlertKind::Test,
        "test alert",
        "This is a test alert from `ledgervault alert test`. If you can read it, alerts reach you.",
    );
    let failed = alert::send(&cfg.alerts, &a);
    for f in &failed {
        eprintln!("ledgervault: error: {f}");
    }
    if g.json {
        g.print_json(&json!({"channels": cfg.alerts.channels(), "failed": failed}));
    } else if !g.quiet && failed.is_empty() {
        println!("test alert sent on {} channel(s)", cfg.alerts.channels());
    }
    if failed.is_empty() {
        Ok(exit::OK)
    } else {
        bail!(
            "{} of {} alert channel(s) failed",
            failed.len(),
            cfg.alerts.channels()
        )
    }
}

/// `repair index` and `repair snapshots`.
pub fn repair(g: &Globals, cmd: crate::args::RepairCommand) -> Result<i32> {
    use crate::args::RepairCommand;
    let repo = g.open()?;
    match cmd {
        RepairCommand::Index { dry_run } => {
            let opts = engine::RepairOptions {
                dry_run,
                forget: false,
            };
            let bar = Bar::new(g.quiet, "read packs");
            let r = engine::repair_index(&repo, &opts, &bar)?;
            drop(bar);
            if g.json {
                g.print_json(&serde_json::to_value(&r)?);
                return Ok(exit::OK);
            }
            for f in &r.damaged_index_files {
                println!("damaged index file (replaced): {f}");
            }
            for p in &r.missing_packs {
                println!("missing pack (dropped from the index): {p}");
            }
            for d in &r.damaged_packs {
                println!(
                    "damaged pack {}: {}; {} frame(s) salvaged, {} lost ({} blob(s) no other pack holds)",
                    d.pack, d.problem, d.frames_salvaged, d.frames_lost, d.blobs_lost
                );
            }
            let verb = if r.dry_run { "would index" } else { "indexed" };
            println!(
                "read {} pack(s); {verb} {} pack(s); {} blob(s) the old index listed are lost{}",
                r.packs_read,
                r.packs_indexed,
                r.blobs_lost,
                if r.dry_run {
                    "; dry run: nothing was changed".to_string()
                } else if r.index_files_written == 0 {
                    "; the index was already right, nothing was changed".to_string()
                } else {
                    format!(
                        "; wrote {} index file(s) and {} salvage pack(s), removed {} index file(s) and {} damaged pack(s)",
                        r.index_files_written, r.packs_written, r.index_files_removed, r.packs_removed
                    )
                }
            );
            if r.blobs_lost > 0 && !r.dry_run {
                println!("next: `ledgervault repair snapshots` takes the lost data out of the snapshots that used it");
            }
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            let opts = engine::RepairOptions { dry_run, forget };
            let bar = Bar::new(g.quiet, "snapshots");
            let r = engine::repair_snapshots(&repo, &opts, &bar)?;
            drop(bar);
            if g.json {
                g.print_json(&serde_json::to_value(&r)?);
                return Ok(exit::OK);
            }
            for u in &r.unreadable {
                println!(
                    "unreadable snapshot file{}: {u}",
                    if forget && !dry_run { " (deleted)" } else { "" }
                );
            }
            for s in &r.repaired {
                match s.repaired {
                    Some(new) => println!(
                        "snapshot {} ({}) repaired as {}; lost:",
                        s.snapshot.short(),
                        s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
                        new.short()
                    ),
                    None => println!(
                        "snapshot {} ({}) would lose:",
                        s.snapshot.short(),
                        s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M")
                    ),
                }
                for l in &s.lost {
                    println!("  {l}");
                }
            }
            println!(
                "{} snapshot(s): {} intact, {} {}, {} unreadable{}",
                r.snapshots,
                r.intact,
                r.repaired.len(),
                if dry_run {
                    "would be repaired"
                } else {
                    "repaired"
                },
                r.unreadable.len(),
                if r.removed > 0 {
                    format!("; {} damaged snapshot(s) deleted", r.removed)
                } else if !r.repaired.is_empty() && !dry_run {
                    "; the damaged originals are kept (`--forget` deletes them)".to_string()
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let cfg = Config::parse(EXAMPLE_CONFIG, Path::new("ledgervault.toml")).unwrap();
        assert!(cfg.repository.is_some());
        assert!(!cfg.copy.is_empty() && !cfg.source.is_empty());
        assert_eq!(daemon::jobs(&cfg).len(), 3 + cfg.copy.len());
    }
}
