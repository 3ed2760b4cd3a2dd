//! Row counts and digests of SQLite tables, read straight off the pages.
//!
//! A backup records, for every table, how many rows it holds and a digest of
//! them (the restore drills compare restores against both). Reading 10
//! million rows through SQL costs several seconds on a 1 GiB firm; walking
//! the table's b-tree over the raw pages costs a fraction of that and works
//! on exactly the bytes the backup stores. It also checks the structure it
//! walks: page types, cell bounds, record headers, rowid order, overflow
//! chains, and that no page is reached twice, so a damaged table is found
//! and named.
//!
//! The digest does not depend on how rows are laid out on pages: it is the
//! sum, modulo 2^128, of one XXH3-128 hash per row (of the record as SQLite
//! stores it, seeded with the rowid), so a vacuumed copy of a table with the
//! same rows has the same digest. It guards against accidental change (the
//! repository's AEAD guards against tampering); see docs/FORMAT.md.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::{types::ValueRef, Connection};
use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

/// How digests of this kind are told apart from the older SQL-level ones
/// (64 hex digits, no prefix) in snapshots written before it.
pub const DIGEST_PREFIX: &str = "x3:";

/// Seed for the rows of `WITHOUT ROWID` tables, which have no rowid.
const NO_ROWID_SEED: u64 = 0x6c76_5f6e_6f72_6f77; // "lv_norow"

/// Random access to the pages of one consistent database image.
pub trait Pages {
    /// Number of pages in the image.
    fn count(&self) -> u32;
    /// Reads page `pgno` (1-based) into `buf`, whose length is the page size.
    fn read(&mut self, pgno: u32, buf: &mut [u8]) -> Result<(), String>;
}

/// The pages of a database file nobody writes to meanwhile: a spool copy, a
/// restored image.
pub struct FilePages {
    file: std::sync::Arc<fs::File>,
    page_size: usize,
    count: u32,
}

impl FilePages {
    pub fn open(path: &Path, page_size: u32) -> Result<FilePages, String> {
        let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        FilePages::from_file(std::sync::Arc::new(file), page_size)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads through a descriptor the caller keeps (the live database's,
    /// which must outlive SQLite's connection to it).
    pub fn from_file(file: std::sync::Arc<fs::File>, page_size: u32) -> Result<FilePages, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let page_size = page_size as usize;
        Ok(FilePages {
            file,
            page_size,
            count: (len / page_size as u64).min(u32::MAX as u64) as u32,
        })
    }
}

impl Pages for FilePages {
    fn count(&self) -> u32 {
        self.count
    }

    fn read(&mut self, pgno: u32, buf: &mut [u8]) -> Result<(), String> {
        let at = (pgno as u64 - 1) * self.page_size as u64;
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| format!("page {pgno}: {e}"))
    }
}

/// The pages a connection sees in its open read transaction (WAL content
/// included), read through SQLite's pager with `sqlite_dbpage`.
pub struct DbPages<'c> {
    stmt: rusqlite::Statement<'c>,
    count: u32,
}

impl<'c> DbPages<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<DbPages<'c>> {
        let count: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let stmt = conn.prepare("SELECT data FROM sqlite_dbpage('main') WHERE pgno = ?1")?;
        Ok(DbPages { stmt, count })
    }
}

impl Pages for DbPages<'_> {
    fn count(&self) -> u32 {
        self.count
    }

    fn read(&mut self, pgno: u32, buf: &mut [u8]) -> Result<(), String> {
        let mut rows = self.stmt.query([pgno]).map_err(|e| e.to_string())?;
        match rows.next().map_err(|e| e.to_string())? {
            Some(row) => match row.get_ref(0).map_err(|e| e.to_string())? {
                ValueRef::Blob(b) if b.len() == buf.len() => {
                    buf.copy_from_slice(b);
                    Ok(())
                }
                _ => Err(format!("page {pgno} has the wrong size")),
            },
            None => Err(format!("page {pgno} is past the end of the database")),
        }
    }
}

/// A table's rows and their order-independent sum of hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowSum {
    pub rows: u64,
    pub sum: u128,
}

impl RowSum {
    /// The digest as stored in snapshots.
    pub fn digest(&self) -> String {
        format!("{DIGEST_PREFIX}{:032x}", self.sum)
    }
}

