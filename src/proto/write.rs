//! Zero-copy decoding of `prometheus.WriteRequest`.
//!
//! Labels are borrowed byte slices into the request body: a series weft already knows costs
//! no allocation. Nested messages are flattened into three vectors that callers reuse.

use thiserror::Error;

use crate::model::{
    CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span, CUSTOM_BUCKETS_SCHEMA,
    MAX_EXPONENTIAL_SCHEMA, MIN_EXPONENTIAL_SCHEMA,
};

/// A protobuf body that is not a valid message of the expected type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// Malformed protobuf, with the byte offset and the field path where it went wrong.
    #[error("invalid protobuf at byte {offset} ({path}): {what}")]
    Malformed {
        /// Byte offset in the decompressed body.
        offset: usize,
        /// Field path, e.g. `timeseries[3].labels[1]`.
        path: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A stream frame's checksum did not match.
    #[error("chunked frame CRC32C mismatch: header {expected:08x}, computed {actual:08x}")]
    FrameCrc {
        /// CRC in the frame header.
        expected: u32,
        /// CRC of the frame's bytes.
        actual: u32,
    },
    /// A stream frame longer than the limit.
    #[error("chunked frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// prost refused the message.
    #[error("invalid protobuf: {0}")]
    Prost(String),
    /// More entries of one kind than a request may carry (see [`MAX_HISTOGRAMS_PER_REQUEST`]).
    #[error("request has more than {limit} {what}; send smaller batches")]
    TooMany {
        /// What there were too many of.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

/// Most native histogram samples one request may carry (1.0 and 2.0 alike).
///
/// Why: a decoded histogram takes about 180 bytes of memory while an empty one is 2 bytes on
/// the wire, so without a bound a 32 MiB body could take gigabytes. Prometheus sends at most
/// `max_samples_per_send` (default 2000) samples and histograms per request; this leaves
/// ample room. Over the limit the request is refused whole with 413.
pub const MAX_HISTOGRAMS_PER_REQUEST: usize = 100_000;

/// One series of a write request: ranges into the batch's `labels`, `samples`,
/// `histograms` and `exemplars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteSeries {
    /// Start of this series' labels in [`WriteBatch::labels`].
    pub labels_start: u32,
    /// End (exclusive) of its labels.
    pub labels_end: u32,
    /// Start of its samples in [`WriteBatch::samples`].
    pub samples_start: u32,
    /// End (exclusive) of its samples.
    pub samples_end: u32,
    /// Start of its native histograms in [`WriteBatch::histograms`].
    pub histograms_start: u32,
    /// End (exclusive) of its histograms.
    pub histograms_end: u32,
    /// Start of its exemplars in [`WriteBatch::exemplars`].
    pub exemplars_start: u32,
    /// End (exclusive) of its exemplars.
    pub exemplars_end: u32,
}

impl WriteSeries {
    /// Number of float samples.
    pub fn num_samples(&self) -> u32 {
        self.samples_end - self.samples_start
    }

    /// Number of native histogram samples.
    pub fn num_histograms(&self) -> u32 {
        self.histograms_end - self.histograms_start
    }

    /// Number of exemplars.
    pub fn num_exemplars(&self) -> u32 {
        self.exemplars_end - self.exemplars_start
    }
}

/// One exemplar of a write request: its labels are a range of [`WriteBatch::exemplar_labels`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WriteExemplar {
    /// Start of its labels in [`WriteBatch::exemplar_labels`].
    pub labels_start: u32,
    /// End (exclusive) of its labels.
    pub labels_end: u32,
    /// The exemplar's value.
    pub value: f64,
    /// Its timestamp (ms); 0 when the sender gave none.
    pub timestamp: i64,
}

/// A metric family's type, as `prometheus.MetricMetadata.MetricType` and the 2.0
/// `Metadata.MetricType` number it (same numbers in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(u8)]
pub enum MetricType {
    /// Unknown / unspecified.
    #[default]
    Unknown = 0,
    /// Counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Histogram (classic or native).
    Histogram = 3,
    /// Gauge histogram.
    GaugeHistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info.
    Info = 6,
    /// State set.
    StateSet = 7,
}

impl MetricType {
    /// From the wire number; an unknown number is `None`.
    pub fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::Counter,
            2 => Self::Gauge,
            3 => Self::Histogram,
            4 => Self::GaugeHistogram,
            5 => Self::Summary,
            6 => Self::Info,
            7 => Self::StateSet,
            _ => return None,
        })
    }

    /// The name Prometheus's `/api/v1/metadata` uses (`counter`, `gaugehistogram`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::GaugeHistogram => "gaugehistogram",
            Self::Summary => "summary",
            Self::Info => "info",
            Self::StateSet => "stateset",
        }
    }
}

