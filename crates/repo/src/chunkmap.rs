//! Chunk maps of database images.
//!
//! A database image of N chunks needs N chunk ids in order. Storing that list
//! whole every night would cost 32 bytes per page per snapshot (0.8% of the
//! database each night). Instead a map is a stack of **layers**: the first is
//! a full list, each later one a delta listing only the chunks that changed
//! (index and new id). A night's backup adds one delta layer to its parent's
//! stack, so its metadata grows with the pages that changed, not with the
//! database. When the deltas of a stack add up to a quarter of a full list,
//! or the stack is 16 layers deep, the next backup writes a fresh full layer
//! instead; the full rewrite is paid for by the deltas it replaces, so the
//! cost per night stays proportional to what changed.
//!
//! Layers are stored as map blobs (blob kind 2) of at most
//! [`ENTRIES_PER_BLOB`] entries each, and are deduplicated like any blob.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// Entries per map blob (2 MiB of ids for a full layer).
pub const ENTRIES_PER_BLOB: usize = 65536;
/// Deepest stack before a full layer is rewritten.
pub const MAX_LAYERS: usize = 16;
const FULL_MAGIC: &[u8; 4] = b"LVMF";
const DELTA_MAGIC: &[u8; 4] = b"LVMD";

/// Whether a layer lists every chunk or only changed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Full,
    Delta,
}

/// One layer of a chunk map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapLayer {
    pub kind: LayerKind,
    /// Entries in the layer.
    pub entries: u64,
    /// Map blobs holding the entries, in order.
    pub blobs: Vec<Id>,
}

/// The chunk map of a database image node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMap {
    /// Bytes per chunk, a multiple of the page size.
    pub chunk_size: u32,
    /// Chunks in the image.
    pub chunks: u64,
    /// Applied in order; the first is full.
    pub layers: Vec<MapLayer>,
}

impl ChunkMap {
    /// Entries stored in delta layers.
    pub fn delta_entries(&self) -> u64 {
        self.layers
            .iter()
            .filter(|l| l.kind == LayerKind::Delta)
            .map(|l| l.entries)
            .sum()
    }
}

/// Encodes full-layer blobs for `ids`.
pub fn encode_full(ids: &[Id]) -> Vec<Vec<u8>> {
    if ids.is_empty() {
        return vec![encode_full_part(0, &[])];
    }
    ids.chunks(ENTRIES_PER_BLOB)
        .enumerate()
        .map(|(i, part)| encode_full_part((i * ENTRIES_PER_BLOB) as u64, part))
        .collect()
}

fn encode_full_part(first: u64, ids: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + ids.len() * 32);
    out.extend_from_slice(FULL_MAGIC);
    out.push(1);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Encodes delta-layer blobs for `(chunk index, id)` changes.
pub fn encode_delta(changes: &[(u64, Id)]) -> Vec<Vec<u8>> {
    let parts: Vec<&[(u64, Id)]> = if changes.is_empty() {
        vec![&[]]
    } else {
        changes.chunks(ENTRIES_PER_BLOB).collect()
    };
    parts
        .into_iter()
        .map(|part| {
            let mut out = Vec::with_capacity(9 + part.len() * 40);
            out.extend_from_slice(DELTA_MAGIC);
            out.push(1);
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            for (i, id) in part {
                out.extend_from_slice(&i.to_le_bytes());
                out.extend_from_slice(&id.0);
            }
            out
        })
        .collect()
}

