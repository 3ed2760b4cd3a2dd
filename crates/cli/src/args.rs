//! Argument definitions. Parsing and validation only; nothing runs here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ledgervault",
    version,
    about = "Backup and restore for accounting data: encrypted, deduplicated, verified",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage error, 3 backup finished but some files were unreadable, \
4 damaged data found, 10 no repository, 11 repository locked, 12 wrong password."
)]
pub struct Cli {
    /// Repository location (a folder)
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
    /// Remove stale locks left by processes that died
    Unlock {
        /// Remove every lock, also those of running processes
        #[arg(long)]
        remove_all: bool,
    },
    /// Run the demo: make the sample firm, back it up, simulate a day of work, back up again, restore and compare
    Demo(DemoArgs),
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

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Target size of pack files in MiB
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub pack_size_mib: u32,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and folders to back up
    #[arg(value_name = "PATH", required_unless_present = "stdin_name")]
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
    /// Seconds to wait for a database locked by another process
    #[arg(long, default_value_t = 30)]
    pub db_timeout: u64,
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
    /// Folder to restore into (created if missing)
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only this path as `ls` shows it, and what is beneath it (repeatable)
    #[arg(long, value_name = "PATH")]
    pub include: Vec<String>,
    /// Worker threads (default: one per core)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Replace an existing database (a pre-restore safety snapshot is taken first)
    #[arg(long)]
    pub force: bool,
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
