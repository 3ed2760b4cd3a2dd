//! Load: round after round, a backup, a forget with prune, a copy to a
//! second repository, a restore drill and a per-client restore run at the
//! same time against one repository, through the real binary. Every command
//! succeeds (they wait for each other's locks with `--retry-lock`); at the
//! end `check --read-data` passes on both repositories, the snapshots the
//! retention rule keeps are all there, and every snapshot left in either
//! repository restores exactly what was backed up in its round.
//!
//! `LEDGERVAULT_LOAD_ROUNDS` sets the number of rounds (3 by default;
//! `bench/torture.sh` runs more).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{copy_tree, diff_trees, Env};
use rusqlite::Connection;

const KEEP: usize = 3;

/// Every row of every table, in a stable order: equal digests mean equal
/// books, whatever pages SQLite put them in.
fn db_rows(path: &Path) -> String {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut h = blake3::Hasher::new();
    for t in tables {
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .or_else(|_| c.prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1")))
            .unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        h.update(t.as_bytes());
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                h.update(format!("{:?}|", r.get_ref(i).unwrap()).as_bytes());
            }
            h.update(b"\n");
        }
    }
    h.finalize().to_hex().to_string()
}

struct Running {
    what: String,
    child: Child,
}

fn spawn(e: &Env, repo: &Path, pw: &Path, what: &str, args: &[&str]) -> Running {
    let child = Command::new(assert_cmd::cargo::cargo_bin("ledgervault"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LEDGERVAULT_REPOSITORY", repo)
        .env("LEDGERVAULT_PASSWORD_FILE", pw)
        .env("LEDGERVAULT_RETRY_LOCK", "5min")
        .current_dir(&e.root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running {
        what: what.to_string(),
        child,
    }
}

/// Waits for the command; panics with its output unless it succeeded.
fn finish(r: Running) -> Vec<u8> {
    let out = r.child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} exited {:?}: {}{}",
        r.what,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The round snapshots (id, round tag); the safety snapshots client
/// restores take of their targets are left out.
fn snapshots(e: &Env, repo: &Path, pw: &Path) -> Vec<(String, String)> {
    let out = e
        .cmd_for(repo, pw)
        .args(["--json", "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let round = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t.as_str())
                .find(|t| t.starts_with("round-"))?
                .to_string();
            Some((s["id"].as_str().unwrap().to_string(), round))
        })
        .collect()
}

/// What one round backed up: the folder as it was and the books' rows.
struct Reference {
    books: PathBuf,
    rows: String,
}

/// Restores every snapshot of `repo` and compares it with its round.
fn all_restore_exactly(
    e: &Env,
    repo: &Path,
    pw: &Path,
    refs: &BTreeMap<String, Reference>,
    what: &str,
) -> usize {
    let list = snapshots(e, repo, pw);
    for (id, round) in &list {
        let r = &refs[round];
        let out = e.root.join("probe");
        if out.exists() {
            fs::remove_dir_all(&out).unwrap();
        }
        let res = e
            .cmd_for(repo, pw)
            .args(["-q", "restore", id, "--target", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{what}: restore {id} ({round}): {}",
            String::from_utf8_lossy(&res.stderr)
        );
        diff_trees(&r.books, &out.join("books"));
        assert_eq!(
            db_rows(&out.join("firm.db")),
            r.rows,
            "{what} {round}: the restored books differ"
        );
    }
    list.len()
}

#[test]
fn backup_prune_copy_verify_and_client_restore_at_once() {
    let rounds: u32 = std::env::var("LEDGERVAULT_LOAD_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let e = Env::with_repo();
    let books = e.data("books", 400_000, 11);
    let firm = e.root.join("firm.db");
    let opts = |seed| ledgervault_samplefirm::FirmOptions {
        clients: 3,
        size: 1_200_000,
        seed,
    };
    ledgervault_samplefirm::generate(&firm, &opts(4)).unwrap();
    // Links between clients are cut when one client moves to another firm.
    fs::write(
        e.root.join("ledgervault.toml"),
        "[client]\ndefault_link = \"nullify\"\n",
    )
    .unwrap();
    let pristine = e.root.join("pristine.db");
    ledgervault_samplefirm::generate(&pristine, &opts(8)).unwrap();
    let offsite = e.root.join("offsite");
    let pw2 = e.root.join("pw2");
    fs::write(&pw2, "offsite password\n").unwrap();
    e.init_at(&offsite, &pw2);

    let mut refs = BTreeMap::new();
    let mut made = Vec::new();
    let record = |refs: &mut BTreeMap<String, Reference>, r: u32| {
        let dir = e.root.join(format!("ref-{r}"));
        copy_tree(&books, &dir);
        refs.insert(
            format!("round-{r}"),
            Reference {
                books: dir,
                rows: db_rows(&firm),
            },
        );
    };
    record(&mut refs, 0);
    let out = e
        .cmd()
        .args(["--json", "backup", "--tag", "round-0", "books", "firm.db"])
        .current_dir(&e.root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let backup_id = |stdout: &[u8]| -> String {
        let v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
        v["snapshot_id"].as_str().unwrap().to_string()
    };
    // The last finished backup: the one this round drills and restores a
    // client from, while the next backup runs.
    let mut previous = backup_id(&out.stdout);
    made.push("round-0".to_string());

    let (repo, pw) = (e.repo.clone(), e.pw.clone());
    let offsite_s = offsite.to_str().unwrap().to_string();
    let pw2_s = pw2.to_str().unwrap().to_string();
    for r in 1..=rounds {
        // The day's work, then everything at once.
        ledgervault_samplefirm::simulate_day(&firm, u64::from(r), 0.03).unwrap();
        fs::write(
            books.join(format!("round-{r}.csv")),
            format!("2026-11-{r:02},JE-{r},1000 Cash,{r}.00\n").repeat(2000),
        )
        .unwrap();
        record(&mut refs, r);
        let tag = format!("round-{r}");
        let target = e.root.join(format!("target-{r}.db"));
        fs::copy(&pristine, &target).unwrap();
        let code = format!("code=R{r}");
        let keep = KEEP.to_string();
        let running = vec![
            spawn(
                &e,
                &repo,
                &pw,
                "backup",
                &["--json", "backup", "--tag", &tag, "books", "firm.db"],
            ),
            spawn(
                &e,
                &repo,
                &pw,
                "forget --prune",
                &["-q", "forget", "--keep-last", &keep, "--prune"],
            ),
            spawn(
                &e,
                &repo,
                &pw,
                "copy",
                &[
                    "-q",
                    "copy",
                    "--to",
                    &offsite_s,
                    "--to-password-file",
                    &pw2_s,
                ],
            ),
            spawn(&e, &repo, &pw, "verify", &["-q", "verify", &previous]),
            spawn(
                &e,
                &repo,
                &pw,
                "client restore",
                &[
                    "-q",
                    "-c",
                    "ledgervault.toml",
                    "client",
                    "restore",
                    &previous,
                    "--client",
                    "2",
                    "--database",
                    "firm.db",
                    "--into",
                    target.to_str().unwrap(),
                    "--as-new",
                    "--set",
                    &code,
                ],
            ),
        ];
        let mut outputs = running.into_iter().map(|run| {
            let what = format!("round {r}: {}", run.what);
            finish(Running { what, ..run })
        });
        let backed_up = outputs.next().unwrap();
        outputs.for_each(drop);
        previous = backup_id(&backed_up);
        made.push(tag);
        // The client landed whole in the other firm.
        let c = Connection::open(&target).unwrap();
        let moved: i64 = c
            .query_row(
                "SELECT count(*) FROM clients WHERE code = ?1",
                [format!("R{r}")],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(moved, 1, "round {r}: the restored client is missing");
        assert!(ledgervault_samplefirm::unbalanced_clients(&c)
            .unwrap()
            .is_empty());
        drop(c);
        db_rows(&target);
    }

    e.check_clean(&repo, &pw, "primary");
    e.check_clean(&offsite, &pw2, "offsite");
    // The newest KEEP backups are there whatever order the commands ran in;
    // older ones only went by the retention rule.
    let present: Vec<String> = snapshots(&e, &repo, &pw)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    for round in made.iter().rev().take(KEEP) {
        assert!(
            present.contains(round),
            "{round} was lost; present: {present:?}"
        );
    }
    // Keep-last, plus at most the newest snapshot that passed a drill.
    assert!(present.len() <= KEEP + 1, "forget kept {present:?}");
    let n = all_restore_exactly(&e, &repo, &pw, &refs, "primary");
    let m = all_restore_exactly(&e, &offsite, &pw2, &refs, "offsite");
    // Every round reached the offsite copy except, at most, the last one
    // (its copy may have run before its backup).
    assert!(
        m >= rounds as usize,
        "offsite holds {m} of {} rounds",
        rounds + 1
    );
    eprintln!("{rounds} rounds: {n} snapshots kept, {m} copied offsite");
}
