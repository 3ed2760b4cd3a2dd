//! Where a database is and how to log in: `postgres://` URLs, completed from
//! the places libpq looks (PG* variables, the service file, `.pgpass`).
//!
//! ledgervault's own queries go through the `postgres` crate, and the dump
//! and restore tools through libpq; both get the same resolved host, port,
//! user and database, and the password only through the environment, never
//! on a command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Error, Result};

/// Whether `s` names a PostgreSQL database rather than a path.
pub fn is_pg_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A resolved PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// A host name, an address, or a socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    password: Option<String>,
    /// Other libpq parameters given in the URL (sslmode, application_name).
    params: BTreeMap<String, String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("params", &self.params)
            .finish()
    }
}

impl std::fmt::Display for PgTarget {
    /// The URL without its password: safe for logs and snapshots.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.starts_with('/') {
            self.host.replace('/', "%2F")
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgres://{}@{host}:{}/{}",
            encode(&self.user),
            self.port,
            encode(&self.dbname)
        )
    }
}

/// Removes the password and the query values from anything that looks like
/// a connection URL, for messages that echo what the user typed. The URL is
/// taken apart by the `url` crate; one it cannot parse (a `/` in the
/// password, several hosts) shows as `postgres://***`.
pub fn redact(url: &str) -> String {
    if !is_pg_url(url) {
        return url.to_string();
    }
    ledgervault_repo::redact_url(url, false)
}

/// Service and password files: far beyond any real one, far below trouble.
const SETTINGS_FILE_LIMIT: u64 = 1 << 20;

/// Reads a libpq settings file, or `None` when it is missing, unreadable
/// or larger than [`SETTINGS_FILE_LIMIT`].
fn read_settings_file(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(SETTINGS_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= SETTINGS_FILE_LIMIT).then_some(text)
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Usage(format!("bad %-escape in the URL near {:?}", &s[i..]))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Usage("the URL is not valid UTF-8".into()))
}

/// Where the environment says to look; a seam for tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    pub home: Option<PathBuf>,
    pub os_user: String,
}

impl Env {
    /// The process environment.
    pub fn current() -> Env {
        Env {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("PG"))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            os_user: ledgervault_repo::user_name(),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
}

impl PgTarget {
    /// Parses a `postgres://` URL and completes it the way libpq would.
    pub fn parse(url: &str) -> Result<PgTarget> {
        PgTarget::parse_with(url, &Env::current())
    }

