//! A small cache of decoded frames (see [`FrameCache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::id::Id;

/// Frames decoded lately, shared by threads: many small blobs (small
/// files, trees) share one frame, and without this a frame holding a
/// hundred of them was read and decompressed a hundred times. A frame
/// being decoded is waited for, not decoded twice. Only authenticated
/// frames are kept; callers still verify every blob they take.
pub struct FrameCache {
    frames: Mutex<FrameSlots>,
    /// Decoded bytes kept at most (the frame being used aside).
    cap: usize,
}

/// One frame's place in the cache: empty until a job has decoded it.
type FrameSlot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

#[derive(Default)]
struct FrameSlots {
    slots: HashMap<(Id, u64), FrameSlot>,
    /// Oldest first, with each frame's decoded size.
    order: std::collections::VecDeque<((Id, u64), usize)>,
    bytes: usize,
    /// Uses still to come of each frame, when the caller knows them: a
    /// frame leaves the cache at its last use, so the cache holds only
    /// frames that jobs still need (a frame of small files until the last
    /// of them, not a window of frames nobody will ask for again).
    uses: Option<HashMap<(Id, u64), usize>>,
}

impl FrameCache {
    pub fn new(cap: usize) -> FrameCache {
        FrameCache {
            frames: Mutex::new(FrameSlots::default()),
            cap,
        }
    }

    /// A cache for a known sequence of reads: `uses` counts how many times
    /// each frame will be asked for.
    pub fn with_uses(cap: usize, uses: HashMap<(Id, u64), usize>) -> FrameCache {
        FrameCache {
            frames: Mutex::new(FrameSlots {
                uses: Some(uses),
                ..FrameSlots::default()
            }),
            cap,
        }
    }

    /// The frame at `key`, decoded by `open` unless another job has it.
    pub fn get(
        &self,
        key: (Id, u64),
        raw_len: u32,
        open: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        let slot = {
            let mut f = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            let slot = if let Some(s) = f.slots.get(&key) {
                s.clone()
            } else {
                let s: FrameSlot = Arc::default();
                f.slots.insert(key, s.clone());
                f.order.push_back((key, raw_len as usize));
                f.bytes += raw_len as usize;
                while f.bytes > self.cap && f.order.len() > 1 {
                    let (old, n) = f.order.pop_front().expect("not empty");
                    f.slots.remove(&old);
                    f.bytes -= n;
                }
                s
            };
            let last = f
                .uses
                .as_mut()
                .and_then(|u| u.get_mut(&key))
                .is_some_and(|n| {
                    *n = n.saturating_sub(1);
                    *n == 0
                });
            if last {
                // Its last use: this caller holds it; nobody else will ask.
                f.slots.remove(&key);
                if let Some(at) = f.order.iter().position(|(k, _)| *k == key) {
                    let (_, n) = f.order.remove(at).expect("found");
                    f.bytes -= n;
                }
            }
            slot
        };
        let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(frame) = held.as_ref() {
            return Ok(frame.clone());
        }
        let frame = Arc::new(open()?);
        *held = Some(frame.clone());
        Ok(frame)
    }
}

#[cfg(test)]
mod uses_tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_frame_leaves_at_its_last_use_and_is_decoded_once_before() {
        let (a, b) = ((Id([1; 32]), 0), (Id([2; 32]), 0));
        let cache = FrameCache::with_uses(1 << 20, [(a, 2), (b, 1)].into());
        let opened = Cell::new(0);
        let open = || {
            opened.set(opened.get() + 1);
            Ok(vec![7u8; 100])
        };
        cache.get(a, 100, open).unwrap();
        cache.get(b, 100, open).unwrap();
        assert_eq!(opened.get(), 2);
        assert_eq!(
            cache.frames.lock().unwrap().bytes,
            100,
            "b left at its only use"
        );
        cache.get(a, 100, open).unwrap();
        assert_eq!(opened.get(), 2, "a was kept for its second use");
        let f = cache.frames.lock().unwrap();
        assert_eq!((f.bytes, f.slots.len(), f.order.len()), (0, 0, 0));
    }
}
