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
use ledgervault_service::drill::{self, DrillReport, DrillRequest};
use ledgervault_service::status::Location;

use crate::audit::Audit;
use crate::conn::Limited;
use crate::html::{note, page};
use crate::session::{
    same, Session, Sessions, Throttle, FREE_PER_ADDRESS, FREE_PER_NAME, FREE_TRIES,
};
use crate::tasks::{Task, Tasks};
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
    /// Where operators may restore a database to a new file.
    pub restore_to: Option<PathBuf>,
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
    /// The config file as last loaded, and its stamp (see [`App::config`]).
    config: Mutex<(Arc<Config>, Option<Stamp>)>,
    pub users_path: PathBuf,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub audit: Audit,
    pub tasks: Tasks,
    pub primary: Option<Location>,
    pub copies: Vec<Location>,
    pub secure: bool,
    pub restore_to: Option<PathBuf>,
    /// The `Host` values a request may carry (plain HTTP on loopback: the
    /// loopback names with the port, against DNS rebinding); `None`: any.
    hosts: Option<Vec<String>>,
    /// Password checks at once (each takes Argon2's memory).
    checks: Arc<tokio::sync::Semaphore>,
    /// The primary repository, opened once (the key derivation is slow).
    repo: Mutex<Option<Arc<Repository>>>,
    /// Its index, and the index files it was read from.
    index: Mutex<Option<(Vec<ledgervault_repo::Id>, Arc<ledgervault_repo::Index>)>>,
    /// Downloads at once.
    downloads: Arc<tokio::sync::Semaphore>,
    /// Client restore plans that may be confirmed, by the task that made
    /// them.
    pub plans: Mutex<HashMap<u64, crate::clients::Plan>>,
}

impl App {
    /// The session cookie's name: with HTTPS, `__Host-` makes browsers
    /// keep it to this origin and to secure connections.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-lv_session"
        } else {
            COOKIE
        }
    }

    /// A `Set-Cookie` value for `token`.
    fn cookie(&self, token: &str, max_age: Option<u32>) -> String {
        let mut c = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name()
        );
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        c
    }

    /// The config, loaded again when its file changed (the settings
    /// page, or an editor); a file that no longer loads leaves the one in
    /// use. Where the console listens, its users and its certificate are
    /// read once, at start.
    pub fn config(&self) -> Arc<Config> {
        let mut slot = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = slot.0.file.clone() else {
            return slot.0.clone();
        };
        let stamp = file_stamp(&path);
        if stamp != slot.1 {
            slot.1 = stamp;
            if let Ok(c) = Config::load(Some(&path)) {
                slot.0 = Arc::new(c);
            }
        }
        slot.0.clone()
    }

    /// Takes `c` as the config now in use (just written by the console).
    pub fn set_config(&self, c: Config) {
        let stamp = c.file.as_deref().and_then(file_stamp);
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = (Arc::new(c), stamp);
    }

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
        let prepared = backup::prepare(&self.config(), &req)?;
        let captured = prepared.capture(&req, None)?;
        let repo = self.repo()?;
        prepared.run(
            &repo,
            captured,
            &self.config(),
            &req,
            self.local_root(),
            progress,
        )
    }

    /// The primary repository's folder, when it is one: never backed up.
    pub(crate) fn local_root(&self) -> Option<PathBuf> {
        let l = self.primary.as_ref()?.target.location.as_deref()?;
        if l.starts_with("s3:") {
            return None;
        }
        std::fs::canonicalize(l.strip_prefix("file://").unwrap_or(l)).ok()
    }

    /// The repository's index, shared by every page and download, and read
    /// again only when the index files change.
    fn index(&self, repo: &Repository) -> Result<Arc<ledgervault_repo::Index>> {
        let ids = repo.list_ids(ledgervault_repo::FileKind::Index)?;
        let mut slot = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, index)) = &*slot {
            if *known == ids {
                return Ok(index.clone());
            }
        }
        let index = Arc::new(repo.load_index()?);
        *slot = Some((ids, index.clone()));
        Ok(index)
    }
}