/// Metadata of one metric family: 1.0 sends it per family in `WriteRequest.metadata`, 2.0
/// per series (the family is then the series' `__name__`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteMetadata<'a> {
    /// The type.
    pub kind: MetricType,
    /// Metric family name.
    pub family: &'a [u8],
    /// Help text.
    pub help: &'a [u8],
    /// Unit.
    pub unit: &'a [u8],
}

/// A decoded write request (1.0 or 2.0). Label names and values borrow from the body.
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    /// Series in request order.
    pub series: Vec<WriteSeries>,
    /// All series' labels, as raw (name, value) bytes, in wire order.
    pub labels: Vec<(&'a [u8], &'a [u8])>,
    /// All series' samples as (timestamp ms, value).
    pub samples: Vec<(i64, f64)>,
    /// All series' native histogram samples as (timestamp ms, histogram).
    pub histograms: Vec<(i64, HistogramValue)>,
    /// All exemplars' labels.
    pub exemplar_labels: Vec<(&'a [u8], &'a [u8])>,
    /// All series' exemplars.
    pub exemplars: Vec<WriteExemplar>,
    /// Metadata entries in the request.
    pub metadata: Vec<WriteMetadata<'a>>,
}

impl<'a> WriteBatch<'a> {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.series.clear();
        self.labels.clear();
        self.samples.clear();
        self.histograms.clear();
        self.exemplar_labels.clear();
        self.exemplars.clear();
        self.metadata.clear();
    }

    /// Empties the batch and releases its borrow of the body, keeping the vectors'
    /// allocations, so that one batch can serve request after request:
    ///
    /// ```
    /// use weft::proto::{decode_write_request, WriteBatch};
    ///
    /// let mut batch: WriteBatch<'static> = WriteBatch::default();
    /// for body in [vec![], vec![0x0a, 0x00]] {
    ///     let mut b = std::mem::take(&mut batch).recycle();
    ///     decode_write_request(&body, &mut b).unwrap();
    ///     // ... use b ...
    ///     batch = b.recycle();
    /// }
    /// ```
    pub fn recycle<'b>(self) -> WriteBatch<'b> {
        let WriteBatch {
            mut series,
            labels,
            mut samples,
            mut histograms,
            exemplar_labels,
            mut exemplars,
            metadata,
        } = self;
        series.clear();
        samples.clear();
        histograms.clear();
        exemplars.clear();
        WriteBatch {
            series,
            labels: unborrow(labels),
            samples,
            histograms,
            exemplar_labels: unborrow(exemplar_labels),
            exemplars,
            metadata: unborrow(metadata),
        }
    }
}

/// Empties a vector of borrowed items and returns its allocation for items of another
/// lifetime. An empty vector holds no borrows. Collecting `IntoIter` into a vector of a type
/// with the same layout reuses the allocation (std's in-place collect), so this neither
/// allocates nor copies.
fn unborrow<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

/// Decodes a `WriteRequest` into `out` (cleared first). Unknown fields are skipped; every
/// length is checked against the remaining bytes, so nothing over-reads or over-allocates.
///
/// Wire layout (`prompb/remote.proto`, `types.proto`):
///
/// | message        | field | type                       | handling                        |
/// |----------------|-------|----------------------------|---------------------------------|
/// | WriteRequest   | 1     | repeated TimeSeries        | decoded                         |
/// | WriteRequest   | 3     | repeated MetricMetadata    | into `out.metadata`             |
/// | TimeSeries     | 1     | repeated Label             | borrowed into `out.labels`      |
/// | TimeSeries     | 2     | repeated Sample            | into `out.samples`              |
/// | TimeSeries     | 3     | repeated Exemplar          | into `out.exemplars`            |
/// | TimeSeries     | 4     | repeated Histogram         | into `out.histograms`           |
/// | Label          | 1, 2  | string name, value         | raw bytes, not UTF-8-checked    |
/// | Sample         | 1, 2  | double value, int64 ts     | proto3 defaults, last wins      |
/// | Exemplar       | 1-3   | labels, double, int64 ts   | labels into `out.exemplar_labels` |
/// | MetricMetadata | 1,2,4,5 | type, family, help, unit | borrowed; unknown type = Unknown |
///
/// A `Histogram` (the same message in 2.0, see [`decode_write_request_v2`]) is decoded
/// thus: integer fields (`count_int`, `zero_count_int`, `*_deltas`) make a
/// [`HistogramValue::Int`], float fields (`count_float`, `zero_count_float`, `*_counts`) a
/// [`HistogramValue::Float`]; both in one histogram is an error, none is an empty integer
/// histogram (as Prometheus's `IsFloatHistogram`). Spans must cover exactly as many buckets
/// as there are counts, the schema must be -4..=8 or -53, `custom_values` only with -53
/// (which has no negative buckets), and the reset hint must be one of 0..=3.
///
/// Any other field is skipped by wire type; groups (wire types 3 and 4) are refused. On error
/// `out` holds whatever was decoded before the error and must not be used.
///
/// [`decode_write_request_v2`]: super::decode_write_request_v2
pub fn decode_write_request<'a>(
    body: &'a [u8],
    out: &mut WriteBatch<'a>,
) -> Result<(), ProtoError> {
    out.clear();
    decode_request(body, out).map_err(|f| (*f).into_error("WriteRequest"))
}

