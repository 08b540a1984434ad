//! The object format: one object per tenant per flush cycle, holding many series' chunks.
//!
//! ```text
//! header (16) | chunk bytes, back to back | index | footer (32)
//! ```
//!
//! A reader range-GETs the footer (the last 32 bytes, which also tells it the object's size),
//! then the index it points to, then only the chunks it needs. The byte tables are in
//! `docs/formats.md` ("Store object"); this file is the reference implementation.
//!
//! The decoder is written for hostile input: it never panics, never allocates more than the
//! bytes it was given could hold, and accepts exactly one encoding of each object (chunks
//! back to back in index order, canonical varints, sorted labels, no trailing bytes), so a
//! decoded object re-encodes to the same bytes.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::Bytes;
use object_store::path::{Path, PathPart};

use super::StoreError;
use crate::model::{Labels, TenantId};

/// First 8 bytes of every object, and its last 8.
pub const MAGIC: [u8; 8] = *b"WEFTOBJ1";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Size of the header: magic, version, flags.
pub const HEADER_LEN: u64 = 16;
/// Size of the footer: index offset, index length, index CRC32, version, magic.
pub const FOOTER_LEN: u64 = 32;
/// Chunk encoding bytes: Prometheus's chunkenc encodings 1 (XOR), 2 (histogram) and 3
/// (float histogram), as the codec numbers them.
pub use crate::chunk::{ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, ENCODING_XOR};

/// The name `weft inspect` prints for a chunk encoding (Prometheus's `chunkenc` names).
pub fn encoding_name(e: u8) -> &'static str {
    match e {
        ENCODING_XOR => "XOR",
        ENCODING_HISTOGRAM => "histogram",
        ENCODING_FLOAT_HISTOGRAM => "floathistogram",
        _ => "unknown",
    }
}

/// Whether `e` is a chunk encoding weft stores (XOR, histogram, float histogram).
pub fn is_known_encoding(e: u8) -> bool {
    matches!(
        e,
        ENCODING_XOR | ENCODING_HISTOGRAM | ENCODING_FLOAT_HISTOGRAM
    )
}

/// Largest chunk accepted. A XOR chunk holds at most 65535 samples (its count is a u16) of
/// at most about 19 bytes each, so 2 MiB is above anything a valid chunk can be.
pub const MAX_CHUNK_BYTES: u32 = 2 << 20;
/// Largest index accepted. The index is fetched and cached whole, so it is bounded on its
/// own; 64 MiB is several hundred thousand series.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Largest object written or accepted. The flusher cuts objects well below this.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;
/// Most labels a series in an object may have.
pub const MAX_LABELS_PER_SERIES: u64 = 1024;

/// Bytes of one chunk entry in the index: encoding, min_t, max_t, offset, length, CRC32.
const CHUNK_ENTRY_LEN: usize = 1 + 8 + 8 + 8 + 4 + 4;
/// The fewest bytes one series entry can take: a label count, one label of a one-byte name
/// and a one-byte value, a chunk count, and one chunk entry. Used to bound reservations.
const MIN_SERIES_ENTRY_LEN: usize = 1 + 4 + 1 + CHUNK_ENTRY_LEN;

/// One chunk handed to [`ObjectBuilder::add_series`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkData<'a> {
    /// Timestamp of its first sample, ms.
    pub min_t: i64,
    /// Timestamp of its last sample, ms.
    pub max_t: i64,
    /// The complete chunk (from the 2-byte sample count on).
    pub data: &'a [u8],
    /// Its chunk encoding ([`ENCODING_XOR`], [`ENCODING_HISTOGRAM`] or
    /// [`ENCODING_FLOAT_HISTOGRAM`]).
    pub encoding: u8,
}

/// Builds one object: add series with their chunks, then [`finish`](Self::finish).
#[derive(Debug)]
pub struct ObjectBuilder {
    /// Header and chunk bytes so far; the index and footer are appended at `finish`.
    buf: Vec<u8>,
    /// Index entries so far, without the leading series count.
    index: Vec<u8>,
    series: u64,
    chunks: u64,
    min_t: i64,
    max_t: i64,
}

