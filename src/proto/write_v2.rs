//! Zero-copy decoding of remote write 2.0's `io.prometheus.write.v2.Request`
//! (`prompb/io/prometheus/write/v2/types.proto` of Prometheus 3.0) into the same
//! [`WriteBatch`] as 1.0: label references are resolved against the request's symbol table
//! to byte slices of the body, so the rest of weft never sees a difference.

use super::write::{decode_sample, fail, index, push_histogram, Reader, Res, Seg, LEN, VARINT};
use super::{MetricType, ProtoError, WriteBatch, WriteExemplar, WriteMetadata, WriteSeries};

/// Decodes a 2.0 `Request` into `out` (cleared first).
///
/// Wire layout:
///
/// | message    | field | type                 | handling                                  |
/// |------------|-------|----------------------|-------------------------------------------|
/// | Request    | 4     | repeated string      | the symbol table (borrowed)               |
/// | Request    | 5     | repeated TimeSeries  | decoded after all symbols are known       |
/// | TimeSeries | 1     | repeated uint32      | label refs, pairs → `out.labels`          |
/// | TimeSeries | 2     | repeated Sample      | into `out.samples`                        |
/// | TimeSeries | 3     | repeated Histogram   | into `out.histograms` (as 1.0)            |
/// | TimeSeries | 4     | repeated Exemplar    | into `out.exemplars`, labels by refs      |
/// | TimeSeries | 5     | Metadata             | into `out.metadata` unless all defaults   |
/// | TimeSeries | 6     | int64                | created_timestamp: accepted, ignored      |
/// | Metadata   | 1,3,4 | type, help_ref, unit_ref | family = the series' `__name__`       |
///
/// Refused (a [`ProtoError::Malformed`] with offset and field path): a symbol table whose
/// first entry is not the empty string, a reference past the end of the table, an odd
/// number of label references, a `uint32` reference that does not fit 32 bits, and every
/// malformation the 1.0 decoder refuses. Repeated scalars are accepted packed or not.
/// Fields are accepted in any order (symbols after series included): the symbol table is
/// collected in a first pass over the top level.
pub fn decode_write_request_v2<'a>(
    body: &'a [u8],
    out: &mut WriteBatch<'a>,
) -> Result<(), ProtoError> {
    out.clear();
    decode(body, out).map_err(|f| (*f).into_error("Request"))
}

fn decode<'a>(body: &'a [u8], out: &mut WriteBatch<'a>) -> Res<()> {
    // Bounded by the body: each symbol takes at least two bytes of it.
    let mut symbols: Vec<&'a [u8]> = Vec::new();
    let mut r = Reader::new(body, 0);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            4 => {
                let seg = Seg::Indexed("symbols", index(symbols.len(), key_at)?);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(0, seg))?;
                let (s, at) = r.bytes().map_err(|f| f.at(0, seg))?;
                if symbols.is_empty() && !s.is_empty() {
                    return Err(fail(at, "the first symbol must be the empty string").at(0, seg));
                }
                symbols.push(s);
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(0, Seg::Unknown(field)))?,
        }
    }
    let mut r = Reader::new(body, 0);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            5 => {
                let seg = Seg::Indexed("timeseries", index(out.series.len(), key_at)?);
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(0, seg))?;
                let (msg, at) = r.bytes().map_err(|f| f.at(0, seg))?;
                decode_series(msg, at, &symbols, out).map_err(|f| f.at(0, seg))?;
            }
            // Checked in the first pass.
            _ => r.skip(wire_type)?,
        }
    }
    Ok(())
}

/// Resolves one symbol reference.
#[inline(always)]
fn symbol<'a>(symbols: &[&'a [u8]], r: u32, at: usize) -> Res<&'a [u8]> {
    match symbols.get(r as usize) {
        Some(s) => Ok(s),
        None => Err(fail(at, "symbol reference out of range")),
    }
}

/// Reads label references (packed or one per field) and pushes resolved pairs onto
/// `labels`; `pending` carries a name across unpacked fields.
fn label_refs<'a>(
    r: &mut Reader<'a>,
    key_at: usize,
    wire_type: u8,
    symbols: &[&'a [u8]],
    pending: &mut Option<&'a [u8]>,
    labels: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Res<()> {
    let mut one = |p: &mut Reader<'a>| -> Res<()> {
        let at = p.offset();
        let s = symbol(symbols, p.varint_u32()?, at)?;
        match pending.take() {
            None => *pending = Some(s),
            Some(name) => labels.push((name, s)),
        }
        Ok(())
    };
    match wire_type {
        LEN => {
            let (packed, at) = r.bytes()?;
            let mut p = Reader::new(packed, at);
            while p.has_more() {
                one(&mut p)?;
            }
            Ok(())
        }
        VARINT => one(r),
        _ => r.expect(key_at, wire_type, LEN),
    }
}