impl App {
    /// What takes a restore's safety snapshot, tagged `tag`: its reason goes
    /// into `task`'s log, and its reading shows in the task's progress.
    pub(crate) fn safety_taker<'a>(
        &'a self,
        repo: &'a Repository,
        tag: &'static str,
        task: &'a Task,
    ) -> impl FnMut(
        Vec<ledgervault_repo::BackupSource>,
        String,
        &std::path::Path,
    ) -> Result<ledgervault_repo::Id>
           + 'a {
        move |sources, reason, target| {
            task.log(reason.clone());
            ledgervault_service::restore::safety_snapshot(
                repo,
                sources,
                tag,
                reason,
                &ledgervault_service::redact::url(&target.to_string_lossy()),
                self.local_root(),
                task,
            )
        }
    }

    /// Restores the database `name` of snapshot `id` to `target`.
    fn restore_db(
        &self,
        id: &str,
        name: &str,
        target: PathBuf,
        replace: bool,
        task: &Task,
    ) -> Result<ledgervault_service::restore::DbRestored> {
        let repo = self.repo()?;
        let _lock = ledgervault_repo::read_lock(&repo, "console restore")?;
        let (id, snap) = repo.find_snapshot(id)?;
        let req = ledgervault_service::restore::DbRestore {
            database: name.to_string(),
            target,
            replace,
            full_check: false,
            exclude: self.local_root(),
        };
        let opts = ledgervault_repo::RestoreOptions::default();
        let mut take_safety =
            self.safety_taker(&repo, ledgervault_service::drill::PRE_RESTORE_TAG, task);
        ledgervault_service::restore::restore_database(
            &repo,
            id,
            &snap,
            &req,
            opts,
            task,
            &mut take_safety,
        )
    }

    /// Restores the server database `name` of snapshot `id` to the
    /// address `target`.
    fn restore_server(
        &self,
        id: &str,
        name: &str,
        target: String,
        database: Option<String>,
        replace: bool,
        task: &Task,
    ) -> Result<ledgervault_service::restore::ServerRestored> {
        let repo = self.repo()?;
        let _lock = ledgervault_repo::read_lock(&repo, "console restore")?;
        let (id, snap) = repo.find_snapshot(id)?;
        let req = ledgervault_service::restore::ServerRestore {
            target,
            database,
            include: vec![name.to_string()],
            replace,
            no_owner: false,
            roles: false,
        };
        let mut take_safety =
            self.safety_taker(&repo, ledgervault_service::drill::PRE_RESTORE_TAG, task);
        ledgervault_service::restore::restore_to_address(
            &repo,
            id,
            &snap,
            &req,
            &mut take_safety,
            task,
        )
    }

    /// Runs a restore drill on the latest backup, under a read lock.
    fn drill(&self, progress: &dyn Progress) -> Result<DrillReport> {
        let repo = self.repo()?;
        let _lock = ledgervault_repo::read_lock(&repo, "console drill")?;
        drill::run(&repo, &self.config(), &DrillRequest::default(), progress)
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
        config: Mutex::new((
            opts.config.clone(),
            opts.config.file.as_deref().and_then(file_stamp),
        )),
        users_path: opts.users,
        sessions: Sessions::default(),
        throttle: Throttle::default(),
        audit: Audit::new(opts.audit.as_deref()),
        tasks: Tasks::default(),
        primary: opts.primary,
        copies: opts.copies,
        secure: tls.is_some(),
        restore_to: opts.restore_to,
        hosts: (tls.is_none()).then(|| loopback_hosts(addr.port())),
        checks: Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)),
        repo: Mutex::new(None),
        index: Mutex::new(None),
        downloads: Arc::new(tokio::sync::Semaphore::new(DOWNLOADS_AT_ONCE)),
        plans: Mutex::new(HashMap::new()),
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
                let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
                let served = match tls_config {
                    None => {
                        let bounded = Limited::new(listener, permits, IDLE_CONNECTION);
                        axum::serve(bounded, service)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    Some(config) => {
                        match TlsListener::new(listener, config, permits, IDLE_CONNECTION) {
                            Ok(l) => axum::serve(l, service).with_graceful_shutdown(stop).await,
                            Err(e) => Err(e),
                        }
                    }
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

/// A file's modification time and size: when either changes, it is read
/// again.
type Stamp = (std::time::SystemTime, u64);

fn file_stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Password checks at once.
const CHECKS_AT_ONCE: usize = 2;
/// Downloads at once (each reads the repository for as long as it lasts).
const DOWNLOADS_AT_ONCE: usize = 2;
/// A download whose client takes no data for this long is ended (it
/// holds a read lock that prune waits for).
const DOWNLOAD_STALL: Duration = Duration::from_secs(60);
/// The largest request body (forms are small).
const BODY_LIMIT: usize = 16 << 10;
/// Connections served at once; more wait to be accepted.
const CONNECTIONS: usize = 128;
/// A connection with no byte in either direction for this long is closed.
const IDLE_CONNECTION: Duration = Duration::from_secs(60);

fn loopback_hosts(port: u16) -> Vec<String> {
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect()
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/snapshots", get(snapshots))
        .route("/snapshots/{id}", get(browse))
        .route("/snapshots/{id}/download", get(download))
        .route("/backup", post(backup_now))
        .route("/snapshot", post(safety_snapshot))
        .route("/drills", get(drills))
        .route("/alerts/test", post(alert_test))
        .route("/restore", get(restore_page).post(restore_now))
        .route("/drill", post(drill_now))
        .route("/clients", get(crate::clients::list_page))
        .route("/clients/plan", post(crate::clients::plan))
        .route("/clients/restore", post(crate::clients::confirm))
        .route("/activity", get(activity))
        .route("/runs/{id}", get(run_page))
        .route(
            "/settings",
            get(crate::settings::settings_page).post(crate::settings::save),
        )
        .route("/tasks/{id}", get(task_page))
        .route("/tasks/{id}/events", get(task_events))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            security_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            known_host,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Refuses a request whose `Host` is not this console's (a page on
/// another site that had its name resolve to 127.0.0.1).
async fn known_host(
    State(app): Shared,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(hosts) = &app.hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this console answers only to its own address\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn security_headers(State(app): Shared, mut r: Response) -> Response {
    let h = r.headers_mut();
    if app.secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
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

pub(crate) type Shared = State<Arc<App>>;

/// Runs blocking work (the repository, Argon2) off the async threads; a
/// panic in it is an error like the work's own.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow!("{e}"))
        .and_then(|r| r)
}
pub(crate) type Peer = ConnectInfo<PeerAddr>;

/// The client's address, over plain HTTP or HTTPS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, Limited>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, Limited>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A page that says no, in words.
pub(crate) fn refusal(status: StatusCode, who: Option<&Session>, text: &str) -> Response {
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
pub(crate) fn signed_in(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = cookie(headers, app.cookie_name())?;
    let s = app.sessions.get(&token)?;
    let now = app
        .users()
        .ok()
        .and_then(|u| Some((u.role(&s.user)?, u.stamp(&s.user)?)));
    match now {
        Some((role, stamp)) if role == s.role && stamp == s.stamp => Some((token, s)),
        _ => {
            app.sessions.end(&token);
            None
        }
    }
}

/// A change must come from a page of this console: same origin, the
/// session's CSRF token, and a role that allows it.
pub(crate) fn authorize(
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
    let addr_key = format!("addr:{}", net_of(peer.ip()));
    let wrong = || {
        html(
            StatusCode::UNAUTHORIZED,
            crate::pages::login(Some("Wrong user name or password.")),
        )
    };
    let throttled = |w: Duration| {
        let text = format!(
            "Too many failed sign-ins. Try again in {} seconds.",
            w.as_secs().max(1)
        );
        html(
            StatusCode::TOO_MANY_REQUESTS,
            crate::pages::login(Some(&text)),
        )
    };
    // A name no user can have: counted against the address, not logged
    // (it could be anything, of any length).
    if !crate::users::valid_name(&user) {
        if let Some(w) = app.throttle.wait(&addr_key) {
            return throttled(w);
        }
        app.throttle.fail(&addr_key, FREE_PER_ADDRESS);
        return wrong();
    }
    let keys = [
        (format!("pair:{user}:{}", net_of(peer.ip())), FREE_TRIES),
        (format!("name:{user}"), FREE_PER_NAME),
        (addr_key, FREE_PER_ADDRESS),
    ];
    if let Some(w) = keys.iter().filter_map(|(k, _)| app.throttle.wait(k)).max() {
        return throttled(w);
    }
    // Counted before the check, cleared after a success: requests sent
    // at once are all counted, however long the checks take.
    let mut starts_waiting = false;
    for (k, free) in &keys {
        starts_waiting |= app.throttle.fail(k, *free);
    }
    if starts_waiting {
        app.audit.record(
            &user,
            &from,
            "sign in",
            "throttled: too many failed sign-ins",
            "refused",
        );
    }
    // Argon2 checks take memory (19 MiB each): a few at a time.
    let permit =
        match tokio::time::timeout(Duration::from_secs(10), app.checks.clone().acquire_owned())
            .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "The console is busy. Try again in a moment.",
                )
            }
        };
    let check = app.clone();
    let (name, pw) = (user.clone(), password);
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        check.users().map(|u| {
            let role = u.verify(&name, pw.as_bytes());
            (role, u.stamp(&name))
        })
    })
    .await;
    let (role, stamp) = match checked {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // Not the user's fault: nothing counted, the reason on the
            // console's standard error.
            for (k, _) in &keys {
                app.throttle.clear(k);
            }
            eprintln!("ledgervault console: {e:#}");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "The console cannot read its user list; the person who runs it can see why.",
            );
        }
        Err(_) => return wrong(),
    };
    let (Some(role), Some(stamp)) = (role, stamp) else {
        app.audit
            .record(&user, &from, "sign in", "wrong name or password", "refused");
        return wrong();
    };
    for (k, _) in &keys[..2] {
        app.throttle.clear(k);
    }
    // Whatever session cookie the browser brought is dropped: a fresh
    // token, so a planted one is worth nothing.
    if let Some(old) = cookie(&headers, app.cookie_name()) {
        app.sessions.end(&old);
    }
    let token = app.sessions.start(&user, role, &stamp);
    app.audit.record(&user, &from, "sign in", role.name(), "ok");
    let mut r = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&app.cookie(&token, None)) {
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
    if let Some(token) = cookie(&headers, app.cookie_name()) {
        app.sessions.end(&token);
    }
    app.audit
        .record(&s.user, &peer.ip().to_string(), "sign out", "", "ok");
    let mut r = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&app.cookie("", Some(0))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
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
    let report = blocking(move || {
        let mut locations: Vec<Location> = a.primary.iter().cloned().collect();
        locations.extend(a.copies.iter().cloned());
        ledgervault_service::status::status(&a.config(), locations, chrono::Utc::now(), 10)
    })
    .await;
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
    let list = blocking(move || -> Result<_> {
        let repo = a.repo()?;
        let (snaps, bad) = repo.snapshots()?;
        Ok((
            snaps,
            bad.into_iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ))
    })
    .await;
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

/// A snapshot id, or a prefix of one, as hex.
fn snapshot_spec(raw: &str) -> Option<&str> {
    (!raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(raw)
}

/// What a browse or download names: the repository, its index, the
/// snapshot, and the names of the path in it.
struct Place {
    repo: Arc<Repository>,
    index: Arc<ledgervault_repo::Index>,
    id: ledgervault_repo::Id,
    snap: ledgervault_repo::Snapshot,
    names: Vec<Vec<u8>>,
}

/// A refusal for a place that is not there (404) or a repository that
/// cannot be read (503).
async fn place(app: &Arc<App>, raw: &str, at: &str, who: &Session) -> Result<Place, Response> {
    let not_found = |text: &str| refusal(StatusCode::NOT_FOUND, Some(who), text);
    let Some(spec) = snapshot_spec(raw) else {
        return Err(not_found("There is no such snapshot."));
    };
    let names = crate::browse::names(at).map_err(|e| not_found(&format!("{e}.")))?;
    let (a, spec) = (app.clone(), spec.to_string());
    let found = blocking(move || -> Result<Place> {
        let repo = a.repo()?;
        let (id, snap) = repo.find_snapshot(&spec)?;
        let index = a.index(&repo)?;
        Ok(Place {
            repo,
            index,
            id,
            snap,
            names,
        })
    })
    .await;
    found.map_err(|e| {
        let text = format!("{e:#}");
        let missing = matches!(
            e.downcast_ref::<ledgervault_repo::Error>(),
            Some(ledgervault_repo::Error::NotFound(_) | ledgervault_repo::Error::Invalid(_))
        );
        if missing {
            not_found(&format!("There is no such snapshot: {text}"))
        } else {
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(who),
                &format!("The repository cannot be read: {text}"),
            )
        }
    })
}

async fn browse(
    State(app): Shared,
    headers: HeaderMap,
    UrlPath(raw): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = session_or_login!(app, headers);
    let at = q.get("at").map(String::as_str).unwrap_or("");
    let p = match place(&app, &raw, at, &s).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let who = s.clone();
    let rendered = blocking(move || {
        crate::browse::page_for(&who, &p.repo, &p.index, &p.id, &p.snap, &p.names)
    })
    .await;
    match rendered {
        Ok(h) => html(StatusCode::OK, h),
        Err(e) => refusal(StatusCode::NOT_FOUND, Some(&s), &format!("{e:#}.")),
    }
}

/// Sends what a blocking writer writes as the response body, a chunk at a
/// time (at most four chunks wait: memory stays small whatever the size).
/// A client that takes nothing for [`DOWNLOAD_STALL`] ends it.
struct ChunkSender(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>, u64);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use tokio::sync::mpsc::error::TrySendError;
        let since = std::time::Instant::now();
        let mut item = Ok(buf.to_vec());
        loop {
            match self.0.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Closed(_)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "the client left",
                    ))
                }
                Err(TrySendError::Full(back)) => {
                    if since.elapsed() > DOWNLOAD_STALL {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the client stopped reading",
                        ));
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn download(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    UrlPath(raw): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = session_or_login!(app, headers);
    let at = q.get("at").map(String::as_str).unwrap_or("");
    let p = match place(&app, &raw, at, &s).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(last) = p.names.last().cloned() else {
        return refusal(
            StatusCode::NOT_FOUND,
            Some(&s),
            "Choose a file or a folder to download.",
        );
    };
    let Ok(permit) = app.downloads.clone().try_acquire_owned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&s),
            "Two downloads are running; start this one when one of them ends.",
        );
    };
    let (repo, index, snap, names) = (p.repo.clone(), p.index, p.snap, p.names);
    let resolved = {
        let (repo, names) = (repo.clone(), names.clone());
        blocking(move || crate::browse::resolve(&repo, &index, &snap, &names).map(|n| (n, index)))
            .await
    };
    let (node, index) = match resolved {
        Ok((Some(n), index)) => (n, index),
        Ok((None, _)) => {
            return refusal(
                StatusCode::NOT_FOUND,
                Some(&s),
                "No such entry in this snapshot.",
            )
        }
        Err(e) => return refusal(StatusCode::NOT_FOUND, Some(&s), &format!("{e:#}.")),
    };
    let zip = node.kind == ledgervault_repo::NodeKind::Dir;
    if !zip && !crate::browse::has_content(&node) {
        return refusal(
            StatusCode::NOT_FOUND,
            Some(&s),
            "This entry has no content to download.",
        );
    }
    let shown = ledgervault_repo::escape_bytes(&crate::browse::at_bytes(&names));
    let detail = format!("{} {shown}", p.id.short());
    let (audit_app, user, from) = (app.clone(), s.user.clone(), peer.ip().to_string());
    let size = node_size(&node);
    let disposition = crate::browse::content_disposition(&last, zip);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let spawned = std::thread::Builder::new()
        .name("console-download".into())
        .spawn(move || {
            let _permit = permit;
            let mut out = ChunkSender(tx, 0);
            let r = (|| -> Result<()> {
                // Prune waits for a download, as for a restore.
                let _lock = ledgervault_repo::read_lock(&repo, "console download")?;
                if zip {
                    crate::browse::write_zip(&repo, &index, &node, &last, &mut out)
                } else {
                    crate::browse::copy_content(&repo, &index, &node, &mut out)
                }
            })();
            let outcome = match &r {
                Ok(()) => format!("ok, {} bytes", out.1),
                Err(e) => format!("failed after {} bytes: {e:#}", out.1),
            };
            audit_app
                .audit
                .record(&user, &from, "download", &detail, &outcome);
            if let Err(e) = r {
                // Ends the body with an error: the browser shows a failed
                // download, never a short file that looks whole.
                let _ = out.0.try_send(Err(std::io::Error::other(format!("{e:#}"))));
            }
        });
    if spawned.is_err() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&s),
            "Cannot start the download.",
        );
    }
    let body =
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let kind = if zip {
        "application/zip"
    } else {
        "application/octet-stream"
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if !zip {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

fn node_size(n: &ledgervault_repo::Node) -> u64 {
    n.size
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
    if reason.chars().count() > 200 || reason.chars().any(hidden) {
        return refusal(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "The reason must be one line of at most 200 characters.",
        );
    }
    start_backup(app, s, peer, "Safety snapshot", Some(reason))
}

/// Characters that do not show, or turn the text around them: refused
/// in what people type, so that a label says what it seems to.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// What a piece of work ended with: whether it went well, the word for
/// the audit log, and the message for its page.
pub(crate) type Ended = (bool, String, String);

fn start_backup(
    app: Arc<App>,
    s: Session,
    peer: SocketAddr,
    what: &str,
    reason: Option<String>,
) -> Response {
    let detail = reason.clone().unwrap_or_default();
    start_work(app, s, peer, what, detail, move |app, task| {
        let o = app.backup(reason, task)?;
        Ok((
            o.verdict == Verdict::Clean,
            verdict_word(&o).to_string(),
            describe(&o),
        ))
    })
}

/// Starts `work` on a thread of its own as a task of `s`'s, unless other
/// work is running; sends the browser to the task's page.
pub(crate) fn start_work(
    app: Arc<App>,
    s: Session,
    peer: SocketAddr,
    what: &str,
    detail: String,
    work: impl FnOnce(&App, &Task) -> Result<Ended> + Send + 'static,
) -> Response {
    let from = peer.ip().to_string();
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
    let (thread_task, thread_app) = (task.clone(), app.clone());
    let (user, thread_from, thread_detail) = (s.user.clone(), from.clone(), detail.clone());
    let spawned = std::thread::Builder::new()
        .name("console-task".into())
        .spawn(move || {
            let (app, task) = (thread_app, thread_task);
            // A panic is an error like any other: the task ends, and the
            // next one may start.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                work(app.as_ref(), task.as_ref())
            }))
            .unwrap_or_else(|_| Err(anyhow!("the work stopped on an internal error (a bug)")));
            let (outcome, result) = match r {
                Ok((true, word, message)) => (word, Ok(message)),
                Ok((false, word, message)) => (word, Err(message)),
                Err(e) => {
                    let e = format!("{e:#}");
                    (format!("failed: {e}"), Err(e))
                }
            };
            app.audit
                .record(&user, &thread_from, &what, &thread_detail, &outcome);
            task.finish(result);
        });
    if let Err(e) = spawned {
        let e = format!("cannot start the work: {e}");
        app.audit.record(
            &s.user,
            &from,
            "start work",
            &detail,
            &format!("failed: {e}"),
        );
        task.finish(Err(e.clone()));
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, Some(&s), &e);
    }
    redirect(&format!("/tasks/{id}"))
}