/// A finished object.
#[derive(Debug, Clone)]
pub struct EncodedObject {
    /// The object's bytes.
    pub bytes: Bytes,
    /// Smallest chunk `min_t`.
    pub min_t: i64,
    /// Largest chunk `max_t`.
    pub max_t: i64,
    /// Series in the object.
    pub series: u64,
    /// Chunks in the object.
    pub chunks: u64,
}

impl Default for ObjectBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectBuilder {
    /// An empty object.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 << 10);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes()); // flags
        Self {
            buf,
            index: Vec::new(),
            series: 0,
            chunks: 0,
            min_t: i64::MAX,
            max_t: i64::MIN,
        }
    }

    /// Adds a series and its chunks. On error the builder is unchanged.
    ///
    /// Refuses a series without chunks, an empty chunk, a chunk with `min_t > max_t`, a chunk
    /// over [`MAX_CHUNK_BYTES`], and anything that would take the object past
    /// [`MAX_OBJECT_BYTES`] or its index past [`MAX_INDEX_BYTES`].
    pub fn add_series(
        &mut self,
        labels: &Labels,
        chunks: &[ChunkData<'_>],
    ) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "series {labels} has no chunks"
            )));
        }
        if labels.len() as u64 > MAX_LABELS_PER_SERIES {
            return Err(StoreError::InvalidInput(format!(
                "series {labels} has more than {MAX_LABELS_PER_SERIES} labels"
            )));
        }
        let mut data_len: u64 = 0;
        for c in chunks {
            if c.data.is_empty() || c.data.len() as u64 > MAX_CHUNK_BYTES as u64 {
                return Err(StoreError::InvalidInput(format!(
                    "chunk of series {labels} is {} bytes; it must be 1 to {MAX_CHUNK_BYTES}",
                    c.data.len()
                )));
            }
            if !is_known_encoding(c.encoding) {
                return Err(StoreError::InvalidInput(format!(
                    "chunk of series {labels} has unknown encoding {}",
                    c.encoding
                )));
            }
            if c.min_t > c.max_t {
                return Err(StoreError::InvalidInput(format!(
                    "chunk of series {labels} has min_t {} after max_t {}",
                    c.min_t, c.max_t
                )));
            }
            data_len += c.data.len() as u64;
        }

        let mut entry = Vec::with_capacity(64 + chunks.len() * CHUNK_ENTRY_LEN);
        put_uvarint(&mut entry, labels.len() as u64);
        for l in labels.iter() {
            put_string(&mut entry, &l.name);
            put_string(&mut entry, &l.value);
        }
        put_uvarint(&mut entry, chunks.len() as u64);
        let mut offset = self.buf.len() as u64;
        for c in chunks {
            entry.push(c.encoding);
            entry.extend_from_slice(&c.min_t.to_le_bytes());
            entry.extend_from_slice(&c.max_t.to_le_bytes());
            entry.extend_from_slice(&offset.to_le_bytes());
            entry.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
            entry.extend_from_slice(&crc32fast::hash(c.data).to_le_bytes());
            offset += c.data.len() as u64;
        }

        // The series count varint in front of the index is at most 10 bytes.
        let index_len = self.index.len() as u64 + entry.len() as u64 + 10;
        let total = self.buf.len() as u64 + data_len + index_len + FOOTER_LEN;
        if index_len > MAX_INDEX_BYTES {
            return Err(StoreError::TooLarge {
                what: "object index",
                len: index_len,
                limit: MAX_INDEX_BYTES,
            });
        }
        if total > MAX_OBJECT_BYTES {
            return Err(StoreError::TooLarge {
                what: "object",
                len: total,
                limit: MAX_OBJECT_BYTES,
            });
        }

        for c in chunks {
            self.buf.extend_from_slice(c.data);
            self.min_t = self.min_t.min(c.min_t);
            self.max_t = self.max_t.max(c.max_t);
        }
        self.index.extend_from_slice(&entry);
        self.series += 1;
        self.chunks += chunks.len() as u64;
        Ok(())
    }

    /// Series added so far.
    pub fn series(&self) -> u64 {
        self.series
    }

    /// Bytes the object would have if finished now (within 10 bytes).
    pub fn approx_len(&self) -> u64 {
        (self.buf.len() + self.index.len()) as u64 + 10 + FOOTER_LEN
    }

    /// Appends the index and footer. Refuses an object without series.
    pub fn finish(self) -> Result<EncodedObject, StoreError> {
        if self.series == 0 {
            return Err(StoreError::InvalidInput(
                "an object needs at least one series".into(),
            ));
        }
        let mut buf = self.buf;
        let index_offset = buf.len() as u64;
        put_uvarint(&mut buf, self.series);
        buf.extend_from_slice(&self.index);
        let index_len = buf.len() as u64 - index_offset;
        let index_crc = crc32fast::hash(&buf[index_offset as usize..]);
        buf.extend_from_slice(&index_offset.to_le_bytes());
        buf.extend_from_slice(&index_len.to_le_bytes());
        buf.extend_from_slice(&index_crc.to_le_bytes());
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&MAGIC);
        // Assert the data right after writing it: the object must decode to what was added.
        debug_assert!(decode_object(&buf).is_ok_and(|ix| ix.chunk_count == self.chunks));
        Ok(EncodedObject {
            bytes: Bytes::from(buf),
            min_t: self.min_t,
            max_t: self.max_t,
            series: self.series,
            chunks: self.chunks,
        })
    }
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Where the index starts; also where the chunk data ends.
    pub index_offset: u64,
    /// Index length in bytes.
    pub index_len: u64,
    /// CRC32 (IEEE) of the index bytes.
    pub index_crc32: u32,
}

