//! The HTTP side: routes, sign-in, the checks every request passes, and
//! the work started from a page.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Form, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::Router;
use ledgervault_repo::{Progress, Repository};
use ledgervault_service::backup::{self, BackupOutcome, BackupRequest, Verdict};
use ledgervault_service::config::Config;
use ledgervault_service::status::Location;

use crate::audit::Audit;
use crate::html::{note, page};
use crate::session::{same, Session, Sessions, Throttle, FREE_TRIES};
use crate::tasks::Tasks;
use crate::tls::{Tls, TlsListener};
use crate::users::{Role, Users};

/// The session cookie.
pub const COOKIE: &str = "lv_session";

/// What the console serves and where.
pub struct ConsoleOptions {
    pub listen: SocketAddr,
    /// HTTPS: required off loopback.
    pub tls: Option<Tls>,
    pub config: Arc<Config>,
    pub users: PathBuf,
    pub audit: Option<PathBuf>,
    /// The primary repository, and the copies (for the dashboard).
    pub primary: Option<Location>,
    pub copies: Vec<Location>,
}

/// Refuses an address off loopback without TLS: passwords and session
/// cookies would cross the network in the clear.
pub fn check_listen(addr: &SocketAddr, tls: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !tls {
        bail!(
            "refusing to serve the console on {addr} without TLS: give [console] tls_cert and tls_key, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// A running console.
pub struct Console {
    addr: SocketAddr,
    fingerprint: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Console {
    /// The address it listens on (port 0 given: the one chosen).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://...` or `http://...`, with the address.
    pub fn url(&self) -> String {
        let scheme = if self.fingerprint.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/", self.addr)
    }

    /// The SHA-256 fingerprint of the certificate, with HTTPS.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops serving.
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) struct App {
    pub config: Arc<Config>,
    pub users_path: PathBuf,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub audit: Audit,
    pub tasks: Tasks,
    pub primary: Option<Location>,
    pub copies: Vec<Location>,
    pub secure: bool,
    /// The primary repository, opened once (the key derivation is slow).
    repo: Mutex<Option<Arc<Repository>>>,
}

impl App {
    pub fn users(&self) -> Result<Users> {
        Users::load(&self.users_path)
    }

    /// The primary repository, unlocked.
    pub fn repo(&self) -> Result<Arc<Repository>> {
        let mut slot = self.repo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &*slot {
            return Ok(r.clone());
        }
        let loc = self.primary_location()?;
        let password = (loc.password)()?;
        let repo = Arc::new(loc.target.find_ahead(&password)?.open(&password)?);
        *slot = Some(repo.clone());
        Ok(repo)
    }

    fn primary_location(&self) -> Result<&Location> {
        self.primary
            .as_ref()
            .ok_or_else(|| anyhow!("the config file names no [repository]"))
    }

    /// Backs up the config file's sources (with `reason`: a safety
    /// snapshot before risky work).
    fn backup(&self, reason: Option<String>, progress: &dyn Progress) -> Result<BackupOutcome> {
        let req = BackupRequest {
            reason,
            ..BackupRequest::default()
        };
        let loc = self.primary_location()?;
        let prepared = backup::prepare(&self.config, &req)?;
        let password = (loc.password)()?;
        let opener = loc.target.find_ahead(&password)?;
        let captured = prepared.capture(&req, None)?;
        let repo = opener.open(&password)?;
        let exclude = loc
            .target
            .location
            .as_deref()
            .filter(|l| !l.starts_with("s3:"))
            .and_then(|l| std::fs::canonicalize(l.strip_prefix("file://").unwrap_or(l)).ok());
        prepared.run(&repo, captured, &self.config, &req, exclude, progress)
    }
}

/// Starts serving on a thread of its own. Fails at once on a bad address,
/// a refused bind, or a console with no admin yet.
pub fn start(opts: ConsoleOptions) -> Result<Console> {
    check_listen(&opts.listen, opts.tls.is_some())?;
    let tls = opts
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    let users = Users::load(&opts.users)?;
    if !users.list().iter().any(|(_, r)| *r == Role::Admin) {
        bail!(
            "the console has no admin yet: make one with `ledgervault console user add NAME --role admin` (users file {})",
            opts.users.display()
        );
    }
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        config: opts.config,
        users_path: opts.users,
        sessions: Sessions::default(),
        throttle: Throttle::default(),
        audit: Audit::new(opts.audit.as_deref()),
        tasks: Tasks::default(),
        primary: opts.primary,
        copies: opts.copies,
        secure: tls.is_some(),
        repo: Mutex::new(None),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("console")
        .enable_all()
        .build()
        .context("cannot start the console's runtime")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = router(app);
    let (tls_config, fingerprint) = match tls {
        Some((c, f)) => (Some(c), Some(f)),
        None => (None, None),
    };
    let thread = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("ledgervault console: cannot listen: {e}");
                        return;
                    }
                };
                let service = router.into_make_service_with_connect_info::<PeerAddr>();
                let stop = async {
                    let _ = rx.await;
                };
                let served = match tls_config {
                    None => {
                        axum::serve(listener, service)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    Some(config) => match TlsListener::new(listener, config) {
                        Ok(l) => axum::serve(l, service).with_graceful_shutdown(stop).await,
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = served {
                    eprintln!("ledgervault console: {e}");
                }
            })
        })?;
    Ok(Console {
        addr,
        fingerprint,
        stop: Some(tx),
        thread: Some(thread),
    })
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/snapshots", get(snapshots))
        .route("/backup", post(backup_now))
        .route("/snapshot", post(safety_snapshot))
        .route("/activity", get(activity))
        .route("/tasks/{id}", get(task_page))
        .route("/tasks/{id}/events", get(task_events))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it browsers send `Origin: null` on the
        // console's own forms, which the origin check refuses.
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

type Shared = State<Arc<App>>;
type Peer = ConnectInfo<PeerAddr>;

/// The client's address, over plain HTTP or HTTPS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A page that says no, in words.
fn refusal(status: StatusCode, who: Option<&Session>, text: &str) -> Response {
    html(
        status,
        page(
            status.canonical_reason().unwrap_or("Refused"),
            who,
            &note("error", text),
        ),
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The session of the request, checked against the user file (a user
/// removed or given another role is signed out).
fn signed_in(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = cookie(headers, COOKIE)?;
    let s = app.sessions.get(&token)?;
    match app.users().ok().and_then(|u| u.role(&s.user)) {
        Some(r) if r == s.role => Some((token, s)),
        _ => {
            app.sessions.end(&token);
            None
        }
    }
}

/// A change must come from a page of this console: same origin, the
/// session's CSRF token, and a role that allows it.
fn authorize(
    app: &App,
    headers: &HeaderMap,
    peer: &SocketAddr,
    form: &HashMap<String, String>,
    action: &str,
    need: Role,
) -> Result<Session, Response> {
    let Some((_, s)) = signed_in(app, headers) else {
        return Err(redirect("/login"));
    };
    let from = peer.ip().to_string();
    if !same_origin(headers) {
        app.audit
            .record(&s.user, &from, action, "from another site", "refused");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            Some(&s),
            "This request came from another site and was refused.",
        ));
    }
    let token_ok = form.get("csrf").is_some_and(|c| same(c, &s.csrf));
    if !token_ok {
        app.audit.record(
            &s.user,
            &from,
            action,
            "missing or wrong CSRF token",
            "refused",
        );
        return Err(refusal(
            StatusCode::FORBIDDEN,
            Some(&s),
            "This form has expired or did not come from this console. Reload the page and try again.",
        ));
    }
    if s.role < need {
        app.audit
            .record(&s.user, &from, action, "role does not allow it", "refused");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            Some(&s),
            &format!(
                "Your role ({}) may not do this; it needs {}.",
                s.role.name(),
                need.name()
            ),
        ));
    }
    Ok(s)
}

/// `Origin`, when the browser sends it, names this console.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().unwrap_or("");
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((bare, host), (Some(o), Some(h)) if o == h)
}

