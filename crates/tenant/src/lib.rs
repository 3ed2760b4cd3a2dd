//! Per-client backup and restore: one client's rows out of a firm database,
//! and back into the same or another firm database.
//!
//! - [`map`] works out which tables belong to a client and which are shared;
//! - [`export`] collects a client's rows inside one read snapshot into an
//!   [`Archive`], recording every link that leaves the client;
//! - [`import`](mod@import) puts an archive into a database in one transaction,
//!   remapping keys, resolving shared rows and verifying before it commits.
//!
//! Everything goes through the engine-neutral [`sql::Db`] trait.

pub mod import;
pub mod map;
pub mod sql;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

pub use import::{
    import, import_telling, preflight, ImportOptions, ImportReport, Mode, UniqueConflict,
};
use map::{fingerprint, TableSchema};
pub use map::{LinkPolicy, MissingShared, TenantConfig, TenantMap, UniqueRule};
use sql::{ident, rows, Db, Value};

/// Errors of per-client work; each is one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(String),
    #[error("{0}")]
    Schema(String),
    #[error("{0}")]
    NotFound(String),
    /// The import was refused; nothing was changed.
    #[error("{0}; nothing was changed")]
    Refused(String),
    #[error("archive: {0}")]
    Archive(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Version of the archive format. 2: `counts` per table (and rows on every
/// route of keys); version 1 archives still read.
pub const ARCHIVE_VERSION: u32 = 2;

/// A table's rows in an archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRows {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl TableRows {
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// A link from one of the client's rows to another client's row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Link {
    pub table: String,
    /// Primary key of the row holding the link.
    pub row: Vec<Value>,
    pub column: String,
    pub ref_table: String,
    pub value: Value,
    /// The client owning the row it points to (when it could be found).
    pub other_client: Option<Value>,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row: Vec<String> = self.row.iter().map(|v| v.to_string()).collect();
        write!(
            f,
            "{}.{} of row {} points to {} {} of client {}",
            self.table,
            self.column,
            row.join(","),
            self.ref_table,
            self.value,
            self.other_client
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into())
        )
    }
}

/// One client's data, portable between firm databases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Archive {
    pub version: u32,
    pub engine: String,
    pub root: String,
    /// The client's root key in its source database.
    pub client: Value,
    /// A readable name (the root row's `name` or `code`, if it has one).
    pub label: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub schema: Vec<TableSchema>,
    pub fingerprint: String,
    /// Owned tables, in the order of the tenant map that wrote it.
    pub tables: Vec<TableRows>,
    /// Shared rows the client's rows point to.
    pub shared: Vec<TableRows>,
    pub links: Vec<Link>,
    /// Rows per owned table, as counted when exported; an archive whose
    /// rows differ from these is refused. Empty in version 1 archives.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

impl Archive {
    /// Whether `spec` names this archive's client: its key, or the value of
    /// any text column of its root row (a code, a name).
    pub fn is_client(&self, spec: &str) -> bool {
        if self.client.plain() == spec || self.label == spec {
            return true;
        }
        self.tables
            .iter()
            .find(|t| t.table == self.root)
            .and_then(|t| t.rows.first())
            .is_some_and(|r| r.iter().any(|v| matches!(v, Value::Text(t) if t == spec)))
    }

    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows.len() as u64).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("archive serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Archive> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Archive(e.to_string()))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        if version > ARCHIVE_VERSION as u64 {
            return Err(Error::Archive(format!(
                "format version {version}, written by a newer ledgervault"
            )));
        }
        let a: Archive = serde_json::from_value(v).map_err(|e| Error::Archive(e.to_string()))?;
        for t in &a.tables {
            if let Some(&n) = a.counts.get(&t.table) {
                if n != t.rows.len() as u64 {
                    return Err(Error::Archive(format!(
                        "table {} holds {} rows, its count says {n}: the archive is incomplete or altered",
                        t.table,
                        t.rows.len()
                    )));
                }
            }
        }
        Ok(a)
    }
}

/// The label of a root row: its `name`, `code` or key.
pub(crate) fn label_of(root_cols: &[String], row: &[Value], key: &Value) -> String {
    for want in ["name", "code", "title"] {
        if let Some(i) = root_cols.iter().position(|c| c.eq_ignore_ascii_case(want)) {
            return row[i].plain();
        }
    }
    key.to_string()
}

/// A client as `client list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    pub key: Value,
    pub label: String,
    /// Rows per owned table.
    pub rows: BTreeMap<String, u64>,
    pub total_rows: u64,
}

