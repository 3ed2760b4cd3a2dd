//! Importing a client archive into a firm database, all or nothing.
//!
//! Inside one write transaction: compare schemas, find (and with `--replace`
//! delete) the existing client, remap keys that collide, resolve shared rows
//! by natural key, apply the link policies, insert, raise id counters, then
//! verify (row counts, digests with keys mapped, foreign keys of the
//! imported rows, the books' invariants) and only then commit. Any failure,
//! or a dry run, rolls back: the database is exactly as before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::map::{schema_differences, LinkPolicy, MissingShared, TenantConfig, TenantMap};
use crate::sql::{ident, rows, Db, Value};
use crate::{
    client_columns_in, client_rows, client_scope, Archive, Error, Link, Result, TableRows,
};

/// What to do when the client already exists in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse if it exists.
    New,
    /// Import beside it as another client (new keys where they collide).
    AsNew,
    /// Delete the existing client's rows first (only if nothing outside the
    /// client references them).
    Replace,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub mode: Mode,
    pub dry_run: bool,
    /// Column values to set on the client's root row (a new code or name
    /// for `--as-new` into the same firm).
    pub set: Vec<(String, Value)>,
    /// Accounting invariants: (name, query returning offending rows).
    pub invariants: Vec<(String, String)>,
    /// With [`Mode::Replace`]: the key of a client in the target that is
    /// not the archive's own but is to be replaced anyway.
    pub replace_other: Option<Value>,
}

/// The client a replace deletes.
#[derive(Debug, Clone, Serialize)]
pub struct ReplacedClient {
    pub key: Value,
    pub label: String,
    /// How it was recognised.
    pub found_by: String,
    /// Its rows per table, before the delete.
    pub rows: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub table: String,
    pub rows: u64,
    /// Rows whose key had to change because it was taken.
    pub remapped: u64,
    /// Rows of a parent of extensions already in the target, identical
    /// and extended by nothing (left behind when their extending rows
    /// were deleted): taken as they are instead of copied under new keys.
    pub reused: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SharedPlan {
    pub table: String,
    /// Matched to an existing row by natural key (or identical content).
    pub matched: u64,
    pub created: u64,
    pub natural_key: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkPlan {
    pub link: String,
    pub policy: LinkPolicy,
    pub action: String,
}

/// What an import did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub committed: bool,
    pub mode: Mode,
    pub client_from: Value,
    pub client_to: Value,
    pub label: String,
    pub tables: Vec<TablePlan>,
    pub shared: Vec<SharedPlan>,
    pub links: Vec<LinkPlan>,
    /// Rows of the replaced client deleted first.
    pub replaced_rows: u64,
    /// Which client was (or would be) deleted first.
    pub replaced: Option<ReplacedClient>,
    /// Unique values the target already held, and how each was resolved.
    pub unique_conflicts: Vec<UniqueConflict>,
    /// Checks run before commit, each "name: ok".
    pub verified: Vec<String>,
    /// Seconds per step.
    pub timings: Vec<(String, f64)>,
}

/// The checks an import makes before changing anything: the schemas match,
/// and the client's presence in the target fits `mode`. Callers run it
/// before costly preparations (a safety snapshot), so a refused import
/// costs nothing.
pub fn preflight(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
    mode: Mode,
    replace_other: Option<&Value>,
) -> Result<()> {
    check_schema(map, archive)?;
    let failing: Vec<&Link> = archive
        .links
        .iter()
        .filter(|l| config.link_policy(&l.table, &l.column) == LinkPolicy::Fail)
        .collect();
    if !failing.is_empty() {
        return Err(links_error(&failing));
    }
    match (existing_client(db, map, config, archive)?, mode) {
        (Found::Ambiguous(why), Mode::New | Mode::Replace) => Err(ambiguous_error(archive, &why)),
        (Found::Own(_, by), Mode::New) => Err(exists_error(archive, &[by])),
        (Found::Other(k, by), Mode::Replace)
            if replace_other.map(|v| v.plain()) != Some(k.plain()) =>
        {
            Err(other_error(&k, &by))
        }
        _ => Ok(()),
    }
}

fn other_error(k: &Value, by: &str) -> Error {
    refused(format!(
        "--replace: the target's client {k} is not the archive's own ({by}). To replace it anyway, give --replace-other {}; to add the archive's client beside it, --as-new",
        k.plain()
    ))
}

fn ambiguous_error(archive: &Archive, why: &[String]) -> Error {
    refused(format!(
        "client {} ({}) cannot be told apart in the target: {}. Set [client] client_key to the columns that identify a client (a tax number)",
        archive.client,
        archive.label,
        why.join("; ")
    ))
}

fn links_error(failing: &[&Link]) -> Error {
    let shown: Vec<String> = failing.iter().take(5).map(|l| l.to_string()).collect();
    refused(format!(
        "{} cross-client link(s) with policy fail: {}{}; set a policy per link in the [client.links] config (keep or nullify)",
        failing.len(),
        shown.join("; "),
        if failing.len() > 5 { "; …" } else { "" }
    ))
}

fn exists_error(archive: &Archive, found_by: &[String]) -> Error {
    refused(format!(
        "client {} ({}) already exists in the target ({}); use --replace to overwrite it or --as-new to add a copy",
        archive.client,
        archive.label,
        found_by.join(", ")
    ))
}

/// Whether the archive's client is in the target, and how that is known.
#[derive(Debug, Clone)]
enum Found {
    Absent,
    /// The archive's own client: (key in the target, how it was found).
    Own(Value, String),
    /// Another client holds the archive's key (another firm's company, or
    /// this client changed beyond recognition): replacing it needs
    /// `replace_other`.
    Other(Value, String),
    /// More than one client could be meant.
    Ambiguous(Vec<String>),
}

/// Finds the archive's client in the target by its configured identity
/// (`client_key`, a tax number) or by its key; never by another unique
/// column, which may be incidental and belong to another client.
fn existing_client(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
) -> Result<Found> {
    let root = map.root();
    let root_key = map.root_key();
    let root_rows = &archive.tables[0];
    let root_row = root_rows
        .rows
        .first()
        .ok_or_else(|| Error::Archive("the archive has no client row".into()))?;
    let cols: Vec<String> = root.columns.iter().map(|c| c.name.clone()).collect();
    let select = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let ki = cols.iter().position(|c| *c == root_key).unwrap_or(0);
    let by_key = rows(
        db,
        &format!(
            "SELECT {select} FROM {} WHERE {} = {}",
            ident(&root.name),
            ident(&root_key),
            db.param(1)
        ),
        std::slice::from_ref(&archive.client),
    )?
    .into_iter()
    .next();
    let label = |r: &[Value]| crate::label_of(&cols, r, &r[ki]);
    let mut natural = None;
    if let Some(nk) = config.client_key.as_ref().filter(|k| !k.is_empty()) {
        let mut values = Vec::new();
        for c in nk {
            let i = root_rows.col(c).ok_or_else(|| {
                refused(format!(
                    "[client] client_key names {}.{c}, which the archive does not have",
                    root.name
                ))
            })?;
            values.push(root_row[i].clone());
        }
        // A client without its identity (a NULL tax number) is recognised
        // by key and row alone: NULL names nobody.
        if !values.contains(&Value::Null) {
            natural = Some((nk, values));
        }
    }
    if let Some((nk, values)) = natural {
        let cond = nk
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = {}", ident(c), db.param(i + 1)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let matches = rows(
            db,
            &format!("SELECT {select} FROM {} WHERE {cond}", ident(&root.name)),
            &values,
        )?;
        let shown = format!(
            "{}.{} = {}",
            root.name,
            nk.join("+"),
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("+")
        );
        return Ok(match (matches.as_slice(), by_key) {
            ([], None) => Found::Absent,
            ([], Some(r)) => Found::Other(
                r[ki].clone(),
                format!(
                    "key {} belongs to {} {:?}, whose {} differs",
                    archive.client,
                    root.name,
                    label(&r),
                    nk.join("+")
                ),
            ),
            ([m], Some(r)) if r[ki] != m[ki] => Found::Ambiguous(vec![
                format!("{shown} is client {} ({:?})", m[ki], label(m)),
                format!("key {} is client {:?}", archive.client, label(&r)),
            ]),
            ([m], _) => Found::Own(m[ki].clone(), shown),
            (many, _) => Found::Ambiguous(vec![format!(
                "{shown} matches {} clients ({})",
                many.len(),
                many.iter()
                    .map(|m| format!("{} {:?}", m[ki], label(m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )]),
        });
    }
    // No configured identity: the key, and only when the client's row is
    // the archive's, column for column, is it surely the same client.
    let Some(r) = by_key else {
        return Ok(Found::Absent);
    };
    let same = root_rows
        .columns
        .iter()
        .zip(root_row)
        .all(|(c, v)| cols.iter().position(|x| x == c).is_some_and(|i| &r[i] == v));
    Ok(if same {
        Found::Own(
            r[ki].clone(),
            format!("{}.{root_key} = {}", root.name, archive.client),
        )
    } else {
        Found::Other(
            r[ki].clone(),
            format!(
                "key {} belongs to {} {:?}, whose row differs from the archive's",
                archive.client,
                root.name,
                label(&r)
            ),
        )
    })
}

fn check_schema(map: &TenantMap, archive: &Archive) -> Result<()> {
    let diffs = schema_differences(&archive.schema, &map.schema());
    if !diffs.is_empty() {
        return Err(Error::Refused(format!(
            "the archive's schema differs from the target's ({})",
            diffs.join("; ")
        )));
    }
    if archive.root != map.root().name {
        return Err(Error::Refused(format!(
            "the archive's client table is {}, the target's is {}",
            archive.root,
            map.root().name
        )));
    }
    Ok(())
}

/// Imports `archive` into `db`. See the module documentation.
pub fn import(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    import_telling(db, map, config, archive, opts, &|_, _| {})
}

/// [`import`], telling `step` the name and seconds of each step as it
/// ends (the report lists them all at the end).
pub fn import_telling(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
    opts: &ImportOptions,
    step: &dyn Fn(&str, f64),
) -> Result<ImportReport> {
    check_schema(map, archive)?;
    let upgraded = parents_as_owned(map, archive);
    let archive = upgraded.as_ref().unwrap_or(archive);
    db.begin_write()?;
    match run(db, map, config, archive, opts, step) {
        Ok(mut r) if !opts.dry_run => {
            db.commit()?;
            r.committed = true;
            Ok(r)
        }
        Ok(r) => {
            db.rollback()?;
            Ok(r)
        }
        Err(e) => {
            let _ = db.rollback();
            Err(e)
        }
    }
}

fn refused(msg: impl Into<String>) -> Error {
    Error::Refused(msg.into())
}

fn placeholders(db: &dyn Db, n: usize) -> String {
    (1..=n).map(|i| db.param(i)).collect::<Vec<_>>().join(", ")
}

/// `INSERT INTO table (columns…) VALUES (parameters…)`.
fn insert_sql(db: &dyn Db, table: &str, columns: &[String]) -> String {
    let cols = columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({cols}) VALUES ({})",
        ident(table),
        placeholders(db, columns.len())
    )
}

/// Whether `table` has a row whose `column` is `value`.
fn row_exists(db: &dyn Db, table: &str, column: &str, value: &Value) -> Result<bool> {
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} = {} LIMIT 1",
        ident(table),
        ident(column),
        db.param(1)
    );
    Ok(!rows(db, &sql, std::slice::from_ref(value))?.is_empty())
}

