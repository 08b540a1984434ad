//! The layout of a histogram chunk (zero threshold, schema, spans, custom bounds) and the
//! bucket-layout arithmetic of Prometheus's `tsdb/chunkenc/histogram_meta.go`: comparing
//! layouts, the inserts that expand one layout to another, and applying them to buckets.
//!
//! Layout encoding (once per chunk, before the first sample):
//! zero threshold (`put_zero_threshold`), schema (varbit int), positive spans, negative
//! spans (each: count as varbit uint, then per span its length as varbit uint and offset as
//! varbit int), and for schema -53 only the custom bounds (count as varbit uint, then each
//! bound per `put_custom_bound`), as Prometheus v3 writes them.

use super::varbit::{
    put_varbit_int, put_varbit_uint, read_varbit_int, read_varbit_uint, GoBitReader, GoBitWriter,
    StreamError,
};
use crate::model::{Span, CUSTOM_BUCKETS_SCHEMA};

/// The layout every sample of a chunk shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Layout {
    pub(crate) schema: i32,
    pub(crate) zero_threshold: f64,
    pub(crate) positive_spans: Vec<Span>,
    pub(crate) negative_spans: Vec<Span>,
    pub(crate) custom_values: Vec<f64>,
}

pub(crate) fn write_layout(
    b: &mut GoBitWriter,
    schema: i32,
    zero_threshold: f64,
    positive: &[Span],
    negative: &[Span],
    custom_values: &[f64],
) {
    put_zero_threshold(b, zero_threshold);
    put_varbit_int(b, i64::from(schema));
    put_spans(b, positive);
    put_spans(b, negative);
    if schema == CUSTOM_BUCKETS_SCHEMA {
        put_varbit_uint(b, custom_values.len() as u64);
        for &v in custom_values {
            put_custom_bound(b, v);
        }
    }
}

pub(crate) fn read_layout(r: &mut GoBitReader<'_>) -> Result<Layout, StreamError> {
    let zero_threshold = read_zero_threshold(r)?;
    let schema = read_varbit_int(r)?;
    let schema = i32::try_from(schema).map_err(|_| StreamError::Corrupt("schema out of range"))?;
    let positive_spans = read_spans(r)?;
    let negative_spans = read_spans(r)?;
    let mut custom_values = Vec::new();
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let n = read_varbit_uint(r)?;
        // Every bound takes at least 5 bits: bound the allocation by the input.
        if n > (r.remaining_bits() / 5) as u64 {
            return Err(StreamError::Corrupt("more custom bounds than bits left"));
        }
        custom_values.reserve(n as usize);
        for _ in 0..n {
            custom_values.push(read_custom_bound(r)?);
        }
    }
    Ok(Layout {
        schema,
        zero_threshold,
        positive_spans,
        negative_spans,
        custom_values,
    })
}

fn put_spans(b: &mut GoBitWriter, spans: &[Span]) {
    put_varbit_uint(b, spans.len() as u64);
    for s in spans {
        put_varbit_uint(b, u64::from(s.length));
        put_varbit_int(b, i64::from(s.offset));
    }
}

fn read_spans(r: &mut GoBitReader<'_>) -> Result<Vec<Span>, StreamError> {
    let n = read_varbit_uint(r)?;
    // Every span takes at least 2 bits.
    if n > (r.remaining_bits() / 2) as u64 {
        return Err(StreamError::Corrupt("more spans than bits left"));
    }
    let mut spans = Vec::with_capacity(n as usize);
    for _ in 0..n {
        // Go truncates with uint32(...)/int32(...); weft rejects what cannot be a span.
        let length = u32::try_from(read_varbit_uint(r)?)
            .map_err(|_| StreamError::Corrupt("span length out of range"))?;
        let offset = i32::try_from(read_varbit_int(r)?)
            .map_err(|_| StreamError::Corrupt("span offset out of range"))?;
        spans.push(Span { offset, length });
    }
    Ok(spans)
}

/// `putZeroThreshold`: 0 as a zero byte; a power of two 2^-243..2^10 as one byte
/// (`exp + 243` of its `frexp`); anything else as byte 255 and the 64 float bits.
pub(crate) fn put_zero_threshold(b: &mut GoBitWriter, threshold: f64) {
    if threshold == 0.0 {
        b.write_byte(0);
        return;
    }
    let (frac, exp) = frexp(threshold);
    if frac != 0.5 || !(-242..=11).contains(&exp) {
        b.write_byte(255);
        b.write_bits(threshold.to_bits(), 64);
        return;
    }
    b.write_byte((exp + 243) as u8);
}

