//! The audit log: one JSON line per thing someone did or tried (sign-ins
//! too), appended to a file only its owner may read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub time: DateTime<Utc>,
    pub user: String,
    /// The client's address.
    pub from: String,
    pub action: String,
    pub detail: String,
    /// `ok`, `refused`, or what went wrong.
    pub outcome: String,
}

/// How much of the log's end is read for the page.
const TAIL: u64 = 256 << 10;

pub struct Audit {
    path: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Audit {
    /// A log at `path` (`None`: nothing is kept, for a console without a
    /// config file).
    pub fn new(path: Option<&Path>) -> Audit {
        Audit {
            path: path.map(Path::to_path_buf),
            lock: Mutex::new(()),
        }
    }

    /// Appends an entry. A log that cannot be written is said on standard
    /// error and does not stop the work.
    pub fn record(&self, user: &str, from: &str, action: &str, detail: &str, outcome: &str) {
        let Some(path) = &self.path else { return };
        let e = Entry {
            time: Utc::now(),
            user: user.to_string(),
            from: from.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
            outcome: outcome.to_string(),
        };
        let mut line = serde_json::to_vec(&e).expect("an entry serializes");
        line.push(b'\n');
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(&line)
        };
        if let Err(err) = write() {
            eprintln!(
                "ledgervault console: cannot write the audit log {}: {err}",
                path.display()
            );
        }
    }

    /// The last `n` entries, newest first (lines that do not parse are
    /// skipped).
    pub fn recent(&self, n: usize) -> Vec<Entry> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        // Only the log's tail is read: it grows for years.
        let tail = || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(path)?;
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
            let mut b = Vec::new();
            f.take(TAIL).read_to_end(&mut b)?;
            Ok(b)
        };
        let bytes = tail().unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(n)
            .collect()
    }
}
