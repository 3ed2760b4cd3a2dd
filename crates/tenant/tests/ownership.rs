//! Ownership is complete and identity is the client's own, on schemas the
//! sample firm does not have: several routes of keys to the client with
//! NULLs on some, text keys, a client table without a `clients` name, and
//! another firm whose company holds the same key.

use std::path::Path;

use ledgervault_tenant::sql::{rows, Db, Sqlite, Value};
use ledgervault_tenant::*;

/// A multi-company ledger in the shape of the one that lost rows: line
/// items reach the company through an invoice or a bill, the other key
/// NULL; payments through an invoice; a company tree (parent company) that
/// must not merge companies; a line with neither key (unowned); settings
/// of the firm (no company at all).
const SCHEMA: &str = "
CREATE TABLE company (id TEXT PRIMARY KEY, name TEXT NOT NULL, tax_no TEXT, position_code TEXT UNIQUE,
                      parent_id TEXT REFERENCES company(id));
CREATE TABLE invoice (id INTEGER PRIMARY KEY, company_id TEXT NOT NULL REFERENCES company(id), no TEXT);
CREATE TABLE bill (id INTEGER PRIMARY KEY, company_id TEXT NOT NULL REFERENCES company(id), no TEXT);
CREATE TABLE line_item (id INTEGER PRIMARY KEY, invoice_id INTEGER REFERENCES invoice(id),
                        bill_id INTEGER REFERENCES bill(id), amount INTEGER NOT NULL);
CREATE INDEX line_item_invoice ON line_item (invoice_id);
CREATE TABLE payment (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL REFERENCES invoice(id), amount INTEGER);
CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT);
";

fn ledger(path: &Path, companies: &[(&str, &str, &str, &str)]) {
    // An empty file is an empty SQLite database.
    std::fs::write(path, b"").unwrap();
    let db = Sqlite::open_write(path).unwrap();
    for stmt in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
        db.execute(stmt, &[]).unwrap();
    }
    db.execute("INSERT INTO settings VALUES ('currency', 'EUR')", &[])
        .unwrap();
    let mut id = 0i64;
    for (n, (key, name, tax, pos)) in companies.iter().enumerate() {
        db.execute(
            "INSERT INTO company (id, name, tax_no, position_code) VALUES (?1, ?2, ?3, ?4)",
            &[
                Value::Text(key.to_string()),
                Value::Text(name.to_string()),
                Value::Text(tax.to_string()),
                Value::Text(pos.to_string()),
            ],
        )
        .unwrap();
        for i in 0..4 {
            id += 1;
            db.execute(
                "INSERT INTO invoice (id, company_id, no) VALUES (?1, ?2, ?3)",
                &[
                    Value::Int(id),
                    Value::Text(key.to_string()),
                    Value::Text(format!("INV-{i}")),
                ],
            )
            .unwrap();
            db.execute(
                "INSERT INTO bill (id, company_id, no) VALUES (?1, ?2, ?3)",
                &[
                    Value::Int(id),
                    Value::Text(key.to_string()),
                    Value::Text(format!("BILL-{i}")),
                ],
            )
            .unwrap();
            for j in 0..3 {
                // Invoice lines, then bill lines: the other key NULL.
                db.execute(
                    "INSERT INTO line_item (invoice_id, bill_id, amount) VALUES (?1, NULL, ?2)",
                    &[Value::Int(id), Value::Int(100 * (n as i64 + 1) + j)],
                )
                .unwrap();
                db.execute(
                    "INSERT INTO line_item (invoice_id, bill_id, amount) VALUES (NULL, ?1, ?2)",
                    &[Value::Int(id), Value::Int(-50 - j)],
                )
                .unwrap();
            }
            db.execute(
                "INSERT INTO payment (invoice_id, amount) VALUES (?1, 10)",
                &[Value::Int(id)],
            )
            .unwrap();
        }
    }
    // A line of nobody's (both keys NULL).
    db.execute(
        "INSERT INTO line_item (invoice_id, bill_id, amount) VALUES (NULL, NULL, 1)",
        &[],
    )
    .unwrap();
}

fn config() -> TenantConfig {
    TenantConfig {
        root: Some("company".into()),
        ..Default::default()
    }
}

fn count(path: &Path, sql: &str) -> i64 {
    let db = Sqlite::open_read(path).unwrap();
    match rows(&db, sql, &[]).unwrap()[0][0] {
        Value::Int(n) => n,
        ref v => panic!("{v:?}"),
    }
}

const FIRM: [(&str, &str, &str, &str); 3] = [
    ("c-alpha", "Alpha Ltd", "TAX-1", "1.1"),
    ("c-beta", "Beta GmbH", "TAX-2", "1.2"),
    ("c-gamma", "Gamma SA", "TAX-3", "1.3"),
];

#[test]
fn rows_on_every_route_are_the_clients_and_the_partition_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("firm.db");
    ledger(&p, &FIRM);
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    let a = export(&db, &map, &Value::Text("c-beta".into()), "sqlite").unwrap();
    let lines = a.tables.iter().find(|t| t.table == "line_item").unwrap();
    // 4 invoices and 4 bills of 3 lines each: 24, half with invoice_id NULL.
    assert_eq!(lines.rows.len(), 24, "every route counts");
    let payments = a.tables.iter().find(|t| t.table == "payment").unwrap();
    assert_eq!(payments.rows.len(), 4);
    // The archive records its counts, and refuses to be read short.
    assert_eq!(a.counts["line_item"], 24);
    let back = Archive::decode(&a.encode()).unwrap();
    assert_eq!(back.counts, a.counts);
    let mut short = a.clone();
    short.tables[3].rows.pop();
    let e = Archive::decode(&short.encode()).unwrap_err();
    assert!(e.to_string().contains("incomplete or altered"), "{e}");

    // Every row of every table is accounted for: each company's, shared,
    // and the one line nobody owns, named as such.
    let parts = partition(&db, &map).unwrap();
    for p in &parts {
        assert!(p.adds_up(), "{p:?}");
    }
    let line = parts.iter().find(|p| p.table == "line_item").unwrap();
    assert_eq!(line.total, 73);
    assert_eq!(line.unowned, 1);
    assert_eq!(line.cross_client, 0);
    assert_eq!(line.exclusive.values().sum::<u64>(), 72);
    assert_eq!(line.exclusive["c-beta"], 24);
    let settings = parts.iter().find(|p| p.table == "settings").unwrap();
    assert_eq!(settings.kind, "firm");
    // The listing agrees.
    let list = list_clients(&db, &map).unwrap();
    let beta = list
        .iter()
        .find(|c| c.key == Value::Text("c-beta".into()))
        .unwrap();
    assert_eq!(beta.rows["line_item"], 24);
    drop(db);

    // Round trip: delete Beta entirely, import the archive: identical.
    let before = count(&p, "SELECT count(*) FROM line_item");
    let w = Sqlite::open_write(&p).unwrap();
    let map = TenantMap::build(&w, &config()).unwrap();
    let r = import(&w, &map, &config(), &a, &options(Mode::Replace)).unwrap();
    assert!(r.committed);
    let replaced = r.replaced.expect("the client is named");
    assert_eq!(replaced.key, Value::Text("c-beta".into()));
    assert_eq!(replaced.rows["line_item"], 24, "{replaced:?}");
    drop(w);
    assert_eq!(count(&p, "SELECT count(*) FROM line_item"), before);
    assert_eq!(
        count(&p, "SELECT count(*) FROM line_item l JOIN bill b ON b.id = l.bill_id WHERE b.company_id = 'c-beta'"),
        12
    );
}

