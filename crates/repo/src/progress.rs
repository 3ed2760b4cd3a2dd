//! Progress reporting. Operations print nothing; they call a [`Progress`],
//! and the CLI or web layer decides what people see.

use std::path::Path;

/// Receives progress from long operations. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// Whether a total is worth computing up front (it costs a walk of the
    /// sources); nothing shown, nothing to count.
    fn wants_total(&self) -> bool {
        false
    }
    /// Work begins; `total` bytes are expected, when known.
    fn start(&self, _total: Option<u64>) {}
    /// `n` more bytes were read (backup) or written (restore) or checked.
    fn read(&self, _n: u64) {}
    /// `n` more bytes were stored in the repository.
    fn stored(&self, _n: u64) {}
    /// Now working on `path`.
    fn file(&self, _path: &Path) {}
    /// A named step of the work ended (`what` says which, and may say how
    /// long it took).
    fn step(&self, _what: &str) {}
    /// Work is done.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
