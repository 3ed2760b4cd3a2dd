//! Restore drills on a restored SQLite database: is it sound, is it what was
//! backed up, and do the books still balance?
//!
//! Every check is a query that must return no rows. Built-in checks apply
//! only to databases that have the tables and columns they name, so an
//! unknown accounting program's database gets the generic checks (integrity,
//! foreign keys, row counts and digests) and whatever the user configures.

use std::path::Path;
use std::time::Instant;

use ledgervault_repo::DatabaseInfo;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::btree::DIGEST_PREFIX;
use crate::sqlite::{file_table_stats, sql_table_digest};

/// Offending rows shown per failed check.
pub const SAMPLE_ROWS: usize = 5;

/// A query that must return no rows.
#[derive(Debug, Clone)]
pub struct SqlCheck {
    pub name: String,
    pub sql: String,
    /// Tables (and columns) it needs; it is skipped where they are missing.
    pub needs: Vec<(String, Vec<String>)>,
    /// Where it comes from: a built-in set or the config file.
    pub origin: String,
}

impl SqlCheck {
    fn builtin(origin: &str, name: &str, needs: &[(&str, &[&str])], sql: &str) -> SqlCheck {
        SqlCheck {
            name: name.into(),
            sql: sql.into(),
            needs: needs
                .iter()
                .map(|(t, cols)| (t.to_string(), cols.iter().map(|c| c.to_string()).collect()))
                .collect(),
            origin: origin.into(),
        }
    }

    /// Whether the database has every table and column the check needs;
    /// `columns_of` gives a table's column names (none when it is absent).
    pub fn applies(&self, columns_of: impl Fn(&str) -> Vec<String>) -> bool {
        self.needs.iter().all(|(table, cols)| {
            let have = columns_of(table);
            !have.is_empty()
                && cols
                    .iter()
                    .all(|c| have.iter().any(|h| h.eq_ignore_ascii_case(c)))
        })
    }

    /// A check from the config file; it always runs.
    pub fn custom(name: &str, sql: &str) -> SqlCheck {
        SqlCheck {
            name: name.into(),
            sql: sql.into(),
            needs: Vec::new(),
            origin: "config".into(),
        }
    }
}

/// The built-in accounting invariants.
pub fn builtin_checks() -> Vec<SqlCheck> {
    const JOURNAL: &str = "double-entry journal (journal_entries, journal_lines)";
    const GNUCASH: &str = "GnuCash book";
    vec![
        SqlCheck::builtin(
            JOURNAL,
            "every journal entry balances",
            &[("journal_lines", &["entry_id", "debit_cents", "credit_cents"])],
            "SELECT entry_id, sum(debit_cents) AS debits, sum(credit_cents) AS credits
             FROM journal_lines GROUP BY entry_id HAVING sum(debit_cents) != sum(credit_cents)",
        ),
        SqlCheck::builtin(
            JOURNAL,
            "each client's trial balance sums to zero",
            &[
                ("journal_lines", &["entry_id", "debit_cents", "credit_cents"]),
                ("journal_entries", &["id", "client_id"]),
            ],
            "SELECT e.client_id, sum(l.debit_cents) - sum(l.credit_cents) AS difference
             FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
             GROUP BY e.client_id HAVING sum(l.debit_cents) != sum(l.credit_cents)",
        ),
        SqlCheck::builtin(
            JOURNAL,
            "no journal line is orphaned",
            &[
                ("journal_lines", &["id", "entry_id", "account_id"]),
                ("journal_entries", &["id"]),
                ("accounts", &["id"]),
            ],
            "SELECT l.id, l.entry_id, l.account_id FROM journal_lines l
             LEFT JOIN journal_entries e ON e.id = l.entry_id
             LEFT JOIN accounts a ON a.id = l.account_id
             WHERE e.id IS NULL OR a.id IS NULL",
        ),
        SqlCheck::builtin(
            JOURNAL,
            "no invoice line is orphaned",
            &[("invoice_lines", &["id", "invoice_id"]), ("invoices", &["id"])],
            "SELECT il.id, il.invoice_id FROM invoice_lines il
             LEFT JOIN invoices i ON i.id = il.invoice_id WHERE i.id IS NULL",
        ),
        SqlCheck::builtin(
            JOURNAL,
            "invoice totals equal the sum of their lines (plus tax)",
            &[
                ("invoices", &["id", "total_cents", "tax_rate_id"]),
                ("invoice_lines", &["invoice_id", "amount_cents"]),
                ("tax_rates", &["id", "rate_bp"]),
            ],
            "SELECT i.id, i.total_cents, s.lines_cents FROM invoices i
             JOIN (SELECT invoice_id, sum(amount_cents) AS lines_cents FROM invoice_lines GROUP BY invoice_id) s
               ON s.invoice_id = i.id
             LEFT JOIN tax_rates t ON t.id = i.tax_rate_id
             WHERE i.total_cents != s.lines_cents + coalesce(s.lines_cents * t.rate_bp / 10000, 0)",
        ),
        SqlCheck::builtin(
            GNUCASH,
            "every transaction's splits sum to zero",
            &[
                ("splits", &["tx_guid", "value_num", "value_denom"]),
                ("transactions", &["guid"]),
            ],
            // Scaled to millionths: GnuCash denominators are powers of ten.
            "SELECT tx_guid, sum(value_num * 1000000 / value_denom) AS millionths
             FROM splits GROUP BY tx_guid HAVING sum(value_num * 1000000 / value_denom) != 0",
        ),
    ]
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    pub name: String,
    /// `sqlite`, `backup record`, a built-in set's name, or `config`.
    pub origin: String,
    pub passed: bool,
    /// One line: what was seen.
    pub detail: String,
    /// Offending rows found (all of them counted).
    pub offending: u64,
    /// The first few offending rows, as text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Vec<String>>,
    pub secs: f64,
}

