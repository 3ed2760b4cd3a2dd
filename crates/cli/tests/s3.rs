//! Repositories on real S3 servers: a three-node Garage cluster (nodes
//! stopped and started under a backup, restores through another node, a
//! link with 50 ms of round trip), and Ceph's RADOS Gateway, which enforces
//! Object Lock (an immutable repository attacked with the firm's own
//! credentials). The servers are started by `scripts/s3-servers.sh`, which
//! `scripts/test.sh` installs; boto3 plays the administrator and the
//! attacker.

use std::fs;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use ledgervault_testkit::fixtures;
use ledgervault_testkit::s3::{boto, Ceph, DelayProxy, Garage};

mod common;
use common::{diff_trees, one_line_error};

/// The binary, with a repository address, a password, credentials and a
/// cache folder of the test's own, and nothing else from the environment.
struct Lv {
    tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Lv {
    fn new(env: Vec<(String, String)>) -> Lv {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("pw"), "s3cret\n").unwrap();
        Lv { tmp, env }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn cmd(&self, repo: &str) -> Command {
        Command::from_std(self.std_cmd(repo))
    }
    fn std_cmd(&self, repo: &str) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ledgervault"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.root())
            .env("LEDGERVAULT_REPOSITORY", repo)
            .env("LEDGERVAULT_PASSWORD_FILE", self.root().join("pw"))
            .env("LEDGERVAULT_CACHE_DIR", self.root().join("cache"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }
    /// Runs and returns stdout; panics with stderr on failure.
    fn ok(&self, repo: &str, args: &[&str]) -> String {
        let out = self.cmd(repo).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} on {repo}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn json(&self, repo: &str, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(repo, &a)).unwrap()
    }
    fn init(&self, repo: &str, extra: &[&str]) -> String {
        let mut a = vec![
            "init",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ];
        a.extend_from_slice(extra);
        self.ok(repo, &a)
    }
    /// Books and documents: a mixed tree, plus a file larger than an
    /// upload part, so that packs go up in parallel parts.
    fn data(&self, name: &str, seed: u64) -> std::path::PathBuf {
        let p = self.root().join(name);
        fixtures::mixed_tree(&p, 3_000_000, seed).unwrap();
        let big: Vec<u8> = (0..20u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed as u32) >> 13) as u8)
            .collect();
        fs::write(p.join("scans.bin"), big).unwrap();
        p
    }
}

fn secret_never_shown(text: &str, env: &[(String, String)]) {
    for (k, v) in env {
        if k.contains("SECRET") {
            assert!(
                !text.contains(v.as_str()),
                "the secret key was printed: {text}"
            );
        }
    }
}

