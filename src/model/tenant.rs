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
    pub fn parse(s: &str) -> Result<Self, TenantError> {
        let _ = s;
        todo!()
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
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
