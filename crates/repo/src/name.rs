//! File names and link targets as the filesystem gives them: bytes.
//!
//! A Unix file name is any run of bytes without `/` or NUL. Names from old
//! Windows shares are often Latin-1, and two names may differ only in bytes
//! that are not valid UTF-8, so a name that went through a lossy conversion
//! could come back as another file's name. [`FsName`] keeps the bytes
//! exactly. In a tree's JSON a name is a plain string when it is valid
//! UTF-8 (nearly always, and readable), and `{"bytes":"<hex>"}` otherwise.
//!
//! People see names through [`FsName::display`] and [`escape_bytes`], which
//! escape control characters, invalid bytes and the characters that reorder
//! text, so that no name can fake an extra line or hide its extension.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name or link target, byte-exact.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FsName(Vec<u8>);

impl FsName {
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> FsName {
        FsName(b.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    pub fn into_os_string(self) -> OsString {
        OsString::from_vec(self.0)
    }

    /// The name as text when it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name for people: one line, nothing that can pass for another
    /// name or another line (see [`escape_bytes`]).
    pub fn display(&self) -> String {
        escape_bytes(&self.0)
    }

    /// Why this name cannot be one entry of a folder, if it cannot: empty,
    /// `.`, `..`, or holding `/` or NUL. A stored tree is input like any
    /// other (anyone with a key can write one), so restore checks this.
    pub fn unsafe_reason(&self) -> Option<&'static str> {
        match self.0.as_slice() {
            [] => Some("an empty name"),
            b"." | b".." => Some("a name that points at a folder itself or its parent"),
            b if b.contains(&b'/') => Some("a name holding '/'"),
            b if b.contains(&0) => Some("a name holding a NUL byte"),
            _ => None,
        }
    }
}

impl From<&str> for FsName {
    fn from(s: &str) -> FsName {
        FsName(s.as_bytes().to_vec())
    }
}

impl From<String> for FsName {
    fn from(s: String) -> FsName {
        FsName(s.into_bytes())
    }
}

impl From<&OsStr> for FsName {
    fn from(s: &OsStr) -> FsName {
        FsName(s.as_bytes().to_vec())
    }
}

impl From<OsString> for FsName {
    fn from(s: OsString) -> FsName {
        FsName(s.into_vec())
    }
}

impl PartialEq<str> for FsName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for FsName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl std::fmt::Debug for FsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl std::fmt::Display for FsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for FsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(text) => s.serialize_str(text),
            None => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("bytes", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for FsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FsName, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes { bytes: String },
        }
        match Form::deserialize(d)? {
            Form::Text(t) => Ok(FsName(t.into_bytes())),
            Form::Bytes { bytes } => hex::decode(bytes)
                .map(FsName)
                .map_err(|_| serde::de::Error::custom("a byte name that is not hex")),
        }
    }
}

/// `bytes` as one line of text: valid UTF-8 as it is, except that
/// backslashes are doubled; `\n`, `\r` and `\t` as those escapes; other
/// control characters and the characters that reorder or hide text (bidi
/// controls, zero-width characters) as `\u{…}`; bytes that are not UTF-8
/// as `\xNN`. Different inputs give different outputs.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A path for people, escaped like a name (see [`escape_bytes`]).
pub fn shown(path: &std::path::Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' // zero-width, LRM, RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_print_on_one_line_and_distinctly() {
        assert_eq!(FsName::from("a.pdf").display(), "a.pdf");
        assert_eq!(
            FsName::from("x\nroot.db").display(),
            "x\\nroot.db",
            "a newline cannot fake a second entry"
        );
        assert_eq!(
            FsName::from_bytes(b"caf\xe9".to_vec()).display(),
            "caf\\xe9"
        );
        assert_eq!(FsName::from("a\\xe9").display(), "a\\\\xe9");
        assert_eq!(
            FsName::from("invoice\u{202e}fdp.exe").display(),
            "invoice\\u{202e}fdp.exe"
        );
        assert_eq!(FsName::from("\u{1b}[2J").display(), "\\u{1b}[2J");
    }

    #[test]
    fn unsafe_names_are_named() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(FsName::from_bytes(bad).unsafe_reason().is_some(), "{bad:?}");
        }
        for good in [&b"..."[..], b".hidden", b"a..b", b"\xff\xfe", b" "] {
            assert!(
                FsName::from_bytes(good).unsafe_reason().is_none(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn json_is_a_string_when_it_can_be() {
        assert_eq!(
            serde_json::to_string(&FsName::from("a b")).unwrap(),
            "\"a b\""
        );
        let latin1 = FsName::from_bytes(b"r\xe9sum\xe9.doc".to_vec());
        let json = serde_json::to_string(&latin1).unwrap();
        assert_eq!(json, r#"{"bytes":"72e973756de92e646f63"}"#);
        assert_eq!(serde_json::from_str::<FsName>(&json).unwrap(), latin1);
        assert!(serde_json::from_str::<FsName>(r#"{"bytes":"zz"}"#).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_json(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let n = FsName::from_bytes(b.clone());
            let back: FsName = serde_json::from_slice(&serde_json::to_vec(&n).unwrap()).unwrap();
            prop_assert_eq!(back.as_bytes(), &b[..]);
        }

        #[test]
        fn escaping_is_one_line_and_injective(a in proptest::collection::vec(any::<u8>(), 0..24), b in proptest::collection::vec(any::<u8>(), 0..24)) {
            let (ea, eb) = (escape_bytes(&a), escape_bytes(&b));
            prop_assert!(!ea.contains('\n') && !ea.contains('\r'));
            prop_assert!(!ea.chars().any(|c| c.is_control()));
            prop_assert_eq!(a == b, ea == eb);
        }
    }
}
