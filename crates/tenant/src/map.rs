//! The tenant map: which tables belong to a client, how, and which are
//! shared between clients.
//!
//! The root table (one row per client) is configured, or detected as the
//! table named `clients` or `client`. A table is *owned* when a foreign key
//! leads from it to the root or to another owned table; the key that leads
//! there by the shortest path is its ownership key, and every row reached
//! through ownership keys from a client's root row belongs to that client.
//! Other keys of owned rows are links: to rows of the same client (fine), to
//! rows of another client (cross-client links, recorded and handled by
//! policy), or to *shared* tables (staff, tax rates), which are matched in
//! the target by a natural key.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::sql::{ident, Column, Db, ForeignKey};
use crate::{Error, Result};

/// What to do with a link from a client's row to another client's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkPolicy {
    /// Refuse the import (the default).
    #[default]
    Fail,
    /// Keep the value when the target database has the row it points to.
    Keep,
    /// Set the column to NULL.
    Nullify,
}

/// What to do when a shared row (a staff member, a tax rate) is missing in
/// the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissingShared {
    /// Insert it (the default).
    #[default]
    Create,
    /// Refuse the import.
    Fail,
}

/// Settings for one database's tenant map (the `[client]` config section).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The table with one row per client (default: `clients` or `client`).
    pub root: Option<String>,
    /// Natural keys of shared tables: table → columns. Tables with a UNIQUE
    /// constraint use it when none is declared.
    #[serde(default)]
    pub natural_keys: BTreeMap<String, Vec<String>>,
    /// Foreign keys the schema does not declare: `"table.column" =
    /// "other_table.column"`.
    #[serde(default)]
    pub virtual_keys: BTreeMap<String, String>,
    /// Policy per cross-client link column, `"table.column" = "keep"`.
    #[serde(default)]
    pub links: BTreeMap<String, LinkPolicy>,
    /// Policy for every other cross-client link.
    #[serde(default)]
    pub default_link: LinkPolicy,
    #[serde(default)]
    pub missing_shared: MissingShared,
}

impl TenantConfig {
    pub fn link_policy(&self, table: &str, column: &str) -> LinkPolicy {
        self.links
            .get(&format!("{table}.{column}"))
            .copied()
            .unwrap_or(self.default_link)
    }
}

/// A table that belongs to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owned {
    pub name: String,
    /// 0 for the root.
    pub depth: u32,
    /// The key leading towards the root (none for the root).
    pub owner: Option<ForeignKey>,
    pub columns: Vec<Column>,
    /// The single integer primary key column, when the table has one; its
    /// values can be remapped.
    pub int_pk: Option<String>,
    /// Primary key columns (or `rowid`).
    pub pk: Vec<String>,
}

/// A table shared by clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    pub name: String,
    pub columns: Vec<Column>,
    pub int_pk: Option<String>,
    pub natural_key: Option<Vec<String>>,
}

/// The tenant map of one database.
#[derive(Debug, Clone)]
pub struct TenantMap {
    /// Owned tables, root first, parents before children.
    pub owned: Vec<Owned>,
    pub shared: Vec<Shared>,
    /// Every single-column foreign key, declared and virtual.
    pub keys: Vec<ForeignKey>,
}

fn int_pk(cols: &[Column]) -> Option<String> {
    let pks: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
    match pks.as_slice() {
        // SQLite's INTEGER/INT…, PostgreSQL's integer, bigint, smallint.
        [c] if c.decl_type.starts_with("INT")
            || c.decl_type == "BIGINT"
            || c.decl_type == "SMALLINT" =>
        {
            Some(c.name.clone())
        }
        _ => None,
    }
}

fn pk_columns(cols: &[Column]) -> Vec<String> {
    let mut pks: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
    pks.sort_by_key(|c| c.pk);
    if pks.is_empty() {
        vec!["rowid".into()]
    } else {
        pks.into_iter().map(|c| c.name.clone()).collect()
    }
}

