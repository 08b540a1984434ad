//! Validated, sorted, interned label sets.

use super::SharedStr;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::hash::Hasher;

use rustc_hash::FxHasher;
use thiserror::Error;

/// One label: an interned name and value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name; matches `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub name: SharedStr,
    /// Label value; UTF-8, never empty.
    pub value: SharedStr,
}

/// A series' label set: sorted by name, names unique, no empty values, at least one label.
///
/// The derived `Ord` compares the sorted labels pairwise, name before value, and a set that
/// is a prefix of another sorts first: exactly Prometheus's `labels.Compare`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Box<[Label]>);

/// Limits applied when a label set is built from untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// Most label names a series may have.
    pub max_label_names_per_series: usize,
    /// Longest label name in bytes.
    pub max_label_name_length: usize,
    /// Longest label value in bytes.
    pub max_label_value_length: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        Self {
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
        }
    }
}

/// Why a label set was refused. Each message names the offending label.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelError {
    /// No labels left after empty values were dropped.
    #[error("series has no labels")]
    Empty,
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*` (or is empty).
    #[error("invalid label name {name:?}")]
    InvalidName {
        /// The name, lossily decoded.
        name: String,
    },
    /// A label value is not UTF-8.
    #[error("label {name:?} has a value that is not valid UTF-8")]
    InvalidValue {
        /// The label name.
        name: String,
    },
    /// The same name appears twice.
    #[error("duplicate label name {name:?}")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// More label names than allowed.
    #[error("series has {count} labels, more than the limit of {limit}")]
    TooManyLabels {
        /// Labels in the series.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A name longer than allowed.
    #[error("label name {name:?}... is {len} bytes, longer than the limit of {limit}")]
    NameTooLong {
        /// The first bytes of the name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A value longer than allowed.
    #[error("value of label {name:?} is {len} bytes, longer than the limit of {limit}")]
    ValueTooLong {
        /// The label name.
        name: String,
        /// The value's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The metric name (`__name__`) is missing.
    #[error("series has no metric name (__name__)")]
    MissingMetricName,
    /// The metric name is not a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    #[error("invalid metric name {name:?}")]
    InvalidMetricName {
        /// The metric name.
        name: String,
    },
}

/// One copy of each distinct string. Not thread-safe; the owner (a tenant's head) locks it.
///
/// The set uses foldhash with a per-process random seed rather than Fx: its keys are
/// attacker-chosen label values, and a keyed hash keeps a crafted series batch from
/// degrading every lookup into a scan. (SipHash, std's default, cost 7% of a restart.)
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<SharedStr, foldhash::fast::RandomState>,
}

impl Interner {
    /// Returns the shared copy of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> SharedStr {
        if let Some(shared) = self.set.get(s) {
            return shared.clone();
        }
        let shared = SharedStr::new(s);
        self.set.insert(shared.clone());
        shared
    }

    /// Distinct strings held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Longest name or value, in bytes, quoted inside an error message. Longer ones are cut,
/// so that a client cannot make the server echo megabytes back in an error body.
const MAX_ERROR_QUOTE_BYTES: usize = 100;

/// `bytes` lossily decoded and cut to [`MAX_ERROR_QUOTE_BYTES`], with `...` appended when cut.
fn quote_for_error(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_ERROR_QUOTE_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    // Cutting may split a UTF-8 sequence; the lossy decode turns the stub into U+FFFD.
    let mut s = String::from_utf8_lossy(&bytes[..MAX_ERROR_QUOTE_BYTES]).into_owned();
    s.push_str("...");
    s
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_valid_label_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_valid_metric_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_' || *first == b':')
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
        }
        None => false,
    }
}

/// Sorts raw pairs by name (byte order) unless they already are, which is the common case:
/// Prometheus has sent sorted labels since 2.42, so the check is one pass and no swaps.
///
/// Pairs with equal names keep no particular order; such a set is refused anyway.
pub fn sort_raw(pairs: &mut [(&[u8], &[u8])]) {
    if !pairs.windows(2).all(|w| w[0].0 <= w[1].0) {
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
}

/// Drops pairs with an empty value (Prometheus treats them as absent) and sorts the rest by
/// name: the form [`hash_raw`] and [`Labels::eq_raw`] are meant for.
pub fn sort_and_drop_empty(pairs: &mut Vec<(&[u8], &[u8])>) {
    pairs.retain(|p| !p.1.is_empty());
    sort_raw(pairs);
}

/// Feeds one label to a hasher; the single definition shared by [`hash_raw`] and
/// [`Labels::hash_key`], so that they cannot drift apart.
#[inline]
fn hash_pair(h: &mut FxHasher, name: &[u8], value: &[u8]) {
    // 0xff never occurs in UTF-8, so the separators make the encoding unambiguous:
    // ("a", "bc") and ("ab", "c") hash differently.
    h.write(name);
    h.write_u8(0xff);
    h.write(value);
    h.write_u8(0xff);
}

/// The hash of a label set given as raw pairs sorted by name; pairs with an empty value are
/// skipped. Equals [`Labels::hash_key`] of the set the pairs build.
///
/// This is FxHash: fast and deterministic, but not collision-resistant against a client that
/// crafts label sets. A caller keying a map by it must confirm hits with [`Labels::eq_raw`]
/// and should not let one bucket grow without bound.
pub fn hash_raw(pairs: &[(&[u8], &[u8])]) -> u64 {
    let mut h = FxHasher::default();
    for &(name, value) in pairs {
        if !value.is_empty() {
            hash_pair(&mut h, name, value);
        }
    }
    h.finish()
}

impl Labels {
    /// Builds a label set from raw (name, value) pairs straight off the wire.
    ///
    /// Drops pairs with an empty value, sorts by name if needed, then validates (names,
    /// UTF-8 values, duplicates, limits, a valid `__name__`) and interns every string.
    /// Nothing is interned unless the whole set is valid, so refused series leave no trace.
    pub fn from_raw_pairs(
        pairs: &mut [(&[u8], &[u8])],
        limits: &LabelLimits,
        interner: &mut Interner,
    ) -> Result<Labels, LabelError> {
        sort_raw(pairs);
        validate(pairs, limits)?;
        Ok(build(pairs, |s| interner.intern(s)))
    }

    /// [`Labels::from_raw_pairs`] with the caller's own sharing of strings: `share(name,
    /// value)` returns shared copies of one label's name and value (the head takes them from
    /// its postings index, which holds each distinct name and value once already, so it
    /// needs no interner of its own). Called only once the whole set is valid.
    pub fn from_raw_pairs_shared(
        pairs: &mut [(&[u8], &[u8])],
        limits: &LabelLimits,
        share: impl FnMut(&str, &str) -> (SharedStr, SharedStr),
    ) -> Result<Labels, LabelError> {
        sort_raw(pairs);
        validate(pairs, limits)?;
        Ok(build_pairs(pairs, share))
    }

    /// Builds a label set from trusted strings (tests, tools); validates the same way but
    /// without interning and without limits.
    pub fn from_strs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Labels, LabelError> {
        let mut raw: Vec<(&[u8], &[u8])> = pairs
            .into_iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        sort_raw(&mut raw);
        let unlimited = LabelLimits {
            max_label_names_per_series: usize::MAX,
            max_label_name_length: usize::MAX,
            max_label_value_length: usize::MAX,
        };
        validate(&raw, &unlimited)?;
        Ok(build(&raw, SharedStr::new))
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for a validated set; here for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0[i].value)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(crate::model::METRIC_NAME)
    }

    /// Whether these labels equal the (sorted, non-empty-valued) raw pairs byte for byte.
    ///
    /// Pairs with an empty value are skipped, so unfiltered sorted wire pairs work too.
    pub fn eq_raw(&self, pairs: &[(&[u8], &[u8])]) -> bool {
        let mut mine = self.0.iter();
        for &(name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            match mine.next() {
                Some(l) if l.name.as_bytes() == name && l.value.as_bytes() == value => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }

    /// The hash of this set; equal to [`hash_raw`] of the pairs it was built from.
    pub fn hash_key(&self) -> u64 {
        let mut h = FxHasher::default();
        for l in self.0.iter() {
            hash_pair(&mut h, l.name.as_bytes(), l.value.as_bytes());
        }
        h.finish()
    }

    /// Heap bytes this label set owns itself (not the interned strings).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<Label>()
    }
}

