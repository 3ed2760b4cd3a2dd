//! Database kinds, chosen in this one place: how a backup source names a
//! database of each kind, how one is recognised, and how it is captured
//! consistently while it is in use. SQLite files are found by their header
//! (or named with `sqlite:PATH`); PostgreSQL databases by a `postgres://`
//! or `postgresql://` URL. SQL access (per-client export and import) and
//! scratch copies out of a snapshot go through the same trait.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ledgervault_postgres::PgTarget;
use ledgervault_repo::{self as engine, BackupSource};
use ledgervault_sources::drill::{CheckOutcome, SqlCheck};
use ledgervault_tenant::sql::{Db, Sqlite as SqliteDb};

/// How long a capture may wait for the database (a lock, a busy writer).
#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions {
    pub timeout: Duration,
    /// PostgreSQL: the server's roles and tablespaces as well.
    pub globals: bool,
}

/// One kind of database ledgervault backs up live.
pub trait DatabaseKind: Sync {
    /// The name people know it by.
    fn name(&self) -> &'static str;
    /// The engine name stored in a snapshot's database record.
    fn engine(&self) -> &'static str;
    /// Whether `spec`, as given to `backup`, is an address of this kind
    /// that is not a path on this machine (checked before the file system
    /// is asked about it).
    fn is_address(&self, spec: &str) -> bool;
    /// Whether the file at `path` is a database of this kind.
    fn is_file(&self, path: &Path) -> bool;
    /// Starts a consistent capture of the database at `source` (a file, or
    /// an address this kind [`is_address`](Self::is_address)); returns the
    /// backup sources it becomes.
    fn capture(&self, source: &Path, opts: &CaptureOptions) -> Result<Vec<BackupSource>>;
    /// SQL access to the database at `spec` (a file, or an address of this
    /// kind), read-only unless `write`; with how snapshots name it (never
    /// with a password).
    fn open_sql(&self, spec: &str, write: bool) -> Result<(Box<dyn Db>, String)>;
    /// Restores the snapshot source `src` (a database of this kind) into a
    /// scratch copy, runs `work` on SQL access to it, and removes the copy
    /// whatever happens. `near`, when it is an address of this kind, is the
    /// server to make the copy on (else the one the database came from);
    /// `note` hears what is being done.
    fn with_scratch_copy(
        &self,
        from: &ScratchFrom<'_>,
        near: Option<&str>,
        note: &dyn Fn(String),
        work: &mut dyn FnMut(&dyn Db) -> Result<()>,
    ) -> Result<()>;
    /// Restores the snapshot source `from.source` (a database of this
    /// kind) to the server address `req.target`: complete before it takes
    /// the database's name; over an existing database only with
    /// `req.replace`, after `take_safety` took a safety snapshot of it.
    /// Kinds without servers (SQLite: a file) refuse.
    fn restore_to_address(
        &self,
        from: &ScratchFrom<'_>,
        req: &crate::restore::ServerRestore,
        take_safety: &mut crate::restore::TakeSafety<'_>,
    ) -> Result<crate::restore::ServerRestored>;
    /// Whether its databases live on a server, reached by an address (and
    /// are restored to one), rather than in a file.
    fn on_server(&self) -> bool {
        false
    }
    /// How snapshots name the database at `spec` (never with a password).
    fn recorded_as(&self, spec: &str) -> Option<String> {
        Some(spec.to_string())
    }
    /// The database's own name in the server address `spec`.
    fn database_of(&self, _spec: &str) -> Option<String> {
        None
    }
    /// Whether a drill restores this kind on a server of its own instead
    /// of into the scratch folder with the files.
    fn drilled_apart(&self) -> bool {
        false
    }
    /// A drill of a kind [`drilled_apart`](Self::drilled_apart): restores
    /// `from.source` into a scratch database (on `scratch_server` when
    /// given, else on the server it came from), runs `checks` there, and
    /// drops it.
    fn drill_apart(
        &self,
        from: &ScratchFrom<'_>,
        _scratch_server: Option<&str>,
        _checks: &[SqlCheck],
        _client_table: Option<&str>,
    ) -> Result<DrilledApart> {
        bail!(
            "{}: a {} database is drilled in the scratch folder",
            from.source.name,
            self.name()
        )
    }
    /// Whether a snapshot source holds a database of this kind.
    fn holds(&self, src: &engine::Source) -> bool {
        src.node
            .database
            .as_ref()
            .is_some_and(|d| d.engine == self.engine())
    }
}

