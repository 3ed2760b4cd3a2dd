//! Unattended operation, end to end with the real binary: the config file,
//! `copy` between repositories with different passwords, alerts through a
//! real SMTP sink and HTTP receiver on loopback, and the daemon itself run
//! for a minute on a schedule of a few seconds.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use common::one_line_error;
use ledgervault_testkit::net::{HttpReceiver, SmtpSink};

/// A firm: a primary repository with a full key and an append-only
/// (nightly) key, a NAS repository with its own password, a folder of
/// documents and a SQLite ledger.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

const FAST: [&str; 6] = [
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--pack-size-mib",
    "1",
];

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for (f, pw) in [
            ("full.pw", "full-pw"),
            ("nightly.pw", "nightly-pw"),
            ("nas.pw", "nas-pw"),
        ] {
            fs::write(root.join(f), format!("{pw}\n")).unwrap();
        }
        let s = Site { _tmp: tmp, root };
        s.raw()
            .args(["-r", s.p("primary").to_str().unwrap()])
            .args(["--password-file", s.p("full.pw").to_str().unwrap(), "init"])
            .args(FAST)
            .assert()
            .success();
        s.raw()
            .args(["-r", s.p("primary").to_str().unwrap()])
            .args(["--password-file", s.p("full.pw").to_str().unwrap()])
            .args(["key", "add", "--append-only", "--new-password-file"])
            .arg(s.p("nightly.pw"))
            .args(&FAST[..4])
            .assert()
            .success();
        s.raw()
            .args(["-r", s.p("nas").to_str().unwrap()])
            .args(["--password-file", s.p("nas.pw").to_str().unwrap(), "init"])
            .args(FAST)
            .assert()
            .success();
        let docs = s.p("docs");
        fs::create_dir_all(docs.join("2026")).unwrap();
        fs::write(docs.join("2026/invoice-1041.txt"), "invoice 1041: 250.00").unwrap();
        fs::write(docs.join("scratch.tmp"), "leave me out").unwrap();
        let db = rusqlite::Connection::open(s.p("books.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY, memo TEXT, amount INTEGER);
             INSERT INTO entries (memo, amount) VALUES ('opening', 100), ('opening', -100);",
        )
        .unwrap();
        s
    }

    fn p(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn raw(&self) -> Command {
        let mut c = Command::cargo_bin("ledgervault").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.root);
        c
    }

    /// `ledgervault -c ledgervault.toml ...`.
    fn lv(&self) -> Command {
        let mut c = self.raw();
        c.arg("-c").arg(self.p("ledgervault.toml"));
        c
    }

    fn write_config(&self, extra: &str) {
        let text = format!(
            r#"[repository]
path = "{root}/primary"
password_file = "{root}/nightly.pw"

[[copy]]
name = "nas"
path = "{root}/nas"
password_file = "{root}/nas.pw"
schedule = "every 7 seconds"

[[source]]
path = "{root}/books.db"

[[source]]
path = "{root}/docs"
exclude = ["*.tmp"]

[verify]
interval = "1h"
scratch = "{root}"

[daemon]
retries = 1
retry_delay = "1s"
{extra}
"#,
            root = self.root.display()
        );
        fs::write(self.p("ledgervault.toml"), text).unwrap();
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.lv().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn snapshots(&self, repo: &str, pw: &str) -> Vec<serde_json::Value> {
        let out = self
            .raw()
            .args(["--json", "-r", self.p(repo).to_str().unwrap()])
            .args(["--password-file", self.p(pw).to_str().unwrap(), "snapshots"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn history_rows(path: &Path) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut st = db
        .prepare("SELECT job, outcome, attempt FROM runs ORDER BY started, id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn config_backup_uses_the_sources_rules_and_the_repository() {
    let s = Site::new();
    s.write_config("");
    let v = s.json(&["backup"]);
    assert!(v["snapshot_id"].is_string(), "{v}");
    let ls = s.json(&["ls", "latest"]);
    let paths: Vec<String> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("invoice-1041.txt")),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.ends_with("scratch.tmp")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("books.db")), "{paths:?}");
    // The nightly key is append-only: forget through the config is refused.
    let out = s
        .lv()
        .args(["forget", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(13),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_names_the_line_of_each_mistake() {
    let s = Site::new();
    s.write_config("");
    s.lv().args(["config", "check"]).assert().success();

    let cases = [
        ("[schedule]\nbackup = \"nightly at 2\"\n", "line 26"),
        ("[schedule]\nbakup = \"daily at 02:00\"\n", "line 26"),
        ("[[source]]\npath = \"/nonexistent/ledger.db\"\n", "line 26"),
    ];
    for (extra, line) in cases {
        s.write_config(extra);
        let out = s.lv().args(["config", "check"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(line), "{extra}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A syntax error is one line too.
    fs::write(s.p("ledgervault.toml"), "[repository\npath = 1\n").unwrap();
    let out = s.lv().args(["config", "check"]).output().unwrap();
    assert!(one_line_error(&out.stderr).contains("line 1"));

    // A full-access key for the daemon is flagged.
    s.write_config("");
    let text = fs::read_to_string(s.p("ledgervault.toml"))
        .unwrap()
        .replace("nightly.pw", "full.pw");
    fs::write(s.p("ledgervault.toml"), text).unwrap();
    let out = s.lv().args(["config", "check"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("append-only"));
}

#[test]
fn init_config_writes_an_example_that_checks_out_except_for_its_paths() {
    let s = Site::new();
    s.raw()
        .args(["init-config", "example.toml"])
        .assert()
        .success();
    // It refuses to overwrite.
    let out = s
        .raw()
        .args(["init-config", "example.toml"])
        .output()
        .unwrap();
    assert!(one_line_error(&out.stderr).contains("already exists"));
    // It parses; only its made-up paths are unreachable.
    let out = s
        .raw()
        .args(["-c", "example.toml", "--json", "config", "check"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["problems"][0]
        .as_str()
        .unwrap()
        .contains("/srv/backup/ledgervault"));
}

#[test]
fn copy_between_repositories_with_different_passwords() {
    let s = Site::new();
    s.write_config("");
    s.json(&["backup"]);
    fs::write(s.p("docs/2026/invoice-1042.txt"), "invoice 1042: 99.00").unwrap();
    s.json(&["backup"]);

    let v = s.json(&["copy", "--to", "nas"]);
    assert_eq!(v["copied"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["same_keys"], false);
    let primary = s.snapshots("primary", "full.pw");
    let nas = s.snapshots("nas", "nas.pw");
    assert_eq!(nas.len(), 2);
    // The copies restore the same bytes.
    let out = s.p("restored");
    s.raw()
        .args([
            "-r",
            "nas",
            "--password-file",
            "nas.pw",
            "restore",
            "latest",
            "--target",
        ])
        .arg(&out)
        .assert()
        .success();
    let found: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.ends_with("invoice-1042.txt"))
        .collect();
    assert_eq!(
        fs::read_to_string(&found[0]).unwrap(),
        "invoice 1042: 99.00"
    );
    assert_eq!(primary[1]["time"], nas[1]["time"]);

    // Again: nothing to do.
    let again = s.json(&["copy", "--to", "nas"]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0);
    assert_eq!(again["already_present"], 2);
    assert_eq!(again["blobs_written"], 0);

    // The wrong destination password is one line and exit 12.
    fs::write(s.p("bad.pw"), "nope\n").unwrap();
    let out = s
        .lv()
        .args(["copy", "--to", "nas", "--to-password-file", "bad.pw"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    one_line_error(&out.stderr);
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn alert_test_reaches_email_and_webhook() {
    let s = Site::new();
    let smtp = SmtpSink::start();
    let hook = HttpReceiver::start(200);
    s.write_config(&format!(
        "[[alerts.email]]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"lv@firm.test\"\nto = [\"office@firm.test\"]\n\n[[alerts.webhook]]\nurl = \"{}\"\nformat = \"slack\"\n",
        smtp.port,
        hook.url("/hook/secret-token")
    ));
    s.lv().args(["alert", "test"]).assert().success();
    let mail = smtp.inbox.wait_for(1, Duration::from_secs(10));
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Subject: [ledgervault"), "{}", mail[0]);
    assert!(mail[0].contains("test alert"));
    let posts = hook.inbox.wait_for(1, Duration::from_secs(10));
    let body: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert!(body["text"].as_str().unwrap().contains("test alert"));

    // A receiver that refuses: one line, exit 1, and the secret path is not shown.
    let down = HttpReceiver::start(500);
    s.write_config(&format!(
        "[[alerts.webhook]]\nurl = \"{}\"\n",
        down.url("/hook/secret-token")
    ));
    let out = s.lv().args(["alert", "test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(!err.contains("secret-token"), "{err}");
}

#[test]
fn a_failing_job_alerts_by_webhook() {
    let s = Site::new();
    let hook = HttpReceiver::start(200);
    s.write_config(&format!(
        "[[alerts.webhook]]\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    // The NAS is gone (unmounted): its copy fails, is retried once, then alerts.
    fs::rename(s.p("nas"), s.p("nas-away")).unwrap();
    s.lv().args(["daemon", "--once"]).assert().success();
    let posts = hook.inbox.wait_for(1, Duration::from_secs(10));
    let alerts: Vec<serde_json::Value> = posts
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let failed: Vec<_> = alerts
        .iter()
        .filter(|a| a["kind"] == "job_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{alerts:?}");
    assert!(failed[0]["summary"].as_str().unwrap().contains("copy:nas"));
    let rows = history_rows(&s.p("ledgervault.history.sqlite"));
    let copies: Vec<_> = rows.iter().filter(|r| r.0 == "copy:nas").collect();
    assert_eq!(copies.len(), 2, "{rows:?}");
    assert!(copies.iter().all(|r| r.1 == "failed"));
    // The backup and the drill went through; prune waits for a person.
    assert!(
        rows.iter().any(|r| r.0 == "backup" && r.1 == "ok"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "verify" && r.1 == "ok"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "prune" && r.1 == "skipped"),
        "{rows:?}"
    );
    let status = s.json(&["status"]);
    let warnings = status["warnings"].to_string();
    assert!(warnings.contains("copy:nas"), "{warnings}");
    assert!(warnings.contains("need a person"), "{warnings}");
}

#[test]
fn install_systemd_writes_a_service_and_a_timer() {
    let s = Site::new();
    s.write_config("");
    let dir = s.p("units");
    s.lv()
        .args(["daemon", "--install-systemd", "--systemd-dir"])
        .arg(&dir)
        .assert()
        .success();
    let service = fs::read_to_string(dir.join("ledgervault.service")).unwrap();
    assert!(service.contains("daemon"), "{service}");
    assert!(service.contains("ledgervault.toml"));
    let timer = fs::read_to_string(dir.join("ledgervault-run.timer")).unwrap();
    assert!(timer.contains("Persistent=true"));
    let oneshot = fs::read_to_string(dir.join("ledgervault-run.service")).unwrap();
    assert!(oneshot.contains("daemon --once"));
}

#[test]
fn the_daemon_runs_for_a_minute() {
    let s = Site::new();
    let hook = HttpReceiver::start(200);
    s.write_config(&format!(
        "[schedule]\nbackup = \"every 5 seconds\"\nverify = \"every 20 seconds\"\nprune = \"every 30 seconds\"\nwatch = \"every 10 seconds\"\n\n[[alerts.webhook]]\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    let exe = assert_cmd::cargo::cargo_bin("ledgervault");
    let child = std::process::Command::new(exe)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&s.root)
        .args(["-c", "ledgervault.toml", "daemon"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second daemon on the same config is refused while the first runs.
    std::thread::sleep(Duration::from_secs(2));
    let out = s.lv().arg("daemon").output().unwrap();
    assert!(one_line_error(&out.stderr).contains("another ledgervault daemon"));
    // Work happens while it runs.
    let db = rusqlite::Connection::open(s.p("books.db")).unwrap();
    for i in 0..10 {
        std::thread::sleep(Duration::from_secs(5));
        db.execute(
            "INSERT INTO entries (memo, amount) VALUES (?1, 10), (?1, -10)",
            [format!("day {i}")],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(6));
    // SIGTERM: it finishes the running job and exits cleanly.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");

    let rows = history_rows(&s.p("ledgervault.history.sqlite"));
    let count =
        |job: &str, outcome: &str| rows.iter().filter(|r| r.0 == job && r.1 == outcome).count();
    assert!(count("backup", "ok") >= 8, "{rows:?}");
    assert!(count("copy:nas", "ok") >= 5, "{rows:?}");
    assert!(count("verify", "ok") >= 1, "{rows:?}");
    assert!(count("prune", "skipped") >= 1, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 != "failed"), "{rows:?}");
    // Every successful backup is a snapshot, made with the append-only key;
    // none was deleted.
    let primary = s.snapshots("primary", "full.pw");
    assert_eq!(primary.len(), count("backup", "ok"), "{rows:?}");
    assert!(primary.iter().all(|p| p["tags"][0] == "scheduled"));
    // The NAS has every snapshot up to its last copy.
    let nas = s.snapshots("nas", "nas.pw");
    assert!(
        nas.len() >= primary.len() - 3,
        "{} vs {}",
        nas.len(),
        primary.len()
    );
    for repo in [("primary", "full.pw"), ("nas", "nas.pw")] {
        s.raw()
            .args(["-r", repo.0, "--password-file", repo.1, "check"])
            .assert()
            .success();
    }
    // The drill passed and is on record; nothing alerted.
    assert!(primary.iter().any(|p| p["drill_passed"].is_string()));
    assert!(hook.inbox.all().is_empty(), "{:?}", hook.inbox.all());
    let status = s.json(&["status"]);
    assert_eq!(status["locations"].as_array().unwrap().len(), 2, "{status}");
    assert!(
        status["locations"][0]["sources"][0]["latest_snapshot"].is_string(),
        "{status}"
    );
}

#[test]
fn webhook_secrets_never_show_in_output_json_or_the_daemon_log() {
    let s = Site::new();
    let down = HttpReceiver::start(500);
    // One secret in the path, one in the query of a URL without a path
    // (which splitting on `/` once let through).
    let with_path = format!(
        "http://hookuser:p%2Fw0rd@127.0.0.1:{}/hook/path-token?x=1",
        down.port
    );
    let query_only = format!("http://127.0.0.1:{}?token=query-token", down.port);
    s.write_config(&format!(
        "[[alerts.webhook]]\nurl = \"{with_path}\"\n\n[[alerts.webhook]]\nurl = \"{query_only}\"\n"
    ));
    let secrets = ["hookuser", "p%2Fw0rd", "path-token", "query-token"];
    let out = s.lv().args(["--json", "alert", "test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("HTTP 500") && shown.contains("127.0.0.1"),
        "{shown}"
    );
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }

    // The daemon logs the undelivered alert of a failing job.
    fs::rename(s.p("nas"), s.p("nas-away")).unwrap();
    let out = s.lv().args(["daemon", "--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("alert not delivered"), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in {log}");
    }

    // A password with a bare `/`: no parser can tell host from password,
    // so the config is refused and nothing of the URL is shown.
    s.write_config("[[alerts.webhook]]\nurl = \"https://ann:pa/ss@hooks.example/x?token=t0k\"\n");
    let out = s.lv().args(["config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_error(&out.stderr);
    assert!(err.contains("alerts.webhook[0]"), "{err}");
    assert!(
        !err.contains("pa/ss") && !err.contains("t0k") && !err.contains("ann"),
        "{err}"
    );
}

/// A firm whose primary repository's config file is a FIFO nobody writes
/// (storage that never answers), with 2 s timeouts and a webhook, after one
/// pass of the daemon over it (`extra`: more `[daemon]` lines), which must
/// end on its own well within 30 s. Returns the site, the webhook's
/// receiver, and the FIFO's path.
fn daemon_once_on_hung_storage(extra: &str) -> (Site, HttpReceiver, PathBuf) {
    let s = Site::new();
    let hook = HttpReceiver::start(200);
    s.write_config(&format!(
        "{extra}backup_timeout = \"2s\"\ncopy_timeout = \"2s\"\n\n[[alerts.webhook]]\nurl = \"{}\"\n",
        hook.url("/hook")
    ));
    let config = s.p("primary/config");
    fs::rename(&config, s.p("primary-config")).unwrap();
    let fifo = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let out = s
        .lv()
        .args(["daemon", "--once"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    (s, hook, config)
}

/// Storage that hangs (here: the repository's config file is a FIFO, so
/// opening it blocks forever, as on a dead hard-mounted NAS): each job is
/// killed at its timeout, recorded and alerted, and `status` answers in
/// seconds, naming what it could not reach.
#[test]
fn hung_storage_times_out_jobs_and_status_still_answers() {
    // Jobs as child processes: each is killed at its timeout.
    let (s, hook, config) = daemon_once_on_hung_storage("jobs = \"process\"\n");
    let rows = history_rows(&s.p("ledgervault.history.sqlite"));
    for job in ["backup", "copy:nas"] {
        let runs: Vec<_> = rows.iter().filter(|r| r.0 == job).collect();
        assert_eq!(runs.len(), 1, "{job} retried or not run: {rows:?}");
        assert_eq!(runs[0].1, "failed", "{rows:?}");
    }
    let messages = history_messages(&s.p("ledgervault.history.sqlite"));
    assert!(
        messages.iter().any(|m| m.contains("timed out after 2s")),
        "{messages:?}"
    );
    let posts = hook.inbox.wait_for(3, Duration::from_secs(10));
    let timed_out = posts.iter().filter(|p| p.contains("timed out")).count();
    assert_eq!(timed_out, 2, "{posts:?}");
    // The watch asked the storage itself, and said it does not answer.
    assert!(
        posts
            .iter()
            .any(|p| p.contains("backup storage does not answer")),
        "{posts:?}"
    );
    // No killed job is left behind: nothing still holds the FIFO open.
    let lsof = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c {}",
            config.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&lsof.stdout).trim(), "0");

    let started = std::time::Instant::now();
    let out = s
        .lv()
        .args(["--json", "status"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("primary: did not answer within 3s"),
        "{warnings}"
    );
    // The copy location, on working storage, is still reported.
    assert_eq!(v["locations"][1]["name"], "nas");
    assert!(v["locations"][1].get("error").is_none(), "{v}");
}

#[test]
fn in_process_a_hung_job_times_out_and_holds_back_the_next() {
    // Jobs in the daemon's process (the default): the hung backup cannot
    // be stopped; it is reported, and the copy waits for it (refused as
    // locked, retried, then reported), instead of running beside it.
    let (s, hook, _fifo) = daemon_once_on_hung_storage("");
    let rows = history_rows(&s.p("ledgervault.history.sqlite"));
    let backups: Vec<_> = rows.iter().filter(|r| r.0 == "backup").collect();
    assert_eq!(backups.len(), 1, "{rows:?}");
    assert_eq!(backups[0].1, "failed");
    let copies: Vec<_> = rows.iter().filter(|r| r.0 == "copy:nas").collect();
    assert!(
        !copies.is_empty() && copies.iter().all(|r| r.1 == "failed"),
        "{rows:?}"
    );
    let messages = history_messages(&s.p("ledgervault.history.sqlite"));
    assert!(
        messages.iter().any(|m| m.contains("timed out after 2s")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("backup is still running past its timeout")),
        "{messages:?}"
    );
    let posts = hook.inbox.wait_for(2, Duration::from_secs(10));
    assert!(posts.iter().any(|p| p.contains("timed out")), "{posts:?}");
    assert!(
        posts.iter().any(|p| p.contains("copy:nas failed")),
        "{posts:?}"
    );
}

#[test]
fn in_process_the_daemon_forgets_and_prunes_with_the_maintenance_key() {
    let s = Site::new();
    s.write_config("\n[forget]\nkeep_last = 1\n");
    let path = s.p("ledgervault.toml");
    let text = fs::read_to_string(&path).unwrap().replacen(
        "password_file = ",
        &format!(
            "maintenance_password_file = \"{}\"\npassword_file = ",
            s.p("full.pw").display()
        ),
        1,
    );
    fs::write(&path, text).unwrap();
    s.lv().arg("backup").assert().success();
    s.lv().args(["daemon", "--once"]).assert().success();
    let rows = history_rows(&s.p("ledgervault.history.sqlite"));
    for job in ["backup", "copy:nas", "verify", "prune"] {
        assert!(
            rows.iter().any(|r| r.0 == job && r.1 == "ok"),
            "{job}: {rows:?}"
        );
    }
    // Two backups, and forget kept the last.
    let primary = s.snapshots("primary", "full.pw");
    assert_eq!(primary.len(), 1, "{primary:?}");
    s.raw()
        .args(["-r", "primary", "--password-file", "full.pw", "check"])
        .assert()
        .success();
}

fn history_messages(path: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut st = db.prepare("SELECT message FROM runs").unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}
