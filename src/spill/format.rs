//! The byte format of spill files: a file header, then self-describing records, then zeros.
//! The tables are in `docs/formats.md` ("Spill files").
//!
//! Everything here is pure (no I/O), so the decoders can be fuzzed on arbitrary bytes. Every
//! decoder checks lengths before it slices and never reserves memory from a length it read.

use std::fmt::Write as _;

use super::{SpillError, SpillRef};

/// Magic at the start of every spill file.
pub const FILE_MAGIC: [u8; 8] = *b"WEFTSPL1";
/// The only file format version so far.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the file header; the first record starts here.
pub const FILE_HEADER_LEN: usize = 24;
/// Size of a record header; the chunk data follows it.
pub const RECORD_HEADER_LEN: usize = 36;
/// Largest chunk a record holds. Rationale: a Prometheus XOR chunk of 120 samples is about
/// 1.2 KiB; 64 KiB leaves room for pathological values while bounding every read.
pub const MAX_CHUNK_BYTES: usize = 64 << 10;

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// The file's index (must match its name).
    pub index: u32,
}

/// Encodes the header of file `index`.
pub fn encode_file_header(index: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..8].copy_from_slice(&FILE_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&index.to_le_bytes());
    // 16..20: flags, zero.
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a file header from the start of `b`.
///
/// `Ok(None)` means the header is absent: `b` is shorter than a header or the header bytes
/// are all zero, which is what a crash between creating a file and syncing its header leaves.
/// Such a file holds no records. Anything else that is not a valid header is `Corrupt`.
pub fn decode_file_header(b: &[u8]) -> Result<Option<FileHeader>, SpillError> {
    let head = &b[..b.len().min(FILE_HEADER_LEN)];
    if head.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    if head.len() < FILE_HEADER_LEN {
        return Err(SpillError::Corrupt(format!(
            "file header truncated: {} of {FILE_HEADER_LEN} bytes",
            head.len()
        )));
    }
    if head[0..8] != FILE_MAGIC {
        return Err(SpillError::Corrupt("bad file magic".into()));
    }
    let crc = le_u32(&head[20..24]);
    if crc32fast::hash(&head[0..20]) != crc {
        return Err(SpillError::Corrupt("file header CRC mismatch".into()));
    }
    let version = le_u32(&head[8..12]);
    if version != FORMAT_VERSION {
        return Err(SpillError::Corrupt(format!(
            "unsupported file version {version}"
        )));
    }
    let flags = le_u32(&head[16..20]);
    if flags != 0 {
        return Err(SpillError::Corrupt(format!(
            "unknown file flags {flags:#x}"
        )));
    }
    Ok(Some(FileHeader {
        index: le_u32(&head[12..16]),
    }))
}

/// One chunk record, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillRecord<'a> {
    /// The series the chunk belongs to (the head's series ref).
    pub series_ref: u64,
    /// Smallest timestamp in the chunk (ms).
    pub min_t: i64,
    /// Largest timestamp in the chunk (ms), `>= min_t`.
    pub max_t: i64,
    /// The chunk bytes: a complete Prometheus XOR chunk, `1..=MAX_CHUNK_BYTES` bytes.
    pub data: &'a [u8],
}

/// A decoded record header (what precedes the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the data, `1..=MAX_CHUNK_BYTES`.
    pub len: u32,
    /// CRC32 (IEEE) of the data.
    pub data_crc32: u32,
    /// See [`SpillRecord`].
    pub series_ref: u64,
    /// See [`SpillRecord`].
    pub min_t: i64,
    /// See [`SpillRecord`].
    pub max_t: i64,
}

/// Checks the caller's side of a record: what `encode_record` refuses.
pub(crate) fn check_chunk(min_t: i64, max_t: i64, data: &[u8]) -> Result<(), SpillError> {
    if data.is_empty() {
        return Err(SpillError::Invalid("empty chunk".into()));
    }
    if data.len() > MAX_CHUNK_BYTES {
        return Err(SpillError::TooLarge {
            bytes: data.len(),
            limit: MAX_CHUNK_BYTES,
        });
    }
    if max_t < min_t {
        return Err(SpillError::Invalid(format!(
            "max_t {max_t} < min_t {min_t}"
        )));
    }
    Ok(())
}

