//! Test helpers for ledgervault (dev-only).
//!
//! - [`FaultyBackend`] wraps any backend and fails the Nth write or delete,
//!   to prove that an interrupted operation leaves a valid repository.
//! - [`fixtures`] builds source trees of mixed files.
//! - [`pg::PgServer`] starts a real PostgreSQL server for a test.
//! - [`s3`] starts real S3 servers (Garage, Ceph RGW) and a delaying proxy.

pub mod net;
pub mod pg;
pub mod s3;

pub use ledgervault_repo::{FaultOn, FaultyBackend};

/// A database image held in memory, standing in for a live capture.
pub struct ImageCapture {
    data: std::io::Cursor<Vec<u8>>,
    page_size: u32,
}

impl ImageCapture {
    pub fn new(data: Vec<u8>, page_size: u32) -> Box<Self> {
        Box::new(ImageCapture {
            data: std::io::Cursor::new(data),
            page_size,
        })
    }
}

impl std::io::Read for ImageCapture {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

impl ledgervault_repo::DbCapture for ImageCapture {
    fn page_size(&self) -> u32 {
        self.page_size
    }
    fn finish(self: Box<Self>) -> Result<ledgervault_repo::DatabaseInfo, String> {
        Ok(ledgervault_repo::DatabaseInfo {
            engine: "test".into(),
            page_size: self.page_size,
            ..Default::default()
        })
    }
}

pub mod fixtures {
    //! Source trees for tests and benchmarks.

    use std::fs;
    use std::path::Path;

    use rand::{Rng, SeedableRng};

    /// Writes a tree of mixed files (ledger-like CSV text, random binary,
    /// repetitive binary, empty files, a symlink) totalling about `bytes`.
    /// Deterministic for a given `seed`.
    pub fn mixed_tree(root: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        fs::create_dir_all(root.join("ledgers"))?;
        fs::create_dir_all(root.join("scans/2026"))?;
        fs::create_dir_all(root.join("empty-dir"))?;
        fs::write(root.join("empty.txt"), b"")?;
        std::os::unix::fs::symlink("ledgers", root.join("ledgers-link"))?;
        let mut written = 0u64;
        let mut i = 0u32;
        while written < bytes {
            let left = bytes - written;
            let size = (rng.gen_range(1_000..4_000_000u64)).min(left).max(1) as usize;
            let (path, data) = match i % 3 {
                0 => (
                    root.join(format!("ledgers/client-{i:04}.csv")),
                    ledger_text(&mut rng, size),
                ),
                1 => {
                    let mut d = vec![0u8; size];
                    rng.fill(&mut d[..]);
                    (root.join(format!("scans/2026/scan-{i:04}.bin")), d)
                }
                _ => {
                    let block: Vec<u8> = (0..4096).map(|_| rng.gen::<u8>() & 0x0f).collect();
                    (
                        root.join(format!("report-{i:04}.dat")),
                        block.iter().cycle().take(size).copied().collect(),
                    )
                }
            };
            fs::write(path, &data)?;
            written += size as u64;
            i += 1;
        }
        Ok(())
    }

    /// Ledger-like CSV text of `size` bytes.
    pub fn ledger_text(rng: &mut impl Rng, size: usize) -> Vec<u8> {
        let accounts = [
            "1000 Cash",
            "1200 Receivables",
            "2000 Payables",
            "4000 Revenue",
            "6100 Rent",
            "6200 Payroll",
        ];
        let mut out = Vec::with_capacity(size + 128);
        while out.len() < size {
            let line = format!(
                "2026-{:02}-{:02},JE-{:06},{},{}.{:02},memo {}\n",
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(0..999_999),
                accounts[rng.gen_range(0..accounts.len())],
                rng.gen_range(0..99_999),
                rng.gen_range(0..100),
                rng.gen_range(0..5000)
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(size);
        out
    }
}
