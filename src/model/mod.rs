//! Labels, matchers, tenant ids and the PromQL series-selector syntax.
//!
//! **Invariant:** `model` knows nothing about storage.

mod labels;
mod matcher;
mod selector;
mod tenant;

pub use labels::{Interner, Label, LabelError, LabelLimits, Labels};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use selector::{parse_selector, SelectorError};
pub use tenant::{TenantError, TenantId};

/// The label that names a metric.
pub const METRIC_NAME: &str = "__name__";

/// TEMPORARY stub until the model module lands: hash of sorted raw label pairs.
pub fn hash_raw(pairs: &[(&[u8], &[u8])]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    for (n, v) in pairs {
        h.write(n);
        h.write_u8(0xff);
        h.write(v);
        h.write_u8(0xff);
    }
    h.finish()
}
