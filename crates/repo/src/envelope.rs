//! Sealed files: index, snapshot, lock and mark files.
//!
//! ```text
//! file = magic:4 version:u8 seal(aad = magic ‖ version, compressed(payload))
//! ```
//! The file's name is the BLAKE3 hash of all its bytes, so a renamed or
//! altered file is caught before decryption.

use crate::compress;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::pack::{check_version, decompress_bounded};
use crate::FORMAT_VERSION;

/// The kinds of sealed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Index,
    Snapshot,
    Lock,
    /// A note about a snapshot (protected, suspect cleared, drill passed).
    Mark,
}

impl FileKind {
    /// The four magic bytes.
    pub fn magic(self) -> &'static [u8; 4] {
        match self {
            FileKind::Index => b"LVIX",
            FileKind::Snapshot => b"LVSN",
            FileKind::Lock => b"LVLK",
            FileKind::Mark => b"LVMK",
        }
    }

    /// The backend folder holding this kind.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Index => "index/",
            FileKind::Snapshot => "snapshots/",
            FileKind::Lock => "locks/",
            FileKind::Mark => "marks/",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshot",
            FileKind::Lock => "lock",
            FileKind::Mark => "mark",
        }
    }
}

fn aad(kind: FileKind, version: u8) -> [u8; 5] {
    let m = kind.magic();
    [m[0], m[1], m[2], m[3], version]
}

/// Seals `payload` as a file of `kind`.
pub fn seal_file(keys: &Keys, kind: FileKind, payload: &[u8]) -> Vec<u8> {
    let v = FORMAT_VERSION as u8;
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    out.extend_from_slice(kind.magic());
    out.push(v);
    out.extend_from_slice(&keys.seal(&aad(kind, v), &compress::compress(3, payload)));
    out
}

/// Opens a file of `kind`; `object` names it in errors (`index/ab12…`).
pub fn open_file(keys: &Keys, kind: FileKind, bytes: &[u8], object: &str) -> Result<Vec<u8>> {
    if bytes.len() < 5 || &bytes[..4] != kind.magic() {
        return Err(Error::corrupt(
            object,
            format!("not a ledgervault {} file (bad magic)", kind.name()),
        ));
    }
    check_version(bytes[4] as u32, object)?;
    let plain = keys
        .open(&aad(kind, bytes[4]), &bytes[5..])
        .map_err(|_| Error::corrupt(object, "failed authentication (altered or truncated)"))?;
    decompress_bounded(&plain, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let keys = Keys::derive(&MasterKey::generate());
            let f = seal_file(&keys, FileKind::Snapshot, &payload);
            prop_assert_eq!(open_file(&keys, FileKind::Snapshot, &f, "s").unwrap(), payload);
            prop_assert!(open_file(&keys, FileKind::Index, &f, "s").is_err());
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = Keys::derive(&MasterKey::generate());
            let _ = open_file(&keys, FileKind::Lock, &data, "l");
        }
    }
}
