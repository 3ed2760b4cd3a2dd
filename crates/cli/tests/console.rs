//! The web console, end to end over HTTP: the real binary serves it on a
//! port the system picks, over a real repository and config file; the
//! tests sign in as each role and act as a browser (and as an attacker)
//! would. The browser-driven tests are in `tests/browser/`.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

const FAST: [&str; 6] = [
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--pack-size-mib",
    "1",
];

const ADMIN_PW: &str = "admin password 1";
const OPERATOR_PW: &str = "operator password 2";
const VIEWER_PW: &str = "viewer password 3";

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    server: Option<Child>,
    base: String,
}

struct Answer {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: Vec<(String, String)>,
    body: String,
}

impl Site {
    /// A firm's setup: a repository, a database and documents as sources,
    /// three console users, and the console serving.
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::write(root.join("pw"), "s3cret\n").unwrap();
        // A folder name that is also markup: every page must show it as text.
        let docs = root.join("docs <b>bold</b> & \"co\"");
        fs::create_dir_all(docs.join("2026")).unwrap();
        fs::write(docs.join("2026/invoice-1041.txt"), "invoice 1041: 250.00").unwrap();
        let db = rusqlite::Connection::open(root.join("books.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY, memo TEXT, amount INTEGER);
             INSERT INTO entries (memo, amount) VALUES ('opening', 100), ('opening', -100);",
        )
        .unwrap();
        let toml_str = |p: &Path| toml_string(&p.display().to_string());
        fs::write(
            root.join("lv.toml"),
            format!(
                "[repository]\npath = {}\npassword_file = {}\n\n[[source]]\npath = {}\n\n[[source]]\npath = {}\n",
                toml_str(&root.join("repo")),
                toml_str(&root.join("pw")),
                toml_str(&root.join("books.db")),
                toml_str(&docs),
            ),
        )
        .unwrap();
        let mut site = Site {
            _tmp: tmp,
            root,
            server: None,
            base: String::new(),
        };
        site.lv().arg("init").args(FAST).assert().success();
        for (name, role, pw) in [
            ("ann", "admin", ADMIN_PW),
            ("olga", "operator", OPERATOR_PW),
            ("vic", "viewer", VIEWER_PW),
        ] {
            site.lv()
                .args(["console", "user", "add", name, "--role", role])
                .env("LEDGERVAULT_CONSOLE_PASSWORD", pw)
                .assert()
                .success();
        }
        site.serve();
        site
    }

    /// Appends `text` to the config file and serves the console again.
    fn add_config(&mut self, text: &str) {
        let mut cfg = fs::read_to_string(self.root.join("lv.toml")).unwrap();
        cfg.push_str(text);
        fs::write(self.root.join("lv.toml"), cfg).unwrap();
        self.serve();
    }

    /// A `[console] restore_to` folder, made; the console serves with it.
    fn with_restore_folder(&mut self) -> PathBuf {
        let restores = self.root.join("restores");
        fs::create_dir_all(&restores).unwrap();
        self.add_config(&format!(
            "\n[console]\nrestore_to = {}\n",
            toml_string(&restores.display().to_string())
        ));
        restores
    }

