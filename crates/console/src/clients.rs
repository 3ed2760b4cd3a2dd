//! Restoring one client from the console: pick a firm database and the
//! client, see the dry-run plan, confirm it, see the result. A plan is
//! kept for the user who made it, for [`PLAN_LIFETIME`], and is used once:
//! the confirmation carries only the plan's number, so what is done is
//! exactly what was planned. Restoring as a new client (the client is not
//! there, or beside it) is an operator's; replacing a client that is there
//! deletes its rows first, and is an admin's.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ledgervault_service::client::{self, ClientRestore, ClientRestored};
use ledgervault_service::config::Config;
use ledgervault_service::db;
use ledgervault_service::drill::{is_database, is_safety_snapshot, CLIENT_ARCHIVE_TAG};
use ledgervault_tenant::{ClientInfo, Mode};

use crate::html::{csrf_field, esc, may, note, page, table_open, table_row, when, TABLE_CLOSE};
use crate::server::{
    authorize, blocking, html, redirect, refusal, signed_in, start_work, App, Peer, PeerAddr,
    Shared,
};
use crate::session::Session;
use crate::tasks::Task;
use crate::users::Role;

/// How long a plan may be confirmed.
pub const PLAN_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A dry run that may be confirmed.
#[derive(Clone)]
pub struct Plan {
    user: String,
    made: Instant,
    req: ClientRestore,
    /// The target as shown (no password).
    shown: String,
    summary: String,
}

/// The firm databases a client may be restored into: the config file's
/// sources that are databases, in order (forms name them by position, so
/// no path comes from a browser).
pub fn firm_databases(config: &Config) -> Vec<String> {
    config
        .source
        .iter()
        .map(|s| s.path.get_ref().clone())
        .map(|p| match p.strip_prefix("sqlite:") {
            Some(file) => file.to_string(),
            None => p,
        })
        .filter(|p| db::by_address(p).is_some() || db::by_file(Path::new(p)).is_some())
        .collect()
}

/// A snapshot a client may come from.
struct Choice {
    id: String,
    label: String,
}

/// Snapshots that can supply a client, newest first: client archives and
/// backups holding a database, never the safety snapshots restores take.
fn choices(app: &App) -> Result<Vec<Choice>> {
    let repo = app.repo()?;
    let (all, _) = repo.snapshots()?;
    Ok(all
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            !is_safety_snapshot(s)
                && (s.tags.iter().any(|t| t == CLIENT_ARCHIVE_TAG)
                    || s.sources.iter().any(is_database))
        })
        .take(50)
        .map(|(id, s)| {
            let what = if s.tags.iter().any(|t| t == CLIENT_ARCHIVE_TAG) {
                let name = s
                    .tags
                    .iter()
                    .find_map(|t| t.strip_prefix("client-name:"))
                    .unwrap_or("?");
                format!("archive of client {name}")
            } else {
                let dbs: Vec<&str> = s
                    .sources
                    .iter()
                    .filter(|x| is_database(x))
                    .map(|x| x.name.as_str())
                    .collect();
                dbs.join(", ")
            };
            Choice {
                id: id.to_string(),
                label: format!("{} · {} · {}", when(&s.time), &id.to_string()[..8], what),
            }
        })
        .collect())
}

pub async fn list_page(State(app): Shared, headers: HeaderMap) -> Response {
    let Some((_, s)) = signed_in(&app, &headers) else {
        return redirect("/login");
    };
    let a = app.clone();
    let found = blocking(move || {
        let dbs = firm_databases(&a.config())
            .into_iter()
            .map(|spec| {
                let clients = client::clients(&spec, &a.config().client)
                    .map(|(c, _)| c)
                    .map_err(|e| format!("{e:#}"));
                (ledgervault_service::redact::url(&spec), clients)
            })
            .collect::<Vec<_>>();
        let snaps = choices(&a).map_err(|e| format!("{e:#}"));
        Ok((dbs, snaps))
    })
    .await;
    match found {
        Ok((dbs, snaps)) => html(StatusCode::OK, render_page(&s, &dbs, snaps)),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&s),
            &format!("{e:#}"),
        ),
    }
}

type Listed = (String, Result<Vec<ClientInfo>, String>);