impl Footer {
    /// The byte range of the index, for a range GET.
    pub fn index_range(&self) -> Range<u64> {
        self.index_offset..self.index_offset + self.index_len
    }
}

/// Where one chunk sits in an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// The chunk encoding: [`ENCODING_XOR`], [`ENCODING_HISTOGRAM`] or
    /// [`ENCODING_FLOAT_HISTOGRAM`].
    pub encoding: u8,
    /// Timestamp of its first sample, ms.
    pub min_t: i64,
    /// Timestamp of its last sample, ms.
    pub max_t: i64,
    /// Offset of its first byte in the object.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u32,
    /// CRC32 (IEEE) of its bytes.
    pub crc32: u32,
}

impl ChunkMeta {
    /// The byte range of the chunk, for a range GET.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.len as u64
    }
}

/// One series in an object's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesIndex {
    /// Its labels.
    pub labels: Labels,
    /// Its chunks, in the order they were added.
    pub chunks: Vec<ChunkMeta>,
}

/// A decoded and validated object index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIndex {
    /// Series in the order they were added.
    pub series: Vec<SeriesIndex>,
    /// Smallest chunk `min_t`.
    pub min_t: i64,
    /// Largest chunk `max_t`.
    pub max_t: i64,
    /// Chunks over all series.
    pub chunk_count: u64,
}

impl ObjectIndex {
    /// Bytes this index takes in memory, roughly; what a cache charges for it.
    pub fn heap_bytes(&self) -> usize {
        self.series
            .iter()
            .map(|s| {
                std::mem::size_of::<SeriesIndex>()
                    + s.labels.heap_bytes()
                    + s.chunks.len() * std::mem::size_of::<ChunkMeta>()
            })
            .sum()
    }
}

/// The range of the footer in an object of `object_len` bytes. Fetching the last
/// [`FOOTER_LEN`] bytes (a suffix range) gets the same bytes without knowing the size.
pub fn footer_range(object_len: u64) -> Result<Range<u64>, StoreError> {
    if object_len < HEADER_LEN + FOOTER_LEN {
        return Err(corrupt(format!(
            "object of {object_len} bytes is shorter than header and footer"
        )));
    }
    Ok(object_len - FOOTER_LEN..object_len)
}

