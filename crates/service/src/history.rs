//! The run history: a small SQLite file beside the config, one row per
//! attempt of a daemon job, plus when each alert was last sent.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done, nothing to report.
    Ok,
    /// Done, with something a person should see (unreadable files, a
    /// suspect snapshot, a failed drill).
    Warning,
    /// Did not do its work.
    Failed,
    /// Not run (nothing to do, or it needs a person).
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warning => "warning",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "ok" => Outcome::Ok,
            "warning" => Outcome::Warning,
            "skipped" => Outcome::Skipped,
            _ => Outcome::Failed,
        }
    }

    /// Whether the job did its work.
    pub fn succeeded(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Warning)
    }
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub job: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub attempt: u32,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub message: String,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub snapshot: Option<String>,
    /// Its number in the history (0 before it is recorded).
    #[serde(default)]
    pub id: i64,
}

/// The most of a run's log the history keeps (its end, where errors are).
pub const LOG_LIMIT: usize = 64 << 10;

/// Runs whose logs are kept (the latest).
pub const LOGS_KEPT: i64 = 500;

pub struct History {
    conn: Connection,
}

impl History {
    pub fn open(path: &Path) -> Result<History> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the run history {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY,
                 job TEXT NOT NULL,
                 started TEXT NOT NULL,
                 finished TEXT NOT NULL,
                 attempt INTEGER NOT NULL,
                 outcome TEXT NOT NULL,
                 exit_code INTEGER,
                 message TEXT NOT NULL,
                 bytes_read INTEGER NOT NULL,
                 bytes_added INTEGER NOT NULL,
                 bytes_stored INTEGER NOT NULL,
                 snapshot TEXT
             );
             CREATE INDEX IF NOT EXISTS runs_job ON runs (job, started);
             CREATE TABLE IF NOT EXISTS alerts (
                 key TEXT PRIMARY KEY,
                 sent TEXT NOT NULL
             );",
        )
        .with_context(|| format!("the run history {} is not usable", path.display()))?;
        // Histories written before runs kept their log gain the column.
        let has_log: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'log'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        if !has_log {
            // Another process may be adding it at the same moment.
            let added = conn.execute_batch("ALTER TABLE runs ADD COLUMN log TEXT");
            let has_now = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'log'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)
                .unwrap_or(false);
            if !has_now {
                added.with_context(|| {
                    format!("cannot upgrade the run history {}", path.display())
                })?;
            }
        }
        Ok(History { conn })
    }

    /// Records a run; returns its number.
    pub fn record(&self, r: &Run) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (job, started, finished, attempt, outcome, exit_code, message,
                               bytes_read, bytes_added, bytes_stored, snapshot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                r.job,
                r.started.to_rfc3339(),
                r.finished.to_rfc3339(),
                r.attempt,
                r.outcome.as_str(),
                r.exit_code,
                r.message,
                r.bytes_read as i64,
                r.bytes_added as i64,
                r.bytes_stored as i64,
                r.snapshot,
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Keeps `log` (its last [`LOG_LIMIT`] bytes) as the log of run `id`.
    pub fn set_log(&self, id: i64, log: &str) -> Result<()> {
        let mut from = log.len().saturating_sub(LOG_LIMIT);
        while !log.is_char_boundary(from) {
            from += 1;
        }
        self.conn.execute(
            "UPDATE runs SET log = ?2 WHERE id = ?1",
            params![id, &log[from..]],
        )?;
        // Logs of all but the latest runs are let go: the history stays
        // small, and what a drill once found does not linger.
        self.conn.execute(
            "UPDATE runs SET log = NULL WHERE id <= ?1 AND log IS NOT NULL",
            params![id - LOGS_KEPT],
        )?;
        Ok(())
    }

    /// Run `id` and its log (empty when it kept none).
    pub fn run_with_log(&self, id: i64) -> Result<Option<(Run, String)>> {
        let found = self
            .conn
            .query_row(
                &format!("SELECT {COLS}, coalesce(log, '') FROM runs WHERE id = ?1"),
                [id],
                |r| Ok((row_to_run(r)?, r.get::<_, String>(12)?)),
            )
            .optional()?;
        match found {
            None => Ok(None),
            Some((run, log)) => Ok(Some((run?, log))),
        }
    }

    fn one(&self, sql: &str, job: &str) -> Result<Option<Run>> {
        self.conn
            .query_row(sql, [job], row_to_run)
            .optional()?
            .transpose()
    }

    /// The latest attempt of `job`, whatever its outcome.
    pub fn last(&self, job: &str) -> Result<Option<Run>> {
        self.one(
            &format!(
                "SELECT {COLS} FROM runs WHERE job = ?1 ORDER BY started DESC, id DESC LIMIT 1"
            ),
            job,
        )
    }

    /// The latest attempt of `job` that did its work.
    pub fn last_success(&self, job: &str) -> Result<Option<Run>> {
        self.one(
            &format!(
                "SELECT {COLS} FROM runs WHERE job = ?1 AND outcome IN ('ok', 'warning')
                 ORDER BY started DESC, id DESC LIMIT 1"
            ),
            job,
        )
    }

    /// The earliest run of any job: when this daemon began its watch.
    pub fn first_start(&self) -> Result<Option<DateTime<Utc>>> {
        let s: Option<String> = self
            .conn
            .query_row("SELECT min(started) FROM runs", [], |r| r.get(0))?;
        Ok(s.and_then(|s| parse_time(&s)))
    }

    /// The latest `limit` attempts, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<Run>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLS} FROM runs ORDER BY started DESC, id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map([limit], row_to_run)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// When the alert `key` was last sent.
    pub fn alert_sent(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let s: Option<String> = self
            .conn
            .query_row("SELECT sent FROM alerts WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(s.and_then(|s| parse_time(&s)))
    }

    pub fn set_alert_sent(&self, key: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO alerts (key, sent) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET sent = excluded.sent",
            params![key, at.to_rfc3339()],
        )?;
        Ok(())
    }

    pub fn clear_alert(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM alerts WHERE key = ?1", [key])?;
        Ok(())
    }
}

