//! `status`: the jobs with their last and next runs, and each repository
//! location (the primary and every copy) with its snapshots, space, and
//! the latest snapshot and drill of each configured source, plus the
//! warnings a person should read. Storage that hangs costs seconds, never
//! the whole report.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::history::{History, Outcome, Run};
use crate::repo::{Secret, Target};

/// How long `status` waits for a location to answer at all.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one location may take in all.
pub const LOCATION_LIMIT: Duration = Duration::from_secs(20);

/// A repository to report on, and how to get its password.
#[derive(Clone)]
pub struct Location {
    /// `primary`, or the `[[copy]]` name.
    pub name: String,
    pub target: Target,
    pub password: Arc<dyn Fn() -> Result<Secret> + Send + Sync>,
}

/// Everything `status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub jobs: Vec<JobStatus>,
    pub locations: Vec<LocationStatus>,
    pub warnings: Vec<String>,
    pub recent_runs: Vec<Run>,
}

#[derive(Debug, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub last_success: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct LastRun {
    pub started: DateTime<Utc>,
    pub outcome: Outcome,
    pub message: String,
}

/// One location: its figures, or why there are none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LocationStatus {
    Checked {
        name: String,
        location: String,
        snapshots: usize,
        stored_bytes: u64,
        free_bytes: Option<u64>,
        days_until_full: Option<f64>,
        /// Seconds the last passed restore drill took to restore: the
        /// measured recovery time.
        recovery_secs: Option<f64>,
        sources: Vec<SourceStatus>,
    },
    Unchecked {
        name: String,
        location: Option<String>,
        error: String,
    },
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    /// As configured, secrets removed.
    pub source: String,
    pub latest_snapshot: Option<String>,
    pub latest_time: Option<DateTime<Utc>>,
    pub suspect: bool,
    pub last_verified: Option<DateTime<Utc>>,
}

/// The report for `cfg` and `locations`, as of `now`; `recent` runs of
/// the history are included.
pub fn status(
    cfg: &Arc<Config>,
    locations: Vec<Location>,
    now: DateTime<Utc>,
    recent: usize,
) -> Result<StatusReport> {
    let mut warnings = Vec::new();
    let history = match cfg.history_path() {
        Some(p) if p.exists() => Some(History::open(&p)?),
        _ => {
            warnings.push("no run history yet: the daemon has not run".to_string());
            None
        }
    };
    let mut jobs = Vec::new();
    for job in crate::jobs::jobs(cfg) {
        let next = job
            .schedule
            .next_after(&now.with_timezone(&Local))
            .map(|t| t.with_timezone(&Utc));
        let (last, last_ok) = match &history {
            Some(h) => (h.last(&job.name)?, h.last_success(&job.name)?),
            None => (None, None),
        };
        if let Some(l) = &last {
            if matches!(l.outcome, Outcome::Failed | Outcome::Skipped) {
                warnings.push(
                    format!("{}: last run {:?}: {}", job.name, l.outcome, l.message)
                        .replace("Failed", "failed")
                        .replace("Skipped", "skipped"),
                );
            }
        }
        jobs.push(JobStatus {
            job: job.name.clone(),
            schedule: job.schedule.to_string(),
            next_run: next,
            last_run: last.as_ref().map(|r| LastRun {
                started: r.started,
                outcome: r.outcome,
                message: r.message.clone(),
            }),
            last_success: last_ok.as_ref().map(|r| r.finished),
        });
    }
    let window = cfg.duration(&cfg.alerts.no_backup_within, "26h");
    if let Some(h) = &history {
        match h.last_success("backup")? {
            Some(r) if now - r.finished > window => warnings.push(format!(
                "no successful backup since {} (more than {})",
                r.finished.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
                human_duration(window)
            )),
            None => warnings.push("no successful scheduled backup yet".into()),
            _ => {}
        }
    }
    let locations = locations
        .into_iter()
        .map(|l| location_status_bounded(cfg, l, &mut warnings))
        .collect();
    let recent_runs = match &history {
        Some(h) => h.recent(u32::try_from(recent).unwrap_or(u32::MAX))?,
        None => Vec::new(),
    };
    Ok(StatusReport {
        jobs,
        locations,
        warnings,
        recent_runs,
    })
}

/// A duration for people: `45s`, `12m`, `30h`, `3d`.
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn shown_location(t: &Target) -> Option<String> {
    t.location.as_deref().map(crate::redact::url)
}

