//! The engine-neutral SQL layer: values, schema introspection and queries.
//!
//! The tenant logic speaks only to [`Db`]. SQLite implements it here;
//! PostgreSQL implements the same trait in its own issue. SQL the tenant
//! logic writes is plain: quoted identifiers, `=`/`IN` predicates, joins,
//! with placeholders from [`Db::param`].

use std::hash::{Hash, Hasher};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Null => 0u8.hash(h),
            Value::Int(i) => (1u8, i).hash(h),
            Value::Real(r) => (2u8, r.to_bits()).hash(h),
            Value::Text(t) => (3u8, t).hash(h),
            Value::Blob(b) => (4u8, b).hash(h),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Blob(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

impl Value {
    /// The value as plain text: text as it is, anything else as displayed.
    pub fn plain(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            other => other.to_string(),
        }
    }

    /// Appends the value's canonical encoding (as in table digests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Real(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

// JSON form: null, integers as numbers, text as strings, reals as
// {"f": x} and blobs as {"b": "hex"}, so no value changes type on the way.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Value::Null => s.serialize_none(),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Text(t) => s.serialize_str(t),
            Value::Real(r) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("f", r)?;
                m.end()
            }
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b", &hex::encode(b))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        Ok(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| D::Error::custom("integer out of range"))?,
            ),
            serde_json::Value::String(s) => Value::Text(s),
            serde_json::Value::Object(m) => match (m.get("f"), m.get("b")) {
                (Some(f), None) => Value::Real(
                    f.as_f64()
                        .ok_or_else(|| D::Error::custom("bad real value"))?,
                ),
                (None, Some(serde_json::Value::String(b))) => {
                    Value::Blob(hex::decode(b).map_err(D::Error::custom)?)
                }
                _ => return Err(D::Error::custom("unknown value object")),
            },
            _ => return Err(D::Error::custom("unsupported value")),
        })
    }
}

/// A column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Declared type, upper-cased.
    pub decl_type: String,
    pub not_null: bool,
    /// Position in the primary key (1-based), 0 when not part of it.
    pub pk: u32,
    pub has_default: bool,
}

/// A single-column foreign key (composite keys are not followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub table: String,
    pub column: String,
    pub ref_table: String,
    pub ref_column: String,
    /// Declared in the config, not in the schema.
    #[serde(default)]
    pub is_virtual: bool,
    /// Implied by a key of several columns, which this column is part of
    /// (named as `table(columns)`): see `TenantMap::build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
}

/// A foreign key of several columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeKey {
    pub table: String,
    pub columns: Vec<String>,
    pub ref_table: String,
    /// The referenced columns, in the order of `columns`.
    pub ref_columns: Vec<String>,
}

impl CompositeKey {
    /// `table(a, b)`, as messages name it.
    pub fn name(&self) -> String {
        format!("{}({})", self.table, self.columns.join(", "))
    }
}

/// What the tenant logic needs from a database engine.
pub trait Db {
    /// Placeholder for the `i`th parameter (1-based): `?i` or `$i`.
    fn param(&self, i: usize) -> String;
    /// The comparison operator under which NULL equals NULL: SQLite's `IS`,
    /// standard SQL's `IS NOT DISTINCT FROM`.
    fn same_as(&self) -> &'static str {
        "IS"
    }
    /// User tables, sorted by name.
    fn tables(&self) -> Result<Vec<String>>;
    fn columns(&self, table: &str) -> Result<Vec<Column>>;
    fn foreign_keys(&self, table: &str) -> Result<Vec<ForeignKey>>;
    /// Column sets with a UNIQUE constraint (primary key excluded).
    fn unique_keys(&self, table: &str) -> Result<Vec<Vec<String>>>;
    /// Foreign keys of several columns.
    fn composite_keys(&self, _table: &str) -> Result<Vec<CompositeKey>> {
        Ok(Vec::new())
    }
    /// Runs a query, calling `row` for each result row.
    fn query(
        &self,
        sql: &str,
        params: &[Value],
        row: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()>;
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Columns that lead some index (so lookups by them are cheap).
    fn indexed_columns(&self, table: &str) -> Result<Vec<String>>;
    /// Starts a transaction that writes (takes the write lock now). The
    /// engine's own foreign-key enforcement is off inside it (deleting a
    /// parent row would otherwise scan every unindexed child table): the
    /// import checks every key it touches itself before it commits.
    fn begin_write(&self) -> Result<()>;
    /// Starts a transaction that only reads, pinned to one snapshot.
    fn begin_read(&self) -> Result<()>;
    fn commit(&self) -> Result<()>;
    fn rollback(&self) -> Result<()>;
    /// Foreign-key violations as (table, row key, referenced table).
    fn fk_violations(&self) -> Result<Vec<(String, Value, String)>>;
    /// Moves the table's id counter up to at least `max` (never down).
    fn raise_counter(&self, table: &str, max: i64) -> Result<()>;
}

