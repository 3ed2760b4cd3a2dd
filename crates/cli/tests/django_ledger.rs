//! One company's books out of django-ledger (PyPI), a multi-entity
//! double-entry ledger for Django, its databases made and filled through
//! the application's own models (`tests/apps/django_ledger_firm.py`), on
//! SQLite and on PostgreSQL.
//!
//! Every key is a UUID (32 hex digits on SQLite, a native `uuid` on
//! PostgreSQL), and the entity, unit and account tables are
//! django-treebeard trees whose `path` is unique across the whole database:
//! another firm's database holds the same paths for other companies. One
//! company moves into another firm's database; the application then
//! computes the same reports for it as for the original, the other firm's
//! companies report as before, and the application keeps working (a new
//! journal entry, a new company). Back home, a journal entry posted by
//! mistake is undone by restoring the company over itself with
//! `--replace`, and the other companies are untouched.
//!
//! `scripts/test.sh` makes the Python environment (`target/venv-django`);
//! without it these tests fail, saying so (they are never skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;
use ledgervault_testkit::pg::PgServer;

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv-django/bin/python");
    assert!(
        p.exists(),
        "{}: missing; `bash scripts/test.sh` makes it (django-ledger from PyPI)",
        p.display()
    );
    p
}

/// Runs the application script; returns the last line it printed.
fn app(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/django_ledger_firm.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "django-ledger {args:?}: {}",
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

const OURS: [&str; 3] = [
    "Acme Bakery Ltd",
    "Birch & Sons Carpentry",
    "Cobalt IT Consulting",
];
const THEIRS: [&str; 2] = ["Elm Street Florist", "Fir Tree Nursery"];
const MOVED: &str = "Birch & Sons Carpentry";

/// The configuration a firm writes for django-ledger: the client table,
/// and what to do with the unique values another firm's database holds
/// too (tree paths take the next free place, slugs a suffix).
const CONFIG: &str = r#"[client]
root = "django_ledger_entitymodel"

[client.unique_rules]
"django_ledger_entitymodel.path" = "next_at_level"
"django_ledger_entityunitmodel.path" = "next_at_level"
"django_ledger_accountmodel.path" = "next_at_level"
"django_ledger_entitymodel.slug" = "suffix"
"django_ledger_chartofaccountmodel.slug" = "suffix"
"#;

/// django-treebeard's own check of every tree finds nothing wrong, and no
/// account sits under another chart's account.
fn trees_are_sound(url: &str, after: &str) {
    let v: serde_json::Value = serde_json::from_str(&app(&["trees", url])).unwrap();
    let problems: u64 = v
        .as_object()
        .unwrap()
        .values()
        .map(|x| match x {
            serde_json::Value::Object(m) => m.values().filter_map(|n| n.as_u64()).sum(),
            n => n.as_u64().unwrap(),
        })
        .sum();
    assert_eq!(problems, 0, "after {after}: {v}");
}

fn move_and_undo(e: &Env, urls: (&str, &str), db_args: (&str, &str)) {
    let mut make = vec!["make", urls.0];
    make.extend(OURS);
    app(&make);
    let mut make = vec!["make", urls.1];
    make.extend(THEIRS);
    app(&make);
    let cfg = e.root.join("client.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
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
    let report = |url: &str, name: &str| app(&["report", url, name]);

    // Every row of the application's tables is accounted for, with the
    // entities' rows in their own archives and nothing left out.
    let (code, out) = lv(&["--json", "client", "list", "--check", db_args.0]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["adds_up"], true, "{v}");
    assert_eq!(v["clients"].as_array().unwrap().len(), 3, "{v}");

    // A restore drill of the firm's database recognises the application's
    // double entry (a side column and an amount per transaction line) and
    // follows each line's entry and ledger to its company.
    let (code, out) = lv(&["backup", "-q", db_args.0]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lv(&["verify", "latest"]);
    assert_eq!(code, Some(0), "{out}");
    for check in [
        "every transaction of django_ledger_transactionmodel nets to zero (amount signed by tx_type, by journal_entry_id)",
        "each client's trial balance in django_ledger_transactionmodel nets to zero (amount signed by tx_type, by django_ledger_transactionmodel.",
    ] {
        assert!(out.contains(check), "{check}: {out}");
    }

    let ours: Vec<String> = OURS.iter().map(|n| report(urls.0, n)).collect();
    let theirs: Vec<String> = THEIRS.iter().map(|n| report(urls.1, n)).collect();
    let (code, out) = lv(&["client", "backup", db_args.0, "--client", MOVED]);
    assert_eq!(code, Some(0), "{out}");

    // Into the other firm: the dry run names each tree path taken there
    // and where it goes; then the move itself.
    let (code, out) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        MOVED,
        "--into",
        db_args.1,
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("unique django_ledger_entitymodel.path = \"0002\"")
            && out.contains("NextAtLevel -> \"0003\""),
        "{out}"
    );
    let (code, out) = lv(&[
        "client", "restore", "latest", "--client", MOVED, "--into", db_args.1,
    ]);
    assert_eq!(code, Some(0), "{out}");
    trees_are_sound(urls.1, "the move");
    assert_eq!(
        report(urls.1, MOVED),
        ours[1],
        "the application's own reports of the moved company"
    );
    for (name, before) in THEIRS.iter().zip(&theirs) {
        assert_eq!(&report(urls.1, name), before, "the other firm's {name}");
    }
    // The application goes on in the other firm: a journal entry for the
    // moved company, and a new company (a new root in the trees).
    let posted: serde_json::Value = serde_json::from_str(&app(&["post", urls.1, MOVED])).unwrap();
    assert!(posted["posted"].is_string(), "{posted}");
    assert_ne!(report(urls.1, MOVED), ours[1]);
    app(&["make", urls.1, "Dogwood Dental"]);
    trees_are_sound(urls.1, "a new company");
    for (name, before) in THEIRS.iter().zip(&theirs) {
        assert_eq!(&report(urls.1, name), before, "the other firm's {name}");
    }

    // A copy beside the original in its own firm: every key is taken
    // there, so every UUID is new (in the form the database writes it),
    // and the copy reports as the original but for its name.
    let (code, out) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        MOVED,
        "--into",
        db_args.0,
        "--as-new",
        "--set",
        "name=Birch Copy",
    ]);
    assert_eq!(code, Some(0), "{out}");
    trees_are_sound(urls.0, "the copy");
    let without_name = |r: &str| {
        let mut v: serde_json::Value = serde_json::from_str(r).unwrap();
        v.as_object_mut().unwrap().remove("entity");
        v
    };
    assert_eq!(
        without_name(&report(urls.0, "Birch Copy")),
        without_name(&ours[1])
    );
    app(&["post", urls.0, "Birch Copy"]);

    // Back home: a journal entry posted by mistake, undone by restoring
    // the company over itself.
    app(&["post", urls.0, MOVED]);
    assert_ne!(report(urls.0, MOVED), ours[1]);
    let (code, out) = lv(&[
        "client",
        "restore",
        "latest",
        "--client",
        MOVED,
        "--into",
        db_args.0,
        "--replace",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("deleted client"), "{out}");
    trees_are_sound(urls.0, "the replace");
    for (name, before) in OURS.iter().zip(&ours) {
        assert_eq!(&report(urls.0, name), before, "{name} at home");
    }
}

#[test]
fn a_company_of_django_ledger_moves_into_another_firm_on_sqlite() {
    let e = Env::with_repo();
    let (a, b) = (e.root.join("a.db"), e.root.join("b.db"));
    let urls = (
        format!("sqlite:///{}", a.display()),
        format!("sqlite:///{}", b.display()),
    );
    move_and_undo(
        &e,
        (&urls.0, &urls.1),
        (a.to_str().unwrap(), b.to_str().unwrap()),
    );
}

#[test]
fn a_company_of_django_ledger_moves_into_another_firm_on_postgres() {
    let pg = PgServer::start();
    pg.createdb("da");
    pg.createdb("db");
    let e = Env::with_repo();
    let (a, b) = (pg.url("da"), pg.url("db"));
    std::env::set_var("PGPASSWORD", &pg.password);
    move_and_undo(&e, (&a, &b), (&a, &b));
}
