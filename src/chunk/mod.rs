//! The Prometheus XOR chunk encoding (chunkenc encoding 1), bit-exact with Prometheus 2.42.
//!
//! **Invariant:** this module knows nothing about series, tenants or I/O.
//!
//! A chunk is the 2-byte big-endian sample count followed by the bit stream; this is exactly
//! what Prometheus stores as a chunk's data and sends in remote read. Bits are written most
//! significant first; unused bits of the last byte are zero.
//!
//! | sample | timestamp | value |
//! |--------|-----------|-------|
//! | 0 | `t` as a zigzag varint (Go `PutVarint`) | 64 raw bits |
//! | 1 | `t - t0` as a uvarint | XOR value |
//! | n ≥ 2 | delta of delta `dod`: `0`; `10` + 14 bits; `110` + 17; `1110` + 20; `1111` + 64 | XOR value |
//!
//! XOR value, `x = bits ^ previous bits`: `0` if `x == 0`; else `10` + the significant bits
//! in the previous leading/trailing-zero window if they fit; else `11` + 5 bits of leading
//! zeros (at most 31) + 6 bits of significant-bit count (64 written as 0) + those bits.
//! All timestamp arithmetic wraps, so any `i64` timestamps round-trip.
//!
//! Two Prometheus quirks are kept for bit-exactness (see `tsdb/chunkenc/xor.go` and
//! `bstream.go` in Prometheus 2.42): the `dod` ranges are `-(2^(n-1) - 1) ..= 2^(n-1)`, and a
//! chunk whose last write was a whole number of bytes ending on a byte boundary carries
//! one more, empty byte (so a one-sample chunk is 2 + varint + 8 + 1 bytes long).

mod bstream;
mod float_histogram;
mod histogram;
mod histogram_head;
mod histogram_meta;
mod varbit;

pub use float_histogram::{FloatHistogramAppender, FloatHistogramIterator};
pub use histogram::{
    Appended, CounterResetHeader, HistogramAppender, HistogramIterator, STALE_NAN_BITS,
};
pub use histogram_head::{
    decode_histogram_chunk, encode_histograms, ClosedChunk, HistogramChunkIter,
    HistogramHeadAppender, DEFAULT_CHUNK_RANGE_MS,
};

/// Chunk encoding of float samples (Prometheus `EncXOR`).
pub const ENCODING_XOR: u8 = 1;
/// Chunk encoding of integer native histograms (Prometheus `EncHistogram`).
pub const ENCODING_HISTOGRAM: u8 = 2;
/// Chunk encoding of float native histograms (Prometheus `EncFloatHistogram`).
pub const ENCODING_FLOAT_HISTOGRAM: u8 = 3;

use thiserror::Error;

/// Prometheus cuts a head chunk at this many samples.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Errors from decoding a chunk.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The chunk is shorter than its 2-byte header.
    #[error("chunk too short: {len} bytes, need at least 2")]
    TooShort {
        /// Length of the chunk in bytes.
        len: usize,
    },
    /// The bit stream ended before the header's sample count was reached.
    #[error("chunk truncated: header says {expected} samples, stream ended after {decoded}")]
    Truncated {
        /// Samples the header claims.
        expected: u16,
        /// Samples decoded before the stream ran out.
        decoded: u16,
    },
    /// The stream holds an impossible encoding.
    #[error("chunk corrupt at sample {sample}: {what}")]
    Corrupt {
        /// Index of the sample being decoded.
        sample: u16,
        /// What was wrong.
        what: &'static str,
    },
}

/// Bytes of the sample-count header at the start of every chunk.
const HEADER_BYTES: usize = 2;

/// Upper bound on the bits one sample can take, used to reserve buffer space once per
/// append: a 4-bit prefix and 64-bit delta of delta, then `11`, 5 + 6 bits of window and
/// 64 significant bits. The first sample (10-byte varint, 64 bits) is smaller.
const MAX_SAMPLE_BITS: usize = 4 + 64 + 2 + 11 + 64;

/// Marks "no leading/trailing window yet", as Prometheus's `xorAppender.leading = 0xff`.
const NO_WINDOW: u8 = 0xff;

