//! Per-client export and import on the sample firm, through real SQLite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ledgervault_tenant::sql::{ident, rows, Db, Sqlite, Value};
use ledgervault_tenant::*;

fn firm(dir: &Path, name: &str, clients: u32, seed: u64) -> PathBuf {
    let p = dir.join(name);
    ledgervault_samplefirm::generate(
        &p,
        &ledgervault_samplefirm::FirmOptions {
            clients,
            size: 300_000 * clients as u64,
            seed,
        },
    )
    .unwrap();
    p
}

/// Digest of every table's rows in key order: equal digests, same content.
fn contents(path: &Path) -> BTreeMap<String, String> {
    let db = Sqlite::open_read(path).unwrap();
    let mut out = BTreeMap::new();
    for t in db.tables().unwrap() {
        let pk: Vec<String> = db
            .columns(&t)
            .unwrap()
            .into_iter()
            .filter(|c| c.pk > 0)
            .map(|c| ident(&c.name))
            .collect();
        let order = if pk.is_empty() {
            "rowid".to_string()
        } else {
            pk.join(", ")
        };
        let rs = rows(
            &db,
            &format!("SELECT * FROM {} ORDER BY {order}", ident(&t)),
            &[],
        )
        .unwrap();
        out.insert(t, digest_rows(&rs));
    }
    out
}

/// A client's rows, as an archive holds them (without the creation time).
fn client_tables(path: &Path, key: i64) -> Vec<TableRows> {
    let db = Sqlite::open_read(path).unwrap();
    let map = TenantMap::build(&db, &TenantConfig::default()).unwrap();
    export(&db, &map, &Value::Int(key), "sqlite")
        .unwrap()
        .tables
}

fn archive(path: &Path, key: i64) -> Archive {
    let db = Sqlite::open_read(path).unwrap();
    let map = TenantMap::build(&db, &TenantConfig::default()).unwrap();
    export(&db, &map, &Value::Int(key), "sqlite").unwrap()
}

fn run_import(
    path: &Path,
    a: &Archive,
    config: &TenantConfig,
    opts: ImportOptions,
) -> Result<ImportReport> {
    let db = Sqlite::open_write(path).unwrap();
    let map = TenantMap::build(&db, config).unwrap();
    import(&db, &map, config, a, &opts)
}

fn opts(mode: Mode) -> ImportOptions {
    ImportOptions {
        mode,
        dry_run: false,
        set: Vec::new(),
        invariants: vec![(
            "every journal entry balances".into(),
            "SELECT entry_id FROM journal_lines GROUP BY entry_id HAVING sum(debit_cents) != sum(credit_cents)".into(),
        )],
        replace_other: None,
    }
}

/// Deletes a client's rows directly, deepest tables first.
fn delete_client(path: &Path, a: &Archive) {
    let db = Sqlite::open_write(path).unwrap();
    let map = TenantMap::build(&db, &TenantConfig::default()).unwrap();
    // Accounts are each other's parents: check keys at commit.
    db.begin_write().unwrap();
    for t in a.tables.iter().rev() {
        let o = map.owned(&t.table).unwrap();
        let idx: Vec<usize> = o.pk.iter().map(|c| t.col(c).unwrap()).collect();
        let cond =
            o.pk.iter()
                .enumerate()
                .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
        for r in &t.rows {
            let p: Vec<Value> = idx.iter().map(|&i| r[i].clone()).collect();
            db.execute(&format!("DELETE FROM {} WHERE {cond}", ident(&t.table)), &p)
                .unwrap();
        }
    }
    db.commit().unwrap();
}

/// The clients without cross-client links in the seed-5 firm: 3..=6.
const PLAIN: i64 = 3;

#[test]
fn round_trip_export_delete_import_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let before = contents(&a_db);
    let a = archive(&a_db, PLAIN);
    assert!(a.links.is_empty());
    assert!(a.rows() > 1000);
    // The archive survives its own encoding.
    let a = Archive::decode(&a.encode()).unwrap();
    delete_client(&a_db, &a);
    assert_ne!(contents(&a_db), before);
    let r = run_import(&a_db, &a, &TenantConfig::default(), opts(Mode::New)).unwrap();
    assert!(r.committed);
    assert_eq!(r.client_to, Value::Int(PLAIN));
    assert!(
        r.tables.iter().all(|t| t.remapped == 0),
        "free ids are kept"
    );
    assert_eq!(contents(&a_db), before, "byte for byte the same books");
}

