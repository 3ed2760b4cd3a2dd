//! Backing up: what to back up (the paths asked for, or the config file's
//! sources with their rules), the databases among them captured live, the
//! alarm for sources that vanished, and the verdict on the snapshot.
//!
//! A front end calls [`prepare`] (no repository needed: a request that
//! cannot work fails before anyone is asked for a password), finds the
//! repository, calls [`Prepared::capture`] (database captures start while
//! the key is derived), unlocks the repository, then [`Prepared::run`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use ledgervault_repo::{
    self as engine, BackupOptions, BackupSource, BackupSummary, FileKind, Progress, Repository,
};
use ledgervault_sources::{SqliteOpener, SqliteOptions};

use crate::config::Config;
use crate::db::{self, CaptureOptions, DatabaseKind};
use crate::error::usage;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Files, folders and database addresses (`sqlite:PATH` forces a
    /// database capture). Empty, with no `stdin_name`: the config file's
    /// `[[source]]`s with their include and exclude rules.
    pub paths: Vec<PathBuf>,
    /// Back up standard input under this name instead.
    pub stdin_name: Option<String>,
    pub tags: Vec<String>,
    /// Why this snapshot was taken (shown in listings).
    pub reason: Option<String>,
    pub compression: i32,
    pub threads: Option<u32>,
    /// Whether SQLite files found among the paths are captured as
    /// databases (otherwise only `sqlite:PATH` is).
    pub detect_databases: bool,
    /// How long a database capture may wait for locks.
    pub db_timeout: Duration,
    /// PostgreSQL: the server's globals as well.
    pub globals: bool,
    /// The snapshot to compare with, instead of the latest of each path.
    pub parent: Option<String>,
    pub force_reread: bool,
    pub read_ahead: usize,
}

impl Default for BackupRequest {
    fn default() -> BackupRequest {
        BackupRequest {
            paths: Vec::new(),
            stdin_name: None,
            tags: Vec::new(),
            reason: None,
            compression: 1,
            threads: None,
            detect_databases: true,
            db_timeout: Duration::from_secs(60),
            globals: false,
            parent: None,
            force_reread: false,
            read_ahead: engine::READ_AHEAD,
        }
    }
}

/// A request checked against the file system, before the repository.
pub struct Prepared {
    from_config: bool,
    /// Each path and whether it was named as a database (`sqlite:`).
    paths: Vec<(PathBuf, bool)>,
    /// Paths that are not there (an alarm if a snapshot held them).
    gone: Vec<(PathBuf, std::io::Error)>,
}

/// The sources to store, and what is already suspect about them.
pub struct Captured {
    sources: Vec<BackupSource>,
    suspect: Vec<String>,
}

/// How a snapshot turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything was read and nothing looks wrong.
    Clean,
    /// Stored, but some files could not be read (or hold damaged data).
    Incomplete,
    /// Stored, and marked suspect: the ransomware alarm.
    Suspect,
}

/// The repository after a backup.
#[derive(Debug, Clone)]
pub struct RepoStats {
    pub snapshots: usize,
    pub stored: u64,
    /// Free space on the repository's disk, where it can be known.
    pub free: Option<u64>,
}

/// What a backup did.
pub struct BackupOutcome {
    pub summary: BackupSummary,
    pub verdict: Verdict,
    pub repository: RepoStats,
    pub days_until_full: Option<f64>,
    /// The disk fills up soon, at the rate it grew lately.
    pub growth_warning: Option<String>,
}

/// The repository's size and snapshot count.
pub fn repo_stats(repo: &Repository) -> Result<RepoStats> {
    let (snapshots, stored) = std::thread::scope(|s| {
        let stored = s.spawn(|| repo.stored_size());
        let snapshots = repo.list_ids(FileKind::Snapshot);
        (
            snapshots,
            stored
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    });
    Ok(RepoStats {
        snapshots: snapshots?.len(),
        stored: stored?,
        free: repo.backend().free_space(),
    })
}

/// Checks `req` against `config` and the file system.
pub fn prepare(config: &Config, req: &BackupRequest) -> Result<Prepared> {
    let from_config = req.paths.is_empty() && req.stdin_name.is_none();
    let given: Vec<PathBuf> = if from_config {
        if config.source.is_empty() {
            return Err(usage(
                "nothing to back up: give paths, --stdin-name, or [[source]] entries in the config file (--config)",
            ));
        }
        config
            .source
            .iter()
            .map(|s| PathBuf::from(s.path.get_ref()))
            .collect()
    } else {
        req.paths.clone()
    };
    // `sqlite:PATH` forces a database capture.
    let paths: Vec<(PathBuf, bool)> = given
        .iter()
        .map(
            |p| match p.to_str().and_then(|s| s.strip_prefix("sqlite:")) {
                Some(rest) => (PathBuf::from(rest), true),
                None => (p.clone(), false),
            },
        )
        .collect();
    // A source that is gone is an error, unless an earlier snapshot holds
    // it: then it was renamed away or deleted since, which is the
    // ransomware alarm (checked once the repository is open).
    let mut gone: Vec<(PathBuf, std::io::Error)> = Vec::new();
    for (p, _) in &paths {
        if address_kind(p).is_none() {
            if let Err(e) = std::fs::symlink_metadata(p) {
                gone.push((p.clone(), e));
            }
        }
    }
    let paths: Vec<(PathBuf, bool)> = paths
        .into_iter()
        .filter(|(p, _)| !gone.iter().any(|(q, _)| q == p))
        .collect();
    if req.globals && !paths.iter().any(|(p, _)| address_kind(p).is_some()) {
        return Err(usage("--globals needs a PostgreSQL database to back up"));
    }
    Ok(Prepared {
        from_config,
        paths,
        gone,
    })
}

fn address_kind(p: &Path) -> Option<&'static dyn db::DatabaseKind> {
    p.to_str().and_then(db::by_address)
}

