//! Content and object identifiers.
//!
//! An [`Id`] is 32 bytes. Blob ids are keyed BLAKE3 hashes of the plaintext
//! (see `crypto`), so they reveal nothing to someone without the master key.
//! Object ids (pack, index and snapshot file names) are plain BLAKE3 hashes of
//! the stored, already encrypted bytes, so a file's name checks its content.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier, printed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The plain BLAKE3 hash of `data`: the name of a stored object.
    pub fn of_object(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// A random id, for lock files and repository ids.
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut b[..]);
        Id(b)
    }

    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Id> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Id(b))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        Id::from_hex(&s).ok_or_else(|| serde::de::Error::custom("an id must be 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(b in proptest::array::uniform32(any::<u8>())) {
            let id = Id(b);
            prop_assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(Id::from_hex("abc").is_none());
        assert!(Id::from_hex(&"zz".repeat(32)).is_none());
    }
}