    pub fn parse_with(url: &str, env: &Env) -> Result<PgTarget> {
        let shown = redact(url);
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                Error::Usage(format!("{shown}: a PostgreSQL URL starts with postgres://"))
            })?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        let hostport = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (u, p) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                if !u.is_empty() {
                    given.insert("user".into(), decode(u)?);
                }
                if let Some(p) = p {
                    given.insert("password".into(), decode(p)?);
                }
                hp
            }
            None => authority,
        };
        if !hostport.is_empty() {
            let (h, p) = if let Some(r) = hostport.strip_prefix('[') {
                let (h, after) = r
                    .split_once(']')
                    .ok_or_else(|| Error::Usage(format!("{shown}: unclosed [ in the host")))?;
                (h.to_string(), after.strip_prefix(':'))
            } else {
                match hostport.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (hostport.to_string(), None),
                }
            };
            if !h.is_empty() {
                given.insert("host".into(), decode(&h)?);
            }
            if let Some(p) = p.filter(|p| !p.is_empty()) {
                given.insert("port".into(), p.to_string());
            }
        }
        if !path.is_empty() {
            given.insert("dbname".into(), decode(path)?);
        }
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("{shown}: parameter {kv:?} has no value")))?;
            given.insert(decode(k)?, decode(v)?);
        }

        // The service file fills what the URL leaves out; PG* variables
        // fill what both leave out.
        let service = given
            .remove("service")
            .or_else(|| env.var("PGSERVICE").map(String::from));
        if let Some(name) = service {
            for (k, v) in read_service(&name, env)? {
                given.entry(k).or_insert(v);
            }
        }
        for (k, var) in [
            ("host", "PGHOST"),
            ("port", "PGPORT"),
            ("user", "PGUSER"),
            ("dbname", "PGDATABASE"),
            ("password", "PGPASSWORD"),
            ("sslmode", "PGSSLMODE"),
            ("connect_timeout", "PGCONNECT_TIMEOUT"),
        ] {
            if let Some(v) = env.var(var) {
                given.entry(k.into()).or_insert_with(|| v.to_string());
            }
        }
        let port = match given.remove("port") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| Error::Usage(format!("{shown}: port {p:?} is not a number")))?,
            None => 5432,
        };
        // Without a host, libpq uses the local socket; so do we when the
        // server's socket is in one of the usual folders.
        let host = given.remove("host").unwrap_or_else(|| {
            ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists())
                .unwrap_or("localhost")
                .to_string()
        });
        let user = given.remove("user").unwrap_or_else(|| env.os_user.clone());
        let dbname = given.remove("dbname").unwrap_or_else(|| user.clone());
        let mut password = given.remove("password");
        if password.is_none() {
            password = pgpass_lookup(env, &host, port, &dbname, &user);
        }
        for k in given.keys() {
            if !["sslmode", "application_name", "connect_timeout", "options"].contains(&k.as_str())
            {
                return Err(Error::Usage(format!(
                    "{shown}: unknown connection parameter {k:?}"
                )));
            }
        }
        Ok(PgTarget {
            host,
            port,
            user,
            dbname,
            password,
            params: given,
        })
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgTarget {
        PgTarget {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connects for ledgervault's own queries.
    pub fn connect(&self) -> Result<postgres::Client> {
        let mut c = postgres::Config::new();
        if self.host.starts_with('/') {
            c.host_path(&self.host);
        } else {
            c.host(&self.host);
        }
        c.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("ledgervault")
            .connect_timeout(Duration::from_secs(
                self.params
                    .get("connect_timeout")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10),
            ));
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(o) = self.params.get("options") {
            c.options(o);
        }
        match self.params.get("sslmode").map(|s| s.as_str()) {
            None | Some("disable") | Some("allow") | Some("prefer") => {}
            Some(mode) => {
                return Err(Error::Usage(format!(
                    "sslmode={mode}: this ledgervault connects without TLS; use a local or tunnelled connection (sslmode=disable or prefer)"
                )))
            }
        }
        let mut client = c
            .connect(postgres::NoTls)
            .map_err(|e| self.connect_error(e))?;
        client
            .batch_execute(
                "SET standard_conforming_strings = on; SET client_min_messages = warning",
            )
            .map_err(|e| self.query_error(e))?;
        Ok(client)
    }

    /// A libpq tool (`pg_dump`, `psql`) aimed at this database: the
    /// connection string goes on the command line, the password through the
    /// environment.
    pub fn command(&self, tool: &Path) -> Command {
        let mut cmd = Command::new(tool);
        for var in [
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGPASSFILE",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd
    }

    /// The libpq connection string (no password).
    pub fn conninfo(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={} application_name=ledgervault",
            q(&self.host),
            self.port,
            q(&self.user),
            q(&self.dbname)
        );
        for (k, v) in &self.params {
            if k != "application_name" {
                s.push_str(&format!(" {k}={}", q(v)));
            }
        }
        s
    }

    /// Turns a connection failure into one line a person can act on.
    pub fn connect_error(&self, e: postgres::Error) -> Error {
        let server = self.server();
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            return Error::Connect(match code {
                "28P01" | "28000" => format!(
                    "PostgreSQL at {server} refused user {:?}: {} (check the password in PGPASSWORD, ~/.pgpass or the service file)",
                    self.user,
                    db.message()
                ),
                "3D000" => format!(
                    "database {:?} does not exist on the PostgreSQL server at {server}",
                    self.dbname
                ),
                _ => format!("PostgreSQL at {server}: {}", db.message()),
            });
        }
        let msg = e.to_string();
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        let lower = format!("{msg} {}", source.as_deref().unwrap_or("")).to_lowercase();
        if lower.contains("password missing") {
            return Error::Connect(format!(
                "PostgreSQL at {server} asks for a password for user {:?} and none was given (set PGPASSWORD, add it to ~/.pgpass, or use a service file)",
                self.user
            ));
        }
        let why = source.unwrap_or(msg);
        Error::Connect(format!("cannot reach PostgreSQL at {server}: {why}"))
    }

    /// A failed query, as one line.
    pub fn query_error(&self, e: postgres::Error) -> Error {
        Error::Query(one_line(&e))
    }
}

