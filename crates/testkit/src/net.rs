//! Loopback peers for alert tests: an SMTP sink and an HTTP receiver. Both
//! speak just enough of their protocol for a real client (lettre, ureq) and
//! keep what they receive.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages (the DATA of each mail) or request bodies received so far.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<String>>>);

impl Inbox {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    /// Waits up to `timeout` for at least `n` items.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let all = self.all();
            if all.len() >= n {
                return all;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.all()
    }
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

fn serve(handler: impl Fn(TcpStream, &Inbox) + Send + 'static) -> (u16, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = Inbox::default();
    let kept = inbox.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            handler(conn, &kept);
        }
    });
    (port, inbox)
}

/// A plain SMTP server on loopback that accepts every message.
pub struct SmtpSink {
    pub port: u16,
    pub inbox: Inbox,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let (port, inbox) = serve(|conn, inbox| {
            let _ = smtp_session(conn, inbox);
        });
        SmtpSink { port, inbox }
    }
}

fn smtp_session(conn: TcpStream, inbox: &Inbox) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    out.write_all(b"220 sink.test ESMTP ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            out.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?;
        } else if cmd.starts_with("DATA") {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            inbox.push(data);
            out.write_all(b"250 queued\r\n")?;
        } else if cmd.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"250 ok\r\n")?;
        }
    }
}

/// An HTTP server on loopback that answers every request with `status`
/// and keeps each request's body.
pub struct HttpReceiver {
    pub port: u16,
    pub inbox: Inbox,
}

impl HttpReceiver {
    pub fn start(status: u16) -> HttpReceiver {
        let (port, inbox) = serve(move |conn, inbox| {
            let _ = http_exchange(conn, inbox, status);
        });
        HttpReceiver { port, inbox }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn http_exchange(conn: TcpStream, inbox: &Inbox, status: u16) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    inbox.push(String::from_utf8_lossy(&body).into_owned());
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}
