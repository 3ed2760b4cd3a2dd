//! A backup never breaks the application it backs up: GnuCash, Debian's
//! `gnucash` and `python3-gnucash`, keeps its books in SQLite in
//! rollback-journal mode and gives SQLite no busy timeout, so a reader's
//! lock at the wrong moment makes GnuCash's own commit fail.
//!
//! GnuCash commits balanced transactions in a tight loop through its Python
//! bindings while ledgervault backs the book's folder up again and again.
//! No commit of GnuCash may fail, every snapshot must hold the book, and
//! every restored book must open in GnuCash and balance.
//!
//! `scripts/test.sh` installs GnuCash; without it this test fails (it is
//! never skipped).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;

const PYTHON: &str = "/usr/bin/python3";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gnucash/book.py")
}

fn gnucash(args: &[&str]) -> serde_json::Value {
    let out = Command::new(PYTHON)
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON}: {e}; scripts/test.sh installs python3-gnucash"));
    assert!(
        out.status.success(),
        "GnuCash {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

#[test]
fn gnucash_committing_in_a_tight_loop_never_fails_and_every_snapshot_holds_the_book() {
    let e = Env::with_repo();
    let books = e.root.join("books");
    fs::create_dir_all(&books).unwrap();
    let book = books.join("firm.gnucash");
    gnucash(&["create", book.to_str().unwrap()]);

    // GnuCash commits for twelve seconds. A reader can wait a long time
    // for a moment between two of its commits (its lock is free only
    // briefly), and ledgervault waits rather than disturb it; once GnuCash
    // stops, a waiting backup goes on. Backups run while GnuCash writes,
    // and at least three in all.
    let seconds = 12.0;
    let mut writer = Command::new(PYTHON)
        .arg(script())
        .args(["write", book.to_str().unwrap(), &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let mut backups = 0;
    let mut during = 0;
    let mut took = Vec::new();
    loop {
        let writing = writer.try_wait().unwrap().is_none();
        if !writing && backups >= 3 {
            break;
        }
        let one = Instant::now();
        let out = e
            .cmd()
            .args(["--json", "backup", books.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "backup {backups}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took.push(one.elapsed().as_secs_f64());
        backups += 1;
        if writing {
            during += 1;
        }
    }
    assert!(
        during >= 2,
        "only {during} backups started while GnuCash wrote (they took {took:?} s)"
    );
    let done = writer.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&done.stderr);
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&done.stdout)
            .lines()
            .last()
            .unwrap_or("{}"),
    )
    .unwrap();
    let commits = report["commits"].as_u64().unwrap();
    assert!(
        commits > 200,
        "GnuCash committed only {commits} times: {log}"
    );
    assert_eq!(
        report["failures"], 0,
        "GnuCash's commits failed: {report} {log}"
    );
    for bad in ["database is locked", "commit error", "Failed to commit"] {
        // GnuCash reports its own troubles on standard error; the one
        // "Failed to commit" of creating the book happened before.
        assert!(!log.contains(bad), "GnuCash said {bad:?}: {log}");
    }

    // Every snapshot holds the book, and every restored book opens in
    // GnuCash and balances.
    let snaps = e.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), backups);
    let mut last_count = 0;
    for (i, s) in snaps.iter().enumerate() {
        let id = s["id"].as_str().unwrap();
        let out = e.root.join(format!("restored-{i}"));
        e.cmd()
            .args(["restore", "-q", id, "--target", out.to_str().unwrap()])
            .assert()
            .success();
        let restored = out.join("books/firm.gnucash");
        assert!(restored.is_file(), "snapshot {id} lacks the book");
        let check = gnucash(&["check", restored.to_str().unwrap()]);
        assert_eq!(check["opened"], true, "{check}");
        assert_eq!(check["balance"], 0, "snapshot {id}: {check}");
        let n = check["transactions"].as_u64().unwrap();
        assert!(
            n >= last_count,
            "snapshots go forward: {n} after {last_count}"
        );
        last_count = n;
    }
    assert!(last_count > 0);
}