/// What a drill on a server found.
pub struct DrilledApart {
    pub outcomes: Vec<CheckOutcome>,
    /// Where it ran, for the report (`NAME (scratch database X on HOST)`).
    pub place: String,
}

/// A database in a snapshot, to be copied out for reading.
pub struct ScratchFrom<'a> {
    pub repo: &'a engine::Repository,
    pub id: engine::Id,
    pub snapshot: &'a engine::Snapshot,
    pub source: &'a engine::Source,
    /// Told the bytes of the source restored, as they are read.
    pub progress: &'a dyn engine::Progress,
}

impl<'a> ScratchFrom<'a> {
    /// The source's stored content as one stream (a database dump), its
    /// bytes reported to `progress` as they are read.
    pub fn reader(&self, index: &'a engine::Index) -> Result<impl std::io::Read + 'a> {
        let inner = engine::node_reader(self.repo, index, &self.source.node)?;
        self.progress.start(Some(self.source.node.size));
        Ok(Counted {
            inner,
            progress: self.progress,
        })
    }
}

/// A reader that reports the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn engine::Progress,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.read(n as u64);
        Ok(n)
    }
}

/// The kind of the database `spec` names: an address of a kind, or a file
/// one kind recognises.
pub fn of_target(spec: &str) -> Result<&'static dyn DatabaseKind> {
    if let Some(k) = by_address(spec) {
        return Ok(k);
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!("{spec}: no such database");
    }
    by_file(path).ok_or_else(|| {
        anyhow!("{spec}: not a database ledgervault knows (a SQLite file or a postgres:// address)")
    })
}

/// SQLite: a file, captured page by page in one read transaction.
pub struct Sqlite;

/// PostgreSQL: a server's database, captured with `pg_dump`.
pub struct Postgres;

/// Every kind, in the order they are tried.
pub static KINDS: [&dyn DatabaseKind; 2] = [&Sqlite, &Postgres];

/// The kind whose address `spec` is (not a file on this machine).
pub fn by_address(spec: &str) -> Option<&'static dyn DatabaseKind> {
    KINDS.iter().copied().find(|k| k.is_address(spec))
}

/// The kind of database the file at `path` holds.
pub fn by_file(path: &Path) -> Option<&'static dyn DatabaseKind> {
    KINDS.iter().copied().find(|k| k.is_file(path))
}

/// The address among the config file's sources that a snapshot source
/// of a server kind was backed up from (with its login, which the
/// snapshot does not keep).
pub fn configured_address(config: &crate::config::Config, recorded: &str) -> Option<String> {
    config
        .source
        .iter()
        .map(|s| s.path.get_ref())
        .find(|p| by_address(p).is_some_and(|k| k.recorded_as(p).as_deref() == Some(recorded)))
        .cloned()
}

/// The kind of database a snapshot source holds.
pub fn of_source(src: &engine::Source) -> Option<&'static dyn DatabaseKind> {
    KINDS.iter().copied().find(|k| k.holds(src))
}

