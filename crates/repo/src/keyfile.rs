//! Key files: the master key wrapped under a password.
//!
//! A key file is plaintext JSON holding Argon2id parameters, a random salt
//! and the sealed master key. Several key files may wrap the same master key
//! (one per person or machine); removing one revokes that password without
//! re-encrypting anything.

use serde::{Deserialize, Serialize};

use crate::crypto::{unwrap_master, wrap_master, KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::FORMAT_VERSION;

/// Folder of key files.
pub const KEYS_DIR: &str = "keys/";
const KEY_AAD: &[u8] = b"LVKEY\x01";

/// A stored key file (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub user: String,
    pub kdf: KdfSection,
    /// Hex of `nonce ‖ sealed master key ‖ tag`.
    pub master_key: String,
}

/// The key derivation section of a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KdfSection {
    /// Always `argon2id`.
    pub algorithm: String,
    #[serde(flatten)]
    pub params: KdfParams,
    /// Hex of 16 random bytes.
    pub salt: String,
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn create(master: &MasterKey, password: &[u8], params: KdfParams) -> Result<KeyFile> {
        let mut salt = [0u8; 16];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut salt);
        let kek = params.derive(password, &salt).map_err(Error::Invalid)?;
        Ok(KeyFile {
            version: FORMAT_VERSION,
            created: chrono::Utc::now(),
            host: crate::host_name(),
            user: crate::user_name(),
            kdf: KdfSection {
                algorithm: "argon2id".into(),
                params,
                salt: hex::encode(salt),
            },
            master_key: hex::encode(wrap_master(&kek, KEY_AAD, master)),
        })
    }

    /// Unwraps the master key; `Ok(None)` when the password is wrong.
    pub fn unlock(&self, password: &[u8], object: &str) -> Result<Option<MasterKey>> {
        if self.version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                what: object.into(),
                found: self.version,
                supported: FORMAT_VERSION,
                program: env!("CARGO_PKG_VERSION"),
            });
        }
        if self.kdf.algorithm != "argon2id" {
            return Err(Error::corrupt(
                object,
                format!("unknown key derivation {:?}", self.kdf.algorithm),
            ));
        }
        let salt =
            hex::decode(&self.kdf.salt).map_err(|_| Error::corrupt(object, "salt is not hex"))?;
        let sealed = hex::decode(&self.master_key)
            .map_err(|_| Error::corrupt(object, "master_key is not hex"))?;
        let kek = self
            .kdf
            .params
            .derive(password, &salt)
            .map_err(|e| Error::corrupt(object, e))?;
        Ok(unwrap_master(&kek, KEY_AAD, &sealed))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("key file serializes");
        v.push(b'\n');
        v
    }

    pub fn decode(bytes: &[u8], object: &str) -> Result<KeyFile> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(object, format!("not a key file: {e}")))
    }

    /// The path a key file is stored under.
    pub fn path_for(bytes: &[u8]) -> (Id, String) {
        let id = Id::of_object(bytes);
        (id, format!("{KEYS_DIR}{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_unlock_and_wrong_password() {
        let m = MasterKey::generate();
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let kf = KeyFile::create(&m, b"correct horse", p).unwrap();
        let back = KeyFile::decode(&kf.encode(), "k").unwrap();
        assert_eq!(back.unlock(b"correct horse", "k").unwrap().unwrap().0, m.0);
        assert!(back.unlock(b"wrong", "k").unwrap().is_none());
        assert!(KeyFile::decode(b"[]", "k").is_err());
    }
}