/// One table to digest: its name and root page.
#[derive(Debug, Clone)]
pub struct TableRoot {
    pub name: String,
    pub root: u32,
}

/// The tables of the schema the connection sees (SQLite's own and virtual
/// tables, which have no pages, left out), by name.
pub fn table_roots(conn: &Connection) -> rusqlite::Result<Vec<TableRoot>> {
    let mut stmt = conn.prepare(
        "SELECT name, rootpage FROM sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND rootpage > 0 ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TableRoot {
            name: r.get(0)?,
            root: r.get(1)?,
        })
    })?;
    rows.collect()
}

/// An index b-tree to walk: its name, table and root page, and whether it
/// holds one entry per row of its table (it is not partial).
#[derive(Debug, Clone)]
pub struct IndexRoot {
    pub name: String,
    pub table: String,
    pub root: u32,
    pub every_row: bool,
}

/// The indexes of the schema with pages of their own. An index whose SQL
/// has a `WHERE` may be partial; its entries are not counted against rows.
pub fn index_roots(conn: &Connection) -> rusqlite::Result<Vec<IndexRoot>> {
    let mut stmt = conn.prepare(
        "SELECT name, tbl_name, rootpage, coalesce(sql, '') FROM sqlite_schema
         WHERE type = 'index' AND rootpage > 0 ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        let sql: String = r.get(3)?;
        Ok(IndexRoot {
            name: r.get(0)?,
            table: r.get(1)?,
            root: r.get(2)?,
            every_row: !sql.to_ascii_uppercase().contains("WHERE"),
        })
    })?;
    rows.collect()
}

/// Facts from page 1 that every walk needs.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub page_size: usize,
    /// Page size less the bytes reserved at the end of every page.
    pub usable: usize,
}

impl Geometry {
    /// Reads page 1's header.
    pub fn read(pages: &mut dyn Pages, page_size: u32) -> Result<Geometry, String> {
        let mut p1 = vec![0u8; page_size as usize];
        pages.read(1, &mut p1)?;
        if &p1[..16] != crate::sqlite::HEADER {
            return Err("page 1 is not a SQLite header".into());
        }
        let reserved = p1[20] as usize;
        let usable = page_size as usize - reserved;
        if usable < 480 {
            return Err(format!("usable page size {usable} is too small"));
        }
        Ok(Geometry {
            page_size: page_size as usize,
            usable,
        })
    }
}

/// Walks several tables of one image, sharing the record of pages seen, so
/// a page reached from two places is found.
pub struct Walker<'p> {
    pages: &'p mut dyn Pages,
    geo: Geometry,
    seen: Vec<u64>,
    page: Vec<u8>,
    overflow: Vec<u8>,
}

/// A SQLite varint at `at`: its value and length.
#[inline(always)]
fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    match b.get(at) {
        Some(&x) if x < 0x80 => Some((x as u64, 1)),
        Some(_) => varint_long(b, at),
        None => None,
    }
}