/// A new chunk's buffer capacity. Prometheus starts with 128 bytes (`make([]byte, 2, 128)`),
/// which a 120-sample chunk of real data usually fills; but every active series holds an
/// open chunk, and most of them hold only a few samples, so weft starts small and lets the
/// buffer double as samples come (56 → 112 → 224: two moves for a full chunk). 56 bytes and
/// glibc's 8-byte chunk header make one 64-byte allocation, which holds the header, the
/// first sample (up to 18 bytes), a few typical later ones, and the room `append` reserves
/// (`MAX_SAMPLE_BITS` plus the writer's padding): 4 node_exporter-like samples fit without
/// a move (docs/benchmarks.md, "Memory per active series": 80 bytes a series less than
/// the 128-byte start).
const INITIAL_CAPACITY_BYTES: usize = 56;

/// Appends samples to an open XOR chunk.
///
/// Produces the same bytes as Prometheus 2.42's `xorAppender` for the same samples.
#[derive(Debug, Clone)]
pub struct XorAppender {
    w: bstream::BitWriter,
    num: u16,
    t: i64,
    t_delta: u64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// A fresh, empty chunk.
    pub fn new() -> Self {
        let mut w = bstream::BitWriter::with_capacity(INITIAL_CAPACITY_BYTES);
        w.reserve_bits(16);
        w.write(0, 16);
        Self {
            w,
            num: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// Resumes appending to an existing chunk (for example one recovered from a checkpoint).
    /// The result appends exactly as the appender that wrote `chunk` would have.
    ///
    /// Bytes after the last sample's bits are dropped. Unlike Prometheus's
    /// `XORChunk.Appender`, a chunk whose values never changed resumes without a
    /// leading/trailing window, as the original appender had; Prometheus would resume with
    /// a window of 0/0 and from then on spend 64 bits on every changed value.
    pub fn from_chunk(chunk: &[u8]) -> Result<Self, ChunkError> {
        let mut it = XorIterator::new(chunk)?;
        for s in it.by_ref() {
            s?;
        }
        let end_bits = it.r.pos_bits();
        let ends_with_bytes = it.num_read > 0 && it.ends_with_whole_bytes;
        Ok(Self {
            w: bstream::BitWriter::from_bytes(chunk.to_vec(), end_bits, ends_with_bytes),
            num: it.num_read,
            t: it.t,
            t_delta: it.t_delta,
            v: it.v,
            leading: it.leading,
            trailing: it.trailing,
        })
    }

    /// The newest sample as (timestamp, value bits), if the chunk has any.
    pub fn last(&self) -> Option<(i64, u64)> {
        (self.num > 0).then_some((self.t, self.v))
    }

    /// Appends one sample. Timestamps must be strictly increasing; the caller checks that.
    /// (The encoding itself uses wrapping arithmetic, so any sequence round-trips.)
    ///
    /// # Panics
    ///
    /// If the chunk already holds `u16::MAX` samples: the header cannot count more. Callers
    /// cut chunks at [`SAMPLES_PER_CHUNK`].
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        let num = self
            .num
            .checked_add(1)
            .expect("XOR chunk cannot hold more than u16::MAX samples");
        let v = v.to_bits();
        self.w.reserve_bits(MAX_SAMPLE_BITS);
        let mut t_delta = t.wrapping_sub(self.t) as u64;
        let ends_with_whole_bytes = if self.num >= 2 {
            let dod = t_delta.wrapping_sub(self.t_delta) as i64;
            let (dod_bits, dod_n) = self.dod_bits(dod);
            self.write_value(dod_bits, dod_n, v)
        } else if self.num == 1 {
            self.write_uvarint(t_delta);
            self.write_value(0, 0, v)
        } else {
            // Prometheus stores no delta for the first sample.
            t_delta = 0;
            // Go's binary.PutVarint: zigzag, then uvarint.
            let zz = ((t << 1) ^ (t >> 63)) as u64;
            self.write_uvarint(zz);
            self.w.write_wide(v, 64);
            true
        };
        self.w.set_trailing_empty_byte(ends_with_whole_bytes);
        self.t = t;
        self.v = v;
        self.t_delta = t_delta;
        self.num = num;
        self.w.set_be_u16(0, num);
    }

    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.w.write((x & 0x7f) | 0x80, 8);
            x >>= 7;
        }
        self.w.write(x, 8);
    }

    /// The delta of delta with its prefix, as `(bits, count)` to be written by
    /// `write_value` together with the value's control bits. The ranges are Prometheus's
    /// `bitRange`: `-(2^(n-1) - 1) ..= 2^(n-1)`, one more on the positive side than two's
    /// complement allows, which the reader undoes. The rare 64-bit case is written here
    /// and returns no bits.
    #[inline]
    fn dod_bits(&mut self, dod: i64) -> (u64, u32) {
        let u = dod as u64;
        if dod == 0 {
            (0, 1)
        } else if (-8191..=8192).contains(&dod) {
            ((0b10 << 14) | (u & 0x3fff), 16)
        } else if (-65535..=65536).contains(&dod) {
            ((0b110 << 17) | (u & 0x1_ffff), 20)
        } else if (-524_287..=524_288).contains(&dod) {
            ((0b1110 << 20) | (u & 0xf_ffff), 24)
        } else {
            self.w.write(0b1111, 4);
            self.w.write_wide(u, 64);
            (0, 0)
        }
    }

    /// Writes `pre_n <= 24` bits `pre` (the timestamp part), then the value as Prometheus's
    /// `xorWrite`: the XOR with the previous value, reusing the previous leading/trailing-zero
    /// window when the new significant bits fit inside it. Pieces are merged into as few
    /// writes as fit in one word.
    ///
    /// Returns whether Prometheus's last write was a whole number of bytes (see
    /// `BitWriter::set_trailing_empty_byte`).
    #[inline(always)]
    fn write_value(&mut self, pre: u64, pre_n: u32, v: u64) -> bool {
        let delta = v ^ self.v;
        if delta == 0 {
            // Zero bits need no store when all that is written is zeros: the buffer past the
            // end is already zero. This is the common "same timestamp step, same value" case.
            if pre == 0 {
                self.w.skip(pre_n + 1);
            } else {
                self.w.write(pre << 1, pre_n + 1);
            }
            return false;
        }
        self.write_changed_value(pre, pre_n, delta)
    }

    /// The rest of `write_value`, for a value that changed (`delta != 0`).
    #[inline(never)]
    fn write_changed_value(&mut self, pre: u64, pre_n: u32, delta: u64) -> bool {
        // Clamped so that it fits the 5-bit field.
        let leading = delta.leading_zeros().min(31) as u8;
        let trailing = delta.trailing_zeros() as u8;
        let (head, head_n, sig, bits);
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            head = 0b10;
            head_n = 2;
            sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            bits = delta >> self.trailing;
        } else {
            self.leading = leading;
            self.trailing = trailing;
            sig = 64 - u32::from(leading) - u32::from(trailing);
            // 64 significant bits are written as 0: the field has 6 bits and 0 never
            // occurs otherwise (a zero XOR takes the branch above).
            head = (0b11 << 11) | (u64::from(leading) << 6) | u64::from(sig & 63);
            head_n = 13;
            bits = delta >> trailing;
        }
        let pre = (pre << head_n) | head;
        let pre_n = pre_n + head_n;
        if pre_n + sig <= bstream::MAX_FAST_BITS {
            self.w.write((pre << sig) | bits, pre_n + sig);
        } else {
            self.w.write(pre, pre_n);
            self.w.write_wide(bits, sig);
        }
        sig % 8 == 0
    }

    /// Samples in the chunk.
    pub fn num_samples(&self) -> usize {
        usize::from(self.num)
    }

    /// The chunk's bytes so far: always a complete, decodable chunk.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Gives up the chunk's bytes, shrunk to fit.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_bytes()
    }

    /// Bytes of heap this appender holds (its buffer's capacity).
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }
}

