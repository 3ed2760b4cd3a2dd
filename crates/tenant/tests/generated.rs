//! Generated schemas: random graphs of foreign keys with nullable keys,
//! several routes to the client, self-references, cycles between tables,
//! integer, UUID and text keys, keys of several columns (an earlier
//! table's key and a column that is not unique), and unique columns that
//! are not keys. For each: every row of a
//! client is exported, a replace in the same firm gives back every table
//! byte for byte, and an import beside another firm's clients brings every
//! row of the client while the other clients stay exactly as they were.

use std::collections::BTreeMap;
use std::path::Path;

use ledgervault_tenant::sql::{ident, rows, Db, Sqlite, Value};
use ledgervault_tenant::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum KeyKind {
    Int,
    Text,
    Uuid,
}

#[derive(Debug, Clone)]
struct Table {
    key: KeyKind,
    /// Parents (earlier tables, 0 = the client table); each key nullable.
    parents: Vec<usize>,
    /// Points at itself (a tree).
    tree: bool,
    /// A nullable key to a later table: a cycle between tables.
    back: Option<usize>,
    /// A key of two columns, `(cid, camount)`, to an earlier table's
    /// `(id, amount)`.
    composite: Option<usize>,
}

#[derive(Debug, Clone)]
struct Shape {
    root_key: KeyKind,
    tables: Vec<Table>,
    /// Per table, per row: for each parent, which row (or None), and the
    /// tree parent (or None).
    seed: u64,
    /// Keys to parents are never NULL: no row without a home, so export
    /// takes each table's rows along its shortest route alone.
    dense: bool,
}

fn key_kind() -> impl Strategy<Value = KeyKind> {
    prop_oneof![Just(KeyKind::Int), Just(KeyKind::Text), Just(KeyKind::Uuid)]
}

fn shape() -> impl Strategy<Value = Shape> {
    (key_kind(), 1usize..5, any::<u64>(), any::<bool>()).prop_flat_map(
        |(root_key, n, seed, dense)| {
            let tables = (0..n)
                .map(|i| {
                    (
                        key_kind(),
                        proptest::collection::btree_set(0..=i, 1..=2.min(i + 1)),
                        any::<bool>(),
                        proptest::option::of(0..n),
                        proptest::option::of(0..n),
                    )
                        .prop_map(
                            move |(key, parents, tree, back, composite)| Table {
                                key,
                                parents: parents.into_iter().collect(),
                                tree,
                                back: back.filter(|&b| b > i),
                                composite: composite.filter(|&c| c < i),
                            },
                        )
                })
                .collect::<Vec<_>>();
            (Just(root_key), tables, Just(seed)).prop_map(move |(root_key, tables, seed)| Shape {
                root_key,
                tables,
                seed,
                dense,
            })
        },
    )
}

fn decl(k: &KeyKind) -> &'static str {
    match k {
        KeyKind::Int => "INTEGER",
        KeyKind::Text | KeyKind::Uuid => "TEXT",
    }
}

/// A key value of the given kind, distinct per (table, n, firm).
fn key_value(k: &KeyKind, table: usize, n: u64, firm: u64) -> Value {
    match k {
        KeyKind::Int => Value::Int((firm * 1000 + n) as i64 + 1),
        KeyKind::Text => Value::Text(format!("t{table}-f{firm}-{n}")),
        KeyKind::Uuid => {
            let h = blake3::hash(format!("{table}/{n}/{firm}").as_bytes()).to_hex();
            let h = h.as_str();
            Value::Text(format!(
                "{}-{}-4{}-8{}-{}",
                &h[..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..32]
            ))
        }
    }
}

