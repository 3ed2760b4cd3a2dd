//! Consistent capture and safe restore of live SQLite databases.
//!
//! **Capture.** A dedicated thread opens the database read-only, starts one
//! read transaction, and reads every page through SQLite's own pager with
//! the `sqlite_dbpage` virtual table. Inside one read transaction SQLite
//! guarantees a consistent view, committed WAL content included, so the
//! image is never torn, whatever other processes write meanwhile. In WAL
//! mode writers are never blocked, and the pages stream straight into the
//! backup. In rollback-journal mode the read transaction keeps writers from
//! committing, so the pages are first copied to a private spool file in the
//! temporary folder and the transaction ends; writers wait only for that
//! copy, and the backup reads the spool. Every table is counted and digested
//! over exactly the captured state (same transaction, a connection pinned to
//! its snapshot, or the spool), which also finds damaged tables.
//!
//! **Restore.** An image is written to a temporary file, checked with
//! `PRAGMA integrity_check`, fsynced and renamed into place. Over a live
//! database, its content is replaced through SQLite's backup API instead,
//! so open connections see the restored data and nothing is half-written.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::btree;
use ledgervault_repo::{DatabaseInfo, DbCapture, TableStat};
pub use rusqlite::Connection;
use rusqlite::{types::ValueRef, OpenFlags};

/// The 16 bytes every SQLite database starts with.
pub const HEADER: &[u8; 16] = b"SQLite format 3\0";
/// Pages sent to the engine per message.
const PAGES_PER_BATCH: usize = 64;

/// Whether `path` is a regular file that starts like a SQLite database.
pub fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    match fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => &head == HEADER,
        Err(_) => false,
    }
}

/// How to capture.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long to wait for a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(30),
        }
    }
}

/// A capture in progress; read it to its end, then call `finish`.
pub struct SqliteCapture {
    pages: mpsc::Receiver<Result<Vec<u8>, String>>,
    /// Batches read to their end go back to the capture thread for reuse.
    spent: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    page_size: u32,
    thread: Option<JoinHandle<Result<DatabaseInfo, String>>>,
}

struct Start {
    page_size: u32,
}

fn sql_err(path: &Path, e: rusqlite::Error) -> String {
    let text = e.to_string();
    if text.contains("locked") || text.contains("busy") {
        format!(
            "{}: the database {} for longer than the timeout ({text})",
            path.display(),
            ledgervault_repo::DATABASE_LOCKED
        )
    } else if text.contains("not a database") || text.contains("file is not a database") {
        format!(
            "{}: not a SQLite database, although it starts like one ({text})",
            path.display()
        )
    } else {
        format!("{}: {text}", path.display())
    }
}

impl SqliteCapture {
    /// Starts capturing `path`. Returns once the read transaction is open,
    /// so a locked or unreadable database fails here, before any data moves.
    pub fn start(path: &Path, opts: &SqliteOptions) -> Result<SqliteCapture, String> {
        let (start_tx, start_rx) = mpsc::sync_channel::<Result<Start, String>>(1);
        let (page_tx, page_rx) = mpsc::sync_channel(4);
        let (spent_tx, spent_rx) = mpsc::sync_channel(4);
        let path: PathBuf = path.to_path_buf();
        let timeout = opts.busy_timeout;
        let thread = std::thread::Builder::new()
            .name("sqlite-capture".into())
            .spawn(move || capture_thread(&path, timeout, start_tx, page_tx, spent_rx))
            .map_err(|e| e.to_string())?;
        match start_rx.recv() {
            Ok(Ok(s)) => Ok(SqliteCapture {
                pages: page_rx,
                spent: spent_tx,
                buf: Vec::new(),
                pos: 0,
                page_size: s.page_size,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => "the capture thread stopped unexpectedly".into(),
            }),
        }
    }
}

