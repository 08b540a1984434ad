//! prost structs for remote write 2.0 (`io.prometheus.write.v2`, Prometheus 3.0's
//! `prompb/io/prometheus/write/v2/types.proto`) and the full `Histogram` message, which has
//! the same shape and field numbers in 1.0's `prometheus.Histogram`.
//!
//! weft decodes requests with its own zero-copy decoder ([`super::decode_write_request_v2`]);
//! these types are for encoding (tests, benches, tools) and as the reference the decoder is
//! checked against.

#![allow(missing_docs)]

use crate::model::Span;
use crate::model::{CounterResetHint, FloatHistogram, Histogram as IntHistogram, HistogramValue};

/// `io.prometheus.write.v2.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Sample` (same as 1.0's `prometheus.Sample`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`; `type` numbers as [`super::MetricType`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// `BucketSpan` (1.0 and 2.0).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `Histogram` (1.0's `prometheus.Histogram`, 2.0's `io.prometheus.write.v2.Histogram`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// The oneofs of [`Histogram`].
pub mod histogram {
    /// `count`.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    /// `zero_count`.
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }
}

fn spans(s: &[Span]) -> Vec<BucketSpan> {
    s.iter()
        .map(|s| BucketSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

impl Histogram {
    /// The wire form of a histogram sample at `timestamp`, as Prometheus's
    /// `prompb.FromIntHistogram` / `FromFloatHistogram` write it (both oneofs set).
    pub fn from_model(timestamp: i64, h: &HistogramValue) -> Self {
        match h {
            HistogramValue::Int(h) => Histogram {
                count: Some(histogram::Count::CountInt(h.count)),
                sum: h.sum,
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count: Some(histogram::ZeroCount::ZeroCountInt(h.zero_count)),
                negative_spans: spans(&h.negative_spans),
                negative_deltas: h.negative_buckets.clone(),
                negative_counts: vec![],
                positive_spans: spans(&h.positive_spans),
                positive_deltas: h.positive_buckets.clone(),
                positive_counts: vec![],
                reset_hint: h.counter_reset_hint as i32,
                timestamp,
                custom_values: h.custom_values.clone(),
            },
            HistogramValue::Float(h) => Histogram {
                count: Some(histogram::Count::CountFloat(h.count)),
                sum: h.sum,
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                zero_count: Some(histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
                negative_spans: spans(&h.negative_spans),
                negative_deltas: vec![],
                negative_counts: h.negative_buckets.clone(),
                positive_spans: spans(&h.positive_spans),
                positive_deltas: vec![],
                positive_counts: h.positive_buckets.clone(),
                reset_hint: h.counter_reset_hint as i32,
                timestamp,
                custom_values: h.custom_values.clone(),
            },
        }
    }

    /// Back to the model (an unknown reset hint becomes `Unknown`): a float histogram if the
    /// `count` oneof holds a float, else an integer one.
    pub fn to_model(&self) -> (i64, HistogramValue) {
        let hint = CounterResetHint::from_wire(self.reset_hint).unwrap_or_default();
        let model_spans = |s: &[BucketSpan]| {
            s.iter()
                .map(|s| Span {
                    offset: s.offset,
                    length: s.length,
                })
                .collect::<Vec<_>>()
        };
        let v = if let Some(histogram::Count::CountFloat(count)) = self.count {
            HistogramValue::Float(FloatHistogram {
                counter_reset_hint: hint,
                schema: self.schema,
                zero_threshold: self.zero_threshold,
                zero_count: match self.zero_count {
                    Some(histogram::ZeroCount::ZeroCountFloat(z)) => z,
                    _ => 0.0,
                },
                count,
                sum: self.sum,
                positive_spans: model_spans(&self.positive_spans),
                negative_spans: model_spans(&self.negative_spans),
                positive_buckets: self.positive_counts.clone(),
                negative_buckets: self.negative_counts.clone(),
                custom_values: self.custom_values.clone(),
            })
        } else {
            HistogramValue::Int(IntHistogram {
                counter_reset_hint: hint,
                schema: self.schema,
                zero_threshold: self.zero_threshold,
                zero_count: match self.zero_count {
                    Some(histogram::ZeroCount::ZeroCountInt(z)) => z,
                    _ => 0,
                },
                count: match self.count {
                    Some(histogram::Count::CountInt(c)) => c,
                    _ => 0,
                },
                sum: self.sum,
                positive_spans: model_spans(&self.positive_spans),
                negative_spans: model_spans(&self.negative_spans),
                positive_buckets: self.positive_deltas.clone(),
                negative_buckets: self.negative_deltas.clone(),
                custom_values: self.custom_values.clone(),
            })
        };
        (self.timestamp, v)
    }
}