/// Canonical bytes of a row, for order-free comparison.
fn encoded(r: &[Value]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in r {
        v.encode(&mut b);
    }
    b
}

fn sorted_digest(mut rs: Vec<Vec<u8>>) -> String {
    rs.sort();
    let mut h = blake3::Hasher::new();
    for r in rs {
        h.update(&r);
    }
    h.finalize().to_hex().to_string()
}

/// An archive written before parents of extensions were owned holds
/// their rows as shared rows (python-accounting's `recyclable`): they are
/// the client's own, and are restored as such. `None` when there are none.
fn parents_as_owned(map: &TenantMap, archive: &Archive) -> Option<Archive> {
    let is_parent = |t: &str| {
        map.owned(t)
            .is_some_and(|o| o.owner.is_none() && !o.extended_by.is_empty())
    };
    if !archive.shared.iter().any(|s| is_parent(&s.table)) {
        return None;
    }
    let mut a = archive.clone();
    let (moved, kept): (Vec<TableRows>, Vec<TableRows>) =
        a.shared.into_iter().partition(|s| is_parent(&s.table));
    a.shared = kept;
    for m in moved {
        a.counts.insert(m.table.clone(), m.rows.len() as u64);
        a.tables.push(m);
    }
    Some(a)
}

fn run(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
    opts: &ImportOptions,
    step: &dyn Fn(&str, f64),
) -> Result<ImportReport> {
    let root = map.root();

    // The books' state before, so an import is judged only on what it adds.
    let mut timer = Timer::new(step);
    let found = existing_client(db, map, config, archive)?;
    let mut replaced_rows = 0;
    let mut replaced = None;
    let mut kept_refs: KeptRefs = Vec::new();
    timer.lap("find the client");
    let to_replace = match (&found, opts.mode) {
        (Found::Ambiguous(why), Mode::New | Mode::Replace) => {
            return Err(ambiguous_error(archive, why))
        }
        (Found::Own(_, by), Mode::New) => {
            return Err(exists_error(archive, std::slice::from_ref(by)))
        }
        (Found::Own(k, by), Mode::Replace) => Some((k, by)),
        (Found::Other(k, by), Mode::Replace) => {
            if opts.replace_other.as_ref().map(|v| v.plain()) != Some(k.plain()) {
                return Err(other_error(k, by));
            }
            Some((k, by))
        }
        _ => None,
    };
    if let Some((k, by)) = to_replace {
        // Named before anything is deleted; its rows are counted as they
        // are gathered for deletion.
        let cols: Vec<String> = root.columns.iter().map(|c| c.name.clone()).collect();
        let root_key = map.root_key();
        let label = rows(
            db,
            &format!(
                "SELECT {} FROM {} WHERE {} = {}",
                cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
                ident(&root.name),
                ident(&root_key),
                db.param(1)
            ),
            std::slice::from_ref(k),
        )?
        .first()
        .map(|r| crate::label_of(&cols, r, k))
        .unwrap_or_else(|| k.plain());
        let deleted = delete_client(db, map, archive, k)?;
        replaced_rows = deleted.rows;
        kept_refs = deleted.kept;
        replaced = Some(ReplacedClient {
            key: k.clone(),
            label,
            found_by: by.clone(),
            rows: deleted.per_table,
        });
    }

    timer.lap("replace: check and delete");
    // Shared rows: matched by natural key, or created.
    let mut shared_maps: HashMap<(String, String), HashMap<Value, Value>> = HashMap::new();
    let mut shared_plans = Vec::new();
    // The target's shared rows the client uses, for the books check.
    let mut shared_after: Vec<(String, Vec<String>, Vec<Value>)> = Vec::new();
    for s in &archive.shared {
        let info = map
            .shared(&s.table)
            .ok_or_else(|| refused(format!("{} is not a shared table in the target", s.table)))?;
        let mut plan = SharedPlan {
            table: s.table.clone(),
            matched: 0,
            created: 0,
            natural_key: info.natural_key.clone(),
        };
        let cols = &s.columns;
        let all = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        for r in &s.rows {
            let (where_cols, where_vals): (Vec<&String>, Vec<Value>) = match &info.natural_key {
                Some(nk) => nk
                    .iter()
                    .filter_map(|c| s.col(c).map(|i| (c, r[i].clone())))
                    .unzip(),
                // Without a natural key: the very same row.
                None => cols.iter().zip(r.iter().cloned()).unzip(),
            };
            let cond = where_cols
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} {} {}", ident(c), db.same_as(), db.param(i + 1)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let found = rows(
                db,
                &format!("SELECT {all} FROM {} WHERE {cond} LIMIT 1", ident(&s.table)),
                &where_vals,
            )?;
            let target_row =
                match found.into_iter().next() {
                    Some(t) => {
                        plan.matched += 1;
                        t
                    }
                    None if config.missing_shared == MissingShared::Fail => {
                        return Err(refused(format!(
                        "shared row {} ({}) is missing in the target and missing_shared = \"fail\"",
                        s.table,
                        where_vals.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                    )))
                    }
                    None => {
                        plan.created += 1;
                        let mut new = r.clone();
                        if let Some(pk) = &info.int_pk {
                            let i = s.col(pk).expect("pk column");
                            let taken = !rows(
                                db,
                                &format!(
                                    "SELECT 1 FROM {} WHERE {} = {}",
                                    ident(&s.table),
                                    ident(pk),
                                    db.param(1)
                                ),
                                std::slice::from_ref(&r[i]),
                            )?
                            .is_empty();
                            if taken {
                                new[i] = Value::Int(next_id(db, &s.table, pk, 0)?);
                            }
                        }
                        db.execute(
                            &format!(
                                "INSERT INTO {} ({all}) VALUES ({})",
                                ident(&s.table),
                                placeholders(db, cols.len())
                            ),
                            &new,
                        )?;
                        new
                    }
                };
            for (i, c) in cols.iter().enumerate() {
                shared_maps
                    .entry((s.table.clone(), c.clone()))
                    .or_default()
                    .insert(r[i].clone(), target_row[i].clone());
            }
            shared_after.push((s.table.clone(), s.columns.clone(), target_row));
        }
        shared_plans.push(plan);
    }

    timer.lap("shared rows");
    // Key maps for owned tables with an integer key. Parents of
    // extensions come first: an extending row's key is its parent's.
    let order = write_order(map, archive);
    let mut reused: HashMap<String, HashSet<Value>> = HashMap::new();
    let mut key_maps: HashMap<String, HashMap<Value, Value>> = HashMap::new();
    let mut table_plans = Vec::new();
    for &ti in &order {
        let t = &archive.tables[ti];
        let o = map.owned(&t.table).ok_or_else(|| {
            refused(format!(
                "{} does not belong to clients in the target",
                t.table
            ))
        })?;
        let mut plan = TablePlan {
            table: t.table.clone(),
            rows: t.rows.len() as u64,
            remapped: 0,
            reused: 0,
        };
        let mut reuse = left_behind(db, map, o, t)?;
        let parent = key_follows(map, o).map(|(pk, p)| (pk, key_maps.get(&p).cloned()));
        if let Some((pk, Some(pm))) = parent {
            let i = t.col(&pk).expect("pk column");
            let m = key_maps.entry(t.table.clone()).or_default();
            for r in &t.rows {
                let to = pm.get(&r[i]).cloned().unwrap_or_else(|| r[i].clone());
                if to != r[i] {
                    plan.remapped += 1;
                }
                m.insert(r[i].clone(), to);
            }
        } else if let Some(pk) = &o.int_pk {
            let i = t.col(pk).expect("pk column");
            let ids: Vec<i64> = t
                .rows
                .iter()
                .filter_map(|r| match r[i] {
                    Value::Int(v) => Some(v),
                    _ => None,
                })
                .collect();
            let hi = ids.iter().max().copied().unwrap_or(0);
            let values: Vec<Value> = ids.iter().map(|&i| Value::Int(i)).collect();
            let taken: HashSet<i64> = existing_values(db, &t.table, pk, &values)?
                .into_iter()
                .filter(|v| !reuse.contains(v))
                .filter_map(|v| match v {
                    Value::Int(v) => Some(v),
                    _ => None,
                })
                .collect();
            let mut next = next_id(db, &t.table, pk, hi)?;
            let m = key_maps.entry(t.table.clone()).or_default();
            for id in ids {
                let to = if taken.contains(&id) {
                    plan.remapped += 1;
                    next += 1;
                    next - 1
                } else {
                    id
                };
                m.insert(Value::Int(id), Value::Int(to));
            }
        } else if let Some(pk) = key_col(o) {
            // A text or UUID key: regenerated in the same form where it is
            // taken, and everywhere with --as-new.
            let i = t.col(&pk).expect("pk column");
            let values: Vec<Value> = t.rows.iter().map(|r| r[i].clone()).collect();
            let taken: HashSet<Value> = existing_values(db, &t.table, &pk, &values)?
                .into_iter()
                .filter(|v| !reuse.contains(v))
                .collect();
            let mut used: HashSet<Value> = taken.clone();
            used.extend(values.iter().cloned());
            let m = key_maps.entry(t.table.clone()).or_default();
            for v in values {
                let Value::Text(old) = &v else {
                    m.insert(v.clone(), v);
                    continue;
                };
                if !(taken.contains(&v) || opts.mode == Mode::AsNew) {
                    m.insert(v.clone(), v.clone());
                    continue;
                }
                let new = fresh_text_key(db, &t.table, &pk, old, &mut used)?;
                plan.remapped += 1;
                m.insert(v, Value::Text(new));
            }
        }
        // A row is taken as it is only if it keeps its key: not when the
        // table its key follows gave that key a new value, nor with
        // --as-new.
        if let Some(m) = key_maps.get(&t.table) {
            reuse.retain(|v| m.get(v) == Some(v));
        }
        plan.reused = reuse.len() as u64;
        if !reuse.is_empty() {
            reused.insert(t.table.clone(), reuse);
        }
        table_plans.push(plan);
    }
    table_plans.sort_by_key(|p| {
        archive
            .tables
            .iter()
            .position(|t| t.table == p.table)
            .unwrap_or(usize::MAX)
    });
    let client_to = key_maps
        .get(&root.name)
        .and_then(|m| m.get(&archive.client))
        .cloned()
        .unwrap_or_else(|| archive.client.clone());

    // Links leaving the client.
    let mut link_plans = Vec::new();
    let mut nullify: HashSet<(String, String, Vec<Value>)> = HashSet::new();
    let mut failing: Vec<&Link> = Vec::new();
    for l in &archive.links {
        let policy = config.link_policy(&l.table, &l.column);
        let action = match policy {
            LinkPolicy::Fail => {
                failing.push(l);
                "refused (policy fail)".to_string()
            }
            LinkPolicy::Keep => {
                let k = map
                    .keys
                    .iter()
                    .find(|k| k.table == l.table && k.column == l.column)
                    .expect("links come from keys");
                if !row_exists(db, &k.ref_table, &k.ref_column, &l.value)? {
                    return Err(refused(format!(
                        "link {l}: policy keep, but the target has no {} {}",
                        l.ref_table, l.value
                    )));
                }
                format!("kept: {} {} exists in the target", l.ref_table, l.value)
            }
            LinkPolicy::Nullify => {
                let col = map
                    .owned(&l.table)
                    .and_then(|o| o.columns.iter().find(|c| c.name == l.column));
                if col.is_some_and(|c| c.not_null) {
                    return Err(refused(format!(
                        "link {l}: policy nullify, but {}.{} is NOT NULL",
                        l.table, l.column
                    )));
                }
                nullify.insert((l.table.clone(), l.column.clone(), l.row.clone()));
                "set to NULL".to_string()
            }
        };
        link_plans.push(LinkPlan {
            link: l.to_string(),
            policy,
            action,
        });
    }
    if !failing.is_empty() {
        return Err(links_error(&failing));
    }

    // Map every row first: keys, shared references, cut links, --set.
    let mut mapped_tables: Vec<Vec<Vec<Value>>> = Vec::with_capacity(archive.tables.len());
    for t in &archive.tables {
        let o = map.owned(&t.table).expect("checked above");
        let pk_idx: Vec<usize> = o.pk.iter().filter_map(|c| t.col(c)).collect();
        // Per column: how to map its values.
        let col_maps: Vec<Option<&HashMap<Value, Value>>> = t
            .columns
            .iter()
            .map(|c| {
                if key_col(o).as_deref() == Some(c.as_str()) {
                    return key_maps.get(&t.table);
                }
                let k = map
                    .keys
                    .iter()
                    .find(|k| k.table == t.table && &k.column == c)?;
                if map
                    .owned(&k.ref_table)
                    .is_some_and(|r| key_col(r).as_deref() == Some(k.ref_column.as_str()))
                {
                    key_maps.get(&k.ref_table)
                } else {
                    shared_maps.get(&(k.ref_table.clone(), k.ref_column.clone()))
                }
            })
            .collect();
        // Columns of this table with links to cut.
        let cut: Vec<bool> = t
            .columns
            .iter()
            .map(|c| nullify.iter().any(|(nt, nc, _)| *nt == t.table && nc == c))
            .collect();
        let mut out = Vec::with_capacity(t.rows.len());
        for r in &t.rows {
            let mut v = Vec::with_capacity(r.len());
            for (i, val) in r.iter().enumerate() {
                let c = &t.columns[i];
                let mapped = if cut[i]
                    && nullify.contains(&(
                        t.table.clone(),
                        c.clone(),
                        pk_idx.iter().map(|&i| r[i].clone()).collect(),
                    )) {
                    Value::Null
                } else {
                    match col_maps[i].and_then(|m| m.get(val)) {
                        Some(m) => m.clone(),
                        None => val.clone(),
                    }
                };
                v.push(mapped);
            }
            if t.table == root.name {
                for (c, val) in &opts.set {
                    let i = t.col(c).ok_or_else(|| {
                        refused(format!("--set: {} has no column {c}", root.name))
                    })?;
                    v[i] = val.clone();
                }
            }
            out.push(v);
        }
        mapped_tables.push(out);
    }

    // Unique values the target already holds: every one listed before a
    // row is written, resolved by the configured rule or refused.
    let unique_plans = plan_uniques(db, map, config, archive, &mut mapped_tables, &reused)?;
    timer.lap("unique values");

    // Insert.
    let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for &ti in &order {
        let (t, rows_out) = (&archive.tables[ti], &mapped_tables[ti]);
        let o = map.owned(&t.table).expect("checked above");
        let sql = insert_sql(db, &t.table, &t.columns);
        let mut mapped_rows = Vec::with_capacity(t.rows.len());
        let mut max_id = 0i64;
        let reuse = reused.get(&t.table);
        let key_at = key_col(o).and_then(|c| t.col(&c));
        for v in rows_out {
            if let (Some(reuse), Some(i)) = (reuse, key_at) {
                if reuse.contains(&v[i]) {
                    // Already there, identical: counted and verified below.
                    mapped_rows.push(encoded(v));
                    continue;
                }
            }
            if let Some(pk) = &o.int_pk {
                if let Some(Value::Int(id)) = t.col(pk).map(|i| &v[i]) {
                    max_id = max_id.max(*id);
                }
            }
            db.execute(&sql, v).map_err(|e| match e {
                Error::Db(m) => refused(format!("inserting into {}: {m}", t.table)),
                other => other,
            })?;
            mapped_rows.push(encoded(v));
        }
        if o.int_pk.is_some() && max_id > 0 {
            db.raise_counter(&t.table, max_id)?;
        }
        expected.insert(
            t.table.clone(),
            (t.rows.len() as u64, sorted_digest(mapped_rows)),
        );
    }

    timer.lap("insert");
    // Verify before commit.
    let mut verified = Vec::new();
    let mut scoped: Vec<TableRows> = Vec::new();
    for o in &map.owned {
        let Some((n, digest)) = expected.get(&o.name) else {
            continue;
        };
        let got = client_rows(db, map, o, &client_to)?;
        scoped.push(got.clone());
        if got.rows.len() as u64 != *n {
            return Err(refused(format!(
                "verification: {} has {} rows of the client after import, the archive {n}",
                o.name,
                got.rows.len()
            )));
        }
        // Compare in the archive's column order.
        let order: Vec<usize> = archive
            .tables
            .iter()
            .find(|t| t.table == o.name)
            .map(|t| t.columns.iter().filter_map(|c| got.col(c)).collect())
            .unwrap_or_default();
        let d = sorted_digest(
            got.rows
                .iter()
                .map(|r| encoded(&order.iter().map(|&i| r[i].clone()).collect::<Vec<_>>()))
                .collect(),
        );
        if &d != digest {
            return Err(refused(format!(
                "verification: the content of {} differs from the archive once keys are mapped",
                o.name
            )));
        }
    }
    verified.push("row counts match".into());
    verified.push("content digests match once keys are mapped".into());
    check_foreign_keys(db, map, &scoped)?;
    for (t, c, rt, rc, v) in &kept_refs {
        if !row_exists(db, rt, rc, v)? {
            return Err(refused(format!(
                "verification: {t}.{c} = {v} outside the client points to no row of {rt} after the import"
            )));
        }
    }
    verified.push(format!(
        "foreign keys of the imported rows resolve{}",
        if kept_refs.is_empty() {
            String::new()
        } else {
            format!(
                ", and {} reference(s) from other clients still do",
                kept_refs.len()
            )
        }
    ));
    timer.lap("verify rows and keys");
    // The client's books, on the client's rows alone.
    for t in shared_tables(shared_after) {
        scoped.push(t);
    }
    for (name, offending, sample) in check_books(&archive.schema, &scoped, &opts.invariants)? {
        if offending > 0 {
            let rows: Vec<String> = sample
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect();
            return Err(refused(format!(
                "verification: \"{name}\" finds {offending} offending row(s) in the imported client ({})",
                rows.join("; ")
            )));
        }
        verified.push(format!("{name}: ok"));
    }
    timer.lap("books");
    Ok(ImportReport {
        dry_run: opts.dry_run,
        committed: false,
        mode: opts.mode,
        client_from: archive.client.clone(),
        client_to,
        label: archive.label.clone(),
        tables: table_plans,
        shared: shared_plans,
        links: link_plans,
        replaced_rows,
        replaced,
        unique_conflicts: unique_plans,
        verified,
        timings: timer.laps,
    })
}