fn capture_thread(
    path: &Path,
    timeout: Duration,
    start: mpsc::SyncSender<Result<Start, String>>,
    pages: mpsc::SyncSender<Result<Vec<u8>, String>>,
    spent: mpsc::Receiver<Vec<u8>>,
) -> Result<DatabaseInfo, String> {
    // Rollback-journal mode: first try to copy without taking any lock a
    // writer could meet (see `optimistic`).
    if let Some((sp, page_size)) = optimistic::capture(path, timeout) {
        if start.send(Ok(Start { page_size })).is_err() {
            return Err("capture abandoned".into());
        }
        let mut info = DatabaseInfo {
            engine: "sqlite".into(),
            page_size,
            journal_mode: "delete".into(),
            ..Default::default()
        };
        let fed = feed_from_spool(&sp, &pages, &mut info);
        if let Err(e) = &fed {
            let _ = pages.send(Err(e.clone()));
        }
        return fed.map(|()| info);
    }
    // Our own descriptor of the live database file, when its pages are read
    // straight from it. Closing any descriptor of a file drops every POSIX
    // lock this process holds on it, SQLite's included, and without its
    // shared lock another process's last connection could checkpoint into
    // the file while we read it. So every copy of it stays open until the
    // connection below is closed: declared first, it is dropped last.
    let mut db_file: Option<std::sync::Arc<fs::File>> = None;
    let opened = (|| -> Result<(Connection, u32, u64, String), String> {
        let conn = open_for_reading(path).map_err(|e| sql_err(path, e))?;
        conn.busy_timeout(timeout).map_err(|e| sql_err(path, e))?;
        // A modest page cache; no memory map, so memory stays bounded
        // whatever the size of the database.
        conn.execute_batch("PRAGMA cache_size = -16384")
            .map_err(|e| sql_err(path, e))?;
        // The read transaction starts at the first read and holds one
        // consistent view until COMMIT.
        conn.execute_batch("BEGIN").map_err(|e| sql_err(path, e))?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| sql_err(path, e))?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        let page_count: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))?;
        Ok((conn, page_size, page_count, mode))
    })();
    let (conn, page_size, page_count, journal_mode) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = start.send(Err(e.clone()));
            return Err(e);
        }
    };
    if start.send(Ok(Start { page_size })).is_err() {
        return Err("capture abandoned".into());
    }
    let wal = journal_mode.eq_ignore_ascii_case("wal");
    // In rollback-journal mode this read transaction holds a SHARED lock that
    // keeps the application's writers from committing. So the pages are
    // first copied to a private spool file, the transaction ends, and the
    // backup is fed from the spool; writers wait only for the copy. (If no
    // spool can be made, the pages stream directly, holding the lock.)
    let mut spool = if wal { None } else { Spool::create().ok() };
    // In WAL mode a second connection, pinned to this transaction's snapshot,
    // digests the tables while the pages stream. With no frames in the WAL,
    // though, this transaction reads the database file alone, and SQLite lets
    // no checkpoint write into the file while such a reader lives (a
    // checkpoint must first lock the reader's read-mark 0 exclusively);
    // writers' commits go to the WAL. So the file itself holds exactly this
    // transaction's view until COMMIT, and both the pages and the digests are
    // read straight from it, in large reads, with no pager in between.
    if wal && !has_wal_frames(&conn) {
        db_file = fs::File::open(path).ok().map(std::sync::Arc::new);
    }
    let side = if let Some(f) = &db_file {
        digest_file_async(&conn, f.clone(), page_size)
    } else if wal {
        digest_on_same_snapshot(&conn, path, timeout)
    } else {
        None
    };
    let mut streamed = match (&db_file, spool.as_mut()) {
        (Some(f), _) => read_file_pages(f, path, page_size, page_count, &spent, &mut |batch| {
            pages
                .send(Ok(batch))
                .map_err(|_| "capture abandoned".to_string())
        }),
        (None, Some(sp)) => read_pages(&conn, path, page_size, &mut |batch| {
            sp.file
                .write_all(&batch)
                .map_err(|e| format!("{SPOOL_ERROR}: {e}"))
        }),
        (None, None) => Err(SPOOL_ERROR.to_string()),
    };
    if streamed.as_ref().is_err_and(|e| e.starts_with(SPOOL_ERROR)) {
        // No spool (or it could not be written, say for lack of space):
        // stream directly, holding the transaction until the pages are read.
        spool = None;
        streamed = read_pages(&conn, path, page_size, &mut |batch| {
            pages
                .send(Ok(batch))
                .map_err(|_| "capture abandoned".to_string())
        });
    }
    match streamed {
        Ok(n) if n == page_count => {}
        Ok(n) => {
            let e = format!("{}: read {n} pages, expected {page_count}", path.display());
            let _ = pages.send(Err(e.clone()));
            return Err(e);
        }
        Err(e) => {
            let _ = pages.send(Err(e.clone()));
            return Err(e);
        }
    }
    let mut info = DatabaseInfo {
        engine: "sqlite".into(),
        page_size,
        journal_mode,
        tables: Vec::new(),
        problems: Vec::new(),
        settings: Default::default(),
    };
    if let Some(sp) = spool {
        // The image is safe in the spool: release the application's writers.
        let _ = conn.execute_batch("COMMIT");
        drop(conn);
        let fed = feed_from_spool(&sp, &pages, &mut info);
        if let Err(e) = &fed {
            let _ = pages.send(Err(e.clone()));
        }
        return fed.map(|()| info);
    }
    drop(pages);
    match side.map(|t| t.join()) {
        Some(Ok(side)) => {
            info.tables = side.tables;
            info.problems = side.problems;
        }
        _ => table_stats(&conn, &mut info),
    }
    let _ = conn.execute_batch("COMMIT");
    drop(conn);
    drop(db_file);
    Ok(info)
}