/// Makes a firm database of `shape`, with `clients` clients; `firm` makes
/// its keys differ from another firm's.
fn make(path: &Path, s: &Shape, clients: u64, firm: u64) {
    std::fs::write(path, b"").unwrap();
    let db = Sqlite::open_write(path).unwrap();
    db.execute(
        &format!(
            "CREATE TABLE firm_client (id {} PRIMARY KEY, name TEXT NOT NULL, code TEXT UNIQUE)",
            decl(&s.root_key)
        ),
        &[],
    )
    .unwrap();
    for (i, t) in s.tables.iter().enumerate() {
        let mut cols = vec![format!("id {} PRIMARY KEY", decl(&t.key))];
        for &p in &t.parents {
            let (pt, pk) = if p == 0 {
                ("firm_client".to_string(), &s.root_key)
            } else {
                (format!("t{}", p - 1), &s.tables[p - 1].key)
            };
            cols.push(format!("p{p} {} REFERENCES {pt}(id)", decl(pk)));
        }
        if t.tree {
            cols.push(format!("up {} REFERENCES t{i}(id)", decl(&t.key)));
        }
        cols.push("code TEXT UNIQUE".into());
        cols.push("amount INTEGER NOT NULL".into());
        if let Some(j) = t.composite {
            cols.push(format!("cid {}", decl(&s.tables[j].key)));
            cols.push("camount INTEGER".into());
            cols.push(format!(
                "FOREIGN KEY (cid, camount) REFERENCES t{j}(id, amount)"
            ));
        }
        if s.tables.iter().any(|o| o.composite == Some(i)) {
            cols.push("UNIQUE (id, amount)".into());
        }
        db.execute(&format!("CREATE TABLE t{i} ({})", cols.join(", ")), &[])
            .unwrap();
    }
    db.begin_write().unwrap();
    let mut rng = s.seed ^ firm.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut keys: Vec<Vec<Value>> = Vec::new();
    // Per table, per row: its amount.
    let mut amounts: Vec<Vec<i64>> = Vec::new();
    let mut root = Vec::new();
    for c in 0..clients {
        let k = key_value(&s.root_key, 0, c, firm);
        db.execute(
            "INSERT INTO firm_client (id, name, code) VALUES (?1, ?2, ?3)",
            &[
                k.clone(),
                Value::Text(format!("Client {firm}-{c}")),
                // Codes repeat across firms: a unique value to plan for.
                Value::Text(format!("C{c}")),
            ],
        )
        .unwrap();
        root.push(k);
    }
    keys.push(root);
    for (i, t) in s.tables.iter().enumerate() {
        let mut mine: Vec<Value> = Vec::new();
        let mut my_amounts = Vec::new();
        let n = 3 + next() % 6;
        for r in 0..n {
            let k = key_value(&t.key, i + 1, r, firm);
            let mut cols = vec!["id".to_string()];
            let mut vals = vec![k.clone()];
            for &p in &t.parents {
                cols.push(format!("p{p}"));
                // Mostly a parent row, sometimes NULL (another route, or
                // nobody's row).
                let parents = &keys[p];
                vals.push(if (!s.dense && next() % 4 == 0) || parents.is_empty() {
                    Value::Null
                } else {
                    parents[(next() % parents.len() as u64) as usize].clone()
                });
            }
            if t.tree {
                cols.push("up".into());
                vals.push(if mine.is_empty() || next() % 2 == 0 {
                    Value::Null
                } else {
                    mine[(next() % mine.len() as u64) as usize].clone()
                });
            }
            cols.push("code".into());
            vals.push(Value::Text(format!("K{i}-{r}")));
            cols.push("amount".into());
            let amount = (next() % 1000) as i64;
            vals.push(Value::Int(amount));
            if let Some(j) = t.composite {
                // Mostly an earlier row's (key, amount), sometimes NULL.
                let (ks, am) = (&keys[j + 1], &amounts[j]);
                let (cid, camount) = if next() % 4 == 0 {
                    (Value::Null, Value::Null)
                } else {
                    let x = (next() % ks.len() as u64) as usize;
                    (ks[x].clone(), Value::Int(am[x]))
                };
                cols.push("cid".into());
                vals.push(cid);
                cols.push("camount".into());
                vals.push(camount);
            }
            let ph: Vec<String> = (1..=vals.len()).map(|j| format!("?{j}")).collect();
            db.execute(
                &format!(
                    "INSERT INTO t{i} ({}) VALUES ({})",
                    cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
                    ph.join(", ")
                ),
                &vals,
            )
            .unwrap();
            mine.push(k);
            my_amounts.push(amount);
        }
        keys.push(mine);
        amounts.push(my_amounts);
    }
    // Keys back to later tables, closing cycles between tables.
    for (i, t) in s.tables.iter().enumerate() {
        let Some(j) = t.back else { continue };
        db.execute(
            &format!(
                "ALTER TABLE t{i} ADD COLUMN back {} REFERENCES t{j}(id)",
                decl(&s.tables[j].key)
            ),
            &[],
        )
        .unwrap();
        for k in keys[i + 1].clone() {
            if next() % 3 == 0 {
                let target = keys[j + 1][(next() % keys[j + 1].len() as u64) as usize].clone();
                db.execute(
                    &format!("UPDATE t{i} SET back = ?1 WHERE id = ?2"),
                    &[target, k],
                )
                .unwrap();
            }
        }
    }
    db.commit().unwrap();
}

