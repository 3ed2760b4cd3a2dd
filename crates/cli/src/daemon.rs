//! The daemon: runs the configured jobs on their schedules, catches up on
//! runs missed while the machine was off, retries temporary failures with
//! backoff, records every attempt in the run history, and raises alerts
//! (failed jobs, suspect snapshots, failed drills, disks filling up, and no
//! backup for too long).
//!
//! Jobs run one at a time, each as a child `ledgervault` process, so a job
//! never overlaps another (or itself), a crash in a job cannot take the
//! daemon down, and the daemon holds no repository open between runs. A
//! file lock beside the run history keeps a second daemon on the same
//! config from starting.
//!
//! No job hangs the daemon: each has a timeout (`[daemon] backup_timeout`
//! and the like), after which its whole process group is killed, the run
//! recorded as failed and an alert sent. While a job runs, the daemon
//! wakes on the watch schedule to run the dead man's switch, so silence is
//! reported whatever a job is doing.
//!
//! Time comes from a [`Clock`], and jobs run through a [`Runner`], so the
//! tests drive schedules, outages, failures and hung jobs without waiting.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Local, Utc};

use crate::alert::{Alert, AlertKind};
use crate::config::Config;
use crate::history::{History, Outcome, Run};
use crate::schedule::Schedule;
use crate::ui::exit;
use ledgervault_service::ErrorKind;

pub use ledgervault_service::jobs::{jobs, Job, JobKind};

/// One attempt's result, as the child process reported it.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// `None` when it was killed by a signal or could not start.
    pub exit_code: Option<i32>,
    /// Its `--json` output, when it printed one.
    pub json: Option<serde_json::Value>,
    /// Its last error line.
    pub error: String,
    /// The kind of its error, as it reported it (`--json`'s error object);
    /// `None` when it reported none (it succeeded, or was killed).
    pub error_kind: Option<ErrorKind>,
    /// Set when the job was not run at all (it needs a person).
    pub skipped: Option<String>,
    /// Set when it ran past its timeout and was killed.
    pub timed_out: bool,
    /// What it wrote: its standard error, then its result.
    pub log: String,
}

/// Starts attempts of jobs.
pub trait Runner {
    /// Starts one attempt of `job`; it runs until waited for or killed.
    fn start(&mut self, job: &Job) -> Box<dyn Running>;
    /// Results of attempts that could not be stopped at their timeout and
    /// ended since (the job's name and what it reported).
    fn late(&mut self) -> Vec<(String, Attempt)> {
        Vec::new()
    }
}

/// One attempt under way.
pub trait Running {
    /// Waits until the attempt ends (its result) or `until` comes (`None`).
    fn wait_until(&mut self, until: DateTime<Utc>) -> Option<Attempt>;
    /// Ends the attempt now (every process it started) and returns what it
    /// reported so far.
    fn kill(&mut self) -> Attempt;
}

/// An attempt that ended before it started (skipped, or could not start).
struct Ended(Attempt);

impl Running for Ended {
    fn wait_until(&mut self, _: DateTime<Utc>) -> Option<Attempt> {
        Some(self.0.clone())
    }
    fn kill(&mut self) -> Attempt {
        self.0.clone()
    }
}

/// The daemon's time.
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
    /// Waits until `t`; returns false when the daemon should stop instead.
    fn sleep_until(&self, t: DateTime<Utc>) -> bool;
}

/// Set by SIGTERM and SIGINT.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The machine's clock; sleeps in short steps so a stop request is seen
/// within a second, and re-plans at least every minute (suspend, clock
/// changes).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> bool {
        let until = t.min(Utc::now() + chrono::Duration::seconds(60));
        while Utc::now() < until {
            if STOP.load(Ordering::SeqCst) {
                return false;
            }
            let left = (until - Utc::now()).to_std().unwrap_or_default();
            std::thread::sleep(left.min(std::time::Duration::from_millis(250)));
        }
        !STOP.load(Ordering::SeqCst)
    }
}

/// The scheduler.
pub struct Daemon<'a> {
    pub jobs: Vec<Job>,
    pub watch: Schedule,
    pub history: History,
    pub clock: &'a dyn Clock,
    pub runner: &'a mut dyn Runner,
    /// Sends an alert; returns one line per channel that failed.
    pub notify: &'a mut dyn FnMut(&Alert) -> Vec<String>,
    pub retries: u32,
    pub retry_delay: chrono::Duration,
    pub no_backup_within: chrono::Duration,
    pub full_within: chrono::Duration,
    /// When this daemon started (the dead man's switch counts from here
    /// when no backup ever succeeded).
    pub started: DateTime<Utc>,
    pub log: &'a mut dyn FnMut(&str),
    /// Asks the primary repository's storage for its free bytes, within a
    /// few seconds; run by the watch, on its own timer, whatever a job is
    /// doing. `Err` when it did not answer; `Ok(None)` when it cannot say.
    pub disk: Option<Box<dyn Fn() -> DiskReading + 'a>>,
    /// Reloads the config file when it changes (the console's settings
    /// page, or an editor): schedules, retries and alert thresholds here,
    /// and whatever `applied` does with the new config (alert channels).
    pub reload: Option<Reload<'a>>,
}

/// Where the config file is, how it looked when last read, and what else
/// follows a reload.
pub struct Reload<'a> {
    pub path: std::path::PathBuf,
    pub seen: Option<(std::time::SystemTime, u64)>,
    pub applied: Box<dyn FnMut(&Config) + 'a>,
}

impl Reload<'_> {
    /// The file's modification time and size, as a stamp of its version.
    pub fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

/// What a storage probe found: free bytes, or why there is no answer.
pub type DiskReading = std::result::Result<Option<u64>, String>;

