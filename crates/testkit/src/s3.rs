//! Real S3 servers for tests, started on loopback by `scripts/s3-servers.sh`
//! (a three-node Garage cluster; a one-node Ceph RADOS Gateway, which
//! enforces Object Lock), a proxy that delays every byte by a fixed time
//! (a long-distance link), and a real third-party S3 client (boto3, in a
//! venv that `scripts/test.sh` makes) for what an administrator or an
//! attacker does to the bucket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The repository's root folder.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    project_root().join("scripts/s3-servers.sh")
}

fn run_script(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run scripts/s3-servers.sh");
    assert!(
        out.status.success(),
        "scripts/s3-servers.sh {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Three Garage nodes, replication factor 3, one bucket and one key.
pub struct Garage {
    dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
}

impl Garage {
    /// Starts the cluster (panics with the script's message when Garage is
    /// missing: `scripts/test.sh` builds it).
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("lv-garage-")
            .tempdir()
            .unwrap();
        let vars = run_script(&["garage", dir.path().to_str().unwrap()]);
        Garage { dir, vars }
    }
    /// `http://127.0.0.1:PORT` of node `n` (1..=3).
    pub fn endpoint(&self, n: u8) -> &str {
        &self.vars[&format!("S3_ENDPOINT_{n}")]
    }
    pub fn bucket(&self) -> &str {
        &self.vars["S3_BUCKET"]
    }
    /// A repository address through node `n`.
    pub fn repo(&self, n: u8, prefix: &str) -> String {
        format!("s3:{}/{}/{prefix}", self.endpoint(n), self.bucket())
    }
    /// Credentials and region for a client.
    pub fn env(&self) -> Vec<(String, String)> {
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .iter()
            .map(|k| (k.to_string(), self.vars[*k].clone()))
            .chain([("AWS_REGION".to_string(), self.vars["S3_REGION"].clone())])
            .collect()
    }
    pub fn stop_node(&self, n: u8) {
        run_script(&[
            "garage-stop",
            self.dir.path().to_str().unwrap(),
            &n.to_string(),
        ]);
    }
    pub fn start_node(&self, n: u8) {
        run_script(&[
            "garage-start-node",
            self.dir.path().to_str().unwrap(),
            &n.to_string(),
        ]);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["garage-stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

/// A one-node Ceph cluster with its RADOS Gateway.
pub struct Ceph {
    dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
}

impl Ceph {
    pub fn start() -> Ceph {
        let dir = tempfile::Builder::new()
            .prefix("lv-ceph-")
            .tempdir()
            .unwrap();
        let vars = run_script(&["ceph", dir.path().to_str().unwrap()]);
        Ceph { dir, vars }
    }
    pub fn endpoint(&self) -> &str {
        &self.vars["S3_ENDPOINT"]
    }
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.vars["AWS_ACCESS_KEY_ID"].clone(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.vars["AWS_SECRET_ACCESS_KEY"].clone(),
            ),
            ("AWS_REGION".into(), self.vars["S3_REGION"].clone()),
        ]
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["ceph-stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

/// The python with boto3 that `scripts/test.sh` installs.
pub fn boto_python() -> PathBuf {
    let p = project_root().join("target/venv-s3/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which makes it",
        p.display()
    );
    p
}

/// Runs a python snippet with a boto3 client `s3` for `endpoint` (path-style)
/// and the credentials in `env`; returns its standard output. Panics with
/// its error when it fails.
pub fn boto(endpoint: &str, env: &[(String, String)], code: &str) -> String {
    let prelude = format!(
        "import boto3, datetime, json, sys\nfrom botocore.config import Config\nfrom botocore.exceptions import ClientError\ns3 = boto3.client('s3', endpoint_url={endpoint:?}, config=Config(s3={{'addressing_style': 'path'}}, retries={{'max_attempts': 3}}))\n"
    );
    let out = Command::new(boto_python())
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 snippet failed: {}\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What crossed a [`DelayProxy`]: bytes each way and HTTP requests.
#[derive(Default)]
pub struct Traffic {
    pub up: AtomicU64,
    pub down: AtomicU64,
    pub requests: AtomicU64,
}

impl Traffic {
    /// `requests up down`, one line.
    pub fn line(&self) -> String {
        format!(
            "{} {} {}",
            self.requests.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed)
        )
    }
}

/// A TCP proxy on loopback that delivers every byte `delay` after it
/// arrived, in both directions (so a request and its answer take twice
/// `delay` more), without limiting throughput: a long link, not a thin one.
/// It counts the bytes each way and the HTTP/1.1 requests sent.
pub struct DelayProxy {
    pub port: u16,
    pub traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    pub fn start(target: &str, delay: Duration) -> DelayProxy {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = Arc::new(Traffic::default());
        let t = traffic.clone();
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    delay,
                    t.clone(),
                    true,
                );
                pipe(server, client, delay, t.clone(), false);
            }
        });
        DelayProxy {
            port,
            traffic,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Where every proxy in this process writes each request's first line,
/// after the seconds since [`log_requests`] was called.
static REQUEST_LOG: std::sync::OnceLock<(Instant, std::sync::Mutex<std::fs::File>)> =
    std::sync::OnceLock::new();

/// Logs every request through any [`DelayProxy`] to `path` (for finding
/// where a command waits on the store). Only the first call counts.
pub fn log_requests(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    let _ = REQUEST_LOG.set((Instant::now(), std::sync::Mutex::new(f)));
    Ok(())
}

/// Counts HTTP/1.1 requests in a client's byte stream: a request is a head
/// ending in an empty line, then `Content-Length` bytes of body (the S3
/// clients measured send no chunked bodies).
#[derive(Default)]
struct RequestCounter {
    head: Vec<u8>,
    body_left: u64,
}

impl RequestCounter {
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut n = 0;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = (self.body_left as usize).min(bytes.len());
                self.body_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            if self.head.len() > 64 * 1024 {
                self.head.clear(); // not HTTP: count nothing
            }
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            if self.head.ends_with(b"\r\n\r\n") {
                n += 1;
                if let Some((start, log)) = REQUEST_LOG.get() {
                    let first = String::from_utf8_lossy(&self.head);
                    let first = first.lines().next().unwrap_or_default();
                    let mut log = log.lock().unwrap();
                    let _ = writeln!(log, "{:.3} {first}", start.elapsed().as_secs_f64());
                }
                let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                self.body_left = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                self.head.clear();
            }
        }
        n
    }
}

/// Copies `from` to `to`, each chunk held until `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, t: Arc<Traffic>, up: bool) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut counter = RequestCounter::default();
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up {
                        t.up.fetch_add(n as u64, Ordering::Relaxed);
                        let r = counter.feed(&buf[..n]);
                        t.requests.fetch_add(r, Ordering::Relaxed);
                    } else {
                        t.down.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::RequestCounter;

    #[test]
    fn counts_requests_across_reads_and_skips_bodies() {
        let mut c = RequestCounter::default();
        let body = "GET /x HTTP/1.1\r\nHost: a\r\n\r\nPUT /y HTTP/1.1\r\nContent-Length: 8\r\n\r\n\r\n\r\n\r\n\r\nHEAD /z HTTP/1.1\r\n\r\n";
        let (a, b) = body.as_bytes().split_at(40);
        assert_eq!(c.feed(a) + c.feed(b), 3);
    }
}