#[test]
fn import_into_another_firm_remaps_colliding_keys_and_self_references() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let b_db = firm(dir.path(), "b.db", 4, 9);
    let a = archive(&a_db, PLAIN);
    let others: Vec<Vec<TableRows>> = (1..=4).map(|k| client_tables(&b_db, k)).collect();
    // Another firm's client holds the same key: it is another client (its
    // row differs), so a plain import goes ahead with new keys, and stops
    // at the code that other client already uses, changing nothing.
    let before_b = contents(&b_db);
    let e = run_import(&b_db, &a, &TenantConfig::default(), opts(Mode::New)).unwrap_err();
    assert!(e.to_string().contains("clients.code"), "{e}");
    assert_eq!(contents(&b_db), before_b);
    // And --replace never deletes that other client without being told.
    let e = run_import(&b_db, &a, &TenantConfig::default(), opts(Mode::Replace)).unwrap_err();
    assert!(e.to_string().contains("--replace-other"), "{e}");
    assert_eq!(contents(&b_db), before_b);
    let mut o = opts(Mode::AsNew);
    o.set = vec![("code".into(), Value::Text("MOVED-3".into()))];
    let r = run_import(&b_db, &a, &TenantConfig::default(), o).unwrap();
    assert!(r.committed);
    assert!(r.tables.iter().any(|t| t.remapped > 0), "{:?}", r.tables);
    let staff = r.shared.iter().find(|s| s.table == "staff").unwrap();
    assert_eq!(
        staff.natural_key.as_deref(),
        Some(&["email".to_string()][..])
    );
    let Value::Int(new_key) = r.client_to else {
        panic!()
    };
    assert_eq!(new_key, 5);
    // Other clients are untouched.
    for (k, before) in (1..=4).zip(others) {
        assert_eq!(client_tables(&b_db, k), before, "client {k}");
    }
    // Account parents (a self-reference) point inside the moved client.
    let db = Sqlite::open_read(&b_db).unwrap();
    let bad = rows(
        &db,
        "SELECT a.id FROM accounts a JOIN accounts p ON p.id = a.parent_id WHERE a.client_id = ?1 AND p.client_id != ?1",
        &[Value::Int(new_key)],
    )
    .unwrap();
    assert!(bad.is_empty());
    let parents = rows(
        &db,
        "SELECT count(*) FROM accounts WHERE client_id = ?1 AND parent_id IS NOT NULL",
        &[Value::Int(new_key)],
    )
    .unwrap();
    assert_ne!(parents[0][0], Value::Int(0));
    // Same rows as the archive apart from keys: counts per table.
    let moved = client_tables(&b_db, new_key);
    for (m, t) in moved.iter().zip(&a.tables) {
        assert_eq!(m.rows.len(), t.rows.len(), "{}", t.table);
    }
}

#[test]
fn cycles_between_rows_are_imported() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    // Two accounts of the client that are each other's parent.
    let db = Sqlite::open_write(&a_db).unwrap();
    let ids = rows(
        &db,
        "SELECT id FROM accounts WHERE client_id = ?1 ORDER BY id LIMIT 2",
        &[Value::Int(PLAIN)],
    )
    .unwrap();
    db.execute(
        "UPDATE accounts SET parent_id = ?1 WHERE id = ?2",
        &[ids[1][0].clone(), ids[0][0].clone()],
    )
    .unwrap();
    db.execute(
        "UPDATE accounts SET parent_id = ?1 WHERE id = ?2",
        &[ids[0][0].clone(), ids[1][0].clone()],
    )
    .unwrap();
    drop(db);
    let a = archive(&a_db, PLAIN);
    let b_db = firm(dir.path(), "b.db", 4, 9);
    let mut o = opts(Mode::AsNew);
    o.set = vec![("code".into(), Value::Text("CYCLE".into()))];
    let r = run_import(&b_db, &a, &TenantConfig::default(), o).unwrap();
    let db = Sqlite::open_read(&b_db).unwrap();
    let cyc = rows(
        &db,
        "SELECT count(*) FROM accounts x JOIN accounts y ON y.id = x.parent_id AND x.id = y.parent_id WHERE x.client_id = ?1",
        std::slice::from_ref(&r.client_to),
    )
    .unwrap();
    assert_eq!(cyc[0][0], Value::Int(2));
}