async fn not_found(State(app): Shared, headers: HeaderMap) -> Response {
    let who = signed_in(&app, &headers).map(|(_, s)| s);
    refusal(
        StatusCode::NOT_FOUND,
        who.as_ref(),
        "There is no such page.",
    )
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../assets/style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../assets/app.js"),
    )
        .into_response()
}

async fn login_page(State(app): Shared, headers: HeaderMap) -> Response {
    if signed_in(&app, &headers).is_some() {
        return redirect("/");
    }
    html(StatusCode::OK, crate::pages::login(None))
}

async fn login(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !same_origin(&headers) {
        return refusal(
            StatusCode::FORBIDDEN,
            None,
            "This request came from another site and was refused.",
        );
    }
    let user = form
        .get("user")
        .map(|u| u.trim().to_string())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let from = peer.ip().to_string();
    let (user_key, ip_key) = (format!("user:{user}"), format!("ip:{}", net_of(peer.ip())));
    let wait = app
        .throttle
        .wait(&user_key)
        .into_iter()
        .chain(app.throttle.wait(&ip_key))
        .max();
    if let Some(w) = wait {
        app.audit
            .record(&user, &from, "sign in", "throttled", "refused");
        let text = format!(
            "Too many failed sign-ins. Try again in {} seconds.",
            w.as_secs().max(1)
        );
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            crate::pages::login(Some(&text)),
        );
    }
    let check = app.clone();
    let (name, pw) = (user.clone(), password);
    let role = tokio::task::spawn_blocking(move || {
        check
            .users()
            .ok()
            .and_then(|u| u.verify(&name, pw.as_bytes()))
    })
    .await
    .ok()
    .flatten();
    let Some(role) = role else {
        app.throttle.fail(&user_key, FREE_TRIES);
        app.throttle.fail(&ip_key, FREE_TRIES * 4);
        app.audit
            .record(&user, &from, "sign in", "wrong name or password", "refused");
        return html(
            StatusCode::UNAUTHORIZED,
            crate::pages::login(Some("Wrong user name or password.")),
        );
    };
    app.throttle.clear(&user_key);
    // Whatever session cookie the browser brought is dropped: a fresh
    // token, so a planted one is worth nothing.
    if let Some(old) = cookie(&headers, COOKIE) {
        app.sessions.end(&old);
    }
    let token = app.sessions.start(&user, role);
    app.audit.record(&user, &from, "sign in", role.name(), "ok");
    let mut r = redirect("/");
    let secure = if app.secure { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Addresses throttled together: one IPv4 address, or an IPv6 /64.
fn net_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

async fn logout(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match authorize(&app, &headers, &peer, &form, "sign out", Role::Viewer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(token) = cookie(&headers, COOKIE) {
        app.sessions.end(&token);
    }
    app.audit
        .record(&s.user, &peer.ip().to_string(), "sign out", "", "ok");
    let mut r = redirect("/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lv_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// The page for a signed-in user, or the way to the sign-in page.
macro_rules! session_or_login {
    ($app:expr, $headers:expr) => {
        match signed_in(&$app, &$headers) {
            Some((_, s)) => s,
            None => return redirect("/login"),
        }
    };
}

async fn dashboard(State(app): Shared, headers: HeaderMap) -> Response {
    let s = session_or_login!(app, headers);
    let a = app.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut locations: Vec<Location> = a.primary.iter().cloned().collect();
        locations.extend(a.copies.iter().cloned());
        ledgervault_service::status::status(&a.config, locations, chrono::Utc::now(), 10)
    })
    .await
    .map_err(|e| anyhow!("{e}"))
    .and_then(|r| r);
    let running = app.tasks.list().into_iter().find(|t| t.running());
    html(
        StatusCode::OK,
        crate::pages::dashboard(&s, report.as_ref().map_err(|e| format!("{e:#}")), running),
    )
}

async fn snapshots(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = session_or_login!(app, headers);
    let a = app.clone();
    let list = tokio::task::spawn_blocking(move || -> Result<_> {
        let repo = a.repo()?;
        let (snaps, bad) = repo.snapshots()?;
        Ok((
            snaps,
            bad.into_iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ))
    })
    .await
    .map_err(|e| anyhow!("{e}"))
    .and_then(|r| r);
    match list {
        Ok((snaps, bad)) => html(
            StatusCode::OK,
            crate::pages::snapshots(&s, &snaps, &bad, &q),
        ),
        Err(e) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&s),
            &format!("The repository cannot be read: {e:#}"),
        ),
    }
}

