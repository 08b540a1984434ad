//! Label matchers with Prometheus's semantics.

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

/// `name op value`. A series without the label is matched as if its value were "".
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value or the (unanchored) regex source.
    pub value: String,
    re: Option<regex::Regex>,
}

impl Matcher {
    /// Builds a matcher; regexes are anchored as `^(?:value)$`, as in Prometheus.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let _ = (op, name.into(), value.into());
        todo!()
    }

    /// Whether `value` (use "" for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        let _ = (value, &self.re);
        todo!()
    }

    /// Whether the matcher matches the empty string, i.e. series lacking the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}
