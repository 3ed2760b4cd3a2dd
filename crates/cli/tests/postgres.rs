//! PostgreSQL through the real binary, against a real server that each test
//! starts itself (`initdb` + `pg_ctl` in a temporary folder, as `nobody`
//! when run as root).

mod common;

use std::io::Write;
use std::process::{Command as StdCommand, Stdio};

use common::Env;
use ledgervault_testkit::pg::PgServer;

/// A small firm: clients, accounts, a shared staff table, balanced journal
/// entries with awkward values (tabs, newlines, backslashes, NULLs, bytea,
/// numerics, dates), and a cycle through a deferrable key.
const SCHEMA: &str = r#"
CREATE TABLE staff (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text);
CREATE TABLE clients (id serial PRIMARY KEY, code text UNIQUE NOT NULL, name text NOT NULL,
    main_contact int);
CREATE TABLE contacts (id serial PRIMARY KEY, client_id int NOT NULL REFERENCES clients(id),
    name text NOT NULL);
ALTER TABLE clients ADD FOREIGN KEY (main_contact) REFERENCES contacts(id)
    DEFERRABLE INITIALLY IMMEDIATE;
CREATE TABLE accounts (id serial PRIMARY KEY, client_id int NOT NULL REFERENCES clients(id),
    code text NOT NULL, name text NOT NULL);
CREATE TABLE journal_entries (id serial PRIMARY KEY, client_id int NOT NULL REFERENCES clients(id),
    posted date NOT NULL, memo text, approved_by int REFERENCES staff(id));
CREATE TABLE journal_lines (id serial PRIMARY KEY, entry_id int NOT NULL REFERENCES journal_entries(id),
    account_id int NOT NULL REFERENCES accounts(id), debit_cents bigint NOT NULL DEFAULT 0,
    credit_cents bigint NOT NULL DEFAULT 0, amount numeric(14,2), note text, scan bytea, cleared boolean);
"#;

fn seed(pg: &PgServer, db: &str, clients: u32, entries: u32) {
    pg.createdb(db);
    pg.psql(db, SCHEMA);
    pg.psql(
        db,
        &format!(
            r#"
INSERT INTO staff (email, name) VALUES ('ann@firm.example', 'Ann'), ('bo@firm.example', E'Bo\tTab');
INSERT INTO clients (code, name) SELECT 'C' || lpad(i::text, 3, '0'), 'Client ' || i || E' \\ "quoted"'
    FROM generate_series(1, {clients}) i;
INSERT INTO contacts (client_id, name) SELECT id, 'Contact of ' || name FROM clients;
UPDATE clients c SET main_contact = k.id FROM contacts k WHERE k.client_id = c.id;
INSERT INTO accounts (client_id, code, name) SELECT c.id, a.code, a.name FROM clients c
    CROSS JOIN (VALUES ('1000', 'Bank'), ('4000', E'Sales\nline two'), ('5000', 'Costs')) a(code, name);
INSERT INTO journal_entries (client_id, posted, memo, approved_by)
    SELECT c.id, date '2026-01-01' + (i % 300), CASE WHEN i % 7 = 0 THEN NULL ELSE 'entry ' || i || ' é€' END,
           CASE WHEN i % 2 = 0 THEN 1 ELSE NULL END
    FROM clients c CROSS JOIN generate_series(1, {entries}) i;
INSERT INTO journal_lines (entry_id, account_id, debit_cents, amount, note, scan, cleared)
    SELECT e.id, (SELECT id FROM accounts a WHERE a.client_id = e.client_id AND a.code = '1000'),
           e.id * 10, e.id / 10.0, E'back\\slash', CASE WHEN e.id % 5 = 0 THEN '\x00ff10'::bytea END, e.id % 3 = 0
    FROM journal_entries e;
INSERT INTO journal_lines (entry_id, account_id, credit_cents, amount, cleared)
    SELECT e.id, (SELECT id FROM accounts a WHERE a.client_id = e.client_id AND a.code = '4000'),
           e.id * 10, -e.id / 10.0, NULL
    FROM journal_entries e;
"#
        ),
    );
}