async fn backup_now(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match authorize(&app, &headers, &peer, &form, "back up now", Role::Operator) {
        Ok(s) => s,
        Err(r) => return r,
    };
    start_backup(app, s, peer, "Back up now", None)
}

/// The reasons offered for a safety snapshot.
pub(crate) const REASONS: [&str; 3] = ["year-end close", "purge", "software update"];

async fn safety_snapshot(
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
        "safety snapshot",
        Role::Operator,
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let picked = form.get("reason").map(String::as_str).unwrap_or("");
    let other = form.get("other").map(|t| t.trim()).unwrap_or("");
    let reason = match picked {
        r if REASONS.contains(&r) && other.is_empty() => r.to_string(),
        r if REASONS.contains(&r) => format!("{r}: {other}"),
        "other" if !other.is_empty() => other.to_string(),
        _ => {
            return refusal(
                StatusCode::BAD_REQUEST,
                Some(&s),
                "Say why: pick a reason, or choose \"other\" and write it.",
            )
        }
    };
    if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return refusal(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "The reason must be one line of at most 200 characters.",
        );
    }
    start_backup(app, s, peer, "Safety snapshot", Some(reason))
}

fn start_backup(
    app: Arc<App>,
    s: Session,
    peer: SocketAddr,
    what: &str,
    reason: Option<String>,
) -> Response {
    let from = peer.ip().to_string();
    let detail = reason.clone().unwrap_or_default();
    let task = match app.tasks.start(what, &s.user) {
        Ok(t) => t,
        Err(running) => {
            app.audit
                .record(&s.user, &from, what, "another task is running", "refused");
            return html(
                StatusCode::CONFLICT,
                page(
                    "Busy",
                    Some(&s),
                    &format!(
                        "{}<p><a href=\"/tasks/{}\">See the running task</a></p>",
                        note(
                            "warn",
                            &format!(
                                "{} (started by {}) is still running; start this when it ends.",
                                running.what, running.by
                            )
                        ),
                        running.id
                    ),
                ),
            );
        }
    };
    app.audit.record(&s.user, &from, what, &detail, "started");
    let id = task.id;
    let what = what.to_string();
    let spawned = std::thread::Builder::new()
        .name("console-task".into())
        .spawn(move || {
            let r = app.backup(reason, task.as_ref());
            let (outcome, result) = match r {
                Ok(o) => (verdict_word(&o).to_string(), Ok(describe(&o))),
                Err(e) => {
                    let e = ledgervault_service::redact::url(&format!("{e:#}"));
                    (format!("failed: {e}"), Err(e))
                }
            };
            app.audit.record(&s.user, &from, &what, &detail, &outcome);
            task.finish(result);
        });
    if let Err(e) = spawned {
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            &format!("cannot start the work: {e}"),
        );
    }
    redirect(&format!("/tasks/{id}"))
}