/// Time per step, for the report, each told as it ends.
struct Timer<'a> {
    last: std::time::Instant,
    laps: Vec<(String, f64)>,
    tell: &'a dyn Fn(&str, f64),
}

impl<'a> Timer<'a> {
    fn new(tell: &'a dyn Fn(&str, f64)) -> Timer<'a> {
        Timer {
            last: std::time::Instant::now(),
            laps: Vec::new(),
            tell,
        }
    }

    fn lap(&mut self, step: &str) {
        let now = std::time::Instant::now();
        let secs = (now - self.last).as_secs_f64();
        (self.tell)(step, secs);
        self.laps.push((step.into(), secs));
        self.last = now;
    }
}

fn shared_tables(rows: Vec<(String, Vec<String>, Vec<Value>)>) -> Vec<TableRows> {
    let mut out: Vec<TableRows> = Vec::new();
    for (table, columns, row) in rows {
        match out.iter_mut().find(|t| t.table == table) {
            Some(t) => {
                if !t.rows.contains(&row) {
                    t.rows.push(row)
                }
            }
            None => out.push(TableRows {
                table,
                columns,
                rows: vec![row],
            }),
        }
    }
    out
}

/// An invariant's name, its offending row count and the first few rows.
type BookCheck = (String, u64, Vec<Vec<Value>>);

/// Runs the invariants on a scratch in-memory SQLite database holding only
/// `tables` (the imported client's rows and the shared rows they use), so
/// the check costs what the client weighs, not what the firm weighs, and
/// other clients' problems are not blamed on this import. Returns each
/// invariant's offending row count and a few rows.
fn check_books(
    schema: &[crate::map::TableSchema],
    tables: &[TableRows],
    invariants: &[(String, String)],
) -> Result<Vec<BookCheck>> {
    if invariants.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = crate::sql::Sqlite::from(
        rusqlite::Connection::open_in_memory().map_err(|e| Error::Db(e.to_string()))?,
    );
    for t in schema {
        let cols = t
            .columns
            .iter()
            .map(|(c, ty)| format!("{} {ty}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        scratch.execute(&format!("CREATE TABLE {} ({cols})", ident(&t.name)), &[])?;
    }
    scratch.execute("BEGIN", &[])?;
    for t in tables {
        let sql = insert_sql(&scratch, &t.table, &t.columns);
        for r in &t.rows {
            scratch.execute(&sql, r)?;
        }
    }
    scratch.execute("COMMIT", &[])?;
    let mut out = Vec::new();
    for (name, sql) in invariants {
        // A check naming a table the archive does not hold does not apply.
        let mut n = 0u64;
        let mut sample = Vec::new();
        match scratch.query(sql, &[], &mut |r| {
            n += 1;
            if sample.len() < 5 {
                sample.push(r);
            }
            Ok(())
        }) {
            Ok(()) => out.push((name.clone(), n, sample)),
            Err(Error::Db(m)) if m.contains("no such table") || m.contains("no such column") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parameters per `IN (…)` list: well below every engine's limit.
const BATCH: usize = 500;

/// Which of `values` are present in `table.column` (an index lookup each,
/// batched).
fn existing_values(db: &dyn Db, table: &str, column: &str, values: &[Value]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for chunk in values.chunks(BATCH) {
        let sql = format!(
            "SELECT {c} FROM {t} WHERE {c} IN ({})",
            placeholders(db, chunk.len()),
            c = ident(column),
            t = ident(table),
        );
        db.query(&sql, chunk, &mut |mut r| {
            out.push(r.swap_remove(0));
            Ok(())
        })?;
    }
    Ok(out)
}

/// A unique value of an imported row that the target already holds.
#[derive(Debug, Clone, Serialize)]
pub struct UniqueConflict {
    pub table: String,
    pub columns: Vec<String>,
    pub value: Vec<Value>,
    /// The primary key of the target's row that holds it.
    pub existing: Vec<Value>,
    pub rule: UniqueRule,
    /// The value given instead, when the rule found one.
    pub resolved: Option<Vec<Value>>,
}

/// What to do with an imported unique value the target already holds
/// (`[client.unique_rules]`, `"table.column" = "suffix"`).
pub use crate::map::UniqueRule;

/// Finds every unique value of the mapped rows that the target already
/// holds (or that two imported rows share), applies the configured rule to
/// each, and refuses, listing all of them, when any is left unresolved.
fn plan_uniques(
    db: &dyn Db,
    map: &TenantMap,
    config: &TenantConfig,
    archive: &Archive,
    mapped: &mut [Vec<Vec<Value>>],
    reused: &HashMap<String, HashSet<Value>>,
) -> Result<Vec<UniqueConflict>> {
    let mut out = Vec::new();
    // Codes changed because a parent's code changed: (table, column, old, new).
    let mut carried: Vec<(String, String, String, String)> = Vec::new();
    let mut tree_columns: HashSet<(String, String)> = HashSet::new();
    for (ti, t) in archive.tables.iter().enumerate() {
        let o = map.owned(&t.table).expect("checked above");
        // Rows already in the target, taken as they are: their values are
        // their own, not conflicts.
        let kept = reused.get(&t.table);
        let key_at = key_col(o).and_then(|c| t.col(&c));
        // A primary key of several columns is never given new values, so
        // it is planned like any unique set: one the target holds is
        // listed, not left to fail as the insert's error.
        let mut uniques = db.unique_keys(&t.table)?;
        if o.pk.len() > 1 && !uniques.contains(&o.pk) {
            uniques.push(o.pk.clone());
        }
        for u in uniques {
            if u == o.pk && u.len() == 1 {
                continue;
            }
            let Some(idx) = u.iter().map(|c| t.col(c)).collect::<Option<Vec<usize>>>() else {
                continue;
            };
            let rule = if let [c] = u.as_slice() {
                config.unique_rule(&t.table, c)
            } else {
                UniqueRule::Fail
            };
            let cond = u
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} = {}", ident(c), db.param(i + 1)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let pk_sel = o.pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {pk_sel} FROM {} WHERE {cond} LIMIT 1",
                ident(&t.table)
            );
            let mut seen: HashSet<Vec<Value>> = HashSet::new();
            // A hierarchical code: parents first, and a parent's new code
            // carried into its descendants' codes (original -> new).
            let tree = match (&rule, idx.as_slice()) {
                (UniqueRule::NextAtLevel, [i]) => Some(Tree::of(&mapped[ti], *i)),
                _ => None,
            };
            let mut order: Vec<usize> = (0..mapped[ti].len()).collect();
            if let (Some(_), [i]) = (&tree, idx.as_slice()) {
                order.sort_by_key(|&r| match &mapped[ti][r][*i] {
                    Value::Text(t) => t.len(),
                    _ => 0,
                });
            }
            let mut moved: Vec<(String, String)> = Vec::new();
            if tree.is_some() {
                tree_columns.insert((t.table.clone(), u[0].clone()));
            }
            for ri in order {
                let r = &mut mapped[ti][ri];
                if let (Some(kept), Some(k)) = (kept, key_at) {
                    if kept.contains(&r[k]) {
                        continue;
                    }
                }
                let original = match (&tree, idx.as_slice(), &r[idx[0]]) {
                    (Some(tree), [i], Value::Text(old)) => {
                        let old = old.clone();
                        if let Some(new) = tree.carried(&moved, &old) {
                            r[*i] = Value::Text(new);
                        }
                        Some(old)
                    }
                    _ => None,
                };
                let value: Vec<Value> = idx.iter().map(|&i| r[i].clone()).collect();
                if value.contains(&Value::Null) {
                    continue;
                }
                let existing = rows(db, &sql, &value)?.into_iter().next();
                let dup = !seen.insert(value.clone());
                if existing.is_none() && !dup {
                    if let (Some(old), Value::Text(now)) = (original, &value[0]) {
                        if old != *now {
                            carried.push((t.table.clone(), u[0].clone(), old.clone(), now.clone()));
                            moved.push((old, now.clone()));
                        }
                    }
                    continue;
                }
                let level = tree.as_ref().map_or(0, |t| t.step);
                let resolved = match (&rule, idx.as_slice()) {
                    (UniqueRule::Fail, _) | (_, [_, _, ..]) | (_, []) => None,
                    (rule, [i]) => {
                        let new = resolve_unique(db, &t.table, &u[0], &r[*i], rule, &seen, level)?;
                        if let Some(n) = &new {
                            r[*i] = n.clone();
                            seen.insert(vec![n.clone()]);
                        }
                        new.map(|n| vec![n])
                    }
                };
                if let (Some(old), Some([Value::Text(new)])) = (&original, resolved.as_deref()) {
                    // References follow from the row's original code, even
                    // when a parent's change was carried into it first.
                    moved.push((old.clone(), new.clone()));
                    carried.push((t.table.clone(), u[0].clone(), old.clone(), new.clone()));
                }
                out.push(UniqueConflict {
                    table: t.table.clone(),
                    columns: u.clone(),
                    value,
                    existing: existing.unwrap_or_default(),
                    rule,
                    resolved,
                });
            }
        }
    }
    // A value that changed is carried into every imported column that
    // refers to it by value (a code used as a key elsewhere).
    let mut changed: HashMap<(String, String), HashMap<Value, Value>> = HashMap::new();
    for c in &out {
        // Text codes of a tree are carried from their original values
        // (below); numbers under `next_at_level` go as any other value.
        if tree_columns.contains(&(c.table.clone(), c.columns[0].clone()))
            && matches!(c.value.first(), Some(Value::Text(_)))
        {
            continue;
        }
        if let (Some(new), [col]) = (&c.resolved, c.columns.as_slice()) {
            changed
                .entry((c.table.clone(), col.clone()))
                .or_default()
                .insert(c.value[0].clone(), new[0].clone());
        }
    }
    for (table, column, old, new) in carried {
        changed
            .entry((table, column))
            .or_default()
            .insert(Value::Text(old), Value::Text(new));
    }
    if !changed.is_empty() {
        // Single keys, and each column of a key of several columns.
        let pairs: Vec<(&str, &str, &str, &str)> = map
            .keys
            .iter()
            .map(|k| (&*k.table, &*k.column, &*k.ref_table, &*k.ref_column))
            .chain(map.composites.iter().flat_map(|k| {
                k.columns
                    .iter()
                    .zip(&k.ref_columns)
                    .map(|(c, r)| (&*k.table, &**c, &*k.ref_table, &**r))
            }))
            .collect();
        // A column is carried once, whichever key names it.
        let mut carried: HashSet<(usize, usize)> = HashSet::new();
        for (ti, t) in archive.tables.iter().enumerate() {
            for &(_, column, ref_table, ref_column) in pairs.iter().filter(|p| p.0 == t.table) {
                let Some(m) = changed.get(&(ref_table.to_string(), ref_column.to_string())) else {
                    continue;
                };
                let Some(i) = t.col(column) else { continue };
                if !carried.insert((ti, i)) {
                    continue;
                }
                for r in mapped[ti].iter_mut() {
                    if let Some(n) = m.get(&r[i]) {
                        r[i] = n.clone();
                    }
                }
            }
        }
    }
    let unresolved: Vec<String> = out
        .iter()
        .filter(|c| c.resolved.is_none())
        .map(|c| {
            format!(
                "{}.{} = {} (held by the target's row {})",
                c.table,
                c.columns.join("+"),
                c.value
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
                if c.existing.is_empty() {
                    "another imported row".to_string()
                } else {
                    c.existing
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("+")
                }
            )
        })
        .collect();
    if !unresolved.is_empty() {
        return Err(refused(format!(
            "{} unique value(s) the target already holds: {}{}; set a rule per column in [client.unique_rules] (suffix, regenerate, next_at_level), or --set a new value on the client's row",
            unresolved.len(),
            unresolved.iter().take(8).cloned().collect::<Vec<_>>().join("; "),
            if unresolved.len() > 8 { "; …" } else { "" }
        )));
    }
    Ok(out)
}

/// A free value for `column` of `table` in place of `old`, by `rule`.
fn resolve_unique(
    db: &dyn Db,
    table: &str,
    column: &str,
    old: &Value,
    rule: &UniqueRule,
    seen: &HashSet<Vec<Value>>,
    level: usize,
) -> Result<Option<Value>> {
    let free = |v: &Value| -> Result<bool> {
        Ok(!seen.contains(&vec![v.clone()]) && !row_exists(db, table, column, v)?)
    };
    Ok(match (rule, old) {
        (UniqueRule::Fail, _) => None,
        (UniqueRule::Suffix, Value::Text(t)) => {
            let mut n = 2u64;
            loop {
                let v = Value::Text(format!("{t}-{n}"));
                if free(&v)? {
                    break Some(v);
                }
                n += 1;
            }
        }
        (UniqueRule::Regenerate, Value::Text(t)) if is_uuid(t) => {
            let mut v = Value::Text(uuid_like(t));
            while !free(&v)? {
                v = Value::Text(uuid_like(t));
            }
            Some(v)
        }
        (UniqueRule::Regenerate | UniqueRule::Suffix | UniqueRule::NextAtLevel, Value::Int(_)) => {
            let m = next_id(db, table, column, 0)?;
            let mut v = Value::Int(m);
            while !free(&v)? {
                if let Value::Int(i) = v {
                    v = Value::Int(i + 1);
                }
            }
            Some(v)
        }
        (UniqueRule::Regenerate, Value::Text(_)) => {
            resolve_unique(db, table, column, old, &UniqueRule::Suffix, seen, 0)?
        }
        (UniqueRule::NextAtLevel, Value::Text(t)) => {
            // "1.2.7" -> the next free "1.2.N" (same width); "40010" -> the
            // next free number of the same width; a fixed-width path of
            // steps ("00020003", steps of 4) -> the next free last step,
            // counted in base 36 when the codes use letters.
            let (prefix, last, fixed) = match t.rfind(['.', '-', '/', ':']) {
                Some(i) => (&t[..=i], &t[i + 1..], false),
                None if level > 0
                    && level < t.len()
                    && t.len().is_multiple_of(level)
                    && t.is_char_boundary(t.len() - level) =>
                {
                    (&t[..t.len() - level], &t[t.len() - level..], true)
                }
                None => ("", t.as_str(), level > 0),
            };
            let radix = if last.bytes().any(|b| b.is_ascii_uppercase()) {
                36
            } else {
                10
            };
            let ok = !last.is_empty()
                && last
                    .bytes()
                    .all(|b| b.is_ascii_digit() || radix == 36 && b.is_ascii_uppercase());
            if !ok {
                if fixed {
                    return Ok(None);
                }
                return resolve_unique(db, table, column, old, &UniqueRule::Suffix, seen, 0);
            }
            let width = last.len();
            let mut n = u64::from_str_radix(last, radix).unwrap_or(0);
            loop {
                n += 1;
                let step = to_radix(n, radix.into(), width);
                if fixed && step.len() > width {
                    // The level is full: no code of this form is free.
                    break None;
                }
                let v = Value::Text(format!("{prefix}{step}"));
                if free(&v)? {
                    break Some(v);
                }
            }
        }
        _ => None,
    })
}

/// `n` in base `radix` (10 or 36, upper-case letters), zero-padded to
/// `width`.
fn to_radix(mut n: u64, radix: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % radix) as usize]);
        n /= radix;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// A column of hierarchical codes under `next_at_level`: a child's code
/// is its parent's code followed by one more step ("1.2" then "1.2.7", or
/// fixed-width steps as tree libraries store paths: "0002" then
/// "00020007").
struct Tree {
    /// The width of one step when codes have no separators and their
    /// lengths are multiples of it (at least 2, seen on two lengths);
    /// 0 otherwise.
    step: usize,
}

impl Tree {
    fn of(rows: &[Vec<Value>], col: usize) -> Tree {
        let codes: HashSet<&str> = rows
            .iter()
            .filter_map(|r| match &r[col] {
                Value::Text(t) if t.is_ascii() && !t.contains(['.', '-', '/', ':']) => {
                    Some(t.as_str())
                }
                _ => None,
            })
            .collect();
        let lengths: BTreeSet<usize> = codes.iter().map(|t| t.len()).collect();
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let g = lengths.iter().fold(0, |g, &l| gcd(g, l));
        // A tree only if some code is another's parent: "1000" and
        // "100010" of a flat chart share no steps of two.
        let nested = g >= 2
            && codes
                .iter()
                .any(|c| (g..c.len()).step_by(g).any(|k| codes.contains(&c[..k])));
        Tree {
            step: if lengths.len() >= 2 && nested { g } else { 0 },
        }
    }

    /// `code` with the new code of its nearest moved ancestor in place of
    /// the old one, if one moved.
    fn carried(&self, moved: &[(String, String)], code: &str) -> Option<String> {
        moved
            .iter()
            .filter(|(old, _)| {
                code.len() > old.len()
                    && code.starts_with(old.as_str())
                    && if self.step > 0 && !old.contains(['.', '-', '/', ':']) {
                        (code.len() - old.len()).is_multiple_of(self.step)
                    } else {
                        code[old.len()..].starts_with(['.', '-', '/', ':'])
                    }
            })
            .max_by_key(|(old, _)| old.len())
            .map(|(old, new)| format!("{new}{}", &code[old.len()..]))
    }
}

/// For the parent of extensions `o`: the archive's keys whose row is in
/// the target, identical column for column, and extended or referenced by
/// no row at all. Such rows are what a deletion of their extending rows
/// left behind (python-accounting's `recyclable` after its ledger rows
/// were deleted); they are taken as they are rather than duplicated under
/// new keys, which would change the ids of a client restored into its own
/// firm. Empty for every other table.
fn left_behind(
    db: &dyn Db,
    map: &TenantMap,
    o: &crate::map::Owned,
    t: &TableRows,
) -> Result<HashSet<Value>> {
    let mut out = HashSet::new();
    let (Some(pk), true) = (key_col(o), o.owner.is_none() && !o.extended_by.is_empty()) else {
        return Ok(out);
    };
    let Some(i) = t.col(&pk) else {
        return Ok(out);
    };
    let unreferenced = map
        .keys
        .iter()
        .filter(|k| k.ref_table == o.name && k.ref_column == pk)
        .map(|k| {
            format!(
                "NOT EXISTS (SELECT 1 FROM {} x WHERE x.{} = p.{})",
                ident(&k.table),
                ident(&k.column),
                ident(&pk)
            )
        })
        .collect::<Vec<_>>();
    let cols = t
        .columns
        .iter()
        .map(|c| format!("p.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let by_key: HashMap<&Value, &Vec<Value>> = t.rows.iter().map(|r| (&r[i], r)).collect();
    let keys: Vec<Value> = t.rows.iter().map(|r| r[i].clone()).collect();
    for chunk in keys.chunks(BATCH) {
        let mut cond = vec![format!(
            "p.{} IN ({})",
            ident(&pk),
            placeholders(db, chunk.len())
        )];
        cond.extend(unreferenced.iter().cloned());
        let sql = format!(
            "SELECT {cols} FROM {} p WHERE {}",
            ident(&o.name),
            cond.join(" AND ")
        );
        for r in rows(db, &sql, chunk)? {
            if by_key.get(&r[i]).is_some_and(|a| **a == r) {
                out.insert(r[i].clone());
            }
        }
    }
    Ok(out)
}

/// The owned table whose key an owned table's key follows, with that key
/// column: a table whose single key column is also a one-column key to
/// another owned table's key column (one-to-one extension, joined-table
/// inheritance) takes that table's new keys, never keys of its own.
fn key_follows(map: &TenantMap, o: &crate::map::Owned) -> Option<(String, String)> {
    let pk = key_col(o)?;
    map.keys.iter().find_map(|k| {
        let to = map.owned(&k.ref_table)?;
        (k.table == o.name
            && k.column == pk
            && k.ref_table != o.name
            && key_col(to).as_deref() == Some(k.ref_column.as_str()))
        .then(|| (pk.clone(), to.name.clone()))
    })
}

/// The order in which the archive's tables are keyed and written: a table
/// whose key follows another's (see [`key_follows`]) after that one, the
/// top of a chain of extensions first; otherwise the archive's order.
fn write_order(map: &TenantMap, archive: &Archive) -> Vec<usize> {
    let follows: Vec<Option<usize>> = archive
        .tables
        .iter()
        .map(|t| {
            let (_, p) = key_follows(map, map.owned(&t.table)?)?;
            archive.tables.iter().position(|x| x.table == p)
        })
        .collect();
    let mut placed = vec![false; archive.tables.len()];
    let mut order = Vec::with_capacity(archive.tables.len());
    while order.len() < archive.tables.len() {
        let before = order.len();
        for i in 0..archive.tables.len() {
            if !placed[i] && follows[i].is_none_or(|p| placed[p]) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            // Keys that follow each other in a circle: archive order.
            for (i, p) in placed.iter_mut().enumerate() {
                if !*p {
                    *p = true;
                    order.push(i);
                }
            }
        }
    }
    order
}

/// The single key column of an owned table whose values can be given new
/// ones (an integer, a UUID or a text key); `None` for composite keys.
fn key_col(o: &crate::map::Owned) -> Option<String> {
    match o.pk.as_slice() {
        [c] if c != "rowid" => Some(c.clone()),
        _ => None,
    }
}

/// A new key in the form of `old`: a UUID (same case) when `old` is one,
/// else `old` with `-2`, `-3`, … appended; free in `table` and not in
/// `used` (which it joins).
fn fresh_text_key(
    db: &dyn Db,
    table: &str,
    column: &str,
    old: &str,
    used: &mut HashSet<Value>,
) -> Result<String> {
    for n in 2u64.. {
        let candidate = if is_uuid(old) {
            uuid_like(old)
        } else {
            format!("{old}-{n}")
        };
        let v = Value::Text(candidate.clone());
        if used.contains(&v) || row_exists(db, table, column, &v)? {
            continue;
        }
        used.insert(v);
        return Ok(candidate);
    }
    unreachable!("some suffix is free")
}

/// A UUID as text: `8-4-4-4-12` hex digits with dashes, or the 32 digits
/// alone (as Django stores a UUID on SQLite), either case.
fn is_uuid(s: &str) -> bool {
    let dashed = s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    dashed || s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A new random UUID written the way `old` is: with or without dashes,
/// upper- or lower-case.
fn uuid_like(old: &str) -> String {
    let mut u = random_uuid();
    if !old.contains('-') {
        u.retain(|c| c != '-');
    }
    if old.chars().any(|c| c.is_ascii_uppercase()) {
        u.make_ascii_uppercase();
    }
    u
}

/// A random version-4 UUID, lowercase.
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The next free id of `table` above `above`.
fn next_id(db: &dyn Db, table: &str, pk: &str, above: i64) -> Result<i64> {
    let r = rows(
        db,
        &format!("SELECT max({}) FROM {}", ident(pk), ident(table)),
        &[],
    )?;
    let max = match r.first().and_then(|r| r.first()) {
        Some(Value::Int(m)) => *m,
        _ => 0,
    };
    Ok(max.max(above) + 1)
}

/// Every declared foreign key of every imported row points at a row that
/// exists (what `foreign_key_check` proves, limited to the imported rows,
/// which are `imported` as read back from the target).
fn check_foreign_keys(db: &dyn Db, map: &TenantMap, imported: &[TableRows]) -> Result<()> {
    for got in imported {
        for k in map
            .keys
            .iter()
            .filter(|k| k.table == got.table && !k.is_virtual && k.part_of.is_none())
        {
            let Some(ci) = got.col(&k.column) else {
                continue;
            };
            let values: HashSet<&Value> = got
                .rows
                .iter()
                .map(|r| &r[ci])
                .filter(|v| **v != Value::Null)
                .collect();
            // Keys into the client's own rows resolve when those rows do.
            if let Some(own) = imported.iter().find(|t| t.table == k.ref_table) {
                if let Some(ri) = own.col(&k.ref_column) {
                    let present: HashSet<&Value> = own.rows.iter().map(|r| &r[ri]).collect();
                    if values.iter().all(|v| present.contains(v)) {
                        continue;
                    }
                }
            }
            for v in values {
                if !row_exists(db, &k.ref_table, &k.ref_column, v)? {
                    return Err(refused(format!(
                        "verification: {}.{} = {v} points to no row of {}",
                        k.table, k.column, k.ref_table
                    )));
                }
            }
        }
        // Keys of several columns hold where a column is NULL (MATCH
        // SIMPLE) or a row has all the values.
        for k in map.composites.iter().filter(|k| k.table == got.table) {
            let Some(idx) = k
                .columns
                .iter()
                .map(|c| got.col(c))
                .collect::<Option<Vec<usize>>>()
            else {
                continue;
            };
            let values: HashSet<Vec<&Value>> = got
                .rows
                .iter()
                .map(|r| idx.iter().map(|&i| &r[i]).collect::<Vec<_>>())
                .filter(|v| !v.contains(&&Value::Null))
                .collect();
            let cond = k
                .ref_columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} = {}", ident(c), db.param(i + 1)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!("SELECT 1 FROM {} WHERE {cond} LIMIT 1", ident(&k.ref_table));
            for v in values {
                let params: Vec<Value> = v.iter().map(|x| (*x).clone()).collect();
                if rows(db, &sql, &params)?.is_empty() {
                    return Err(refused(format!(
                        "verification: {} = ({}) points to no row of {}",
                        k.name(),
                        params
                            .iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        k.ref_table
                    )));
                }
            }
        }
    }
    Ok(())
}

/// References kept because the archive brings their rows back:
/// (table, column, referenced table, referenced column, value).
type KeptRefs = Vec<(String, String, String, String, Value)>;

/// What [`delete_client`] deleted.
struct Deleted {
    /// Rows deleted, in all.
    rows: u64,
    /// The client's rows per owned table that had any, before deletion.
    per_table: BTreeMap<String, u64>,
    /// References from outside that the archive brings back.
    kept: KeptRefs,
}

fn delete_client(db: &dyn Db, map: &TenantMap, archive: &Archive, key: &Value) -> Result<Deleted> {
    let mut kept: KeptRefs = Vec::new();
    // How to find the client's rows in each table, as export does: worked
    // out once per table (it may read the table), since nothing changes
    // until the deletion.
    let mut scopes: HashMap<&str, crate::ClientScope> = HashMap::new();
    for o in &map.owned {
        scopes.insert(o.name.as_str(), client_scope(db, map, o)?);
    }
    // The client's rows, by their keys and the columns keys point at.
    let mut closure: HashMap<String, TableRows> = HashMap::new();
    for o in &map.owned {
        let mut cols: Vec<String> = o.pk.clone();
        for k in map.keys.iter().filter(|k| k.ref_table == o.name) {
            if !cols.contains(&k.ref_column) {
                cols.push(k.ref_column.clone());
            }
        }
        let rows = client_columns_in(db, o, &scopes[o.name.as_str()], key, &cols)?;
        closure.insert(o.name.clone(), rows);
    }
    let per_table = map
        .owned
        .iter()
        .map(|o| (o.name.clone(), closure[&o.name].rows.len() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    // Primary keys of the client's rows, per table.
    let own_pks: HashMap<&str, HashSet<Vec<Value>>> = map
        .owned
        .iter()
        .map(|o| {
            let t = &closure[&o.name];
            let idx: Vec<usize> = o.pk.iter().filter_map(|c| t.col(c)).collect();
            let set = t
                .rows
                .iter()
                .map(|r| idx.iter().map(|&i| r[i].clone()).collect())
                .collect();
            (o.name.as_str(), set)
        })
        .collect();
    // References from outside the client into it.
    for k in &map.keys {
        let Some(target) = map.owned(&k.ref_table) else {
            continue;
        };
        if closure[&target.name].rows.is_empty() {
            continue;
        }
        // A row that reaches the client through its ownership key belongs
        // to the client by definition: nothing outside to look for.
        if map
            .owned(&k.table)
            .and_then(|o| o.owner.as_ref())
            .is_some_and(|own| own == k)
        {
            continue;
        }
        // Values the archive restores under the same key stay valid; only
        // when the client being replaced is the archive's own key space
        // (same client key): another firm's values name other rows.
        let comes_back: HashSet<Value> = if key.plain() != archive.client.plain() {
            HashSet::new()
        } else {
            archive
                .tables
                .iter()
                .find(|t| t.table == k.ref_table)
                .and_then(|t| t.col(&k.ref_column).map(|i| (t, i)))
                .map(|(t, i)| t.rows.iter().map(|r| r[i].clone()).collect())
                .unwrap_or_default()
        };
        // A row's key is selected only to tell the client's own rows; a
        // table that is not owned has none of them (and may have no key at
        // all: PostgreSQL has no rowid).
        let pk: Vec<String> = match map.owned(&k.table) {
            Some(o) => o.pk.clone(),
            None => Vec::new(),
        };
        let select = pk
            .iter()
            .map(|c| format!("x.{}, ", ident(c)))
            .collect::<String>();
        // The client's rows as export takes them.
        let scope = &scopes[target.name.as_str()];
        let sql = format!(
            "{with} SELECT {select}x.{col} FROM {table} x WHERE x.{col} IN (SELECT t0.{refcol} {from} WHERE {cond})",
            with = scope.with,
            col = ident(&k.column),
            table = ident(&k.table),
            refcol = ident(&k.ref_column),
            from = scope.from,
            cond = scope.cond,
        );
        let mut outside = Vec::new();
        let own = own_pks.get(k.table.as_str());
        db.query(&sql, std::slice::from_ref(key), &mut |mut r| {
            let v = r.pop().expect("the column");
            if own.is_some_and(|o| o.contains(&r)) {
                return Ok(());
            }
            if comes_back.contains(&v) {
                kept.push((
                    k.table.clone(),
                    k.column.clone(),
                    k.ref_table.clone(),
                    k.ref_column.clone(),
                    v,
                ));
                return Ok(());
            }
            outside.push(format!("{}.{} = {v}", k.table, k.column));
            Ok(())
        })?;
        if !outside.is_empty() {
            return Err(refused(format!(
                "--replace: {} row(s) outside the client reference rows the archive does not bring back ({}{}), so the client cannot be deleted",
                outside.len(),
                outside.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
                if outside.len() > 5 { "; …" } else { "" }
            )));
        }
    }
    let mut n = 0;
    // Children before parents: the owned tables backwards, then the
    // parents of extensions, each after every table whose key follows it.
    let is_parent = |o: &&crate::map::Owned| !o.extended_by.is_empty() && o.owner.is_none();
    let mut parents: Vec<&crate::map::Owned> = map.owned.iter().filter(is_parent).collect();
    let mut ordered: Vec<&crate::map::Owned> = Vec::new();
    while !parents.is_empty() {
        // A parent no remaining parent follows (extends) goes now.
        let next = parents
            .iter()
            .position(|p| {
                !parents
                    .iter()
                    .any(|q| key_follows(map, q).is_some_and(|(_, to)| to == p.name))
            })
            .unwrap_or(0);
        ordered.push(parents.remove(next));
    }
    let deletion = map
        .owned
        .iter()
        .rev()
        .filter(|o| !is_parent(o))
        .chain(ordered);
    for o in deletion {
        let t = &closure[&o.name];
        let idx: Vec<usize> = o.pk.iter().filter_map(|c| t.col(c)).collect();
        let cond =
            o.pk.iter()
                .enumerate()
                .map(|(i, c)| format!("{} = {}", ident(c), db.param(i + 1)))
                .collect::<Vec<_>>()
                .join(" AND ");
        if let [i] = idx.as_slice() {
            // One key column: delete in batches.
            let keys: Vec<Value> = t.rows.iter().map(|r| r[*i].clone()).collect();
            for chunk in keys.chunks(BATCH) {
                let sql = format!(
                    "DELETE FROM {} WHERE {} IN ({})",
                    ident(&o.name),
                    ident(&o.pk[0]),
                    placeholders(db, chunk.len())
                );
                n += db.execute(&sql, chunk)?;
            }
            continue;
        }
        let sql = format!("DELETE FROM {} WHERE {cond}", ident(&o.name));
        for r in &t.rows {
            let p: Vec<Value> = idx.iter().map(|&i| r[i].clone()).collect();
            n += db.execute(&sql, &p)?;
        }
    }
    Ok(Deleted {
        rows: n,
        per_table,
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uuids_keep_the_form_of_the_old() {
        for old in [
            "6f1c1a8e-7d4b-4a4e-9a59-3b0c2e1f0a01",
            "6F1C1A8E-7D4B-4A4E-9A59-3B0C2E1F0A01",
            "4af9ee280d184e3691d045f161ba3e5e",
        ] {
            assert!(is_uuid(old), "{old}");
            let new = uuid_like(old);
            assert!(is_uuid(&new), "{new}");
            assert_ne!(new, old);
            assert_eq!(new.len(), old.len(), "{new}");
            assert_eq!(
                new.chars().any(|c| c.is_ascii_uppercase()),
                old.chars().any(|c| c.is_ascii_uppercase()),
                "{new}"
            );
        }
        for not in ["c-alpha", "4af9ee280d184e3691d045f161ba3e5", "0002", ""] {
            assert!(!is_uuid(not), "{not}");
        }
    }

    #[test]
    fn tree_steps_count_in_the_codes_own_digits() {
        assert_eq!(to_radix(36, 36, 4), "0010");
        assert_eq!(to_radix(35, 36, 4), "000Z");
        assert_eq!(to_radix(10, 10, 3), "010");
        let rows = |codes: &[&str]| -> Vec<Vec<Value>> {
            codes
                .iter()
                .map(|c| vec![Value::Text(c.to_string())])
                .collect()
        };
        assert_eq!(
            Tree::of(&rows(&["0002", "00020001", "000200010003"]), 0).step,
            4
        );
        // One length, or lengths with no common step: codes, not paths.
        assert_eq!(Tree::of(&rows(&["40010", "40020"]), 0).step, 0);
        assert_eq!(Tree::of(&rows(&["100", "1000"]), 0).step, 0);
        // Lengths with a common step but no code under another: flat.
        assert_eq!(Tree::of(&rows(&["1000", "200010", "3000"]), 0).step, 0);
        assert_eq!(Tree::of(&rows(&["AB", "1Ä2"]), 0).step, 0);
        let t = Tree { step: 4 };
        let moved = vec![("0002".to_string(), "0011".to_string())];
        assert_eq!(t.carried(&moved, "00020001").as_deref(), Some("00110001"));
        assert_eq!(
            t.carried(&moved, "000200010003").as_deref(),
            Some("001100010003")
        );
        assert_eq!(t.carried(&moved, "0003"), None);
        assert_eq!(t.carried(&moved, "0002"), None);
        let dotted = Tree { step: 0 };
        let moved = vec![("1.2".to_string(), "1.5".to_string())];
        assert_eq!(dotted.carried(&moved, "1.2.7").as_deref(), Some("1.5.7"));
        assert_eq!(dotted.carried(&moved, "1.23"), None);
    }
}
