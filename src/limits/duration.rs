//! Durations as Prometheus writes them: `10m`, `30d`, `1h30m`, `500ms`, `0`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a Prometheus-style duration: one or more `<number><unit>` with units `y` (365d),
/// `w`, `d`, `h`, `m`, `s`, `ms`, largest first; or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    // Each unit may appear once, in decreasing order, as in Prometheus's model.Duration.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (rank, ms_per) = match &rest[..unit_len] {
            "y" => (0, 365 * 86_400_000),
            "w" => (1, 7 * 86_400_000),
            "d" => (2, 86_400_000),
            "h" => (3, 3_600_000),
            "m" => (4, 60_000),
            "s" => (5, 1_000),
            "ms" => (6, 1),
            "" => return Err(format!("invalid duration {s:?}: a number needs a unit")),
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d, w or y)"
                ))
            }
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(format!(
                "invalid duration {s:?}: units must go from largest to smallest, once each"
            ));
        }
        last_rank = rank;
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(ms_per)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 10m, 30d or 1h30m")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(Some).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        // A bare number is ambiguous (seconds? milliseconds?); only 0 is clear.
        if v == 0 {
            Ok(Some(Duration::ZERO))
        } else {
            Err(E::custom(format!(
                "duration {v} has no unit: write e.g. {v}s or {v}m"
            )))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("a duration cannot be negative")),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `deserialize_with` for an optional duration field.
pub(super) fn deserialize_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_prometheus_writes_them() {
        let ok = [
            ("0", 0),
            ("10m", 600_000),
            ("30d", 30 * 86_400_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1w", 7 * 86_400_000),
            ("1y", 365 * 86_400_000),
            ("1m30s250ms", 90_250),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "30m1h",
            "1m1m",
            "-1m",
            "99999999999999999999y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