#[inline(never)]
fn varint_long(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(at + i)?;
        if i == 8 {
            return Some(((v << 8) | byte as u64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Bytes of a record value of serial type `t`.
#[inline(always)]
fn serial_len(t: u64) -> u64 {
    const SMALL: [u64; 12] = [0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0];
    if t < 12 {
        SMALL[t as usize]
    } else {
        (t - 12) / 2
    }
}

/// Checks that a record's header describes exactly `payload_len` bytes,
/// when the whole header lies in `local`.
#[inline]
fn check_record(local: &[u8], payload_len: u64) -> Result<(), String> {
    let (hlen, n) = varint(local, 0).ok_or("record header cut short")?;
    if hlen < n as u64 || hlen > payload_len {
        return Err(format!(
            "record header of {hlen} bytes in a {payload_len}-byte record"
        ));
    }
    if hlen as usize > local.len() {
        return Ok(()); // header spills to overflow pages; not checked
    }
    let header = &local[..hlen as usize];
    let mut at = n;
    let mut body = 0u64;
    let mut reserved = false;
    while at < header.len() {
        let b = header[at];
        let t = if b < 0x80 {
            at += 1;
            b as u64
        } else {
            let (t, k) = varint_long(header, at).ok_or("record header cut short")?;
            at += k;
            t
        };
        reserved |= t == 10 || t == 11;
        body += serial_len(t);
    }
    if reserved {
        return Err("reserved serial type in a record".into());
    }
    if hlen + body != payload_len {
        return Err(format!(
            "record header describes {} bytes, the cell holds {payload_len}",
            hlen + body
        ));
    }
    Ok(())
}

impl<'p> Walker<'p> {
    pub fn new(pages: &'p mut dyn Pages, geo: Geometry) -> Walker<'p> {
        let words = (pages.count() as usize).div_ceil(64) + 1;
        let mut w = Walker {
            pages,
            geo,
            seen: vec![0; words],
            page: vec![0; geo.page_size],
            overflow: vec![0; geo.page_size],
        };
        w.mark(1).expect("page 1 exists"); // the schema's root, walked by no table
        w
    }

    fn mark(&mut self, pgno: u32) -> Result<(), String> {
        if pgno == 0 || pgno > self.pages.count() {
            return Err(format!(
                "a pointer to page {pgno}, outside the database's {} pages",
                self.pages.count()
            ));
        }
        let (w, b) = (pgno as usize / 64, pgno % 64);
        if self.seen[w] & (1 << b) != 0 {
            return Err(format!("page {pgno} is reached twice"));
        }
        self.seen[w] |= 1 << b;
        Ok(())
    }

    /// Rows and row sum of the table whose b-tree starts at `root`.
    pub fn table(&mut self, root: u32) -> Result<RowSum, String> {
        self.walk(root, true)
    }

    /// Walks the b-tree at `root`; with `hash` false (an index) entries are
    /// counted and checked, not hashed.
    fn walk(&mut self, root: u32, hash: bool) -> Result<RowSum, String> {
        let mut sum = RowSum::default();
        let mut last_rowid: Option<i64> = None;
        // Pages still to visit, right-most last, so rowids come in order.
        let mut stack: Vec<(u32, u32)> = vec![(root, 0)];
        let mut family: Option<bool> = None; // Some(true) for a rowid table
        let mut children: Vec<u32> = Vec::new();
        while let Some((pgno, depth)) = stack.pop() {
            if depth > 64 {
                return Err(format!(
                    "page {pgno}: the b-tree is deeper than any real one"
                ));
            }
            self.mark(pgno).map_err(|e| format!("page {pgno}: {e}"))?;
            self.pages.read(pgno, &mut self.page)?;
            let kind = self.page[0];
            let is_table = match kind {
                0x05 | 0x0d => true,
                0x02 | 0x0a => false,
                k => return Err(format!("page {pgno}: not a b-tree page (type {k:#04x})")),
            };
            if *family.get_or_insert(is_table) != is_table {
                return Err(format!(
                    "page {pgno}: an index page inside a table or the reverse"
                ));
            }
            let interior = kind == 0x05 || kind == 0x02;
            let hdr = if interior { 12 } else { 8 };
            let ncells = u16_at(&self.page, 3);
            let usable = self.geo.usable;
            if hdr + 2 * ncells > usable {
                return Err(format!("page {pgno}: {ncells} cells do not fit on a page"));
            }
            children.clear();
            for i in 0..ncells {
                let off = u16_at(&self.page, hdr + 2 * i);
                if off < hdr + 2 * ncells || off >= usable {
                    return Err(format!("page {pgno}: cell {i} points outside the page"));
                }
                let mut at = off;
                if interior {
                    if at + 4 > usable {
                        return Err(format!("page {pgno}: cell {i} runs off the page"));
                    }
                    children.push(u32_at(&self.page, at));
                    at += 4;
                    if is_table {
                        // An interior table cell holds only a dividing rowid.
                        varint(&self.page[..usable], at)
                            .ok_or_else(|| format!("page {pgno}: cell {i} runs off the page"))?;
                        continue;
                    }
                }
                let (plen, n) = varint(&self.page[..usable], at)
                    .ok_or_else(|| format!("page {pgno}: cell {i} runs off the page"))?;
                at += n;
                let seed = if is_table {
                    let (rowid, n) = varint(&self.page[..usable], at)
                        .ok_or_else(|| format!("page {pgno}: cell {i} runs off the page"))?;
                    at += n;
                    let rowid = rowid as i64;
                    if last_rowid.is_some_and(|l| rowid <= l) {
                        return Err(format!("page {pgno}: rowid {rowid} is out of order"));
                    }
                    last_rowid = Some(rowid);
                    rowid as u64
                } else {
                    NO_ROWID_SEED
                };
                let h = self
                    .payload_hash(at, plen, is_table, seed, hash)
                    .map_err(|e| format!("page {pgno}: cell {i}: {e}"))?;
                sum.rows += 1;
                sum.sum = sum.sum.wrapping_add(h);
            }
            if interior {
                children.push(u32_at(&self.page, 8));
                for &c in children.iter().rev() {
                    stack.push((c, depth + 1));
                }
            }
        }
        Ok(sum)
    }

    /// The hash of a cell's payload of `plen` bytes starting at `at` on the
    /// current page, following its overflow chain.
    fn payload_hash(
        &mut self,
        at: usize,
        plen: u64,
        is_table: bool,
        seed: u64,
        hash: bool,
    ) -> Result<u128, String> {
        let u = self.geo.usable as u64;
        let x = if is_table {
            u - 35
        } else {
            ((u - 12) * 64 / 255) - 23
        };
        let local = if plen <= x {
            plen
        } else {
            let m = ((u - 12) * 32 / 255) - 23;
            let k = m + (plen - m) % (u - 4);
            if k <= x {
                k
            } else {
                m
            }
        } as usize;
        if at + local > self.geo.usable {
            return Err("payload runs off the page".into());
        }
        let head = &self.page[at..at + local];
        check_record(head, plen)?;
        if local as u64 == plen {
            return Ok(if hash {
                xxh3_128_with_seed(head, seed)
            } else {
                0
            });
        }
        if at + local + 4 > self.geo.usable {
            return Err("overflow pointer runs off the page".into());
        }
        let mut h = Xxh3::with_seed(seed);
        h.update(head);
        let mut left = plen - local as u64;
        let mut next = u32_at(&self.page, at + local);
        let per = (u - 4) as usize;
        while left > 0 {
            self.mark(next)?;
            self.pages.read(next, &mut self.overflow)?;
            let take = (left as usize).min(per);
            h.update(&self.overflow[4..4 + take]);
            left -= take as u64;
            next = u32_at(&self.overflow, 0);
        }
        if next != 0 {
            return Err(format!(
                "overflow chain goes on to page {next} past the record's end"
            ));
        }
        Ok(h.digest128())
    }
}

/// Walks the b-trees rooted at `trees` (each a root page and whether to
/// hash it, as a table, or only count it, as an index) in the image file at
/// `path`, on up to `threads` threads, each reading the file on its own. A
/// page reached from two trees is found however the trees were shared out:
/// the threads' records of pages seen are merged at the end.
pub fn walk_file(
    path: &Path,
    page_size: u32,
    trees: &[(u32, bool)],
    threads: usize,
) -> Result<Vec<Result<RowSum, String>>, String> {
    let geo = Geometry::read(&mut FilePages::open(path, page_size)?, page_size)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; trees.len()]);
    let seen: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, trees.len().max(1)))
            .map(|_| {
                s.spawn(|| -> Result<Vec<u64>, String> {
                    let mut pages = FilePages::open(path, page_size)?;
                    let mut w = Walker::new(&mut pages, geo);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(root, hash)) = trees.get(i) else {
                            break;
                        };
                        let r = w.walk(root, hash);
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                    Ok(w.seen)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a walker thread panicked".into()))
            })
            .collect()
    });
    let mut all: Vec<u64> = Vec::new();
    for set in seen {
        let set = set?;
        if all.is_empty() {
            all = set;
            continue;
        }
        for (k, (a, b)) in all.iter_mut().zip(&set).enumerate() {
            // Page 1 (bit 1 of word 0) is marked by every walker.
            let both = *a & *b & if k == 0 { !0b10 } else { !0 };
            if both != 0 {
                let pgno = k as u64 * 64 + both.trailing_zeros() as u64;
                return Err(format!("page {pgno} is reached from two b-trees"));
            }
            *a |= *b;
        }
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not walked".into())))
        .collect())
}