impl<'a> Daemon<'a> {
    pub fn from_config(
        cfg: &Config,
        history: History,
        clock: &'a dyn Clock,
        runner: &'a mut dyn Runner,
        notify: &'a mut dyn FnMut(&Alert) -> Vec<String>,
        log: &'a mut dyn FnMut(&str),
    ) -> Daemon<'a> {
        Daemon {
            jobs: jobs(cfg),
            watch: cfg.schedule_of(&cfg.schedule.watch, "hourly"),
            history,
            started: clock.now(),
            clock,
            runner,
            notify,
            retries: cfg.daemon.retries.unwrap_or(3),
            retry_delay: cfg.duration(&cfg.daemon.retry_delay, "1m"),
            no_backup_within: cfg.duration(&cfg.alerts.no_backup_within, "26h"),
            full_within: cfg.duration(&cfg.alerts.full_within, "30d"),
            log,
            disk: None,
            reload: None,
        }
    }

    /// Takes the schedules, retries and alert thresholds of `cfg`.
    fn adopt(&mut self, cfg: &Config) {
        self.jobs = jobs(cfg);
        self.watch = cfg.schedule_of(&cfg.schedule.watch, "hourly");
        self.retries = cfg.daemon.retries.unwrap_or(3);
        self.retry_delay = cfg.duration(&cfg.daemon.retry_delay, "1m");
        self.no_backup_within = cfg.duration(&cfg.alerts.no_backup_within, "26h");
        self.full_within = cfg.duration(&cfg.alerts.full_within, "30d");
    }

    /// Reloads the config file if it changed since it was last read. A
    /// file that no longer loads is reported, and the settings in use
    /// stay.
    pub fn reload_if_changed(&mut self) {
        let Some(r) = self.reload.as_mut() else {
            return;
        };
        let stamp = Reload::stamp(&r.path);
        if stamp == r.seen {
            return;
        }
        r.seen = stamp;
        let path = r.path.clone();
        match Config::load(Some(&path)) {
            Ok(cfg) => {
                self.adopt(&cfg);
                if let Some(r) = self.reload.as_mut() {
                    (r.applied)(&cfg);
                }
                let jobs = self
                    .jobs
                    .iter()
                    .map(|j| format!("{} ({})", j.name, j.schedule))
                    .collect::<Vec<_>>()
                    .join(", ");
                (self.log)(&format!("the config file changed: reloaded; jobs: {jobs}"));
            }
            Err(e) => (self.log)(&format!(
                "warning: the config file changed but does not load; the settings in use stay: {e:#}"
            )),
        }
    }

    /// Whether `job` has a run due at `now`: its latest scheduled time has
    /// passed and no attempt started since (a missed run is caught up).
    pub fn is_due(&self, job: &Job, now: DateTime<Utc>) -> Result<bool> {
        let local = now.with_timezone(&Local);
        let Some(slot) = job.schedule.last_at_or_before(&local) else {
            return Ok(false);
        };
        Ok(match self.history.last(&job.name)? {
            None => true,
            Some(r) => r.started < slot.with_timezone(&Utc),
        })
    }

    /// When the next scheduled time of any job (or the watch) comes.
    pub fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let local = now.with_timezone(&Local);
        self.jobs
            .iter()
            .map(|j| &j.schedule)
            .chain(std::iter::once(&self.watch))
            .filter_map(|s| s.next_after(&local))
            .map(|t| t.with_timezone(&Utc))
            .min()
            .unwrap_or(now + chrono::Duration::hours(1))
    }

    /// Runs every due job once, then the watch. Returns false when asked to
    /// stop part way.
    pub fn run_due(&mut self) -> Result<bool> {
        let jobs = self.jobs.clone();
        for job in &jobs {
            self.record_late()?;
            if STOP.load(Ordering::SeqCst) {
                return Ok(false);
            }
            if !self.is_due(job, self.clock.now())? {
                continue;
            }
            // A drill or a prune before the first backup has nothing to
            // work on (and a drill would "fail" on an empty repository);
            // they stay due and run after the first good backup.
            if matches!(job.kind, JobKind::Verify | JobKind::Prune)
                && self.history.last_success("backup")?.is_none()
            {
                (self.log)(&format!(
                    "{}: waiting for the first successful backup",
                    job.name
                ));
                continue;
            }
            if !self.run_job(job)? {
                return Ok(false);
            }
        }
        self.record_late()?;
        self.watch(self.clock.now())?;
        Ok(true)
    }

    /// Records what jobs left running past their timeout did when they
    /// ended at last, with the alerts that follow (a suspect snapshot, a
    /// failed drill): a result is never lost because it came late.
    fn record_late(&mut self) -> Result<()> {
        for (name, a) in self.runner.late() {
            // The job as configured now, or (renamed or removed since) as
            // its name says, so that its alerts still go out.
            let job = self
                .jobs
                .iter()
                .find(|j| j.name == name)
                .cloned()
                .unwrap_or_else(|| Job {
                    name: name.clone(),
                    kind: match name.as_str() {
                        "backup" => JobKind::Backup,
                        "verify" => JobKind::Verify,
                        "prune" => JobKind::Prune,
                        other => JobKind::Copy(other.trim_start_matches("copy:").to_string()),
                    },
                    schedule: self.watch.clone(),
                    timeout: chrono::Duration::zero(),
                });
            let now = self.clock.now();
            let (outcome, message) = match a.exit_code {
                Some(exit::OK) => (Outcome::Ok, "finished after its timeout".to_string()),
                Some(exit::INCOMPLETE) => (
                    Outcome::Warning,
                    "finished after its timeout, but some files could not be read".to_string(),
                ),
                Some(exit::SUSPECT) => (
                    Outcome::Warning,
                    "finished after its timeout: snapshot stored but SUSPECT (ransomware alarm)"
                        .to_string(),
                ),
                _ => (
                    Outcome::Failed,
                    format!("finished after its timeout, and failed: {}", a.error),
                ),
            };
            let mut run = Run {
                job: name.clone(),
                started: now,
                finished: now,
                attempt: 1,
                outcome,
                exit_code: a.exit_code,
                message,
                bytes_read: 0,
                bytes_added: 0,
                bytes_stored: 0,
                snapshot: None,
                id: 0,
            };
            if let Some(j) = &a.json {
                fill_figures(&mut run, j);
            }
            (self.log)(&format!("{name}: {:?}: {}", run.outcome, run.message));
            run.id = self.history.record(&run)?;
            self.history.set_log(run.id, &a.log)?;
            self.after_run(&job, &run, &a)?;
        }
        Ok(())
    }

    /// Runs until the clock says stop.
    pub fn run_forever(&mut self) -> Result<()> {
        loop {
            self.reload_if_changed();
            if !self.run_due()? {
                return Ok(());
            }
            let next = self.next_wake(self.clock.now());
            if !self.clock.sleep_until(next) {
                return Ok(());
            }
        }
    }

    /// Runs one job with retries; returns false if a stop came while
    /// waiting to retry.
    pub fn run_job(&mut self, job: &Job) -> Result<bool> {
        let mut delay = self.retry_delay;
        for attempt in 1..=self.retries + 1 {
            // What an earlier, stuck attempt did, before this one starts.
            self.record_late()?;
            let started = self.clock.now();
            (self.log)(&format!("{}: starting (attempt {attempt})", job.name));
            let a = self.attempt(job, started)?;
            let finished = self.clock.now();
            let mut run = Run {
                job: job.name.clone(),
                started,
                finished,
                attempt,
                outcome: Outcome::Ok,
                exit_code: a.exit_code,
                message: String::new(),
                bytes_read: 0,
                bytes_added: 0,
                bytes_stored: 0,
                snapshot: None,
                id: 0,
            };
            if let Some(why) = &a.skipped {
                run.outcome = Outcome::Skipped;
                run.message = why.clone();
                (self.log)(&format!("{}: skipped: {why}", job.name));
                run.id = self.history.record(&run)?;
                self.history.set_log(run.id, why)?;
                return Ok(true);
            }
            if let Some(j) = &a.json {
                fill_figures(&mut run, j);
            }
            // Whether trying again may help is the error's own kind; a job
            // that reported none (killed by a signal, or an older binary)
            // is judged by its exit code. A job that hung would hang again:
            // not retried.
            let temporary = match a.error_kind {
                Some(kind) => kind.is_temporary(),
                None => matches!(
                    a.exit_code,
                    Some(exit::ERROR | exit::NO_REPOSITORY | exit::LOCKED) | None
                ),
            } && !a.timed_out
                && !STOP.load(Ordering::SeqCst);
            let last = attempt > self.retries;
            match a.exit_code {
                Some(exit::OK) => {
                    run.message = match &run.snapshot {
                        Some(id) => format!(
                            "done: snapshot {}, {} read, {} new, {} stored",
                            &id[..id.len().min(8)],
                            crate::ui::size(run.bytes_read),
                            crate::ui::size(run.bytes_added),
                            crate::ui::size(run.bytes_stored)
                        ),
                        None if run.bytes_added > 0 => format!(
                            "done: {} new, {} stored",
                            crate::ui::size(run.bytes_added),
                            crate::ui::size(run.bytes_stored)
                        ),
                        None => "done".into(),
                    }
                }
                Some(exit::INCOMPLETE) => {
                    run.outcome = Outcome::Warning;
                    run.message = "done, but some files could not be read".into();
                }
                Some(exit::SUSPECT) => {
                    run.outcome = Outcome::Warning;
                    run.message = "snapshot stored but SUSPECT (ransomware alarm)".into();
                }
                Some(exit::DRILL_FAILED | exit::DAMAGED) if job.kind == JobKind::Verify => {
                    run.outcome = Outcome::Failed;
                    run.message = format!("restore drill failed: {}", a.error);
                }
                _ if a.timed_out => {
                    run.outcome = Outcome::Failed;
                    run.message = format!(
                        "timed out after {} and was stopped (is the storage hung?){}",
                        human_duration(job.timeout),
                        if a.error.is_empty() {
                            String::new()
                        } else {
                            format!("; its last words: {}", a.error)
                        }
                    );
                }
                _ => {
                    run.outcome = Outcome::Failed;
                    run.message = if a.error.is_empty() {
                        match a.exit_code {
                            Some(c) => format!("exit code {c}"),
                            None => "stopped by a signal".into(),
                        }
                    } else {
                        a.error.clone()
                    };
                    if temporary && !last {
                        run.message.push_str(&format!(
                            " (temporary; retrying in {})",
                            human_duration(delay)
                        ));
                    }
                }
            }
            (self.log)(&format!("{}: {:?}: {}", job.name, run.outcome, run.message));
            run.id = self.history.record(&run)?;
            let mut log = a.log.clone();
            if a.timed_out {
                log.push_str(&format!(
                    "\n[stopped by the daemon after {}]\n",
                    human_duration(job.timeout)
                ));
            }
            if log.trim().is_empty() {
                log = run.message.clone();
            }
            self.history.set_log(run.id, &log)?;
            self.after_run(job, &run, &a)?;
            if run.outcome == Outcome::Failed && temporary && !last {
                if !self.clock.sleep_until(self.clock.now() + delay) {
                    return Ok(false);
                }
                // Doubling, but never past a day (or the configured delay,
                // if longer), so many retries cannot overflow the clock.
                delay = (delay * 2).min(self.retry_delay.max(chrono::Duration::days(1)));
                continue;
            }
            let drill_failed = job.kind == JobKind::Verify
                && matches!(a.exit_code, Some(exit::DRILL_FAILED | exit::DAMAGED));
            if run.outcome == Outcome::Failed && !drill_failed {
                self.alert(
                    None,
                    Alert::new(
                        AlertKind::JobFailed,
                        format!("{} failed", job.name),
                        format!(
                            "The {} job failed after {attempt} attempt(s): {}",
                            job.name, run.message
                        ),
                    ),
                )?;
            }
            return Ok(true);
        }
        Ok(true)
    }

    /// Runs one attempt of `job` to its end or its timeout. Meanwhile the
    /// watch runs on its own schedule, so a hung job cannot silence the
    /// dead man's switch.
    fn attempt(&mut self, job: &Job, started: DateTime<Utc>) -> Result<Attempt> {
        let mut running = self.runner.start(job);
        let deadline = started + job.timeout;
        let mut next_watch = self.next_watch(started);
        loop {
            if let Some(a) = running.wait_until(deadline.min(next_watch)) {
                return Ok(a);
            }
            let now = self.clock.now();
            if now >= deadline {
                (self.log)(&format!(
                    "{}: still running after {}: stopping it",
                    job.name,
                    human_duration(job.timeout)
                ));
                let mut a = running.kill();
                // One that ended as it was being stopped reports its result.
                a.timed_out = a.exit_code.is_none();
                return Ok(a);
            }
            if now >= next_watch {
                self.watch(now)?;
                next_watch = self.next_watch(now);
            }
        }
    }

    fn next_watch(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        self.watch
            .next_after(&after.with_timezone(&Local))
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(after + chrono::Duration::hours(1))
    }

    /// Alerts that follow from one run's result.
    fn after_run(&mut self, job: &Job, run: &Run, a: &Attempt) -> Result<()> {
        match (a.exit_code, &job.kind) {
            (Some(exit::SUSPECT), _) => self.alert(
                None,
                Alert::new(
                    AlertKind::SuspectSnapshot,
                    format!(
                        "suspect snapshot {}",
                        run.snapshot.as_deref().unwrap_or("?")
                    ),
                    "The nightly backup saw pages of a database turn into random-looking bytes, \
                     or a database stop being valid: the signs of ransomware. The snapshot was \
                     stored and marked suspect; forget keeps every snapshot from before it. \
                     Check the server before trusting new backups.",
                ),
            )?,
            (Some(exit::DRILL_FAILED | exit::DAMAGED), JobKind::Verify) => self.alert(
                None,
                Alert::new(
                    AlertKind::DrillFailed,
                    "restore drill failed",
                    format!(
                        "The restore drill did not prove the backup restorable: {}. \
                         Run `ledgervault verify` to see every check.",
                        a.error
                    ),
                ),
            )?,
            (Some(exit::INCOMPLETE), _) => self.alert(
                None,
                Alert::new(
                    AlertKind::JobFailed,
                    format!("{}: some files could not be read", job.name),
                    "The snapshot was stored without them; `ledgervault -c FILE status` and the \
                     daemon's log name them.",
                ),
            )?,
            _ => {}
        }
        if job.kind == JobKind::Backup && run.outcome.succeeded() {
            self.history.clear_alert("no_backup")?;
        }
        if let Some(days) = a
            .json
            .as_ref()
            .and_then(|j| j.pointer("/repository/days_until_full"))
            .and_then(|d| d.as_f64())
        {
            // Clamped: a repository that barely grows reports a figure
            // beyond what a Duration holds.
            let left = chrono::Duration::seconds((days.clamp(0.0, 1e6) * 86400.0) as i64);
            let key = format!("full:{}", job.name);
            if left < self.full_within {
                self.alert(
                    Some((&key, chrono::Duration::days(1))),
                    Alert::new(
                        AlertKind::DestinationFull,
                        format!("backup disk full in about {days:.0} days ({})", job.name),
                        "At the rate the repository grows, its disk fills soon. Add space, \
                         or tighten the retention policy and prune.",
                    ),
                )?;
            } else {
                self.history.clear_alert(&key)?;
            }
        }
        Ok(())
    }

    /// The watch: the dead man's switch (no successful backup within the
    /// window), then the storage itself (answering, and not filling up).
    pub fn watch(&mut self, now: DateTime<Utc>) -> Result<()> {
        self.dead_mans_switch(now)?;
        self.check_disk(now)
    }

    /// Free space on the repository's storage against how fast backups
    /// have grown it over the last week; storage that does not answer.
    fn check_disk(&mut self, now: DateTime<Utc>) -> Result<()> {
        let Some(probe) = &self.disk else {
            return Ok(());
        };
        match probe() {
            Err(why) => self.alert(
                Some(("storage_silent", chrono::Duration::days(1))),
                Alert::new(
                    AlertKind::StorageUnreachable,
                    format!("backup storage does not answer: {why}"),
                    "The repository's storage did not answer the daemon's check. A dead or \
                     hard-mounted network share makes every backup hang; check the NAS or \
                     the mount.",
                ),
            ),
            Ok(None) => Ok(()),
            Ok(Some(free)) => {
                self.history.clear_alert("storage_silent")?;
                let week = now - chrono::Duration::days(7);
                let added: u64 = self
                    .history
                    .recent(500)?
                    .iter()
                    .filter(|r| r.job == "backup" && r.outcome.succeeded() && r.finished > week)
                    .map(|r| r.bytes_added)
                    .sum();
                if added == 0 {
                    return Ok(());
                }
                let per_day = added as f64 / 7.0;
                let days = free as f64 / per_day;
                let left = chrono::Duration::seconds((days.clamp(0.0, 1e6) * 86400.0) as i64);
                if left < self.full_within {
                    self.alert(
                        Some(("full:watch", chrono::Duration::days(1))),
                        Alert::new(
                            AlertKind::DestinationFull,
                            format!("backup disk full in about {days:.0} days"),
                            format!(
                                "{} free, and backups added {} in the last week. Add space, \
                                 or tighten the retention policy and prune.",
                                crate::ui::size(free),
                                crate::ui::size(added)
                            ),
                        ),
                    )
                } else {
                    self.history.clear_alert("full:watch")
                }
            }
        }
    }

    /// The dead man's switch: no successful backup within the window.
    fn dead_mans_switch(&mut self, now: DateTime<Utc>) -> Result<()> {
        let last = self.history.last_success("backup")?.map(|r| r.finished);
        let since = match last {
            Some(t) => t,
            None => self
                .history
                .first_start()?
                .unwrap_or(self.started)
                .min(self.started),
        };
        if now - since > self.no_backup_within {
            let hours = (now - since).num_hours();
            let (summary, detail) = match last {
                Some(t) => (
                    format!("no successful backup for {hours} hours"),
                    format!("The last successful backup finished at {}.", t.to_rfc3339()),
                ),
                None => (
                    "no backup has ever succeeded".to_string(),
                    format!(
                        "No scheduled backup has succeeded since the daemon first ran, at {} \
                         ({hours} hours ago).",
                        since.to_rfc3339()
                    ),
                ),
            };
            self.alert(
                Some(("no_backup", self.no_backup_within)),
                Alert::new(
                    AlertKind::NoRecentBackup,
                    summary,
                    format!("{detail} Check the daemon's log and `ledgervault -c FILE status`."),
                ),
            )?;
        }
        Ok(())
    }

    /// Sends an alert. With a key, at most once per `every`.
    fn alert(&mut self, once: Option<(&str, chrono::Duration)>, a: Alert) -> Result<()> {
        let now = self.clock.now();
        if let Some((key, every)) = once {
            if let Some(sent) = self.history.alert_sent(key)? {
                if now - sent < every {
                    return Ok(());
                }
            }
            self.history.set_alert_sent(key, now)?;
        }
        (self.log)(&format!("ALERT: {}", a.summary));
        let mut a = a;
        a.time = now;
        for failure in (self.notify)(&a) {
            (self.log)(&format!("warning: alert not delivered: {failure}"));
        }
        Ok(())
    }
}