fn verdict_word(o: &BackupOutcome) -> &'static str {
    match o.verdict {
        Verdict::Clean => "ok",
        Verdict::Incomplete => "incomplete",
        Verdict::Suspect => "suspect",
    }
}

fn describe(o: &BackupOutcome) -> String {
    let s = &o.summary;
    let mut text = format!(
        "Snapshot {}: {} files, {} read, {} stored, in {:.1} s. The repository holds {} snapshots.",
        s.snapshot_id.short(),
        s.files,
        crate::html::size(s.bytes_read),
        crate::html::size(s.bytes_stored),
        s.duration_secs,
        o.repository.snapshots
    );
    match o.verdict {
        Verdict::Clean => {}
        Verdict::Incomplete => text.push_str(&format!(
            " {} files could not be read: see the snapshot.",
            s.errors.len()
        )),
        Verdict::Suspect => text.push_str(&format!(" ALARM: {}", s.suspect.join("; "))),
    }
    text
}

fn task_id(raw: &str) -> Option<u64> {
    (raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse().ok())
        .flatten()
}

async fn task_page(
    State(app): Shared,
    headers: HeaderMap,
    UrlPath(raw): UrlPath<String>,
) -> Response {
    let s = session_or_login!(app, headers);
    match task_id(&raw).and_then(|id| app.tasks.get(id)) {
        Some(t) => html(StatusCode::OK, crate::pages::task(&s, &t)),
        None => refusal(StatusCode::NOT_FOUND, Some(&s), "There is no such task."),
    }
}

/// Server-sent events: the task's state as JSON, twice a second, until
/// it ends.
async fn task_events(
    State(app): Shared,
    headers: HeaderMap,
    UrlPath(raw): UrlPath<String>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    if signed_in(&app, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(task) = task_id(&raw).and_then(|id| app.tasks.get(id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let stream = futures_util::stream::unfold((task, false), |(task, ended)| async move {
        if ended {
            return None;
        }
        let state = task.state();
        let last = state.done.is_some();
        let data = serde_json::to_string(&crate::pages::task_json(&task, &state))
            .unwrap_or_else(|_| "{}".into());
        if !last {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(data)),
            (task, last),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn activity(State(app): Shared, headers: HeaderMap) -> Response {
    let s = session_or_login!(app, headers);
    let tasks = app.tasks.list();
    let audit = if s.role == Role::Admin {
        Some(app.audit.recent(50))
    } else {
        None
    };
    let a = app.clone();
    let runs = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
        match a.config.history_path() {
            Some(p) if p.exists() => ledgervault_service::history::History::open(&p)?.recent(30),
            _ => Ok(Vec::new()),
        }
    })
    .await
    .map_err(|e| anyhow!("{e}"))
    .and_then(|r| r)
    .map_err(|e| format!("{e:#}"));
    html(
        StatusCode::OK,
        crate::pages::activity(&s, &tasks, runs, audit.as_deref()),
    )
}
