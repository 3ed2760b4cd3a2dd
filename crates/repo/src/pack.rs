//! Pack files: frames of sealed, compressed blobs, with an encrypted header.
//!
//! ```text
//! pack   = "LVPK" version:u8  frame*  sealed_header  header_len:u32le
//! frame  = seal(aad="LVFR", compressed(blob_1 ‖ blob_2 ‖ …))
//! header = seal(aad="LVPH"‖version, compressed(frame_table))
//! ```
//!
//! A frame groups one large chunk, or a run of small chunks that were new
//! together (database pages), so small chunks still compress well. The frame
//! table lists each frame's sealed and plain length and the blobs inside it;
//! frame offsets follow from the lengths. The same frame table, prefixed by
//! the pack id and size, is what index files store, so an index can always be
//! rebuilt from the packs.

use crate::compress;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::FORMAT_VERSION;

/// Magic bytes at the start of a pack.
pub const PACK_MAGIC: &[u8; 4] = b"LVPK";
/// Bytes before the first frame.
pub const PACK_PREFIX_LEN: u64 = 5;
/// Associated data for frames.
pub const FRAME_AAD: &[u8] = b"LVFR";
const HEADER_AAD: &[u8] = b"LVPH\x01";

/// Largest blob or frame we accept when decoding (hostile input guard).
pub const MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// File, stream or database content.
    Data = 0,
    /// A serialized directory tree.
    Tree = 1,
    /// Part of a database image's chunk map (see `chunkmap`).
    Map = 2,
}

impl BlobKind {
    fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            2 => Some(BlobKind::Map),
            _ => None,
        }
    }
}

/// One blob inside a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobKind,
    pub id: Id,
    pub len: u32,
}

/// One frame of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEntry {
    /// Bytes the frame occupies in the pack (nonce, ciphertext, tag).
    pub sealed_len: u32,
    /// Bytes of plaintext: the sum of its blobs' lengths.
    pub raw_len: u32,
    pub blobs: Vec<BlobEntry>,
}

/// Appends the binary frame table encoding of `frames` to `out`.
pub fn encode_frames(frames: &[FrameEntry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&f.sealed_len.to_le_bytes());
        out.extend_from_slice(&f.raw_len.to_le_bytes());
        out.extend_from_slice(&(f.blobs.len() as u32).to_le_bytes());
        for b in &f.blobs {
            out.push(b.kind as u8);
            out.extend_from_slice(&b.id.0);
            out.extend_from_slice(&b.len.to_le_bytes());
        }
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    object: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], object: &'a str) -> Self {
        Reader { data, object }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(Error::corrupt(self.object, "record is truncated"));
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub(crate) fn id(&mut self) -> Result<Id> {
        Ok(Id(self.take(32)?.try_into().unwrap()))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.object, reason)
    }
}

/// Decodes a frame table written by [`encode_frames`].
pub(crate) fn decode_frames(r: &mut Reader<'_>) -> Result<Vec<FrameEntry>> {
    let n = r.u32()? as usize;
    // Each frame needs at least 12 bytes: never allocate more than the input allows.
    if n > r.remaining() / 12 {
        return Err(r.corrupt("frame count exceeds the data"));
    }
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        let sealed_len = r.u32()?;
        let raw_len = r.u32()?;
        let nb = r.u32()? as usize;
        if nb > r.remaining() / 37 {
            return Err(r.corrupt("blob count exceeds the data"));
        }
        if raw_len > MAX_FRAME_LEN || sealed_len > MAX_FRAME_LEN + 1024 {
            return Err(r.corrupt("frame length out of range"));
        }
        let mut blobs = Vec::with_capacity(nb);
        let mut sum: u64 = 0;
        for _ in 0..nb {
            let kind = r.u8()?;
            let kind = BlobKind::from_u8(kind)
                .ok_or_else(|| r.corrupt(format!("unknown blob kind {kind}")))?;
            let id = r.id()?;
            let len = r.u32()?;
            sum += len as u64;
            blobs.push(BlobEntry { kind, id, len });
        }
        if sum != raw_len as u64 || nb == 0 {
            return Err(r.corrupt("frame length does not match its blobs"));
        }
        frames.push(FrameEntry {
            sealed_len,
            raw_len,
            blobs,
        });
    }
    Ok(frames)
}

