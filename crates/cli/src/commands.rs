//! Each command: arguments → engine options → operation → output.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ledgervault_repo::{
    self as engine, escape_bytes, Backend, BackupOptions, BackupSource, Id, InitOptions, KdfParams,
    NodeKind, ReadData, Repository, RestoreOptions, Snapshot,
};
use ledgervault_sources::SqlitePlacer;
use serde_json::json;

use crate::args::{
    BackupArgs, CatWhat, CheckArgs, Cli, Command, GuardArgs, InitArgs, KdfArgs, KeyCommand, LsArgs,
    RestoreArgs,
};
use crate::ui::{self, exit, Bar};
use ledgervault_service::backup::{BackupOutcome, BackupRequest};
use ledgervault_service::{repo::Secret, ErrorKind};

/// Maps an error to its documented exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match ErrorKind::of(e) {
        ErrorKind::NoRepository => exit::NO_REPOSITORY,
        ErrorKind::Locked => exit::LOCKED,
        ErrorKind::WrongPassword => exit::WRONG_PASSWORD,
        ErrorKind::Damaged => exit::DAMAGED,
        ErrorKind::AppendOnly => exit::APPEND_ONLY,
        ErrorKind::Usage => exit::USAGE,
        ErrorKind::Other => exit::ERROR,
    }
}

pub(crate) use ledgervault_service::usage;

/// Runs the parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // The config file's [repository] stands in for --repo and --password-file.
    let (mut repo, mut password_file) = (cli.repo.clone(), cli.password_file.clone());
    let mut storage = cli.storage.options();
    if cli.config.is_some() {
        // A file that does not load is an error here only when it must
        // stand in for --repo; `config check` reports it in full.
        match crate::config::Config::load(cli.config.as_deref()) {
            Ok(cfg) => {
                cfg.s3.apply(&mut storage)?;
                if let Some(r) = cfg.repository {
                    if repo.is_none() {
                        repo = Some(r.path.into_inner());
                        password_file = password_file.or(r.password_file.map(|p| p.into_inner()));
                    }
                }
            }
            Err(e) if repo.is_none() || password_file.is_none() => return Err(e),
            Err(_) => {}
        }
    }
    let g = Globals {
        repo,
        password_file,
        storage,
        json: cli.json,
        quiet: cli.quiet,
        append_only: cli.append_only,
        config: cli.config.clone(),
        retry_lock: cli.retry_lock,
    };
    match cli.command {
        Command::Init(a) => init(&g, a),
        Command::Backup(a) => backup(&g, a),
        Command::Snapshots => snapshots(&g),
        Command::Ls(a) => ls(&g, a),
        Command::Restore(a) => restore(&g, a),
        Command::Check(a) => check(&g, a),
        Command::Cat { what } => cat(&g, what),
        Command::Key { command } => key(&g, command),
        Command::Unlock { remove_all } => unlock(&g, remove_all),
        Command::Forget(a) => crate::retention::forget(&g, a),
        Command::Prune(a) => crate::retention::prune(&g, a),
        Command::Stats => crate::retention::stats(&g),
        Command::Guard(a) => guard(&g, a),
        Command::Verify(a) => crate::verify::verify(&g, a),
        Command::Client { command } => crate::client::run(&g, command),
        Command::Snapshot { command } => crate::retention::snapshot(&g, command),
        Command::Demo(a) => crate::demo::run(a, g.quiet),
        Command::Copy(a) => crate::ops::copy(&g, a),
        Command::Repair { command } => crate::ops::repair(&g, command),
        Command::Daemon(a) => crate::ops::daemon(&g, a),
        Command::Status => crate::ops::status(&g),
        Command::Console { command } => crate::console::run(&g, command),
        Command::Config { command } => match command {
            crate::args::ConfigCommand::Check => crate::ops::config_check(&g),
        },
        Command::InitConfig { path } => crate::ops::init_config(&g, &path),
        Command::Alert { command } => match command {
            crate::args::AlertCommand::Test => crate::ops::alert_test(&g),
        },
    }
}

/// Options every command shares.
#[derive(Clone)]
pub struct Globals {
    pub repo: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How to reach remote storage (S3 settings, metadata cache).
    pub storage: ledgervault_backends::OpenOptions,
    pub json: bool,
    pub quiet: bool,
    pub append_only: bool,
    pub config: Option<PathBuf>,
    /// `--retry-lock`: how long to wait for another process's lock.
    pub retry_lock: Option<std::time::Duration>,
}

/// A repository found and its password read, not yet unlocked.
pub(crate) struct Opener {
    found: ledgervault_service::repo::Opener,
    password: Secret,
}

impl Opener {
    /// Unlocks the repository (derives the key from the password).
    pub fn open(self) -> Result<Repository> {
        self.found.open(&self.password)
    }
}