// Wire types, from the protobuf encoding spec.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// One step of an error's field path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg {
    /// A singular field: `value`.
    Named(&'static str),
    /// An element of a repeated field: `labels[1]`.
    Indexed(&'static str, u32),
    /// A field this decoder does not know, by number: `#7`.
    Unknown(u32),
}

/// Deepest error path: `timeseries[i].histograms[j].positive_spans[k].offset`.
const PATH_DEPTH: usize = 4;

/// An error on its way up: offset and cause are fixed where it happens, and each message
/// level adds its step of the path while the error unwinds. Nothing on the success path
/// pays for the path.
#[derive(Debug)]
pub(super) struct Fail {
    offset: usize,
    what: &'static str,
    /// Outermost first; `None` where the error happened above that depth.
    path: [Option<Seg>; PATH_DEPTH],
    /// Set instead of a malformed-message error when a count limit was hit.
    too_many: Option<(&'static str, usize)>,
}

pub(super) type Res<T> = Result<T, Box<Fail>>;

impl Fail {
    /// Records the path step at `depth` (0 = inside the request).
    #[cold]
    pub(super) fn at(mut self: Box<Self>, depth: usize, seg: Seg) -> Box<Self> {
        self.path[depth] = Some(seg);
        self
    }

    /// The public error; `root` names the request message for errors at its top level.
    #[cold]
    pub(super) fn into_error(self, root: &str) -> ProtoError {
        use std::fmt::Write as _;
        if let Some((what, limit)) = self.too_many {
            return ProtoError::TooMany { what, limit };
        }
        let mut path = String::new();
        for seg in self.path.iter().flatten() {
            if !path.is_empty() {
                path.push('.');
            }
            // Writing to a String cannot fail.
            let _ = match *seg {
                Seg::Named(name) => write!(path, "{name}"),
                Seg::Indexed(name, i) => write!(path, "{name}[{i}]"),
                Seg::Unknown(field) => write!(path, "#{field}"),
            };
        }
        if path.is_empty() {
            path.push_str(root);
        }
        ProtoError::Malformed {
            offset: self.offset,
            path,
            what: self.what,
        }
    }
}

#[cold]
#[inline(never)]
pub(super) fn fail(offset: usize, what: &'static str) -> Box<Fail> {
    Box::new(Fail {
        offset,
        what,
        path: [None; PATH_DEPTH],
        too_many: None,
    })
}

#[cold]
#[inline(never)]
fn too_many(what: &'static str, limit: usize) -> Box<Fail> {
    let mut f = fail(0, "too many entries");
    f.too_many = Some((what, limit));
    f
}

/// A cursor over one message's bytes. `base` is the offset of `buf` in the request body, so
/// errors report absolute offsets.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    pub(super) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    #[inline(always)]
    pub(super) fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[inline(always)]
    pub(super) fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline(always)]
    pub(super) fn varint(&mut self) -> Res<u64> {
        // Nearly every tag and length on the hot path fits in one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Res<u64> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(fail(self.base + start, "truncated varint"));
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only; anything more overflows 64 bits.
            if i == 9 && b > 1 {
                return Err(fail(self.base + start, "varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(fail(self.base + start, "varint longer than 10 bytes"))
    }

    /// Reads a `uint32` varint; a larger value is an error (protobuf would truncate it,
    /// which for a symbol reference would silently pick another string).
    pub(super) fn varint_u32(&mut self) -> Res<u32> {
        let at = self.offset();
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| fail(at, "uint32 value out of range"))
    }

    /// Reads a `sint32` (zigzag) varint.
    fn varint_sint32(&mut self) -> Res<i32> {
        let at = self.offset();
        let v = self.varint()?;
        let v = u32::try_from(v).map_err(|_| fail(at, "sint32 value out of range"))?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Reads a field key: (field number, wire type).
    #[inline(always)]
    pub(super) fn key(&mut self) -> Res<(u32, u8)> {
        let start = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(fail(self.base + start, "invalid field number"));
        }
        Ok((field as u32, (key & 7) as u8))
    }

    /// Reads a length prefix and returns the bytes it covers, with their body offset.
    #[inline(always)]
    pub(super) fn bytes(&mut self) -> Res<(&'a [u8], usize)> {
        let start = self.pos;
        let len = self.varint()?;
        let remaining = self.buf.len() - self.pos;
        if len > remaining as u64 {
            return Err(fail(
                self.base + start,
                "length exceeds the remaining bytes",
            ));
        }
        let at = self.pos;
        self.pos += len as usize;
        Ok((&self.buf[at..self.pos], self.base + at))
    }

    #[inline(always)]
    pub(super) fn fixed64(&mut self) -> Res<u64> {
        match self.buf.get(self.pos..self.pos + 8) {
            Some(b) => {
                self.pos += 8;
                Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            None => Err(fail(self.offset(), "truncated fixed64")),
        }
    }

    pub(super) fn skip(&mut self, wire_type: u8) -> Res<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => {
                if self.buf.len() - self.pos < 4 {
                    return Err(fail(self.offset(), "truncated fixed32"));
                }
                self.pos += 4;
                Ok(())
            }
            3 | 4 => Err(fail(
                self.offset(),
                "groups (wire types 3 and 4) are not supported",
            )),
            _ => Err(fail(self.offset(), "invalid wire type")),
        }
    }

    /// Checks a known field's wire type; `key_at` is the offset of its key.
    #[inline(always)]
    pub(super) fn expect(&self, key_at: usize, wire_type: u8, want: u8) -> Res<()> {
        if wire_type == want {
            return Ok(());
        }
        Err(fail(
            self.base + key_at,
            match want {
                VARINT => "wire type mismatch: expected varint",
                FIXED64 => "wire type mismatch: expected fixed64",
                LEN => "wire type mismatch: expected length-delimited",
                _ => "wire type mismatch",
            },
        ))
    }
}

/// `u32` index into a batch vector. The vectors hold at most one entry per two body bytes,
/// so only a body over 8 GiB could overflow; refuse rather than wrap.
#[inline(always)]
pub(super) fn index(len: usize, offset: usize) -> Res<u32> {
    u32::try_from(len).map_err(|_| fail(offset, "request has more than u32::MAX entries"))
}

fn decode_request<'a>(body: &'a [u8], out: &mut WriteBatch<'a>) -> Res<()> {
    let mut r = Reader::new(body, 0);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let i = index(out.series.len(), key_at)?;
                let seg = Seg::Indexed("timeseries", i);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(0, seg))?;
                let (msg, at) = r.bytes().map_err(|f| f.at(0, seg))?;
                decode_series(msg, at, out).map_err(|f| f.at(0, seg))?;
            }
            3 => {
                let seg = Seg::Indexed("metadata", index(out.metadata.len(), key_at)?);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(0, seg))?;
                let (msg, at) = r.bytes().map_err(|f| f.at(0, seg))?;
                let m = decode_metadata(msg, at).map_err(|f| f.at(0, seg))?;
                out.metadata.push(m);
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(0, Seg::Unknown(field)))?,
        }
    }
    Ok(())
}