/// Builds one pack in memory. The sealed frames are kept as they came and
/// written with one vectored write, so no pack-sized copy is ever made.
pub struct PackBuilder {
    parts: Vec<Vec<u8>>,
    len: usize,
    frames: Vec<FrameEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished pack: its id, its bytes in pieces, and its frame table.
pub struct FinishedPack {
    pub id: Id,
    pub parts: Vec<Vec<u8>>,
    pub size: u64,
    pub frames: Vec<FrameEntry>,
}

#[cfg(test)]
impl FinishedPack {
    /// The pack's bytes in one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut prefix = PACK_MAGIC.to_vec();
        prefix.push(FORMAT_VERSION as u8);
        PackBuilder {
            len: prefix.len(),
            parts: vec![prefix],
            frames: Vec::new(),
        }
    }

    /// Appends an already sealed frame.
    pub fn add_frame(&mut self, sealed: Vec<u8>, entry: FrameEntry) {
        debug_assert_eq!(sealed.len(), entry.sealed_len as usize);
        self.len += sealed.len();
        self.parts.push(sealed);
        self.frames.push(entry);
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Seals the header and returns the finished pack.
    pub fn finish(mut self, keys: &Keys) -> FinishedPack {
        let mut table = Vec::new();
        encode_frames(&self.frames, &mut table);
        // Level 1: the table is mostly blob ids, which do not compress; a
        // higher level only costs time.
        let mut header = keys.seal(HEADER_AAD, &compress::compress(1, &table));
        header.extend_from_slice(&((header.len()) as u32).to_le_bytes());
        self.len += header.len();
        self.parts.push(header);
        let mut hasher = blake3::Hasher::new();
        for p in &self.parts {
            hasher.update(p);
        }
        FinishedPack {
            id: Id(*hasher.finalize().as_bytes()),
            parts: self.parts,
            size: self.len as u64,
            frames: self.frames,
        }
    }
}

/// Reads the frame table from a whole pack's bytes.
pub fn read_header(keys: &Keys, pack: &[u8], object: &str) -> Result<Vec<FrameEntry>> {
    if pack.len() < PACK_PREFIX_LEN as usize + 4 || &pack[..4] != PACK_MAGIC {
        return Err(Error::corrupt(object, "not a ledgervault pack (bad magic)"));
    }
    check_version(pack[4] as u32, object)?;
    let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
    let body_end = pack.len() - 4;
    if hlen > body_end - PACK_PREFIX_LEN as usize {
        return Err(Error::corrupt(object, "header length out of range"));
    }
    let sealed = &pack[body_end - hlen..body_end];
    let plain = keys
        .open(HEADER_AAD, sealed)
        .map_err(|_| Error::corrupt(object, "pack header failed authentication"))?;
    let table = decompress_bounded(&plain, object)?;
    let mut r = Reader::new(&table, object);
    let frames = decode_frames(&mut r)?;
    let total: u64 = PACK_PREFIX_LEN + frames.iter().map(|f| f.sealed_len as u64).sum::<u64>();
    if total != (body_end - hlen) as u64 {
        return Err(Error::corrupt(
            object,
            "frame table does not cover the pack",
        ));
    }
    Ok(frames)
}

/// Decompresses a metadata payload whose size is not known in advance.
pub(crate) fn decompress_bounded(data: &[u8], object: &str) -> Result<Vec<u8>> {
    match data.first() {
        Some(&compress::TAG_ZSTD) => {
            let size = zstd::zstd_safe::get_frame_content_size(&data[1..])
                .ok()
                .flatten()
                .ok_or_else(|| Error::corrupt(object, "zstd frame without a size"))?;
            if size > 1 << 32 {
                return Err(Error::corrupt(object, "declared size out of range"));
            }
            compress::decompress(data, size as usize, object)
        }
        _ => compress::decompress(data, data.len().saturating_sub(1), object),
    }
}

/// Refuses objects written by a newer format version.
pub(crate) fn check_version(found: u32, object: &str) -> Result<()> {
    if found > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            what: object.to_string(),
            found,
            supported: FORMAT_VERSION,
            program: env!("CARGO_PKG_VERSION"),
        });
    }
    if found == 0 {
        return Err(Error::corrupt(object, "format version 0"));
    }
    Ok(())
}

