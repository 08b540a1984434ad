//! Messages of the Cortex ingester gRPC service (`cortex.Ingester`, Cortex's
//! `pkg/ingester/client/ingester.proto`, and `cortexpb` from `pkg/cortexpb/cortex.proto`),
//! as far as weft serves it: Push, QueryStream, LabelNames, LabelValues and
//! MetricsForLabelMatchers. Field numbers and types are Cortex's (and Mimir's, which kept
//! them); the byte tables are in `docs/formats.md`.
//!
//! `cortexpb.WriteRequest` is not here: its fields 1 (`timeseries`) and 3 (`metadata`) are
//! remote write 1.0's `prometheus.WriteRequest`, so weft decodes it with its own 1.0 decoder
//! (`crate::proto::decode_write_request`) and ignores Cortex's `Source` (2) and
//! `skip_label_name_validation` (1000) as it ignores any unknown field.

use super::prompb::LabelMatcher;

/// A client's `Push` message already encoded: a `WriteRequest` (remote write 1.0's, or
/// Cortex's) as bytes, sent as they are by a prost codec. For clients that encode by hand
/// (to send -0.0 and NaN payloads exactly, or to pass on a request they received); it never
/// decodes anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedWriteRequest(pub Vec<u8>);

impl prost::Message for EncodedWriteRequest {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent: fields are skipped, not kept.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `cortexpb.WriteResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteResponse {}

/// `cortex.QueryRequest`. The matcher is `prometheus.LabelMatcher` on the wire (`type` 1
/// with EQUAL 0, NOT_EQUAL 1, REGEX_MATCH 2, REGEX_NO_MATCH 3; `name` 2; `value` 3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRequest {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

/// `cortex.QueryStreamResponse`: a batch of series with their chunks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryStreamResponse {
    #[prost(message, repeated, tag = "1")]
    pub chunkseries: Vec<TimeSeriesChunk>,
}

/// `cortex.TimeSeriesChunk`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesChunk {
    #[prost(string, tag = "1")]
    pub from_ingester_id: String,
    #[prost(string, tag = "2")]
    pub user_id: String,
    #[prost(message, repeated, tag = "3")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "4")]
    pub chunks: Vec<Chunk>,
}

/// `cortex.Chunk`. `encoding` is Cortex's chunk encoding number, not Prometheus's:
/// [`ENCODING_XOR`], [`ENCODING_HISTOGRAM`], [`ENCODING_FLOAT_HISTOGRAM`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(int32, tag = "3")]
    pub encoding: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// Cortex's `PrometheusXorChunk` (Prometheus's `EncXOR`, 1).
pub const ENCODING_XOR: i32 = 4;
/// Cortex's `PrometheusHistogramChunk` (Prometheus's `EncHistogram`, 2).
pub const ENCODING_HISTOGRAM: i32 = 5;
/// Mimir's `PrometheusFloatHistogramChunk` (Prometheus's `EncFloatHistogram`, 3).
pub const ENCODING_FLOAT_HISTOGRAM: i32 = 6;

/// Cortex's chunk encoding number for a remote-read chunk type (`prometheus.Chunk.Encoding`:
/// XOR 1, HISTOGRAM 2, FLOAT_HISTOGRAM 3); `None` for any other.
pub fn encoding_from_remote_read(t: i32) -> Option<i32> {
    match t {
        1 => Some(ENCODING_XOR),
        2 => Some(ENCODING_HISTOGRAM),
        3 => Some(ENCODING_FLOAT_HISTOGRAM),
        _ => None,
    }
}

/// `cortexpb.LabelPair`: name and value as bytes (UTF-8 in weft's answers).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct LabelPair {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `cortex.LabelMatchers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatchers {
    #[prost(message, repeated, tag = "1")]
    pub matchers: Vec<LabelMatcher>,
}

/// `cortex.LabelValuesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelValuesRequest {
    #[prost(string, tag = "1")]
    pub label_name: String,
    #[prost(int64, tag = "2")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "3")]
    pub end_timestamp_ms: i64,
    #[prost(message, optional, tag = "4")]
    pub matchers: Option<LabelMatchers>,
}

/// `cortex.LabelValuesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelValuesResponse {
    #[prost(string, repeated, tag = "1")]
    pub label_values: Vec<String>,
}

/// `cortex.LabelNamesRequest` (field 3, matchers, is Mimir's addition).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelNamesRequest {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, optional, tag = "3")]
    pub matchers: Option<LabelMatchers>,
}

/// `cortex.LabelNamesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelNamesResponse {
    #[prost(string, repeated, tag = "1")]
    pub label_names: Vec<String>,
}

/// `cortex.MetricsForLabelMatchersRequest`: the series matching any of the matcher sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricsForLabelMatchersRequest {
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub matchers_set: Vec<LabelMatchers>,
}

/// `cortex.MetricsForLabelMatchersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricsForLabelMatchersResponse {
    #[prost(message, repeated, tag = "1")]
    pub metric: Vec<Metric>,
}

/// `cortexpb.Metric`: one series' labels.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
}