impl Prepared {
    /// Starts the captures of the databases among the paths (or takes
    /// `stdin` for a request with a `stdin_name`).
    pub fn capture(
        &self,
        req: &BackupRequest,
        stdin: Option<Box<dyn Read + Send>>,
    ) -> Result<Captured> {
        let mut suspect = Vec::new();
        let opts = CaptureOptions {
            timeout: req.db_timeout,
            globals: req.globals,
        };
        let sources = match &req.stdin_name {
            Some(name) => {
                if name.is_empty() || name.contains('/') {
                    return Err(usage("--stdin-name must be a plain file name"));
                }
                let reader = stdin.ok_or_else(|| anyhow!("no input given for {name}"))?;
                vec![BackupSource::Stream {
                    name: name.clone(),
                    reader,
                    origin: None,
                }]
            }
            None => {
                let mut v = Vec::new();
                for (p, forced) in &self.paths {
                    if let Some(kind) = address_kind(p) {
                        v.extend(kind.capture(p, &opts)?);
                    } else if *forced && p.is_file() && !db::Sqlite.is_file(p) {
                        // Given as a database but no longer one: keep its
                        // bytes and raise the alarm rather than fail.
                        suspect.push(format!(
                            "{}: given as sqlite: but is not a valid SQLite database (its header is gone: encrypted or overwritten?)",
                            p.display()
                        ));
                        v.push(BackupSource::Path(p.clone()));
                    } else if *forced {
                        v.extend(db::Sqlite.capture(p, &opts)?);
                    } else if let Some(kind) =
                        req.detect_databases.then(|| db::by_file(p)).flatten()
                    {
                        v.extend(kind.capture(p, &opts)?);
                    } else {
                        v.push(BackupSource::Path(p.clone()));
                    }
                }
                v
            }
        };
        Ok(Captured { sources, suspect })
    }

    /// Backs up `captured` into `repo` (the alarm for vanished sources
    /// first). `exclude` is never backed up (the repository's own folder).
    pub fn run(
        self,
        repo: &Repository,
        captured: Captured,
        config: &Config,
        req: &BackupRequest,
        exclude: Option<PathBuf>,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        let Captured {
            sources,
            mut suspect,
        } = captured;
        if !self.gone.is_empty() {
            let (snaps, _) = repo.snapshots()?;
            for (p, e) in self.gone {
                let abs = std::path::absolute(&p).unwrap_or_else(|_| p.clone());
                let shown = abs.display().to_string();
                let had = snaps
                    .iter()
                    .rev()
                    .find(|(_, s)| !s.is_suspect() && s.sources.iter().any(|x| x.path == shown));
                match had {
                    Some((id, _)) => suspect.push(format!(
                        "{shown}: was backed up in snapshot {} and is gone (renamed away or deleted)",
                        id.short()
                    )),
                    None => return Err(anyhow!("{}: {e}", p.display())),
                }
            }
            if sources.is_empty() {
                return Err(anyhow!(
                    "ALARM: every source is gone: {}",
                    suspect.join("; ")
                ));
            }
        }
        let mut opts = BackupOptions {
            tags: req.tags.clone(),
            reason: req.reason.clone(),
            compression_level: req.compression,
            ..Default::default()
        };
        opts.guard = config.backup.guard();
        if self.from_config {
            opts.filter = crate::filter::SourceFilters::from_config(&config.source)?;
        }
        opts.suspect = suspect;
        opts.force_reread = req.force_reread;
        opts.read_ahead = req.read_ahead;
        if let Some(spec) = &req.parent {
            opts.parent = Some(repo.find_snapshot(spec)?.0);
        }
        if let Some(t) = req.threads {
            opts.threads = t as usize;
        }
        if req.detect_databases {
            opts.db_opener = Some(Arc::new(SqliteOpener {
                options: SqliteOptions {
                    busy_timeout: req.db_timeout,
                },
            }));
        }
        opts.exclude.extend(exclude);
        run(repo, sources, opts, progress)
    }
}

/// Backs up `sources` with `opts` and judges the snapshot.
pub fn run(
    repo: &Repository,
    sources: Vec<BackupSource>,
    opts: BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let summary = engine::backup(repo, sources, &opts, progress)?;
    // Three listings that do not wait on each other (on remote storage
    // each is a round trip).
    let (repository, growth) = std::thread::scope(|s| {
        let growth = s.spawn(|| engine::growth_now(repo));
        let stats = repo_stats(repo);
        let growth = growth
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (stats, growth)
    });
    let (repository, growth) = (repository?, growth?);
    let days_until_full = growth.as_ref().and_then(|g| g.days_until_full);
    let growth_warning = growth.and_then(|g| g.warning(repository.free));
    let verdict = if !summary.suspect.is_empty() {
        Verdict::Suspect
    } else if !summary.errors.is_empty() {
        Verdict::Incomplete
    } else {
        Verdict::Clean
    };
    Ok(BackupOutcome {
        summary,
        verdict,
        repository,
        days_until_full,
        growth_warning,
    })
}