/// Every client with its row counts.
pub fn list_clients(db: &dyn Db, map: &TenantMap) -> Result<Vec<ClientInfo>> {
    let root = map.root();
    let key = map.root_key();
    let cols: Vec<String> = root.columns.iter().map(|c| c.name.clone()).collect();
    let mut clients: Vec<ClientInfo> = Vec::new();
    let mut by_key: HashMap<Value, usize> = HashMap::new();
    let select = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let ki = cols.iter().position(|c| *c == key).unwrap_or(0);
    for r in rows(
        db,
        &format!(
            "SELECT {select} FROM {} ORDER BY {}",
            ident(&root.name),
            ident(&key)
        ),
        &[],
    )? {
        let k = r[ki].clone();
        by_key.insert(k.clone(), clients.len());
        clients.push(ClientInfo {
            label: label_of(&cols, &r, &k),
            key: k,
            rows: BTreeMap::new(),
            total_rows: 1,
        });
    }
    for o in &map.owned[1..] {
        // Every client's rows at once, a cross-client row counted for each
        // client it belongs to; in a table whose rows all have a home, each
        // row is its home's alone, and one pass counts them (a home that
        // names no client counts for nobody).
        let sql = match settled_home(db, map, &o.name)? {
            // Joined with the client table, so that a home matches its
            // client as `=` does elsewhere (affinities, '07' and 7).
            Some((from, home)) => format!(
                "SELECT CAST(lv_c.{k} AS TEXT), count(*) {from} JOIN {} lv_c ON lv_c.{k} = {home} GROUP BY lv_c.{k}",
                ident(&root.name),
                k = ident(&key)
            ),
            None => {
                let (with, pairs, _) = map.client_pairs_sql(db, &o.name);
                format!("{with} SELECT ck, count(*) FROM ({pairs}) x GROUP BY ck")
            }
        };
        for r in rows(db, &sql, &[])? {
            let k = clients
                .iter()
                .position(|c| c.key.plain() == r[0].plain())
                .and_then(|i| by_key.get(&clients[i].key));
            if let (Some(&i), Value::Int(n)) = (k, &r[1]) {
                clients[i].rows.insert(o.name.clone(), *n as u64);
                clients[i].total_rows += *n as u64;
            }
        }
    }
    Ok(clients)
}

/// How one table's rows divide between clients.
#[derive(Debug, Clone, Serialize)]
pub struct TablePartition {
    pub table: String,
    /// `owned`, `shared` (referenced by clients' rows, belonging to none),
    /// or `firm` (neither: the firm's own settings).
    pub kind: &'static str,
    /// Every row of the table, counted on its own.
    pub total: u64,
    /// Rows that belong to exactly one client, per client key.
    pub exclusive: BTreeMap<String, u64>,
    /// Rows that belong to two clients or more (cross-client rows).
    pub cross_client: u64,
    /// Rows of an owned table that no route leads from to any client.
    pub unowned: u64,
}

impl TablePartition {
    /// Whether every row is accounted for exactly once.
    pub fn adds_up(&self) -> bool {
        let owned: u64 = self.exclusive.values().sum();
        match self.kind {
            "owned" => owned + self.cross_client + self.unowned == self.total,
            _ => true,
        }
    }
}

/// Every table of the database, its rows divided between clients: each
/// client's own, rows two clients share, and rows no client reaches. The
/// total is counted separately, so `adds_up` proves the division.
pub fn partition(db: &dyn Db, map: &TenantMap) -> Result<Vec<TablePartition>> {
    let count = |sql: &str| -> Result<u64> {
        Ok(match rows(db, sql, &[])?.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        })
    };
    let mut out = Vec::new();
    for t in db.tables()? {
        let total = count(&format!("SELECT count(*) FROM {}", ident(&t)))?;
        let Some(o) = map.owned(&t) else {
            out.push(TablePartition {
                kind: if map.shared(&t).is_some() {
                    "shared"
                } else {
                    "firm"
                },
                table: t,
                total,
                exclusive: BTreeMap::new(),
                cross_client: 0,
                unowned: 0,
            });
            continue;
        };
        // Client keys come as text: `min` over them works for every type.
        let (with, pairs, pk) = map.client_pairs_sql(db, &o.name);
        let pk = pk.join(", ");
        let pairs = format!("({pairs}) y");
        let mut exclusive = BTreeMap::new();
        for r in rows(
            db,
            &format!(
                "{with} SELECT ck, count(*) FROM (SELECT {pk}, min(ck) AS ck FROM {pairs} GROUP BY {pk} HAVING count(*) = 1) x GROUP BY ck"
            ),
            &[],
        )? {
            if let Value::Int(n) = r[1] {
                exclusive.insert(r[0].plain(), n as u64);
            }
        }
        let cross = count(&format!(
            "{with} SELECT count(*) FROM (SELECT {pk} FROM {pairs} GROUP BY {pk} HAVING count(*) > 1) x"
        ))?;
        let reached = count(&format!(
            "{with} SELECT count(*) FROM (SELECT DISTINCT {pk} FROM {pairs}) x"
        ))?;
        out.push(TablePartition {
            table: t,
            kind: "owned",
            total,
            exclusive,
            cross_client: cross,
            unowned: total.saturating_sub(reached),
        });
    }
    Ok(out)
}

