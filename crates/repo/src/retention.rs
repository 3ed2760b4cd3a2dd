//! Retention: which snapshots `forget` keeps, and why.
//!
//! Snapshots are grouped by what they back up (host and source paths), so a
//! nightly database backup and a weekly documents backup do not compete for
//! the same daily slots. Within a group the keep rules run newest first: a
//! rule like "7 daily" keeps the newest snapshot of each of the 7 most recent
//! days that have one. Calendar buckets are in local time, the firm's day.
//!
//! Safety rules come on top of the policy and cannot be turned off by it:
//! - protected snapshots and snapshots taken with a reason (before year-end
//!   close, before an update) are kept while younger than the protection age;
//! - the newest snapshot of each group that passed a restore drill is kept;
//! - while a suspect snapshot has not been cleared by a person, every
//!   snapshot from before the first suspect one is kept (the good history
//!   from before a ransomware attack), and so are the suspect ones.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, Local, Timelike, Utc};
use serde::Serialize;

use crate::envelope::FileKind;
use crate::error::Result;
use crate::id::Id;
use crate::marks::SnapshotState;
use crate::repository::Repository;
use crate::snapshot::Snapshot;

/// Keep rules. A zero count means the rule is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// Keep everything this much younger than the group's newest snapshot.
    #[serde(serialize_with = "ser_duration")]
    pub within: Option<Duration>,
    /// Keep every snapshot carrying one of these tags.
    pub tags: Vec<String>,
}

fn ser_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.num_seconds()),
        None => s.serialize_none(),
    }
}

impl Policy {
    /// The default for accounting records: 14 daily, 8 weekly, 24 monthly
    /// and 7 yearly snapshots.
    pub fn accounting_default() -> Policy {
        Policy {
            daily: 14,
            weekly: 8,
            monthly: 24,
            yearly: 7,
            ..Policy::none()
        }
    }

    /// A policy that keeps nothing by itself (only safety rules apply).
    pub fn none() -> Policy {
        Policy {
            last: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            within: None,
            tags: Vec::new(),
        }
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::none()
    }
}

/// The safety rules' settings.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    /// Protected and reason-labelled snapshots younger than this are kept.
    pub protect_age: Duration,
    /// "Now", for ages.
    pub now: DateTime<Utc>,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            protect_age: Duration::days(90),
            now: Utc::now(),
        }
    }
}

/// What `forget` decided for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: DateTime<Utc>,
    /// Host and source paths: snapshots are judged within their group.
    pub group: String,
    pub keep: bool,
    /// Every rule that keeps it (empty when removed).
    pub reasons: Vec<String>,
}

type Bucket = fn(&DateTime<Local>) -> i64;

fn hour(t: &DateTime<Local>) -> i64 {
    day(t) * 24 + t.hour() as i64
}
fn day(t: &DateTime<Local>) -> i64 {
    t.date_naive().num_days_from_ce() as i64
}
fn week(t: &DateTime<Local>) -> i64 {
    let w = t.iso_week();
    w.year() as i64 * 100 + w.week() as i64
}
fn month(t: &DateTime<Local>) -> i64 {
    t.year() as i64 * 12 + t.month0() as i64
}
fn year(t: &DateTime<Local>) -> i64 {
    t.year() as i64
}