fn fill_figures(run: &mut Run, j: &serde_json::Value) {
    let n = |k: &str| j.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    run.bytes_read = n("bytes_read");
    run.bytes_added = n("bytes_new").max(n("bytes_written"));
    run.bytes_stored = n("bytes_stored");
    run.snapshot = j
        .get("snapshot_id")
        .and_then(|v| v.as_str())
        .map(String::from);
}

pub use ledgervault_service::status::human_duration;

/// Why the daemon skips forget and prune without a maintenance key.
pub const PRUNE_NEEDS_A_PERSON: &str =
    "forget and prune need a person: the daemon forgets and prunes only \
     with [repository] maintenance_password_file, and none is configured. \
     Run `ledgervault -c FILE forget --prune`.";

/// Runs jobs as child `ledgervault` processes with the daemon's config.
pub struct ProcessRunner<'c> {
    pub cfg: &'c Config,
}

impl ProcessRunner<'_> {
    fn args(&self, job: &Job) -> std::result::Result<Vec<String>, String> {
        // The file as it is now (the settings page may have changed the
        // drill interval or the maintenance key); as it was at start when
        // it no longer loads.
        let fresh = self
            .cfg
            .file
            .as_deref()
            .and_then(|f| Config::load(Some(f)).ok());
        let cfg = fresh.as_ref().unwrap_or(self.cfg);
        let mut args = vec![
            "--config".to_string(),
            cfg.file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "--json".into(),
            "--quiet".into(),
        ];
        let repo = cfg.repository.as_ref();
        match &job.kind {
            JobKind::Backup => {
                args.extend(["--append-only".into(), "backup".into()]);
                args.extend(["--tag".into(), "scheduled".into()]);
            }
            JobKind::Copy(name) => args.extend(["copy".into(), "--to".into(), name.clone()]),
            JobKind::Verify => {
                let every = cfg.verify.interval.clone().unwrap_or_else(|| "60d".into());
                args.extend(["verify".into(), "--if-older-than".into(), every]);
            }
            JobKind::Prune => {
                let Some(key) = repo.and_then(|r| r.maintenance_password_file.as_ref()) else {
                    // Whatever key password_file opens, the daemon forgets
                    // and prunes only with the maintenance key.
                    return Err(PRUNE_NEEDS_A_PERSON.into());
                };
                args.extend([
                    "--password-file".into(),
                    key.get_ref().display().to_string(),
                    "forget".into(),
                    "--prune".into(),
                ]);
            }
        }
        Ok(args)
    }
}

