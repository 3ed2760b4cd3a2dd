//! Storage backends for ledgervault repositories.
//!
//! Each backend implements [`ledgervault_repo::Backend`] and nothing more: it
//! stores opaque objects under paths and knows nothing of packs or
//! snapshots.

mod local;

pub use local::LocalBackend;
