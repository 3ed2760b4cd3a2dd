//! A repository in an S3-compatible bucket, through OpenDAL.
//!
//! Objects, listings, ranged reads, parallel multipart uploads, retries with
//! backoff and jitter, timeouts and a bound on concurrent requests come from
//! OpenDAL's S3 service and layers. What OpenDAL does not do (bucket
//! versioning and Object Lock: `?versioning`, `?object-lock`, `?retention`)
//! is sent here, signed by the same AWS signer and credential chain.
//!
//! On a versioned bucket (every bucket with Object Lock is one) a plain
//! overwrite adds a version and a plain delete adds a delete marker, so the
//! bytes ledgervault wrote may no longer be the current version. Objects
//! named by the hash of their bytes are therefore read defensively: listings
//! come from the version listing, an object whose current version is a
//! delete marker or one of several versions is a *suspect*, and a suspect is
//! read from the newest version whose bytes hash to its name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use ledgervault_repo::{
    short_object, Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo, Retention,
};
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind as OdKind, OperationContext, Operator};

/// How an S3 repository is reached, beyond its URL.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Region to sign for. Default: `AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// else `us-east-1` (what most S3-compatible servers accept).
    pub region: Option<String>,
    /// `https://BUCKET.HOST/KEY` instead of `https://HOST/BUCKET/KEY`.
    pub virtual_host: bool,
    /// PEM file of extra certificate authorities to trust.
    pub ca_bundle: Option<PathBuf>,
    /// Requests in flight at once (default 16).
    pub connections: Option<usize>,
    /// Named profile of the shared credentials and config files.
    pub profile: Option<String>,
    /// How long one request may go without progress before it is given up
    /// and retried (default 60 s).
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing here is secret, but keep the shape explicit.
        f.debug_struct("S3Options")
            .field("region", &self.region)
            .field("virtual_host", &self.virtual_host)
            .field("ca_bundle", &self.ca_bundle)
            .field("connections", &self.connections)
            .field("profile", &self.profile)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The furthest retention date the local record is trusted for (about
/// 100 years, the longest `--immutable-days` plus slack).
const MAX_RECORDED: i64 = 36_600 * 86_400;

/// A query value, percent-encoded.
fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Objects larger than this are uploaded in parallel parts of
/// [`PART_SIZE`]; smaller ones (a default pack of 16 MiB) in one request.
/// A multipart upload costs two more round trips (start and complete), and
/// its parallel parts only pay on links faster than one stream fills.
pub const ONE_REQUEST_MAX: usize = 32 << 20;
/// The size of the parts of a multipart upload.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one object uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
const DEFAULT_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a request that failed for a temporary reason: with delays
/// doubling from 0.2 s to at most 10 s, plus jitter, a request is given up
/// after about 7 × the timeout plus 30 s.
const RETRIES: usize = 6;

/// Where an S3 repository lives: `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `https://host:port`, no path, no credentials.
    pub endpoint: String,
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3:https://HOST[:PORT]/BUCKET[/PREFIX]` (also `s3:http://…`
    /// for loopback servers, and `s3://BUCKET[/PREFIX]` for AWS itself).
    pub fn parse(s: &str) -> Result<S3Location, String> {
        let rest = s
            .strip_prefix("s3:")
            .ok_or_else(|| "an S3 repository starts with s3:".to_string())?;
        // The URL parser would resolve these silently; a typo is refused.
        let path_part = rest.split(['?', '#']).next().unwrap_or("");
        if path_part.split('/').skip(3).any(|c| c == ".." || c == ".") {
            return Err("the prefix in the S3 address may not hold . or .. parts".into());
        }
        let (endpoint_url, path) = if let Some(aws) = rest.strip_prefix("//") {
            ("https://s3.amazonaws.com".to_string(), aws.to_string())
        } else {
            let u = url::Url::parse(rest).map_err(|e| {
                format!("{e} in the S3 address; expected s3:https://HOST[:PORT]/BUCKET[/PREFIX]")
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!(
                    "the S3 address must use http or https, not {}",
                    u.scheme()
                ));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err("credentials do not belong in the S3 address: use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".into());
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err("the S3 address takes no ?query or #fragment".into());
            }
            let host = u
                .host_str()
                .ok_or_else(|| "the S3 address has no host".to_string())?;
            let endpoint = match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            };
            (endpoint, u.path().trim_start_matches('/').to_string())
        };
        let mut parts = path.splitn(2, '/');
        let bucket = parts.next().unwrap_or("").to_string();
        if bucket.is_empty() {
            return Err("the S3 address names no bucket: s3:https://HOST/BUCKET[/PREFIX]".into());
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!("{bucket:?} is not a valid bucket name"));
        }
        let mut prefix = parts.next().unwrap_or("").trim_matches('/').to_string();
        if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.contains("//") {
            return Err("the prefix in the S3 address may not hold . or .. or empty parts".into());
        }
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Ok(S3Location {
            endpoint: endpoint_url,
            bucket,
            prefix,
        })
    }

    /// The address as the user gives it, without credentials.
    pub fn display(&self) -> String {
        format!("s3:{}/{}/{}", self.endpoint, self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }
}

