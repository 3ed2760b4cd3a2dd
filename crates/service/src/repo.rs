//! Reaching a repository: where it is and how to open it, for every front
//! end. The front end gets the password (a prompt, a file, a form); from
//! there on it is a [`Secret`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use ledgervault_backends::{OpenError, OpenOptions};
use ledgervault_repo::{self as engine, Backend, Found, Repository, UnlockedAhead};

use crate::error::usage;

/// A password or another secret: never shown by `Debug`, and its buffer
/// wiped when dropped (copies made before it existed, such as a file
/// reader's growing buffer before its last size, or the environment's, are
/// not).
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites `buf` with zeros in a way the compiler does not drop.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned byte of the caller's buffer.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Reads a secret from a file (at most `limit` bytes; one trailing line
/// end is dropped). `what` names it in errors.
pub fn secret_from_file(path: &Path, what: &str) -> Result<Secret> {
    // The file's bytes are a secret too: wiped once copied.
    let raw = Secret(crate::redact::read_limited(
        path,
        crate::redact::SECRET_FILE_LIMIT,
        what,
    )?);
    let s = raw.expose();
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    let s = s.strip_suffix(b"\r").unwrap_or(s);
    if s.is_empty() {
        return Err(usage(format!("the {what} {} is empty", path.display())));
    }
    Ok(Secret(s.to_vec()))
}

/// Where a repository is and how to reach and use it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// A folder, `file://` URL or `s3:` address; `None` is a usage error
    /// when the repository is needed.
    pub location: Option<String>,
    /// How to reach remote storage (S3 settings, metadata cache).
    pub storage: OpenOptions,
    /// Open an append-only session (no deletes, even with a full key).
    pub append_only: bool,
    /// How long to wait for another process's conflicting lock.
    pub retry_lock: Option<Duration>,
}

impl Target {
    /// The storage at [`location`](Self::location). Errors never repeat
    /// credentials given in an address.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let repo = self.location.as_deref().ok_or_else(|| {
            usage("no repository given: use --repo PATH or set LEDGERVAULT_REPOSITORY")
        })?;
        let backend = ledgervault_backends::open(repo, &self.storage).map_err(|e| match e {
            OpenError::Usage(m) => usage(crate::redact::url(&m)),
            OpenError::NotAFolder(m) => anyhow!(crate::redact::url(&m)),
            OpenError::Storage(e) => anyhow::Error::new(e),
        })?;
        fault_injection(backend)
    }

    /// Finds the repository without a password (fails on a missing one
    /// before anyone is asked for a password), ready for
    /// [`Opener::open`].
    pub fn find(&self) -> Result<Opener> {
        let backend = self.backend()?;
        let found = Repository::find(backend.as_ref())?;
        Ok(Opener {
            backend,
            found,
            append_only: self.append_only,
            retry_lock: self.retry_lock,
            ahead: UnlockedAhead::default(),
        })
    }

    /// [`find`](Self::find) for a caller that has the password already:
    /// the key is derived from this machine's cached copy of the key file
    /// while the storage is reached and asked for the repository (on a
    /// long link that is two round trips, about as long as the
    /// derivation). [`Opener::open`] uses it only if the storage still
    /// holds that key file, byte for byte.
    pub fn find_ahead(&self, password: &Secret) -> Result<Opener> {
        let location = self.location.as_deref().unwrap_or_default();
        let (opener, ahead) = std::thread::scope(|s| {
            let ahead = s.spawn(|| {
                let copies = ledgervault_backends::kept_key_files(location, &self.storage);
                UnlockedAhead::try_copies(copies, password.expose())
            });
            let opener = self.find();
            (opener, ahead.join().unwrap_or_default())
        });
        let mut opener = opener?;
        opener.ahead = ahead;
        Ok(opener)
    }
}

/// A repository found, not yet unlocked.
pub struct Opener {
    backend: Arc<dyn Backend>,
    found: Found,
    append_only: bool,
    retry_lock: Option<Duration>,
    ahead: UnlockedAhead,
}

impl Opener {
    /// Unlocks the repository with `password` (the key derivation, the slow
    /// part: work that needs no keys can run meanwhile).
    pub fn open(self, password: &Secret) -> Result<Repository> {
        let mut repo =
            Repository::unlock_with(self.backend, self.found, password.expose(), self.ahead)?;
        if self.append_only {
            repo.set_append_only();
        }
        if let Some(wait) = self.retry_lock {
            repo.set_lock_wait(wait);
        }
        Ok(repo)
    }
}

/// Debug builds only: `LEDGERVAULT_FAULT_INJECTION=MODE:OP:N` wraps every
/// repository this process opens in a [`engine::FaultyBackend`] sharing one
/// count. MODE `fail` fails the Nth and later operations; `stop` ends the
/// process with exit code 99 right after the Nth took effect, like a power
/// cut. OP is `write`, `delete` or `any`. The crash tests use it to stop a
/// real command at every step; release builds ignore the variable.
fn fault_injection(backend: Arc<dyn Backend>) -> Result<Arc<dyn Backend>> {
    use std::sync::atomic::AtomicU64;
    static COUNT: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();
    if !cfg!(debug_assertions) {
        return Ok(backend);
    }
    let Ok(spec) = std::env::var("LEDGERVAULT_FAULT_INJECTION") else {
        return Ok(backend);
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (mode, op, n) = match parts.as_slice() {
        [m, o, n] => (*m, *o, n.parse::<u64>().ok()),
        _ => ("", "", None),
    };
    let on = match op {
        "write" => engine::FaultOn::Write,
        "delete" => engine::FaultOn::Delete,
        "any" => engine::FaultOn::Any,
        _ => {
            return Err(usage(format!(
                "LEDGERVAULT_FAULT_INJECTION={spec}: expected MODE:OP:N"
            )))
        }
    };
    let (Some(n), true) = (n, mode == "fail" || mode == "stop") else {
        return Err(usage(format!(
            "LEDGERVAULT_FAULT_INJECTION={spec}: expected MODE:OP:N"
        )));
    };
    let count = COUNT.get_or_init(|| Arc::new(AtomicU64::new(0))).clone();
    let f = engine::FaultyBackend::new(backend, on, n).sharing_count(count);
    Ok(Arc::new(if mode == "stop" {
        f.stopping_process(99)
    } else {
        f
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s.expose(), b"hunter2");
        let t = Target::default();
        let e = t.backend().err().expect("no location is an error");
        assert_eq!(crate::ErrorKind::of(&e), crate::ErrorKind::Usage);
    }
}