/// Applies one map blob to `ids` (sized to the image's chunk count).
/// Entries past the end (from a larger earlier image) are ignored.
pub fn apply_blob(ids: &mut [Option<Id>], blob: &[u8], object: &str) -> Result<()> {
    let mut r = crate::pack::Reader::new(blob, object);
    let magic = r.take(4)?;
    crate::pack::check_version(r.u8()? as u32, object)?;
    if magic == FULL_MAGIC {
        let first = r.u64()?;
        let n = r.u32()? as usize;
        if n > r.remaining() / 32 {
            return Err(r.corrupt("entry count exceeds the data"));
        }
        for k in 0..n {
            let id = r.id()?;
            if let Some(slot) = first
                .checked_add(k as u64)
                .and_then(|i| ids.get_mut(i as usize))
            {
                *slot = Some(id);
            }
        }
    } else if magic == DELTA_MAGIC {
        let n = r.u32()? as usize;
        if n > r.remaining() / 40 {
            return Err(r.corrupt("entry count exceeds the data"));
        }
        for _ in 0..n {
            let i = r.u64()?;
            let id = r.id()?;
            if let Some(slot) = ids.get_mut(i as usize) {
                *slot = Some(id);
            }
        }
    } else {
        return Err(Error::corrupt(object, "not a chunk map blob"));
    }
    if r.remaining() != 0 {
        return Err(Error::corrupt(object, "trailing bytes in a chunk map blob"));
    }
    Ok(())
}

/// What the next map should be, given the new ids and the parent's map.
pub enum Plan {
    /// Write a full layer.
    Full,
    /// Append a delta of these changes to the parent's layers.
    Delta(Vec<(u64, Id)>),
}

/// Decides between a delta on the parent's stack and a fresh full layer.
pub fn plan(new: &[Id], parent: Option<(&ChunkMap, &[Id])>, chunk_size: u32) -> Plan {
    let Some((pmap, pids)) = parent else {
        return Plan::Full;
    };
    if pmap.chunk_size != chunk_size || pmap.layers.len() >= MAX_LAYERS {
        return Plan::Full;
    }
    let changes: Vec<(u64, Id)> = new
        .iter()
        .enumerate()
        .filter(|(i, id)| pids.get(*i) != Some(id))
        .map(|(i, id)| (i as u64, *id))
        .collect();
    // Delta entries cost 40 bytes, full entries 32.
    let deltas = (pmap.delta_entries() + changes.len() as u64) * 40;
    if deltas * 4 > new.len() as u64 * 32 {
        Plan::Full
    } else {
        Plan::Delta(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resolve(blobs: &[Vec<u8>], n: usize) -> Vec<Option<Id>> {
        let mut ids = vec![None; n];
        for b in blobs {
            apply_blob(&mut ids, b, "m").unwrap();
        }
        ids
    }

    proptest! {
        #[test]
        fn full_and_delta_round_trip(n in 0usize..200, changes in proptest::collection::vec((0usize..250, any::<u8>()), 0..40)) {
            let base: Vec<Id> = (0..n).map(|i| Id([(i % 251) as u8; 32])).collect();
            let mut blobs = encode_full(&base);
            let mut want: Vec<Option<Id>> = base.iter().copied().map(Some).collect();
            let delta: Vec<(u64, Id)> = changes.iter().map(|&(i, b)| (i as u64, Id([b; 32]))).collect();
            blobs.extend(encode_delta(&delta));
            for &(i, id) in &delta {
                if (i as usize) < n { want[i as usize] = Some(id); }
            }
            prop_assert_eq!(resolve(&blobs, n), want);
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut ids = vec![None; 10];
            let _ = apply_blob(&mut ids, &data, "m");
        }
    }

    #[test]
    fn plans_deltas_until_they_grow_large() {
        let old: Vec<Id> = (0..1000u32).map(|i| Id([(i % 200) as u8; 32])).collect();
        let map = ChunkMap {
            chunk_size: 4096,
            chunks: 1000,
            layers: vec![MapLayer {
                kind: LayerKind::Full,
                entries: 1000,
                blobs: vec![],
            }],
        };
        let mut new = old.clone();
        for i in (0..1000).step_by(50) {
            new[i] = Id([255; 32]);
        }
        match plan(&new, Some((&map, &old)), 4096) {
            Plan::Delta(c) => assert_eq!(c.len(), 20),
            Plan::Full => panic!("20 changes of 1000 should be a delta"),
        }
        let all: Vec<Id> = (0..1000).map(|_| Id([254; 32])).collect();
        assert!(matches!(plan(&all, Some((&map, &old)), 4096), Plan::Full));
        assert!(matches!(plan(&new, Some((&map, &old)), 8192), Plan::Full));
        assert!(matches!(plan(&new, None, 4096), Plan::Full));
    }
}