/// Reads every page, in order, inside `conn`'s read transaction, handing
/// them to `sink` in batches; returns the number of pages.
fn read_pages(
    conn: &Connection,
    path: &Path,
    page_size: u32,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), String>,
) -> Result<u64, String> {
    let mut stmt = conn
        .prepare("SELECT pgno, data FROM sqlite_dbpage('main')")
        .map_err(|e| sql_err(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| sql_err(path, e))?;
    let batch_bytes = PAGES_PER_BATCH * page_size as usize;
    let mut batch = Vec::with_capacity(batch_bytes);
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(|e| sql_err(path, e))? {
        let pgno: u64 = row.get(0).map_err(|e| sql_err(path, e))?;
        if pgno != n + 1 {
            return Err(format!("{}: page {pgno} came out of order", path.display()));
        }
        match row.get_ref(1).map_err(|e| sql_err(path, e))? {
            ValueRef::Blob(b) if b.len() == page_size as usize => batch.extend_from_slice(b),
            _ => {
                return Err(format!(
                    "{}: page {pgno} has the wrong size",
                    path.display()
                ))
            }
        }
        n += 1;
        if batch.len() >= batch_bytes {
            sink(std::mem::replace(
                &mut batch,
                Vec::with_capacity(batch_bytes),
            ))?;
        }
    }
    if !batch.is_empty() {
        sink(batch)?;
    }
    Ok(n)
}

/// How spool failures are recognised (and fallen back from).
const SPOOL_ERROR: &str = "spool unavailable";

/// A private copy of a database image, removed when dropped.
struct Spool {
    path: PathBuf,
    file: fs::File,
}

impl Spool {
    fn create() -> io::Result<Spool> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ledgervault-spool-{}-{n}.db", std::process::id()));
        // A copy of the books: readable by this user only, and never an
        // existing file or link someone else placed there.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Spool { path, file })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Sends the spooled image to the engine while a second thread digests the
/// tables of the same (immutable) copy.
fn feed_from_spool(
    sp: &Spool,
    pages: &mpsc::SyncSender<Result<Vec<u8>, String>>,
    info: &mut DatabaseInfo,
) -> Result<(), String> {
    let spool_path = sp.path.clone();
    let digests = std::thread::Builder::new()
        .name("sqlite-digest".into())
        .spawn(move || -> Result<DatabaseInfo, String> {
            let mut info = DatabaseInfo::default();
            file_table_stats(&spool_path, &mut info);
            Ok(info)
        })
        .map_err(|e| e.to_string())?;
    let mut f =
        fs::File::open(&sp.path).map_err(|e| format!("spool file {}: {e}", sp.path.display()))?;
    loop {
        let mut batch = vec![0u8; 1 << 18];
        let mut filled = 0;
        while filled < batch.len() {
            match f.read(&mut batch[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("spool file {}: {e}", sp.path.display())),
            }
        }
        if filled == 0 {
            break;
        }
        batch.truncate(filled);
        if pages.send(Ok(batch)).is_err() {
            return Err("capture abandoned".into());
        }
    }
    let side = digests
        .join()
        .map_err(|_| "the digest thread stopped unexpectedly".to_string())??;
    info.tables = side.tables;
    info.problems = side.problems;
    Ok(())
}

/// Whether the WAL holds frames this read transaction may read: SQLite
/// hands out a snapshot only then.
fn has_wal_frames(conn: &Connection) -> bool {
    use rusqlite::ffi;
    let mut snap: *mut ffi::sqlite3_snapshot = std::ptr::null_mut();
    // SAFETY: `conn` is a valid connection with an open read transaction;
    // the snapshot is freed at once.
    unsafe {
        if ffi::sqlite3_snapshot_get(conn.handle(), c"main".as_ptr(), &mut snap) == ffi::SQLITE_OK {
            ffi::sqlite3_snapshot_free(snap);
            true
        } else {
            false
        }
    }
}

/// Reads `page_count` pages straight from the database file, in order, in
/// batches; only for a file that holds the transaction's view (see
/// `capture_thread`).
fn read_file_pages(
    f: &fs::File,
    path: &Path,
    page_size: u32,
    page_count: u64,
    spare: &mpsc::Receiver<Vec<u8>>,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), String>,
) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let batch_pages = PAGES_PER_BATCH as u64 * 4;
    let mut done = 0u64;
    while done < page_count {
        let n = batch_pages.min(page_count - done);
        let len = (n * page_size as u64) as usize;
        // A batch the reader is done with, else a new one: fresh memory
        // costs a page fault and zeroing per 4 KiB.
        let mut batch = match spare.try_recv() {
            Ok(b) if b.len() == len => b,
            _ => vec![0u8; len],
        };
        f.read_exact_at(&mut batch, done * page_size as u64)
            .map_err(|e| format!("{}: page {}: {e}", path.display(), done + 1))?;
        sink(batch)?;
        done += n;
    }
    Ok(done)
}

/// Digests the tables of the file-backed view (see `capture_thread`) on a
/// thread of its own; the table list comes from `conn`'s transaction.
fn digest_file_async(
    conn: &Connection,
    file: std::sync::Arc<fs::File>,
    page_size: u32,
) -> Option<JoinHandle<DatabaseInfo>> {
    let roots = btree::table_roots(conn).ok()?;
    let mut pages = btree::FilePages::from_file(file, page_size).ok()?;
    std::thread::Builder::new()
        .name("sqlite-digest".into())
        .spawn(move || {
            let mut info = DatabaseInfo::default();
            stats_from_roots(&mut pages, page_size, &roots, &mut info);
            info
        })
        .ok()
}

/// Starts digesting the tables on a second connection that reads exactly the
/// snapshot `conn`'s open read transaction sees (the WAL holds frames).
/// `None` when SQLite cannot share the snapshot; the caller then digests on
/// `conn` after the pages.
fn digest_on_same_snapshot(
    conn: &Connection,
    path: &Path,
    timeout: Duration,
) -> Option<JoinHandle<DatabaseInfo>> {
    use rusqlite::ffi;
    let other = open_for_reading(path).ok()?;
    other.busy_timeout(timeout).ok()?;
    other
        .execute_batch("PRAGMA cache_size = -16384; BEGIN")
        .ok()?;
    let mut snap: *mut ffi::sqlite3_snapshot = std::ptr::null_mut();
    // SAFETY: both handles are valid open connections owned by this thread;
    // `conn` has an open read transaction on "main", `other` has none yet;
    // the snapshot is freed right after use and never shared.
    let opened = unsafe {
        let schema = c"main".as_ptr();
        if ffi::sqlite3_snapshot_get(conn.handle(), schema, &mut snap) != ffi::SQLITE_OK {
            return None;
        }
        let rc = ffi::sqlite3_snapshot_open(other.handle(), schema, snap);
        ffi::sqlite3_snapshot_free(snap);
        rc == ffi::SQLITE_OK
    };
    if !opened {
        return None;
    }
    std::thread::Builder::new()
        .name("sqlite-digest".into())
        .spawn(move || {
            let mut info = DatabaseInfo::default();
            table_stats(&other, &mut info);
            let _ = other.execute_batch("COMMIT");
            info
        })
        .ok()
}

/// Counts and digests every table over the pages `conn` sees in its open
/// read transaction (see [`crate::btree`]); damage found is listed as a
/// problem.
pub fn table_stats(conn: &Connection, info: &mut DatabaseInfo) {
    let opened = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))
        .and_then(|ps| Ok((ps, btree::DbPages::new(conn)?)));
    match opened {
        Ok((page_size, mut pages)) => stats_from_pages(conn, &mut pages, page_size, info),
        Err(e) => info.problems.push(format!("cannot read the pages: {e}")),
    }
}

/// Like [`table_stats`] for a database file nobody writes to meanwhile (a
/// spool copy, a restored image): its pages are read from the file itself.
pub fn file_table_stats(path: &Path, info: &mut DatabaseInfo) {
    let opened = open_for_reading(path)
        .and_then(|conn| {
            let ps = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))?;
            Ok((conn, ps))
        })
        .map_err(|e| sql_err(path, e));
    let (conn, page_size) = match opened {
        Ok(o) => o,
        Err(e) => return info.problems.push(e),
    };
    match btree::FilePages::open(path, page_size) {
        Ok(mut pages) => stats_from_pages(&conn, &mut pages, page_size, info),
        Err(e) => info.problems.push(e),
    }
}

