//! Live data sources for ledgervault.
//!
//! Each source turns something that is in use (a live SQLite database today,
//! PostgreSQL next) into a consistent stream the engine can back up, and
//! knows how to put a restored copy back safely.

pub mod btree;
pub mod drill;
pub mod sqlite;

pub use sqlite::{
    integrity_check, is_sqlite, place_restored, Placed, SqliteCapture, SqliteOpener, SqliteOptions,
    SqlitePlacer,
};