#[test]
fn garage_cluster_runs_every_command_through_any_node() {
    let g = Garage::start();
    let lv = Lv::new(g.env());
    let repo1 = g.repo(1, "firm");
    let out = lv.init(&repo1, &[]);
    assert!(out.contains("has no Object Lock"), "{out}");
    let data = lv.data("books", 1);
    let s1 = lv.json(&repo1, &["backup", data.to_str().unwrap()]);
    assert!(s1["bytes_read"].as_u64().unwrap() > 20 << 20);

    // A day of work, backed up while node 3 is down.
    fs::write(
        data.join("ledger-2026.csv"),
        "date,amount\n2026-12-06,100.00\n",
    )
    .unwrap();
    g.stop_node(3);
    let s2 = lv.json(&repo1, &["backup", data.to_str().unwrap()]);
    assert!(s2["bytes_new"].as_u64().unwrap() < 1 << 20, "{s2}");
    g.start_node(3);

    // Everything through node 3, which missed the second backup.
    let repo3 = g.repo(3, "firm");
    let snaps = lv.json(&repo3, &["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let target = lv.root().join("restored");
    lv.ok(
        &repo3,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    diff_trees(&data, &target.join("books"));
    lv.ok(&repo3, &["check", "--read-data"]);
    lv.ok(&g.repo(2, "firm"), &["check", "--read-data-subset", "50"]);
    let ls = lv.ok(&repo3, &["ls", "latest"]);
    assert!(ls.contains("ledger-2026.csv"), "{ls}");
    let stats = lv.json(&repo3, &["stats"]);
    assert_eq!(stats["snapshots"], 2, "{stats}");

    // Copies both ways: S3 to a local folder, and that folder to another
    // prefix of the bucket.
    let local = lv.root().join("local-copy");
    lv.init(local.to_str().unwrap(), &[]);
    let pw = lv.root().join("pw");
    let pw = pw.to_str().unwrap();
    lv.ok(
        &repo1,
        &[
            "copy",
            "--to",
            local.to_str().unwrap(),
            "--to-password-file",
            pw,
        ],
    );
    lv.ok(local.to_str().unwrap(), &["check", "--read-data"]);
    let repo_b = g.repo(2, "firm-copy");
    lv.init(&repo_b, &[]);
    lv.ok(
        local.to_str().unwrap(),
        &["copy", "--to", &repo_b, "--to-password-file", pw],
    );
    let t2 = lv.root().join("restored-b");
    lv.ok(
        &repo_b,
        &["restore", "latest", "--target", t2.to_str().unwrap()],
    );
    diff_trees(&data, &t2.join("books"));

    // Forget and prune on the bucket.
    let f = lv.json(&repo1, &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 1, "{f}");
    lv.ok(&repo1, &["check", "--read-data"]);
    assert_eq!(lv.json(&repo1, &["snapshots"]).as_array().unwrap().len(), 1);

    // The metadata cache: snapshots and index files are kept locally under
    // their hashes; a damaged copy is not trusted.
    let cache = lv.root().join("cache");
    let cached: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/snapshots/"))
        .collect();
    assert!(
        !cached.is_empty(),
        "nothing cached under {}",
        cache.display()
    );
    for p in &cached {
        fs::write(p, b"damaged").unwrap();
    }
    assert_eq!(lv.json(&repo1, &["snapshots"]).as_array().unwrap().len(), 1);
    // And a run without the cache works the same.
    let out = lv.ok(&repo1, &["--no-cache", "snapshots"]);
    assert!(out.contains("books"), "{out}");
    secret_never_shown(&out, &lv.env);
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn s3_errors_are_one_clear_line_without_secrets() {
    let g = Garage::start();
    let good = g.env();
    // A wrong secret key.
    let mut wrong = good.clone();
    for (k, v) in wrong.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "0000000000000000000000000000000000000000000000000000000000000000".into();
        }
    }
    let lv = Lv::new(wrong.clone());
    let out = lv.cmd(&g.repo(1, "x")).arg("snapshots").output().unwrap();
    assert!(!out.status.success());
    let e = one_line_error(&out.stderr);
    assert!(
        e.contains("denied") || e.contains("credentials") || e.contains("signature"),
        "{e}"
    );
    secret_never_shown(&e, &wrong);
    // A bucket that does not exist.
    let lv = Lv::new(good.clone());
    let out = lv
        .cmd(&format!("s3:{}/no-such-bucket/x", g.endpoint(1)))
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = one_line_error(&out.stderr);
    assert!(e.contains("no-such-bucket"), "{e}");
    // No repository at the prefix.
    let out = lv
        .cmd(&g.repo(1, "nothing-here"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    one_line_error(&out.stderr);
    // Credentials in the address are refused and not echoed.
    let out = lv
        .cmd("s3:http://AKIAX:topsecretvalue@127.0.0.1:1/b")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = one_line_error(&out.stderr);
    assert!(!e.contains("topsecretvalue"), "{e}");
    // Immutability where the store has no Object Lock: said at init.
    let out = lv
        .cmd(&g.repo(1, "locked"))
        .args([
            "init",
            "--immutable-days",
            "7",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = one_line_error(&out.stderr);
    assert!(e.contains("Object Lock"), "{e}");
    // A server that is not there: retried, then one line.
    let out = lv
        .cmd("s3:http://127.0.0.1:9/b/x")
        .arg("snapshots")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(!out.status.success());
    one_line_error(&out.stderr);
}

#[test]
fn a_backup_goes_through_a_link_with_50_ms_of_round_trip() {
    let g = Garage::start();
    let proxy = DelayProxy::start(g.endpoint(1), Duration::from_millis(25));
    let lv = Lv::new(g.env());
    let repo = format!("s3:{}/{}/far", proxy.endpoint(), g.bucket());
    lv.init(&repo, &[]);
    let data = lv.data("books", 3);
    lv.ok(&repo, &["backup", data.to_str().unwrap()]);
    let target = lv.root().join("out");
    lv.ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    diff_trees(&data, &target.join("books"));
}

/// The Ceph gateway, and a bucket made with Object Lock by its
/// administrator.
fn ceph_bucket(c: &Ceph, name: &str, lock: bool) {
    boto(
        c.endpoint(),
        &c.env(),
        &format!(
            "s3.create_bucket(Bucket={name:?}, ObjectLockEnabledForBucket={})",
            if lock { "True" } else { "False" }
        ),
    );
}

#[test]
fn immutable_history_survives_an_attacker_with_the_firms_credentials() {
    let c = Ceph::start();
    ceph_bucket(&c, "vault", true);
    ceph_bucket(&c, "plain", false);
    let lv = Lv::new(c.env());
    let repo = format!("s3:{}/vault/firm", c.endpoint());

    // A bucket without Object Lock cannot hold an immutable repository.
    let out = lv
        .cmd(&format!("s3:{}/plain/firm", c.endpoint()))
        .args([
            "init",
            "--immutable-days",
            "2",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(one_line_error(&out.stderr).contains("no Object Lock"));

    // Packs of up to 64 MiB, and 40 MiB of scans that do not compress:
    // the first backup's pack is too big for one request and goes up in
    // parts.
    let out = lv.init(&repo, &["--immutable-days", "2", "--pack-size-mib", "64"]);
    assert!(out.contains("locked for 2 days"), "{out}");
    let data = lv.data("books", 5);
    let mut scans = vec![0u8; 40 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut scans);
    fs::write(data.join("scans-2.bin"), scans).unwrap();
    lv.ok(&repo, &["backup", data.to_str().unwrap()]);
    fs::write(data.join("payroll-dec.csv"), "name,net\nA,1000\n").unwrap();
    lv.ok(&repo, &["backup", data.to_str().unwrap()]);

    // Every object the repository wrote is locked in compliance mode for
    // at least two days, the big packs sent in parts included (Ceph drops
    // the lock headers of multipart uploads, so this is what ledgervault
    // set afterwards and read back).
    let report = boto(
        c.endpoint(),
        &c.env(),
        r#"
now = datetime.datetime.now(datetime.timezone.utc)
n = 0; biggest = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='vault', Prefix='firm/'):
    for o in page.get('Contents', []):
        if '/locks/' in o['Key']:
            continue
        r = s3.get_object_retention(Bucket='vault', Key=o['Key'])['Retention']
        assert r['Mode'] == 'COMPLIANCE', (o['Key'], r)
        left = (r['RetainUntilDate'] - now).total_seconds()
        assert left > 2 * 86400 - 600, (o['Key'], left)
        n += 1; biggest = max(biggest, o['Size'])
print(n, biggest)
"#,
    );
    let report: Vec<usize> = report
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(report[0] >= 6, "only {} objects checked", report[0]);
    assert!(
        report[1] > ledgervault_backends::ONE_REQUEST_MAX,
        "no object went up in parts (the biggest has {} bytes)",
        report[1]
    );

    // The attack, with the very credentials the firm's server holds:
    // delete every object by version (refused), then overwrite half of
    // them and hide the rest behind delete markers (both succeed).
    let attack = boto(
        c.endpoint(),
        &c.env(),
        r#"
refused = 0; hidden = 0; overwritten = 0
vs = s3.list_object_versions(Bucket='vault', Prefix='firm/')
for i, v in enumerate(vs.get('Versions', [])):
    if '/locks/' in v['Key']:
        continue
    try:
        s3.delete_object(Bucket='vault', Key=v['Key'], VersionId=v['VersionId'])
    except ClientError as e:
        assert e.response['Error']['Code'] == 'AccessDenied', e
        refused += 1
    if i % 2:
        s3.put_object(Bucket='vault', Key=v['Key'], Body=b'encrypted by ransomware')
        overwritten += 1
    else:
        s3.delete_object(Bucket='vault', Key=v['Key'])
        hidden += 1
print(refused, overwritten, hidden)
"#,
    );
    let n: Vec<usize> = attack
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(n[0] >= 6 && n[1] > 0 && n[2] > 0, "{attack}");

    // And files of its own, named like the repository's and locked for
    // longer than ours: an index file and a snapshot nobody can remove.
    for dir in ["index", "snapshots"] {
        let junk = format!("forged {dir} file");
        let name = blake3::hash(junk.as_bytes()).to_hex().to_string();
        boto(
            c.endpoint(),
            &c.env(),
            &format!(
                "s3.put_object(Bucket='vault', Key='firm/{dir}/{name}', Body={junk:?}.encode(), ObjectLockMode='COMPLIANCE', ObjectLockRetainUntilDate=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30))"
            ),
        );
    }

    // check names what was changed, and fails.
    let out = lv
        .cmd(&repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("overwritten") && text.contains("delete marker"),
        "{text}"
    );
    assert!(
        text.matches("not written with this repository's keys")
            .count()
            == 2,
        "the forged files are not named: {text}"
    );

    // The next night's backup carries on, and locks what it writes.
    fs::write(data.join("after-the-attack.csv"), "still,here\n").unwrap();
    lv.ok(&repo, &["backup", data.to_str().unwrap()]);

    // Yet every snapshot restores, from the versions the repository wrote,
    // with and without the local cache.
    for extra in [&[][..], &["--no-cache"][..]] {
        let target = lv.root().join(format!("restored{}", extra.len()));
        let mut a = extra.to_vec();
        a.extend(["restore", "latest", "--target", target.to_str().unwrap()]);
        lv.ok(&repo, &a);
        diff_trees(&data, &target.join("books"));
    }
    // And it copies out whole to new storage.
    let rescue = lv.root().join("rescue");
    lv.init(rescue.to_str().unwrap(), &[]);
    let pw = lv.root().join("pw");
    lv.ok(
        &repo,
        &[
            "copy",
            "--to",
            rescue.to_str().unwrap(),
            "--to-password-file",
            pw.to_str().unwrap(),
        ],
    );
    lv.ok(rescue.to_str().unwrap(), &["check", "--read-data"]);
    assert_eq!(
        lv.json(rescue.to_str().unwrap(), &["snapshots"])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // forget and prune keep what is still locked, say so, and stop cleanly.
    let f = lv.json(&repo, &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(f["removed"].as_array().unwrap().len(), 0, "{f}");
    assert_eq!(f["locked"].as_array().unwrap().len(), 2, "{f}");
    assert_eq!(lv.json(&repo, &["snapshots"]).as_array().unwrap().len(), 3);
}

#[test]
fn offices_drills_clients_and_offsite_copies_on_garage() {
    let g = Garage::start();
    let lv = Lv::new(g.env());
    let repo = g.repo(1, "firm");
    lv.init(&repo, &[]);
    let db = lv.root().join("firm.db");
    ledgervault_samplefirm::generate(
        &db,
        &ledgervault_samplefirm::FirmOptions {
            clients: 5,
            size: 1_500_000,
            seed: 5,
        },
    )
    .unwrap();
    let docs = lv.root().join("documents");
    fixtures::mixed_tree(&docs, 2_000_000, 4).unwrap();

    // Two offices back up into the same prefix at the same moment, through
    // different nodes: both snapshots land, and the repository is sound.
    let a = spawn(lv.std_cmd(&repo).args(["backup", db.to_str().unwrap()]));
    let b = spawn(
        lv.std_cmd(&g.repo(2, "firm"))
            .args(["backup", docs.to_str().unwrap()]),
    );
    for (what, out) in [("books", a), ("documents", b)] {
        let out = out.join();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(lv.json(&repo, &["snapshots"]).as_array().unwrap().len(), 2);
    lv.ok(&repo, &["check", "--read-data"]);

    // A restore drill proves the books from the bucket.
    let v = lv.json(&repo, &["verify", "--all-sources"]);
    assert_eq!(v["passed"], true, "{v}");

    // One client: archived to the bucket, damaged at home, restored from
    // the bucket.
    let list = lv.json(&repo, &["client", "list", db.to_str().unwrap()]);
    let label = list["clients"][2]["label"].as_str().unwrap().to_string();
    lv.ok(
        &repo,
        &["client", "backup", db.to_str().unwrap(), "--client", &label],
    );
    let before = fs::read(&db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    let changed = c
        .execute(
            "UPDATE customers SET name = 'WRONG' WHERE client_id = 3",
            [],
        )
        .unwrap();
    assert!(changed > 0);
    drop(c);
    lv.ok(
        &repo,
        &[
            "client",
            "restore",
            "latest",
            "--client",
            "3",
            "--into",
            db.to_str().unwrap(),
            "--replace",
        ],
    );
    let c = rusqlite::Connection::open(&db).unwrap();
    let wrong: i64 = c
        .query_row(
            "SELECT count(*) FROM customers WHERE name = 'WRONG'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(wrong, 0);
    assert_ne!(fs::read(&db).unwrap(), before, "the restore wrote nothing");

    // The daemon's offsite copy: a local primary and an S3 [[copy]].
    let local = lv.root().join("local");
    lv.init(local.to_str().unwrap(), &[]);
    lv.ok(local.to_str().unwrap(), &["backup", docs.to_str().unwrap()]);
    let offsite = g.repo(3, "offsite");
    lv.init(&offsite, &[]);
    let pw = lv.root().join("pw");
    let cfg = lv.root().join("ledgervault.toml");
    fs::write(
        &cfg,
        format!(
            "[repository]\npath = {:?}\npassword_file = {:?}\n\n[[copy]]\nname = \"offsite\"\npath = {offsite:?}\npassword_file = {:?}\n",
            local.to_str().unwrap(),
            pw.to_str().unwrap(),
            pw.to_str().unwrap()
        ),
    )
    .unwrap();
    let cfgs = cfg.to_str().unwrap();
    lv.ok(local.to_str().unwrap(), &["-c", cfgs, "config", "check"]);
    lv.ok(
        local.to_str().unwrap(),
        &["-c", cfgs, "copy", "--to", "offsite"],
    );
    let st = lv.json(local.to_str().unwrap(), &["-c", cfgs, "status"]);
    let text = st.to_string();
    assert!(text.contains("offsite"), "{text}");
    assert_eq!(
        lv.json(&offsite, &["snapshots"]).as_array().unwrap().len(),
        1
    );
    secret_never_shown(&text, &lv.env);
    // An append-only session adds to an S3 repository and refuses to delete.
    lv.ok(
        &offsite,
        &["--append-only", "backup", docs.to_str().unwrap()],
    );
    assert_eq!(
        lv.json(&offsite, &["snapshots"]).as_array().unwrap().len(),
        2
    );
    let out = lv
        .cmd(&offsite)
        .args(["--append-only", "forget", "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        lv.json(&offsite, &["snapshots"]).as_array().unwrap().len(),
        2
    );
}

#[test]
fn a_backup_rides_out_a_node_restart() {
    let g = Garage::start();
    let lv = Lv::new(g.env());
    let repo = g.repo(2, "firm");
    lv.init(&repo, &[]);
    let data = lv.data("books", 7);
    // Node 2, the one this backup talks to, is down when it starts and
    // comes back three seconds later: the requests are retried.
    g.stop_node(2);
    let run = spawn(lv.std_cmd(&repo).args(["backup", data.to_str().unwrap()]));
    std::thread::sleep(Duration::from_secs(3));
    g.start_node(2);
    let out = run.join();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = lv.root().join("out");
    lv.ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    diff_trees(&data, &target.join("books"));
}

/// A command started in the background, its output collected at `join`.
struct Running(std::thread::JoinHandle<std::process::Output>);

impl Running {
    fn join(self) -> std::process::Output {
        self.0.join().unwrap()
    }
}

fn spawn(c: &mut std::process::Command) -> Running {
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Running(std::thread::spawn(move || {
        child.wait_with_output().unwrap()
    }))
}

#[test]
fn a_server_that_never_answers_is_given_up_on_with_one_line() {
    // Accepts connections and never says a word.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let lv = Lv::new(vec![
        ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLE".into()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            "hung-server-secret-value".into(),
        ),
    ]);
    let started = std::time::Instant::now();
    let out = lv
        .cmd(&format!("s3:http://127.0.0.1:{port}/books/firm"))
        .args(["--s3-timeout", "1s", "snapshots"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = one_line_error(&out.stderr);
    assert!(!e.contains("hung-server-secret-value"), "{e}");
    // Seven tries of a second each, and the pauses between them.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}