    fn lv(&self) -> Command {
        let mut c = Command::cargo_bin("ledgervault").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.root)
            .arg("-c")
            .arg(self.root.join("lv.toml"));
        c
    }

    fn serve(&mut self) {
        self.serve_with(&["--listen", "127.0.0.1:0"]);
    }

    /// Starts `console serve` with `args`; returns what it printed.
    fn serve_with(&mut self, args: &[&str]) -> serde_json::Value {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("ledgervault"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.root)
            .arg("-c")
            .arg(self.root.join("lv.toml"))
            .args(["--json", "console", "serve"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(self.root.join("console.err")).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        self.server = Some(child);
        // One JSON document, over several lines.
        let mut text = String::new();
        let mut lines = BufReader::new(out);
        let v: serde_json::Value = loop {
            let mut line = String::new();
            let n = lines.read_line(&mut line).unwrap();
            text.push_str(&line);
            if let Ok(v) = serde_json::from_str(&text) {
                break v;
            }
            assert!(
                n > 0,
                "console serve printed {text:?}; stderr: {}",
                fs::read_to_string(self.root.join("console.err")).unwrap_or_default()
            );
        };
        self.base = v["url"].as_str().unwrap().trim_end_matches('/').to_string();
        v
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// One request, as a browser without redirects would make it.
    fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Answer {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(60))
            .build();
        let mut r = agent.request(method, &format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.set("Cookie", &format!("lv_session={c}"));
        }
        for (k, v) in extra {
            r = r.set(k, v);
        }
        let res = if method == "POST" {
            r.send_form(form)
        } else {
            r.call()
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_string()))
            .collect();
        Answer {
            status: resp.status(),
            location: resp.header("location").map(str::to_string),
            set_cookie: resp.header("set-cookie").map(str::to_string),
            headers,
            body: resp.into_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str, cookie: &str) -> Answer {
        self.request("GET", path, Some(cookie), &[], &[])
    }

    /// Signs in; returns the session token.
    fn login(&self, user: &str, pw: &str) -> String {
        let a = self.request(
            "POST",
            "/login",
            None,
            &[("user", user), ("password", pw)],
            &[],
        );
        assert_eq!(a.status, 303, "{user}: {}", a.body);
        session_of(&a).unwrap_or_else(|| panic!("no session cookie for {user}"))
    }

    /// The CSRF token on the dashboard of `cookie`'s session.
    fn csrf(&self, cookie: &str) -> String {
        let page = self.get("/", cookie);
        assert_eq!(page.status, 200);
        field(&page.body, "name=\"csrf\" value=\"")
    }

    /// Waits for task `path` to end; returns its page.
    fn finished(&self, path: &str, cookie: &str) -> String {
        let t0 = Instant::now();
        loop {
            let a = self.get(path, cookie);
            assert_eq!(a.status, 200, "{}", a.body);
            if !a.body.contains("Running:") {
                return a.body;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{path} still running"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn snapshots_json(&self) -> Vec<serde_json::Value> {
        let out = self.lv().args(["--json", "snapshots"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.root.join("lv.audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn session_of(a: &Answer) -> Option<String> {
    let c = a.set_cookie.as_deref()?;
    let v = c.strip_prefix("lv_session=")?.split(';').next()?;
    (!v.is_empty()).then(|| v.to_string())
}

/// The text after `marker` up to the next quote.
fn field(body: &str, marker: &str) -> String {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"))
        + marker.len();
    body[at..].split('"').next().unwrap().to_string()
}

#[test]
fn an_operator_backs_up_and_takes_a_safety_snapshot_and_a_viewer_cannot() {
    let site = Site::new();
    // Not signed in: every page sends to the sign-in page.
    let a = site.request("GET", "/", None, &[], &[]);
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/login")));

    let olga = site.login("olga", OPERATOR_PW);
    let dash = site.get("/", &olga);
    assert!(dash.body.contains("action=\"/backup\""), "{}", dash.body);
    assert!(dash.body.contains("olga · operator"));
    let csrf = site.csrf(&olga);

    let a = site.request("POST", "/backup", Some(&olga), &[("csrf", &csrf)], &[]);
    assert_eq!(a.status, 303, "{}", a.body);
    let task = a.location.unwrap();
    let done = site.finished(&task, &olga);
    assert!(done.contains("class=\"note ok\""), "{done}");
    assert!(
        done.contains("Snapshot ") && done.contains("files"),
        "{done}"
    );
    let snaps = site.snapshots_json();
    assert_eq!(snaps.len(), 1, "{snaps:?}");

    // A safety snapshot with a reason from the list and details that are
    // also markup.
    let a = site.request(
        "POST",
        "/snapshot",
        Some(&olga),
        &[
            ("csrf", &csrf),
            ("reason", "year-end close"),
            ("other", "FY2026 <i>"),
        ],
        &[],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &olga);
    assert!(done.contains("class=\"note ok\""), "{done}");
    let snaps = site.snapshots_json();
    assert_eq!(snaps.len(), 2);
    assert!(
        snaps
            .iter()
            .any(|s| s["reason"] == "year-end close: FY2026 <i>"),
        "{snaps:?}"
    );
    // The snapshots page lists both, filters by reason, and shows the
    // hostile folder name and the reason as text.
    let list = site.get("/snapshots", &olga).body;
    assert!(list.contains("<strong>2</strong> of 2 backups"), "{list}");
    assert!(
        list.contains("docs &lt;b&gt;bold&lt;/b&gt; &amp; &quot;co&quot;"),
        "{list}"
    );
    assert!(!list.contains("<b>bold</b>") && !list.contains("<i>"));
    // What changed since the one before (files written just before a
    // backup are read again, so both count here).
    assert!(list.contains("2 files new or changed"), "{list}");
    let only = site.get("/snapshots?tag=year-end", &olga).body;
    assert!(only.contains("<strong>1</strong> of 2 backups"), "{only}");
    assert!(only.contains("year-end close: FY2026 &lt;i&gt;"), "{only}");
    // No reason, no snapshot.
    let a = site.request(
        "POST",
        "/snapshot",
        Some(&olga),
        &[("csrf", &csrf), ("reason", "other"), ("other", " ")],
        &[],
    );
    assert_eq!(a.status, 400);

    // The viewer sees everything and can change nothing.
    let vic = site.login("vic", VIEWER_PW);
    let dash = site.get("/", &vic);
    assert_eq!(dash.status, 200);
    assert!(!dash.body.contains("action=\"/backup\""), "{}", dash.body);
    assert!(site.get("/snapshots", &vic).body.contains("of 2 backups"));
    let vic_csrf = site.csrf(&vic);
    for path in ["/backup", "/snapshot"] {
        let a = site.request(
            "POST",
            path,
            Some(&vic),
            &[("csrf", &vic_csrf), ("reason", "purge")],
            &[],
        );
        assert_eq!(a.status, 403, "{path}: {}", a.body);
        assert!(
            a.body.contains("Your role (viewer) may not do this"),
            "{}",
            a.body
        );
    }
    assert_eq!(
        site.snapshots_json().len(),
        2,
        "a viewer's request made a snapshot"
    );

    // Who did what.
    let audit = site.audit();
    let has = |user: &str, action: &str, outcome: &str| {
        audit
            .iter()
            .any(|e| e["user"] == user && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(has("olga", "sign in", "ok"), "{audit:?}");
    assert!(has("olga", "Back up now", "ok"), "{audit:?}");
    assert!(has("olga", "Safety snapshot", "ok"), "{audit:?}");
    assert!(has("vic", "back up now", "refused"), "{audit:?}");
    // The admin reads it on the activity page; others do not.
    let ann = site.login("ann", ADMIN_PW);
    assert!(site.get("/activity", &ann).body.contains("Audit log"));
    assert!(!site.get("/activity", &olga).body.contains("Audit log"));
}

#[test]
fn nothing_without_a_session_and_no_change_without_its_token() {
    let site = Site::new();
    for path in ["/", "/snapshots", "/activity", "/tasks/1"] {
        let a = site.request("GET", path, None, &[], &[]);
        assert_eq!(
            (a.status, a.location.as_deref()),
            (303, Some("/login")),
            "{path}"
        );
    }
    let a = site.request("GET", "/tasks/1/events", None, &[], &[]);
    assert_eq!(a.status, 401);
    let a = site.request("POST", "/backup", None, &[("csrf", "x")], &[]);
    assert_eq!(a.status, 303);
    // A made-up session is no session.
    let forged = "ab".repeat(32);
    assert_eq!(site.get("/", &forged).status, 303);

    let olga = site.login("olga", OPERATOR_PW);
    let csrf = site.csrf(&olga);
    let vic = site.login("vic", VIEWER_PW);
    let vic_csrf = site.csrf(&vic);
    // No token, another session's token, another site's page: refused.
    for (form, extra) in [
        (vec![], vec![]),
        (vec![("csrf", vic_csrf.as_str())], vec![]),
        (
            vec![("csrf", csrf.as_str())],
            vec![("Origin", "http://evil.example")],
        ),
    ] {
        let a = site.request("POST", "/backup", Some(&olga), &form, &extra);
        assert_eq!(a.status, 403, "{form:?} {extra:?}: {}", a.body);
    }
    assert!(
        site.snapshots_json().is_empty(),
        "a refused request made a snapshot"
    );

    // Session fixation: a session id the browser brings to the sign-in is
    // not the one it leaves with, and grants nothing.
    let planted = "cd".repeat(32);
    let a = site.request(
        "POST",
        "/login",
        Some(&planted),
        &[("user", "olga"), ("password", OPERATOR_PW)],
        &[],
    );
    let fresh = session_of(&a).unwrap();
    assert_ne!(fresh, planted);
    assert_eq!(site.get("/", &planted).status, 303);
    assert_eq!(site.get("/", &fresh).status, 200);
    let cookie = a.set_cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Signing out ends the session.
    let fresh_csrf = site.csrf(&fresh);
    let a = site.request(
        "POST",
        "/logout",
        Some(&fresh),
        &[("csrf", &fresh_csrf)],
        &[],
    );
    assert_eq!(a.status, 303);
    assert_eq!(site.get("/", &fresh).status, 303);

    // A user removed from the command line is signed out at once, and so
    // is one given a new password.
    site.lv()
        .args(["console", "user", "remove", "vic"])
        .assert()
        .success();
    assert_eq!(site.get("/", &vic).status, 303);
    let ann = site.login("ann", ADMIN_PW);
    site.lv()
        .args(["console", "user", "add", "ann", "--role", "admin"])
        .env("LEDGERVAULT_CONSOLE_PASSWORD", "a new admin password")
        .assert()
        .success();
    assert_eq!(site.get("/", &ann).status, 303);

    // A page on another site whose name was made to resolve to 127.0.0.1
    // (DNS rebinding) brings its own Host: refused.
    let port = site.addr().rsplit(':').next().unwrap().to_string();
    let evil = format!("evil.example:{port}");
    let a = site.request("GET", "/login", None, &[], &[("Host", &evil)]);
    assert_eq!(a.status, 421);
    let local = format!("localhost:{port}");
    let a = site.request("GET", "/login", None, &[], &[("Host", &local)]);
    assert_eq!(a.status, 200);

    // Every page says how it may be used.
    let a = site.get("/", &olga);
    let header = |n: &str| {
        a.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("default-src 'self'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-store");
}

#[test]
fn guessing_passwords_is_throttled_and_odd_paths_lead_nowhere() {
    let site = Site::new();
    for i in 0..5 {
        let a = site.request(
            "POST",
            "/login",
            None,
            &[("user", "ann"), ("password", &format!("guess {i}"))],
            &[],
        );
        assert_eq!(a.status, 401, "try {i}");
        assert!(a.set_cookie.is_none());
    }
    // Now even the right password waits.
    let a = site.request(
        "POST",
        "/login",
        None,
        &[("user", "ann"), ("password", ADMIN_PW)],
        &[],
    );
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("Too many failed sign-ins"));
    assert!(session_of(&a).is_none());
    // Another user from the same address is not locked out by it.
    site.login("olga", OPERATOR_PW);
    let audit = site.audit();
    let throttled: Vec<_> = audit
        .iter()
        .filter(|e| e["user"] == "ann" && e["detail"].as_str().unwrap().starts_with("throttled"))
        .collect();
    assert_eq!(
        throttled.len(),
        1,
        "one line when the wait starts: {audit:?}"
    );

    // Many guesses sent at once are all counted: a burst buys no more
    // than the free tries.
    let guesses: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..12)
            .map(|i| {
                let site = &site;
                sc.spawn(move || {
                    let pw = format!("burst {i}");
                    site.request(
                        "POST",
                        "/login",
                        None,
                        &[("user", "vic"), ("password", &pw)],
                        &[],
                    )
                    .status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        guesses.iter().all(|s| *s == 401 || *s == 429),
        "{guesses:?}"
    );
    assert!(
        guesses.iter().filter(|s| **s == 401).count() <= 5,
        "more than the free tries were checked: {guesses:?}"
    );
    let a = site.request(
        "POST",
        "/login",
        None,
        &[("user", "vic"), ("password", VIEWER_PW)],
        &[],
    );
    assert_eq!(a.status, 429);

    // Bodies are small (16 KiB at most); a name no user can have is not
    // logged. 20 kB fits in the socket's buffer, so the client has sent it
    // all before the refusal closes the connection.
    let long = "x".repeat(20_000);
    let a = site.request(
        "POST",
        "/login",
        None,
        &[("user", &long), ("password", "p")],
        &[],
    );
    assert_eq!(a.status, 413);
    let a = site.request(
        "POST",
        "/login",
        None,
        &[("user", "a\nb<c>"), ("password", "p")],
        &[],
    );
    assert_eq!(a.status, 401);
    assert!(!fs::read_to_string(site.root.join("lv.audit.log"))
        .unwrap()
        .contains("<c>"));

    // Raw requests, so that no client tidies the path first.
    let olga = site.login("olga", OPERATOR_PW);
    for path in [
        "/tasks/..%2f..%2fetc%2fpasswd",
        "/tasks/../../etc/passwd",
        "/static/../../Cargo.toml",
        "/static/%2e%2e/%2e%2e/Cargo.toml",
        "/tasks/99999999999999999999999",
        "/tasks/-1",
        "/snapshots/..",
    ] {
        let (status, body) = raw_get(&site.addr(), path, &olga);
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(
            !body.contains("[workspace]") && !body.contains("root:"),
            "{path}"
        );
    }
    // Malformed forms are refused, not crashed on.
    let (status, _) = raw_post(&site.addr(), "/login", "user=%ff%fe&password", None);
    assert!(status == 400 || status == 401 || status == 422, "{status}");
    assert_eq!(
        site.get("/", &olga).status,
        200,
        "the console still answers"
    );
}

fn raw(addr: &str, request: String) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn raw_get(addr: &str, path: &str, cookie: &str) -> (u16, String) {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: lv_session={cookie}\r\nConnection: close\r\n\r\n"),
    )
}

fn raw_post(addr: &str, path: &str, body: &str, cookie: Option<&str>) -> (u16, String) {
    let cookie = cookie
        .map(|c| format!("Cookie: lv_session={c}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn the_console_refuses_to_start_unsafely() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(root.join("pw"), "s3cret\n").unwrap();
    fs::write(
        root.join("lv.toml"),
        format!(
            "[repository]\npath = {}\npassword_file = {}\n",
            toml_string(&root.join("repo").display().to_string()),
            toml_string(&root.join("pw").display().to_string())
        ),
    )
    .unwrap();
    let lv = || {
        let mut c = Command::cargo_bin("ledgervault").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("-c")
            .arg(root.join("lv.toml"));
        c
    };
    let fails = |c: &mut Command, says: &str| {
        let out = c.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = common::one_line_error(&out.stderr);
        assert!(line.contains(says), "{line}");
    };
    // No admin yet.
    let out = lv()
        .args(["console", "serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        common::one_line_error(&out.stderr).contains("no admin yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Weak passwords and odd names are refused; nothing is written.
    fails(
        lv().args(["console", "user", "add", "ann", "--role", "admin"])
            .env("LEDGERVAULT_CONSOLE_PASSWORD", "short"),
        "too short",
    );
    fails(
        lv().args(["console", "user", "add", "../ann", "--role", "admin"])
            .env("LEDGERVAULT_CONSOLE_PASSWORD", ADMIN_PW),
        "is not a user name",
    );
    assert!(!root.join("lv.users.json").exists());
    lv().args(["console", "user", "add", "ann", "--role", "admin"])
        .env("LEDGERVAULT_CONSOLE_PASSWORD", ADMIN_PW)
        .assert()
        .success();
    // Off loopback without TLS: refused before anything listens.
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.7:8440"] {
        fails(
            lv().args(["console", "serve", "--listen", addr]),
            "without TLS",
        );
    }
    fails(
        lv().args(["console", "serve", "--listen", "localhost"]),
        "not an address and port",
    );
    // The last admin stays.
    fails(
        lv().args(["console", "user", "remove", "ann"]),
        "last admin",
    );
    // A user file others may write is not trusted.
    use std::os::unix::fs::PermissionsExt;
    let users = root.join("lv.users.json");
    fs::set_permissions(&users, fs::Permissions::from_mode(0o666)).unwrap();
    let out = lv()
        .args(["console", "serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        common::one_line_error(&out.stderr).contains("may be changed by other users"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).unwrap();

    let users = fs::read_to_string(root.join("lv.users.json")).unwrap();
    assert!(!users.contains(ADMIN_PW) && users.contains("$argon2id$"));
}

/// The browser test's tools: Debian's Chromium and playwright-core from
/// npm, which `scripts/test.sh` installs (into `target/browser`).
fn browser_tools() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let playwright = std::env::var_os("LV_PLAYWRIGHT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/browser/node_modules/playwright-core"));
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        playwright.join("package.json").exists() && chromium.exists(),
        "the browser test needs /usr/bin/chromium and playwright-core in {}: run scripts/test.sh, which installs both",
        playwright.display()
    );
    (playwright, chromium)
}

#[test]
fn in_a_real_browser_each_role_does_what_it_may() {
    let (playwright, chromium) = browser_tools();
    let mut site = Site::new();
    site.with_restore_folder();
    let firm = add_firm(&mut site, 3);
    site.lv().arg("backup").assert().success();
    let before = all_rows(&firm);
    delete_client(&firm, 2);
    // The screenshots in the README come from here.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    fs::create_dir_all(&shots).unwrap();
    let out = StdCommand::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.cjs"))
        .arg(&site.base)
        .arg(&shots)
        .env("LV_PLAYWRIGHT", &playwright)
        .env("LV_CHROMIUM", &chromium)
        .env("LV_OPERATOR_PW", OPERATOR_PW)
        .env("LV_VIEWER_PW", VIEWER_PW)
        .env("LV_ADMIN_PW", ADMIN_PW)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "browser test failed:\n{}{}\nconsole stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(site.root.join("console.err")).unwrap_or_default()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("every step passed"));
    assert_eq!(all_rows(&firm), before, "client 2 is not back whole");
    assert!(fs::read_to_string(site.root.join("lv.toml"))
        .unwrap()
        .contains("keep_daily = 14"));
    // Three backups and the client restore's safety snapshot.
    assert_eq!(site.snapshots_json().len(), 4);
    for name in [
        "login",
        "dashboard",
        "task",
        "snapshots",
        "browse",
        "drills",
        "restore",
        "client-plan",
        "activity",
        "settings",
        "dashboard-phone",
    ] {
        let png = fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name}.png");
    }
}

#[test]
fn https_with_a_certificate_it_makes_and_keeps() {
    let mut site = Site::new();
    // Off loopback, with TLS: allowed.
    let v = site.serve_with(&["--listen", "0.0.0.0:0", "--self-signed"]);
    let fp = v["certificate_sha256"].as_str().unwrap().to_string();
    assert!(site.base.starts_with("https://"), "{}", site.base);
    let port = site.base.rsplit(':').next().unwrap().to_string();
    let cert = site.root.join("lv.console-cert.pem");
    let key = site.root.join("lv.console-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o077, 0);
    // The fingerprint printed is the certificate's, as openssl computes it.
    let out = StdCommand::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let openssl = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(openssl.trim().ends_with(&fp), "{openssl} vs {fp}");
    // A client that trusts that certificate signs in over HTTPS; the
    // session cookie is marked Secure.
    let curl = |args: &[&str]| {
        StdCommand::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&cert)
            .args([
                "--connect-to",
                &format!("localhost:{port}:127.0.0.1:{port}"),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let page = curl(&[&format!("https://localhost:{port}/login")]);
    assert!(
        page.status.success(),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert!(String::from_utf8_lossy(&page.stdout).contains("Sign in"));
    let login = curl(&[
        "-i",
        "--data-urlencode",
        "user=olga",
        "--data-urlencode",
        &format!("password={OPERATOR_PW}"),
        &format!("https://localhost:{port}/login"),
    ]);
    let head = String::from_utf8_lossy(&login.stdout).to_string();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on that port gets no page.
    let plain = StdCommand::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}/login"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("Sign in"));
    // Restarted, it keeps its certificate: the fingerprint people checked
    // stays true.
    let again = site.serve_with(&["--listen", "127.0.0.1:0", "--self-signed"]);
    assert_eq!(again["certificate_sha256"].as_str(), Some(fp.as_str()));
}

#[test]
fn browse_a_snapshot_and_download_a_file_or_a_folder() {
    use std::os::unix::ffi::OsStrExt;
    let site = Site::new();
    // Names a browser page and an archive must survive.
    let docs = site.root.join("docs <b>bold</b> & \"co\"");
    fs::write(docs.join("<img src=x onerror=alert(1)>.txt"), "markup").unwrap();
    fs::write(docs.join("back\\..\\slash.txt"), "backslashes").unwrap();
    fs::write(
        docs.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt")),
        "not utf-8",
    )
    .unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(docs.join("2026/ledger.bin"), &big).unwrap();
    site.lv().arg("backup").assert().success();
    let id = site.snapshots_json()[0]["id"].as_str().unwrap().to_string();

    let olga = site.login("olga", OPERATOR_PW);
    let list = site.get("/snapshots", &olga).body;
    assert!(
        list.contains(&format!("href=\"/snapshots/{id}\"")),
        "{list}"
    );
    let top = site.get(&format!("/snapshots/{id}"), &olga);
    assert_eq!(top.status, 200, "{}", top.body);
    let docs_name = docs.file_name().unwrap().as_bytes().to_vec();
    let at = |path: &[&[u8]]| {
        let mut b = Vec::new();
        for p in path {
            b.push(b'/');
            b.extend_from_slice(p);
        }
        hex(&b)
    };
    assert!(top.body.contains(&at(&[&docs_name])), "{}", top.body);
    let folder = site
        .get(&format!("/snapshots/{id}?at={}", at(&[&docs_name])), &olga)
        .body;
    assert!(
        folder.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{folder}"
    );
    assert!(
        !folder.contains("<img src=x"),
        "markup from a file name reached the page"
    );
    assert!(folder.contains("latin1-\\xe9t\\xe9.txt"), "{folder}");

    // One file, byte for byte.
    let file = site.request(
        "GET",
        &format!(
            "/snapshots/{id}/download?at={}",
            at(&[&docs_name, b"2026", b"ledger.bin"])
        ),
        Some(&olga),
        &[],
        &[],
    );
    assert_eq!(file.status, 200);
    let cd = file
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        cd.starts_with("attachment;") && cd.contains("ledger.bin"),
        "{cd}"
    );
    let got = raw_download(
        &site,
        &format!(
            "/snapshots/{id}/download?at={}",
            at(&[&docs_name, b"2026", b"ledger.bin"])
        ),
        &olga,
    );
    assert!(
        got == big,
        "the download differs from the file ({} bytes)",
        got.len()
    );

    // The folder as a zip: a real unzip finds every file intact, and no
    // name that climbs out.
    let zip = raw_download(
        &site,
        &format!("/snapshots/{id}/download?at={}", at(&[&docs_name])),
        &olga,
    );
    let zpath = site.root.join("docs.zip");
    fs::write(&zpath, &zip).unwrap();
    let test = StdCommand::new("unzip")
        .arg("-t")
        .arg(&zpath)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // A second reader written apart from Info-ZIP: CPython's zipfile reads
    // the ZIP64 records and checks every member's CRC.
    let py = StdCommand::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nfor n in z.namelist():\n    assert not n.startswith('/') and '..' not in n.split('/'), n\nprint(len(z.namelist()))",
        ])
        .arg(&zpath)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert!(
        String::from_utf8_lossy(&py.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
            >= 3,
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
    let out = site.root.join("unzipped");
    let x = StdCommand::new("unzip")
        .arg("-q")
        .arg(&zpath)
        .arg("-d")
        .arg(&out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let top_dir = fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    assert_eq!(fs::read(top_dir.join("2026/ledger.bin")).unwrap(), big);
    assert_eq!(
        fs::read_to_string(top_dir.join("2026/invoice-1041.txt")).unwrap(),
        "invoice 1041: 250.00"
    );
    assert_eq!(
        fs::read_to_string(top_dir.join("back_.._slash.txt")).unwrap(),
        "backslashes"
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        1,
        "everything inside one folder"
    );

    // Nothing outside the snapshot, whatever the URL says.
    for bad in [
        format!(
            "/snapshots/{id}/download?at={}",
            at(&[b"..", b"..", b"etc", b"passwd"])
        ),
        format!(
            "/snapshots/{id}/download?at={}",
            hex(b"/../../../etc/passwd")
        ),
        format!("/snapshots/{id}/download?at=zz"),
        format!("/snapshots/{id}/download?at={}", hex(b"//")),
        format!("/snapshots/{id}/download"),
        "/snapshots/..%2f..%2fetc/download?at=2f".to_string(),
        "/snapshots/ffffffffffff?at=".to_string(),
    ] {
        let a = site.get(&bad, &olga);
        assert_eq!(a.status, 404, "{bad}: {}", a.body);
    }
    // Downloads are in the audit log; without a session there are none.
    assert!(site.audit().iter().any(|e| e["action"] == "download"));
    let a = site.request(
        "GET",
        &format!("/snapshots/{id}/download?at={}", at(&[&docs_name])),
        None,
        &[],
        &[],
    );
    assert_eq!(a.status, 303);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A download's bytes (ureq's string reading would not do for binary).
fn raw_download(site: &Site, path: &str, cookie: &str) -> Vec<u8> {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let resp = agent
        .get(&format!("{}{path}", site.base))
        .set("Cookie", &format!("lv_session={cookie}"))
        .call()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn an_operator_runs_a_drill_and_everyone_reads_its_report() {
    let site = Site::new();
    site.lv().arg("backup").assert().success();
    let olga = site.login("olga", OPERATOR_PW);
    let page = site.get("/drills", &olga).body;
    assert!(page.contains("No drill has run yet"), "{page}");
    assert!(site
        .get("/", &olga)
        .body
        .contains("Recovery time not measured yet"));
    let csrf = site.csrf(&olga);
    let a = site.request("POST", "/drill", Some(&olga), &[("csrf", &csrf)], &[]);
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &olga);
    assert!(done.contains("The restore drill PASSED"), "{done}");
    assert!(done.contains("your recovery time"), "{done}");
    // The dashboard now shows the measured recovery time.
    let dash = site.get("/", &olga).body;
    assert!(dash.contains("Measured recovery time: "), "{dash}");
    // Stored in the repository: the command line sees the same drill.
    let out = site
        .lv()
        .args(["--json", "verify", "--if-older-than", "1d"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped"], true, "{v}");
    // The viewer reads the report but cannot start a drill.
    let vic = site.login("vic", VIEWER_PW);
    let page = site.get("/drills", &vic).body;
    assert!(page.contains("<strong>1</strong> drills"), "{page}");
    assert!(
        page.contains("integrity"),
        "the report lists the checks: {page}"
    );
    assert!(!page.contains("action=\"/drill\""));
    let vic_csrf = site.csrf(&vic);
    let a = site.request("POST", "/drill", Some(&vic), &[("csrf", &vic_csrf)], &[]);
    assert_eq!(a.status, 403);
    assert!(site.audit().iter().any(|e| e["user"] == "olga"
        && e["action"] == "Restore drill"
        && e["outcome"] == "passed"));
}

#[test]
fn restore_a_database_to_a_new_file_or_as_an_admin_over_the_live_one() {
    let mut site = Site::new();
    let restores = site.with_restore_folder();
    site.lv().arg("backup").assert().success();
    let id = site.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    // A day of work after the backup.
    let live = site.root.join("books.db");
    let rows = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .unwrap()
    };
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute(
            "INSERT INTO entries (memo, amount) VALUES ('typo', 999)",
            [],
        )
        .unwrap();
    assert_eq!(rows(&live), 3);
    let page_path = format!("/restore?snapshot={id}&source={}", hex(b"books.db"));

    // The operator: a new file in the configured folder, never the live one.
    let olga = site.login("olga", OPERATOR_PW);
    let page = site.get(&page_path, &olga).body;
    assert!(page.contains("Restore to a new file"), "{page}");
    assert!(!page.contains("Replace the live database"), "{page}");
    let csrf = site.csrf(&olga);
    let source = hex(b"books.db");
    let form = |mode: &'static str, extra: Vec<(&'static str, String)>| {
        let mut f: Vec<(&str, String)> = vec![
            ("csrf", csrf.clone()),
            ("snapshot", id.clone()),
            ("source", source.clone()),
            ("mode", mode.to_string()),
        ];
        f.extend(extra);
        f
    };
    let post = |cookie: &str, f: &[(&str, String)]| {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        site.request("POST", "/restore", Some(cookie), &pairs, &[])
    };
    for bad in ["../escape.db", ".hidden.db", "a/b.db", ""] {
        let a = post(&olga, &form("new", vec![("file", bad.to_string())]));
        assert_eq!(a.status, 400, "{bad:?}: {}", a.body);
    }
    assert!(!site.root.join("escape.db").exists());
    // Nothing may be there: not a folder, not a link (either would send
    // the file outside the folder).
    fs::create_dir_all(restores.join("sub")).unwrap();
    std::os::unix::fs::symlink(site.root.join("elsewhere.db"), restores.join("link.db")).unwrap();
    for taken in ["sub", "link.db"] {
        let a = post(&olga, &form("new", vec![("file", taken.to_string())]));
        assert_eq!(a.status, 400, "{taken}: {}", a.body);
    }
    assert!(!site.root.join("elsewhere.db").exists());
    assert!(!restores.join("sub/books.db").exists());
    let a = post(
        &olga,
        &form("new", vec![("file", "books-before.db".into())]),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &olga);
    assert!(done.contains("class=\"note ok\""), "{done}");
    assert_eq!(rows(&restores.join("books-before.db")), 2);
    assert_eq!(rows(&live), 3, "the live database was touched");
    // An existing file is not overwritten.
    let a = post(
        &olga,
        &form("new", vec![("file", "books-before.db".into())]),
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("exists"), "{}", a.body);
    // Over the live database: not for an operator, whatever the form says.
    let a = post(&olga, &form("live", vec![("confirm", "books.db".into())]));
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(rows(&live), 3);

    // The admin, with the typed confirmation.
    let ann = site.login("ann", ADMIN_PW);
    let page = site.get(&page_path, &ann).body;
    assert!(page.contains("Replace the live database"), "{page}");
    let admin_csrf = site.csrf(&ann);
    let admin_form = |confirm: &str| {
        vec![
            ("csrf", admin_csrf.clone()),
            ("snapshot", id.clone()),
            ("source", source.clone()),
            ("mode", "live".to_string()),
            ("confirm", confirm.to_string()),
        ]
    };
    let a = post(&ann, &admin_form("books"));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(rows(&live), 3);
    let a = post(&ann, &admin_form("books.db"));
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &ann);
    assert!(done.contains("safety snapshot"), "{done}");
    assert_eq!(
        rows(&live),
        2,
        "the live database holds the snapshot's books again"
    );
    let snaps = site.snapshots_json();
    assert!(
        snaps.iter().any(|s| s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "pre-restore")),
        "{snaps:?}"
    );
    let audit = site.audit();
    assert!(audit.iter().any(|e| e["user"] == "olga"
        && e["action"] == "restore over the live database"
        && e["outcome"] == "refused"));
    assert!(audit
        .iter()
        .any(|e| e["user"] == "ann" && e["action"] == "Restore database" && e["outcome"] == "ok"));
}

/// A webhook receiver on loopback: answers `status` to each request and
/// hands on each request's body.
fn webhook_receiver(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn an_admin_sends_a_test_alert_and_others_cannot() {
    let mut site = Site::new();
    let (url, inbox) = webhook_receiver(200);
    site.add_config(&format!(
        "\n[[alerts.webhook]]\nurl = {}\n",
        toml_string(&url)
    ));
    let ann = site.login("ann", ADMIN_PW);
    let page = site.get("/activity", &ann).body;
    assert!(page.contains("1 alert channel(s) configured"), "{page}");
    let csrf = site.csrf(&ann);
    let a = site.request("POST", "/alerts/test", Some(&ann), &[("csrf", &csrf)], &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("was sent on 1 channel"), "{}", a.body);
    let got = inbox.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        got.contains("test alert") && got.contains("by ann"),
        "{got}"
    );
    // An operator may not, and the page does not offer it.
    let olga = site.login("olga", OPERATOR_PW);
    assert!(!site
        .get("/activity", &olga)
        .body
        .contains("Send a test alert"));
    let csrf = site.csrf(&olga);
    let a = site.request("POST", "/alerts/test", Some(&olga), &[("csrf", &csrf)], &[]);
    assert_eq!(a.status, 403);
    assert!(inbox.recv_timeout(Duration::from_millis(500)).is_err());

    // A channel that refuses: said on the page, without the URL's secret.
    let (down, _inbox) = webhook_receiver(500);
    let cfg = fs::read_to_string(site.root.join("lv.toml"))
        .unwrap()
        .replace(&url, &down);
    fs::write(site.root.join("lv.toml"), cfg).unwrap();
    site.serve();
    let ann = site.login("ann", ADMIN_PW);
    let csrf = site.csrf(&ann);
    let a = site.request("POST", "/alerts/test", Some(&ann), &[("csrf", &csrf)], &[]);
    assert!(a.body.contains("HTTP 500"), "{}", a.body);
    assert!(!a.body.contains("secret-token"), "{}", a.body);
    assert!(site
        .audit()
        .iter()
        .any(|e| e["action"] == "send a test alert" && e["outcome"] == "ok"));
}

/// A firm database with `clients` clients, added to the site's sources.
fn add_firm(site: &mut Site, clients: u32) -> PathBuf {
    let firm = site.root.join("firm.db");
    ledgervault_samplefirm::generate(
        &firm,
        &ledgervault_samplefirm::FirmOptions {
            clients,
            size: 400_000,
            seed: 7,
        },
    )
    .unwrap();
    // Its entries between clients are links, not ownership: left empty
    // when the entry at the other end is not there.
    site.add_config(&format!(
        "\n[[source]]\npath = {}\n\n[client.links]\n\"journal_entries.intercompany_entry_id\" = \"nullify\"\n",
        toml_string(&firm.display().to_string())
    ));
    firm
}

/// Rows in every table of a SQLite database.
fn all_rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .iter()
        .map(|t| {
            c.query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        })
        .sum()
}

/// Deletes client `id` of a sample firm and everything of it, as a
/// mistaken "delete client" would; checks that no row is left pointing
/// at what is gone.
fn delete_client(db: &Path, id: i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF; BEGIN;
         DELETE FROM payroll_lines WHERE run_id IN (SELECT id FROM payroll_runs WHERE client_id = {id});
         DELETE FROM invoice_lines WHERE invoice_id IN (SELECT id FROM invoices WHERE client_id = {id});
         DELETE FROM journal_lines WHERE entry_id IN (SELECT id FROM journal_entries WHERE client_id = {id});
         UPDATE journal_entries SET intercompany_entry_id = NULL WHERE intercompany_entry_id IN
           (SELECT id FROM journal_entries WHERE client_id = {id});"
    ))
    .unwrap();
    let owned: Vec<String> = c
        .prepare(
            "SELECT m.name FROM sqlite_schema m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND p.name = 'client_id'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in owned {
        c.execute(&format!("DELETE FROM \"{t}\" WHERE client_id = {id}"), [])
            .unwrap();
    }
    c.execute(&format!("DELETE FROM clients WHERE id = {id}"), [])
        .unwrap();
    c.execute_batch("COMMIT").unwrap();
    let dangling: i64 = c
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0, "the client was not deleted whole");
}

#[test]
fn restore_one_client_after_its_dry_run() {
    let mut site = Site::new();
    let firm = add_firm(&mut site, 4);
    site.lv().arg("backup").assert().success();
    let before = all_rows(&firm);
    let label: String = rusqlite::Connection::open(&firm)
        .unwrap()
        .query_row("SELECT name FROM clients WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    delete_client(&firm, 2);
    let deleted = all_rows(&firm);
    assert!(deleted < before);

    // The viewer sees the clients, and may not plan.
    let vic = site.login("vic", VIEWER_PW);
    let page = site.get("/clients", &vic).body;
    assert!(page.contains("firm.db"), "{page}");
    assert!(!page.contains("See the plan"), "{page}");
    let vic_csrf = site.csrf(&vic);
    let plan_form = |csrf: &str, client: &str, mode: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("client", client.to_string()),
            ("snapshot", "latest".to_string()),
            // The firm databases are the sources that are databases:
            // books.db, then firm.db.
            ("into", "1".to_string()),
            ("mode", mode.to_string()),
        ]
    };
    let post = |cookie: &str, path: &str, f: &[(&str, String)]| {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        site.request("POST", path, Some(cookie), &pairs, &[])
    };
    let a = post(&vic, "/clients/plan", &plan_form(&vic_csrf, "2", "new"));
    assert_eq!(a.status, 403, "{}", a.body);

    // The operator: the page lists the clients left and offers no replace.
    let olga = site.login("olga", OPERATOR_PW);
    let page = site.get("/clients", &olga).body;
    assert!(page.contains("See the plan"), "{page}");
    assert!(!page.contains("value=\"replace\""), "{page}");
    assert!(!page.contains(&html_escaped(&label)), "{page}");
    let csrf = site.csrf(&olga);
    let a = post(&olga, "/clients/plan", &plan_form(&csrf, "2", "replace"));
    assert_eq!(a.status, 403, "an operator replaced a client: {}", a.body);
    assert!(page.contains("<option value=\"1\">"), "{page}");
    for (into, client) in [("2", "2"), ("../x", "2"), ("1", ""), ("1", "a\nb")] {
        let mut f = plan_form(&csrf, client, "new");
        f[3].1 = into.to_string();
        let a = post(&olga, "/clients/plan", &f);
        assert_eq!(a.status, 400, "{into:?} {client:?}: {}", a.body);
    }
    // The plan: nothing changes.
    let a = post(&olga, "/clients/plan", &plan_form(&csrf, "2", "new"));
    assert_eq!(a.status, 303, "{}", a.body);
    let task = a.location.unwrap();
    let planned = site.finished(&task, &olga);
    // The task's live feed counted the scratch copy's bytes and carries
    // its steps.
    let feed = site.get(&format!("{task}/events"), &olga).body;
    let last: serde_json::Value = feed
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .unwrap_or_else(|| panic!("no event: {feed}"));
    assert!(last["bytes_read"].as_u64().unwrap() > 0, "{last}");
    assert!(
        last["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("scratch")),
        "{last}"
    );
    // And the import's steps, each as it ended.
    assert!(
        last["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with("verify rows and keys: ")),
        "{last}"
    );
    assert!(planned.contains("class=\"note ok\""), "{planned}");
    assert!(planned.contains("Nothing was changed"), "{planned}");
    assert!(planned.contains("journal_lines:"), "{planned}");
    assert_eq!(all_rows(&firm), deleted, "a dry run changed the firm");
    let plan_id = field(&planned, "name=\"plan\" value=\"");
    // Nobody else may confirm it, not even an admin.
    let ann = site.login("ann", ADMIN_PW);
    assert!(!site.get(&task, &ann).body.contains("name=\"plan\""));
    let ann_csrf = site.csrf(&ann);
    let confirm = |cookie: &str, csrf: &str, plan: &str| {
        post(
            cookie,
            "/clients/restore",
            &[("csrf", csrf.to_string()), ("plan", plan.to_string())],
        )
    };
    let a = confirm(&ann, &ann_csrf, &plan_id);
    assert_eq!(a.status, 400, "{}", a.body);
    let a = confirm(&olga, &csrf, "999999");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(all_rows(&firm), deleted);
    // Confirmed: the client's rows are all back, and only once.
    let a = confirm(&olga, &csrf, &plan_id);
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &olga);
    assert!(done.contains("Restored client"), "{done}");
    assert!(done.contains("safety snapshot"), "{done}");
    assert_eq!(
        all_rows(&firm),
        before,
        "the client's rows are not all back"
    );
    assert!(site
        .get("/clients", &olga)
        .body
        .contains(&html_escaped(&label)));
    let snaps = site.snapshots_json();
    assert!(
        snaps.iter().any(|s| s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "pre-client-restore")),
        "{snaps:?}"
    );
    // A plan is used once.
    let a = confirm(&olga, &csrf, &plan_id);
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(all_rows(&firm), before);
    // Planning it again: the client is there now, so "as it was" is refused.
    let a = post(&olga, "/clients/plan", &plan_form(&csrf, "2", "new"));
    let refused = site.finished(&a.location.unwrap(), &olga);
    assert!(refused.contains("class=\"note error\""), "{refused}");
    assert!(!refused.contains("name=\"plan\""), "{refused}");
    let audit = site.audit();
    assert!(audit
        .iter()
        .any(|e| e["user"] == "olga" && e["action"] == "Restore client" && e["outcome"] == "ok"));
    assert!(audit
        .iter()
        .any(|e| e["user"] == "vic" && e["outcome"] == "refused"));
}

fn html_escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[test]
fn the_daemon_s_runs_open_with_their_log() {
    let site = Site::new();
    // One pass of the daemon: the backup runs, the drill after it; forget
    // and prune are skipped (no maintenance key), saying why.
    site.lv().args(["daemon", "--once"]).assert().success();
    let olga = site.login("olga", OPERATOR_PW);
    let activity = site.get("/activity", &olga).body;
    let mut links: Vec<String> = activity
        .match_indices("href=\"/runs/")
        .map(|(at, m)| {
            let rest = &activity[at + m.len()..];
            format!("/runs/{}", rest.split('"').next().unwrap())
        })
        .collect();
    links.sort();
    assert!(links.len() >= 3, "{activity}");
    let pages: Vec<String> = links.iter().map(|l| site.get(l, &olga).body).collect();
    let backup = pages
        .iter()
        .find(|p| p.contains("backup · attempt 1"))
        .unwrap_or_else(|| panic!("no backup run: {pages:?}"));
    // Its log holds the job's own result, escaped.
    assert!(backup.contains("<pre class=\"log\">"), "{backup}");
    assert!(backup.contains("snapshot_id"), "{backup}");
    assert!(backup.contains("&quot;"), "{backup}");
    let prune = pages
        .iter()
        .find(|p| p.contains("prune · attempt 1"))
        .unwrap_or_else(|| panic!("no prune run: {pages:?}"));
    assert!(prune.contains("need a person"), "{prune}");
    for bad in [
        "/runs/999999",
        "/runs/x",
        "/runs/-1",
        "/runs/99999999999999999999",
    ] {
        assert_eq!(site.get(bad, &olga).status, 404, "{bad}");
    }
    // A log can hold what a failed drill found in the books: a viewer
    // sees the runs, not their logs.
    let vic = site.login("vic", VIEWER_PW);
    assert!(!site.get("/activity", &vic).body.contains("href=\"/runs/"));
    assert_eq!(site.get(&links[0], &vic).status, 403);
    // Not without a session.
    let a = site.request("GET", &links[0], None, &[], &[]);
    assert_eq!(a.status, 303);
}

#[test]
fn an_admin_changes_the_settings_and_the_file_keeps_its_comments() {
    let mut site = Site::new();
    site.add_config(
        "\n# When the daemon works.\n[schedule]\n# After the office closes.\nbackup = \"daily at 02:00\"\n\n[[alerts.webhook]]\nurl = \"https://hooks.example.com/T0/B0/SECRETTOKEN\"\n",
    );
    let cfg_path = site.root.join("lv.toml");
    let version_of = |body: &str| field(body, "name=\"version\" value=\"");

    // The viewer reads, and may not change.
    let vic = site.login("vic", VIEWER_PW);
    let page = site.get("/settings", &vic).body;
    assert!(page.contains("daily at 02:00"), "{page}");
    assert!(page.contains(" disabled"), "{page}");
    assert!(!page.contains("Save the settings"), "{page}");
    assert!(!page.contains("SECRETTOKEN"), "{page}");
    let form = |csrf: &str, version: &str, extra: &[(&str, &str)]| {
        let mut f: Vec<(String, String)> = vec![
            ("csrf".into(), csrf.into()),
            ("version".into(), version.into()),
        ];
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let post = |cookie: &str, f: &[(String, String)]| {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        site.request("POST", "/settings", Some(cookie), &pairs, &[])
    };
    // Only an admin's page carries the file's version.
    assert!(!page.contains("name=\"version\""), "{page}");
    let vic_csrf = site.csrf(&vic);
    let a = post(&vic, &form(&vic_csrf, "0", &[("keep_daily", "1")]));
    assert_eq!(a.status, 403, "{}", a.body);
    let olga = site.login("olga", OPERATOR_PW);
    let olga_csrf = site.csrf(&olga);
    let a = post(&olga, &form(&olga_csrf, "0", &[("keep_daily", "1")]));
    assert_eq!(a.status, 403, "{}", a.body);
    let original = fs::read_to_string(&cfg_path).unwrap();

    // The admin: bad values are refused and the file is left as it was.
    let ann = site.login("ann", ADMIN_PW);
    let csrf = site.csrf(&ann);
    let page = site.get("/settings", &ann).body;
    assert!(page.contains("Save the settings"), "{page}");
    let v = version_of(&page);
    for bad in [
        vec![("schedule_backup", "when pigs fly")],
        vec![(
            "schedule_backup",
            "daily\n[repository]\npath = \"/tmp/evil\"",
        )],
        vec![("keep_daily", "-1")],
        vec![("keep_within", "forever")],
        vec![("new_webhook_url", "ftp://files.example.com/x")],
        vec![
            ("new_webhook_url", "https://x.example.com/"),
            ("new_webhook_format", "pigeon"),
        ],
    ] {
        let a = post(&ann, &form(&csrf, &v, &bad));
        assert_eq!(a.status, 400, "{bad:?}: {}", a.body);
        assert_eq!(fs::read_to_string(&cfg_path).unwrap(), original, "{bad:?}");
    }
    // A good change: written with the comments kept, and shown.
    let a = post(
        &ann,
        &form(
            &csrf,
            &v,
            &[
                ("schedule_backup", "daily at 22:30"),
                ("keep_daily", "14"),
                ("keep_monthly", "12"),
                ("no_backup_within", "30h"),
                ("webhook_remove_0", "1"),
                (
                    "new_webhook_url",
                    "https://chat.example.com/hooks/NEWSECRET",
                ),
                ("new_webhook_format", "slack"),
            ],
        ),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location.as_deref(), Some("/settings?saved=1"));
    let text = fs::read_to_string(&cfg_path).unwrap();
    for kept in [
        "# When the daemon works.",
        "# After the office closes.",
        "backup = \"daily at 22:30\"",
        "keep_daily = 14",
        "keep_monthly = 12",
        "no_backup_within = \"30h\"",
        "NEWSECRET",
    ] {
        assert!(text.contains(kept), "{kept:?} not in\n{text}");
    }
    assert!(!text.contains("SECRETTOKEN"), "{text}");
    site.lv().args(["config", "check"]).assert().success();
    let page = site.get("/settings?saved=1", &ann).body;
    assert!(page.contains("Saved to the config file"), "{page}");
    assert!(page.contains("daily at 22:30"), "{page}");
    assert!(!page.contains("NEWSECRET"), "{page}");
    // The page it was made from is stale now.
    let a = post(&ann, &form(&csrf, &v, &[("keep_daily", "7")]));
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("changed since"), "{}", a.body);
    assert!(fs::read_to_string(&cfg_path)
        .unwrap()
        .contains("keep_daily = 14"));
    // A change made in an editor shows on the next page.
    let mut edited = fs::read_to_string(&cfg_path).unwrap();
    edited = edited.replace("keep_daily = 14", "keep_daily = 21");
    fs::write(&cfg_path, edited).unwrap();
    assert!(site.get("/settings", &vic).body.contains("value=\"21\""));
    let audit = site.audit();
    assert!(audit
        .iter()
        .any(|e| e["user"] == "ann" && e["action"] == "change settings" && e["outcome"] == "ok"));
    assert!(audit.iter().any(|e| e["user"] == "vic"
        && e["action"] == "change settings"
        && e["outcome"] == "refused"));
    let log = fs::read_to_string(site.root.join("lv.audit.log")).unwrap();
    assert!(
        !log.contains("SECRET"),
        "a webhook's secret is in the audit log"
    );
}

#[test]
fn a_postgres_database_restores_to_a_new_database_or_as_an_admin_over_the_live_one() {
    let pg = ledgervault_testkit::pg::PgServer::start();
    pg.createdb("firm");
    pg.psql(
        "firm",
        "CREATE TABLE entries (id serial PRIMARY KEY, memo text, amount int);
         INSERT INTO entries (memo, amount) VALUES ('opening', 100), ('opening', -100);",
    );
    let mut site = Site::new();
    // The login is in the config file's address only: the console finds
    // it there (snapshots keep no password).
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/firm",
        pg.user, pg.password, pg.port
    );
    site.add_config(&format!("\n[[source]]\npath = {}\n", toml_string(&url)));
    site.lv().arg("backup").assert().success();
    let id = site.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    pg.psql(
        "firm",
        "INSERT INTO entries (memo, amount) VALUES ('typo', 999)",
    );
    let count = |db: &str| pg.psql(db, "SELECT count(*) FROM entries");
    assert_eq!(count("firm"), "3");

    let olga = site.login("olga", OPERATOR_PW);
    let browse = site.get(&format!("/snapshots/{id}"), &olga).body;
    let source = hex(b"firm.sql");
    assert!(
        browse.contains(&format!("source={source}\">Restore…")),
        "{browse}"
    );
    let page_path = format!("/restore?snapshot={id}&source={source}");
    let page = site.get(&page_path, &olga).body;
    assert!(page.contains("Restore to a new database"), "{page}");
    assert!(!page.contains("Replace the live database"), "{page}");
    assert!(!page.contains(&pg.password), "a password on the page");
    let csrf = site.csrf(&olga);
    let post = |cookie: &str, csrf: &str, f: &[(&str, &str)]| {
        let mut pairs = vec![
            ("csrf", csrf),
            ("snapshot", id.as_str()),
            ("source", source.as_str()),
        ];
        pairs.extend_from_slice(f);
        site.request("POST", "/restore", Some(cookie), &pairs, &[])
    };
    for bad in [
        "../x",
        "a b",
        "firm",
        "FIRM",
        "",
        "1st",
        "x;DROP DATABASE firm",
    ] {
        let a = post(&olga, &csrf, &[("mode", "new"), ("database", bad)]);
        assert_eq!(a.status, 400, "{bad:?}: {}", a.body);
    }
    let a = post(
        &olga,
        &csrf,
        &[("mode", "new"), ("database", "firm_before")],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &olga);
    assert!(done.contains("class=\"note ok\""), "{done}");
    assert_eq!(count("firm_before"), "2");
    assert_eq!(count("firm"), "3", "the live database was touched");
    // Never over a database that exists.
    let a = post(
        &olga,
        &csrf,
        &[("mode", "new"), ("database", "firm_before")],
    );
    let refused = site.finished(&a.location.unwrap(), &olga);
    assert!(refused.contains("class=\"note error\""), "{refused}");
    assert!(refused.contains("exists"), "{refused}");
    // Over the live one: not an operator's, whatever the form says.
    let a = post(&olga, &csrf, &[("mode", "live"), ("confirm", "firm")]);
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(count("firm"), "3");

    let ann = site.login("ann", ADMIN_PW);
    let page = site.get(&page_path, &ann).body;
    assert!(page.contains("Replace the live database"), "{page}");
    let ann_csrf = site.csrf(&ann);
    let a = post(
        &ann,
        &ann_csrf,
        &[("mode", "live"), ("confirm", "firm_before")],
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let a = post(&ann, &ann_csrf, &[("mode", "live"), ("confirm", "firm")]);
    assert_eq!(a.status, 303, "{}", a.body);
    let done = site.finished(&a.location.unwrap(), &ann);
    assert!(done.contains("safety snapshot"), "{done}");
    assert_eq!(
        count("firm"),
        "2",
        "the live database holds the snapshot's rows"
    );
    let snaps = site.snapshots_json();
    assert!(
        snaps.iter().any(|s| s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "pre-restore")),
        "{snaps:?}"
    );
    let log = fs::read_to_string(site.root.join("lv.audit.log")).unwrap();
    assert!(!log.contains(&pg.password), "a password in the audit log");
    // A database the config no longer names is not restored from here,
    // whatever the snapshot says.
    let cfg = site.root.join("lv.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    let without = text.replace(&format!("[[source]]\npath = {}\n", toml_string(&url)), "");
    assert_ne!(text, without);
    fs::write(&cfg, without).unwrap();
    let a = post(
        &olga,
        &csrf,
        &[("mode", "new"), ("database", "firm_elsewhere")],
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("not among the config"), "{}", a.body);
    assert!(!pg
        .psql(
            "postgres",
            "SELECT string_agg(datname, ' ') FROM pg_database"
        )
        .contains("firm_elsewhere"));
}
