//! Helpers shared by the CLI test files: a temporary folder with a
//! repository location and password file, and the real binary run in it.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ledgervault_testkit::fixtures;
use predicates::prelude::*;

pub struct Env {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub pw: PathBuf,
}

impl Env {
    /// A folder with a password file and a repository path, not yet created.
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let pw = root.join("pw");
        fs::write(&pw, "s3cret\n").unwrap();
        Env {
            repo: root.join("repo"),
            pw,
            root,
            _tmp: tmp,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("ledgervault").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LEDGERVAULT_REPOSITORY", &self.repo)
            .env("LEDGERVAULT_PASSWORD_FILE", &self.pw);
        c
    }

    /// A folder with an initialised repository.
    pub fn with_repo() -> Env {
        let e = Env::new();
        e.init();
        e
    }

    pub fn init(&self) {
        self.init_at(&self.repo, &self.pw);
    }

    /// Creates a repository at `repo` with the cheap test settings.
    pub fn init_at(&self, repo: &Path, pw: &Path) {
        self.cmd_for(repo, pw)
            .args([
                "init",
                "--argon2-memory-kib",
                "64",
                "--argon2-iterations",
                "1",
                "--pack-size-mib",
                "1",
            ])
            .assert()
            .success()
            .stdout(predicate::str::contains("created ledgervault repository"));
    }

    /// The binary pointed at another repository and password file.
    pub fn cmd_for(&self, repo: &Path, pw: &Path) -> Command {
        let mut c = self.cmd();
        c.env("LEDGERVAULT_REPOSITORY", repo)
            .env("LEDGERVAULT_PASSWORD_FILE", pw);
        c
    }

    /// Panics with its output unless `check --read-data` passes on `repo`.
    pub fn check_clean(&self, repo: &Path, pw: &Path, what: &str) {
        let out = self
            .cmd_for(repo, pw)
            .args(["check", "--read-data"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: check failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn data(&self, name: &str, bytes: u64, seed: u64) -> PathBuf {
        let p = self.root.join(name);
        fixtures::mixed_tree(&p, bytes, seed).unwrap();
        p
    }
}

/// Every line of stderr is one line: no backtrace, no panic.
pub fn one_line_error(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).to_string();
    assert!(!s.contains("panicked") && !s.contains("backtrace"), "{s}");
    assert_eq!(
        s.trim_end().lines().count(),
        1,
        "expected one line, got: {s}"
    );
    s
}

/// The rollback command `guard` printed on standard error.
pub fn printed_rollback(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    s.lines()
        .find(|l| l.trim_start().starts_with("ledgervault "))
        .unwrap_or_else(|| panic!("no rollback command in {s}"))
        .trim()
        .to_string()
}

/// Runs a printed command line as a person would paste it: in `sh`, with
/// nothing in the environment but `PATH` (the binary's folder first) and
/// `env`. Panics with the command's standard error when it fails.
pub fn run_printed(line: &str, env: &[(&str, &str)]) {
    let bin_dir = assert_cmd::cargo::cargo_bin("ledgervault")
        .parent()
        .unwrap()
        .to_path_buf();
    let out = std::process::Command::new("sh")
        .args(["-c", line])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Panics unless the two trees are identical (`diff -r`, links compared as
/// links).
pub fn diff_trees(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Replaces `to` with a copy of `from` keeping links, modes and times.
pub fn copy_tree(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success(), "cp -a {} {}", from.display(), to.display());
}