/// Iterates the samples of a chunk, validating as it goes. Never reads past the slice.
///
/// After an error it yields `None`. Like Prometheus's reader it ignores anything after the
/// header's count of samples, and it accepts the one encoding Prometheus's writer can emit
/// only after resuming a chunk: reusing the value window before any was set, which means a
/// 0/0 window (64 significant bits).
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    r: bstream::BitReader<'a>,
    num_total: u16,
    num_read: u16,
    /// Samples `next` may still decode up to: `num_total`, or `num_read` after an error.
    limit: u16,
    /// Samples already skipped over in the stream that repeat the previous timestamp step
    /// and value; `next` hands them out without touching the stream.
    run: u16,
    t: i64,
    t_delta: u64,
    v: u64,
    leading: u8,
    trailing: u8,
    /// Whether the last sample's encoding ended with a whole number of bytes (the first
    /// value, or 8, 16, ... significant bits), for `XorAppender::from_chunk`.
    ends_with_whole_bytes: bool,
}

impl<'a> XorIterator<'a> {
    /// Starts iterating `chunk` (2-byte count, then the bit stream).
    pub fn new(chunk: &'a [u8]) -> Result<Self, ChunkError> {
        let Some(header) = chunk.get(..HEADER_BYTES) else {
            return Err(ChunkError::TooShort { len: chunk.len() });
        };
        Ok(Self {
            r: bstream::BitReader::new(chunk, HEADER_BYTES * 8),
            num_total: u16::from_be_bytes([header[0], header[1]]),
            num_read: 0,
            limit: u16::from_be_bytes([header[0], header[1]]),
            run: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: NO_WINDOW,
            trailing: 0,
            ends_with_whole_bytes: false,
        })
    }

