//! The configuration file (`--config FILE` or `LEDGERVAULT_CONFIG`), TOML.
//!
//! ```toml
//! [forget]
//! keep_daily = 14
//! keep_weekly = 8
//! keep_monthly = 24
//! keep_yearly = 7
//! keep_within = "30d"
//! keep_tags = ["year-end"]
//! protect_days = 90
//! suspect_share = 0.10
//!
//! [verify]
//! scratch = "/var/tmp"
//! scratch_postgres = "postgres://backup@db.internal:5432/"
//!
//! [[verify.checks]]
//! name = "no negative stock"
//! sql = "SELECT id, qty FROM items WHERE qty < 0"
//! database = "firm.db"
//! ```
//!
//! Every key is optional. Unknown keys are an error, so a typo does not
//! silently leave the default in force.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use ledgervault_repo::Policy;
use serde::Deserialize;
pub use toml::Spanned;

use crate::schedule::Schedule;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[repository]`: the primary repository.
    pub repository: Option<Location>,
    /// `[[copy]]`: the other backup locations.
    #[serde(default)]
    pub copy: Vec<CopyLocation>,
    /// `[[source]]`: what the scheduled backup takes.
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    /// `[schedule]`: when the daemon runs each job.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// `[alerts]`: where alerts go and when they fire.
    #[serde(default)]
    pub alerts: crate::alert::AlertsConfig,
    /// `[daemon]`: retries and the run history.
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub forget: ForgetConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    /// `[client]`: the tenant map of per-client backup and restore.
    #[serde(default)]
    pub client: ledgervault_tenant::TenantConfig,
    /// `[s3]`: how S3 repositories are reached (command-line options and
    /// their environment variables win).
    #[serde(default)]
    pub s3: S3Config,
    /// `[console]`: the web console the daemon serves.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The file this came from, and its text (for line numbers).
    #[serde(skip)]
    pub file: Option<PathBuf>,
    #[serde(skip)]
    text: Text,
}

/// `[s3]`: the settings of `--s3-region`, `--s3-virtual-host`,
/// `--s3-ca-bundle`, `--s3-connections` and `--cache-dir`, for every S3
/// repository the file names. Credentials never go here: they come from the
/// AWS variables or AWS_PROFILE.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub region: Option<String>,
    #[serde(default)]
    pub virtual_host: bool,
    pub ca_bundle: Option<PathBuf>,
    pub connections: Option<u32>,
    /// `--s3-timeout`, e.g. "30s".
    pub timeout: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

impl S3Config {
    /// Fills what the command line left unset.
    pub fn apply(&self, o: &mut ledgervault_backends::OpenOptions) -> Result<()> {
        if o.s3.timeout.is_none() {
            if let Some(t) = &self.timeout {
                let d = parse_duration(t)
                    .ok()
                    .and_then(|d| d.to_std().ok())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        anyhow!("[s3] timeout = {t:?} is not a duration such as \"30s\"")
                    })?;
                o.s3.timeout = Some(d);
            }
        }
        if o.s3.region.is_none() {
            o.s3.region = self.region.clone();
        }
        o.s3.virtual_host |= self.virtual_host;
        if o.s3.ca_bundle.is_none() {
            o.s3.ca_bundle = self.ca_bundle.clone();
        }
        if o.s3.connections.is_none() {
            o.s3.connections = self.connections.map(|n| n.clamp(1, 256) as usize);
        }
        if o.cache_dir.is_none() {
            o.cache_dir = self.cache_dir.clone();
        }
        Ok(())
    }
}

/// The config text, kept for line numbers; never shown by `Debug`.
#[derive(Default)]
struct Text(String);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A repository location and the secrets that open it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// A folder (or `file://` URL).
    pub path: Spanned<String>,
    /// The password file for backups and copies; give it an append-only key
    /// (`key add --append-only`) so the daemon cannot delete history.
    pub password_file: Option<Spanned<PathBuf>>,
    /// A full-access key for forget and prune. Without one, the daemon
    /// does not forget or prune; a person runs `ledgervault maintain`.
    pub maintenance_password_file: Option<Spanned<PathBuf>>,
}

