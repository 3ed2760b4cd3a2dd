//! The ransomware guard: what makes a snapshot suspect.
//!
//! A backup compares what it reads with the latest earlier (unsuspected)
//! snapshot of the same source and raises the alarm when the data looks
//! attacked rather than worked on:
//!
//! - **Database pages turned to noise.** A changed page counts only when it
//!   is random-looking *and* no longer a well-formed page: a b-tree page
//!   with a valid header and cell pointers, or an overflow or freelist page
//!   whose first word is a plausible page number. A healthy database full
//!   of hashes, tokens or compressed blobs changes pages into other
//!   well-formed pages, which never count.
//! - **A database that is no longer itself**: gone from its folder, no
//!   longer readable, most of its rows gone, or none of its tables left.
//! - **Documents that stopped being what their name says** (a `.pdf` that
//!   is not a PDF, a `.docx` that is not a zip, a `.csv` turned to noise),
//!   **mass renames to a new extension**, and **mass deletion**.
//!
//! Every threshold is in [`GuardOptions`]; the defaults are documented in
//! the README with exactly what is and is not detected.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::snapshot::DatabaseInfo;

/// Thresholds of the guard.
#[derive(Debug, Clone)]
pub struct GuardOptions {
    /// A database image is suspect when at least this share of its pages
    /// turned into random-looking bytes that are no longer well-formed pages.
    pub page_share: f64,
    /// A database is suspect when it lost at least this share of its rows
    /// (and had at least [`GuardOptions::min_rows`]).
    pub rows_lost_share: f64,
    pub min_rows: u64,
    /// Documents: nothing below this many files counts.
    pub min_files: u64,
    /// Share of a folder's documents of a known format that changed and no
    /// longer are that format.
    pub broken_share: f64,
    /// Share of the folder's earlier files renamed to a new extension.
    pub renamed_share: f64,
    /// Share of the folder's earlier files deleted.
    pub deleted_share: f64,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            page_share: DEFAULT_SUSPECT_SHARE,
            rows_lost_share: 0.5,
            min_rows: 100,
            min_files: 10,
            broken_share: 0.25,
            renamed_share: 0.25,
            deleted_share: 0.5,
        }
    }
}

/// Default of [`GuardOptions::page_share`]: a normal day of work changes a
/// few percent of a firm database's pages, and into text, not noise.
pub const DEFAULT_SUSPECT_SHARE: f64 = 0.10;

/// Below this many noise pages nothing is suspect, so a tiny database
/// with one new attachment does not raise the alarm.
pub(crate) const SUSPECT_MIN_PAGES: u64 = 16;

/// Whether bytes look like encrypted or random data: their byte entropy is
/// above 7.5 bits per byte. Database pages of text and numbers sit far
/// below (4 to 6); random 4 KiB pages sit near 7.95.
pub fn looks_random(page: &[u8]) -> bool {
    if page.len() < 1024 {
        return false;
    }
    entropy(page) > 7.5
}

