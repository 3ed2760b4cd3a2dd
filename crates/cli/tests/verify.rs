//! Restore drills (`verify`) through the real binary, on real SQLite
//! databases.

mod common;

use std::fs;
use std::path::Path;

use common::Env;
use predicates::prelude::*;
use rusqlite::Connection;

fn firm(e: &Env, name: &str) -> std::path::PathBuf {
    let db = e.root.join(name);
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 6,
            size: 3_000_000,
            seed: 21,
        },
    )
    .unwrap();
    db
}

fn run(e: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = e.cmd().arg("--json").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn checks(report: &serde_json::Value) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for s in report["sources"].as_array().unwrap() {
        for d in s["checks"].as_array().unwrap() {
            for c in d["checks"].as_array().unwrap() {
                out.push((
                    c["name"].as_str().unwrap().to_string(),
                    c["passed"].as_bool().unwrap(),
                ));
            }
        }
    }
    out
}

#[test]
fn a_drill_on_a_good_snapshot_passes_and_never_touches_the_live_database() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db");
    e.cmd()
        .args(["backup", "-q", db.to_str().unwrap()])
        .assert()
        .success();
    let bytes = fs::read(&db).unwrap();
    let mtime = fs::metadata(&db).unwrap().modified().unwrap();
    let scratch = e.root.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let (code, r, err) = run(&e, &["verify", "--scratch", scratch.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["passed"], true);
    let names: Vec<String> = checks(&r).into_iter().map(|c| c.0).collect();
    for expected in [
        "integrity_check",
        "foreign_key_check",
        "row counts and digests match the backup",
        "every journal entry balances",
        "each client's trial balance sums to zero",
        "no journal line is orphaned",
        "invoice totals equal the sum of their lines (plus tax)",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(checks(&r).iter().all(|c| c.1));
    // The GnuCash check does not apply to this schema.
    assert!(!names.iter().any(|n| n.contains("splits")));
    assert!(r["restore_secs"].as_f64().unwrap() > 0.0);
    assert!(r["restored_bytes"].as_u64().unwrap() >= bytes.len() as u64);
    // The live database is untouched, and the scratch copy is gone.
    assert!(fs::read(&db).unwrap() == bytes);
    assert_eq!(fs::metadata(&db).unwrap().modified().unwrap(), mtime);
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    // The result is stored: snapshots show it, and a recent pass skips.
    let list = e.json(&["snapshots"]);
    assert_eq!(list[0]["verified"], true);
    e.cmd()
        .arg("snapshots")
        .assert()
        .success()
        .stdout(predicate::str::contains("Verified"));
    let (code, r, _) = run(&e, &["verify", "--if-older-than", "60d"]);
    assert_eq!(code, 0);
    assert_eq!(r["skipped"], true);
    // Human output names the recovery time.
    e.cmd()
        .args(["verify", "latest"])
        .assert()
        .success()
        .stdout(predicate::str::contains("PASSED"))
        .stdout(predicate::str::contains("recovery time"));
    // A client archive taken later is not what a drill of "latest" means:
    // it still drills the firm's backup.
    let full = e.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    e.cmd()
        .args([
            "-q",
            "client",
            "backup",
            db.to_str().unwrap(),
            "--client",
            "1",
        ])
        .assert()
        .success();
    assert_eq!(e.json(&["snapshots"]).as_array().unwrap().len(), 2);
    let (code, r, err) = run(&e, &["verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["snapshot"], full.as_str());
}

#[test]
fn an_unbalanced_entry_fails_the_drill_and_is_named() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db");
    let c = Connection::open(&db).unwrap();
    c.execute(
        "INSERT INTO journal_lines (entry_id, account_id, debit_cents, credit_cents, memo)
         SELECT entry_id, account_id, 4242, 0, 'half an entry' FROM journal_lines LIMIT 1",
        [],
    )
    .unwrap();
    let entry: i64 = c
        .query_row(
            "SELECT entry_id FROM journal_lines WHERE memo = 'half an entry'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(c);
    e.cmd()
        .args(["backup", "-q", db.to_str().unwrap()])
        .assert()
        .success();
    let out = e.cmd().args(["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("drill check failed: firm.db: every journal entry balances"),
        "{stderr}"
    );
    // A few offending rows are shown: the entry itself.
    assert!(stderr.contains(&format!("    {entry} | ")), "{stderr}");
    assert!(stderr.contains("restore drill FAILED"), "{stderr}");
    let (code, r, _) = run(&e, &["verify"]);
    assert_eq!(code, 6);
    assert_eq!(r["passed"], false);
    let failed: Vec<String> = checks(&r)
        .into_iter()
        .filter(|c| !c.1)
        .map(|c| c.0)
        .collect();
    assert!(failed.contains(&"every journal entry balances".to_string()));
    // The restore, integrity and digests were fine: it is the books that are wrong.
    assert!(!failed
        .iter()
        .any(|f| f == "integrity_check" || f.starts_with("restore")));
    assert_eq!(e.json(&["snapshots"])[0]["verified"], false);
    // --if-older-than runs: no drill has passed.
    let (code, r, _) = run(&e, &["verify", "--if-older-than", "60d"]);
    assert_eq!(code, 6);
    assert!(r["skipped"].is_null());
}

#[test]
fn a_damaged_pack_fails_the_drill_naming_the_object() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db");
    e.cmd()
        .args(["backup", "-q", db.to_str().unwrap()])
        .assert()
        .success();
    // Flip one byte in the middle of the largest pack.
    let mut packs = Vec::new();
    for d in fs::read_dir(e.repo.join("data")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            packs.push((fs::metadata(&p).unwrap().len(), p));
        }
    }
    packs.sort();
    let (len, victim) = packs.last().unwrap().clone();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[len as usize / 2] ^= 0x40;
    fs::write(&victim, bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let out = e.cmd().args(["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&name[..16]), "pack named: {stderr}");
    assert!(stderr.contains("restore drill FAILED"), "{stderr}");
    assert_eq!(e.json(&["snapshots"])[0]["verified"], false);
}

#[test]
fn custom_checks_from_the_config_run_and_gnucash_books_are_checked() {
    let e = Env::with_repo();
    // A GnuCash-shaped book with one transaction that does not balance.
    let book = e.root.join("books.gnucash");
    let c = Connection::open(&book).unwrap();
    c.execute_batch(
        "CREATE TABLE transactions (guid TEXT PRIMARY KEY, post_date TEXT, description TEXT);
         CREATE TABLE splits (guid TEXT PRIMARY KEY, tx_guid TEXT, account_guid TEXT,
                              value_num INTEGER, value_denom INTEGER);
         INSERT INTO transactions VALUES ('t1', '2026-01-02', 'rent'), ('t2', '2026-01-03', 'sale');
         INSERT INTO splits VALUES ('s1', 't1', 'a1', 150000, 100), ('s2', 't1', 'a2', -150000, 100),
                                   ('s3', 't2', 'a1', 9900, 100), ('s4', 't2', 'a3', -9000, 100);",
    )
    .unwrap();
    drop(c);
    e.cmd()
        .args(["backup", "-q", &format!("sqlite:{}", book.display())])
        .assert()
        .success();
    let cfg = e.root.join("lv.toml");
    fs::write(
        &cfg,
        r#"
[[verify.checks]]
name = "no split without an account"
sql = "SELECT guid FROM splits WHERE account_guid IS NULL"

[[verify.checks]]
name = "no sale above 50.00"
sql = "SELECT s.guid, s.value_num FROM splits s JOIN transactions t ON t.guid = s.tx_guid WHERE t.description = 'sale' AND s.value_num > 5000"
database = "books.gnucash"

[[verify.checks]]
name = "only for another database"
sql = "SELECT 1"
database = "other.db"
"#,
    )
    .unwrap();
    let (code, r, err) = run(&e, &["--config", cfg.to_str().unwrap(), "verify"]);
    assert_eq!(code, 6, "{err}");
    let all = checks(&r);
    let get = |n: &str| all.iter().find(|c| c.0 == n).map(|c| c.1);
    assert_eq!(get("every transaction's splits sum to zero"), Some(false));
    assert_eq!(get("no split without an account"), Some(true));
    assert_eq!(get("no sale above 50.00"), Some(false));
    assert_eq!(get("only for another database"), None);
    // The journal checks do not apply to a GnuCash book.
    assert_eq!(get("every journal entry balances"), None);
    let failing = r["sources"][0]["checks"][1]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "every transaction's splits sum to zero")
        .unwrap()
        .clone();
    assert_eq!(failing["rows"][0][0], "t2");
    // A broken custom query fails its check and says why.
    fs::write(
        &cfg,
        "[[verify.checks]]\nname = \"typo\"\nsql = \"SELEC 1\"\n",
    )
    .unwrap();
    let (code, r, _) = run(&e, &["--config", cfg.to_str().unwrap(), "verify"]);
    assert_eq!(code, 6);
    let typo = checks(&r).into_iter().find(|c| c.0 == "typo").unwrap();
    assert!(!typo.1);
    // A config check without a query is a config error.
    fs::write(&cfg, "[[verify.checks]]\nname = \"empty\"\nsql = \"\"\n").unwrap();
    let (code, _, err) = run(&e, &["--config", cfg.to_str().unwrap(), "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("verify.checks[0]"), "{err}");
}

#[test]
fn all_sources_restores_folders_and_checks_databases_inside_them() {
    let e = Env::with_repo();
    let office = e.root.join("office");
    fs::create_dir(&office).unwrap();
    let inside = firm(&e, "office/client-books.db");
    fs::write(office.join("letter.txt"), "Dear client").unwrap();
    let loose = firm(&e, "firm.db");
    e.cmd()
        .args([
            "backup",
            "-q",
            loose.to_str().unwrap(),
            office.to_str().unwrap(),
        ])
        .assert()
        .success();
    // By default only the database source is drilled.
    let (code, r, err) = run(&e, &["verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["sources"].as_array().unwrap().len(), 1);
    let (code, r, err) = run(&e, &["verify", "--all-sources"]);
    assert_eq!(code, 0, "{err}");
    let srcs = r["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 2);
    let office_dbs: Vec<&str> = srcs[1]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(office_dbs, ["office", "office/client-books.db"]);
    assert!(r["restored_files"].as_u64().unwrap() >= 3);
    assert!(Path::new(&inside).exists());
}
