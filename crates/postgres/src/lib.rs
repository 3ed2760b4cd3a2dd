//! PostgreSQL for ledgervault.
//!
//! - [`conn`] resolves `postgres://` URLs the way libpq does (PG* variables,
//!   the service file, `.pgpass`) and keeps passwords out of logs;
//! - [`tools`] finds `pg_dump` and `psql` that fit the server's version;
//! - [`dump`] streams a consistent `pg_dump` into the repository, counting
//!   and digesting each table's rows on the way through;
//! - [`restore`] builds a database from a dump in a temporary database and
//!   swaps it in, so a failure never leaves the target half-restored;
//! - [`db`] implements the per-client layer's [`Db`](ledgervault_tenant::sql::Db);
//! - [`drill`] restores into a scratch database and proves the books there.

pub mod conn;
pub mod db;
pub mod drill;
pub mod dump;
pub mod restore;
pub mod tools;

pub use conn::{is_pg_url, redact, PgTarget};
pub use db::PgDb;
pub use dump::{CopyDigest, PgDump};
pub use restore::{database_exists, restore_dump, RestoreReport};

/// Errors of PostgreSQL work; each is one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL or an option is wrong.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached or refused the login.
    #[error("{0}")]
    Connect(String),
    /// A query failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
    /// A client tool is missing, of the wrong version, or failed.
    #[error("{0}")]
    Tool(String),
    /// Refused to touch something (an existing database without --force).
    #[error("{0}")]
    Refused(String),
    /// The stored dump could not be read back (damaged repository data).
    #[error("{0}")]
    Damaged(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ledgervault_tenant::Error {
    fn from(e: Error) -> Self {
        ledgervault_tenant::Error::Db(e.to_string())
    }
}

/// The server's major version (15 for 15.4), from a connection.
pub fn server_major(client: &mut postgres::Client) -> Result<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .map_err(|e| Error::Query(conn::one_line(&e)))?;
    let num: i32 = row.get(0);
    Ok((num / 10000) as u32)
}

/// Quotes an identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal (standard_conforming_strings is on).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