    /// Samples the header claims.
    pub fn num_samples(&self) -> u16 {
        self.num_total
    }

    /// Advances to the first sample with timestamp `>= t` and returns it; `None` if none.
    /// Like Prometheus's `Seek`, it never moves backwards: if the current sample is already
    /// at or past `t`, it is returned again.
    ///
    /// The current sample is the last one decoded, by `next` or `seek`, even once the
    /// iterator is exhausted (as in Prometheus). After an error, `seek` returns `None`.
    pub fn seek(&mut self, t: i64) -> Option<Result<(i64, f64), ChunkError>> {
        if self.failed() {
            return None;
        }
        if self.num_read > 0 && self.t >= t {
            return Some(Ok((self.t, f64::from_bits(self.v))));
        }
        loop {
            match self.next()? {
                Ok((st, v)) if st >= t => return Some(Ok((st, v))),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn failed(&self) -> bool {
        self.limit < self.num_total && self.num_read == self.limit
    }

    #[cold]
    fn fail(&mut self, what: &'static str) -> ChunkError {
        self.limit = self.num_read;
        if self.r.overran() {
            // Made-up zero bits past the end can look like nonsense; the real problem is
            // that the stream ended.
            ChunkError::Truncated {
                expected: self.num_total,
                decoded: self.num_read,
            }
        } else {
            ChunkError::Corrupt {
                sample: self.num_read,
                what,
            }
        }
    }

    /// Go's `binary.ReadUvarint` over the bit stream: at most 10 bytes, and the 10th may
    /// only be 0 or 1.
    fn read_uvarint(&mut self) -> Result<u64, ChunkError> {
        let mut x = 0u64;
        for i in 0..10 {
            let b = self.r.read(8);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(x | (b << (7 * i)));
            }
            x |= (b & 0x7f) << (7 * i);
        }
        Err(self.fail("varint overflows 64 bits"))
    }

    fn read_first(&mut self) -> Result<(), ChunkError> {
        let zz = self.read_uvarint()?;
        self.t = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        self.v = self.r.read_wide(64);
        self.ends_with_whole_bytes = true;
        Ok(())
    }

    fn read_second(&mut self) -> Result<(), ChunkError> {
        self.t_delta = self.read_uvarint()?;
        self.t = self.t.wrapping_add(self.t_delta as i64);
        let w = self.r.peek();
        self.read_value(w, 0)
    }

    /// Decodes a sample after the second, `w` being the peeked stream at its start.
    #[inline]
    fn read_later(&mut self, w: u64) -> Result<(), ChunkError> {
        // The prefix is 0, 10, 110, 1110 or 1111: its number of leading ones.
        let (dod, w, used) = match w.leading_ones() {
            0 => (0, w, 1),
            1 => (dod_from_bits((w << 2) >> 50, 14), w, 16),
            2 => (dod_from_bits((w << 3) >> 47, 17), w, 20),
            3 => (dod_from_bits((w << 4) >> 44, 20), w, 24),
            _ => {
                self.r.skip(4);
                let dod = self.r.read_wide(64) as i64;
                (dod, self.r.peek(), 0)
            }
        };
        self.t_delta = self.t_delta.wrapping_add(dod as u64);
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.read_value(w, used)
    }

    /// Prometheus's `xorRead`, rejecting windows wider than 64 bits. `w` is the peeked
    /// stream of which `used <= 24` bits are already decoded but not yet skipped, so that
    /// the value's control bits (at most 13) come from the same word.
    #[inline]
    fn read_value(&mut self, w: u64, used: u32) -> Result<(), ChunkError> {
        let x = w << used;
        if x >> 63 == 0 {
            self.r.skip(used + 1);
            self.ends_with_whole_bytes = false;
            return Ok(());
        }
        let head_n = if (x >> 62) & 1 == 0 {
            if self.leading == NO_WINDOW {
                self.leading = 0;
                self.trailing = 0;
            }
            2
        } else {
            let leading = ((x >> 57) & 0x1f) as u8;
            let sig = ((x >> 51) & 0x3f) as u8;
            let sig = if sig == 0 { 64 } else { sig };
            if leading + sig > 64 {
                self.r.skip(used + 13);
                return Err(self.fail("leading zeros plus significant bits exceed 64"));
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
            13
        };
        let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
        let consumed = used + head_n;
        let bits = if consumed + sig <= bstream::MAX_FAST_BITS {
            self.r.skip(consumed + sig);
            (w << consumed) >> (64 - sig)
        } else {
            self.r.skip(consumed);
            self.r.read_wide(sig)
        };
        self.v ^= bits << self.trailing;
        self.ends_with_whole_bytes = sig % 8 == 0;
        Ok(())
    }
}

/// Undoes the asymmetric range of Prometheus's `bitRange`: `2^(n-1)` itself is positive.
#[inline]
fn dod_from_bits(bits: u64, n: u32) -> i64 {
    let bits = bits as i64;
    if bits > 1 << (n - 1) {
        bits - (1 << n)
    } else {
        bits
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.run > 0 {
            self.run -= 1;
            self.num_read += 1;
            self.t = self.t.wrapping_add(self.t_delta as i64);
            return Some(Ok((self.t, f64::from_bits(self.v))));
        }
        if self.num_read >= self.limit {
            return None;
        }
        if self.num_read >= 2 {
            let w = self.r.peek();
            if w >> 62 == 0 {
                // Same timestamp step and same value (bits `00`): most samples of real data.
                // Take every such sample this word holds at once, as far as the stream and
                // the sample count go; the first is returned now, the rest by `run`.
                let pairs = w.leading_zeros().min(bstream::MAX_FAST_BITS - 1) / 2;
                let left = usize::from(self.limit - self.num_read);
                let k = (pairs as usize).min(left).min(self.r.remaining_bits() / 2);
                if k == 0 {
                    // Fewer than 2 real bits: let the check below report the truncation.
                    self.r.skip(2);
                } else {
                    self.r.skip(2 * k as u32);
                    self.run = (k - 1) as u16;
                }
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.ends_with_whole_bytes = false;
            } else if let Err(e) = self.read_later(w) {
                return Some(Err(e));
            }
        } else {
            let res = if self.num_read == 0 {
                self.read_first()
            } else {
                self.read_second()
            };
            if let Err(e) = res {
                return Some(Err(e));
            }
        }
        if self.r.overran() {
            self.limit = self.num_read;
            return Some(Err(ChunkError::Truncated {
                expected: self.num_total,
                decoded: self.num_read,
            }));
        }
        self.num_read += 1;
        Some(Ok((self.t, f64::from_bits(self.v))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.limit - self.num_read)))
    }
}

/// Decodes a whole chunk into `(t, value bits)` pairs.
pub fn decode_bits(chunk: &[u8]) -> Result<Vec<(i64, u64)>, ChunkError> {
    XorIterator::new(chunk)?
        .map(|s| s.map(|(t, v)| (t, v.to_bits())))
        .collect()
}

/// Appends the samples of `chunk` within `[mint, maxt]` to `out` (seeking to `mint`).
/// Returns false if the chunk does not decode; samples before the bad spot are kept.
pub fn push_range(chunk: &[u8], mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) -> bool {
    let Ok(mut it) = XorIterator::new(chunk) else {
        return false;
    };
    let mut next = it.seek(mint);
    loop {
        match next {
            Some(Ok((t, v))) if t <= maxt => out.push((t, v)),
            Some(Err(_)) => return false,
            _ => return true,
        }
        next = it.next();
    }
}

/// Encodes samples with a fresh appender.
pub fn encode(samples: impl IntoIterator<Item = (i64, f64)>) -> Vec<u8> {
    let mut app = XorAppender::new();
    for (t, v) in samples {
        app.append(t, v);
    }
    app.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk from raw `(bits, count)` fields, for streams no appender writes.
    fn raw_chunk(fields: &[(u64, u32)]) -> Vec<u8> {
        let mut w = bstream::BitWriter::with_capacity(64);
        for &(v, n) in fields {
            w.reserve_bits(64);
            w.write_wide(v, n);
        }
        w.into_bytes()
    }

    fn check(samples: &[(i64, u64)], expected_hex: &str) {
        let bytes = encode(samples.iter().map(|&(t, v)| (t, f64::from_bits(v))));
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected_hex, "{samples:?}");
        assert_eq!(decode_bits(&bytes).unwrap(), samples);
    }

    #[test]
    fn empty_and_single_sample_chunks_match_prometheus_layout() {
        check(&[], "0000");
        // Prometheus's writeByte leaves an empty byte after the 64-bit first value.
        check(&[(1, 0x3ff0_0000_0000_0000)], "0001023ff000000000000000");
        check(&[(-1, 0)], "000101000000000000000000");
    }

    #[test]
    fn reusing_the_value_window_before_one_was_set_reads_64_bits_like_prometheus() {
        // What Prometheus's resumed appender writes: '1' '0' and 64 bits, window 0/0.
        let bytes = raw_chunk(&[(2, 16), (0, 8), (0, 64), (1, 8), (0b10, 2), (u64::MAX, 64)]);
        assert_eq!(decode_bits(&bytes).unwrap(), vec![(0, 0), (1, u64::MAX)]);
    }

    #[test]
    fn a_window_wider_than_64_bits_is_corrupt() {
        // '11', 31 leading zeros, 40 significant bits: 71 bits.
        let bytes = raw_chunk(&[
            (2, 16),
            (0, 8),
            (0, 64),
            (1, 8),
            (0b11, 2),
            (31, 5),
            (40, 6),
            (0, 64),
        ]);
        assert_eq!(
            decode_bits(&bytes),
            Err(ChunkError::Corrupt {
                sample: 1,
                what: "leading zeros plus significant bits exceed 64"
            })
        );
    }

    #[test]
    fn an_overlong_varint_is_corrupt() {
        let mut fields = vec![(1, 16)];
        fields.extend(std::iter::repeat_n((0xff, 8), 10));
        fields.push((0, 64));
        let bytes = raw_chunk(&fields);
        assert!(matches!(
            decode_bits(&bytes),
            Err(ChunkError::Corrupt { sample: 0, .. })
        ));
    }

    #[test]
    fn timestamps_wrap_across_the_whole_i64_range() {
        let samples = [(i64::MIN, 1), (0, 2), (i64::MAX, 3), (i64::MAX - 1, 3)];
        let bytes = encode(samples.iter().map(|&(t, v)| (t, f64::from_bits(v))));
        assert_eq!(decode_bits(&bytes).unwrap(), samples);
    }

    #[test]
    fn errors_end_iteration_and_seek() {
        let mut bytes = encode([(1, 1.0), (2, 2.0)]);
        bytes[..2].copy_from_slice(&100u16.to_be_bytes());
        let mut it = XorIterator::new(&bytes).unwrap();
        assert!(it.by_ref().any(|s| s.is_err()));
        assert!(it.next().is_none());
        assert!(it.seek(0).is_none());
    }
}
