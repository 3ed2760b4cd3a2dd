//! Marks: notes about a snapshot added after it was written.
//!
//! Snapshot files are never rewritten (their names are their hashes, and an
//! append-only session could not replace them anyway). What changes about a
//! snapshot later — protected, unprotected, its suspect alarm cleared by a
//! person, a restore drill passed — is stored as a separate small sealed file
//! under `marks/`. The state of a snapshot is the fold of its marks in time
//! order. `forget` removes the marks of the snapshots it removes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::FORMAT_VERSION;

/// Readable marks, and errors for unreadable ones.
pub type MarkList = (Vec<(Id, Mark)>, Vec<Error>);

/// What a mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// `snapshot protect`: `forget` keeps it while it is younger than the
    /// protection age.
    Protect,
    /// `snapshot unprotect`: undoes an earlier protect.
    Unprotect,
    /// `snapshot clear-suspect`: a person looked at the alarm and cleared it.
    ClearSuspect,
    /// A restore drill restored this snapshot and the books balanced.
    DrillPassed,
    /// A restore drill on this snapshot failed (`report` says which check).
    DrillFailed,
}

/// One mark file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub version: u32,
    pub snapshot: Id,
    pub kind: MarkKind,
    pub time: DateTime<Utc>,
    pub host: String,
    pub user: String,
    /// Free text: why, or what the drill proved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The full report of a restore drill (drill marks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Mark {
    pub fn new(snapshot: Id, kind: MarkKind, note: Option<String>) -> Mark {
        Mark {
            version: FORMAT_VERSION,
            snapshot,
            kind,
            time: Utc::now(),
            host: crate::host_name(),
            user: crate::user_name(),
            note,
            report: None,
        }
    }
}

impl SnapshotState {
    /// Whether its latest restore drill passed (`None`: never drilled).
    pub fn verified(&self) -> Option<bool> {
        match (self.drill_passed, self.drill_failed) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(p), Some(f)) => Some(p > f),
        }
    }
}

/// What the marks say about one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotState {
    /// Protected by the latest protect/unprotect mark.
    pub protected: bool,
    /// A person cleared its suspect alarm.
    pub suspect_cleared: bool,
    /// When a restore drill last passed on it.
    pub drill_passed: Option<DateTime<Utc>>,
    /// When a restore drill last failed on it.
    pub drill_failed: Option<DateTime<Utc>>,
    /// Ids of the mark files about it.
    #[serde(skip)]
    pub marks: Vec<Id>,
}

/// Folds marks (in any order) into a state per snapshot.
pub fn fold(marks: &[(Id, Mark)]) -> HashMap<Id, SnapshotState> {
    let mut sorted: Vec<&(Id, Mark)> = marks.iter().collect();
    sorted.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let mut out: HashMap<Id, SnapshotState> = HashMap::new();
    for (id, m) in sorted {
        let st = out.entry(m.snapshot).or_default();
        st.marks.push(*id);
        match m.kind {
            MarkKind::Protect => st.protected = true,
            MarkKind::Unprotect => st.protected = false,
            MarkKind::ClearSuspect => st.suspect_cleared = true,
            MarkKind::DrillPassed => st.drill_passed = Some(m.time),
            MarkKind::DrillFailed => st.drill_failed = Some(m.time),
        }
    }
    out
}

impl Repository {
    /// Stores a mark; returns its id.
    pub fn add_mark(&self, mark: &Mark) -> Result<Id> {
        let json = serde_json::to_vec(mark).expect("mark serializes");
        Ok(self.write_sealed(FileKind::Mark, &json)?.0)
    }

    /// Every readable mark, plus errors for unreadable ones.
    pub fn marks(&self) -> Result<MarkList> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in self.list_ids(FileKind::Mark)? {
            let object = format!("marks/{id}");
            let m = self.read_sealed(FileKind::Mark, &id).and_then(|p| {
                let v: serde_json::Value = serde_json::from_slice(&p)
                    .map_err(|e| Error::corrupt(&object, format!("bad JSON: {e}")))?;
                let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
                crate::pack::check_version(version.min(u32::MAX as u64) as u32, &object)?;
                serde_json::from_value::<Mark>(v).map_err(|e| {
                    if e.to_string().contains("unknown variant") {
                        Error::Invalid(format!(
                            "{object} is a kind of mark this ledgervault does not know; it was written by a newer ledgervault"
                        ))
                    } else {
                        Error::corrupt(&object, format!("bad JSON: {e}"))
                    }
                })
            });
            match m {
                Ok(m) => good.push((id, m)),
                Err(e) => bad.push(e),
            }
        }
        Ok((good, bad))
    }

    /// The state of every snapshot that has marks.
    pub fn snapshot_states(&self) -> Result<HashMap<Id, SnapshotState>> {
        Ok(fold(&self.marks()?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_protect_or_unprotect_wins() {
        let s = Id([7; 32]);
        let mut a = Mark::new(s, MarkKind::Protect, None);
        let mut b = Mark::new(s, MarkKind::Unprotect, None);
        let mut c = Mark::new(s, MarkKind::Protect, None);
        a.time = DateTime::from_timestamp(100, 0).unwrap();
        b.time = DateTime::from_timestamp(200, 0).unwrap();
        c.time = DateTime::from_timestamp(300, 0).unwrap();
        let st = fold(&[
            (Id([3; 32]), c.clone()),
            (Id([1; 32]), a.clone()),
            (Id([2; 32]), b.clone()),
        ]);
        assert!(st[&s].protected);
        assert_eq!(st[&s].marks.len(), 3);
        let st = fold(&[(Id([1; 32]), a), (Id([2; 32]), b)]);
        assert!(!st[&s].protected);
        assert!(!st[&s].suspect_cleared);
    }
}
