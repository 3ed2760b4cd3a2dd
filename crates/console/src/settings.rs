//! The settings page: the daemon's schedules, the alert channels (with
//! "Send a test alert") and the retention rules. Everyone signed in sees
//! them; an admin changes them. A change is written into the config file
//! by `ledgervault_service::settings` (comments and everything else kept),
//! only if the file is still the one the page was made from; the daemon
//! and the console pick it up from there.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ledgervault_service::config::Config;
use ledgervault_service::redact;
use ledgervault_service::settings::{self, Edit};

use crate::html::{csrf_field, esc, may, note, page};
use crate::server::{
    authorize, blocking, html, redirect, refusal, signed_in, Peer, PeerAddr, Shared,
};
use crate::session::Session;
use crate::users::Role;

/// The schedules the daemon keeps, with their defaults.
const SCHEDULES: [(&str, &str, &str); 4] = [
    ("backup", "Backup", "daily at 02:00"),
    ("verify", "Restore drill", "daily at 05:00"),
    ("prune", "Forget and prune", "weekly on sunday at 06:00"),
    ("watch", "Watch (silence, full disks)", "hourly"),
];

const ALERT_AFTER: [(&str, &str, &str); 2] = [
    (
        "no_backup_within",
        "Alert when no backup succeeded within",
        "26h",
    ),
    ("full_within", "Alert when the disk fills within", "30d"),
];

/// Retention keys with their labels; all numbers but `keep_within`.
const RETENTION: [(&str, &str); 8] = [
    ("keep_last", "Keep the last"),
    ("keep_hourly", "Hourly snapshots kept"),
    ("keep_daily", "Daily snapshots kept"),
    ("keep_weekly", "Weekly snapshots kept"),
    ("keep_monthly", "Monthly snapshots kept"),
    ("keep_yearly", "Yearly snapshots kept"),
    ("keep_within", "Keep everything younger than (e.g. 30d)"),
    ("protect_days", "Protect safety snapshots for (days)"),
];

fn schedule_value(c: &Config, key: &str) -> Option<String> {
    let s = &c.schedule;
    let v = match key {
        "backup" => &s.backup,
        "verify" => &s.verify,
        "prune" => &s.prune,
        "watch" => &s.watch,
        _ => return None,
    };
    v.as_ref().map(|v| v.get_ref().clone())
}

fn alert_value(c: &Config, key: &str) -> Option<String> {
    match key {
        "no_backup_within" => c.alerts.no_backup_within.clone(),
        "full_within" => c.alerts.full_within.clone(),
        _ => None,
    }
}

fn retention_value(c: &Config, key: &str) -> Option<String> {
    let f = &c.forget;
    let n = match key {
        "keep_last" => f.keep_last,
        "keep_hourly" => f.keep_hourly,
        "keep_daily" => f.keep_daily,
        "keep_weekly" => f.keep_weekly,
        "keep_monthly" => f.keep_monthly,
        "keep_yearly" => f.keep_yearly,
        "protect_days" => f.protect_days,
        "keep_within" => return f.keep_within.clone(),
        _ => None,
    };
    n.map(|n| n.to_string())
}

pub async fn settings_page(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((_, s)) = signed_in(&app, &headers) else {
        return redirect("/login");
    };
    let Some(path) = app.config().file.clone() else {
        return refusal(
            StatusCode::NOT_FOUND,
            Some(&s),
            "The console runs without a config file: there are no settings to show.",
        );
    };
    // What the file holds now (not the config in use, which may be older
    // when the file no longer loads), and the version a save starts from.
    let read = blocking(move || {
        let f = settings::read(&path)?;
        let c = Config::parse(&f.text, &path)?;
        Ok((c, f.version))
    })
    .await;
    let (config, version) = match read {
        Ok(r) => r,
        Err(e) => {
            // Why (which may quote a value) is for an admin.
            let why = if may(s.role, Role::Admin) {
                format!(": {e:#}")
            } else {
                "; an admin sees why here".to_string()
            };
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&s),
                &format!(
                    "The config file does not load, so its settings cannot be shown or changed here{why}"
                ),
            );
        }
    };
    let saved = q.contains_key("saved");
    html(StatusCode::OK, render(&s, &config, &version, saved))
}

