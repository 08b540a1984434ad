//! Checkpoints: a snapshot of the head's live series and their (compressed) chunks.
//!
//! `checkpoint.N` holds everything the WAL segments numbered below `N` said. It is written to
//! `checkpoint.N.tmp` with plain buffered writes, fsynced, renamed, and the directory is
//! fsynced, so a `checkpoint.N` that exists is complete unless the media corrupted it; the
//! footer's counts and CRC detect that, and the reader then falls back to the previous one.
//!
//! Format (see `docs/wal.md`): a 24-byte header, then CRC-framed entries in the record frame
//! format, the last of which is the footer.

use std::io::{Read, Write};

use super::record::{
    finish_frame, put_str, put_uvarint, read_frame, Reader, RecordError, FRAME_HEADER_BYTES,
};
use super::segment::WalDir;
use super::WalError;

/// First bytes of every checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"WEFTCKPT";
/// Format version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Header size: magic (8), version (4), index (8), CRC of those (4).
pub const CHECKPOINT_HEADER_BYTES: usize = 24;
/// Largest entry (one series with all its chunks). Rationale: 1M samples of XOR chunks is far
/// below this; the limit only stops a corrupt length word from driving a huge read.
pub const MAX_ENTRY_BYTES: usize = 256 << 20;

const ENTRY_SERIES: u8 = 1;
const ENTRY_FOOTER: u8 = 2;
/// Smallest chunk encoding: min_t (8), max_t (8), flags (1), data length (1).
const MIN_CHUNK_BYTES: usize = 18;

/// One chunk of a series in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointChunk {
    /// Oldest timestamp in the chunk.
    pub min_t: i64,
    /// Newest timestamp in the chunk.
    pub max_t: i64,
    /// Prometheus XOR chunk bytes; the series' last chunk may be its open head chunk.
    pub data: Vec<u8>,
    /// Whether the object store already holds this chunk.
    pub flushed: bool,
    /// Whether the chunk is in a local spill file; `data` is then the encoded spill
    /// reference (20 bytes, see `spill::SpillRef`), not the chunk.
    pub spilled: bool,
    /// An out-of-order chunk (flag bit 4): it may overlap the series' other chunks, and a
    /// flush mark never covers it. Never the open chunk.
    pub ooo: bool,
    /// Chunk encoding (`store::object::ENCODING_*`: 1 XOR, 2 histogram, 3 float
    /// histogram), kept in bits 2-3 of the flags byte as `encoding - 1` (0 for XOR, so
    /// checkpoints written before histograms read unchanged).
    pub encoding: u8,
}

/// One live series in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSeries {
    /// Global series ref.
    pub series_ref: u64,
    /// Tenant id.
    pub tenant: String,
    /// Label pairs, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Chunks, oldest first.
    pub chunks: Vec<CheckpointChunk>,
}

/// What a checkpoint holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// First segment not covered (the `N` of `checkpoint.N`).
    pub index: u64,
    /// Number of series.
    pub series: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// The file name of checkpoint `index`.
pub fn checkpoint_name(index: u64) -> String {
    format!("checkpoint.{index:08}")
}

/// The index of a checkpoint file name (not of a `.tmp`), if `name` is one.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint.")?;
    if digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn corrupt(name: &str, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::CorruptCheckpoint {
        name: name.to_owned(),
        offset,
        reason: reason.into(),
    }
}

fn sync_err<'a>(
    what: super::SyncTarget,
    name: &'a str,
) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Sync {
        what,
        name: name.to_owned(),
        source,
    }
}

fn io_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        name: name.to_owned(),
        source,
    }
}