impl Runner for ProcessRunner<'_> {
    fn start(&mut self, job: &Job) -> Box<dyn Running> {
        let ended = |a: Attempt| -> Box<dyn Running> { Box::new(Ended(a)) };
        let args = match self.args(job) {
            Ok(a) => a,
            Err(why) => {
                return ended(Attempt {
                    skipped: Some(why),
                    ..Attempt::default()
                })
            }
        };
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                return ended(Attempt {
                    error: format!("cannot find the ledgervault program: {e}"),
                    ..Attempt::default()
                })
            }
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env_remove("LEDGERVAULT_REPOSITORY")
            .env_remove("LEDGERVAULT_PASSWORD_FILE");
        // Its own process group: a Ctrl-C meant for the daemon lets the
        // running job finish instead of killing it, and a timeout kills
        // the job with everything it started (pg_dump, psql).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        match cmd.spawn() {
            Ok(mut child) => {
                let out = child.stdout.take().map(|o| read_on_thread(o, 16 << 20));
                let err = child.stderr.take().map(|e| read_on_thread(e, 1 << 20));
                Box::new(ChildRun { child, out, err })
            }
            Err(e) => ended(Attempt {
                error: format!("cannot start ledgervault: {e}"),
                ..Attempt::default()
            }),
        }
    }
}

/// Reads a child's output on a thread (so a full pipe never blocks it),
/// keeping at most `limit` bytes.
fn read_on_thread(
    mut r: impl std::io::Read + Send + 'static,
    limit: u64,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = r.by_ref().take(limit).read_to_end(&mut buf);
        // Drain the rest, so the child is never stuck on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        buf
    })
}

