//! Argument definitions. Parsing and validation only; nothing runs here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ledgervault",
    version,
    about = "Backup and restore for accounting data: encrypted, deduplicated, verified",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage error, 3 backup finished but some files were unreadable, \
4 damaged data found, 5 backup stored but suspect (ransomware alarm), 10 no repository, 11 repository locked, \
12 wrong password, 13 refused by an append-only session."
)]
pub struct Cli {
    /// Repository location: a folder, or s3:https://HOST[:PORT]/BUCKET[/PREFIX]
    #[arg(
        short = 'r',
        long = "repo",
        env = "LEDGERVAULT_REPOSITORY",
        global = true,
        value_name = "PATH"
    )]
    pub repo: Option<String>,

    /// File holding the repository password (otherwise LEDGERVAULT_PASSWORD, or a prompt)
    #[arg(
        long,
        env = "LEDGERVAULT_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Configuration file (TOML; see README "Configuration"); its [repository] stands in for --repo
    #[arg(
        short = 'c',
        long,
        env = "LEDGERVAULT_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Add only: refuse anything that deletes or overwrites (always on for append-only keys)
    #[arg(long, global = true)]
    pub append_only: bool,

    /// When another process holds a conflicting lock, keep retrying this long (e.g. 30s, 10min) instead of failing at once
    #[arg(
        long,
        global = true,
        env = "LEDGERVAULT_RETRY_LOCK",
        value_name = "DURATION",
        value_parser = parse_wait
    )]
    pub retry_lock: Option<std::time::Duration>,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Print results as JSON
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars and no chatter; errors still go to standard error
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files, folders or standard input
    Backup(BackupArgs),
    /// List snapshots
    Snapshots,
    /// List the files in a snapshot
    Ls(LsArgs),
    /// Restore a snapshot into a folder
    Restore(RestoreArgs),
    /// Check the repository's integrity
    Check(CheckArgs),
    /// Print a stored object
    Cat {
        #[command(subcommand)]
        what: CatWhat,
    },
    /// Manage the passwords (key files) that open the repository
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Remove snapshots that no retention rule keeps (see --dry-run)
    Forget(ForgetArgs),
    /// Delete data that no snapshot needs any more, repacking half-used packs
    Prune(PruneArgs),
    /// Show sizes, ratios, free space and growth of the repository
    Stats,
    /// Run a restore drill: restore into a scratch folder, check the databases and the books
    Verify(VerifyArgs),
    /// Take a labelled safety snapshot, then run a risky command
    Guard(GuardArgs),
    /// One client's books: list clients, back one up, restore one into this or another firm database
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Protect a snapshot, or clear its suspect alarm
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Remove stale locks left by processes that died
    Unlock {
        /// Remove every lock, also those of running processes
        #[arg(long)]
        remove_all: bool,
    },
    /// Rebuild the index from the packs, or snapshots around lost data (after `check` found damage)
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// Copy snapshots to another repository (the other backup location)
    Copy(CopyArgs),
    /// Run the configured schedules: backup, copies, restore drills, forget and prune, alerts
    Daemon(DaemonArgs),
    /// Last runs, next runs, latest snapshots, space used in each location, warnings
    Status,
    /// The web console: its users, or serve it now (the daemon serves it when [console] listen is set)
    Console {
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// Check or write the configuration file
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write a commented example configuration file
    InitConfig {
        /// Where to write it (refuses to overwrite)
        #[arg(default_value = "ledgervault.toml")]
        path: PathBuf,
    },
    /// Alerts
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Run the demo: make the sample firm, back it up, simulate a day of work, back up again, restore and compare
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source repository: a folder, or the name of a [[copy]] location (default: the primary)
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
    /// Destination: a folder, or the name of a [[copy]] location
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// Password file of the source (default: --password-file, or the location's)
    #[arg(long, value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Password file of the destination (default: the location's; else asked)
    #[arg(long, value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Snapshots to copy (default: every snapshot the destination lacks)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Run the jobs that are due (catching up on missed runs), then exit: for a systemd timer or cron
    #[arg(long)]
    pub once: bool,
    /// Write systemd units (a service, and a timer alternative) instead of running
    #[arg(long)]
    pub install_systemd: bool,
    /// Folder for --install-systemd
    #[arg(long, default_value = "/etc/systemd/system", value_name = "DIR")]
    pub systemd_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration file and what it points at, without running anything
    Check,
}