/// The snapshot and database a restore page is about.
struct RestoreChoice {
    id: String,
    name: String,
    /// Where it was backed up from: a file, or a server address as
    /// snapshots keep it (no password).
    live: PathBuf,
    /// The machine the snapshot was taken on.
    host: String,
    /// A database on a server (PostgreSQL): restored to an address.
    on_server: bool,
}

/// Reads `snapshot` (a whole id) and `source` (the name, hex) and finds
/// that database source in the snapshot.
async fn restore_choice(
    app: &Arc<App>,
    q: &HashMap<String, String>,
    who: &Session,
) -> Result<RestoreChoice, Response> {
    let bad = |t: &str| refusal(StatusCode::NOT_FOUND, Some(who), t);
    let id = q.get("snapshot").cloned().unwrap_or_default();
    if id.len() != 64 || snapshot_spec(&id).is_none() {
        return Err(bad("There is no such snapshot."));
    }
    let name = q
        .get("source")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("There is no such database in this snapshot."))?;
    let (a, spec, wanted) = (app.clone(), id.clone(), name.clone());
    let found = blocking(move || -> Result<Option<(String, String, bool)>> {
        let repo = a.repo()?;
        let (_, snap) = repo.find_snapshot(&spec)?;
        Ok(snap
            .sources
            .iter()
            .filter(|s| s.name == wanted)
            .find_map(|s| {
                let on_server =
                    ledgervault_service::db::of_source(s).is_some_and(|k| k.on_server());
                (s.node.kind == ledgervault_repo::NodeKind::DbImage || on_server)
                    .then(|| (s.path.clone(), snap.host.clone(), on_server))
            }))
    })
    .await;
    match found {
        Ok(Some((live, host, on_server))) => Ok(RestoreChoice {
            id,
            name,
            live: PathBuf::from(live),
            host,
            on_server,
        }),
        Ok(None) | Err(_) => Err(bad("There is no such database in this snapshot.")),
    }
}