/// Links that leave the client are kept in the same firm (the rows they
/// point to are there) and cut in another.
fn config_with(link: LinkPolicy) -> TenantConfig {
    let mut c = TenantConfig {
        root: Some("firm_client".into()),
        default_link: link,
        ..Default::default()
    };
    c.unique_rules
        .insert("firm_client.code".into(), UniqueRule::Suffix);
    for i in 0..8 {
        c.unique_rules
            .insert(format!("t{i}.code"), UniqueRule::Suffix);
    }
    c
}

fn config() -> TenantConfig {
    config_with(LinkPolicy::Keep)
}

fn contents(path: &Path) -> BTreeMap<String, Vec<Vec<Value>>> {
    let db = Sqlite::open_read(path).unwrap();
    db.tables()
        .unwrap()
        .into_iter()
        .map(|t| {
            let r = rows(&db, &format!("SELECT * FROM {} ORDER BY 1", ident(&t)), &[]).unwrap();
            (t, r)
        })
        .collect()
}

fn export_of(path: &Path, key: &Value) -> Archive {
    let db = Sqlite::open_read(path).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    export(&db, &map, key, "sqlite").unwrap()
}

fn import_into(path: &Path, a: &Archive, mode: Mode, link: LinkPolicy) -> Result<ImportReport> {
    let db = Sqlite::open_write(path).unwrap();
    let cfg = config_with(link);
    let map = TenantMap::build(&db, &cfg).unwrap();
    import(
        &db,
        &map,
        &cfg,
        a,
        &ImportOptions {
            mode,
            dry_run: false,
            set: vec![],
            invariants: vec![],
            replace_other: None,
        },
    )
}

