//! The daemon's jobs, run in its own process through the service layer
//! (`[daemon] jobs = "in-process"`, the default): each attempt runs on a
//! thread of its own and ends in a typed result (the backup's verdict, the
//! drill's report, the copy's and prune's reports) or a typed error, whose
//! kind decides whether it is tried again.
//!
//! A thread cannot be stopped from outside. A job still running at its
//! timeout is recorded as failed and alerted as in the child-process mode,
//! and left to end on its own; no other job starts until it has (each is
//! refused as `locked`, so it is retried). A job hung for good (storage
//! that never answers, inside the kernel) then needs the daemon
//! restarted. `[daemon] jobs = "process"` runs each attempt as a child
//! `ledgervault` process instead, which the daemon kills at its timeout,
//! with everything it started: the mode for storage known to hang.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use ledgervault_repo::{self as engine, NoProgress};
use ledgervault_service::backup::{self, BackupRequest, Verdict};
use ledgervault_service::drill::{self, DrillRequest};
use ledgervault_service::ErrorKind;
use serde_json::json;

use crate::commands::{exit_code, Globals};
use crate::daemon::{Attempt, Job, JobKind, Runner, Running};
use crate::ui::exit;

/// One attempt's work: the job in, its result out.
pub type Work = dyn Fn(&Job) -> Attempt + Send + Sync;

/// Jobs left running past their timeout: each one's name, its thread,
/// and where its result will come.
type Stuck = Arc<Mutex<Vec<(String, JoinHandle<()>, mpsc::Receiver<Attempt>)>>>;

/// Runs jobs on threads of the daemon's process.
pub struct InProcessRunner {
    work: Arc<Work>,
    /// A job left running past its timeout, while it still runs.
    stuck: Stuck,
}

impl InProcessRunner {
    /// The daemon's jobs, with the repository and keys of `g`.
    pub fn new(g: Globals) -> InProcessRunner {
        InProcessRunner::with_work(Arc::new(move |job: &Job| run(&g, job)))
    }

    /// Runs `work` for each attempt (tests give their own).
    pub fn with_work(work: Arc<Work>) -> InProcessRunner {
        InProcessRunner {
            work,
            stuck: Arc::default(),
        }
    }
}

/// An attempt that ended before it began.
struct Refused(Option<Attempt>);

impl Running for Refused {
    fn wait_until(&mut self, _: DateTime<Utc>) -> Option<Attempt> {
        self.0.take().or_else(|| Some(Attempt::default()))
    }
    fn kill(&mut self) -> Attempt {
        self.0.take().unwrap_or_default()
    }
}

impl Runner for InProcessRunner {
    fn start(&mut self, job: &Job) -> Box<dyn Running> {
        {
            let stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
            // One still running holds everything back; ended ones wait
            // for `late` to hand over their results.
            if let Some((name, _, _)) = stuck.iter().find(|(_, h, _)| !h.is_finished()) {
                let error = format!(
                        "error: {name} is still running past its timeout; {} waits for it to end (restarting the daemon ends it)",
                        job.name
                    );
                return Box::new(Refused(Some(Attempt {
                    exit_code: Some(exit::LOCKED),
                    log: error.clone(),
                    error,
                    error_kind: Some(ErrorKind::Locked),
                    ..Attempt::default()
                })));
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let (work, for_thread) = (self.work.clone(), job.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("job {}", job.name))
            .spawn(move || {
                let a =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&for_thread)))
                        .unwrap_or_else(|_| Attempt {
                            exit_code: Some(exit::ERROR),
                            error: "error: the job stopped on an internal error (a bug)".into(),
                            error_kind: Some(ErrorKind::Other),
                            ..Attempt::default()
                        });
                let _ = tx.send(a);
            });
        match spawned {
            Ok(handle) => Box::new(ThreadRun {
                rx: Some(rx),
                handle: Some(handle),
                name: job.name.clone(),
                stuck: self.stuck.clone(),
            }),
            Err(e) => Box::new(Refused(Some(Attempt {
                error: format!("error: cannot start the job: {e}"),
                error_kind: Some(ErrorKind::Other),
                ..Attempt::default()
            }))),
        }
    }

    fn late(&mut self) -> Vec<(String, Attempt)> {
        let mut stuck = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut i = 0;
        while i < stuck.len() {
            if !stuck[i].1.is_finished() {
                i += 1;
                continue;
            }
            let (name, h, rx) = stuck.remove(i);
            let _ = h.join();
            if let Ok(a) = rx.try_recv() {
                out.push((name, a));
            }
        }
        out
    }
}