impl CopyLocation {
    pub fn location(&self) -> Location {
        Location {
            path: self.path.clone(),
            password_file: self.password_file.clone(),
            maintenance_password_file: None,
        }
    }
}

/// `[[copy]]`: another backup location.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyLocation {
    /// A short name, used by `copy --to NAME`, `status` and alerts.
    pub name: String,
    /// A folder (or `file://` URL).
    pub path: Spanned<String>,
    /// The password file of this repository.
    pub password_file: Option<Spanned<PathBuf>>,
    /// When the daemon copies to it (default `daily at 03:00`).
    pub schedule: Option<Spanned<String>>,
}

/// `[[source]]`: one thing the scheduled backup takes.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A file, folder, SQLite database or `postgres://` URL.
    pub path: Spanned<String>,
    /// Glob patterns of files and folders inside `path` to leave out. A
    /// pattern without `/` matches a name anywhere (`*.tmp`, `~$*`); one
    /// with `/` matches the whole path (`/srv/firm/cache/**`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// When given, only files matching one of these are taken (folders are
    /// still walked).
    #[serde(default)]
    pub include: Vec<String>,
}

impl std::fmt::Debug for SourceConfig {
    /// A PostgreSQL URL shows without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("path", &crate::redact::url(self.path.get_ref()))
            .field("exclude", &self.exclude)
            .field("include", &self.include)
            .finish()
    }
}

/// `[schedule]`: when each daemon job runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Default `daily at 02:00`.
    pub backup: Option<Spanned<String>>,
    /// Restore drill, run when the last passed one is older than
    /// `[verify] interval`. Default `daily at 05:00`.
    pub verify: Option<Spanned<String>>,
    /// Forget and prune. Default `weekly on sunday at 06:00`.
    pub prune: Option<Spanned<String>>,
    /// How often the daemon checks for silence and full disks. Default `hourly`.
    pub watch: Option<Spanned<String>>,
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Attempts after the first on a temporary error (default 3).
    pub retries: Option<u32>,
    /// Wait before the first retry; doubles each time (default `1m`).
    pub retry_delay: Option<String>,
    /// The run history (default: beside the config file, `NAME.history.sqlite`).
    pub history: Option<PathBuf>,
    /// A backup still running after this is killed, recorded as failed and
    /// alerted (default `6h`).
    pub backup_timeout: Option<String>,
    /// The same for each copy (default `6h`).
    pub copy_timeout: Option<String>,
    /// The same for the restore drill (default `4h`).
    pub verify_timeout: Option<String>,
    /// The same for forget and prune (default `12h`).
    pub prune_timeout: Option<String>,
    /// How jobs run: `in-process` (the default: on threads of the daemon,
    /// through the service layer) or `process` (each attempt a child
    /// `ledgervault` process, killed with everything it started at its
    /// timeout: for storage known to hang).
    pub jobs: Option<String>,
}

/// `[console]`: the web console (see `ledgervault console`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address and port to serve on, for example `127.0.0.1:8440`; the
    /// daemon serves no console without it. Any address other than
    /// loopback needs `tls_cert` and `tls_key`.
    pub listen: Option<String>,
    /// PEM certificate chain and private key for HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// HTTPS with a certificate the console makes on first start and keeps
    /// beside the config file (`NAME.console-cert.pem`, `NAME.console-key.pem`);
    /// its fingerprint is printed at every start.
    #[serde(default)]
    pub tls_self_signed: bool,
    /// The console's users (default: beside the config file,
    /// `NAME.users.json`).
    pub users: Option<PathBuf>,
    /// Who did what (default: beside the config file, `NAME.audit.log`).
    pub audit: Option<PathBuf>,
    /// The folder where operators may restore a database to a new file
    /// (by file name only); without it the console restores to new files
    /// nowhere.
    pub restore_to: Option<PathBuf>,
}

