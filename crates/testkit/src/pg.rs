//! A real PostgreSQL server for tests, started by the test itself:
//! `initdb` and `pg_ctl` in a temporary folder, on a free port on the
//! loopback. Run as root (as in CI), the server runs as the unprivileged
//! user `nobody`, since PostgreSQL refuses to run as root.
//!
//! Logins over TCP need a password (scram-sha-256), so tests exercise the
//! same credential paths as a user's server. The server is stopped when the
//! value is dropped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running test server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    ids: Option<(u32, u32)>,
    pub port: u16,
    pub user: String,
    pub password: String,
}

/// The folder holding the newest installed server binaries.
pub fn server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    // Debian's versioned folders first, newest first; then PATH.
    dirs.sort_by_key(|d| {
        std::cmp::Reverse(
            d.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// uid and gid of `nobody`, when running as root.
fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "nobody")
        .map(|f| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        .or(Some((65534, 65534)))
}

impl PgServer {
    /// Starts a fresh server. Panics with what is missing when PostgreSQL
    /// is not installed (scripts/test.sh installs it).
    pub fn start() -> PgServer {
        let bin = server_bin().expect(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/test.sh, which installs them",
        );
        let dir = tempfile::Builder::new()
            .prefix("lv-pg-")
            .tempdir()
            .expect("temp dir");
        let ids = unprivileged();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown test dir");
        }
        let password = format!("pw-{}", std::process::id());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).unwrap();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let user = "lvtest".to_string();
        let mut s = PgServer {
            port: 0,
            dir,
            bin,
            ids,
            user,
            password,
        };
        let data = s.dir.path().join("data");
        s.run_as_server(
            Command::new(s.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "lvtest",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["--no-locale", "-E", "UTF8", "--no-sync"]),
            "initdb",
        );
        // A free port: the kernel picks one, the listener lets it go, the
        // server takes it. Retried if another process got there first.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=64MB",
                s.dir.path().display()
            );
            let out = s.server_cmd(
                Command::new(s.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(s.dir.path().join("log"))
                    .args(["-w", "-t", "60", "-o", &opts, "start"]),
            );
            if out.status.success() {
                s.port = port;
                return s;
            }
        }
        let log = std::fs::read_to_string(s.dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    fn server_cmd(&self, cmd: &mut Command) -> Output {
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(self.dir.path())
            .output()
            .expect("run a PostgreSQL server program")
    }

    fn run_as_server(&self, cmd: &mut Command, what: &str) {
        let out = self.server_cmd(cmd);
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A URL for database `db` (without the password; tests pass it in
    /// `PGPASSWORD`, as a user would).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", self.user, self.port)
    }

    /// Environment for client programs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("PGPASSWORD", self.password.clone())]
    }

    /// A client program from the server's own bin folder (`psql`, `pgbench`).
    pub fn tool(&self, name: &str) -> PathBuf {
        let own = self.bin.join(name);
        if own.is_file() {
            own
        } else {
            PathBuf::from(name)
        }
    }

    /// A client program set up to reach database `db`.
    pub fn client(&self, name: &str, db: &str) -> Command {
        let mut c = Command::new(self.tool(name));
        c.env("PGPASSWORD", &self.password)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", db);
        c
    }

    /// Runs SQL with psql; returns its unaligned output. Panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql", db)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates an empty database.
    pub fn createdb(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.dir.path().join("data");
        let _ = self.server_cmd(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]),
        );
    }
}
