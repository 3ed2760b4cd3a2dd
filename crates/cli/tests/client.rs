//! `client list | backup | restore` through the real binary.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use common::{one_line_error, Env};
use predicates::prelude::*;
use rusqlite::Connection;

fn firm(e: &Env, name: &str, clients: u32, size: u64, seed: u64) -> std::path::PathBuf {
    let db = e.root.join(name);
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients,
            size,
            seed,
        },
    )
    .unwrap();
    db
}

/// Every row of client `id` and of everything else, as text per table.
fn rows_of(db: &Path, sql_filter: &str) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut out = Vec::new();
    for (table, filter) in [
        ("clients", format!("id {sql_filter}")),
        ("accounts", format!("client_id {sql_filter}")),
        ("journal_entries", format!("client_id {sql_filter}")),
        (
            "journal_lines",
            format!("entry_id IN (SELECT id FROM journal_entries WHERE client_id {sql_filter})"),
        ),
        ("invoices", format!("client_id {sql_filter}")),
        ("customers", format!("client_id {sql_filter}")),
    ] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} WHERE {filter} ORDER BY id"))
            .unwrap();
        let n = st.column_count();
        let mut rs = st.query([]).unwrap();
        while let Some(r) = rs.next().unwrap() {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            out.push(format!("{table}: {}", vals.join("|")));
        }
    }
    out
}