async fn restore_page(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = session_or_login!(app, headers);
    let c = match restore_choice(&app, &q, &s).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    html(
        StatusCode::OK,
        if c.on_server {
            let live = c.live.to_string_lossy();
            let live_name = ledgervault_service::db::by_address(&live)
                .and_then(|k| k.database_of(&live))
                .unwrap_or_default();
            crate::pages::restore_to_server(&s, &c.id, &c.name, &live, &live_name)
        } else {
            crate::pages::restore(
                &s,
                &c.id,
                &c.name,
                &c.live,
                &c.host,
                app.restore_to.as_deref(),
            )
        },
    )
}

/// A plain file name for a restored database: no folder, nothing hidden.
fn plain_file_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n != "."
        && n != ".."
        && !n.starts_with('.')
        && !n.contains(['/', '\\'])
        && !n.chars().any(hidden)
}

async fn restore_now(
    State(app): Shared,
    ConnectInfo(PeerAddr(peer)): Peer,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let over_live = form.get("mode").map(String::as_str) == Some("live");
    let (action, need) = if over_live {
        ("restore over the live database", Role::Admin)
    } else {
        ("restore to a new file", Role::Operator)
    };
    let s = match authorize(&app, &headers, &peer, &form, action, need) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = match restore_choice(&app, &form, &s).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let bad = |t: &str| refusal(StatusCode::BAD_REQUEST, Some(&s), t);
    if c.on_server {
        return restore_on_server(app, s, peer, c, over_live, &form);
    }
    let target = if over_live {
        let expected = c
            .live
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if c.host != ledgervault_repo::host_name() {
            return bad(&format!(
                "Nothing was restored: this snapshot was taken on {}, and this console runs on {}; replace that database from {}'s console or command line.",
                c.host,
                ledgervault_repo::host_name(),
                c.host
            ));
        }
        let typed = form.get("confirm").map(|t| t.trim()).unwrap_or("");
        if expected.is_empty() || typed != expected {
            app.audit.record(
                &s.user,
                &peer.ip().to_string(),
                action,
                "confirmation did not match",
                "refused",
            );
            return bad(&format!(
                "Nothing was restored: type the database's file name, {expected}, to confirm."
            ));
        }
        c.live.clone()
    } else {
        let Some(dir) = app.restore_to.clone() else {
            return bad("Restoring to a new file needs [console] restore_to in the config file.");
        };
        let file = form.get("file").map(|f| f.trim()).unwrap_or("");
        if !plain_file_name(file) {
            return bad("Give a plain file name (no folder, not starting with a dot).");
        }
        // Nothing may be there, not even a link or a folder (which would
        // send the file elsewhere).
        let target = dir.join(file);
        if std::fs::symlink_metadata(&target).is_ok() {
            return bad(&format!(
                "{} exists; give a new name (nothing is ever restored over a file here).",
                file
            ));
        }
        target
    };
    let detail = format!(
        "{} of snapshot {} to {}",
        c.name,
        &c.id[..8],
        target.display()
    );
    let (id, name) = (c.id.clone(), c.name.clone());
    start_work(
        app,
        s,
        peer,
        "Restore database",
        detail,
        move |app, task| {
            let r = app.restore_db(&id, &name, target, over_live, task)?;
            let mut m = format!(
                "Restored database {} from snapshot {} to {} in {:.1} s: {} ok.",
                r.database,
                r.snapshot_id.short(),
                r.target.display(),
                r.duration_secs,
                r.check
            );
            if let Some(safety) = r.safety_snapshot {
                m.push_str(&format!(
                    " What was there before is kept in safety snapshot {} (tag pre-restore).",
                    safety.short()
                ));
            }
            if r.replaced_live {
                m.push_str(" Open connections now see the restored data.");
            }
            Ok((true, "ok".to_string(), m))
        },
    )
}

