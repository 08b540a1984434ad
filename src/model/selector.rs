//! The PromQL series selector syntax used by `match[]`: `name{a="b", c=~"d.*"}`.

use thiserror::Error;

use super::Matcher;

/// A `match[]` that is not a valid series selector.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    /// Syntax error at a byte offset.
    #[error("invalid series selector at offset {offset}: {what}")]
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected or wrong.
        what: String,
    },
    /// A regex that does not compile.
    #[error(transparent)]
    Matcher(#[from] super::MatcherError),
    /// Every matcher matches the empty string, so it would select every series.
    #[error("match[] must contain at least one non-empty matcher")]
    AllEmpty,
}

/// Parses a series selector such as `up`, `{job="x"}` or `http_requests_total{code=~"5.."}`.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, SelectorError> {
    let _ = s;
    todo!()
}
