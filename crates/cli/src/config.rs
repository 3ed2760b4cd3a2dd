//! The configuration file (`--config FILE` or `LEDGERVAULT_CONFIG`), TOML.
//!
//! ```toml
//! [forget]
//! keep_daily = 14
//! keep_weekly = 8
//! keep_monthly = 24
//! keep_yearly = 7
//! keep_within = "30d"
//! keep_tags = ["year-end"]
//! protect_days = 90
//! suspect_share = 0.10
//!
//! [verify]
//! scratch = "/var/tmp"
//! scratch_postgres = "postgres://backup@db.internal:5432/"
//!
//! [[verify.checks]]
//! name = "no negative stock"
//! sql = "SELECT id, qty FROM items WHERE qty < 0"
//! database = "firm.db"
//! ```
//!
//! Every key is optional. Unknown keys are an error, so a typo does not
//! silently leave the default in force.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ledgervault_repo::Policy;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub forget: ForgetConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    /// `[client]`: the tenant map of per-client backup and restore.
    #[serde(default)]
    pub client: ledgervault_tenant::TenantConfig,
}

/// `[verify]`: restore drills.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Where drills restore to (a fresh subfolder each time).
    pub scratch: Option<std::path::PathBuf>,
    /// The PostgreSQL server drills of PostgreSQL databases use.
    pub scratch_postgres: Option<String>,
    /// Custom accounting checks: queries that must return no rows.
    #[serde(default)]
    pub checks: Vec<CustomCheck>,
}

impl std::fmt::Debug for VerifyConfig {
    /// The scratch server's URL shows without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyConfig")
            .field("scratch", &self.scratch)
            .field(
                "scratch_postgres",
                &self
                    .scratch_postgres
                    .as_deref()
                    .map(ledgervault_postgres::redact),
            )
            .field("checks", &self.checks)
            .finish()
    }
}

/// `[[verify.checks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCheck {
    pub name: String,
    /// A query that returns the offending rows, and no rows when all is well.
    pub sql: String,
    /// Only for databases with this file name (default: every database).
    pub database: Option<String>,
}

/// `[forget]`: the retention policy used when `forget` gets no `--keep-*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Protected and reason-labelled snapshots younger than this are kept.
    pub protect_days: Option<u32>,
}

/// `[backup]`: thresholds of the ransomware guard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Share of a database's pages that may turn into random-looking bytes
    /// since the last backup before the snapshot is marked suspect.
    pub suspect_share: Option<f64>,
}

impl Config {
    /// Loads `path`, or the defaults when no file is configured.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let c: Config = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "config file {}: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            )
        })?;
        if let Some(s) = c.backup.suspect_share {
            if !(s > 0.0 && s <= 1.0) {
                return Err(anyhow!(
                    "config file {}: backup.suspect_share must be above 0 and at most 1, not {s}",
                    path.display()
                ));
            }
        }
        for (i, check) in c.verify.checks.iter().enumerate() {
            if check.name.trim().is_empty() || check.sql.trim().is_empty() {
                return Err(anyhow!(
                    "config file {}: verify.checks[{i}] needs a name and an sql query",
                    path.display()
                ));
            }
        }
        if let Some(w) = &c.forget.keep_within {
            parse_duration(w)
                .map_err(|e| anyhow!("config file {}: forget.keep_within: {e}", path.display()))?;
        }
        Ok(c)
    }

    /// The retention policy this file sets, over the accounting default:
    /// the default applies unless the file sets at least one keep rule.
    pub fn policy(&self) -> Policy {
        let f = &self.forget;
        let any = f.keep_last.is_some()
            || f.keep_hourly.is_some()
            || f.keep_daily.is_some()
            || f.keep_weekly.is_some()
            || f.keep_monthly.is_some()
            || f.keep_yearly.is_some()
            || f.keep_within.is_some()
            || !f.keep_tags.is_empty();
        if !any {
            return Policy::accounting_default();
        }
        Policy {
            last: f.keep_last.unwrap_or(0),
            hourly: f.keep_hourly.unwrap_or(0),
            daily: f.keep_daily.unwrap_or(0),
            weekly: f.keep_weekly.unwrap_or(0),
            monthly: f.keep_monthly.unwrap_or(0),
            yearly: f.keep_yearly.unwrap_or(0),
            within: f
                .keep_within
                .as_deref()
                .map(|w| parse_duration(w).expect("validated on load")),
            tags: f.keep_tags.clone(),
        }
    }
}

/// Parses `90d`, `12h`, `2w`, `1y` (365 days), `6m` (30-day months) or a
/// combination like `1y6m`.
pub fn parse_duration(s: &str) -> std::result::Result<chrono::Duration, String> {
    let mut total = 0i64;
    let mut num = String::new();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 2w or 1y"))?;
        num.clear();
        let hours = match c {
            'h' => 1,
            'd' => 24,
            'w' => 24 * 7,
            'm' => 24 * 30,
            'y' => 24 * 365,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use h, d, w, m or y)")),
        };
        total = n
            .checked_mul(hours)
            .and_then(|h| total.checked_add(h))
            .filter(|&t| t <= 24 * 365 * 1000)
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if !num.is_empty() {
        return Err(format!("{s:?} needs a unit, e.g. {num}d"));
    }
    Ok(chrono::Duration::hours(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_duration("1y6m").unwrap(),
            chrono::Duration::days(365 + 180)
        );
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999y").is_err());
    }

    #[test]
    fn policy_from_file_replaces_the_default() {
        let c: Config = toml::from_str("[forget]\nkeep_daily = 3\n").unwrap();
        assert_eq!(
            c.policy(),
            Policy {
                daily: 3,
                ..Policy::none()
            }
        );
        assert_eq!(Config::default().policy(), Policy::accounting_default());
        assert!(toml::from_str::<Config>("[forget]\nkeep_dayly = 3\n").is_err());
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let c: Config =
            toml::from_str("[verify]\nscratch_postgres = \"postgres://ann:hunter2@db:5432/\"\n")
                .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://ann:***@db:5432/"), "{shown}");
    }
}