fn decode_series<'a>(msg: &'a [u8], base: usize, out: &mut WriteBatch<'a>) -> Res<()> {
    let mut r = Reader::new(msg, base);
    let labels_start = index(out.labels.len(), base)?;
    let samples_start = index(out.samples.len(), base)?;
    let histograms_start = index(out.histograms.len(), base)?;
    let exemplars_start = index(out.exemplars.len(), base)?;
    while r.has_more() {
        // Fast path: a label shorter than 128 bytes (key 0x0a, one-byte length), which is
        // nearly every field of nearly every series. The general match below handles the rest.
        if let [0x0a, len, ..] = r.buf[r.pos..] {
            let len = usize::from(len);
            let at = r.pos + 2;
            if len < 0x80 {
                if let Some(label) = r.buf.get(at..at + len) {
                    let seg = Seg::Indexed(
                        "labels",
                        (out.labels.len() as u32).wrapping_sub(labels_start),
                    );
                    let pair = decode_label(label, base + at, 2).map_err(|f| f.at(1, seg))?;
                    out.labels.push(pair);
                    r.pos = at + len;
                    continue;
                }
            }
        }
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Indexed(
                    "labels",
                    (out.labels.len() as u32).wrapping_sub(labels_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (label, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                let pair = decode_label(label, at, 2).map_err(|f| f.at(1, seg))?;
                out.labels.push(pair);
            }
            2 => {
                let seg = Seg::Indexed(
                    "samples",
                    (out.samples.len() as u32).wrapping_sub(samples_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (sample, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                let sample = decode_sample(sample, at).map_err(|f| f.at(1, seg))?;
                out.samples.push(sample);
            }
            3 => {
                let seg = Seg::Indexed(
                    "exemplars",
                    (out.exemplars.len() as u32).wrapping_sub(exemplars_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                let e =
                    decode_exemplar(m, at, &mut out.exemplar_labels).map_err(|f| f.at(1, seg))?;
                out.exemplars.push(e);
            }
            4 => {
                let seg = Seg::Indexed(
                    "histograms",
                    (out.histograms.len() as u32).wrapping_sub(histograms_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                push_histogram(m, at, &mut out.histograms).map_err(|f| f.at(1, seg))?;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(1, Seg::Unknown(field)))?,
        }
    }
    out.series.push(WriteSeries {
        labels_start,
        labels_end: index(out.labels.len(), r.offset())?,
        samples_start,
        samples_end: index(out.samples.len(), r.offset())?,
        histograms_start,
        histograms_end: index(out.histograms.len(), r.offset())?,
        exemplars_start,
        exemplars_end: index(out.exemplars.len(), r.offset())?,
    });
    Ok(())
}

/// Decodes a `Label` whose fields are at `depth` of the error path.
#[inline(always)]
fn decode_label(msg: &[u8], base: usize, depth: usize) -> Res<(&[u8], &[u8])> {
    // Fast path: name then value, each shorter than 128 bytes, nothing else. Every encoder
    // writes a label with a non-empty value this way; anything else takes the general loop,
    // which accepts exactly the same messages (plus reordered, repeated and unknown fields).
    if let [0x0a, name_len, rest @ ..] = msg {
        let name_len = usize::from(*name_len);
        if name_len < 0x80 {
            if let Some((name, [0x12, value_len, value @ ..])) = rest.split_at_checked(name_len) {
                if *value_len < 0x80 && usize::from(*value_len) == value.len() {
                    return Ok((name, value));
                }
            }
        }
    }
    decode_label_fields(msg, base, depth)
}

#[inline(never)]
fn decode_label_fields(msg: &[u8], base: usize, depth: usize) -> Res<(&[u8], &[u8])> {
    let mut r = Reader::new(msg, base);
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("name");
                r.expect(key_at, wire_type, LEN)
                    .map_err(|f| f.at(depth, seg))?;
                name = r.bytes().map_err(|f| f.at(depth, seg))?.0;
            }
            2 => {
                let seg = Seg::Named("value");
                r.expect(key_at, wire_type, LEN)
                    .map_err(|f| f.at(depth, seg))?;
                value = r.bytes().map_err(|f| f.at(depth, seg))?.0;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(depth, Seg::Unknown(field)))?,
        }
    }
    Ok((name, value))
}

/// Decodes a `Sample` (the same message in 1.0 and 2.0).
#[inline(always)]
pub(super) fn decode_sample(msg: &[u8], base: usize) -> Res<(i64, f64)> {
    // Fast path: value then a one-to-nine-byte timestamp, as encoders write a sample with a
    // non-zero value and a positive timestamp.
    if let [0x09, v0, v1, v2, v3, v4, v5, v6, v7, 0x10, ts @ ..] = msg {
        if let [.., last] = ts {
            if ts.len() < 10 && *last < 0x80 && ts[..ts.len() - 1].iter().all(|b| b & 0x80 != 0) {
                let mut t = 0u64;
                for (i, b) in ts.iter().enumerate() {
                    t |= u64::from(b & 0x7f) << (7 * i);
                }
                let value =
                    f64::from_bits(u64::from_le_bytes([*v0, *v1, *v2, *v3, *v4, *v5, *v6, *v7]));
                return Ok((t as i64, value));
            }
        }
    }
    decode_sample_fields(msg, base)
}

#[inline(never)]
fn decode_sample_fields(msg: &[u8], base: usize) -> Res<(i64, f64)> {
    let mut r = Reader::new(msg, base);
    let (mut timestamp, mut value) = (0i64, 0u64);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("value");
                r.expect(key_at, wire_type, FIXED64)
                    .map_err(|f| f.at(2, seg))?;
                value = r.fixed64().map_err(|f| f.at(2, seg))?;
            }
            2 => {
                let seg = Seg::Named("timestamp");
                r.expect(key_at, wire_type, VARINT)
                    .map_err(|f| f.at(2, seg))?;
                // int64 is two's complement in a varint (not zigzag, which is sint64).
                timestamp = r.varint().map_err(|f| f.at(2, seg))? as i64;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(2, Seg::Unknown(field)))?,
        }
    }
    Ok((timestamp, f64::from_bits(value)))
}

/// Decodes a 1.0 `Exemplar`; its labels go to `labels`.
fn decode_exemplar<'a>(
    msg: &'a [u8],
    base: usize,
    labels: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Res<WriteExemplar> {
    let mut r = Reader::new(msg, base);
    let labels_start = index(labels.len(), base)?;
    let (mut value, mut timestamp) = (0u64, 0i64);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Indexed("labels", (labels.len() as u32).wrapping_sub(labels_start));
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(2, seg))?;
                let (label, at) = r.bytes().map_err(|f| f.at(2, seg))?;
                labels.push(decode_label(label, at, 3).map_err(|f| f.at(2, seg))?);
            }
            2 => {
                let seg = Seg::Named("value");
                r.expect(key_at, wire_type, FIXED64)
                    .map_err(|f| f.at(2, seg))?;
                value = r.fixed64().map_err(|f| f.at(2, seg))?;
            }
            3 => {
                let seg = Seg::Named("timestamp");
                r.expect(key_at, wire_type, VARINT)
                    .map_err(|f| f.at(2, seg))?;
                timestamp = r.varint().map_err(|f| f.at(2, seg))? as i64;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(2, Seg::Unknown(field)))?,
        }
    }
    Ok(WriteExemplar {
        labels_start,
        labels_end: index(labels.len(), r.offset())?,
        value: f64::from_bits(value),
        timestamp,
    })
}

