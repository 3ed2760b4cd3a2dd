//! Long work started from the console (a backup, a safety snapshot): it
//! runs on a thread of its own, reports through [`Progress`], and its state
//! lives here, so a page reloaded or opened elsewhere shows it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ledgervault_repo::Progress;
use serde::Serialize;

/// What a task has done so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskState {
    pub read: u64,
    pub stored: u64,
    /// Bytes the current step expects (a restore, then a backup: each
    /// step starts its own count).
    pub total: Option<u64>,
    /// `read` when the current step began.
    #[serde(skip)]
    pub step_began: u64,
    /// The file being read.
    pub current: String,
    /// Set when the task ends: what it did, or why it failed.
    pub done: Option<Result<String, String>>,
    /// Steps and findings, in order (the newest [`LOG_LINES`]).
    pub log: Vec<String>,
}

/// Lines of a task's log kept.
pub const LOG_LINES: usize = 500;

#[derive(Debug, Serialize)]
pub struct Task {
    pub id: u64,
    /// What it is, for people: "Back up now", "Safety snapshot".
    pub what: String,
    pub by: String,
    pub started: DateTime<Utc>,
    state: Mutex<TaskState>,
}

impl TaskState {
    /// How far the current step got, when its size is known.
    pub fn percent(&self) -> Option<u64> {
        let total = self.total.filter(|t| *t > 0)?;
        Some((self.read - self.step_began).min(total) * 100 / total)
    }
}

impl Task {
    pub fn state(&self) -> TaskState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn running(&self) -> bool {
        self.state().done.is_none()
    }

    fn update(&self, f: impl FnOnce(&mut TaskState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a line to the task's log.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        self.update(|s| {
            if s.log.len() >= LOG_LINES {
                s.log.remove(0);
            }
            s.log.push(line);
        })
    }

    pub fn finish(&self, result: Result<String, String>) {
        self.update(|s| {
            s.current.clear();
            s.done = Some(result);
        })
    }
}

impl Progress for Task {
    fn start(&self, total: Option<u64>) {
        self.update(|s| {
            s.total = total;
            s.step_began = s.read;
        })
    }
    fn read(&self, n: u64) {
        self.update(|s| s.read += n)
    }
    fn stored(&self, n: u64) {
        self.update(|s| s.stored += n)
    }
    fn file(&self, path: &Path) {
        self.update(|s| s.current = path.display().to_string())
    }
    fn step(&self, what: &str) {
        self.log(what)
    }
}

/// The tasks of this run of the console, newest kept.
#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<Task>>>,
}

/// Tasks kept for the activity page.
const KEPT: usize = 100;

impl Tasks {
    /// A new task, unless one that writes to the repository is running
    /// (then that one: work waits for no lock in a browser).
    pub fn start(&self, what: &str, by: &str) -> Result<Arc<Task>, Arc<Task>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.values().find(|t| t.running()) {
            return Err(t.clone());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let t = Arc::new(Task {
            id,
            what: what.to_string(),
            by: by.to_string(),
            started: Utc::now(),
            state: Mutex::default(),
        });
        map.insert(id, t.clone());
        while map.len() > KEPT {
            let oldest = *map.keys().next().expect("not empty");
            map.remove(&oldest);
        }
        Ok(t)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Task>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Arc<Task>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .rev()
            .cloned()
            .collect()
    }
}
