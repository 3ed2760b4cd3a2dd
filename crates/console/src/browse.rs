//! Browsing a snapshot and downloading from it. A place in a snapshot is
//! named by its path's bytes in hex (`at=`), so any name, valid UTF-8 or
//! not, round-trips exactly, and nothing in a URL is ever a file-system
//! path: each name is looked up among its folder's entries, byte for byte.

use std::fmt::Write;
use std::io::Read;

use anyhow::{anyhow, bail, Result};
use ledgervault_repo::{
    escape_bytes, node_reader, Id, Index, Node, NodeKind, Repository, Snapshot,
};

use crate::html::{esc, page, size, table_open, table_row, when, TABLE_CLOSE};
use crate::session::Session;

/// The longest `at=` accepted (hex of a 4 KiB path).
const LONGEST_AT: usize = 8192;

/// The path named by `at` (empty: the snapshot's top), as its names.
pub fn names(at: &str) -> Result<Vec<Vec<u8>>> {
    if at.is_empty() {
        return Ok(Vec::new());
    }
    if at.len() > LONGEST_AT {
        bail!("the path is too long");
    }
    let bytes = hex::decode(at).map_err(|_| anyhow!("not a path in this snapshot"))?;
    let rest = bytes
        .strip_prefix(b"/")
        .ok_or_else(|| anyhow!("not a path in this snapshot"))?;
    let parts: Vec<Vec<u8>> = rest.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
    if parts.iter().any(Vec::is_empty) {
        bail!("not a path in this snapshot");
    }
    Ok(parts)
}

/// The path's bytes, `/` before each name.
pub fn at_bytes(names: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    for n in names {
        b.push(b'/');
        b.extend_from_slice(n);
    }
    b
}

/// `at=` for `names`.
pub fn at(names: &[Vec<u8>]) -> String {
    hex::encode(at_bytes(names))
}

/// The entry at `names` (none: the snapshot's top).
pub fn resolve(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    names: &[Vec<u8>],
) -> Result<Option<Node>> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(None);
    };
    let src = snap
        .sources
        .iter()
        .find(|s| s.name.as_bytes() == first.as_slice())
        .ok_or_else(|| anyhow!("no such entry in this snapshot"))?;
    let mut node = src.node.clone();
    for name in rest {
        let subtree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => t,
            _ => bail!("no such entry in this snapshot"),
        };
        let tree = repo.load_tree(index, &subtree)?;
        node = tree
            .nodes
            .into_iter()
            .find(|n| n.name.as_bytes() == name.as_slice())
            .ok_or_else(|| anyhow!("no such entry in this snapshot"))?;
    }
    Ok(Some(node))
}

/// Whether `node` has content to download.
pub fn has_content(node: &Node) -> bool {
    matches!(
        node.kind,
        NodeKind::File | NodeKind::Stream | NodeKind::DbImage
    )
}

fn kind_word(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "folder",
        NodeKind::Symlink => "link",
        NodeKind::Stream => "stream",
        NodeKind::DbImage => "database",
    }
}