fn entropy(bytes: &[u8]) -> f64 {
    let mut hist = [0u32; 256];
    for &b in bytes {
        hist[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Largest page number an overflow or freelist page may point to: a 256
/// GiB database of 4 KiB pages. Random bytes pass this by chance about
/// once in 64.
const MAX_PAGE_NO: u32 = 1 << 26;

/// Whether `page` (number `index`, from 0) is a well-formed SQLite page: a
/// b-tree page whose header, cell count, content area and every cell
/// pointer are consistent; or an overflow / freelist page whose first word
/// is a plausible page number. Random bytes pass the b-tree test with a
/// probability far below one in a million, and the other about once in 64.
pub fn well_formed_page(page: &[u8], index: usize) -> bool {
    let off = if index == 0 { 100 } else { 0 };
    if page.len() < off + 12 {
        return false;
    }
    let be16 = |at: usize| u16::from_be_bytes([page[at], page[at + 1]]) as usize;
    let be32 = |at: usize| u32::from_be_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
    let kind = page[off];
    if matches!(kind, 2 | 5 | 10 | 13) {
        let header = if matches!(kind, 2 | 5) { 12 } else { 8 };
        let cells = be16(off + 3);
        let content = match be16(off + 5) {
            0 => 65536,
            c => c,
        };
        let pointers_end = off + header + 2 * cells;
        let freeblock = be16(off + 1);
        let plausible = page[off + 7] <= 60
            && pointers_end <= page.len()
            && content >= pointers_end
            && content <= page.len()
            && (freeblock == 0 || (freeblock >= pointers_end && freeblock < page.len()))
            && (header == 8 || be32(off + 8) != 0)
            && (0..cells).all(|i| {
                let p = be16(off + header + 2 * i);
                p >= content && p < page.len()
            });
        if plausible {
            return true;
        }
    }
    // Overflow page (next page, then payload) or freelist trunk (next
    // trunk, leaf count, leaves).
    index != 0 && be32(0) < MAX_PAGE_NO
}

/// Whether a changed database page counts as turned to noise.
pub(crate) fn page_is_noise(page: &[u8], index: usize) -> bool {
    looks_random(page) && !well_formed_page(page, index)
}

/// What a file's name promises about its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pdf,
    Zip,
    Ole,
    Png,
    Jpeg,
    Gif,
    Tiff,
    Text,
}

fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => Format::Pdf,
        "docx" | "xlsx" | "pptx" | "docm" | "xlsm" | "odt" | "ods" | "odp" | "zip" | "epub" => {
            Format::Zip
        }
        "doc" | "xls" | "ppt" | "msg" => Format::Ole,
        "png" => Format::Png,
        "jpg" | "jpeg" => Format::Jpeg,
        "gif" => Format::Gif,
        "tif" | "tiff" => Format::Tiff,
        "txt" | "csv" | "tsv" | "qif" | "ofx" | "qfx" | "iif" | "xml" | "json" | "html" | "htm"
        | "md" | "log" | "rtf" => Format::Text,
        _ => return None,
    })
}

/// Whether `head` (a file's first bytes, up to a few KiB) is what the
/// file's name says; `None` when the name promises nothing we know.
pub(crate) fn matches_its_name(path: &Path, head: &[u8]) -> Option<bool> {
    let f = format_of(path)?;
    if head.is_empty() {
        return Some(true);
    }
    Some(match f {
        Format::Pdf => head.windows(5).take(1024).any(|w| w == b"%PDF-"),
        Format::Zip => head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06"),
        // Old Office names also carry HTML, SpreadsheetML, RTF or CSV that
        // banks and accounting programs export under them.
        Format::Ole => {
            head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1])
                || looks_like_text(head)
        }
        Format::Png => head.starts_with(b"\x89PNG"),
        Format::Jpeg => head.starts_with(&[0xFF, 0xD8, 0xFF]),
        Format::Gif => head.starts_with(b"GIF8"),
        Format::Tiff => head.starts_with(b"II*\0") || head.starts_with(b"MM\0*"),
        Format::Text => looks_like_text(head),
    })
}

/// Text: UTF-8 (or a legacy 8-bit encoding) with few control bytes and no
/// run of noise. Encrypted bytes have ~12% control bytes and entropy ~8.
fn looks_like_text(head: &[u8]) -> bool {
    if let Some(units) = utf16_units(head) {
        // UTF-16 text (what Windows PowerShell writes by default): judge its
        // characters, not its bytes.
        let bad = units
            .iter()
            .filter(|&&u| u < 0x20 && !matches!(u, 0x0a | 0x0d | 0x09 | 0x0c))
            .count();
        return bad * 100 <= units.len().max(1) * 2;
    }
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    let few_controls = controls * 100 <= head.len() * 2;
    few_controls && !(head.len() >= 512 && entropy(head) > 7.2)
}