#[test]
fn replace_restores_the_client_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let a = archive(&a_db, PLAIN);
    // Damage the client: a customer renamed, an entry's lines gone.
    let db = Sqlite::open_write(&a_db).unwrap();
    db.execute(
        "UPDATE customers SET name = 'WRONG' WHERE client_id = ?1",
        &[Value::Int(PLAIN)],
    )
    .unwrap();
    db.execute(
        "DELETE FROM journal_lines WHERE entry_id = (SELECT min(id) FROM journal_entries WHERE client_id = ?1)",
        &[Value::Int(PLAIN)],
    )
    .unwrap();
    drop(db);
    let others: Vec<(i64, Vec<TableRows>)> = [1, 2, 4, 5, 6]
        .iter()
        .map(|&k| (k, client_tables(&a_db, k)))
        .collect();
    // Dry run: a plan, and nothing changes.
    let before = contents(&a_db);
    let mut o = opts(Mode::Replace);
    o.dry_run = true;
    let r = run_import(&a_db, &a, &TenantConfig::default(), o).unwrap();
    assert!(!r.committed && r.replaced_rows > 0);
    assert_eq!(contents(&a_db), before);
    let r = run_import(&a_db, &a, &TenantConfig::default(), opts(Mode::Replace)).unwrap();
    assert!(r.committed);
    assert_eq!(client_tables(&a_db, PLAIN), a.tables);
    for (k, t) in others {
        assert_eq!(client_tables(&a_db, k), t, "client {k}");
    }
}

#[test]
fn replace_keeps_inbound_links_to_rows_it_brings_back_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    // Client 1's entry is the intercompany partner of client 2's.
    let a = archive(&a_db, 1);
    assert_eq!(a.links.len(), 1);
    let mut config = TenantConfig::default();
    config.links.insert(
        "journal_entries.intercompany_entry_id".into(),
        LinkPolicy::Keep,
    );
    // Client 2 points at a row the archive restores under the same key:
    // the replace goes ahead and the link still holds.
    let r = run_import(&a_db, &a, &config, opts(Mode::Replace)).unwrap();
    assert!(r.committed && r.replaced_rows > 0);
    assert_eq!(client_tables(&a_db, 1), a.tables);
    // Now client 2 points at an entry of client 1 made after the archive.
    let db = Sqlite::open_write(&a_db).unwrap();
    db.execute(
        "INSERT INTO journal_entries (client_id, date, memo, source) VALUES (1, '2026-11-23', 'later', 'manual')",
        &[],
    )
    .unwrap();
    db.execute(
        "UPDATE journal_entries SET intercompany_entry_id = (SELECT max(id) FROM journal_entries) WHERE id = (SELECT min(id) FROM journal_entries WHERE client_id = 2)",
        &[],
    )
    .unwrap();
    drop(db);
    let before = contents(&a_db);
    let e = run_import(&a_db, &a, &config, opts(Mode::Replace)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("outside the client reference rows the archive does not bring back")
            && msg.contains("journal_entries.intercompany_entry_id"),
        "{msg}"
    );
    assert!(msg.ends_with("nothing was changed"), "{msg}");
    assert_eq!(contents(&a_db), before);
}

