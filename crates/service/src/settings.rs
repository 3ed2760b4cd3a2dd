//! The settings a person may change without a text editor: the daemon's
//! schedules, the alert channels and when alerts fire, and the retention
//! rules. They are written back into the config file itself, with
//! everything else in it (comments, order, other tables) left as it was:
//! the file is edited as a TOML document, checked by loading it as the
//! daemon would, and replaced atomically, only if nobody changed it since
//! it was read.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::config::Config;

/// The config file as read: its text and the hash that proves an edit
/// starts from it.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub text: String,
    /// BLAKE3 of the text, hex.
    pub version: String,
}

/// The largest config file edited (as large as one that loads).
const LIMIT: u64 = crate::redact::CONFIG_FILE_LIMIT;

/// Reads the config file for editing.
pub fn read(path: &Path) -> Result<ConfigFile> {
    let text = crate::redact::read_limited_string(path, LIMIT, "the config file")?;
    let version = version_of(&text);
    Ok(ConfigFile { text, version })
}

fn version_of(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// One change to the settings. `None` removes the key, so the default
/// applies again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `[schedule] KEY` (backup, verify, prune, watch).
    Schedule(String, Option<String>),
    /// The `schedule` of the `[[copy]]` named so.
    CopySchedule(String, Option<String>),
    /// `[alerts] KEY` (no_backup_within, full_within).
    AlertAfter(String, Option<String>),
    /// The recipients of `[[alerts.email]]` number N (from 0).
    EmailTo(usize, Vec<String>),
    /// Removes `[[alerts.webhook]]` number N.
    RemoveWebhook(usize),
    /// Adds a webhook: its URL and format (json, slack, teams).
    AddWebhook(String, String),
    /// `[forget] KEY` (keep_last, keep_hourly, keep_daily, keep_weekly,
    /// keep_monthly, keep_yearly, protect_days: numbers; keep_within: a
    /// duration).
    Retention(String, Option<String>),
}

const SCHEDULE_KEYS: [&str; 4] = ["backup", "verify", "prune", "watch"];
const ALERT_KEYS: [&str; 2] = ["no_backup_within", "full_within"];
const NUMBER_KEYS: [&str; 7] = [
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "protect_days",
];

/// Applies `edits` to the config file at `path`, if it still is the
/// version `expected`; returns the config as it now loads. Nothing is
/// written when an edit is refused or the result does not load.
pub fn apply(path: &Path, expected: &str, edits: &[Edit]) -> Result<Config> {
    apply_with(path, expected, |_| Ok(edits.to_vec())).map(|(c, _)| c)
}

/// As [`apply`], with the edits made from the config as the file holds it
/// (`edits_for` sees exactly the version the page showed, so a position
/// in a list means what it meant there). Saves in this process go one at
/// a time, so two cannot both pass the version check.
pub fn apply_with(
    path: &Path,
    expected: &str,
    edits_for: impl FnOnce(&Config) -> Result<Vec<Edit>>,
) -> Result<(Config, Vec<Edit>)> {
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SAVING.lock().unwrap_or_else(|p| p.into_inner());
    let current = read(path)?;
    if current.version != expected {
        bail!("the config file changed since this page was opened; nothing was saved (open the settings again)");
    }
    let before = Config::parse(&current.text, path)
        .map_err(|e| anyhow!("the config file does not load, so nothing was saved: {e:#}"))?;
    let edits = edits_for(&before)?;
    if edits.is_empty() {
        // Nothing to change: nothing written.
        return Ok((before, edits));
    }
    let text = edit_text(&current.text, &edits)?;
    let config = Config::parse(&text, path).map_err(|e| anyhow!("nothing was saved: {e:#}"))?;
    replace_file(path, text.as_bytes())?;
    Ok((config, edits))
}