#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// Send a test alert on every configured channel
    Test,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo (made anew if it holds an earlier demo)
    #[arg(long, default_value = "ledgervault-demo")]
    pub dir: PathBuf,
    /// Clients in the sample firm
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub clients: u32,
    /// Approximate size of the firm database, e.g. 50MB or 1GiB
    #[arg(long, default_value = "50MB", value_parser = parse_size)]
    pub size: u64,
    /// Seed for the generator (same seed, same firm)
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

/// Parses `123`, `50MB`, `1GiB`, `512KiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    let v = n * mult;
    if !(1.0..=1e13).contains(&v) {
        return Err(format!("{s} is out of range"));
    }
    Ok(v as u64)
}

#[derive(Args, Debug, Clone)]
pub struct KdfArgs {
    /// Argon2id memory in KiB for the new key
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub argon2_memory_kib: u32,
    /// Argon2id passes for the new key
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub argon2_iterations: u32,
}

/// How S3 repositories are reached (credentials come from AWS_ACCESS_KEY_ID
/// and AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or AWS_PROFILE with the
/// shared credentials and config files).
#[derive(Args, Debug, Clone, Default)]
pub struct StorageArgs {
    /// S3 region to sign requests for (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)
    #[arg(
        long,
        global = true,
        env = "LEDGERVAULT_S3_REGION",
        value_name = "REGION"
    )]
    pub s3_region: Option<String>,
    /// Address buckets as https://BUCKET.HOST/ instead of https://HOST/BUCKET/
    #[arg(long, global = true, env = "LEDGERVAULT_S3_VIRTUAL_HOST")]
    pub s3_virtual_host: bool,
    /// Extra certificate authorities (PEM) to trust for the S3 server
    #[arg(
        long,
        global = true,
        env = "LEDGERVAULT_S3_CA_BUNDLE",
        value_name = "FILE"
    )]
    pub s3_ca_bundle: Option<PathBuf>,
    /// S3 requests in flight at once (default 16)
    #[arg(long, global = true, env = "LEDGERVAULT_S3_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub s3_connections: Option<u32>,
    /// Give up an S3 request (and retry it) after this long without progress, e.g. 30s (default 60s)
    #[arg(long, global = true, env = "LEDGERVAULT_S3_TIMEOUT", value_name = "DURATION", value_parser = parse_wait)]
    pub s3_timeout: Option<std::time::Duration>,
    /// Folder for the local cache of remote repositories' metadata (default ~/.cache/ledgervault)
    #[arg(long, global = true, env = "LEDGERVAULT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache remote repositories' metadata locally
    #[arg(long, global = true)]
    pub no_cache: bool,
}