#[test]
fn rows_whose_keys_dangle_belong_to_no_client_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("firm.db");
    ledger(&p, &FIRM);
    // Keys that lead nowhere (foreign keys are not enforced): an invoice of
    // a company that is gone, a payment of an invoice that is gone, and a
    // line of that payment's invoice.
    rusqlite::Connection::open(&p)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO invoice (id, company_id, no) VALUES (9001, 'c-gone', 'X-1');
             INSERT INTO payment (id, invoice_id, amount) VALUES (9002, 8888, 5);
             INSERT INTO line_item (id, invoice_id, bill_id, amount) VALUES (9003, 9001, NULL, 7);",
        )
        .unwrap();
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    let quick: std::collections::BTreeMap<String, u64> =
        unowned_rows(&db, &map).unwrap().into_iter().collect();
    let parts = partition(&db, &map).unwrap();
    for p in parts.iter().filter(|p| p.kind == "owned") {
        assert_eq!(
            quick.get(&p.table).copied().unwrap_or(0),
            p.unowned,
            "{}: {quick:?}",
            p.table
        );
    }
    assert_eq!(quick.get("invoice"), Some(&1), "{quick:?}");
    assert_eq!(quick.get("payment"), Some(&1), "{quick:?}");
    // The line of the dangling invoice, and the one nobody owned before.
    assert_eq!(quick.get("line_item"), Some(&2), "{quick:?}");
    assert!(!quick.contains_key("bill"), "{quick:?}");
}

#[test]
fn the_client_is_found_by_its_own_identity_never_by_an_incidental_unique_column() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    ledger(&src, &FIRM);
    let db = Sqlite::open_read(&src).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    let a = export(&db, &map, &Value::Text("c-alpha".into()), "sqlite").unwrap();
    drop(db);
    let replace = |other: Option<&str>| ImportOptions {
        mode: Mode::Replace,
        dry_run: false,
        set: vec![],
        invariants: vec![],
        replace_other: other.map(|k| Value::Text(k.into())),
    };

    // Another firm where Alpha's position code "1.1" belongs to Delta, and
    // Alpha itself is absent: Delta is never taken for Alpha.
    let other = dir.path().join("other.db");
    ledger(
        &other,
        &[
            ("c-delta", "Delta BV", "TAX-9", "1.1"),
            ("c-echo", "Echo AB", "TAX-8", "2.1"),
        ],
    );
    let w = Sqlite::open_write(&other).unwrap();
    let map = TenantMap::build(&w, &config()).unwrap();
    let delta_before = count(
        &other,
        "SELECT count(*) FROM invoice WHERE company_id = 'c-delta'",
    );
    let e = import(&w, &map, &config(), &a, &replace(None)).unwrap_err();
    // Nothing matched Alpha, so nothing is deleted; the position code then
    // collides on insert and the whole import is undone.
    assert!(e.to_string().contains("position_code"), "{e}");
    drop(w);
    assert_eq!(
        count(
            &other,
            "SELECT count(*) FROM invoice WHERE company_id = 'c-delta'"
        ),
        delta_before
    );

    // A firm where Alpha's key belongs to another company: --replace
    // refuses, naming it, unless told which to replace.
    let same_key = dir.path().join("same-key.db");
    ledger(&same_key, &[("c-alpha", "Zeta Inc", "TAX-7", "9.9")]);
    let w = Sqlite::open_write(&same_key).unwrap();
    let map = TenantMap::build(&w, &config()).unwrap();
    let e = import(&w, &map, &config(), &a, &replace(None)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("--replace-other c-alpha") && msg.contains("Zeta Inc"),
        "{msg}"
    );
    let r = import(&w, &map, &config(), &a, &replace(Some("c-alpha"))).unwrap();
    assert!(r.committed);
    assert_eq!(r.replaced.unwrap().label, "Zeta Inc");
    drop(w);
    assert_eq!(
        count(
            &same_key,
            "SELECT count(*) FROM company WHERE name = 'Alpha Ltd'"
        ),
        1
    );

    // With a configured identity (the tax number): found by it whatever
    // its key; ambiguous when the key names another company.
    let mut cfg = config();
    cfg.client_key = Some(vec!["tax_no".into()]);
    let renamed = dir.path().join("renamed.db");
    ledger(
        &renamed,
        &[
            ("c-a1", "Alpha Ltd (new ERP)", "TAX-1", "7.7"),
            ("c-other", "Other", "TAX-5", "7.8"),
        ],
    );
    let w = Sqlite::open_write(&renamed).unwrap();
    let map = TenantMap::build(&w, &cfg).unwrap();
    let mut dry = replace(None);
    dry.dry_run = true;
    let r = import(&w, &map, &cfg, &a, &dry).unwrap();
    let old = r.replaced.expect("named in the dry run");
    assert_eq!(old.key, Value::Text("c-a1".into()));
    assert!(old.found_by.contains("tax_no"), "{}", old.found_by);
    drop(w);
    // An archive whose tax number is NULL never matches another company
    // whose tax number is NULL too.
    let nulls = dir.path().join("nulls.db");
    ledger(&nulls, &FIRM);
    let w = Sqlite::open_write(&nulls).unwrap();
    w.execute("UPDATE company SET tax_no = NULL", &[]).unwrap();
    drop(w);
    let db = Sqlite::open_read(&nulls).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let a_null = export(&db, &map, &Value::Text("c-alpha".into()), "sqlite").unwrap();
    drop(db);
    let other = dir.path().join("other-nulls.db");
    ledger(&other, &[("c-zulu", "Zulu", "TAX-0", "3.1")]);
    let w = Sqlite::open_write(&other).unwrap();
    w.execute("UPDATE company SET tax_no = NULL", &[]).unwrap();
    let map = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map, &cfg, &a_null, &replace(None)).unwrap();
    assert!(r.replaced.is_none(), "Zulu is not Alpha: {:?}", r.replaced);
    drop(w);
    assert_eq!(
        count(&other, "SELECT count(*) FROM company WHERE name = 'Zulu'"),
        1
    );

    let ambiguous = dir.path().join("ambiguous.db");
    ledger(
        &ambiguous,
        &[
            ("c-alpha", "Not Alpha", "TAX-4", "1.0"),
            ("c-x", "Alpha", "TAX-1", "1.5"),
        ],
    );
    let w = Sqlite::open_write(&ambiguous).unwrap();
    let map = TenantMap::build(&w, &cfg).unwrap();
    let before = count(&ambiguous, "SELECT count(*) FROM invoice");
    let e = import(&w, &map, &cfg, &a, &replace(Some("c-alpha"))).unwrap_err();
    assert!(e.to_string().contains("cannot be told apart"), "{e}");
    drop(w);
    assert_eq!(count(&ambiguous, "SELECT count(*) FROM invoice"), before);
}