/// `[verify]`: restore drills.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The daemon's drill runs when the last passed one is older (default `60d`).
    pub interval: Option<String>,
    /// Where drills restore to (a fresh subfolder each time).
    pub scratch: Option<std::path::PathBuf>,
    /// The PostgreSQL server drills of PostgreSQL databases use.
    pub scratch_postgres: Option<String>,
    /// Custom accounting checks: queries that must return no rows.
    #[serde(default)]
    pub checks: Vec<CustomCheck>,
}

impl std::fmt::Debug for VerifyConfig {
    /// The scratch server's URL shows without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyConfig")
            .field("interval", &self.interval)
            .field("scratch", &self.scratch)
            .field(
                "scratch_postgres",
                &self.scratch_postgres.as_deref().map(crate::redact::url),
            )
            .field("checks", &self.checks)
            .finish()
    }
}

/// `[[verify.checks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCheck {
    pub name: String,
    /// A query that returns the offending rows, and no rows when all is well.
    pub sql: String,
    /// Only for databases with this file name (default: every database).
    pub database: Option<String>,
}

/// `[forget]`: the retention policy used when `forget` gets no `--keep-*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Protected and reason-labelled snapshots younger than this are kept.
    pub protect_days: Option<u32>,
}

/// `[backup]`: thresholds of the ransomware guard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Share of a database's pages that may turn into random-looking bytes
    /// (no longer database pages) since the last backup before the snapshot
    /// is marked suspect.
    pub suspect_share: Option<f64>,
    /// Share of a database's rows that may vanish since the last backup.
    pub rows_lost_share: Option<f64>,
    /// Fewer suspicious documents than this never raise the alarm.
    pub min_files: Option<u64>,
    /// Share of a folder's documents of a known format that may change
    /// into something else (a `.pdf` that is no longer a PDF).
    pub broken_share: Option<f64>,
    /// Share of a folder's files that may be renamed to a new extension.
    pub renamed_share: Option<f64>,
    /// Share of a folder's files that may be deleted.
    pub deleted_share: Option<f64>,
}

impl BackupConfig {
    /// The guard's thresholds: these values over the defaults.
    pub fn guard(&self) -> ledgervault_repo::GuardOptions {
        let mut g = ledgervault_repo::GuardOptions::default();
        if let Some(v) = self.suspect_share {
            g.page_share = v;
        }
        if let Some(v) = self.rows_lost_share {
            g.rows_lost_share = v;
        }
        if let Some(v) = self.min_files {
            g.min_files = v;
        }
        if let Some(v) = self.broken_share {
            g.broken_share = v;
        }
        if let Some(v) = self.renamed_share {
            g.renamed_share = v;
        }
        if let Some(v) = self.deleted_share {
            g.deleted_share = v;
        }
        g
    }
}

/// The longest `protect_days` (100 years): further would overflow the
/// date arithmetic and means "forever" anyway.
pub const MAX_PROTECT_DAYS: u32 = 36_500;
/// The most retries of a daemon job: with the delay doubling, more would
/// mean waiting years.
pub const MAX_RETRIES: u32 = 20;

