//! Labels, matchers, tenant ids and the PromQL series-selector syntax.
//!
//! **Invariant:** `model` knows nothing about storage.

mod escape;
mod histogram;
mod labels;
mod matcher;
mod selector;
mod shared_str;
mod tenant;

pub use escape::unescape_name;
pub use histogram::{
    spans_len, CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span,
    CUSTOM_BUCKETS_SCHEMA, MAX_EXPONENTIAL_SCHEMA, MIN_EXPONENTIAL_SCHEMA,
};
pub use labels::{
    hash_raw, sort_and_drop_empty, sort_raw, Interner, Label, LabelError, LabelLimits, Labels,
    NameValidationScheme,
};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use selector::{parse_selector, SelectorError};
pub use shared_str::SharedStr;
pub use tenant::{TenantError, TenantId};

/// The label that names a metric.
pub const METRIC_NAME: &str = "__name__";