#[test]
fn clients_with_text_keys_are_found_by_key_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("firm.db");
    ledger(&p, &FIRM);
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    let (k, label) = find_client(&db, &map, "Gamma SA").unwrap();
    assert_eq!(k, Value::Text("c-gamma".into()));
    assert_eq!(label, "Gamma SA");
    let (k, _) = find_client(&db, &map, "c-beta").unwrap();
    assert_eq!(k, Value::Text("c-beta".into()));
    assert!(find_client(&db, &map, "nobody").is_err());
}

#[test]
fn text_and_uuid_keys_are_regenerated_and_unique_codes_planned_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("firm.db");
    // One firm with text keys, one with UUID keys.
    ledger(&p, &FIRM);
    let u = dir.path().join("uuid.db");
    ledger(
        &u,
        &[
            (
                "6f1c1a8e-7d4b-4a4e-9a59-3b0c2e1f0a01",
                "Acme Ltd",
                "T1",
                "10.01",
            ),
            (
                "0b5d5e2a-1c3f-4f7e-8a2d-9e4b6c7d8e02",
                "Beta GmbH",
                "T2",
                "10.02",
            ),
        ],
    );
    let as_new = |dry_run: bool| ImportOptions {
        mode: Mode::AsNew,
        dry_run,
        set: vec![],
        invariants: vec![],
        replace_other: None,
    };
    for (path, key) in [
        (&p, "c-alpha"),
        (&u, "6f1c1a8e-7d4b-4a4e-9a59-3b0c2e1f0a01"),
    ] {
        let db = Sqlite::open_read(path).unwrap();
        let map = TenantMap::build(&db, &config()).unwrap();
        let a = export(&db, &map, &Value::Text(key.into()), "sqlite").unwrap();
        drop(db);
        let companies = count(path, "SELECT count(*) FROM company");
        // Beside itself in the same firm: the position code is the
        // original's. Without a rule, every such value is listed and
        // nothing is written.
        let w = Sqlite::open_write(path).unwrap();
        let map = TenantMap::build(&w, &config()).unwrap();
        let e = import(&w, &map, &config(), &a, &as_new(false)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("company.position_code"), "{msg}");
        assert!(msg.contains("unique_rules"), "{msg}");
        drop(w);
        assert_eq!(count(path, "SELECT count(*) FROM company"), companies);
        // With the next code at the same level: planned in the dry run,
        // then imported with a new key of the same form.
        let mut cfg = config();
        cfg.unique_rules
            .insert("company.position_code".into(), UniqueRule::NextAtLevel);
        let w = Sqlite::open_write(path).unwrap();
        let map = TenantMap::build(&w, &cfg).unwrap();
        let plan = import(&w, &map, &cfg, &a, &as_new(true)).unwrap();
        assert_eq!(
            plan.unique_conflicts.len(),
            1,
            "{:?}",
            plan.unique_conflicts
        );
        let r = import(&w, &map, &cfg, &a, &as_new(false)).unwrap();
        assert!(r.committed);
        assert_eq!(
            r.unique_conflicts[0].resolved,
            plan.unique_conflicts[0].resolved
        );
        let Value::Text(new_key) = &r.client_to else {
            panic!("{:?}", r.client_to)
        };
        assert_ne!(new_key, key);
        if key.len() == 36 {
            assert_eq!(new_key.len(), 36, "a UUID stays a UUID: {new_key}");
            assert_eq!(new_key.as_bytes()[14], b'4');
        } else {
            assert_eq!(new_key, "c-alpha-2");
        }
        drop(w);
        assert_eq!(count(path, "SELECT count(*) FROM company"), companies + 1);
        let lines = |k: &str| {
            count(
                path,
                &format!(
                    "SELECT count(*) FROM line_item l LEFT JOIN invoice i ON i.id = l.invoice_id LEFT JOIN bill b ON b.id = l.bill_id WHERE coalesce(i.company_id, b.company_id) = '{k}'"
                ),
            )
        };
        assert_eq!(lines(new_key), 24);
        assert_eq!(lines(key), 24, "the original is untouched");
        let code: String = {
            let db = Sqlite::open_read(path).unwrap();
            match &rows(
                &db,
                &format!("SELECT position_code FROM company WHERE id = '{new_key}'"),
                &[],
            )
            .unwrap()[0][0]
            {
                Value::Text(t) => t.clone(),
                v => panic!("{v:?}"),
            }
        };
        let want = if key.len() == 36 { "10.03" } else { "1.4" };
        assert_eq!(code, want);
    }
}

/// A unique code given a new value is carried into the rows that refer to
/// it by value.
#[test]
fn a_changed_code_is_carried_into_rows_that_refer_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("codes.db");
    std::fs::write(&p, b"").unwrap();
    let db = Sqlite::open_write(&p).unwrap();
    for stmt in [
        "CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id), code TEXT UNIQUE NOT NULL)",
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, acct_code TEXT NOT NULL REFERENCES acct(code), amount INTEGER)",
        "INSERT INTO company VALUES (1, 'One'), (2, 'Two')",
        "INSERT INTO acct VALUES (1, 1, '1000'), (2, 1, '4000'), (3, 2, '2000')",
        "INSERT INTO entry VALUES (1, '1000', 5), (2, '4000', -5), (3, '2000', 7)",
    ] {
        db.execute(stmt, &[]).unwrap();
    }
    drop(db);
    let mut cfg = TenantConfig {
        root: Some("company".into()),
        ..Default::default()
    };
    cfg.unique_rules
        .insert("acct.code".into(), UniqueRule::Suffix);
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let a = export(&db, &map, &Value::Int(1), "sqlite").unwrap();
    assert_eq!(a.counts["entry"], 2);
    drop(db);
    let w = Sqlite::open_write(&p).unwrap();
    let map = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map, &cfg, &a, &options(Mode::AsNew)).unwrap();
    assert!(r.committed);
    drop(w);
    // The copy's entries point at the copy's accounts, not the original's.
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM entry e JOIN acct a ON a.code = e.acct_code WHERE a.code LIKE '%-2'"
        ),
        2
    );
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM entry WHERE acct_code IN ('1000', '4000')"
        ),
        2
    );
}