fn render_page(s: &Session, dbs: &[Listed], snaps: Result<Vec<Choice>, String>) -> String {
    let mut h = String::from(
        "<p>Bring back one client's books from a backup into a firm database, without touching the other clients. You see the plan first; nothing changes until you confirm it, and a safety snapshot of the firm database is taken before.</p>",
    );
    if dbs.is_empty() {
        h.push_str(&note(
            "warn",
            "The config file's sources hold no firm database (a SQLite file or a postgres:// address).",
        ));
        return page("Restore one client", Some(s), &h);
    }
    for (i, (shown, clients)) in dbs.iter().enumerate() {
        let _ = write!(
            h,
            r#"<section class="card"><h2>Clients in <code>{}</code></h2>"#,
            esc(shown)
        );
        match clients {
            Err(e) => h.push_str(&note("error", &format!("Cannot list its clients: {e}"))),
            Ok(list) if list.is_empty() => h.push_str("<p>It has no clients.</p>"),
            Ok(list) => {
                const HEADS: &[&str] = &["Key", "Client", "Rows"];
                table_open(&mut h, "", HEADS);
                for c in list {
                    table_row(
                        &mut h,
                        HEADS,
                        &[
                            &format!("<code>{}</code>", esc(&c.key.plain())),
                            &esc(&c.label),
                            &c.total_rows.to_string(),
                        ],
                    );
                }
                h.push_str(TABLE_CLOSE);
            }
        }
        let _ = write!(h, r#"<p class="muted">Database {}.</p></section>"#, i + 1);
    }
    if !may(s.role, Role::Operator) {
        h.push_str(&note("warn", "Your role may look, not restore."));
        return page("Restore one client", Some(s), &h);
    }
    let snaps = match snaps {
        Ok(v) if v.is_empty() => {
            h.push_str(&note(
                "warn",
                "No snapshot holds a firm database or a client archive yet.",
            ));
            return page("Restore one client", Some(s), &h);
        }
        Ok(v) => v,
        Err(e) => {
            h.push_str(&note("error", &format!("Cannot list the snapshots: {e}")));
            return page("Restore one client", Some(s), &h);
        }
    };
    let _ = write!(
        h,
        r#"<form class="card" method="post" action="/clients/plan">{}
<h2>Plan a client restore</h2>
<label for="client">Client (its key, code or name)</label>
<input id="client" name="client" required maxlength="200" autocomplete="off">
<label for="snapshot">From</label>
<select id="snapshot" name="snapshot"><option value="latest">the latest backup</option>"#,
        csrf_field(s)
    );
    for c in &snaps {
        let _ = write!(
            h,
            r#"<option value="{}">{}</option>"#,
            esc(&c.id),
            esc(&c.label)
        );
    }
    h.push_str(r#"</select><label for="into">Into</label><select id="into" name="into">"#);
    for (i, (shown, _)) in dbs.iter().enumerate() {
        let _ = write!(h, r#"<option value="{i}">{}</option>"#, esc(shown));
    }
    h.push_str(
        r#"</select>
<fieldset><legend>How</legend>
<label><input type="radio" name="mode" value="new" checked> As it was: only if the client is not there now (deleted by mistake)</label>
<label><input type="radio" name="mode" value="as_new"> Beside the one that is there, as another client (new keys where they are taken)</label>"#,
    );
    if may(s.role, Role::Admin) {
        h.push_str(r#"<label><input type="radio" name="mode" value="replace"> Replace the client that is there (its rows are deleted first)</label>"#);
    }
    h.push_str(
        r#"</fieldset>
<button type="submit">See the plan</button>
</form>"#,
    );
    page("Restore one client", Some(s), &h)
}

/// Client text as typed: one line, bounded.
fn client_text(t: &str) -> Option<&str> {
    let t = t.trim();
    (!t.is_empty() && t.len() <= 200 && !t.chars().any(char::is_control)).then_some(t)
}

pub async fn plan(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mode = match form.get("mode").map(String::as_str) {
        Some("new") | None => Mode::New,
        Some("as_new") => Mode::AsNew,
        Some("replace") => Mode::Replace,
        Some(_) => Mode::Replace, // refused below unless an admin's
    };
    let bad_mode = !matches!(
        form.get("mode").map(String::as_str),
        None | Some("new" | "as_new" | "replace")
    );
    let (action, need) = if mode == Mode::Replace {
        ("plan replacing a client", Role::Admin)
    } else {
        ("plan a client restore", Role::Operator)
    };
    let s = match authorize(&app, &headers, &peer, &form, action, need) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let bad = |t: &str| refusal(StatusCode::BAD_REQUEST, Some(&s), t);
    if bad_mode {
        return bad("Choose how the client is restored.");
    }
    let Some(who) = form.get("client").and_then(|c| client_text(c)) else {
        return bad("Name the client: its key, code or name, on one line.");
    };
    let snapshot = form.get("snapshot").map(String::as_str).unwrap_or("latest");
    let snapshot_ok = snapshot == "latest"
        || (snapshot.len() == 64 && snapshot.bytes().all(|b| b.is_ascii_hexdigit()));
    if !snapshot_ok {
        return bad("There is no such snapshot.");
    }
    let dbs = firm_databases(&app.config());
    let Some(into) = form
        .get("into")
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| dbs.get(i))
    else {
        return bad("Choose one of the firm databases listed.");
    };
    let req = ClientRestore {
        snapshot: snapshot.to_string(),
        client: who.to_string(),
        into: into.clone(),
        mode,
        set: Vec::new(),
        replace_other: None,
        dry_run: true,
        database: None,
    };
    let shown = ledgervault_service::redact::url(into);
    let detail = format!("client {who:?} from {snapshot} into {shown} ({mode:?})");
    let user = s.user.clone();
    start_work(
        app,
        s,
        peer,
        "Client restore plan",
        detail,
        move |app, task| {
            let r = app.restore_client(&req, task)?;
            for line in plan_lines(&r) {
                task.log(line);
            }
            let summary = format!(
                "restore client {} ({}) from snapshot {} into {} as client {}: {} rows in {} tables",
                r.report.client_from,
                r.report.label,
                r.from_snapshot.short(),
                shown,
                r.report.client_to,
                r.report.tables.iter().map(|t| t.rows).sum::<u64>(),
                r.report.tables.len()
            );
            app.plans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, p| p.made.elapsed() < PLAN_LIFETIME);
            app.plans.lock().unwrap_or_else(|p| p.into_inner()).insert(
                task.id,
                Plan {
                    user,
                    made: Instant::now(),
                    req: ClientRestore {
                        dry_run: false,
                        // The snapshot the plan read, not "latest" again.
                        snapshot: r.from_snapshot.to_string(),
                        ..req
                    },
                    shown,
                    summary: summary.clone(),
                },
            );
            Ok((
                true,
                "planned".into(),
                format!("Plan: {summary}. Nothing was changed; confirm below to do it."),
            ))
        },
    )
}

/// The confirmation form under a plan's task, for the user who made it.
pub fn follow_up(app: &App, s: &Session, t: &Task) -> String {
    if t.running() {
        return String::new();
    }
    let plans = app.plans.lock().unwrap_or_else(|p| p.into_inner());
    let Some(p) = plans.get(&t.id) else {
        return String::new();
    };
    if p.user != s.user || p.made.elapsed() >= PLAN_LIFETIME {
        return String::new();
    }
    let need = if p.req.mode == Mode::Replace {
        Role::Admin
    } else {
        Role::Operator
    };
    if !may(s.role, need) {
        return String::new();
    }
    format!(
        r#"<form class="card danger" method="post" action="/clients/restore">{}<input type="hidden" name="plan" value="{}">
<h2>Confirm</h2>
<p>Do it: {}. A safety snapshot of <code>{}</code> is taken first.</p>
<button type="submit">Restore the client</button>
</form>"#,
        csrf_field(s),
        t.id,
        esc(&p.summary),
        esc(&p.shown)
    )
}

pub async fn confirm(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match authorize(
        &app,
        &headers,
        &peer,
        &form,
        "restore a client",
        Role::Operator,
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = form
        .get("plan")
        .filter(|p| p.len() <= 19)
        .and_then(|p| p.parse::<u64>().ok());
    // The plan is taken (used once) only when it may run now: a refusal
    // (the role, another task running) leaves it to be confirmed later.
    let plans = || app.plans.lock().unwrap_or_else(|p| p.into_inner());
    let found = id.and_then(|id| {
        plans()
            .get(&id)
            .filter(|p| p.user == s.user && p.made.elapsed() < PLAN_LIFETIME)
            .map(|p| (id, p.req.mode))
    });
    let no_plan = || {
        app.audit.record(
            &s.user,
            &peer.ip().to_string(),
            "restore a client",
            "no such plan",
            "refused",
        );
        refusal(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "There is no such plan of yours (plans last 30 minutes and are used once): see the plan again first.",
        )
    };
    let Some((id, mode)) = found else {
        return no_plan();
    };
    if mode == Mode::Replace && s.role < Role::Admin {
        app.audit.record(
            &s.user,
            &peer.ip().to_string(),
            "replace a client",
            "role does not allow it",
            "refused",
        );
        return refusal(
            StatusCode::FORBIDDEN,
            Some(&s),
            "Replacing a client that is there needs the admin role.",
        );
    }
    if let Some(t) = app.tasks.list().into_iter().find(|t| t.running()) {
        return refusal(
            StatusCode::CONFLICT,
            Some(&s),
            &format!(
                "{} (started by {}) is still running; confirm the plan when it ends (it is kept).",
                t.what, t.by
            ),
        );
    }
    let Some(plan) = plans().remove(&id) else {
        return no_plan();
    };
    // The database must still be one the config names.
    if !firm_databases(&app.config()).contains(&plan.req.into) {
        return refusal(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "That firm database is no longer among the config file's sources; see the plan again.",
        );
    }
    let detail = plan.summary.clone();
    let shown = plan.shown.clone();
    let kept = plan.clone();
    let again = app.clone();
    let started = start_work(app, s, peer, "Restore client", detail, move |app, task| {
        let r = app.restore_client(&plan.req, task)?;
        for line in plan_lines(&r) {
            task.log(line);
        }
        let mut m = format!(
            "Restored client {} ({}) from snapshot {} into {} as client {} in {:.1} s.",
            r.report.client_from,
            r.report.label,
            r.from_snapshot.short(),
            shown,
            r.report.client_to,
            r.import_secs
        );
        if let Some(safety) = r.safety_snapshot {
            m.push_str(&format!(
                " The firm database as it was is kept in safety snapshot {} (tag pre-client-restore).",
                safety.short()
            ));
        }
        Ok((true, "ok".into(), m))
    });
    // Another task started in between: the plan is kept for later.
    if started.status() == StatusCode::CONFLICT {
        again
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, kept);
    }
    started
}

impl App {
    /// Restores (or plans) one client (the service reads the archive
    /// under a read lock); a safety snapshot of the target comes first
    /// when it is not a plan.
    pub(crate) fn restore_client(
        &self,
        req: &ClientRestore,
        task: &Task,
    ) -> Result<ClientRestored> {
        let repo: Arc<ledgervault_repo::Repository> = self.repo()?;
        let mut take_safety = self.safety_taker(
            &repo,
            ledgervault_service::drill::PRE_CLIENT_RESTORE_TAG,
            task,
        );
        client::restore_client(
            &repo,
            req,
            &self.config().client,
            &|m| task.log(m),
            &mut take_safety,
            task,
        )
    }
}

/// What a plan or restore does, line by line.
pub fn plan_lines(r: &ClientRestored) -> Vec<String> {
    let rep = &r.report;
    let verb = |plan: &'static str, done: &'static str| if rep.dry_run { plan } else { done };
    let mut out = Vec::new();
    if let Some(old) = &rep.replaced {
        out.push(format!(
            "{} client {} ({}), found by {}: {} rows",
            verb("would delete", "deleted"),
            old.key,
            old.label,
            old.found_by,
            rep.replaced_rows
        ));
    }
    for t in &rep.tables {
        let mut l = format!("{}: {} rows", t.table, t.rows);
        if t.remapped > 0 {
            let _ = write!(l, ", {} keys remapped (taken in the target)", t.remapped);
        }
        if t.reused > 0 {
            let _ = write!(l, ", {} already there and kept", t.reused);
        }
        out.push(l);
    }
    for s in &rep.shared {
        out.push(format!(
            "shared {}: {} matched, {} created",
            s.table, s.matched, s.created
        ));
    }
    for l in &rep.links {
        out.push(format!("link {}: {:?}, {}", l.link, l.policy, l.action));
    }
    for c in &rep.unique_conflicts {
        out.push(format!(
            "unique {}.{} already held in the target: {:?}",
            c.table,
            c.columns.join("+"),
            c.rule
        ));
    }
    for v in &rep.verified {
        out.push(format!("verified: {v}"));
    }
    out
}
