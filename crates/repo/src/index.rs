//! The index: where every blob lives.
//!
//! An index file lists packs and their frame tables (see `pack`). Loading all
//! index files gives the in-memory [`Index`], a map from blob id to its
//! location, kept compact: a sorted array of 48 bytes per blob, and each
//! frame's place once (a million small files cost about 50 MB, not the
//! 130 MB of a hash map of full locations). Backups write a new index file every few packs, so a backup that
//! is killed still leaves most of what it stored findable, and the next
//! backup reuses it.
//!
//! Index payload: `count:u32` then, per pack, `pack_id:32 pack_size:u64
//! frame_table`.

use std::collections::{HashMap, HashSet};

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

/// A blob as the index keeps it: its frame by number, and where in the
/// frame's plaintext.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Key,
    frame: u32,
    offset: u32,
    len: u32,
    kind: BlobKind,
}

/// A frame's place, kept once for all the blobs it holds.
#[derive(Debug, Clone, Copy)]
struct FrameLoc {
    offset: u64,
    pack: u32,
    sealed_len: u32,
    raw_len: u32,
}

/// The smallest batch of recent additions merged into the sorted array.
const MERGE_MIN: usize = 8192;

/// A blob as the in-memory index and set name it: the first 128 bits of its
/// 256-bit id. Ids are keyed hashes, so two blobs of one repository share
/// these bits with a chance of about n²/2¹²⁹ (10⁻²⁷ for a million blobs,
/// 10⁻¹⁵ for a million million), and nobody without the repository's key
/// can make them; every blob read is still checked against its whole id.
/// Half the bytes per blob of a million-file folder.
type Key = [u8; 16];

fn key(id: &Id) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&id.0[..16]);
    k
}

/// Items sorted by id, with a table of where each 16-bit id prefix starts,
/// so a lookup searches about n/65536 items (ids are hashes, spread evenly)
/// instead of all of them: a few cache misses, not twenty.
struct Sorted<T> {
    items: Vec<T>,
    /// `fan[p]` is the first item whose id's prefix is `p` or more; 65537
    /// entries once anything is merged in, none before.
    fan: Vec<u32>,
}

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted {
            items: Vec::new(),
            fan: Vec::new(),
        }
    }
}

fn prefix(k: &Key) -> usize {
    u16::from_be_bytes([k[0], k[1]]) as usize
}

impl<T: Copy> Sorted<T> {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn find(&self, k: &Key, key: impl Fn(&T) -> &Key) -> Option<&T> {
        if self.fan.is_empty() {
            return None;
        }
        let p = prefix(k);
        let (lo, hi) = (self.fan[p] as usize, self.fan[p + 1] as usize);
        let slice = &self.items[lo..hi];
        slice
            .binary_search_by(|x| key(x).cmp(k))
            .ok()
            .map(|i| &slice[i])
    }

    /// Merges `new` (sorted, no id already here) in place, from the back:
    /// no second copy of the array is ever made.
    fn merge(&mut self, new: &[T], key: impl Fn(&T) -> &Key) {
        let Some(&fill) = new.first() else { return };
        let items = &mut self.items;
        let (mut i, mut j) = (items.len(), new.len());
        items.resize(i + j, fill);
        let mut k = i + j;
        while j > 0 {
            if i > 0 && key(&items[i - 1]) > key(&new[j - 1]) {
                items[k - 1] = items[i - 1];
                i -= 1;
            } else {
                items[k - 1] = new[j - 1];
                j -= 1;
            }
            k -= 1;
        }
        let n = u32::try_from(items.len()).expect("fewer than 2^32 blobs");
        self.fan.clear();
        self.fan.resize(65537, n);
        let mut at = 0usize;
        for (i, x) in items.iter().enumerate() {
            let p = prefix(key(x));
            while at <= p {
                self.fan[at] = i as u32;
                at += 1;
            }
        }
    }
}

/// A set of blob ids in 16 bytes each (see [`Key`]): a sorted array and a
/// small set of recent additions, merged into the array as it grows. A
/// backup's ids of new blobs (a million files' worth) fit in it without a
/// hash table's overhead.
#[derive(Default)]
pub struct IdSet {
    sorted: Sorted<Key>,
    recent: HashSet<Key>,
}

impl IdSet {
    pub fn new() -> IdSet {
        IdSet::default()
    }

    pub fn contains(&self, id: &Id) -> bool {
        let k = key(id);
        self.recent.contains(&k) || self.sorted.find(&k, |x| x).is_some()
    }

