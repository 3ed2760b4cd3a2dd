//! ledgervault's operations, under every front end: the command line, the
//! daemon and the console call the same code here and only parse, render
//! and schedule. Nothing here prints.
//!
//! So far: the configuration file (`config`) and what it names: schedules,
//! include and exclude filters, alert channels; the run history the daemon
//! keeps; redaction of secrets in what is shown; and reaching a repository
//! (`repo`: where it is, finding it, unlocking it with a [`repo::Secret`]);
//! database kinds behind one trait (`db`); the backup (`backup`); the
//! daemon's jobs (`jobs`); and the status report (`status`). The operations move
//! here from the command line's crate one by one (see ARCHITECTURE.md).

pub mod alert;
pub mod backup;
pub mod client;
pub mod config;
pub mod db;
pub mod drill;
pub mod error;
pub mod filter;
pub mod history;
pub mod jobs;
pub mod redact;
pub mod repo;
pub mod restore;
pub mod schedule;
pub mod settings;
pub mod status;

pub use error::{usage, ErrorKind, UsageError};