/// Decides, for every snapshot, whether `forget` keeps it and why.
/// `snaps` may be in any order; the result is newest first.
pub fn plan(
    snaps: &[(Id, Snapshot)],
    states: &HashMap<Id, SnapshotState>,
    policy: &Policy,
    guards: &Guards,
) -> Vec<Decision> {
    let mut order: Vec<&(Id, Snapshot)> = snaps.iter().collect();
    order.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let state = |id: &Id| states.get(id).cloned().unwrap_or_default();

    // The first uncleared suspect snapshot, across all groups: ransomware
    // on the server hits every source.
    let first_suspect = order
        .iter()
        .filter(|(id, s)| s.is_suspect() && !state(id).suspect_cleared)
        .map(|(_, s)| s.time)
        .min();

    let mut out: Vec<Decision> = order
        .iter()
        .map(|(id, s)| Decision {
            id: *id,
            time: s.time,
            group: s.group_key(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();

    // Policy rules, per group, newest first.
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, hour),
        ("daily", policy.daily, day),
        ("weekly", policy.weekly, week),
        ("monthly", policy.monthly, month),
        ("yearly", policy.yearly, year),
    ];
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, d) in out.iter().enumerate() {
        groups.entry(d.group.clone()).or_default().push(i);
    }
    for members in groups.values() {
        let newest = out[members[0]].time;
        for (n, &i) in members.iter().enumerate() {
            if (n as u32) < policy.last {
                out[i].reasons.push(format!("last {}", policy.last));
            }
            if let Some(w) = policy.within {
                if out[i].time >= newest - w {
                    out[i]
                        .reasons
                        .push(format!("within {}", describe_duration(w)));
                }
            }
            let snap = &order[i].1;
            for t in &policy.tags {
                if snap.tags.iter().any(|x| x == t) {
                    out[i].reasons.push(format!("tag {t}"));
                }
            }
        }
        for (name, count, bucket) in rules {
            let mut left = count;
            let mut last: Option<i64> = None;
            for &i in members {
                if left == 0 {
                    break;
                }
                let b = bucket(&out[i].time.with_timezone(&Local));
                if last != Some(b) {
                    out[i].reasons.push(format!("{name} {count}"));
                    left -= 1;
                    last = Some(b);
                }
            }
        }
        // The newest snapshot of the group that passed a restore drill.
        if let Some(&i) = members
            .iter()
            .find(|&&i| state(&out[i].id).drill_passed.is_some())
        {
            out[i]
                .reasons
                .push("newest that passed a restore drill".into());
        }
    }

    // Safety rules.
    for (i, d) in out.iter_mut().enumerate() {
        let snap = &order[i].1;
        let st = state(&d.id);
        let young = guards.now - d.time < guards.protect_age;
        let until = (d.time + guards.protect_age)
            .with_timezone(&Local)
            .format("%Y-%m-%d");
        if st.protected && young {
            d.reasons.push(format!("protected (until {until})"));
        }
        if let (Some(r), true) = (&snap.reason, young) {
            d.reasons
                .push(format!("safety snapshot \"{r}\" (until {until})"));
        }
        if let Some(first) = first_suspect {
            if snap.is_suspect() && !st.suspect_cleared {
                d.reasons
                    .push("suspect: kept until `snapshot clear-suspect`".into());
            } else if d.time <= first {
                d.reasons
                    .push("from before a suspect snapshot: kept until it is cleared".into());
            }
        }
        d.keep = !d.reasons.is_empty();
    }
    out
}