/// A postgres error as one line: the server's message when there is one.
pub fn one_line(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// Reads one service's settings from the first service file that has it.
fn read_service(name: &str, env: &Env) -> Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(f) = env.var("PGSERVICEFILE") {
        files.push(f.into());
    } else if let Some(h) = &env.home {
        files.push(h.join(".pg_service.conf"));
    }
    if let Some(d) = env.var("PGSYSCONFDIR") {
        files.push(Path::new(d).join("pg_service.conf"));
    } else {
        files.push("/etc/postgresql-common/pg_service.conf".into());
    }
    for f in &files {
        let Some(text) = read_settings_file(f) else {
            continue;
        };
        let mut in_service = false;
        let mut found = false;
        let mut out = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_service = section == name;
                found |= in_service;
                continue;
            }
            if in_service {
                if let Some((k, v)) = line.split_once('=') {
                    out.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        if found {
            return Ok(out);
        }
    }
    Err(Error::Usage(format!(
        "service {name:?} is not defined in {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

/// The password file entry for this connection, as libpq matches it.
fn pgpass_lookup(env: &Env, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let file = match env.var("PGPASSFILE") {
        Some(f) => PathBuf::from(f),
        None => env.home.as_ref()?.join(".pgpass"),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        // libpq ignores a password file others can read; so do we.
        let md = std::fs::metadata(&file).ok()?;
        if md.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = read_settings_file(&file)?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        if m(&fields[0], host) && m(&fields[1], &port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            vars: BTreeMap::new(),
            home: None,
            os_user: "clerk".into(),
        }
    }

    #[test]
    fn parses_urls() {
        let t = PgTarget::parse_with(
            "postgres://ann:s%40cret@db.example:6543/firm%20books?sslmode=disable",
            &env(),
        )
        .unwrap();
        assert_eq!(t.host, "db.example");
        assert_eq!(t.port, 6543);
        assert_eq!(t.user, "ann");
        assert_eq!(t.dbname, "firm books");
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.to_string(), "postgres://ann@db.example:6543/firm%20books");
        assert!(!format!("{t:?}").contains("s@cret"));
        let s = PgTarget::parse_with("postgresql://%2Ftmp%2Fsock/ledger", &env()).unwrap();
        assert_eq!(s.host, "/tmp/sock");
        assert_eq!(s.user, "clerk");
        assert_eq!(s.dbname, "ledger");
        let v6 = PgTarget::parse_with("postgres://u@[::1]:5/d", &env()).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5));
        assert!(PgTarget::parse_with("postgres://h:notaport/d", &env()).is_err());
        assert!(PgTarget::parse_with("postgres://h/d?bogus=1", &env()).is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://ann:hunter2@h:5/db?password=x&sslmode=disable"),
            "postgres://ann:***@h:5/db?password=***&sslmode=***"
        );
        // A `/` in the password: no parser can tell where it ends.
        assert_eq!(redact("postgres://ann:pa/ss@h/db"), "postgres://***");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("/plain/path"), "/plain/path");
    }

    #[test]
    fn env_service_and_pgpass() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".pg_service.conf"),
            "# firm\n[books]\nhost=10.0.0.9\nport=5544\ndbname=ledger\nuser=acct\n",
        )
        .unwrap();
        let pass = dir.path().join(".pgpass");
        std::fs::write(&pass, "10.0.0.9:5544:ledger:acct:pa\\:ss\n*:*:*:*:other\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut e = env();
        e.home = Some(dir.path().to_path_buf());
        let t = PgTarget::parse_with("postgres://?service=books", &e).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("10.0.0.9", 5544, "acct")
        );
        assert_eq!(t.password.as_deref(), Some("pa:ss"));
        // PGPASSWORD wins over the file; the URL wins over PG* variables.
        e.vars.insert("PGPASSWORD".into(), "fromenv".into());
        e.vars.insert("PGPORT".into(), "7000".into());
        let t = PgTarget::parse_with("postgres://h:7001/x", &e).unwrap();
        assert_eq!((t.port, t.password.as_deref()), (7001, Some("fromenv")));
        // A password file others can read is ignored, as libpq does.
        e.vars.clear();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = PgTarget::parse_with("postgres://?service=books", &e).unwrap();
        assert_eq!(t.password, None);
        assert!(PgTarget::parse_with("postgres://?service=nope", &e).is_err());
    }
}
