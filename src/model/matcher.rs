//! Label matchers with Prometheus's semantics.

use std::collections::HashSet;

use thiserror::Error;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`, fully anchored.
    Re,
    /// `!~`, fully anchored.
    Nre,
}

impl MatchOp {
    /// The operator as PromQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Neq => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }
}

/// A matcher's regex did not compile.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatcherError {
    /// A bad regular expression.
    #[error("invalid regular expression {re:?}: {why}")]
    BadRegex {
        /// The expression.
        re: String,
        /// What the regex engine said.
        why: String,
    },
}

/// Most bytes a compiled matcher regex may use. Regexes come from `match[]`, that is from
/// clients, so the limit is set here rather than left to the regex crate's default.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;
/// Most bytes the lazy DFA of one matcher regex may cache.
const REGEX_DFA_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// How a regex matcher decides, cheapest first.
#[derive(Debug, Clone)]
enum Pattern {
    /// `.*`: every string.
    Any,
    /// `.+`: every non-empty string.
    NonEmpty,
    /// `a|b|c` where every branch is a literal: set membership.
    Set(HashSet<String>),
    /// Anything else: the anchored regex.
    Regex(regex::Regex),
}

impl Pattern {
    fn compile(re: &str) -> Result<Pattern, MatcherError> {
        // Prometheus anchors as `^(?s:re)$`: `.` also matches a newline
        // (model/labels/regexp.go, NewFastRegexMatcher). That makes `.*` truly everything.
        match re {
            ".*" => return Ok(Pattern::Any),
            ".+" => return Ok(Pattern::NonEmpty),
            _ => {}
        }
        // A branch is a literal when escaping it changes nothing, i.e. it has no
        // metacharacter. `|` itself is escaped, so the split sees every branch.
        if re.split('|').all(|b| regex::escape(b) == b) {
            return Ok(Pattern::Set(re.split('|').map(str::to_owned).collect()));
        }
        let build = |src: &str| {
            regex::RegexBuilder::new(src)
                .size_limit(REGEX_SIZE_LIMIT_BYTES)
                .dfa_size_limit(REGEX_DFA_SIZE_LIMIT_BYTES)
                .build()
                .map_err(|e| MatcherError::BadRegex {
                    re: re.to_owned(),
                    why: e.to_string(),
                })
        };
        // Compile the expression on its own first, as Prometheus parses it before wrapping.
        // Otherwise `a)|(b` would slip through as the unanchored `^(?s:a)|(b)$`, and errors
        // would point into a wrapper the user never wrote. Matchers are built once per
        // request, so the second compilation is affordable.
        build(re)?;
        build(&format!("^(?s:{re})$")).map(Pattern::Regex)
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::NonEmpty => !v.is_empty(),
            Pattern::Set(set) => set.contains(v),
            Pattern::Regex(re) => re.is_match(v),
        }
    }
}

/// `name op value`. A series without the label is matched as if its value were "".
///
/// Regexes follow the Rust `regex` crate's syntax, which is close to Go's RE2 but not equal:
/// for example `\d` and `\w` are Unicode-aware here and ASCII-only in Go.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value or the (unanchored) regex source.
    pub value: String,
    /// `None` for `=` and `!=`.
    re: Option<Pattern>,
}

impl PartialEq for Matcher {
    /// Two matchers are equal when name, operator and value are; the compiled pattern
    /// follows from those.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// Builds a matcher; regexes are anchored as `^(?s:value)$`, as in Prometheus.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let value = value.into();
        let re = match op {
            MatchOp::Eq | MatchOp::Neq => None,
            MatchOp::Re | MatchOp::Nre => Some(Pattern::compile(&value)?),
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            re,
        })
    }

    /// Whether `value` (use "" for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => value == self.value,
            (MatchOp::Neq, _) => value != self.value,
            (MatchOp::Re, Some(p)) => p.matches(value),
            (MatchOp::Nre, Some(p)) => !p.matches(value),
            // `new` always compiles a pattern for the regex operators.
            (MatchOp::Re | MatchOp::Nre, None) => false,
        }
    }

    /// Whether the matcher matches the empty string, i.e. series lacking the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one place that builds matchers: `(op, regex or value, input, expected)`.
    fn check(op: MatchOp, value: &str, input: &str, expected: bool) {
        let m = Matcher::new(op, "l", value).unwrap();
        assert_eq!(
            m.matches(input),
            expected,
            "l{}{value:?} on {input:?}",
            op.as_str()
        );
        // Every fast path must agree with the plain anchored regex.
        if matches!(op, MatchOp::Re | MatchOp::Nre) {
            let re = regex::Regex::new(&format!("^(?s:{value})$")).unwrap();
            assert_eq!(
                re.is_match(input),
                expected == (op == MatchOp::Re),
                "{value:?}"
            );
        }
    }

    #[test]
    fn matcher_semantics_follow_prometheus() {
        use MatchOp::*;
        let table: &[(MatchOp, &str, &str, bool)] = &[
            (Eq, "a", "a", true),
            (Eq, "a", "", false),
            (Eq, "", "", true),
            (Neq, "a", "b", true),
            (Neq, "a", "a", false),
            (Neq, "a", "", true),
            (Re, "a.*", "abc", true),
            (Re, "b", "abc", false), // anchored: no substring match
            (Re, "a|b", "ab", false),
            (Re, ".*", "", true),
            (Re, ".*", "x\ny", true), // `.` matches a newline, as in Prometheus
            (Re, ".+", "", false),
            (Re, ".+", "\n", true),
            (Re, "foo|bar|", "", true),
            (Re, "foo|bar", "bar", true),
            (Re, "foo|bar", "baz", false),
            (Re, "", "", true),
            (Re, "", "a", false),
            (Re, "a.c", "a\nc", true),
            (Re, "(?i)FOO", "foo", true),
            (Re, "a-b|c", "a-b", true),
            (Nre, "foo|bar", "foo", false),
            (Nre, "foo|bar", "", true),
            (Nre, ".*", "x", false),
            (Nre, ".+", "", true),
            (Nre, "a+", "aaa", false),
        ];
        for &(op, value, input, expected) in table {
            check(op, value, input, expected);
        }
    }

    #[test]
    fn bad_regex_is_refused_with_its_source() {
        let err = Matcher::new(MatchOp::Re, "l", "a(").unwrap_err();
        let MatcherError::BadRegex { re, .. } = &err;
        assert_eq!(re, "a(");
        assert!(err
            .to_string()
            .starts_with("invalid regular expression \"a(\""));
    }

    #[test]
    fn regex_cannot_escape_its_anchors() {
        for re in ["a)|(b", "a)|(?:b", ")(", "a)"] {
            assert!(Matcher::new(MatchOp::Re, "l", re).is_err(), "{re:?}");
        }
    }

    #[test]
    fn huge_regex_is_refused_not_compiled() {
        let err = Matcher::new(MatchOp::Re, "l", "(a{1000}){1000}").unwrap_err();
        assert!(matches!(err, MatcherError::BadRegex { .. }));
    }
}
