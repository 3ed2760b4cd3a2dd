//! forget, prune, stats, snapshot marks, guard and append-only keys, through
//! the real binary.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use common::{one_line_error, Env};
use predicates::prelude::*;

fn ids(e: &Env) -> Vec<String> {
    e.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn tree_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn forget_dry_run_explains_the_plan_and_changes_nothing() {
    let e = Env::with_repo();
    let data = e.data("books", 200_000, 1);
    for _ in 0..3 {
        e.cmd()
            .args(["backup", "-q", data.to_str().unwrap()])
            .assert()
            .success();
    }
    e.cmd()
        .args([
            "backup",
            "-q",
            "--reason",
            "year-end close FY2026",
            data.to_str().unwrap(),
        ])
        .assert()
        .success();
    let before = ids(&e);
    let plan = e.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    let decisions = plan["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 4);
    // The newest is kept by "last 1" and as a safety snapshot.
    let newest = &decisions[0];
    assert_eq!(newest["keep"], true);
    let reasons: Vec<&str> = newest["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"last 1"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("year-end close FY2026")),
        "{reasons:?}"
    );
    assert_eq!(decisions.iter().filter(|d| d["keep"] == false).count(), 3);
    assert_eq!(ids(&e), before, "a dry run removes nothing");
    // The text plan names the rule for each kept snapshot.
    e.cmd()
        .args(["forget", "--keep-last", "2", "-n"])
        .assert()
        .success()
        .stdout(predicate::str::contains("last 2"))
        .stdout(predicate::str::contains("would remove"));
    // For real.
    let done = e.json(&["forget", "--keep-last", "2"]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 2);
    assert_eq!(ids(&e).len(), 2);
}

#[test]
fn the_default_policy_comes_from_the_config_file() {
    let e = Env::with_repo();
    let data = e.data("books", 100_000, 2);
    for _ in 0..3 {
        e.cmd()
            .args(["backup", "-q", data.to_str().unwrap()])
            .assert()
            .success();
    }
    // No config: the accounting default (14 daily...), so all three taken
    // today collapse to the newest.
    let plan = e.json(&["forget", "--dry-run"]);
    assert_eq!(plan["policy"]["daily"], 14);
    assert_eq!(plan["policy"]["yearly"], 7);
    assert_eq!(plan["kept"], 1);
    let cfg = e.root.join("ledgervault.toml");
    fs::write(&cfg, "[forget]\nkeep_last = 2\nprotect_days = 30\n").unwrap();
    let plan = e.json(&["--config", cfg.to_str().unwrap(), "forget", "--dry-run"]);
    assert_eq!(plan["policy"]["last"], 2);
    assert_eq!(plan["policy"]["daily"], 0);
    assert_eq!(plan["protect_days"], 30);
    assert_eq!(plan["kept"], 2);
    // Flags win over the file.
    let plan = e.json(&[
        "--config",
        cfg.to_str().unwrap(),
        "forget",
        "--dry-run",
        "--keep-last",
        "3",
    ]);
    assert_eq!(plan["kept"], 3);
    // A typo in the file is a one-line error naming the file and the key.
    fs::write(&cfg, "[forget]\nkeep_dayly = 2\n").unwrap();
    let out = e
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "forget", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out.stderr);
    assert!(
        err.contains("ledgervault.toml") && err.contains("keep_dayly"),
        "{err}"
    );
    fs::write(&cfg, "[forget\n").unwrap();
    let out = e
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "forget", "-n"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    one_line_error(&out.stderr);
    let out = e
        .cmd()
        .args(["forget", "--keep-within", "3 days"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn protect_unprotect_and_stats() {
    let e = Env::with_repo();
    let data = e.data("books", 300_000, 3);
    for _ in 0..3 {
        e.cmd()
            .args(["backup", "-q", data.to_str().unwrap()])
            .assert()
            .success();
    }
    let all = ids(&e);
    let oldest = &all[0];
    e.cmd()
        .args(["snapshot", "protect", &oldest[..8], "--note", "audit"])
        .assert()
        .success()
        .stdout(predicate::str::contains("protected"));
    let list = e.json(&["snapshots"]);
    assert_eq!(list[0]["protected"], true);
    assert_eq!(list[1]["protected"], false);
    let r = e.json(&["forget", "--keep-last", "1"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 1);
    assert!(ids(&e).contains(oldest));
    e.cmd()
        .args(["snapshot", "unprotect", &oldest[..8]])
        .assert()
        .success();
    // forget --prune: one session, one JSON document.
    let r = e.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(r["removed"].as_array().unwrap()[0], oldest.as_str());
    assert_eq!(r["prune"]["snapshots"], 1);
    // Clearing a snapshot that is not suspect is refused.
    let out = e
        .cmd()
        .args(["snapshot", "clear-suspect", "latest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("not suspect"));

    let s = e.json(&["stats"]);
    assert_eq!(s["snapshots"], 1);
    assert_eq!(s["sources"].as_array().unwrap().len(), 1);
    assert!(s["sources"][0]["size"].as_u64().unwrap() >= 300_000);
    assert!(s["dedup_ratio"].as_f64().unwrap() >= 1.0);
    assert!(s["compression_ratio"].as_f64().unwrap() > 1.0);
    assert!(s["free_bytes"].as_u64().unwrap() > 0);
    assert!(s["stored_bytes"].as_u64().unwrap() > 0);
    // Backups taken within a minute are no history to extrapolate from.
    assert!(s["growth"].is_null());
    e.cmd()
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("dedup ratio"))
        .stdout(predicate::str::contains("free at destination"));
}

#[test]
fn an_append_only_key_backs_up_but_cannot_delete() {
    let e = Env::with_repo();
    let data = e.data("books", 100_000, 4);
    e.cmd()
        .args(["backup", "-q", data.to_str().unwrap()])
        .assert()
        .success();
    let nightly_pw = e.root.join("nightly-pw");
    fs::write(&nightly_pw, "nightly\n").unwrap();
    e.cmd()
        .args([
            "key",
            "add",
            "--append-only",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
            "--new-password-file",
            nightly_pw.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("append-only"));
    let keys = e.json(&["key", "list"]);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["append_only"] == true)
            .count(),
        1
    );
    let nightly = |args: &[&str]| {
        e.cmd()
            .env("LEDGERVAULT_PASSWORD_FILE", &nightly_pw)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(nightly(&["backup", "-q", data.to_str().unwrap()])
        .status
        .success());
    for args in [
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["key", "remove", "0"],
        vec!["snapshot", "unprotect", "latest"],
    ] {
        let out = nightly(&args);
        assert_eq!(out.status.code(), Some(13), "{args:?}");
        assert!(
            one_line_error(&out.stderr).contains("append-only"),
            "{args:?}"
        );
    }
    assert_eq!(ids(&e).len(), 2);
    // --append-only makes any session so.
    let out = e
        .cmd()
        .args(["--append-only", "forget", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13));
}

#[test]
fn guard_snapshots_first_and_prints_the_rollback_when_the_command_fails() {
    let e = Env::with_repo();
    let books = e.data("books", 200_000, 5);
    let original = tree_bytes(&books);
    let victim = tree_bytes(&books)[0].0.clone();
    let script = format!("echo purged > '{}/{}'; exit 7", books.display(), victim);
    let out = e
        .cmd()
        .args([
            "guard",
            "--reason",
            "purge transactions 2019",
            books.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the command's own exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("To roll back"), "{stderr}");
    let rollback = common::printed_rollback(&out.stderr);
    assert_ne!(tree_bytes(&books), original);
    let snap = e.json(&["cat", "snapshot", "latest"]);
    assert_eq!(snap["reason"], "purge transactions 2019");
    // The printed command, run as printed, puts the folder back.
    common::run_printed(&rollback, &[]);
    assert_eq!(tree_bytes(&books), original);

    // A command that succeeds: exit 0, the safety snapshot stays.
    e.cmd()
        .args([
            "guard",
            "--reason",
            "software update 2026.2",
            books.to_str().unwrap(),
            "--",
            "true",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("stays"));
    assert_eq!(ids(&e).len(), 2);
    // Without a command there is nothing to guard.
    e.cmd()
        .args(["guard", "--reason", "x", books.to_str().unwrap()])
        .assert()
        .code(2);
    // With --json: one document, the guard's, naming its safety snapshot.
    let out = e
        .cmd()
        .args([
            "--json",
            "guard",
            "--reason",
            "software update 2026.3",
            books.to_str().unwrap(),
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(docs.len(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs[0]["command_exit_code"], 0);
    assert!(docs[0]["snapshot_id"].is_string());
}

/// Kills `prune` with SIGKILL at moments spread over its run; after each,
/// the repository checks clean, the remaining snapshot restores byte for
/// byte, and a new prune finishes the job.
#[test]
fn kill_9_during_prune_loses_nothing() {
    let e = Env::with_repo();
    let dir = e.root.join("scans");
    fs::create_dir(&dir).unwrap();
    let write_gen = |gen: u64| {
        for i in 0..10u64 {
            if gen == 0 || i % 2 == 0 {
                let mut rng =
                    <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(gen * 100 + i);
                let mut d = vec![0u8; 3_000_000];
                rand::Rng::fill(&mut rng, &mut d[..]);
                fs::write(dir.join(format!("scan-{i}.bin")), d).unwrap();
            }
        }
    };
    write_gen(0);
    e.cmd()
        .args(["backup", "-q", dir.to_str().unwrap()])
        .assert()
        .success();
    write_gen(1);
    e.cmd()
        .args(["backup", "-q", dir.to_str().unwrap()])
        .assert()
        .success();
    let wanted = tree_bytes(&dir);
    e.cmd()
        .args(["forget", "-q", "--keep-last", "1"])
        .assert()
        .success();
    let pristine = e.root.join("pristine");
    copy_dir(&e.repo, &pristine);

    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let before = repo_files(&pristine);
    let mut killed_while_running = 0;
    // Kill at moments set by what prune has done, not by the clock (it can
    // finish in a few milliseconds): after its k-th change to the
    // repository's files (a pack or index written, or a file deleted).
    for k in [1usize, 2, 3, 4, 6, 9, 14] {
        fs::remove_dir_all(&e.repo).unwrap();
        copy_dir(&pristine, &e.repo);
        let mut child = StdCommand::new(&bin)
            .args(["prune", "--repack-threshold", "0", "--min-pack-age", "0s"])
            .env("LEDGERVAULT_REPOSITORY", &e.repo)
            .env("LEDGERVAULT_PASSWORD_FILE", &e.pw)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stage = k;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let now = repo_files(&e.repo);
            if now.symmetric_difference(&before).count() >= k {
                killed_while_running += 1;
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        e.cmd().args(["check", "--read-data"]).assert().success();
        let out = e.root.join(format!("out-{stage}"));
        e.cmd()
            .args(["restore", "-q", "latest", "--target", out.to_str().unwrap()])
            .assert()
            .success();
        assert_eq!(
            tree_bytes(&out.join("scans")),
            wanted,
            "killed after {stage} changes"
        );
        e.cmd()
            .args(["prune", "-q", "--min-pack-age", "0s"])
            .assert()
            .success();
        let again = e.json(&["prune", "--dry-run", "--min-pack-age", "0s"]);
        assert_eq!(again["packs_deleted"], 0, "killed after {stage} changes");
        assert_eq!(again["packs_unindexed"], 0, "killed after {stage} changes");
        e.cmd().args(["check"]).assert().success();
    }
    assert!(
        killed_while_running >= 2,
        "prune finished too early to be killed ({killed_while_running} kills landed)"
    );
}

/// The repository's object files (not locks or temporary files).
fn repo_files(root: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.starts_with("locks") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if !rel.contains(".tmp") {
                out.insert(rel);
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
