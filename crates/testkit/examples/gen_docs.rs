//! Writes a firm's documents share, deterministically, for
//! `bench/files-vs-restic.sh`.
//!
//! `gen_docs small DIR FILES` writes FILES files of 1-4 KiB (ledger text
//! and CSV) in FILES/100 folders.
//! `gen_docs office DIR BYTES` writes about BYTES of office documents in
//! 40 client folders: CSV exports and text letters (compressible), already
//! compressed attachments (zip-like, random bytes) and PDFs sharing
//! templates (a common header and font block, then each document's own
//! text).
//! `gen_docs touch DIR CHANGE ADD` rewrites CHANGE of the files under DIR
//! (every n-th, in sorted order) and adds ADD new ones: the nightly change.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use ledgervault_testkit::fixtures::ledger_text;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: gen_docs small DIR FILES | office DIR BYTES | touch DIR CHANGE ADD");
        std::process::exit(2)
    };
    if args.len() < 4 {
        usage();
    }
    let dir = Path::new(&args[2]);
    let n = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args[1].as_str() {
        "small" => small(dir, n(3)),
        "office" => office(dir, n(3)),
        "touch" => touch(dir, n(3), n(4)),
        _ => usage(),
    }
}

fn small(dir: &Path, files: u64) {
    let mut rng = StdRng::seed_from_u64(7);
    let folders = (files / 100).max(1);
    for f in 0..folders {
        let d = dir.join(format!("client-{f:04}"));
        fs::create_dir_all(&d).expect("create folder");
        let here = files / folders + u64::from(f < files % folders);
        for i in 0..here {
            let len = rng.gen_range(1024..4096);
            let name = if i % 3 == 0 {
                format!("export-{i:03}.csv")
            } else {
                format!("note-{i:03}.txt")
            };
            fs::write(d.join(name), ledger_text(&mut rng, len)).expect("write");
        }
    }
}

/// A PDF-like document: a shared template (header, fonts, a logo), then
/// the document's own text.
fn pdf(rng: &mut StdRng, template: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"%PDF-1.7\n");
    out.extend_from_slice(template);
    while out.len() < len {
        out.extend_from_slice(b"BT /F1 10 Tf 72 700 Td (");
        out.extend_from_slice(&ledger_text(rng, 512));
        out.extend_from_slice(b") Tj ET\n");
    }
    out.truncate(len);
    out
}

fn office(dir: &Path, bytes: u64) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut templates = Vec::new();
    for _ in 0..4 {
        let mut t = vec![0u8; 96 * 1024];
        rng.fill(&mut t[..]);
        templates.push(t);
    }
    let mut written = 0u64;
    let mut i = 0u64;
    while written < bytes {
        let d = dir.join(format!("client-{:02}", i % 40));
        fs::create_dir_all(&d).expect("create folder");
        let (name, data) = match i % 5 {
            0 => {
                let len = rng.gen_range(50_000..1_500_000);
                (format!("ledger-{i:05}.csv"), ledger_text(&mut rng, len))
            }
            1 => {
                let len = rng.gen_range(5_000..60_000);
                (format!("letter-{i:05}.txt"), ledger_text(&mut rng, len))
            }
            2 => {
                let len = rng.gen_range(100_000..2_000_000);
                let mut z = vec![0u8; len];
                rng.fill(&mut z[..]);
                z[..4].copy_from_slice(b"PK\x03\x04");
                (format!("receipts-{i:05}.zip"), z)
            }
            _ => {
                let len = rng.gen_range(150_000..1_200_000);
                let t = templates[(i % 4) as usize].clone();
                (format!("return-{i:05}.pdf"), pdf(&mut rng, &t, len))
            }
        };
        fs::write(d.join(name), &data).expect("write");
        written += data.len() as u64;
        i += 1;
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read folder")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn touch(dir: &Path, change: u64, add: u64) {
    let mut rng = StdRng::seed_from_u64(99);
    let mut files = Vec::new();
    files_under(dir, &mut files);
    if files.is_empty() {
        return;
    }
    let step = (files.len() as u64 / change.max(1)).max(1) as usize;
    for p in files.iter().step_by(step).take(change as usize) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(p)
            .expect("open to change");
        f.write_all(b"\nrevised\n").expect("append");
    }
    for i in 0..add {
        let d = files[(i as usize * 7919) % files.len()]
            .parent()
            .expect("a folder")
            .to_path_buf();
        let len = rng.gen_range(2_000..200_000);
        fs::write(
            d.join(format!("added-{i:04}.txt")),
            ledger_text(&mut rng, len),
        )
        .expect("write");
    }
}