impl TenantMap {
    /// Builds the map of `db` under `config`.
    pub fn build(db: &dyn Db, config: &TenantConfig) -> Result<TenantMap> {
        let tables = db.tables()?;
        let root = match &config.root {
            Some(r) if tables.contains(r) => r.clone(),
            Some(r) => {
                return Err(Error::Schema(format!(
                    "the configured client table {r:?} does not exist"
                )))
            }
            None => ["clients", "client"]
                .iter()
                .find(|t| tables.iter().any(|x| x == *t))
                .map(|t| t.to_string())
                .ok_or_else(|| {
                    Error::Schema(
                        "no client table found (looked for `clients` and `client`); set `root` in the [client] section of the config".into(),
                    )
                })?,
        };
        let mut columns: HashMap<String, Vec<Column>> = HashMap::new();
        let mut indexed: HashMap<String, Vec<String>> = HashMap::new();
        let mut keys = Vec::new();
        for t in &tables {
            columns.insert(t.clone(), db.columns(t)?);
            indexed.insert(t.clone(), db.indexed_columns(t)?);
            keys.extend(db.foreign_keys(t)?);
        }
        for (from, to) in &config.virtual_keys {
            let parse = |s: &str| -> Result<(String, String)> {
                let (t, c) = s.split_once('.').ok_or_else(|| {
                    Error::Schema(format!("virtual key {s:?} must be table.column"))
                })?;
                let known = columns
                    .get(t)
                    .is_some_and(|cols| cols.iter().any(|x| x.name == c));
                if !known {
                    return Err(Error::Schema(format!(
                        "virtual key {s:?}: no such table and column"
                    )));
                }
                Ok((t.into(), c.into()))
            };
            let ((t, c), (rt, rc)) = (parse(from)?, parse(to)?);
            keys.push(ForeignKey {
                table: t,
                column: c,
                ref_table: rt,
                ref_column: rc,
                is_virtual: true,
            });
        }

        // Breadth first from the root: each level owns the tables with a key
        // into the levels before it.
        let mut owned: Vec<Owned> = vec![Owned {
            name: root.clone(),
            depth: 0,
            owner: None,
            int_pk: int_pk(&columns[&root]),
            pk: pk_columns(&columns[&root]),
            columns: columns[&root].clone(),
        }];
        let mut depth = 0;
        loop {
            depth += 1;
            let known: Vec<String> = owned.iter().map(|o| o.name.clone()).collect();
            let mut level = Vec::new();
            for t in &tables {
                if known.contains(t) {
                    continue;
                }
                // Among keys into the previous level, an indexed one makes
                // "this client's rows" a lookup instead of a scan.
                let candidates: Vec<&ForeignKey> = keys
                    .iter()
                    .filter(|k| {
                        &k.table == t
                            && owned
                                .iter()
                                .any(|o| o.name == k.ref_table && o.depth == depth - 1)
                    })
                    .collect();
                let owner = candidates
                    .iter()
                    .find(|k| indexed[t].contains(&k.column))
                    .or(candidates.first())
                    .copied();
                if let Some(k) = owner {
                    level.push(Owned {
                        name: t.clone(),
                        depth,
                        owner: Some(k.clone()),
                        int_pk: int_pk(&columns[t]),
                        pk: pk_columns(&columns[t]),
                        columns: columns[t].clone(),
                    });
                }
            }
            if level.is_empty() {
                break;
            }
            owned.extend(level);
        }
        let owned_names: Vec<&str> = owned.iter().map(|o| o.name.as_str()).collect();
        let mut shared = Vec::new();
        for t in &tables {
            if owned_names.contains(&t.as_str()) {
                continue;
            }
            let referenced = keys
                .iter()
                .any(|k| &k.ref_table == t && owned_names.contains(&k.table.as_str()));
            if !referenced {
                continue;
            }
            let natural_key = match config.natural_keys.get(t) {
                Some(k) => Some(k.clone()),
                None => db.unique_keys(t)?.into_iter().next(),
            };
            shared.push(Shared {
                name: t.clone(),
                int_pk: int_pk(&columns[t]),
                natural_key,
                columns: columns[t].clone(),
            });
        }
        Ok(TenantMap {
            owned,
            shared,
            keys,
        })
    }

    pub fn root(&self) -> &Owned {
        &self.owned[0]
    }

