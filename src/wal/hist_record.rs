//! The payload of WAL records 4 (integer native histograms) and 5 (float native
//! histograms). The byte table is in `docs/formats.md` ("WAL histogram records").
//!
//! ```text
//! count uvarint (>= 1)
//! per sample:
//!   ref    uvarint (first) | zigzag varint delta to the previous ref
//!   t      zigzag varint (first) | zigzag varint delta to the previous t
//!   hint u8 (0..=3) | schema zigzag varint | zero_threshold f64 bits LE
//!   zero_count, count: uvarint each (type 4) | f64 bits LE each (type 5)
//!   sum f64 bits LE
//!   positive spans, negative spans: uvarint n, then n × (offset zigzag varint, length uvarint)
//!   positive buckets, negative buckets: uvarint n, then n × (delta zigzag varint (type 4)
//!                                        | count f64 bits LE (type 5))
//!   custom_values: uvarint n, then n × f64 bits LE
//! ```
//!
//! Decoding is bounded by the payload: every count is checked against the bytes left
//! before anything is reserved, and every histogram must pass [`crate::hist::validate`]
//! (spans that match the buckets), so replay never hands the codec an inconsistent one.

use super::record::{put_uvarint, unzigzag, zigzag, Reader, RecordError, RefHistogram};
use crate::model::{CounterResetHint, FloatHistogram, Histogram, HistogramValue, Span};

/// Fewest bytes one sample can take: ref and t (1 each), hint, schema (1 each), zero
/// threshold and sum (8 each), two counts (1 each), four empty lists and custom values (1
/// each).
const MIN_HISTOGRAM_BYTES: usize = 1 + 1 + 1 + 1 + 8 + 1 + 1 + 8 + 5;

/// Appends the payload for `hs` to `buf`; every value must be of the record's kind.
pub(crate) fn encode(
    hs: &[RefHistogram],
    float: bool,
    buf: &mut Vec<u8>,
) -> Result<(), RecordError> {
    if hs.is_empty() {
        return Err(RecordError::Malformed("empty histogram record"));
    }
    put_uvarint(buf, hs.len() as u64);
    let (mut prev_ref, mut prev_t) = (0u64, 0i64);
    for (i, s) in hs.iter().enumerate() {
        if i == 0 {
            put_uvarint(buf, s.series_ref);
            put_uvarint(buf, zigzag(s.t));
        } else {
            put_uvarint(buf, zigzag(s.series_ref.wrapping_sub(prev_ref) as i64));
            put_uvarint(buf, zigzag(s.t.wrapping_sub(prev_t)));
        }
        prev_ref = s.series_ref;
        prev_t = s.t;
        match (&s.h, float) {
            (HistogramValue::Int(h), false) => {
                put_head(buf, h.counter_reset_hint, h.schema, h.zero_threshold);
                put_uvarint(buf, h.zero_count);
                put_uvarint(buf, h.count);
                buf.extend_from_slice(&h.sum.to_bits().to_le_bytes());
                put_spans(buf, &h.positive_spans);
                put_spans(buf, &h.negative_spans);
                for b in [&h.positive_buckets, &h.negative_buckets] {
                    put_uvarint(buf, b.len() as u64);
                    for d in b {
                        put_uvarint(buf, zigzag(*d));
                    }
                }
                put_floats(buf, &h.custom_values);
            }
            (HistogramValue::Float(h), true) => {
                put_head(buf, h.counter_reset_hint, h.schema, h.zero_threshold);
                buf.extend_from_slice(&h.zero_count.to_bits().to_le_bytes());
                buf.extend_from_slice(&h.count.to_bits().to_le_bytes());
                buf.extend_from_slice(&h.sum.to_bits().to_le_bytes());
                put_spans(buf, &h.positive_spans);
                put_spans(buf, &h.negative_spans);
                put_floats(buf, &h.positive_buckets);
                put_floats(buf, &h.negative_buckets);
                put_floats(buf, &h.custom_values);
            }
            _ => {
                return Err(RecordError::Malformed(
                    "histogram kind does not match the record type",
                ))
            }
        }
    }
    Ok(())
}

fn put_head(buf: &mut Vec<u8>, hint: CounterResetHint, schema: i32, zero_threshold: f64) {
    buf.push(hint as u8);
    put_uvarint(buf, zigzag(i64::from(schema)));
    buf.extend_from_slice(&zero_threshold.to_bits().to_le_bytes());
}

fn put_spans(buf: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(buf, spans.len() as u64);
    for s in spans {
        put_uvarint(buf, zigzag(i64::from(s.offset)));
        put_uvarint(buf, u64::from(s.length));
    }
}

fn put_floats(buf: &mut Vec<u8>, fs: &[f64]) {
    put_uvarint(buf, fs.len() as u64);
    for f in fs {
        buf.extend_from_slice(&f.to_bits().to_le_bytes());
    }
}

