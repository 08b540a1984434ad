//! Text formats of the `weft chunk decode` and `weft chunk encode` subcommands: one sample
//! a line, `t_ms value`.
//!
//! **Invariant:** `chunk_encode_text(chunk_decode_text(c, true))` gives back the samples of
//! `c` bit for bit; without `bits` it does too except for NaN payloads, which print as
//! `NaN` (Prometheus's spelling) and parse back as Prometheus's NaN.

use crate::chunk::{ChunkError, XorAppender, XorIterator};
use std::fmt::Write as _;

/// Prometheus's `math.NaN()` bits, what `NaN` parses to.
const PROMETHEUS_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// Decodes `chunk` (the 2-byte count onwards) into one `t_ms value` line a sample.
///
/// Without `bits` the value is the shortest decimal that parses back to the same `f64`, or
/// `NaN`, `+Inf`, `-Inf`; with `bits` it is the 16 lowercase hex digits of its IEEE bits.
pub fn chunk_decode_text(chunk: &[u8], bits: bool) -> Result<String, ChunkError> {
    let mut out = String::new();
    for s in XorIterator::new(chunk)? {
        let (t, v) = s?;
        if bits {
            writeln!(out, "{t} {:016x}", v.to_bits())
        } else {
            writeln!(out, "{t} {}", format_value(v))
        }
        .expect("writing to a String cannot fail");
    }
    Ok(out)
}

/// Formats a value as Prometheus spells specials, otherwise as the shortest decimal that
/// round-trips (Rust's `Display`, switching to exponent notation for very large or small
/// magnitudes so that `1e300` does not print 301 digits).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v == 0.0 || (1e-5..1e16).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// Parses a value: a decimal float, `NaN`, `+Inf`, `-Inf` or `Inf` (any case), or `0x`
/// followed by exactly 16 hex digits of IEEE bits.
fn parse_value(s: &str) -> Result<f64, String> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?}: expected 0x and 16 hex digits"));
        }
        let bits = u64::from_str_radix(hex, 16).map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(f64::from_bits(bits));
    }
    match s.to_ascii_lowercase().as_str() {
        "nan" => return Ok(f64::from_bits(PROMETHEUS_NAN_BITS)),
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust's parser also takes "infinity" and "nan" spellings we have handled above; any
    // other text is rejected.
    s.parse::<f64>()
        .map_err(|e| format!("{s:?}: not a float ({e})"))
}

/// Encodes `t_ms value` lines with a fresh appender and returns the raw chunk bytes.
///
/// Blank lines are ignored. Errors name the 1-based line number: a line that is not two
/// fields, a bad timestamp or value, a timestamp not greater than the one before, or more
/// samples than a chunk can count.
pub fn chunk_encode_text(text: &str) -> Result<Vec<u8>, String> {
    let mut app = XorAppender::new();
    let mut prev_t: Option<i64> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut fields = line.split_whitespace();
        let (t, v) = match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => continue,
            (Some(t), Some(v), None) => (t, v),
            _ => {
                return Err(format!(
                    "line {line_no}: expected \"t_ms value\", got {line:?}"
                ))
            }
        };
        let t: i64 = t
            .parse()
            .map_err(|e| format!("line {line_no}: timestamp {t:?}: {e}"))?;
        let v = parse_value(v).map_err(|e| format!("line {line_no}: value {e}"))?;
        if let Some(p) = prev_t {
            if t <= p {
                return Err(format!(
                    "line {line_no}: timestamp {t} is not greater than the previous one, {p}"
                ));
            }
        }
        if app.num_samples() == usize::from(u16::MAX) {
            return Err(format!(
                "line {line_no}: a chunk holds at most {} samples",
                u16::MAX
            ));
        }
        app.append(t, v);
        prev_t = Some(t);
    }
    Ok(app.into_bytes())
}