impl Globals {
    /// The configuration file's settings (defaults without one).
    pub fn config(&self) -> Result<crate::config::Config> {
        crate::config::Config::load(self.config.as_deref())
    }

    /// Where the repository is and how to use it, for the service layer.
    pub(crate) fn target(&self) -> ledgervault_service::repo::Target {
        ledgervault_service::repo::Target {
            location: self.repo.clone(),
            storage: self.storage.clone(),
            append_only: self.append_only,
            retry_lock: self.retry_lock,
        }
    }

    pub(crate) fn backend(&self) -> Result<Arc<dyn Backend>> {
        self.target().backend()
    }

    pub(crate) fn local_root(&self) -> Option<PathBuf> {
        let repo = self.repo.as_deref()?;
        let p = repo.strip_prefix("file://").unwrap_or(repo);
        std::fs::canonicalize(p).ok()
    }

    /// The password: `--password-file`, `LEDGERVAULT_PASSWORD`, or a prompt.
    pub(crate) fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        read_secret(
            self.password_file.as_deref(),
            "LEDGERVAULT_PASSWORD",
            "repository password",
            confirm,
        )
    }

    pub fn open(&self) -> Result<Repository> {
        self.open_with("LEDGERVAULT_PASSWORD", "repository password")
    }

    /// Opens the repository, taking its password from `env` when no
    /// password file is given (a second repository has its own variable).
    pub fn open_with(&self, env: &str, what: &str) -> Result<Repository> {
        self.opener_with(env, what)?.open()
    }

    /// The first half of [`open`](Self::open): finds the repository and
    /// reads the password (asking for it if need be), leaving the slow part,
    /// the key derivation, to [`Opener::open`], so that work which needs no
    /// keys (starting database captures) can run meanwhile.
    pub fn opener(&self) -> Result<Opener> {
        self.opener_with("LEDGERVAULT_PASSWORD", "repository password")
    }

    fn opener_with(&self, env: &str, what: &str) -> Result<Opener> {
        // A password that needs no prompt is read first, so that the key
        // is derived while the storage is reached; a missing repository is
        // still the error reported first.
        if self.password_file.is_some() || std::env::var_os(env).is_some() {
            let password = read_secret(self.password_file.as_deref(), env, what, false);
            let password = match password {
                Ok(p) => Secret::new(p),
                Err(e) => {
                    self.target().find()?;
                    return Err(e);
                }
            };
            let found = self.target().find_ahead(&password)?;
            return Ok(Opener { found, password });
        }
        // Fail on a missing repository before asking for a password.
        let found = self.target().find()?;
        let password = Secret::new(read_secret(
            self.password_file.as_deref(),
            env,
            what,
            false,
        )?);
        Ok(Opener { found, password })
    }

    /// A shared lock for reading snapshot data (see `engine::read_lock`);
    /// says so on standard error when the storage takes no lock file.
    pub fn read_lock(
        &self,
        repo: &Repository,
        operation: &str,
    ) -> Result<Option<engine::LockGuard>> {
        let lock = engine::read_lock(repo, operation)?;
        if lock.is_none() && !self.quiet {
            eprintln!(
                "ledgervault: warning: cannot write a lock file in {} (read-only storage?); reading without one",
                repo.backend().location()
            );
        }
        Ok(lock)
    }

    pub fn print_json(&self, v: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("JSON serializes")
        );
    }
}

pub(crate) fn read_secret(
    file: Option<&Path>,
    env: &str,
    what: &str,
    confirm: bool,
) -> Result<Vec<u8>> {
    if let Some(f) = file {
        let s = ledgervault_service::repo::secret_from_file(f, "password file")?;
        return Ok(s.expose().to_vec());
    }
    if let Ok(p) = std::env::var(env) {
        if p.is_empty() {
            return Err(usage(format!("{env} is set but empty")));
        }
        return Ok(p.into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "no {what} given: use a password file option, or set {env}, or run on a terminal to be asked"
        )));
    }
    let p = rpassword::prompt_password(format!("enter {what}: "))
        .context("cannot read the password")?;
    if p.is_empty() {
        return Err(usage("an empty password is not allowed"));
    }
    if confirm {
        let again = rpassword::prompt_password(format!("enter {what} again: "))
            .context("cannot read the password")?;
        if again != p {
            bail!("the passwords do not match");
        }
    }
    Ok(p.into_bytes())
}

fn kdf(a: &KdfArgs) -> KdfParams {
    KdfParams {
        memory_kib: a.argon2_memory_kib,
        iterations: a.argon2_iterations,
        parallelism: 1,
    }
}

