//! PostgreSQL behind the per-client layer's engine-neutral [`Db`] trait.
//!
//! Values travel as text both ways: parameters become quoted literals, which
//! PostgreSQL casts to the column's type (dates, numerics, booleans alike),
//! and results come back in text form, typed by the statement's column types.
//! So every column type round-trips, not only those with a binary codec.

use std::cell::RefCell;
use std::collections::HashMap;

use ledgervault_tenant::sql::{Column, CompositeKey, Db, ForeignKey, Value};
use ledgervault_tenant::{Error as TError, Result as TResult};
use postgres::types::Type;
use postgres::{Client, SimpleQueryMessage};

use crate::conn::{one_line, PgTarget};
use crate::ident;

/// A connection to one PostgreSQL database.
pub struct PgDb {
    client: RefCell<Client>,
    types: RefCell<HashMap<String, Vec<Type>>>,
    superuser: bool,
}

fn err(e: postgres::Error) -> TError {
    TError::Db(one_line(&e))
}

impl PgDb {
    pub fn connect(target: &PgTarget) -> crate::Result<PgDb> {
        let mut client = target.connect()?;
        let superuser = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false);
        Ok(PgDb {
            client: RefCell::new(client),
            types: RefCell::new(HashMap::new()),
            superuser,
        })
    }

    fn column_types(&self, sql: &str) -> TResult<Vec<Type>> {
        if let Some(t) = self.types.borrow().get(sql) {
            return Ok(t.clone());
        }
        let stmt = self.client.borrow_mut().prepare(sql).map_err(err)?;
        let t: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        self.types.borrow_mut().insert(sql.to_string(), t.clone());
        Ok(t)
    }

    fn simple(&self, sql: &str) -> TResult<Vec<SimpleQueryMessage>> {
        self.client.borrow_mut().simple_query(sql).map_err(err)
    }

    fn text_rows(&self, sql: &str, params: &[Value]) -> TResult<Vec<Vec<Option<String>>>> {
        let mut out = Vec::new();
        for m in self.simple(&bind(sql, params)?)? {
            if let SimpleQueryMessage::Row(r) = m {
                out.push((0..r.len()).map(|i| r.get(i).map(String::from)).collect());
            }
        }
        Ok(out)
    }

    fn strings(&self, sql: &str, params: &[Value]) -> TResult<Vec<Vec<String>>> {
        Ok(self
            .text_rows(sql, params)?
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }
}

/// Renders a value as an SQL literal that PostgreSQL casts to whatever the
/// context needs.
fn render(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => format!("'{i}'"),
        Value::Real(r) if r.is_nan() => "'NaN'".into(),
        Value::Real(r) if r.is_infinite() => if *r > 0.0 {
            "'Infinity'"
        } else {
            "'-Infinity'"
        }
        .into(),
        Value::Real(r) => format!("'{r:?}'"),
        Value::Text(t) => crate::literal(t),
        Value::Blob(b) => format!("'\\x{}'::bytea", hex::encode(b)),
    }
}

/// Replaces `$N` placeholders outside quotes with literals.
fn bind(sql: &str, params: &[Value]) -> TResult<String> {
    if params.is_empty() {
        return Ok(sql.to_string());
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16 * params.len());
    let mut i = 0;
    let mut start = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'$' if i + 1 < b.len() && b[i + 1].is_ascii_digit() => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let n: usize = sql[i + 1..j].parse().unwrap_or(0);
                let v = params
                    .get(n.wrapping_sub(1))
                    .ok_or_else(|| TError::Db(format!("placeholder ${n} has no parameter")))?;
                out.push_str(&sql[start..i]);
                out.push_str(&render(v));
                i = j;
                start = j;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[start.min(sql.len())..]);
    Ok(out)
}

/// Reads a text-form result as the value the per-client layer expects.
fn parse(t: &Type, s: Option<String>) -> Value {
    let Some(s) = s else { return Value::Null };
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
            s.parse().map(Value::Int).unwrap_or(Value::Text(s))
        }
        Type::FLOAT4 | Type::FLOAT8 => s.parse().map(Value::Real).unwrap_or(Value::Text(s)),
        Type::BOOL => Value::Int((s == "t") as i64),
        Type::BYTEA => match s.strip_prefix("\\x").and_then(|h| hex::decode(h).ok()) {
            Some(b) => Value::Blob(b),
            None => Value::Text(s),
        },
        _ => Value::Text(s),
    }
}

const IN_PATH: &str = "n.nspname = ANY (current_schemas(false))";

impl Db for PgDb {
    fn param(&self, i: usize) -> String {
        format!("${i}")
    }

