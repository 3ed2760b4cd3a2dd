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

/// One table of a database, as the double-entry detector sees it.
#[derive(Debug, Clone, Default)]
pub struct TableShape {
    pub name: String,
    /// `(name, declared type)`.
    pub columns: Vec<(String, String)>,
    /// `(column, referenced table)`.
    pub references: Vec<(String, String)>,
    /// The referenced column of each of `references`, in the same order
    /// (empty when unknown: then no chain of keys is followed through it).
    pub referenced_columns: Vec<String>,
}

/// The shortest chain of keys (at most four) from `from` to `to`, not
/// leaving `from` by the column `avoid`: each hop `(table, column,
/// referenced table, referenced column)`.
fn chain_of_keys(
    tables: &[TableShape],
    from: &str,
    to: &str,
    avoid: Option<&str>,
) -> Option<Vec<(String, String, String, String)>> {
    let mut paths: Vec<Vec<(String, String, String, String)>> = vec![Vec::new()];
    let mut seen = vec![from.to_string()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for path in &paths {
            let at = path.last().map_or(from, |h| h.2.as_str());
            let Some(t) = tables.iter().find(|t| t.name == at) else {
                continue;
            };
            for (i, (c, rt)) in t.references.iter().enumerate() {
                let Some(rc) = t.referenced_columns.get(i).filter(|rc| !rc.is_empty()) else {
                    continue;
                };
                if path.is_empty() && avoid == Some(c.as_str()) {
                    continue;
                }
                if seen.contains(rt) && rt != to {
                    continue;
                }
                let mut p = path.clone();
                p.push((at.to_string(), c.clone(), rt.clone(), rc.clone()));
                if rt == to {
                    return Some(p);
                }
                seen.push(rt.clone());
                next.push(p);
            }
        }
        paths = next;
    }
    None
}