/// Seals frames: compresses a run of blobs as one zstd frame and seals it.
/// Holds a reusable compression context and the buffer a run of blobs is
/// gathered in (rather than a fresh allocation per frame); make one per
/// thread.
pub struct FrameSealer {
    compressor: zstd::bulk::Compressor<'static>,
    gathered: Vec<u8>,
}

impl FrameSealer {
    pub fn new(level: i32) -> Result<FrameSealer> {
        let compressor = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::Invalid(format!("zstd level {level}: {e}")))?;
        Ok(FrameSealer {
            compressor,
            gathered: Vec::new(),
        })
    }

    /// Returns the sealed frame and its table entry. The plaintext is
    /// compressed straight into the buffer that is then encrypted in place.
    pub fn seal<B: AsRef<[u8]>>(
        &mut self,
        keys: &Keys,
        blobs: &[(BlobKind, Id, B)],
    ) -> (Vec<u8>, FrameEntry) {
        self.seal_into(keys, blobs, Vec::new())
    }

    /// Like [`seal`](Self::seal), writing the frame into `buf` (whatever it
    /// holds is dropped). A backup hands back buffers of frames already
    /// written, so sealing reuses memory that is already mapped.
    pub fn seal_into<B: AsRef<[u8]>>(
        &mut self,
        keys: &Keys,
        blobs: &[(BlobKind, Id, B)],
        mut buf: Vec<u8>,
    ) -> (Vec<u8>, FrameEntry) {
        let raw: &[u8] = if blobs.len() == 1 {
            blobs[0].2.as_ref()
        } else {
            self.gathered.clear();
            for b in blobs {
                self.gathered.extend_from_slice(b.2.as_ref());
            }
            &self.gathered
        };
        buf.clear();
        buf.reserve(
            crate::crypto::NONCE_LEN
                + 1
                + zstd::zstd_safe::compress_bound(raw.len())
                + crate::crypto::TAG_LEN,
        );
        buf.resize(crate::crypto::NONCE_LEN, 0);
        compress::compress_into(&mut self.compressor, raw, &mut buf);
        let sealed = keys.seal_prefixed(FRAME_AAD, buf);
        let entry = FrameEntry {
            sealed_len: sealed.len() as u32,
            raw_len: raw.len() as u32,
            blobs: blobs
                .iter()
                .map(|(kind, id, d)| BlobEntry {
                    kind: *kind,
                    id: *id,
                    len: d.as_ref().len() as u32,
                })
                .collect(),
        };
        (sealed, entry)
    }
}

/// Why a frame's blobs did not check out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BlobMismatch {
    /// The frame table puts a blob past the end of the plaintext.
    Outside,
    /// This blob's bytes do not hash to its id.
    Wrong(Id),
}

impl std::fmt::Display for BlobMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobMismatch::Outside => f.write_str("a blob lies outside its frame"),
            BlobMismatch::Wrong(id) => write!(f, "blob {} does not match its id", id.short()),
        }
    }
}

/// Checks that `data`, cut into `len`-byte blobs, holds exactly the blobs
/// `want` names, hashing them side by side.
pub(crate) fn verify_run(
    keys: &Keys,
    data: &[u8],
    len: usize,
    want: impl ExactSizeIterator<Item = Id>,
) -> std::result::Result<(), BlobMismatch> {
    let got = keys.blob_ids_of_run(data, len);
    if got.len() != want.len() {
        return Err(BlobMismatch::Outside);
    }
    match want.zip(got).find(|(w, g)| w != g) {
        Some((w, _)) => Err(BlobMismatch::Wrong(w)),
        None => Ok(()),
    }
}

/// Checks every blob of an opened frame (`plain`, blobs end to end in
/// `blobs`' order) against its id. Runs of blobs of one size (database
/// pages) are hashed side by side.
pub(crate) fn verify_blobs(
    keys: &Keys,
    plain: &[u8],
    blobs: &[BlobEntry],
) -> std::result::Result<(), BlobMismatch> {
    let mut inner = 0usize;
    for run in blobs.chunk_by(|a, b| a.len == b.len && a.len > 0) {
        for group in run.chunks(crate::chunker::FIXED_RUN) {
            let len = group[0].len as usize;
            let span = len * group.len();
            let data = plain
                .get(inner..inner + span)
                .ok_or(BlobMismatch::Outside)?;
            verify_run(keys, data, len, group.iter().map(|b| b.id))?;
            inner += span;
        }
    }
    Ok(())
}

