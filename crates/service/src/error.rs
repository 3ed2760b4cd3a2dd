//! What kind of failure an error is, decided once for every front end: the
//! command line turns it into an exit code, the daemon into "try again
//! later" or "alert now", the console into a message.

use ledgervault_repo::{BackendErrorKind, Error};

/// The kinds of failure a front end tells apart. In JSON (`--json`'s
/// error object, the daemon's reading of it) each is its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (an argument, a setting): trying again
    /// will not help.
    Usage,
    /// No repository where one was expected (or the storage is not there
    /// right now: an unmounted share looks the same).
    NoRepository,
    /// Another process holds a conflicting lock.
    Locked,
    /// No key opened with the password given.
    WrongPassword,
    /// Stored data is damaged or missing.
    Damaged,
    /// The session may not delete (an append-only key).
    AppendOnly,
    /// Anything else: storage errors, a full disk, a database that would
    /// not open.
    Other,
}

impl ErrorKind {
    /// The kind of `e`, from the typed error inside it.
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        match e.downcast_ref::<Error>() {
            Some(Error::RepositoryNotFound(_)) => ErrorKind::NoRepository,
            Some(Error::Locked(_)) => ErrorKind::Locked,
            Some(Error::WrongPassword) => ErrorKind::WrongPassword,
            Some(Error::Corrupt { .. }) => ErrorKind::Damaged,
            // A pack the index names is gone: data is missing, not unreachable.
            Some(Error::Backend(b))
                if b.kind == BackendErrorKind::NotFound && b.path.starts_with("data/") =>
            {
                ErrorKind::Damaged
            }
            Some(Error::AppendOnly(_)) => ErrorKind::AppendOnly,
            _ if e.downcast_ref::<UsageError>().is_some() => ErrorKind::Usage,
            _ => match e.downcast_ref::<ledgervault_postgres::Error>() {
                Some(ledgervault_postgres::Error::Usage(_)) => ErrorKind::Usage,
                Some(ledgervault_postgres::Error::Damaged(_)) => ErrorKind::Damaged,
                _ => ErrorKind::Other,
            },
        }
    }

    /// Whether running the same work again later may succeed: the storage
    /// may come back, a lock may be released. A wrong password, a bad
    /// setting or damage stay what they are until someone acts.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorKind::Other | ErrorKind::NoRepository | ErrorKind::Locked
        )
    }
}

/// A mistake in how an operation was asked for, found after parsing.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error of kind [`ErrorKind::Usage`] saying `msg`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_typed_error_inside() {
        let e = anyhow::Error::new(Error::WrongPassword).context("opening the repository");
        assert_eq!(ErrorKind::of(&e), ErrorKind::WrongPassword);
        assert!(!ErrorKind::of(&e).is_temporary());
        let e = usage("no repository given");
        assert_eq!(ErrorKind::of(&e), ErrorKind::Usage);
        assert!(!ErrorKind::of(&e).is_temporary());
        let e = anyhow::Error::new(Error::Locked("backup by x".into()));
        assert!(ErrorKind::of(&e).is_temporary());
        assert_eq!(
            ErrorKind::of(&anyhow::anyhow!("disk full")),
            ErrorKind::Other
        );
    }

    #[test]
    fn kinds_round_trip_through_json_by_name() {
        let v = serde_json::to_value(ErrorKind::NoRepository).unwrap();
        assert_eq!(v, serde_json::json!("no_repository"));
        let back: ErrorKind = serde_json::from_value(v).unwrap();
        assert_eq!(back, ErrorKind::NoRepository);
        assert!(serde_json::from_value::<ErrorKind>(serde_json::json!("bogus")).is_err());
    }
}