/// Decodes a 1.0 `MetricMetadata`. An unknown type number is kept as `Unknown` (a newer
/// sender's type is still metadata worth having).
fn decode_metadata(msg: &[u8], base: usize) -> Res<WriteMetadata<'_>> {
    let mut r = Reader::new(msg, base);
    let mut m = WriteMetadata::default();
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        let (seg, want) = match field {
            1 => (Seg::Named("type"), VARINT),
            2 => (Seg::Named("metric_family_name"), LEN),
            4 => (Seg::Named("help"), LEN),
            5 => (Seg::Named("unit"), LEN),
            _ => {
                r.skip(wire_type)
                    .map_err(|f| f.at(1, Seg::Unknown(field)))?;
                continue;
            }
        };
        r.expect(key_at, wire_type, want)
            .map_err(|f| f.at(1, seg))?;
        if field == 1 {
            let v = r.varint().map_err(|f| f.at(1, seg))?;
            m.kind = MetricType::from_wire(v).unwrap_or_default();
            continue;
        }
        let (bytes, _) = r.bytes().map_err(|f| f.at(1, seg))?;
        match field {
            2 => m.family = bytes,
            4 => m.help = bytes,
            _ => m.unit = bytes,
        }
    }
    Ok(m)
}

/// Decodes a `Histogram` (same message in 1.0 and 2.0) onto `out`, refusing more than
/// [`MAX_HISTOGRAMS_PER_REQUEST`] in all. Its fields are at depth 2 of the error path.
pub(super) fn push_histogram(
    msg: &[u8],
    base: usize,
    out: &mut Vec<(i64, HistogramValue)>,
) -> Res<()> {
    if out.len() >= MAX_HISTOGRAMS_PER_REQUEST {
        return Err(too_many(
            "native histogram samples",
            MAX_HISTOGRAMS_PER_REQUEST,
        ));
    }
    out.push(decode_histogram(msg, base)?);
    Ok(())
}