    /// Adds `id`; false if it was there.
    pub fn insert(&mut self, id: Id) -> bool {
        if self.contains(&id) {
            return false;
        }
        self.recent.insert(key(&id));
        if self.recent.len() >= MERGE_MIN.max(self.sorted.len() / 16) {
            let mut new: Vec<Key> = self.recent.drain().collect();
            new.sort_unstable();
            self.sorted.merge(&new, |x| x);
            self.recent = HashSet::new();
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }
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
    /// Every blob by id, sorted, each with its first location.
    blobs: Sorted<Entry>,
    /// Blobs added since the last merge into `blobs`.
    recent: HashMap<Key, Entry>,
    frames: Vec<FrameLoc>,
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
        index.merge();
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
            let frame = u32::try_from(self.frames.len()).expect("fewer than 2^32 frames");
            self.frames.push(FrameLoc {
                offset: off,
                pack: no,
                sealed_len: f.sealed_len,
                raw_len: f.raw_len,
            });
            let mut inner = 0u32;
            for b in &f.blobs {
                if self.entry(&b.id).is_none() {
                    self.recent.insert(
                        key(&b.id),
                        Entry {
                            id: key(&b.id),
                            frame,
                            offset: inner,
                            len: b.len,
                            kind: b.kind,
                        },
                    );
                }
                inner = inner.wrapping_add(b.len);
            }
            off += f.sealed_len as u64;
        }
        if self.recent.len() >= MERGE_MIN.max(self.blobs.len() / 16) {
            self.merge();
        }
    }

    /// Moves the recent additions into the sorted array.
    fn merge(&mut self) {
        let mut new: Vec<Entry> = self.recent.drain().map(|(_, e)| e).collect();
        new.sort_unstable_by_key(|e| e.id);
        self.blobs.merge(&new, |e| &e.id);
        self.recent = HashMap::new();
    }

    fn entry(&self, id: &Id) -> Option<&Entry> {
        let k = key(id);
        self.recent
            .get(&k)
            .or_else(|| self.blobs.find(&k, |e| &e.id))
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.entry(id).map(|e| {
            let f = &self.frames[e.frame as usize];
            BlobLocation {
                pack: self.pack_ids[f.pack as usize],
                kind: e.kind,
                frame_offset: f.offset,
                frame_sealed_len: f.sealed_len,
                frame_raw_len: f.raw_len,
                offset: e.offset,
                len: e.len,
            }
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.entry(id).is_some()
    }

    /// Whether the blob is stored in a pack that is present, whole and not
    /// known to be damaged: what a backup may deduplicate against.
    pub fn is_sound(&self, id: &Id) -> bool {
        self.entry(id).is_some_and(|e| {
            let pack = self.frames[e.frame as usize].pack;
            !self.weak.contains_key(&self.pack_ids[pack as usize])
        })
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
        self.blobs.len() + self.recent.len()
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

    proptest! {
        /// The compact index and set answer as a hash map would, whatever
        /// the order and repetition of what is added, across merges.
        #[test]
        fn compact_index_answers_as_a_map(
            ids in proptest::collection::vec(0u16..3000, 1..20000),
            per_pack in 1usize..400,
        ) {
            let id = |n: u16| {
                let mut b = [0u8; 32];
                b[..2].copy_from_slice(&n.to_be_bytes());
                b[31] = n as u8;
                Id(b)
            };
            let mut idx = Index::new();
            let mut set = IdSet::new();
            let mut first: HashMap<Id, (Id, u32)> = HashMap::new();
            for (p, chunk) in ids.chunks(per_pack).enumerate() {
                let pack = Id([p as u8; 32]);
                let blobs: Vec<BlobEntry> = chunk
                    .iter()
                    .map(|&n| BlobEntry { kind: BlobKind::Data, id: id(n), len: 7 })
                    .collect();
                for (i, b) in blobs.iter().enumerate() {
                    first.entry(b.id).or_insert((pack, 7 * i as u32));
                    let fresh = !set.contains(&b.id);
                    prop_assert_eq!(set.insert(b.id), fresh);
                }
                idx.add_pack(&PackRecord {
                    id: pack,
                    size: 0,
                    frames: vec![FrameEntry { sealed_len: 10, raw_len: 7 * blobs.len() as u32, blobs }],
                });
            }
            prop_assert_eq!(idx.blob_count(), first.len());
            prop_assert_eq!(set.len(), first.len());
            for n in 0u16..3000 {
                let want = first.get(&id(n));
                let got = idx.get(&id(n)).map(|l| (l.pack, l.offset));
                prop_assert_eq!(got.as_ref(), want);
                prop_assert_eq!(set.contains(&id(n)), want.is_some());
            }
        }
    }

    #[test]
    fn a_blob_in_a_weak_pack_is_read_from_a_sound_one() {
        let rec = |p: u8, b: u8| PackRecord {
            id: Id([p; 32]),
            size: 100,
            frames: vec![FrameEntry {
                sealed_len: 50,
                raw_len: 5,
                blobs: vec![BlobEntry {
                    kind: BlobKind::Data,
                    id: Id([b; 32]),
                    len: 5,
                }],
            }],
        };
        // Pack 1 is listed first but missing; pack 2 holds the same blob.
        let present: HashMap<Id, u64> = [(Id([2; 32]), 100), (Id([3; 32]), 100)].into();
        let idx = Index::checked(
            vec![rec(1, 7), rec(2, 7), rec(1, 8)],
            present,
            &HashSet::new(),
        );
        assert_eq!(idx.get(&Id([7; 32])).unwrap().pack, Id([2; 32]));
        assert!(idx.is_sound(&Id([7; 32])));
        assert_eq!(idx.get(&Id([8; 32])).unwrap().pack, Id([1; 32]));
        assert!(!idx.is_sound(&Id([8; 32])));
        assert_eq!(idx.unindexed(), vec![(Id([3; 32]), 100)]);
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
