//! Talking to people: sizes, progress bars and the exit-code contract.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ledgervault_repo::Progress;

/// Exit codes (documented in README.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const INCOMPLETE: i32 = 3;
    pub const DAMAGED: i32 = 4;
    pub const SUSPECT: i32 = 5;
    pub const DRILL_FAILED: i32 = 6;
    pub const NO_REPOSITORY: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const APPEND_ONLY: i32 = 13;
}

/// Bytes in decimal units with three significant digits: `994 MB`, `12.4 MB`.
pub fn size(n: u64) -> String {
    ledgervault_repo::human_size(n)
}

/// Seconds, to one decimal.
pub fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// A progress bar on standard error, or nothing when it is not a terminal
/// or `--quiet` was given.
pub struct Bar {
    bar: Option<ProgressBar>,
    verb: &'static str,
    /// Files begun so far.
    files: std::sync::atomic::AtomicU64,
}

impl Bar {
    pub fn new(quiet: bool, verb: &'static str) -> Bar {
        let show = !quiet && std::io::stderr().is_terminal();
        Bar {
            bar: show.then(|| {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(200));
                b
            }),
            verb,
            files: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn wants_total(&self) -> bool {
        self.bar.is_some()
    }

    fn start(&self, total: Option<u64>) {
        if let Some(b) = &self.bar {
            match total {
                Some(t) => {
                    b.set_length(t);
                    b.set_style(
                        ProgressStyle::with_template(&format!(
                            "{} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}} {{wide_msg}}",
                            self.verb
                        ))
                        .expect("valid template"),
                    );
                }
                None => b.set_style(
                    ProgressStyle::with_template(&format!(
                        "{} {{spinner}} {{bytes}} {{bytes_per_sec}} {{wide_msg}}",
                        self.verb
                    ))
                    .expect("valid template"),
                ),
            }
        }
    }
    fn read(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn file(&self, path: &Path) {
        let n = self
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(b) = &self.bar {
            // Redrawn at the tick; a string per file is cheap next to a stat.
            b.set_message(format!("{n} files  {}", path.display()));
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(994_000_000), "994 MB");
        assert_eq!(super::size(12_400_000), "12.4 MB");
        assert_eq!(super::size(3_100_000), "3.1 MB");
        assert_eq!(super::size(61_800_000_000), "61.8 GB");
        assert_eq!(super::size(999_999), "1.0 MB");
    }
}