pub(crate) fn init(g: &Globals, a: InitArgs) -> Result<i32> {
    let backend = g.backend()?;
    let pw = g.password(true)?;
    let opts = InitOptions {
        pack_size: a.pack_size_mib * 1024 * 1024,
        kdf: kdf(&a.kdf),
        immutable_days: a.immutable_days,
    };
    let repo = match &a.same_keys_as {
        None => Repository::init(backend.clone(), &pw, &opts)?,
        Some(other) => {
            let og = Globals {
                repo: Some(other.clone()),
                password_file: a.same_keys_password_file.clone(),
                ..g.clone()
            };
            let other = og.open_with(
                "LEDGERVAULT_SAME_KEYS_PASSWORD",
                "password of the --same-keys-as repository",
            )?;
            Repository::init_sharing_keys(backend.clone(), &pw, &opts, &other)?
        }
    };
    // On remote storage, say what protects the history from whoever holds
    // the storage's credentials.
    let protection = match (a.immutable_days, g.repo.as_deref().is_some_and(ledgervault_backends::is_remote)) {
        (Some(d), _) => Some(format!("every object is locked for {d} days (S3 Object Lock, compliance mode); backups extend the locks of what they still use")),
        (None, false) => None,
        (None, true) => Some(match backend.object_lock() {
            Ok(Some(true)) => "the bucket has Object Lock, but this repository does not use it: `init --immutable-days N` in a new prefix locks its history".to_string(),
            Ok(Some(false)) => "the bucket has no Object Lock: anyone holding its credentials can delete these backups (see README, \"Offsite\", for a bucket policy that denies deletes)".to_string(),
            _ => "this storage has no Object Lock: anyone holding its credentials can delete these backups (see README, \"Offsite\")".to_string(),
        }),
    };
    if g.json {
        g.print_json(&json!({"id": repo.config().id, "location": backend.location(), "format_version": repo.config().format_version,
            "immutable_days": a.immutable_days, "protection": protection}));
    } else if !g.quiet {
        println!(
            "created ledgervault repository {} at {}",
            repo.config().id.short(),
            backend.location()
        );
        if let Some(p) = &protection {
            println!("note: {p}");
        }
        println!(
            "Keep the password safe: without it nobody, including you, can read these backups."
        );
    }
    Ok(exit::OK)
}

pub(crate) use ledgervault_service::backup::repo_stats;

pub(crate) fn backup(g: &Globals, a: BackupArgs) -> Result<i32> {
    Ok(backup_inner(g, &backup_request(&a))?.2)
}

/// The service's request for `backup`'s arguments.
fn backup_request(a: &BackupArgs) -> BackupRequest {
    BackupRequest {
        paths: a.paths.clone(),
        stdin_name: a.stdin_name.clone(),
        tags: a.tags.clone(),
        reason: a.reason.clone(),
        compression: a.compression,
        threads: a.threads,
        detect_databases: !a.no_db_detect,
        db_timeout: Duration::from_secs(a.db_timeout),
        globals: a.globals,
        parent: a.parent.clone(),
        force_reread: a.force_reread,
        read_ahead: a.read_ahead as usize,
    }
}

/// Runs `backup`; returns the repository, the summary and the exit code.
fn backup_inner(
    g: &Globals,
    req: &BackupRequest,
) -> Result<(Repository, engine::BackupSummary, i32)> {
    let config = g.config()?;
    let prepared = ledgervault_service::backup::prepare(&config, req)?;
    // The password is read first, then the databases' captures start (their
    // table digests run on threads of their own) while the key is derived.
    let opener = g.opener()?;
    let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
    let captured = prepared.capture(req, Some(stdin))?;
    let repo = opener.open()?;
    let bar = Bar::new(g.quiet, "backup");
    let outcome = prepared.run(&repo, captured, &config, req, g.local_root(), &bar)?;
    drop(bar);
    let code = render_backup(g, &outcome);
    Ok((repo, outcome.summary, code))
}

pub(crate) use ledgervault_service::drill::{is_database, PRE_CLIENT_RESTORE_TAG, PRE_RESTORE_TAG};

/// Takes a safety snapshot of `sources`, tagged `tag`, before work that
/// replaces what they hold; refuses to go on unless it is clean. `what`
/// names the data for the refusal.
pub(crate) fn safety_snapshot(
    g: &Globals,
    repo: &Repository,
    sources: Vec<BackupSource>,
    tag: &str,
    reason: String,
    what: &str,
) -> Result<Id> {
    let opts = BackupOptions {
        tags: vec![tag.to_string()],
        reason: Some(reason),
        ..Default::default()
    };
    let quiet = Globals {
        json: false,
        quiet: true,
        ..g.clone()
    };
    let (s, code) = run_backup(&quiet, repo, sources, opts)?;
    // A suspect safety snapshot holds everything (the data that is about to
    // be replaced may well be what an attack left: that is why it is being
    // restored); only one that could not read it all stops the restore.
    if code != exit::OK && code != exit::SUSPECT {
        bail!(
            "the safety snapshot of {what} is not clean (exit code {code}); nothing was restored"
        );
    }
    Ok(s.snapshot_id)
}

