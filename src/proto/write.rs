//! Zero-copy decoding of `prometheus.WriteRequest`.
//!
//! Labels are borrowed byte slices into the request body: a series weft already knows costs
//! no allocation. Nested messages are flattened into three vectors that callers reuse.

use thiserror::Error;

use crate::model::HistogramValue;

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
}

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
/// | message      | field | type                       | handling                      |
/// |--------------|-------|----------------------------|-------------------------------|
/// | WriteRequest | 1     | repeated TimeSeries        | decoded                       |
/// | WriteRequest | 3     | repeated MetricMetadata    | counted                       |
/// | TimeSeries   | 1     | repeated Label             | borrowed into `out.labels`    |
/// | TimeSeries   | 2     | repeated Sample            | into `out.samples`            |
/// | TimeSeries   | 3     | repeated Exemplar          | counted                       |
/// | TimeSeries   | 4     | repeated Histogram         | counted                       |
/// | Label        | 1, 2  | string name, value         | raw bytes, not UTF-8-checked  |
/// | Sample       | 1, 2  | double value, int64 ts     | proto3 defaults, last wins    |
///
/// Any other field is skipped by wire type; groups (wire types 3 and 4) are refused. On error
/// `out` holds whatever was decoded before the error and must not be used.
pub fn decode_write_request<'a>(
    body: &'a [u8],
    out: &mut WriteBatch<'a>,
) -> Result<(), ProtoError> {
    out.clear();
    decode_request(body, out).map_err(|f| (*f).into_error())
}

// Wire types, from the protobuf encoding spec.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One step of an error's field path.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// A singular field: `value`.
    Named(&'static str),
    /// An element of a repeated field: `labels[1]`.
    Indexed(&'static str, u32),
    /// A field this decoder does not know, by number: `#7`.
    Unknown(u32),
}

/// An error on its way up: offset and cause are fixed where it happens, and each message
/// level adds its step of the path while the error unwinds. Nothing on the success path
/// pays for the path.
#[derive(Debug)]
struct Fail {
    offset: usize,
    what: &'static str,
    /// Outermost first; `None` where the error happened above that depth.
    path: [Option<Seg>; 3],
}

type Res<T> = Result<T, Box<Fail>>;

impl Fail {
    /// Records the path step at `depth` (0 = inside the WriteRequest).
    #[cold]
    fn at(mut self: Box<Self>, depth: usize, seg: Seg) -> Box<Self> {
        self.path[depth] = Some(seg);
        self
    }

    #[cold]
    fn into_error(self) -> ProtoError {
        use std::fmt::Write as _;
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
            path.push_str("WriteRequest");
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
fn fail(offset: usize, what: &'static str) -> Box<Fail> {
    Box::new(Fail {
        offset,
        what,
        path: [None; 3],
    })
}

/// A cursor over one message's bytes. `base` is the offset of `buf` in the request body, so
/// errors report absolute offsets.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    #[inline(always)]
    fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[inline(always)]
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline(always)]
    fn varint(&mut self) -> Res<u64> {
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

    /// Reads a field key: (field number, wire type).
    #[inline(always)]
    fn key(&mut self) -> Res<(u32, u8)> {
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
    fn bytes(&mut self) -> Res<(&'a [u8], usize)> {
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
    fn fixed64(&mut self) -> Res<u64> {
        match self.buf.get(self.pos..self.pos + 8) {
            Some(b) => {
                self.pos += 8;
                Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            None => Err(fail(self.offset(), "truncated fixed64")),
        }
    }

    fn skip(&mut self, wire_type: u8) -> Res<()> {
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
    fn expect(&self, key_at: usize, wire_type: u8, want: u8) -> Res<()> {
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
fn index(len: usize, offset: usize) -> Res<u32> {
    u32::try_from(len).map_err(|_| fail(offset, "request has more than u32::MAX entries"))
}

fn decode_request<'a>(body: &'a [u8], out: &mut WriteBatch<'a>) -> Res<()> {
    let mut r = Reader::new(body, 0);
    let mut metadata = 0u32;
    // Until histograms, exemplars and metadata are decoded, they are counted only.
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
                let seg = Seg::Indexed("metadata", metadata);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(0, seg))?;
                r.bytes().map_err(|f| f.at(0, seg))?;
                metadata = metadata.saturating_add(1);
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(0, Seg::Unknown(field)))?,
        }
    }
    let _ = metadata;
    Ok(())
}

fn decode_series<'a>(msg: &'a [u8], base: usize, out: &mut WriteBatch<'a>) -> Res<()> {
    let mut r = Reader::new(msg, base);
    let labels_start = index(out.labels.len(), base)?;
    let samples_start = index(out.samples.len(), base)?;
    let (mut exemplars, mut histograms) = (0u32, 0u32);
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
                    let pair = decode_label(label, base + at).map_err(|f| f.at(1, seg))?;
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
                let pair = decode_label(label, at).map_err(|f| f.at(1, seg))?;
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
                let seg = Seg::Indexed("exemplars", exemplars);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                r.bytes().map_err(|f| f.at(1, seg))?;
                exemplars = exemplars.saturating_add(1);
            }
            4 => {
                let seg = Seg::Indexed("histograms", histograms);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                r.bytes().map_err(|f| f.at(1, seg))?;
                histograms = histograms.saturating_add(1);
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
        histograms_start: 0,
        histograms_end: 0,
        exemplars_start: 0,
        exemplars_end: 0,
    });
    let _ = (histograms, exemplars);
    Ok(())
}

#[inline(always)]
fn decode_label(msg: &[u8], base: usize) -> Res<(&[u8], &[u8])> {
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
    decode_label_fields(msg, base)
}

#[inline(never)]
fn decode_label_fields(msg: &[u8], base: usize) -> Res<(&[u8], &[u8])> {
    let mut r = Reader::new(msg, base);
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("name");
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(2, seg))?;
                name = r.bytes().map_err(|f| f.at(2, seg))?.0;
            }
            2 => {
                let seg = Seg::Named("value");
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(2, seg))?;
                value = r.bytes().map_err(|f| f.at(2, seg))?.0;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(2, Seg::Unknown(field)))?,
        }
    }
    Ok((name, value))
}

#[inline(always)]
fn decode_sample(msg: &[u8], base: usize) -> Res<(i64, f64)> {
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
