//! One client's books out of a real, open-source, multi-company accounting
//! application: python-accounting (PyPI), its database made and filled by
//! the application itself (`tests/apps/python_accounting_firm.py`), on
//! SQLite and on PostgreSQL. One company is damaged, then restored from its
//! client archive with `--replace`; the application must then compute the
//! same reports for it as before the damage, and the same for the others.
//!
//! `scripts/test.sh` makes the Python environment (`target/venv-apps`);
//! without it this test fails, saying so (it is never skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;
use ledgervault_testkit::pg::PgServer;

fn python() -> PathBuf {
    let p = std::env::var_os("LEDGERVAULT_APPS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv-apps/bin/python")
        });
    assert!(
        p.exists(),
        "{}: missing; `bash scripts/test.sh` makes it (python-accounting from PyPI)",
        p.display()
    );
    p
}

/// Runs one of the application scripts in `tests/apps`; returns the last
/// line it printed (its JSON answer).
fn run_script(script: &str, what: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn app(args: &[&str]) -> String {
    run_script("python_accounting_firm.py", "python-accounting", args)
}

/// The application's own reports for every entity.
fn reports(url: &str, ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| app(&["report", url, id])).collect()
}

fn damage_restore_and_compare(e: &Env, url: &str, db_arg: &str, damage: &dyn Fn()) {
    app(&["make", url]);
    let list: serde_json::Value = serde_json::from_str(&app(&["list", url])).unwrap();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    let cfg = e.root.join("client.toml");
    std::fs::write(&cfg, "[client]\nroot = \"entity\"\n").unwrap();
    let lv = |args: &[&str]| {
        let mut cmd = e.cmd();
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd.arg("-c").arg(&cfg).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Every row of the application's tables is accounted for.
    let (code, out, err) = lv(&["--json", "client", "list", "--check", db_arg]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["adds_up"], true, "{v}");
    assert_eq!(v["clients"].as_array().unwrap().len(), 4);

    let before = reports(url, &ids);
    let (code, _, err) = lv(&[
        "client",
        "backup",
        db_arg,
        "--client",
        "Birch & Sons Carpentry",
    ]);
    assert_eq!(code, Some(0), "{err}");
    damage();
    let damaged = reports(url, &ids);
    assert_ne!(
        damaged[1], before[1],
        "the damage shows in the application's reports"
    );
    let (code, out, err) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        &ids[1],
        "--into",
        db_arg,
        "--replace",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("deleted client"), "{out}");
    let after = reports(url, &ids);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            after[i], before[i],
            "entity {id}: the application's reports"
        );
    }
}

#[test]
fn a_company_of_python_accounting_restored_on_sqlite_reports_as_before() {
    let e = Env::with_repo();
    let db = e.root.join("firm.db");
    let url = format!("sqlite:///{}", db.display());
    let damage = || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "UPDATE line_item SET amount = amount * 3 WHERE entity_id = 333;
             DELETE FROM ledger WHERE entity_id = 333 AND id % 5 = 0;",
        )
        .unwrap();
    };
    damage_restore_and_compare(&e, &url, db.to_str().unwrap(), &damage);
}

#[test]
fn a_company_of_python_accounting_restored_on_postgres_reports_as_before() {
    let pg = PgServer::start();
    pg.createdb("pa");
    let e = Env::with_repo();
    let lv_url = pg.url("pa");
    let sa_url = lv_url.replacen("postgres://", "postgresql://", 1);
    let damage = || {
        pg.psql(
            "pa",
            "UPDATE line_item SET amount = amount * 3 WHERE entity_id = 333;
             DELETE FROM ledger WHERE entity_id = 333 AND id % 5 = 0;",
        );
    };
    // The server's password reaches ledgervault through the environment.
    std::env::set_var("PGPASSWORD", &pg.password);
    damage_restore_and_compare(&e, &sa_url, &lv_url, &damage);
}

/// The reports of a company with the fields that name it by id taken out:
/// its id, and `ledger_secure`, python-accounting's hash chain, which
/// hashes each ledger row with the row whose id is one less in the whole
/// database, so it cannot survive new ids (README, "What cannot be
/// moved").
fn reports_without_ids(report: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(report).unwrap();
    v["entity"].as_object_mut().unwrap().remove("id");
    v["counts"].as_object_mut().unwrap().remove("ledger_secure");
    v
}