/// Rows per owned table that belong to no client (cheaper than
/// [`partition`]: two counts per table).
pub fn unowned_rows(db: &dyn Db, map: &TenantMap) -> Result<Vec<(String, u64)>> {
    let count = |sql: &str| -> Result<u64> {
        Ok(match rows(db, sql, &[])?.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        })
    };
    let mut out = Vec::new();
    for o in &map.owned[1..] {
        // A row whose shortest route leads, row by row, to a client that
        // exists is that client's: it is reached along that route and is
        // at home there. Only the other rows (a NULL or dangling key on
        // the way) need the walk over every client, which reads every
        // table for every client; when there are none, nothing is unowned.
        if let Some(candidates) = map.homeless_sql(&o.name) {
            if count(&candidates)? == 0 {
                continue;
            }
        }
        let total = count(&format!("SELECT count(*) FROM {}", ident(&o.name)))?;
        let (with, pairs, pk) = map.client_pairs_sql(db, &o.name);
        let reached = count(&format!(
            "{with} SELECT count(*) FROM (SELECT DISTINCT {} FROM ({pairs}) y) x",
            pk.join(", ")
        ))?;
        if total > reached {
            out.push((o.name.clone(), total - reached));
        }
    }
    Ok(out)
}

/// One client's rows per owned table, counted the way export reads them.
pub fn client_row_counts(
    db: &dyn Db,
    map: &TenantMap,
    key: &Value,
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for o in &map.owned {
        let n = client_columns(db, map, o, key, &o.pk)?.rows.len() as u64;
        if n > 0 {
            out.insert(o.name.clone(), n);
        }
    }
    Ok(out)
}

/// Finds a client by key or by a name/code column value.
pub fn find_client(db: &dyn Db, map: &TenantMap, spec: &str) -> Result<(Value, String)> {
    let root = map.root();
    let key = map.root_key();
    let cols: Vec<String> = root.columns.iter().map(|c| c.name.clone()).collect();
    let select = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let ki = cols.iter().position(|c| *c == key).unwrap_or(0);
    // The key compared as text, whatever its type (an integer, a UUID):
    // engines with strict types (PostgreSQL) refuse to compare a uuid
    // column with a name, but every key casts to text.
    let found = rows(
        db,
        &format!(
            "SELECT {select} FROM {} WHERE CAST({} AS TEXT) = {}",
            ident(&root.name),
            ident(&key),
            db.param(1)
        ),
        &[Value::Text(spec.into())],
    )?;
    if let Some(r) = found.first() {
        return Ok((r[ki].clone(), label_of(&cols, r, &r[ki])));
    }
    // By a text column: name, code, …
    let mut matches = Vec::new();
    for col in root.columns.iter().filter(|c| {
        let t = c.decl_type.to_ascii_uppercase();
        t.contains("TEXT") || t.contains("CHAR") || t.contains("UUID")
    }) {
        for r in rows(
            db,
            &format!(
                "SELECT {select} FROM {} WHERE CAST({} AS TEXT) = {}",
                ident(&root.name),
                ident(&col.name),
                db.param(1)
            ),
            &[Value::Text(spec.into())],
        )? {
            if !matches.iter().any(|(k, _): &(Value, String)| *k == r[ki]) {
                matches.push((r[ki].clone(), label_of(&cols, &r, &r[ki])));
            }
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::NotFound(format!(
            "no client {spec:?} in {} (give its id, code or name; `client list` shows them)",
            root.name
        ))),
        n => Err(Error::NotFound(format!(
            "{spec:?} matches {n} clients; give the id"
        ))),
    }
}

/// Selects the rows of owned table `o` belonging to client `key`, ordered
/// by primary key.
fn client_rows(db: &dyn Db, map: &TenantMap, o: &map::Owned, key: &Value) -> Result<TableRows> {
    let cols: Vec<String> = o.columns.iter().map(|c| c.name.clone()).collect();
    client_columns(db, map, o, key, &cols)
}