fn read_zero_threshold(r: &mut GoBitReader<'_>) -> Result<f64, StreamError> {
    let byte = r.read_bits(8)? as u8;
    Ok(match byte {
        0 => 0.0,
        255 => f64::from_bits(r.read_bits(64)?),
        b => ldexp(0.5, i32::from(b) - 243),
    })
}

/// Go's `math.Frexp` for the cases `put_zero_threshold` needs: `f = frac * 2^exp` with
/// `0.5 <= |frac| < 1`. Zero, infinities and NaN come back unchanged with exponent 0.
fn frexp(f: f64) -> (f64, i32) {
    if f == 0.0 || f.is_infinite() || f.is_nan() {
        return (f, 0);
    }
    let (mut f, mut exp) = (f, 0i32);
    if f.abs() < f64::MIN_POSITIVE {
        // Subnormal: normalise first, as Go does.
        f *= (1u64 << 52) as f64;
        exp = -52;
    }
    let bits = f.to_bits();
    exp += ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac_bits = (bits & !(0x7ffu64 << 52)) | (1022u64 << 52);
    (f64::from_bits(frac_bits), exp)
}

/// `0.5 * 2^exp` for the exponents `read_zero_threshold` produces (-243..=11).
fn ldexp(frac: f64, exp: i32) -> f64 {
    frac * 2f64.powi(exp)
}

/// `putCustomBound` (Prometheus v3): a bound that is a whole number of thousandths in
/// `0..=33554.430` as varbit uint `bound * 1000 + 1`; anything else as a 0 bit and the 64
/// float bits.
pub(crate) fn put_custom_bound(b: &mut GoBitWriter, f: f64) {
    let tf = f * 1000.0;
    if !(0.0..=33_554_430.0).contains(&tf) || !is_whole_when_multiplied(f) {
        b.write_bit(false);
        b.write_bits(f.to_bits(), 64);
        return;
    }
    put_varbit_uint(b, tf.round() as u64 + 1);
}

fn is_whole_when_multiplied(f: f64) -> bool {
    let i = (f * 1000.0).round() as u64;
    (i as f64) / 1000.0 == f
}

fn read_custom_bound(r: &mut GoBitReader<'_>) -> Result<f64, StreamError> {
    let v = read_varbit_uint(r)?;
    if v == 0 {
        return Ok(f64::from_bits(r.read_bits(64)?));
    }
    Ok((v - 1) as f64 / 1000.0)
}

/// Buckets the spans cover. Decoders check this against the bits left before allocating.
pub(crate) fn count_spans(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.length as usize).sum()
}

/// Walks the bucket indices the spans cover (Prometheus's `bucketIterator`).
#[derive(Debug, Clone)]
pub(crate) struct BucketIndices<'a> {
    spans: &'a [Span],
    span: usize,
    bucket: i64,
    idx: i64,
}

impl<'a> BucketIndices<'a> {
    pub(crate) fn new(spans: &'a [Span]) -> Self {
        let idx = -1 + spans.first().map_or(0, |s| i64::from(s.offset));
        Self {
            spans,
            span: 0,
            bucket: -1,
            idx,
        }
    }
}

impl Iterator for BucketIndices<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        if self.span >= self.spans.len() {
            return None;
        }
        if self.bucket < i64::from(self.spans[self.span].length) - 1 {
            self.bucket += 1;
            self.idx += 1;
            return Some(self.idx);
        }
        while self.span + 1 < self.spans.len() {
            self.span += 1;
            self.idx += i64::from(self.spans[self.span].offset) + 1;
            self.bucket = 0;
            if self.spans[self.span].length == 0 {
                self.idx -= 1;
                continue;
            }
            return Some(self.idx);
        }
        // Prometheus stays on the last span; mark it exhausted so that `next` stays `None`.
        self.span = self.spans.len();
        None
    }
}

/// Buckets to insert: `num` new buckets before the old bucket at position `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Insert {
    pub(crate) pos: usize,
    pub(crate) num: usize,
}

