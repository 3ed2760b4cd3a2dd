//! The pages. Each takes what the service returned and the signed-in
//! session, and returns HTML; every value is escaped here.

use std::collections::HashMap;
use std::fmt::Write;

use ledgervault_repo::{Id, Snapshot};
use ledgervault_service::history::{Outcome, Run};
use ledgervault_service::status::{LocationStatus, StatusReport};

use crate::audit::Entry;
use crate::html::{
    csrf_field, esc, may, note, page, size, table_open, table_row, when, TABLE_CLOSE,
};
use crate::session::Session;
use crate::tasks::{Task, TaskState};
use crate::users::Role;

pub fn login(message: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(m) = message {
        body.push_str(&note("error", m));
    }
    body.push_str(
        r#"<form class="card login" method="post" action="/login">
<label for="user">User name</label>
<input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>"#,
    );
    page("Sign in", None, &body)
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Warning => "warning",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
    }
}

fn opt_when(t: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    t.map(when).unwrap_or_else(|| "never".into())
}

/// The two buttons: back up now, and a safety snapshot with a reason.
fn actions(s: &Session, running: Option<&Task>) -> String {
    if !may(s.role, Role::Operator) {
        return String::new();
    }
    let mut h = String::from(r#"<section class="actions" aria-label="actions">"#);
    if let Some(t) = running {
        let _ = write!(
            h,
            "{}",
            note(
                "warn",
                &format!("{} (started by {}) is running.", t.what, t.by)
            )
        );
        let _ = write!(h, r#"<p><a href="/tasks/{}">Follow it</a></p>"#, t.id);
    }
    let _ = write!(
        h,
        r#"<form class="card" method="post" action="/backup">{csrf}
<h2>Back up now</h2>
<p>Takes a snapshot of every source in the configuration, as the nightly backup does.</p>
<button type="submit">Back up now</button>
</form>
<form class="card" method="post" action="/snapshot">{csrf}
<h2>Snapshot before risky work</h2>
<p>A labelled snapshot that retention keeps: take one before year-end close, a purge or an update.</p>
<label for="reason">Reason</label>
<select id="reason" name="reason">
<option value="year-end close">Year-end close</option>
<option value="purge">Purge</option>
<option value="software update">Software update</option>
<option value="other">Other (write it below)</option>
</select>
<label for="other">Details</label>
<input id="other" name="other" maxlength="200" placeholder="e.g. FY2026, client Smith &amp; Co">
<button type="submit">Take safety snapshot</button>
</form>
</section>"#,
        csrf = csrf_field(s)
    );
    h
}

pub fn dashboard(
    s: &Session,
    report: Result<&StatusReport, String>,
    running: Option<std::sync::Arc<Task>>,
) -> String {
    let mut h = actions(s, running.as_deref());
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            h.push_str(&note("error", &format!("The status cannot be read: {e}")));
            return page("Dashboard", Some(s), &h);
        }
    };
    if report.warnings.is_empty() {
        h.push_str(&note("ok", "No warnings."));
    } else {
        h.push_str(r#"<section aria-label="warnings"><h2>Warnings</h2><ul class="warnings">"#);
        for w in &report.warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul></section>");
    }
    h.push_str("<h2>Backup locations</h2>");
    for l in &report.locations {
        match l {
            LocationStatus::Checked {
                name,
                location,
                snapshots,
                stored_bytes,
                free_bytes,
                days_until_full,
                recovery_secs,
                sources,
            } => {
                let _ = write!(
                    h,
                    r#"<section class="card location"><h3>{}</h3><p class="where">{}</p>
<p class="count"><strong>{}</strong> backups, {} stored{}{}</p><p class="recovery">{}</p>"#,
                    esc(name),
                    esc(location),
                    snapshots,
                    size(*stored_bytes),
                    free_bytes
                        .map(|f| format!(", {} free", size(f)))
                        .unwrap_or_default(),
                    days_until_full
                        .map(|d| format!(", full in about {d:.0} days"))
                        .unwrap_or_default(),
                    match recovery_secs {
                        Some(s) => format!(
                            "Measured recovery time: {s:.1} s to restore, in the last passed drill."
                        ),
                        None => "Recovery time not measured yet: run a drill.".to_string(),
                    }
                );
                const HEADS: &[&str] = &[
                    "Source",
                    "Last backup (recovery point)",
                    "Last passed drill",
                    "Flags",
                ];
                table_open(&mut h, "", HEADS);
                for src in sources {
                    table_row(
                        &mut h,
                        HEADS,
                        &[
                            &esc(&src.source),
                            &format!(
                                "{}{}",
                                opt_when(src.latest_time.as_ref()),
                                src.latest_snapshot
                                    .as_deref()
                                    .map(|id| format!(" <code>{}</code>", esc(id)))
                                    .unwrap_or_default()
                            ),
                            &opt_when(src.last_verified.as_ref()),
                            if src.suspect {
                                r#"<span class="flag bad">suspect</span>"#
                            } else {
                                ""
                            },
                        ],
                    );
                }
                h.push_str(TABLE_CLOSE);
                h.push_str("</section>");
            }
            LocationStatus::Unchecked {
                name,
                location,
                error,
            } => {
                let _ = write!(
                    h,
                    r#"<section class="card location"><h3>{}</h3><p class="where">{}</p>{}</section>"#,
                    esc(name),
                    esc(location.as_deref().unwrap_or("")),
                    note("error", error)
                );
            }
        }
    }
    h.push_str("<h2>Schedule</h2>");
    const JOB_HEADS: &[&str] = &["Job", "When", "Next run", "Last run", "Last success"];
    table_open(&mut h, "", JOB_HEADS);
    for j in &report.jobs {
        let last = j
            .last_run
            .as_ref()
            .map(|l| {
                format!(
                    "{} <span class=\"flag {}\">{}</span>",
                    when(&l.started),
                    outcome_word(l.outcome),
                    outcome_word(l.outcome)
                )
            })
            .unwrap_or_else(|| "never".into());
        table_row(
            &mut h,
            JOB_HEADS,
            &[
                &esc(&j.job),
                &esc(&j.schedule),
                &opt_when(j.next_run.as_ref()),
                &last,
                &opt_when(j.last_success.as_ref()),
            ],
        );
    }
    h.push_str(TABLE_CLOSE);
    page("Dashboard", Some(s), &h)
}

pub fn snapshots(
    s: &Session,
    snaps: &[(Id, Snapshot)],
    unreadable: &[String],
    q: &HashMap<String, String>,
) -> String {
    let source = q.get("source").map(|v| v.trim()).unwrap_or("");
    let tag = q.get("tag").map(|v| v.trim()).unwrap_or("");
    let mut h = format!(
        r#"<form class="filters" method="get" action="/snapshots">
<label for="source">Source contains</label><input id="source" name="source" value="{}">
<label for="tag">Tag or reason contains</label><input id="tag" name="tag" value="{}">
<button type="submit">Filter</button>
</form>"#,
        esc(source),
        esc(tag)
    );
    for e in unreadable {
        h.push_str(&note("error", &format!("A snapshot cannot be read: {e}")));
    }
    let shown: Vec<&(Id, Snapshot)> = snaps
        .iter()
        .rev()
        .filter(|(_, sn)| {
            source.is_empty()
                || sn
                    .sources
                    .iter()
                    .any(|x| x.path.contains(source) || x.name.contains(source))
        })
        .filter(|(_, sn)| {
            tag.is_empty()
                || sn.tags.iter().any(|t| t.contains(tag))
                || sn.reason.as_deref().is_some_and(|r| r.contains(tag))
        })
        .collect();
    let _ = write!(
        h,
        r#"<p class="count"><strong>{}</strong> of {} backups shown</p>"#,
        shown.len(),
        snaps.len()
    );
    const HEADS: &[&str] = &[
        "Taken",
        "Id",
        "Sources",
        "Read",
        "Changed since the one before",
        "Added",
        "Reason and tags",
        "Flags",
    ];
    table_open(&mut h, "snapshots", HEADS);
    for (id, sn) in shown {
        let sources: Vec<String> = sn.sources.iter().map(|x| esc(&x.path)).collect();
        let mut labels: Vec<String> = Vec::new();
        if let Some(r) = &sn.reason {
            labels.push(format!("<strong>{}</strong>", esc(r)));
        }
        labels.extend(
            sn.tags
                .iter()
                .map(|t| format!("<span class=\"tag\">{}</span>", esc(t))),
        );
        let mut flags = String::new();
        if sn.is_suspect() {
            let _ = write!(
                flags,
                r#"<span class="flag bad" title="{}">suspect</span>"#,
                esc(&sn.suspect.join("; "))
            );
        }
        if sn.totals.errors > 0 {
            let _ = write!(
                flags,
                r#"<span class="flag warning">{} unreadable</span>"#,
                sn.totals.errors
            );
        }
        if sn.origin.is_some() {
            flags.push_str(r#"<span class="flag">copy</span>"#);
        }
        table_row(
            &mut h,
            HEADS,
            &[
                &when(&sn.time),
                &format!(
                    r#"<a href="/snapshots/{}" title="Browse"><code>{}</code></a>"#,
                    id.to_hex(),
                    esc(&id.short())
                ),
                &sources.join("<br>"),
                &size(sn.totals.bytes_read),
                &changed(sn),
                &size(sn.totals.bytes_stored),
                &labels.join(" "),
                &flags,
            ],
        );
    }
    h.push_str(TABLE_CLOSE);
    page("Snapshots", Some(s), &h)
}

/// What changed since the snapshot before (its parent): files read again
/// because they were new or changed, and the data no earlier snapshot
/// held.
fn changed(sn: &Snapshot) -> String {
    let files: u64 = sn
        .sources
        .iter()
        .map(|x| x.summary.files.saturating_sub(x.summary.files_unchanged))
        .sum();
    format!(
        "{files} file{} new or changed, {} of new data",
        if files == 1 { "" } else { "s" },
        size(sn.totals.bytes_new)
    )
}

/// The task as the live page's script reads it.
pub fn task_json(t: &Task, st: &TaskState) -> serde_json::Value {
    let (done, ok, message) = match &st.done {
        None => (false, true, String::new()),
        Some(Ok(m)) => (true, true, m.clone()),
        Some(Err(e)) => (true, false, e.clone()),
    };
    let percent = st.percent();
    serde_json::json!({
        "id": t.id,
        "what": t.what,
        "read": size(st.read),
        "bytes_read": st.read,
        "stored": size(st.stored),
        "percent": percent,
        "share": share(percent),
        "current": st.current,
        "log": st.log,
        "done": done,
        "ok": ok,
        "message": message,
    })
}

/// " (37 %)" of the part whose size is known, or nothing.
fn share(percent: Option<u64>) -> String {
    percent.map(|p| format!(" ({p} %)")).unwrap_or_default()
}

/// A task's page; `next` (HTML) is what may follow it (a plan's
/// confirmation).
pub fn task(s: &Session, t: &Task, next: &str) -> String {
    let st = t.state();
    let mut h = format!(
        r#"<section class="card task" data-events="/tasks/{}/events">
<p>Started by {} at {}.</p>"#,
        t.id,
        esc(&t.by),
        when(&t.started)
    );
    match &st.done {
        None => {
            let _ = write!(
                h,
                r#"<p class="state" role="status" aria-live="polite">Running: <span data-field="read">{}</span> read<span data-field="share">{}</span>, <span data-field="stored">{}</span> stored.</p>
<p class="current" data-field="current">{}</p>
<noscript><p><a href="/tasks/{}">Reload</a> to see how far it got.</p></noscript>"#,
                size(st.read),
                esc(&share(st.percent())),
                size(st.stored),
                esc(&st.current),
                t.id
            );
        }
        Some(Ok(m)) => h.push_str(&note("ok", m)),
        Some(Err(e)) => h.push_str(&note("error", e)),
    }
    // While it runs the script keeps the list up to date.
    if !st.log.is_empty() || st.done.is_none() {
        h.push_str(r#"<h2>Details</h2><ol class="log" data-log>"#);
        for line in &st.log {
            let _ = write!(h, "<li>{}</li>", esc(line));
        }
        h.push_str("</ol>");
    }
    h.push_str(next);
    h.push_str(r#"<p class="done-links"><a href="/snapshots">Snapshots</a> · <a href="/">Dashboard</a></p></section>"#);
    page(&t.what, Some(s), &h)
}

pub fn activity(
    s: &Session,
    tasks: &[std::sync::Arc<Task>],
    runs: Result<Vec<Run>, String>,
    audit: Option<&[Entry]>,
    alert_channels: usize,
) -> String {
    let mut h = String::new();
    if may(s.role, Role::Admin) {
        let _ = write!(
            h,
            r#"<form class="card" method="post" action="/alerts/test">{}
<h2>Alerts</h2>
<p>{} alert channel(s) configured: failed and suspect backups, failed drills, silence and filling disks are sent there.</p>
<button type="submit">Send a test alert</button>
</form>"#,
            csrf_field(s),
            alert_channels
        );
    }
    h.push_str("<h2>Started here</h2>");
    if tasks.is_empty() {
        h.push_str("<p>Nothing was started from the console since it started.</p>");
    } else {
        const HEADS: &[&str] = &["Started", "What", "By", "State"];
        table_open(&mut h, "", HEADS);
        for t in tasks {
            let state = match t.state().done {
                None => "running".to_string(),
                Some(Ok(_)) => "done".to_string(),
                Some(Err(_)) => "failed".to_string(),
            };
            table_row(
                &mut h,
                HEADS,
                &[
                    &when(&t.started),
                    &format!(r#"<a href="/tasks/{}">{}</a>"#, t.id, esc(&t.what)),
                    &esc(&t.by),
                    &state,
                ],
            );
        }
        h.push_str(TABLE_CLOSE);
    }
    h.push_str("<h2>Scheduled runs</h2>");
    match runs {
        Err(e) => h.push_str(&note(
            "error",
            &format!("The run history cannot be read: {e}"),
        )),
        Ok(runs) if runs.is_empty() => h.push_str("<p>The daemon has not run a job yet.</p>"),
        Ok(runs) => {
            if may(s.role, Role::Operator) {
                h.push_str("<p>A run's start opens its log.</p>");
            }
            const HEADS: &[&str] = &["Started", "Job", "Outcome", "Added", "Message"];
            table_open(&mut h, "", HEADS);
            for r in runs {
                let o = outcome_word(r.outcome);
                table_row(
                    &mut h,
                    HEADS,
                    &[
                        &if may(s.role, Role::Operator) {
                            format!(r#"<a href="/runs/{}">{}</a>"#, r.id, when(&r.started))
                        } else {
                            when(&r.started)
                        },
                        &esc(&r.job),
                        &format!(r#"<span class="flag {o}">{o}</span>"#),
                        &size(r.bytes_stored),
                        &esc(&r.message),
                    ],
                );
            }
            h.push_str(TABLE_CLOSE);
        }
    }
    if let Some(entries) = audit {
        h.push_str("<h2>Audit log</h2>");
        const HEADS: &[&str] = &["When", "Who", "From", "What", "Detail", "Outcome"];
        table_open(&mut h, "", HEADS);
        for e in entries {
            table_row(
                &mut h,
                HEADS,
                &[
                    &when(&e.time),
                    &esc(&e.user),
                    &esc(&e.from),
                    &esc(&e.action),
                    &esc(&e.detail),
                    &esc(&e.outcome),
                ],
            );
        }
        h.push_str(TABLE_CLOSE);
    }
    page("Activity", Some(s), &h)
}

/// Drills shown on the page.
const DRILLS_SHOWN: usize = 50;

/// Restore drills: the button, then every drill stored, newest first,
/// each with its report.
pub fn drills(
    s: &Session,
    list: Result<Vec<ledgervault_repo::Mark>, String>,
    running: Option<&Task>,
) -> String {
    let mut h = String::new();
    if may(s.role, Role::Operator) {
        if let Some(t) = running {
            h.push_str(&note(
                "warn",
                &format!("{} (started by {}) is running.", t.what, t.by),
            ));
        }
        let _ = write!(
            h,
            r#"<form class="card" method="post" action="/drill">{}
<h2>Run a drill now</h2>
<p>Restores the latest backup's databases into a scratch folder (never over the live ones), checks that they are sound, identical to what was backed up and that the books balance, and times the restore: your recovery time.</p>
<button type="submit">Run a drill now</button>
</form>"#,
            csrf_field(s)
        );
    }
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            h.push_str(&note("error", &format!("The drills cannot be read: {e}")));
            return page("Restore drills", Some(s), &h);
        }
    };
    if list.is_empty() {
        h.push_str("<p>No drill has run yet.</p>");
        return page("Restore drills", Some(s), &h);
    }
    let _ = write!(
        h,
        r#"<p class="count"><strong>{}</strong> drills{}</p>"#,
        list.len(),
        if list.len() > DRILLS_SHOWN {
            format!(", the latest {DRILLS_SHOWN} shown")
        } else {
            String::new()
        }
    );
    for m in list.iter().take(DRILLS_SHOWN) {
        let passed = m.kind == ledgervault_repo::MarkKind::DrillPassed;
        let _ = write!(
            h,
            r#"<section class="card drill"><h3>{} <span class="flag {}">{}</span></h3><p>Snapshot <a href="/snapshots/{}"><code>{}</code></a> · {}</p>"#,
            when(&m.time),
            if passed { "ok" } else { "bad" },
            if passed { "passed" } else { "failed" },
            m.snapshot.to_hex(),
            esc(&m.snapshot.short()),
            esc(m.note.as_deref().unwrap_or(""))
        );
        if let Some(r) = &m.report {
            h.push_str("<details><summary>Report</summary>");
            const HEADS: &[&str] = &["Where", "Check", "Result", "Detail"];
            table_open(&mut h, "", HEADS);
            let sources = r["sources"].as_array().cloned().unwrap_or_default();
            for src in &sources {
                for d in src["checks"].as_array().into_iter().flatten() {
                    for c in d["checks"].as_array().into_iter().flatten() {
                        let ok = c["passed"].as_bool().unwrap_or(false);
                        table_row(
                            &mut h,
                            HEADS,
                            &[
                                &esc(d["path"].as_str().unwrap_or("")),
                                &esc(c["name"].as_str().unwrap_or("")),
                                if ok {
                                    r#"<span class="flag ok">ok</span>"#
                                } else {
                                    r#"<span class="flag bad">FAIL</span>"#
                                },
                                &esc(c["detail"].as_str().unwrap_or("")),
                            ],
                        );
                    }
                }
            }
            h.push_str(TABLE_CLOSE);
            h.push_str("</details>");
        }
        h.push_str("</section>");
    }
    page("Restore drills", Some(s), &h)
}

/// Restoring one database: to a new file (operators, in the configured
/// folder), or over the live one (admins, after typing its name).
/// The start of both restore pages: the hidden fields every form on it
/// carries, and what is restored from where (`from`, already HTML). A
/// role that may not restore gets the whole page, saying so.
fn restore_head(s: &Session, id: &str, name: &str, from: &str) -> Result<(String, String), String> {
    let hidden = format!(
        r#"{}<input type="hidden" name="snapshot" value="{}"><input type="hidden" name="source" value="{}">"#,
        csrf_field(s),
        esc(id),
        esc(&hex::encode(name.as_bytes()))
    );
    let mut h = format!(
        r#"<p class="where">Database <strong>{}</strong> from snapshot <a href="/snapshots/{}"><code>{}</code></a>; it was backed up from {from}.</p>"#,
        esc(name),
        esc(id),
        esc(&id[..8.min(id.len())]),
    );
    if !may(s.role, Role::Operator) {
        h.push_str(&note("warn", "Your role may look, not restore."));
        return Err(page("Restore a database", Some(s), &h));
    }
    Ok((hidden, h))
}

pub fn restore(
    s: &Session,
    id: &str,
    name: &str,
    live: &std::path::Path,
    host: &str,
    restore_to: Option<&std::path::Path>,
) -> String {
    let from = format!(
        "<code>{}</code> on {}",
        esc(&live.display().to_string()),
        esc(host)
    );
    let (hidden, mut h) = match restore_head(s, id, name, &from) {
        Ok(head) => head,
        Err(viewer_page) => return viewer_page,
    };
    match restore_to {
        Some(dir) => {
            let stem = name.strip_suffix(".db").unwrap_or(name);
            let suggested = format!("{stem}-restored-{}.db", id.get(..8).unwrap_or(""));
            let _ = write!(
                h,
                r#"<form class="card" method="post" action="/restore">{hidden}<input type="hidden" name="mode" value="new">
<h2>Restore to a new file</h2>
<p>Writes the database into <code>{}</code> under the name you give, checked before it is put in place. The live database is not touched.</p>
<label for="file">File name</label>
<input id="file" name="file" value="{}" required maxlength="255">
<button type="submit">Restore to a new file</button>
</form>"#,
                esc(&dir.display().to_string()),
                esc(&suggested)
            );
        }
        None => h.push_str(&note(
            "warn",
            "Restoring to a new file needs [console] restore_to in the config file.",
        )),
    }
    let here = ledgervault_repo::host_name();
    if may(s.role, Role::Admin) && host != here {
        h.push_str(&note(
            "warn",
            &format!("This snapshot was taken on {host}; this console runs on {here}, so it does not replace that database: do it from {host}."),
        ));
    } else if may(s.role, Role::Admin) {
        let expected = live
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            h,
            r#"<form class="card danger" method="post" action="/restore">{hidden}<input type="hidden" name="mode" value="live">
<h2>Restore over the live database</h2>
<p>Replaces <code>{}</code> with this snapshot's copy. A safety snapshot of what is there now is taken first (tag pre-restore); programs that have it open see the restored data.</p>
<label for="confirm">Type <strong>{}</strong> to confirm</label>
<input id="confirm" name="confirm" autocomplete="off" required>
<button type="submit">Replace the live database</button>
</form>"#,
            esc(&live.display().to_string()),
            esc(&expected)
        );
    }
    page("Restore a database", Some(s), &h)
}

/// One scheduled run and its log.
pub fn run(s: &Session, r: &Run, log: &str) -> String {
    let mut h = format!(
        r#"<section class="card"><p>{} · attempt {} · started {}, ended {} · <span class="flag {o}">{o}</span></p>"#,
        esc(&r.job),
        r.attempt,
        when(&r.started),
        when(&r.finished),
        o = outcome_word(r.outcome)
    );
    h.push_str(&note(
        if r.outcome.succeeded() { "ok" } else { "error" },
        &r.message,
    ));
    if let Some(id) = &r.snapshot {
        let _ = write!(
            h,
            r#"<p>Snapshot <a href="/snapshots/{}"><code>{}</code></a>.</p>"#,
            esc(id),
            esc(id.get(..8).unwrap_or(id))
        );
    }
    h.push_str("<h2>Log</h2>");
    if log.trim().is_empty() {
        h.push_str("<p>This run kept no log (runs before this version kept none).</p>");
    } else {
        let _ = write!(h, r#"<pre class="log">{}</pre>"#, esc_block(log));
    }
    h.push_str(r#"<p><a href="/activity">Activity</a></p></section>"#);
    page("Run", Some(s), &h)
}

/// Text for a `<pre>`: escaped line by line, the line breaks kept.
fn esc_block(text: &str) -> String {
    text.lines().map(esc).collect::<Vec<_>>().join("\n")
}

/// The restore page of a database on a server (PostgreSQL).
pub fn restore_to_server(s: &Session, id: &str, name: &str, live: &str, live_name: &str) -> String {
    let (hidden, mut h) = match restore_head(s, id, name, &format!("<code>{}</code>", esc(live))) {
        Ok(head) => head,
        Err(viewer_page) => return viewer_page,
    };
    let suggested = format!("{live_name}_restored_{}", id.get(..8).unwrap_or(""));
    let _ = write!(
        h,
        r#"<form class="card" method="post" action="/restore">{hidden}<input type="hidden" name="mode" value="new">
<h2>Restore to a new database</h2>
<p>Creates a new database on the same server with this snapshot's data, complete before it takes its name. The live database is not touched; nothing is restored over a database that exists.</p>
<label for="database">New database name</label>
<input id="database" name="database" value="{}" required maxlength="63" pattern="[A-Za-z_][A-Za-z0-9_]*">
<button type="submit">Restore to a new database</button>
</form>"#,
        esc(&suggested)
    );
    if may(s.role, Role::Admin) {
        let _ = write!(
            h,
            r#"<form class="card danger" method="post" action="/restore">{hidden}<input type="hidden" name="mode" value="live">
<h2>Restore over the live database</h2>
<p>Replaces <code>{}</code> with this snapshot's copy, swapped in at once when complete (its open connections are closed). A safety snapshot of what is there now is taken first (tag pre-restore).</p>
<label for="confirm">Type <strong>{}</strong> to confirm</label>
<input id="confirm" name="confirm" autocomplete="off" required>
<button type="submit">Replace the live database</button>
</form>"#,
            esc(live),
            esc(live_name)
        );
    }
    page("Restore a database", Some(s), &h)
}
