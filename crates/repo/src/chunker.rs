//! Splitting a byte stream into chunks.
//!
//! Two chunkers, chosen per source:
//! - **Content-defined** (FastCDC 2020, gear table seeded from the master key)
//!   for files and streams: an insertion early in a file moves only the
//!   chunks around it.
//! - **Fixed** for database images: chunks are a whole number of database
//!   pages, aligned to page boundaries, so a changed page changes exactly one
//!   chunk.
//!
//! The CDC chunker reads into one large buffer and lends chunks out of it.
//! A chunk that must outlive the next call (a new one, on its way to the
//! sealing threads) is [shared](Chunker::share_last) rather than copied: the
//! buffer is reference-counted, and while chunks hold it the chunker reads
//! on into another. A cut is only taken when at least `max` bytes follow the
//! chunk's start (or the stream ended), which makes it identical to the cut
//! a chunker holding the whole stream in memory would make.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// Content-defined chunking parameters, stored in the repository config so
/// every backup of a repository cuts the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for CdcParams {
    /// 512 KiB / 1 MiB / 4 MiB.
    fn default() -> Self {
        CdcParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl CdcParams {
    /// 4 KiB / 16 KiB / 64 KiB: for database dumps, where a day of work
    /// edits rows scattered over the whole dump.
    pub fn dump() -> CdcParams {
        CdcParams {
            min_size: 4 * 1024,
            avg_size: 16 * 1024,
            max_size: 64 * 1024,
        }
    }

    /// Checks the bounds FastCDC accepts, so a damaged config is an error and
    /// not a panic.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::*;
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes min {} avg {} max {} are out of range",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

/// Which way to cut a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkerKind {
    /// FastCDC with the repository's parameters and the key's seed.
    ContentDefined { params: CdcParams, seed: u64 },
    /// Fixed `size`-byte chunks (a multiple of the page size).
    Fixed { size: u32 },
}

/// A chunk that shares the chunker's buffer instead of owning a copy.
#[derive(Clone)]
pub struct SharedChunk {
    buf: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl AsRef<[u8]> for SharedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// Buffers a chunker keeps for reuse once the chunks sharing them are gone.
const SPARE_BUFFERS: usize = 2;

/// Chunks in one run of fixed chunking: as many pages as BLAKE3 hashes side
/// by side.
pub const FIXED_RUN: usize = crate::idbatch::LANES;

/// Cuts a reader into chunks. Call [`next_chunk`](Chunker::next_chunk) until
/// it returns `None`.
pub struct Chunker<R> {
    reader: R,
    kind: ChunkerKind,
    buf: Arc<Vec<u8>>,
    /// Earlier buffers; reused when no chunk holds them any more.
    spare: Vec<Arc<Vec<u8>>>,
    start: usize,
    end: usize,
    /// Where the chunk last returned lies in `buf`.
    last: Range<usize>,
    eof: bool,
    /// Bytes read from the reader so far.
    pub bytes_read: u64,
    /// The buffer's size for a stream of unknown length; a smaller one
    /// grows to it when the stream turns out longer than announced.
    full: usize,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, kind: ChunkerKind) -> Self {
        Self::with_size_hint(reader, kind, u64::MAX)
    }

    /// A chunker for a stream expected to hold `hint` bytes (a file's size):
    /// its buffer is no larger than the stream, so a file costs what it
    /// weighs, not what the largest chunk could (a freshly zeroed buffer of
    /// four maximum chunks was most of the time a small file took). A
    /// stream longer than announced is still read whole: the buffer grows.
    pub fn with_size_hint(reader: R, kind: ChunkerKind, hint: u64) -> Self {
        let full = match kind {
            ChunkerKind::ContentDefined { params, .. } => {
                (params.max_size as usize * 4).max(1 << 20)
            }
            // Room for a run of pages, hashed side by side (see `next_run`).
            ChunkerKind::Fixed { size } => size as usize * FIXED_RUN,
        };
        // One byte more than announced, so that one fill sees the end.
        let cap = usize::try_from(hint)
            .map_or(full, |h| h.saturating_add(1))
            .min(full);
        Chunker {
            reader,
            kind,
            buf: Arc::new(vec![0; cap]),
            spare: Vec::new(),
            start: 0,
            end: 0,
            last: 0..0,
            eof: false,
            bytes_read: 0,
            full,
        }
    }

    /// Reads until the buffer is full or the stream ends.
    fn fill(&mut self) -> io::Result<()> {
        if Arc::get_mut(&mut self.buf).is_none() {
            // Shared chunks still point into this buffer: go on in another,
            // taking the unread tail along.
            let mut next = match self
                .spare
                .iter_mut()
                .position(|b| Arc::get_mut(b).is_some())
            {
                Some(i) => self.spare.swap_remove(i),
                None => Arc::new(vec![0; self.buf.len()]),
            };
            let tail = self.end - self.start;
            Arc::get_mut(&mut next).expect("unshared buffer")[..tail]
                .copy_from_slice(&self.buf[self.start..self.end]);
            let old = std::mem::replace(&mut self.buf, next);
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(old);
            }
            self.end = tail;
            self.start = 0;
        }
        let buf = Arc::get_mut(&mut self.buf).expect("unshared buffer");
        if self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            while !self.eof && self.end < buf.len() {
                match self.reader.read(&mut buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.end += n;
                        self.bytes_read += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.eof || buf.len() >= self.full {
                return Ok(());
            }
            // Longer than announced: room for whole chunks after all.
            buf.resize(self.full, 0);
        }
    }

    /// The next chunk, or `None` at the end of the stream. It is borrowed
    /// from the chunker's buffer: most chunks of a nightly backup are
    /// already stored, and only new ones need a copy of their own.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        let need = match self.kind {
            ChunkerKind::ContentDefined { params, .. } => params.max_size as usize,
            ChunkerKind::Fixed { size } => size as usize,
        };
        if self.end - self.start < need && !self.eof {
            self.fill()?;
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let len = match self.kind {
            ChunkerKind::Fixed { size } => avail.min(size as usize),
            ChunkerKind::ContentDefined { params, seed } => {
                let window = &self.buf[self.start..self.end];
                let cdc = FastCDC::with_level_and_seed(
                    window,
                    params.min_size,
                    params.avg_size,
                    params.max_size,
                    Normalization::Level1,
                    seed,
                );
                let (_, cut) = cdc.cut(0, window.len());
                cut
            }
        };
        self.last = self.start..self.start + len;
        self.start += len;
        Ok(Some(&self.buf[self.last.clone()]))
    }

    /// Fixed chunking: the next run of up to [`FIXED_RUN`] chunks, as one
    /// slice of whole chunks (the last of the stream may be short), or
    /// `None` at the end. Chunk `i` of the run starts at `i * size`; share
    /// one with [`share_in_run`](Chunker::share_in_run).
    ///
    /// # Panics
    /// If the chunker is content-defined.
    pub fn next_run(&mut self) -> io::Result<Option<&[u8]>> {
        let ChunkerKind::Fixed { size } = self.kind else {
            panic!("next_run is for fixed chunking");
        };
        let need = size as usize * FIXED_RUN;
        if self.end - self.start < need && !self.eof {
            self.fill()?;
        }
        let len = (self.end - self.start).min(need);
        if len == 0 {
            return Ok(None);
        }
        self.last = self.start..self.start + len;
        self.start += len;
        Ok(Some(&self.buf[self.last.clone()]))
    }

    /// What [`next_chunk`](Chunker::next_chunk) or
    /// [`next_run`](Chunker::next_run) returned last.
    pub fn last(&self) -> &[u8] {
        &self.buf[self.last.clone()]
    }

    /// Part `range` of the run [`next_run`](Chunker::next_run) returned
    /// last, as a shared handle.
    ///
    /// # Panics
    /// If `range` reaches past that run.
    pub fn share_in_run(&self, range: Range<usize>) -> SharedChunk {
        assert!(range.end <= self.last.len(), "inside the last run");
        SharedChunk {
            buf: self.buf.clone(),
            range: self.last.start + range.start..self.last.start + range.end,
        }
    }

    /// The chunk [`next_chunk`](Chunker::next_chunk) returned last, as a
    /// handle that may outlive the chunker and travel to other threads.
    pub fn share_last(&self) -> SharedChunk {
        SharedChunk {
            buf: self.buf.clone(),
            range: self.last.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn small() -> CdcParams {
        CdcParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        }
    }

    fn chunks(data: &[u8], kind: ChunkerKind) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data, kind);
        let mut out = vec![];
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    /// A reader that returns at most 7 bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = b.len().min(7).min(self.0.len());
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn cdc_round_trip_and_bounds(data in proptest::collection::vec(any::<u8>(), 0..40000), seed in 1u64.., hint_pct in 0u32..200) {
            let kind = ChunkerKind::ContentDefined { params: small(), seed };
            let cs = chunks(&data, kind);
            prop_assert_eq!(cs.concat(), data.clone());
            for c in &cs[..cs.len().saturating_sub(1)] {
                prop_assert!(c.len() >= 256 && c.len() <= 4096);
            }
            // Cutting does not depend on how the reader delivers bytes.
            let mut t = Chunker::new(Trickle(&data), kind);
            let mut again = vec![];
            while let Some(c) = t.next_chunk().unwrap() { again.push(c.to_vec()); }
            prop_assert_eq!(again, cs.clone());
            // Nor on the size it was told to expect, right or wrong (a
            // file that grew or shrank while it was read).
            let hint = (data.len() as u64 * hint_pct as u64) / 100;
            let mut h = Chunker::with_size_hint(Trickle(&data), kind, hint);
            let mut hinted = vec![];
            while let Some(c) = h.next_chunk().unwrap() { hinted.push(c.to_vec()); }
            prop_assert_eq!(hinted, cs);
        }

        #[test]
        fn fixed_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20000), pages in 1u32..5) {
            let size = pages * 1024;
            let cs = chunks(&data, ChunkerKind::Fixed { size });
            prop_assert_eq!(cs.concat(), data);
            for c in &cs[..cs.len().saturating_sub(1)] {
                prop_assert_eq!(c.len(), size as usize);
            }
        }

        #[test]
        fn fixed_runs_are_whole_chunks_and_shares_keep_their_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            size in prop::sample::select(vec![512u32, 1024, 4096, 8192]),
        ) {
            let s = size as usize;
            let mut ch = Chunker::new(io::Cursor::new(&data), ChunkerKind::Fixed { size });
            let mut seen = Vec::new();
            let mut kept = Vec::new();
            let mut short = false;
            while let Some(run) = ch.next_run().unwrap() {
                prop_assert!(!short, "only the last run may end in a short chunk");
                prop_assert!(run.len() <= s * FIXED_RUN);
                short = run.len() % s != 0;
                let run = run.to_vec();
                prop_assert_eq!(ch.last(), &run[..]);
                seen.extend_from_slice(&run);
                // Keep one chunk of each run past later reads.
                let end = s.min(run.len());
                kept.push((ch.share_in_run(0..end), run[..end].to_vec()));
            }
            prop_assert_eq!(seen, data);
            for (shared, bytes) in kept {
                prop_assert_eq!(shared.as_ref(), &bytes[..]);
            }
        }
    }

    #[test]
    fn shared_chunks_keep_their_bytes() {
        // Shared chunks must survive the chunker reading on into further
        // buffers, and a buffer is only reused once no kept chunk points
        // into it. 3.5 MiB crosses the 1 MiB buffer several times.
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut data = vec![0u8; 3 << 20 | 1 << 19];
        rng.fill(&mut data[..]);
        let kind = ChunkerKind::ContentDefined {
            params: small(),
            seed: 5,
        };
        let expected = chunks(&data, kind);
        for keep_every in [1, 2, 3, 1000] {
            let mut c = Chunker::new(&data[..], kind);
            let mut kept = vec![];
            let mut i = 0;
            while c.next_chunk().unwrap().is_some() {
                let shared = c.share_last();
                if i % keep_every == 0 {
                    kept.push((i, shared));
                }
                i += 1;
            }
            assert_eq!(i, expected.len());
            for (i, k) in kept {
                assert_eq!(k.as_ref(), &expected[i][..], "chunk {i}");
            }
        }
    }

    #[test]
    fn cdc_resynchronises_after_an_insert() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut data = vec![0u8; 200_000];
        rng.fill(&mut data[..]);
        let kind = ChunkerKind::ContentDefined {
            params: small(),
            seed: 42,
        };
        let before = chunks(&data, kind);
        data.splice(1000..1000, b"inserted text".iter().copied());
        let after = chunks(&data, kind);
        let shared = after.iter().filter(|c| before.contains(c)).count();
        assert!(
            shared * 10 >= before.len() * 9,
            "{shared} of {}",
            before.len()
        );
    }

    #[test]
    fn seed_changes_boundaries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut data = vec![0u8; 100_000];
        rng.fill(&mut data[..]);
        let a = chunks(
            &data,
            ChunkerKind::ContentDefined {
                params: small(),
                seed: 1,
            },
        );
        let b = chunks(
            &data,
            ChunkerKind::ContentDefined {
                params: small(),
                seed: 99,
            },
        );
        assert_ne!(a, b);
        assert!(CdcParams {
            min_size: 1,
            avg_size: 2,
            max_size: 3
        }
        .validate()
        .is_err());
        assert!(CdcParams::default().validate().is_ok());
    }
}