/// Keys of several columns, as multi-tenant schemas scope every key by
/// company: `(company_id, account_id)` into `account(company_id, id)`.
/// Entries reach the company only through such keys, lines through an
/// entry's, tags by a code that is unique only within a company. Moved
/// into the same firm and into another whose ids overlap, every row
/// arrives, each key of several columns holds, the entries point at the
/// moved company's own accounts, and the other companies stay as they were.
#[test]
fn keys_of_several_columns_are_followed_and_rewritten_column_by_column() {
    const SCOPED: &str = "
CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE account (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id),
                      code TEXT NOT NULL, UNIQUE (company_id, id), UNIQUE (company_id, code));
CREATE TABLE tag (company_id INTEGER NOT NULL REFERENCES company(id), code TEXT NOT NULL,
                  label TEXT, PRIMARY KEY (company_id, code));
CREATE TABLE entry (id INTEGER PRIMARY KEY, co INTEGER NOT NULL, account_id INTEGER NOT NULL,
                    tag_code TEXT, memo TEXT,
                    UNIQUE (co, id),
                    FOREIGN KEY (co, account_id) REFERENCES account(company_id, id),
                    FOREIGN KEY (co, tag_code) REFERENCES tag(company_id, code));
CREATE TABLE line (id INTEGER PRIMARY KEY, co INTEGER NOT NULL, entry_id INTEGER NOT NULL,
                   amount INTEGER NOT NULL,
                   FOREIGN KEY (co, entry_id) REFERENCES entry(co, id));
";
    fn firm(path: &Path, names: &[&str], first_id: i64) {
        std::fs::write(path, b"").unwrap();
        let db = Sqlite::open_write(path).unwrap();
        for stmt in SCOPED.split(';').filter(|s| !s.trim().is_empty()) {
            db.execute(stmt, &[]).unwrap();
        }
        let mut id = first_id;
        for (n, name) in names.iter().enumerate() {
            let co = n as i64 + 1;
            let i = |x: i64| Value::Int(x);
            let t = |x: &str| Value::Text(x.into());
            db.execute("INSERT INTO company VALUES (?1, ?2)", &[i(co), t(name)])
                .unwrap();
            db.execute("INSERT INTO tag VALUES (?1, 'rent', ?2)", &[i(co), t(name)])
                .unwrap();
            let mut accounts = Vec::new();
            for code in ["1000", "4000"] {
                id += 1;
                db.execute(
                    "INSERT INTO account VALUES (?1, ?2, ?3)",
                    &[i(id), i(co), t(code)],
                )
                .unwrap();
                accounts.push(id);
            }
            for e in 0..3 {
                id += 1;
                let entry = id;
                let tag = if e == 0 { t("rent") } else { Value::Null };
                db.execute(
                    "INSERT INTO entry VALUES (?1, ?2, ?3, ?4, ?5)",
                    &[
                        i(entry),
                        i(co),
                        i(accounts[e % 2]),
                        tag,
                        t(&format!("{name} {e}")),
                    ],
                )
                .unwrap();
                for amount in [100 * (co + 1), -100 * (co + 1)] {
                    id += 1;
                    db.execute(
                        "INSERT INTO line VALUES (?1, ?2, ?3, ?4)",
                        &[i(id), i(co), i(entry), i(amount)],
                    )
                    .unwrap();
                }
            }
        }
    }
    // Each entry with its company's account (by code) and its lines' sum.
    let book = |path: &Path, name: &str| -> Vec<Vec<Value>> {
        let db = Sqlite::open_read(path).unwrap();
        rows(
            &db,
            "SELECT e.memo, a.code, e.tag_code, t.label, (SELECT sum(amount) FROM line l WHERE l.co = e.co AND l.entry_id = e.id),                     (SELECT count(*) FROM line l WHERE l.co = e.co AND l.entry_id = e.id) \
             FROM entry e JOIN company c ON c.id = e.co \
             JOIN account a ON a.company_id = e.co AND a.id = e.account_id \
             LEFT JOIN tag t ON t.company_id = e.co AND t.code = e.tag_code \
             WHERE c.name = ?1 ORDER BY e.memo",
            &[Value::Text(name.into())],
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    firm(&a, &["Ash", "Birch"], 0);
    // The other firm's ids overlap the first's, and its company 2 is Elm.
    firm(&b, &["Dogwood", "Elm"], 0);
    let cfg = config_for("company");
    let db = Sqlite::open_read(&a).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    assert!(map.unfollowed.is_empty(), "{:?}", map.unfollowed);
    for t in ["account", "tag", "entry", "line"] {
        assert!(map.owned(t).is_some(), "{t} is owned: {map:?}");
    }
    for p in partition(&db, &map).unwrap() {
        assert!(p.adds_up(), "{p:?}");
        assert_eq!(p.unowned, 0, "{p:?}");
    }
    let (key, _) = find_client(&db, &map, "Birch").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    assert_eq!(archive.counts["entry"], 3);
    assert_eq!(archive.counts["line"], 6);
    assert_eq!(archive.counts["tag"], 1);
    drop(db);
    let original = book(&a, "Birch");
    assert_eq!(original.len(), 3);

    let dogwood = book(&b, "Dogwood");
    let elm = book(&b, "Elm");
    for (target, mode) in [(&a, Mode::AsNew), (&b, Mode::New)] {
        let w = Sqlite::open_write(target).unwrap();
        let m = TenantMap::build(&w, &cfg).unwrap();
        let set = if mode == Mode::AsNew {
            vec![("name".to_string(), Value::Text("Birch copy".into()))]
        } else {
            vec![]
        };
        let r = import(
            &w,
            &m,
            &cfg,
            &archive,
            &ImportOptions {
                mode,
                dry_run: false,
                set,
                invariants: vec![],
                replace_other: None,
            },
        )
        .unwrap();
        assert!(r.committed);
        assert!(w.fk_violations().unwrap().is_empty(), "{target:?}");
        drop(w);
        let name = if mode == Mode::AsNew {
            "Birch copy"
        } else {
            "Birch"
        };
        assert_eq!(book(target, name), original, "{target:?}");
    }
    assert_eq!(book(&a, "Birch"), original, "the original stays");
    assert_eq!(
        book(&b, "Dogwood"),
        dogwood,
        "the other firm's companies stay"
    );
    assert_eq!(book(&b, "Elm"), elm);
    // Nothing of the moved company points into another company.
    for target in [&a, &b] {
        assert_eq!(
            count(
                target,
                "SELECT count(*) FROM line l JOIN entry e ON e.id = l.entry_id WHERE e.co <> l.co"
            ),
            0
        );
    }
}

/// Primary keys of several columns are never given new values: one that
/// includes the client's key moves with it; one the target already holds
/// is listed before anything is written, not left to fail as an insert's
/// error; and replacing the client in place takes its own values back.
#[test]
fn primary_keys_of_several_columns_are_planned_not_left_to_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pk.db");
    std::fs::write(&p, b"").unwrap();
    let db = Sqlite::open_write(&p).unwrap();
    for stmt in [
        "CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE period (company_id INTEGER NOT NULL REFERENCES company(id), year INTEGER NOT NULL, closed INTEGER, PRIMARY KEY (company_id, year))",
        "CREATE TABLE rate (company_id INTEGER NOT NULL REFERENCES company(id), day TEXT NOT NULL, currency TEXT NOT NULL, value INTEGER, PRIMARY KEY (day, currency))",
        "INSERT INTO company VALUES (1, 'Ash'), (2, 'Birch')",
        "INSERT INTO period VALUES (1, 2025, 1), (1, 2026, 0), (2, 2026, 0)",
        "INSERT INTO rate VALUES (1, '2026-01-02', 'EUR', 108), (2, '2026-01-02', 'USD', 100)",
    ] {
        db.execute(stmt, &[]).unwrap();
    }
    drop(db);
    let cfg = config_for("company");
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let (key, _) = find_client(&db, &map, "Ash").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    drop(db);
    let w = Sqlite::open_write(&p).unwrap();
    let m = TenantMap::build(&w, &cfg).unwrap();
    let e = import(&w, &m, &cfg, &archive, &options(Mode::AsNew)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("rate.day+currency = \"2026-01-02\"+\"EUR\""),
        "{msg}"
    );
    assert!(!msg.contains("period"), "{msg}");
    // In place, over itself: its own values come back.
    let r = import(&w, &m, &cfg, &archive, &options(Mode::Replace)).unwrap();
    assert!(r.committed);
    assert_eq!(count(&p, "SELECT count(*) FROM period"), 3);
    // Without the clashing rate, the copy is made: its periods carry its
    // new key.
    w.execute("DELETE FROM rate WHERE company_id = 1", &[])
        .unwrap();
    let r = import(&w, &m, &cfg, &archive, &options(Mode::AsNew)).unwrap();
    assert!(r.committed);
    drop(w);
    assert_eq!(count(&p, "SELECT count(*) FROM period"), 5);
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM rate WHERE currency = 'EUR' AND company_id <> 1"
        ),
        1
    );
}