/// Decodes and checks a footer: exactly [`FOOTER_LEN`] bytes, the magic, the version, and
/// an index that sits right before the footer, after the header, within the size limits.
pub fn decode_footer(footer: &[u8], object_len: u64) -> Result<Footer, StoreError> {
    let f: &[u8; FOOTER_LEN as usize] = footer.try_into().map_err(|_| {
        corrupt(format!(
            "footer is {} bytes, not {FOOTER_LEN}",
            footer.len()
        ))
    })?;
    if f[24..32] != MAGIC {
        return Err(corrupt("bad footer magic".into()));
    }
    let version = u32::from_le_bytes(f[20..24].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(corrupt(format!("unsupported object version {version}")));
    }
    if object_len > MAX_OBJECT_BYTES {
        return Err(StoreError::TooLarge {
            what: "object",
            len: object_len,
            limit: MAX_OBJECT_BYTES,
        });
    }
    let index_offset = u64::from_le_bytes(f[0..8].try_into().expect("8 bytes"));
    let index_len = u64::from_le_bytes(f[8..16].try_into().expect("8 bytes"));
    let index_crc32 = u32::from_le_bytes(f[16..20].try_into().expect("4 bytes"));
    if index_len == 0 || index_len > MAX_INDEX_BYTES {
        return Err(corrupt(format!("index length {index_len} out of range")));
    }
    // Checked arithmetic: both numbers come straight from untrusted bytes.
    let index_end = index_offset.checked_add(index_len);
    if index_offset < HEADER_LEN
        || index_end.and_then(|e| e.checked_add(FOOTER_LEN)) != Some(object_len)
    {
        return Err(corrupt(format!(
            "index at {index_offset}+{index_len} does not end at the footer of a {object_len}-byte object"
        )));
    }
    Ok(Footer {
        index_offset,
        index_len,
        index_crc32,
    })
}

