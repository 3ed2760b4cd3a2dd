//! Finding the PostgreSQL client tools that fit a server.
//!
//! `pg_dump` refuses servers of a newer major version than its own, so the
//! tool is picked by the server's version: the oldest installed major that is
//! not older than the server's. Debian keeps each major's tools under
//! `/usr/lib/postgresql/N/bin`; `PATH` and `LEDGERVAULT_PG_BIN` are searched
//! as well.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// An installed tool and its major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub path: PathBuf,
    pub major: u32,
}

/// Every copy of `name` this machine has, with its major version.
pub fn candidates(name: &str) -> Vec<Tool> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("LEDGERVAULT_PG_BIN") {
        dirs.push(d.into());
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .collect();
        v.sort();
        dirs.extend(v);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut out: Vec<Tool> = Vec::new();
    for d in dirs {
        let p = d.join(name);
        if !p.is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if out
            .iter()
            .any(|t| std::fs::canonicalize(&t.path).ok().as_ref() == Some(&real))
        {
            continue;
        }
        if let Some(major) = version_of(&p) {
            out.push(Tool { path: p, major });
        }
    }
    out
}

/// The major version a tool prints (`pg_dump (PostgreSQL) 15.4` gives 15).
pub fn version_of(tool: &Path) -> Option<u32> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The tool to use against a server of major version `server`.
pub fn find(name: &str, server: u32) -> Result<Tool> {
    let all = candidates(name);
    if let Some(t) = all
        .iter()
        .filter(|t| t.major >= server)
        .min_by_key(|t| t.major)
    {
        return Ok(t.clone());
    }
    match all.iter().max_by_key(|t| t.major) {
        None => Err(Error::Tool(format!(
            "{name} is not installed: install the PostgreSQL client tools (Debian: apt-get install postgresql-client-{server}) or set LEDGERVAULT_PG_BIN to their folder"
        ))),
        Some(newest) => Err(Error::Tool(format!(
            "the PostgreSQL server is version {server} but the newest {name} here is version {} ({}); {name} cannot work with a newer server: install postgresql-client-{server} or set LEDGERVAULT_PG_BIN to its bin folder",
            newest.major,
            newest.path.display()
        ))),
    }
}

/// The first line of a tool's standard error worth showing: its first
/// error, or else its first line.
pub fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.contains("ERROR") || l.contains("error:") || l.contains("FATAL"))
        .or(lines.first())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no message".into())
}