#[test]
fn each_cross_client_link_policy() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let a = archive(&a_db, 1);
    let link = a.links[0].clone();
    assert_eq!(link.other_client, Some(Value::Int(2)));
    let key = "journal_entries.intercompany_entry_id".to_string();
    let fresh = |name: &str| firm(dir.path(), name, 4, 9);
    let as_new = || {
        let mut o = opts(Mode::AsNew);
        o.set = vec![("code".into(), Value::Text("LINKED".into()))];
        o
    };
    // fail (the default): refused, naming the link.
    let b = fresh("fail.db");
    let before = contents(&b);
    let e = run_import(&b, &a, &TenantConfig::default(), as_new()).unwrap_err();
    assert!(e.to_string().contains("cross-client link"), "{e}");
    assert!(e.to_string().contains(&link.to_string()), "{e}");
    assert_eq!(contents(&b), before);
    // keep: the target has a row with that key.
    let b = fresh("keep.db");
    let mut config = TenantConfig::default();
    config.links.insert(key.clone(), LinkPolicy::Keep);
    let r = run_import(&b, &a, &config, as_new()).unwrap();
    assert!(r.links[0].action.starts_with("kept"));
    // keep, but the row it points to is not there: refused.
    let b = fresh("keep-missing.db");
    let db = Sqlite::open_write(&b).unwrap();
    db.execute(
        "DELETE FROM journal_lines WHERE entry_id = ?1",
        std::slice::from_ref(&link.value),
    )
    .unwrap();
    db.execute(
        "UPDATE journal_entries SET intercompany_entry_id = NULL WHERE intercompany_entry_id = ?1",
        std::slice::from_ref(&link.value),
    )
    .unwrap();
    db.execute(
        "DELETE FROM journal_entries WHERE id = ?1",
        std::slice::from_ref(&link.value),
    )
    .unwrap();
    drop(db);
    let e = run_import(&b, &a, &config, as_new()).unwrap_err();
    assert!(
        e.to_string().contains("policy keep, but the target has no"),
        "{e}"
    );
    // nullify: the link is cut.
    let b = fresh("nullify.db");
    config.links.insert(key, LinkPolicy::Nullify);
    let r = run_import(&b, &a, &config, as_new()).unwrap();
    let db = Sqlite::open_read(&b).unwrap();
    let n = rows(
        &db,
        "SELECT count(*) FROM journal_entries WHERE client_id = ?1 AND intercompany_entry_id IS NOT NULL",
        std::slice::from_ref(&r.client_to),
    )
    .unwrap();
    assert_eq!(n[0][0], Value::Int(0));
}

#[test]
fn a_schema_mismatch_is_refused_column_by_column() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let a = archive(&a_db, PLAIN);
    let b = firm(dir.path(), "b.db", 4, 9);
    let db = Sqlite::open_write(&b).unwrap();
    db.execute("ALTER TABLE customers ADD COLUMN loyalty TEXT", &[])
        .unwrap();
    drop(db);
    let before = contents(&b);
    let e = run_import(&b, &a, &TenantConfig::default(), opts(Mode::AsNew)).unwrap_err();
    assert!(
        e.to_string()
            .contains("customers.loyalty: in the target (TEXT), not in the archive"),
        "{e}"
    );
    assert_eq!(contents(&b), before);
}

#[test]
fn a_failure_half_way_leaves_the_target_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let a = archive(&a_db, PLAIN);
    let b = firm(dir.path(), "b.db", 4, 9);
    // The last table's inserts fail, after every other table was written.
    let db = Sqlite::open_write(&b).unwrap();
    db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON payroll_lines BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
        &[],
    )
    .unwrap();
    drop(db);
    let before = contents(&b);
    let mut o = opts(Mode::AsNew);
    o.set = vec![("code".into(), Value::Text("HALF".into()))];
    let e = run_import(&b, &a, &TenantConfig::default(), o).unwrap_err();
    assert!(e.to_string().contains("disk on fire"), "{e}");
    assert_eq!(contents(&b), before);
}

#[test]
fn clients_are_listed_and_found_by_key_code_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let a_db = firm(dir.path(), "a.db", 6, 5);
    let db = Sqlite::open_read(&a_db).unwrap();
    let map = TenantMap::build(&db, &TenantConfig::default()).unwrap();
    let list = list_clients(&db, &map).unwrap();
    assert_eq!(list.len(), 6);
    let a = export(&db, &map, &Value::Int(PLAIN), "sqlite").unwrap();
    assert_eq!(list[PLAIN as usize - 1].total_rows, a.rows());
    let (k, label) = find_client(&db, &map, "3").unwrap();
    assert_eq!(k, Value::Int(3));
    assert_eq!(find_client(&db, &map, &label).unwrap().0, k);
    assert!(find_client(&db, &map, "nobody").is_err());
    // Another root table name, configured.
    let cfg = TenantConfig {
        root: Some("nope".into()),
        ..Default::default()
    };
    assert!(TenantMap::build(&db, &cfg).is_err());
}