/// Reads a repeated scalar field, packed (`LEN`) or not (`scalar`), calling `each` per value.
fn repeated<'a>(
    r: &mut Reader<'a>,
    wire_type: u8,
    scalar: u8,
    mut each: impl FnMut(&mut Reader<'a>) -> Res<()>,
) -> Res<()> {
    if wire_type == LEN {
        let (packed, at) = r.bytes()?;
        let mut p = Reader::new(packed, at);
        while p.has_more() {
            each(&mut p)?;
        }
        return Ok(());
    }
    if wire_type != scalar {
        return Err(fail(r.offset(), "wire type mismatch for a repeated field"));
    }
    each(r)
}

fn decode_span(msg: &[u8], base: usize) -> Res<Span> {
    let mut r = Reader::new(msg, base);
    let mut span = Span::default();
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("offset");
                r.expect(key_at, wire_type, VARINT)
                    .map_err(|f| f.at(3, seg))?;
                span.offset = r.varint_sint32().map_err(|f| f.at(3, seg))?;
            }
            2 => {
                let seg = Seg::Named("length");
                r.expect(key_at, wire_type, VARINT)
                    .map_err(|f| f.at(3, seg))?;
                span.length = r.varint_u32().map_err(|f| f.at(3, seg))?;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(3, Seg::Unknown(field)))?,
        }
    }
    Ok(span)
}