/// `guard`: a safety snapshot, then the risky command; on failure, the
/// commands that roll back.
fn guard(g: &Globals, a: GuardArgs) -> Result<i32> {
    if a.reason.trim().is_empty() {
        return Err(usage("--reason must say what the risky work is"));
    }
    let req = BackupRequest {
        paths: a.paths.clone(),
        tags: a.tags.clone(),
        reason: Some(a.reason.clone()),
        db_timeout: Duration::from_secs(a.db_timeout),
        ..BackupRequest::default()
    };
    // With --json, guard's own object is the one document on standard
    // output: the safety snapshot's summary is not printed as well.
    let inner = Globals {
        json: false,
        quiet: g.quiet || g.json,
        ..g.clone()
    };
    let (repo, s, code) = backup_inner(&inner, &req)?;
    if code != exit::OK {
        bail!(
            "the safety snapshot {} is not clean (exit code {code}, see above); `{}` was not run",
            s.snapshot_id.short(),
            a.command.join(" ")
        );
    }
    let rollback = rollback_commands(g, &repo, &s)?;
    if !g.quiet && !g.json {
        println!("running: {}", shell_words(&a.command));
    }
    let status = std::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .status()
        .map_err(|e| anyhow!("cannot run {}: {e}", a.command[0]))?;
    if status.success() {
        if g.json {
            g.print_json(&json!({"snapshot_id": s.snapshot_id, "command_exit_code": 0, "rollback": rollback}));
        } else if !g.quiet {
            println!(
                "the command succeeded; safety snapshot {} (\"{}\") stays, protected from forget for the protection age",
                s.snapshot_id.short(),
                a.reason
            );
        }
        return Ok(exit::OK);
    }
    let code = status.code().unwrap_or(exit::ERROR);
    if g.json {
        g.print_json(&json!({"snapshot_id": s.snapshot_id, "command_exit_code": status.code(), "rollback": rollback}));
    }
    eprintln!(
        "ledgervault: the command failed ({status}). To roll back to safety snapshot {} taken just before it, run:",
        s.snapshot_id.short()
    );
    for c in &rollback {
        eprintln!("  {c}");
    }
    eprintln!("(files the command created that were not in the snapshot are left in place)");
    Ok(if code == 0 { exit::ERROR } else { code })
}

/// The exact commands that put each source of snapshot `s` back.
fn rollback_commands(
    g: &Globals,
    repo: &Repository,
    s: &engine::BackupSummary,
) -> Result<Vec<String>> {
    let snap = repo.load_snapshot(&s.snapshot_id)?;
    let mut base = vec!["ledgervault".to_string()];
    if let Some(r) = &g.repo {
        base.push("--repo".into());
        base.push(r.clone());
    }
    if let Some(p) = &g.password_file {
        base.push("--password-file".into());
        base.push(p.display().to_string());
    }
    let mut out = Vec::new();
    for src in &snap.sources {
        let path = Path::new(&src.path);
        let mut c = base.clone();
        c.extend([
            "restore".to_string(),
            s.snapshot_id.to_hex(),
            "--include".into(),
            src.name.clone(),
        ]);
        if is_database(src) {
            c.extend(["--target".into(), src.path.clone(), "--force".into()]);
        } else {
            let parent = path.parent().unwrap_or(Path::new("/"));
            c.extend(["--target".into(), parent.display().to_string()]);
        }
        out.push(shell_words(&c));
    }
    Ok(out)
}

/// Joins words into a command line a POSIX shell reads back the same.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a backup and prints its summary; returns it with the exit code.
pub(crate) fn run_backup(
    g: &Globals,
    repo: &Repository,
    sources: Vec<BackupSource>,
    mut opts: BackupOptions,
) -> Result<(engine::BackupSummary, i32)> {
    // Never back up the repository into itself.
    opts.exclude.extend(g.local_root());
    let bar = Bar::new(g.quiet, "backup");
    let outcome = ledgervault_service::backup::run(repo, sources, opts, &bar)?;
    drop(bar);
    let code = render_backup(g, &outcome);
    Ok((outcome.summary, code))
}

/// Prints a backup's warnings, summary and alarms; returns the exit code
/// for its verdict.
/// A backup's result as `backup --json` prints it (and the daemon's
/// in-process job records it).
pub(crate) fn backup_json(outcome: &BackupOutcome) -> serde_json::Value {
    let (s, stats) = (&outcome.summary, &outcome.repository);
    json!({
        "snapshot_id": s.snapshot_id,
        "files": s.files, "dirs": s.dirs,
        "files_unchanged": s.files_unchanged, "bytes_unchanged": s.bytes_unchanged,
        "bytes_read": s.bytes_read, "bytes_new": s.bytes_new, "bytes_stored": s.bytes_stored,
        "duration_secs": s.duration_secs,
        "errors": s.errors,
        "changed": s.changed,
        "suspect": s.suspect,
        "weak_packs": s.weak_packs, "blobs_stored_again": s.blobs_stored_again, "packs_adopted": s.packs_adopted,
        "warning": outcome.growth_warning,
        "repository": {"snapshots": stats.snapshots, "stored_bytes": stats.stored, "free_bytes": stats.free, "days_until_full": outcome.days_until_full},
    })
}

