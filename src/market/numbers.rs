//! Numbers and text as CoinGecko writes them. Pure: no I/O.
//!
//! Numbers are read from their JSON text straight into `Decimal`, never through
//! `f64`, so what CoinGecko wrote (`3.15e-06`, `2.1e+15`, `21000000.0`) is what is stored.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

pub(super) fn json_string(raw: &RawValue) -> Result<String, String> {
    let text = serde_json::from_str::<String>(raw.get())
        .map_err(|e| format!("{} is not usable text ({e})", preview(raw.get())))?;
    if text.contains('\0') {
        return Err(format!(
            "{} holds a NUL character, which PostgreSQL text cannot store",
            preview(raw.get())
        ));
    }
    Ok(text)
}

/// Turns a JSON number's text into the `Decimal` it denotes, or says why it cannot:
/// never rounds, so a value a `Decimal` cannot hold exactly is an error, not an approximation.
pub fn exact_decimal(text: &str) -> Result<Decimal, String> {
    let not_held = |e: rust_decimal::Error| format!("{text} cannot be held exactly ({e})");
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(format!("{} is not a number", preview(text)));
    }
    match text.split_once(['e', 'E']) {
        None => Decimal::from_str_exact(text).map_err(not_held),
        Some((mantissa, _)) => {
            // from_scientific rounds an over-long mantissa; reject that first.
            Decimal::from_str_exact(mantissa).map_err(not_held)?;
            Decimal::from_scientific(text).map_err(not_held)
        }
    }
}

pub(super) fn preview(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The page text as PostgreSQL's `jsonb` takes it. JSON allows two escapes that `jsonb` refuses:
/// a NUL (`\u0000`) and a surrogate without its pair (`\ud800`). Each becomes U+FFFD, as the
/// parsed values refuse them too; every other byte stays as CoinGecko sent it.
pub fn jsonb_storable(body: &str) -> Cow<'_, str> {
    if !body.contains("\\u") {
        return Cow::Borrowed(body);
    }
    let mut storable = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find('\\') {
        storable.push_str(&rest[..at]);
        let escape = &rest[at..];
        // A backslash always starts an escape, so `\\u0000` (the text "\u0000") is kept.
        let (keep, length) = match utf16_escape(escape) {
            Some(0) | Some(0xDC00..=0xDFFF) => (false, 6),
            Some(0xD800..=0xDBFF) => match utf16_escape(&escape[6..]) {
                Some(0xDC00..=0xDFFF) => (true, 12),
                _ => (false, 6),
            },
            Some(_) => (true, 6),
            None => (
                true,
                1 + escape[1..].chars().next().map_or(0, char::len_utf8),
            ),
        };
        storable.push_str(if keep { &escape[..length] } else { "\\ufffd" });
        rest = &escape[length..];
    }
    storable.push_str(rest);
    Cow::Owned(storable)
}

/// The code unit of a `\uXXXX` escape at the start of `text`.
fn utf16_escape(text: &str) -> Option<u16> {
    let hex = text.strip_prefix("\\u")?.get(..4)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_escapes_jsonb_refuses_are_replaced_in_raw_pages() {
        let plain = r#"[{"id":"a","name":"\u00e9\ud83d\ude80"}]"#;
        assert_eq!(jsonb_storable(plain), plain);
        assert_eq!(
            jsonb_storable(r#"["a\u0000b","\\u0000","\"\u0000€","\ud800x","\udc00","\ud800"]"#),
            r#"["a\ufffdb","\\u0000","\"\ufffd€","\ufffdx","\ufffd","\ufffd"]"#
        );
    }

    #[test]
    fn ruby_style_numbers_keep_every_digit() {
        for (text, expected) in [
            ("3.15e-06", "0.00000315"),
            ("1.358e-05", "0.00001358"),
            ("5.6366e-11", "0.000000000056366"),
            ("2.1e+15", "2100000000000000"),
            ("1E+3", "1000"),
            ("21000000.0", "21000000.0"),
            ("0.1", "0.1"),
            ("58083", "58083"),
            ("-404.16", "-404.16"),
            (
                "1234567890.123456789012345678",
                "1234567890.123456789012345678",
            ),
        ] {
            let parsed = exact_decimal(text).unwrap();
            assert_eq!(parsed.to_string(), expected, "{text}");
        }
    }

    #[test]
    fn numbers_a_decimal_cannot_hold_are_errors_not_approximations() {
        for text in [
            "1e400",
            "123456789012345678901234567890123",
            "1.234567890123456789012345678901e-3",
            "\"12\"",
            "true",
        ] {
            assert!(exact_decimal(text).is_err(), "{text} accepted");
        }
    }
}
