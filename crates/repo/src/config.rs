//! The repository config: the only plaintext object besides key files.
//!
//! It holds what every writer must agree on (format version, chunker
//! parameters, pack size) and nothing secret. Options that are only a
//! writer's preference (compression level, threads) are not stored here.

use serde::{Deserialize, Serialize};

use crate::chunker::CdcParams;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::FORMAT_VERSION;

/// Path of the config object.
pub const CONFIG_PATH: &str = "config";

/// Smallest and largest pack sizes a config may ask for.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = (256 * 1024)..=(512 * 1024 * 1024);

/// The stored repository config (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Format version; readers refuse versions above their own.
    pub format_version: u32,
    /// Random repository id.
    pub id: Id,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Content-defined chunking parameters.
    pub chunker: CdcParams,
    /// Content-defined chunking of database dumps (PostgreSQL): smaller
    /// chunks, because a day's edits are scattered rows.
    #[serde(default = "CdcParams::dump")]
    pub dump_chunker: CdcParams,
    /// Days every object stays locked against deletion and overwrite (S3
    /// Object Lock, compliance mode). Set only in configs of format version
    /// [`IMMUTABLE_CONFIG_VERSION`], so that an older ledgervault, which
    /// would not keep the locks, refuses the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable_days: Option<u32>,
}

/// The config version of immutable repositories (everything else in them
/// is at [`FORMAT_VERSION`]).
pub const IMMUTABLE_CONFIG_VERSION: u32 = 2;
/// The longest immutability a config may ask for (about 100 years).
pub const MAX_IMMUTABLE_DAYS: u32 = 36_500;

impl RepoConfig {
    /// A fresh config with `pack_size`.
    pub fn new(pack_size: u32) -> Result<Self> {
        let c = RepoConfig {
            format_version: FORMAT_VERSION,
            id: Id::random(),
            pack_size,
            chunker: CdcParams::default(),
            dump_chunker: CdcParams::dump(),
            immutable_days: None,
        };
        c.validate().map_err(Error::Invalid)?;
        Ok(c)
    }

    /// Makes every object of the repository locked for `days` days.
    pub fn set_immutable(&mut self, days: u32) -> Result<()> {
        self.immutable_days = Some(days);
        self.format_version = IMMUTABLE_CONFIG_VERSION;
        self.validate().map_err(Error::Invalid)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(d) = self.immutable_days {
            if d == 0 || d > MAX_IMMUTABLE_DAYS {
                return Err(format!(
                    "immutable days {d} is outside 1..={MAX_IMMUTABLE_DAYS}"
                ));
            }
            if self.format_version < IMMUTABLE_CONFIG_VERSION {
                return Err("immutable_days in a config below version 2".into());
            }
        }
        if !PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Err(format!(
                "pack size {} is outside {}..={} bytes",
                self.pack_size,
                PACK_SIZE_RANGE.start(),
                PACK_SIZE_RANGE.end()
            ));
        }
        self.chunker.validate()?;
        self.dump_chunker.validate()
    }

    /// Parses and validates a stored config. The version is read first, so a
    /// config from a newer ledgervault is refused as such even if its other
    /// fields changed.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(CONFIG_PATH, format!("not valid JSON: {e}")))?;
        let version = v
            .get("format_version")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| Error::corrupt(CONFIG_PATH, "no format_version"))?;
        if version > FORMAT_VERSION.max(IMMUTABLE_CONFIG_VERSION) as u64 {
            return Err(Error::NewerFormat {
                what: "the repository".into(),
                found: version.min(u32::MAX as u64) as u32,
                supported: FORMAT_VERSION.max(IMMUTABLE_CONFIG_VERSION),
                program: env!("CARGO_PKG_VERSION"),
            });
        }
        let c: RepoConfig =
            serde_json::from_value(v).map_err(|e| Error::corrupt(CONFIG_PATH, e.to_string()))?;
        c.validate().map_err(|e| Error::corrupt(CONFIG_PATH, e))?;
        Ok(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = serde_json::to_vec_pretty(self).expect("config serializes");
        s.push(b'\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_newer_version() {
        let c = RepoConfig::new(16 << 20).unwrap();
        assert_eq!(RepoConfig::decode(&c.encode()).unwrap(), c);
        let mut v: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
        v["format_version"] = 7.into();
        v["something_new"] = true.into();
        let e = RepoConfig::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("newer ledgervault"), "{e}");
        assert!(RepoConfig::decode(b"{").is_err());
        assert!(RepoConfig::new(10).is_err());
        let mut i = RepoConfig::new(16 << 20).unwrap();
        i.set_immutable(30).unwrap();
        let back = RepoConfig::decode(&i.encode()).unwrap();
        assert_eq!((back.immutable_days, back.format_version), (Some(30), 2));
        assert!(i.set_immutable(0).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
        v["immutable_days"] = 5.into();
        assert!(RepoConfig::decode(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
        v["chunker"]["max_size"] = 1.into();
        assert!(matches!(
            RepoConfig::decode(&serde_json::to_vec(&v).unwrap()),
            Err(Error::Corrupt { .. })
        ));
    }
}