/// `expandSpansForward` (2.42): the inserts that turn layout `a` into `b`, or `None` if `b`
/// lacks a bucket of `a`.
pub(crate) fn expand_spans_forward(a: &[Span], b: &[Span]) -> Option<Vec<Insert>> {
    let mut ai = BucketIndices::new(a);
    let mut bi = BucketIndices::new(b);
    let mut inserts = Vec::new();
    let mut inter = Insert::default();
    let (mut av, mut bv) = (ai.next(), bi.next());
    loop {
        match (av, bv) {
            (Some(x), Some(y)) if x == y => {
                if inter.num > 0 {
                    inserts.push(inter);
                }
                inter.num = 0;
                av = ai.next();
                bv = bi.next();
                inter.pos += 1;
            }
            (Some(x), Some(y)) if x < y => return None,
            (Some(_), Some(_)) | (None, Some(_)) => {
                inter.num += 1;
                bv = bi.next();
            }
            (Some(_), None) => return None,
            (None, None) => {
                if inter.num > 0 {
                    inserts.push(inter);
                }
                return Some(inserts);
            }
        }
    }
}

/// `expandSpansBothWays`: inserts for `a` (forward) and for `b` (backward) so that both
/// cover the union of their buckets, and that union's spans.
pub(crate) fn expand_spans_both_ways(
    a: &[Span],
    b: &[Span],
) -> (Vec<Insert>, Vec<Insert>, Vec<Span>) {
    let mut ai = BucketIndices::new(a);
    let mut bi = BucketIndices::new(b);
    let (mut f_inserts, mut b_inserts, mut merged) = (Vec::new(), Vec::new(), Vec::<Span>::new());
    let mut last_bucket = 0i64;
    let mut add_bucket = |merged: &mut Vec<Span>, bucket: i64| {
        let mut offset = bucket - last_bucket - 1;
        if offset == 0 && !merged.is_empty() {
            let l = merged.len() - 1;
            merged[l].length += 1;
        } else {
            if merged.is_empty() {
                offset += 1;
            }
            merged.push(Span {
                offset: offset as i32,
                length: 1,
            });
        }
        last_bucket = bucket;
    };
    let (mut f_inter, mut b_inter) = (Insert::default(), Insert::default());
    let (mut av, mut bv) = (ai.next(), bi.next());
    loop {
        match (av, bv) {
            (Some(x), Some(y)) if x == y => {
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                    f_inter.num = 0;
                }
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                add_bucket(&mut merged, x);
                av = ai.next();
                bv = bi.next();
                f_inter.pos += 1;
                b_inter.pos += 1;
            }
            (Some(x), Some(y)) if x < y => {
                b_inter.num += 1;
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                    f_inter.num = 0;
                }
                add_bucket(&mut merged, x);
                f_inter.pos += 1;
                av = ai.next();
            }
            (Some(_), Some(y)) => {
                f_inter.num += 1;
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                    b_inter.num = 0;
                }
                add_bucket(&mut merged, y);
                b_inter.pos += 1;
                bv = bi.next();
            }
            (Some(x), None) => {
                b_inter.num += 1;
                add_bucket(&mut merged, x);
                av = ai.next();
            }
            (None, Some(y)) => {
                f_inter.num += 1;
                add_bucket(&mut merged, y);
                bv = bi.next();
            }
            (None, None) => {
                if f_inter.num > 0 {
                    f_inserts.push(f_inter);
                }
                if b_inter.num > 0 {
                    b_inserts.push(b_inter);
                }
                return (f_inserts, b_inserts, merged);
            }
        }
    }
}

/// Bucket values that `insert` can handle: delta-encoded integers or absolute floats.
pub(crate) trait BucketValue: Copy + Default {
    fn add(self, other: Self) -> Self;
    fn neg(self) -> Self;
}

impl BucketValue for i64 {
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
}

impl BucketValue for f64 {
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn neg(self) -> Self {
        -self
    }
}

