//! End-to-end tests of the `ledgervault` binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use ledgervault_testkit::fixtures;
use predicates::prelude::*;

mod common;
use common::{diff_trees, one_line_error, Env};

#[test]
fn backup_restore_is_byte_identical() {
    let e = Env::new();
    e.init();
    let data = e.data("books", 8_000_000, 11);
    let s = e.json(&[
        "backup",
        data.to_str().unwrap(),
        "--tag",
        "nightly",
        "--reason",
        "year-end close FY2026",
    ]);
    assert!(s["bytes_read"].as_u64().unwrap() >= 8_000_000);
    assert_eq!(s["repository"]["snapshots"], 1);
    let id = s["snapshot_id"].as_str().unwrap().to_string();

    // Human summary of a second backup.
    e.cmd()
        .args(["backup", data.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^snapshot [0-9a-f]{8} saved: .* read, 0 B new, 0 B stored, .* s\. The repository holds 2 snapshots in .*; .* free on its disk\.\n$").unwrap());

    let snaps = e.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(snaps[0]["reason"], "year-end close FY2026");
    assert_eq!(snaps[0]["tags"][0], "nightly");

    let target = e.root.join("out");
    e.cmd()
        .args(["restore", &id[..10], "--target", target.to_str().unwrap()])
        .assert()
        .success();
    diff_trees(&data, &target.join("books"));

    // ls lists what was restored; --include restores a part.
    let ls = e.json(&["ls", "latest"]);
    assert!(ls
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["path"] == "/books/ledgers-link" && n["type"] == "symlink"));
    let part = e.root.join("part");
    e.cmd()
        .args([
            "restore",
            "latest",
            "--target",
            part.to_str().unwrap(),
            "--include",
            "/books/ledgers",
        ])
        .assert()
        .success();
    assert!(part.join("books/ledgers").is_dir() && !part.join("books/scans").exists());
    e.cmd()
        .args(["check", "--read-data"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no errors were found"));
}

#[test]
fn stdin_backup_and_restore() {
    let e = Env::new();
    e.init();
    let dump: Vec<u8> = fixtures::ledger_text(
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
        3_000_000,
    );
    e.cmd()
        .args(["backup", "--stdin-name", "firm.sql"])
        .write_stdin(dump.clone())
        .assert()
        .success();
    let out = e.root.join("out");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    assert!(fs::read(out.join("firm.sql")).unwrap() == dump);
}

#[test]
fn usage_and_access_errors_have_distinct_codes() {
    let e = Env::new();
    // No repository yet.
    let out = e.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(one_line_error(&out.stderr).contains("no ledgervault repository"));
    e.init();
    // Wrong password.
    let bad = e.root.join("badpw");
    fs::write(&bad, "nope").unwrap();
    let out = e
        .cmd()
        .args(["snapshots", "--password-file", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(one_line_error(&out.stderr).contains("wrong password"));
    // No password at all, not on a terminal.
    let out = e
        .cmd()
        .env_remove("LEDGERVAULT_PASSWORD_FILE")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    one_line_error(&out.stderr);
    // Password from the environment works.
    e.cmd()
        .env_remove("LEDGERVAULT_PASSWORD_FILE")
        .env("LEDGERVAULT_PASSWORD", "s3cret")
        .arg("snapshots")
        .assert()
        .success();
    // Usage errors.
    e.cmd().args(["backup"]).assert().code(2);
    e.cmd()
        .args(["check", "--read-data-subset", "250"])
        .assert()
        .code(2);
    // Missing source path.
    let out = e
        .cmd()
        .args(["backup", "/definitely/not/here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("/definitely/not/here"));
    // Unknown snapshot, and init over an existing repository.
    let out = e.cmd().args(["ls", "abcdef"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("no snapshot matches"));
    let out = e
        .cmd()
        .args(["init", "--argon2-memory-kib", "64"])
        .output()
        .unwrap();
    assert!(one_line_error(&out.stderr).contains("already exists"));
}

/// With `--json` a failure is also an object on standard output: its kind
/// (what the daemon decides retries by), the message and the exit code.
#[test]
fn json_errors_say_their_kind() {
    let e = Env::new();
    let error_of = |args: &[&str], pw: Option<&Path>| {
        let mut c = e.cmd();
        c.arg("--json").args(args);
        if let Some(p) = pw {
            c.args(["--password-file", p.to_str().unwrap()]);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        one_line_error(&out.stderr);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(v["error"]["exit_code"], out.status.code().unwrap());
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        v["error"]["kind"].as_str().unwrap().to_string()
    };
    assert_eq!(error_of(&["snapshots"], None), "no_repository");
    e.init();
    let bad = e.root.join("badpw");
    fs::write(&bad, "nope").unwrap();
    assert_eq!(error_of(&["snapshots"], Some(&bad)), "wrong_password");
    assert_eq!(error_of(&["backup"], None), "usage");
    assert_eq!(error_of(&["backup", "/definitely/not/here"], None), "other");
}

#[test]
fn unreadable_source_files_finish_with_code_3() {
    let e = Env::new();
    e.init();
    let data = e.data("docs", 200_000, 3);
    // /proc/self/mem is a regular file whose first read always fails, even for root.
    let out = e
        .cmd()
        .args(["backup", data.to_str().unwrap(), "/proc/self/mem"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not read /proc/self/mem"), "{err}");
    // The readable files are in the snapshot.
    let ls = e.json(&["ls", "latest"]);
    assert!(ls
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["path"] == "/docs/empty.txt"));
}

#[test]
fn newer_format_and_damaged_config_are_refused() {
    let e = Env::new();
    e.init();
    let cfg = e.repo.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    // Version 2 is an immutable repository's config; 3 is the future.
    v["format_version"] = 3.into();
    fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = e.cmd().arg("snapshots").output().unwrap();
    assert!(!out.status.success());
    assert!(one_line_error(&out.stderr).contains("written by a newer ledgervault"));
    fs::write(&cfg, b"{ not json").unwrap();
    let out = e.cmd().args(["cat", "config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(one_line_error(&out.stderr).contains("config is damaged"));
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(objects(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn damage_is_named_by_check_and_refused_by_restore() {
    let e = Env::new();
    e.init();
    let data = e.data("books", 3_000_000, 5);
    e.cmd()
        .args(["backup", data.to_str().unwrap()])
        .assert()
        .success();
    let packs = objects(&e.repo.join("data"));
    assert!(!packs.is_empty());
    // Flip one byte in the middle of the biggest pack.
    let pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(pack, &bytes).unwrap();

    let out = e.cmd().args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&name), "{stdout}");

    let target = e.root.join("out");
    let out = e
        .cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not restored: books/") && err.contains(&name[..16]),
        "{err}"
    );
    // No damaged file was written, and no temporary file is left behind.
    for f in objects(&target) {
        let rel = f.strip_prefix(&target).unwrap();
        assert!(!rel.to_string_lossy().contains(".lv-restore-"), "{rel:?}");
        if !fs::symlink_metadata(&f).unwrap().file_type().is_symlink() {
            assert!(
                fs::read(&f).unwrap() == fs::read(e.root.join(rel)).unwrap(),
                "{rel:?} differs"
            );
        }
    }
    // A truncated pack is found without reading data.
    fs::write(pack, &bytes[..bytes.len() - 100]).unwrap();
    let out = e.cmd().args(["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated"));

    // Repair: a dry run changes nothing; then the index is rebuilt from the
    // packs (salvaging the frames before the cut) and the snapshot is
    // rewritten without the files that lost data.
    let before = objects(&e.repo);
    let dry = e.json(&["repair", "index", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(objects(&e.repo), before);
    let r = e.json(&["repair", "index"]);
    assert_eq!(r["damaged_packs"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["damaged_packs"][0]["frames_salvaged"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(r["blobs_lost"].as_u64().unwrap() > 0, "{r}");
    assert!(!pack.exists(), "the damaged pack is replaced");
    let out = e
        .cmd()
        .args(["repair", "snapshots", "--forget"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repaired as") && text.contains("chunks lost)"),
        "{text}"
    );
    e.cmd().args(["check", "--read-data"]).assert().success();
    let snaps = e.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert!(snaps[0]["tags"].to_string().contains("repaired"), "{snaps}");
    let again = e.root.join("again");
    e.cmd()
        .args(["restore", "latest", "--target", again.to_str().unwrap()])
        .assert()
        .success();
    let mut kept = 0;
    for f in objects(&again) {
        let rel = f.strip_prefix(&again).unwrap();
        if fs::symlink_metadata(&f).unwrap().file_type().is_file() {
            assert!(
                fs::read(&f).unwrap() == fs::read(e.root.join(rel)).unwrap(),
                "{rel:?}"
            );
            kept += 1;
        }
    }
    assert!(kept > 0);
    // A second repair finds nothing to do.
    let r = e.json(&["repair", "index"]);
    assert_eq!(r["index_files_written"], 0, "{r}");
}

#[test]
fn damaged_index_and_snapshot_files_are_named() {
    let e = Env::new();
    e.init();
    let data = e.data("books", 500_000, 6);
    e.cmd()
        .args(["backup", data.to_str().unwrap()])
        .assert()
        .success();
    for dir in ["index", "snapshots"] {
        let f = objects(&e.repo.join(dir)).remove(0);
        let orig = fs::read(&f).unwrap();
        fs::write(&f, &orig[..orig.len() / 2]).unwrap();
        let out = e.cmd().args(["check"]).output().unwrap();
        assert_eq!(out.status.code(), Some(4));
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(name), "{dir}");
        let out = e
            .cmd()
            .args([
                "restore",
                "latest",
                "--target",
                e.root.join("o").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(one_line_error(&out.stderr).contains(name), "{dir}");
        fs::write(&f, &orig).unwrap();
    }
}

#[test]
fn keys_can_be_added_listed_changed_and_removed() {
    let e = Env::new();
    e.init();
    let pw2 = e.root.join("pw2");
    fs::write(&pw2, "second").unwrap();
    let fast = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];
    let added = e.json(
        &[
            &["key", "add", "--new-password-file", pw2.to_str().unwrap()][..],
            &fast,
        ]
        .concat(),
    );
    let added_id = added["id"].as_str().unwrap().to_string();
    let keys = e.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The second password opens the repository.
    e.cmd()
        .args(["snapshots", "--password-file", pw2.to_str().unwrap()])
        .assert()
        .success();
    // The key in use cannot be removed; the other one can.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    e.cmd()
        .args(["key", "remove", &current[..12]])
        .assert()
        .failure();
    e.cmd()
        .args(["key", "remove", &added_id[..12]])
        .assert()
        .success();
    e.cmd()
        .args(["snapshots", "--password-file", pw2.to_str().unwrap()])
        .assert()
        .code(12);
    // passwd replaces the key in use.
    let pw3 = e.root.join("pw3");
    fs::write(&pw3, "third").unwrap();
    e.cmd()
        .args(
            [
                &[
                    "key",
                    "passwd",
                    "--new-password-file",
                    pw3.to_str().unwrap(),
                ][..],
                &fast,
            ]
            .concat(),
        )
        .assert()
        .success();
    e.cmd().arg("snapshots").assert().code(12);
    e.cmd()
        .args(["snapshots", "--password-file", pw3.to_str().unwrap()])
        .assert()
        .success();
}

#[test]
fn a_live_lock_blocks_and_is_reported_with_code_11() {
    let e = Env::new();
    e.init();
    let repo = ledgervault_repo::Repository::open(
        std::sync::Arc::new(ledgervault_backends::LocalBackend::new(&e.repo)),
        b"s3cret",
    )
    .unwrap();
    let guard = ledgervault_repo::lock(&repo, true, "prune").unwrap();
    let out = e.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    assert!(one_line_error(&out.stderr).contains("exclusive lock"));
    drop(guard);
    e.cmd().arg("check").assert().success();

    // --retry-lock waits: past its time it still fails with 11 ...
    let guard = ledgervault_repo::lock(&repo, true, "prune").unwrap();
    let t = Instant::now();
    let out = e
        .cmd()
        .args(["check", "--retry-lock", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    one_line_error(&out.stderr);
    // ... and a lock released while it waits lets the command run.
    let waiting = StdCommand::new(assert_cmd::cargo::cargo_bin("ledgervault"))
        .args(["-q", "backup", "--retry-lock", "1min"])
        .arg(e.data("books", 50_000, 2))
        .env("LEDGERVAULT_REPOSITORY", &e.repo)
        .env("LEDGERVAULT_PASSWORD_FILE", &e.pw)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(guard);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A malformed wait is a usage error.
    let out = e
        .cmd()
        .args(["check", "--retry-lock", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn kill_9_during_backup_leaves_a_valid_repository() {
    let e = Env::new();
    e.init();
    let small = e.data("earlier", 300_000, 8);
    e.cmd()
        .args(["backup", small.to_str().unwrap()])
        .assert()
        .success();
    let big = e.root.join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..12 {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(i);
        let mut d = vec![0u8; 8_000_000];
        rand::Rng::fill(&mut rng, &mut d[..]);
        fs::write(big.join(format!("scan-{i}.bin")), d).unwrap();
    }
    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let mut child = StdCommand::new(&bin)
        .args(["backup", big.to_str().unwrap(), "--threads", "1"])
        .env("LEDGERVAULT_REPOSITORY", &e.repo)
        .env("LEDGERVAULT_PASSWORD_FILE", &e.pw)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written some index files (so some work is findable).
    let start = Instant::now();
    loop {
        // Finished index files only, not a write in progress (`.tmp-*`).
        let indexes = fs::read_dir(e.repo.join("index"))
            .map(|d| {
                d.filter(|f| {
                    f.as_ref()
                        .is_ok_and(|f| !f.file_name().to_string_lossy().starts_with('.'))
                })
                .count()
            })
            .unwrap_or(0);
        if indexes >= 3 || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        e.json(&["snapshots"]).as_array().unwrap().len(),
        1,
        "no snapshot from the killed backup"
    );

    // check passes and reports the dead process's lock as stale.
    e.cmd()
        .arg("check")
        .assert()
        .success()
        .stderr(predicate::str::contains("stale lock"));
    e.cmd()
        .arg("unlock")
        .assert()
        .success()
        .stdout(predicate::str::contains("1 lock(s) removed"));
    // The earlier snapshot restores byte-identical.
    let out = e.root.join("out1");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    diff_trees(&small, &out.join("earlier"));
    // The next backup succeeds and reuses what the killed one stored.
    let s = e.json(&["backup", big.to_str().unwrap()]);
    assert!(
        s["bytes_new"].as_u64().unwrap() + 6_000_000 <= s["bytes_read"].as_u64().unwrap(),
        "{s}"
    );
    e.cmd().args(["check", "--read-data"]).assert().success();
    let out = e.root.join("out2");
    e.cmd()
        .args(["restore", "latest", "--target", out.to_str().unwrap()])
        .assert()
        .success();
    diff_trees(&big, &out.join("big"));
}

/// Runs a shell script as root of a private user and mount namespace, so
/// it may mount without privileges; `$REPO` and `$ROOT` are `e`'s folders.
fn in_private_namespace(e: &Env, script: &str) -> std::process::ExitStatus {
    StdCommand::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env("REPO", &e.repo)
        .env("ROOT", &e.root)
        .env("LEDGERVAULT_REPOSITORY", &e.repo)
        .env("LEDGERVAULT_PASSWORD_FILE", &e.pw)
        .status()
        .expect("unshare (util-linux) is needed for this test")
}

/// A repository on read-only storage (an archive disk mounted read-only)
/// cannot take a lock file: restores and listings still work, and a
/// backup fails with one line naming the problem.
#[test]
fn a_read_only_repository_still_restores() {
    let e = Env::with_repo();
    let books = e.data("books", 200_000, 4);
    e.cmd()
        .args(["-q", "backup", books.to_str().unwrap()])
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let script = format!(
        r#"set -u
mount --bind "$REPO" "$REPO" && mount -o remount,bind,ro "$REPO" || exit 90
touch "$REPO/probe" 2>/dev/null && exit 91
lv() {{ "{bin}" "$@"; }}
lv restore latest --target "$ROOT/out" >/dev/null 2>"$ROOT/restore.err" || exit 92
lv ls latest >/dev/null || exit 93
lv backup "$ROOT/books" 2>"$ROOT/backup.err"; echo "code=$?" >"$ROOT/backup.code"
"#,
        bin = bin.display(),
    );
    let status = in_private_namespace(&e, &script);
    assert_eq!(
        status.code(),
        Some(0),
        "step failed: {}",
        fs::read_to_string(e.root.join("restore.err")).unwrap_or_default()
    );
    diff_trees(&books, &e.root.join("out/books"));
    let warned = fs::read_to_string(e.root.join("restore.err")).unwrap();
    assert!(warned.contains("reading without one"), "{warned}");
    assert_ne!(
        fs::read_to_string(e.root.join("backup.code"))
            .unwrap()
            .trim(),
        "code=0"
    );
    let err = fs::read_to_string(e.root.join("backup.err")).unwrap();
    assert!(one_line_error(err.as_bytes()).contains("ead-only"), "{err}");
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_earlier_snapshots() {
    // A real 3 MiB tmpfs, mounted in a private user and mount namespace so
    // the test needs no privileges.
    let e = Env::new();
    let small = e.data("earlier", 200_000, 9);
    let big = e.root.join("big");
    fs::create_dir_all(&big).unwrap();
    let mut d = vec![0u8; 10_000_000];
    rand::Rng::fill(
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
        &mut d[..],
    );
    fs::write(big.join("scan.bin"), d).unwrap();
    fs::create_dir_all(&e.repo).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=3m ledgervault-test "$REPO" || exit 90
lv() {{ "{bin}" "$@"; }}
lv init --argon2-memory-kib 64 --argon2-iterations 1 --pack-size-mib 1 >/dev/null || exit 91
lv backup "{small}" >/dev/null || exit 92
lv backup "{big}" 2>"$ROOT/full.err"; echo "code=$?" >"$ROOT/full.code"
lv check --read-data >"$ROOT/check.out" 2>&1 || exit 93
lv restore latest --target "$ROOT/out" >/dev/null || exit 94
"#,
        bin = bin.display(),
        small = small.display(),
        big = big.display()
    );
    let status = in_private_namespace(&e, &script);
    assert_eq!(
        status.code(),
        Some(0),
        "step failed: {}",
        fs::read_to_string(e.root.join("check.out")).unwrap_or_default()
    );
    assert_eq!(
        fs::read_to_string(e.root.join("full.code")).unwrap().trim(),
        "code=1"
    );
    let err = fs::read_to_string(e.root.join("full.err")).unwrap();
    assert!(
        one_line_error(err.as_bytes()).contains("disk is full"),
        "{err}"
    );
    diff_trees(&small, &e.root.join("out/earlier"));
}

#[test]
fn a_repository_inside_the_source_is_not_backed_up_into_itself() {
    let e = Env::new();
    let data = e.data("firm", 300_000, 12);
    // The repository lives inside the folder being backed up, named relatively.
    let mut c = e.cmd();
    c.current_dir(&data).env("LEDGERVAULT_REPOSITORY", "repo");
    c.args([
        "init",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
    ])
    .assert()
    .success();
    let mut c = e.cmd();
    c.current_dir(&data).env("LEDGERVAULT_REPOSITORY", "repo");
    c.args(["backup", "."]).assert().success();
    let mut c = e.cmd();
    c.current_dir(&data).env("LEDGERVAULT_REPOSITORY", "repo");
    let out = c.args(["--json", "ls", "latest"]).output().unwrap();
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("/ledgers")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("/repo")), "{paths:?}");
}

#[test]
fn a_damaged_only_key_file_is_named_not_called_a_wrong_password() {
    let e = Env::with_repo();
    let keys: Vec<_> = fs::read_dir(e.repo.join("keys"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    fs::write(&keys[0], b"{ this is not a key file").unwrap();
    let out = e.cmd().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = one_line_error(&out.stderr);
    assert!(err.contains("keys/") && err.contains("damaged"), "{err}");
}

#[test]
fn outside_input_is_bounded_and_numbers_are_range_checked() {
    let e = Env::with_repo();
    // An endless password file is refused after a few KiB, not read whole.
    let out = e
        .cmd()
        .args(["snapshots", "--password-file", "/dev/zero"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out.stderr);
    assert!(
        err.contains("/dev/zero") && err.contains("larger than 4 KiB"),
        "{err}"
    );
    // So is an endless config file.
    let out = e
        .cmd()
        .args(["-c", "/dev/zero", "config", "check"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out.stderr).contains("larger than"));

    // Numbers that would overflow the date arithmetic are usage errors
    // naming the option, on the command line and in the config file.
    for args in [
        &["forget", "--protect-days", "4294967295", "-n"][..],
        &["backup", "--db-timeout", "18446744073709551615", "x"][..],
    ] {
        let out = e.cmd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(args[1]) && !err.contains("internal error"),
            "{err}"
        );
    }
    let cfg = e.root.join("lv.toml");
    for (text, key) in [
        (
            "[forget]\nprotect_days = 4294967295\n",
            "forget.protect_days",
        ),
        ("[daemon]\nretries = 4294967295\n", "daemon.retries"),
    ] {
        fs::write(&cfg, text).unwrap();
        let out = e
            .cmd()
            .args(["-c", cfg.to_str().unwrap(), "forget", "-n"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(one_line_error(&out.stderr).contains(key), "{text}");
    }
    // The largest accepted value works.
    e.cmd()
        .args(["forget", "--protect-days", "36500", "-n"])
        .assert()
        .success();
}

/// An immutable copy (read-only storage) is checkable: no lock file, a note.
#[test]
fn a_read_only_repository_can_be_checked() {
    let e = Env::with_repo();
    let books = e.data("books", 100_000, 2);
    e.cmd()
        .args(["-q", "backup", books.to_str().unwrap()])
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("ledgervault");
    let script = format!(
        r#"set -u
mount --bind "$REPO" "$REPO" && mount -o remount,bind,ro "$REPO" || exit 90
touch "$REPO/probe" 2>/dev/null && exit 91
"{bin}" check --read-data >"$ROOT/check.out" 2>"$ROOT/check.err" || exit 92
"#,
        bin = bin.display(),
    );
    let status = in_private_namespace(&e, &script);
    let err = fs::read_to_string(e.root.join("check.err")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "check failed: {err}");
    let out = fs::read_to_string(e.root.join("check.out")).unwrap();
    assert!(out.contains("no errors were found"), "{out}");
    assert!(
        one_line_error(err.as_bytes()).contains("checked without one"),
        "{err}"
    );
}

#[test]
fn bad_repository_paths_are_refused_before_anything_is_written() {
    let e = Env::new();
    let work = e.root.join("work");
    fs::create_dir(&work).unwrap();
    // An empty path would have meant the current folder.
    for args in [&["-r", "", "init"][..], &["-r", "", "snapshots"][..]] {
        let out = e
            .cmd()
            .env_remove("LEDGERVAULT_REPOSITORY")
            .current_dir(&work)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(one_line_error(&out.stderr).contains("repository path is empty"));
    }
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "init wrote into the current folder"
    );
    // A regular file: the error names it.
    let file = e.root.join("not-a-folder");
    fs::write(&file, "x").unwrap();
    for cmd in ["init", "snapshots"] {
        let out = e.cmd_for(&file, &e.pw).arg(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = one_line_error(&out.stderr);
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("is a file"),
            "{err}"
        );
    }
}

#[test]
fn ls_with_missing_data_exits_4() {
    let e = Env::with_repo();
    let books = e.data("books", 50_000, 3);
    e.cmd()
        .args(["-q", "backup", books.to_str().unwrap()])
        .assert()
        .success();
    for pack in objects(&e.repo.join("data")) {
        fs::remove_file(pack).unwrap();
    }
    let out = e.cmd().args(["ls", "latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    one_line_error(&out.stderr);
}

#[test]
fn many_stale_locks_make_one_warning() {
    let e = Env::with_repo();
    let books = e.data("books", 20_000, 4);
    // Three backups die right after writing their lock, as in a power cut.
    for _ in 0..3 {
        let out = e
            .cmd()
            .env("LEDGERVAULT_FAULT_INJECTION", "stop:write:1")
            .args(["-q", "backup", books.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(99));
    }
    assert_eq!(objects(&e.repo.join("locks")).len(), 3);
    let out = e
        .cmd()
        .args(["-q", "backup", books.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = one_line_error(&out.stderr);
    assert!(err.contains("3 stale locks ignored"), "{err}");
    let out = e.cmd().arg("check").output().unwrap();
    assert!(out.status.success());
    let err = one_line_error(&out.stderr);
    assert!(err.contains("3 stale locks"), "{err}");
}

/// No name can fake an extra line in a listing, and `--json` carries every
/// name losslessly, also those that are not UTF-8.
#[test]
fn listings_escape_names_and_json_keeps_their_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let e = Env::with_repo();
    let share = e.root.join("share");
    fs::create_dir_all(&share).unwrap();
    let names: Vec<&[u8]> = vec![
        b"evil\nfake-entry.txt",
        b"r\xe9sum\xe9.doc",
        b"tab\there",
        b"\x1b[2Jclear",
    ];
    for n in &names {
        fs::write(share.join(OsStr::from_bytes(n)), b"x").unwrap();
    }
    e.cmd()
        .args(["backup", "-q", share.to_str().unwrap()])
        .assert()
        .success();
    let out = e.cmd().args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // The folder and its four files: five lines, whatever the names hold.
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("/share/evil\\nfake-entry.txt"), "{text}");
    assert!(text.contains("r\\xe9sum\\xe9.doc"), "{text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\t'), "{text}");
    let json = e.json(&["ls", "latest"]);
    let rows = json.as_array().unwrap();
    let latin1 = rows
        .iter()
        .find(|r| r["path_bytes"].is_string())
        .expect("the Latin-1 name carries its bytes");
    assert_eq!(
        hex::decode(latin1["path_bytes"].as_str().unwrap()).unwrap(),
        b"/share/r\xe9sum\xe9.doc"
    );
    assert!(rows
        .iter()
        .any(|r| r["path"] == "/share/evil\nfake-entry.txt"));
}