/// A database name as people type one for a new database: a plain
/// identifier.
fn plain_database_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && n.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Restores a server database (PostgreSQL) of a snapshot: to a new
/// database on the same server (an operator's), or over the one it was
/// backed up from after its name is typed (an admin's).
fn restore_on_server(
    app: Arc<App>,
    s: Session,
    peer: SocketAddr,
    c: RestoreChoice,
    over_live: bool,
    form: &HashMap<String, String>,
) -> Response {
    let bad = |t: &str| refusal(StatusCode::BAD_REQUEST, Some(&s), t);
    let recorded = c.live.to_string_lossy().into_owned();
    let Some(kind) = ledgervault_service::db::by_address(&recorded) else {
        return bad("This snapshot does not say which server the database came from.");
    };
    // Only a database the config file names as a source, on the server it
    // names (with its login: snapshots keep no password): never an address
    // a snapshot alone says.
    let Some(base) = ledgervault_service::db::configured_address(&app.config(), &recorded) else {
        return bad(&format!(
            "Nothing was restored: {recorded} is not among the config file's sources, so this console does not restore it (the command line can: restore --target)."
        ));
    };
    let live_name = kind.database_of(&recorded).unwrap_or_default();
    if over_live && c.host != ledgervault_repo::host_name() {
        return bad(&format!(
            "Nothing was restored: this snapshot was taken on {}, and this console runs on {}; replace that database from {}'s console or command line.",
            c.host,
            ledgervault_repo::host_name(),
            c.host
        ));
    }
    let (target, database) = if over_live {
        let typed = form.get("confirm").map(|t| t.trim()).unwrap_or("");
        if live_name.is_empty() || typed != live_name {
            app.audit.record(
                &s.user,
                &peer.ip().to_string(),
                "restore over the live database",
                "confirmation did not match",
                "refused",
            );
            return bad(&format!(
                "Nothing was restored: type the database's name, {live_name}, to confirm."
            ));
        }
        (base, None)
    } else {
        let name = form.get("database").map(|f| f.trim()).unwrap_or("");
        if !plain_database_name(name) {
            return bad("Give the new database a plain name: letters, digits and _, at most 63.");
        }
        if name.eq_ignore_ascii_case(&live_name) {
            return bad("That is the live database's name; give a new one.");
        }
        (base, Some(name.to_string()))
    };
    // Shown as the snapshot names it, never with the config's login.
    let detail = format!(
        "{} of snapshot {} to {}",
        c.name,
        &c.id[..8],
        match &database {
            Some(d) => format!("new database {d} on the server of {recorded}"),
            None => recorded.clone(),
        }
    );
    let (id, name) = (c.id.clone(), c.name.clone());
    start_work(
        app,
        s,
        peer,
        "Restore database",
        detail,
        move |app, task| {
            let r = app.restore_server(&id, &name, target, database, over_live, task)?;
            let mut m = format!(
                "Restored database {} from snapshot {} to {} on {} in {:.1} s.",
                r.source,
                r.snapshot_id.short(),
                r.database,
                r.server,
                r.duration_secs
            );
            if let Some(safety) = r.safety_snapshot {
                m.push_str(&format!(
                    " What was there before is kept in safety snapshot {} (tag pre-restore).",
                    safety.short()
                ));
            }
            if r.replaced {
                m.push_str(&format!(
                    " It replaced the old database ({} open connection(s) closed).",
                    r.closed_connections
                ));
            }
            Ok((true, "ok".to_string(), m))
        },
    )
}

