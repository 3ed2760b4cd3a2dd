//! The index: where every blob lives.
//!
//! An index file lists packs and their frame tables (see `pack`). Loading all
//! index files gives the in-memory [`Index`], a map from blob id to its
//! location. Backups write a new index file every few packs, so a backup that
//! is killed still leaves most of what it stored findable, and the next
//! backup reuses it.
//!
//! Index payload: `count:u32` then, per pack, `pack_id:32 pack_size:u64
//! frame_table`.

use std::collections::HashMap;

use crate::error::Result;
use crate::id::Id;
use crate::pack::{decode_frames, encode_frames, BlobKind, FrameEntry, Reader, PACK_PREFIX_LEN};

/// A pack and its frame table, as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub id: Id,
    pub size: u64,
    pub frames: Vec<FrameEntry>,
}

/// Encodes an index payload.
pub fn encode_index(packs: &[PackRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        encode_frames(&p.frames, &mut out);
    }
    out
}

/// Decodes an index payload.
pub fn decode_index(data: &[u8], object: &str) -> Result<Vec<PackRecord>> {
    let mut r = Reader::new(data, object);
    let n = r.u32()? as usize;
    if n > r.remaining() / 44 {
        return Err(r.corrupt("pack count exceeds the data"));
    }
    let mut packs = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.id()?;
        let size = r.u64()?;
        let frames = decode_frames(&mut r)?;
        packs.push(PackRecord { id, size, frames });
    }
    if r.remaining() != 0 {
        return Err(r.corrupt("trailing bytes after the last pack"));
    }
    Ok(packs)
}

/// Where one blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub kind: BlobKind,
    /// Offset of the sealed frame in the pack.
    pub frame_offset: u64,
    pub frame_sealed_len: u32,
    pub frame_raw_len: u32,
    /// Offset of the blob in the frame's plaintext.
    pub offset: u32,
    pub len: u32,
}

/// A [`BlobLocation`] as the index keeps it.
#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    kind: BlobKind,
    frame_sealed_len: u32,
    frame_offset: u64,
    frame_raw_len: u32,
    offset: u32,
    len: u32,
}

/// Why a pack the index lists cannot be relied on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    /// Not on storage.
    Missing,
    /// On storage with another size than the index says (truncated).
    WrongSize,
    /// `check` or a restore found damage in it (a `damaged/` record).
    Damaged,
}