/// Opens one sealed frame and returns its plaintext.
pub fn open_frame(keys: &Keys, sealed: &[u8], raw_len: u32, object: &str) -> Result<Vec<u8>> {
    let plain = keys
        .open(FRAME_AAD, sealed)
        .map_err(|_| Error::corrupt(object, "frame failed authentication"))?;
    compress::decompress(&plain, raw_len as usize, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    fn seal_frame(
        keys: &Keys,
        level: i32,
        blobs: &[(BlobKind, Id, Vec<u8>)],
    ) -> (Vec<u8>, FrameEntry) {
        FrameSealer::new(level).unwrap().seal(keys, blobs)
    }

    fn arb_frames() -> impl Strategy<Value = Vec<FrameEntry>> {
        proptest::collection::vec(
            (
                any::<u32>(),
                proptest::collection::vec(
                    (
                        any::<bool>(),
                        proptest::array::uniform32(any::<u8>()),
                        0u32..100000,
                    ),
                    1..4,
                ),
            ),
            0..6,
        )
        .prop_map(|fs| {
            fs.into_iter()
                .map(|(s, bs)| {
                    let blobs: Vec<BlobEntry> = bs
                        .into_iter()
                        .map(|(t, id, len)| BlobEntry {
                            kind: if t { BlobKind::Tree } else { BlobKind::Data },
                            id: Id(id),
                            len,
                        })
                        .collect();
                    FrameEntry {
                        sealed_len: s % MAX_FRAME_LEN,
                        raw_len: blobs.iter().map(|b| b.len).sum(),
                        blobs,
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn frame_table_round_trip(frames in arb_frames()) {
            let mut buf = Vec::new();
            encode_frames(&frames, &mut buf);
            let mut r = Reader::new(&buf, "t");
            prop_assert_eq!(decode_frames(&mut r).unwrap(), frames);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn frame_table_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_frames(&mut Reader::new(&data, "t"));
        }

        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..3000), 1..6)) {
            let keys = Keys::derive(&MasterKey::generate());
            let mut pb = PackBuilder::new();
            let mut want = vec![];
            for b in &blobs {
                let id = keys.blob_id(b);
                let (sealed, entry) = seal_frame(&keys, 3, &[(BlobKind::Data, id, b.clone())]);
                pb.add_frame(sealed, entry);
                want.push(id);
            }
            let fin = pb.finish(&keys);
            let (id, bytes, frames) = (fin.id, fin.to_bytes(), fin.frames);
            prop_assert_eq!(bytes.len() as u64, fin.size);
            prop_assert_eq!(id, Id::of_object(&bytes));
            let read = read_header(&keys, &bytes, "p").unwrap();
            prop_assert_eq!(&read, &frames);
            let mut off = PACK_PREFIX_LEN as usize;
            for (f, b) in read.iter().zip(&blobs) {
                let plain = open_frame(&keys, &bytes[off..off + f.sealed_len as usize], f.raw_len, "p").unwrap();
                prop_assert_eq!(&plain, b);
                off += f.sealed_len as usize;
            }
        }
    }

    #[test]
    fn grouped_frame_and_damage() {
        let keys = Keys::derive(&MasterKey::generate());
        let blobs: Vec<_> = (0..4u8)
            .map(|i| (BlobKind::Data, keys.blob_id(&[i; 100]), vec![i; 100]))
            .collect();
        let (sealed, entry) = seal_frame(&keys, 3, &blobs);
        assert_eq!(entry.raw_len, 400);
        assert_eq!(entry.blobs.len(), 4);
        let mut pb = PackBuilder::new();
        pb.add_frame(sealed, entry);
        let mut bytes = pb.finish(&keys).to_bytes();
        assert!(read_header(&keys, &bytes, "p").is_ok());
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        assert!(matches!(
            read_header(&keys, &bytes, "p"),
            Err(Error::Corrupt { .. })
        ));
        bytes[4] = 9;
        assert!(matches!(
            read_header(&keys, &bytes, "p"),
            Err(Error::NewerFormat { .. })
        ));
        assert!(read_header(&keys, b"LVPK", "p").is_err());
    }
}
