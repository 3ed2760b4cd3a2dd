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
/// Append-only keys bind the flag into the sealing, so editing the JSON to
/// drop it makes the key file unusable instead of turning it into a
/// full-access key.
const KEY_AAD_APPEND_ONLY: &[u8] = b"LVKEY\x01append-only";

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
    /// Sessions opened with this key can add but never delete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
    /// Hex of the keyed checksum of the config's bytes
    /// ([`MasterKey::config_checksum`]); absent in key files written before
    /// it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_checksum: Option<String>,
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

fn aad(append_only: bool) -> &'static [u8] {
    if append_only {
        KEY_AAD_APPEND_ONLY
    } else {
        KEY_AAD
    }
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        append_only: bool,
        config: &[u8],
    ) -> Result<KeyFile> {
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
            master_key: hex::encode(wrap_master(&kek, aad(append_only), master)),
            append_only,
            config_checksum: Some(hex::encode(master.config_checksum(config))),
        })
    }

    /// Whether `config` is the config this key file was written for (true
    /// when the key file predates the checksum).
    pub fn config_matches(&self, master: &MasterKey, config: &[u8]) -> bool {
        match &self.config_checksum {
            None => true,
            Some(h) => hex::encode(master.config_checksum(config)) == *h,
        }
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
        Ok(unwrap_master(&kek, aad(self.append_only), &sealed))
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
        let kf = KeyFile::create(&m, b"correct horse", p, false, b"{}").unwrap();
        let back = KeyFile::decode(&kf.encode(), "k").unwrap();
        assert_eq!(back.unlock(b"correct horse", "k").unwrap().unwrap().0, m.0);
        assert!(back.unlock(b"wrong", "k").unwrap().is_none());
        assert!(KeyFile::decode(b"[]", "k").is_err());
    }

    #[test]
    fn dropping_the_append_only_flag_breaks_the_key() {
        let m = MasterKey::generate();
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let kf = KeyFile::create(&m, b"pw", p, true, b"{}").unwrap();
        let text = String::from_utf8(kf.encode()).unwrap();
        assert!(text.contains("\"append_only\": true"), "{text}");
        assert!(KeyFile::decode(text.as_bytes(), "k")
            .unwrap()
            .unlock(b"pw", "k")
            .unwrap()
            .is_some());
        let tampered = text.replace("\"append_only\": true", "\"append_only\": false");
        let t = KeyFile::decode(tampered.as_bytes(), "k").unwrap();
        assert!(t.unlock(b"pw", "k").unwrap().is_none());
    }
}
