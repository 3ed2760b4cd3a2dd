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
}

impl FrameCache {
    pub fn new(cap: usize) -> FrameCache {
        FrameCache {
            frames: Mutex::new(FrameSlots::default()),
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
            if let Some(s) = f.slots.get(&key) {
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
            }
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
