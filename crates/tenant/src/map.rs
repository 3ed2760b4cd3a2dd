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

use crate::sql::{ident, Column, CompositeKey, Db, ForeignKey};
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
    /// The client's own identity in the root table, across firms: columns
    /// such as a tax number. The client in a target is found by these, or
    /// else by its key; never by another unique column, which may be
    /// incidental (a position code) and name another client.
    #[serde(default)]
    pub client_key: Option<Vec<String>>,
    /// What to do with an imported unique value the target already holds,
    /// per column: `"table.column" = "suffix"`.
    #[serde(default)]
    pub unique_rules: BTreeMap<String, UniqueRule>,
    /// The key that says a row's home client, per table, where a table has
    /// several keys at the same distance from the client table (a company
    /// and a counterpart company): `"entries" = "company_id"`.
    #[serde(default)]
    pub owner_keys: BTreeMap<String, String>,
}

/// What to do with an imported unique value the target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UniqueRule {
    /// Refuse the import, listing every such value (the default).
    #[default]
    Fail,
    /// A UUID gets a new UUID, an integer the next free number, text a
    /// suffix.
    Regenerate,
    /// `-2`, `-3`, … appended until free.
    Suffix,
    /// The next free code at the same level of a hierarchical code
    /// (`1.2.7` → `1.2.8`, same width), or the next free number.
    NextAtLevel,
}

impl TenantConfig {
    pub fn unique_rule(&self, table: &str, column: &str) -> UniqueRule {
        self.unique_rules
            .get(&format!("{table}.{column}"))
            .copied()
            .unwrap_or_default()
    }

    /// Whether `key`'s column is configured as a link: a reference that
    /// never makes a row its target's client's.
    pub fn is_link(&self, key: &ForeignKey) -> bool {
        self.links
            .contains_key(&format!("{}.{}", key.table, key.column))
    }

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
    /// The key leading towards the root by the shortest path (none for the
    /// root and for parents of extensions): the route used to name "the"
    /// client of a row in messages.
    pub owner: Option<ForeignKey>,
    /// Every key from this table to an owned table (itself included): each
    /// is a route to a client. A row belongs to every client that any chain
    /// of routes reaches, whatever keys on other routes hold (NULL or not).
    #[serde(default)]
    pub routes: Vec<ForeignKey>,
    /// Keys from owned tables whose whole primary key is also a key to
    /// this table's primary key: this table is the parent of a one-to-one
    /// extension (joined-table inheritance, as ORMs such as SQLAlchemy and
    /// Django lay it out), and each of its rows belongs to the client of
    /// the row that extends it. Such a table has no owner key of its own.
    #[serde(default)]
    pub extended_by: Vec<ForeignKey>,
    pub columns: Vec<Column>,
    /// The single integer primary key column, when the table has one; its
    /// values can be remapped.
    pub int_pk: Option<String>,
    /// Primary key columns (or `rowid`).
    pub pk: Vec<String>,
}