/// Decodes the payload of a record 4 (`float` false) or 5.
pub(crate) fn decode(r: &mut Reader<'_>, float: bool) -> Result<Vec<RefHistogram>, RecordError> {
    let n = r.uvarint()?;
    if n == 0 || n > (r.remaining() / MIN_HISTOGRAM_BYTES) as u64 {
        return Err(RecordError::Malformed(
            "histogram count does not match payload",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    let (mut series_ref, mut t) = (0u64, 0i64);
    for i in 0..n {
        if i == 0 {
            series_ref = r.uvarint()?;
            t = unzigzag(r.uvarint()?);
        } else {
            series_ref = series_ref.wrapping_add(unzigzag(r.uvarint()?) as u64);
            t = t.wrapping_add(unzigzag(r.uvarint()?));
        }
        let hint = CounterResetHint::from_wire(i32::from(r.u8()?))
            .ok_or(RecordError::Malformed("unknown counter reset hint"))?;
        let schema = i32::try_from(unzigzag(r.uvarint()?))
            .map_err(|_| RecordError::Malformed("schema out of range"))?;
        let zero_threshold = f64::from_bits(r.u64_le()?);
        let h = if float {
            let zero_count = f64::from_bits(r.u64_le()?);
            let count = f64::from_bits(r.u64_le()?);
            let sum = f64::from_bits(r.u64_le()?);
            let positive_spans = spans(r)?;
            let negative_spans = spans(r)?;
            HistogramValue::Float(FloatHistogram {
                counter_reset_hint: hint,
                schema,
                zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans,
                negative_spans,
                positive_buckets: floats(r)?,
                negative_buckets: floats(r)?,
                custom_values: floats(r)?,
            })
        } else {
            let zero_count = r.uvarint()?;
            let count = r.uvarint()?;
            let sum = f64::from_bits(r.u64_le()?);
            let positive_spans = spans(r)?;
            let negative_spans = spans(r)?;
            HistogramValue::Int(Histogram {
                counter_reset_hint: hint,
                schema,
                zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans,
                negative_spans,
                positive_buckets: deltas(r)?,
                negative_buckets: deltas(r)?,
                custom_values: floats(r)?,
            })
        };
        crate::hist::validate(&h).map_err(RecordError::Malformed)?;
        out.push(RefHistogram { series_ref, t, h });
    }
    Ok(out)
}

fn spans(r: &mut Reader<'_>) -> Result<Vec<Span>, RecordError> {
    let n = r.uvarint()?;
    if n > (r.remaining() / 2) as u64 {
        return Err(RecordError::Malformed("span count exceeds payload"));
    }
    (0..n)
        .map(|_| {
            let offset = i32::try_from(unzigzag(r.uvarint()?))
                .map_err(|_| RecordError::Malformed("span offset out of range"))?;
            let length = u32::try_from(r.uvarint()?)
                .map_err(|_| RecordError::Malformed("span length out of range"))?;
            Ok(Span { offset, length })
        })
        .collect()
}

fn deltas(r: &mut Reader<'_>) -> Result<Vec<i64>, RecordError> {
    let n = r.uvarint()?;
    if n > r.remaining() as u64 {
        return Err(RecordError::Malformed("bucket count exceeds payload"));
    }
    (0..n).map(|_| Ok(unzigzag(r.uvarint()?))).collect()
}

fn floats(r: &mut Reader<'_>) -> Result<Vec<f64>, RecordError> {
    let n = r.uvarint()?;
    if n > (r.remaining() / 8) as u64 {
        return Err(RecordError::Malformed("float count exceeds payload"));
    }
    (0..n).map(|_| Ok(f64::from_bits(r.u64_le()?))).collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::super::record::{decode, decode_payload, encode, Record, TYPE_HISTOGRAMS};
    use super::*;
    use crate::model::CUSTOM_BUCKETS_SCHEMA;

    /// Spans and a bucket count that match.
    fn spans_strategy() -> impl Strategy<Value = (Vec<Span>, usize)> {
        prop::collection::vec((-5i32..5, 0u32..4), 0..4).prop_map(|v| {
            let spans: Vec<Span> = v
                .into_iter()
                .enumerate()
                .map(|(i, (o, length))| Span {
                    offset: if i == 0 { o } else { o.abs() },
                    length,
                })
                .collect();
            let n = spans.iter().map(|s| s.length as usize).sum();
            (spans, n)
        })
    }

    fn float_bits() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::from_bits(crate::chunk::STALE_NAN_BITS)),
            Just(f64::INFINITY),
            Just(-0.0),
        ]
    }

    fn any_histogram(float: bool) -> impl Strategy<Value = HistogramValue> {
        (
            0u8..4,
            prop_oneof![-4i32..=8, Just(CUSTOM_BUCKETS_SCHEMA)],
            float_bits(),
            any::<u64>(),
            any::<u64>(),
            float_bits(),
            spans_strategy(),
            spans_strategy(),
            prop::collection::vec(any::<i64>(), 64),
            prop::collection::vec(float_bits(), 64),
        )
            .prop_map(
                move |(hint, schema, zt, zc, c, sum, (ps, np), (ns, nn), ints, fs)| {
                    let hint = CounterResetHint::from_wire(i32::from(hint)).unwrap();
                    let custom = schema == CUSTOM_BUCKETS_SCHEMA;
                    let (ns, nn) = if custom { (Vec::new(), 0) } else { (ns, nn) };
                    let custom_values = if custom { fs[..3].to_vec() } else { Vec::new() };
                    if float {
                        HistogramValue::Float(FloatHistogram {
                            counter_reset_hint: hint,
                            schema,
                            zero_threshold: zt,
                            zero_count: f64::from_bits(zc),
                            count: f64::from_bits(c),
                            sum,
                            positive_spans: ps,
                            negative_spans: ns,
                            positive_buckets: fs[..np].to_vec(),
                            negative_buckets: fs[np..np + nn].to_vec(),
                            custom_values,
                        })
                    } else {
                        HistogramValue::Int(Histogram {
                            counter_reset_hint: hint,
                            schema,
                            zero_threshold: zt,
                            zero_count: zc,
                            count: c,
                            sum,
                            positive_spans: ps,
                            negative_spans: ns,
                            positive_buckets: ints[..np].to_vec(),
                            negative_buckets: ints[np..np + nn].to_vec(),
                            custom_values,
                        })
                    }
                },
            )
    }

    fn any_record() -> impl Strategy<Value = Record<'static>> {
        any::<bool>().prop_flat_map(|float| {
            prop::collection::vec((any::<u64>(), any::<i64>(), any_histogram(float)), 1..12)
                .prop_map(move |v| {
                    let hs: Vec<RefHistogram> = v
                        .into_iter()
                        .map(|(series_ref, t, h)| RefHistogram { series_ref, t, h })
                        .collect();
                    if float {
                        Record::FloatHistograms(Cow::Owned(hs))
                    } else {
                        Record::Histograms(Cow::Owned(hs))
                    }
                })
        })
    }

    fn bytes_of(rec: &Record<'_>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(rec, &mut buf).unwrap();
        buf
    }

    proptest! {
        /// Every histogram record decodes back to the same samples, bit for bit (compared
        /// through re-encoding, so NaN sums and payloads count as equal to themselves).
        #[test]
        fn histogram_records_round_trip_bit_exact(rec in any_record()) {
            let buf = bytes_of(&rec);
            let (back, used) = decode(&buf).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back.num_samples(), rec.num_samples());
            prop_assert_eq!(&bytes_of(&back), &buf);
            if let (Record::Histograms(a) | Record::FloatHistograms(a), Record::Histograms(b) | Record::FloatHistograms(b)) = (&back, &rec) {
                for (x, y) in a.iter().zip(b.iter()) {
                    prop_assert!(x.series_ref == y.series_ref && x.t == y.t && crate::hist::same(&x.h, &y.h));
                }
            }
        }

        /// Any payload behind a valid CRC: an error or a record, never a panic, and never
        /// more memory than the payload could describe.
        #[test]
        fn histogram_payload_decode_never_panics(float in any::<bool>(), payload in prop::collection::vec(any::<u8>(), 1..256)) {
            let _ = decode_payload(if float { 5 } else { 4 }, &payload);
        }

        #[test]
        fn truncated_histogram_records_are_errors(rec in any_record(), cut in any::<prop::sample::Index>()) {
            let buf = bytes_of(&rec);
            let cut = 4 + cut.index(buf.len() - 4);
            prop_assert!(decode(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn a_mixed_or_empty_record_is_refused_and_an_inconsistent_histogram_does_not_decode() {
        let int = HistogramValue::Int(Histogram {
            positive_spans: vec![Span {
                offset: 0,
                length: 1,
            }],
            positive_buckets: vec![3],
            count: 3,
            ..Default::default()
        });
        let mixed = [RefHistogram {
            series_ref: 1,
            t: 5,
            h: int.clone(),
        }];
        let mut buf = Vec::new();
        assert!(encode(&Record::FloatHistograms(Cow::Borrowed(&mixed)), &mut buf).is_err());
        assert!(buf.is_empty(), "nothing left behind");
        assert!(encode(&Record::Histograms(Cow::Borrowed(&[])), &mut buf).is_err());
        // A payload whose spans claim two buckets but hold one.
        let mut payload = Vec::new();
        super::encode(&mixed, false, &mut payload).unwrap();
        let good = decode_payload(TYPE_HISTOGRAMS, &payload).unwrap();
        assert_eq!(good.num_samples(), 1);
        // Layout: n, ref, t, hint, schema, zt(8), zc, count, sum(8), spans n, offset, length.
        let length_at = 1 + 1 + 1 + 1 + 1 + 8 + 1 + 1 + 8 + 1 + 1;
        assert_eq!(payload[length_at], 1);
        payload[length_at] = 2;
        assert!(matches!(
            decode_payload(TYPE_HISTOGRAMS, &payload),
            Err(RecordError::Malformed(_))
        ));
    }
}