/// The in-memory index of all blobs.
///
/// Packs known to be missing, truncated or damaged are *weak*: a blob found
/// in a weak pack and in a sound one is read from the sound one, and
/// [`Index::is_sound`] tells a backup which blobs it must store again.
#[derive(Default)]
pub struct Index {
    blobs: HashMap<Id, Loc>,
    /// Pack ids by number: a location names its pack by number, which
    /// halves the index in memory (a million small files, a million
    /// entries).
    pack_ids: Vec<Id>,
    pack_no: HashMap<Id, u32>,
    packs: HashMap<Id, u64>,
    weak: HashMap<Id, Weakness>,
    /// Packs on storage, with their sizes, when the index was built against
    /// a listing.
    present: Option<HashMap<Id, u64>>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the index of `records`, checked against `present` (the packs
    /// on storage and their sizes) and `damaged` (packs found damaged).
    pub fn checked(
        records: impl IntoIterator<Item = PackRecord>,
        present: HashMap<Id, u64>,
        damaged: &std::collections::HashSet<Id>,
    ) -> Index {
        let mut index = Index::new();
        let mut weak_records = Vec::new();
        for p in records {
            let weakness = match present.get(&p.id) {
                None => Some(Weakness::Missing),
                Some(&size) if size != p.size => Some(Weakness::WrongSize),
                _ if damaged.contains(&p.id) => Some(Weakness::Damaged),
                _ => None,
            };
            match weakness {
                Some(w) => {
                    index.weak.insert(p.id, w);
                    weak_records.push(p);
                }
                None => index.add_pack(&p),
            }
        }
        // Weak packs last, so a blob also stored in a sound pack is read
        // from there; what only a weak pack holds is still found (and its
        // read fails with what is wrong with the pack).
        for p in &weak_records {
            index.add_pack(p);
        }
        index.present = Some(present);
        index
    }

    /// Adds every blob of a pack. A blob stored twice keeps its first location.
    pub fn add_pack(&mut self, p: &PackRecord) {
        self.packs.insert(p.id, p.size);
        let no = match self.pack_no.get(&p.id) {
            Some(&n) => n,
            None => {
                let n = u32::try_from(self.pack_ids.len()).expect("fewer than 2^32 packs");
                self.pack_ids.push(p.id);
                self.pack_no.insert(p.id, n);
                n
            }
        };
        let mut off = PACK_PREFIX_LEN;
        for f in &p.frames {
            let mut inner = 0u32;
            for b in &f.blobs {
                self.blobs.entry(b.id).or_insert(Loc {
                    pack: no,
                    kind: b.kind,
                    frame_offset: off,
                    frame_sealed_len: f.sealed_len,
                    frame_raw_len: f.raw_len,
                    offset: inner,
                    len: b.len,
                });
                inner += b.len;
            }
            off += f.sealed_len as u64;
        }
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(id).map(|l| BlobLocation {
            pack: self.pack_ids[l.pack as usize],
            kind: l.kind,
            frame_offset: l.frame_offset,
            frame_sealed_len: l.frame_sealed_len,
            frame_raw_len: l.frame_raw_len,
            offset: l.offset,
            len: l.len,
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Whether the blob is stored in a pack that is present, whole and not
    /// known to be damaged: what a backup may deduplicate against.
    pub fn is_sound(&self, id: &Id) -> bool {
        self.blobs
            .get(id)
            .is_some_and(|l| !self.weak.contains_key(&self.pack_ids[l.pack as usize]))
    }

    /// Packs that cannot be relied on, and why.
    pub fn weak_packs(&self) -> &HashMap<Id, Weakness> {
        &self.weak
    }

    /// Packs on storage that no index lists (left by an interrupted
    /// backup), when the index was built against a listing.
    pub fn unindexed(&self) -> Vec<(Id, u64)> {
        let mut out: Vec<(Id, u64)> = self
            .present
            .iter()
            .flatten()
            .filter(|(id, _)| !self.packs.contains_key(id))
            .map(|(id, size)| (*id, *size))
            .collect();
        out.sort();
        out
    }

    /// Packs known to the index, with their sizes.
    pub fn packs(&self) -> &HashMap<Id, u64> {
        &self.packs
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobEntry;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(n in 0usize..5, blobs in 1usize..4, seed in any::<u8>()) {
            let packs: Vec<PackRecord> = (0..n).map(|i| PackRecord {
                id: Id([i as u8 ^ seed; 32]),
                size: 1000 + i as u64,
                frames: vec![FrameEntry { sealed_len: 99, raw_len: blobs as u32 * 10, blobs: (0..blobs).map(|j| BlobEntry { kind: BlobKind::Data, id: Id([j as u8; 32]), len: 10 }).collect() }],
            }).collect();
            let enc = encode_index(&packs);
            prop_assert_eq!(decode_index(&enc, "i").unwrap(), packs);
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_index(&data, "i");
        }
    }

    #[test]
    fn locations() {
        let mk = |b: u8, len| BlobEntry {
            kind: BlobKind::Data,
            id: Id([b; 32]),
            len,
        };
        let p = PackRecord {
            id: Id([9; 32]),
            size: 0,
            frames: vec![
                FrameEntry {
                    sealed_len: 100,
                    raw_len: 30,
                    blobs: vec![mk(1, 10), mk(2, 20)],
                },
                FrameEntry {
                    sealed_len: 50,
                    raw_len: 5,
                    blobs: vec![mk(3, 5)],
                },
            ],
        };
        let mut idx = Index::new();
        idx.add_pack(&p);
        let l2 = idx.get(&Id([2; 32])).unwrap();
        assert_eq!((l2.frame_offset, l2.offset, l2.len), (5, 10, 20));
        let l3 = idx.get(&Id([3; 32])).unwrap();
        assert_eq!((l3.frame_offset, l3.offset), (105, 0));
        assert_eq!(idx.blob_count(), 3);
    }
}