/// Quotes an identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Runs a query and collects the rows.
pub fn rows(db: &dyn Db, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
    let mut out = Vec::new();
    db.query(sql, params, &mut |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// SQLite through rusqlite.
pub struct Sqlite {
    pub conn: Connection,
    /// Whether foreign-key enforcement was on before `begin_write`.
    fk_was_on: std::cell::Cell<bool>,
}

impl Sqlite {
    /// Opens for export: read-only.
    pub fn open_read(path: &std::path::Path) -> Result<Sqlite> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        Ok(Sqlite::from(conn))
    }

    /// Opens for import: read-write, foreign keys checked at commit.
    pub fn open_write(path: &std::path::Path) -> Result<Sqlite> {
        if !path.is_file() {
            return Err(Error::Db(format!("{}: no such database", path.display())));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Db(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        // A client's rows land all over the firm's indexes: a page cache
        // that holds them saves re-reading the same pages many times.
        conn.execute_batch("PRAGMA cache_size = -262144")
            .map_err(sql)?;
        Ok(Sqlite::from(conn))
    }

    fn restore_fk(&self) -> Result<()> {
        if self.fk_was_on.get() {
            self.conn
                .execute_batch("PRAGMA foreign_keys = ON")
                .map_err(sql)?;
        }
        Ok(())
    }
}

impl From<Connection> for Sqlite {
    fn from(conn: Connection) -> Sqlite {
        Sqlite {
            conn,
            fk_was_on: std::cell::Cell::new(false),
        }
    }
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Db(e.to_string())
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn from_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl Db for Sqlite {
    fn param(&self, i: usize) -> String {
        format!("?{i}")
    }

    fn tables(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.query(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            &[],
            &mut |r| {
                if let Some(Value::Text(t)) = r.into_iter().next() {
                    out.push(t);
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn columns(&self, table: &str) -> Result<Vec<Column>> {
        let mut out = Vec::new();
        self.query(
            "SELECT name, upper(type), \"notnull\", pk, dflt_value IS NOT NULL FROM pragma_table_info(?1)",
            &[Value::Text(table.into())],
            &mut |r| {
                let int = |v: &Value| matches!(v, Value::Int(i) if *i != 0);
                let text = |v: &Value| match v {
                    Value::Text(t) => t.clone(),
                    _ => String::new(),
                };
                out.push(Column {
                    name: text(&r[0]),
                    decl_type: text(&r[1]),
                    not_null: int(&r[2]),
                    pk: match r[3] {
                        Value::Int(i) => i as u32,
                        _ => 0,
                    },
                    has_default: int(&r[4]),
                });
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn composite_keys(&self, table: &str) -> Result<Vec<CompositeKey>> {
        let rs = rows(
            self,
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
            &[Value::Text(table.into())],
        )?;
        let mut out: Vec<(Value, CompositeKey)> = Vec::new();
        for r in rs {
            // A key without its columns has NULL for them (the referenced
            // table's primary key, found below).
            let t = |v: &Value| match v {
                Value::Null => String::new(),
                v => v.plain(),
            };
            match out.last_mut() {
                Some((id, k)) if *id == r[0] => {
                    k.columns.push(t(&r[2]));
                    k.ref_columns.push(t(&r[3]));
                }
                _ => out.push((
                    r[0].clone(),
                    CompositeKey {
                        table: table.into(),
                        columns: vec![t(&r[2])],
                        ref_table: t(&r[1]),
                        ref_columns: vec![t(&r[3])],
                    },
                )),
            }
        }
        let mut keys = Vec::new();
        for (_, mut k) in out.into_iter().filter(|(_, k)| k.columns.len() > 1) {
            if k.ref_columns.iter().all(|c| c.is_empty()) {
                // REFERENCES t without columns: its primary key, in order.
                let mut pk: Vec<Column> = self
                    .columns(&k.ref_table)?
                    .into_iter()
                    .filter(|c| c.pk > 0)
                    .collect();
                pk.sort_by_key(|c| c.pk);
                k.ref_columns = pk.into_iter().map(|c| c.name).collect();
            }
            if k.ref_columns.len() == k.columns.len() {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    fn foreign_keys(&self, table: &str) -> Result<Vec<ForeignKey>> {
        // (id, seq, table, from, to); composite keys have several seqs.
        let rs = rows(
            self,
            "SELECT id, seq, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
            &[Value::Text(table.into())],
        )?;
        let mut out = Vec::new();
        let count = |id: &Value| rs.iter().filter(|r| &r[0] == id).count();
        for r in &rs {
            if count(&r[0]) != 1 {
                continue;
            }
            let t = |v: &Value| match v {
                Value::Text(t) => t.clone(),
                _ => String::new(),
            };
            let ref_table = t(&r[2]);
            let mut ref_column = t(&r[4]);
            if ref_column.is_empty() {
                // REFERENCES t without a column: its primary key.
                ref_column = self
                    .columns(&ref_table)?
                    .into_iter()
                    .find(|c| c.pk == 1)
                    .map(|c| c.name)
                    .unwrap_or_else(|| "rowid".into());
            }
            out.push(ForeignKey {
                table: table.into(),
                column: t(&r[3]),
                ref_table,
                ref_column,
                is_virtual: false,
                part_of: None,
            });
        }
        Ok(out)
    }

    fn unique_keys(&self, table: &str) -> Result<Vec<Vec<String>>> {
        // Partial indexes are unique only where their condition holds, and
        // an expression's column has no name: neither is a plain unique
        // column set, so neither is listed.
        let idx = rows(
            self,
            "SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND origin != 'pk' AND partial = 0 ORDER BY name",
            &[Value::Text(table.into())],
        )?;
        let mut out = Vec::new();
        for i in idx {
            let Value::Text(name) = &i[0] else { continue };
            let cols: Vec<Option<String>> = rows(
                self,
                "SELECT name FROM pragma_index_info(?1) ORDER BY seqno",
                &[Value::Text(name.clone())],
            )?
            .into_iter()
            .map(|r| match r.into_iter().next() {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            })
            .collect();
            if !cols.is_empty() && cols.iter().all(Option::is_some) {
                out.push(cols.into_iter().flatten().collect());
            }
        }
        Ok(out)
    }

    fn query(
        &self,
        sql_text: &str,
        params: &[Value],
        row: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql_text).map_err(sql)?;
        let n = stmt.column_count();
        let p: Vec<&dyn ToSql> = params.iter().map(|v| v as &dyn ToSql).collect();
        let mut rs = stmt.query(p.as_slice()).map_err(sql)?;
        while let Some(r) = rs.next().map_err(sql)? {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(from_ref(r.get_ref(i).map_err(sql)?));
            }
            row(v)?;
        }
        Ok(())
    }

    fn execute(&self, sql_text: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached(sql_text).map_err(sql)?;
        let p: Vec<&dyn ToSql> = params.iter().map(|v| v as &dyn ToSql).collect();
        Ok(stmt.execute(p.as_slice()).map_err(sql)? as u64)
    }

    fn indexed_columns(&self, table: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .columns(table)?
            .into_iter()
            .filter(|c| c.pk == 1)
            .map(|c| c.name)
            .collect();
        for i in rows(
            self,
            "SELECT name FROM pragma_index_list(?1)",
            &[Value::Text(table.into())],
        )? {
            let Value::Text(name) = &i[0] else { continue };
            if let Some(Value::Text(c)) = rows(
                self,
                "SELECT name FROM pragma_index_info(?1) WHERE seqno = 0",
                &[Value::Text(name.clone())],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn begin_write(&self) -> Result<()> {
        let on = matches!(
            rows(self, "PRAGMA foreign_keys", &[])?
                .first()
                .and_then(|r| r.first()),
            Some(Value::Int(1))
        );
        self.fk_was_on.set(on);
        // The pragma is a no-op inside a transaction, so it comes first.
        self.conn
            .execute_batch("PRAGMA foreign_keys = OFF; BEGIN IMMEDIATE;")
            .map_err(sql)
    }

    fn begin_read(&self) -> Result<()> {
        // A deferred transaction is pinned to a snapshot at its first read.
        self.conn
            .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
            .map_err(sql)
    }

    fn commit(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(sql)?;
        self.restore_fk()
    }

    fn rollback(&self) -> Result<()> {
        let r = self.conn.execute_batch("ROLLBACK").map_err(sql);
        self.restore_fk()?;
        r
    }

    fn fk_violations(&self) -> Result<Vec<(String, Value, String)>> {
        Ok(rows(self, "PRAGMA foreign_key_check", &[])?
            .into_iter()
            .map(|r| {
                let t = |v: &Value| match v {
                    Value::Text(t) => t.clone(),
                    _ => String::new(),
                };
                (t(&r[0]), r[1].clone(), t(&r[2]))
            })
            .collect())
    }

    fn raise_counter(&self, table: &str, max: i64) -> Result<()> {
        // Only AUTOINCREMENT tables keep a counter; others use max(rowid)+1.
        let has_seq = !rows(
            self,
            "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            &[],
        )?
        .is_empty();
        if has_seq {
            self.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = ?2",
                &[Value::Int(max), Value::Text(table.into())],
            )?;
        }
        Ok(())
    }
}
