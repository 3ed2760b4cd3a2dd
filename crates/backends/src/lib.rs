//! Storage backends for ledgervault repositories.
//!
//! Each backend implements [`ledgervault_repo::Backend`] and nothing more: it
//! stores opaque objects under paths and knows nothing of packs or
//! snapshots. [`open`] is the one place where a repository address becomes
//! a backend.

mod cache;
mod local;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

pub use cache::CachedBackend;
pub use ledgervault_repo::{Backend, BackendError, BackendErrorKind};
pub use local::LocalBackend;
pub use s3::{S3Backend, S3Location, S3Options, ONE_REQUEST_MAX};

/// How to reach a repository, beyond its address.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Settings of S3 repositories.
    pub s3: S3Options,
    /// Where remote repositories' metadata is cached (default: the user's
    /// cache folder, `$XDG_CACHE_HOME/ledgervault` or `~/.cache/ledgervault`).
    pub cache_dir: Option<PathBuf>,
    /// Download metadata every time instead of caching it.
    pub no_cache: bool,
}

/// The kinds of address [`open`] understands, for messages.
pub const SCHEMES: &str = "a folder path, file://PATH, or s3:https://HOST[:PORT]/BUCKET[/PREFIX]";

/// Whether `location` names a remote repository (not a folder).
pub fn is_remote(location: &str) -> bool {
    location.starts_with("s3:")
}

/// The default cache root.
pub fn default_cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("ledgervault"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("ledgervault"))
}

/// Why [`open`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// The address or an option is wrong (a usage error).
    Usage(String),
    /// The address names something that is not a repository folder.
    NotAFolder(String),
    /// The storage answered with an error.
    Storage(BackendError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Usage(m) | OpenError::NotAFolder(m) => f.write_str(m),
            OpenError::Storage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<BackendError> for OpenError {
    fn from(e: BackendError) -> Self {
        OpenError::Storage(e)
    }
}

/// The metadata cache folder of the bucket and prefix at `loc`.
fn cache_dir(loc: &S3Location, opts: &OpenOptions) -> Option<PathBuf> {
    if opts.no_cache {
        return None;
    }
    opts.cache_dir
        .clone()
        .or_else(default_cache_root)
        .map(|root| {
            let h = blake3::hash(loc.display().as_bytes()).to_hex();
            root.join(format!("s3-{}", &h[..16]))
        })
}

/// The repository's key files as this machine's cache last saw them,
/// without a request (none for a local folder, which needs no cache):
/// what [`ledgervault_repo::UnlockedAhead`] tries the password on while
/// the storage is asked what it holds.
pub fn kept_key_files(location: &str, opts: &OpenOptions) -> Vec<(String, Vec<u8>)> {
    if !is_remote(location) {
        return Vec::new();
    }
    let Ok(loc) = S3Location::parse(location) else {
        return Vec::new();
    };
    cache_dir(&loc, opts)
        .map(|d| cache::kept_copies(&d, "keys/"))
        .unwrap_or_default()
}

/// Opens the repository storage at `location`: a folder (or `file://`
/// URL), or an S3 bucket.
pub fn open(location: &str, opts: &OpenOptions) -> Result<Arc<dyn Backend>, OpenError> {
    let usage = OpenError::Usage;
    if is_remote(location) {
        let loc = S3Location::parse(location).map_err(usage)?;
        let cache = cache_dir(&loc, opts);
        let s3 = S3Backend::open(loc, &opts.s3, cache.as_deref()).map_err(|e| {
            // Settings the backend refused before any request.
            if e.kind == BackendErrorKind::Other && e.path.is_empty() {
                OpenError::Usage(e.message)
            } else {
                OpenError::Storage(e)
            }
        })?;
        let s3: Arc<dyn Backend> = Arc::new(s3);
        return Ok(match cache {
            Some(dir) => Arc::new(CachedBackend::new(s3, dir)),
            None => s3,
        });
    }
    let path = match location.split_once("://") {
        None => location,
        Some(("file", p)) => p,
        Some((scheme, _)) => {
            return Err(usage(format!(
                "repository scheme {scheme}:// is not supported; give {SCHEMES}"
            )))
        }
    };
    // An empty path would mean the current folder: never what was meant.
    if path.trim().is_empty() {
        return Err(usage(format!(
            "the repository path is empty: give {SCHEMES}"
        )));
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        return Err(OpenError::NotAFolder(format!(
            "the repository path {path} is a file, not a repository folder"
        )));
    }
    Ok(Arc::new(LocalBackend::new(path)))
}