/// Decodes and checks an index fetched by [`Footer::index_range`].
///
/// Checks the CRC first, then the structure: canonical varints, sorted and valid labels,
/// at least one series and one chunk a series, `min_t <= max_t`, known encodings, lengths
/// of 1 to [`MAX_CHUNK_BYTES`], and chunks back to back from the header to the index.
pub fn decode_index(index: &[u8], footer: &Footer) -> Result<ObjectIndex, StoreError> {
    if index.len() as u64 != footer.index_len {
        return Err(corrupt(format!(
            "index is {} bytes, footer says {}",
            index.len(),
            footer.index_len
        )));
    }
    if crc32fast::hash(index) != footer.index_crc32 {
        return Err(corrupt("index CRC mismatch".into()));
    }
    let mut r = Reader { buf: index, pos: 0 };
    let series_count = r.uvarint()?;
    if series_count == 0 {
        return Err(corrupt("object has no series".into()));
    }
    // Never reserve more entries than the remaining bytes could hold.
    let cap = (series_count as usize).min(r.remaining() / MIN_SERIES_ENTRY_LEN + 1);
    let mut series = Vec::with_capacity(cap);
    let mut next_offset = HEADER_LEN;
    let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
    let mut chunk_count = 0u64;
    for _ in 0..series_count {
        let label_count = r.uvarint()?;
        if label_count == 0 || label_count > MAX_LABELS_PER_SERIES {
            return Err(corrupt(format!("series with {label_count} labels")));
        }
        let mut pairs: Vec<(&str, &str)> =
            Vec::with_capacity((label_count as usize).min(r.remaining() / 4 + 1));
        for _ in 0..label_count {
            let name = r.string()?;
            let value = r.string()?;
            if let Some(&(prev, _)) = pairs.last() {
                if prev >= name {
                    return Err(corrupt(format!(
                        "labels not sorted or repeated at {name:?}"
                    )));
                }
            }
            pairs.push((name, value));
        }
        let labels = Labels::from_strs(pairs).map_err(|e| corrupt(format!("bad labels: {e}")))?;
        let n = r.uvarint()?;
        if n == 0 {
            return Err(corrupt(format!("series {labels} has no chunks")));
        }
        let mut chunks = Vec::with_capacity((n as usize).min(r.remaining() / CHUNK_ENTRY_LEN + 1));
        for _ in 0..n {
            let encoding = r.u8()?;
            let c_min = r.i64()?;
            let c_max = r.i64()?;
            let offset = r.u64()?;
            let len = r.u32()?;
            let crc32 = r.u32()?;
            if !is_known_encoding(encoding) {
                return Err(corrupt(format!("unknown chunk encoding {encoding}")));
            }
            if c_min > c_max {
                return Err(corrupt(format!(
                    "chunk with min_t {c_min} after max_t {c_max}"
                )));
            }
            if len == 0 || len > MAX_CHUNK_BYTES {
                return Err(corrupt(format!("chunk length {len} out of range")));
            }
            if offset != next_offset {
                return Err(corrupt(format!(
                    "chunk at offset {offset}, expected {next_offset}"
                )));
            }
            next_offset += len as u64; // cannot overflow: offset < 2^30 once checked below
            if next_offset > footer.index_offset {
                return Err(corrupt(format!(
                    "chunk at {offset}+{len} runs into the index"
                )));
            }
            min_t = min_t.min(c_min);
            max_t = max_t.max(c_max);
            chunks.push(ChunkMeta {
                encoding,
                min_t: c_min,
                max_t: c_max,
                offset,
                len,
                crc32,
            });
        }
        chunk_count += n;
        series.push(SeriesIndex { labels, chunks });
    }
    if r.remaining() != 0 {
        return Err(corrupt(format!(
            "{} bytes after the last index entry",
            r.remaining()
        )));
    }
    if next_offset != footer.index_offset {
        return Err(corrupt(format!(
            "chunks end at {next_offset} but the index starts at {}",
            footer.index_offset
        )));
    }
    Ok(ObjectIndex {
        series,
        min_t,
        max_t,
        chunk_count,
    })
}

/// Checks a chunk fetched by [`ChunkMeta::range`] against its length and CRC.
pub fn verify_chunk(meta: &ChunkMeta, bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.len() as u64 != meta.len as u64 {
        return Err(corrupt(format!(
            "chunk is {} bytes, index says {}",
            bytes.len(),
            meta.len
        )));
    }
    if crc32fast::hash(bytes) != meta.crc32 {
        return Err(corrupt(format!(
            "chunk at offset {} fails its CRC",
            meta.offset
        )));
    }
    Ok(())
}

