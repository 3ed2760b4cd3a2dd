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
