//! The engine's error type.
//!
//! Rules: every error carries enough context to be printed as one line that a
//! person can act on (which object, which file, what to do next). Callers
//! branch on the variant, so variants exist only where a caller needs to tell
//! cases apart: the CLI maps them to exit codes, and retry logic asks
//! [`Error::is_temporary`]. Corruption always names the damaged object.

use crate::backend::{BackendError, BackendErrorKind};

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at the location.
    #[error("no ledgervault repository at {0} (run `ledgervault init` to create one)")]
    RepositoryNotFound(String),
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    /// No key file opens with the given password.
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// The repository or one of its objects was written by a newer format.
    #[error("{what} uses format version {found}, written by a newer ledgervault; this ledgervault {program} reads up to version {supported}")]
    NewerFormat {
        what: String,
        found: u32,
        supported: u32,
        program: &'static str,
    },
    /// A conflicting lock is held by a live process.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// A stored object failed to decode or authenticate.
    #[error("{object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },
    /// The storage refused or failed an operation.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A snapshot, key or path that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The session is append-only and the operation would delete or
    /// overwrite something.
    #[error("{0} is refused: this session is append-only (its key was added with --append-only, or --append-only was given); it can add backups but never delete. Use a full-access key on a trusted machine")]
    AppendOnly(String),
    /// Input that makes no sense, found after argument parsing.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Builds a corruption error for `object`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Builds an I/O error on a local path.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Whether trying again later may succeed (network blips, busy storage).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Backend(b) if b.kind == BackendErrorKind::Temporary)
            || matches!(self, Error::Locked(_))
    }

    /// Whether the destination ran out of space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Backend(b) => b.kind == BackendErrorKind::StorageFull,
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}