/// Decodes a whole object: header, footer, index, and every chunk's CRC.
pub fn decode_object(bytes: &[u8]) -> Result<ObjectIndex, StoreError> {
    let len = bytes.len() as u64;
    let fr = footer_range(len)?;
    if bytes[0..8] != MAGIC {
        return Err(corrupt("bad header magic".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if version != VERSION || flags != 0 {
        return Err(corrupt(format!(
            "unsupported header: version {version}, flags {flags:#x}"
        )));
    }
    let footer = decode_footer(&bytes[fr.start as usize..], len)?;
    let ir = footer.index_range();
    let index = decode_index(&bytes[ir.start as usize..ir.end as usize], &footer)?;
    for s in &index.series {
        for c in &s.chunks {
            let r = c.range();
            verify_chunk(c, &bytes[r.start as usize..r.end as usize])?;
        }
    }
    Ok(index)
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if n > self.remaining() {
            return Err(corrupt(format!(
                "index truncated: need {n} bytes at {}",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(self.u64()? as i64)
    }

    /// An unsigned LEB128 varint: at most 10 bytes, canonical (no redundant zero groups).
    fn uvarint(&mut self) -> Result<u64, StoreError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(corrupt("varint overflows u64".into()));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(corrupt("overlong varint".into()));
                }
                return Ok(v);
            }
        }
        Err(corrupt("varint longer than 10 bytes".into()))
    }

    fn string(&mut self) -> Result<&'a str, StoreError> {
        let n = self.uvarint()?;
        if n > self.remaining() as u64 {
            return Err(corrupt(format!(
                "string of {n} bytes past the end of the index"
            )));
        }
        std::str::from_utf8(self.take(n as usize)?)
            .map_err(|_| corrupt("string is not UTF-8".into()))
    }
}

// ---- object keys ----

/// Longest ingester id accepted in a key.
pub const MAX_INGESTER_ID_LEN: usize = 64;

/// The key of one object: `<prefix>/<tenant>/chunks/<min_t>-<max_t>-<ingester>-<seq>`.
///
/// `min_t` and `max_t` are written in offset binary, as 16 lowercase hex digits of
/// `t XOR 2^63` (so `i64::MIN` is `0000000000000000`, `0` is `8000000000000000`, `-1` is
/// `7fffffffffffffff`). Unlike a decimal with a sign, that sorts by value as a plain string,
/// negative times included, so a listing comes back in time order. `seq` is 16 hex digits.
/// The ingester id is 1 to 64 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`; it may contain
/// `-` because the fields around it are fixed-width.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Whose data.
    pub tenant: TenantId,
    /// Smallest chunk `min_t` in the object.
    pub min_t: i64,
    /// Largest chunk `max_t` in the object.
    pub max_t: i64,
    /// The ingester that wrote it.
    pub ingester: String,
    /// The ingester's flush sequence number; keeps keys unique.
    pub seq: u64,
}

/// The directory segment between the tenant and the object names.
pub const CHUNKS_DIR: &str = "chunks";

impl ObjectKey {
    /// A key; checks `min_t <= max_t` and the ingester id.
    pub fn new(
        tenant: TenantId,
        min_t: i64,
        max_t: i64,
        ingester: &str,
        seq: u64,
    ) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidKey {
            key: ingester.to_owned(),
            reason,
        };
        if min_t > max_t {
            return Err(bad("min_t after max_t"));
        }
        validate_ingester(ingester).map_err(bad)?;
        Ok(Self {
            tenant,
            min_t,
            max_t,
            ingester: ingester.to_owned(),
            seq,
        })
    }

    /// The object name, the last segment of the key.
    pub fn file_name(&self) -> String {
        let mut s = String::with_capacity(16 * 3 + 3 + self.ingester.len());
        let _ = write!(
            s,
            "{}-{}-{}-{:016x}",
            encode_time(self.min_t),
            encode_time(self.max_t),
            self.ingester,
            self.seq
        );
        s
    }

    /// The full key under `prefix`.
    pub fn to_path(&self, prefix: &Path) -> Path {
        tenant_chunks_prefix(prefix, &self.tenant).join(self.file_name())
    }

    /// Parses a key listed under `prefix`. Refuses anything that is not exactly
    /// `<prefix>/<tenant>/chunks/<name>` with a valid tenant and name.
    pub fn parse(prefix: &Path, path: &Path) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidKey {
            key: path.to_string(),
            reason,
        };
        let mut parts = path
            .prefix_match(prefix)
            .ok_or_else(|| bad("not under the store prefix"))?;
        let (Some(tenant), Some(dir), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not <tenant>/chunks/<name>"));
        };
        if dir.as_ref() != CHUNKS_DIR {
            return Err(bad("not <tenant>/chunks/<name>"));
        }
        let tenant = percent_decode(tenant.as_ref()).ok_or_else(|| bad("bad escape in tenant"))?;
        let tenant = TenantId::parse(&tenant).map_err(|_| bad("invalid tenant id"))?;
        let name = name.as_ref();
        // <16 hex>-<16 hex>-<ingester>-<16 hex>
        let b = name.as_bytes();
        if b.len() < 16 + 1 + 16 + 1 + 1 + 1 + 16
            || b[16] != b'-'
            || b[33] != b'-'
            || b[b.len() - 17] != b'-'
        {
            return Err(bad("name is not <min_t>-<max_t>-<ingester>-<seq>"));
        }
        let min_t = decode_time(&name[..16]).ok_or_else(|| bad("bad min_t"))?;
        let max_t = decode_time(&name[17..33]).ok_or_else(|| bad("bad max_t"))?;
        let ingester = &name[34..b.len() - 17];
        let seq = parse_hex16(&name[b.len() - 16..]).ok_or_else(|| bad("bad seq"))?;
        // The same checks as a key made by `new`, reported against the whole path.
        Self::new(tenant, min_t, max_t, ingester, seq).map_err(|e| match e {
            StoreError::InvalidKey { reason, .. } => bad(reason),
            other => other,
        })
    }
}