fn stats_from_pages(
    conn: &Connection,
    pages: &mut dyn btree::Pages,
    page_size: u32,
    info: &mut DatabaseInfo,
) {
    let roots = match btree::table_roots(conn) {
        Ok(r) => r,
        Err(e) => return info.problems.push(format!("cannot list tables: {e}")),
    };
    stats_from_roots(pages, page_size, &roots, info)
}

fn stats_from_roots(
    pages: &mut dyn btree::Pages,
    page_size: u32,
    roots: &[btree::TableRoot],
    info: &mut DatabaseInfo,
) {
    match btree::digest_tables(pages, page_size, roots) {
        Ok(tables) => {
            for (name, r) in tables {
                match r {
                    Ok(sum) => info.tables.push(TableStat {
                        name,
                        rows: sum.rows,
                        digest: sum.digest(),
                    }),
                    Err(e) => info.problems.push(format!("table {name}: {e}")),
                }
            }
        }
        Err(e) => info.problems.push(e),
    }
}

/// Row count and digest of one table as snapshots before the page-level
/// digest recorded them: BLAKE3 over its rows in key order, read through
/// SQL, each value as a type tag and its bytes (see docs/FORMAT.md). Drills
/// of those snapshots compare with it.
pub fn sql_table_digest(conn: &Connection, table: &str) -> rusqlite::Result<(u64, String)> {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    // Rowid tables in rowid order; WITHOUT ROWID tables scan in key order.
    let mut stmt = match conn.prepare(&format!("SELECT * FROM {quoted} ORDER BY rowid")) {
        Ok(s) => s,
        Err(_) => conn.prepare(&format!("SELECT * FROM {quoted}"))?,
    };
    let cols = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut h = blake3::Hasher::new();
    // Values are gathered into a buffer and hashed in large pieces: hashing
    // many 8-byte updates one by one costs far more than the bytes do.
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        for i in 0..cols {
            match row.get_ref(i)? {
                ValueRef::Null => buf.push(0),
                ValueRef::Integer(v) => {
                    buf.push(1);
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                ValueRef::Real(v) => {
                    buf.push(2);
                    buf.extend_from_slice(&v.to_bits().to_le_bytes());
                }
                ValueRef::Text(t) => {
                    buf.push(3);
                    buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    buf.extend_from_slice(t);
                }
                ValueRef::Blob(b) => {
                    buf.push(4);
                    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
                    buf.extend_from_slice(b);
                }
            }
        }
        if buf.len() >= 1 << 16 {
            h.update(&buf);
            buf.clear();
        }
        n += 1;
    }
    h.update(&buf);
    Ok((n, h.finalize().to_hex().to_string()))
}

impl Read for SqliteCapture {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.pages.recv() {
                Ok(Ok(b)) => {
                    let spent = std::mem::replace(&mut self.buf, b);
                    // Never blocks: when the capture thread has enough, it is dropped.
                    let _ = self.spent.try_send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl DbCapture for SqliteCapture {
    fn page_size(&self) -> u32 {
        self.page_size
    }

    fn finish(mut self: Box<Self>) -> Result<DatabaseInfo, String> {
        // Drain what is left so the capture thread can end its transaction.
        let rx = std::mem::replace(&mut self.pages, mpsc::sync_channel(0).1);
        drop(rx);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err("the capture thread stopped unexpectedly".into()),
        }
    }
}

/// Opens a live database read-only: the backup never changes it.
fn open_for_reading(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Runs `PRAGMA integrity_check`; `Ok(())` when the database is sound.
pub fn integrity_check(path: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, e))?;
    // Memory-mapped reads make the check several times faster than reading
    // page by page; the map is capped so memory stays bounded (the file is
    // ours and nobody truncates it meanwhile).
    conn.execute_batch("PRAGMA mmap_size = 134217728")
        .map_err(|e| sql_err(path, e))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| sql_err(path, e))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| sql_err(path, e))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(format!(
            "integrity_check failed: {}",
            lines.into_iter().take(5).collect::<Vec<_>>().join("; ")
        ))
    }
}