impl DatabaseKind for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite"
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn is_address(&self, _spec: &str) -> bool {
        false
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file() && ledgervault_sources::is_sqlite(path)
    }

    fn capture(&self, source: &Path, opts: &CaptureOptions) -> Result<Vec<BackupSource>> {
        Ok(vec![sqlite_source(source, opts.timeout)?])
    }

    fn open_sql(&self, spec: &str, write: bool) -> Result<(Box<dyn Db>, String)> {
        let path = Path::new(spec);
        let db = if write {
            SqliteDb::open_write(path)?
        } else {
            SqliteDb::open_read(path)?
        };
        let origin = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok((Box::new(db), origin.display().to_string()))
    }

    fn restore_to_address(
        &self,
        _from: &ScratchFrom<'_>,
        req: &crate::restore::ServerRestore,
        _take_safety: &mut crate::restore::TakeSafety<'_>,
    ) -> Result<crate::restore::ServerRestored> {
        bail!(
            "{}: a SQLite database is restored to a file, not to an address",
            crate::redact::url(&req.target)
        )
    }

    /// Into a private scratch folder, removed afterwards.
    fn with_scratch_copy(
        &self,
        from: &ScratchFrom<'_>,
        _near: Option<&str>,
        note: &dyn Fn(String),
        work: &mut dyn FnMut(&dyn Db) -> Result<()>,
    ) -> Result<()> {
        let scratch = tempfile::Builder::new()
            .prefix("ledgervault-scratch-")
            .tempdir()
            .context("cannot make a scratch folder")?;
        note(format!(
            "restoring {} from snapshot {} into a scratch folder",
            from.source.name,
            from.id.short()
        ));
        restore_sources(
            from,
            std::slice::from_ref(&from.source.name),
            scratch.path(),
        )?;
        let copy = scratch.path().join(&from.source.name);
        let db = SqliteDb::open_read(&copy)?;
        work(&db)
    }
}

/// Restores the sources `names` of a snapshot into `dir` (which the
/// caller owns), failing on the first file that did not check out.
pub fn restore_sources(from: &ScratchFrom<'_>, names: &[String], dir: &Path) -> Result<()> {
    let opts = engine::RestoreOptions {
        include: names.iter().map(Into::into).collect(),
        ..Default::default()
    };
    let s = engine::restore(from.repo, from.id, from.snapshot, dir, &opts, from.progress)?;
    if let Some(f) = s.failed.first() {
        return Err(anyhow::Error::new(engine::Error::corrupt(
            &f.path,
            f.message.clone(),
        )));
    }
    Ok(())
}

/// A consistent capture of the SQLite database at `path`.
pub fn sqlite_source(path: &Path, timeout: Duration) -> Result<BackupSource> {
    use ledgervault_sources::{SqliteCapture, SqliteOptions};
    let canon = std::fs::canonicalize(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let capture = SqliteCapture::start(
        &canon,
        &SqliteOptions {
            busy_timeout: timeout,
        },
    )
    .map_err(|e| anyhow!(e))?;
    let name = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "database".into());
    Ok(BackupSource::DbImage {
        name,
        path: canon.display().to_string(),
        capture: Box::new(capture),
    })
}

