//! Writes benchmark data.
//!
//! `gen_mixed file PATH BYTES` writes one file of mixed text and binary data:
//! ledger-like CSV text, random bytes (like compressed attachments) and
//! low-entropy binary (like database pages), in runs of 64 KiB to 2 MiB.
//! `gen_mixed tree PATH BYTES` writes a directory of mixed files.
//! Both are deterministic.

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