/// One company moves from one firm's database into another firm's, made
/// by the application with other companies whose ids overlap: every id
/// the company brings is taken there, so each gets a new one (the shared
/// id table of python-accounting's joined-table inheritance comes along
/// with it). The application then computes the same reports for the moved
/// company as for the original, the other firm's own companies report as
/// before, and the application keeps posting to the moved company.
fn move_into_another_firm(e: &Env, urls: (&str, &str), db_args: (&str, &str)) {
    app(&["make", urls.0]);
    app(&["make", urls.1, "other"]);
    let list = |url: &str| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(&app(&["list", url])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| (x["id"].to_string(), x["name"].as_str().unwrap().to_string()))
            .collect()
    };
    let theirs = list(urls.1);
    assert_eq!(theirs.len(), 3);
    let cfg = e.root.join("client.toml");
    // assignment.assigned_id names a transaction or a balance by id, with
    // no declared key: configured as a key into the shared id table.
    std::fs::write(
        &cfg,
        "[client]\nroot = \"entity\"\n[client.virtual_keys]\n\"assignment.assigned_id\" = \"recyclable.id\"\n",
    )
    .unwrap();
    let lv = |args: &[&str]| {
        let mut cmd = e.cmd();
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd.arg("-c").arg(&cfg).args(args).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let name = "Birch & Sons Carpentry";
    let original = app(&["report", urls.0, name]);
    let theirs_before: Vec<String> = theirs
        .iter()
        .map(|(id, _)| app(&["report", urls.1, id]))
        .collect();
    let (code, out) = lv(&["client", "backup", db_args.0, "--client", name]);
    assert_eq!(code, Some(0), "{out}");
    // The figures README's example gives (the fixture is deterministic).
    assert!(out.contains("596 rows in 14 tables"), "{out}");
    let key = &list(urls.0)[1].0;
    let (code, out) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        key,
        "--into",
        db_args.1,
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("recyclable") && out.contains("keys remapped (taken in the target)"),
        "{out}"
    );
    let (code, out) = lv(&[
        "client", "restore", "latest", "--client", key, "--into", db_args.1,
    ]);
    assert_eq!(code, Some(0), "{out}");
    let now = list(urls.1);
    assert_eq!(now.len(), 4, "{now:?}");
    let moved = now.iter().find(|(_, n)| n == name).expect("moved");
    assert_ne!(&moved.0, key, "its id was taken in the other firm");
    assert_eq!(moved.0, "812", "README's example");
    assert_eq!(
        reports_without_ids(&app(&["report", urls.1, &moved.0])),
        reports_without_ids(&original),
        "the application's own reports of the moved company"
    );
    for ((id, _), before) in theirs.iter().zip(&theirs_before) {
        assert_eq!(
            &app(&["report", urls.1, id]),
            before,
            "the other firm's company {id}"
        );
    }
    // The application goes on: its ids and numbering are free.
    let posted: serde_json::Value =
        serde_json::from_str(&app(&["post", urls.1, &moved.0])).unwrap();
    assert!(posted["posted"].as_i64().is_some(), "{posted}");
}

#[test]
fn a_company_of_python_accounting_moves_into_another_firm_on_sqlite() {
    let e = Env::with_repo();
    let (a, b) = (e.root.join("a.db"), e.root.join("b.db"));
    let urls = (
        format!("sqlite:///{}", a.display()),
        format!("sqlite:///{}", b.display()),
    );
    move_into_another_firm(
        &e,
        (&urls.0, &urls.1),
        (a.to_str().unwrap(), b.to_str().unwrap()),
    );
}

#[test]
fn a_company_of_python_accounting_moves_into_another_firm_on_postgres() {
    let pg = PgServer::start();
    pg.createdb("pa");
    pg.createdb("pb");
    let e = Env::with_repo();
    let (a, b) = (pg.url("pa"), pg.url("pb"));
    let sa = |u: &str| u.replacen("postgres://", "postgresql://", 1);
    std::env::set_var("PGPASSWORD", &pg.password);
    move_into_another_firm(&e, (&sa(&a), &sa(&b)), (&a, &b));
}

