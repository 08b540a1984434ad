//! Tenant ids, from `X-Scope-OrgID`.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// A validated tenant id: safe to use as a path segment or object-key prefix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a tenant id was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantError {
    /// Empty.
    #[error("tenant id is empty")]
    Empty,
    /// Too long.
    #[error("tenant id is {len} bytes, longer than {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// `.` or `..`.
    #[error("tenant id {0:?} is not allowed")]
    Reserved(String),
    /// A character outside the allowed set.
    #[error("tenant id contains {ch:?} at byte {at}; allowed: letters, digits and !-_.*'()")]
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

impl TenantId {
    /// The tenant used when a request has no `X-Scope-OrgID`.
    pub const DEFAULT: &'static str = "anonymous";
    /// Longest accepted id, as in Cortex.
    pub const MAX_LEN: usize = 150;

    /// Validates an id.
    ///
    /// Cortex's rules (`tenant.ValidTenantID`): 1 to 150 bytes of `[a-zA-Z0-9]` and
    /// `!-_.*'()`, and neither `.` nor `..`. Every accepted id is therefore a safe single
    /// path segment and object-key prefix: no `/`, no `\`, no traversal.
    pub fn parse(s: &str) -> Result<Self, TenantError> {
        if s.is_empty() {
            return Err(TenantError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(TenantError::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some((at, ch)) = s.char_indices().find(|&(_, c)| !is_tenant_char(c)) {
            return Err(TenantError::BadChar { ch, at });
        }
        if s == "." || s == ".." {
            return Err(TenantError::Reserved(s.to_owned()));
        }
        Ok(TenantId(Arc::from(s)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` may appear in a tenant id.
fn is_tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

impl Default for TenantId {
    /// The [`TenantId::DEFAULT`] tenant, `anonymous`.
    fn default() -> Self {
        TenantId(Arc::from(Self::DEFAULT))
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one place that calls `parse`: the accepted id, or the error's Display text.
    fn check(input: &str, expected: &str) {
        let got = match TenantId::parse(input) {
            Ok(t) => t.as_str().to_owned(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn tenant_ids_follow_cortex_rules() {
        let long_ok = "a".repeat(150);
        let long_bad = "a".repeat(151);
        let table: &[(&str, &str)] = &[
            ("anonymous", "anonymous"),
            ("team-a", "team-a"),
            ("A.b_c!*'()9", "A.b_c!*'()9"),
            ("...", "..."),
            (".a", ".a"),
            (&long_ok, &long_ok),
            ("", "error: tenant id is empty"),
            (&long_bad, "error: tenant id is 151 bytes, longer than 150"),
            (".", "error: tenant id \".\" is not allowed"),
            ("..", "error: tenant id \"..\" is not allowed"),
            (
                "a/b",
                "error: tenant id contains '/' at byte 1; allowed: letters, digits and !-_.*'()",
            ),
            (
                "../../etc",
                "error: tenant id contains '/' at byte 2; allowed: letters, digits and !-_.*'()",
            ),
            (
                "a|b",
                "error: tenant id contains '|' at byte 1; allowed: letters, digits and !-_.*'()",
            ),
            (
                "a b",
                "error: tenant id contains ' ' at byte 1; allowed: letters, digits and !-_.*'()",
            ),
            (
                "a\\b",
                "error: tenant id contains '\\\\' at byte 1; allowed: letters, digits and !-_.*'()",
            ),
            (
                "é",
                "error: tenant id contains 'é' at byte 0; allowed: letters, digits and !-_.*'()",
            ),
            (
                "a\0",
                "error: tenant id contains '\\0' at byte 1; allowed: letters, digits and !-_.*'()",
            ),
        ];
        for (input, expected) in table {
            check(input, expected);
        }
        assert_eq!(TenantId::default().as_str(), TenantId::DEFAULT);
        assert_eq!(TenantId::parse(TenantId::DEFAULT), Ok(TenantId::default()));
    }
}
