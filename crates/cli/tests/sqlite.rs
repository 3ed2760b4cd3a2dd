//! Live SQLite databases through the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use rusqlite::Connection;

mod common;
use common::{one_line_error as one_line, Env};

const ACCOUNTS: i64 = 200;
const OPENING: i64 = 10_000;

fn make_ledger(path: &Path, mode: &str) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode = {mode};
         CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, note TEXT NOT NULL);
         CREATE TABLE transfers (id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL, memo TEXT NOT NULL);"
    ))
    .unwrap();
    c.execute_batch("BEGIN").unwrap();
    for i in 0..ACCOUNTS {
        c.execute(
            "INSERT INTO accounts (id, balance, note) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, OPENING, "x".repeat(300)],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
}

/// Balanced transfers, one per transaction, until `stop`; returns the
/// longest time one commit waited.
fn writer(path: PathBuf, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) -> Duration {
    let c = Connection::open(&path).unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    let mut worst = Duration::ZERO;
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (a, b, amt) = (i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS, i % 97 + 1);
        let t = Instant::now();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        c.execute(
            "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2",
            [amt, a],
        )
        .unwrap();
        c.execute(
            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
            [amt, b],
        )
        .unwrap();
        c.execute(
            "INSERT INTO transfers (src, dst, amount, memo) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![a, b, amt, "transfer ".repeat(20)],
        )
        .unwrap();
        c.execute_batch("COMMIT").unwrap();
        worst = worst.max(t.elapsed());
        commits.fetch_add(1, Ordering::Relaxed);
    }
    worst
}