/// Not the sample firm: a schema with another client table (configured),
/// AUTOINCREMENT counters and a reference without a declared foreign key.
#[test]
fn a_configured_schema_with_counters_and_virtual_keys() {
    let dir = tempfile::tempdir().unwrap();
    let schema = "CREATE TABLE tenants (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE);
        CREATE TABLE docs (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant INTEGER NOT NULL REFERENCES tenants(id), body TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_ref INTEGER, text TEXT);";
    let make = |name: &str| {
        let p = dir.path().join(name);
        let db = Sqlite::open_write(&{
            rusqlite::Connection::open(&p)
                .unwrap()
                .execute_batch(schema)
                .unwrap();
            p.clone()
        })
        .unwrap();
        drop(db);
        p
    };
    let src = make("src.db");
    let db = Sqlite::open_write(&src).unwrap();
    for (t, docs) in [("acme", 3), ("globex", 2)] {
        db.execute(
            "INSERT INTO tenants (name) VALUES (?1)",
            &[Value::Text(t.into())],
        )
        .unwrap();
        for i in 0..docs {
            db.execute(
                "INSERT INTO docs (tenant, body) VALUES ((SELECT id FROM tenants WHERE name = ?1), ?2)",
                &[Value::Text(t.into()), Value::Text(format!("doc {i}"))],
            )
            .unwrap();
            db.execute(
                "INSERT INTO notes (tenant_ref, text) VALUES ((SELECT id FROM tenants WHERE name = ?1), 'n')",
                &[Value::Text(t.into())],
            )
            .unwrap();
        }
    }
    drop(db);
    let mut config = TenantConfig {
        root: Some("tenants".into()),
        ..Default::default()
    };
    // Without the virtual key, notes are nobody's.
    let plain = TenantMap::build(&Sqlite::open_read(&src).unwrap(), &config).unwrap();
    assert!(plain.owned("notes").is_none());
    config
        .virtual_keys
        .insert("notes.tenant_ref".into(), "tenants.id".into());
    let db = Sqlite::open_read(&src).unwrap();
    let map = TenantMap::build(&db, &config).unwrap();
    assert!(map.owned("notes").is_some());
    let (key, label) = find_client(&db, &map, "acme").unwrap();
    assert_eq!(label, "acme");
    let a = export(&db, &map, &key, "sqlite").unwrap();
    assert_eq!(a.rows(), 1 + 3 + 3);
    drop(db);
    // A target whose docs counter is far ahead (rows were deleted).
    let dst = make("dst.db");
    let t = Sqlite::open_write(&dst).unwrap();
    t.execute("INSERT INTO tenants (name) VALUES ('initech')", &[])
        .unwrap();
    t.execute("INSERT INTO docs (tenant, body) VALUES (1, 'x')", &[])
        .unwrap();
    t.execute(
        "UPDATE sqlite_sequence SET seq = 1000 WHERE name = 'docs'",
        &[],
    )
    .unwrap();
    let tmap = TenantMap::build(&t, &config).unwrap();
    let r = import(
        &t,
        &tmap,
        &config,
        &a,
        &ImportOptions {
            mode: Mode::New,
            dry_run: false,
            set: vec![],
            invariants: vec![],
            replace_other: None,
        },
    )
    .unwrap();
    assert!(r.committed);
    let seq = rows(
        &t,
        "SELECT seq FROM sqlite_sequence WHERE name = 'docs'",
        &[],
    )
    .unwrap();
    assert_eq!(seq[0][0], Value::Int(1000), "the counter never moves back");
    let notes = rows(
        &t,
        "SELECT count(*) FROM notes WHERE tenant_ref = ?1",
        std::slice::from_ref(&r.client_to),
    )
    .unwrap();
    assert_eq!(notes[0][0], Value::Int(3), "virtual keys are remapped too");
    // The next document gets an id above both the counter and the import.
    t.execute("INSERT INTO docs (tenant, body) VALUES (1, 'next')", &[])
        .unwrap();
    let next = rows(&t, "SELECT max(id) FROM docs", &[]).unwrap();
    assert_eq!(next[0][0], Value::Int(1001));
}