impl DatabaseKind for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    fn engine(&self) -> &'static str {
        "postgresql"
    }

    fn is_address(&self, spec: &str) -> bool {
        ledgervault_postgres::is_pg_url(spec)
    }

    fn is_file(&self, _path: &Path) -> bool {
        false
    }

    /// The dump, and the server's globals when asked.
    fn capture(&self, source: &Path, opts: &CaptureOptions) -> Result<Vec<BackupSource>> {
        use ledgervault_postgres::dump::{dump_globals, DumpOptions};
        use ledgervault_postgres::PgDump;
        let spec = source
            .to_str()
            .ok_or_else(|| anyhow!("{}: not a PostgreSQL address", source.display()))?;
        let target = PgTarget::parse(spec)?;
        let dump = PgDump::start(
            &target,
            &DumpOptions {
                lock_wait_secs: opts.timeout.as_secs(),
            },
        )?;
        let mut out = vec![BackupSource::DbDump {
            name: format!("{}.sql", target.dbname),
            path: target.to_string(),
            dump: Box::new(dump),
        }];
        if opts.globals {
            let bytes = dump_globals(&target)?;
            out.push(BackupSource::Stream {
                name: format!("{}.globals.sql", target.dbname),
                reader: Box::new(std::io::Cursor::new(bytes)),
                origin: Some(format!("globals of {}", target.with_dbname("postgres"))),
            });
        }
        Ok(out)
    }

    fn open_sql(&self, spec: &str, _write: bool) -> Result<(Box<dyn Db>, String)> {
        let t = PgTarget::parse(spec)?;
        let db = ledgervault_postgres::PgDb::connect(&t)?;
        Ok((Box::new(db), t.to_string()))
    }

    fn restore_to_address(
        &self,
        from: &ScratchFrom<'_>,
        req: &crate::restore::ServerRestore,
        take_safety: &mut crate::restore::TakeSafety<'_>,
    ) -> Result<crate::restore::ServerRestored> {
        crate::restore::restore_postgres(from, req, take_safety)
    }

    fn drilled_apart(&self) -> bool {
        true
    }

    fn on_server(&self) -> bool {
        true
    }

    fn recorded_as(&self, spec: &str) -> Option<String> {
        PgTarget::parse(spec).ok().map(|t| t.to_string())
    }

    fn database_of(&self, spec: &str) -> Option<String> {
        PgTarget::parse(spec).ok().map(|t| t.dbname)
    }

    fn drill_apart(
        &self,
        from: &ScratchFrom<'_>,
        scratch_server: Option<&str>,
        checks: &[SqlCheck],
        client_table: Option<&str>,
    ) -> Result<DrilledApart> {
        let info = from
            .source
            .node
            .database
            .as_deref()
            .cloned()
            .unwrap_or_default();
        let server = PgTarget::parse(scratch_server.unwrap_or(&from.source.path))?;
        let index = from.repo.load_index()?;
        let mut reader = from.reader(&index)?;
        let d = ledgervault_postgres::drill::drill_postgres(
            &server,
            &mut reader,
            &info,
            checks,
            client_table,
        )?;
        Ok(DrilledApart {
            outcomes: d.outcomes,
            place: format!(
                "{} (scratch database {} on {})",
                from.source.name, d.scratch, d.server
            ),
        })
    }

    /// Into a scratch database on the server `near` names (when it is a
    /// PostgreSQL address), else on the one the dump came from; dropped
    /// afterwards.
    fn with_scratch_copy(
        &self,
        from: &ScratchFrom<'_>,
        near: Option<&str>,
        note: &dyn Fn(String),
        work: &mut dyn FnMut(&dyn Db) -> Result<()>,
    ) -> Result<()> {
        use ledgervault_postgres::restore::{run_psql, with_scratch_database};
        let server = match near.filter(|n| self.is_address(n)) {
            Some(n) => PgTarget::parse(n)?,
            None => PgTarget::parse(&from.source.path)?,
        };
        let info = from
            .source
            .node
            .database
            .as_deref()
            .cloned()
            .unwrap_or_default();
        with_scratch_database(&server, "scratch", &info.settings, |at, major| {
            note(format!(
                "restoring {} from snapshot {} into scratch database {} on {}",
                from.source.name,
                from.id.short(),
                at.dbname,
                server.server()
            ));
            let index = from.repo.load_index()?;
            let mut reader = from.reader(&index)?;
            run_psql(at, major, &mut reader, true)?;
            let db = ledgervault_postgres::PgDb::connect(at)?;
            work(&db)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_files_find_their_kind() {
        assert_eq!(
            by_address("postgres://u@localhost/firm").map(|k| k.name()),
            Some("PostgreSQL")
        );
        assert!(by_address("/srv/books/firm.db").is_none());
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("firm.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(by_file(&db).map(|k| k.engine()), Some("sqlite"));
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, "SQLite format 2, not really").unwrap();
        assert!(by_file(&txt).is_none());
        assert!(by_file(dir.path()).is_none());
    }
}