    pub fn owned(&self, name: &str) -> Option<&Owned> {
        self.owned.iter().find(|o| o.name == name)
    }

    pub fn shared(&self, name: &str) -> Option<&Shared> {
        self.shared.iter().find(|s| s.name == name)
    }

    /// The ownership path of `table` up to the root, as owned tables
    /// (the table itself first).
    fn path(&self, table: &str) -> Vec<&Owned> {
        let mut out = Vec::new();
        let mut cur = self.owned(table);
        while let Some(o) = cur {
            out.push(o);
            cur = o.owner.as_ref().and_then(|k| self.owned(&k.ref_table));
        }
        out
    }

    /// `FROM` and `WHERE` clauses selecting `table`'s rows (alias `t0`)
    /// that belong to the client whose root key is parameter 1, and the
    /// expression of the root key of each row.
    pub fn ownership_sql(&self, db: &dyn Db, table: &str) -> (String, String) {
        let path = self.path(table);
        if path.len() == 1 {
            let root = self.root();
            let key = root.int_pk.clone().unwrap_or_else(|| root.pk[0].clone());
            let expr = format!("t0.{}", ident(&key));
            return (
                format!("FROM {} t0 WHERE {expr} = {}", ident(table), db.param(1)),
                expr,
            );
        }
        let mut from = format!("FROM {} t0", ident(table));
        // Join each step's parent, up to (not including) the root.
        for (i, step) in path[..path.len() - 2].iter().enumerate() {
            let k = step.owner.as_ref().expect("non-root tables have an owner");
            from.push_str(&format!(
                " JOIN {} t{} ON t{i}.{} = t{}.{}",
                ident(&k.ref_table),
                i + 1,
                ident(&k.column),
                i + 1,
                ident(&k.ref_column)
            ));
        }
        let last = path.len() - 2;
        let k = path[last].owner.as_ref().expect("owner");
        let expr = format!("t{last}.{}", ident(&k.column));
        (format!("{from} WHERE {expr} = {}", db.param(1)), expr)
    }

    /// Canonical description of the tables a client archive touches, for
    /// fingerprints and schema comparison.
    pub fn schema(&self) -> Vec<TableSchema> {
        self.owned
            .iter()
            .map(|o| TableSchema::of(&o.name, &o.columns))
            .chain(
                self.shared
                    .iter()
                    .map(|s| TableSchema::of(&s.name, &s.columns)),
            )
            .collect()
    }
}

/// A table's columns, as archives record them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    /// `(name, declared type)` in order.
    pub columns: Vec<(String, String)>,
}

impl TableSchema {
    fn of(name: &str, cols: &[Column]) -> TableSchema {
        TableSchema {
            name: name.into(),
            columns: cols
                .iter()
                .map(|c| (c.name.clone(), c.decl_type.clone()))
                .collect(),
        }
    }
}

/// BLAKE3 over the canonical schema: equal fingerprints, same tables.
pub fn fingerprint(schema: &[TableSchema]) -> String {
    let mut sorted = schema.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    blake3::hash(&serde_json::to_vec(&sorted).expect("schema serializes"))
        .to_hex()
        .to_string()
}

/// Column-by-column differences between an archive's schema and a target's.
pub fn schema_differences(archive: &[TableSchema], target: &[TableSchema]) -> Vec<String> {
    let mut out = Vec::new();
    for a in archive {
        let Some(t) = target.iter().find(|t| t.name == a.name) else {
            out.push(format!(
                "table {}: in the archive, not in the target",
                a.name
            ));
            continue;
        };
        for (c, ty) in &a.columns {
            match t.columns.iter().find(|(n, _)| n == c) {
                None => out.push(format!(
                    "{}.{c}: in the archive ({ty}), not in the target",
                    a.name
                )),
                Some((_, tt)) if tt != ty => out.push(format!(
                    "{}.{c}: {ty} in the archive, {tt} in the target",
                    a.name
                )),
                _ => {}
            }
        }
        for (c, ty) in &t.columns {
            if !a.columns.iter().any(|(n, _)| n == c) {
                out.push(format!(
                    "{}.{c}: in the target ({ty}), not in the archive",
                    a.name
                ));
            }
        }
    }
    out
}