/// Checks sorted raw pairs (empty values are skipped) against every rule, in one pass and
/// without allocating unless there is an error to report.
fn validate(pairs: &[(&[u8], &[u8])], limits: &LabelLimits) -> Result<(), LabelError> {
    let count = pairs.iter().filter(|p| !p.1.is_empty()).count();
    if count == 0 {
        return Err(LabelError::Empty);
    }
    if count > limits.max_label_names_per_series {
        return Err(LabelError::TooManyLabels {
            count,
            limit: limits.max_label_names_per_series,
        });
    }
    let mut prev: Option<&[u8]> = None;
    let mut has_metric_name = false;
    for &(name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        // Length before syntax: a huge name is reported as too long, whatever it holds.
        if name.len() > limits.max_label_name_length {
            return Err(LabelError::NameTooLong {
                name: quote_for_error(name),
                len: name.len(),
                limit: limits.max_label_name_length,
            });
        }
        if !is_valid_label_name(name) {
            return Err(LabelError::InvalidName {
                name: quote_for_error(name),
            });
        }
        if prev == Some(name) {
            return Err(LabelError::DuplicateName {
                name: quote_for_error(name),
            });
        }
        prev = Some(name);
        if value.len() > limits.max_label_value_length {
            return Err(LabelError::ValueTooLong {
                name: quote_for_error(name),
                len: value.len(),
                limit: limits.max_label_value_length,
            });
        }
        if std::str::from_utf8(value).is_err() {
            return Err(LabelError::InvalidValue {
                name: quote_for_error(name),
            });
        }
        if name == crate::model::METRIC_NAME.as_bytes() {
            if !is_valid_metric_name(value) {
                return Err(LabelError::InvalidMetricName {
                    name: quote_for_error(value),
                });
            }
            has_metric_name = true;
        }
    }
    if !has_metric_name {
        return Err(LabelError::MissingMetricName);
    }
    Ok(())
}