impl StorageArgs {
    pub fn options(&self) -> ledgervault_backends::OpenOptions {
        ledgervault_backends::OpenOptions {
            s3: ledgervault_backends::S3Options {
                region: self.s3_region.clone(),
                virtual_host: self.s3_virtual_host,
                ca_bundle: self.s3_ca_bundle.clone(),
                connections: self.s3_connections.map(|n| n as usize),
                profile: None,
                timeout: self.s3_timeout,
            },
            cache_dir: self.cache_dir.clone(),
            no_cache: self.no_cache,
        }
    }
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Share the master key and chunking of this repository (a copy target:
    /// `copy` then skips what is there without reading it). Its password
    /// comes from --same-keys-password-file or a prompt.
    #[arg(long, value_name = "REPO")]
    pub same_keys_as: Option<String>,
    /// Password file of the --same-keys-as repository
    #[arg(long, value_name = "FILE", requires = "same_keys_as")]
    pub same_keys_password_file: Option<PathBuf>,
    /// Target size of pack files in MiB
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub pack_size_mib: u32,
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Lock every object for this many days with S3 Object Lock (compliance
    /// mode): nobody, not even with this repository's keys or the bucket's
    /// credentials, can delete or overwrite what the last N days of
    /// snapshots need. The bucket must have Object Lock enabled.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub immutable_days: Option<u32>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and folders to back up, SQLite databases, and PostgreSQL
    /// databases as postgres://user@host:port/dbname
    /// (none: the config file's [[source]] entries)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Read the data from standard input and store it under this name
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    pub stdin_name: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Why this snapshot was taken, e.g. "year-end close FY2026"
    #[arg(long)]
    pub reason: Option<String>,
    /// zstd compression level
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(-7..=19))]
    pub compression: i32,
    /// Worker threads (default: one per core)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Back up SQLite databases as plain files instead of capturing them
    /// consistently (prefix a path with sqlite: to force capture)
    #[arg(long)]
    pub no_db_detect: bool,
    /// Seconds to wait for a database locked by another process (at most 86400)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub db_timeout: u64,
    /// With a PostgreSQL database: also back up the server's roles and
    /// tablespaces (pg_dumpall --globals-only; needs a superuser)
    #[arg(long)]
    pub globals: bool,
    /// The snapshot whose entries tell unchanged files (default: the
    /// latest of this host holding the same path)
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Read every file, even those whose size, times and inode say they are
    /// unchanged since the parent snapshot
    #[arg(long, conflicts_with = "parent")]
    pub force_reread: bool,
    /// Files of a folder announced to the kernel ahead of the one being
    /// read, so a slow disk or network share has several in flight (0: off)
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub read_ahead: u32,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot this much younger than the newest, e.g. 30d, 2w, 1y6m
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub keep_within: Option<chrono::Duration>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Keep protected and reason-labelled snapshots younger than this many days (at most 36500)
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=crate::config::MAX_PROTECT_DAYS as i64))]
    pub protect_days: Option<u32>,
    /// Print the plan (what is kept, by which rule, and what goes) and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Read every pack and write a new index of what is really there; frames of damaged packs that still authenticate are kept
    Index {
        /// Report what would change, and change nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Write a repaired copy (tagged `repaired`) of every snapshot whose data is partly lost, without the lost files
    Snapshots {
        /// Delete each damaged snapshot once its repaired copy is stored, and unreadable snapshot files
        #[arg(long)]
        forget: bool,
        /// Report what would be lost, and change nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Repack a pack when more than this percentage of it is unused
    #[arg(long, default_value = "10", value_name = "PCT", value_parser = parse_percent_or_zero)]
    pub repack_threshold: f64,
    /// Print what would be deleted and repacked, and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Never delete or repack a pack written less than this long ago: it may
    /// belong to a backup still running (`0s` only when none can be)
    #[arg(long, default_value = "30min", value_name = "DURATION", value_parser = parse_wait)]
    pub min_pack_age: std::time::Duration,
}

fn parse_percent_or_zero(s: &str) -> Result<f64, String> {
    if s.trim_end_matches('%') == "0" {
        return Ok(0.0);
    }
    parse_percent(s)
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Snapshot: `latest` or a unique prefix of its id
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Restore and check every source, not only the databases
    #[arg(long)]
    pub all_sources: bool,
    /// Do nothing if a drill passed more recently than this, e.g. 60d
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub if_older_than: Option<chrono::Duration>,
    /// Folder to restore into (a fresh subfolder, removed afterwards; default: the system temporary folder)
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// PostgreSQL server for drills of PostgreSQL databases, as
    /// postgres://user@host:port/ (a scratch database is created there and
    /// dropped; default: the server the database was backed up from)
    #[arg(long, value_name = "URL")]
    pub scratch_server: Option<String>,
    /// Worker threads for the restore (default: one per core)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
}

#[derive(Args, Debug)]
pub struct GuardArgs {
    /// Why: the risky work about to happen, e.g. "year-end close FY2026"
    #[arg(long, required = true)]
    pub reason: String,
    /// What to back up first (files, folders, sqlite:PATH), then `--` and the command
    #[arg(value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// The command to run, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Seconds to wait for a database locked by another process (at most 86400)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub db_timeout: u64,
    /// With a PostgreSQL database: also back up the server's roles and
    /// tablespaces (pg_dumpall --globals-only; needs a superuser)
    #[arg(long)]
    pub globals: bool,
    /// The snapshot whose entries tell unchanged files (default: the
    /// latest of this host holding the same path)
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Read every file, even those whose size, times and inode say they are
    /// unchanged since the parent snapshot
    #[arg(long, conflicts_with = "parent")]
    pub force_reread: bool,
    /// Files of a folder announced to the kernel ahead of the one being
    /// read, so a slow disk or network share has several in flight (0: off)
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub read_ahead: u32,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// The clients of a firm database, with their row counts
    List {
        /// The firm database
        db: PathBuf,
        /// Also prove, table by table, that every row is one client's, several clients'
        /// (cross-client), shared, or the firm's own, or say which belong to nobody
        #[arg(long)]
        check: bool,
    },
    /// Store one client's rows in the repository (a snapshot tagged with the client)
    Backup {
        /// The firm database
        db: PathBuf,
        /// The client: its id, code or name
        #[arg(long)]
        client: String,
        /// Tag the snapshot (repeatable)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Restore one client from a client archive or a full firm snapshot into a firm database
    Restore {
        /// A client archive snapshot, or a full firm snapshot (`latest` or an id prefix)
        snapshot: String,
        /// The client: its id, code or name
        #[arg(long)]
        client: String,
        /// The firm database to restore into (this one or another firm's)
        #[arg(long, value_name = "DB")]
        into: PathBuf,
        /// Add the client beside an existing one, with new keys where they collide
        #[arg(long, conflicts_with = "replace")]
        as_new: bool,
        /// Replace the client's rows in the target (only if nothing outside it references them)
        #[arg(long)]
        replace: bool,
        /// With --replace: the key of the target's client to replace when it is not the
        /// archive's own (the dry run names it)
        #[arg(long, value_name = "KEY", requires = "replace")]
        replace_other: Option<String>,
        /// Set a column of the client's row, e.g. --set code=C0999 (repeatable)
        #[arg(long = "set", value_name = "COLUMN=VALUE")]
        set: Vec<String>,
        /// Print the plan and change nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Which database of a full firm snapshot (its name in `ls`), when it holds several
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Keep a snapshot through `forget` while it is younger than the protection age
    Protect {
        /// `latest` or a unique prefix of its id
        id: String,
        /// Why it is protected
        #[arg(long)]
        note: Option<String>,
    },
    /// Undo `snapshot protect`
    Unprotect { id: String },
    /// Clear a snapshot's suspect alarm after looking into it
    ClearSuspect {
        id: String,
        /// What was found, for the record
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: `latest` or a unique prefix of its id
    pub snapshot: String,
    /// Show type, mode, size and modification time
    #[arg(short, long)]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: `latest` or a unique prefix of its id
    pub snapshot: String,
    /// Folder to restore into (created if missing), a SQLite file for a
    /// database snapshot, or postgres://user@host:port/dbname
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only this path as `ls` shows it, and what is beneath it (repeatable)
    #[arg(long, value_name = "PATH")]
    pub include: Vec<PathBuf>,
    /// Worker threads (default: one per core)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Replace an existing database (a pre-restore safety snapshot is taken first)
    #[arg(long)]
    pub force: bool,
    /// PostgreSQL: leave out ownership and privileges, for a server
    /// without the original roles
    #[arg(long)]
    pub no_owner: bool,
    /// PostgreSQL: first restore the roles saved with `backup --globals`
    #[arg(long)]
    pub globals: bool,
    /// SQLite: also run `PRAGMA integrity_check` on the restored image
    /// (slow: about 11 s per GiB); by default it is checked against the
    /// row counts and digests the backup recorded
    #[arg(long)]
    pub integrity_check: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read and authenticate every pack
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read this percentage of packs, chosen at random (e.g. 10 or 10%)
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub read_data_subset: Option<f64>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 100"))
    }
}

#[derive(Subcommand, Debug)]
pub enum CatWhat {
    /// The repository config (needs no password)
    Config,
    /// A snapshot document as JSON
    Snapshot {
        /// `latest` or a unique prefix of its id
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List key files
    List,
    /// Add a password (new key file)
    Add {
        /// The new key can add backups but never delete or overwrite anything
        #[arg(long)]
        append_only: bool,
        /// File holding the new password (otherwise LEDGERVAULT_NEW_PASSWORD, or a prompt)
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key file by id prefix
    Remove { id: String },
    /// Change the password of the key in use
    Passwd {
        /// File holding the new password (otherwise LEDGERVAULT_NEW_PASSWORD, or a prompt)
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(s)?;
    d.to_std()
        .map_err(|_| format!("{s:?} is not a positive duration"))
}

#[derive(Subcommand, Debug)]
pub enum ConsoleCommand {
    /// Serve the console in the foreground, until interrupted
    Serve {
        /// Address and port (default: [console] listen, else 127.0.0.1:8440)
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        /// HTTPS with a certificate the console makes and keeps (as
        /// [console] tls_self_signed = true)
        #[arg(long)]
        self_signed: bool,
    },
    /// The console's users and their roles
    User {
        #[command(subcommand)]
        command: ConsoleUserCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConsoleUserCommand {
    /// Add a user, or give one a new role and password (the password comes
    /// from LEDGERVAULT_CONSOLE_PASSWORD, or is asked for twice)
    Add {
        name: String,
        /// admin: everything; operator: back up, safety snapshots, drills,
        /// restores to new places; viewer: sees everything, changes nothing
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
    },
    /// Remove a user (the last admin stays)
    Remove { name: String },
    /// List the users and their roles
    List,
}