/// Versions of one object, newest first.
#[derive(Debug, Clone)]
struct Suspect {
    /// Version ids and sizes of real versions (not delete markers),
    /// newest first.
    versions: Vec<(String, u64)>,
    /// The size of the first version, the repository's own: only versions
    /// of that size are candidates (an attacker's 5 GB version is never
    /// downloaded).
    size: u64,
    /// Why it is a suspect: "deleted" (delete marker on top) or "overwritten".
    why: &'static str,
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    op: Operator,
    rt: tokio::runtime::Runtime,
    loc: S3Location,
    virtual_host: bool,
    region: String,
    http: reqwest::Client,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
    /// Whether the bucket keeps versions (learned at open).
    versioned: bool,
    /// The config as read at open, beside the versioning query (every
    /// command reads it first, and on a long link each round trip counts).
    /// Taken by the first read of it; dropped by any write or delete of it,
    /// and unused on a versioned bucket, where reads choose a version.
    early_config: Mutex<Option<Vec<u8>>>,
    /// Per-request timeout of the calls made here.
    timeout: Duration,
    /// Content-named objects whose current version is not (only) what was
    /// written, from the last version listing that saw them.
    suspects: Mutex<HashMap<String, Suspect>>,
    /// Suspects resolved to the version that verifies.
    pinned: Mutex<HashMap<String, String>>,
    /// The version the repository wrote of each write-once object seen in a
    /// version listing or written by this process: what locks are set on
    /// and read from, whatever others put on top.
    origin: Mutex<HashMap<String, String>>,
    /// Top-level folders whose versions have been listed in this process.
    scanned: Mutex<std::collections::HashSet<String>>,
    /// Lower bounds of retention dates by object and version, learned or
    /// set (compliance dates can only grow, so an old answer stays a lower
    /// bound).
    retained: Mutex<HashMap<(String, String), i64>>,
    retention_file: Option<PathBuf>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.loc.display())
            .field("versioned", &self.versioned)
            .finish_non_exhaustive()
    }
}

fn err(kind: BackendErrorKind, path: &str, msg: impl Into<String>) -> BackendError {
    BackendError::new(kind, path, msg)
}

/// One line from an OpenDAL error: its kind and message, never a request
/// (requests carry signatures).
fn od_err(path: &str, e: &opendal::Error) -> BackendError {
    let kind = match e.kind() {
        OdKind::NotFound => BackendErrorKind::NotFound,
        OdKind::PermissionDenied => BackendErrorKind::PermissionDenied,
        OdKind::RateLimited => BackendErrorKind::Temporary,
        _ if e.is_temporary() => BackendErrorKind::Temporary,
        _ => BackendErrorKind::Other,
    };
    let msg = e.message().lines().next().unwrap_or("").trim().to_string();
    let msg = match kind {
        BackendErrorKind::PermissionDenied => {
            "access denied by the S3 server (check the key's permissions, or the object is locked)"
                .to_string()
        }
        BackendErrorKind::NotFound => "not found".to_string(),
        _ if msg.is_empty() => format!("{}", e.kind()),
        _ => format!("{}: {msg}", e.kind()),
    };
    err(kind, path, msg)
}