/// Checks a restored image before it is put in place, and says which check
/// passed.
///
/// With a `record` of what the backup captured (row counts and page-level
/// digests, no damage), every table's b-tree is walked and must give the
/// recorded rows and digest, every index's b-tree is walked too, and an
/// index that is not partial must hold one entry per row of its table:
/// the image is then, table by table, exactly the books that were backed
/// up, and its structure is sound. That takes a fraction of a second per
/// GiB, where SQLite's `PRAGMA integrity_check` takes about 11 s on a 1 GiB
/// firm (it also cross-checks every index entry against its row). The full
/// check runs as well when `full` is set, and instead for snapshots that recorded no such
/// digests or recorded damage; restore drills (`verify`) always run it.
pub fn check_restored(
    path: &Path,
    record: Option<&DatabaseInfo>,
    full: bool,
) -> Result<&'static str, String> {
    let record = record.filter(|r| {
        r.problems.is_empty()
            && r.tables
                .iter()
                .all(|t| t.digest.starts_with(btree::DIGEST_PREFIX))
    });
    if full || record.is_none() {
        integrity_check(path)?;
    }
    let Some(record) = record else {
        return Ok("integrity_check");
    };
    let bad = |what: String| format!("the restored image does not match the backup: {what}");
    let conn = open_for_reading(path).map_err(|e| sql_err(path, e))?;
    let page_size: u32 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| sql_err(path, e))?;
    let tables = btree::table_roots(&conn).map_err(|e| sql_err(path, e))?;
    let indexes = btree::index_roots(&conn).map_err(|e| sql_err(path, e))?;
    let trees: Vec<(u32, bool)> = tables
        .iter()
        .map(|t| (t.root, true))
        .chain(indexes.iter().map(|i| (i.root, false)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut walked = btree::walk_file(path, page_size, &trees, threads)
        .map_err(bad)?
        .into_iter();
    let mut rows = std::collections::HashMap::new();
    for (t, sum) in tables.iter().zip(walked.by_ref()) {
        let sum = sum.map_err(|e| bad(format!("table {}: {e}", t.name)))?;
        match record.tables.iter().find(|r| r.name == t.name) {
            Some(r) if r.rows == sum.rows && r.digest == sum.digest() => {}
            Some(r) => {
                return Err(bad(format!(
                    "table {}: {} rows, digest {}; the backup recorded {} rows, digest {}",
                    t.name,
                    sum.rows,
                    sum.digest(),
                    r.rows,
                    r.digest
                )))
            }
            None => return Err(bad(format!("table {} was not in the backup", t.name))),
        }
        rows.insert(t.name.as_str(), sum.rows);
    }
    if let Some(r) = record
        .tables
        .iter()
        .find(|r| !rows.contains_key(r.name.as_str()))
    {
        return Err(bad(format!("table {} is missing", r.name)));
    }
    for (i, sum) in indexes.iter().zip(walked) {
        let entries = sum.map_err(|e| bad(format!("index {}: {e}", i.name)))?.rows;
        match rows.get(i.table.as_str()) {
            Some(&n) if i.every_row && n != entries => {
                return Err(bad(format!(
                    "index {} holds {entries} entries for {n} rows of {}",
                    i.name, i.table
                )))
            }
            _ => {}
        }
    }
    Ok(if full {
        "integrity_check and digests"
    } else {
        "digests"
    })
}

/// What happened to companion files of a restored database.
#[derive(Debug, Default, Clone)]
pub struct Placed {
    /// Stale `-wal`, `-shm` or `-journal` files that were removed.
    pub removed_stale: Vec<PathBuf>,
    /// True when the content replaced a live database through the backup API.
    pub replaced_live: bool,
    /// The check the image passed first (see [`check_restored`]).
    pub check: &'static str,
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Puts a restored image (`restored`, beside `target`) in place.
///
/// The image is checked ([`check_restored`] with `record` and `full`) and
/// fsynced first. If `target` does not
/// exist, leftover `-wal`, `-shm` and `-journal` files of an earlier database
/// at that path are removed (they would corrupt the new one) and the image is
/// renamed into place. If it exists, its content is replaced through the
/// backup API, which writes through SQLite's own locking and journal, so
/// connections already open see the restored database.
///
/// With `may_replace` false, a target that exists (one that appeared after
/// the caller looked, and so has no safety snapshot) is left as it is and
/// the restore fails; the rename into place never replaces one either.
pub fn place_restored(
    restored: &Path,
    target: &Path,
    busy_timeout: Duration,
    record: Option<&DatabaseInfo>,
    full: bool,
    may_replace: bool,
) -> Result<Placed, String> {
    let appeared = || {
        format!(
            "{}: a file appeared there while the restore ran; it was left as it is and nothing was restored over it",
            target.display()
        )
    };
    let check = check_restored(restored, record, full)?;
    // integrity_check may have left a -wal or -shm beside the temporary file.
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(companion(restored, suffix));
    }
    fs::File::open(restored)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", restored.display()))?;
    let mut placed = Placed {
        check,
        ..Placed::default()
    };
    // A link where the database goes is never written through: the
    // restore replaces it, and SQLite is told not to follow one either.
    let existing = fs::symlink_metadata(target).ok();
    if existing.is_some() && !may_replace {
        return Err(appeared());
    }
    if existing
        .as_ref()
        .is_some_and(|m| m.file_type().is_symlink())
    {
        return Err(format!(
            "{}: is a symbolic link; a database is never placed through one",
            target.display()
        ));
    }
    // A file with other hard links shares its content with names elsewhere:
    // writing into it would change them too. It is replaced by a rename,
    // which leaves the other names as they were.
    let shared_inode = existing.as_ref().is_some_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink() > 1
    });
    if existing.is_some() && !shared_inode {
        let src = Connection::open_with_flags(restored, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err(restored, e))?;
        let mut dst = Connection::open_with_flags(
            target,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(target, e))?;
        dst.busy_timeout(busy_timeout)
            .map_err(|e| sql_err(target, e))?;
        {
            use rusqlite::backup::StepResult;
            let backup =
                rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| sql_err(target, e))?;
            // All pages in one step: the destination changes in one transaction.
            let deadline = std::time::Instant::now() + busy_timeout;
            loop {
                match backup.step(-1).map_err(|e| sql_err(target, e))? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    _ if std::time::Instant::now() > deadline => {
                        return Err(format!(
                            "{}: the database stayed locked by another process for longer than the timeout; nothing was changed",
                            target.display()
                        ))
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        drop(dst);
        drop(src);
        // Reading the image (a WAL-mode one) may have made its own -wal and
        // -shm beside it; they go with it.
        let _ = fs::remove_file(restored);
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(companion(restored, suffix));
        }
        placed.replaced_live = true;
    } else {
        // Journals of an earlier database at this path would be applied to
        // the new one, so they must be gone before it appears. They are
        // moved aside, not deleted, until it is in place: if a database
        // appears there meanwhile, they may be its own, and go back.
        let mut aside: Vec<(PathBuf, PathBuf)> = Vec::new();
        let put_back = |aside: &[(PathBuf, PathBuf)]| {
            for (c, a) in aside {
                let _ = ledgervault_repo::rename_no_replace(a, c);
            }
        };
        for suffix in ["-wal", "-shm", "-journal"] {
            let c = companion(target, suffix);
            if fs::symlink_metadata(&c).is_ok() {
                let mut a = c.clone().into_os_string();
                a.push(format!(".ledgervault-aside-{}", std::process::id()));
                let a = PathBuf::from(a);
                if let Err(e) = fs::rename(&c, &a) {
                    put_back(&aside);
                    return Err(format!("{}: {e}", c.display()));
                }
                aside.push((c, a));
            }
        }
        let placing = if may_replace {
            fs::rename(restored, target)
        } else {
            ledgervault_repo::rename_no_replace(restored, target)
        };
        if let Err(e) = placing {
            put_back(&aside);
            return Err(match e.kind() {
                std::io::ErrorKind::AlreadyExists => appeared(),
                _ => format!("{}: {e}", target.display()),
            });
        }
        for (c, a) in aside {
            let _ = fs::remove_file(&a);
            placed.removed_stale.push(c);
        }
        if let Some(dir) = target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    Ok(placed)
}

/// Places restored SQLite images found inside restored folders with
/// [`place_restored`]: checked, stale journals removed, and over a
/// live database through the backup API.
pub struct SqlitePlacer {
    pub busy_timeout: Duration,
    /// Run `PRAGMA integrity_check` whatever the snapshot recorded.
    pub full_check: bool,
}

impl ledgervault_repo::DbPlacer for SqlitePlacer {
    fn place(&self, tmp: &Path, dest: &Path, record: Option<&DatabaseInfo>) -> Result<(), String> {
        // A folder restore puts files over what is there, databases too
        // (through the backup API, which open connections see).
        let r =
            place_restored(tmp, dest, self.busy_timeout, record, self.full_check, true).map(|_| ());
        let _ = fs::remove_file(tmp);
        r
    }
}

/// Finds SQLite databases inside folders being backed up.
pub struct SqliteOpener {
    pub options: SqliteOptions,
}

impl ledgervault_repo::DbOpener for SqliteOpener {
    fn is_database(&self, path: &Path) -> bool {
        is_sqlite(path)
    }

    fn open(&self, path: &Path) -> Result<Box<dyn DbCapture>, String> {
        Ok(Box::new(SqliteCapture::start(path, &self.options)?))
    }

    fn companions(&self, path: &Path) -> Vec<PathBuf> {
        ["-wal", "-shm", "-journal"]
            .iter()
            .map(|s| companion(path, s))
            .collect()
    }

    /// No WAL or rollback journal with anything in it: an empty WAL (as a
    /// read-only connection, ours included, leaves behind) holds no commit,
    /// an empty journal (`journal_mode = TRUNCATE`) is not hot, and the
    /// shared-memory file only indexes the WAL.
    fn quiet(&self, path: &Path) -> bool {
        ["-wal", "-journal"]
            .iter()
            .all(|s| match fs::symlink_metadata(companion(path, s)) {
                Ok(m) => m.is_file() && m.len() == 0,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that appears at the target while a restore without
    /// leave to replace runs is never written over, by the backup API or
    /// by the rename into place.
    #[test]
    fn a_database_that_appears_at_the_target_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, v: &str| {
            let p = dir.path().join(name);
            let c = Connection::open(&p).unwrap();
            c.execute_batch(&format!(
                "CREATE TABLE t (v); INSERT INTO t VALUES ('{v}');"
            ))
            .unwrap();
            p
        };
        let read = |p: &Path| -> String {
            Connection::open(p)
                .unwrap()
                .query_row("SELECT v FROM t", [], |r| r.get(0))
                .unwrap()
        };
        let restored = make("restored.db", "from the snapshot");
        let target = make("books.db", "live work");
        let err = place_restored(
            &restored,
            &target,
            Duration::from_secs(1),
            None,
            false,
            false,
        )
        .unwrap_err();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(read(&target), "live work");
        assert!(restored.exists());

        // The rename itself: the target shows up after the last look.
        let other = dir.path().join("other.db");
        fs::copy(&target, &other).unwrap();
        let e = ledgervault_repo::rename_no_replace(&restored, &other).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(read(&other), "live work");
        assert_eq!(read(&restored), "from the snapshot");

        // Nothing there but the journal of an earlier database at that
        // path: placed, and the stale journal is gone (it would be applied
        // to the new database), nothing set aside left over.
        let fresh = dir.path().join("fresh.db");
        fs::write(companion(&fresh, "-wal"), b"an old database's WAL").unwrap();
        let placed = place_restored(
            &restored,
            &fresh,
            Duration::from_secs(1),
            None,
            false,
            false,
        )
        .unwrap();
        assert_eq!(read(&fresh), "from the snapshot");
        assert!(!restored.exists());
        assert_eq!(placed.removed_stale, vec![companion(&fresh, "-wal")]);
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("aside"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // With leave to replace (a safety snapshot was taken), replaced.
        let again = make("again.db", "from the snapshot, again");
        let placed =
            place_restored(&again, &target, Duration::from_secs(1), None, false, true).unwrap();
        assert!(placed.replaced_live);
        assert_eq!(read(&target), "from the snapshot, again");
    }

    #[test]
    fn a_second_connection_digests_the_same_snapshot_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
        )
        .unwrap();
        let conn = open_for_reading(&path).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert!(has_wal_frames(&conn));
        // A commit after the snapshot must not be seen by the digest.
        w.execute("INSERT INTO t VALUES (3)", []).unwrap();
        let side = digest_on_same_snapshot(&conn, &path, Duration::from_secs(5))
            .expect("the snapshot is shared");
        let info = side.join().unwrap();
        assert_eq!(info.tables[0].rows, 2, "{info:?}");
    }

    /// With an empty WAL the capture reads the file itself: commits and
    /// checkpoint attempts during the capture must not reach the image.
    #[test]
    fn an_empty_wal_capture_reads_the_file_and_nothing_committed_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO t SELECT i, printf('%.*c', 100, 'a') FROM n;",
        )
        .unwrap();
        drop(c); // the last connection checkpoints and removes the WAL
        assert!(!companion(&path, "-wal").exists());
        let before = fs::read(&path).unwrap();
        let mut want = DatabaseInfo::default();
        file_table_stats(&path, &mut want);

        let mut cap = SqliteCapture::start(&path, &SqliteOptions::default()).unwrap();
        // 22 MB: far more than the capture sends ahead before it is read.
        assert!(before.len() > 16 << 20);
        // Another process rewrites every row and tries every checkpoint
        // while the capture has read nothing yet.
        let w = Connection::open(&path).unwrap();
        w.execute_batch("UPDATE t SET v = 'changed'; INSERT INTO t (v) VALUES ('new');")
            .unwrap();
        for mode in ["PASSIVE", "FULL", "RESTART", "TRUNCATE"] {
            let _ = w.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        }
        let mut image = Vec::new();
        cap.read_to_end(&mut image).unwrap();
        let info = Box::new(cap).finish().unwrap();
        assert!(
            image == before,
            "the image is the file as it was when the capture began"
        );
        assert_eq!(info.tables, want.tables);
        assert_eq!(info.tables[0].rows, 200000);
        // And the writer's work is there once the capture has ended.
        drop(w);
        let n: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM t WHERE v = 'changed'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 200000);
    }

    /// The optimistic copy of a rollback-journal database is refused while
    /// a writer holds EXCLUSIVE or a hot journal lies beside it, and taken
    /// (byte for byte the file) when all is quiet. The locks are another
    /// process's: POSIX locks of this process would not show.
    #[test]
    fn an_optimistic_copy_is_only_kept_when_no_commit_can_have_overlapped_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO t SELECT i, 'entry ' || i FROM n;",
        )
        .unwrap();
        drop(c);
        let (sp, page_size) = optimistic::capture(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(page_size, 4096);
        assert_eq!(fs::read(&sp.path).unwrap(), fs::read(&path).unwrap());

        // Another process holds EXCLUSIVE (in the middle of a commit).
        let holder = |sql: &str| {
            let script = format!(
                "import sqlite3, time\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\n{sql}\nprint('held', flush=True)\ntime.sleep(3)\n",
                path.to_str().unwrap()
            );
            let mut child = std::process::Command::new("python3")
                .args(["-c", &script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = [0u8; 5];
            child
                .stdout
                .as_mut()
                .unwrap()
                .read_exact(&mut line)
                .unwrap();
            child
        };
        let mut child = holder("c.execute(\"UPDATE t SET v = 'x' WHERE id < 100\")");
        let started = std::time::Instant::now();
        assert!(optimistic::capture(&path, Duration::from_millis(300)).is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
        child.kill().unwrap();
        child.wait().unwrap();
        // Killed before its commit wrote anything: its journal has no
        // magic yet (SQLite writes it at the commit's sync), the file is
        // untouched, and the copy is good, as SQLite itself would judge.
        assert!(companion(&path, "-journal").exists());
        let (sp, _) = optimistic::capture(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(fs::read(&sp.path).unwrap(), fs::read(&path).unwrap());
        // A journal with its magic and no writer's lock is hot (a crash in
        // the middle of writing the file): refused.
        let mut hot = vec![0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
        hot.resize(512, 0);
        fs::write(companion(&path, "-journal"), &hot).unwrap();
        assert!(optimistic::capture(&path, Duration::from_millis(200)).is_none());
        fs::remove_file(companion(&path, "-journal")).unwrap();
        assert!(optimistic::capture(&path, Duration::from_millis(200)).is_some());
        // A WAL database is not for this path.
        let w = dir.path().join("wal.db");
        Connection::open(&w)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        assert!(optimistic::capture(&w, Duration::from_millis(100)).is_none());
    }

    #[test]
    fn a_restored_image_is_checked_against_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX t_v ON t (v);
             CREATE INDEX t_some ON t (v) WHERE id > 10;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT i, 'v' || i FROM n;",
        )
        .unwrap();
        let mut record = DatabaseInfo::default();
        file_table_stats(&path, &mut record);
        assert!(record.problems.is_empty(), "{record:?}");
        assert_eq!(check_restored(&path, Some(&record), false), Ok("digests"));
        assert_eq!(
            check_restored(&path, Some(&record), true),
            Ok("integrity_check and digests")
        );
        // No usable record: SQLite's own check.
        assert_eq!(check_restored(&path, None, false), Ok("integrity_check"));
        // One changed value: the image is not what was backed up.
        c.execute("UPDATE t SET v = 'changed' WHERE id = 7", [])
            .unwrap();
        let e = check_restored(&path, Some(&record), false).unwrap_err();
        assert!(e.contains("table t: 500 rows"), "{e}");
        // A table the backup did not have.
        let mut fewer = record.clone();
        fewer.tables.clear();
        let e = check_restored(&path, Some(&fewer), false).unwrap_err();
        assert!(e.contains("table t was not in the backup"), "{e}");
    }
}

/// Capture of a rollback-journal database without a lock.
///
/// In rollback-journal mode a reader's SHARED lock keeps a writer from
/// committing; an application that gives SQLite no busy timeout (GnuCash)
/// then sees its commit fail with "database is locked". So such a database
/// is first copied optimistically: read straight from the file, taking no
/// lock, and the copy kept only when SQLite's own evidence proves that no
/// commit overlapped it. The rule, checked before and after the copy:
///
/// - no process holds a PENDING or EXCLUSIVE lock (a write lock on the
///   pending byte or the shared range, seen with `F_GETLK`, which takes
///   nothing): SQLite writes to the database file only under EXCLUSIVE;
/// - no journal holds a transaction to roll back (a hot journal);
/// - the header's page size and journal-mode bytes, its file change
///   counter, and the file's size, modification and change times and inode
///   (by path) are the same before and after. Every commit in this mode
///   increments the counter, and writes page 1, where it lives, before any
///   other page (pages are written in page order), so a commit whose
///   writes reached the file during the copy changed the counter by the
///   time of the second check, or still holds EXCLUSIVE then. A write that
///   was later undone (a cache spill rolled back) moved the modification
///   time, unless it fell in the same tick of the filesystem's clock as
///   the write before it: on local Linux filesystems that tick is a few
///   milliseconds, and a spill needs a transaction larger than the writer's
///   page cache.
///
/// Only on local filesystems: on network ones (NFS, SMB) and FUSE a read
/// without a lock skips cache revalidation and timestamps may be coarse.
///
/// When a check fails the copy is thrown away and tried again after a
/// short, jittered pause, a bounded number of times; then the caller falls
/// back to a read transaction, held only while the pages are copied.
mod optimistic {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, MetadataExt};

    /// SQLite's lock bytes (see os_unix.c): PENDING, then RESERVED, then
    /// the 510-byte SHARED range.
    const PENDING_BYTE: i64 = 0x4000_0000;
    const LOCK_SPAN: i64 = 512;
    /// Journal header magic.
    const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

    /// What must not change while the copy is made.
    #[derive(PartialEq, Eq, Debug)]
    struct State {
        /// Page size and the journal-mode bytes (16..20): a switch to WAL
        /// during the attempts must not pass.
        mode: [u8; 4],
        counter: u32,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
        ino: u64,
    }

    /// The image in a spool, and the page size; `None` when the database is
    /// not in rollback-journal mode or no clean copy could be made.
    pub(super) fn capture(path: &Path, timeout: Duration) -> Option<(Spool, u32)> {
        let f = fs::File::open(path).ok()?;
        if !on_local_disk(&f) {
            return None;
        }
        let mut head = [0u8; 100];
        f.read_exact_at(&mut head, 0).ok()?;
        // Bytes 18-19: 1 = rollback journal, 2 = WAL.
        if &head[..16] != HEADER || head[18] != 1 || head[19] != 1 {
            return None;
        }
        let page_size = match u16::from_be_bytes([head[16], head[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n as u32,
            _ => return None,
        };
        let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(30));
        for attempt in 0.. {
            if attempt > 0 {
                // Lock-free copies are tried until the timeout, not a
                // number of times: an application that commits without
                // pause leaves gaps, and an attempt that meets a commit
                // costs little next to a commit of the application's that
                // fails because a reader took a lock.
                if std::time::Instant::now() >= deadline {
                    break;
                }
                let jitter = rand_below(20) as u64;
                std::thread::sleep(Duration::from_millis(
                    5 + 5 * attempt.min(8) as u64 + jitter,
                ));
            }
            let Some(before) = quiet_state(&f, path) else {
                continue;
            };
            let Ok(mut sp) = Spool::create() else {
                return None;
            };
            if copy(&f, &mut sp.file, before.size).is_err() {
                continue;
            }
            let Some(after) = quiet_state(&f, path) else {
                continue;
            };
            if before == after && before.size % page_size as u64 == 0 && before.size > 0 {
                return Some((sp, page_size));
            }
        }
        None
    }

    /// The state of a database no writer is writing to, or `None` when one
    /// may be (a PENDING or EXCLUSIVE lock, or a hot journal).
    fn quiet_state(f: &fs::File, path: &Path) -> Option<State> {
        if write_locked(f, PENDING_BYTE, 1)? || write_locked(f, PENDING_BYTE + 2, LOCK_SPAN - 2)? {
            return None;
        }
        if journal_may_be_hot(f, path)? {
            return None;
        }
        let mut head = [0u8; 28];
        f.read_exact_at(&mut head, 0).ok()?;
        if head[18] != 1 || head[19] != 1 {
            return None;
        }
        // By path: a file renamed over the database shows as another inode.
        let md = fs::metadata(path).ok()?;
        Some(State {
            mode: [head[16], head[17], head[18], head[19]],
            counter: u32::from_be_bytes([head[24], head[25], head[26], head[27]]),
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
        })
    }

    /// Whether another process holds a write lock on any byte of the range
    /// (`F_GETLK` with a read lock: only write locks conflict; nothing is
    /// taken). `None` when the question cannot be asked.
    fn write_locked(f: &fs::File, start: i64, len: i64) -> Option<bool> {
        // SAFETY: a zeroed flock is a valid value; fcntl F_GETLK only fills it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_RDLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = start as _;
        fl.l_len = len as _;
        // SAFETY: a valid descriptor and a valid flock structure.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
        if r != 0 {
            return None;
        }
        Some(fl.l_type as i32 != libc::F_UNLCK)
    }

    /// A journal whose header is valid while no RESERVED lock is held is
    /// hot: a writer died and SQLite would roll it back first. (A live
    /// writer's journal comes with its RESERVED lock.)
    fn journal_may_be_hot(f: &fs::File, path: &Path) -> Option<bool> {
        let journal = companion(path, "-journal");
        let mut magic = [0u8; 8];
        match fs::File::open(&journal) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
            Ok(j) => {
                if j.read_exact_at(&mut magic, 0).is_err() || magic != JOURNAL_MAGIC {
                    return Some(false);
                }
                // RESERVED is the byte after PENDING.
                Some(!write_locked(f, PENDING_BYTE + 1, 1)?)
            }
        }
    }

    /// Whether the file lives on a local filesystem. On network ones (NFS,
    /// SMB/CIFS) and FUSE, reading without a lock also skips the client's
    /// cache revalidation and their timestamps may be coarse, so the rule's
    /// evidence is not to be trusted there; the locked path is used.
    fn on_local_disk(f: &fs::File) -> bool {
        // SAFETY: a zeroed statfs is a valid value; fstatfs fills it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and out-pointer.
        if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
            return false;
        }
        const NFS: i64 = 0x6969;
        const SMB: i64 = 0x517B;
        const SMB2: i64 = 0xFE53_4D42;
        const CIFS: i64 = 0xFF53_4D42;
        const FUSE: i64 = 0x6573_5546;
        const CODA: i64 = 0x7375_7245;
        const AFS: i64 = 0x5346_414F;
        const CEPH: i64 = 0x00C3_6400;
        !matches!(
            st.f_type as i64,
            NFS | SMB | SMB2 | CIFS | FUSE | CODA | AFS | CEPH
        )
    }

    fn copy(from: &fs::File, to: &mut fs::File, size: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        to.set_len(0)?;
        while at < size {
            let n = buf.len().min((size - at) as usize);
            from.read_exact_at(&mut buf[..n], at)?;
            to.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn rand_below(n: u32) -> u32 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::time::Instant::now().elapsed().as_nanos() as u64);
        (h.finish() % n as u64) as u32
    }
}