/// Builds the set from pairs that [`validate`] accepted.
fn build(pairs: &[(&[u8], &[u8])], mut share: impl FnMut(&str) -> SharedStr) -> Labels {
    build_pairs(pairs, |n, v| (share(n), share(v)))
}

/// [`build`], sharing a name and its value together.
fn build_pairs(
    pairs: &[(&[u8], &[u8])],
    mut share: impl FnMut(&str, &str) -> (SharedStr, SharedStr),
) -> Labels {
    let mut out = Vec::with_capacity(pairs.len());
    for &(name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        // Validation proved both are UTF-8 (names are ASCII); the fallbacks are unreachable
        // but keep this function free of panics.
        let name = std::str::from_utf8(name).unwrap_or_default();
        let value = std::str::from_utf8(value).unwrap_or_default();
        let (name, value) = share(name, value);
        out.push(Label { name, value });
    }
    Labels(out.into_boxed_slice())
}

/// Writes `v` as a double-quoted PromQL string, escaping `\`, `"` and newline.
fn write_quoted(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut rest = v;
    while let Some(i) = rest.find(['"', '\\', '\n']) {
        f.write_str(&rest[..i])?;
        f.write_str(match rest.as_bytes()[i] {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    f.write_str(rest)?;
    f.write_char('"')
}

impl fmt::Display for Labels {
    /// Prometheus's text form: `name{a="b", c="d"}`; just `name` when it has no other
    /// labels, `{a="b"}` without a metric name (as `model.Metric.String` in
    /// prometheus/common does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(name) = name {
            f.write_str(name)?;
            if self.0.len() == 1 {
                return Ok(());
            }
        }
        f.write_char('{')?;
        let mut first = true;
        for l in self.0.iter() {
            if &*l.name == crate::model::METRIC_NAME {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(&l.name)?;
            f.write_char('=')?;
            write_quoted(f, &l.value)?;
        }
        f.write_char('}')
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one place that calls `from_raw_pairs`: the built set in Display form, or the
    /// error's Display text.
    fn check_with(limits: &LabelLimits, pairs: &[(&str, &str)], expected: &str) {
        let mut raw: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let mut interner = Interner::default();
        let got = match Labels::from_raw_pairs(&mut raw, limits, &mut interner) {
            Ok(l) => l.to_string(),
            Err(e) => {
                assert!(interner.is_empty(), "a refused set interned strings");
                format!("error: {e}")
            }
        };
        assert_eq!(got, expected, "input: {pairs:?}");
    }

    fn check(pairs: &[(&str, &str)], expected: &str) {
        check_with(&LabelLimits::default(), pairs, expected);
    }

    #[test]
    fn valid_label_sets_are_sorted_and_drop_empty_values() {
        check(&[("__name__", "up")], "up");
        check(&[("__name__", "up"), ("job", "x")], r#"up{job="x"}"#);
        check(
            &[("job", "x"), ("__name__", "up"), ("a", "1"), ("empty", "")],
            r#"up{a="1", job="x"}"#,
        );
        check(
            &[("__name__", "ns:rate_5m"), ("B", "2"), ("_a", "é")],
            r#"ns:rate_5m{B="2", _a="é"}"#,
        );
        check(
            &[("__name__", "x"), ("a", "q\"\\\n\tz")],
            r#"x{a="q\"\\\n	z"}"#,
        );
        // A duplicate whose one copy has an empty value is not a duplicate: that copy is absent.
        check(&[("__name__", "x"), ("a", ""), ("a", "1")], r#"x{a="1"}"#);
    }

    #[test]
    fn invalid_label_sets_name_the_offending_label() {
        check(&[], "error: series has no labels");
        check(
            &[("__name__", ""), ("a", "")],
            "error: series has no labels",
        );
        check(
            &[("job", "x")],
            "error: series has no metric name (__name__)",
        );
        check(&[("__name__", "1up")], "error: invalid metric name \"1up\"");
        check(&[("__name__", "a-b")], "error: invalid metric name \"a-b\"");
        check(
            &[("__name__", "x"), ("", "v")],
            "error: invalid label name \"\"",
        );
        check(
            &[("__name__", "x"), ("a:b", "v")],
            "error: invalid label name \"a:b\"",
        );
        check(
            &[("__name__", "x"), ("1a", "v")],
            "error: invalid label name \"1a\"",
        );
        check(
            &[("__name__", "x"), ("a.b", "v")],
            "error: invalid label name \"a.b\"",
        );
        check(
            &[("__name__", "x"), ("job", "a"), ("job", "b")],
            "error: duplicate label name \"job\"",
        );
        let limits = LabelLimits {
            max_label_names_per_series: 2,
            max_label_name_length: 8, // `__name__` fits exactly
            max_label_value_length: 3,
        };
        check_with(
            &limits,
            &[("__name__", "x"), ("a", "1"), ("b", "2")],
            "error: series has 3 labels, more than the limit of 2",
        );
        check_with(
            &limits,
            &[("__name__", "x"), ("abcdefghi", "1")],
            "error: label name \"abcdefghi\"... is 9 bytes, longer than the limit of 8",
        );
        check_with(
            &limits,
            &[("__name__", "x"), ("a", "1234")],
            "error: value of label \"a\" is 4 bytes, longer than the limit of 3",
        );
    }

    #[test]
    fn error_messages_quote_at_most_100_bytes() {
        let name = "a".repeat(5000);
        let limits = LabelLimits {
            max_label_name_length: 10_000,
            ..LabelLimits::default()
        };
        let expected = format!("error: duplicate label name \"{}...\"", "a".repeat(100));
        check_with(
            &limits,
            &[("__name__", "x"), (&name, "1"), (&name, "2")],
            &expected,
        );
        let metric = format!("-{}", "m".repeat(2000));
        let expected = format!("error: invalid metric name \"-{}...\"", "m".repeat(99));
        check(&[("__name__", &metric)], &expected);
    }

    #[test]
    fn non_utf8_value_is_refused_by_name() {
        let mut raw: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"x"), (b"a", b"\xff")];
        let err =
            Labels::from_raw_pairs(&mut raw, &LabelLimits::default(), &mut Interner::default())
                .unwrap_err();
        assert_eq!(err, LabelError::InvalidValue { name: "a".into() });
    }

    #[test]
    fn interner_shares_one_copy_per_distinct_string() {
        let mut interner = Interner::default();
        let limits = LabelLimits::default();
        let mut a: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"up"), (b"job", b"up")];
        let mut b: Vec<(&[u8], &[u8])> = vec![(b"__name__", b"up"), (b"job", b"x")];
        let la = Labels::from_raw_pairs(&mut a, &limits, &mut interner).unwrap();
        let lb = Labels::from_raw_pairs(&mut b, &limits, &mut interner).unwrap();
        assert_eq!(interner.len(), 4); // __name__, up, job, x
        let [a0, a1] = [&la.0[0], &la.0[1]];
        assert!(SharedStr::ptr_eq(&a0.value, &a1.value)); // "up" as value of both labels
        assert!(SharedStr::ptr_eq(&a0.name, &lb.0[0].name));
        assert!(SharedStr::ptr_eq(&a1.name, &lb.0[1].name));
    }

    #[test]
    fn get_finds_labels_by_name() {
        let l = Labels::from_strs([("__name__", "up"), ("job", "x"), ("a", "1")]).unwrap();
        assert_eq!(l.get("job"), Some("x"));
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("__name__"), Some("up"));
        assert_eq!(l.get("zzz"), None);
        assert_eq!(l.metric_name(), Some("up"));
    }

    #[test]
    fn display_without_metric_name_uses_braces_only() {
        // Labels without `__name__` cannot be built through validation; build one directly.
        let l = Labels(Box::new([Label {
            name: "a".into(),
            value: "b".into(),
        }]));
        assert_eq!(l.to_string(), r#"{a="b"}"#);
    }

    #[test]
    fn ordering_is_prometheus_labels_compare() {
        let l = |pairs: &[(&str, &str)]| Labels::from_strs(pairs.iter().copied()).unwrap();
        let a = l(&[("__name__", "x"), ("a", "1")]);
        let a2 = l(&[("__name__", "x"), ("a", "2")]);
        let ab = l(&[("__name__", "x"), ("a", "1"), ("b", "1")]);
        let b = l(&[("__name__", "x"), ("b", "0")]);
        // Names compare before values: a="9" < b="0".
        let a9 = l(&[("__name__", "x"), ("a", "9")]);
        let mut sets = vec![b.clone(), ab.clone(), a2.clone(), a.clone(), a9.clone()];
        sets.sort();
        assert_eq!(sets, vec![a, ab, a2, a9, b]); // a prefix sorts first
    }

    #[test]
    fn hash_key_equals_hash_raw_and_separates_boundaries() {
        let l = Labels::from_strs([("__name__", "x"), ("ab", "c")]).unwrap();
        let raw: [(&[u8], &[u8]); 3] = [(b"__name__", b"x"), (b"ab", b"c"), (b"z", b"")];
        assert_eq!(l.hash_key(), hash_raw(&raw));
        assert!(l.eq_raw(&raw));
        let shifted: [(&[u8], &[u8]); 2] = [(b"__name__", b"x"), (b"a", b"bc")];
        assert_ne!(hash_raw(&raw), hash_raw(&shifted));
        assert!(!l.eq_raw(&shifted));
        assert!(!l.eq_raw(&raw[..1]));
    }
}