/// The page for `names` in snapshot `id`.
pub fn page_for(
    s: &Session,
    repo: &Repository,
    index: &Index,
    id: &Id,
    snap: &Snapshot,
    names: &[Vec<u8>],
) -> Result<String> {
    let base = format!("/snapshots/{}", id.to_hex());
    let mut h = format!(
        r#"<p class="where">Snapshot <code>{}</code> of {}{}</p>"#,
        esc(&id.short()),
        when(&snap.time),
        snap.reason
            .as_deref()
            .map(|r| format!(", “{}”", esc(r)))
            .unwrap_or_default()
    );
    // Where we are: each level a link.
    h.push_str(r#"<nav class="crumbs" aria-label="path"><a href=""#);
    let _ = write!(h, "{base}\">snapshot</a>");
    for i in 0..names.len() {
        let _ = write!(
            h,
            r#" / <a href="{base}?at={}">{}</a>"#,
            at(&names[..=i]),
            esc(&escape_bytes(&names[i]))
        );
    }
    h.push_str("</nav>");
    let row = |h: &mut String, path: &[Vec<u8>], n: &Node| {
        let link = format!("{base}?at={}", at(path));
        let name = esc(&escape_bytes(path.last().map(Vec::as_slice).unwrap_or(b"")));
        let on_server = || {
            snap.sources
                .iter()
                .find(|s| s.name.as_bytes() == path[0].as_slice())
                .and_then(ledgervault_service::db::of_source)
                .is_some_and(|k| k.on_server())
        };
        let restore = if path.len() == 1 && (n.kind == NodeKind::DbImage || on_server()) {
            format!(
                r#" · <a href="/restore?snapshot={}&amp;source={}">Restore…</a>"#,
                id.to_hex(),
                hex::encode(&path[0])
            )
        } else {
            String::new()
        };
        let download = if has_content(n) || n.kind == NodeKind::Dir {
            format!(
                r#"<a href="/snapshots/{}/download?at={}">Download{}</a>"#,
                id.to_hex(),
                at(path),
                if n.kind == NodeKind::Dir {
                    " (zip)"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        };
        table_row(
            h,
            HEADS,
            &[
                &format!(r#"<a href="{link}">{name}</a>"#),
                kind_word(n.kind),
                &if n.kind == NodeKind::Dir {
                    String::new()
                } else {
                    size(n.size)
                },
                &n.mtime.as_ref().map(when).unwrap_or_default(),
                &format!("{download}{restore}"),
            ],
        );
    };
    const HEADS: &[&str] = &["Name", "Kind", "Size", "Modified", ""];
    match resolve(repo, index, snap, names)? {
        None => {
            table_open(&mut h, "entries", HEADS);
            for src in &snap.sources {
                let path = vec![src.name.as_bytes().to_vec()];
                row(&mut h, &path, &src.node);
            }
            h.push_str(TABLE_CLOSE);
        }
        Some(node) if node.kind == NodeKind::Dir => {
            table_open(&mut h, "entries", HEADS);
            if let Some(t) = node.subtree {
                for n in repo.load_tree(index, &t)?.nodes {
                    let mut path = names.to_vec();
                    path.push(n.name.as_bytes().to_vec());
                    row(&mut h, &path, &n);
                }
            }
            h.push_str(TABLE_CLOSE);
        }
        Some(node) => {
            table_open(&mut h, "entries", HEADS);
            row(&mut h, names, &node);
            h.push_str(TABLE_CLOSE);
            if let Some(t) = &node.target {
                let _ = write!(
                    h,
                    "<p>Points to <code>{}</code>.</p>",
                    esc(&escape_bytes(t.as_bytes()))
                );
            }
        }
    }
    Ok(page("Browse a snapshot", Some(s), &h))
}

/// A file name for a download: the name's bytes as UTF-8 (lossy), and a
/// plain ASCII one for old clients.
pub fn content_disposition(name: &[u8], zip: bool) -> String {
    let text = String::from_utf8_lossy(name).into_owned() + if zip { ".zip" } else { "" };
    let ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            encoded.push(b as char);
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Writes the content of `node` to `out`.
pub fn copy_content(
    repo: &Repository,
    index: &Index,
    node: &Node,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let mut r = node_reader(repo, index, node)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_odd_ones_are_refused() {
        let p = vec![b"docs".to_vec(), b"a\xffb".to_vec(), b"..".to_vec()];
        assert_eq!(names(&at(&p)).unwrap(), p);
        assert!(names("").unwrap().is_empty());
        for bad in ["zz", "2f2f", "646f6373", "2f", &"2f61".repeat(3000)] {
            assert!(names(bad).is_err(), "{bad}");
        }
        let d = content_disposition(b"r\xc3\xa9sum\xc3\xa9 \"x\".pdf", false);
        assert!(
            d.starts_with("attachment; filename=\"r_sum___x_.pdf\""),
            "{d}"
        );
        assert!(
            d.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"),
            "{d}"
        );
    }
}

/// A name safe to put in an archive someone will extract: no empty, `.`
/// or `..` parts, no backslashes, never absolute (a forged snapshot must
/// not make the zip write outside the folder it is extracted into).
fn archive_name(parts: &[Vec<u8>]) -> String {
    parts
        .iter()
        .map(|p| {
            let t = String::from_utf8_lossy(p).replace(['\\', '/'], "_");
            match t.as_str() {
                "" | "." | ".." => t.replace('.', "_") + "_",
                _ => t,
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// An MS-DOS date and time, as zip keeps them (local time, 1980 or later).
fn dos_time(t: Option<&chrono::DateTime<chrono::Utc>>) -> (u16, u16) {
    use chrono::{Datelike, Timelike};
    let Some(t) = t else { return (0, 0x21) };
    let l = t.with_timezone(&chrono::Local);
    if l.year() < 1980 || l.year() > 2107 {
        return (0, 0x21);
    }
    let time = ((l.hour() << 11) | (l.minute() << 5) | (l.second() / 2)) as u16;
    let date = ((((l.year() - 1980) as u32) << 9) | (l.month() << 5) | l.day()) as u16;
    (time, date)
}

/// Counts what goes through, for the offsets a zip records.
struct Counting<'a> {
    out: &'a mut dyn std::io::Write,
    at: u64,
}

impl std::io::Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Also computes the CRC-32 and length of what goes through.
struct Summing<'a, 'b> {
    out: &'a mut Counting<'b>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl std::io::Write for Summing<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

struct Central {
    name: String,
    crc: u32,
    len: u64,
    offset: u64,
    time: (u16, u16),
    mode: u32,
}

/// Writes the folder `node` (named `name`) as a zip to `out`, as it goes:
/// entries stored as they are (most documents are compressed already),
/// sizes after each entry's data and in ZIP64 form, so that nothing needs
/// to be known ahead and no size is too large. Links are left out.
pub fn write_zip(
    repo: &Repository,
    index: &Index,
    node: &Node,
    name: &[u8],
    out: &mut dyn std::io::Write,
) -> Result<()> {
    const FLAGS: u16 = 0x0808; // sizes follow the data; names are UTF-8
    let mut w = Counting { out, at: 0 };
    let mut central: Vec<Central> = Vec::new();
    let mut stack = vec![(vec![name.to_vec()], node.clone())];
    while let Some((path, n)) = stack.pop() {
        let is_dir = n.kind == NodeKind::Dir;
        if !is_dir && !has_content(&n) {
            continue;
        }
        let mut entry = archive_name(&path);
        if is_dir {
            entry.push('/');
        }
        let name_len = u16::try_from(entry.len()).map_err(|_| {
            anyhow!(
                "a name in this folder is too long for a zip: {}...",
                entry.chars().take(80).collect::<String>()
            )
        })?;
        let time = dos_time(n.mtime.as_ref());
        let offset = w.at;
        // Local header, with a ZIP64 field whose sizes come after the data.
        let mut h = Vec::with_capacity(64 + entry.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&45u16.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&time.0.to_le_bytes());
        h.extend_from_slice(&time.1.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // crc: after the data
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&name_len.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(entry.as_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&[0u8; 16]);
        std::io::Write::write_all(&mut w, &h)?;
        let (crc, len) = if is_dir {
            (0, 0)
        } else {
            let mut s = Summing {
                out: &mut w,
                crc: crc32fast::Hasher::new(),
                len: 0,
            };
            copy_content(repo, index, &n, &mut s)?;
            (s.crc.finalize(), s.len)
        };
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        std::io::Write::write_all(&mut w, &d)?;
        // Permissions only: never a link, a device or set-user-id bits.
        let perms = n
            .mode
            .map(|m| m & 0o777)
            .unwrap_or(if is_dir { 0o755 } else { 0o644 });
        let mode = perms | if is_dir { 0o040000 } else { 0o100000 };
        central.push(Central {
            name: entry,
            crc,
            len,
            offset,
            time,
            mode,
        });
        if let (true, Some(t)) = (is_dir, n.subtree) {
            let tree = repo.load_tree(index, &t)?;
            for c in tree.nodes.into_iter().rev() {
                let mut p = path.clone();
                p.push(c.name.as_bytes().to_vec());
                stack.push((p, c));
            }
        }
    }
    let cd_start = w.at;
    for c in &central {
        let mut h = Vec::with_capacity(80 + c.name.len());
        h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        h.extend_from_slice(&(45u16 | 3 << 8).to_le_bytes()); // made on Unix
        h.extend_from_slice(&45u16.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&c.time.0.to_le_bytes());
        h.extend_from_slice(&c.time.1.to_le_bytes());
        h.extend_from_slice(&c.crc.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&(c.name.len() as u16).to_le_bytes()); // checked above
        h.extend_from_slice(&28u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // comment
        h.extend_from_slice(&0u16.to_le_bytes()); // disk
        h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        h.extend_from_slice(&(c.mode << 16).to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(c.name.as_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&24u16.to_le_bytes());
        h.extend_from_slice(&c.len.to_le_bytes());
        h.extend_from_slice(&c.len.to_le_bytes());
        h.extend_from_slice(&c.offset.to_le_bytes());
        std::io::Write::write_all(&mut w, &h)?;
    }
    let cd_len = w.at - cd_start;
    let end64 = w.at;
    let count = central.len() as u64;
    let mut e = Vec::with_capacity(98);
    e.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    e.extend_from_slice(&44u64.to_le_bytes());
    e.extend_from_slice(&(45u16 | 3 << 8).to_le_bytes());
    e.extend_from_slice(&45u16.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&count.to_le_bytes());
    e.extend_from_slice(&count.to_le_bytes());
    e.extend_from_slice(&cd_len.to_le_bytes());
    e.extend_from_slice(&cd_start.to_le_bytes());
    e.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&end64.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&u16::MAX.to_le_bytes());
    e.extend_from_slice(&u16::MAX.to_le_bytes());
    e.extend_from_slice(&u32::MAX.to_le_bytes());
    e.extend_from_slice(&u32::MAX.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    std::io::Write::write_all(&mut w, &e)?;
    Ok(())
}

#[cfg(test)]
mod zip_tests {
    use super::*;

    #[test]
    fn archive_names_cannot_climb_out() {
        let n =
            |parts: &[&[u8]]| archive_name(&parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        assert_eq!(n(&[b"docs", b"2026", b"a.pdf"]), "docs/2026/a.pdf");
        assert_eq!(n(&[b"docs", b"..", b".."]), "docs/___/___");
        assert_eq!(n(&[b"docs", b"a\\..\\b", b"c/d"]), "docs/a_.._b/c_d");
        assert_eq!(n(&[b"."]), "__");
        assert!(!n(&[b"/etc"]).starts_with('/'));
    }
}
