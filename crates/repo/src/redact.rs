//! Secrets out of everything shown: URLs lose their userinfo and query
//! values.
//!
//! URLs are taken apart by the `url` crate (the WHATWG parser browsers
//! use), not by splitting on `/` and `@`: a password containing `/` or a
//! token in the query once slipped through such splitting. A string that
//! looks like a URL but does not parse, or whose userinfo the parser could
//! not find, is shown as `SCHEME://***`, since nobody can say which part of
//! it is secret. Every front end and every crate shows URLs through this.

/// `text` with its userinfo and query values hidden when it is a URL
/// (`https://***@host/path?token=***`), and its path too with `hide_path`
/// (webhooks carry their secret there); anything else unchanged. The user
/// name of a `postgres://` URL stays (a role name, useful in messages);
/// every other user name is hidden too, since some services put their
/// token there.
pub fn redact_url(text: &str, hide_path: bool) -> String {
    let Some((scheme, _)) = text.split_once("://") else {
        return text.to_string();
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return text.to_string();
    }
    let Ok(mut u) = url::Url::parse(text) else {
        return format!("{scheme}://***");
    };
    // An `@` before the path that the parser did not take as the end of a
    // userinfo means the userinfo held a `/` (`user:2024/pw@host` parses as
    // host `user`, port 2024): nobody can tell what is secret in it.
    let after = &text[scheme.len() + 3..];
    let authority_ish = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    if authority_ish.contains('@') && u.username().is_empty() && u.password().is_none() {
        return format!("{scheme}://***");
    }
    let keep_user = matches!(u.scheme(), "postgres" | "postgresql");
    if u.password().is_some() {
        // Setting the password fails only for URLs that cannot have one
        // (no host); those fall back to hiding everything.
        if u.set_password(Some("***")).is_err() {
            return format!("{scheme}://***");
        }
    }
    if !u.username().is_empty() && !keep_user && u.set_username("***").is_err() {
        return format!("{scheme}://***");
    }
    if hide_path {
        u.set_path("/***");
    }
    if u.query().is_some() {
        let pairs: Vec<String> = u
            .query_pairs()
            .map(|(k, _)| {
                format!(
                    "{}=***",
                    url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>()
                )
            })
            .collect();
        u.set_query(Some(&pairs.join("&")));
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("***"));
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_userinfo_the_parser_missed_hides_everything() {
        // `user:2024/Secret@host` parses as host `user`, port 2024.
        assert_eq!(
            redact_url("sftp://backup:2024/Secret@nas.local/repo", false),
            "sftp://***"
        );
        assert_eq!(
            redact_url(
                "https://hook:2024/Budget!@hooks.example.com/x?token=abc",
                true
            ),
            "https://***"
        );
        assert_eq!(
            redact_url("postgres://ann:1/pw@db/books", false),
            "postgres://***"
        );
        // An `@` only in the query is no userinfo.
        assert_eq!(
            redact_url("https://h.example/p?mail=a@b.c", false),
            "https://h.example/p?mail=***"
        );
    }
}