/// Object names that are the BLAKE3 hash of their bytes.
fn content_named(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or("");
    matches!(top, "data" | "index" | "snapshots" | "marks" | "keys")
        && path.rsplit('/').next().is_some_and(|n| {
            n.len() == 64
                && n.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The repository's config: written once at init and never again, but not
/// named by its content (a key file holds its checksum). On a versioned
/// bucket its first version is the repository's.
const CONFIG: &str = "config";

/// Objects the repository writes once and never replaces.
fn write_once(path: &str) -> bool {
    path == CONFIG || content_named(path)
}

fn verifies(path: &str, bytes: &[u8]) -> bool {
    path.rsplit('/').next() == Some(blake3::hash(bytes).to_hex().as_str())
}

/// The text of the first `<tag>…</tag>` in a small XML answer.
fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// Whether an answer to a bucket query is worth trying again: throttling,
/// server errors other than "not implemented", and a 400 that carries no S3
/// error document. The S3 layer always names its error, so a bare 400 came
/// from an HTTP layer answering a request garbled on the way.
fn answer_is_temporary(status: u16, body: &str) -> bool {
    status == 429
        || status >= 500 && status != 501
        || status == 400 && xml_field(body, "Code").is_none()
}

impl S3Backend {
    /// Connects to `loc`: asks whether the bucket keeps versions, and reads
    /// the repository's config beside it (see `early_config`).
    pub fn open(
        loc: S3Location,
        opts: &S3Options,
        cache_dir: Option<&Path>,
    ) -> BackendResult<S3Backend> {
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
        let timeout = opts
            .timeout
            .unwrap_or(DEFAULT_TIMEOUT)
            .max(Duration::from_secs(1));
        let connections = opts
            .connections
            .unwrap_or(DEFAULT_CONNECTIONS)
            .clamp(1, 256);
        let config_err = |m: String| err(BackendErrorKind::Other, "", m);

        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(connections);
        if let Some(ca) = &opts.ca_bundle {
            let pem = std::fs::read(ca).map_err(|e| {
                config_err(format!("cannot read the CA bundle {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                config_err(format!("the CA bundle {} is not PEM: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(config_err(format!(
                    "the CA bundle {} holds no certificate",
                    ca.display()
                )));
            }
            http = http.tls_certs_merge(certs);
        }
        let http = http
            .build()
            .map_err(|e| config_err(format!("cannot set up HTTPS: {e}")))?;

        let mut b = opendal::services::S3::default()
            .endpoint(&loc.endpoint)
            .bucket(&loc.bucket)
            .region(&region)
            .root(&format!("/{}", loc.prefix))
            .disable_ec2_metadata();
        if opts.virtual_host {
            b = b.enable_virtual_host_style();
        }
        if let Some(p) = opts.profile.as_deref() {
            b = b.profile(p);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| config_err(format!("cannot start the S3 client: {e}")))?;
        let op = {
            let _g = rt.enter();
            Operator::new(b)
                .map_err(|e| config_err(format!("S3 settings: {}", e.message())))?
                .with_context(OperationContext::new().with_http_transport(
                    opendal::HttpTransporter::new(
                        opendal_http_transport_reqwest::ReqwestTransport::new(http.clone()),
                    ),
                ))
                .layer(
                    TimeoutLayer::new()
                        .with_timeout(timeout * 2)
                        .with_io_timeout(timeout),
                )
                .layer(
                    RetryLayer::new()
                        .with_jitter()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(Duration::from_secs(10))
                        .with_max_times(RETRIES),
                )
                .layer(ConcurrentLimitLayer::new(connections))
        };
        let mut creds = reqsign_aws_v4::DefaultCredentialProvider::builder().no_imds();
        if let Some(p) = opts.profile.as_deref() {
            creds = creds.with_profile(p);
        }
        let ctx = reqsign_core::Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_env(reqsign_core::OsEnv);
        let signer = reqsign_core::Signer::new(
            ctx,
            creds.build(),
            reqsign_aws_v4::RequestSigner::new("s3", &region),
        );
        let retention_file = cache_dir.map(|d| d.join("retention"));
        let mut backend = S3Backend {
            op,
            rt,
            loc,
            virtual_host: opts.virtual_host,
            region,
            http,
            signer,
            versioned: false,
            early_config: Mutex::default(),
            timeout,
            suspects: Mutex::default(),
            pinned: Mutex::default(),
            scanned: Mutex::default(),
            origin: Mutex::default(),
            retained: Mutex::default(),
            retention_file,
        };
        backend.load_retention();
        let (versioned, config) = std::thread::scope(|s| {
            let config = s.spawn(|| backend.plain_read(CONFIG, None).ok());
            let versioned = backend.bucket_versioned();
            (versioned, config.join().ok().flatten())
        });
        backend.versioned = versioned?;
        if !backend.versioned {
            *backend
                .early_config
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()) = config;
        }
        Ok(backend)
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.loc.prefix)
    }

    /// URL of the bucket (empty key) or of an object, for the calls made here.
    fn url(&self, key: &str, query: &str) -> String {
        let enc: String = key.split('/').map(enc).collect::<Vec<_>>().join("/");
        let base = if self.virtual_host {
            let (scheme, host) = self.loc.endpoint.split_once("://").unwrap_or(("https", ""));
            format!("{scheme}://{}.{host}/{enc}", self.loc.bucket)
        } else {
            format!("{}/{}/{enc}", self.loc.endpoint, self.loc.bucket)
        };
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// A signed request made here (not through OpenDAL), with retries for
    /// temporary failures. Returns the status and body.
    fn call(
        &self,
        method: http::Method,
        url: &str,
        body: Vec<u8>,
        what: &str,
    ) -> BackendResult<(u16, String)> {
        use base64::Engine;
        use md5::Digest as _;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.rt.block_on(async {
                let mut req = http::Request::builder()
                    .method(method.clone())
                    .uri(url)
                    .header(
                        "x-amz-content-sha256",
                        hex::encode(sha2::Sha256::digest(&body)),
                    );
                if !body.is_empty() {
                    req = req
                        .header(
                            "content-md5",
                            base64::engine::general_purpose::STANDARD
                                .encode(md5::Md5::digest(&body)),
                        )
                        .header("content-length", body.len());
                }
                let req = req
                    .body(())
                    .map_err(|e| (false, format!("bad request for {what}: {e}")))?;
                let (mut parts, ()) = req.into_parts();
                self.signer.sign(&mut parts, None).await.map_err(|e| {
                    (
                        false,
                        format!(
                            "cannot sign the request ({}): check the S3 credentials",
                            e.kind()
                        ),
                    )
                })?;
                let mut r = self.http.request(parts.method, parts.uri.to_string());
                for (k, v) in parts.headers.iter() {
                    if k != http::header::HOST {
                        r = r.header(k, v);
                    }
                }
                let resp = r
                    .body(body.clone())
                    .timeout(self.timeout)
                    .send()
                    .await
                    .map_err(|e| (true, format!("{what}: {}", e.without_url())))?;
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Ok::<_, (bool, String)>((status, text))
            });
            let temporary = match &result {
                Ok((s, text)) => answer_is_temporary(*s, text),
                Err((t, _)) => *t,
            };
            if !temporary || attempt > RETRIES {
                return match result {
                    Ok(r) => Ok(r),
                    Err((true, m)) => Err(err(BackendErrorKind::Temporary, "", m)),
                    Err((false, m)) => Err(err(BackendErrorKind::PermissionDenied, "", m)),
                };
            }
            let jitter = rand::random::<u64>() % (delay.as_millis() as u64 + 1);
            std::thread::sleep(delay + Duration::from_millis(jitter));
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    fn bucket_versioned(&self) -> BackendResult<bool> {
        let (status, body) = self.call(
            http::Method::GET,
            &self.url("", "versioning"),
            vec![],
            "asking whether the bucket keeps versions",
        )?;
        match status {
            200 => Ok(xml_field(&body, "Status") == Some("Enabled")),
            403 => Err(err(
                BackendErrorKind::PermissionDenied,
                "",
                format!(
                    "access denied to bucket {} (check the key and its permissions)",
                    self.loc.bucket
                ),
            )),
            404 if body.contains("NoSuchBucket") => Err(err(
                BackendErrorKind::NotFound,
                "",
                format!("bucket {} does not exist", self.loc.bucket),
            )),
            400 | 401
                if xml_field(&body, "Code").is_some_and(|c| {
                    matches!(
                        c,
                        "InvalidAccessKeyId"
                            | "SignatureDoesNotMatch"
                            | "IncompleteSignature"
                            | "InvalidToken"
                            | "ExpiredToken"
                            | "InvalidSignature"
                    )
                }) =>
            {
                Err(err(
                    BackendErrorKind::PermissionDenied,
                    "",
                    format!(
                        "access denied to bucket {}: the server refused the credentials ({})",
                        self.loc.bucket,
                        xml_field(&body, "Code").unwrap_or_default()
                    ),
                ))
            }
            // Servers without versioning at all (Garage) say so.
            501 => Ok(false),
            _ if body.contains("NotImplemented") => Ok(false),
            301 | 307 | 400 if body.contains("Region") || body.contains("PermanentRedirect") => {
                Err(err(
                    BackendErrorKind::Other,
                    "",
                    format!(
                    "bucket {} answers for another region than {} (set --s3-region or AWS_REGION)",
                    self.loc.bucket, self.region
                ),
                ))
            }
            _ => Err(err(
                BackendErrorKind::Other,
                "",
                format!(
                    "bucket {}: unexpected answer HTTP {status} {} to a versioning query{}",
                    self.loc.bucket,
                    xml_field(&body, "Code").unwrap_or("(no S3 error code)"),
                    xml_field(&body, "Message")
                        .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    /// Whether the bucket has Object Lock enabled (`None`: the server does
    /// not know Object Lock at all).
    pub fn object_lock_enabled(&self) -> BackendResult<Option<bool>> {
        let (status, body) = self.call(
            http::Method::GET,
            &self.url("", "object-lock"),
            vec![],
            "reading the bucket's Object Lock setting",
        )?;
        match status {
            200 => Ok(Some(
                xml_field(&body, "ObjectLockEnabled") == Some("Enabled"),
            )),
            404 => Ok(Some(false)),
            501 => Ok(None),
            _ if body.contains("ObjectLockConfigurationNotFound") => Ok(Some(false)),
            _ if body.contains("NotImplemented") => Ok(None),
            _ => Ok(Some(false)),
        }
    }

    fn list_versions(&self, prefix: &str) -> BackendResult<Vec<opendal::Entry>> {
        self.rt.block_on(async {
            self.op
                .list_with(prefix)
                .recursive(true)
                .versions(true)
                .deleted(true)
                .await
                .map_err(|e| od_err(prefix, &e))
        })
    }

    /// A version listing turned into the objects that exist, remembering
    /// suspects.
    fn list_versioned(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        struct Version {
            id: String,
            size: u64,
            modified: Option<SystemTime>,
            etag: Option<String>,
        }
        #[derive(Default)]
        struct Seen {
            latest_deleted: bool,
            /// Real versions, newest first (the order S3 lists them in).
            versions: Vec<Version>,
        }
        let mut by_key: HashMap<String, Seen> = HashMap::new();
        for e in self.list_versions(prefix)? {
            let path = e.path().to_string();
            if path.ends_with('/') {
                continue;
            }
            let m = e.metadata();
            let s = by_key.entry(path).or_default();
            if m.is_deleted() {
                if m.is_current() == Some(true) {
                    s.latest_deleted = true;
                }
                continue;
            }
            s.versions.push(Version {
                id: m.version().unwrap_or("").to_string(),
                size: m.content_length(),
                modified: m.last_modified().map(SystemTime::from),
                etag: m.etag().map(str::to_string),
            });
        }
        let mut out = vec![];
        if prefix.ends_with('/') && prefix.matches('/').count() == 1 {
            self.scanned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(prefix.to_string());
        }
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.retain(|k, _| !k.starts_with(prefix));
        for (path, s) in by_key {
            let (Some(newest), Some(oldest)) = (s.versions.first(), s.versions.last()) else {
                continue;
            };
            // A retried upload can leave two versions of the same bytes:
            // only a version with other bytes (another size or ETag) or a
            // delete marker makes a suspect.
            let replaced = s
                .versions
                .iter()
                .any(|v| v.size != oldest.size || v.etag.is_none() || v.etag != oldest.etag);
            let suspect =
                write_once(&path) && (s.latest_deleted || (s.versions.len() > 1 && replaced));
            if write_once(&path) && !oldest.id.is_empty() {
                self.origin
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(path.clone())
                    .or_insert_with(|| oldest.id.clone());
            }
            if suspect {
                suspects.insert(
                    path.clone(),
                    Suspect {
                        size: oldest.size,
                        versions: s.versions.iter().map(|v| (v.id.clone(), v.size)).collect(),
                        why: if s.latest_deleted {
                            "deleted (a delete marker hides it)"
                        } else {
                            "overwritten (its current version is not the one written)"
                        },
                    },
                );
            } else if s.latest_deleted {
                continue;
            }
            // A content-named object is written once: the repository's own
            // version is the first, whatever others added on top.
            let v = if suspect { oldest } else { newest };
            out.push(ObjectInfo {
                path,
                size: v.size,
                modified: v.modified,
            });
        }
        Ok(out)
    }

    /// On a versioned bucket, lists the versions of the folder holding
    /// `path` once per process, so that every suspect in it is known
    /// before its bytes are trusted (a pack overwritten with bytes of the
    /// same length would otherwise only fail its authentication).
    fn scan_for(&self, path: &str) -> BackendResult<()> {
        if !self.versioned || !write_once(path) || path == CONFIG {
            return Ok(());
        }
        let top = format!("{}/", path.split('/').next().unwrap_or(""));
        if self
            .scanned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&top)
        {
            return Ok(());
        }
        self.list_versioned(&top)?;
        Ok(())
    }

    /// The version of `path` the repository wrote, on a versioned bucket:
    /// the one this process wrote, else the first in the version listing.
    fn our_version(&self, path: &str) -> BackendResult<Option<String>> {
        if !self.versioned {
            return Ok(None);
        }
        let known = |s: &Self| {
            s.origin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(path)
                .cloned()
        };
        if let Some(v) = known(self) {
            return Ok(Some(v));
        }
        if path == CONFIG {
            self.list_versioned(CONFIG)?;
        } else {
            self.scan_for(path)?;
        }
        if let Some(v) = known(self) {
            return Ok(Some(v));
        }
        // Written after the scan by another process: list it alone.
        self.list_versioned(path)?;
        Ok(known(self))
    }

    /// The version of a suspect object that verifies against its name,
    /// newest first; `None` when it is no suspect.
    fn pin(&self, path: &str) -> BackendResult<Option<String>> {
        if let Some(v) = self
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(Some(v.clone()));
        }
        let Some(s) = self
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
        else {
            return Ok(None);
        };
        if path == CONFIG {
            // Not verifiable by name: the first version is the one init
            // wrote (the key files check it against their checksum).
            let first = s.versions.last().map(|v| v.0.clone());
            if let Some(v) = &first {
                self.pinned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.to_string(), v.clone());
            }
            return Ok(first);
        }
        let mut last_err = None;
        for (v, size) in &s.versions {
            if *size != s.size {
                continue;
            }
            let bytes = self.rt.block_on(async {
                self.op
                    .read_with(path)
                    .version(v)
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| od_err(path, &e))
            });
            if let Err(e) = &bytes {
                last_err = Some(e.message.clone());
            }
            if let Ok(bytes) = bytes {
                if verifies(path, &bytes) {
                    self.pinned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(path.to_string(), v.clone());
                    return Ok(Some(v.clone()));
                }
            }
        }
        Err(err(
            BackendErrorKind::Other,
            path,
            match last_err {
                Some(e) => format!(
                    "{}, and no version of it could be read that matches its name ({e})",
                    s.why
                ),
                None => format!(
                    "{}, and none of its {} versions matches its name",
                    s.why,
                    s.versions.len()
                ),
            },
        ))
    }

    /// Finds the suspects of an object not listed before (a read of an
    /// object that a current read could not give).
    fn discover(&self, path: &str) -> BackendResult<Option<String>> {
        if !self.versioned || !write_once(path) {
            return Ok(None);
        }
        self.list_versioned(path)?;
        self.pin(path)
    }

    fn plain_read(&self, path: &str, version: Option<&str>) -> BackendResult<Vec<u8>> {
        self.rt.block_on(async {
            let mut r = self.op.read_with(path);
            if let Some(v) = version {
                r = r.version(v);
            }
            r.await.map(|b| b.to_vec()).map_err(|e| od_err(path, &e))
        })
    }

    /// A fresh write, or a delete: the object is no longer a suspect.
    fn forget_suspect(&self, path: &str) {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }

    /// The version of `path` the repository wrote (always that one, never
    /// whatever is current), its key in the record ("-" on an unversioned
    /// bucket), and the retention date recorded for it.
    fn recorded_retention(
        &self,
        path: &str,
    ) -> BackendResult<(Option<String>, String, Option<i64>)> {
        let version = self.our_version(path)?;
        let vkey = version.clone().unwrap_or_else(|| "-".into());
        let recorded = self
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(path.to_string(), vkey.clone()))
            .copied();
        Ok((version, vkey, recorded))
    }

    /// Reads the local record of retention dates: lines `path version
    /// unix-seconds`. Only dates within [`MAX_RECORDED`] of now are taken
    /// (a forged far-future line must not silence extensions forever), and
    /// only for the exact version, so a new object at the same name (a new
    /// repository in an old prefix) is never taken for the old one.
    fn load_retention(&mut self) {
        let Some(f) = &self.retention_file else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(f) else {
            return;
        };
        let now = ts(SystemTime::now());
        let mut map = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines() {
            let mut it = line.rsplitn(3, ' ');
            let (Some(t), Some(v), Some(p)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(t) = t.parse::<i64>() else { continue };
            if t <= now || t > now + MAX_RECORDED {
                continue;
            }
            let e = map.entry((p.to_string(), v.to_string())).or_insert(t);
            *e = (*e).max(t);
        }
        // Rewrite it without the dates that passed, so it stays the size
        // of what is locked.
        let lines: String = map
            .iter()
            .map(|((p, v), t)| format!("{p} {v} {t}\n"))
            .collect();
        drop(map);
        let tmp = f.with_extension("tmp");
        if std::fs::write(&tmp, lines).is_ok() {
            let _ = std::fs::rename(&tmp, f);
        }
    }

    fn remember_retention(&self, path: &str, version: &str, until: i64) {
        self.retained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((path.to_string(), version.to_string()), until);
        if let Some(f) = &self.retention_file {
            use std::io::Write;
            if let Some(d) = f.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
            {
                let _ = writeln!(file, "{path} {version} {until}");
            }
        }
    }

    /// The compliance retention date of `version` of `path` (the current
    /// version when `None`), as the store reports it now. A GOVERNANCE
    /// retention counts as none: it can be lifted.
    fn get_retention(&self, path: &str, version: Option<&str>) -> BackendResult<Option<i64>> {
        let q = match version {
            Some(v) => format!("retention&versionId={}", enc(v)),
            None => "retention".to_string(),
        };
        let (status, body) = self.call(
            http::Method::GET,
            &self.url(&self.key(path), &q),
            vec![],
            "reading an object's retention",
        )?;
        match status {
            200 => {
                if xml_field(&body, "Mode") != Some("COMPLIANCE") {
                    return Ok(None);
                }
                let date = xml_field(&body, "RetainUntilDate").ok_or_else(|| {
                    err(
                        BackendErrorKind::Other,
                        path,
                        "retention answer without a date",
                    )
                })?;
                let t = DateTime::parse_from_rfc3339(date).map_err(|_| {
                    err(
                        BackendErrorKind::Other,
                        path,
                        format!("retention date {date:?} unreadable"),
                    )
                })?;
                Ok(Some(t.timestamp()))
            }
            404 if body.contains("NoSuchKey") || body.contains("NoSuchVersion") => {
                Err(err(BackendErrorKind::NotFound, path, "not found"))
            }
            _ if body.contains("NoSuchObjectLockConfiguration") || status == 404 => Ok(None),
            403 => Err(err(
                BackendErrorKind::PermissionDenied,
                path,
                "access denied reading its retention (the key needs s3:GetObjectRetention)",
            )),
            _ => Err(err(
                BackendErrorKind::Other,
                path,
                format!(
                    "reading its retention: HTTP {status} {}",
                    xml_field(&body, "Code").unwrap_or("")
                ),
            )),
        }
    }

    /// Sets a compliance retention until `until` on `version` of `path`.
    fn put_retention(&self, path: &str, version: Option<&str>, until: i64) -> BackendResult<()> {
        let date = DateTime::<Utc>::from_timestamp(until, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>{date}</RetainUntilDate></Retention>"
        );
        let q = match version {
            Some(v) => format!("retention&versionId={}", enc(v)),
            None => "retention".to_string(),
        };
        let (status, answer) = self.call(
            http::Method::PUT,
            &self.url(&self.key(path), &q),
            body.into_bytes(),
            "setting an object's retention",
        )?;
        if status == 200 {
            return Ok(());
        }
        let code = xml_field(&answer, "Code").unwrap_or("").to_string();
        Err(err(
            if status == 403 {
                BackendErrorKind::PermissionDenied
            } else {
                BackendErrorKind::Other
            },
            path,
            format!("setting its retention was refused: HTTP {status} {code}"),
        ))
    }
}

fn ts(t: SystemTime) -> i64 {
    DateTime::<Utc>::from(t).timestamp()
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.loc.display()
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let top = prefix.split('/').next().unwrap_or("");
        if self.versioned && matches!(top, "data" | "index" | "snapshots" | "marks" | "keys") {
            return self.list_versioned(prefix);
        }
        let entries = self.rt.block_on(async {
            self.op
                .list_with(prefix)
                .recursive(true)
                .await
                .map_err(|e| od_err(prefix, &e))
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let path = e.path();
            if path.ends_with('/') {
                continue;
            }
            if self.versioned && prefix.is_empty() && content_named(path) {
                continue; // listed below, version-aware
            }
            let m = e.metadata();
            out.push(ObjectInfo {
                path: path.to_string(),
                size: m.content_length(),
                modified: m.last_modified().map(SystemTime::from),
            });
        }
        if self.versioned && prefix.is_empty() {
            for p in ["data/", "index/", "snapshots/", "marks/", "keys/"] {
                out.extend(self.list_versioned(p)?);
            }
        }
        Ok(out)
    }

    fn read(&self, path: &str) -> BackendResult<Vec<u8>> {
        if path == CONFIG {
            if let Some(b) = self
                .early_config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Ok(b);
            }
        }
        if path == CONFIG && self.versioned {
            // One listing of its versions tells whether someone replaced
            // or hid it.
            if let Some(v) = self.discover(path)? {
                return self.plain_read(path, Some(&v));
            }
        }
        self.scan_for(path)?;
        if let Some(v) = self.pin(path)? {
            return self.plain_read(path, Some(&v));
        }
        match self.plain_read(path, None) {
            Ok(bytes) if !content_named(path) || verifies(path, &bytes) || !self.versioned => {
                Ok(bytes)
            }
            Ok(bytes) => match self.discover(path)? {
                Some(v) => self.plain_read(path, Some(&v)),
                None => Ok(bytes),
            },
            Err(e) if e.kind == BackendErrorKind::NotFound => match self.discover(path)? {
                Some(v) => self.plain_read(path, Some(&v)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| short_object(path, offset, len, 0))?;
        self.scan_for(path)?;
        let version = self.pin(path)?;
        if len == 0 {
            // Whether it exists (OpenDAL sends no request for an empty
            // range): a HEAD, of the version the repository wrote if known.
            if version.is_some() {
                return Ok(vec![]);
            }
            return match self.rt.block_on(async { self.op.stat(path).await }) {
                Ok(_) => Ok(vec![]),
                Err(e) if e.kind() == OdKind::NotFound => match self.discover(path)? {
                    Some(_) => Ok(vec![]),
                    None => Err(od_err(path, &e)),
                },
                Err(e) => Err(od_err(path, &e)),
            };
        }
        let read = |version: Option<String>| {
            self.rt.block_on(async {
                // Streamed into one buffer as the body arrives, so a span
                // is held once, not as its chunks and then their copy.
                let mut r = self.op.reader_with(path);
                if let Some(v) = &version {
                    r = r.version(v);
                }
                let mut buf = Vec::with_capacity((end - offset) as usize);
                match r.await {
                    Ok(reader) => reader
                        .read_into(&mut buf, offset..end)
                        .await
                        .map(|_| buf)
                        .map_err(|e| od_err(path, &e)),
                    Err(e) => Err(od_err(path, &e)),
                }
            })
        };
        let got = match read(version) {
            Err(e) if e.kind == BackendErrorKind::NotFound => match self.discover(path)? {
                Some(v) => read(Some(v)),
                None => Err(e),
            },
            Err(e)
                if e.message.contains("InvalidRange")
                    || e.message.contains("RangeNotSatisfied") =>
            {
                let size = self
                    .rt
                    .block_on(async { self.op.stat(path).await })
                    .map(|m| m.content_length())
                    .unwrap_or(0);
                Err(short_object(path, offset, len, size))
            }
            r => r,
        }?;
        if got.len() as u64 != len {
            return Err(short_object(path, offset, len, offset + got.len() as u64));
        }
        Ok(got)
    }

    fn write(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        if path == CONFIG {
            self.early_config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        let buf = bytes::Bytes::copy_from_slice(data);
        let meta = self.rt.block_on(async {
            let mut w = self.op.write_with(path, buf);
            if data.len() > ONE_REQUEST_MAX {
                w = w.chunk(PART_SIZE).concurrent(PARTS_IN_FLIGHT);
            }
            w.await.map_err(|e| od_err(path, &e))
        })?;
        if let Some(v) = meta.version() {
            self.origin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_string(), v.to_string());
        }
        // A fresh write is what the repository wrote: no longer a suspect.
        self.forget_suspect(path);
        Ok(())
    }

    fn delete(&self, path: &str) -> BackendResult<()> {
        if path == CONFIG {
            self.early_config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        if !self.versioned {
            return self
                .rt
                .block_on(async { self.op.delete(path).await.map_err(|e| od_err(path, &e)) });
        }
        // On a versioned bucket a plain delete only hides the object: delete
        // every version (a locked one refuses, and the object stays).
        let versions = self.list_versions(path)?;
        let mut refused = 0;
        for e in versions.iter().filter(|e| e.path() == path) {
            let Some(v) = e.metadata().version() else {
                continue;
            };
            let r = self.rt.block_on(async {
                self.op
                    .delete_with(path)
                    .version(v)
                    .await
                    .map_err(|e| od_err(path, &e))
            });
            match r {
                Ok(()) => {}
                Err(e) if e.kind == BackendErrorKind::PermissionDenied => refused += 1,
                Err(e) => return Err(e),
            }
        }
        if refused > 0 && !write_once(path) {
            // A lock file under a bucket's default retention: hide it (a
            // delete marker), which is all a listing needs.
            return self
                .rt
                .block_on(async { self.op.delete(path).await.map_err(|e| od_err(path, &e)) });
        }
        if refused > 0 {
            return Err(err(
                BackendErrorKind::PermissionDenied,
                path,
                format!("kept by Object Lock ({refused} version(s) still under retention)"),
            ));
        }
        self.forget_suspect(path);
        Ok(())
    }

    fn remote(&self) -> bool {
        true
    }

    fn retention(&self) -> Retention {
        if self.versioned {
            Retention::Versioned
        } else {
            Retention::None
        }
    }

    fn retain(
        &self,
        path: &str,
        at_least: SystemTime,
        extend_to: SystemTime,
    ) -> BackendResult<bool> {
        let need = ts(at_least);
        let (version, vkey, recorded) = self.recorded_retention(path)?;
        if recorded.is_some_and(|t| t >= need) {
            return Ok(false);
        }
        let current = self.get_retention(path, version.as_deref())?;
        if let Some(t) = current.filter(|&t| t >= need) {
            self.remember_retention(path, &vkey, t);
            return Ok(false);
        }
        let until = ts(extend_to).max(need);
        let set = self.put_retention(path, version.as_deref(), until);
        // Trust the store, not the answer: read the date back (a store
        // whose default rule already locks longer refuses a shorter date,
        // and that is fine).
        let after = self.get_retention(path, version.as_deref())?;
        match (after, set) {
            (Some(t), _) if t >= need => {
                self.remember_retention(path, &vkey, t);
                Ok(true)
            }
            (_, Err(e)) => Err(e),
            (other, Ok(())) => Err(err(
                BackendErrorKind::Other,
                path,
                format!(
                    "the store accepted a compliance lock until {} but reports {}",
                    DateTime::<Utc>::from_timestamp(until, 0)
                        .unwrap_or_default()
                        .to_rfc3339(),
                    other
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_else(|| "none".into())
                ),
            )),
        }
    }

    fn retained_until(&self, path: &str) -> BackendResult<Option<SystemTime>> {
        let now = ts(SystemTime::now());
        let (version, _, known) = self.recorded_retention(path)?;
        let t = match known {
            Some(t) if t > now => Some(t),
            _ => match self.get_retention(path, version.as_deref()) {
                Ok(t) => t,
                Err(e) if e.kind == BackendErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
        };
        Ok(t.filter(|&t| t > now)
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)))
    }

    fn replaced(&self) -> BackendResult<Vec<(String, String)>> {
        if !self.versioned {
            return Ok(vec![]);
        }
        for p in ["data/", "index/", "snapshots/", "marks/", "keys/", CONFIG] {
            self.list_versioned(p)?;
        }
        let mut v: Vec<(String, String)> = self
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, s)| (k.clone(), s.why.to_string()))
            .collect();
        v.sort();
        Ok(v)
    }

    fn object_lock(&self) -> BackendResult<Option<bool>> {
        self.object_lock_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let l = S3Location::parse("s3:https://s3.example.com:9000/books/firm-a/").unwrap();
        assert_eq!(l.endpoint, "https://s3.example.com:9000");
        assert_eq!(l.bucket, "books");
        assert_eq!(l.prefix, "firm-a/");
        assert_eq!(l.display(), "s3:https://s3.example.com:9000/books/firm-a");
        let l = S3Location::parse("s3:http://127.0.0.1:3900/b").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        let l = S3Location::parse("s3://bucket/x/y").unwrap();
        assert_eq!(l.endpoint, "https://s3.amazonaws.com");
        assert_eq!(l.prefix, "x/y/");
        for bad in [
            "s3:https://host",
            "s3:https://host/",
            "s3:ftp://host/b",
            "s3:https://AKIA:secret@host/b",
            "s3:https://host/b/../x",
            "s3:https://host/b?x=1",
            "s3:https://host/b a",
            "https://host/b",
        ] {
            let e = S3Location::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn content_names() {
        let h = blake3::hash(b"x").to_hex().to_string();
        assert!(content_named(&format!("data/{}/{h}", &h[..2])));
        assert!(content_named(&format!("index/{h}")));
        assert!(!content_named(&format!("locks/{h}")));
        assert!(!content_named("config"));
        assert!(verifies(&format!("index/{h}"), b"x"));
        assert!(!verifies(&format!("index/{h}"), b"y"));
        assert_eq!(
            xml_field("<a><Status>Enabled</Status></a>", "Status"),
            Some("Enabled")
        );
    }

    #[test]
    fn which_answers_are_tried_again() {
        let named = "<Error><Code>InvalidRequest</Code><Message>x</Message></Error>";
        assert!(answer_is_temporary(400, ""));
        assert!(answer_is_temporary(400, "Bad Request"));
        assert!(!answer_is_temporary(400, named));
        assert!(answer_is_temporary(503, named));
        assert!(answer_is_temporary(429, ""));
        assert!(!answer_is_temporary(501, ""));
        assert!(!answer_is_temporary(403, ""));
        assert!(!answer_is_temporary(200, ""));
    }
}