/// A number under `next_at_level` that is taken moves to the next free
/// number, and the rows that refer to it by value follow (a reference to
/// the old number would point at another client's row).
#[test]
fn a_renumbered_code_is_followed_by_the_rows_that_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("num.db");
    std::fs::write(&p, b"").unwrap();
    let db = Sqlite::open_write(&p).unwrap();
    for stmt in [
        "CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE account (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id), number INTEGER NOT NULL UNIQUE)",
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id), account_number INTEGER REFERENCES account(number), amount INTEGER)",
        "INSERT INTO company VALUES (1, 'Ash'), (2, 'Birch')",
        "INSERT INTO account VALUES (1, 1, 4000), (2, 2, 5000)",
        "INSERT INTO entry VALUES (1, 1, 4000, 10), (2, 2, 5000, 20)",
    ] {
        db.execute(stmt, &[]).unwrap();
    }
    drop(db);
    let mut cfg = config_for("company");
    cfg.unique_rules
        .insert("account.number".into(), UniqueRule::NextAtLevel);
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let (key, _) = find_client(&db, &map, "Ash").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    drop(db);
    let w = Sqlite::open_write(&p).unwrap();
    let m = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &m, &cfg, &archive, &options(Mode::AsNew)).unwrap();
    assert!(r.committed);
    drop(w);
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM entry e JOIN account a ON a.number = e.account_number \
             WHERE a.company_id = e.company_id"
        ),
        3,
        "every entry names its own company's account"
    );
}

/// `FOREIGN KEY (a, b) REFERENCES t` without columns names t's primary
/// key, in its order.
#[test]
fn a_key_of_several_columns_without_its_columns_names_the_primary_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pkref.db");
    std::fs::write(&p, b"").unwrap();
    let db = Sqlite::open_write(&p).unwrap();
    for stmt in [
        "CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE acct (company_id INTEGER NOT NULL REFERENCES company(id), code TEXT NOT NULL, PRIMARY KEY (company_id, code))",
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, co INTEGER NOT NULL, acct_code TEXT NOT NULL, FOREIGN KEY (co, acct_code) REFERENCES acct)",
        "INSERT INTO company VALUES (1, 'Ash'), (2, 'Birch')",
        "INSERT INTO acct VALUES (1, '1000'), (2, '1000')",
        "INSERT INTO entry VALUES (1, 1, '1000'), (2, 2, '1000')",
    ] {
        db.execute(stmt, &[]).unwrap();
    }
    let keys = db.composite_keys("entry").unwrap();
    assert_eq!(keys[0].ref_columns, vec!["company_id", "code"]);
    drop(db);
    let cfg = config_for("company");
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    assert!(map.owned("entry").is_some());
    let (key, _) = find_client(&db, &map, "Ash").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    drop(db);
    let w = Sqlite::open_write(&p).unwrap();
    let m = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &m, &cfg, &archive, &options(Mode::AsNew)).unwrap();
    assert!(r.committed);
    assert!(w.fk_violations().unwrap().is_empty());
}

/// A key of several columns of which no column names a row alone is not
/// followed, and the map says so by name instead of leaving its rows out
/// silently.
#[test]
fn keys_of_several_columns_that_cannot_be_followed_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("composite.db");
    std::fs::write(&p, b"").unwrap();
    let db = Sqlite::open_write(&p).unwrap();
    for stmt in [
        "CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id), book TEXT, code TEXT, UNIQUE (book, code))",
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, book TEXT, acct_code TEXT, FOREIGN KEY (book, acct_code) REFERENCES acct(book, code))",
    ] {
        db.execute(stmt, &[]).unwrap();
    }
    let map = TenantMap::build(&db, &config_for("company")).unwrap();
    assert_eq!(map.unfollowed.len(), 1, "{:?}", map.unfollowed);
    assert!(
        map.unfollowed[0].starts_with("entry(book, acct_code) points to acct"),
        "{:?}",
        map.unfollowed
    );
    assert!(map.owned("entry").is_none());
}