/// Appends the record for one chunk to `out` and returns the CRC32 of `data`.
pub fn encode_record(
    series_ref: u64,
    min_t: i64,
    max_t: i64,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<u32, SpillError> {
    check_chunk(min_t, max_t, data)?;
    let data_crc = crc32fast::hash(data);
    let start = out.len();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data_crc.to_le_bytes());
    out.extend_from_slice(&series_ref.to_le_bytes());
    out.extend_from_slice(&min_t.to_le_bytes());
    out.extend_from_slice(&max_t.to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..start + 32]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(data);
    Ok(data_crc)
}

/// Decodes a record header from the start of `b`.
///
/// `Ok(None)` is the end-of-data marker: a zero length word. Anything else must be a complete,
/// valid header (length in range, header CRC, `min_t <= max_t`), or it is `Corrupt`.
pub fn decode_record_header(b: &[u8]) -> Result<Option<RecordHeader>, SpillError> {
    if b.len() < 4 {
        return if b.iter().all(|&x| x == 0) {
            Ok(None)
        } else {
            Err(SpillError::Corrupt(format!(
                "record length word truncated at {} bytes",
                b.len()
            )))
        };
    }
    let len = le_u32(&b[0..4]);
    if len == 0 {
        return Ok(None);
    }
    if b.len() < RECORD_HEADER_LEN {
        return Err(SpillError::Corrupt(format!(
            "record header truncated: {} of {RECORD_HEADER_LEN} bytes",
            b.len()
        )));
    }
    let crc = le_u32(&b[32..36]);
    if crc32fast::hash(&b[0..32]) != crc {
        return Err(SpillError::Corrupt("record header CRC mismatch".into()));
    }
    if len as usize > MAX_CHUNK_BYTES {
        return Err(SpillError::Corrupt(format!(
            "record length {len} exceeds {MAX_CHUNK_BYTES}"
        )));
    }
    let h = RecordHeader {
        len,
        data_crc32: le_u32(&b[4..8]),
        series_ref: le_u64(&b[8..16]),
        min_t: le_u64(&b[16..24]) as i64,
        max_t: le_u64(&b[24..32]) as i64,
    };
    if h.max_t < h.min_t {
        return Err(SpillError::Corrupt(format!(
            "record max_t {} < min_t {}",
            h.max_t, h.min_t
        )));
    }
    Ok(Some(h))
}

/// Decodes one record from the start of `b`: the record and the bytes it used, `Ok(None)` at
/// the end-of-data marker, `Corrupt` for a torn or damaged record.
pub fn decode_record(b: &[u8]) -> Result<Option<(SpillRecord<'_>, usize)>, SpillError> {
    let Some(h) = decode_record_header(b)? else {
        return Ok(None);
    };
    let end = RECORD_HEADER_LEN + h.len as usize;
    if b.len() < end {
        return Err(SpillError::Corrupt(format!(
            "record data truncated: {} of {} bytes",
            b.len() - RECORD_HEADER_LEN,
            h.len
        )));
    }
    let data = &b[RECORD_HEADER_LEN..end];
    if crc32fast::hash(data) != h.data_crc32 {
        return Err(SpillError::Corrupt("record data CRC mismatch".into()));
    }
    Ok(Some((
        SpillRecord {
            series_ref: h.series_ref,
            min_t: h.min_t,
            max_t: h.max_t,
            data,
        },
        end,
    )))
}

/// Checks that the record at the start of `b` is the one `r` names and returns its data.
/// `b` must start at `r.offset` in file `r.file`.
pub(crate) fn check_record_for_ref<'a>(r: &SpillRef, b: &'a [u8]) -> Result<&'a [u8], SpillError> {
    let at = || format!("file {} offset {}", r.file, r.offset);
    let h = match decode_record_header(b) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(SpillError::Corrupt(format!(
                "{}: no record (end of data)",
                at()
            )))
        }
        Err(SpillError::Corrupt(why)) => {
            return Err(SpillError::Corrupt(format!("{}: {why}", at())))
        }
        Err(e) => return Err(e),
    };
    if h.len != r.len || h.data_crc32 != r.crc32 {
        return Err(SpillError::Corrupt(format!(
            "{}: record (len {}, crc {:#010x}) does not match the ref (len {}, crc {:#010x})",
            at(),
            h.len,
            h.data_crc32,
            r.len,
            r.crc32
        )));
    }
    let data = b
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + h.len as usize)
        .ok_or_else(|| SpillError::Corrupt(format!("{}: record data truncated", at())))?;
    if crc32fast::hash(data) != r.crc32 {
        return Err(SpillError::Corrupt(format!(
            "{}: chunk data CRC mismatch",
            at()
        )));
    }
    Ok(data)
}

