//! `firm generate PATH BYTES [CLIENTS] [SEED]` or `firm day PATH SEED FRACTION`:
//! the sample firm for benchmarks.

use std::path::Path;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let started = Instant::now();
    match a.get(1).map(String::as_str) {
        Some("generate") if a.len() >= 4 => {
            let opts = ledgervault_samplefirm::FirmOptions {
                size: a[3].parse().expect("BYTES"),
                clients: a.get(4).map(|c| c.parse().expect("CLIENTS")).unwrap_or(50),
                seed: a.get(5).map(|s| s.parse().expect("SEED")).unwrap_or(2026),
            };
            let s = ledgervault_samplefirm::generate(Path::new(&a[2]), &opts).expect("generate");
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{} clients, {} journal entries, {} bytes in {secs:.1} s ({:.0} MB/s)",
                s.clients,
                s.journal_entries,
                s.bytes,
                s.bytes as f64 / 1e6 / secs
            );
        }
        Some("day") if a.len() == 5 => {
            let d = ledgervault_samplefirm::simulate_day(
                Path::new(&a[2]),
                a[3].parse().expect("SEED"),
                a[4].parse().expect("FRACTION"),
            )
            .expect("day");
            eprintln!(
                "{} new entries, {} edited rows in {:.1} s",
                d.new_entries,
                d.edited_rows,
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!(
                "usage: firm generate PATH BYTES [CLIENTS] [SEED] | firm day PATH SEED FRACTION"
            );
            std::process::exit(2);
        }
    }
}
