//! Writes benchmark data.
//!
//! `gen_mixed file PATH BYTES` writes one file of mixed text and binary data:
//! ledger-like CSV text, random bytes (like compressed attachments) and
//! low-entropy binary (like database pages), in runs of 64 KiB to 2 MiB.
//! `gen_mixed tree PATH BYTES` writes a directory of mixed files.
//! `gen_mixed stream - BYTES` writes BYTES of ledger lines to standard
//! output, each line unique (a running number), fast enough to feed a
//! backup of tens of GiB: it compresses but never deduplicates.
//! All are deterministic.

use std::io::Write;

use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: gen_mixed file|tree PATH BYTES");
        std::process::exit(2);
    }
    let bytes: u64 = args[3].parse().expect("BYTES must be a number");
    let path = std::path::Path::new(&args[2]);
    match args[1].as_str() {
        "stream" => stream(bytes),
        "tree" => ledgervault_testkit::fixtures::mixed_tree(path, bytes, 42).expect("write tree"),
        "file" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
            let mut written = 0u64;
            while written < bytes {
                let run = (rng.gen_range(64 * 1024..2 * 1024 * 1024) as u64).min(bytes - written)
                    as usize;
                let data = match rng.gen_range(0..4) {
                    0 | 1 => ledgervault_testkit::fixtures::ledger_text(&mut rng, run),
                    2 => {
                        let mut d = vec![0u8; run];
                        rng.fill(&mut d[..]);
                        d
                    }
                    _ => {
                        // Page-like records: small integers, zero padding, some text.
                        let mut d = vec![0u8; run];
                        for page in d.chunks_mut(4096) {
                            let used = rng.gen_range(0..page.len());
                            for b in &mut page[..used] {
                                *b = if rng.gen_bool(0.7) {
                                    rng.gen_range(0..16)
                                } else {
                                    rng.gen_range(b'a'..=b'z')
                                };
                            }
                        }
                        d
                    }
                };
                out.write_all(&data).expect("write");
                written += run as u64;
            }
            out.flush().expect("flush");
        }
        other => {
            eprintln!("unknown kind {other}");
            std::process::exit(2);
        }
    }
}

/// Fixed 64-byte lines whose first 12 bytes count up; only the counter is
/// rewritten per line.
fn stream(bytes: u64) {
    const LINE: usize = 64;
    const LINES: usize = 16 * 1024;
    let accounts = [
        "1000 Cash",
        "1200 Receivables",
        "2000 Payables",
        "4000 Sales",
    ];
    let mut buf = Vec::with_capacity(LINE * LINES);
    for i in 0..LINES {
        let mut line = format!(
            "000000000000,2026-11-24,JE,{},{}.{:02}",
            accounts[i % accounts.len()],
            (i * 7919) % 100_000,
            i % 100
        );
        line.truncate(LINE - 1);
        while line.len() < LINE - 1 {
            line.push(' ');
        }
        line.push('\n');
        buf.extend_from_slice(line.as_bytes());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n: u64 = 0;
    let mut written = 0u64;
    while written < bytes {
        for line in buf.chunks_mut(LINE) {
            let mut v = n;
            for d in line[..12].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            n += 1;
        }
        let take = (bytes - written).min(buf.len() as u64) as usize;
        if out.write_all(&buf[..take]).is_err() {
            return; // the reader went away
        }
        written += take as u64;
    }
}