/// An attempt running on a thread.
struct ThreadRun {
    /// `None` once handed to `stuck`.
    rx: Option<mpsc::Receiver<Attempt>>,
    handle: Option<JoinHandle<()>>,
    name: String,
    stuck: Stuck,
}

impl Running for ThreadRun {
    fn wait_until(&mut self, until: DateTime<Utc>) -> Option<Attempt> {
        let rx = self.rx.as_ref()?;
        loop {
            let left = (until - Utc::now()).to_std().unwrap_or_default();
            match rx.recv_timeout(left.min(std::time::Duration::from_millis(250))) {
                Ok(a) => {
                    if let Some(h) = self.handle.take() {
                        let _ = h.join();
                    }
                    return Some(a);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Utc::now() >= until => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(Attempt {
                        error: "error: the job ended without a result".into(),
                        error_kind: Some(ErrorKind::Other),
                        ..Attempt::default()
                    })
                }
            }
        }
    }

    /// A thread cannot be stopped: it is left to end on its own, and no
    /// other job starts before it has.
    fn kill(&mut self) -> Attempt {
        if let Some(a) = self.rx.as_ref().and_then(|rx| rx.try_recv().ok()) {
            return a;
        }
        if let (Some(h), Some(rx)) = (self.handle.take(), self.rx.take()) {
            self.stuck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.name.clone(), h, rx));
        }
        Attempt {
            error: "it could not be stopped in the daemon's process and goes on; no other job starts until it ends (restarting the daemon ends it)".into(),
            ..Attempt::default()
        }
    }
}

/// Runs one attempt of `job`: what it did, or its error with its kind.
pub fn run(g: &Globals, job: &Job) -> Attempt {
    let mut g = Globals {
        json: true,
        quiet: true,
        ..g.clone()
    };
    // The repository and its key come from the config file as it is now,
    // never from the daemon's environment (LEDGERVAULT_REPOSITORY,
    // LEDGERVAULT_PASSWORD_FILE), as for a job run as a child process.
    if let Some(r) = g.config().ok().and_then(|c| c.repository) {
        g.repo = Some(r.path.get_ref().clone());
        g.password_file = r.password_file.map(|p| p.into_inner());
    }
    let result = match &job.kind {
        JobKind::Backup => run_backup(&g),
        JobKind::Copy(name) => run_copy(&g, name),
        JobKind::Verify => run_verify(&g),
        JobKind::Prune => run_prune(&g),
    };
    match result {
        Ok(a) => a,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            let kind = ErrorKind::of(&e);
            let code = exit_code(&e);
            Attempt {
                exit_code: Some(code),
                json: Some(json!({"error": {"kind": kind, "message": text, "exit_code": code}})),
                error: format!("error: {text}"),
                error_kind: Some(kind),
                log: format!("error: {text}"),
                ..Attempt::default()
            }
        }
    }
}

/// An attempt that did its work: its exit code (as the command would
/// end), its result, and the lines worth reading.
fn done(code: i32, result: serde_json::Value, mut lines: Vec<String>, error: String) -> Attempt {
    lines.push(serde_json::to_string_pretty(&result).unwrap_or_default());
    Attempt {
        exit_code: Some(code),
        json: Some(result),
        error,
        log: lines.join("\n"),
        ..Attempt::default()
    }
}

fn run_backup(g: &Globals) -> Result<Attempt> {
    let cfg = g.config()?;
    let g = Globals {
        append_only: true,
        ..g.clone()
    };
    let req = BackupRequest {
        tags: vec!["scheduled".into()],
        // The command line's default wait for a locked database.
        db_timeout: std::time::Duration::from_secs(30),
        ..BackupRequest::default()
    };
    let prepared = backup::prepare(&cfg, &req)?;
    let opener = g.opener()?;
    let captured = prepared.capture(&req, None)?;
    let repo = opener.open()?;
    let o = prepared.run(&repo, captured, &cfg, &req, g.local_root(), &NoProgress)?;
    let s = &o.summary;
    let mut lines = Vec::new();
    for e in &s.errors {
        lines.push(format!("warning: could not read {}: {}", e.path, e.message));
    }
    for c in &s.changed {
        lines.push(format!("warning: {c} changed while it was being read"));
    }
    if let Some(w) = &o.growth_warning {
        lines.push(format!("warning: {w}"));
    }
    let code = match o.verdict {
        Verdict::Clean => exit::OK,
        Verdict::Incomplete => exit::INCOMPLETE,
        Verdict::Suspect => {
            for f in &s.suspect {
                lines.push(format!("ALARM: {f}"));
            }
            exit::SUSPECT
        }
    };
    let result = crate::commands::backup_json(&o);
    Ok(done(code, result, lines, String::new()))
}