fn render_backup(g: &Globals, outcome: &BackupOutcome) -> i32 {
    let s = &outcome.summary;
    let stats = &outcome.repository;
    let growth_warning = &outcome.growth_warning;
    // One line however many: a crash test leaves dozens.
    match s.stale_locks.as_slice() {
        [] => {}
        [one] => eprintln!(
            "ledgervault: warning: stale lock ignored: {one}; `ledgervault unlock` removes it"
        ),
        [first, ..] => eprintln!(
            "ledgervault: warning: {} stale locks ignored (the first: {first}); `ledgervault unlock` removes them",
            s.stale_locks.len()
        ),
    }
    for e in &s.errors {
        eprintln!(
            "ledgervault: warning: could not read {}: {}",
            e.path, e.message
        );
    }
    for c in &s.changed {
        eprintln!(
            "ledgervault: warning: {c} changed while it was being read; the copy stored may mix old and new content, and the next backup takes it again"
        );
    }
    if s.weak_packs > 0 && !g.quiet {
        eprintln!(
            "ledgervault: warning: {} pack(s) are missing, truncated or found damaged; this backup stored again the {} blob(s) it needed from them, so its snapshot restores. `ledgervault check` and `repair` deal with older snapshots",
            s.weak_packs, s.blobs_stored_again
        );
    }
    if s.packs_adopted > 0 && !g.quiet {
        eprintln!(
            "ledgervault: note: {} pack(s) left by an interrupted backup were checked and reused",
            s.packs_adopted
        );
    }
    if g.json {
        g.print_json(&backup_json(outcome));
    } else if !g.quiet {
        let free = stats
            .free
            .map(|f| format!("; {} free on its disk", ui::size(f)))
            .unwrap_or_default();
        let unchanged = if s.files_unchanged > 0 {
            format!(
                " ({} file{} unchanged, {}, not read)",
                s.files_unchanged,
                if s.files_unchanged == 1 { "" } else { "s" },
                ui::size(s.bytes_unchanged)
            )
        } else {
            String::new()
        };
        println!(
            "snapshot {} saved: {} read{unchanged}, {} new, {} stored, {}. The repository holds {} snapshot{} in {}{free}.",
            s.snapshot_id.short(),
            ui::size(s.bytes_read),
            ui::size(s.bytes_new),
            ui::size(s.bytes_stored),
            ui::secs(s.duration_secs),
            stats.snapshots,
            if stats.snapshots == 1 { "" } else { "s" },
            ui::size(stats.stored),
        );
    }
    if let Some(w) = &growth_warning {
        eprintln!("ledgervault: warning: {w}");
    }
    if !s.suspect.is_empty() {
        for f in &s.suspect {
            eprintln!("ledgervault: ALARM: {f}");
        }
        eprintln!(
            "ledgervault: ALARM: snapshot {} was stored but marked SUSPECT. Check the server for ransomware before trusting new backups. \
Until a person runs `ledgervault snapshot clear-suspect {}`, forget keeps every snapshot from before it.",
            s.snapshot_id.short(),
            s.snapshot_id.short()
        );
        return exit::SUSPECT;
    }
    if !s.errors.is_empty() {
        if !g.json {
            eprintln!(
                "ledgervault: snapshot {} is incomplete or holds damaged data: {} problem(s), listed above",
                s.snapshot_id.short(),
                s.errors.len()
            );
        }
        return exit::INCOMPLETE;
    }
    exit::OK
}

fn snapshot_json(id: &Id, s: &Snapshot, st: &engine::SnapshotState) -> serde_json::Value {
    json!({
        "id": id, "short_id": id.short(), "time": s.time, "host": s.host, "user": s.user,
        "tags": s.tags, "reason": s.reason, "size": s.size(),
        "sources": s.sources.iter().map(|src| json!({"name": src.name, "kind": src.kind, "path": src.path, "summary": src.summary, "database": src.node.database})).collect::<Vec<_>>(),
        "totals": s.totals, "program": s.program,
        "protected": st.protected, "suspect": s.suspect, "suspect_cleared": st.suspect_cleared,
        "verified": st.verified(), "drill_passed": st.drill_passed, "drill_failed": st.drill_failed,
    })
}