/// The 16-bit units of `head` when it is UTF-16 text: a byte-order mark,
/// or (without one) NUL in every other byte, as ASCII in UTF-16 has.
fn utf16_units(head: &[u8]) -> Option<Vec<u16>> {
    let (body, little) = match head {
        [0xFF, 0xFE, rest @ ..] => (rest, true),
        [0xFE, 0xFF, rest @ ..] => (rest, false),
        _ if head.len() >= 16 => {
            let odd_nul = head.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
            let even_nul = head.iter().step_by(2).filter(|&&b| b == 0).count();
            let half = head.len() / 2;
            if odd_nul * 10 >= half * 9 && even_nul * 10 <= half {
                (head, true)
            } else if even_nul * 10 >= half * 9 && odd_nul * 10 <= half {
                (head, false)
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(
        body.chunks_exact(2)
            .map(|c| {
                if little {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect(),
    )
}

/// Findings about one database against its earlier record.
pub(crate) fn database_findings(
    shown: &str,
    before: &DatabaseInfo,
    now: &DatabaseInfo,
    snapshot: &str,
    opts: &GuardOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    let rows = |d: &DatabaseInfo| d.tables.iter().map(|t| t.rows).sum::<u64>();
    let (r0, r1) = (rows(before), rows(now));
    if r0 >= opts.min_rows && (r1 as f64) <= r0 as f64 * (1.0 - opts.rows_lost_share) {
        out.push(format!(
            "{shown}: lost {:.0}% of its rows since snapshot {snapshot} ({r0} → {r1}), as when a database is wiped or replaced",
            100.0 * (r0 - r1.min(r0)) as f64 / r0 as f64
        ));
    }
    let names = |d: &DatabaseInfo| {
        d.tables
            .iter()
            .map(|t| t.name.clone())
            .collect::<HashSet<_>>()
    };
    let (t0, t1) = (names(before), names(now));
    if !t0.is_empty() && t0.intersection(&t1).next().is_none() {
        out.push(format!(
            "{shown}: is a different database than in snapshot {snapshot}: none of its {} tables are left",
            t0.len()
        ));
    }
    out
}

/// What the walk of a folder source found against the folder's latest
/// earlier (unsuspected) snapshot, folder by folder as the walk goes (both
/// trees side by side), so memory follows the depth of the folder, not the
/// number of its files.
#[derive(Default)]
pub(crate) struct FolderWatch {
    /// The earlier snapshot (short id); `None`: nothing to compare with.
    pub snapshot: Option<String>,
    /// Files of a known format seen.
    pub known: u64,
    /// Files that changed and are no longer their named format.
    pub broken: u64,
    broken_examples: Vec<PathBuf>,
    /// Files (and databases) the earlier snapshot held in the folders
    /// compared.
    pub before: u64,
    /// Of those, gone now.
    pub deleted: u64,
    deleted_examples: Vec<PathBuf>,
    /// Files that appeared where a file of the same stem went, by their new
    /// extension ("a.pdf" became "a.pdf.locked" or "a.locked").
    pub renamed: HashMap<String, u64>,
}

const EXAMPLES: usize = 3;

impl FolderWatch {
    /// A document changed into something its name says it is not.
    pub fn broken(&mut self, rel: PathBuf) {
        self.broken += 1;
        if self.broken_examples.len() < EXAMPLES {
            self.broken_examples.push(rel);
        }
    }

    /// A file of the earlier snapshot under a folder that is gone.
    pub fn deleted(&mut self, rel: PathBuf) {
        self.before += 1;
        self.deleted += 1;
        if self.deleted_examples.len() < EXAMPLES {
            self.deleted_examples.push(rel);
        }
    }

    /// One folder compared: `before` files were there in the earlier
    /// snapshot, of which `gone` are not there now, and `added` are new.
    pub fn folder(&mut self, dir: &Path, before: u64, gone: &[PathBuf], added: &[PathBuf]) {
        self.before += before;
        for g in gone {
            self.deleted += 1;
            if self.deleted_examples.len() < EXAMPLES {
                self.deleted_examples.push(dir.join(g));
            }
        }
        if gone.is_empty() || added.is_empty() {
            return;
        }
        let gone_stems: HashSet<PathBuf> = gone.iter().map(|p| p.with_extension("")).collect();
        let gone: HashSet<&PathBuf> = gone.iter().collect();
        for p in added {
            let stem = p.with_extension("");
            if gone.contains(&stem) || gone_stems.contains(&stem) {
                let ext = p
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                *self.renamed.entry(ext).or_default() += 1;
            }
        }
    }
}

/// Findings about a folder source against its earlier snapshot.
pub(crate) fn folder_findings(
    shown: &str,
    watch: &FolderWatch,
    opts: &GuardOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    let over =
        |n: u64, of: u64, share: f64| n >= opts.min_files.max(1) && n as f64 >= share * of as f64;
    if over(watch.broken, watch.known, opts.broken_share) {
        out.push(format!(
            "{shown}: {} of {} documents changed into something their name says they are not (e.g. {}), as when ransomware encrypts files",
            watch.broken,
            watch.known,
            examples(&watch.broken_examples)
        ));
    }
    let Some(snapshot) = &watch.snapshot else {
        return out;
    };
    let total = watch.before;
    let renamed_total: u64 = watch.renamed.values().sum();
    if over(renamed_total, total, opts.renamed_share) {
        let mut exts: Vec<(&String, &u64)> = watch.renamed.iter().collect();
        exts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        out.push(format!(
            "{shown}: {renamed_total} of {total} files were renamed to a new extension since snapshot {snapshot} (mostly .{}), as when ransomware encrypts files",
            exts[0].0
        ));
    }
    if over(watch.deleted, total, opts.deleted_share) {
        out.push(format!(
            "{shown}: {} of {total} files were deleted since snapshot {snapshot} (e.g. {})",
            watch.deleted,
            examples(&watch.deleted_examples)
        ));
    }
    out
}

fn examples(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .take(3)
        .map(|p| crate::name::escape_bytes(p.as_os_str().as_encoded_bytes()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        rand::thread_rng().fill_bytes(&mut v);
        v
    }

    #[test]
    fn random_pages_are_noise_and_real_leaf_pages_of_random_values_are_not() {
        let mut noise = 0;
        for _ in 0..2000 {
            let page = random(4096);
            if page_is_noise(&page, 3) {
                noise += 1;
            }
        }
        // Only those whose first word happens to be a small page number
        // pass as overflow pages (about 1 in 64).
        assert!(noise > 1900, "{noise}");
        // A table leaf page whose cells hold random 32-byte tokens: random
        // bytes, well-formed page.
        let mut page = random(4096);
        let cells = 100usize;
        page[0] = 13;
        page[1..3].copy_from_slice(&0u16.to_be_bytes());
        page[3..5].copy_from_slice(&(cells as u16).to_be_bytes());
        let content = 8 + 2 * cells + 16;
        page[5..7].copy_from_slice(&(content as u16).to_be_bytes());
        page[7] = 0;
        for i in 0..cells {
            let p = (content + i * 39) as u16;
            page[8 + 2 * i..10 + 2 * i].copy_from_slice(&p.to_be_bytes());
        }
        assert!(looks_random(&page), "the page is random-looking");
        assert!(well_formed_page(&page, 3));
        assert!(!page_is_noise(&page, 3));
        // An overflow page of random payload.
        let mut overflow = random(4096);
        overflow[..4].copy_from_slice(&1234u32.to_be_bytes());
        assert!(!page_is_noise(&overflow, 7));
    }

    #[test]
    fn documents_are_judged_by_what_their_name_promises() {
        let p = Path::new;
        assert_eq!(matches_its_name(p("a.pdf"), b"%PDF-1.7\n..."), Some(true));
        assert_eq!(matches_its_name(p("a.PDF"), &random(4096)), Some(false));
        assert_eq!(matches_its_name(p("b.xlsx"), b"PK\x03\x04rest"), Some(true));
        assert_eq!(matches_its_name(p("b.xlsx"), &random(64)), Some(false));
        assert_eq!(
            matches_its_name(p("c.csv"), b"date,amount\n2026-01-01,5\n"),
            Some(true)
        );
        assert_eq!(matches_its_name(p("c.csv"), &random(4096)), Some(false));
        assert_eq!(matches_its_name(p("d.bin"), &random(4096)), None);
        assert_eq!(matches_its_name(p("noext"), b""), None);
        // Latin-1 text is still text.
        assert_eq!(
            matches_its_name(p("e.txt"), b"r\xe9sum\xe9 \xe0 jour\n"),
            Some(true)
        );
        // UTF-16 text (with and without a byte-order mark), as Windows
        // PowerShell writes it.
        let utf16: Vec<u8> = "date,amount\r\n2026-11-30,42.00\r\n"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(matches_its_name(p("f.csv"), &utf16), Some(true));
        let mut bom = vec![0xFF, 0xFE];
        bom.extend(&utf16);
        assert_eq!(matches_its_name(p("f.csv"), &bom), Some(true));
        // An ".xls" that is really HTML, as banks export.
        assert_eq!(
            matches_its_name(p("statement.xls"), b"<html><table><tr><td>1</td></tr>"),
            Some(true)
        );
        assert_eq!(
            matches_its_name(p("statement.xls"), &random(4096)),
            Some(false)
        );
    }

    #[test]
    fn databases_that_lost_their_rows_or_their_tables_are_named() {
        let t = |name: &str, rows| crate::snapshot::TableStat {
            name: name.into(),
            rows,
            digest: String::new(),
        };
        let before = DatabaseInfo {
            tables: vec![t("accounts", 200), t("entries", 5000)],
            ..Default::default()
        };
        let o = GuardOptions::default();
        let same = DatabaseInfo {
            tables: vec![t("accounts", 201), t("entries", 5100)],
            ..Default::default()
        };
        assert!(database_findings("db", &before, &same, "s", &o).is_empty());
        let wiped = DatabaseInfo {
            tables: vec![t("accounts", 200), t("entries", 0)],
            ..Default::default()
        };
        assert_eq!(database_findings("db", &before, &wiped, "s", &o).len(), 1);
        let other = DatabaseInfo {
            tables: vec![t("notes", 9000)],
            ..Default::default()
        };
        let f = database_findings("db", &before, &other, "s", &o);
        assert!(f.iter().any(|x| x.contains("different database")), "{f:?}");
        let empty = DatabaseInfo::default();
        assert_eq!(database_findings("db", &before, &empty, "s", &o).len(), 2);
    }

    #[test]
    fn renames_deletions_and_broken_documents_need_a_large_share() {
        let o = GuardOptions::default();
        let d = Path::new("d");
        let names = |r: std::ops::Range<usize>, ext: &str| -> Vec<PathBuf> {
            r.map(|i| PathBuf::from(format!("f{i}.{ext}"))).collect()
        };
        let watch = || FolderWatch {
            snapshot: Some("s1".into()),
            ..Default::default()
        };
        // A normal day: 3 new files, 2 deleted, 2 edited.
        let mut w = watch();
        w.folder(d, 100, &names(0..2, "pdf"), &names(100..103, "pdf"));
        w.known = 101;
        assert!(folder_findings("share", &w, &o).is_empty());
        // 60 renamed to .locked (appended).
        let mut w = watch();
        let locked: Vec<PathBuf> = (0..60)
            .map(|i| PathBuf::from(format!("f{i}.pdf.locked")))
            .collect();
        w.folder(d, 100, &names(0..60, "pdf"), &locked);
        let f = folder_findings("share", &w, &o);
        assert!(
            f.iter()
                .any(|x| x.contains("renamed") && x.contains(".locked")),
            "{f:?}"
        );
        // Renamed to a new extension in place of the old one.
        let mut w = watch();
        w.folder(d, 100, &names(0..60, "pdf"), &names(0..60, "crypt"));
        let f = folder_findings("share", &w, &o);
        assert!(f.iter().any(|x| x.contains("mostly .crypt")), "{f:?}");
        // 60 deleted, some with their folder.
        let mut w = watch();
        w.folder(d, 80, &names(0..40, "pdf"), &[]);
        for i in 0..20 {
            w.deleted(PathBuf::from(format!("gone/f{i}.pdf")));
        }
        let f = folder_findings("share", &w, &o);
        assert!(
            f.iter().any(|x| x.contains("60 of 100 files were deleted")),
            "{f:?}"
        );
        // Nothing earlier to compare with: no rename or deletion finding.
        let mut w = FolderWatch::default();
        w.folder(d, 100, &names(0..60, "pdf"), &[]);
        assert!(folder_findings("share", &w, &o).is_empty());
        // 30 of 100 documents broken; and only 5 (below the minimum).
        let mut w = watch();
        w.folder(d, 100, &[], &[]);
        w.known = 100;
        for i in 0..30 {
            w.broken(PathBuf::from(format!("d/f{i}.pdf")));
        }
        assert_eq!(folder_findings("share", &w, &o).len(), 1);
        let mut w = watch();
        w.known = 100;
        for i in 0..5 {
            w.broken(PathBuf::from(format!("d/f{i}.pdf")));
        }
        assert!(folder_findings("share", &w, &o).is_empty());
    }
}