/// A table's name and its rows, or the damage that stopped its walk.
pub type TableOutcome = (String, Result<RowSum, String>);

/// Counts and digests the given tables of one image. Each table's damage is
/// reported on its own; the others are still digested.
pub fn digest_tables(
    pages: &mut dyn Pages,
    page_size: u32,
    tables: &[TableRoot],
) -> Result<Vec<TableOutcome>, String> {
    let geo = Geometry::read(pages, page_size)?;
    let mut w = Walker::new(pages, geo);
    Ok(tables
        .iter()
        .map(|t| (t.name.clone(), w.table(t.root)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(sql).unwrap();
        drop(c);
        (dir, path)
    }

    fn digests(path: &Path) -> Vec<TableOutcome> {
        let c = Connection::open(path).unwrap();
        let ps: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let roots = table_roots(&c).unwrap();
        let mut pages = FilePages::open(path, ps).unwrap();
        digest_tables(&mut pages, ps, &roots).unwrap()
    }

    fn count(path: &Path, t: &str) -> u64 {
        let c = Connection::open(path).unwrap();
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn counts_rows_of_every_kind_of_table_and_follows_overflow() {
        let (_d, path) = db_with(
            "PRAGMA page_size = 1024;
             CREATE TABLE a (id INTEGER PRIMARY KEY, t TEXT, b BLOB, r REAL);
             CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO a SELECT i, 'row ' || i, randomblob(i % 7 * 900), i * 0.5 FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO w SELECT printf('%08d', i) || hex(randomblob(i % 3 * 400)), i FROM n;
             CREATE INDEX a_t ON a (t);",
        );
        let d = digests(&path);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "a");
        assert_eq!(d[0].1.as_ref().unwrap().rows, count(&path, "a"));
        assert_eq!(d[1].1.as_ref().unwrap().rows, count(&path, "w"));
    }

    #[test]
    fn the_digest_follows_content_not_page_layout() {
        let (_d, path) = db_with(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, t TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
             INSERT INTO a SELECT i, printf('%.*c', i % 300, 'x') FROM n;
             DELETE FROM a WHERE id % 3 = 0;",
        );
        let before = digests(&path);
        // VACUUM rewrites every page; the rows stay the same.
        Connection::open(&path)
            .unwrap()
            .execute_batch("VACUUM")
            .unwrap();
        assert_eq!(before, digests(&path));
        // One changed value changes the digest, not the count.
        Connection::open(&path)
            .unwrap()
            .execute_batch("UPDATE a SET t = 'y' WHERE id = 1000")
            .unwrap();
        let after = digests(&path);
        assert_eq!(
            after[0].1.as_ref().unwrap().rows,
            before[0].1.as_ref().unwrap().rows
        );
        assert_ne!(after, before);
    }

    #[test]
    fn damage_is_found_and_named() {
        let (_d, path) = db_with(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, t TEXT);
             CREATE TABLE b (x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO a SELECT i, printf('%.*c', 200, 'x') FROM n;
             INSERT INTO b VALUES (1);",
        );
        let c = Connection::open(&path).unwrap();
        let root: i64 = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(c);
        let clean = digests(&path);
        assert!(clean.iter().all(|(_, r)| r.is_ok()), "{clean:?}");
        let mut bytes = fs::read(&path).unwrap();
        // A cell pointer of the root page pointing off the page.
        let at = (root as usize - 1) * 4096 + 12;
        bytes[at] = 0xff;
        bytes[at + 1] = 0xff;
        fs::write(&path, &bytes).unwrap();
        let d = digests(&path);
        assert!(
            d[0].1.as_ref().unwrap_err().contains("outside the page"),
            "{d:?}"
        );
        assert!(d[1].1.is_ok(), "the other table is still digested: {d:?}");
    }

    #[test]
    fn a_page_shared_by_two_trees_is_found_on_any_number_of_threads() {
        let (_d, path) = db_with(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, t TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO a SELECT i, printf('%.*c', 200, 'x') FROM n;",
        );
        let c = Connection::open(&path).unwrap();
        let root: u32 = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(c);
        let once = walk_file(&path, 4096, &[(root, true)], 2).unwrap();
        assert_eq!(once[0].as_ref().unwrap().rows, 3000);
        for threads in [1, 2] {
            let twice = walk_file(&path, 4096, &[(root, true), (root, false)], threads);
            let found = match twice {
                Err(e) => e.contains("two b-trees"),
                Ok(r) => r
                    .iter()
                    .any(|r| r.as_ref().is_err_and(|e| e.contains("reached twice"))),
            };
            assert!(found, "{threads} thread(s)");
        }
    }

    #[test]
    fn varints_decode_like_sqlite() {
        assert_eq!(varint(&[0x7f], 0), Some((127, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
    }
}
