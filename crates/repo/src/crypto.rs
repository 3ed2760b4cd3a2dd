//! Keys, sealing and content ids.
//!
//! One random 256-bit master key protects a repository. Four subkeys are
//! derived from it with BLAKE3's key derivation, each for one purpose:
//! the AEAD key that seals every stored byte, the key for content ids, the
//! seed of the chunker's gear table (so chunk boundaries do not leak
//! fingerprints of known files), and the key that vouches for copies of
//! this repository's snapshots written elsewhere.
//!
//! Sealing is XChaCha20-Poly1305 with a fresh random 192-bit nonce per call.
//! The nonce is long enough that random nonces never collide in practice, no
//! matter how many objects a repository holds, and the cipher is fast and
//! constant-time in software, without AES instructions. `docs/FORMAT.md` gives
//! the full reasoning.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::id::Id;
use crate::idbatch::BatchHasher;

/// Bytes of nonce at the start of every sealed box.
pub const NONCE_LEN: usize = 24;
/// Bytes of authentication tag at the end of every sealed box.
pub const TAG_LEN: usize = 16;
/// Total bytes sealing adds.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const CONTEXT_SEAL: &str = "ledgervault 2026-11 seal key";
const CONTEXT_ID: &str = "ledgervault 2026-11 content id key";
const CONTEXT_COPY: &str = "ledgervault 2026-12 copy seal key";
const CONTEXT_CHUNKER: &str = "ledgervault 2026-11 chunker seed";
const CONTEXT_CONFIG: &str = "ledgervault 2026-11 config checksum";

/// The random master key. Never stored in the clear.
#[derive(Clone)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> MasterKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    /// Keyed BLAKE3 of the repository config's bytes, stored in key files
    /// so that an altered config is noticed once a password opens the
    /// repository (the config itself is plaintext and carries no tag).
    pub fn config_checksum(&self, config: &[u8]) -> [u8; 32] {
        let k = blake3::derive_key(CONTEXT_CONFIG, &self.0);
        *blake3::keyed_hash(&k, config).as_bytes()
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The working keys derived from a [`MasterKey`].
pub struct Keys {
    aead: XChaCha20Poly1305,
    id_key: [u8; 32],
    ids: BatchHasher,
    chunker_seed: u64,
    copy_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Authentication failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl Keys {
    /// Derives the working keys.
    pub fn derive(master: &MasterKey) -> Keys {
        let seal = blake3::derive_key(CONTEXT_SEAL, &master.0);
        let id_key = blake3::derive_key(CONTEXT_ID, &master.0);
        let seed = blake3::derive_key(CONTEXT_CHUNKER, &master.0);
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        Keys {
            aead: XChaCha20Poly1305::new(&seal.into()),
            id_key,
            ids: BatchHasher::new(id_key),
            // Zero would mean "unseeded" to the chunker; never use it.
            chunker_seed: u64::from_le_bytes(s) | 1,
            copy_key: blake3::derive_key(CONTEXT_COPY, &master.0),
        }
    }

    /// The tag with which this (source) repository vouches for `doc`, a
    /// copy of one of its snapshots written to the repository `dest`:
    /// keyed BLAKE3, so only a holder of this repository's key can make it.
    pub fn copy_seal(&self, dest: &Id, doc: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.copy_key);
        h.update(&dest.0);
        h.update(doc);
        h.finalize()
    }

    /// The content id of a plaintext blob: keyed BLAKE3.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// The content ids of each `size`-byte chunk of `run`, in order (the
    /// last may be short; an empty run is one empty blob): the same ids as
    /// [`blob_id`](Self::blob_id) of each, several hashed side by side.
    pub fn blob_ids_of_run(&self, run: &[u8], size: usize) -> Vec<Id> {
        let mut raw = Vec::with_capacity(run.len().div_ceil(size.max(1)));
        self.ids.hash_run(run, size, &mut raw);
        raw.into_iter().map(Id).collect()
    }

    /// Seed for the content-defined chunker's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Seals `plain`, binding `aad`: `nonce(24) ‖ ciphertext ‖ tag(16)`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        seal_with(&self.aead, aad, plain)
    }

    /// Seals in place: `buf` holds [`NONCE_LEN`] bytes of room followed by
    /// the plaintext. Fills in the nonce, encrypts, appends the tag, and
    /// returns the same box [`seal`](Self::seal) would make, without copying.
    pub fn seal_prefixed(&self, aad: &[u8], mut buf: Vec<u8>) -> Vec<u8> {
        assert!(buf.len() >= NONCE_LEN, "no room for the nonce");
        let (nonce, body) = buf.split_at_mut(NONCE_LEN);
        rand::rngs::OsRng.fill_bytes(nonce);
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, body)
            .expect("XChaCha20-Poly1305 encryption of a bounded message");
        buf.extend_from_slice(&tag);
        buf
    }

    /// Opens a box made by [`seal`](Self::seal) with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(&self.aead, aad, sealed)
    }
}

