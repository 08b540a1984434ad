//! Native histograms, as Prometheus's `model/histogram` package defines them: an integer
//! [`Histogram`] (bucket counts delta-encoded, as on the wire and in chunk encoding 2) and a
//! [`FloatHistogram`] (absolute float counts, chunk encoding 3).
//!
//! Exponential schemas are -4..=8; schema [`CUSTOM_BUCKETS_SCHEMA`] (-53) has custom bucket
//! bounds in `custom_values` and no zero bucket or negative buckets.

/// The schema of a histogram with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// Smallest exponential schema.
pub const MIN_EXPONENTIAL_SCHEMA: i32 = -4;

/// Largest exponential schema.
pub const MAX_EXPONENTIAL_SCHEMA: i32 = 8;

/// A run of consecutive buckets: `offset` buckets after the previous span's end (or after
/// index 0 for the first span), `length` buckets long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Gap to the previous span (the first span's offset is its starting bucket index).
    pub offset: i32,
    /// Number of consecutive buckets.
    pub length: u32,
}

/// What the sender says about a counter reset before this sample (`CounterResetHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CounterResetHint {
    /// Not known: the chunk encoder decides by comparing with the previous sample.
    #[default]
    Unknown = 0,
    /// A counter reset happened.
    Yes = 1,
    /// No counter reset happened.
    No = 2,
    /// A gauge histogram: counts go up and down, never a reset.
    Gauge = 3,
}

impl CounterResetHint {
    /// From the wire value (`prometheus.Histogram.ResetHint`); unknown values are `None`.
    pub fn from_wire(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::Yes,
            2 => Self::No,
            3 => Self::Gauge,
            _ => return None,
        })
    }
}

/// An integer native histogram. Bucket counts are delta-encoded: the first is absolute,
/// each further one is the difference to the previous bucket (across spans), as in
/// Prometheus's `histogram.Histogram`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Counter-reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution: -4..=8, or [`CUSTOM_BUCKETS_SCHEMA`].
    pub schema: i32,
    /// Width of the zero bucket (observations with |v| <= this).
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// All observations (including NaN ones, which are in no bucket).
    pub count: u64,
    /// Sum of all observations.
    pub sum: f64,
    /// Spans of the positive buckets.
    pub positive_spans: Vec<Span>,
    /// Spans of the negative buckets.
    pub negative_spans: Vec<Span>,
    /// Positive bucket counts, delta-encoded.
    pub positive_buckets: Vec<i64>,
    /// Negative bucket counts, delta-encoded.
    pub negative_buckets: Vec<i64>,
    /// Upper bounds of the custom buckets (schema -53 only).
    pub custom_values: Vec<f64>,
}

/// A float native histogram: absolute counts as floats, as Prometheus's
/// `histogram.FloatHistogram`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    /// Counter-reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution: -4..=8, or [`CUSTOM_BUCKETS_SCHEMA`].
    pub schema: i32,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// All observations.
    pub count: f64,
    /// Sum of all observations.
    pub sum: f64,
    /// Spans of the positive buckets.
    pub positive_spans: Vec<Span>,
    /// Spans of the negative buckets.
    pub negative_spans: Vec<Span>,
    /// Positive bucket counts, absolute.
    pub positive_buckets: Vec<f64>,
    /// Negative bucket counts, absolute.
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema -53 only).
    pub custom_values: Vec<f64>,
}

/// One histogram sample of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum HistogramValue {
    /// Integer counts (chunk encoding 2).
    Int(Histogram),
    /// Float counts (chunk encoding 3).
    Float(FloatHistogram),
}

impl Histogram {
    /// The same histogram with absolute float counts.
    pub fn to_float(&self) -> FloatHistogram {
        fn absolute(deltas: &[i64]) -> Vec<f64> {
            let mut acc = 0i64;
            deltas
                .iter()
                .map(|d| {
                    acc = acc.wrapping_add(*d);
                    acc as f64
                })
                .collect()
        }
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            negative_spans: self.negative_spans.clone(),
            positive_buckets: absolute(&self.positive_buckets),
            negative_buckets: absolute(&self.negative_buckets),
            custom_values: self.custom_values.clone(),
        }
    }
}

/// Number of buckets the spans cover (saturating: untrusted spans may claim absurd lengths).
pub fn spans_len(spans: &[Span]) -> u64 {
    spans
        .iter()
        .fold(0u64, |n, s| n.saturating_add(u64::from(s.length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_float_undoes_the_delta_encoding() {
        let h = Histogram {
            schema: 0,
            count: 6,
            sum: 10.5,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1, 2, -2],
            ..Default::default()
        };
        let f = h.to_float();
        assert_eq!(f.positive_buckets, vec![1.0, 3.0, 1.0]);
        assert_eq!(f.count, 6.0);
        assert_eq!(spans_len(&h.positive_spans), 3);
    }
}