fn run_copy(g: &Globals, name: &str) -> Result<Attempt> {
    let cfg = g.config()?;
    let from = crate::ops::location(g, &cfg, None, None);
    let to = crate::ops::location(g, &cfg, Some(name), None);
    let src = from.open()?;
    let dst = to.open_with("LEDGERVAULT_TO_PASSWORD", "destination repository password")?;
    let r = engine::copy(&src, &dst, &engine::CopyOptions::default(), &NoProgress)?;
    let mut lines = Vec::new();
    let stats = ledgervault_service::backup::repo_stats(&dst)?;
    let growth = engine::growth_now(&dst)?;
    let days_until_full = growth.as_ref().and_then(|gr| gr.days_until_full);
    let warning = growth.and_then(|gr| gr.warning(stats.free));
    if let Some(w) = &warning {
        lines.push(format!("warning: {w}"));
    }
    let mut result = serde_json::to_value(&r)?;
    result["repository"] = json!({
        "location": dst.backend().location(),
        "snapshots": stats.snapshots, "stored_bytes": stats.stored,
        "free_bytes": stats.free, "days_until_full": days_until_full,
    });
    result["warning"] = json!(warning);
    Ok(done(exit::OK, result, lines, String::new()))
}

fn run_verify(g: &Globals) -> Result<Attempt> {
    let cfg = g.config()?;
    let every = cfg.verify.interval.clone().unwrap_or_else(|| "60d".into());
    let age = ledgervault_service::config::parse_duration(&every)
        .map_err(|e| anyhow!("[verify] interval {every:?}: {e}"))?;
    let repo = g.open()?;
    if let Some(t) = drill::passed_within(&repo, age)? {
        return Ok(done(
            exit::OK,
            json!({"skipped": true, "last_passed": t}),
            vec![format!(
                "skipped: the last restore drill passed on {t}, within {every}"
            )],
            String::new(),
        ));
    }
    let _lock = engine::read_lock(&repo, "verify")?;
    let r = drill::run(&repo, &cfg, &DrillRequest::default(), &NoProgress)?;
    let failed: Vec<String> = r
        .sources
        .iter()
        .flat_map(|s| s.checks.iter())
        .flat_map(|db| {
            db.checks
                .iter()
                .filter(|c| !c.passed)
                .map(move |c| format!("{}: {} FAILED: {}", db.path, c.name, c.detail))
        })
        .chain(
            r.damaged
                .iter()
                .map(|f| format!("{}: not restored: {}", f.path, f.message)),
        )
        .collect();
    let code = if r.passed {
        exit::OK
    } else if !r.damaged.is_empty() {
        exit::DAMAGED
    } else {
        exit::DRILL_FAILED
    };
    let error = failed.first().cloned().unwrap_or_default();
    Ok(done(code, serde_json::to_value(&r)?, failed, error))
}