/// Prometheus's `insert`: `input` with empty buckets added per `inserts`, `out_len` buckets
/// long. With `deltas`, values are delta-encoded and the neighbours are adjusted.
pub(crate) fn insert<V: BucketValue>(
    input: &[V],
    out_len: usize,
    inserts: &[Insert],
    deltas: bool,
) -> Vec<V> {
    let mut out = Vec::with_capacity(out_len);
    let mut v = V::default();
    let mut ii = 0;
    for (i, &d) in input.iter().enumerate() {
        if ii < inserts.len() && i == inserts[ii].pos {
            out.push(if deltas { v.neg() } else { V::default() });
            for _ in 1..inserts[ii].num {
                out.push(V::default());
            }
            ii += 1;
            out.push(if deltas { d.add(v) } else { d });
            v = d.add(v);
            continue;
        }
        out.push(d);
        v = v.add(d);
    }
    if ii + 1 == inserts.len() {
        out.push(if deltas { v.neg() } else { V::default() });
        for _ in 1..inserts[ii].num {
            out.push(V::default());
        }
    }
    out.resize(out_len, V::default());
    out
}

/// Whether any bucket present in both layouts has a smaller count in the new one (2.42's
/// `counterResetInAnyBucket`). `old`/`new` are absolute counts, in layout order.
pub(crate) fn counter_reset_in_any_bucket<V: PartialOrd + Copy>(
    old: &[V],
    new: &[V],
    old_spans: &[Span],
    new_spans: &[Span],
) -> bool {
    let mut oi = BucketIndices::new(old_spans)
        .zip(old.iter().copied())
        .peekable();
    let mut ni = BucketIndices::new(new_spans)
        .zip(new.iter().copied())
        .peekable();
    while let (Some(&(oidx, ov)), Some(&(nidx, nv))) = (oi.peek(), ni.peek()) {
        match oidx.cmp(&nidx) {
            std::cmp::Ordering::Equal => {
                if nv < ov {
                    return true;
                }
                oi.next();
                ni.next();
            }
            std::cmp::Ordering::Less => {
                oi.next();
            }
            std::cmp::Ordering::Greater => {
                ni.next();
            }
        }
    }
    false
}

/// Absolute counts from delta-encoded ones (wrapping, like Go).
pub(crate) fn absolute(deltas: &[i64]) -> Vec<i64> {
    let mut acc = 0i64;
    deltas
        .iter()
        .map(|d| {
            acc = acc.wrapping_add(*d);
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(v: &[(i32, u32)]) -> Vec<Span> {
        v.iter()
            .map(|&(offset, length)| Span { offset, length })
            .collect()
    }

    #[test]
    fn prometheus_doc_example_of_forward_inserts() {
        // From the comment of expandSpansForward in histogram_meta.go.
        let a = sp(&[(0, 2), (2, 1), (3, 2), (3, 1), (1, 1)]);
        let b = sp(&[(0, 3), (1, 1), (1, 4), (3, 3)]);
        let ins = expand_spans_forward(&a, &b).unwrap();
        assert_eq!(
            ins,
            vec![
                Insert { pos: 2, num: 1 },
                Insert { pos: 3, num: 2 },
                Insert { pos: 6, num: 1 }
            ]
        );
        let deltas = [6i64, -3, 0, -1, 2, 1, -4];
        let out = insert(&deltas, count_spans(&b), &ins, true);
        assert_eq!(out, vec![6, -3, -3, 3, -3, 0, 2, 2, 1, -5, 1]);
        assert!(expand_spans_forward(&b, &a).is_none());
    }

    #[test]
    fn zero_thresholds_use_one_byte_for_powers_of_two() {
        for (t, len) in [
            (0.0, 1),
            (2f64.powi(-128), 1),
            (1e-128, 9),
            (0.001, 9),
            (1024.0, 1),
            (4096.0, 9),
        ] {
            let mut w = GoBitWriter::with_header(0);
            put_zero_threshold(&mut w, t);
            let bytes = w.bytes().to_vec();
            // write_byte leaves an empty byte behind.
            assert_eq!(bytes.len(), len + 1, "{t}");
            let mut r = GoBitReader::new(&bytes, 0);
            assert_eq!(read_zero_threshold(&mut r).unwrap(), t);
        }
    }

    #[test]
    fn custom_bounds_round_trip() {
        for f in [
            0.0,
            0.001,
            1.5,
            33554.43,
            33554.431,
            -1.0,
            f64::INFINITY,
            0.1 + 0.2,
        ] {
            let mut w = GoBitWriter::with_header(0);
            put_custom_bound(&mut w, f);
            let bytes = w.bytes().to_vec();
            let mut r = GoBitReader::new(&bytes, 0);
            assert_eq!(read_custom_bound(&mut r).unwrap().to_bits(), f.to_bits());
        }
    }
}
