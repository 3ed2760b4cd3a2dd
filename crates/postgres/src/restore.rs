//! Building a database from a dump, never half-way.
//!
//! The dump goes into a new temporary database on the target server, in one
//! transaction, through `psql`. Only when that succeeded is the temporary
//! database renamed to the target's name; over an existing database both
//! renames happen in one transaction, after its connections are closed, and
//! the old database is dropped afterwards. A failure at any step before the
//! swap drops the temporary database and leaves the target as it was.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;

use crate::conn::{one_line, PgTarget};
use crate::dump::collect_stderr;
use crate::{ident, literal, server_major, tools, Error, Result};

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace an existing database (the caller takes a safety snapshot).
    pub force: bool,
    /// Leave out ownership and privileges (`ALTER ... OWNER TO`, `GRANT`,
    /// `REVOKE`), for a server without the original roles.
    pub no_owner: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub database: String,
    pub server: String,
    /// An existing database was replaced.
    pub replaced: bool,
    /// Connections to the old database that were closed for the swap.
    pub closed_connections: u64,
    pub bytes: u64,
    pub duration_secs: f64,
}

/// Connects to the server's maintenance database.
pub fn admin(target: &PgTarget) -> Result<postgres::Client> {
    match target.with_dbname("postgres").connect() {
        Ok(c) => Ok(c),
        Err(Error::Connect(m)) if m.contains("does not exist") => {
            target.with_dbname("template1").connect()
        }
        Err(e) => Err(e),
    }
}

/// Whether the target database exists.
pub fn database_exists(target: &PgTarget) -> Result<bool> {
    let mut a = admin(target)?;
    exists(&mut a, &target.dbname, target)
}

fn exists(a: &mut postgres::Client, name: &str, target: &PgTarget) -> Result<bool> {
    Ok(!a
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .map_err(|e| target.query_error(e))?
        .is_empty())
}

/// A database name for work beside `base`, at most 63 bytes.
pub fn work_name(base: &str, what: &str) -> String {
    let suffix = format!("_lv{what}_{}", std::process::id());
    let mut b = base.to_string();
    while b.len() + suffix.len() > 63 {
        b.pop();
    }
    format!("{b}{suffix}")
}

/// Creates an empty database like the one described by `settings`; falls
/// back to the server's defaults when its locale is not installed there.
pub fn create_database(
    a: &mut postgres::Client,
    name: &str,
    settings: &BTreeMap<String, String>,
    target: &PgTarget,
) -> Result<()> {
    let mut tries: Vec<String> = Vec::new();
    let base = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
    if let Some(enc) = settings.get("encoding") {
        if let (Some(c), Some(t)) = (settings.get("collate"), settings.get("ctype")) {
            tries.push(format!(
                "{base} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                literal(enc),
                literal(c),
                literal(t)
            ));
        }
        tries.push(format!("{base} ENCODING {}", literal(enc)));
    }
    tries.push(base);
    let mut last = None;
    for sql in tries {
        match a.batch_execute(&sql) {
            Ok(()) => return Ok(()),
            Err(e) => {
                // Permission errors will not go away with other options.
                if e.as_db_error().map(|d| d.code().code()) == Some("42501") {
                    return Err(Error::Query(format!(
                        "cannot create a database on {}: {} (the user needs CREATEDB)",
                        target.server(),
                        one_line(&e)
                    )));
                }
                last = Some(e);
            }
        }
    }
    Err(target.query_error(last.expect("at least one try")))
}

/// Drops a database, closing its connections (`WITH (FORCE)`, PostgreSQL 13
/// and later; older servers get a plain drop).
pub fn drop_database(a: &mut postgres::Client, name: &str, target: &PgTarget) -> Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {}", ident(name));
    match a.batch_execute(&format!("{sql} WITH (FORCE)")) {
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("42601") => {
            a.batch_execute(&sql).map_err(|e| target.query_error(e))
        }
        r => r.map_err(|e| target.query_error(e)),
    }
}

/// Runs `work` on a database that lives only for it: created on `server`
/// like `settings` describe (named after `what` and this process), handed to
/// `work` with the server's major version, and dropped afterwards, whatever
/// happened.
pub fn with_scratch_database<T, E: From<Error>>(
    server: &PgTarget,
    what: &str,
    settings: &BTreeMap<String, String>,
    work: impl FnOnce(&PgTarget, u32) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let mut a = admin(server)?;
    let major = server_major(&mut a)?;
    let scratch = work_name("ledgervault", what);
    drop_database(&mut a, &scratch, server)?;
    create_database(&mut a, &scratch, settings, server)?;
    let result = work(&server.with_dbname(&scratch), major);
    let dropped = drop_database(&mut a, &scratch, server);
    let value = result?;
    dropped?;
    Ok(value)
}

/// Feeds a plain dump into `psql` against `into`, in one transaction.
pub fn run_psql(into: &PgTarget, major: u32, dump: &mut dyn Read, no_owner: bool) -> Result<u64> {
    let tool = tools::find("psql", major)?;
    let mut child = into
        .command(&tool.path)
        .args([
            "-X",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
        ])
        .arg("--dbname")
        .arg(into.conninfo())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Tool(format!("cannot run {}: {e}", tool.path.display())))?;
    let stderr = child.stderr.take().map(collect_stderr);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let fed = if no_owner {
        copy_without_owners(dump, &mut stdin)
    } else {
        std::io::copy(dump, &mut stdin)
    };
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| Error::Tool(format!("psql: {e}")))?;
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    // A dump that could not be read to its end (damaged repository data) is
    // the cause whatever psql made of the cut-off input; a broken pipe only
    // means psql stopped reading, and its own error says why.
    if let Err(e) = &fed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::Damaged(format!(
                "reading the dump from the repository failed, nothing was restored: {e}"
            )));
        }
    }
    if !status.success() {
        let mut msg = tools::first_error(&err);
        if msg.contains("role") && msg.contains("does not exist") {
            msg.push_str(
                " (restore the roles with --globals, or leave ownership out with --no-owner)",
            );
        }
        return Err(Error::Tool(format!("the restore failed: {msg}")));
    }
    fed.map_err(|e| Error::Tool(format!("psql stopped reading the dump: {e}")))
}

