//! The `ledgervault` command line, as a library: the binary's `main` calls
//! [`run_main`]. The library exists so that fuzz targets can reach the
//! configuration file parser ([`config::Config::parse`]); nothing else is
//! a stable interface.
//!
//! Two stages, as in ripgrep: clap parses and validates the arguments
//! (`args`), then each command turns them into engine options, runs the
//! operation, and prints its summary for people or as JSON (`commands`).
//! Errors are printed as one line, and their kind picks the exit code
//! (`ui::exit`).

mod args;
mod client;
mod commands;
mod console;
mod daemon;
mod demo;
mod jobs;
mod ops;
mod retention;
mod server_restore;
mod ui;
mod verify;

// The configuration file and what it names live in the service layer; the
// fuzz targets reach the parser through this crate as before.
pub use ledgervault_service::config;
use ledgervault_service::{alert, history, redact, schedule};

use clap::Parser;

/// Parses the arguments, runs the command, prints any error as one line;
/// returns the exit code.
pub fn run_main() -> i32 {
    // Die quietly on a closed pipe (`ledgervault snapshots | head`) like
    // other Unix tools, instead of panicking inside println!.
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "ledgervault: internal error: {msg} (at {}); please report this",
            info.location().map(|l| l.to_string()).unwrap_or_default()
        );
    }));
    let cli = args::Cli::parse();
    let json = cli.json;
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = commands::exit_code(&e);
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("ledgervault: error: {text}");
            if json {
                // For scripts and the daemon: what kind of failure, so that
                // whether to try again is never read from the wording.
                println!(
                    "{}",
                    serde_json::json!({"error": {
                        "kind": ledgervault_service::ErrorKind::of(&e),
                        "message": text,
                        "exit_code": code,
                    }})
                );
            }
            code
        }
    };
    code
}