fn run_prune(g: &Globals) -> Result<Attempt> {
    let cfg = g.config()?;
    let Some(key) = cfg
        .repository
        .as_ref()
        .and_then(|r| r.maintenance_password_file.as_ref())
    else {
        return Ok(Attempt {
            skipped: Some(crate::daemon::PRUNE_NEEDS_A_PERSON.into()),
            ..Attempt::default()
        });
    };
    let g = Globals {
        password_file: Some(key.get_ref().clone()),
        ..g.clone()
    };
    let repo = g.open()?;
    let protect_days = cfg.forget.protect_days.unwrap_or(90);
    let forgot = engine::forget(
        &repo,
        &engine::ForgetOptions {
            policy: cfg.policy(),
            guards: engine::Guards {
                protect_age: chrono::Duration::days(protect_days as i64),
                now: Utc::now(),
            },
            dry_run: false,
        },
    )?;
    let pruned = engine::prune(
        &repo,
        &engine::PruneOptions {
            repack_threshold: 0.10,
            dry_run: false,
            min_pack_age: engine::STALE_AFTER,
            ..Default::default()
        },
        &NoProgress,
    )?;
    let lines = forgot
        .unreadable
        .iter()
        .map(|u| format!("warning: {u} (kept: unreadable snapshots are never removed)"))
        .collect();
    let result = json!({
        "removed": forgot.removed,
        "kept": forgot.decisions.iter().filter(|d| d.keep).count(),
        "prune": pruned,
        "bytes_written": pruned.bytes_written,
    });
    Ok(done(exit::OK, result, lines, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn job(name: &str) -> Job {
        Job {
            name: name.into(),
            kind: JobKind::Backup,
            schedule: Schedule::parse("hourly").unwrap(),
            timeout: chrono::Duration::seconds(1),
        }
    }

    /// A runner whose jobs for which `held` is true wait until `release`
    /// is set; every job then ends well, saying "NAME done".
    fn gated(
        release: &Arc<AtomicBool>,
        held: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> InProcessRunner {
        let gate = release.clone();
        InProcessRunner::with_work(Arc::new(move |j: &Job| {
            if held(&j.name) {
                while !gate.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Attempt {
                exit_code: Some(exit::OK),
                log: format!("{} done", j.name),
                ..Attempt::default()
            }
        }))
    }

    #[test]
    fn a_job_past_its_timeout_goes_on_and_holds_back_the_next() {
        let release = Arc::new(AtomicBool::new(false));
        let mut runner = gated(&release, |name| name == "slow");
        // A quick one ends with its result.
        let a = runner
            .start(&job("quick"))
            .wait_until(Utc::now() + chrono::Duration::seconds(10))
            .unwrap();
        assert_eq!(
            (a.exit_code, a.log.as_str()),
            (Some(exit::OK), "quick done")
        );
        // A slow one times out, is "killed", and goes on.
        let mut slow = runner.start(&job("slow"));
        assert!(slow
            .wait_until(Utc::now() + chrono::Duration::milliseconds(100))
            .is_none());
        let killed = slow.kill();
        assert!(
            killed.error.contains("could not be stopped"),
            "{}",
            killed.error
        );
        // Meanwhile nothing else starts: refused as locked (retried later).
        let refused = runner
            .start(&job("backup"))
            .wait_until(Utc::now() + chrono::Duration::seconds(10))
            .unwrap();
        assert_eq!(refused.error_kind, Some(ErrorKind::Locked));
        assert!(
            refused.error.contains("slow is still running"),
            "{}",
            refused.error
        );
        // Once it ends, the next one runs.
        release.store(true, Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        loop {
            let a = runner
                .start(&job("backup"))
                .wait_until(Utc::now() + chrono::Duration::seconds(10))
                .unwrap();
            if a.error_kind.is_none() {
                assert_eq!(a.log, "backup done");
                break;
            }
            assert!(t0.elapsed().as_secs() < 10, "the slow job never let go");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // And its result, late, is handed over once.
        let late = runner.late();
        assert_eq!(late.len(), 1);
        assert_eq!(
            (late[0].0.as_str(), late[0].1.log.as_str()),
            ("slow", "slow done")
        );
        assert!(runner.late().is_empty());
    }

    #[test]
    fn two_stuck_jobs_both_hand_over_their_results() {
        let release = Arc::new(AtomicBool::new(false));
        let mut runner = gated(&release, |_| true);
        // One runner starts nothing while a job of its own is stuck, so
        // the second stuck job comes from another runner and is moved over
        // (as if the first had ended and been stopped again later).
        let mut first = runner.start(&job("one"));
        assert!(first
            .wait_until(Utc::now() + chrono::Duration::milliseconds(50))
            .is_none());
        first.kill();
        let mut other = InProcessRunner::with_work(runner.work.clone());
        let mut second = other.start(&job("two"));
        assert!(second
            .wait_until(Utc::now() + chrono::Duration::milliseconds(50))
            .is_none());
        second.kill();
        let moved: Vec<_> = other.stuck.lock().unwrap().drain(..).collect();
        runner.stuck.lock().unwrap().extend(moved);
        release.store(true, Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(runner.late().into_iter().map(|(n, a)| (n, a.log)));
            assert!(t0.elapsed().as_secs() < 10, "{got:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                ("one".to_string(), "one done".to_string()),
                ("two".to_string(), "two done".to_string())
            ]
        );
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_dead_daemon() {
        let mut runner = InProcessRunner::with_work(Arc::new(|_: &Job| panic!("boom")));
        let a = runner
            .start(&job("backup"))
            .wait_until(Utc::now() + chrono::Duration::seconds(10))
            .unwrap();
        assert_eq!(a.error_kind, Some(ErrorKind::Other));
        assert!(a.error.contains("internal error"), "{}", a.error);
    }
}