/// Tree paths as tree libraries store them (django-treebeard's
/// materialized paths: fixed-width steps of four base-36 digits, unique
/// across the whole table, so every company's accounts share one tree).
/// Moved into another firm whose roots hold the same paths, the company's
/// root gets the next free path at its level and every descendant's path
/// follows it, so the tree stays a tree.
#[test]
fn tree_paths_move_with_their_root_at_the_next_free_place() {
    const TREE: &str = "
CREATE TABLE company (id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL UNIQUE);
CREATE TABLE account (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES company(id),
                      path TEXT NOT NULL UNIQUE, depth INTEGER NOT NULL, name TEXT NOT NULL);
";
    fn firm(path: &Path, companies: &[(&str, &str)]) {
        std::fs::write(path, b"").unwrap();
        let db = Sqlite::open_write(path).unwrap();
        for stmt in TREE.split(';').filter(|s| !s.trim().is_empty()) {
            db.execute(stmt, &[]).unwrap();
        }
        for (n, (name, root)) in companies.iter().enumerate() {
            let co = Value::Int(n as i64 + 1);
            db.execute(
                "INSERT INTO company (id, name, path) VALUES (?1, ?2, ?3)",
                &[
                    co.clone(),
                    Value::Text(name.to_string()),
                    Value::Text(root.to_string()),
                ],
            )
            .unwrap();
            for (step, label) in [
                ("", "root"),
                ("0001", "assets"),
                ("00010001", "cash"),
                ("00010002", "bank"),
                ("0002", "liabilities"),
                ("000A", "equity"),
                ("000A0001", "retained"),
            ] {
                db.execute(
                    "INSERT INTO account (company_id, path, depth, name) VALUES (?1, ?2, ?3, ?4)",
                    &[
                        co.clone(),
                        Value::Text(format!("{root}{step}")),
                        Value::Int(((root.len() + step.len()) / 4) as i64),
                        Value::Text(format!("{name} {label}")),
                    ],
                )
                .unwrap();
            }
        }
    }
    // Each account of a company: its name, depth and path below the root,
    // and whether its parent's path is an account of the same company.
    let tree = |path: &Path, company: &str| -> Vec<Vec<Value>> {
        let db = Sqlite::open_read(path).unwrap();
        rows(
            &db,
            "SELECT a.name, a.depth, substr(a.path, length(c.path) + 1), \
                    length(a.path) = 4 OR EXISTS (SELECT 1 FROM account p WHERE p.company_id = a.company_id \
                        AND p.path = substr(a.path, 1, length(a.path) - 4)), \
                    length(a.path) = 4 * a.depth AND substr(a.path, 1, 4) = c.path \
             FROM account a JOIN company c ON c.id = a.company_id WHERE c.name = ?1 ORDER BY a.name",
            &[Value::Text(company.into())],
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    firm(&a, &[("Ash", "0001"), ("Birch", "000Z")]);
    firm(&b, &[("Dogwood", "000Z"), ("Elm", "0010"), ("Fir", "0001")]);
    let original = tree(&a, "Birch");
    assert_eq!(original.len(), 7);
    for r in &original {
        assert_eq!((&r[3], &r[4]), (&Value::Int(1), &Value::Int(1)), "{r:?}");
    }
    let mut cfg = config_for("company");
    for t in ["company.path", "account.path"] {
        cfg.unique_rules.insert(t.into(), UniqueRule::NextAtLevel);
    }
    let db = Sqlite::open_read(&a).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let (key, _) = find_client(&db, &map, "Birch").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    drop(db);
    let others: Vec<_> = ["Dogwood", "Elm", "Fir"].map(|c| tree(&b, c)).to_vec();
    let w = Sqlite::open_write(&b).unwrap();
    let map_b = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map_b, &cfg, &archive, &options(Mode::New)).unwrap();
    assert!(r.committed);
    drop(w);
    // Only the roots collided ("000Z" is Dogwood's): in base 36 the next
    // free root after "000Z" is "0011", as "0010" is Elm's.
    let conflicts: Vec<(String, Vec<Value>)> = r
        .unique_conflicts
        .iter()
        .map(|c| (c.table.clone(), c.resolved.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        conflicts,
        vec![
            ("company".to_string(), vec![Value::Text("0011".into())]),
            ("account".to_string(), vec![Value::Text("0011".into())]),
        ]
    );
    assert_eq!(tree(&b, "Birch"), original, "the tree moved whole");
    assert_eq!(
        count(&b, "SELECT count(*) FROM account WHERE path LIKE '0011%'"),
        7
    );
    for (c, before) in ["Dogwood", "Elm", "Fir"].iter().zip(&others) {
        assert_eq!(&tree(&b, c), before, "{c}");
    }
}

/// An import in `mode` that writes, with nothing set and no invariants.
fn options(mode: Mode) -> ImportOptions {
    ImportOptions {
        mode,
        dry_run: false,
        set: vec![],
        invariants: vec![],
        replace_other: None,
    }
}

fn config_for(root: &str) -> TenantConfig {
    TenantConfig {
        root: Some(root.into()),
        ..Default::default()
    }
}

/// Joined-table inheritance, as SQLAlchemy and Django lay it out: every
/// object's id comes from one parent table that has no client column, and
/// each child's primary key is also its key to that parent. A polymorphic
/// reference (an id with no declared key) is configured as a virtual key to
/// the parent. Moved into another firm whose ids overlap, the parent rows
/// come with the client, children keep their parents' new ids, and every
/// reference follows.
#[test]
fn parents_of_extensions_move_with_the_client_into_another_firm() {
    const INHERIT: &str = "
CREATE TABLE object (id INTEGER PRIMARY KEY, kind TEXT NOT NULL);
CREATE TABLE firm_client (id INTEGER PRIMARY KEY REFERENCES object(id), name TEXT NOT NULL UNIQUE);
CREATE TABLE doc (id INTEGER PRIMARY KEY REFERENCES object(id), client INTEGER NOT NULL REFERENCES firm_client(id), total INTEGER);
CREATE TABLE doc_line (id INTEGER PRIMARY KEY REFERENCES object(id), doc INTEGER REFERENCES doc(id), client INTEGER NOT NULL REFERENCES firm_client(id), amount INTEGER);
CREATE TABLE allocation (id INTEGER PRIMARY KEY, client INTEGER NOT NULL REFERENCES firm_client(id), target_id INTEGER, amount INTEGER);
";
    fn firm(path: &Path, names: &[&str]) {
        std::fs::write(path, b"").unwrap();
        let db = Sqlite::open_write(path).unwrap();
        for stmt in INHERIT.split(';').filter(|s| !s.trim().is_empty()) {
            db.execute(stmt, &[]).unwrap();
        }
        let mut next = 0i64;
        let mut object = |kind: &str| {
            next += 1;
            db.execute(
                "INSERT INTO object VALUES (?1, ?2)",
                &[Value::Int(next), Value::Text(kind.into())],
            )
            .unwrap();
            next
        };
        let mut inserts: Vec<(String, Vec<Value>)> = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let c = object("client");
            inserts.push((
                "INSERT INTO firm_client VALUES (?1, ?2)".into(),
                vec![Value::Int(c), Value::Text(name.to_string())],
            ));
            for d in 0..3 {
                let doc = object("doc");
                inserts.push((
                    "INSERT INTO doc VALUES (?1, ?2, ?3)".into(),
                    vec![Value::Int(doc), Value::Int(c), Value::Int(30 + d)],
                ));
                for l in 0..3 {
                    let line = object("line");
                    inserts.push((
                        "INSERT INTO doc_line VALUES (?1, ?2, ?3, ?4)".into(),
                        vec![
                            Value::Int(line),
                            Value::Int(doc),
                            Value::Int(c),
                            Value::Int(10 + d + l + n as i64),
                        ],
                    ));
                }
                inserts.push((
                    "INSERT INTO allocation (client, target_id, amount) VALUES (?1, ?2, ?3)".into(),
                    vec![Value::Int(c), Value::Int(doc), Value::Int(5)],
                ));
            }
        }
        for (sql, p) in inserts {
            db.execute(&sql, &p).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    firm(&a, &["Ash", "Birch", "Cedar"]);
    firm(&b, &["Dogwood", "Elm"]);
    let cfg = TenantConfig {
        root: Some("firm_client".into()),
        virtual_keys: [("allocation.target_id".to_string(), "object.id".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let db = Sqlite::open_read(&a).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let parent = map.owned("object").expect("the parent table is owned");
    assert_eq!(parent.extended_by.len(), 3, "{parent:?}");
    // Every row of the parent is some client's: the partition adds up with
    // nothing unowned.
    for p in partition(&db, &map).unwrap() {
        assert!(p.adds_up(), "{p:?}");
        assert_eq!(p.unowned, 0, "{p:?}");
        assert_eq!(p.cross_client, 0, "{p:?}");
    }
    let (key, _) = find_client(&db, &map, "Birch").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    assert_eq!(archive.counts["object"], 1 + 3 + 9);
    drop(db);

    let before_b = |sql: &str| count(&b, sql);
    let others = before_b("SELECT sum(amount) FROM doc_line");
    let w = Sqlite::open_write(&b).unwrap();
    let map_b = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map_b, &cfg, &archive, &options(Mode::New)).unwrap();
    assert!(r.committed);
    drop(w);
    // Birch's ids were taken in the other firm: each got a new parent row,
    // and its children and references carry the new ids.
    let object = r.tables.iter().find(|t| t.table == "object").unwrap();
    assert_eq!(object.remapped, 13, "{r:?}");
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM doc_line l JOIN object o ON o.id = l.id AND o.kind = 'line' \
             JOIN doc d ON d.id = l.doc JOIN object od ON od.id = d.id AND od.kind = 'doc' \
             JOIN firm_client c ON c.id = l.client AND c.id = d.client \
             JOIN object oc ON oc.id = c.id AND oc.kind = 'client' WHERE c.name = 'Birch'"
        ),
        9
    );
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM allocation a JOIN doc d ON d.id = a.target_id AND d.client = a.client \
             JOIN firm_client c ON c.id = a.client WHERE c.name = 'Birch'"
        ),
        3,
        "the configured polymorphic reference follows the new ids"
    );
    assert_eq!(
        count(
            &b,
            "SELECT sum(amount) FROM doc_line WHERE client IN (SELECT id FROM firm_client WHERE name <> 'Birch')"
        ),
        others,
        "the other firm's own clients are untouched"
    );
    assert_eq!(count(&b, "SELECT count(*) FROM object"), 2 * 13 + 13);
    let w = Sqlite::open_read(&b).unwrap();
    assert!(w.fk_violations().unwrap().is_empty());
    drop(w);

    // Back in its own firm, after some of its lines were deleted (their
    // parent rows left behind, extended by nothing): the parents are taken
    // as they are, so the client keeps every id it had.
    let objects = count(&a, "SELECT count(*) FROM object");
    let w = Sqlite::open_write(&a).unwrap();
    w.execute(
        "DELETE FROM doc_line WHERE client = (SELECT id FROM firm_client WHERE name = 'Birch') AND id % 2 = 0",
        &[],
    )
    .unwrap();
    let map_a = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map_a, &cfg, &archive, &options(Mode::Replace)).unwrap();
    drop(w);
    let object = r.tables.iter().find(|t| t.table == "object").unwrap();
    assert_eq!(object.remapped, 0, "{r:?}");
    assert!(object.reused > 0, "{r:?}");
    assert_eq!(r.tables.iter().map(|t| t.remapped).sum::<u64>(), 0);
    assert_eq!(count(&a, "SELECT count(*) FROM object"), objects);
    assert_eq!(
        count(&a, "SELECT count(*) FROM doc_line WHERE client = (SELECT id FROM firm_client WHERE name = 'Birch')"),
        9
    );
}