/// Copies a plain dump, leaving out ownership and privilege statements
/// (outside `COPY` data only).
fn copy_without_owners(dump: &mut dyn Read, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(256 * 1024, dump);
    let mut line = Vec::new();
    let mut in_copy = false;
    let mut n = 0u64;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(n);
        }
        n += line.len() as u64;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if in_copy {
            in_copy = body != b"\\.";
        } else if body.starts_with(b"COPY ") && body.ends_with(b" FROM stdin;") {
            in_copy = true;
        } else {
            let s = String::from_utf8_lossy(body);
            let ownership = (s.starts_with("ALTER ") && s.contains(" OWNER TO "))
                || s.starts_with("GRANT ")
                || s.starts_with("REVOKE ")
                || s.starts_with("ALTER DEFAULT PRIVILEGES ");
            if ownership {
                continue;
            }
        }
        out.write_all(&line)?;
    }
}

/// Restores a plain dump to `target`, creating it, or replacing it when
/// `opts.force` is set.
pub fn restore_dump(
    target: &PgTarget,
    dump: &mut dyn Read,
    settings: &BTreeMap<String, String>,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let mut a = admin(target)?;
    let major = server_major(&mut a)?;
    let replaced = exists(&mut a, &target.dbname, target)?;
    if replaced && !opts.force {
        return Err(Error::Refused(format!(
            "database {:?} exists on {}; add --force to replace it (a pre-restore safety snapshot of it is taken first)",
            target.dbname,
            target.server()
        )));
    }
    let tmp = work_name(&target.dbname, "restore");
    drop_database(&mut a, &tmp, target)?;
    create_database(&mut a, &tmp, settings, target)?;
    let bytes = match run_psql(&target.with_dbname(&tmp), major, dump, opts.no_owner) {
        Ok(b) => b,
        Err(e) => {
            let _ = drop_database(&mut a, &tmp, target);
            return Err(e);
        }
    };
    let closed = match swap_in(&mut a, &tmp, target, replaced) {
        Ok(c) => c,
        Err(e) => {
            let _ = drop_database(&mut a, &tmp, target);
            return Err(e);
        }
    };
    Ok(RestoreReport {
        database: target.dbname.clone(),
        server: target.server(),
        replaced,
        closed_connections: closed,
        bytes,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Renames `tmp` to the target's name; an existing target is closed,
/// renamed aside in the same transaction, and dropped after.
fn swap_in(a: &mut postgres::Client, tmp: &str, target: &PgTarget, replace: bool) -> Result<u64> {
    let name = &target.dbname;
    if !replace {
        a.batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(tmp),
            ident(name)
        ))
        .map_err(|e| target.query_error(e))?;
        return Ok(0);
    }
    // The restored database takes the old one's owner.
    if let Ok(row) = a.query_one(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
        &[name],
    ) {
        let owner: String = row.get(0);
        let _ = a.batch_execute(&format!(
            "ALTER DATABASE {} OWNER TO {}",
            ident(tmp),
            ident(&owner)
        ));
    }
    let old = work_name(name, "old");
    drop_database(a, &old, target)?;
    // New connections are refused while the old ones are closed (this
    // needs the database's owner; without it the retries below still win
    // against an application that reconnects).
    let blocked = a
        .batch_execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            ident(name)
        ))
        .is_ok();
    let mut closed = 0u64;
    let mut last_err = None;
    for _ in 0..10 {
        let n = a
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[name],
            )
            .map_err(|e| target.query_error(e))?
            .len() as u64;
        closed += n;
        if n > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let swap = format!(
            "BEGIN; ALTER DATABASE {n} RENAME TO {o}; ALTER DATABASE {t} RENAME TO {n}; COMMIT;",
            n = ident(name),
            o = ident(&old),
            t = ident(tmp)
        );
        match a.batch_execute(&swap) {
            Ok(()) => {
                last_err = None;
                break;
            }
            Err(e) => {
                let _ = a.batch_execute("ROLLBACK");
                last_err = Some(e);
            }
        }
    }
    if let Some(e) = last_err {
        if blocked {
            let _ = a.batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                ident(name)
            ));
        }
        return Err(Error::Query(format!(
            "could not swap the restored database in for {name:?} (the old one is untouched): {}",
            one_line(&e)
        )));
    }
    if let Err(e) = drop_database(a, &old, target) {
        eprintln!(
            "ledgervault: the replaced database was kept as {old:?} because it could not be dropped: {e}"
        );
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn leaves_out_ownership_outside_copy_data() {
        let dump = "CREATE TABLE public.t (x text);\nALTER TABLE public.t OWNER TO ann;\nCOPY public.t (x) FROM stdin;\nGRANT ALL looks like a row\n\\.\nGRANT SELECT ON public.t TO bob;\nREVOKE ALL ON SCHEMA public FROM PUBLIC;\n";
        let mut out = Vec::new();
        super::copy_without_owners(&mut dump.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CREATE TABLE public.t (x text);\nCOPY public.t (x) FROM stdin;\nGRANT ALL looks like a row\n\\.\n"
        );
        assert_eq!(super::work_name(&"x".repeat(80), "old").len(), 63);
    }
}