/// Short flags for the snapshot table: P protected, S! suspect, s cleared
/// suspect.
fn flags(s: &Snapshot, st: &engine::SnapshotState) -> String {
    let mut f = String::new();
    if st.protected {
        f.push('P');
    }
    if s.is_suspect() {
        f.push_str(if st.suspect_cleared { "s" } else { "S!" });
    }
    f
}

/// The "Verified" column: the date of the last passing restore drill, or
/// FAILED when the latest drill failed.
fn verified(st: &engine::SnapshotState) -> String {
    match (st.verified(), st.drill_passed) {
        (Some(false), _) => "FAILED".into(),
        (Some(true), Some(t)) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d")
            .to_string(),
        _ => String::new(),
    }
}

pub(crate) fn snapshots(g: &Globals) -> Result<i32> {
    let repo = g.open()?;
    let (all, bad) = repo.snapshots()?;
    let states = repo.snapshot_states()?;
    let none = engine::SnapshotState::default();
    for e in &bad {
        eprintln!("ledgervault: warning: {e}");
    }
    if g.json {
        g.print_json(&serde_json::Value::Array(
            all.iter()
                .map(|(id, s)| snapshot_json(id, s, states.get(id).unwrap_or(&none)))
                .collect(),
        ));
    } else {
        println!(
            "{:<8}  {:<19}  {:<12}  {:>8}  {:<5}  {:<10}  {:<16}  Sources / reason",
            "ID", "Time", "Host", "Size", "Flags", "Verified", "Tags"
        );
        for (id, s) in &all {
            let local = s.time.with_timezone(&chrono::Local);
            // Paths, reasons and tags come from outside: one line each,
            // whatever they hold.
            let srcs: Vec<String> = s
                .sources
                .iter()
                .map(|x| escape_bytes(x.path.as_bytes()))
                .collect();
            let mut last = srcs.join(", ");
            if let Some(r) = &s.reason {
                last = format!("{last}  ({})", escape_bytes(r.as_bytes()));
            }
            let st = states.get(id).unwrap_or(&none);
            println!(
                "{:<8}  {:<19}  {:<12}  {:>8}  {:<5}  {:<10}  {:<16}  {}",
                id.short(),
                local.format("%Y-%m-%d %H:%M:%S"),
                s.host,
                ui::size(s.size()),
                flags(s, st),
                verified(st),
                escape_bytes(s.tags.join(",").as_bytes()),
                last
            );
        }
        println!(
            "{} snapshot{}  (flags: P protected, S! suspect, s suspect cleared; Verified: last restore drill that passed)",
            all.len(),
            if all.len() == 1 { "" } else { "s" }
        );
        let suspects: Vec<String> = all
            .iter()
            .filter(|(id, s)| {
                s.is_suspect() && !states.get(id).is_some_and(|st| st.suspect_cleared)
            })
            .map(|(id, _)| id.short())
            .collect();
        if !suspects.is_empty() {
            eprintln!(
                "ledgervault: ALARM: suspect snapshot(s) not yet cleared: {}; `ledgervault cat snapshot ID` shows what was seen",
                suspects.join(", ")
            );
        }
    }
    Ok(if bad.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

/// Puts `bytes` in `row[key]` losslessly: the text when it is UTF-8;
/// otherwise the escaped text people see, and `<key>_bytes` with the hex of
/// the bytes themselves.
fn lossless_json(row: &mut serde_json::Value, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => row[key] = json!(text),
        Err(_) => {
            row[key] = json!(escape_bytes(bytes));
            row[format!("{key}_bytes")] = json!(hex::encode(bytes));
        }
    }
}

fn ls(g: &Globals, a: LsArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo, "ls")?;
    let (_id, snap) = repo.find_snapshot(&a.snapshot)?;
    let index = repo.load_index()?;
    let mut rows = Vec::new();
    for src in &snap.sources {
        // Paths are bytes: names need not be UTF-8.
        let mut stack = vec![(src.node.clone(), format!("/{}", src.name).into_bytes())];
        while let Some((node, path)) = stack.pop() {
            if let (NodeKind::Dir, Some(t)) = (node.kind, node.subtree) {
                let tree = repo.load_tree(&index, &t)?;
                for c in tree.nodes.into_iter().rev() {
                    let mut p = path.clone();
                    p.push(b'/');
                    p.extend_from_slice(c.name.as_bytes());
                    stack.push((c, p));
                }
            }
            rows.push((path, node));
        }
    }
    if g.json {
        g.print_json(&serde_json::Value::Array(
            rows.iter()
                .map(|(p, n)| {
                    let mut row =
                        json!({"type": n.kind, "size": n.size, "mode": n.mode, "mtime": n.mtime});
                    lossless_json(&mut row, "path", p);
                    if let Some(t) = &n.target {
                        lossless_json(&mut row, "target", t.as_bytes());
                    }
                    row
                })
                .collect(),
        ));
    } else {
        for (p, n) in rows {
            if a.long {
                let kind = match n.kind {
                    NodeKind::Dir => "dir",
                    NodeKind::File => "file",
                    NodeKind::Symlink => "link",
                    NodeKind::Stream => "stream",
                    NodeKind::DbImage => "db",
                };
                let mtime = n
                    .mtime
                    .map(|t| {
                        t.with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M")
                            .to_string()
                    })
                    .unwrap_or_default();
                let link = n
                    .target
                    .map(|t| format!(" -> {}", t.display()))
                    .unwrap_or_default();
                println!(
                    "{kind:<6} {:>6o} {:>12} {mtime:<16} {}{link}",
                    n.mode.unwrap_or(0) & 0o7777,
                    n.size,
                    escape_bytes(&p),
                );
            } else {
                println!("{}", escape_bytes(&p));
            }
        }
    }
    Ok(exit::OK)
}