fn describe_duration(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86400 == 0 {
        format!("{}d", s / 86400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

/// Options for [`forget`].
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub guards: Guards,
    /// Only compute the plan.
    pub dry_run: bool,
}

/// What [`forget`] did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub decisions: Vec<Decision>,
    /// Snapshots removed (empty on a dry run).
    pub removed: Vec<Id>,
    /// Snapshots the policy let go but that are still locked (immutable
    /// repositories), with the end of their lock; a later forget removes
    /// them.
    pub locked: Vec<(Id, String)>,
    /// Snapshots that could not be read; they are never removed.
    pub unreadable: Vec<String>,
    pub dry_run: bool,
}

/// Deletes a mark file; in an immutable repository a mark still locked
/// stays (a mark about a snapshot that is gone is harmless).
fn delete_mark(repo: &Repository, id: &Id) -> Result<()> {
    let path = format!("{}{}", FileKind::Mark.dir(), id);
    if repo.immutable_days().is_some() && repo.backend().retained_until(&path)?.is_some() {
        return Ok(());
    }
    repo.backend().delete(&path)?;
    Ok(())
}

/// Applies a retention policy: removes the snapshot files (and their marks)
/// that no rule keeps. Data is freed later by `prune`.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    if !opts.dry_run {
        repo.ensure_may_delete("forget")?;
    }
    let _lock = crate::lock::lock(repo, !opts.dry_run, "forget")?;
    let (snaps, bad) = repo.snapshots()?;
    let (marks, _) = repo.marks()?;
    let states = crate::marks::fold(&marks);
    let decisions = plan(&snaps, &states, &opts.policy, &opts.guards);
    let mut removed = Vec::new();
    let mut locked = Vec::new();
    if !opts.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            let path = format!("{}{}", FileKind::Snapshot.dir(), d.id);
            // An immutable repository: a snapshot still locked stays, and
            // is named, instead of failing halfway.
            if repo.immutable_days().is_some() {
                if let Some(t) = repo.backend().retained_until(&path)? {
                    locked.push((d.id, chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()));
                    continue;
                }
            }
            repo.backend().delete(&path)?;
            removed.push(d.id);
            // Marks go after their snapshot; a crash in between leaves
            // marks about nothing, which are harmless and removed below.
            if let Some(st) = states.get(&d.id) {
                for m in &st.marks {
                    delete_mark(repo, m)?;
                }
            }
        }
        // Marks whose snapshot is gone (left by an interrupted forget).
        let live: std::collections::HashSet<Id> = snaps.iter().map(|(id, _)| *id).collect();
        for (mid, m) in &marks {
            if !live.contains(&m.snapshot) && bad.is_empty() {
                delete_mark(repo, mid)?;
            }
        }
    }
    Ok(ForgetReport {
        decisions,
        removed,
        locked,
        unreadable: bad.iter().map(|e| e.to_string()).collect(),
        dry_run: opts.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marks::SnapshotState;
    use crate::snapshot::{Node, NodeKind, Source, SourceKind, SourceSummary};
    use chrono::TimeZone;

    fn snap(t: DateTime<Utc>, path: &str) -> Snapshot {
        let mut s = Snapshot::new_now(
            vec![Source {
                name: "x".into(),
                kind: SourceKind::Path,
                path: path.into(),
                node: Node::new("x", NodeKind::File),
                summary: SourceSummary::default(),
            }],
            vec![],
            None,
        );
        s.time = t;
        s.host = "h".into();
        s
    }

    /// One snapshot a day at local noon for `days` days ending `end`.
    fn nightly(days: i64, end: DateTime<Utc>) -> Vec<(Id, Snapshot)> {
        (0..days)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (Id(id), snap(end - Duration::days(i), "/firm.db"))
            })
            .collect()
    }

    fn noon(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Local
            .with_ymd_and_hms(y, m, d, 12, 0, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn kept(ds: &[Decision]) -> usize {
        ds.iter().filter(|d| d.keep).count()
    }

    #[test]
    fn accounting_default_over_three_years_of_nightlies() {
        let end = noon(2026, 11, 20);
        let snaps = nightly(3 * 365, end);
        let g = Guards {
            now: end,
            ..Default::default()
        };
        let ds = plan(&snaps, &HashMap::new(), &Policy::accounting_default(), &g);
        // 14 days (Nov 7-20), 8 weeks of which 6 start before Nov 7, 24
        // months of which 22 are not November 2026 or covered already... in
        // all: 14 daily + 6 more weekly + 22 more monthly (Dec 2024 - Oct
        // 2026) + 1 more yearly (2023; 2024-2026 are covered by months).
        let n = kept(&ds);
        assert_eq!(n, 14 + 6 + 22 + 1);
        assert!(
            ds[0].keep && ds[0].reasons.len() == 4,
            "{:?}",
            ds[0].reasons
        );
        assert!(ds[..14].iter().all(|d| d.keep));
        // Oct 31 is the newest of October.
        assert_eq!(ds[20].reasons, ["monthly 24"]);
        // Sunday Nov 1 ends its ISO week; Monday Nov 2 is in the week of Nov 8.
        assert_eq!(ds[19].reasons, ["weekly 8"]);
        assert!(!ds[18].keep);
        // The oldest year still has its yearly snapshot: its last day.
        let y2023: Vec<&Decision> = ds
            .iter()
            .filter(|d| d.keep && d.time.with_timezone(&Local).year() == 2023)
            .collect();
        assert_eq!(y2023.len(), 1);
        assert_eq!(y2023[0].reasons, ["yearly 7"]);
        assert_eq!(y2023[0].time.with_timezone(&Local).ordinal(), 365);
    }

    #[test]
    fn groups_are_judged_apart_and_last_within_tag_work() {
        let end = noon(2026, 3, 10);
        let mut snaps = nightly(10, end);
        let mut other = snap(end - Duration::days(30), "/docs");
        other.tags = vec!["year-end".into()];
        snaps.push((Id([9; 32]), other));
        let g = Guards {
            now: end,
            ..Default::default()
        };
        let p = Policy {
            last: 2,
            ..Policy::none()
        };
        let ds = plan(&snaps, &HashMap::new(), &p, &g);
        // The lone /docs snapshot is the last of its own group.
        assert_eq!(kept(&ds), 3);
        let p = Policy {
            within: Some(Duration::days(3)),
            tags: vec!["year-end".into()],
            ..Policy::none()
        };
        let ds = plan(&snaps, &HashMap::new(), &p, &g);
        assert_eq!(kept(&ds), 4 + 1);
        let docs = ds.iter().find(|d| d.id == Id([9; 32])).unwrap();
        assert!(
            docs.reasons.contains(&"tag year-end".to_string()),
            "{:?}",
            docs.reasons
        );
    }

    #[test]
    fn safety_rules_override_the_policy() {
        let end = noon(2026, 6, 30);
        let mut snaps = nightly(200, end);
        // A reason-labelled snapshot 30 days ago and one 120 days ago.
        snaps[30].1.reason = Some("year-end close FY2026".into());
        snaps[120].1.reason = Some("software update".into());
        let mut states = HashMap::new();
        states.insert(
            snaps[40].0,
            SnapshotState {
                protected: true,
                ..Default::default()
            },
        );
        states.insert(
            snaps[150].0,
            SnapshotState {
                drill_passed: Some(end),
                ..Default::default()
            },
        );
        let g = Guards {
            now: end,
            protect_age: Duration::days(90),
        };
        let p = Policy {
            last: 1,
            ..Policy::none()
        };
        let ds = plan(&snaps, &states, &p, &g);
        let by_id: HashMap<Id, &Decision> = ds.iter().map(|d| (d.id, d)).collect();
        assert!(by_id[&snaps[30].0].keep);
        assert!(!by_id[&snaps[120].0].keep, "older than the protection age");
        assert!(by_id[&snaps[40].0].keep);
        assert!(by_id[&snaps[150].0].keep, "newest drill-passed");
        assert_eq!(kept(&ds), 4);
    }

    #[test]
    fn a_suspect_snapshot_freezes_the_history_before_it() {
        let end = noon(2026, 6, 30);
        let mut snaps = nightly(60, end);
        snaps[5].1.suspect = vec!["firm.db: 80% of pages became random".into()];
        let g = Guards {
            now: end,
            ..Default::default()
        };
        let p = Policy {
            last: 1,
            ..Policy::none()
        };
        let ds = plan(&snaps, &HashMap::new(), &p, &g);
        // Newest (last 1) + the suspect + the 54 older ones.
        assert_eq!(kept(&ds), 1 + 1 + 54);
        let by_id: HashMap<Id, &Decision> = ds.iter().map(|d| (d.id, d)).collect();
        assert!(
            !by_id[&snaps[3].0].keep,
            "after the suspect one: the policy decides"
        );
        let mut states = HashMap::new();
        states.insert(
            snaps[5].0,
            SnapshotState {
                suspect_cleared: true,
                ..Default::default()
            },
        );
        let ds = plan(&snaps, &states, &p, &g);
        assert_eq!(kept(&ds), 1);
    }
}