fn decode_series<'a>(
    msg: &'a [u8],
    base: usize,
    symbols: &[&'a [u8]],
    out: &mut WriteBatch<'a>,
) -> Res<()> {
    let mut r = Reader::new(msg, base);
    let labels_start = index(out.labels.len(), base)?;
    let samples_start = index(out.samples.len(), base)?;
    let histograms_start = index(out.histograms.len(), base)?;
    let exemplars_start = index(out.exemplars.len(), base)?;
    let mut pending = None;
    let mut metadata: Option<WriteMetadata<'a>> = None;
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("labels_refs");
                label_refs(
                    &mut r,
                    key_at,
                    wire_type,
                    symbols,
                    &mut pending,
                    &mut out.labels,
                )
                .map_err(|f| f.at(1, seg))?;
            }
            2 => {
                let seg = Seg::Indexed(
                    "samples",
                    (out.samples.len() as u32).wrapping_sub(samples_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                out.samples
                    .push(decode_sample(m, at).map_err(|f| f.at(1, seg))?);
            }
            3 => {
                let seg = Seg::Indexed(
                    "histograms",
                    (out.histograms.len() as u32).wrapping_sub(histograms_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                push_histogram(m, at, &mut out.histograms).map_err(|f| f.at(1, seg))?;
            }
            4 => {
                let seg = Seg::Indexed(
                    "exemplars",
                    (out.exemplars.len() as u32).wrapping_sub(exemplars_start),
                );
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                let e = decode_exemplar(m, at, symbols, &mut out.exemplar_labels)
                    .map_err(|f| f.at(1, seg))?;
                out.exemplars.push(e);
            }
            5 => {
                let seg = Seg::Named("metadata");
                r.expect(key_at, wire_type, LEN).map_err(|f| f.at(1, seg))?;
                let (m, at) = r.bytes().map_err(|f| f.at(1, seg))?;
                // A message field given twice is merged; its scalars: last wins.
                let prev = metadata.unwrap_or_default();
                metadata = Some(decode_metadata(m, at, symbols, prev).map_err(|f| f.at(1, seg))?);
            }
            6 => {
                // created_timestamp: accepted and ignored (weft does not synthesise the zero
                // sample Prometheus's created-timestamp handling would).
                let seg = Seg::Named("created_timestamp");
                r.expect(key_at, wire_type, VARINT)
                    .map_err(|f| f.at(1, seg))?;
                r.varint().map_err(|f| f.at(1, seg))?;
            }
            _ => r
                .skip(wire_type)
                .map_err(|f| f.at(1, Seg::Unknown(field)))?,
        }
    }
    if pending.is_some() {
        return Err(fail(base, "odd number of label references").at(1, Seg::Named("labels_refs")));
    }
    let labels_end = index(out.labels.len(), r.offset())?;
    if let Some(mut m) = metadata {
        // Empty metadata (all defaults) is what a sender without metadata sends: skip it.
        if m.kind != MetricType::Unknown || !m.help.is_empty() || !m.unit.is_empty() {
            m.family = out.labels[labels_start as usize..labels_end as usize]
                .iter()
                .find(|(n, _)| *n == b"__name__")
                .map_or(&[][..], |(_, v)| *v);
            out.metadata.push(m);
        }
    }
    out.series.push(WriteSeries {
        labels_start,
        labels_end,
        samples_start,
        samples_end: index(out.samples.len(), r.offset())?,
        histograms_start,
        histograms_end: index(out.histograms.len(), r.offset())?,
        exemplars_start,
        exemplars_end: index(out.exemplars.len(), r.offset())?,
    });
    Ok(())
}

fn decode_exemplar<'a>(
    msg: &'a [u8],
    base: usize,
    symbols: &[&'a [u8]],
    labels: &mut Vec<(&'a [u8], &'a [u8])>,
) -> Res<WriteExemplar> {
    let mut r = Reader::new(msg, base);
    let labels_start = index(labels.len(), base)?;
    let (mut value, mut timestamp) = (0u64, 0i64);
    let mut pending = None;
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        match field {
            1 => {
                let seg = Seg::Named("labels_refs");
                label_refs(&mut r, key_at, wire_type, symbols, &mut pending, labels)
                    .map_err(|f| f.at(2, seg))?;
            }
            2 => {
                let seg = Seg::Named("value");
                r.expect(key_at, wire_type, super::write::FIXED64)
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
    if pending.is_some() {
        return Err(fail(base, "odd number of label references").at(2, Seg::Named("labels_refs")));
    }
    Ok(WriteExemplar {
        labels_start,
        labels_end: index(labels.len(), r.offset())?,
        value: f64::from_bits(value),
        timestamp,
    })
}

/// Decodes a 2.0 `Metadata` over `m`. An unknown type number is kept as `Unknown`.
fn decode_metadata<'a>(
    msg: &'a [u8],
    base: usize,
    symbols: &[&'a [u8]],
    mut m: WriteMetadata<'a>,
) -> Res<WriteMetadata<'a>> {
    let mut r = Reader::new(msg, base);
    while r.has_more() {
        let key_at = r.pos;
        let (field, wire_type) = r.key()?;
        let seg = match field {
            1 => Seg::Named("type"),
            3 => Seg::Named("help_ref"),
            4 => Seg::Named("unit_ref"),
            _ => {
                r.skip(wire_type)
                    .map_err(|f| f.at(2, Seg::Unknown(field)))?;
                continue;
            }
        };
        r.expect(key_at, wire_type, VARINT)
            .map_err(|f| f.at(2, seg))?;
        let at = r.offset();
        if field == 1 {
            let v = r.varint().map_err(|f| f.at(2, seg))?;
            m.kind = MetricType::from_wire(v).unwrap_or_default();
            continue;
        }
        let s = r
            .varint_u32()
            .and_then(|i| symbol(symbols, i, at))
            .map_err(|f| f.at(2, seg))?;
        if field == 3 {
            m.help = s;
        } else {
            m.unit = s;
        }
    }
    Ok(m)
}
