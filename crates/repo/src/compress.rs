//! Compression with a tag byte.
//!
//! Every compressed payload starts with one tag byte saying how the rest is
//! encoded. An unknown tag means a newer ledgervault wrote it.

use crate::error::{Error, Result};

/// Stored as is.
pub const TAG_RAW: u8 = 0;
/// One zstd frame.
pub const TAG_ZSTD: u8 = 1;

/// Compresses `data` at zstd `level`, or stores it raw when zstd does not
/// make it smaller (already compressed PDFs, images, zip-based spreadsheets).
pub fn compress(level: i32, data: &[u8]) -> Vec<u8> {
    if let Ok(z) = zstd::bulk::compress(data, level) {
        if z.len() < data.len() {
            let mut out = Vec::with_capacity(z.len() + 1);
            out.push(TAG_ZSTD);
            out.extend_from_slice(&z);
            return out;
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(TAG_RAW);
    out.extend_from_slice(data);
    out
}

/// Appends the tagged compression of `data` to `out`, like [`compress`] but
/// with a reusable compressor and no intermediate buffer.
pub fn compress_into(compressor: &mut zstd::bulk::Compressor<'_>, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(1 + zstd::zstd_safe::compress_bound(data.len()));
    out.push(TAG_ZSTD);
    let mut cursor = std::io::Cursor::new(std::mem::take(out));
    cursor.set_position(start as u64 + 1);
    let ok = compressor.compress_to_buffer(data, &mut cursor);
    *out = cursor.into_inner();
    match ok {
        Ok(n) if n < data.len() => {}
        _ => {
            out.truncate(start);
            out.push(TAG_RAW);
            out.extend_from_slice(data);
        }
    }
}

thread_local! {
    /// One decompression context per thread: making one per frame cost a
    /// tenth of a restore's time.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Reverses [`compress`]. `expected_len` bounds the output so a hostile
/// frame cannot make us allocate without limit; `object` names what is being
/// decoded for error messages.
pub fn decompress(data: &[u8], expected_len: usize, object: &str) -> Result<Vec<u8>> {
    let (&tag, rest) = data
        .split_first()
        .ok_or_else(|| Error::corrupt(object, "empty compressed payload"))?;
    let out = match tag {
        TAG_RAW => rest.to_vec(),
        TAG_ZSTD => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut()
                    .expect("just made")
                    .decompress(rest, expected_len)
            })
            .map_err(|e| Error::corrupt(object, format!("zstd: {e}")))?,
        t => {
            return Err(Error::NewerFormat {
                what: format!("{object} (compression tag {t})"),
                found: t as u32,
                supported: TAG_ZSTD as u32,
                program: env!("CARGO_PKG_VERSION"),
            })
        }
    };
    if out.len() != expected_len {
        return Err(Error::corrupt(
            object,
            format!(
                "decompressed to {} bytes, expected {expected_len}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..20000), level in 1i32..6) {
            let c = compress(level, &data);
            prop_assert!(c.len() <= data.len() + 1);
            prop_assert_eq!(decompress(&c, data.len(), "t").unwrap(), data);
        }
    }

    proptest! {
        #[test]
        fn compress_into_matches(data in proptest::collection::vec(any::<u8>(), 0..20000), prefix in 0usize..30) {
            let mut c = zstd::bulk::Compressor::new(1).unwrap();
            let mut out = vec![7u8; prefix];
            compress_into(&mut c, &data, &mut out);
            prop_assert!(out[..prefix].iter().all(|&b| b == 7));
            prop_assert_eq!(decompress(&out[prefix..], data.len(), "t").unwrap(), data);
        }
    }

    #[test]
    fn text_compresses_and_unknown_tag_is_newer() {
        let text = b"journal entry 1001 debit 500.00 credit 500.00\n".repeat(100);
        let c = compress(3, &text);
        assert_eq!(c[0], TAG_ZSTD);
        assert!(c.len() < text.len() / 5);
        let mut bad = c.clone();
        bad[0] = 9;
        assert!(matches!(
            decompress(&bad, text.len(), "t"),
            Err(Error::NewerFormat { .. })
        ));
        assert!(decompress(&c, text.len() - 1, "t").is_err());
    }
}