#[test]
fn list_backup_and_restore_a_client_archive() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db", 5, 1_500_000, 5);
    let list = e.json(&["client", "list", db.to_str().unwrap()]);
    assert_eq!(list["root"], "clients");
    assert_eq!(list["clients"].as_array().unwrap().len(), 5);
    assert!(list["clients"][2]["total_rows"].as_u64().unwrap() > 100);
    e.cmd()
        .args(["client", "list", db.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("5 clients"));
    let label = list["clients"][2]["label"].as_str().unwrap().to_string();
    // By name.
    let b = e.json(&["client", "backup", db.to_str().unwrap(), "--client", &label]);
    assert_eq!(b["client"], 3);
    let snap = e.json(&["cat", "snapshot", "latest"]);
    let tags: Vec<&str> = snap["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"client-archive") && tags.contains(&"client:3"),
        "{tags:?}"
    );
    let origin = snap["sources"][0]["path"].as_str().unwrap();
    assert!(
        origin.starts_with("client 3 of ") && origin.ends_with("firm.db"),
        "{origin}"
    );
    let original = rows_of(&db, "= 3");
    // Damage client 3.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE customers SET name = 'WRONG' WHERE client_id = 3",
            [],
        )
        .unwrap();
    assert_ne!(rows_of(&db, "= 3"), original);
    let others = rows_of(&db, "!= 3");
    // The dry run prints the plan and changes nothing.
    e.cmd()
        .args([
            "client",
            "restore",
            "latest",
            "--client",
            "3",
            "--into",
            db.to_str().unwrap(),
            "--replace",
            "--dry-run",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("dry run: nothing was changed"))
        .stdout(predicate::str::contains("journal_lines"))
        .stdout(predicate::str::contains("matched by email"));
    assert_ne!(rows_of(&db, "= 3"), original);
    // Without --replace or --as-new it is refused: the client exists.
    let out = e
        .cmd()
        .args([
            "client",
            "restore",
            "latest",
            "--client",
            "3",
            "--into",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("already exists"));
    // A refused restore leaves no safety snapshot behind.
    assert_eq!(e.json(&["snapshots"]).as_array().unwrap().len(), 1);
    let r = e.json(&[
        "client",
        "restore",
        "latest",
        "--client",
        "3",
        "--into",
        db.to_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(r["committed"], true);
    assert!(r["safety_snapshot"].is_string());
    assert_eq!(rows_of(&db, "= 3"), original);
    assert_eq!(rows_of(&db, "!= 3"), others);
}

/// Last night's full backup, then a day in which client 3's books were
/// damaged and client 4 did real work: restoring client 3 from the full
/// snapshot puts it back and leaves every other client's rows as they are.
#[test]
fn one_client_from_a_full_firm_snapshot_leaves_the_others_byte_identical() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db", 5, 1_500_000, 5);
    e.cmd()
        .args(["backup", "-q", db.to_str().unwrap()])
        .assert()
        .success();
    let nightly = rows_of(&db, "= 3");
    let c = Connection::open(&db).unwrap();
    c.execute(
        "DELETE FROM journal_lines WHERE entry_id IN (SELECT id FROM journal_entries WHERE client_id = 3 AND id % 3 = 0)",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO journal_entries (client_id, date, memo, source) VALUES (4, '2026-11-23', 'todays work', 'manual')",
        [],
    )
    .unwrap();
    drop(c);
    let others = rows_of(&db, "!= 3");
    let full = e.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = e.json(&[
        "client",
        "restore",
        &full,
        "--client",
        "3",
        "--into",
        db.to_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(r["committed"], true);
    assert_eq!(rows_of(&db, "= 3"), nightly);
    assert_eq!(
        rows_of(&db, "!= 3"),
        others,
        "client 4's work is still there"
    );
    let c = Connection::open(&db).unwrap();
    assert!(ledgervault_samplefirm::unbalanced_clients(&c)
        .unwrap()
        .is_empty());
    assert_eq!(r["from_snapshot"], full.as_str());
    // The restore took a safety snapshot of the firm, now the newest; yet
    // `latest` for a client restore still means the nightly backup.
    let newest = e.json(&["snapshots"]).as_array().unwrap().last().unwrap()["tags"].clone();
    assert!(
        newest.to_string().contains("pre-client-restore"),
        "{newest}"
    );
    let again = e.json(&[
        "client",
        "restore",
        "latest",
        "--client",
        "3",
        "--into",
        db.to_str().unwrap(),
        "--replace",
        "--dry-run",
    ]);
    assert_eq!(again["from_snapshot"], full.as_str());
}

/// Kills an import with SIGKILL at moments spread over its run: the target
/// is always either unchanged or wholly imported. The client has a
/// cross-client link, so the config nullifies links and the import really
/// writes; the kill moments are fractions of a timed run without a kill, and
/// at least two must land inside the import proper: after its safety
/// snapshot of the target was saved, before the import committed.
#[test]
fn kill_9_during_an_import_leaves_the_target_unchanged() {
    let e = Env::with_repo();
    let src = firm(&e, "source.db", 2, 40_000_000, 5);
    e.cmd()
        .args([
            "client",
            "backup",
            "-q",
            src.to_str().unwrap(),
            "--client",
            "1",
        ])
        .assert()
        .success();
    let config = e.root.join("links.toml");
    fs::write(&config, "[client]\ndefault_link = \"nullify\"\n").unwrap();
    let target = firm(&e, "target.db", 3, 3_000_000, 9);
    let pristine = e.root.join("pristine.db");
    fs::copy(&target, &pristine).unwrap();
    let before = rows_of(&target, "IS NOT NULL");
    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let reset = || {
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(format!("{}{suffix}", target.display()));
        }
        fs::copy(&pristine, &target).unwrap();
    };
    let import = || {
        StdCommand::new(&bin)
            .args([
                "client",
                "restore",
                "-c",
                config.to_str().unwrap(),
                "latest",
                "--client",
                "1",
                "--into",
                target.to_str().unwrap(),
                "--as-new",
                "--set",
                "code=MOVED",
            ])
            .env("LEDGERVAULT_REPOSITORY", &e.repo)
            .env("LEDGERVAULT_PASSWORD_FILE", &e.pw)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let moved = || -> i64 {
        Connection::open(&target)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM clients WHERE code = 'MOVED'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    // The unkilled run: it succeeds, and its length sets the kill moments.
    reset();
    let started = std::time::Instant::now();
    let status = import().wait().unwrap();
    let full = started.elapsed();
    assert!(status.success(), "the import without a kill failed");
    assert_eq!(moved(), 1);
    let snapshots = || e.json(&["snapshots"]).as_array().unwrap().len();
    let mut landed = 0;
    let mut mid_import = 0;
    for tenth in [1u32, 2, 4, 5, 6, 7, 8, 9] {
        reset();
        let had = snapshots();
        let mut child = import();
        std::thread::sleep(full * tenth / 10);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        let safety_saved = snapshots() > had;
        let c = Connection::open(&target).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(c);
        if moved() == 0 {
            assert_eq!(
                rows_of(&target, "IS NOT NULL"),
                before,
                "killed at {tenth}/10 of {full:?}"
            );
            if !finished {
                landed += 1;
                if safety_saved {
                    mid_import += 1;
                }
            }
        } else {
            assert!(ledgervault_samplefirm::unbalanced_clients(
                &Connection::open(&target).unwrap()
            )
            .unwrap()
            .is_empty());
        }
    }
    assert!(
        landed >= 3,
        "only {landed} kills landed during an import of {full:?}"
    );
    assert!(
        mid_import >= 2,
        "fewer than 2 kills landed after the safety snapshot ({landed} landed, run of {full:?})"
    );
}

#[test]
fn bad_client_requests_fail_clearly() {
    let e = Env::with_repo();
    let db = firm(&e, "firm.db", 3, 900_000, 5);
    for (args, code, needle) in [
        (
            vec!["client", "list", "/nonexistent.db"],
            1,
            "nonexistent.db",
        ),
        (
            vec![
                "client",
                "backup",
                db.to_str().unwrap(),
                "--client",
                "nobody",
            ],
            1,
            "no client",
        ),
    ] {
        let out = e.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(one_line_error(&out.stderr).contains(needle), "{args:?}");
    }
    // A database without a client table names the config setting.
    let plain = e.root.join("plain.db");
    Connection::open(&plain)
        .unwrap()
        .execute("CREATE TABLE t (x)", [])
        .unwrap();
    let out = e
        .cmd()
        .args(["client", "list", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("[client]"));
}