/// A job running as a child process.
struct ChildRun {
    child: std::process::Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl ChildRun {
    /// What the attempt reported. With `deadline`, output readers still
    /// blocked then (a killed job stuck in the kernel keeps its pipes open)
    /// are left behind rather than waited for.
    fn attempt(
        &mut self,
        status: Option<std::process::ExitStatus>,
        deadline: Option<std::time::Instant>,
    ) -> Attempt {
        let take = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            let h = h?;
            if let Some(d) = deadline {
                while !h.is_finished() && std::time::Instant::now() < d {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                if !h.is_finished() {
                    return None;
                }
            }
            h.join().ok()
        };
        let take = |h| take(h).unwrap_or_default();
        let stdout = take(self.out.take());
        let stderr = take(self.err.take());
        let stderr = String::from_utf8_lossy(&stderr);
        // The last JSON document it printed (a command that printed its
        // result and then failed prints its error object after it).
        let json: Option<serde_json::Value> = serde_json::Deserializer::from_slice(&stdout)
            .into_iter::<serde_json::Value>()
            .map_while(|v| v.ok())
            .last();
        // A failed command says what kind of failure it was in its error
        // object; its message then comes from there too.
        let reported = json.as_ref().and_then(|j| j.get("error"));
        let error_kind = reported
            .and_then(|e| e.get("kind"))
            .and_then(|k| serde_json::from_value::<ErrorKind>(k.clone()).ok());
        let error = match reported
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
        {
            Some(m) => format!("error: {m}"),
            None => stderr
                .lines()
                .rev()
                .find(|l| l.contains("error:") || l.contains("ALARM") || l.contains("FAILED"))
                .or_else(|| stderr.lines().last())
                .unwrap_or("")
                .trim()
                .trim_start_matches("ledgervault: ")
                .to_string(),
        };
        let mut log = stderr.trim_end().to_string();
        if let Some(j) = &json {
            if !log.is_empty() {
                log.push('\n');
            }
            log.push_str(&serde_json::to_string_pretty(j).unwrap_or_default());
        }
        Attempt {
            exit_code: status.and_then(|s| s.code()),
            json,
            error,
            error_kind,
            skipped: None,
            timed_out: false,
            log,
        }
    }
}

impl Running for ChildRun {
    fn wait_until(&mut self, until: DateTime<Utc>) -> Option<Attempt> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(self.attempt(Some(status), None)),
                Ok(None) => {}
                Err(e) => {
                    return Some(Attempt {
                        error: format!("cannot wait for the job: {e}"),
                        ..Attempt::default()
                    })
                }
            }
            let left = (until - Utc::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return None;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
        }
    }

    fn kill(&mut self) -> Attempt {
        // The child leads its own process group (see `start`).
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on a process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        // A process stuck in the kernel (a dead disk) may not die at once:
        // waiting is bounded, so the daemon and its watch go on.
        let deadline = std::time::Instant::now() + KILL_WAIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                }
                _ => break None,
            }
        };
        self.attempt(status, Some(deadline))
    }
}

/// How long a killed job may take to die before the daemon goes on without
/// waiting for it.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl ChildRun {
    #[cfg(test)]
    fn spawn_for_test(cmd: &mut std::process::Command) -> ChildRun {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut o = child.stdout.take().unwrap();
        let mut e = child.stderr.take().unwrap();
        ChildRun {
            child,
            out: Some(std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = o.read_to_end(&mut v);
                v
            })),
            err: Some(std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = e.read_to_end(&mut v);
                v
            })),
        }
    }
}

/// Holds the daemon lock: one daemon per config.
pub struct DaemonLock {
    _file: std::fs::File,
}