impl CheckOutcome {
    pub fn new(name: &str, origin: &str, started: Instant) -> CheckOutcome {
        CheckOutcome {
            name: name.into(),
            origin: origin.into(),
            passed: true,
            detail: String::new(),
            offending: 0,
            rows: Vec::new(),
            secs: started.elapsed().as_secs_f64(),
        }
    }

    pub fn fail(mut self, detail: impl Into<String>) -> CheckOutcome {
        self.passed = false;
        self.detail = detail.into();
        self
    }
}

/// Opens a restored image without locking or creating any file beside it.
fn open_image(path: &Path) -> rusqlite::Result<Connection> {
    let uri = format!(
        "file:{}?immutable=1",
        path.display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23")
    );
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).chars().take(80).collect(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// Runs a query that must return no rows: counts them and keeps a sample.
fn no_rows(conn: &Connection, sql: &str) -> rusqlite::Result<(u64, Vec<String>, Vec<Vec<String>>)> {
    let mut stmt = conn.prepare(sql)?;
    let cols: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = cols.len();
    let mut rows = stmt.query([])?;
    let mut count = 0u64;
    let mut sample = Vec::new();
    while let Some(r) = rows.next()? {
        count += 1;
        if sample.len() < SAMPLE_ROWS {
            sample.push(
                (0..n)
                    .map(|i| r.get_ref(i).map(text).unwrap_or_default())
                    .collect(),
            );
        }
    }
    Ok((count, cols, sample))
}

/// The column names of `table` (none when it does not exist).
fn column_names(conn: &Connection, table: &str) -> Vec<String> {
    conn.prepare("SELECT name FROM pragma_table_info(?1)")
        .and_then(|mut stmt| {
            stmt.query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap_or_default()
}

/// Compares every table the backup recorded with the restored database;
/// `now(name)` gives the restored table's row count and digest, or why it
/// could not be read.
pub fn compare_tables(
    recorded: &DatabaseInfo,
    now: impl Fn(&str) -> Result<(u64, String), String>,
) -> CheckOutcome {
    let t = Instant::now();
    let mut bad = Vec::new();
    for ts in &recorded.tables {
        match now(&ts.name) {
            Ok((rows, digest)) if rows == ts.rows && digest == ts.digest => {}
            Ok((rows, _)) if rows != ts.rows => bad.push(vec![
                ts.name.clone(),
                format!("{rows} rows, {} at backup", ts.rows),
            ]),
            Ok(_) => bad.push(vec![
                ts.name.clone(),
                "same row count, different content".into(),
            ]),
            Err(e) => bad.push(vec![ts.name.clone(), e]),
        }
    }
    let o = CheckOutcome::new(
        "row counts and digests match the backup",
        "backup record",
        t,
    );
    let o = CheckOutcome {
        secs: t.elapsed().as_secs_f64(),
        ..o
    };
    if bad.is_empty() {
        CheckOutcome {
            detail: format!(
                "{} tables identical to what the backup read",
                recorded.tables.len()
            ),
            ..o
        }
    } else {
        let n = bad.len() as u64;
        CheckOutcome {
            offending: n,
            rows: bad.into_iter().take(SAMPLE_ROWS).collect(),
            ..o
        }
        .fail(format!("{n} table(s) differ from what the backup read"))
    }
}

/// Gives a restored table's row count and digest, or why it has none.
type TableReader<'a> = dyn Fn(&str) -> Result<(u64, String), String> + 'a;

/// How to digest a table of the restored database at `path` the way the
/// backup recorded `info`: off the pages (every snapshot since the digest
/// moved there), or through SQL for snapshots written before.
fn restored_digests<'a>(
    conn: &'a Connection,
    path: &Path,
    info: &DatabaseInfo,
) -> Box<TableReader<'a>> {
    if info
        .tables
        .iter()
        .any(|t| !t.digest.starts_with(DIGEST_PREFIX))
    {
        return Box::new(move |name| sql_table_digest(conn, name).map_err(|e| e.to_string()));
    }
    let mut now = DatabaseInfo::default();
    file_table_stats(path, &mut now);
    Box::new(
        move |name| match now.tables.iter().find(|t| t.name == name) {
            Some(t) => Ok((t.rows, t.digest.clone())),
            None => Err(now
                .problems
                .iter()
                .find(|p| p.starts_with(&format!("table {name}: ")))
                .cloned()
                .unwrap_or_else(|| "missing from the restored database".into())),
        },
    )
}

/// Runs every check on the restored database at `path`: SQLite's own
/// `integrity_check` and `foreign_key_check`, each table's row count and
/// digest against `recorded` (what the backup saw), and `checks` (built-in
/// ones that apply, then custom ones).
pub fn drill_sqlite(
    path: &Path,
    recorded: Option<&DatabaseInfo>,
    checks: &[SqlCheck],
) -> Vec<CheckOutcome> {
    let mut out = Vec::new();
    let t = Instant::now();
    let conn = match open_image(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(
                CheckOutcome::new("open the restored database", "sqlite", t).fail(e.to_string()),
            );
            return out;
        }
    };
    let _ = conn.execute_batch("PRAGMA mmap_size = 134217728");

    // SQLite's own checks.
    let t = Instant::now();
    let o = CheckOutcome::new("integrity_check", "sqlite", t);
    out.push(
        match no_rows(
            &conn,
            "SELECT * FROM pragma_integrity_check WHERE integrity_check != 'ok'",
        ) {
            Ok((0, _, _)) => CheckOutcome {
                secs: t.elapsed().as_secs_f64(),
                detail: "ok".into(),
                ..o
            },
            Ok((n, _, rows)) => CheckOutcome {
                offending: n,
                rows,
                secs: t.elapsed().as_secs_f64(),
                ..o
            }
            .fail(format!("{n} problem(s) in the database structure")),
            Err(e) => o.fail(e.to_string()),
        },
    );
    let t = Instant::now();
    let o = CheckOutcome::new("foreign_key_check", "sqlite", t);
    out.push(match no_rows(&conn, "PRAGMA foreign_key_check") {
        Ok((0, _, _)) => CheckOutcome { secs: t.elapsed().as_secs_f64(), detail: "no dangling references".into(), ..o },
        Ok((n, _, rows)) => CheckOutcome { offending: n, rows, secs: t.elapsed().as_secs_f64(), ..o }
            .fail(format!("{n} row(s) reference a parent row that does not exist (table, rowid, parent, constraint)")),
        Err(e) => o.fail(e.to_string()),
    });

    // What the backup recorded.
    if let Some(info) = recorded {
        out.push(compare_tables(info, restored_digests(&conn, path, info)));
    }

    // Accounting invariants.
    for c in checks {
        if !c.applies(|t| column_names(&conn, t)) {
            continue;
        }
        let t = Instant::now();
        let o = CheckOutcome::new(&c.name, &c.origin, t);
        out.push(match no_rows(&conn, &c.sql) {
            Ok((0, _, _)) => CheckOutcome {
                secs: t.elapsed().as_secs_f64(),
                detail: "no offending rows".into(),
                ..o
            },
            Ok((n, cols, rows)) => CheckOutcome {
                offending: n,
                rows,
                secs: t.elapsed().as_secs_f64(),
                ..o
            }
            .fail(format!("{n} offending row(s) ({})", cols.join(", "))),
            Err(e) => o.fail(format!("the query failed: {e}")),
        });
    }
    out
}