/// A restore drill on a schema it was never told about recognises the
/// application's double entry (a side column and an amount per ledger
/// line), passes on the real books, and names the transaction a damaged
/// line unbalances.
#[test]
fn a_drill_recognises_python_accountings_double_entry() {
    let e = Env::with_repo();
    let db = e.root.join("books.db");
    app(&["make", &format!("sqlite:///{}", db.display())]);
    // With the clients' table configured, each entity's trial balance is
    // checked too.
    let cfg = e.root.join("client.toml");
    std::fs::write(&cfg, "[client]\nroot = \"entity\"\n").unwrap();
    let lv = |args: &[&str]| {
        let out = e.cmd().arg("-c").arg(&cfg).args(args).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = lv(&["backup", "-q", db.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lv(&["verify", "latest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "every transaction of ledger nets to zero (amount signed by entry_type, by transaction_id)"
        ),
        "{out}"
    );
    assert!(
        out.contains("each client's trial balance in ledger nets to zero (amount signed by entry_type, by entity_id)"),
        "{out}"
    );
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE ledger SET amount = amount + 1 WHERE id = (SELECT min(id) FROM ledger)",
            [],
        )
        .unwrap();
    let (code, out) = lv(&["backup", "-q", db.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lv(&["verify", "latest"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("FAIL") && out.contains("transaction of ledger"),
        "{out}"
    );
}

/// The same recognition in a drill of the application's PostgreSQL
/// database (a scratch database on the same server).
#[test]
fn a_postgres_drill_recognises_python_accountings_double_entry() {
    let pg = PgServer::start();
    pg.createdb("pa");
    let e = Env::with_repo();
    let url = pg.url("pa");
    std::env::set_var("PGPASSWORD", &pg.password);
    app(&["make", &url.replacen("postgres://", "postgresql://", 1)]);
    let lv = |args: &[&str]| {
        let out = e
            .cmd()
            .env("PGPASSWORD", &pg.password)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = lv(&["backup", "-q", &url]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lv(&["verify", "latest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("every transaction of ledger nets to zero (amount signed by entry_type, by transaction_id)"),
        "{out}"
    );
}

fn tryton(args: &[&str]) -> String {
    run_script("tryton_firm.py", "Tryton", args)
}

/// Tryton (trytond 8.2 with its accounting and invoicing modules, from
/// PyPI), three companies in one PostgreSQL database made through its own
/// API: every row of its 181 tables is accounted for, and one company,
/// damaged, is restored from its archive while Tryton's own trial balance
/// and balance sheet come out as before for every company.
#[test]
fn a_company_of_tryton_restored_on_postgres_reports_as_before() {
    let pg = PgServer::start();
    pg.createdb("ty");
    let e = Env::with_repo();
    let lv_url = pg.url("ty");
    let ty_url = lv_url.replacen("postgres://", "postgresql://", 1);
    std::env::set_var("PGPASSWORD", &pg.password);
    tryton(&["make", &ty_url]);
    let cfg = e.root.join("client.toml");
    // The companies' table, and the users' list of companies as a link:
    // a user may work for several companies.
    std::fs::write(
        &cfg,
        "[client]\nroot = \"company_company\"\n[client.links]\n\"res_user-company_company.user\" = \"keep\"\n",
    )
    .unwrap();
    let lv = |args: &[&str]| {
        let out = e
            .cmd()
            .env("PGPASSWORD", &pg.password)
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = lv(&["client", "list", "--check", &lv_url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("check: every row of every table is accounted for exactly once"),
        "{out}"
    );
    let report = |c: &str| tryton(&["report", &ty_url, c]);
    let before: Vec<String> = ["1", "2", "3"].iter().map(|c| report(c)).collect();
    let (code, out) = lv(&["client", "backup", &lv_url, "--client", "2"]);
    assert_eq!(code, Some(0), "{out}");
    pg.psql(
        "ty",
        "UPDATE account_move_line SET debit = debit * 2, credit = credit * 2
         WHERE move IN (SELECT id FROM account_move WHERE company = 2)",
    );
    assert_ne!(
        report("2"),
        before[1],
        "the damage shows in Tryton's reports"
    );
    let (code, out) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        "2",
        "--into",
        &lv_url,
        "--replace",
    ]);
    assert_eq!(code, Some(0), "{out}");
    for (i, c) in ["1", "2", "3"].iter().enumerate() {
        assert_eq!(report(c), before[i], "company {c}: Tryton's own reports");
    }
}