impl Config {
    /// Loads `path`, or the defaults when no file is configured.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = crate::redact::read_limited_string(
            path,
            crate::redact::CONFIG_FILE_LIMIT,
            "config file",
        )?;
        Self::parse(&text, path)
    }

    /// Parses and validates the text of the config file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let msg = e.message().trim().replace('\n', " ");
            match line {
                Some(l) => anyhow!("config file {}, line {l}: {msg}", path.display()),
                None => anyhow!("config file {}: {msg}", path.display()),
            }
        })?;
        c.file = Some(path.to_path_buf());
        c.text = Text(text.to_string());
        c.validate()?;
        Ok(c)
    }

    /// An error about the value at `span`, naming its line.
    pub fn at<T>(&self, v: &Spanned<T>, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "config file {}, line {}: {msg}",
            self.file_name(),
            line_of(&self.text.0, v.span().start)
        )
    }

    fn file_name(&self) -> String {
        self.file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into())
    }

    fn validate(&self) -> Result<()> {
        let file = self.file_name();
        for (key, v) in [
            ("suspect_share", self.backup.suspect_share),
            ("rows_lost_share", self.backup.rows_lost_share),
            ("broken_share", self.backup.broken_share),
            ("renamed_share", self.backup.renamed_share),
            ("deleted_share", self.backup.deleted_share),
        ] {
            if let Some(s) = v {
                if !(s > 0.0 && s <= 1.0) {
                    return Err(anyhow!(
                        "config file {file}: backup.{key} must be above 0 and at most 1, not {s}"
                    ));
                }
            }
        }
        if let Some(d) = self.forget.protect_days {
            if d > MAX_PROTECT_DAYS {
                return Err(anyhow!(
                    "config file {file}: forget.protect_days must be at most {MAX_PROTECT_DAYS} (100 years), not {d}"
                ));
            }
        }
        if let Some(j) = self.daemon.jobs.as_deref() {
            if !matches!(j, "in-process" | "process") {
                return Err(anyhow!(
                    "config file {file}: daemon.jobs is \"in-process\" or \"process\", not {j:?}"
                ));
            }
        }
        if let Some(r) = self.daemon.retries {
            if r > MAX_RETRIES {
                return Err(anyhow!(
                    "config file {file}: daemon.retries must be at most {MAX_RETRIES}, not {r}"
                ));
            }
        }
        for (i, check) in self.verify.checks.iter().enumerate() {
            if check.name.trim().is_empty() || check.sql.trim().is_empty() {
                return Err(anyhow!(
                    "config file {file}: verify.checks[{i}] needs a name and an sql query"
                ));
            }
        }
        for (key, v) in [
            ("forget.keep_within", &self.forget.keep_within),
            ("verify.interval", &self.verify.interval),
            ("daemon.retry_delay", &self.daemon.retry_delay),
            ("alerts.no_backup_within", &self.alerts.no_backup_within),
            ("alerts.full_within", &self.alerts.full_within),
            ("s3.timeout", &self.s3.timeout),
        ] {
            if let Some(w) = v {
                parse_duration(w).map_err(|e| anyhow!("config file {file}: {key}: {e}"))?;
            }
        }
        let d = &self.daemon;
        for (key, v) in [
            ("daemon.backup_timeout", &d.backup_timeout),
            ("daemon.copy_timeout", &d.copy_timeout),
            ("daemon.verify_timeout", &d.verify_timeout),
            ("daemon.prune_timeout", &d.prune_timeout),
        ] {
            if let Some(w) = v {
                let t = parse_duration(w).map_err(|e| anyhow!("config file {file}: {key}: {e}"))?;
                if t < chrono::Duration::seconds(1) || t > chrono::Duration::days(30) {
                    return Err(anyhow!(
                        "config file {file}: {key} must be between 1s and 30d, not {w:?}"
                    ));
                }
            }
        }
        let s = &self.schedule;
        for v in [&s.backup, &s.verify, &s.prune, &s.watch]
            .into_iter()
            .chain(self.copy.iter().map(|c| &c.schedule))
            .flatten()
        {
            Schedule::parse(v.get_ref()).map_err(|e| self.at(v, e))?;
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.copy {
            if c.name.trim().is_empty() || c.name.contains(char::is_whitespace) {
                return Err(self.at(&c.path, "a [[copy]] needs a name without spaces"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(self.at(
                    &c.path,
                    format!("two [[copy]] locations are named {:?}", c.name),
                ));
            }
        }
        for src in &self.source {
            if src.path.get_ref().trim().is_empty() {
                return Err(self.at(&src.path, "a [[source]] needs a path"));
            }
            crate::filter::Filter::new(&src.exclude, &src.include)
                .map_err(|e| self.at(&src.path, e))?;
        }
        self.alerts
            .validate()
            .map_err(|e| anyhow!("config file {file}: {e}"))?;
        Ok(())
    }

    /// Problems with what the file points at: repositories, password
    /// files and sources that cannot be reached. Each names its line.
    pub fn unreachable(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut location = |what: &str, l: &Location| {
            let p = l.path.get_ref();
            let dir = Path::new(p.strip_prefix("file://").unwrap_or(p));
            // Remote repositories are reached by `status` and the jobs
            // themselves, with their credentials; here only folders.
            if !ledgervault_backends::is_remote(p) && !dir.join("config").is_file() {
                out.push(format!(
                    "{}",
                    self.at(
                        &l.path,
                        format!(
                            "{what} {}: no ledgervault repository there",
                            crate::redact::url(p)
                        )
                    )
                ));
            }
            for f in [&l.password_file, &l.maintenance_password_file]
                .into_iter()
                .flatten()
            {
                if let Err(e) = std::fs::File::open(f.get_ref()) {
                    out.push(format!(
                        "{}",
                        self.at(f, format!("cannot read {}: {e}", f.get_ref().display()))
                    ));
                }
            }
        };
        if let Some(r) = &self.repository {
            location("repository", r);
        }
        for c in &self.copy {
            location(&format!("copy location {:?}", c.name), &c.location());
        }
        for src in &self.source {
            let p = src.path.get_ref();
            // A database server's address is not a path to look for.
            if crate::db::by_address(p).is_some() {
                continue;
            }
            let p = p.strip_prefix("sqlite:").unwrap_or(p);
            if let Err(e) = std::fs::symlink_metadata(p) {
                out.push(format!(
                    "{}",
                    self.at(&src.path, format!("source {}: {e}", crate::redact::url(p)))
                ));
            }
        }
        out
    }

    /// The schedule of a daemon job (validated on load).
    pub fn schedule_of(&self, v: &Option<Spanned<String>>, default: &str) -> Schedule {
        Schedule::parse(v.as_ref().map(|s| s.get_ref().as_str()).unwrap_or(default))
            .expect("validated on load")
    }

    /// A duration setting (validated on load).
    pub fn duration(&self, v: &Option<String>, default: &str) -> chrono::Duration {
        parse_duration(v.as_deref().unwrap_or(default)).expect("validated on load")
    }

    /// The run history: `[daemon] history`, or `NAME.history.sqlite` beside
    /// the config file.
    pub fn history_path(&self) -> Option<PathBuf> {
        self.beside(&self.daemon.history, "history.sqlite")
    }

    /// A file kept beside the config file: `NAME.<suffix>`, unless
    /// `given` says where.
    fn beside(&self, given: &Option<PathBuf>, suffix: &str) -> Option<PathBuf> {
        if let Some(p) = given {
            return Some(p.clone());
        }
        let file = self.file.as_ref()?;
        let stem = file.file_stem()?.to_string_lossy().into_owned();
        Some(file.with_file_name(format!("{stem}.{suffix}")))
    }

    /// The console's user file.
    pub fn console_users_path(&self) -> Option<PathBuf> {
        self.beside(&self.console.users, "users.json")
    }

    /// Where a self-signed console certificate and its key are kept.
    pub fn console_self_signed_paths(&self) -> Option<(PathBuf, PathBuf)> {
        Some((
            self.beside(&None, "console-cert.pem")?,
            self.beside(&None, "console-key.pem")?,
        ))
    }

    /// The console's audit log.
    pub fn console_audit_path(&self) -> Option<PathBuf> {
        self.beside(&self.console.audit, "audit.log")
    }

    /// A copy location by name.
    pub fn copy_location(&self, name: &str) -> Option<&CopyLocation> {
        self.copy.iter().find(|c| c.name == name)
    }

    /// The retention policy this file sets, over the accounting default:
    /// the default applies unless the file sets at least one keep rule.
    pub fn policy(&self) -> Policy {
        let f = &self.forget;
        let any = f.keep_last.is_some()
            || f.keep_hourly.is_some()
            || f.keep_daily.is_some()
            || f.keep_weekly.is_some()
            || f.keep_monthly.is_some()
            || f.keep_yearly.is_some()
            || f.keep_within.is_some()
            || !f.keep_tags.is_empty();
        if !any {
            return Policy::accounting_default();
        }
        Policy {
            last: f.keep_last.unwrap_or(0),
            hourly: f.keep_hourly.unwrap_or(0),
            daily: f.keep_daily.unwrap_or(0),
            weekly: f.keep_weekly.unwrap_or(0),
            monthly: f.keep_monthly.unwrap_or(0),
            yearly: f.keep_yearly.unwrap_or(0),
            within: f
                .keep_within
                .as_deref()
                .map(|w| parse_duration(w).expect("validated on load")),
            tags: f.keep_tags.clone(),
        }
    }
}

/// Parses `90d`, `12h`, `2w`, `1y` (365 days), `6m` (30-day months),
/// `30s`, `5min`, or a combination like `1y6m`.
pub fn parse_duration(s: &str) -> std::result::Result<chrono::Duration, String> {
    let mut total = 0i64;
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 2w or 1y"))?;
        rest = &rest[digits..];
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 86400 * 7,
            "m" => 86400 * 30,
            "y" => 86400 * 365,
            "" => return Err(format!("{s:?} needs a unit, e.g. {n}d")),
            u => {
                return Err(format!(
                    "{s:?}: unknown unit {u:?} (use s, min, h, d, w, m for months, or y)"
                ))
            }
        };
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .filter(|&t| t <= 86400 * 365 * 1000)
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    Ok(chrono::Duration::seconds(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_duration("1y6m").unwrap(),
            chrono::Duration::days(365 + 180)
        );
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert_eq!(
            parse_duration("5min").unwrap(),
            chrono::Duration::minutes(5)
        );
        assert_eq!(
            parse_duration("1h30min").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert_eq!(parse_duration("2s").unwrap(), chrono::Duration::seconds(2));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999y").is_err());
    }

    #[test]
    fn policy_from_file_replaces_the_default() {
        let c: Config = toml::from_str("[forget]\nkeep_daily = 3\n").unwrap();
        assert_eq!(
            c.policy(),
            Policy {
                daily: 3,
                ..Policy::none()
            }
        );
        assert_eq!(Config::default().policy(), Policy::accounting_default());
        assert!(toml::from_str::<Config>("[forget]\nkeep_dayly = 3\n").is_err());
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let c: Config =
            toml::from_str("[verify]\nscratch_postgres = \"postgres://ann:hunter2@db:5432/\"\n")
                .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://ann:***@db:5432/"), "{shown}");

        let c = Config::parse(
            "[[source]]\npath = \"postgres://ann:hunter2@db/books\"\n\n[[alerts.webhook]]\nurl = \"https://hooks.example/T0/B0/token42\"\n",
            Path::new("lv.toml"),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("token42"),
            "{shown}"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[schedule]\nbackup = \"daily at 02:00\"\nprune = \"every 90 minutes\"\n";
        let e = Config::parse(text, Path::new("lv.toml")).unwrap_err();
        assert!(e.to_string().contains("lv.toml, line 3"), "{e}");
        let e = Config::parse("[daemon]\nretries = \"three\"\n", Path::new("lv.toml")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Config::parse(
            "[[copy]]\nname = \"a\"\npath = \"/x\"\n[[copy]]\nname = \"a\"\npath = \"/y\"\n",
            Path::new("lv.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("line 6") && e.to_string().contains("two [[copy]]"),
            "{e}"
        );
    }
}