/// How a walk over a file's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The header is absent (all zero or short): no records.
    NoHeader,
    /// The header is invalid; nothing was walked.
    BadHeader(String),
    /// An end-of-data marker at `offset`, and only zeros after it.
    Clean {
        /// Where the data ends.
        offset: u64,
    },
    /// The walk stopped at `offset` because of `reason`: a torn write, a damaged record, or
    /// non-zero bytes after the end marker. Records before it are intact.
    Torn {
        /// Where the first bad byte (record) is.
        offset: u64,
        /// Why the walk stopped.
        reason: String,
    },
}

/// The result of walking a whole file image.
#[derive(Debug, Clone)]
pub struct FileScan<'a> {
    /// The header, if valid.
    pub header: Option<FileHeader>,
    /// Every intact record before the end, with its offset (a [`SpillRef::offset`]).
    pub records: Vec<(u64, SpillRecord<'a>)>,
    /// Why the walk stopped.
    pub end: ScanEnd,
}

/// Walks the records of a whole spill file image. Never panics on any input.
pub fn decode_records(file: &[u8]) -> FileScan<'_> {
    let header = match decode_file_header(file) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return FileScan {
                header: None,
                records: Vec::new(),
                end: ScanEnd::NoHeader,
            }
        }
        Err(e) => {
            return FileScan {
                header: None,
                records: Vec::new(),
                end: ScanEnd::BadHeader(e.to_string()),
            }
        }
    };
    let mut records = Vec::new();
    let mut off = FILE_HEADER_LEN;
    let end = loop {
        match decode_record(&file[off..]) {
            Ok(Some((rec, used))) => {
                records.push((off as u64, rec));
                off += used;
            }
            Ok(None) => {
                break match file[off..].iter().position(|&x| x != 0) {
                    None => ScanEnd::Clean { offset: off as u64 },
                    Some(p) => ScanEnd::Torn {
                        offset: off as u64,
                        reason: format!("end marker followed by non-zero bytes at {}", off + p),
                    },
                };
            }
            Err(e) => {
                break ScanEnd::Torn {
                    offset: off as u64,
                    reason: e.to_string(),
                }
            }
        }
    };
    FileScan {
        header: Some(header),
        records,
        end,
    }
}

/// A human-readable dump of one spill file image named `name`.
pub fn inspect_bytes(name: &str, file: &[u8]) -> String {
    let mut out = String::new();
    let scan = decode_records(file);
    let _ = write!(out, "{name}: {} bytes, ", file.len());
    if let Some(h) = scan.header {
        let _ = writeln!(out, "header ok (index {})", h.index);
    }
    let mut data_bytes = 0u64;
    for (off, r) in &scan.records {
        data_bytes += r.data.len() as u64;
        let _ = writeln!(
            out,
            "  @{off} series {} t [{}, {}] len {} crc {:#010x} ok",
            r.series_ref,
            r.min_t,
            r.max_t,
            r.data.len(),
            crc32fast::hash(r.data)
        );
    }
    match &scan.end {
        ScanEnd::NoHeader => {
            let _ = writeln!(out, "no header (creation torn): no records");
        }
        ScanEnd::BadHeader(why) => {
            let _ = writeln!(out, "BAD HEADER: {why}");
        }
        ScanEnd::Clean { offset } => {
            let _ = writeln!(out, "  end of data at {offset}, zeros to end of file");
        }
        ScanEnd::Torn { offset, reason } => {
            let _ = writeln!(out, "  TORN at {offset}: {reason}");
        }
    }
    if scan.header.is_some() {
        let _ = writeln!(
            out,
            "  {} records, {data_bytes} chunk bytes",
            scan.records.len()
        );
    }
    out
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