pub fn lock_daemon(history: &std::path::Path) -> Result<DaemonLock> {
    use std::os::fd::AsRawFd;
    let path = history.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another ledgervault daemon is running with this config (it holds {})",
            path.display()
        );
    }
    Ok(DaemonLock { _file: file })
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT ask the daemon to stop after the running job.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Each run: job, start, finish.
    type Runs = Rc<RefCell<Vec<(String, DateTime<Utc>, DateTime<Utc>)>>>;

    /// Time that moves only when the daemon sleeps or a job runs.
    struct FakeClock {
        now: Cell<DateTime<Utc>>,
        end: DateTime<Utc>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            self.now.get()
        }
        fn sleep_until(&self, t: DateTime<Utc>) -> bool {
            if t > self.end {
                return false;
            }
            self.now.set(t.max(self.now.get()));
            true
        }
    }

    /// Plays scripted exit codes per job (0 once the script runs out);
    /// each run takes `takes` of fake time.
    struct Script {
        clock: Rc<FakeClock>,
        codes: HashMap<String, Vec<i32>>,
        takes: chrono::Duration,
        runs: Runs,
    }

    /// The exit code that makes a scripted job hang until killed.
    const HANG: i32 = -1;
    /// Ends with exit code 1 and an error of kind `usage` (see `Script`).
    const BAD_SETTING: i32 = -2;

    impl Runner for Script {
        fn start(&mut self, job: &Job) -> Box<dyn Running> {
            let start = self.clock.now();
            let code = match self.codes.get_mut(&job.name) {
                Some(v) if !v.is_empty() => v.remove(0),
                _ => 0,
            };
            let finish = if code == HANG {
                DateTime::<Utc>::MAX_UTC
            } else {
                start + self.takes
            };
            self.runs
                .borrow_mut()
                .push((job.name.clone(), start, finish));
            Box::new(FakeRun {
                clock: self.clock.clone(),
                finish,
                attempt: if code == BAD_SETTING {
                    // Exit code 1, which alone would be retried, but the
                    // job said its error is a bad setting.
                    Attempt {
                        exit_code: Some(exit::ERROR),
                        json: None,
                        error: "error: the repository's address is wrong".into(),
                        error_kind: Some(ErrorKind::Usage),
                        skipped: None,
                        timed_out: false,
                        log: String::new(),
                    }
                } else {
                    Attempt {
                        exit_code: Some(code),
                        json: Some(serde_json::json!({"snapshot_id": "abc", "bytes_read": 10})),
                        error: if code == 0 {
                            String::new()
                        } else {
                            format!("error: code {code}")
                        },
                        error_kind: None,
                        skipped: None,
                        timed_out: false,
                        log: String::new(),
                    }
                },
            })
        }
    }

    /// A scripted attempt: ends at `finish` in fake time.
    struct FakeRun {
        clock: Rc<FakeClock>,
        finish: DateTime<Utc>,
        attempt: Attempt,
    }

    impl Running for FakeRun {
        fn wait_until(&mut self, until: DateTime<Utc>) -> Option<Attempt> {
            let now = self.clock.now();
            if self.finish <= until {
                self.clock.now.set(self.finish.max(now));
                Some(self.attempt.clone())
            } else {
                self.clock.now.set(until.max(now));
                None
            }
        }
        fn kill(&mut self) -> Attempt {
            Attempt {
                exit_code: None,
                error: "killed".into(),
                ..Attempt::default()
            }
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    struct Setup {
        _dir: tempfile::TempDir,
        history: std::path::PathBuf,
        clock: Rc<FakeClock>,
        runs: Runs,
        alerts: Rc<RefCell<Vec<Alert>>>,
        /// The storage probe the next daemon gets.
        disk: RefCell<Option<Box<dyn Fn() -> DiskReading>>>,
    }

    fn setup(start: &str, end: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        Setup {
            history: dir.path().join("h.sqlite"),
            _dir: dir,
            clock: Rc::new(FakeClock {
                now: Cell::new(t(start)),
                end: t(end),
            }),
            runs: Rc::default(),
            alerts: Rc::default(),
            disk: RefCell::new(None),
        }
    }

    /// Runs a daemon with `jobs` (name, schedule) until the clock ends.
    fn run(
        s: &Setup,
        jobs: &[(&str, &str)],
        codes: &[(&str, Vec<i32>)],
        takes: chrono::Duration,
        retries: u32,
    ) {
        let mut runner = Script {
            clock: s.clock.clone(),
            codes: codes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            takes,
            runs: s.runs.clone(),
        };
        let alerts = s.alerts.clone();
        let mut notify = move |a: &Alert| {
            alerts.borrow_mut().push(a.clone());
            Vec::new()
        };
        let mut log = |_: &str| {};
        let clock = s.clock.clone();
        let mut d = Daemon {
            jobs: jobs
                .iter()
                .map(|(n, sch)| Job {
                    name: n.to_string(),
                    kind: match *n {
                        "verify" => JobKind::Verify,
                        "prune" => JobKind::Prune,
                        "backup" => JobKind::Backup,
                        other => JobKind::Copy(other.to_string()),
                    },
                    schedule: Schedule::parse(sch).unwrap(),
                    timeout: chrono::Duration::hours(4),
                })
                .collect(),
            watch: Schedule::parse("hourly").unwrap(),
            history: History::open(&s.history).unwrap(),
            clock: clock.as_ref(),
            runner: &mut runner,
            notify: &mut notify,
            retries,
            retry_delay: chrono::Duration::minutes(1),
            no_backup_within: chrono::Duration::hours(26),
            full_within: chrono::Duration::days(30),
            started: s.clock.now(),
            log: &mut log,
            disk: s.disk.borrow_mut().take(),
            reload: None,
        };
        d.run_forever().unwrap();
    }

    #[test]
    fn a_result_that_comes_after_the_timeout_is_recorded_and_alerted() {
        // A runner whose job, stopped at its timeout, ended later as
        // suspect (in-process jobs cannot be stopped).
        struct Late(Option<Attempt>);
        impl Runner for Late {
            fn start(&mut self, _: &Job) -> Box<dyn Running> {
                Box::new(Ended(Attempt {
                    skipped: Some("not now".into()),
                    ..Attempt::default()
                }))
            }
            fn late(&mut self) -> Vec<(String, Attempt)> {
                self.0
                    .take()
                    .map(|a| vec![("backup".to_string(), a)])
                    .unwrap_or_default()
            }
        }
        let s = setup("2026-03-02T00:00:00Z", "2026-03-02T00:00:01Z");
        let mut runner = Late(Some(Attempt {
            exit_code: Some(exit::SUSPECT),
            json: Some(serde_json::json!({"snapshot_id": "abcdef0123", "bytes_read": 10})),
            log: "ALARM: books.db".into(),
            ..Attempt::default()
        }));
        let alerts = s.alerts.clone();
        let mut notify = move |a: &Alert| {
            alerts.borrow_mut().push(a.clone());
            Vec::new()
        };
        let mut log = |_: &str| {};
        let clock = s.clock.clone();
        let cfg = Config::load(None).unwrap();
        let mut d = Daemon::from_config(
            &cfg,
            History::open(&s.history).unwrap(),
            clock.as_ref(),
            &mut runner,
            &mut notify,
            &mut log,
        );
        d.run_due().unwrap();
        let late = d.history.recent(50).unwrap();
        let row = late
            .iter()
            .find(|r| r.message.contains("after its timeout"))
            .unwrap_or_else(|| panic!("{late:?}"));
        assert_eq!(row.job, "backup");
        assert_eq!(row.snapshot.as_deref(), Some("abcdef0123"));
        let (_, log) = d.history.run_with_log(row.id).unwrap().unwrap();
        assert_eq!(log, "ALARM: books.db");
        drop(d);
        assert!(
            s.alerts
                .borrow()
                .iter()
                .any(|a| a.kind == AlertKind::SuspectSnapshot),
            "{:?}",
            s.alerts.borrow()
        );
    }

    #[test]
    fn a_changed_config_file_is_reloaded_and_a_broken_one_is_not() {
        let s = setup("2026-03-02T00:00:00Z", "2026-03-02T00:00:01Z");
        let cfg_path = s._dir.path().join("lv.toml");
        let write = |text: &str| std::fs::write(&cfg_path, text).unwrap();
        write("[schedule]\nbackup = \"daily at 02:00\"\n");
        let cfg = Config::load(Some(&cfg_path)).unwrap();
        let mut runner = Script {
            clock: s.clock.clone(),
            codes: Default::default(),
            takes: chrono::Duration::minutes(1),
            runs: s.runs.clone(),
        };
        let mut notify = |_: &Alert| Vec::new();
        let lines = RefCell::new(Vec::<String>::new());
        let mut log = |m: &str| lines.borrow_mut().push(m.to_string());
        let applied = Rc::new(Cell::new(0));
        let count = applied.clone();
        let clock = s.clock.clone();
        let mut d = Daemon::from_config(
            &cfg,
            History::open(&s.history).unwrap(),
            clock.as_ref(),
            &mut runner,
            &mut notify,
            &mut log,
        );
        d.reload = Some(Reload {
            seen: Reload::stamp(&cfg_path),
            path: cfg_path.clone(),
            applied: Box::new(move |_| count.set(count.get() + 1)),
        });
        let backup_schedule = |d: &Daemon| {
            d.jobs
                .iter()
                .find(|j| j.name == "backup")
                .unwrap()
                .schedule
                .to_string()
        };
        let before = backup_schedule(&d);
        d.reload_if_changed();
        assert_eq!(applied.get(), 0, "reloaded an unchanged file");
        write("[schedule]\nbackup = \"daily at 23:30\"\n\n[daemon]\nretries = 5\n");
        d.reload_if_changed();
        assert_eq!(applied.get(), 1);
        assert_ne!(backup_schedule(&d), before);
        assert!(
            backup_schedule(&d).contains("23:30"),
            "{}",
            backup_schedule(&d)
        );
        assert_eq!(d.retries, 5);
        let good = backup_schedule(&d);
        write("[schedule]\nbackup = \"when pigs fly, twice\"\n");
        d.reload_if_changed();
        assert_eq!(applied.get(), 1);
        assert_eq!(
            backup_schedule(&d),
            good,
            "a broken file replaced the schedule"
        );
        drop(d);
        assert!(
            lines.borrow().iter().any(|l| l.contains("does not load")),
            "{:?}",
            lines.borrow()
        );
    }

    fn names(s: &Setup) -> Vec<(String, DateTime<Utc>)> {
        s.runs
            .borrow()
            .iter()
            .map(|(n, a, _)| (n.clone(), *a))
            .collect()
    }

    /// Killing a hung job never blocks the daemon, even when something
    /// outside the job's process group keeps its output pipe open (as a
    /// process stuck in the kernel would).
    #[test]
    fn a_job_s_error_kind_is_read_from_its_last_json_document() {
        // A result printed first, then the error object (guard does that
        // when the risky command cannot start).
        let mut run = ChildRun::spawn_for_test(
            std::process::Command::new("sh").arg("-c").arg(
                r#"echo '{"snapshot_id": "abc"}'; echo '{"error": {"kind": "wrong_password", "message": "wrong password", "exit_code": 12}}'; echo 'ledgervault: error: wrong password' >&2; exit 12"#,
            ),
        );
        let a = run
            .wait_until(Utc::now() + chrono::Duration::seconds(20))
            .expect("the script ends");
        assert_eq!(a.exit_code, Some(12));
        assert_eq!(a.error_kind, Some(ErrorKind::WrongPassword));
        assert_eq!(a.error, "error: wrong password");
    }

    #[test]
    fn killing_a_job_is_bounded() {
        // The job starts a grandchild in a group of its own (which the kill
        // does not reach) that holds stdout for a minute.
        let mut run = ChildRun::spawn_for_test(
            std::process::Command::new("sh")
                .arg("-c")
                .arg("setsid sleep 60 & sleep 60"),
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        let _ = run.kill();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        let _ = std::process::Command::new("pkill")
            .args(["-f", "^sleep 60$"])
            .status();
    }

    /// The watch asks the storage itself, on its own timer: storage that
    /// does not answer is alerted (while the backup job hangs on it), and
    /// a disk that fills at the week's rate within `full_within` is too.
    #[test]
    fn the_watch_checks_the_storage_whatever_the_jobs_do() {
        let s = setup("2026-11-02T12:00:00Z", "2026-11-03T00:00:00Z");
        *s.disk.borrow_mut() = Some(Box::new(|| Err("did not answer within 3s".into())));
        run(&s, &[], &[], chrono::Duration::minutes(5), 0);
        let alerts = s.alerts.borrow().clone();
        let silent: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::StorageUnreachable)
            .collect();
        assert_eq!(silent.len(), 1, "once a day: {alerts:?}");
        assert!(silent[0].summary.contains("does not answer"));

        // A week of nightly backups adding 1 GB each; 10 GB free: full in
        // about 10 days, within the 30-day warning.
        let s = setup("2026-11-02T00:00:00Z", "2026-11-09T12:00:00Z");
        let h = History::open(&s.history).unwrap();
        for day in 2..9 {
            let at = t(&format!("2026-11-0{day}T01:00:00Z"));
            h.record(&crate::history::Run {
                job: "backup".into(),
                started: at,
                finished: at,
                attempt: 1,
                outcome: crate::history::Outcome::Ok,
                exit_code: Some(0),
                message: String::new(),
                bytes_read: 0,
                bytes_added: 1_000_000_000,
                bytes_stored: 0,
                snapshot: None,
                id: 0,
            })
            .unwrap();
        }
        drop(h);
        *s.disk.borrow_mut() = Some(Box::new(|| Ok(Some(10_000_000_000))));
        run(&s, &[], &[], chrono::Duration::minutes(5), 0);
        let full: Vec<_> = s
            .alerts
            .borrow()
            .iter()
            .filter(|a| a.kind == AlertKind::DestinationFull)
            .cloned()
            .collect();
        assert!(!full.is_empty(), "{:?}", s.alerts.borrow());
        assert!(
            full[0].summary.contains("about 10 days"),
            "{}",
            full[0].summary
        );
        // Plenty of room: nothing.
        let s2 = setup("2026-11-09T12:00:00Z", "2026-11-09T18:00:00Z");
        *s2.disk.borrow_mut() = Some(Box::new(|| Ok(Some(10_000_000_000_000))));
        run(&s2, &[], &[], chrono::Duration::minutes(5), 0);
        assert!(s2
            .alerts
            .borrow()
            .iter()
            .all(|a| a.kind != AlertKind::DestinationFull));
    }

    #[test]
    fn runs_on_schedule_and_catches_up_after_downtime() {
        // Machine on for two days: one backup a night, at the scheduled time
        // (the first at start, since it never ran).
        let s = setup("2026-11-02T12:00:00Z", "2026-11-04T12:00:00Z");
        run(
            &s,
            &[("backup", "every 6 hours")],
            &[],
            chrono::Duration::minutes(5),
            0,
        );
        let first: Vec<_> = names(&s).into_iter().map(|(_, t)| t).collect();
        assert_eq!(first[0], t("2026-11-02T12:00:00Z"));
        assert_eq!(first[1], t("2026-11-02T18:00:00Z"));
        assert_eq!(first.len(), 1 + 8);

        // Off for three days, back on at 10:30: the missed run happens once,
        // at start, then the schedule resumes.
        s.runs.borrow_mut().clear();
        s.clock.now.set(t("2026-11-07T10:30:00Z"));
        let s2 = Setup {
            clock: Rc::new(FakeClock {
                now: Cell::new(t("2026-11-07T10:30:00Z")),
                end: t("2026-11-07T13:00:00Z"),
            }),
            ..s
        };
        run(
            &s2,
            &[("backup", "every 6 hours")],
            &[],
            chrono::Duration::minutes(5),
            0,
        );
        let after: Vec<_> = names(&s2).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            after,
            vec![t("2026-11-07T10:30:00Z"), t("2026-11-07T12:00:00Z")]
        );
    }

    #[test]
    fn runs_never_overlap() {
        // A job every 5 minutes that takes 12: each run starts after the
        // previous one finished, and missed slots collapse into one run.
        let s = setup("2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z");
        run(
            &s,
            &[
                ("backup", "every 5 minutes"),
                ("copy:nas", "every 5 minutes"),
            ],
            &[],
            chrono::Duration::minutes(12),
            0,
        );
        let runs = s.runs.borrow();
        for w in runs.windows(2) {
            assert!(w[1].1 >= w[0].2, "{:?} overlaps {:?}", w[1], w[0]);
        }
        let backups = runs.iter().filter(|r| r.0 == "backup").count();
        assert!((2..=4).contains(&backups), "{backups} backups in an hour");
        // And a second daemon on the same config is refused.
        let _held = lock_daemon(&s.history).unwrap();
        let again = lock_daemon(&s.history).err().unwrap();
        assert!(again.to_string().contains("another ledgervault daemon"));
    }

    #[test]
    fn retries_temporary_failures_with_backoff() {
        let s = setup("2026-11-02T01:59:00Z", "2026-11-02T03:00:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00")],
            &[("backup", vec![exit::LOCKED, exit::ERROR, exit::OK])],
            chrono::Duration::seconds(10),
            3,
        );
        let h = History::open(&s.history).unwrap();
        let all = h.recent(10).unwrap();
        // The first run at start (it never ran) retries twice, with the
        // delay doubling; the retries cover the 02:00 slot.
        let starts: Vec<_> = all
            .iter()
            .rev()
            .map(|r| (r.attempt, r.outcome, r.started))
            .collect();
        assert_eq!(
            starts,
            vec![
                (1, Outcome::Failed, t("2026-11-02T01:59:00Z")),
                (2, Outcome::Failed, t("2026-11-02T02:00:10Z")),
                (3, Outcome::Ok, t("2026-11-02T02:02:20Z")),
            ]
        );
        assert!(
            all[2].message.contains("retrying in 60s"),
            "{}",
            all[2].message
        );
        // Recovered: no alert.
        assert!(s.alerts.borrow().is_empty());
    }

    #[test]
    fn an_error_of_a_lasting_kind_is_not_retried_whatever_its_exit_code() {
        let s = setup("2026-11-02T01:59:00Z", "2026-11-02T03:00:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00")],
            &[("backup", vec![BAD_SETTING, exit::OK])],
            chrono::Duration::seconds(10),
            3,
        );
        let h = History::open(&s.history).unwrap();
        let all = h.recent(10).unwrap();
        // At start: one attempt, failed, not retried, and an alert; the
        // 02:00 slot then runs on its own schedule.
        let first: Vec<_> = all
            .iter()
            .rev()
            .filter(|r| r.started < t("2026-11-02T02:00:00Z"))
            .map(|r| (r.attempt, r.outcome))
            .collect();
        assert_eq!(first, vec![(1, Outcome::Failed)]);
        assert!(!all.iter().any(|r| r.message.contains("retrying")));
        assert_eq!(s.alerts.borrow().len(), 1);
    }

    #[test]
    fn alerts_after_failure_and_after_26_hours_of_silence() {
        // Every backup fails for good (wrong password: not retried).
        let s = setup("2026-11-02T01:00:00Z", "2026-11-04T12:00:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00")],
            &[("backup", vec![exit::WRONG_PASSWORD; 10])],
            chrono::Duration::seconds(30),
            3,
        );
        let alerts = s.alerts.borrow();
        let failed: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::JobFailed)
            .collect();
        // Start, then 02:00 on the 2nd, 3rd and 4th: four failures, four alerts,
        // each after one attempt.
        assert_eq!(failed.len(), 4);
        assert_eq!(s.runs.borrow().len(), 4);
        let silent: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::NoRecentBackup)
            .collect();
        // Silence since 01:00 on the 2nd: the switch trips at 04:00 on the
        // 3rd (26 hours, on the hourly watch) and again 26 hours later.
        assert_eq!(silent.len(), 2, "{silent:?}");
        assert_eq!(silent[0].time, t("2026-11-03T04:00:00Z"));
        // None ever succeeded: the alert says so, not "the last finished at".
        assert_eq!(silent[0].summary, "no backup has ever succeeded");
        assert!(!silent[0].detail.contains("last successful"), "{silent:?}");
        assert_eq!(silent[1].time, t("2026-11-04T06:00:00Z"));
    }

    #[test]
    fn a_good_backup_resets_the_dead_mans_switch() {
        let s = setup("2026-11-02T01:00:00Z", "2026-11-05T12:00:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00")],
            &[],
            chrono::Duration::seconds(30),
            0,
        );
        assert!(s.alerts.borrow().is_empty(), "{:?}", s.alerts.borrow());
    }

    #[test]
    fn suspect_snapshots_and_failed_drills_alert() {
        let s = setup("2026-11-02T01:00:00Z", "2026-11-02T01:30:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00"), ("verify", "daily at 05:00")],
            &[
                ("backup", vec![exit::SUSPECT]),
                ("verify", vec![exit::DRILL_FAILED]),
            ],
            chrono::Duration::seconds(30),
            3,
        );
        let kinds: Vec<_> = s.alerts.borrow().iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![AlertKind::SuspectSnapshot, AlertKind::DrillFailed]
        );
        // Neither is retried.
        assert_eq!(s.runs.borrow().len(), 2);
    }

    #[test]
    fn a_hung_job_is_stopped_recorded_and_alerted_and_the_watch_goes_on() {
        // The backup hangs at 02:00 on the 2nd (a dead NAS); its timeout is
        // 4 hours. The last good backup finished at 02:00:30 on the 1st.
        let s = setup("2026-11-01T01:00:00Z", "2026-11-02T09:00:00Z");
        run(
            &s,
            &[("backup", "daily at 02:00")],
            &[("backup", vec![0, 0, HANG])],
            chrono::Duration::seconds(30),
            3,
        );
        let h = History::open(&s.history).unwrap();
        let all = h.recent(10).unwrap();
        let last = &all[0];
        assert_eq!(last.outcome, Outcome::Failed);
        assert_eq!(last.started, t("2026-11-02T02:00:00Z"));
        assert_eq!(last.finished, t("2026-11-02T06:00:00Z"));
        assert!(
            last.message.contains("timed out after 4h"),
            "{}",
            last.message
        );
        // Not retried: it would hang again.
        assert_eq!(s.runs.borrow().len(), 3);
        let alerts = s.alerts.borrow();
        let kinds: Vec<_> = alerts.iter().map(|a| (a.kind, a.time)).collect();
        // While it hung, the hourly watch still ran: on the first watch
        // more than 26 hours after the last good backup, at 05:00 on the
        // 2nd, the switch tripped; the job was stopped at 06:00.
        assert_eq!(
            kinds,
            vec![
                (AlertKind::NoRecentBackup, t("2026-11-02T05:00:00Z")),
                (AlertKind::JobFailed, t("2026-11-02T06:00:00Z")),
            ]
        );
        assert!(alerts[0]
            .summary
            .contains("no successful backup for 26 hours"));
        assert!(alerts[1].detail.contains("timed out"), "{:?}", alerts[1]);
    }

    #[test]
    fn no_drill_or_prune_before_the_first_good_backup() {
        // A fresh install whose backups fail for a day: only backups run.
        let s = setup("2026-11-02T01:00:00Z", "2026-11-03T01:30:00Z");
        run(
            &s,
            &[
                ("backup", "daily at 02:00"),
                ("verify", "daily at 05:00"),
                ("prune", "daily at 06:00"),
            ],
            &[("backup", vec![exit::WRONG_PASSWORD; 2])],
            chrono::Duration::seconds(30),
            0,
        );
        let ran: Vec<String> = names(&s).into_iter().map(|(n, _)| n).collect();
        assert_eq!(ran, ["backup", "backup"]);
        // Once a backup succeeds (02:59 on the 3rd), the drill and the prune
        // that waited run at once.
        let s2 = Setup {
            clock: Rc::new(FakeClock {
                now: Cell::new(t("2026-11-03T02:59:00Z")),
                end: t("2026-11-03T03:10:00Z"),
            }),
            ..s
        };
        s2.runs.borrow_mut().clear();
        run(
            &s2,
            &[
                ("backup", "daily at 03:00"),
                ("verify", "daily at 05:00"),
                ("prune", "daily at 06:00"),
            ],
            &[],
            chrono::Duration::seconds(30),
            0,
        );
        let ran: Vec<String> = names(&s2).into_iter().map(|(n, _)| n).collect();
        assert_eq!(ran, ["backup", "verify", "prune"]);
    }

    #[test]
    fn the_backup_job_uses_an_append_only_session_and_prune_needs_a_key() {
        let cfg = Config::parse(
            "[repository]\npath = \"/r\"\npassword_file = \"/k\"\n",
            std::path::Path::new("/etc/lv.toml"),
        )
        .unwrap();
        let r = ProcessRunner { cfg: &cfg };
        let js = jobs(&cfg);
        let backup = r.args(&js[0]).unwrap();
        assert!(backup.contains(&"--append-only".to_string()), "{backup:?}");
        let prune = js.iter().find(|j| j.kind == JobKind::Prune).unwrap();
        let why = r.args(prune).unwrap_err();
        assert!(why.contains("need a person"), "{why}");
        // It cannot know the key is append-only (it may be full-access):
        // it names what is missing instead.
        assert!(
            !why.contains("append-only") && why.contains("maintenance_password_file"),
            "{why}"
        );

        let cfg = Config::parse(
            "[repository]\npath = \"/r\"\npassword_file = \"/k\"\nmaintenance_password_file = \"/full\"\n",
            std::path::Path::new("/etc/lv.toml"),
        )
        .unwrap();
        let r = ProcessRunner { cfg: &cfg };
        let prune = r.args(&jobs(&cfg)[2]).unwrap();
        assert!(
            prune.windows(2).any(|w| w == ["--password-file", "/full"]),
            "{prune:?}"
        );
    }
}
