//! Refuses to build against a SQLite without the two options the capture
//! needs, with a message that says what to do, instead of the linker's
//! "undefined symbol: sqlite3_snapshot_get".
//!
//! The bundled SQLite (libsqlite3-sys) takes its compile options from
//! `LIBSQLITE3_FLAGS`, which the repository's `.cargo/config.toml` sets. Cargo
//! reads that file only when it runs inside the repository, so a build
//! started elsewhere (`cargo build --manifest-path …` from another folder)
//! would otherwise compile and then fail to link.

const NEEDED: [&str; 2] = ["SQLITE_ENABLE_DBPAGE_VTAB", "SQLITE_ENABLE_SNAPSHOT"];

fn main() {
    println!("cargo:rerun-if-env-changed=LIBSQLITE3_FLAGS");
    let flags = std::env::var("LIBSQLITE3_FLAGS").unwrap_or_default();
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|f| {
            let set = format!("-D{f}");
            !flags
                .split_whitespace()
                .any(|w| w == set || w.starts_with(&format!("{set}=")))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "ledgervault needs SQLite compiled with -D{}; run cargo from the repository's folder \
             (its .cargo/config.toml sets LIBSQLITE3_FLAGS) or set \
             LIBSQLITE3_FLAGS=\"-DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_SNAPSHOT\"",
            missing.join(" -D")
        );
        std::process::exit(1);
    }
}