/// `<prefix>/<tenant>/chunks`: list this to find a tenant's objects, and only that
/// tenant's (object_store matches prefixes by whole segments).
pub fn tenant_chunks_prefix(prefix: &Path, tenant: &TenantId) -> Path {
    prefix
        .clone()
        .join(PathPart::from(tenant.as_str()))
        .join(CHUNKS_DIR)
}

/// A timestamp as 16 hex digits of offset binary; sorts like the number.
pub fn encode_time(t: i64) -> String {
    format!("{:016x}", (t as u64) ^ (1 << 63))
}

/// The inverse of [`encode_time`]; `None` unless exactly 16 lowercase hex digits.
pub fn decode_time(s: &str) -> Option<i64> {
    parse_hex16(s).map(|v| (v ^ (1 << 63)) as i64)
}

fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn validate_ingester(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_INGESTER_ID_LEN {
        return Err("ingester id must be 1 to 64 bytes");
    }
    if id == "." || id == ".." {
        return Err("ingester id may not be . or ..");
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err("ingester id may only hold letters, digits, _ . -");
    }
    Ok(())
}

/// Undoes object_store's percent-encoding of a path segment (it escapes `*`, which tenant
/// ids may contain). `None` on a malformed escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;

/// A human-readable dump of a whole object, for `weft inspect object FILE`: the footer, each
/// series with its chunks (time range, offset, length, CRC, samples, CRC check), and totals.
pub fn inspect(bytes: &[u8]) -> Result<String, StoreError> {
    use std::fmt::Write as _;
    let index = decode_object(bytes)?;
    let fr = footer_range(bytes.len() as u64)?;
    let footer = decode_footer(
        &bytes[fr.start as usize..fr.end as usize],
        bytes.len() as u64,
    )?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "object: {} bytes, index at {} ({} bytes, crc32 {:08x}), {} series, {} chunks, time {}..{}",
        bytes.len(),
        footer.index_offset,
        footer.index_len,
        footer.index_crc32,
        index.series.len(),
        index.chunk_count,
        index.min_t,
        index.max_t
    );
    let mut samples_total = 0u64;
    let mut bad = 0u64;
    for s in &index.series {
        let _ = writeln!(out, "series {}", s.labels);
        for c in &s.chunks {
            let range = c.offset as usize..c.offset as usize + c.len as usize;
            let data = bytes.get(range).unwrap_or_default();
            let samples = data
                .get(..2)
                .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]));
            samples_total += u64::from(samples);
            let check = match verify_chunk(c, data) {
                Ok(()) => "ok".to_string(),
                Err(e) => {
                    bad += 1;
                    format!("BAD: {e}")
                }
            };
            let _ = writeln!(
                out,
                "  chunk {}..{} {} offset {} len {} crc32 {:08x} samples {} {}",
                c.min_t,
                c.max_t,
                encoding_name(c.encoding),
                c.offset,
                c.len,
                c.crc32,
                samples,
                check
            );
        }
    }
    let _ = writeln!(
        out,
        "total: {} series, {} chunks, {} samples, {} bad chunks",
        index.series.len(),
        index.chunk_count,
        samples_total,
        bad
    );
    Ok(out)
}
