//! Prometheus 3's value-encoding escape of UTF-8 names (`U__` names), as
//! `model.UnescapeName(name, model.ValueEncodingEscaping)` in prometheus/common undoes it.
//! Prometheus's `/api/v1/label/<name>/values` takes a UTF-8 label name this way, so that a
//! name holding `/` or other URL-hostile characters fits in one path segment.
//!
//! The encoding: `U__`, then each character of the legacy set `[a-zA-Z0-9:]` as itself, `_`
//! as `__`, and any other character as `_<hex code point>_`: `U__service_2e_name` is
//! `service.name`. A name that is not such an encoding stays as it is.

use std::borrow::Cow;

/// `name` decoded if it is a `U__` value encoding, else `name` unchanged.
pub fn unescape_name(name: &str) -> Cow<'_, str> {
    let Some(rest) = name.strip_prefix("U__") else {
        return Cow::Borrowed(name);
    };
    decode(rest).map_or(Cow::Borrowed(name), Cow::Owned)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'_' {
            if !(c.is_ascii_alphanumeric() || c == b':') {
                return None;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'_') {
            out.push('_');
            i += 2;
            continue;
        }
        // `_<hex>_`: at most 6 hex digits (U+10FFFF).
        let end = i + 1 + b[i + 1..].iter().position(|&c| c == b'_')?;
        let hex = &s[i + 1..end];
        if hex.is_empty() || hex.len() > 6 {
            return None;
        }
        let v = u32::from_str_radix(hex, 16).ok()?;
        out.push(char::from_u32(v)?);
        i = end + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::unescape_name;

    #[test]
    fn value_encoded_names_decode_and_others_stay() {
        let table: &[(&str, &str)] = &[
            ("job", "job"),
            ("service.name", "service.name"),
            ("U__service_2e_name", "service.name"),
            ("U__http_2e_server_2e_duration", "http.server.duration"),
            ("U__a__b", "a_b"),
            ("U__job_20_name", "job name"),
            ("U___6771__4eac_", "東京"),
            ("U___1f680_", "🚀"),
            ("U__", ""),
            // Not an encoding: unchanged.
            ("U__a.b", "U__a.b"),
            ("U__a_2e", "U__a_2e"),
            ("U__a_zz_", "U__a_zz_"),
            ("U__a_d800_", "U__a_d800_"),
            ("U__a_1234567_", "U__a_1234567_"),
            ("U__a__", "a_"),
            ("U__a_", "U__a_"),
        ];
        for (input, want) in table {
            assert_eq!(unescape_name(input), *want, "{input:?}");
        }
    }
}