    fn same_as(&self) -> &'static str {
        "IS NOT DISTINCT FROM"
    }

    fn tables(&self) -> TResult<Vec<String>> {
        let mut v: Vec<String> = self
            .strings(
                &format!(
                    "SELECT DISTINCT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {IN_PATH}"
                ),
                &[],
            )?
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        v.sort();
        Ok(v)
    }

    fn columns(&self, table: &str) -> TResult<Vec<Column>> {
        let rows = self.strings(
            "SELECT a.attname, upper(format_type(a.atttypid, a.atttypmod)), a.attnotnull::int, \
                    coalesce((SELECT k.pos FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) WHERE k.attnum = a.attnum), 0), \
                    (a.atthasdef OR a.attidentity <> '')::int \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE c.relname = $1 AND n.nspname = ANY (current_schemas(false)) \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[Value::Text(table.into())],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| Column {
                name: r[0].clone(),
                decl_type: r[1].clone(),
                not_null: r[2] == "1",
                pk: r[3].parse().unwrap_or(0),
                has_default: r[4] == "1",
            })
            .collect())
    }

    fn composite_keys(&self, table: &str) -> TResult<Vec<CompositeKey>> {
        let rows = self.strings(
            "SELECT k.conname, pc.relname, a.attname, pa.attname \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_class pc ON pc.oid = k.confrelid \
             CROSS JOIN LATERAL unnest(k.conkey, k.confkey) WITH ORDINALITY AS u(attnum, refnum, pos) \
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum \
             JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.refnum \
             WHERE k.contype = 'f' AND cardinality(k.conkey) > 1 \
               AND c.relname = $1 AND n.nspname = ANY (current_schemas(false)) \
             ORDER BY k.conname, u.pos",
            &[Value::Text(table.into())],
        )?;
        let mut out: Vec<(String, CompositeKey)> = Vec::new();
        for r in rows {
            match out.last_mut() {
                Some((name, k)) if *name == r[0] => {
                    k.columns.push(r[2].clone());
                    k.ref_columns.push(r[3].clone());
                }
                _ => out.push((
                    r[0].clone(),
                    CompositeKey {
                        table: table.into(),
                        columns: vec![r[2].clone()],
                        ref_table: r[1].clone(),
                        ref_columns: vec![r[3].clone()],
                    },
                )),
            }
        }
        Ok(out.into_iter().map(|(_, k)| k).collect())
    }

    fn foreign_keys(&self, table: &str) -> TResult<Vec<ForeignKey>> {
        let rows = self.strings(
            "SELECT a.attname, pc.relname, pa.attname \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_class pc ON pc.oid = k.confrelid \
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] \
             JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1] \
             WHERE k.contype = 'f' AND cardinality(k.conkey) = 1 \
               AND c.relname = $1 AND n.nspname = ANY (current_schemas(false)) \
             ORDER BY k.conname",
            &[Value::Text(table.into())],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| ForeignKey {
                table: table.to_string(),
                column: r[0].clone(),
                ref_table: r[1].clone(),
                ref_column: r[2].clone(),
                is_virtual: false,
                part_of: None,
            })
            .collect())
    }

    fn unique_keys(&self, table: &str) -> TResult<Vec<Vec<String>>> {
        let rows = self.strings(
            "SELECT i.indexrelid::text, a.attname \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL \
               AND i.indexprs IS NULL \
               AND c.relname = $1 AND n.nspname = ANY (current_schemas(false)) \
             ORDER BY i.indexrelid, k.pos",
            &[Value::Text(table.into())],
        )?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in rows {
            match out.last_mut() {
                Some((id, cols)) if *id == r[0] => cols.push(r[1].clone()),
                _ => out.push((r[0].clone(), vec![r[1].clone()])),
            }
        }
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    fn query(
        &self,
        sql: &str,
        params: &[Value],
        row: &mut dyn FnMut(Vec<Value>) -> TResult<()>,
    ) -> TResult<()> {
        let types = self.column_types(sql)?;
        for r in self.text_rows(sql, params)? {
            let v = r
                .into_iter()
                .enumerate()
                .map(|(i, s)| parse(types.get(i).unwrap_or(&Type::TEXT), s))
                .collect();
            row(v)?;
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: &[Value]) -> TResult<u64> {
        let mut n = 0;
        for m in self.simple(&bind(sql, params)?)? {
            if let SimpleQueryMessage::CommandComplete(c) = m {
                n += c;
            }
        }
        Ok(n)
    }

    fn indexed_columns(&self, table: &str) -> TResult<Vec<String>> {
        Ok(self
            .strings(
                "SELECT DISTINCT a.attname FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
                 WHERE c.relname = $1 AND n.nspname = ANY (current_schemas(false))",
                &[Value::Text(table.into())],
            )?
            .into_iter()
            .map(|r| r[0].clone())
            .collect())
    }

    fn begin_write(&self) -> TResult<()> {
        self.simple("BEGIN")?;
        // Deferrable constraints wait for the commit, so rows that point at
        // each other in a cycle can go in one by one. A superuser can also
        // turn off the non-deferrable ones, as SQLite's import does; the
        // import checks every key it touches before it commits either way.
        if self.superuser {
            self.simple("SET LOCAL session_replication_role = replica")?;
        }
        self.simple("SET CONSTRAINTS ALL DEFERRED")?;
        Ok(())
    }

    fn begin_read(&self) -> TResult<()> {
        self.simple("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        self.simple("SELECT 1")?;
        Ok(())
    }

    fn commit(&self) -> TResult<()> {
        self.simple("COMMIT").map(|_| ())
    }

    fn rollback(&self) -> TResult<()> {
        self.simple("ROLLBACK").map(|_| ())
    }

    fn fk_violations(&self) -> TResult<Vec<(String, Value, String)>> {
        let mut out = Vec::new();
        for t in self.tables()? {
            let pk = self
                .columns(&t)?
                .into_iter()
                .find(|c| c.pk == 1)
                .map(|c| c.name);
            for fk in self.foreign_keys(&t)? {
                let key = pk.as_deref().map(ident).unwrap_or_else(|| "ctid".into());
                let sql = format!(
                    "SELECT c.{key} FROM {t} c WHERE c.{col} IS NOT NULL AND NOT EXISTS \
                     (SELECT 1 FROM {rt} p WHERE p.{rc} = c.{col})",
                    t = ident(&t),
                    col = ident(&fk.column),
                    rt = ident(&fk.ref_table),
                    rc = ident(&fk.ref_column),
                );
                self.query(&sql, &[], &mut |r| {
                    out.push((
                        t.clone(),
                        r.into_iter().next().unwrap_or(Value::Null),
                        fk.ref_table.clone(),
                    ));
                    Ok(())
                })?;
            }
            // Keys of several columns hold when any column is NULL (MATCH
            // SIMPLE, the default) or a row has all the values.
            for fk in self.composite_keys(&t)? {
                let key = pk.as_deref().map(ident).unwrap_or_else(|| "ctid".into());
                let all_set = fk
                    .columns
                    .iter()
                    .map(|c| format!("c.{} IS NOT NULL", ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let same = fk
                    .columns
                    .iter()
                    .zip(&fk.ref_columns)
                    .map(|(c, r)| format!("p.{} = c.{}", ident(r), ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let sql = format!(
                    "SELECT c.{key} FROM {t} c WHERE {all_set} AND NOT EXISTS \
                     (SELECT 1 FROM {rt} p WHERE {same})",
                    t = ident(&t),
                    rt = ident(&fk.ref_table),
                );
                self.query(&sql, &[], &mut |r| {
                    out.push((
                        t.clone(),
                        r.into_iter().next().unwrap_or(Value::Null),
                        fk.ref_table.clone(),
                    ));
                    Ok(())
                })?;
            }
        }
        Ok(out)
    }

    fn raise_counter(&self, table: &str, max: i64) -> TResult<()> {
        for c in self.columns(table)?.into_iter().filter(|c| c.pk == 1) {
            let seq = self.strings(
                "SELECT coalesce(pg_get_serial_sequence($1, $2), '')",
                &[Value::Text(ident(table)), Value::Text(c.name.clone())],
            )?;
            let Some(seq) = seq.first().map(|r| r[0].clone()).filter(|s| !s.is_empty()) else {
                continue;
            };
            self.execute(
                &format!(
                    "SELECT setval($1, greatest($2::bigint, (SELECT last_value FROM {})))",
                    seq
                ),
                &[Value::Text(seq.clone()), Value::Int(max)],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_outside_quotes() {
        let sql = "SELECT '$1', \"$2\" FROM t WHERE a = $1 AND b IN ($2, $10)";
        let mut p = vec![Value::Int(-5), Value::Text("it's".into())];
        p.extend((3..=10).map(Value::Int));
        assert_eq!(
            bind(sql, &p).unwrap(),
            "SELECT '$1', \"$2\" FROM t WHERE a = '-5' AND b IN ('it''s', '10')"
        );
        assert!(bind("SELECT $3", &p[..1]).is_err());
        assert_eq!(render(&Value::Blob(vec![0, 255])), "'\\x00ff'::bytea");
        assert_eq!(render(&Value::Null), "NULL");
        assert_eq!(parse(&Type::INT8, Some("42".into())), Value::Int(42));
        assert_eq!(
            parse(&Type::NUMERIC, Some("1.50".into())),
            Value::Text("1.50".into())
        );
        assert_eq!(parse(&Type::BOOL, Some("t".into())), Value::Int(1));
        assert_eq!(parse(&Type::TEXT, None), Value::Null);
    }
}
