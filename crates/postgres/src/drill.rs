//! Restore drills for PostgreSQL: the dump is restored into a scratch
//! database on a real server, compared table by table with what the backup
//! read, and the books are checked there; the scratch database is dropped
//! afterwards, whatever happened.

use std::io::Read;
use std::time::Instant;

use ledgervault_repo::DatabaseInfo;
use ledgervault_sources::drill::{
    compare_tables, double_entry_checks, quoted, CheckOutcome, LedgerProbe, SqlCheck, TableShape,
    SAMPLE_ROWS,
};
use ledgervault_tenant::sql::Db;

use crate::conn::PgTarget;
use crate::db::PgDb;
use crate::dump::{DumpOptions, PgDump};
use crate::restore::{run_psql, with_scratch_database};
use crate::{Error, Result};

/// What a drill found, and where it ran.
pub struct Drill {
    pub outcomes: Vec<CheckOutcome>,
    /// `host:port` of the scratch server.
    pub server: String,
    pub scratch: String,
}

/// Restores `dump` into a scratch database on `server` and checks it.
pub fn drill_postgres(
    server: &PgTarget,
    dump: &mut dyn Read,
    recorded: &DatabaseInfo,
    checks: &[SqlCheck],
    client_table: Option<&str>,
) -> Result<Drill> {
    with_scratch_database(server, "drill", &recorded.settings, |at, major| {
        Ok(Drill {
            outcomes: run_drill(at, major, dump, recorded, checks, client_table)?,
            server: server.server(),
            scratch: at.dbname.clone(),
        })
    })
}

fn run_drill(
    at: &PgTarget,
    major: u32,
    dump: &mut dyn Read,
    recorded: &DatabaseInfo,
    checks: &[SqlCheck],
    client_table: Option<&str>,
) -> Result<Vec<CheckOutcome>> {
    let mut out = Vec::new();
    let t = Instant::now();
    let o = CheckOutcome::new("restore into a scratch database", "postgresql", t);
    match run_psql(at, major, dump, true) {
        Ok(bytes) => out.push(CheckOutcome {
            detail: format!(
                "{} of SQL applied in one transaction; every constraint and index was rebuilt and validated",
                ledgervault_repo::human_size(bytes)
            ),
            secs: t.elapsed().as_secs_f64(),
            ..o
        }),
        Err(e) => {
            out.push(o.fail(e.to_string()));
            return Ok(out);
        }
    }

    let now = redigest(at)?;
    out.push(compare_tables(recorded, |name| {
        now.iter()
            .find(|n| n.name == name)
            .map(|n| (n.rows, n.digest.clone()))
            .ok_or_else(|| "missing after the restore".to_string())
    }));

    let db = PgDb::connect(at)?;
    let tables = db.tables().map_err(|e| Error::Query(e.to_string()))?;
    // Double entry wherever it is recognised, on tables no given check
    // already covers.
    let covered: Vec<String> = checks
        .iter()
        .filter_map(|c| c.needs.first().map(|(t, _)| t.clone()))
        .filter(|t| tables.iter().any(|x| x.eq_ignore_ascii_case(t)))
        .collect();
    let shapes: Vec<TableShape> = tables
        .iter()
        .map(|t| (t, db.foreign_keys(t).unwrap_or_default()))
        .map(|(t, keys)| TableShape {
            name: t.clone(),
            columns: db
                .columns(t)
                .map(|cs| cs.into_iter().map(|c| (c.name, c.decl_type)).collect())
                .unwrap_or_default(),
            references: keys
                .iter()
                .map(|k| (k.column.clone(), k.ref_table.clone()))
                .collect(),
            referenced_columns: keys.iter().map(|k| k.ref_column.clone()).collect(),
        })
        .collect();
    let detected: Vec<SqlCheck> = double_entry_checks(&shapes, &Probe(&db), client_table)
        .into_iter()
        .filter(|d| !d.needs.iter().any(|(t, _)| covered.contains(t)))
        .collect();
    for c in checks.iter().chain(&detected) {
        let columns_of = |t: &str| -> Vec<String> {
            if !tables.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                return Vec::new();
            }
            db.columns(t)
                .map(|cs| cs.into_iter().map(|c| c.name).collect())
                .unwrap_or_default()
        };
        if !c.applies(columns_of) {
            continue;
        }
        let t = Instant::now();
        let o = CheckOutcome::new(&c.name, &c.origin, t);
        let mut n = 0u64;
        let mut sample = Vec::new();
        let r = db.query(&c.sql, &[], &mut |row| {
            n += 1;
            if sample.len() < SAMPLE_ROWS {
                sample.push(
                    row.iter()
                        .map(|v| v.plain().chars().take(80).collect())
                        .collect(),
                );
            }
            Ok(())
        });
        let o = CheckOutcome {
            secs: t.elapsed().as_secs_f64(),
            ..o
        };
        out.push(match r {
            Ok(()) if n == 0 => CheckOutcome {
                detail: "no offending rows".into(),
                ..o
            },
            Ok(()) => CheckOutcome {
                offending: n,
                rows: sample,
                ..o
            }
            .fail(format!("{n} offending row(s)")),
            Err(e) => o.fail(e.to_string()),
        });
    }
    Ok(out)
}

/// Row counts and digests of a database, as a backup records them: a dump
/// read to its end through the same [`PgDump`] a backup uses.
pub fn redigest(at: &PgTarget) -> Result<Vec<ledgervault_repo::TableStat>> {
    let mut dump = PgDump::start(at, &DumpOptions::default())?;
    std::io::copy(&mut dump, &mut std::io::sink())
        .map_err(|e| Error::Tool(format!("pg_dump of {at}: {e}")))?;
    let info = ledgervault_repo::DbDump::finish(Box::new(dump)).map_err(Error::Tool)?;
    Ok(info.tables)
}

/// The double-entry detector's questions, asked of a PostgreSQL database.
struct Probe<'a>(&'a PgDb);

impl LedgerProbe for Probe<'_> {
    fn distinct(&self, table: &str, column: &str) -> Vec<String> {
        let mut out = Vec::new();
        let sql = format!(
            "SELECT DISTINCT CAST({c} AS TEXT) FROM {t} WHERE {c} IS NOT NULL LIMIT 8",
            c = quoted(column),
            t = quoted(table)
        );
        let _ = self.0.query(&sql, &[], &mut |r| {
            out.extend(r.first().map(|v| v.plain()));
            Ok(())
        });
        out
    }

    fn balanced(&self, sql: &str) -> Option<(u64, u64, u64)> {
        let mut got = None;
        self.0
            .query(sql, &[], &mut |r| {
                let n = |i: usize| {
                    r.get(i)
                        .and_then(|v| v.plain().parse::<f64>().ok())
                        .unwrap_or(0.0) as u64
                };
                got = Some((n(0), n(1), n(2)));
                Ok(())
            })
            .ok()?;
        got
    }
}