pub(crate) fn restore(g: &Globals, a: RestoreArgs) -> Result<i32> {
    let repo = g.open()?;
    // Held to the end, so a prune cannot delete what is being read.
    let _lock = g.read_lock(&repo, "restore")?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let mut opts = RestoreOptions {
        include: a.include.clone(),
        // Databases inside restored folders are checked and put in place
        // like a database restored on its own, never renamed over a live one.
        db_placer: Some(Arc::new(SqlitePlacer {
            busy_timeout: Duration::from_secs(30),
            full_check: a.integrity_check,
        })),
        ..Default::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t as usize;
    }
    // A database server's address: the database is restored there.
    if a.target
        .to_str()
        .and_then(ledgervault_service::db::by_address)
        .is_some()
    {
        return crate::server_restore::restore(g, &repo, id, &snap, &a);
    }
    // One database selected: --target names the database file.
    let selected: Vec<&engine::Source> = snap
        .sources
        .iter()
        .filter(|s| {
            a.include.is_empty()
                || a.include
                    .iter()
                    .any(|i| i.to_string_lossy().trim_matches('/') == s.name)
        })
        .collect();
    if a.include.len() <= 1 && selected.len() == 1 && selected[0].node.kind == NodeKind::DbImage {
        let name = selected[0].name.clone();
        return restore_database(g, &repo, id, &snap, &name, &a, opts);
    }
    let bar = Bar::new(g.quiet, "restore");
    let s = engine::restore(&repo, id, &snap, &a.target, &opts, &bar)?;
    drop(bar);
    for f in &s.failed {
        eprintln!("ledgervault: not restored: {}: {}", f.path, f.message);
    }
    if g.json {
        g.print_json(&serde_json::to_value(&s)?);
    } else if !g.quiet {
        println!(
            "restored {} file{} and {} folder{} ({}) from snapshot {} into {} in {}",
            s.files,
            if s.files == 1 { "" } else { "s" },
            s.dirs,
            if s.dirs == 1 { "" } else { "s" },
            ui::size(s.bytes),
            id.short(),
            a.target.display(),
            ui::secs(s.duration_secs)
        );
    }
    if !s.failed.is_empty() {
        eprintln!(
            "ledgervault: {} file(s) were not restored because their data is damaged or unreadable",
            s.failed.len()
        );
        return Ok(exit::DAMAGED);
    }
    Ok(exit::OK)
}

/// Restores one database image to the file `--target` (see
/// `ledgervault_service::restore`), and says what happened.
fn restore_database(
    g: &Globals,
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    name: &str,
    a: &RestoreArgs,
    opts: RestoreOptions,
) -> Result<i32> {
    let req = ledgervault_service::restore::DbRestore {
        database: name.to_string(),
        target: a.target.clone(),
        replace: a.force,
        full_check: a.integrity_check,
        exclude: g.local_root(),
    };
    let bar = Bar::new(g.quiet, "restore");
    let mut take_safety = |sources: Vec<BackupSource>, reason: String, target: &Path| {
        let what = target.display().to_string();
        let s = safety_snapshot(g, repo, sources, PRE_RESTORE_TAG, reason, &what)?;
        if !g.quiet && !g.json {
            println!(
                "safety snapshot {} of the current {} saved (tag pre-restore)",
                s.short(),
                target.display()
            );
        }
        Ok(s)
    };
    let r = ledgervault_service::restore::restore_database(
        repo,
        id,
        snap,
        &req,
        opts,
        &bar,
        &mut take_safety,
    );
    drop(bar);
    let r = r?;
    if g.json {
        g.print_json(&json!({
            "snapshot_id": r.snapshot_id, "database": r.database, "target": r.target,
            "check": r.check, "replaced_live": r.replaced_live,
            "safety_snapshot": r.safety_snapshot, "removed_stale": r.removed_stale,
            "duration_secs": r.duration_secs,
        }));
    } else if !g.quiet {
        for p in &r.removed_stale {
            println!(
                "removed the stale {} left by an earlier database at that path",
                p.display()
            );
        }
        println!(
            "restored database {name} from snapshot {} to {} in {}: {} ok{}",
            id.short(),
            r.target.display(),
            ui::secs(r.duration_secs),
            r.check,
            if r.replaced_live {
                "; open connections now see the restored data"
            } else {
                ""
            }
        );
    }
    Ok(exit::OK)
}