async fn alert_test(
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
        "send a test alert",
        Role::Admin,
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let channels = app.config().alerts.channels();
    if channels == 0 {
        return refusal(
            StatusCode::BAD_REQUEST,
            Some(&s),
            "No alert channel is configured ([[alerts.email]] or [[alerts.webhook]] in the config file).",
        );
    }
    let (a, user) = (app.clone(), s.user.clone());
    let failed = tokio::task::spawn_blocking(move || {
        use ledgervault_service::alert::{self, Alert, AlertKind};
        let test = Alert::new(
            AlertKind::Test,
            "test alert",
            format!("This is a test alert sent from the ledgervault console by {user}. If you can read it, alerts reach you."),
        );
        alert::send(&a.config().alerts, &test)
    })
    .await
    .unwrap_or_else(|e| vec![format!("{e}")]);
    let from = peer.ip().to_string();
    let body = if failed.is_empty() {
        app.audit
            .record(&s.user, &from, "send a test alert", "", "ok");
        note(
            "ok",
            &format!("The test alert was sent on {channels} channel(s)."),
        )
    } else {
        app.audit.record(
            &s.user,
            &from,
            "send a test alert",
            "",
            &format!("failed: {}", failed.join("; ")),
        );
        failed
            .iter()
            .map(|f| note("error", f))
            .collect::<Vec<_>>()
            .join("\n")
    };
    html(
        StatusCode::OK,
        page(
            "Test alert",
            Some(&s),
            &format!("{body}<p><a href=\"/activity\">Back to the activity</a></p>"),
        ),
    )
}