fn field(h: &mut String, name: &str, label: &str, value: Option<&str>, hint: &str, edit: bool) {
    let _ = write!(
        h,
        r#"<label for="{name}">{}</label><input id="{name}" name="{name}" value="{}" placeholder="{}" maxlength="200"{}>"#,
        esc(label),
        esc(value.unwrap_or("")),
        esc(hint),
        if edit { "" } else { " disabled" }
    );
}

fn render(s: &Session, c: &Config, version: &str, saved: bool) -> String {
    let edit = may(s.role, Role::Admin);
    let mut h = String::new();
    if saved {
        h.push_str(&note(
            "ok",
            "Saved to the config file. The daemon takes the new settings before its next job.",
        ));
    }
    h.push_str(if edit {
        "<p>These are kept in the config file, with its comments. An empty field means the default (shown in grey).</p>"
    } else {
        "<p>These are kept in the config file; an admin changes them.</p>"
    });
    if edit {
        let _ = write!(
            h,
            r#"<form method="post" action="/settings">{}<input type="hidden" name="version" value="{}">"#,
            csrf_field(s),
            esc(version)
        );
    } else {
        h.push_str("<div>");
    }
    h.push_str(r#"<section class="card"><h2>Schedules</h2><p class="muted">Written like <code>daily at 02:00</code>, <code>weekly on sunday at 06:00</code>, <code>every 6 hours</code>, <code>hourly</code>, or a cron expression.</p>"#);
    for (key, label, default) in SCHEDULES {
        field(
            &mut h,
            &format!("schedule_{key}"),
            label,
            schedule_value(c, key).as_deref(),
            default,
            edit,
        );
    }
    for (i, copy) in c.copy.iter().enumerate() {
        field(
            &mut h,
            &format!("copy_schedule_{i}"),
            &format!("Copy to {}", copy.name),
            copy.schedule.as_ref().map(|v| v.get_ref().as_str()),
            "daily at 03:00",
            edit,
        );
    }
    h.push_str("</section>");
    h.push_str(r#"<section class="card"><h2>Alerts</h2>"#);
    for (key, label, default) in ALERT_AFTER {
        field(
            &mut h,
            key,
            label,
            alert_value(c, key).as_deref(),
            default,
            edit,
        );
    }
    for (i, e) in c.alerts.email.iter().enumerate() {
        field(
            &mut h,
            &format!("email_to_{i}"),
            &format!(
                "Email through {} to (addresses, separated by commas)",
                e.smtp_host
            ),
            Some(&e.to.join(", ")),
            "",
            edit,
        );
    }
    for (i, w) in c.alerts.webhook.iter().enumerate() {
        let _ = write!(
            h,
            r#"<p>Webhook <code>{}</code> ({:?})"#,
            esc(&redact::webhook(&w.url)),
            w.format
        );
        if edit {
            let _ = write!(
                h,
                r#" <label class="inline"><input type="checkbox" name="webhook_remove_{i}" value="1"> remove</label>"#
            );
        }
        h.push_str("</p>");
    }
    if c.alerts.channels() == 0 {
        h.push_str(&note(
            "warn",
            "No alert channel: nobody hears about failures.",
        ));
    }
    if edit {
        h.push_str(
            r#"<label for="new_webhook_url">Add a webhook (its address)</label><input id="new_webhook_url" name="new_webhook_url" maxlength="2000" autocomplete="off" placeholder="https://">
<label for="new_webhook_format">Its format</label><select id="new_webhook_format" name="new_webhook_format"><option value="json">JSON</option><option value="slack">Slack</option><option value="teams">Teams</option></select>"#,
        );
    }
    h.push_str("</section>");
    h.push_str(r#"<section class="card"><h2>Retention</h2><p class="muted">What forget keeps; safety snapshots with a reason are kept while protected.</p>"#);
    for (key, label) in RETENTION {
        field(
            &mut h,
            key,
            label,
            retention_value(c, key).as_deref(),
            "",
            edit,
        );
    }
    h.push_str("</section>");
    if edit {
        h.push_str(r#"<button type="submit">Save the settings</button></form>"#);
    } else {
        h.push_str("</div>");
    }
    if edit && c.alerts.channels() > 0 {
        let _ = write!(
            h,
            r#"<form class="card" method="post" action="/alerts/test">{}<p>Sends a test alert on every channel above, as saved.</p><button type="submit">Send a test alert</button></form>"#,
            csrf_field(s)
        );
    }
    page("Settings", Some(s), &h)
}

/// The edits a submitted form asks for: only what differs from `c`.
fn edits_of(c: &Config, form: &HashMap<String, String>) -> Vec<Edit> {
    let given = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut out = Vec::new();
    for (key, _, _) in SCHEDULES {
        let v = given(&format!("schedule_{key}"));
        if v != schedule_value(c, key) {
            out.push(Edit::Schedule(key.into(), v));
        }
    }
    for (i, copy) in c.copy.iter().enumerate() {
        let v = given(&format!("copy_schedule_{i}"));
        if v != copy.schedule.as_ref().map(|s| s.get_ref().clone()) {
            out.push(Edit::CopySchedule(copy.name.clone(), v));
        }
    }
    for (key, _, _) in ALERT_AFTER {
        let v = given(key);
        if v != alert_value(c, key) {
            out.push(Edit::AlertAfter(key.into(), v));
        }
    }
    for (i, e) in c.alerts.email.iter().enumerate() {
        let Some(v) = form.get(&format!("email_to_{i}")) else {
            continue;
        };
        // Unchanged text is left alone (an address with a comma in its
        // display name survives a save of other settings).
        if v.trim() == e.to.join(", ") {
            continue;
        }
        let to: Vec<String> = v
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if to != e.to {
            out.push(Edit::EmailTo(i, to));
        }
    }
    // Removed from the last, so each number still means what the page
    // showed.
    for i in (0..c.alerts.webhook.len()).rev() {
        if form.contains_key(&format!("webhook_remove_{i}")) {
            out.push(Edit::RemoveWebhook(i));
        }
    }
    if let Some(url) = given("new_webhook_url") {
        let format = given("new_webhook_format").unwrap_or_else(|| "json".into());
        out.push(Edit::AddWebhook(url, format));
    }
    for (key, _) in RETENTION {
        let v = given(key);
        if v != retention_value(c, key) {
            out.push(Edit::Retention(key.into(), v));
        }
    }
    out
}

/// An edit as the audit log shows it (no webhook address).
fn described(e: &Edit) -> String {
    match e {
        Edit::Schedule(k, v) => format!("schedule.{k} = {}", v.as_deref().unwrap_or("default")),
        Edit::CopySchedule(n, v) => {
            format!("copy {n} schedule = {}", v.as_deref().unwrap_or("default"))
        }
        Edit::AlertAfter(k, v) => format!("alerts.{k} = {}", v.as_deref().unwrap_or("default")),
        Edit::EmailTo(i, to) => format!("email channel {} to {}", i + 1, to.join(", ")),
        Edit::RemoveWebhook(i) => format!("webhook {} removed", i + 1),
        Edit::AddWebhook(url, f) => format!("webhook {} ({f}) added", redact::webhook(url)),
        Edit::Retention(k, v) => format!("forget.{k} = {}", v.as_deref().unwrap_or("default")),
    }
}

pub async fn save(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let action = "change settings";
    let s = match authorize(&app, &headers, &peer, &form, action, Role::Admin) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(path) = app.config().file.clone() else {
        return refusal(StatusCode::NOT_FOUND, Some(&s), "There is no config file.");
    };
    let version = form.get("version").cloned().unwrap_or_default();
    // The edits are what the form changed from the file the page showed
    // (the version check makes sure it is that file).
    let asked = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = asked.clone();
    let result = blocking(move || {
        settings::apply_with(&path, &version, |before| {
            let edits = edits_of(before, &form);
            *seen.lock().unwrap_or_else(|p| p.into_inner()) =
                edits.iter().map(described).collect::<Vec<_>>().join("; ");
            Ok(edits)
        })
    })
    .await;
    let detail = asked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let from = peer.ip().to_string();
    match result {
        Ok((_, edits)) if edits.is_empty() => redirect("/settings"),
        Ok((new, _)) => {
            app.set_config(new);
            app.audit.record(&s.user, &from, action, &detail, "ok");
            redirect("/settings?saved=1")
        }
        Err(e) => {
            let e = format!("{e:#}");
            app.audit
                .record(&s.user, &from, action, &detail, &format!("refused: {e}"));
            refusal(StatusCode::BAD_REQUEST, Some(&s), &e)
        }
    }
}