/// A fingerprint of every table's content, to compare two databases.
fn fingerprint(pg: &PgServer, db: &str) -> String {
    let tables = pg.psql(
        db,
        "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    tables
        .split_whitespace()
        .map(|t| {
            let h = pg.psql(
                db,
                &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"),
            );
            format!("{t}={h}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn lv(e: &Env, pg: &PgServer) -> assert_cmd::Command {
    let mut c = e.cmd();
    c.env("PGPASSWORD", &pg.password);
    c
}

fn run(e: &Env, pg: &PgServer, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = lv(e, pg).arg("--json").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn databases(pg: &PgServer) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database",
    )
    .split_whitespace()
    .map(String::from)
    .collect()
}

#[test]
fn a_live_database_backs_up_and_restores_identical_and_a_night_dedups() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    seed(&pg, "firm", 8, 2500);
    let url = pg.url("firm");
    let (code, first, err) = run(&e, &pg, &["backup", &url]);
    assert_eq!(code, 0, "{err}");
    let (_, snaps, _) = run(&e, &pg, &["snapshots"]);
    let src = &snaps[0]["sources"][0];
    assert_eq!(src["kind"], "database");
    assert_eq!(
        src["path"], url,
        "the source is named by its URL, without password"
    );
    let tables = src["database"]["tables"].as_array().unwrap();
    let lines = tables
        .iter()
        .find(|t| t["name"] == "public.journal_lines")
        .unwrap();
    assert_eq!(lines["rows"], 8 * 2500 * 2);
    assert_eq!(src["database"]["engine"], "postgresql");

    // Restore to a new database on the same server: identical content.
    let copy = pg.url("firm_copy");
    let (code, r, err) = run(&e, &pg, &["restore", "latest", "--target", &copy]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["replaced"], false);
    assert_eq!(fingerprint(&pg, "firm"), fingerprint(&pg, "firm_copy"));
    // Sequences came back too: the next id follows the restored rows.
    assert_eq!(
        pg.psql("firm_copy", "SELECT nextval('journal_entries_id_seq')"),
        (8 * 2500 + 1).to_string()
    );

    // An existing database is not replaced without --force.
    pg.psql(
        "firm_copy",
        "INSERT INTO staff (email) VALUES ('new@firm.example')",
    );
    let before = fingerprint(&pg, "firm_copy");
    let (code, _, err) = run(&e, &pg, &["restore", "latest", "--target", &copy]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fingerprint(&pg, "firm_copy"), before);

    // A day of work: a few edits and new entries. The next backup stores a
    // small fraction of the first.
    pg.psql(
        "firm",
        "UPDATE journal_lines SET note = 'edited' WHERE id % 4000 = 0;
         INSERT INTO journal_entries (client_id, posted, memo) SELECT 1, date '2026-11-23', 'new ' || i FROM generate_series(1, 20) i;",
    );
    let (code, second, err) = run(&e, &pg, &["backup", &url]);
    assert_eq!(code, 0, "{err}");
    let (n1, n2) = (
        first["bytes_new"].as_u64().unwrap(),
        second["bytes_new"].as_u64().unwrap(),
    );
    assert!(
        n2 * 4 < n1,
        "second backup added {n2} new bytes, the first {n1}"
    );
    let (code, _, err) = run(&e, &pg, &["check", "--read-data"]);
    assert_eq!(code, 0, "{err}");
    // The night's restore is the database as it is now.
    let (code, _, err) = run(
        &e,
        &pg,
        &["restore", "latest", "--target", &pg.url("night")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(fingerprint(&pg, "firm"), fingerprint(&pg, "night"));

    // The dump also restores to a folder as plain SQL.
    let dir = e.root.join("out");
    let (code, _, err) = run(
        &e,
        &pg,
        &["restore", "latest", "--target", dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let sql = std::fs::read_to_string(dir.join("firm.sql")).unwrap();
    assert!(sql.contains("COPY public.journal_lines"));
    assert!(sql.contains("PostgreSQL database dump complete"));
}

#[test]
fn restore_over_a_database_in_use_takes_a_safety_snapshot_and_swaps_it_in() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    seed(&pg, "firm", 3, 50);
    pg.psql(
        "firm",
        "CREATE ROLE clerk; ALTER TABLE staff OWNER TO clerk;",
    );
    let url = pg.url("firm");
    let (code, snap, err) = run(&e, &pg, &["backup", &url]);
    assert_eq!(code, 0, "{err}");
    let good = fingerprint(&pg, "firm");
    let id = snap["snapshot_id"].as_str().unwrap().to_string();

    // Work goes on after the backup; an application holds a connection.
    pg.psql("firm", "DELETE FROM journal_lines WHERE id % 2 = 0");
    let mut app = pg
        .client("psql", "firm")
        .args(["-X", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut app_in = app.stdin.take().unwrap();
    writeln!(app_in, "BEGIN; SELECT count(*) FROM journal_lines;").unwrap();
    app_in.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'firm'"
        ),
        "1"
    );
    let edited = fingerprint(&pg, "firm");

    // A restore that fails (the dump names a role this server no longer
    // has) leaves the database as it was, and no temporary database.
    pg.psql("firm", "REASSIGN OWNED BY clerk TO lvtest");
    pg.psql("postgres", "DROP ROLE clerk");
    let (code, _, err) = run(&e, &pg, &["restore", &id, "--target", &url, "--force"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("role \"clerk\" does not exist") && err.contains("--no-owner"),
        "{err}"
    );
    assert_eq!(fingerprint(&pg, "firm"), edited);
    assert!(
        !databases(&pg).iter().any(|d| d.contains("_lvrestore_")),
        "{:?}",
        databases(&pg)
    );

    let (code, r, err) = run(
        &e,
        &pg,
        &["restore", &id, "--target", &url, "--force", "--no-owner"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["replaced"], true);
    assert!(r["closed_connections"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(fingerprint(&pg, "firm"), good);
    assert!(
        !databases(&pg).iter().any(|d| d.contains("_lv")),
        "{:?}",
        databases(&pg)
    );
    drop(app_in);
    let _ = app.wait();

    // Both failed and successful attempts took a safety snapshot first;
    // the latest holds the edited database, tagged pre-restore.
    let safety = r["safety_snapshot"].as_str().unwrap();
    let (_, snaps, _) = run(&e, &pg, &["snapshots"]);
    let s = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == safety)
        .expect("the safety snapshot is listed");
    assert!(s["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "pre-restore"));
    let (code, _, err) = run(&e, &pg, &["restore", safety, "--target", &pg.url("edited")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fingerprint(&pg, "edited"), edited);
}

#[test]
fn a_backup_under_pgbench_load_restores_with_its_accounting_intact() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    pg.createdb("bench");
    let init = pg
        .client("pgbench", "bench")
        .args(["-i", "-s", "2", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut load = pg
        .client("pgbench", "bench")
        .args(["-c", "3", "-T", "12", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (code, _, err) = run(&e, &pg, &["backup", &pg.url("bench")]);
    let history_now = pg.psql("bench", "SELECT count(*) FROM pgbench_history");
    assert!(load.wait().unwrap().success());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        &e,
        &pg,
        &["restore", "latest", "--target", &pg.url("restored")],
    );
    assert_eq!(code, 0, "{err}");
    let history: u64 = pg
        .psql("restored", "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    assert!(history > 0, "the backup ran while pgbench wrote");
    assert!(history < history_now.parse::<u64>().unwrap() + 1);
    for (table, col) in [
        ("pgbench_accounts", "abalance"),
        ("pgbench_branches", "bbalance"),
        ("pgbench_tellers", "tbalance"),
    ] {
        let got = pg.psql(
            "restored",
            &format!(
                "SELECT (SELECT sum({col}) FROM {table}) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)"
            ),
        );
        assert_eq!(
            got, "t",
            "{table}.{col} does not sum to the history's deltas"
        );
    }
}

#[test]
fn bad_credentials_an_unreachable_server_and_a_missing_database_give_one_line_errors() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    let wrong = format!(
        "postgres://{}:not-the-password@127.0.0.1:{}/postgres",
        pg.user, pg.port
    );
    let out = e.cmd().args(["backup", &wrong]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused user \"lvtest\""), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // No password at all.
    let out = e
        .cmd()
        .args(["backup", &pg.url("postgres")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("asks for a password"), "{err}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = lv(&e, &pg)
        .args([
            "backup",
            &format!("postgres://lvtest@127.0.0.1:{closed}/firm"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{closed}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = lv(&e, &pg)
        .args(["backup", &pg.url("nosuchdb")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("database \"nosuchdb\" does not exist"),
        "{err}"
    );

    let out = lv(&e, &pg)
        .args(["backup", "postgres://h:port/db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Nothing was stored by any of them.
    let (_, snaps, _) = run(&e, &pg, &["snapshots"]);
    assert_eq!(snaps.as_array().map(|a| a.len()), Some(0));
}

#[test]
fn verify_drills_in_a_scratch_database_and_drops_it() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    seed(&pg, "firm", 4, 100);
    let (code, _, err) = run(&e, &pg, &["backup", &pg.url("firm")]);
    assert_eq!(code, 0, "{err}");
    let before = databases(&pg);
    let (code, report, err) = run(&e, &pg, &["verify"]);
    assert_eq!(code, 0, "{err}\n{report}");
    let names: Vec<String> = report["sources"][0]["checks"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for n in [
        "restore into a scratch database",
        "row counts and digests match the backup",
        "every journal entry balances",
        "no journal line is orphaned",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert_eq!(databases(&pg), before, "the scratch database is dropped");

    // A books check that fails makes the drill fail (exit 6).
    let config = e.root.join("lv.toml");
    std::fs::write(
        &config,
        "[[verify.checks]]\nname = \"no entry before 2026-02-01\"\nsql = \"SELECT id FROM journal_entries WHERE posted < date '2026-02-01'\"\n",
    )
    .unwrap();
    let (code, report, _) = run(&e, &pg, &["--config", config.to_str().unwrap(), "verify"]);
    assert_eq!(code, 6, "{report}");
    assert_eq!(databases(&pg), before);
}

#[test]
fn clients_back_up_and_restore_on_postgres_as_an_ordinary_user() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    pg.psql(
        "postgres",
        "CREATE ROLE clerk LOGIN PASSWORD 'clerk-pw' CREATEDB",
    );
    pg.psql("postgres", "CREATE DATABASE firm OWNER clerk");
    let clerk = |db: &str| format!("postgres://clerk:clerk-pw@127.0.0.1:{}/{db}", pg.port);
    // The schema and data belong to clerk, who is no superuser: the import
    // relies on deferrable keys for the clients <-> contacts cycle.
    let out = StdCommand::new(pg.tool("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &clerk("firm"),
            "-c",
            SCHEMA,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seed_data_as(&pg, "firm");

    let (code, list, err) = run(&e, &pg, &["client", "list", &clerk("firm")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list["clients"].as_array().unwrap().len(), 5);
    assert_eq!(list["root"], "clients");

    let (code, b, err) = run(
        &e,
        &pg,
        &["client", "backup", &clerk("firm"), "--client", "C002"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(b["rows"], 1 + 1 + 3 + 30 + 60);
    let (_, snaps, _) = run(&e, &pg, &["snapshots"]);
    let shown = serde_json::to_string(&snaps).unwrap();
    assert!(
        !shown.contains("clerk-pw"),
        "a password reached the repository"
    );

    // Restore the archive beside the original, as a new client.
    let (code, r, err) = run(
        &e,
        &pg,
        &[
            "client",
            "restore",
            "latest",
            "--client",
            "C002",
            "--into",
            &clerk("firm"),
            "--as-new",
            "--set",
            "code=C902",
        ],
    );
    assert_eq!(code, 0, "{err}\n{r}");
    let count = |db: &str, sql: &str| pg.psql(db, sql);
    assert_eq!(count("firm", "SELECT count(*) FROM clients"), "6");
    assert_eq!(
        count(
            "firm",
            "SELECT count(*) FROM journal_lines l JOIN journal_entries j ON j.id = l.entry_id JOIN clients c ON c.id = j.client_id WHERE c.code = 'C902'"
        ),
        "60"
    );
    assert_eq!(
        count("firm", "SELECT count(*) FROM clients c JOIN contacts k ON k.id = c.main_contact AND k.client_id = c.id"),
        "6",
        "the cycle's keys point at the new client's own rows"
    );
    // New ids come from the sequences, after the imported rows.
    pg.psql(
        "firm",
        "INSERT INTO clients (code, name) VALUES ('C999', 'after')",
    );

    // One client out of a full snapshot into another firm database.
    let (code, _, err) = run(&e, &pg, &["backup", &clerk("firm")]);
    assert_eq!(code, 0, "{err}");
    pg.psql("postgres", "CREATE DATABASE other OWNER clerk");
    let out = StdCommand::new(pg.tool("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &clerk("other"),
            "-c",
            SCHEMA,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, r, err) = run(
        &e,
        &pg,
        &[
            "client",
            "restore",
            "latest",
            "--client",
            "C004",
            "--into",
            &clerk("other"),
        ],
    );
    assert_eq!(code, 0, "{err}\n{r}");
    assert_eq!(
        count("other", "SELECT string_agg(code, ',') FROM clients"),
        "C004"
    );
    assert_eq!(count("other", "SELECT count(*) FROM journal_lines"), "60");
    assert_eq!(
        count(
            "other",
            "SELECT sum(debit_cents) = sum(credit_cents) FROM journal_lines"
        ),
        "t"
    );
    assert!(
        !databases(&pg).iter().any(|d| d.contains("_lv")),
        "{:?}",
        databases(&pg)
    );
}

/// Data for the clients test: 5 clients, 3 accounts, 30 entries of 2 lines.
fn seed_data_as(pg: &PgServer, db: &str) {
    pg.psql(
        db,
        "SET ROLE clerk;
         INSERT INTO staff (email, name) VALUES ('ann@firm.example', 'Ann');
         INSERT INTO clients (code, name) SELECT 'C' || lpad(i::text, 3, '0'), 'Client ' || i FROM generate_series(1, 5) i;
         INSERT INTO contacts (client_id, name) SELECT id, 'Contact ' || id FROM clients;
         UPDATE clients c SET main_contact = k.id FROM contacts k WHERE k.client_id = c.id;
         INSERT INTO accounts (client_id, code, name) SELECT c.id, a.code, a.code FROM clients c
             CROSS JOIN (VALUES ('1000'), ('4000'), ('5000')) a(code);
         INSERT INTO journal_entries (client_id, posted, memo, approved_by)
             SELECT c.id, date '2026-01-01' + i, 'e' || i, 1 FROM clients c CROSS JOIN generate_series(1, 30) i;
         INSERT INTO journal_lines (entry_id, account_id, debit_cents, amount)
             SELECT e.id, (SELECT id FROM accounts a WHERE a.client_id = e.client_id AND a.code = '1000'), 100, 1.00
             FROM journal_entries e;
         INSERT INTO journal_lines (entry_id, account_id, credit_cents, amount)
             SELECT e.id, (SELECT id FROM accounts a WHERE a.client_id = e.client_id AND a.code = '4000'), 100, -1.00
             FROM journal_entries e;",
    );
}

#[test]
fn globals_bring_back_the_roles_a_dump_needs() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    pg.createdb("firm");
    pg.psql(
        "firm",
        "CREATE ROLE auditor; CREATE TABLE ledger (id int PRIMARY KEY, memo text);
         INSERT INTO ledger VALUES (1, 'opening'); ALTER TABLE ledger OWNER TO auditor;",
    );
    let (code, b, err) = run(&e, &pg, &["backup", "--globals", &pg.url("firm")]);
    assert_eq!(code, 0, "{err}\n{b}");
    let (_, snaps, _) = run(&e, &pg, &["snapshots"]);
    let names: Vec<&str> = snaps[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["firm.sql", "firm.globals.sql"]);
    pg.psql("postgres", "DROP DATABASE firm");
    pg.psql("postgres", "DROP ROLE auditor");
    let (code, _, err) = run(&e, &pg, &["restore", "latest", "--target", &pg.url("firm")]);
    assert_ne!(code, 0);
    assert!(err.contains("--globals"), "{err}");
    let (code, _, err) = run(
        &e,
        &pg,
        &[
            "restore",
            "latest",
            "--target",
            &pg.url("firm"),
            "--globals",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pg.psql("firm", "SELECT tableowner || ':' || (SELECT memo FROM ledger) FROM pg_tables WHERE tablename = 'ledger'"),
        "auditor:opening"
    );
    // Without a PostgreSQL database, --globals is a usage error.
    let (code, _, _) = run(&e, &pg, &["backup", "--globals", e.root.to_str().unwrap()]);
    assert_eq!(code, 2);
}

#[test]
fn a_damaged_repository_never_leaves_a_half_restored_database() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    seed(&pg, "firm", 4, 800);
    let (code, _, err) = run(&e, &pg, &["backup", &pg.url("firm")]);
    assert_eq!(code, 0, "{err}");
    // Flip one byte in the middle of every pack.
    let mut packs = Vec::new();
    let mut dirs = vec![e.repo.join("data")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                packs.push(p);
            }
        }
    }
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x40;
        std::fs::write(p, b).unwrap();
    }
    let before = databases(&pg);
    let (code, _, err) = run(&e, &pg, &["restore", "latest", "--target", &pg.url("copy")]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("nothing was restored"), "{err}");
    assert_eq!(
        databases(&pg),
        before,
        "no database was created or left behind"
    );
}

#[test]
fn guard_around_risky_work_on_postgres_prints_a_rollback_that_works() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    seed(&pg, "firm", 3, 100);
    let before = fingerprint(&pg, "firm");
    let script = format!(
        "'{}' -X -q -c 'DELETE FROM journal_lines WHERE id % 3 = 0'; exit 3",
        pg.tool("psql").display()
    );
    let out = lv(&e, &pg)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", &pg.user)
        .env("PGDATABASE", "firm")
        .args([
            "guard",
            "--reason",
            "year-end close",
            &pg.url("firm"),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the command's own exit code");
    assert_ne!(fingerprint(&pg, "firm"), before, "the risky work happened");
    let rollback = common::printed_rollback(&out.stderr);
    assert!(
        rollback.contains(&pg.url("firm")) && rollback.contains("--force"),
        "{rollback}"
    );
    common::run_printed(&rollback, &[("PGPASSWORD", &pg.password)]);
    assert_eq!(
        fingerprint(&pg, "firm"),
        before,
        "the rollback put the books back"
    );
}

/// A company table keyed by UUID, with entries reaching it through a
/// bill or an invoice: `--client NAME` finds a company whatever its key's
/// type, and `client list --check` accounts for every row on PostgreSQL.
#[test]
fn uuid_keyed_companies_are_found_by_name_and_every_route_counts() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    pg.createdb("multi");
    pg.psql(
        "multi",
        "CREATE TABLE company (id uuid PRIMARY KEY, name text NOT NULL);
         CREATE TABLE invoice (id serial PRIMARY KEY, company_id uuid NOT NULL REFERENCES company(id));
         CREATE TABLE bill (id serial PRIMARY KEY, company_id uuid NOT NULL REFERENCES company(id));
         CREATE TABLE line (id serial PRIMARY KEY, invoice_id int REFERENCES invoice(id),
                            bill_id int REFERENCES bill(id), amount int NOT NULL);
         INSERT INTO company VALUES ('6f1c1a8e-7d4b-4a4e-9a59-3b0c2e1f0a01', 'Acme Ltd'),
                                    ('0b5d5e2a-1c3f-4f7e-8a2d-9e4b6c7d8e02', 'Beta GmbH');
         INSERT INTO invoice (company_id) SELECT id FROM company, generate_series(1, 3);
         INSERT INTO bill (company_id) SELECT id FROM company, generate_series(1, 2);
         INSERT INTO line (invoice_id, amount) SELECT id, 10 FROM invoice;
         INSERT INTO line (bill_id, amount) SELECT id, -5 FROM bill;
         -- Two keys of a table into itself: one recursive term on PostgreSQL.
         ALTER TABLE line ADD COLUMN reversal_of int REFERENCES line(id),
                          ADD COLUMN matched_with int REFERENCES line(id);
         UPDATE line l SET reversal_of = (SELECT max(p.id) FROM line p JOIN invoice pi ON pi.id = p.invoice_id
             JOIN invoice li ON li.id = l.invoice_id WHERE pi.company_id = li.company_id AND p.id < l.id)
             WHERE l.invoice_id IS NOT NULL;
         UPDATE line l SET matched_with = (SELECT min(p.id) FROM line p JOIN invoice pi ON pi.id = p.invoice_id
             JOIN invoice li ON li.id = l.invoice_id WHERE pi.company_id = li.company_id AND p.id > l.id)
             WHERE l.invoice_id IS NOT NULL;",
    );
    let url = pg.url("multi");
    let cfg = e.root.join("client.toml");
    std::fs::write(&cfg, "[client]\nroot = \"company\"\n").unwrap();
    let c = cfg.to_str().unwrap();
    let (code, list, err) = run(&e, &pg, &["-c", c, "client", "list", "--check", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list["adds_up"], true, "{list}");
    let acme = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "Acme Ltd")
        .unwrap()
        .clone();
    // 3 invoice lines and 2 bill lines.
    assert_eq!(acme["rows"]["line"], 5, "{acme}");
    let (code, b, err) = run(
        &e,
        &pg,
        &["-c", c, "client", "backup", &url, "--client", "Acme Ltd"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(b["rows"], 1 + 3 + 2 + 5, "{b}");
    let (code, _, err) = run(
        &e,
        &pg,
        &[
            "-c",
            c,
            "client",
            "backup",
            &url,
            "--client",
            "0b5d5e2a-1c3f-4f7e-8a2d-9e4b6c7d8e02",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Joined-table inheritance on PostgreSQL: every object's id is a row of
/// `object`, and a firm-level audit table with no primary key at all
/// points at objects through a column configured as a link. A client is
/// backed up and restored over itself with `--replace`: the references
/// from outside the client are checked without any `rowid` (PostgreSQL has
/// none), the objects come back under their ids, and the audit rows still
/// point at rows that exist.
#[test]
fn a_client_of_an_inheritance_schema_is_replaced_on_postgres() {
    let pg = PgServer::start();
    let e = Env::with_repo();
    pg.createdb("inh");
    pg.psql(
        "inh",
        "CREATE TABLE object (id serial PRIMARY KEY, kind text NOT NULL);
         CREATE TABLE clients (id int PRIMARY KEY REFERENCES object(id), name text NOT NULL UNIQUE);
         CREATE TABLE doc (id int PRIMARY KEY REFERENCES object(id),
                           client_id int NOT NULL REFERENCES clients(id), total int NOT NULL);
         CREATE TABLE audit (note text, object_id int REFERENCES object(id));
         INSERT INTO object (kind) SELECT 'client' FROM generate_series(1, 2);
         INSERT INTO clients VALUES (1, 'Acme Ltd'), (2, 'Beta GmbH');
         INSERT INTO object (kind) SELECT 'doc' FROM generate_series(1, 6);
         INSERT INTO doc SELECT id, 1 + id % 2, 100 * id FROM object WHERE kind = 'doc';
         INSERT INTO audit SELECT 'printed', id FROM object WHERE kind = 'doc';",
    );
    let url = pg.url("inh");
    let cfg = e.root.join("client.toml");
    std::fs::write(
        &cfg,
        "[client]\nroot = \"clients\"\n[client.links]\n\"audit.object_id\" = \"keep\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let (code, list, err) = run(&e, &pg, &["-c", c, "client", "list", "--check", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(list["adds_up"], true, "{list}");
    let (code, b, err) = run(
        &e,
        &pg,
        &["-c", c, "client", "backup", &url, "--client", "Acme Ltd"],
    );
    assert_eq!(code, 0, "{err}");
    // The client, its three documents, and their four objects.
    assert_eq!(b["rows"], 1 + 3 + 4, "{b}");
    pg.psql("inh", "UPDATE doc SET total = 0 WHERE client_id = 1");
    let (code, r, err) = run(
        &e,
        &pg,
        &[
            "-c",
            c,
            "client",
            "restore",
            "latest",
            "--client",
            "1",
            "--into",
            &url,
            "--replace",
        ],
    );
    assert_eq!(code, 0, "{err} {r}");
    let totals = pg.psql(
        "inh",
        "SELECT string_agg(total::text, ' ' ORDER BY id) FROM doc WHERE client_id = 1",
    );
    assert_eq!(totals.trim(), "400 600 800", "the documents came back");
    let dangling = pg.psql(
        "inh",
        "SELECT count(*) FROM audit a WHERE NOT EXISTS (SELECT 1 FROM object o WHERE o.id = a.object_id)",
    );
    assert_eq!(dangling.trim(), "0");
}