/// Two levels of inheritance, and a branch: `italian` extends
/// `restaurant`, which extends `place`; `bar` extends `place` too. Only
/// the leaves name their client. Every level is the client's, a place of
/// another client that points at this client's place is not pulled in,
/// a unique code of the parent is planned like any other, the hierarchy
/// moves into another firm with every level on the same new id, and an
/// archive of the old layout (parents as shared rows) still restores.
#[test]
fn hierarchies_of_extensions_move_whole() {
    const SCHEMA: &str = "
CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE place (id INTEGER PRIMARY KEY, city TEXT, uid TEXT UNIQUE, near_id INTEGER REFERENCES place(id));
CREATE TABLE restaurant (id INTEGER PRIMARY KEY REFERENCES place(id), seats INTEGER);
CREATE TABLE italian (id INTEGER PRIMARY KEY REFERENCES restaurant(id), client_id INTEGER NOT NULL REFERENCES clients(id), pasta TEXT);
CREATE TABLE bar (id INTEGER PRIMARY KEY REFERENCES place(id), client_id INTEGER NOT NULL REFERENCES clients(id), beers INTEGER);
CREATE TABLE review (id INTEGER PRIMARY KEY, place_id INTEGER NOT NULL REFERENCES place(id), stars INTEGER);
";
    fn firm(path: &Path, names: &[&str]) {
        std::fs::write(path, b"").unwrap();
        let db = Sqlite::open_write(path).unwrap();
        for stmt in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
            db.execute(stmt, &[]).unwrap();
        }
        let mut id = 0i64;
        let mut first_place = None;
        for (c, name) in names.iter().enumerate() {
            let c = c as i64 + 1;
            db.execute(
                "INSERT INTO clients VALUES (?1, ?2)",
                &[Value::Int(c), Value::Text(name.to_string())],
            )
            .unwrap();
            for k in 0..2 {
                id += 1;
                // Another client's bar may point at the first client's place.
                let near = if c > 1 {
                    first_place.map(Value::Int)
                } else {
                    None
                };
                db.execute(
                    "INSERT INTO place VALUES (?1, ?2, ?3, NULL)",
                    &[
                        Value::Int(id),
                        Value::Text(format!("city {k}")),
                        Value::Text(format!("u{id}")),
                    ],
                )
                .unwrap();
                first_place.get_or_insert(id);
                db.execute(
                    "INSERT INTO restaurant VALUES (?1, ?2)",
                    &[Value::Int(id), Value::Int(20 + k)],
                )
                .unwrap();
                db.execute(
                    "INSERT INTO italian VALUES (?1, ?2, 'carbonara')",
                    &[Value::Int(id), Value::Int(c)],
                )
                .unwrap();
                id += 1;
                db.execute(
                    "INSERT INTO place VALUES (?1, 'harbour', ?2, ?3)",
                    &[
                        Value::Int(id),
                        Value::Text(format!("u{id}")),
                        near.unwrap_or(Value::Null),
                    ],
                )
                .unwrap();
                db.execute(
                    "INSERT INTO bar VALUES (?1, ?2, ?3)",
                    &[Value::Int(id), Value::Int(c), Value::Int(5 + k)],
                )
                .unwrap();
                // A review of each place: it reaches the client only
                // through the place, a parent.
                for place in [id - 1, id] {
                    db.execute(
                        "INSERT INTO review (place_id, stars) VALUES (?1, ?2)",
                        &[Value::Int(place), Value::Int(3 + c)],
                    )
                    .unwrap();
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    firm(&a, &["Ash", "Birch"]);
    firm(&b, &["Cedar", "Dogwood", "Elm"]);
    let mut cfg = config_for("clients");
    cfg.unique_rules
        .insert("place.uid".into(), UniqueRule::Suffix);
    // The cross-client pointer of a place is a link: cut on import.
    cfg.links
        .insert("place.near_id".into(), LinkPolicy::Nullify);
    let db = Sqlite::open_read(&a).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let place = map.owned("place").expect("owned through its children");
    assert_eq!(place.extended_by.len(), 2, "{place:?}");
    assert!(map.owned("restaurant").is_some());
    for p in partition(&db, &map).unwrap() {
        assert!(p.adds_up(), "{p:?}");
        assert_eq!(p.unowned, 0, "{p:?}");
        assert_eq!(p.cross_client, 0, "{p:?}");
    }
    let (key, _) = find_client(&db, &map, "Ash").unwrap();
    let archive = export(&db, &map, &key, "sqlite").unwrap();
    // Ash's two restaurants and two bars: four places, none of Birch's.
    assert_eq!(archive.counts["place"], 4);
    assert_eq!(archive.counts["restaurant"], 2);
    assert_eq!(archive.counts["review"], 4, "reached through its place");
    drop(db);

    // Into the other firm, whose ids and codes overlap.
    let opts = ImportOptions {
        mode: Mode::New,
        dry_run: false,
        set: vec![],
        invariants: vec![],
        replace_other: None,
    };
    let w = Sqlite::open_write(&b).unwrap();
    let map_b = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map_b, &cfg, &archive, &opts).unwrap();
    assert!(r.committed);
    assert!(!r.unique_conflicts.is_empty(), "codes u1.. are taken there");
    drop(w);
    let whole = "SELECT count(*) FROM italian i JOIN restaurant r ON r.id = i.id JOIN place p ON p.id = r.id \
                 JOIN clients c ON c.id = i.client_id WHERE c.name = 'Ash'";
    assert_eq!(count(&b, whole), 2, "every level on the same new id");
    assert_eq!(
        count(&b, "SELECT count(*) FROM bar x JOIN place p ON p.id = x.id JOIN clients c ON c.id = x.client_id WHERE c.name = 'Ash'"),
        2
    );
    assert!(Sqlite::open_read(&b)
        .unwrap()
        .fk_violations()
        .unwrap()
        .is_empty());

    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM review r JOIN bar x ON x.id = r.place_id \
             JOIN clients c ON c.id = x.client_id WHERE c.name = 'Ash' AND r.stars = 4"
        ),
        2,
        "the reviews follow their places' new ids"
    );

    // An archive written before parents were owned held them as shared
    // rows: it restores into a fresh copy of the firm all the same.
    let mut old = archive.clone();
    for t in ["place", "restaurant"] {
        let i = old.tables.iter().position(|x| x.table == t).unwrap();
        let moved = old.tables.remove(i);
        old.counts.remove(t);
        old.shared.push(moved);
    }
    let c = dir.path().join("c.db");
    firm(&c, &["Fir"]);
    let w = Sqlite::open_write(&c).unwrap();
    let map_c = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map_c, &cfg, &old, &opts).unwrap();
    assert!(r.committed);
    drop(w);
    assert_eq!(count(&c, &whole.replace("b.db", "c.db")), 2);

    // A table the config gives a natural key stays shared: no parent.
    let mut shared = cfg.clone();
    shared
        .natural_keys
        .insert("place".into(), vec!["uid".into()]);
    let db = Sqlite::open_read(&a).unwrap();
    let m = TenantMap::build(&db, &shared).unwrap();
    assert!(m.owned("place").is_none() && m.shared("place").is_some());
}