/// Client `key`'s rows of every owned table, found by walking every route
/// from the client table, as export did for every table before it took the
/// shortest route alone where a table has no homeless rows.
fn walked(path: &Path, key: &Value) -> BTreeMap<String, Vec<Vec<Value>>> {
    let db = Sqlite::open_read(path).unwrap();
    let map = TenantMap::build(&db, &config()).unwrap();
    let list = |t: &str, cols: &[String]| {
        cols.iter()
            .map(|c| format!("{t}.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    map.owned
        .iter()
        .map(|o| {
            let own = map.owned_rows_sql(&db, &o.name, true);
            let (from, at_home) = map.at_home_sql(&o.name, &db.param(1));
            let cols: Vec<String> = o.columns.iter().map(|c| c.name.clone()).collect();
            let sql = format!(
                "{} SELECT {} {from} WHERE {} AND {at_home} ORDER BY {}",
                own.with,
                list("t0", &cols),
                own.contains(&o.pk),
                list("t0", &o.pk)
            );
            (
                o.name.clone(),
                rows(&db, &sql, std::slice::from_ref(key)).unwrap(),
            )
        })
        .collect()
}

fn amount(a: &Archive) -> i64 {
    a.tables
        .iter()
        .filter(|t| t.table != "firm_client")
        .map(|t| {
            let i = t.col("amount").unwrap();
            t.rows
                .iter()
                .map(|r| match r[i] {
                    Value::Int(v) => v,
                    _ => 0,
                })
                .sum::<i64>()
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_owned_row_arrives_and_other_clients_stay(s in shape()) {
        let dir = tempfile::tempdir().unwrap();
        let a_db = dir.path().join("a.db");
        make(&a_db, &s, 3, 0);
        let db = Sqlite::open_read(&a_db).unwrap();
        let map = TenantMap::build(&db, &config()).unwrap();
        // The partition adds up on every table, and the quick count of
        // rows that belong to no client agrees with it.
        let parts = partition(&db, &map).unwrap();
        for p in &parts {
            prop_assert!(p.adds_up(), "{p:?}");
        }
        let quick: BTreeMap<String, u64> = unowned_rows(&db, &map).unwrap().into_iter().collect();
        for p in parts.iter().filter(|p| p.kind == "owned") {
            prop_assert_eq!(quick.get(&p.table).copied().unwrap_or(0), p.unowned, "{}", p.table);
        }
        // The listing counts what the partition does: each client's own
        // rows, where no row is shared by clients.
        let listed = list_clients(&db, &map).unwrap();
        for p in parts.iter().filter(|p| p.kind == "owned" && p.cross_client == 0 && p.table != map.root().name) {
            for c in &listed {
                prop_assert_eq!(
                    c.rows.get(&p.table).copied().unwrap_or(0),
                    p.exclusive.get(&c.key.plain()).copied().unwrap_or(0),
                    "{} client {}", p.table, c.key
                );
            }
        }
        drop(db);
        // Every client's export holds what walking every route finds.
        for c in 0..3 {
            let key = key_value(&s.root_key, 0, c, 0);
            let walk = walked(&a_db, &key);
            for t in &export_of(&a_db, &key).tables {
                prop_assert_eq!(&t.rows, &walk[&t.table], "client {} table {}", c, t.table);
            }
        }
        let key = key_value(&s.root_key, 0, 1, 0);
        let a = export_of(&a_db, &key);
        for t in &a.tables {
            prop_assert_eq!(a.counts[&t.table], t.rows.len() as u64);
        }

        // Replace in the same firm: every table byte for byte as before.
        let before = contents(&a_db);
        let r = import_into(&a_db, &a, Mode::Replace, LinkPolicy::Keep);
        prop_assert!(r.as_ref().is_ok_and(|r| r.committed), "{:?}", r);
        prop_assert_eq!(contents(&a_db), before);

        // Beside another firm's clients: the client's rows all arrive, its
        // totals too, and the other clients are exactly as they were.
        let b_db = dir.path().join("b.db");
        make(&b_db, &s, 2, 1);
        let others: Vec<Archive> = (0..2)
            .map(|c| export_of(&b_db, &key_value(&s.root_key, 0, c, 1)))
            .collect();
        let r = import_into(&b_db, &a, Mode::AsNew, LinkPolicy::Nullify);
        prop_assert!(r.as_ref().is_ok_and(|r| r.committed), "{:?}", r);
        let r = r.unwrap();
        let moved = export_of(&b_db, &r.client_to);
        for t in &a.tables {
            prop_assert_eq!(
                moved.counts.get(&t.table).copied().unwrap_or(0),
                t.rows.len() as u64,
                "table {}", t.table
            );
        }
        prop_assert_eq!(amount(&moved), amount(&a));
        for (c, before) in others.iter().enumerate() {
            let now = export_of(&b_db, &key_value(&s.root_key, 0, c as u64, 1));
            prop_assert_eq!(&now.tables, &before.tables, "client {}", c);
        }
    }
}
