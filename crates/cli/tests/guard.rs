//! The ransomware guard cannot be sidestepped: databases renamed away,
//! encrypted after their header, or swapped for an empty one; documents
//! encrypted in place, renamed to a new extension or deleted en masse. And
//! no false alarm on a healthy database full of random-looking tokens.
//!
//! Each attack runs on a folder the way a firm's share holds it, through
//! the real binary, and must end in exit 5 (suspect) with a finding that
//! names it; `forget --keep-last 1` must then keep the good history.

mod common;

use std::fs;
use std::path::Path;

use common::Env;
use rand::{Rng, RngCore, SeedableRng};
use rusqlite::Connection;

fn backup(e: &Env, args: &[&str]) -> (i32, Vec<String>, String) {
    let out = e
        .cmd()
        .arg("--json")
        .arg("backup")
        .args(args)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let findings = v["suspect"]
        .as_array()
        .map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (
        out.status.code().unwrap(),
        findings,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A books database: 2,000 entries, some text.
fn books(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE entries (id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER, memo TEXT);
         INSERT INTO accounts (name) VALUES ('cash'), ('bank'), ('sales');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO entries (account, amount, memo) SELECT 1 + i % 3, i * 7, 'invoice ' || i || ' for services rendered' FROM n;",
    )
    .unwrap();
}

/// A share: the books database and 40 documents of four formats.
fn share(root: &Path) -> std::path::PathBuf {
    let s = root.join("share");
    fs::create_dir_all(s.join("docs")).unwrap();
    books(&s.join("books.db"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for i in 0..10 {
        let mut pdf = b"%PDF-1.7\n".to_vec();
        pdf.extend((0..3000).map(|_| rng.gen_range(b'a'..=b'z')));
        fs::write(s.join(format!("docs/return-{i}.pdf")), pdf).unwrap();
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend((0..3000).map(|_| rng.gen::<u8>()));
        fs::write(s.join(format!("docs/ledger-{i}.xlsx")), zip).unwrap();
        fs::write(
            s.join(format!("docs/payroll-{i}.csv")),
            "date,employee,gross\n2026-11-30,A. Smith,4200.00\n".repeat(40),
        )
        .unwrap();
        fs::write(
            s.join(format!("docs/letter-{i}.txt")),
            "Dear client,\nplease find your statement enclosed.\n".repeat(30),
        )
        .unwrap();
    }
    s
}

fn encrypt(path: &Path, from: usize) {
    let mut b = fs::read(path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    rng.fill_bytes(&mut b[from..]);
    fs::write(path, b).unwrap();
}

/// Asserts the alarm was raised with a finding containing `what`, and that
/// `forget --keep-last 1` keeps the good snapshot.
fn assert_alarm(e: &Env, (code, findings, err): (i32, Vec<String>, String), what: &str) {
    assert_eq!(code, 5, "{what}: {err}");
    assert!(err.contains("ALARM"), "{err}");
    assert!(
        findings.iter().any(|f| f.contains(what)),
        "{what}: {findings:?}"
    );
    let before = e.json(&["snapshots"]).as_array().unwrap().len();
    e.cmd()
        .args(["forget", "--keep-last", "1"])
        .assert()
        .success();
    let after = e.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(before, after, "{what}: retention froze");
}

fn fresh() -> (Env, std::path::PathBuf) {
    let e = Env::with_repo();
    let s = share(&e.root);
    let (code, findings, err) = backup(&e, &[s.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(findings.is_empty(), "{findings:?}");
    (e, s)
}

#[test]
fn a_database_renamed_away_with_a_note_beside_it_is_an_alarm() {
    let (e, s) = fresh();
    fs::rename(s.join("books.db"), s.join("books.db.encrypted")).unwrap();
    fs::write(s.join("READ_ME_TO_RECOVER.txt"), "send 1 BTC").unwrap();
    assert_alarm(&e, backup(&e, &[s.to_str().unwrap()]), "is gone");
}

#[test]
fn a_database_encrypted_after_its_first_page_is_an_alarm() {
    let (e, s) = fresh();
    encrypt(&s.join("books.db"), 4096);
    let r = backup(&e, &[s.to_str().unwrap()]);
    assert_eq!(r.0, 5, "{}", r.2);
    assert!(!r.1.is_empty(), "{:?}", r.1);
}

#[test]
fn a_database_replaced_by_an_empty_valid_one_is_an_alarm() {
    let (e, s) = fresh();
    fs::remove_file(s.join("books.db")).unwrap();
    Connection::open(s.join("books.db"))
        .unwrap()
        .execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT); CREATE TABLE entries (id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER, memo TEXT);")
        .unwrap();
    assert_alarm(
        &e,
        backup(&e, &[s.to_str().unwrap()]),
        "lost 100% of its rows",
    );
}

#[test]
fn a_database_named_on_the_command_line_and_renamed_away_is_an_alarm() {
    let e = Env::with_repo();
    let s = share(&e.root);
    let db = s.join("books.db");
    let docs = s.join("docs");
    let (code, _, err) = backup(&e, &[db.to_str().unwrap(), docs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    fs::rename(&db, s.join("books.db.locked")).unwrap();
    let r = backup(&e, &[db.to_str().unwrap(), docs.to_str().unwrap()]);
    // The documents were still backed up.
    let snaps = e.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_alarm(&e, r, "is gone");
}

#[test]
fn documents_encrypted_in_place_are_an_alarm() {
    let (e, s) = fresh();
    // Half the documents, each of its four formats.
    for i in 0..5 {
        for name in [
            format!("return-{i}.pdf"),
            format!("ledger-{i}.xlsx"),
            format!("payroll-{i}.csv"),
            format!("letter-{i}.txt"),
        ] {
            encrypt(&s.join("docs").join(name), 0);
        }
    }
    assert_alarm(&e, backup(&e, &[s.to_str().unwrap()]), "their name says");
}

#[test]
fn documents_renamed_to_a_new_extension_are_an_alarm() {
    let (e, s) = fresh();
    for entry in fs::read_dir(s.join("docs")).unwrap().take(25) {
        let p = entry.unwrap().path();
        let mut to = p.clone().into_os_string();
        to.push(".crypt");
        fs::rename(&p, to).unwrap();
    }
    assert_alarm(
        &e,
        backup(&e, &[s.to_str().unwrap()]),
        "renamed to a new extension",
    );
}

#[test]
fn documents_deleted_en_masse_are_an_alarm() {
    let (e, s) = fresh();
    for entry in fs::read_dir(s.join("docs")).unwrap().take(30) {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_alarm(&e, backup(&e, &[s.to_str().unwrap()]), "were deleted");
}

#[test]
fn a_normal_week_of_work_raises_no_alarm() {
    let (e, s) = fresh();
    let c = Connection::open(s.join("books.db")).unwrap();
    for day in 0..4 {
        c.execute(
            "INSERT INTO entries (account, amount, memo) VALUES (1, ?1, 'day')",
            [day],
        )
        .unwrap();
        c.execute("DELETE FROM entries WHERE id % 50 = ?1", [day])
            .unwrap();
        fs::write(
            s.join(format!("docs/new-{day}.pdf")),
            format!("%PDF-1.4 day {day}"),
        )
        .unwrap();
        fs::remove_file(s.join(format!("docs/letter-{day}.txt"))).unwrap();
        fs::write(
            s.join(format!("docs/payroll-{day}.csv")),
            "date,employee,gross\n",
        )
        .unwrap();
        let (code, findings, err) = backup(&e, &[s.to_str().unwrap()]);
        assert_eq!(code, 0, "day {day}: {err}");
        assert!(findings.is_empty(), "day {day}: {findings:?}");
    }
}

/// A database whose rows hold random 32-byte tokens (API keys, hashes,
/// encrypted fields): its changed pages are random-looking yet still
/// well-formed b-tree pages, and must never raise the alarm.
#[test]
fn a_healthy_database_of_random_tokens_raises_no_alarm() {
    let e = Env::with_repo();
    let dir = e.root.join("vault");
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("tokens.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE tokens (id INTEGER PRIMARY KEY, token BLOB NOT NULL, blob BLOB)")
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let token = |rng: &mut rand::rngs::StdRng, n: usize| {
        let mut t = vec![0u8; n];
        rng.fill_bytes(&mut t);
        t
    };
    c.execute_batch("BEGIN").unwrap();
    for i in 0..20_000 {
        let big = if i % 50 == 0 {
            Some(token(&mut rng, 6000))
        } else {
            None
        };
        c.execute(
            "INSERT INTO tokens (id, token, blob) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, token(&mut rng, 32), big],
        )
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
    let (code, _, err) = backup(&e, &[dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for night in 0..3 {
        // Rotate a third of the tokens, replace some blobs, add rows.
        c.execute_batch("BEGIN").unwrap();
        for i in (night..20_000).step_by(3) {
            c.execute(
                "UPDATE tokens SET token = ?2 WHERE id = ?1",
                rusqlite::params![i, token(&mut rng, 32)],
            )
            .unwrap();
        }
        for i in (0..20_000).step_by(100) {
            c.execute(
                "UPDATE tokens SET blob = ?2 WHERE id = ?1",
                rusqlite::params![i, token(&mut rng, 5000)],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        let (code, findings, err) = backup(&e, &[dir.to_str().unwrap()]);
        assert_eq!(code, 0, "night {night}: {err}");
        assert!(findings.is_empty(), "night {night}: {findings:?}");
    }
    // And the same database, truly encrypted past its header, is caught.
    drop(c);
    encrypt(&db, 4096);
    let (code, findings, err) = backup(&e, &[dir.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(!findings.is_empty());
}

/// A database whose header was encrypted raises the alarm, and raises it
/// again every night while it stays as it is, although the file is then
/// "unchanged" since the (suspect) snapshot before: the guard compares
/// with the last good snapshot, and files it says were databases are
/// always looked at. The same for documents deleted en masse.
#[test]
fn an_alarm_stands_while_the_damage_stays_unchanged() {
    let (e, s) = fresh();
    encrypt(&s.join("books.db"), 0);
    for i in 0..10 {
        fs::remove_file(s.join(format!("docs/letter-{i}.txt"))).unwrap();
        fs::remove_file(s.join(format!("docs/payroll-{i}.csv"))).unwrap();
        fs::remove_file(s.join(format!("docs/return-{i}.pdf"))).unwrap();
    }
    // Settled times: the next backups may take the encrypted file from
    // their parent without reading it.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for night in 0..2 {
        let (code, findings, err) = backup(&e, &[s.to_str().unwrap()]);
        assert_eq!(code, 5, "night {night}: {err}");
        assert!(
            findings.iter().any(|f| f.contains("no longer a valid one")),
            "night {night}: {findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("30 of 41 files were deleted")),
            "night {night}: {findings:?}"
        );
    }
}

/// Documents encrypted in place, names kept: the alarm stands the next
/// night too, when the encrypted files are unchanged since the (suspect)
/// snapshot before and could be taken from it unread.
#[test]
fn documents_encrypted_in_place_keep_raising_the_alarm() {
    let (e, s) = fresh();
    for i in 0..10 {
        encrypt(&s.join(format!("docs/return-{i}.pdf")), 0);
        encrypt(&s.join(format!("docs/letter-{i}.txt")), 0);
        encrypt(&s.join(format!("docs/payroll-{i}.csv")), 0);
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for night in 0..2 {
        let (code, findings, err) = backup(&e, &[s.to_str().unwrap()]);
        assert_eq!(code, 5, "night {night}: {err}");
        assert!(
            findings.iter().any(|f| f.contains("their name says")),
            "night {night}: {findings:?}"
        );
    }
}