async fn drill_now(
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
        "restore drill",
        Role::Operator,
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    start_work(app, s, peer, "Restore drill", String::new(), |app, task| {
        let r = app.drill(task)?;
        Ok((
            r.passed,
            if r.passed { "passed" } else { "failed" }.to_string(),
            describe_drill(&r),
        ))
    })
}

fn describe_drill(r: &DrillReport) -> String {
    let head = format!(
        "snapshot {} of {}",
        r.snapshot.short(),
        crate::html::when(&r.snapshot_time)
    );
    if r.passed {
        return format!(
            "The restore drill PASSED on {head}: {} checks passed; restoring {} took {:.1} s (your recovery time).",
            r.checks_run,
            crate::html::size(r.restored_bytes),
            r.restore_secs
        );
    }
    let first = r
        .sources
        .iter()
        .flat_map(|s| {
            s.checks
                .iter()
                .flat_map(|d| d.checks.iter().map(move |c| (d, c)))
        })
        .find(|(_, c)| !c.passed)
        .map(|(d, c)| format!(" First failure: {}: {}: {}", d.path, c.name, c.detail))
        .unwrap_or_default();
    format!(
        "The restore drill FAILED on {head}: {} of {} checks failed, {} files could not be restored.{first}",
        r.checks_failed, r.checks_run, r.damaged.len()
    )
}

