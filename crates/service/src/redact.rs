//! Secrets out of everything shown: URLs lose their userinfo and query
//! values, and whatever is read from outside is read with a size limit.
//!
//! URLs are taken apart by the `url` crate (the WHATWG parser browsers
//! use), not by splitting on `/` and `@`: a password containing `/` or a
//! token in the query once slipped through such splitting. A string that
//! looks like a URL but does not parse is shown as `SCHEME://***`, since
//! nobody can say which part of it is secret.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// `text` with its userinfo and query values hidden when it is a URL
/// (`https://***@host/path?token=***`); anything else unchanged. The user
/// name of a `postgres://` URL stays (a role name, useful in messages);
/// every other user name is hidden too, since some services put their
/// token there.
pub fn url(text: &str) -> String {
    shown(text, false)
}

/// A webhook URL: as [`url`], and the path hidden as well, since webhook
/// services (Slack, Teams) carry their secret in it.
pub fn webhook(text: &str) -> String {
    shown(text, true)
}

fn shown(text: &str, hide_path: bool) -> String {
    ledgervault_repo::redact_url(text, hide_path)
}

/// Password files and the like: a few KiB is plenty.
pub const SECRET_FILE_LIMIT: u64 = 4096;
/// The config file: far beyond any real one, far below trouble.
pub const CONFIG_FILE_LIMIT: u64 = 4 << 20;

/// Reads `path` whole, refusing more than `limit` bytes (so `/dev/zero` or
/// a wrong file is a clear error, not a machine out of memory).
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if buf.len() as u64 > limit {
        bail!(
            "the {what} {} is larger than {} KiB; is it the right file?",
            path.display(),
            limit / 1024
        );
    }
    Ok(buf)
}

/// As [`read_limited`], as text.
pub fn read_limited_string(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_limited(path, limit, what)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the {what} {} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_and_query_values() {
        let cases = [
            (
                "https://hooks.example/hook?token=s3cret&x=1",
                "https://hooks.example/hook?token=***&x=***",
            ),
            (
                "https://hooks.example?token=s3cret",
                "https://hooks.example/?token=***",
            ),
            (
                "http://ann:hunter2@127.0.0.1:8080/h",
                "http://***:***@127.0.0.1:8080/h",
            ),
            ("https://tok3n@h.example/", "https://***@h.example/"),
            (
                "postgres://ann:hunter2@db:5432/books?password=pw&sslmode=require",
                "postgres://ann:***@db:5432/books?password=***&sslmode=***",
            ),
            // A `/` in the password ends the authority for every URL parser:
            // "ann:pa" is no host and port, so nothing of it is shown.
            ("https://ann:pa/ss@h.example/x", "https://***"),
            ("postgres://h1:5432,h2:5433/db", "postgres://***"),
            ("https://h.example/p#frag", "https://h.example/p#***"),
            ("/srv/backup", "/srv/backup"),
            ("file:///srv/backup", "file:///srv/backup"),
        ];
        for (given, want) in cases {
            assert_eq!(url(given), want, "{given}");
        }
        assert_eq!(
            webhook("https://hooks.slack.com/services/T0/B0/XXXX?t=1"),
            "https://hooks.slack.com/***?t=***"
        );
        assert_eq!(webhook("https://u:p/w@h/x"), "https://***");
    }

    #[test]
    fn big_files_are_refused_without_reading_them_whole() {
        let e =
            read_limited(Path::new("/dev/zero"), SECRET_FILE_LIMIT, "password file").unwrap_err();
        assert!(e.to_string().contains("larger than 4 KiB"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, vec![b'a'; 4096]).unwrap();
        assert_eq!(
            read_limited(&f, SECRET_FILE_LIMIT, "x").unwrap().len(),
            4096
        );
        std::fs::write(&f, vec![b'a'; 4097]).unwrap();
        assert!(read_limited(&f, SECRET_FILE_LIMIT, "x").is_err());
    }
}
