//! Server-rendered HTML: every value goes through [`esc`], every page
//! through [`page`]. No script is needed to use the console; the one
//! script (live progress) only makes pages update without a reload.

use std::fmt::Write;

use chrono::{DateTime, Local, Utc};

use crate::session::Session;
use crate::users::Role;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (a hostile file name) are shown, not sent.
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Opens a table with a header row of `heads`. `class` may be empty.
pub fn table_open(h: &mut String, class: &str, heads: &[&str]) {
    if class.is_empty() {
        h.push_str("<table><thead><tr>");
    } else {
        let _ = write!(h, r#"<table class="{}"><thead><tr>"#, esc(class));
    }
    for head in heads {
        let _ = write!(h, r#"<th scope="col">{}</th>"#, esc(head));
    }
    h.push_str("</tr></thead><tbody>");
}

/// A row of `cells` (already HTML) under `heads`. Each cell that holds
/// something carries its column's name, which a narrow screen, where cells
/// stack and the header row is hidden, shows before the value.
pub fn table_row(h: &mut String, heads: &[&str], cells: &[&str]) {
    h.push_str("<tr>");
    for (i, cell) in cells.iter().enumerate() {
        match heads.get(i).filter(|l| !l.is_empty() && !cell.is_empty()) {
            Some(label) => {
                let _ = write!(h, r#"<td data-label="{}">{cell}</td>"#, esc(label));
            }
            None => {
                let _ = write!(h, "<td>{cell}</td>");
            }
        }
    }
    h.push_str("</tr>");
}

/// Closes what [`table_open`] opened.
pub const TABLE_CLOSE: &str = "</tbody></table>";

/// A time as people read it, in the server's time zone.
pub fn when(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string()
}

/// Bytes as people read them.
pub fn size(n: u64) -> String {
    ledgervault_repo::human_size(n)
}

/// The hidden field every form carries.
pub fn csrf_field(s: &Session) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&s.csrf)
    )
}

/// A whole page: the header with the navigation and who is signed in,
/// then `body` (already HTML).
pub fn page(title: &str, who: Option<&Session>, body: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · ledgervault</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header>
<a class="brand" href="/">ledgervault</a>
"#,
        esc(title)
    );
    if let Some(s) = who {
        let _ = write!(
            h,
            r#"<nav aria-label="main">
<a href="/">Dashboard</a>
<a href="/snapshots">Snapshots</a>
<a href="/clients">Clients</a>
<a href="/drills">Drills</a>
<a href="/activity">Activity</a>
<a href="/settings">Settings</a>
</nav>
<form class="signout" method="post" action="/logout">{}<span class="who">{} · {}</span> <button type="submit">Sign out</button></form>
"#,
            csrf_field(s),
            esc(&s.user),
            s.role.name()
        );
    }
    let _ = write!(
        h,
        "</header>\n<main>\n<h1>{}</h1>\n{}\n</main>\n</body>\n</html>\n",
        esc(title),
        body
    );
    h
}

/// A message box: `kind` is `ok`, `warn` or `error`.
pub fn note(kind: &str, text: &str) -> String {
    format!(
        r#"<p class="note {kind}" role="{}">{}</p>"#,
        if kind == "error" { "alert" } else { "status" },
        esc(text)
    )
}

/// Whether `role` may do what `need` allows.
pub fn may(role: Role, need: Role) -> bool {
    role >= need
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_shows_control_characters() {
        let hostile = "<script>alert(\"x\")</script>&'\n\u{7}";
        let e = esc(hostile);
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('"'));
        assert!(!e.contains('\'') && !e.contains('\n'));
        assert!(e.contains("&lt;script&gt;") && e.contains("\\u{7}"), "{e}");
    }
}