/// `text` with `edits` made.
pub fn edit_text(text: &str, edits: &[Edit]) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| anyhow!("the config file is not valid TOML: {e}"))?;
    for e in edits {
        match e {
            Edit::Schedule(key, v) => {
                if !SCHEDULE_KEYS.contains(&key.as_str()) {
                    bail!("there is no schedule {key:?}");
                }
                set(
                    table(&mut doc, "schedule")?,
                    key,
                    v.as_deref().map(one_line),
                )?;
            }
            Edit::CopySchedule(name, v) => {
                let copies = doc
                    .get_mut("copy")
                    .and_then(Item::as_array_of_tables_mut)
                    .ok_or_else(|| anyhow!("the config file has no [[copy]] {name:?}"))?;
                let t = copies
                    .iter_mut()
                    .find(|t| t.get("name").and_then(Item::as_str) == Some(name.as_str()))
                    .ok_or_else(|| anyhow!("the config file has no [[copy]] {name:?}"))?;
                set(t, "schedule", v.as_deref().map(one_line))?;
            }
            Edit::AlertAfter(key, v) => {
                if !ALERT_KEYS.contains(&key.as_str()) {
                    bail!("there is no alert setting {key:?}");
                }
                set(table(&mut doc, "alerts")?, key, v.as_deref().map(one_line))?;
            }
            Edit::EmailTo(i, to) => {
                let t = channel(&mut doc, "email", *i)?;
                if to.is_empty() {
                    bail!("an email channel needs at least one recipient");
                }
                let mut a = Array::new();
                for addr in to {
                    a.push(one_line(addr)?);
                }
                t.insert("to", value(a));
            }
            Edit::RemoveWebhook(i) => {
                let list = channels(&mut doc, "webhook")?;
                if *i >= list.len() {
                    bail!("there is no webhook number {}", i + 1);
                }
                list.remove(*i);
            }
            Edit::AddWebhook(url, format) => {
                if !["json", "slack", "teams"].contains(&format.as_str()) {
                    bail!("a webhook's format is json, slack or teams, not {format:?}");
                }
                let alerts = table(&mut doc, "alerts")?;
                if !alerts.contains_key("webhook") {
                    alerts.insert("webhook", Item::ArrayOfTables(ArrayOfTables::new()));
                }
                let list = channels(&mut doc, "webhook")?;
                let mut t = Table::new();
                t.insert("url", value(one_line(url)?));
                t.insert("format", value(format.as_str()));
                list.push(t);
            }
            Edit::Retention(key, v) => {
                let v = match v.as_deref().map(one_line).transpose()? {
                    None => None,
                    Some(s) if NUMBER_KEYS.contains(&key.as_str()) => {
                        let n: u32 = s
                            .parse()
                            .map_err(|_| anyhow!("forget.{key} is a whole number, not {s:?}"))?;
                        Some(value(i64::from(n)))
                    }
                    Some(s) if key == "keep_within" => Some(value(s)),
                    Some(_) => bail!("there is no retention setting {key:?}"),
                };
                if !NUMBER_KEYS.contains(&key.as_str()) && key != "keep_within" {
                    bail!("there is no retention setting {key:?}");
                }
                let t = table(&mut doc, "forget")?;
                match v {
                    Some(item) => {
                        t.insert(key, item);
                    }
                    None => {
                        t.remove(key);
                    }
                }
            }
        }
    }
    Ok(doc.to_string())
}

/// A value on one line, as every edited setting is.
fn one_line(s: &str) -> Result<&str> {
    let s = s.trim();
    if s.chars().any(char::is_control) || s.len() > 2000 {
        bail!("a setting is one line of text");
    }
    Ok(s)
}

/// The top-level table `name`, made when missing.
fn table<'a>(doc: &'a mut DocumentMut, name: &str) -> Result<&'a mut Table> {
    if !doc.contains_key(name) {
        doc.insert(name, Item::Table(Table::new()));
    }
    doc.get_mut(name)
        .and_then(Item::as_table_mut)
        .ok_or_else(|| anyhow!("{name} in the config file is not a table"))
}

/// `[[alerts.KIND]]`.
fn channels<'a>(doc: &'a mut DocumentMut, kind: &str) -> Result<&'a mut ArrayOfTables> {
    doc.get_mut("alerts")
        .and_then(Item::as_table_mut)
        .and_then(|t| t.get_mut(kind))
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| anyhow!("the config file has no [[alerts.{kind}]]"))
}

fn channel<'a>(doc: &'a mut DocumentMut, kind: &str, i: usize) -> Result<&'a mut Table> {
    channels(doc, kind)?
        .get_mut(i)
        .ok_or_else(|| anyhow!("there is no {kind} channel number {}", i + 1))
}