pub(crate) fn seal_with(aead: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = aead
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        // Encryption fails only for messages longer than 256 GiB.
        .expect("XChaCha20-Poly1305 encryption of a bounded message");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

pub(crate) fn open_with(
    aead: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| OpenError)
}

/// Argon2id parameters stored in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter of a second on these machines.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Checks the parameters are ones Argon2id accepts and not absurdly
    /// large (a hostile key file must not make us allocate 4 TiB).
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_kib < 8 * self.parallelism.max(1) || self.memory_kib > 4 * 1024 * 1024 {
            return Err(format!(
                "argon2 memory {} KiB out of range",
                self.memory_kib
            ));
        }
        if self.iterations == 0 || self.iterations > 64 {
            return Err(format!(
                "argon2 iterations {} out of range",
                self.iterations
            ));
        }
        if self.parallelism == 0 || self.parallelism > 64 {
            return Err(format!(
                "argon2 parallelism {} out of range",
                self.parallelism
            ));
        }
        Ok(())
    }

    /// Derives a 32-byte key-encryption key from `password`.
    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
        self.validate()?;
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| e.to_string())?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// Wraps the master key under a password-derived key.
pub(crate) fn wrap_master(kek: &[u8; 32], aad: &[u8], master: &MasterKey) -> Vec<u8> {
    seal_with(&XChaCha20Poly1305::new(kek.into()), aad, &master.0)
}

/// Unwraps the master key; `None` means the password was wrong or the key
/// file was altered.
pub(crate) fn unwrap_master(kek: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<MasterKey> {
    let plain = open_with(&XChaCha20Poly1305::new(kek.into()), aad, sealed).ok()?;
    let bytes: [u8; 32] = plain.try_into().ok()?;
    Some(MasterKey(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..8)) {
            let keys = Keys::derive(&MasterKey::generate());
            let sealed = keys.seal(&aad, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(keys.open(&aad, &sealed).unwrap(), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<usize>(), bit in 0u8..8) {
            let keys = Keys::derive(&MasterKey::generate());
            let mut sealed = keys.seal(b"x", &data);
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(keys.open(b"x", &sealed).is_err());
        }
    }

    #[test]
    fn in_place_sealing_opens_like_seal() {
        let keys = Keys::derive(&MasterKey::generate());
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"ledger lines");
        let sealed = keys.seal_prefixed(b"a", buf);
        assert_eq!(sealed.len(), 12 + SEAL_OVERHEAD);
        assert_eq!(keys.open(b"a", &sealed).unwrap(), b"ledger lines");
    }

    #[test]
    fn aad_and_key_are_bound() {
        let a = Keys::derive(&MasterKey::generate());
        let b = Keys::derive(&MasterKey::generate());
        let sealed = a.seal(b"index", b"secret");
        assert!(a.open(b"snapshot", &sealed).is_err());
        assert!(b.open(b"index", &sealed).is_err());
        assert!(a.open(b"index", &sealed[..10]).is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = Keys::derive(&MasterKey::generate());
        let b = Keys::derive(&MasterKey::generate());
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Id(*blake3::hash(b"x").as_bytes()));
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
    }

    #[test]
    fn master_wrapping() {
        let m = MasterKey::generate();
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let kek = p.derive(b"pw", b"saltsaltsaltsalt").unwrap();
        let w = wrap_master(&kek, b"k", &m);
        assert_eq!(unwrap_master(&kek, b"k", &w).unwrap().0, m.0);
        let bad = p.derive(b"pw2", b"saltsaltsaltsalt").unwrap();
        assert!(unwrap_master(&bad, b"k", &w).is_none());
        assert!(KdfParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1
        }
        .validate()
        .is_err());
    }
}