async fn drills(State(app): Shared, headers: HeaderMap) -> Response {
    let s = session_or_login!(app, headers);
    let a = app.clone();
    let list = blocking(move || drill::history(&*a.repo()?)).await;
    let running = app.tasks.list().into_iter().find(|t| t.running());
    html(
        StatusCode::OK,
        crate::pages::drills(&s, list.map_err(|e| format!("{e:#}")), running.as_deref()),
    )
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
        Some(t) => {
            let next = crate::clients::follow_up(&app, &s, &t);
            html(StatusCode::OK, crate::pages::task(&s, &t, &next))
        }
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
    let state = (task, false, app, headers);
    let stream = futures_util::stream::unfold(state, |(task, ended, app, headers)| async move {
        // The session is checked again at every event: signing out (or
        // losing the account) ends the feed.
        if ended || signed_in(&app, &headers).is_none() {
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
            (task, last, app, headers),
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
    let runs = blocking(move || -> Result<Vec<_>> {
        match a.config().history_path() {
            Some(p) if p.exists() => ledgervault_service::history::History::open(&p)?.recent(30),
            _ => Ok(Vec::new()),
        }
    })
    .await
    .map_err(|e| format!("{e:#}"));
    html(
        StatusCode::OK,
        crate::pages::activity(
            &s,
            &tasks,
            runs,
            audit.as_deref(),
            app.config().alerts.channels(),
        ),
    )
}

async fn run_page(
    State(app): Shared,
    headers: HeaderMap,
    UrlPath(raw): UrlPath<String>,
) -> Response {
    let s = session_or_login!(app, headers);
    // A log can hold what a failed drill found in the books (offending
    // rows): for those who act on it.
    if s.role < Role::Operator {
        return refusal(
            StatusCode::FORBIDDEN,
            Some(&s),
            "A run's log is for operators and admins.",
        );
    }
    let Some(id) = task_id(&raw).and_then(|i| i64::try_from(i).ok()) else {
        return refusal(StatusCode::NOT_FOUND, Some(&s), "There is no such run.");
    };
    let a = app.clone();
    let found = blocking(move || match a.config().history_path() {
        Some(p) if p.exists() => ledgervault_service::history::History::open(&p)?.run_with_log(id),
        _ => Ok(None),
    })
    .await;
    match found {
        Ok(Some((run, log))) => html(StatusCode::OK, crate::pages::run(&s, &run, &log)),
        Ok(None) => refusal(StatusCode::NOT_FOUND, Some(&s), "There is no such run."),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&s),
            &format!("The run history cannot be read: {e:#}"),
        ),
    }
}
