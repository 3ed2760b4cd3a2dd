//! A backend that fails, or stops the whole process, at the Nth write or
//! delete: the tool that proves an interrupted operation leaves a valid
//! repository. Tests use it directly; debug builds of the binary wrap their
//! storage in it when `LEDGERVAULT_FAULT_INJECTION` is set (see the CLI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backend::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo};

/// Which operations count towards the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    Write,
    Delete,
    /// Writes and deletes alike.
    Any,
}

/// A backend that fails the `n`th matching operation (1-based) and every one
/// after it, like storage that went away. Objects written before the fault
/// stay written; the failing write stores nothing, as the trait promises.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    on: FaultOn,
    fail_at: AtomicU64,
    count: Arc<AtomicU64>,
    kind: BackendErrorKind,
    /// Instead of failing, end the process with this code right after the
    /// `n`th operation took effect, like a power cut or `kill -9`.
    exit_code: Option<i32>,
}

impl FaultyBackend {
    /// Fails from the `n`th operation of kind `on`; `n == 0` never fails.
    pub fn new(inner: Arc<dyn Backend>, on: FaultOn, n: u64) -> Self {
        FaultyBackend {
            inner,
            on,
            fail_at: AtomicU64::new(n),
            count: Arc::new(AtomicU64::new(0)),
            kind: BackendErrorKind::Other,
            exit_code: None,
        }
    }

    /// Counts operations in `count`, shared with other faulty backends, so
    /// that "the Nth write" spans every repository a process opens.
    pub fn sharing_count(mut self, count: Arc<AtomicU64>) -> Self {
        self.count = count;
        self
    }

    /// Ends the process with `code` right after the `n`th operation took
    /// effect, without unwinding or running destructors (locks stay).
    pub fn stopping_process(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// Fails with `kind` instead (for example `StorageFull`).
    pub fn with_kind(mut self, kind: BackendErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// How many matching operations were attempted.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Stops failing.
    pub fn heal(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
    }

    /// Counts the operation; `Ok(true)` means it is the one after which
    /// the process stops.
    fn gate(&self, on: FaultOn, path: &str) -> BackendResult<bool> {
        if on != self.on && self.on != FaultOn::Any {
            return Ok(false);
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        if self.exit_code.is_some() {
            return Ok(at != 0 && n == at);
        }
        if at != 0 && n >= at {
            let msg = match self.kind {
                BackendErrorKind::StorageFull => "the destination disk is full (injected)",
                _ => "injected fault",
            };
            return Err(BackendError::new(self.kind, path, msg));
        }
        Ok(false)
    }

    fn after(&self, stop: bool) {
        if let (true, Some(code)) = (stop, self.exit_code) {
            // SAFETY: _exit ends the process at once; nothing after it runs.
            unsafe { libc::_exit(code) }
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        let stop = self.gate(FaultOn::Write, path)?;
        self.inner.write(path, data)?;
        self.after(stop);
        Ok(())
    }
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> BackendResult<()> {
        let stop = self.gate(FaultOn::Write, path)?;
        self.inner.write_parts(path, parts)?;
        self.after(stop);
        Ok(())
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        let stop = self.gate(FaultOn::Delete, path)?;
        self.inner.delete(path)?;
        self.after(stop);
        Ok(())
    }
    fn free_space(&self) -> Option<u64> {
        self.inner.free_space()
    }
    fn retention(&self) -> crate::backend::Retention {
        self.inner.retention()
    }
    fn remote(&self) -> bool {
        self.inner.remote()
    }
    fn read_range_metadata(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range_metadata(path, offset, len)
    }
    fn keep_metadata(&self, path: &str, offset: u64, bytes: &[u8]) {
        self.inner.keep_metadata(path, offset, bytes)
    }
    fn object_lock(&self) -> BackendResult<Option<bool>> {
        self.inner.object_lock()
    }
    fn retain(
        &self,
        path: &str,
        at_least: std::time::SystemTime,
        extend_to: std::time::SystemTime,
    ) -> BackendResult<bool> {
        self.inner.retain(path, at_least, extend_to)
    }
    fn retained_until(&self, path: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.inner.retained_until(path)
    }
    fn replaced(&self) -> BackendResult<Vec<(String, String)>> {
        self.inner.replaced()
    }
}