/// SQL that names client parameter 1's rows of one owned table (alias
/// `t0`): `{with} SELECT … {from} WHERE {cond}`.
pub(crate) struct ClientScope {
    pub with: String,
    pub from: String,
    pub cond: String,
}

/// The rows of owned table `o` that belong to client parameter 1: reached
/// by some route, and at home with the client or homeless (see
/// [`TenantMap::home_sql`]).
///
/// A row at home with a client is always reached: its shortest route is
/// one of its routes, and every row along it is at home with the same
/// client. So when the table has no homeless row, the client's rows are
/// exactly those at home with it, found by joining along the shortest
/// route (an index on the way finds them) instead of walking every route
/// from the client table, which reads whole tables.
pub(crate) fn client_scope(db: &dyn Db, map: &TenantMap, o: &map::Owned) -> Result<ClientScope> {
    if let Some((from, home)) = settled_home(db, map, &o.name)? {
        return Ok(ClientScope {
            with: String::new(),
            from,
            cond: format!("{home} = {}", db.param(1)),
        });
    }
    let own = map.owned_rows_sql(db, &o.name, true);
    let (from, at_home) = map.at_home_sql(&o.name, &db.param(1));
    let cond = format!("{} AND {at_home}", own.contains(&o.pk));
    Ok(ClientScope {
        with: own.with,
        from,
        cond,
    })
}

/// `FROM` clause and home expression of `table` (see
/// [`TenantMap::home_sql`]) when it has a home route and no row without a
/// home: then each row belongs to its home client alone (see
/// [`client_scope`]). One read of the table in the worst case.
fn settled_home(db: &dyn Db, map: &TenantMap, table: &str) -> Result<Option<(String, String)>> {
    let (from, Some(home)) = map.home_sql(table) else {
        return Ok(None);
    };
    let homeless = rows(
        db,
        &format!("SELECT 1 {from} WHERE {home} IS NULL LIMIT 1"),
        &[],
    )?;
    Ok(homeless.is_empty().then_some((from, home)))
}

/// Like [`client_rows`], with only `cols` (a key check needs no text).
fn client_columns(
    db: &dyn Db,
    map: &TenantMap,
    o: &map::Owned,
    key: &Value,
    cols: &[String],
) -> Result<TableRows> {
    client_columns_in(db, o, &client_scope(db, map, o)?, key, cols)
}

