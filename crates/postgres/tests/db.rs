//! The per-client layer's view of a real PostgreSQL database.

use ledgervault_postgres::{PgDb, PgTarget};
use ledgervault_tenant::sql::{rows, Db, Value};
use ledgervault_testkit::pg::PgServer;

fn target(pg: &PgServer, db: &str) -> PgTarget {
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{db}",
        pg.user, pg.password, pg.port
    );
    PgTarget::parse(&url).unwrap()
}

#[test]
fn introspection_and_values_round_trip() {
    let pg = PgServer::start();
    pg.createdb("t");
    pg.psql(
        "t",
        "CREATE TABLE parent (id bigserial PRIMARY KEY, code text UNIQUE, a int, b int, UNIQUE (a, b));
         CREATE TABLE child (id serial PRIMARY KEY, parent_id bigint REFERENCES parent(id),
             amount numeric(10,2), day date, ok boolean, data bytea, r double precision);
         CREATE INDEX ON child (day);
         INSERT INTO parent (code) VALUES ('P1');",
    );
    let db = PgDb::connect(&target(&pg, "t")).unwrap();
    assert_eq!(db.tables().unwrap(), vec!["child", "parent"]);
    let cols = db.columns("child").unwrap();
    let names: Vec<(&str, u32)> = cols.iter().map(|c| (c.name.as_str(), c.pk)).collect();
    assert_eq!(
        names,
        vec![
            ("id", 1),
            ("parent_id", 0),
            ("amount", 0),
            ("day", 0),
            ("ok", 0),
            ("data", 0),
            ("r", 0)
        ]
    );
    assert!(cols[0].has_default && cols[0].not_null);
    let fks = db.foreign_keys("child").unwrap();
    assert_eq!(fks.len(), 1);
    assert_eq!(
        (
            fks[0].column.as_str(),
            fks[0].ref_table.as_str(),
            fks[0].ref_column.as_str()
        ),
        ("parent_id", "parent", "id")
    );
    let mut uk = db.unique_keys("parent").unwrap();
    uk.sort();
    assert_eq!(
        uk,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["code".to_string()]
        ]
    );
    let mut ix = db.indexed_columns("child").unwrap();
    ix.sort();
    assert_eq!(ix, vec!["day", "id"]);

    db.begin_write().unwrap();
    let n = db
        .execute(
            "INSERT INTO child (id, parent_id, amount, day, ok, data, r) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                Value::Int(7),
                Value::Int(1),
                Value::Text("12.50".into()),
                Value::Text("2026-11-24".into()),
                Value::Int(1),
                Value::Blob(vec![0, 1, 255]),
                Value::Real(0.25),
            ],
        )
        .unwrap();
    assert_eq!(n, 1);
    db.raise_counter("child", 41).unwrap();
    db.commit().unwrap();
    let got = rows(&db, "SELECT * FROM child WHERE id = $1", &[Value::Int(7)]).unwrap();
    assert_eq!(
        got,
        vec![vec![
            Value::Int(7),
            Value::Int(1),
            Value::Text("12.50".into()),
            Value::Text("2026-11-24".into()),
            Value::Int(1),
            Value::Blob(vec![0, 1, 255]),
            Value::Real(0.25),
        ]]
    );
    assert_eq!(pg.psql("t", "SELECT nextval('child_id_seq')"), "42");
    assert!(db.fk_violations().unwrap().is_empty());
}

/// Keys of several columns on PostgreSQL: read with their referenced
/// columns in the key's own order, checked by `fk_violations`, and a
/// company whose rows reach it only through such keys moves into another
/// firm's database with every key holding.
#[test]
fn keys_of_several_columns_are_read_checked_and_followed() {
    use ledgervault_tenant::{
        export, find_client, import, ImportOptions, Mode, TenantConfig, TenantMap,
    };
    const SCOPED: &str = "
CREATE TABLE company (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE account (id serial PRIMARY KEY, company_id int NOT NULL REFERENCES company(id),
                      code text NOT NULL, UNIQUE (id, company_id), UNIQUE (company_id, code));
CREATE TABLE entry (id serial PRIMARY KEY, account_id int NOT NULL, co int NOT NULL, memo text,
                    FOREIGN KEY (account_id, co) REFERENCES account(id, company_id));";
    let pg = PgServer::start();
    for (db, names) in [("a", ["Ash", "Birch"]), ("b", ["Dogwood", "Elm"])] {
        pg.createdb(db);
        let mut sql = SCOPED.to_string();
        for (n, name) in names.iter().enumerate() {
            let co = n + 1;
            sql += &format!(
                "INSERT INTO company (id, name) VALUES ({co}, '{name}');
                 INSERT INTO account (id, company_id, code) VALUES ({a}, {co}, '1000'), ({b}, {co}, '4000');
                 INSERT INTO entry (account_id, co, memo) VALUES ({a}, {co}, '{name} rent'), ({b}, {co}, '{name} sales');",
                a = co * 10,
                b = co * 10 + 1
            );
        }
        sql += "SELECT setval('company_id_seq', 2); SELECT setval('account_id_seq', 30);";
        pg.psql(db, &sql);
    }
    let a = PgDb::connect(&target(&pg, "a")).unwrap();
    let keys = a.composite_keys("entry").unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].columns, vec!["account_id", "co"]);
    assert_eq!(keys[0].ref_table, "account");
    assert_eq!(keys[0].ref_columns, vec!["id", "company_id"]);

    let cfg = TenantConfig {
        root: Some("company".into()),
        ..Default::default()
    };
    let map = TenantMap::build(&a, &cfg).unwrap();
    assert!(map.owned("entry").is_some(), "{map:?}");
    assert!(map.unfollowed.is_empty(), "{:?}", map.unfollowed);
    let (key, _) = find_client(&a, &map, "Birch").unwrap();
    let archive = export(&a, &map, &key, "postgres").unwrap();
    assert_eq!(archive.counts["entry"], 2);
    drop(a);

    let b = PgDb::connect(&target(&pg, "b")).unwrap();
    let map_b = TenantMap::build(&b, &cfg).unwrap();
    let r = import(
        &b,
        &map_b,
        &cfg,
        &archive,
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
    assert!(b.fk_violations().unwrap().is_empty());
    let moved = pg.psql(
        "b",
        "SELECT string_agg(e.memo || ':' || a.code, ',' ORDER BY e.memo) FROM entry e \
         JOIN account a ON a.id = e.account_id AND a.company_id = e.co \
         JOIN company c ON c.id = e.co WHERE c.name = 'Birch'",
    );
    assert_eq!(moved, "Birch rent:1000,Birch sales:4000");
    assert_eq!(
        pg.psql(
            "b",
            "SELECT count(*) FROM entry e JOIN company c ON c.id = e.co WHERE c.name = 'Elm'"
        ),
        "2",
        "the other firm's Elm keeps its entries"
    );

    // A violation of a key of several columns is found.
    pg.psql(
        "b",
        "ALTER TABLE entry DISABLE TRIGGER ALL; \
         INSERT INTO entry (account_id, co, memo) VALUES (20, 1, 'crossed'); \
         ALTER TABLE entry ENABLE TRIGGER ALL;",
    );
    let bad = b.fk_violations().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "entry");
    assert_eq!(bad[0].2, "account");
}