fn live_backups(mode: &str) {
    let e = Env::with_repo();
    let db = e.root.join("books.db");
    make_ledger(&db, mode);
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let w = {
        let (db, stop, commits) = (db.clone(), stop.clone(), commits.clone());
        std::thread::spawn(move || writer(db, stop, commits))
    };
    while commits.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ids = Vec::new();
    for _ in 0..4 {
        let before = commits.load(Ordering::Relaxed);
        let s = e.json(&["backup", db.to_str().unwrap()]);
        ids.push(s["snapshot_id"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            commits.load(Ordering::Relaxed) > before,
            "the writer made no progress"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let worst = w.join().unwrap();
    if mode == "wal" {
        assert!(
            worst < Duration::from_secs(2),
            "a WAL writer waited {worst:?}"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let target = e.root.join(format!("restored-{id}.db"));
        // Checked against the backup's record; the first also by SQLite.
        let (extra, said) = if i == 0 {
            (Some("--integrity-check"), "integrity_check and digests ok")
        } else {
            (None, "digests ok")
        };
        e.cmd()
            .args(["restore", id, "--target", target.to_str().unwrap()])
            .args(extra)
            .assert()
            .success()
            .stdout(predicate::str::contains(said));
        // SQLite's own full check agrees with ledgervault's.
        ledgervault_sources::integrity_check(&target).unwrap();
        let c = Connection::open(&target).unwrap();
        let (sum, n): (i64, i64) = c
            .query_row("SELECT sum(balance), count(*) FROM accounts", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (sum, n),
            (ACCOUNTS * OPENING, ACCOUNTS),
            "books do not balance in snapshot {id}"
        );
        // Every transfer in the image is reflected in the balances.
        let moved: i64 = c
            .query_row(
                "SELECT coalesce(sum(amount), 0) FROM transfers WHERE src = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let got: i64 = c
            .query_row(
                "SELECT coalesce(sum(amount), 0) FROM transfers WHERE dst = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let bal: i64 = c
            .query_row("SELECT balance FROM accounts WHERE id = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(bal, OPENING - moved + got);
        // The recorded row counts match the restored image.
        let snap = e.json(&["cat", "snapshot", id]);
        let tables = snap["sources"][0]["node"]["database"]["tables"]
            .as_array()
            .unwrap()
            .clone();
        let transfers: i64 = c
            .query_row("SELECT count(*) FROM transfers", [], |r| r.get(0))
            .unwrap();
        assert!(
            tables
                .iter()
                .any(|t| t["name"] == "transfers" && t["rows"] == transfers),
            "{tables:?}"
        );
        // Digests taken at backup time describe exactly the captured image.
        let mut now = ledgervault_repo::DatabaseInfo::default();
        ledgervault_sources::sqlite::table_stats(&c, &mut now);
        assert!(now.problems.is_empty(), "{:?}", now.problems);
        assert_eq!(now.tables.len(), tables.len());
        for (t, n) in tables.iter().zip(&now.tables) {
            assert_eq!(t["name"], serde_json::json!(n.name));
            assert_eq!(t["rows"], serde_json::json!(n.rows));
            assert_eq!(t["digest"], serde_json::json!(n.digest));
        }
    }
}

#[test]
fn live_backups_are_consistent_in_wal_mode() {
    live_backups("wal");
}

#[test]
fn live_backups_are_consistent_in_rollback_journal_mode() {
    live_backups("delete");
}

#[test]
fn restore_over_an_open_database_needs_force_and_is_seen_by_open_connections() {
    let e = Env::with_repo();
    let db = e.root.join("firm.db");
    make_ledger(&db, "wal");
    e.cmd()
        .args(["backup", db.to_str().unwrap()])
        .assert()
        .success();
    let live = Connection::open(&db).unwrap();
    live.execute("DELETE FROM accounts WHERE id < 150", [])
        .unwrap();
    let count = |c: &Connection| -> i64 {
        c.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&live), 50);
    let out = e
        .cmd()
        .args(["restore", "latest", "--target", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(one_line(&out.stderr).contains("--force"));
    e.cmd()
        .args([
            "restore",
            "latest",
            "--target",
            db.to_str().unwrap(),
            "--force",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("safety snapshot")
                .and(predicate::str::contains("open connections now see")),
        );
    // The connection that stayed open sees the restored rows.
    assert_eq!(count(&live), ACCOUNTS);
    let snaps = e.json(&["snapshots"]);
    let pre = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"][0] == "pre-restore")
        .expect("a pre-restore snapshot");
    // The safety snapshot holds the state before the restore.
    let saved = e.root.join("before.db");
    e.cmd()
        .args([
            "restore",
            pre["id"].as_str().unwrap(),
            "--target",
            saved.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(count(&Connection::open(&saved).unwrap()), 50);

    // A link at the target, even one that points nowhere, is refused with
    // or without --force, and what it points at is not created.
    let nowhere = e.root.join("made-through-a-link.db");
    let link = e.root.join("link.db");
    std::os::unix::fs::symlink(&nowhere, &link).unwrap();
    for force in [false, true] {
        let mut args = vec!["restore", "latest", "--target", link.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let out = e.cmd().args(&args).output().unwrap();
        assert!(!out.status.success());
        assert!(
            one_line(&out.stderr).contains("symbolic link"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!nowhere.exists());
    }
}

#[test]
fn stale_wal_files_at_a_new_target_are_removed() {
    let e = Env::with_repo();
    let db = e.root.join("a.db");
    make_ledger(&db, "wal");
    e.cmd()
        .args(["backup", db.to_str().unwrap()])
        .assert()
        .success();
    let target = e.root.join("new.db");
    fs::write(e.root.join("new.db-wal"), b"stale wal of an older database").unwrap();
    fs::write(e.root.join("new.db-shm"), b"stale").unwrap();
    e.cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("stale"));
    assert!(!e.root.join("new.db-wal").exists());
    let c = Connection::open(&target).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, ACCOUNTS);
}

#[test]
fn bad_databases_and_targets_fail_clearly() {
    let e = Env::with_repo();
    // Looks like SQLite, is not.
    let fake = e.root.join("fake.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    fs::write(&fake, bytes).unwrap();
    let out = e
        .cmd()
        .args(["backup", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("fake.db"));
    // Locked exclusively for longer than the timeout.
    let db = e.root.join("locked.db");
    make_ledger(&db, "delete");
    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t = Instant::now();
    let out = e
        .cmd()
        .args(["backup", db.to_str().unwrap(), "--db-timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("locked"));
    assert!(t.elapsed() < Duration::from_secs(20));
    holder.execute_batch("COMMIT").unwrap();
    e.cmd()
        .args(["backup", db.to_str().unwrap()])
        .assert()
        .success();
    // A target folder that does not exist.
    let out = e
        .cmd()
        .args(["restore", "latest", "--target", "/nonexistent/folder/x.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out.stderr).contains("does not exist"));
}

#[test]
fn a_damaged_database_is_reported_and_its_snapshot_marked() {
    let e = Env::with_repo();
    let db = e.root.join("damaged.db");
    make_ledger(&db, "delete");
    let c = Connection::open(&db).unwrap();
    let root: i64 = c
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'accounts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    drop(c);
    // Wreck a leaf page of the accounts table (the page after its root).
    let mut bytes = fs::read(&db).unwrap();
    let victim = (root as usize).min(pages as usize - 1); // 0-based index of page root+1
    for b in &mut bytes[victim * 4096..victim * 4096 + 64] {
        *b = 0xFF;
    }
    fs::write(&db, bytes).unwrap();
    let out = e
        .cmd()
        .args(["backup", db.to_str().unwrap()])
        .output()
        .unwrap();
    // Stored, but suspect: a database that stops being valid is what
    // ransomware leaves behind.
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database is damaged"), "{stderr}");
    assert!(stderr.contains("ALARM"), "{stderr}");
    let snap = e.json(&["cat", "snapshot", "latest"]);
    assert!(snap["suspect"][0]
        .as_str()
        .unwrap()
        .contains("no longer a valid database"));
    let problems = snap["sources"][0]["node"]["database"]["problems"]
        .as_array()
        .unwrap();
    assert!(!problems.is_empty());
}

#[test]
fn nightly_backups_store_changed_pages_and_small_maps() {
    let e = Env::with_repo();
    let db = e.root.join("firm.db");
    let firm = ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 8,
            size: 8_000_000,
            seed: 3,
        },
    )
    .unwrap();
    let first = e.json(&["backup", db.to_str().unwrap()]);
    assert!(first["bytes_new"].as_u64().unwrap() >= firm.bytes);
    ledgervault_samplefirm::simulate_day(&db, 4, 0.05).unwrap();
    let second = e.json(&["backup", db.to_str().unwrap()]);
    let new = second["bytes_new"].as_u64().unwrap();
    let size = fs::metadata(&db).unwrap().len();
    assert!(new < size / 6, "{new} new bytes of {size} after a 5% day");
    let snap = e.json(&["cat", "snapshot", "latest"]);
    let layers = snap["sources"][0]["node"]["chunk_map"]["layers"]
        .as_array()
        .unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[1]["kind"], "delta");
    // Restored, the image is the live database, byte for byte.
    let target = e.root.join("restored.db");
    e.cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .assert()
        .success();
    assert!(fs::read(&target).unwrap() == fs::read(&db).unwrap());
}

#[test]
fn databases_inside_folders_are_captured_and_their_journals_skipped() {
    let e = Env::with_repo();
    let books = e.root.join("books");
    fs::create_dir_all(&books).unwrap();
    let db = books.join("client-001.gnucash");
    make_ledger(&db, "wal");
    let keep_open = Connection::open(&db).unwrap();
    keep_open
        .execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1", [])
        .unwrap();
    keep_open
        .execute("UPDATE accounts SET balance = balance - 1 WHERE id = 2", [])
        .unwrap();
    assert!(books.join("client-001.gnucash-wal").exists());
    fs::write(books.join("notes.txt"), "not a database").unwrap();
    e.cmd()
        .args(["backup", books.to_str().unwrap()])
        .assert()
        .success();
    let ls = e.json(&["ls", "latest"]);
    let entries = ls.as_array().unwrap();
    assert!(entries
        .iter()
        .any(|n| n["path"] == "/books/client-001.gnucash" && n["type"] == "db_image"));
    assert!(!entries
        .iter()
        .any(|n| n["path"].as_str().unwrap().ends_with("-wal")));
    let out = e.root.join("out");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    let c = Connection::open(out.join("books/client-001.gnucash")).unwrap();
    let b1: i64 = c
        .query_row("SELECT balance FROM accounts WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(b1, OPENING + 1, "committed WAL content is in the image");
    // --no-db-detect keeps them as plain files.
    e.cmd()
        .args(["backup", books.to_str().unwrap(), "--no-db-detect"])
        .assert()
        .success();
    let ls = e.json(&["ls", "latest"]);
    assert!(ls
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["path"] == "/books/client-001.gnucash" && n["type"] == "file"));
}

#[test]
fn the_demo_runs_and_proves_its_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    Command::cargo_bin("ledgervault")
        .unwrap()
        .args([
            "demo",
            "--dir",
            dir.to_str().unwrap(),
            "--clients",
            "4",
            "--size",
            "3MB",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("byte-identical")
                .and(predicate::str::contains("restore drill PASSED"))
                .and(predicate::str::contains("no errors were found")),
        );
    // A second run replaces its own folder; a foreign folder is refused.
    Command::cargo_bin("ledgervault")
        .unwrap()
        .args([
            "demo",
            "--dir",
            dir.to_str().unwrap(),
            "--clients",
            "3",
            "--size",
            "2MB",
        ])
        .assert()
        .success();
    let foreign = tmp.path().join("mine");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("precious.txt"), "keep").unwrap();
    Command::cargo_bin("ledgervault")
        .unwrap()
        .args(["demo", "--dir", foreign.to_str().unwrap()])
        .assert()
        .failure();
    assert!(foreign.join("precious.txt").exists());
}

#[test]
fn rollback_mode_writers_wait_only_for_the_copy_not_the_whole_backup() {
    let e = Env::with_repo();
    let db = e.root.join("firm.db");
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 6,
            size: 20_000_000,
            seed: 5,
        },
    )
    .unwrap();
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = DELETE")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(120)).unwrap();
            let mut worst = Duration::ZERO;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                c.execute(
                    "UPDATE firm_settings SET value = ?1 WHERE key = 'retention_years'",
                    [i.to_string()],
                )
                .unwrap();
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(2));
            }
            worst
        })
    };
    // A deliberately slow backup: strong compression on one thread.
    let t = Instant::now();
    e.cmd()
        .args([
            "backup",
            db.to_str().unwrap(),
            "--compression",
            "19",
            "--threads",
            "1",
        ])
        .assert()
        .success();
    let backup_took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst = w.join().unwrap();
    assert!(
        backup_took > Duration::from_secs(2),
        "the backup was too quick to tell ({backup_took:?})"
    );
    assert!(
        worst * 3 < backup_took,
        "a writer waited {worst:?} during a {backup_took:?} backup"
    );
    let target = e.root.join("restored.db");
    e.cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .assert()
        .success();
}

fn backup_code(e: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = e
        .cmd()
        .arg("--json")
        .arg("backup")
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap(),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Ransomware on the server: a normal night is never flagged, a database
/// whose pages turn to noise or whose header is gone is stored but flagged,
/// and `forget` keeps the good history until a person clears the alarm.
#[test]
fn ransomware_is_flagged_and_forget_keeps_the_good_history() {
    let e = Env::with_repo();
    let db = e.root.join("firm.db");
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 8,
            size: 6_000_000,
            seed: 11,
        },
    )
    .unwrap();
    let dbs = db.to_str().unwrap();
    let (code, v, err) = backup_code(&e, &[dbs]);
    assert_eq!(code, 0, "{err}");
    assert!(v["suspect"].as_array().unwrap().is_empty());
    // Normal days, and a heavy one touching about a third of the pages.
    for (day, edits) in [(1, 0.03), (2, 0.03), (3, 0.3)] {
        ledgervault_samplefirm::simulate_day(&db, day, edits).unwrap();
        let (code, v, err) = backup_code(&e, &[dbs]);
        assert_eq!(code, 0, "day {day}: {err}");
        assert!(v["suspect"].as_array().unwrap().is_empty(), "day {day}");
    }
    let good = e.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(good, 4);

    // Intermittent encryption: 40% of the pages become random, the header
    // stays, so SQLite still opens the file.
    let mut bytes = fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    for p in (1..pages).filter(|p| p % 5 < 2) {
        rand::Rng::fill(&mut rng, &mut bytes[p * 4096..(p + 1) * 4096]);
    }
    fs::write(&db, &bytes).unwrap();
    let (code, v, err) = backup_code(&e, &[dbs]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("ALARM"), "{err}");
    let findings = v["suspect"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.as_str().unwrap().contains("random-looking")),
        "{findings:?}"
    );

    // Whole-file encryption: the header is gone. Given as sqlite: or found
    // by its old path, it is stored as plain bytes and flagged.
    let mut noise = vec![0u8; bytes.len()];
    rand::Rng::fill(&mut rng, &mut noise[..]);
    fs::write(&db, &noise).unwrap();
    let (code, v, err) = backup_code(&e, &[&format!("sqlite:{dbs}")]);
    assert_eq!(code, 5, "{err}");
    assert!(v["suspect"][0]
        .as_str()
        .unwrap()
        .contains("not a valid SQLite database"));
    let (code, v, err) = backup_code(&e, &[dbs]);
    assert_eq!(code, 5, "{err}");
    assert!(
        v["suspect"][0]
            .as_str()
            .unwrap()
            .contains("was a database in snapshot"),
        "{v}"
    );
    let list = e.json(&["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 7);
    assert_eq!(
        list.iter()
            .filter(|s| !s["suspect"].as_array().unwrap().is_empty())
            .count(),
        3
    );
    e.cmd()
        .arg("snapshots")
        .assert()
        .success()
        .stdout(predicate::str::contains("S!"))
        .stderr(predicate::str::contains("ALARM"));

    // forget keeps everything from before the first suspect snapshot (and
    // the suspect ones), whatever the policy says.
    let r = e.json(&["forget", "--keep-last", "1"]);
    assert!(r["removed"].as_array().unwrap().is_empty(), "{r}");
    // The good history restores to the books as they were.
    let before_attack = list[3]["id"].as_str().unwrap();
    let target = e.root.join("recovered.db");
    e.cmd()
        .args([
            "restore",
            before_attack,
            "--target",
            target.to_str().unwrap(),
        ])
        .assert()
        .success();
    let c = Connection::open(&target).unwrap();
    assert!(ledgervault_samplefirm::unbalanced_clients(&c)
        .unwrap()
        .is_empty());
    drop(c);

    // An append-only session cannot clear the alarm; a person can.
    for s in list
        .iter()
        .filter(|s| !s["suspect"].as_array().unwrap().is_empty())
    {
        let id = s["id"].as_str().unwrap();
        let out = e
            .cmd()
            .args(["--append-only", "snapshot", "clear-suspect", id])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(13));
        e.cmd()
            .args([
                "snapshot",
                "clear-suspect",
                id,
                "--note",
                "restored from backup",
            ])
            .assert()
            .success();
    }
    let r = e.json(&["forget", "--keep-last", "1"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 6, "{r}");
}

/// guard around a botched operation on the live database: the printed
/// rollback restores the books over the damaged file.
#[test]
fn guard_rolls_back_a_database() {
    let e = Env::with_repo();
    let db = e.root.join("books.db");
    make_ledger(&db, "wal");
    let other = e.root.join("other.db");
    make_ledger(&other, "delete");
    Connection::open(&other)
        .unwrap()
        .execute("UPDATE accounts SET balance = 0", [])
        .unwrap();
    let script = format!("cp '{}' '{}'; exit 1", other.display(), db.display());
    let out = e
        .cmd()
        .args([
            "guard",
            "--reason",
            "year-end close FY2026",
            db.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rollback = common::printed_rollback(&out.stderr);
    assert!(rollback.contains("--force"), "{rollback}");
    let total = |p: &Path| -> i64 {
        Connection::open(p)
            .unwrap()
            .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(total(&db), 0);
    common::run_printed(&rollback, &[]);
    assert_eq!(total(&db), ACCOUNTS * OPENING);
}

/// A firm database found inside a folder gets the same ransomware checks as
/// one named on the command line: its earlier image is found in the
/// folder's earlier snapshot.
#[test]
fn ransomware_in_a_database_inside_a_folder_is_flagged() {
    let e = Env::with_repo();
    let office = e.root.join("office");
    fs::create_dir(&office).unwrap();
    let db = office.join("books.db");
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 6,
            size: 4_000_000,
            seed: 12,
        },
    )
    .unwrap();
    fs::write(office.join("letter.txt"), "Dear client").unwrap();
    let dir = office.to_str().unwrap();
    let (code, _, err) = backup_code(&e, &[dir]);
    assert_eq!(code, 0, "{err}");
    ledgervault_samplefirm::simulate_day(&db, 1, 0.05).unwrap();
    let (code, v, err) = backup_code(&e, &[dir]);
    assert_eq!(code, 0, "a normal day: {err}");
    // Only changed pages are new: the image's map is a delta on last night's.
    let size = fs::metadata(&db).unwrap().len();
    assert!(v["bytes_new"].as_u64().unwrap() < size / 4, "{v}");
    // Intermittent encryption, header intact.
    let mut bytes = fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    for p in (1..pages).filter(|p| p % 3 == 0) {
        rand::Rng::fill(&mut rng, &mut bytes[p * 4096..(p + 1) * 4096]);
    }
    fs::write(&db, &bytes).unwrap();
    let (code, v, err) = backup_code(&e, &[dir]);
    assert_eq!(code, 5, "{err}");
    assert!(
        v["suspect"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("random-looking")),
        "{v}"
    );
    // The whole file encrypted: no longer a database at all.
    rand::Rng::fill(&mut rng, &mut bytes[..]);
    fs::write(&db, &bytes).unwrap();
    let (code, v, err) = backup_code(&e, &[dir]);
    assert_eq!(code, 5, "{err}");
    assert!(
        v["suspect"][0]
            .as_str()
            .unwrap()
            .contains("was a database in snapshot"),
        "{v}"
    );
}

/// Restoring a folder over itself, while a connection holds its database
/// open with changes still in the WAL: the database comes back as it was,
/// sound, and the open connection sees the restored rows (a plain rename
/// would leave the old WAL to be replayed onto the restored image).
#[test]
fn restoring_a_folder_over_a_live_database_is_safe() {
    let e = Env::with_repo();
    let books = e.root.join("books");
    fs::create_dir_all(&books).unwrap();
    let db = books.join("ledger.db");
    make_ledger(&db, "wal");
    e.cmd()
        .args(["backup", "-q", books.to_str().unwrap()])
        .assert()
        .success();
    let live = Connection::open(&db).unwrap();
    live.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    for _ in 0..50 {
        live.execute(
            "UPDATE accounts SET balance = balance + 100 WHERE id % 7 = 0",
            [],
        )
        .unwrap();
    }
    assert!(fs::metadata(books.join("ledger.db-wal")).unwrap().len() > 0);
    let sum = |c: &Connection| -> i64 {
        c.query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
            .unwrap()
    };
    assert_ne!(sum(&live), ACCOUNTS * OPENING);
    e.cmd()
        .args([
            "restore",
            "-q",
            "latest",
            "--target",
            e.root.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(
        sum(&live),
        ACCOUNTS * OPENING,
        "the open connection sees the restore"
    );
    drop(live);
    let fresh = Connection::open(&db).unwrap();
    let ok: String = fresh
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(sum(&fresh), ACCOUNTS * OPENING);
    // Nothing of the restore is left beside the database (its temporary
    // image, nor the -wal and -shm that reading a WAL-mode image makes).
    let left: Vec<String> = fs::read_dir(&books)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lv-restore"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_database_is_never_placed_through_a_link_in_the_target() {
    let e = Env::with_repo();
    let books = e.root.join("books");
    fs::create_dir_all(&books).unwrap();
    make_ledger(&books.join("ledger.db"), "wal");
    e.cmd()
        .args(["backup", "-q", books.to_str().unwrap()])
        .assert()
        .success();
    // Another firm's live database outside the target, and links to it
    // where the restore puts the database, for each mode of the restore.
    let outside = e.root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim.db");
    make_ledger(&victim, "delete");
    Connection::open(&victim)
        .unwrap()
        .execute("UPDATE accounts SET balance = 1", [])
        .unwrap();
    let before = fs::read(&victim).unwrap();
    for (i, through_folder) in [false, true].into_iter().enumerate() {
        let target = e.root.join(format!("out{i}"));
        if through_folder {
            // target/books itself is a link to the outside folder, which
            // holds a ledger.db.
            fs::create_dir_all(&target).unwrap();
            fs::copy(&victim, outside.join("ledger.db")).unwrap();
            std::os::unix::fs::symlink(&outside, target.join("books")).unwrap();
        } else {
            fs::create_dir_all(target.join("books")).unwrap();
            std::os::unix::fs::symlink(&victim, target.join("books/ledger.db")).unwrap();
        }
        e.cmd()
            .args([
                "restore",
                "-q",
                "latest",
                "--target",
                target.to_str().unwrap(),
            ])
            .assert()
            .success();
        assert_eq!(
            fs::read(&victim).unwrap(),
            before,
            "the outside database is untouched"
        );
        if through_folder {
            assert_eq!(fs::read(outside.join("ledger.db")).unwrap(), before);
        }
        let placed = target.join("books/ledger.db");
        assert!(fs::symlink_metadata(&placed).unwrap().is_file());
        assert!(!fs::symlink_metadata(target.join("books"))
            .unwrap()
            .file_type()
            .is_symlink());
        let c = Connection::open(&placed).unwrap();
        let total: i64 = c
            .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(total, ACCOUNTS * OPENING);
    }
}

/// A WAL database in a folder, first backed up as plain files
/// (`--no-db-detect`), then with detection: its main file is unchanged
/// since (the new commits are in the WAL alone), but it is never taken
/// from the parent unread while its journal sits beside it, so the commits
/// made in between are in the snapshot.
#[test]
fn a_database_with_its_journal_beside_it_is_never_taken_unread() {
    let e = Env::with_repo();
    let share = e.root.join("share");
    fs::create_dir_all(&share).unwrap();
    let db = share.join("books.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE entries (id INTEGER PRIMARY KEY, amount INTEGER);
         INSERT INTO entries (amount) VALUES (1), (2), (3);",
    )
    .unwrap();
    // Settled times, so the main file can vouch for itself.
    std::thread::sleep(Duration::from_millis(2100));
    e.cmd()
        .args(["backup", "-q", "--no-db-detect"])
        .arg(&share)
        .assert()
        .success();
    c.execute_batch("INSERT INTO entries (amount) VALUES (4), (5);")
        .unwrap();
    assert!(share.join("books.db-wal").exists());
    let out = e.json(&["backup", share.to_str().unwrap()]);
    assert!(out["files_unchanged"].as_u64().is_some(), "{out}");
    let target = e.root.join("out");
    e.cmd()
        .args(["restore", "-q", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    let n: i64 = Connection::open(target.join("share/books.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5, "the commits in the WAL are in the snapshot");
    drop(c);
}

/// The note of the `accounts` row `id`.
fn note_of(db: &Path, id: i64) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT note FROM accounts WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A database nobody touched since its last backup is not read again, like
/// an unchanged file; any change is seen: a commit, bytes changed in place
/// with the modification time put back (the change time moves), and a
/// program holding it open in WAL mode (its WAL beside it).
#[test]
fn an_untouched_database_is_not_read_again_and_any_change_is_seen() {
    let e = Env::with_repo();
    let data = e.root.join("data");
    fs::create_dir(&data).unwrap();
    let db = data.join("books.db");
    make_ledger(&db, "WAL");
    let size = fs::metadata(&db).unwrap().len();
    // Times younger than two seconds never vouch for what is read.
    std::thread::sleep(Duration::from_millis(2100));
    let unchanged = |v: &serde_json::Value| v["bytes_unchanged"].as_u64().unwrap();
    let d = data.to_str().unwrap();
    let first = e.json(&["backup", d]);
    assert_eq!(unchanged(&first), 0, "{first}");
    let second = e.json(&["backup", d]);
    assert_eq!(unchanged(&second), size, "not taken as unchanged: {second}");

    // A commit (WAL mode: checkpointed into the file when the connection
    // closes).
    let c = Connection::open(&db).unwrap();
    c.execute("UPDATE accounts SET note = 'committed' WHERE id = 1", [])
        .unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(2100));
    let third = e.json(&["backup", d]);
    assert_eq!(unchanged(&third), 0, "a commit was missed: {third}");
    let fourth = e.json(&["backup", d]);
    assert_eq!(unchanged(&fourth), size, "{fourth}");

    // Bytes changed in place, same size, modification time put back.
    let before = fs::metadata(&db).unwrap();
    let mut bytes = fs::read(&db).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"committed")
        .expect("the note is in the file");
    bytes[at..at + 9].copy_from_slice(b"COMMITTED");
    fs::write(&db, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    assert_eq!(
        fs::metadata(&db).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    std::thread::sleep(Duration::from_millis(2100));
    let fifth = e.json(&["backup", d]);
    assert_eq!(
        unchanged(&fifth),
        0,
        "an edit with its mtime put back was missed: {fifth}"
    );
    let out = e.root.join("out");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(note_of(&out.join("data/books.db"), 1), "COMMITTED");

    // Held open by a program in WAL mode: its WAL and shared memory lie
    // beside it, and the file alone no longer tells what it holds.
    let holder = Connection::open(&db).unwrap();
    holder
        .execute("UPDATE accounts SET note = 'in the wal' WHERE id = 2", [])
        .unwrap();
    assert!(data.join("books.db-wal").exists());
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..2 {
        let held = e.json(&["backup", d]);
        assert_eq!(
            unchanged(&held),
            0,
            "a database held open was taken as unchanged: {held}"
        );
    }
    drop(holder);
    let out = e.root.join("out2");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(note_of(&out.join("data/books.db"), 2), "in the wal");
}
