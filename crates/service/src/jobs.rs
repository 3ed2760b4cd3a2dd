//! The jobs a config file asks the daemon for, with their schedules and
//! timeouts (the daemon runs them; `status` and the console show them).

use crate::config::Config;
use crate::schedule::Schedule;

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    Backup,
    /// Copy from the primary repository to the named `[[copy]]` location.
    Copy(String),
    Verify,
    /// Forget by the retention policy, then prune.
    Prune,
}

#[derive(Debug, Clone)]
pub struct Job {
    /// `backup`, `copy:NAME`, `verify` or `prune`.
    pub name: String,
    pub kind: JobKind,
    pub schedule: Schedule,
    /// An attempt still running after this is killed and counts as failed.
    pub timeout: chrono::Duration,
}

/// The default timeouts: far beyond a normal night (the sample firm's
/// backup takes minutes), short enough that a hung disk is reported the
/// same morning.
pub const DEFAULT_TIMEOUTS: [(&str, &str); 4] = [
    ("backup", "6h"),
    ("copy", "6h"),
    ("verify", "4h"),
    ("prune", "12h"),
];

fn timeout_of(cfg: &Config, kind: &str) -> chrono::Duration {
    let d = &cfg.daemon;
    let set = match kind {
        "backup" => &d.backup_timeout,
        "copy" => &d.copy_timeout,
        "verify" => &d.verify_timeout,
        _ => &d.prune_timeout,
    };
    let default = DEFAULT_TIMEOUTS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("6h", |(_, v)| v);
    cfg.duration(set, default)
}

/// The jobs a config asks for: backup, one copy per location, verify, and
/// prune.
pub fn jobs(cfg: &Config) -> Vec<Job> {
    let s = &cfg.schedule;
    let mut out = vec![Job {
        name: "backup".into(),
        kind: JobKind::Backup,
        schedule: cfg.schedule_of(&s.backup, "daily at 02:00"),
        timeout: timeout_of(cfg, "backup"),
    }];
    for c in &cfg.copy {
        out.push(Job {
            name: format!("copy:{}", c.name),
            kind: JobKind::Copy(c.name.clone()),
            schedule: cfg.schedule_of(&c.schedule, "daily at 03:00"),
            timeout: timeout_of(cfg, "copy"),
        });
    }
    out.push(Job {
        name: "verify".into(),
        kind: JobKind::Verify,
        schedule: cfg.schedule_of(&s.verify, "daily at 05:00"),
        timeout: timeout_of(cfg, "verify"),
    });
    out.push(Job {
        name: "prune".into(),
        kind: JobKind::Prune,
        schedule: cfg.schedule_of(&s.prune, "weekly on sunday at 06:00"),
        timeout: timeout_of(cfg, "prune"),
    });
    out
}