pub(crate) fn check(g: &Globals, a: CheckArgs) -> Result<i32> {
    let repo = g.open()?;
    let mode = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) => ReadData::Subset(p),
        _ => ReadData::None,
    };
    let bar = Bar::new(g.quiet, "read data");
    let r = engine::check(&repo, mode, &bar)?;
    drop(bar);
    if g.json {
        g.print_json(&json!({"ok": r.ok(), "errors": r.errors, "warnings": r.warnings, "snapshots": r.snapshots, "packs": r.packs, "packs_read": r.packs_read, "blobs": r.blobs}));
    } else {
        for w in &r.warnings {
            eprintln!("ledgervault: warning: {w}");
        }
        for e in &r.errors {
            println!("error: {e}");
        }
        if !g.quiet || !r.ok() {
            println!(
                "checked {} snapshots, {} packs ({} read), {} blobs: {}",
                r.snapshots,
                r.packs,
                r.packs_read,
                r.blobs,
                if r.ok() {
                    "no errors were found".to_string()
                } else {
                    format!("{} error(s) found", r.errors.len())
                }
            );
        }
    }
    Ok(if r.ok() { exit::OK } else { exit::DAMAGED })
}

fn cat(g: &Globals, what: CatWhat) -> Result<i32> {
    match what {
        CatWhat::Config => {
            let config = Repository::read_config(g.backend()?.as_ref())?;
            print!("{}", String::from_utf8_lossy(&config.encode()));
        }
        CatWhat::Snapshot { id } => {
            let repo = g.open()?;
            let (id, snap) = repo.find_snapshot(&id)?;
            let mut v = serde_json::to_value(&snap)?;
            v["id"] = json!(id);
            g.print_json(&v);
        }
    }
    Ok(exit::OK)
}

fn new_password(file: Option<&Path>) -> Result<Vec<u8>> {
    read_secret(file, "LEDGERVAULT_NEW_PASSWORD", "new password", true)
}

fn key(g: &Globals, cmd: KeyCommand) -> Result<i32> {
    let mut repo = g.open()?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                g.print_json(&serde_json::to_value(&keys)?);
            } else {
                println!(
                    "   {:<8}  {:<19}  {:<12}  {:<12}  Host",
                    "ID", "Created", "Access", "User"
                );
                for k in keys {
                    println!(
                        "{:<2} {:<8}  {:<19}  {:<12}  {:<12}  {}",
                        if k.current { "*" } else { "" },
                        k.id.short(),
                        k.created
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S"),
                        if k.damaged {
                            "DAMAGED"
                        } else if k.append_only {
                            "append-only"
                        } else {
                            "full"
                        },
                        k.user,
                        k.host
                    );
                }
            }
        }
        KeyCommand::Add {
            append_only,
            new_password_file,
            kdf: k,
        } => {
            let pw = new_password(new_password_file.as_deref())?;
            let id = repo.add_key(&pw, kdf(&k), append_only)?;
            let what = if append_only {
                "added append-only key"
            } else {
                "added key"
            };
            report(g, what, &id);
        }
        KeyCommand::Remove { id } => {
            let id = repo.remove_key(&id)?;
            report(g, "removed key", &id);
        }
        KeyCommand::Passwd {
            new_password_file,
            kdf: k,
        } => {
            let pw = new_password(new_password_file.as_deref())?;
            let id = repo.change_password(&pw, kdf(&k))?;
            report(g, "changed the password; the key is now", &id);
        }
    }
    Ok(exit::OK)
}

fn report(g: &Globals, what: &str, id: &Id) {
    if g.json {
        g.print_json(&json!({"id": id}));
    } else if !g.quiet {
        println!("{what} {}", id.short());
    }
}

fn unlock(g: &Globals, all: bool) -> Result<i32> {
    let repo = g.open()?;
    let removed = engine::remove_locks(&repo, all)?;
    if g.json {
        g.print_json(&serde_json::Value::Array(
            removed
                .iter()
                .map(|l| json!({"id": l.id, "lock": l.info.as_ref().map(|i| i.describe()), "stale": l.stale}))
                .collect(),
        ));
    } else if !g.quiet {
        for l in &removed {
            println!("removed {}", l.describe());
        }
        println!("{} lock(s) removed", removed.len());
    }
    Ok(exit::OK)
}