/// [`location_status`] on a thread of its own, given [`LOCATION_LIMIT`].
fn location_status_bounded(
    cfg: &Arc<Config>,
    l: Location,
    warnings: &mut Vec<String>,
) -> LocationStatus {
    let (cfg2, l2) = (cfg.clone(), l.clone());
    let checked = within(LOCATION_LIMIT, move || {
        let mut w = Vec::new();
        let v = location_status(&cfg2, &l2, &mut w);
        (v, w)
    });
    match checked {
        Ok((v, w)) => {
            warnings.extend(w);
            v
        }
        Err(_) => {
            let why = format!(
                "did not finish within {}s (storage or a source hung?); not checked",
                LOCATION_LIMIT.as_secs()
            );
            warnings.push(format!("{}: {why}", l.name));
            LocationStatus::Unchecked {
                location: shown_location(&l.target),
                name: l.name,
                error: why,
            }
        }
    }
}

/// Runs `work` on a thread of its own and waits at most `wait` for it
/// (storage that hangs costs that, not forever). A thread still running
/// then is left behind; the process ends without it.
pub fn within<T: Send + 'static>(
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, std::sync::mpsc::RecvTimeoutError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(wait)
}

/// Reads the location's config file on a thread, so storage that hangs (a
/// dead hard-mounted NAS) costs seconds, not forever. Errors other than
/// silence are left to opening it, which names them.
fn probe(t: &Target, wait: Duration) -> std::result::Result<(), String> {
    let t = t.clone();
    let answered = within(wait, move || {
        t.backend().and_then(|b| {
            ledgervault_repo::Repository::read_config(b.as_ref())?;
            Ok(())
        })
    });
    match answered {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "did not answer within {}s (storage hung or unreachable?); not checked",
            wait.as_secs()
        )),
        _ => Ok(()),
    }
}

/// One location's figures.
fn location_status(cfg: &Config, l: &Location, warnings: &mut Vec<String>) -> LocationStatus {
    let name = &l.name;
    let unchecked = |location: Option<String>, error: String| LocationStatus::Unchecked {
        name: name.clone(),
        location,
        error,
    };
    if let Err(why) = probe(&l.target, PROBE_TIMEOUT) {
        warnings.push(format!("{name}: {why}"));
        return unchecked(shown_location(&l.target), why);
    }
    let opened = l
        .target
        .find()
        .and_then(|opener| opener.open(&(l.password)()?));
    let repo = match opened {
        Ok(r) => r,
        Err(e) => {
            warnings.push(format!("{name}: cannot open: {e:#}"));
            return unchecked(shown_location(&l.target), format!("{e:#}"));
        }
    };
    let inner = |warnings: &mut Vec<String>| -> Result<LocationStatus> {
        let (snaps, bad) = repo.snapshots()?;
        for b in bad {
            warnings.push(format!("{name}: {b}"));
        }
        let states = repo.snapshot_states()?;
        let stats = crate::backup::repo_stats(&repo)?;
        let growth = ledgervault_repo::growth_now(&repo)?;
        if let Some(w) = growth.as_ref().and_then(|gr| gr.warning(stats.free)) {
            warnings.push(format!("{name}: {w}"));
        }
        let mut sources = Vec::new();
        for s in &cfg.source {
            let given = s.path.get_ref();
            let canon = std::fs::canonicalize(given.strip_prefix("sqlite:").unwrap_or(given))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let shown = ledgervault_postgres::redact(given);
            let latest = snaps
                .iter()
                .filter(|(_, snap)| {
                    snap.sources
                        .iter()
                        .any(|x| x.path == *given || x.path == canon || x.path == shown)
                })
                .max_by_key(|(_, snap)| snap.time);
            let verified = snaps
                .iter()
                .filter_map(|(id, _)| states.get(id).and_then(|st| st.drill_passed))
                .max();
            let shown = crate::redact::url(given);
            if latest.is_none() {
                warnings.push(format!("{name}: no snapshot of {shown} yet"));
            }
            sources.push(SourceStatus {
                source: shown,
                latest_snapshot: latest.map(|(id, _)| id.short()),
                latest_time: latest.map(|(_, s)| s.time),
                suspect: latest.is_some_and(|(_, s)| s.is_suspect()),
                last_verified: verified,
            });
        }
        Ok(LocationStatus::Checked {
            name: name.clone(),
            location: repo.backend().location(),
            snapshots: snaps.len(),
            stored_bytes: stats.stored,
            free_bytes: stats.free,
            days_until_full: growth.and_then(|gr| gr.days_until_full),
            recovery_secs: crate::drill::history(&repo)?
                .into_iter()
                .find(|m| m.kind == ledgervault_repo::MarkKind::DrillPassed)
                .and_then(|m| m.report?.get("restore_secs")?.as_f64()),
            sources,
        })
    };
    match inner(warnings) {
        Ok(v) => v,
        Err(e) => {
            warnings.push(format!("{name}: {e:#}"));
            unchecked(Some(repo.backend().location()), format!("{e:#}"))
        }
    }
}