impl Owned {
    /// Owned table `name` at `depth`, its home found through `owner`.
    fn new(
        name: &str,
        depth: u32,
        owner: Option<ForeignKey>,
        columns: &HashMap<String, Vec<Column>>,
    ) -> Owned {
        Owned {
            name: name.to_string(),
            depth,
            owner,
            routes: Vec::new(),
            extended_by: Vec::new(),
            int_pk: int_pk(&columns[name]),
            pk: pk_columns(&columns[name]),
            columns: columns[name].clone(),
        }
    }
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
    /// Owned tables, root first, parents before children, then the
    /// parents of extensions (which are written before their children:
    /// see `import::write_order`).
    pub owned: Vec<Owned>,
    pub shared: Vec<Shared>,
    /// Every single-column foreign key, declared and virtual.
    pub keys: Vec<ForeignKey>,
    /// Keys of several columns. Each column whose value alone names the
    /// referenced row (the referenced column is unique, or is itself a key
    /// to another table) is also in `keys`, with `part_of` set: ownership
    /// follows it and the import rewrites it like any other key.
    pub composites: Vec<CompositeKey>,
    /// Keys of several columns into an owned table of which no column could
    /// be followed: each as one line naming the table, its columns and the
    /// table it points to.
    pub unfollowed: Vec<String>,
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

/// Whether `o`'s chain of owner keys ends at a parent of extensions (not
/// at the client table).
fn through_parent(owned: &[Owned], o: &Owned) -> bool {
    let mut cur = o;
    for _ in 0..owned.len() {
        match &cur.owner {
            None => return cur.depth > 0,
            Some(k) => match owned.iter().find(|x| x.name == k.ref_table) {
                Some(next) => cur = next,
                None => return false,
            },
        }
    }
    false
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
                part_of: None,
            });
        }

        // Keys of several columns, as single keys where a column's value
        // alone names a row: `(company_id, account_id)` into `account(company_id, id)`
        // gives `account_id -> account.id` (a unique column) and, when
        // `account.company_id` is a key into `company`, `company_id ->
        // company.id`. Level by level, so implied keys imply further ones.
        let mut composites = Vec::new();
        for t in &tables {
            composites.extend(db.composite_keys(t)?);
        }
        let mut unique_alone: HashMap<String, Vec<String>> = HashMap::new();
        for t in composites.iter().map(|k| &k.ref_table) {
            if !unique_alone.contains_key(t) && columns.contains_key(t) {
                let mut alone: Vec<String> = db
                    .unique_keys(t)?
                    .into_iter()
                    .filter(|u| u.len() == 1)
                    .flatten()
                    .collect();
                if let [pk] = pk_columns(&columns[t]).as_slice() {
                    alone.push(pk.clone());
                }
                unique_alone.insert(t.clone(), alone);
            }
        }
        loop {
            let mut implied = Vec::new();
            for ck in &composites {
                for (c, r) in ck.columns.iter().zip(&ck.ref_columns) {
                    let has_key = |k: &&ForeignKey| k.table == ck.table && &k.column == c;
                    if keys.iter().any(|k| has_key(&k)) || implied.iter().any(|k| has_key(&k)) {
                        continue;
                    }
                    let target = if unique_alone
                        .get(&ck.ref_table)
                        .is_some_and(|u| u.contains(r))
                    {
                        Some((ck.ref_table.clone(), r.clone()))
                    } else {
                        keys.iter()
                            .find(|k| k.table == ck.ref_table && &k.column == r)
                            .map(|k| (k.ref_table.clone(), k.ref_column.clone()))
                    };
                    if let Some((ref_table, ref_column)) = target {
                        implied.push(ForeignKey {
                            table: ck.table.clone(),
                            column: c.clone(),
                            ref_table,
                            ref_column,
                            is_virtual: false,
                            part_of: Some(ck.name()),
                        });
                    }
                }
            }
            if implied.is_empty() {
                break;
            }
            keys.extend(implied);
        }

        // Breadth first from the root: each level owns the tables with a key
        // into the levels before it.
        let mut owned: Vec<Owned> = vec![Owned::new(&root, 0, None, &columns)];
        let mut depth = 0;
        loop {
            depth += 1;
            let known: Vec<String> = owned.iter().map(|o| o.name.clone()).collect();
            let mut level = Vec::new();
            for t in &tables {
                if known.contains(t) {
                    continue;
                }
                // The shortest route says a row's home client. A configured
                // owner key decides; else a NOT NULL key (a row must have
                // one, as it must have its client), then an indexed one,
                // never a column configured as a link.
                let candidates: Vec<&ForeignKey> = keys
                    .iter()
                    .filter(|k| {
                        &k.table == t
                            && !config.is_link(k)
                            && owned
                                .iter()
                                .any(|o| o.name == k.ref_table && o.depth == depth - 1)
                    })
                    .collect();
                let not_null =
                    |k: &&&ForeignKey| columns[t].iter().any(|c| c.name == k.column && c.not_null);
                let owner = candidates
                    .iter()
                    .find(|k| config.owner_keys.get(t.as_str()) == Some(&k.column))
                    .or_else(|| {
                        candidates
                            .iter()
                            .find(|k| not_null(k) && indexed[t].contains(&k.column))
                    })
                    .or_else(|| candidates.iter().find(not_null))
                    .or_else(|| candidates.iter().find(|k| indexed[t].contains(&k.column)))
                    .or(candidates.first())
                    .copied();
                if let Some(k) = owner {
                    level.push(Owned::new(t, depth, Some(k.clone()), &columns));
                }
            }
            if level.is_empty() {
                break;
            }
            owned.extend(level);
        }
        // Parents of one-to-one extensions: a table whose primary key an
        // owned table's whole primary key points at holds, in each row,
        // part of that owned row, so it is owned through it (and, level by
        // level, its own parents). Not a table the config calls shared (a
        // natural key for it), nor through a key the config names as a link.
        let is_parent = |o: &Owned| o.depth > 0 && o.owner.is_none();
        loop {
            let mut changed = false;
            for k in &keys {
                let Some(child) = owned.iter().find(|o| o.name == k.table) else {
                    continue;
                };
                if child.pk != [k.column.clone()]
                    || k.ref_table == k.table
                    || pk_columns(&columns[&k.ref_table]) != [k.ref_column.clone()]
                    || config.natural_keys.contains_key(&k.ref_table)
                    || config.is_link(k)
                {
                    continue;
                }
                let depth = child.depth + 1;
                match owned.iter_mut().find(|o| o.name == k.ref_table) {
                    // A parent found before: one more child (another level,
                    // or another branch of the hierarchy).
                    Some(p) if is_parent(p) => {
                        if !p.extended_by.contains(k) {
                            p.extended_by.push(k.clone());
                            p.depth = p.depth.max(depth);
                            changed = true;
                        }
                    }
                    // Owned by a route of its own: a plain owned table.
                    Some(_) => {}
                    None => {
                        let mut parent = Owned::new(&k.ref_table, depth, None, &columns);
                        parent.extended_by.push(k.clone());
                        owned.push(parent);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        // Tables that reach a client only through a parent of extensions
        // (a log of objects): owned through it, level by level.
        loop {
            let mut level = Vec::new();
            for t in &tables {
                if owned.iter().any(|o| &o.name == t) {
                    continue;
                }
                let owner = keys.iter().find(|k| {
                    &k.table == t
                        && !config.is_link(k)
                        && owned.iter().any(|o| {
                            o.name == k.ref_table
                                && (is_parent(o)
                                    || o.owner.is_some()
                                        && o.depth > 0
                                        && through_parent(&owned, o))
                        })
                });
                if let Some(k) = owner {
                    let depth = owned
                        .iter()
                        .find(|o| o.name == k.ref_table)
                        .map_or(1, |o| o.depth + 1);
                    level.push(Owned::new(t, depth, Some(k.clone()), &columns));
                }
            }
            if level.is_empty() {
                break;
            }
            owned.extend(level);
        }
        // Every key between owned tables is a route, except the columns the
        // config names as links (a reference to another client's row that
        // does not make the row that client's too) and the keys of
        // extensions to their parents (followed the other way).
        let names: Vec<String> = owned.iter().map(|o| o.name.clone()).collect();
        let extensions: Vec<ForeignKey> = owned
            .iter()
            .flat_map(|o| o.extended_by.iter().cloned())
            .collect();
        for o in owned.iter_mut().skip(1) {
            // A parent is reached only through the rows that extend it: a
            // route of its own (a tree of objects) would let one client's
            // row pull in another's.
            if is_parent(o) {
                continue;
            }
            o.routes = keys
                .iter()
                .filter(|k| {
                    k.table == o.name
                        && names.contains(&k.ref_table)
                        && !extensions.contains(k)
                        && !config.is_link(k)
                })
                .cloned()
                .collect();
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
        let mut unfollowed = Vec::new();
        for ck in &composites {
            let followed = keys
                .iter()
                .any(|k| k.part_of.as_deref() == Some(ck.name().as_str()));
            if owned_names.contains(&ck.ref_table.as_str()) && !followed {
                unfollowed.push(format!(
                    "{} points to {} with a key of several columns none of which names a row alone: rows reached only that way are in no archive",
                    ck.name(),
                    ck.ref_table
                ));
            }
        }
        Ok(TenantMap {
            owned,
            shared,
            keys,
            composites,
            unfollowed,
        })
    }

    pub fn root(&self) -> &Owned {
        &self.owned[0]
    }

    /// The client table's key column: the one that names each client.
    pub fn root_key(&self) -> String {
        let root = self.root();
        root.int_pk.clone().unwrap_or_else(|| root.pk[0].clone())
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

    /// The owned tables in an order where every route's parent comes
    /// before its child (self-routes aside); where routes form a cycle
    /// between tables, the shallower table goes first and the routes that
    /// would point forward are not followed (rows reachable only through
    /// them show as unowned in [`crate::partition`]).
    fn route_order(&self) -> Vec<usize> {
        let n = self.owned.len();
        let idx = |name: &str| self.owned.iter().position(|o| o.name == name);
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let ready = (0..n).filter(|&i| !placed[i]).find(|&i| {
                reach(&self.owned[i])
                    .iter()
                    .all(|r| r.from == self.owned[i].name || idx(&r.from).is_none_or(|j| placed[j]))
            });
            let next = ready.unwrap_or_else(|| {
                (0..n)
                    .filter(|&i| !placed[i])
                    .min_by_key(|&i| (self.owned[i].depth, self.owned[i].name.clone()))
                    .expect("a table is left")
            });
            placed[next] = true;
            order.push(next);
        }
        order
    }

    /// SQL naming, for `table`, which of its rows belong to which client:
    /// one common table expression per owned table on the way (`WITH
    /// RECURSIVE o0 (...), o1 (...) ...`), each the union over every route
    /// of the rows whose key matches a row of the parent's expression, and
    /// a recursive term for routes into the table itself. The expression
    /// for `table` has its primary key columns and `ck`, the client key;
    /// with `one_client`, only client parameter 1's rows.
    pub fn owned_rows_sql(&self, db: &dyn Db, table: &str, one_client: bool) -> OwnedSql {
        let order = self.route_order();
        let pos: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(p, &i)| (self.owned[i].name.as_str(), p))
            .collect();
        let target = pos[table];
        // Which tables lead to `table`: walk its routes back to the root.
        let mut needed = vec![false; order.len()];
        let mut stack = vec![target];
        while let Some(p) = stack.pop() {
            if needed[p] {
                continue;
            }
            needed[p] = true;
            for r in reach(&self.owned[order[p]]) {
                if let Some(&q) = pos.get(r.from.as_str()) {
                    if q < p {
                        stack.push(q);
                    }
                }
            }
        }
        // The columns each expression carries: its primary key, then every
        // column a needed route points at.
        let mut carried: Vec<Vec<String>> =
            order.iter().map(|&i| self.owned[i].pk.clone()).collect();
        for p in (0..order.len()).filter(|&p| needed[p]) {
            for r in reach(&self.owned[order[p]]) {
                if let Some(&q) = pos.get(r.from.as_str()) {
                    if q <= p && needed[q] && !carried[q].contains(&r.from_column) {
                        carried[q].push(r.from_column.clone());
                    }
                }
            }
        }
        let alias = |q: usize, col: &str| {
            format!(
                "c{}",
                carried[q].iter().position(|c| c == col).expect("carried")
            )
        };
        let mut ctes = Vec::new();
        for p in (0..order.len()).filter(|&p| needed[p]) {
            let o = &self.owned[order[p]];
            let names: Vec<String> = (0..carried[p].len())
                .map(|i| format!("c{i}"))
                .chain(std::iter::once("ck".into()))
                .collect();
            let cols = |t: &str| {
                carried[p]
                    .iter()
                    .map(|c| format!("{t}.{}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut terms = Vec::new();
            if p == 0 {
                let key = o.int_pk.clone().unwrap_or_else(|| o.pk[0].clone());
                let filter = if one_client {
                    format!(" WHERE t.{} = {}", ident(&key), db.param(1))
                } else {
                    String::new()
                };
                terms.push(format!(
                    "SELECT {}, t.{} FROM {} t{filter}",
                    cols("t"),
                    ident(&key),
                    ident(&o.name)
                ));
            }
            let mut self_routes: Vec<Reach> = Vec::new();
            // A row is followed further only when it is the client's own:
            // at home with it, or homeless. A chain through another
            // client's row (an intercompany link) does not make the rows
            // beyond it this client's.
            let (hfrom, at_home) = self.at_home_sql(&o.name, "s.ck");
            for r in reach(o) {
                let Some(&q) = pos.get(r.from.as_str()) else {
                    continue;
                };
                if q > p || !needed[q] {
                    continue;
                }
                if q == p {
                    self_routes.push(r);
                    continue;
                }
                terms.push(format!(
                    "SELECT {}, s.ck {hfrom} JOIN o{q} s ON t0.{} = s.{} WHERE {at_home}",
                    cols("t0"),
                    ident(&r.column),
                    alias(q, &r.from_column)
                ));
            }
            if terms.is_empty() {
                // Reachable only through routes not followed: no rows (a
                // client key of the root's type, so the types agree).
                let rk = self.root_key();
                terms.push(format!(
                    "SELECT {}, r.{} FROM {} t0, {} r WHERE 1 = 0",
                    cols("t0"),
                    ident(&rk),
                    ident(&o.name),
                    ident(&self.root().name)
                ));
            }
            // Every route into the table itself in one recursive term:
            // PostgreSQL allows a single one.
            if !self_routes.is_empty() {
                let on = self_routes
                    .iter()
                    .map(|r| format!("t0.{} = s.{}", ident(&r.column), alias(p, &r.from_column)))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                terms.push(format!(
                    "SELECT {}, s.ck {hfrom} JOIN o{p} s ON {on} WHERE {at_home}",
                    cols("t0")
                ));
            }
            ctes.push(format!(
                "o{p} ({}) AS ({})",
                names.join(", "),
                terms.join(" UNION ")
            ));
        }
        let pk = (0..self.owned[order[target]].pk.len())
            .map(|i| format!("c{i}"))
            .collect();
        OwnedSql {
            with: format!("WITH RECURSIVE {}", ctes.join(", ")),
            cte: format!("o{target}"),
            pk,
        }
    }

    /// `FROM` clause (alias `t0`, left joins along the shortest route) and
    /// the expression of each row's *home* client: the client its shortest
    /// route leads to, or NULL where a key on that route is NULL. A row with
    /// a home belongs to that client alone (a key on another route that
    /// points at another client's row is a cross-client link, not a second
    /// owner); a row without one belongs to every client another route
    /// leads to.
    ///
    /// The parent of an extension has no route of its own, so no home: it
    /// goes with the rows that extend it (`None`).
    pub fn home_sql(&self, table: &str) -> (String, Option<String>) {
        let path = self.path(table);
        let mut from = format!("FROM {} t0", ident(table));
        // A path that ends at a parent of extensions, not at the root: no
        // home (the rows go with whatever client reaches them).
        if path.last().is_some_and(|o| o.depth > 0) {
            return (from, None);
        }
        if path.len() == 1 {
            return (from, Some(format!("t0.{}", ident(&self.root_key()))));
        }
        // Joined along the owner keys up to the table next to the client
        // table; when the last key points at another column of the client
        // table (a client number), the client table too, for its key.
        let key = self.root_key();
        let mut joins: Vec<&ForeignKey> = path[..path.len() - 1]
            .iter()
            .map(|step| step.owner.as_ref().expect("non-root tables have an owner"))
            .collect();
        let last = joins.pop().expect("a path of two tables or more");
        let home_is_key = last.ref_column == key;
        if !home_is_key {
            joins.push(last);
        }
        for (i, k) in joins.iter().enumerate() {
            from.push_str(&format!(
                " LEFT JOIN {} t{} ON t{i}.{} = t{}.{}",
                ident(&k.ref_table),
                i + 1,
                ident(&k.column),
                i + 1,
                ident(&k.ref_column)
            ));
        }
        let n = joins.len();
        let home = if home_is_key {
            format!("t{n}.{}", ident(&last.column))
        } else {
            format!("t{n}.{}", ident(&key))
        };
        (from, Some(home))
    }

    /// A count of `table`'s rows whose shortest route does not end at an
    /// existing client (a NULL or dangling key on the way): the only ones
    /// that can belong to no client. `None` when the table has no home
    /// route to count along (a parent of extensions) or is the client
    /// table.
    pub fn homeless_sql(&self, table: &str) -> Option<String> {
        let (from, home) = self.home_sql(table);
        let home = home?;
        if self.path(table).len() < 2 {
            return None;
        }
        let root = self.root();
        let key = self.root_key();
        Some(format!(
            "SELECT count(*) {from} WHERE {home} IS NULL OR {home} NOT IN (SELECT {} FROM {})",
            ident(&key),
            ident(&root.name)
        ))
    }

    /// [`TenantMap::home_sql`] as a `FROM` clause and a condition: the row
    /// (alias `t0`) is at home with client `ck` (an SQL expression), or
    /// has no home.
    pub fn at_home_sql(&self, table: &str, ck: &str) -> (String, String) {
        match self.home_sql(table) {
            (from, Some(home)) => (from, format!("({home} IS NULL OR {home} = {ck})")),
            (from, None) => (from, "1 = 1".into()),
        }
    }

    /// A statement prefix and a `SELECT` of `table`'s rows paired with each
    /// client they belong to: `(c0.. = primary key, ck = client key as
    /// text)`, a row with a home once (its home), a row without one once per
    /// client that reaches it. See [`TenantMap::owned_rows_sql`] and
    /// [`TenantMap::home_sql`].
    pub fn client_pairs_sql(&self, db: &dyn Db, table: &str) -> (String, String, Vec<String>) {
        let own = self.owned_rows_sql(db, table, false);
        let o = self.owned(table).expect("an owned table");
        let (from, home) = self.home_sql(table);
        // Without a home the row goes with every client that reaches it.
        let (home, at_home) = match home {
            Some(h) => (h, "WHERE h.home IS NULL OR h.home = o.ck"),
            None => ("NULL".into(), ""),
        };
        let hk: Vec<String> =
            o.pk.iter()
                .enumerate()
                .map(|(i, c)| format!("t0.{} AS p{i}", ident(c)))
                .collect();
        let with = format!(
            "{}, h AS (SELECT {}, {home} AS home {from})",
            own.with,
            hk.join(", ")
        );
        let on = own
            .pk
            .iter()
            .enumerate()
            .map(|(i, a)| format!("h.p{i} = o.{a}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let cols = own
            .pk
            .iter()
            .map(|a| format!("o.{a}"))
            .collect::<Vec<_>>()
            .join(", ");
        let pairs = format!(
            "SELECT DISTINCT {cols}, CAST(o.ck AS TEXT) AS ck FROM {} o JOIN h ON {on} {at_home}",
            own.cte
        );
        (with, pairs, own.pk)
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

/// One way rows of an owned table are reached: a row whose `column`
/// equals `from_column` of a reached row of table `from`.
struct Reach {
    from: String,
    from_column: String,
    column: String,
}

/// Every way `o`'s rows are reached: its routes, and, for the parent of
/// extensions, the extending rows' keys.
fn reach(o: &Owned) -> Vec<Reach> {
    o.routes
        .iter()
        .map(|r| Reach {
            from: r.ref_table.clone(),
            from_column: r.ref_column.clone(),
            column: r.column.clone(),
        })
        .chain(o.extended_by.iter().map(|e| Reach {
            from: e.table.clone(),
            from_column: e.column.clone(),
            column: e.ref_column.clone(),
        }))
        .collect()
}

/// See [`TenantMap::owned_rows_sql`].
#[derive(Debug, Clone)]
pub struct OwnedSql {
    /// `WITH RECURSIVE …`, to put before the statement.
    pub with: String,
    /// The expression naming the table's rows: primary key columns `pk`
    /// and the client key `ck`.
    pub cte: String,
    pub pk: Vec<String>,
}

impl OwnedSql {
    /// `EXISTS (…)`: row alias `t0` of the table is one of the expression's.
    pub fn contains(&self, pk_cols: &[String]) -> String {
        let on = self
            .pk
            .iter()
            .zip(pk_cols)
            .map(|(a, c)| format!("o.{a} = t0.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("EXISTS (SELECT 1 FROM {} o WHERE {on})", self.cte)
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