const COLS: &str = "job, started, finished, attempt, outcome, exit_code, message, \
                    bytes_read, bytes_added, bytes_stored, snapshot, id";

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn row_to_run(r: &rusqlite::Row) -> rusqlite::Result<Result<Run>> {
    let time = |i: usize| -> rusqlite::Result<Result<DateTime<Utc>>> {
        let s: String = r.get(i)?;
        Ok(parse_time(&s).with_context(|| format!("bad time {s:?} in the run history")))
    };
    let started = match time(1)? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let finished = match time(2)? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let outcome: String = r.get(4)?;
    Ok(Ok(Run {
        job: r.get(0)?,
        started,
        finished,
        attempt: r.get(3)?,
        outcome: Outcome::parse(&outcome),
        exit_code: r.get(5)?,
        message: r.get(6)?,
        bytes_read: r.get::<_, i64>(7)?.max(0) as u64,
        bytes_added: r.get::<_, i64>(8)?.max(0) as u64,
        bytes_stored: r.get::<_, i64>(9)?.max(0) as u64,
        snapshot: r.get(10)?,
        id: r.get(11)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str) -> Run {
        let t = Utc::now();
        Run {
            job: job.into(),
            started: t,
            finished: t,
            attempt: 1,
            outcome: Outcome::Ok,
            exit_code: Some(0),
            message: "done".into(),
            bytes_read: 1,
            bytes_added: 2,
            bytes_stored: 3,
            snapshot: None,
            id: 0,
        }
    }

    #[test]
    fn a_history_without_logs_gains_them_and_keeps_each_log_s_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite");
        // A history as an earlier version wrote it: no log column.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT NOT NULL, started TEXT NOT NULL,
                   finished TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL,
                   exit_code INTEGER, message TEXT NOT NULL, bytes_read INTEGER NOT NULL,
                   bytes_added INTEGER NOT NULL, bytes_stored INTEGER NOT NULL, snapshot TEXT);
                 INSERT INTO runs VALUES (1, 'backup', '2026-01-01T02:00:00+00:00',
                   '2026-01-01T02:01:00+00:00', 1, 'ok', 0, 'done', 0, 0, 0, NULL);",
            )
            .unwrap();
        let h = History::open(&path).unwrap();
        let (old, log) = h.run_with_log(1).unwrap().unwrap();
        assert_eq!((old.job.as_str(), old.id, log.as_str()), ("backup", 1, ""));
        // A second opener finds the column there.
        drop(History::open(&path).unwrap());
        let id = h.record(&run("verify")).unwrap();
        assert_eq!(id, 2);
        let long = format!("{}é{}the end", "x".repeat(LOG_LIMIT), "y".repeat(10));
        h.set_log(id, &long).unwrap();
        let (r, log) = h.run_with_log(id).unwrap().unwrap();
        assert_eq!(r.job, "verify");
        assert!(
            log.len() <= LOG_LIMIT && log.ends_with("the end"),
            "{}",
            log.len()
        );
        assert!(h.run_with_log(99).unwrap().is_none());
        assert_eq!(h.recent(10).unwrap()[0].id, 2);
    }
}
