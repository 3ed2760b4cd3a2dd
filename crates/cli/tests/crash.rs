//! Crash at every step: the real binary, with its storage failing at, or
//! the process stopping right after, the 1st, 2nd, … write or delete of a
//! backup, a prune, a copy and a per-client restore (debug builds honour
//! `LEDGERVAULT_FAULT_INJECTION`). After each interruption `check
//! --read-data` passes, every snapshot that existed before restores
//! byte-identical, and running the command again succeeds.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_tree, diff_trees, Env};
use rusqlite::Connection;

/// Most steps any of these commands takes here; a command that has not
/// finished by then is a test failure, not a reason to stop looking.
const MAX_STEPS: u64 = 80;

/// Runs `args` with a fault at step `n`; returns the exit code.
fn run_faulty(e: &Env, args: &[&str], spec: &str) -> i32 {
    let out = e
        .cmd()
        .env("LEDGERVAULT_FAULT_INJECTION", spec)
        .args(["-q"])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    // Whatever happened, it was said in one line, never a panic.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{spec}: {err}");
    code
}

fn snapshot_ids(e: &Env) -> Vec<String> {
    e.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn restore_to(e: &Env, id: &str, target: &Path) {
    if target.exists() {
        fs::remove_dir_all(target).unwrap();
    }
    e.cmd()
        .args(["restore", id, "--target", target.to_str().unwrap()])
        .assert()
        .success();
}

/// Interrupts `op` at every step, in both modes. `base` is the repository
/// folder to start each attempt from (copied over `e.repo`); `prepare`
/// resets anything else the command touches; `after` proves the state after
/// an interruption (the repository is already checked); `rerun_ok` proves
/// the state after the command ran again to the end.
fn at_every_step(
    e: &Env,
    name: &str,
    op: &[&str],
    base: &Path,
    prepare: &dyn Fn(),
    after: &dyn Fn(&str),
    rerun_ok: &dyn Fn(&str),
) -> u64 {
    let mut steps = 0;
    for mode in ["fail", "stop"] {
        let mut n = 1;
        loop {
            assert!(
                n <= MAX_STEPS,
                "{name}: still not finished after {MAX_STEPS} steps"
            );
            copy_tree(base, &e.repo);
            prepare();
            let spec = format!("{mode}:any:{n}");
            let what = format!("{name} {spec}");
            let code = run_faulty(e, op, &spec);
            e.check_clean(&e.repo, &e.pw, &what);
            after(&what);
            if code == 0 {
                // Finished before step n: every step has been tried.
                rerun_ok(&what);
                break;
            }
            if mode == "stop" {
                assert_eq!(code, 99, "{what}: expected the injected stop");
            }
            e.cmd().args(["-q"]).args(op).assert().success();
            e.check_clean(&e.repo, &e.pw, &format!("{what}, run again"));
            rerun_ok(&what);
            n += 1;
            steps += 1;
        }
    }
    steps
}

struct Files {
    e: Env,
    data: PathBuf,
    /// Snapshot ids and their restored trees.
    refs: Vec<(String, PathBuf)>,
    base: PathBuf,
}

fn files_setup() -> Files {
    let e = Env::new();
    e.init();
    let data = e.data("books", 2_500_000, 3);
    e.cmd()
        .args(["-q", "backup", data.to_str().unwrap()])
        .assert()
        .success();
    fs::write(
        data.join("ledgers/november.csv"),
        "2026-11-24,JE-1,1000 Cash,12.00\n",
    )
    .unwrap();
    e.cmd()
        .args(["-q", "backup", data.to_str().unwrap()])
        .assert()
        .success();
    let mut refs = Vec::new();
    for id in snapshot_ids(&e) {
        let t = e.root.join(format!("ref-{}", &id[..8]));
        restore_to(&e, &id, &t);
        refs.push((id, t));
    }
    let base = e.root.join("base");
    copy_tree(&e.repo, &base);
    Files {
        e,
        data,
        refs,
        base,
    }
}

fn earlier_snapshots_intact(f: &Files, what: &str) {
    let out = f.e.root.join("probe");
    for (id, reference) in &f.refs {
        restore_to(&f.e, id, &out);
        diff_trees(reference, &out);
        let _ = what;
    }
}

#[test]
fn backup_interrupted_at_every_step() {
    let f = files_setup();
    fs::write(f.data.join("ledgers/december.csv"), vec![b'7'; 300_000]).unwrap();
    let data = f.data.to_str().unwrap().to_string();
    let steps = at_every_step(
        &f.e,
        "backup",
        &["backup", &data],
        &f.base,
        &|| {},
        &|w| earlier_snapshots_intact(&f, w),
        &|_| {
            let out = f.e.root.join("latest");
            restore_to(&f.e, "latest", &out);
            diff_trees(&f.data, &out.join("books"));
        },
    );
    eprintln!("backup: {steps} interruptions");
    assert!(steps >= 4, "only {steps} steps");
}

#[test]
fn prune_interrupted_at_every_step() {
    let mut f = files_setup();
    // Forget the first snapshot; prune then repacks and deletes.
    f.e.cmd()
        .args(["-q", "forget", "--keep-last", "1"])
        .assert()
        .success();
    copy_tree(&f.e.repo, &f.base);
    f.refs.remove(0);
    let steps = at_every_step(
        &f.e,
        "prune",
        &["prune", "--repack-threshold", "0", "--min-pack-age", "0s"],
        &f.base,
        &|| {},
        &|w| earlier_snapshots_intact(&f, w),
        &|w| earlier_snapshots_intact(&f, w),
    );
    eprintln!("prune: {steps} interruptions");
    assert!(steps >= 3, "only {steps} steps");
}

#[test]
fn copy_interrupted_at_every_step() {
    let f = files_setup();
    let dst = f.e.root.join("offsite");
    let dst_base = f.e.root.join("offsite-base");
    let pw2 = f.e.root.join("pw2");
    fs::write(&pw2, "other\n").unwrap();
    f.e.init_at(&dst_base, &pw2);
    let on_dst = |args: &[&str]| f.e.cmd_for(&dst, &pw2).args(args).output().unwrap();
    let dst_s = dst.to_str().unwrap().to_string();
    let pw2_s = pw2.to_str().unwrap().to_string();
    let steps = at_every_step(
        &f.e,
        "copy",
        &["copy", "--to", &dst_s, "--to-password-file", &pw2_s],
        &f.base,
        &|| copy_tree(&dst_base, &dst),
        &|w| {
            earlier_snapshots_intact(&f, w);
            f.e.check_clean(&dst, &pw2, &format!("{w}: destination"));
        },
        &|w| {
            f.e.check_clean(&dst, &pw2, &format!("{w}: destination"));
            let list: serde_json::Value =
                serde_json::from_slice(&on_dst(&["--json", "snapshots"]).stdout).unwrap();
            assert_eq!(list.as_array().unwrap().len(), f.refs.len(), "{w}");
            let out = f.e.root.join("copied");
            if out.exists() {
                fs::remove_dir_all(&out).unwrap();
            }
            let r = on_dst(&["restore", "latest", "--target", out.to_str().unwrap()]);
            assert!(r.status.success(), "{w}");
            diff_trees(&f.refs.last().unwrap().1, &out);
        },
    );
    eprintln!("copy: {steps} interruptions");
    assert!(steps >= 4, "only {steps} steps");
}

#[test]
fn client_restore_interrupted_at_every_step() {
    let e = Env::new();
    e.init();
    let src = e.root.join("source.db");
    let opts = |clients, size, seed| ledgervault_samplefirm::FirmOptions {
        clients,
        size,
        seed,
    };
    ledgervault_samplefirm::generate(&src, &opts(2, 1_500_000, 5)).unwrap();
    let cfg = e.root.join("ledgervault.toml");
    fs::write(&cfg, "[client]\ndefault_link = \"nullify\"\n").unwrap();
    e.cmd()
        .args([
            "-q",
            "client",
            "backup",
            src.to_str().unwrap(),
            "--client",
            "1",
        ])
        .assert()
        .success();
    let target = e.root.join("target.db");
    let pristine = e.root.join("pristine.db");
    ledgervault_samplefirm::generate(&pristine, &opts(3, 1_500_000, 9)).unwrap();
    let base = e.root.join("base");
    copy_tree(&e.repo, &base);
    let dump = |db: &Path| -> Vec<String> {
        let c = Connection::open(db).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mut out = Vec::new();
        for t in ["clients", "accounts", "journal_entries", "journal_lines"] {
            let mut st = c.prepare(&format!("SELECT * FROM {t} ORDER BY 1")).unwrap();
            let n = st.column_count();
            let mut rs = st.query([]).unwrap();
            while let Some(r) = rs.next().unwrap() {
                out.push(format!(
                    "{t}:{}",
                    (0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|")
                ));
            }
        }
        out
    };
    let before = dump(&pristine);
    let target_s = target.to_str().unwrap().to_string();
    let cfg_s = cfg.to_str().unwrap().to_string();
    let steps = at_every_step(
        &e,
        "client restore",
        &[
            "-c",
            &cfg_s,
            "client",
            "restore",
            "latest",
            "--client",
            "1",
            "--into",
            &target_s,
            "--as-new",
            "--set",
            "code=MOVED",
        ],
        &base,
        &|| {
            fs::copy(&pristine, &target).unwrap();
            for ext in ["-wal", "-shm"] {
                let _ = fs::remove_file(format!("{}{ext}", target.display()));
            }
        },
        &|w| {
            // Unchanged, or wholly imported: never half.
            let now = dump(&target);
            let c = Connection::open(&target).unwrap();
            let moved: i64 = c
                .query_row(
                    "SELECT count(*) FROM clients WHERE code = 'MOVED'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            if moved == 0 {
                assert_eq!(now, before, "{w}: target changed without the import");
            } else {
                assert!(
                    ledgervault_samplefirm::unbalanced_clients(&c)
                        .unwrap()
                        .is_empty(),
                    "{w}"
                );
            }
        },
        &|w| {
            let c = Connection::open(&target).unwrap();
            let moved: i64 = c
                .query_row(
                    "SELECT count(*) FROM clients WHERE code = 'MOVED'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(moved >= 1, "{w}: the import did not land");
        },
    );
    eprintln!("client restore: {steps} interruptions");
    assert!(steps >= 2, "only {steps} steps");
}