/// Sets (or removes) a string key, keeping the comment before it.
fn set(t: &mut Table, key: &str, v: Option<Result<&str>>) -> Result<()> {
    match v.transpose()? {
        Some(s) => match t.get_mut(key).and_then(Item::as_value_mut) {
            Some(old) => {
                let decor = old.decor().clone();
                *old = s.into();
                *old.decor_mut() = decor;
            }
            None => {
                t.insert(key, value(s));
            }
        },
        None => {
            t.remove(key);
        }
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes`: a temporary file beside it
/// with the same permissions, flushed, renamed over it, and the folder
/// flushed, so a crash leaves the old file or the new one.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // A link to the config file stays a link: the file it names is
    // replaced.
    let path = &std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ledgervault-config-")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write in {} (the folder of the config file), so nothing was saved",
                dir.display()
            )
        })?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Its owner, group and mode, as they were; a file this process could
    // not give them to is not written.
    let made = tmp.as_file().metadata()?;
    if meta.uid() != made.uid() || meta.gid() != made.gid() {
        std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()))
            .with_context(|| {
                format!(
                    "cannot keep the owner and group of {} (this process runs as another user), so nothing was saved",
                    path.display()
                )
            })?;
    }
    std::fs::set_permissions(tmp.path(), meta.permissions())?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot replace {}: {}", path.display(), e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# The firm's backup settings.
[repository]
path = "/srv/backup" # on the second disk

[schedule]
# Nightly, after the office closes.
backup = "daily at 02:00"

[[copy]]
name = "offsite"
path = "/mnt/offsite"

[alerts]
[[alerts.email]]
smtp_host = "mail.example.com"
from = "backup@example.com"
to = ["it@example.com"]

[[alerts.webhook]]
url = "https://hooks.example.com/T000/B000/secret"
"#;

    #[test]
    fn edits_keep_comments_and_everything_else() {
        let out = edit_text(
            FILE,
            &[
                Edit::Schedule("backup".into(), Some("daily at 23:30".into())),
                Edit::Schedule("prune".into(), Some("weekly on saturday at 06:00".into())),
                Edit::CopySchedule("offsite".into(), Some("daily at 04:00".into())),
                Edit::EmailTo(0, vec!["it@example.com".into(), "boss@example.com".into()]),
                Edit::RemoveWebhook(0),
                Edit::AddWebhook("https://chat.example.com/hook".into(), "slack".into()),
                Edit::Retention("keep_daily".into(), Some("14".into())),
                Edit::AlertAfter("no_backup_within".into(), Some("30h".into())),
            ],
        )
        .unwrap();
        for kept in [
            "# The firm's backup settings.",
            "# on the second disk",
            "# Nightly, after the office closes.",
            "backup = \"daily at 23:30\"",
            "prune = \"weekly on saturday at 06:00\"",
            "schedule = \"daily at 04:00\"",
            "\"boss@example.com\"",
            "url = \"https://chat.example.com/hook\"",
            "keep_daily = 14",
            "no_backup_within = \"30h\"",
        ] {
            assert!(out.contains(kept), "{kept:?} missing from:\n{out}");
        }
        assert!(!out.contains("T000"), "{out}");
        let c = Config::parse(&out, Path::new("x.toml")).unwrap();
        assert_eq!(c.forget.keep_daily, Some(14));
        assert_eq!(c.alerts.webhook.len(), 1);
        // Removing a setting brings the default back.
        let out = edit_text(&out, &[Edit::Schedule("backup".into(), None)]).unwrap();
        assert!(!out.contains("23:30"), "{out}");
    }

    #[test]
    fn bad_edits_are_refused_and_the_file_is_left_alone() {
        for bad in [
            Edit::Schedule("backup\nx".into(), Some("daily".into())),
            Edit::Schedule("backup".into(), Some("daily\n[repository]".into())),
            Edit::CopySchedule("nowhere".into(), Some("daily".into())),
            Edit::EmailTo(3, vec!["a@example.com".into()]),
            Edit::EmailTo(0, vec![]),
            Edit::RemoveWebhook(5),
            Edit::AddWebhook("https://x.example.com".into(), "carrier pigeon".into()),
            Edit::Retention("keep_daily".into(), Some("-1".into())),
            Edit::Retention("path".into(), Some("/".into())),
        ] {
            assert!(
                edit_text(FILE, std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lv.toml");
        std::fs::write(&path, FILE).unwrap();
        let v = read(&path).unwrap().version;
        // A schedule the daemon cannot read: refused by loading it.
        let e = apply(
            &path,
            &v,
            &[Edit::Schedule(
                "backup".into(),
                Some("when pigs fly".into()),
            )],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("nothing was saved"), "{e:#}");
        // A stale page: refused.
        let e = apply(&path, "0000", &[Edit::Retention("keep_last".into(), None)]).unwrap_err();
        assert!(format!("{e:#}").contains("changed since"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FILE);
        // A good one is written, with the file's permissions.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = apply(
            &path,
            &v,
            &[Edit::Retention("keep_weekly".into(), Some("8".into()))],
        )
        .unwrap();
        assert_eq!(c.forget.keep_weekly, Some(8));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("# Nightly, after the office closes."));
        // Through a link: the link stays, the file it names changes.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let v = read(&link).unwrap().version;
        apply(
            &link,
            &v,
            &[Edit::Retention("keep_weekly".into(), Some("9".into()))],
        )
        .unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("keep_weekly = 9"));
    }
}
