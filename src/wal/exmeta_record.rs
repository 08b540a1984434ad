//! Payloads of the WAL records of exemplars (type 6) and metric metadata (type 7); the byte
//! tables are in `docs/formats.md`. Both carry their tenant and whole label sets rather than
//! series refs: the exemplar and metadata stores are keyed by labels and family names, not by
//! head series, and both kinds of record are rare next to samples.
//!
//! **Invariant:** like the rest of `wal::record`, this file only turns records into bytes and
//! back, validating every byte it reads; every count is bounded by the bytes present before
//! anything is reserved.

use super::record::{put_str, put_uvarint, unzigzag, zigzag, Reader, RecordError};

/// One exemplar as the WAL stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalExemplar {
    /// The labels of the series it belongs to (sorted by name).
    pub series: Vec<(String, String)>,
    /// The exemplar's own labels (e.g. `trace_id`).
    pub labels: Vec<(String, String)>,
    /// Timestamp, ms.
    pub t: i64,
    /// `f64::to_bits` of the value.
    pub v: u64,
}

/// One metric family's metadata as the WAL stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalMetadata {
    /// `MetricType` number (0..=7).
    pub kind: u8,
    /// Metric family name.
    pub family: String,
    /// Help text.
    pub help: String,
    /// Unit.
    pub unit: String,
}

/// Largest `MetricType` number.
const MAX_KIND: u8 = 7;
/// Smallest encoding of one exemplar: two zero label counts, a 1-byte time, 8 value bytes.
const MIN_EXEMPLAR_BYTES: usize = 11;
/// Smallest encoding of one metadata entry: type and three empty strings.
const MIN_METADATA_BYTES: usize = 4;

fn put_pairs(buf: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_uvarint(buf, pairs.len() as u64);
    for (n, v) in pairs {
        put_str(buf, n);
        put_str(buf, v);
    }
}

fn pairs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, RecordError> {
    let n = r.uvarint()?;
    // Each pair takes at least two length bytes.
    if n > (r.remaining() / 2) as u64 {
        return Err(RecordError::Malformed("label count exceeds payload"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.str()?.to_string();
        let value = r.str()?.to_string();
        out.push((name, value));
    }
    Ok(out)
}

/// Appends the payload of an exemplars record.
pub(crate) fn encode_exemplars(tenant: &str, exemplars: &[WalExemplar], buf: &mut Vec<u8>) {
    put_str(buf, tenant);
    put_uvarint(buf, exemplars.len() as u64);
    for e in exemplars {
        put_pairs(buf, &e.series);
        put_pairs(buf, &e.labels);
        put_uvarint(buf, zigzag(e.t));
        buf.extend_from_slice(&e.v.to_le_bytes());
    }
}

/// Decodes the payload of an exemplars record after its tenant.
pub(crate) fn decode_exemplars(r: &mut Reader<'_>) -> Result<Vec<WalExemplar>, RecordError> {
    let n = r.uvarint()?;
    if n == 0 || n > (r.remaining() / MIN_EXEMPLAR_BYTES) as u64 {
        return Err(RecordError::Malformed(
            "exemplar count does not match payload",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let series = pairs(r)?;
        let labels = pairs(r)?;
        let t = unzigzag(r.uvarint()?);
        let v = r.u64_le()?;
        out.push(WalExemplar {
            series,
            labels,
            t,
            v,
        });
    }
    Ok(out)
}

/// Appends the payload of a metadata record.
pub(crate) fn encode_metadata(tenant: &str, entries: &[WalMetadata], buf: &mut Vec<u8>) {
    put_str(buf, tenant);
    put_uvarint(buf, entries.len() as u64);
    for m in entries {
        buf.push(m.kind);
        put_str(buf, &m.family);
        put_str(buf, &m.help);
        put_str(buf, &m.unit);
    }
}

/// Decodes the payload of a metadata record after its tenant.
pub(crate) fn decode_metadata(r: &mut Reader<'_>) -> Result<Vec<WalMetadata>, RecordError> {
    let n = r.uvarint()?;
    if n == 0 || n > (r.remaining() / MIN_METADATA_BYTES) as u64 {
        return Err(RecordError::Malformed(
            "metadata count does not match payload",
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let kind = r.u8()?;
        if kind > MAX_KIND {
            return Err(RecordError::Malformed("unknown metric type"));
        }
        out.push(WalMetadata {
            kind,
            family: r.str()?.to_string(),
            help: r.str()?.to_string(),
            unit: r.str()?.to_string(),
        });
    }
    Ok(out)
}