/// As [`client_columns`], in a scope already worked out for `o`.
pub(crate) fn client_columns_in(
    db: &dyn Db,
    o: &map::Owned,
    scope: &ClientScope,
    key: &Value,
    cols: &[String],
) -> Result<TableRows> {
    let select = cols
        .iter()
        .map(|c| format!("t0.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let order =
        o.pk.iter()
            .map(|c| format!("t0.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
    let rs = rows(
        db,
        &format!(
            "{} SELECT {select} {} WHERE {} ORDER BY {order}",
            scope.with, scope.from, scope.cond
        ),
        std::slice::from_ref(key),
    )?;
    Ok(TableRows {
        table: o.name.clone(),
        columns: cols.to_vec(),
        rows: rs,
    })
}

/// The client owning row `value` of owned table `table` (by `column`).
fn owner_of(
    db: &dyn Db,
    map: &TenantMap,
    table: &str,
    column: &str,
    value: &Value,
) -> Result<Option<Value>> {
    // The home client along the shortest route; a row without one names
    // no client.
    let (from, Some(expr)) = map.home_sql(table) else {
        return Ok(None);
    };
    let r = rows(
        db,
        &format!(
            "SELECT {expr} {from} WHERE t0.{} = {} AND {expr} IS NOT NULL LIMIT 1",
            ident(column),
            db.param(1)
        ),
        std::slice::from_ref(value),
    )?;
    Ok(r.into_iter().next().and_then(|r| r.into_iter().next()))
}

/// Exports client `key` of `db`: every owned row inside one read snapshot,
/// the shared rows they point to, and every link that leaves the client.
pub fn export(db: &dyn Db, map: &TenantMap, key: &Value, engine: &str) -> Result<Archive> {
    db.begin_read()?;
    let r = export_in_snapshot(db, map, key, engine);
    let _ = db.rollback();
    r
}

fn export_in_snapshot(db: &dyn Db, map: &TenantMap, key: &Value, engine: &str) -> Result<Archive> {
    let mut tables = Vec::new();
    for o in &map.owned {
        tables.push(client_rows(db, map, o, key)?);
    }
    let root = &tables[0];
    let Some(root_row) = root.rows.first() else {
        return Err(Error::NotFound(format!(
            "no client {key} in {}",
            root.table
        )));
    };
    let label = label_of(&root.columns, root_row, key);
    // Values present per (table, column), to tell links inside the client
    // from links leaving it.
    let mut present: HashMap<(String, String), HashSet<Value>> = HashMap::new();
    let mut shared_refs: HashMap<(String, String), HashSet<Value>> = HashMap::new();
    let mut links = Vec::new();
    for k in &map.keys {
        let Some(t) = tables.iter().find(|t| t.table == k.table) else {
            continue;
        };
        let Some(ci) = t.col(&k.column) else { continue };
        // Every key is checked, the shortest route's too: a homeless row
        // (reached another way) may point outside the client with it.
        if let Some(target) = tables.iter().find(|x| x.table == k.ref_table) {
            let set = present
                .entry((k.ref_table.clone(), k.ref_column.clone()))
                .or_insert_with(|| {
                    let i = target.col(&k.ref_column).unwrap_or(0);
                    target.rows.iter().map(|r| r[i].clone()).collect()
                })
                .clone();
            let o = map.owned(&k.table).expect("owned");
            let pk_idx: Vec<usize> = o.pk.iter().filter_map(|c| t.col(c)).collect();
            for r in &t.rows {
                let v = &r[ci];
                if *v == Value::Null || set.contains(v) {
                    continue;
                }
                links.push(Link {
                    table: k.table.clone(),
                    row: pk_idx.iter().map(|&i| r[i].clone()).collect(),
                    column: k.column.clone(),
                    ref_table: k.ref_table.clone(),
                    value: v.clone(),
                    other_client: owner_of(db, map, &k.ref_table, &k.ref_column, v)?,
                });
            }
        } else if map.shared(&k.ref_table).is_some() {
            let e = shared_refs
                .entry((k.ref_table.clone(), k.ref_column.clone()))
                .or_default();
            for r in &t.rows {
                if r[ci] != Value::Null {
                    e.insert(r[ci].clone());
                }
            }
        }
    }
    let mut shared = Vec::new();
    let mut by_table: BTreeMap<String, Vec<(String, HashSet<Value>)>> = BTreeMap::new();
    for ((t, c), vals) in shared_refs {
        by_table.entry(t).or_default().push((c, vals));
    }
    for (t, refs) in by_table {
        let s = map.shared(&t).expect("shared");
        let cols: Vec<String> = s.columns.iter().map(|c| c.name.clone()).collect();
        let select = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (c, vals) in refs {
            let mut vals: Vec<Value> = vals.into_iter().collect();
            vals.sort_by_key(|v| v.to_string());
            for v in vals {
                for r in rows(
                    db,
                    &format!(
                        "SELECT {select} FROM {} WHERE {} = {}",
                        ident(&t),
                        ident(&c),
                        db.param(1)
                    ),
                    &[v],
                )? {
                    if seen.insert(r.clone()) {
                        out.push(r);
                    }
                }
            }
        }
        shared.push(TableRows {
            table: t,
            columns: cols,
            rows: out,
        });
    }
    let schema = map.schema();
    Ok(Archive {
        version: ARCHIVE_VERSION,
        engine: engine.into(),
        root: map.root().name.clone(),
        client: key.clone(),
        label,
        created: chrono::Utc::now(),
        fingerprint: fingerprint(&schema),
        schema,
        counts: tables
            .iter()
            .map(|t| (t.table.clone(), t.rows.len() as u64))
            .collect(),
        tables,
        shared,
        links,
    })
}

/// BLAKE3 of rows in their canonical encoding, in the order given.
pub fn digest_rows(rows: &[Vec<Value>]) -> String {
    let mut h = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(1 << 16);
    for r in rows {
        for v in r {
            v.encode(&mut buf);
        }
        if buf.len() >= 1 << 15 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_type_through_json() {
        let row = vec![
            Value::Null,
            Value::Int(i64::MIN),
            Value::Int(7),
            Value::Real(2.5),
            Value::Real(3.0),
            Value::Text("12".into()),
            Value::Blob(vec![0, 255, 7]),
        ];
        let json = serde_json::to_string(&row).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn archives_from_newer_versions_and_garbage_are_refused() {
        let e = Archive::decode(br#"{"version": 99}"#).unwrap_err();
        assert!(e.to_string().contains("newer ledgervault"), "{e}");
        assert!(Archive::decode(b"not json").is_err());
        assert!(Archive::decode(br#"{"version": 1, "tables": 5}"#).is_err());
        let e = serde_json::from_str::<Value>(r#"{"x": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown value object"), "{e}");
    }
}