/// Rows that name their client by a number the client table holds beside
/// its key (`invoice.client_no` to `client.number`): the client whose
/// number it is owns them, whatever the number's value as a key would
/// name. Client 1 has number 2, client 2 has number 7.
#[test]
fn rows_that_name_the_client_by_its_number_are_that_clients() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("firm.db");
    std::fs::write(&p, b"").unwrap();
    {
        let db = Sqlite::open_write(&p).unwrap();
        for stmt in [
            "CREATE TABLE client (id INTEGER PRIMARY KEY, number INTEGER NOT NULL UNIQUE, name TEXT)",
            "CREATE TABLE invoice (id INTEGER PRIMARY KEY, client_no INTEGER NOT NULL REFERENCES client(number))",
            "CREATE TABLE line (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL REFERENCES invoice(id), amount INTEGER)",
            "INSERT INTO client VALUES (1, 2, 'Number two'), (2, 7, 'Number seven')",
            "INSERT INTO invoice VALUES (100, 2), (101, 7), (102, 7)",
            "INSERT INTO line VALUES (1000, 100, 5), (1001, 101, 6), (1002, 102, 7), (1003, 102, 8)",
        ] {
            db.execute(stmt, &[]).unwrap();
        }
    }
    let cfg = TenantConfig::default();
    let db = Sqlite::open_read(&p).unwrap();
    let map = TenantMap::build(&db, &cfg).unwrap();
    let ids = |a: &Archive, t: &str| -> Vec<Value> {
        a.tables
            .iter()
            .find(|x| x.table == t)
            .unwrap()
            .rows
            .iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let one = export(&db, &map, &Value::Int(1), "sqlite").unwrap();
    assert_eq!(ids(&one, "invoice"), vec![Value::Int(100)]);
    assert_eq!(ids(&one, "line"), vec![Value::Int(1000)]);
    let two = export(&db, &map, &Value::Int(2), "sqlite").unwrap();
    assert_eq!(ids(&two, "invoice"), vec![Value::Int(101), Value::Int(102)]);
    assert_eq!(ids(&two, "line").len(), 3);
    // Nothing is left out, and the quick count agrees.
    for part in partition(&db, &map).unwrap() {
        assert!(part.adds_up(), "{part:?}");
        assert_eq!(part.unowned, 0, "{part:?}");
    }
    assert!(unowned_rows(&db, &map).unwrap().is_empty());
    drop(db);
    // Replacing client 2 from its archive touches nothing of client 1's.
    let w = Sqlite::open_write(&p).unwrap();
    let map = TenantMap::build(&w, &cfg).unwrap();
    let r = import(&w, &map, &cfg, &two, &options(Mode::Replace)).unwrap();
    assert!(r.committed);
    drop(w);
    assert_eq!(
        count(&p, "SELECT count(*) FROM line WHERE invoice_id = 100"),
        1
    );
    assert_eq!(count(&p, "SELECT count(*) FROM invoice"), 3);
    assert_eq!(count(&p, "SELECT sum(amount) FROM line"), 26);
}