/// Writes `checkpoint.<index>` from `series`: `.tmp`, fsync, rename, fsync of the directory.
///
/// On error the `.tmp` file is removed (best effort) and no `checkpoint.<index>` appears.
pub fn write_checkpoint(
    dir: &dyn WalDir,
    index: u64,
    series: impl Iterator<Item = CheckpointSeries>,
) -> Result<CheckpointStats, WalError> {
    let name = checkpoint_name(index);
    let tmp = format!("{name}.tmp");
    let res = write_tmp(dir, &tmp, index, series);
    let stats = match res {
        Ok(s) => s,
        Err(e) => {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
    };
    dir.rename(&tmp, &name).map_err(io_err("rename", &tmp))?;
    // A failure here is typed (`WalError::Sync`) so that the WAL poisons itself: the rename
    // may or may not be durable, and a retried directory fsync could succeed without it.
    dir.sync_dir()
        .map_err(sync_err(super::SyncTarget::Dir, &name))?;
    Ok(stats)
}

fn write_tmp(
    dir: &dyn WalDir,
    tmp: &str,
    index: u64,
    series: impl Iterator<Item = CheckpointSeries>,
) -> Result<CheckpointStats, WalError> {
    let mut w = dir.create(tmp).map_err(io_err("create", tmp))?;
    let mut header = Vec::with_capacity(CHECKPOINT_HEADER_BYTES);
    header.extend_from_slice(&CHECKPOINT_MAGIC);
    header.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    header.extend_from_slice(&index.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    w.write_all(&header).map_err(io_err("write", tmp))?;

    let mut stats = CheckpointStats {
        index,
        bytes: header.len() as u64,
        ..Default::default()
    };
    let mut body_crc = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    for s in series {
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        encode_series(&s, &mut buf);
        if buf.len() - FRAME_HEADER_BYTES > MAX_ENTRY_BYTES {
            return Err(WalError::RecordTooLarge {
                bytes: buf.len(),
                limit: MAX_ENTRY_BYTES,
            });
        }
        finish_entry(&mut buf, ENTRY_SERIES);
        body_crc.update(&buf);
        w.write_all(&buf).map_err(io_err("write", tmp))?;
        stats.series += 1;
        stats.chunks += s.chunks.len() as u64;
        stats.bytes += buf.len() as u64;
    }
    buf.clear();
    buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    buf.extend_from_slice(&stats.series.to_le_bytes());
    buf.extend_from_slice(&stats.chunks.to_le_bytes());
    buf.extend_from_slice(&body_crc.finalize().to_le_bytes());
    finish_entry(&mut buf, ENTRY_FOOTER);
    w.write_all(&buf).map_err(io_err("write", tmp))?;
    stats.bytes += buf.len() as u64;
    w.sync().map_err(sync_err(super::SyncTarget::File, tmp))?;
    Ok(stats)
}

fn finish_entry(buf: &mut Vec<u8>, kind: u8) {
    // The record frame limit is below MAX_ENTRY_BYTES, so frame entries by hand when larger.
    let payload_len = buf.len() - FRAME_HEADER_BYTES;
    if payload_len <= super::record::MAX_PAYLOAD_BYTES {
        finish_frame(buf, 0, kind).expect("length checked");
        return;
    }
    let crc = super::record::frame_crc(kind, &buf[FRAME_HEADER_BYTES..]);
    buf[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[4] = kind;
    buf[5..9].copy_from_slice(&crc.to_le_bytes());
}

fn encode_series(s: &CheckpointSeries, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&s.series_ref.to_le_bytes());
    put_str(buf, &s.tenant);
    put_uvarint(buf, s.labels.len() as u64);
    for (n, v) in &s.labels {
        put_str(buf, n);
        put_str(buf, v);
    }
    put_uvarint(buf, s.chunks.len() as u64);
    for c in &s.chunks {
        buf.extend_from_slice(&c.min_t.to_le_bytes());
        buf.extend_from_slice(&c.max_t.to_le_bytes());
        let enc_bits = c.encoding.saturating_sub(1) & 3;
        buf.push(
            u8::from(c.flushed)
                | (u8::from(c.spilled) << 1)
                | (enc_bits << 2)
                | (u8::from(c.ooo) << 4),
        );
        put_uvarint(buf, c.data.len() as u64);
        buf.extend_from_slice(&c.data);
    }
}

/// Decodes one series entry payload. Never panics, never allocates more than the payload.
pub fn decode_series(payload: &[u8]) -> Result<CheckpointSeries, RecordError> {
    let mut r = Reader::new(payload);
    let series_ref = r.u64_le()?;
    let tenant = r.str()?.to_owned();
    let n = r.uvarint()?;
    if n > (r.remaining() / 2) as u64 {
        return Err(RecordError::Malformed("label count exceeds entry"));
    }
    let mut labels = Vec::with_capacity(n as usize);
    for _ in 0..n {
        labels.push((r.str()?.to_owned(), r.str()?.to_owned()));
    }
    let n = r.uvarint()?;
    if n > (r.remaining() / MIN_CHUNK_BYTES) as u64 {
        return Err(RecordError::Malformed("chunk count exceeds entry"));
    }
    let mut chunks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let min_t = r.u64_le()? as i64;
        let max_t = r.u64_le()? as i64;
        let flags = r.u8()?;
        // Bits 0-1: flushed, spilled; bits 2-3: encoding - 1 (0..=2); bit 4: out-of-order
        // (XOR only).
        let (enc_bits, ooo) = ((flags >> 2) & 3, flags & 16 != 0);
        if flags > 0b1_1111 || enc_bits == 3 || (ooo && enc_bits != 0) {
            return Err(RecordError::Malformed("unknown chunk flags"));
        }
        let len = r.uvarint()?;
        if len > r.remaining() as u64 {
            return Err(RecordError::Malformed("chunk length exceeds entry"));
        }
        chunks.push(CheckpointChunk {
            min_t,
            max_t,
            data: r.bytes(len as usize)?.to_vec(),
            flushed: flags & 1 != 0,
            spilled: flags & 2 != 0,
            ooo,
            encoding: enc_bits + 1,
        });
    }
    if r.remaining() != 0 {
        return Err(RecordError::Malformed("trailing bytes after series entry"));
    }
    Ok(CheckpointSeries {
        series_ref,
        tenant,
        labels,
        chunks,
    })
}

/// Reads and validates a whole checkpoint from `input`, calling `f` for each series.
///
/// Validation is complete (header, every entry's CRC and format, footer counts and body CRC,
/// nothing after the footer), but entries are handed to `f` as they are read: callers that
/// must not apply a checkpoint that later turns out corrupt first run it with a no-op `f`
/// (see [`verify_checkpoint`]). Memory use is one entry.
pub fn decode_checkpoint(
    name: &str,
    mut input: impl Read,
    mut f: impl FnMut(CheckpointSeries) -> Result<(), WalError>,
) -> Result<CheckpointStats, WalError> {
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES];
    read_full(&mut input, &mut header)
        .map_err(io_err("read", name))?
        .then_some(())
        .ok_or_else(|| corrupt(name, 0, "shorter than the header"))?;
    if header[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(name, 0, "bad magic"));
    }
    let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..20]) != crc {
        return Err(corrupt(name, 0, "bad header CRC"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != CHECKPOINT_VERSION {
        return Err(corrupt(name, 8, format!("unsupported version {version}")));
    }
    let index = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if parse_checkpoint_name(name).is_some_and(|n| n != index) {
        return Err(corrupt(name, 12, format!("header says index {index}")));
    }
    let mut stats = CheckpointStats {
        index,
        bytes: CHECKPOINT_HEADER_BYTES as u64,
        ..Default::default()
    };
    let mut body_crc = crc32fast::Hasher::new();
    let mut buf = Vec::new();
    loop {
        let offset = stats.bytes;
        let mut fh = [0u8; FRAME_HEADER_BYTES];
        if !read_full(&mut input, &mut fh).map_err(io_err("read", name))? {
            return Err(corrupt(name, offset, "truncated: no footer"));
        }
        let len = u32::from_le_bytes(fh[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_ENTRY_BYTES {
            return Err(corrupt(name, offset, format!("bad entry length {len}")));
        }
        buf.clear();
        buf.extend_from_slice(&fh);
        // `take` + `read_to_end` grows the buffer only as bytes actually arrive, so a corrupt
        // length cannot make us allocate more than the file holds.
        (&mut input)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(io_err("read", name))?;
        if buf.len() != FRAME_HEADER_BYTES + len {
            return Err(corrupt(name, offset, "truncated entry"));
        }
        let frame = read_frame(&buf, MAX_ENTRY_BYTES)
            .map_err(|e| corrupt(name, offset, e.to_string()))?
            .ok_or_else(|| corrupt(name, offset, "zero entry length"))?;
        stats.bytes += frame.len as u64;
        match frame.ty {
            ENTRY_SERIES => {
                body_crc.update(&buf);
                let s = decode_series(frame.payload)
                    .map_err(|e| corrupt(name, offset, e.to_string()))?;
                stats.series += 1;
                stats.chunks += s.chunks.len() as u64;
                f(s)?;
            }
            ENTRY_FOOTER => {
                let mut r = Reader::new(frame.payload);
                let (series, chunks, crc) =
                    (|| Ok::<_, RecordError>((r.u64_le()?, r.u64_le()?, r.bytes(4)?)))()
                        .map_err(|e| corrupt(name, offset, e.to_string()))?;
                let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
                if r.remaining() != 0 {
                    return Err(corrupt(name, offset, "trailing bytes in footer"));
                }
                if series != stats.series || chunks != stats.chunks {
                    return Err(corrupt(
                        name,
                        offset,
                        format!(
                            "footer counts {series} series / {chunks} chunks, read {} / {}",
                            stats.series, stats.chunks
                        ),
                    ));
                }
                if crc != body_crc.finalize() {
                    return Err(corrupt(name, offset, "footer body CRC mismatch"));
                }
                let mut extra = [0u8; 1];
                if read_full(&mut input, &mut extra).map_err(io_err("read", name))? {
                    return Err(corrupt(name, stats.bytes, "bytes after the footer"));
                }
                return Ok(stats);
            }
            other => return Err(corrupt(name, offset, format!("unknown entry kind {other}"))),
        }
    }
}

/// Checks a whole checkpoint without keeping anything.
pub fn verify_checkpoint(dir: &dyn WalDir, name: &str) -> Result<CheckpointStats, WalError> {
    let input = dir.open_read(name).map_err(io_err("open", name))?;
    decode_checkpoint(
        name,
        std::io::BufReader::with_capacity(1 << 20, input),
        |_| Ok(()),
    )
}

/// Reads a checkpoint, calling `f` for each series.
pub fn read_checkpoint(
    dir: &dyn WalDir,
    name: &str,
    f: impl FnMut(CheckpointSeries) -> Result<(), WalError>,
) -> Result<CheckpointStats, WalError> {
    let input = dir.open_read(name).map_err(io_err("open", name))?;
    decode_checkpoint(name, std::io::BufReader::with_capacity(1 << 20, input), f)
}

/// One damaged stretch of a checkpoint that [`salvage_checkpoint`] skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// Offset of the first skipped byte.
    pub offset: u64,
    /// Offset where reading resumed (or the end of the file).
    pub end: u64,
    /// Why the bytes at `offset` were rejected.
    pub reason: String,
    /// The series ref the damaged entry names, if its header still looks like a series
    /// entry's (unverified: its CRC failed).
    pub probable_ref: Option<u64>,
}

/// What [`salvage_checkpoint`] could read from a corrupt checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Series entries read intact (CRC and format) and handed on.
    pub series: u64,
    /// Their chunks.
    pub chunks: u64,
    /// The stretches skipped, in file order.
    pub damaged: Vec<DamagedEntry>,
    /// `(series, chunks)` from the footer, if an intact footer was found: how many the
    /// checkpoint held when written.
    pub footer: Option<(u64, u64)>,
}

/// Most damaged stretches [`salvage_checkpoint`] lists one by one. Rationale: the log and the
/// report stay readable when a checkpoint is garbage from end to end; later ones are merged
/// into the last entry.
pub const MAX_DAMAGED_ENTRIES_LISTED: usize = 1000;

/// Reads every intact series entry of a **corrupt** checkpoint image `buf` and calls `f` for
/// each, skipping damaged bytes by resynchronising on the CRC framing (the next offset where a
/// complete, CRC-valid entry starts). Used only when no valid checkpoint exists and the
/// segments it covers are gone (`--wal.on-corruption=repair`). Never panics on any input.
///
/// The header is checked but a bad one does not stop the salvage: entries start at
/// [`CHECKPOINT_HEADER_BYTES`] whatever it says.
pub fn salvage_checkpoint(
    buf: &[u8],
    mut f: impl FnMut(CheckpointSeries) -> Result<(), WalError>,
) -> Result<SalvageReport, WalError> {
    let mut rep = SalvageReport::default();
    let damage = |rep: &mut SalvageReport, offset: usize, end: usize, reason: String| {
        let probable_ref = (buf.len() >= offset + FRAME_HEADER_BYTES + 8
            && buf[offset + 4] == ENTRY_SERIES)
            .then(|| {
                u64::from_le_bytes(
                    buf[offset + FRAME_HEADER_BYTES..offset + FRAME_HEADER_BYTES + 8]
                        .try_into()
                        .expect("8 bytes"),
                )
            });
        if rep.damaged.len() < MAX_DAMAGED_ENTRIES_LISTED {
            rep.damaged.push(DamagedEntry {
                offset: offset as u64,
                end: end as u64,
                reason,
                probable_ref,
            });
        } else if let Some(last) = rep.damaged.last_mut() {
            last.end = end as u64;
        }
    };
    let header_ok = buf.len() >= CHECKPOINT_HEADER_BYTES
        && buf[..8] == CHECKPOINT_MAGIC
        && crc32fast::hash(&buf[..20])
            == u32::from_le_bytes(buf[20..24].try_into().expect("4 bytes"));
    if !header_ok {
        let end = buf.len().min(CHECKPOINT_HEADER_BYTES);
        damage(&mut rep, 0, end, "bad header".to_owned());
    }
    let mut off = CHECKPOINT_HEADER_BYTES;
    while off < buf.len() {
        let frame = match read_frame(&buf[off..], MAX_ENTRY_BYTES) {
            Ok(Some(frame)) => frame,
            bad => {
                let reason = match bad {
                    Err(e) => e.to_string(),
                    _ => "zero entry length".to_owned(),
                };
                // Resynchronise: the next offset where a complete, CRC-valid entry starts.
                let next = (off + 1..buf.len().saturating_sub(FRAME_HEADER_BYTES)).find(|&o| {
                    buf[o..o + 4] != [0, 0, 0, 0]
                        && (buf[o + 4] == ENTRY_SERIES || buf[o + 4] == ENTRY_FOOTER)
                        && matches!(read_frame(&buf[o..], MAX_ENTRY_BYTES), Ok(Some(_)))
                });
                let end = next.unwrap_or(buf.len());
                damage(&mut rep, off, end, reason);
                off = end;
                continue;
            }
        };
        let next = off + frame.len;
        match frame.ty {
            ENTRY_SERIES => match decode_series(frame.payload) {
                Ok(s) => {
                    rep.series += 1;
                    rep.chunks += s.chunks.len() as u64;
                    f(s)?;
                }
                Err(e) => damage(&mut rep, off, next, e.to_string()),
            },
            ENTRY_FOOTER => {
                let mut r = Reader::new(frame.payload);
                if let (Ok(series), Ok(chunks)) = (r.u64_le(), r.u64_le()) {
                    rep.footer = Some((series, chunks));
                }
                if next < buf.len() {
                    damage(
                        &mut rep,
                        next,
                        buf.len(),
                        "bytes after the footer".to_owned(),
                    );
                }
                return Ok(rep);
            }
            other => damage(&mut rep, off, next, format!("unknown entry kind {other}")),
        }
        off = next;
    }
    // No footer: the file ends early, or the footer itself was damaged (then it is listed).
    Ok(rep)
}

/// Fills `buf` completely: `Ok(true)`; at a clean end of input before any byte: `Ok(false)`;
/// a partial fill is reported as `Ok(false)` too (the caller treats both as truncation).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::segment::MemDir;
    use proptest::prelude::*;

    pub(crate) fn sample_series(n: u64) -> Vec<CheckpointSeries> {
        (0..n)
            .map(|i| CheckpointSeries {
                series_ref: i * 3 + 1,
                tenant: format!("tenant-{}", i % 3),
                labels: vec![
                    ("__name__".into(), "up".into()),
                    ("instance".into(), format!("host-{i}")),
                ],
                chunks: vec![
                    CheckpointChunk {
                        min_t: 1000,
                        max_t: 2000,
                        data: vec![0, 2, 0x80, 0x7f, 0xff, 0x00, 0x01],
                        flushed: i % 2 == 0,
                        spilled: false,
                        ooo: false,
                        encoding: crate::store::object::ENCODING_XOR,
                    },
                    CheckpointChunk {
                        min_t: 2500,
                        max_t: 2900,
                        data: vec![7; 20],
                        flushed: i % 3 == 0,
                        spilled: true,
                        ooo: i % 5 == 0 && i % 2 == 1,
                        // Histogram chunks keep their encoding in the flags byte.
                        encoding: if i % 2 == 0 {
                            crate::store::object::ENCODING_HISTOGRAM
                        } else {
                            crate::store::object::ENCODING_XOR
                        },
                    },
                    CheckpointChunk {
                        min_t: 3000,
                        max_t: 3000,
                        data: vec![0, 1, 2],
                        flushed: false,
                        spilled: false,
                        ooo: false,
                        encoding: 1 + (i % 3) as u8,
                    },
                ],
            })
            .collect()
    }

    fn encoded(series: &[CheckpointSeries]) -> Vec<u8> {
        let d = MemDir::new();
        write_checkpoint(&d, 7, series.iter().cloned()).unwrap();
        d.written(&checkpoint_name(7)).unwrap()
    }

    #[test]
    fn checkpoint_round_trips_and_leaves_no_tmp() {
        let series = sample_series(10);
        let d = MemDir::new();
        let st = write_checkpoint(&d, 7, series.iter().cloned()).unwrap();
        assert_eq!((st.series, st.chunks), (10, 30));
        assert_eq!(d.list().unwrap(), vec![checkpoint_name(7)]);
        let mut back = Vec::new();
        let st2 = read_checkpoint(&d, &checkpoint_name(7), |s| {
            back.push(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(st, st2);
        assert_eq!(back, series);
    }

    #[test]
    fn every_truncation_of_a_checkpoint_is_detected() {
        let bytes = encoded(&sample_series(3));
        for cut in 0..bytes.len() {
            let r = decode_checkpoint("checkpoint.00000007", &bytes[..cut], |_| Ok(()));
            assert!(
                matches!(r, Err(WalError::CorruptCheckpoint { .. })),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_of_a_checkpoint_is_detected() {
        let bytes = encoded(&sample_series(2));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            let r = decode_checkpoint("checkpoint.00000007", &b[..], |_| Ok(()));
            assert!(r.is_err(), "flip at {i} unnoticed");
        }
    }

    #[test]
    fn trailing_bytes_after_footer_are_rejected() {
        let mut bytes = encoded(&sample_series(1));
        bytes.push(0);
        assert!(decode_checkpoint("checkpoint.00000007", &bytes[..], |_| Ok(())).is_err());
    }

    proptest! {
        #[test]
        fn checkpoint_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_checkpoint("x", &bytes[..], |_| Ok(()));
            let _ = decode_series(&bytes);
        }

        #[test]
        fn salvage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = salvage_checkpoint(&bytes, |_| Ok(()));
            let mut with_header = encoded(&[])[..CHECKPOINT_HEADER_BYTES].to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = salvage_checkpoint(&with_header, |_| Ok(()));
        }

        /// Damage anywhere in a checkpoint: salvage returns exactly the entries whose bytes
        /// are unchanged (a damaged footer only loses the counts).
        #[test]
        fn salvage_returns_every_intact_entry(
            n in 1u64..8,
            at in any::<prop::sample::Index>(),
            mask in prop::collection::vec(1u8..=255, 1..16),
        ) {
            let series = sample_series(n);
            let good = encoded(&series);
            let mut bad = good.clone();
            let off = at.index(bad.len());
            for (i, m) in mask.iter().enumerate() {
                if let Some(b) = bad.get_mut(off + i) {
                    *b ^= m;
                }
            }
            let mut intact = Vec::new();
            let mut o = CHECKPOINT_HEADER_BYTES;
            for s in &series {
                let len = read_frame(&good[o..], MAX_ENTRY_BYTES).unwrap().unwrap().len;
                if bad[o..o + len] == good[o..o + len] {
                    intact.push(s.clone());
                }
                o += len;
            }
            let mut back = Vec::new();
            let rep = salvage_checkpoint(&bad, |s| {
                back.push(s);
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(back, intact);
            prop_assert!(!rep.damaged.is_empty());
        }

        #[test]
        fn checkpoint_decode_never_panics_after_valid_header(tail in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = encoded(&[])[..CHECKPOINT_HEADER_BYTES].to_vec();
            bytes.extend_from_slice(&tail);
            let _ = decode_checkpoint("checkpoint.00000007", &bytes[..], |_| Ok(()));
        }
    }
}