/// The words of a name: split at `_`, `-`, spaces and lower-to-upper case
/// changes, lowercased (`entryType` → `entry`, `type`).
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if ch == '_' || ch == '-' || ch == ' ' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = ch.is_lowercase();
        cur.extend(ch.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn has_word(name: &str, any: &[&str]) -> bool {
    words(name).iter().any(|w| any.contains(&w.as_str()))
}

fn numeric(decl: &str) -> bool {
    let t = decl.to_ascii_uppercase();
    t.is_empty()
        || ["INT", "REAL", "NUM", "DEC", "FLOA", "DOUB", "MONEY"]
            .iter()
            .any(|k| t.contains(k))
}

pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Words that name a transaction (the group whose lines must net to zero).
const TRANSACTION_WORDS: &[&str] = &[
    "transaction",
    "transactions",
    "entry",
    "entries",
    "journal",
    "journals",
    "move",
    "moves",
    "voucher",
    "vouchers",
    "batch",
    "txn",
    "tx",
];

/// Checks that every transaction of a double-entry ledger nets to zero, on
/// schemas never seen before. A *lines* table is one with a column that
/// points to (or is named for) a transaction, and either
///
/// - a debit and a credit column (`debit`, `dr`, `credit`, `cr` among the
///   words of their names, numeric);
/// - a numeric amount (`amount`, `value`) and a side column (`type`,
///   `side`, `dc`, `direction`) whose values are only debit and credit
///   (`D`/`C`, `DR`/`CR`, `DEBIT`/`CREDIT`, any case), asked of the data
///   through `distinct_values`; or
/// - a signed numeric amount beside a reference to an account.
///
/// A shape is only a hint: the table is taken for a ledger when its data
/// says so too, when at least half of its transactions (and at least two)
/// net to zero, with one and a half lines per transaction or more on
/// average. Invoice lines, opening balances and the like, whose groups do
/// not net to zero, are not ledgers and get no check; a ledger with broken
/// transactions is one, and the check names them. A ledger broken in more
/// than half its transactions is not recognised: configure a check for it.
///
/// Every such table gives one check, named with what was recognised; the
/// sums allow for rounding of binary fractions (10⁻⁶). Lines whose
/// transaction column is NULL are not checked. A transaction that nets to
/// zero keeps every client's trial balance at zero when a transaction
/// belongs to one client.
pub fn double_entry_checks(
    tables: &[TableShape],
    data: &dyn LedgerProbe,
    client_table: Option<&str>,
) -> Vec<SqlCheck> {
    // The clients' table: the configured one, else `clients` or `client`.
    let client_table: Option<String> = client_table.map(str::to_string).or_else(|| {
        tables
            .iter()
            .map(|t| t.name.clone())
            .find(|n| n == "clients" || n == "client")
    });
    let mut out = Vec::new();
    for t in tables {
        // A table named for transactions that other tables point to is
        // their header, not their lines (`gl_entries` that nothing points
        // to may well be lines).
        if words(&t.name)
            .last()
            .is_some_and(|w| TRANSACTION_WORDS.contains(&w.as_str()))
            && tables
                .iter()
                .any(|o| o.name != t.name && o.references.iter().any(|(_, rt)| *rt == t.name))
        {
            continue;
        }
        let group = t
            .references
            .iter()
            .find(|(_, rt)| has_word(rt, TRANSACTION_WORDS))
            .map(|(c, _)| c.clone())
            .or_else(|| {
                t.columns
                    .iter()
                    .find(|(c, _)| {
                        let w = words(c);
                        w.len() >= 2
                            && TRANSACTION_WORDS.contains(&w[w.len() - 2].as_str())
                            && ["id", "guid", "uuid", "no", "ref", "number"]
                                .contains(&w[w.len() - 1].as_str())
                    })
                    .map(|(c, _)| c.clone())
            });
        let Some(g) = group else { continue };
        // Amount columns: numeric, named for it, and neither a reference
        // nor an id (`debit_account_id` is no debit).
        let num = |words_: &[&str]| {
            t.columns
                .iter()
                .find(|(c, ty)| {
                    numeric(ty)
                        && has_word(c, words_)
                        && !has_word(c, &["id", "guid", "uuid", "ref", "no", "number"])
                        && !t.references.iter().any(|(rc, _)| rc == c)
                })
                .map(|(c, _)| c.clone())
        };
        let (g_q, l_q) = (quoted(&g), quoted(&t.name));
        // Column names in `net` are qualified by the lines' alias `l`.
        let q = |c: &str| format!("l.{}", quoted(c));
        let (net, how) = if let (Some(d), Some(c)) = (num(&["debit", "dr"]), num(&["credit", "cr"]))
        {
            (
                format!("coalesce({}, 0) - coalesce({}, 0)", q(&d), q(&c)),
                format!("{d} against {c}"),
            )
        } else if let Some(a) = num(&["amount", "value", "amt"]) {
            let side = t
                .columns
                .iter()
                .filter(|(c, _)| {
                    has_word(c, &["type", "side", "dc", "direction", "drcr", "sign"]) && c != &a
                })
                .find(|(c, _)| {
                    let vals = data.distinct(&t.name, c);
                    !vals.is_empty()
                        && vals.iter().all(|v| {
                            ["d", "c", "dr", "cr", "debit", "credit"]
                                .contains(&v.trim().to_ascii_lowercase().as_str())
                        })
                })
                .map(|(c, _)| c.clone());
            match side {
                Some(sc) => (
                    format!(
                        "CASE WHEN lower(trim(CAST({s} AS TEXT))) IN ('d', 'dr', 'debit') THEN {a} WHEN lower(trim(CAST({s} AS TEXT))) IN ('c', 'cr', 'credit') THEN -{a} END",
                        s = q(&sc),
                        a = q(&a)
                    ),
                    format!("{a} signed by {sc}"),
                ),
                None if t
                    .references
                    .iter()
                    .any(|(c, rt)| has_word(rt, &["account", "accounts"]) || has_word(c, &["account"])) =>
                {
                    (q(&a), format!("signed {a}"))
                }
                None => continue,
            }
        } else {
            continue;
        };
        // The data must agree: one and a half lines per transaction or more
        // on average (a ledger has at least two), and at least half of the
        // transactions netting to zero. Damage to up to half of them is
        // still checked, and named.
        let balanced = data.balanced(&format!(
            "SELECT count(*), sum(CASE WHEN abs(n) <= 0.000001 THEN 1 ELSE 0 END), sum(k) FROM (SELECT sum({net}) AS n, count(*) AS k FROM {l_q} l WHERE l.{g_q} IS NOT NULL GROUP BY l.{g_q}) x"
        ));
        match balanced {
            Some((groups, zero, lines))
                if groups >= 2 && zero * 2 >= groups && lines * 2 >= groups * 3 => {}
            _ => continue,
        }
        // Lines that lead to their client, by a key of their own or a
        // chain of keys: each client's trial balance too. A chain that
        // does not go through the transaction (a line's account's chart's
        // company) is preferred: it catches a line posted to another
        // client's account, which every transaction's balance hides; one
        // through the transaction (its ledger's company) is taken when it
        // is the only one.
        if let Some(chain) = client_table.as_ref().and_then(|ct| {
            chain_of_keys(tables, &t.name, ct, Some(&g))
                .or_else(|| chain_of_keys(tables, &t.name, ct, None))
        }) {
            let mut joins = String::new();
            let mut at = "l".to_string();
            for (i, (_, c, rt, rc)) in chain.iter().enumerate().take(chain.len() - 1) {
                let alias = format!("k{i}");
                joins += &format!(
                    " JOIN {} {alias} ON {alias}.{} = {at}.{}",
                    quoted(rt),
                    quoted(rc),
                    quoted(c)
                );
                at = alias;
            }
            let last = &chain[chain.len() - 1];
            let client = format!("{at}.{}", quoted(&last.1));
            let by = match chain.as_slice() {
                [one] => one.1.clone(),
                _ => chain
                    .iter()
                    .map(|h| format!("{}.{}", h.0, h.1))
                    .collect::<Vec<_>>()
                    .join(" -> "),
            };
            out.push(SqlCheck {
                name: format!(
                    "each client's trial balance in {} nets to zero ({how}, by {by})",
                    t.name
                ),
                sql: format!(
                    "SELECT {client} AS client, sum({net}) AS net FROM {l_q} l{joins} WHERE {client} IS NOT NULL GROUP BY {client} HAVING abs(sum({net})) > 0.000001"
                ),
                needs: vec![(t.name.clone(), vec![chain[0].1.clone()])],
                origin: format!("double entry recognised in {} ({how}, by client {by})", t.name),
            });
        }
        out.push(SqlCheck {
            name: format!(
                "every transaction of {} nets to zero ({how}, by {g})",
                t.name
            ),
            sql: format!(
                "SELECT l.{g_q} AS \"transaction\", sum({net}) AS net FROM {l_q} l WHERE l.{g_q} IS NOT NULL GROUP BY l.{g_q} HAVING abs(sum({net})) > 0.000001"
            ),
            needs: vec![(t.name.clone(), vec![g.clone()])],
            origin: format!("double entry recognised in {} ({how}, grouped by {g})", t.name),
        });
    }
    out
}

/// What the double-entry detector asks of a database's data.
pub trait LedgerProbe {
    /// Up to 8 distinct values of a column, as text.
    fn distinct(&self, table: &str, column: &str) -> Vec<String>;
    /// Runs `SELECT groups, zero_groups, lines …`: how many groups, how
    /// many net to zero, how many lines; `None` when the query fails.
    fn balanced(&self, sql: &str) -> Option<(u64, u64, u64)>;
}

impl LedgerProbe for Connection {
    fn distinct(&self, table: &str, column: &str) -> Vec<String> {
        sqlite_distinct(self, table, column)
    }

    fn balanced(&self, sql: &str) -> Option<(u64, u64, u64)> {
        self.query_row(sql, [], |r| {
            let n = |i: usize| -> rusqlite::Result<u64> {
                Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
            };
            Ok((n(0)?, n(1)?, n(2)?))
        })
        .ok()
    }
}

/// The shapes of every table of a SQLite database.
pub fn sqlite_shapes(conn: &Connection) -> Vec<TableShape> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|name| {
            let columns = conn
                .prepare("SELECT name, type FROM pragma_table_info(?1)")
                .and_then(|mut s| {
                    s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .unwrap_or_default();
            // Single-column keys; a key without its column names the
            // referenced table's primary key.
            let keys: Vec<(String, String, Option<String>)> = conn
                .prepare(
                    "SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list(?1) k \
                     WHERE (SELECT count(*) FROM pragma_foreign_key_list(?1) o WHERE o.id = k.id) = 1",
                )
                .and_then(|mut s| {
                    s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .unwrap_or_default();
            let pk_of = |t: &str| -> String {
                conn.query_row(
                    "SELECT name FROM pragma_table_info(?1) WHERE pk = 1",
                    [t],
                    |r| r.get(0),
                )
                .unwrap_or_default()
            };
            let referenced_columns = keys
                .iter()
                .map(|(_, t, c)| c.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| pk_of(t)))
                .collect();
            TableShape {
                name,
                columns,
                references: keys.into_iter().map(|(c, t, _)| (c, t)).collect(),
                referenced_columns,
            }
        })
        .collect()
}

/// Up to 8 distinct values of a column, as text (for the detector).
pub fn sqlite_distinct(conn: &Connection, table: &str, column: &str) -> Vec<String> {
    let sql = format!(
        "SELECT DISTINCT CAST({} AS TEXT) FROM {} WHERE {} IS NOT NULL LIMIT 8",
        quoted(column),
        quoted(table),
        quoted(column)
    );
    conn.prepare(&sql)
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .unwrap_or_default()
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
    client_table: Option<&str>,
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

    // Accounting invariants: the given ones, then double entry wherever it
    // is recognised (tables a given check already covers aside).
    let covered: Vec<String> = checks
        .iter()
        .filter(|c| c.applies(|t| column_names(&conn, t)))
        .filter_map(|c| c.needs.first().map(|(t, _)| t.clone()))
        .collect();
    let detected: Vec<SqlCheck> = double_entry_checks(&sqlite_shapes(&conn), &conn, client_table)
        .into_iter()
        .filter(|d| !d.needs.iter().any(|(t, _)| covered.contains(t)))
        .collect();
    for c in checks.iter().chain(&detected) {
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

#[cfg(test)]
mod double_entry_tests {
    use super::*;

    fn shapes(sql: &str) -> (Connection, Vec<TableShape>) {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        c.execute_batch(sql).unwrap();
        let s = sqlite_shapes(&c);
        (c, s)
    }

    fn run(c: &Connection, checks: &[SqlCheck]) -> Vec<u64> {
        checks
            .iter()
            .map(|k| no_rows(c, &k.sql).unwrap().0)
            .collect()
    }

    #[test]
    fn three_layouts_are_recognised_and_an_unbalanced_transaction_is_found() {
        // Debit and credit columns, a side column with an amount (as
        // python-accounting), and a signed amount beside an account.
        let (c, s) = shapes(
            "CREATE TABLE acct (id INTEGER PRIMARY KEY);
             CREATE TABLE Txn (id INTEGER PRIMARY KEY);
             CREATE TABLE moveLine (id INTEGER PRIMARY KEY, move_id INTEGER REFERENCES Txn(id),
                                    Debit NUMERIC, Credit NUMERIC);
             CREATE TABLE ledger (id INTEGER PRIMARY KEY, transaction_id INTEGER, entry_type TEXT,
                                  amount DECIMAL(13,4));
             CREATE TABLE posting (id INTEGER PRIMARY KEY, voucher_no TEXT,
                                   account_id INTEGER REFERENCES acct(id), value REAL);
             CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER, amount INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)
             INSERT INTO moveLine (move_id, Debit, Credit) SELECT i, i * 10, 0 FROM n
                 UNION ALL SELECT i, 0, i * 10 FROM n;
             UPDATE moveLine SET Credit = 4 WHERE move_id = 2 AND Credit > 0;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)
             INSERT INTO ledger (transaction_id, entry_type, amount) SELECT i, 'DEBIT', 2.5 FROM n
                 UNION ALL SELECT i, 'CREDIT', 2.5 FROM n;
             INSERT INTO ledger (transaction_id, entry_type, amount) VALUES (8, 'DEBIT', 1);
             INSERT INTO posting (voucher_no, account_id, value) VALUES ('V1', 1, 0.1), ('V1', 1, 0.2),
                 ('V1', 1, -0.3), ('V2', 1, 1.5), ('V2', 1, -1.5);
             -- Lines in a table named like entries, with account ids named
             -- debit and credit beside the real amounts; half broken.
             CREATE TABLE gl_entries (id INTEGER PRIMARY KEY, voucher_no TEXT, debit_account_id INTEGER,
                                      credit_account_id INTEGER, debit NUMERIC, credit NUMERIC);
             INSERT INTO gl_entries (voucher_no, debit_account_id, credit_account_id, debit, credit) VALUES
                 ('A', 1, 2, 5, 0), ('A', 1, 2, 0, 5), ('B', 1, 2, 7, 0), ('B', 1, 2, 0, 6);",
        );
        let checks = double_entry_checks(&s, &c, None);
        let names: Vec<&str> = checks.iter().map(|k| k.origin.as_str()).collect();
        assert_eq!(checks.len(), 4, "{names:?}");
        assert!(
            names[0].contains("gl_entries") && names[0].contains("debit against credit"),
            "{names:?}"
        );
        assert!(
            names[1].contains("ledger") && names[1].contains("entry_type"),
            "{names:?}"
        );
        assert!(names[2].contains("moveLine") && names[2].contains("Debit against Credit"));
        assert!(names[3].contains("posting") && names[3].contains("signed value"));
        // Voucher B of gl_entries (one of two: still recognised),
        // transaction 2 of moveLine and 8 of ledger do not balance; the
        // posting's binary fractions (0.1 + 0.2 - 0.3) do.
        assert_eq!(run(&c, &checks), vec![1, 1, 1, 0]);
    }

    #[test]
    fn a_client_reached_through_a_chain_of_keys_gets_its_trial_balance() {
        // Lines name their entry, entries their ledger, ledgers their
        // company: the company's trial balance follows the chain.
        let (c, s) = shapes(
            "CREATE TABLE company (uuid TEXT PRIMARY KEY);
             CREATE TABLE ledgermodel (uuid TEXT PRIMARY KEY, entity_id TEXT REFERENCES company(uuid));
             CREATE TABLE journalentrymodel (uuid TEXT PRIMARY KEY, ledger_id TEXT REFERENCES ledgermodel);
             CREATE TABLE transactionmodel (uuid TEXT PRIMARY KEY,
                 journal_entry_id TEXT REFERENCES journalentrymodel(uuid),
                 tx_type TEXT, amount DECIMAL(20, 2));
             INSERT INTO company VALUES ('c1'), ('c2');
             INSERT INTO ledgermodel VALUES ('l1', 'c1'), ('l2', 'c2');
             INSERT INTO journalentrymodel VALUES ('e1', 'l1'), ('e2', 'l1'), ('e3', 'l2'), ('e4', 'l2');
             INSERT INTO transactionmodel VALUES
                 ('t1', 'e1', 'debit', 10), ('t2', 'e1', 'credit', 10),
                 ('t3', 'e2', 'debit', 5), ('t4', 'e2', 'credit', 5),
                 ('t5', 'e3', 'debit', 7), ('t6', 'e3', 'credit', 7);",
        );
        let checks = double_entry_checks(&s, &c, Some("company"));
        let names: Vec<&str> = checks.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(checks.len(), 2, "{names:?}");
        assert!(
            names[0].contains("transactionmodel.journal_entry_id -> journalentrymodel.ledger_id -> ledgermodel.entity_id"),
            "{names:?}"
        );
        assert_eq!(run(&c, &checks), vec![0, 0]);
        // One line more in company 2's entry: the entry and company 2 are
        // named, company 1 is not.
        c.execute_batch("INSERT INTO transactionmodel VALUES ('t7', 'e3', 'debit', 3)")
            .unwrap();
        assert_eq!(run(&c, &checks), vec![1, 1]);
        let (_, _, rows) = no_rows(&c, &checks[0].sql).unwrap();
        assert_eq!(rows[0][0], "c2");
    }

    #[test]
    fn a_line_posted_to_another_clients_account_is_found() {
        // Lines also name their account, accounts their chart, charts
        // their company: the trial balance follows that chain, which does
        // not go through the entry, so a line of company 1's entry posted
        // to company 2's account unbalances both companies while every
        // entry still balances.
        let (c, s) = shapes(
            "CREATE TABLE company (uuid TEXT PRIMARY KEY);
             CREATE TABLE coa (uuid TEXT PRIMARY KEY, entity_id TEXT REFERENCES company(uuid));
             CREATE TABLE account (uuid TEXT PRIMARY KEY, coa_id TEXT REFERENCES coa(uuid));
             CREATE TABLE ledger (uuid TEXT PRIMARY KEY, entity_id TEXT REFERENCES company(uuid));
             CREATE TABLE journal_entry (uuid TEXT PRIMARY KEY, ledger_id TEXT REFERENCES ledger(uuid));
             CREATE TABLE line (uuid TEXT PRIMARY KEY,
                 journal_entry_id TEXT REFERENCES journal_entry(uuid),
                 account_id TEXT REFERENCES account(uuid), tx_type TEXT, amount NUMERIC);
             INSERT INTO company VALUES ('c1'), ('c2');
             INSERT INTO coa VALUES ('k1', 'c1'), ('k2', 'c2');
             INSERT INTO account VALUES ('a1', 'k1'), ('b1', 'k1'), ('a2', 'k2'), ('b2', 'k2');
             INSERT INTO ledger VALUES ('l1', 'c1'), ('l2', 'c2');
             INSERT INTO journal_entry VALUES ('e1', 'l1'), ('e2', 'l1'), ('e3', 'l2');
             INSERT INTO line VALUES
                 ('t1', 'e1', 'a1', 'debit', 10), ('t2', 'e1', 'b1', 'credit', 10),
                 ('t3', 'e2', 'a1', 'debit', 5), ('t4', 'e2', 'b1', 'credit', 5),
                 ('t5', 'e3', 'a2', 'debit', 7), ('t6', 'e3', 'b2', 'credit', 7);",
        );
        let checks = double_entry_checks(&s, &c, Some("company"));
        let names: Vec<&str> = checks.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(checks.len(), 2, "{names:?}");
        assert!(
            names[0].contains("line.account_id -> account.coa_id -> coa.entity_id"),
            "{names:?}"
        );
        assert_eq!(run(&c, &checks), vec![0, 0]);
        c.execute_batch("UPDATE line SET account_id = 'b2' WHERE uuid = 't4'")
            .unwrap();
        assert_eq!(run(&c, &checks), vec![2, 0], "every entry still balances");
    }

    #[test]
    fn tables_that_are_not_ledgers_give_no_check() {
        let (c, s) = shapes(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER);
             CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER REFERENCES invoices(id), amount INTEGER, type TEXT);
             CREATE TABLE payments (id INTEGER PRIMARY KEY, transaction_ref TEXT, amount INTEGER, kind TEXT);
             INSERT INTO invoice_lines VALUES (1, 1, 5, 'service');
             INSERT INTO payments VALUES (1, 'T', 5, 'card');
             -- Lines of sales: an account and a transaction each, amounts all
             -- positive: shaped like a ledger, and not one.
             CREATE TABLE accounts (id INTEGER PRIMARY KEY);
             CREATE TABLE transactions (id INTEGER PRIMARY KEY);
             CREATE TABLE sale_lines (id INTEGER PRIMARY KEY, transaction_id INTEGER REFERENCES transactions(id),
                                      account_id INTEGER REFERENCES accounts(id), amount INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
             INSERT INTO sale_lines (transaction_id, account_id, amount) SELECT i, 1, 100 + i FROM n;",
        );
        let checks = double_entry_checks(&s, &c, None);
        assert!(
            checks.is_empty(),
            "{:?}",
            checks.iter().map(|k| &k.origin).collect::<Vec<_>>()
        );
    }
}
