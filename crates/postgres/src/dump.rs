//! A consistent `pg_dump` streamed into the repository.
//!
//! `pg_dump` takes one repeatable-read snapshot for the whole dump, so the
//! stream is transactionally consistent while the database is in use. It
//! writes plain SQL (uncompressed, so content-defined chunking finds what a
//! night did not change) straight into the backup's pipe; nothing is written
//! to a temporary file.
//!
//! On the way through, [`CopyDigest`] counts each table's rows and digests
//! them. The digest does not depend on row order (a restored table may come
//! back in another physical order): it is the lane-wise sum, modulo 2^64, of
//! the four little-endian u64 words of BLAKE3 over each row's line of `COPY`
//! text. A drill recomputes it from a dump of the restored database.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, ChildStderr, ChildStdout, Stdio};
use std::thread::JoinHandle;

use ledgervault_repo::{DatabaseInfo, TableStat};

use crate::conn::PgTarget;
use crate::{server_major, tools, Error, Result};

/// Row counts and order-independent digests of the `COPY` sections of a
/// plain-format dump, fed in pieces of any size.
#[derive(Debug, Default)]
pub struct CopyDigest {
    tables: Vec<TableAcc>,
    in_copy: bool,
    /// The incomplete last line of the previous piece.
    partial: Vec<u8>,
    /// The stream's last bytes (to see the dump's closing line).
    tail: Vec<u8>,
}

#[derive(Debug)]
struct TableAcc {
    name: String,
    rows: u64,
    lanes: [u64; 4],
}

/// The last line a complete plain dump writes.
const COMPLETE: &[u8] = b"-- PostgreSQL database dump complete";

impl CopyDigest {
    pub fn feed(&mut self, mut data: &[u8]) {
        self.keep_tail(data);
        if !self.partial.is_empty() {
            match memchr(b'\n', data) {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&data[..i]);
                    self.line(&line);
                    data = &data[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(data);
                    return;
                }
            }
        }
        while let Some(i) = memchr(b'\n', data) {
            self.line(&data[..i]);
            data = &data[i + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    fn keep_tail(&mut self, data: &[u8]) {
        const KEEP: usize = 256;
        if data.len() >= KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - KEEP..]);
        } else {
            self.tail.extend_from_slice(data);
            let over = self.tail.len().saturating_sub(KEEP);
            self.tail.drain(..over);
        }
    }

    fn line(&mut self, line: &[u8]) {
        if self.in_copy {
            if line == b"\\." {
                self.in_copy = false;
                return;
            }
            let t = self.tables.last_mut().expect("a COPY section is open");
            t.rows += 1;
            let h = blake3::hash(line);
            for (lane, w) in t.lanes.iter_mut().zip(h.as_bytes().chunks_exact(8)) {
                *lane = lane.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
            }
        } else if let Some(rest) = line.strip_prefix(b"COPY ") {
            if line.ends_with(b" FROM stdin;") {
                let rest = String::from_utf8_lossy(rest);
                let name = rest
                    .split_once(" (")
                    .map(|(n, _)| n)
                    .or_else(|| rest.split_once(" FROM").map(|(n, _)| n))
                    .unwrap_or(&rest)
                    .to_string();
                self.tables.push(TableAcc {
                    name,
                    rows: 0,
                    lanes: [0; 4],
                });
                self.in_copy = true;
            }
        }
    }

    /// Whether the stream ended with pg_dump's closing line.
    pub fn complete(&self) -> bool {
        // pg_dump closes with "--\n-- PostgreSQL database dump complete\n--\n\n".
        !self.in_copy && self.tail.windows(COMPLETE.len()).any(|w| w == COMPLETE)
    }

    /// The tables seen, sorted by name (a table dumped in two sections, as
    /// partitions can be, is summed).
    pub fn finish(self) -> Vec<TableStat> {
        let mut by: BTreeMap<String, (u64, [u64; 4])> = BTreeMap::new();
        for t in self.tables {
            let e = by.entry(t.name).or_insert((0, [0; 4]));
            e.0 += t.rows;
            for (a, b) in e.1.iter_mut().zip(t.lanes) {
                *a = a.wrapping_add(b);
            }
        }
        by.into_iter()
            .map(|(name, (rows, lanes))| {
                let mut bytes = Vec::with_capacity(32);
                for l in lanes {
                    bytes.extend_from_slice(&l.to_le_bytes());
                }
                TableStat {
                    name,
                    rows,
                    digest: hex::encode(bytes),
                }
            })
            .collect()
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// How to dump.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Give up waiting for a table lock after this many seconds.
    pub lock_wait_secs: u64,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions { lock_wait_secs: 60 }
    }
}

/// A running `pg_dump` of one database, read as a stream.
pub struct PgDump {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
    digest: CopyDigest,
    settings: BTreeMap<String, String>,
    shown: String,
}