#[cfg(test)]
#[path = "../tests/common/testdata.rs"]
mod testdata;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{decode_bits, encode};

    /// Encodes `text` and decodes the chunk back to `(t, bits)`.
    fn check_encode(text: &str, expected: &[(i64, u64)]) {
        let chunk = chunk_encode_text(text).unwrap();
        assert_eq!(decode_bits(&chunk).unwrap(), expected, "input {text:?}");
    }

    fn check_decode(samples: &[(i64, f64)], bits: bool, expected: &str) {
        let chunk = encode(samples.iter().copied());
        assert_eq!(chunk_decode_text(&chunk, bits).unwrap(), expected);
    }

    fn check_encode_err(text: &str, needle: &str) {
        let err = chunk_encode_text(text).unwrap_err();
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    }

    #[test]
    fn decode_prints_prometheus_specials_and_shortest_decimals() {
        check_decode(
            &[
                (1, 1.5),
                (2, f64::NAN),
                (3, f64::INFINITY),
                (4, f64::NEG_INFINITY),
                (5, -0.0),
                (6, 0.1),
                (7, 1e300),
                (8, 5e-324),
                (9, 100.0),
            ],
            false,
            "1 1.5\n2 NaN\n3 +Inf\n4 -Inf\n5 -0\n6 0.1\n7 1e300\n8 5e-324\n9 100\n",
        );
    }

    #[test]
    fn decode_with_bits_prints_16_lowercase_hex_digits() {
        check_decode(
            &[(-5, 1.0), (10, f64::from_bits(0x7ff0_0000_0000_0002))],
            true,
            "-5 3ff0000000000000\n10 7ff0000000000002\n",
        );
    }

    #[test]
    fn decode_reports_bad_chunks() {
        assert_eq!(
            chunk_decode_text(&[0], false),
            Err(ChunkError::TooShort { len: 1 })
        );
    }

    #[test]
    fn encode_parses_every_value_spelling() {
        check_encode(
            "1 1.5\n\n2 NaN\n3 +Inf\n4 -Inf\n5 Inf\n6 0x7ff0000000000002\n7 -0\n  8   1e3  \n",
            &[
                (1, 1.5f64.to_bits()),
                (2, PROMETHEUS_NAN_BITS),
                (3, f64::INFINITY.to_bits()),
                (4, f64::NEG_INFINITY.to_bits()),
                (5, f64::INFINITY.to_bits()),
                (6, 0x7ff0_0000_0000_0002),
                (7, (-0.0f64).to_bits()),
                (8, 1000f64.to_bits()),
            ],
        );
        check_encode("", &[]);
    }

    #[test]
    fn encode_rejects_bad_lines_naming_the_line() {
        check_encode_err("1 1\n1 2\n", "line 2: timestamp 1 is not greater");
        check_encode_err("5 1\n\n3 2\n", "line 3:");
        check_encode_err("1\n", "line 1: expected");
        check_encode_err("1 2 3\n", "line 1: expected");
        check_encode_err("x 2\n", "line 1: timestamp");
        check_encode_err("1 abc\n", "line 1: value");
        check_encode_err("1 0x7ff\n", "16 hex digits");
        check_encode_err("1 0x7ff000000000000g\n", "16 hex digits");
    }

    #[test]
    fn decimal_text_round_trips_every_non_nan_value() {
        let values = [
            0.1,
            -2.5e-8,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            123_456_789.123_456_79,
            1e16,
            9_999_999_999_999_998.0,
        ];
        let samples: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64, v))
            .collect();
        let chunk = encode(samples.iter().copied());
        let text = chunk_decode_text(&chunk, false).unwrap();
        assert_eq!(chunk_encode_text(&text).unwrap(), chunk);
    }

    #[test]
    fn testdata_round_trips_through_bits_text_byte_for_byte() {
        let Some(chunks) = testdata::load() else {
            return;
        };
        for c in chunks {
            let text = chunk_decode_text(&c.chunk, true).unwrap();
            let text: String = text
                .lines()
                .map(|l| {
                    let (t, v) = l.split_once(' ').unwrap();
                    format!("{t} 0x{v}\n")
                })
                .collect();
            assert_eq!(chunk_encode_text(&text).unwrap(), c.chunk, "{}", c.labels);
        }
    }
}