/// Which representation a histogram's fields have asked for so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unset,
    Int,
    Float,
}

fn decode_histogram(msg: &[u8], base: usize) -> Res<(i64, HistogramValue)> {
    let mut r = Reader::new(msg, base);
    let mut kind = Kind::Unset;
    let (mut count_int, mut count_float) = (0u64, 0f64);
    let (mut zero_int, mut zero_float) = (0u64, 0f64);
    let (mut sum, mut zero_threshold) = (0f64, 0f64);
    let (mut schema, mut hint, mut timestamp) = (0i32, 0u64, 0i64);
    let (mut neg_spans, mut pos_spans) = (Vec::new(), Vec::new());
    let (mut neg_deltas, mut pos_deltas) = (Vec::<i64>::new(), Vec::<i64>::new());
    let (mut neg_counts, mut pos_counts) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut custom_values = Vec::<f64>::new();
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        let name = match field {
            1 => "count_int",
            2 => "count_float",
            3 => "sum",
            4 => "schema",
            5 => "zero_threshold",
            6 => "zero_count_int",
            7 => "zero_count_float",
            8 => "negative_spans",
            9 => "negative_deltas",
            10 => "negative_counts",
            11 => "positive_spans",
            12 => "positive_deltas",
            13 => "positive_counts",
            14 => "reset_hint",
            15 => "timestamp",
            16 => "custom_values",
            _ => {
                r.skip(wire_type)
                    .map_err(|f| f.at(2, Seg::Unknown(field)))?;
                continue;
            }
        };
        let seg = match field {
            8 => Seg::Indexed("negative_spans", neg_spans.len() as u32),
            11 => Seg::Indexed("positive_spans", pos_spans.len() as u32),
            _ => Seg::Named(name),
        };
        // The oneofs decide the representation; a field of the other one is a mix.
        let this = match field {
            1 | 6 | 9 | 12 => Kind::Int,
            2 | 7 | 10 | 13 => Kind::Float,
            _ => Kind::Unset,
        };
        if this != Kind::Unset {
            if kind != Kind::Unset && kind != this {
                return Err(fail(
                    base + key_at,
                    "histogram mixes integer and float count fields",
                )
                .at(2, seg));
            }
            kind = this;
        }
        let step = |r: &mut Reader<'_>| -> Res<()> {
            match field {
                1 | 6 | 14 | 15 => r.expect(key_at, wire_type, VARINT),
                2 | 3 | 5 | 7 => r.expect(key_at, wire_type, FIXED64),
                4 => r.expect(key_at, wire_type, VARINT),
                _ => r.expect(key_at, wire_type, LEN),
            }
        };
        let res: Res<()> = (|| {
            match field {
                1 => {
                    step(&mut r)?;
                    count_int = r.varint()?;
                }
                2 => {
                    step(&mut r)?;
                    count_float = f64::from_bits(r.fixed64()?);
                }
                3 => {
                    step(&mut r)?;
                    sum = f64::from_bits(r.fixed64()?);
                }
                4 => {
                    step(&mut r)?;
                    schema = r.varint_sint32()?;
                }
                5 => {
                    step(&mut r)?;
                    zero_threshold = f64::from_bits(r.fixed64()?);
                }
                6 => {
                    step(&mut r)?;
                    zero_int = r.varint()?;
                }
                7 => {
                    step(&mut r)?;
                    zero_float = f64::from_bits(r.fixed64()?);
                }
                8 | 11 => {
                    step(&mut r)?;
                    let (m, at) = r.bytes()?;
                    let span = decode_span(m, at)?;
                    if field == 8 {
                        neg_spans.push(span);
                    } else {
                        pos_spans.push(span);
                    }
                }
                9 | 12 => {
                    let v = if field == 9 {
                        &mut neg_deltas
                    } else {
                        &mut pos_deltas
                    };
                    repeated(&mut r, wire_type, VARINT, |p| {
                        // sint64: zigzag.
                        let z = p.varint()?;
                        v.push(((z >> 1) as i64) ^ -((z & 1) as i64));
                        Ok(())
                    })?;
                }
                10 | 13 | 16 => {
                    let v = match field {
                        10 => &mut neg_counts,
                        13 => &mut pos_counts,
                        _ => &mut custom_values,
                    };
                    repeated(&mut r, wire_type, FIXED64, |p| {
                        v.push(f64::from_bits(p.fixed64()?));
                        Ok(())
                    })?;
                }
                14 => {
                    step(&mut r)?;
                    hint = r.varint()?;
                }
                _ => {
                    step(&mut r)?;
                    // int64: two's complement varint.
                    timestamp = r.varint()? as i64;
                }
            }
            Ok(())
        })();
        res.map_err(|f| f.at(2, seg))?;
    }
    let at = base;
    let hint = i32::try_from(hint)
        .ok()
        .and_then(CounterResetHint::from_wire)
        .ok_or_else(|| fail(at, "unknown histogram reset_hint").at(2, Seg::Named("reset_hint")))?;
    if !(MIN_EXPONENTIAL_SCHEMA..=MAX_EXPONENTIAL_SCHEMA).contains(&schema)
        && schema != CUSTOM_BUCKETS_SCHEMA
    {
        return Err(fail(at, "histogram schema must be -4..=8 or -53").at(2, Seg::Named("schema")));
    }
    if schema == CUSTOM_BUCKETS_SCHEMA {
        if !neg_spans.is_empty() || !neg_deltas.is_empty() || !neg_counts.is_empty() {
            return Err(fail(
                at,
                "a histogram with custom buckets (schema -53) has no negative buckets",
            )
            .at(2, Seg::Named("negative_spans")));
        }
        if custom_values
            .windows(2)
            .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return Err(fail(at, "custom_values must be strictly increasing")
                .at(2, Seg::Named("custom_values")));
        }
    } else if !custom_values.is_empty() {
        return Err(fail(at, "custom_values are only allowed with schema -53")
            .at(2, Seg::Named("custom_values")));
    }
    let float = kind == Kind::Float;
    let neg_len = if float {
        neg_counts.len()
    } else {
        neg_deltas.len()
    };
    let pos_len = if float {
        pos_counts.len()
    } else {
        pos_deltas.len()
    };
    if covered(&neg_spans) != neg_len as u64 {
        return Err(fail(
            at,
            "negative_spans cover a different number of buckets than given",
        )
        .at(2, Seg::Named("negative_spans")));
    }
    if covered(&pos_spans) != pos_len as u64 {
        return Err(fail(
            at,
            "positive_spans cover a different number of buckets than given",
        )
        .at(2, Seg::Named("positive_spans")));
    }
    let value = if float {
        HistogramValue::Float(FloatHistogram {
            counter_reset_hint: hint,
            schema,
            zero_threshold,
            zero_count: zero_float,
            count: count_float,
            sum,
            positive_spans: pos_spans,
            negative_spans: neg_spans,
            positive_buckets: pos_counts,
            negative_buckets: neg_counts,
            custom_values,
        })
    } else {
        HistogramValue::Int(Histogram {
            counter_reset_hint: hint,
            schema,
            zero_threshold,
            zero_count: zero_int,
            count: count_int,
            sum,
            positive_spans: pos_spans,
            negative_spans: neg_spans,
            positive_buckets: pos_deltas,
            negative_buckets: neg_deltas,
            custom_values,
        })
    };
    Ok((timestamp, value))
}

/// Buckets the spans cover, saturating (each length is a u32 of the sender's choosing).
fn covered(spans: &[Span]) -> u64 {
    spans
        .iter()
        .fold(0u64, |n, s| n.saturating_add(u64::from(s.length)))
}