/// What the server says about a database, for restoring it alike.
pub fn database_settings(
    client: &mut postgres::Client,
    target: &PgTarget,
) -> Result<BTreeMap<String, String>> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), pg_encoding_to_char(d.encoding), \
             d.datcollate::text, d.datctype::text \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .map_err(|e| target.query_error(e))?;
    let mut m = BTreeMap::new();
    for (i, k) in ["server_version", "encoding", "collate", "ctype"]
        .into_iter()
        .enumerate()
    {
        m.insert(k.to_string(), row.get::<_, String>(i));
    }
    Ok(m)
}

impl PgDump {
    /// Checks the login, picks a `pg_dump` for the server's version and
    /// starts it.
    pub fn start(target: &PgTarget, opts: &DumpOptions) -> Result<PgDump> {
        let mut client = target.connect()?;
        let major = server_major(&mut client)?;
        let settings = database_settings(&mut client, target)?;
        drop(client);
        let tool = tools::find("pg_dump", major)?;
        let mut cmd = target.command(&tool.path);
        cmd.arg("--no-password")
            .arg("--format=plain")
            .arg(format!(
                "--lock-wait-timeout={}s",
                opts.lock_wait_secs.max(1)
            ))
            .arg("--dbname")
            .arg(target.conninfo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().map(collect_stderr);
        Ok(PgDump {
            child,
            stdout,
            stderr,
            digest: CopyDigest::default(),
            settings,
            shown: target.to_string(),
        })
    }
}

/// Collects a child's standard error on a thread (so a chatty tool never
/// blocks on a full pipe).
pub(crate) fn collect_stderr(mut e: ChildStderr) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    })
}

impl Read for PgDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        self.digest.feed(&buf[..n]);
        Ok(n)
    }
}

impl ledgervault_repo::DbDump for PgDump {
    fn finish(mut self: Box<Self>) -> std::result::Result<DatabaseInfo, String> {
        // Drain what is left (the engine stops at end of stream, but be sure).
        let mut sink = [0u8; 64 * 1024];
        while let Ok(n) = self.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        let status = self.child.wait().map_err(|e| format!("pg_dump: {e}"))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "pg_dump of {} failed: {}",
                self.shown,
                tools::first_error(&stderr)
            ));
        }
        let digest = std::mem::take(&mut self.digest);
        if !digest.complete() {
            return Err(format!(
                "pg_dump of {} ended without its closing line; the dump is incomplete",
                self.shown
            ));
        }
        Ok(DatabaseInfo {
            engine: "postgresql".into(),
            tables: digest.finish(),
            settings: std::mem::take(&mut self.settings),
            ..Default::default()
        })
    }
}

impl Drop for PgDump {
    fn drop(&mut self) {
        // An abandoned dump (the backup failed) must not linger.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Cluster-wide roles and tablespaces (`pg_dumpall --globals-only`), read
/// whole: they are small.
pub fn dump_globals(target: &PgTarget) -> Result<Vec<u8>> {
    let mut client = target.connect()?;
    let major = server_major(&mut client)?;
    drop(client);
    let tool = tools::find("pg_dumpall", major)?;
    let out = target
        .command(&tool.path)
        .arg("--no-password")
        .arg("--globals-only")
        .arg("--dbname")
        .arg(target.conninfo())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    if !out.status.success() {
        return Err(Error::Tool(format!(
            "pg_dumpall --globals-only on {} failed: {}",
            target.server(),
            tools::first_error(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "SET x = 1;\nCOPY public.a (id, v) FROM stdin;\n1\tone\n2\ttwo\n\\.\n\nCOPY public.\"B b\" (id) FROM stdin;\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

    #[test]
    fn digests_any_split_and_order() {
        let whole = {
            let mut d = CopyDigest::default();
            d.feed(DUMP.as_bytes());
            assert!(d.complete());
            d.finish()
        };
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].name, "public.\"B b\"");
        assert_eq!(whole[0].rows, 0);
        assert_eq!(whole[1].name, "public.a");
        assert_eq!(whole[1].rows, 2);
        for step in [1, 2, 3, 7, 64] {
            let mut d = CopyDigest::default();
            for piece in DUMP.as_bytes().chunks(step) {
                d.feed(piece);
            }
            assert!(d.complete());
            assert_eq!(d.finish(), whole, "pieces of {step}");
        }
        // Rows in another order give the same digest; another row does not.
        let swapped = DUMP.replace("1\tone\n2\ttwo\n", "2\ttwo\n1\tone\n");
        let mut d = CopyDigest::default();
        d.feed(swapped.as_bytes());
        assert_eq!(d.finish(), whole);
        let changed = DUMP.replace("2\ttwo", "2\tTWO");
        let mut d = CopyDigest::default();
        d.feed(changed.as_bytes());
        let c = d.finish();
        assert_eq!(c[1].rows, 2);
        assert_ne!(c[1].digest, whole[1].digest);
        // A dump cut short is not complete.
        let mut d = CopyDigest::default();
        d.feed(&DUMP.as_bytes()[..40]);
        assert!(!d.complete());
    }
}
