//! The bit stream of the histogram chunks (encodings 2 and 3), written exactly as Prometheus
//! 2.42's `tsdb/chunkenc/bstream.go` writes it, and the variable-bit integers of `varbit.go`.
//!
//! The writer works bit by bit like Go's `bstream` rather than word-wise like the XOR
//! chunk's `BitWriter`: histogram samples are larger and rarer, and byte identity matters
//! more than speed here. In particular `write_byte` on a byte boundary leaves one more, empty
//! byte at the end of the stream (2.42's `writeByte` always appends the byte after the one it
//! wrote; Prometheus 3 dropped that), so a chunk that ends there carries it, as 2.42's does.

use super::ChunkError;

/// Go's `bstream` (2.42): bytes plus the number of bits still free in the last byte.
#[derive(Debug, Clone, Default)]
pub(crate) struct GoBitWriter {
    pub(crate) stream: Vec<u8>,
    /// Free bits in the last byte of `stream` (0..=8).
    pub(crate) count: u8,
}

impl GoBitWriter {
    /// A stream that starts with `header` zero bytes and no free bits (as `make([]byte, 3)`).
    pub(crate) fn with_header(header: usize) -> Self {
        let mut stream = Vec::with_capacity(32);
        stream.resize(header, 0);
        Self { stream, count: 0 }
    }

    pub(crate) fn write_bit(&mut self, bit: bool) {
        if self.count == 0 {
            self.stream.push(0);
            self.count = 8;
        }
        if bit {
            let i = self.stream.len() - 1;
            self.stream[i] |= 1 << (self.count - 1);
        }
        self.count -= 1;
    }

    /// 2.42's `writeByte`: completes the current byte and always appends the next one.
    pub(crate) fn write_byte(&mut self, byt: u8) {
        if self.count == 0 {
            self.stream.push(0);
            self.count = 8;
        }
        let i = self.stream.len() - 1;
        // Shifting a u8 by 8 is an overflow in Rust; Go yields 0.
        self.stream[i] |= byt.checked_shr(u32::from(8 - self.count)).unwrap_or(0);
        self.stream
            .push(byt.checked_shl(u32::from(self.count)).unwrap_or(0));
    }

    /// Writes the low `nbits` (0..=64) bits of `u`, most significant first.
    pub(crate) fn write_bits(&mut self, u: u64, nbits: u32) {
        debug_assert!(nbits <= 64);
        if nbits == 0 {
            return;
        }
        let mut u = u << (64 - nbits);
        let mut n = nbits;
        while n >= 8 {
            self.write_byte((u >> 56) as u8);
            u <<= 8;
            n -= 8;
        }
        while n > 0 {
            self.write_bit(u >> 63 == 1);
            u <<= 1;
            n -= 1;
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.stream
    }
}

/// Reads bits most significant first; reading past the end is an error (Go's `io.EOF`).
#[derive(Debug, Clone)]
pub(crate) struct GoBitReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> GoBitReader<'a> {
    pub(crate) fn new(b: &'a [u8], pos_bits: usize) -> Self {
        Self { b, pos: pos_bits }
    }

    /// Real bits left.
    pub(crate) fn remaining_bits(&self) -> usize {
        (self.b.len() * 8).saturating_sub(self.pos)
    }

    pub(crate) fn read_bit(&mut self) -> Result<bool, Eof> {
        let byte = *self.b.get(self.pos / 8).ok_or(Eof)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Ok(bit)
    }

    /// Reads `n <= 64` bits.
    pub(crate) fn read_bits(&mut self, n: u32) -> Result<u64, Eof> {
        if self.remaining_bits() < n as usize {
            return Err(Eof);
        }
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self.b[self.pos / 8];
            v = (v << 1) | u64::from((byte >> (7 - (self.pos % 8))) & 1);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// The stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Eof;

/// A problem in a histogram stream: the stream ended or holds an impossible encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamError {
    Eof,
    Corrupt(&'static str),
}

impl From<Eof> for StreamError {
    fn from(_: Eof) -> Self {
        StreamError::Eof
    }
}

impl StreamError {
    pub(crate) fn into_chunk_error(self, expected: u16, decoded: u16) -> ChunkError {
        match self {
            StreamError::Eof => ChunkError::Truncated { expected, decoded },
            StreamError::Corrupt(what) => ChunkError::Corrupt {
                sample: decoded,
                what,
            },
        }
    }
}

/// Go's `bitRange`: `-(2^(n-1) - 1) <= x <= 2^(n-1)`.
fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// `putVarbitInt`: 0 as one bit, else a prefix of ones naming the width (3, 6, 9, 12, 18,
/// 25, 56 or 64 bits).
pub(crate) fn put_varbit_int(b: &mut GoBitWriter, val: i64) {
    let u = val as u64;
    if val == 0 {
        b.write_bit(false);
    } else if bit_range(val, 3) {
        b.write_bits(0b10, 2);
        b.write_bits(u, 3);
    } else if bit_range(val, 6) {
        b.write_bits(0b110, 3);
        b.write_bits(u, 6);
    } else if bit_range(val, 9) {
        b.write_bits(0b1110, 4);
        b.write_bits(u, 9);
    } else if bit_range(val, 12) {
        b.write_bits(0b11110, 5);
        b.write_bits(u, 12);
    } else if bit_range(val, 18) {
        b.write_bits(0b111110, 6);
        b.write_bits(u, 18);
    } else if bit_range(val, 25) {
        b.write_bits(0b1111110, 7);
        b.write_bits(u, 25);
    } else if bit_range(val, 56) {
        b.write_bits(0b11111110, 8);
        b.write_bits(u, 56);
    } else {
        b.write_bits(0b11111111, 8);
        b.write_bits(u, 64);
    }
}

/// Reads the prefix of ones (at most 8) and returns the width it names.
fn read_varbit_width(r: &mut GoBitReader<'_>) -> Result<u32, Eof> {
    let mut ones = 0;
    while ones < 8 {
        if !r.read_bit()? {
            break;
        }
        ones += 1;
    }
    Ok([0, 3, 6, 9, 12, 18, 25, 56, 64][ones])
}

/// `readVarbitInt`.
pub(crate) fn read_varbit_int(r: &mut GoBitReader<'_>) -> Result<i64, Eof> {
    let sz = read_varbit_width(r)?;
    match sz {
        0 => Ok(0),
        64 => Ok(r.read_bits(64)? as i64),
        _ => {
            let bits = r.read_bits(sz)?;
            if bits > 1 << (sz - 1) {
                Ok(bits as i64 - (1i64 << sz))
            } else {
                Ok(bits as i64)
            }
        }
    }
}

/// `putVarbitUint`: as `put_varbit_int` with the unsigned ranges `0..2^n`.
pub(crate) fn put_varbit_uint(b: &mut GoBitWriter, val: u64) {
    let fits = |n: u32| val >> n == 0;
    if val == 0 {
        b.write_bit(false);
    } else if fits(3) {
        b.write_bits(0b10, 2);
        b.write_bits(val, 3);
    } else if fits(6) {
        b.write_bits(0b110, 3);
        b.write_bits(val, 6);
    } else if fits(9) {
        b.write_bits(0b1110, 4);
        b.write_bits(val, 9);
    } else if fits(12) {
        b.write_bits(0b11110, 5);
        b.write_bits(val, 12);
    } else if fits(18) {
        b.write_bits(0b111110, 6);
        b.write_bits(val, 18);
    } else if fits(25) {
        b.write_bits(0b1111110, 7);
        b.write_bits(val, 25);
    } else if fits(56) {
        b.write_bits(0b11111110, 8);
        b.write_bits(val, 56);
    } else {
        b.write_bits(0b11111111, 8);
        b.write_bits(val, 64);
    }
}

/// `readVarbitUint`.
pub(crate) fn read_varbit_uint(r: &mut GoBitReader<'_>) -> Result<u64, Eof> {
    let sz = read_varbit_width(r)?;
    if sz == 0 {
        return Ok(0);
    }
    r.read_bits(sz)
}

/// Marks "no window yet" in an XOR-encoded field, as Prometheus's `leading = 0xff`.
pub(crate) const NO_WINDOW: u8 = 0xff;

/// Prometheus's `xorWrite`: the XOR of the new and old value with a leading/trailing-zero
/// window.
pub(crate) fn xor_write(
    b: &mut GoBitWriter,
    new: f64,
    cur: f64,
    leading: &mut u8,
    trailing: &mut u8,
) {
    let delta = new.to_bits() ^ cur.to_bits();
    if delta == 0 {
        b.write_bit(false);
        return;
    }
    b.write_bit(true);
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != NO_WINDOW && new_leading >= *leading && new_trailing >= *trailing {
        b.write_bit(false);
        b.write_bits(
            delta >> *trailing,
            64 - u32::from(*leading) - u32::from(*trailing),
        );
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    b.write_bit(true);
    b.write_bits(u64::from(new_leading), 5);
    let sig = 64 - u32::from(new_leading) - u32::from(new_trailing);
    b.write_bits(u64::from(sig), 6);
    b.write_bits(delta >> new_trailing, sig);
}

/// Prometheus's `xorRead`, rejecting windows wider than 64 bits. The reader's window starts
/// at 0/0 (Go's zero values).
pub(crate) fn xor_read(
    r: &mut GoBitReader<'_>,
    value: &mut f64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Result<(), StreamError> {
    if !r.read_bit()? {
        return Ok(());
    }
    let (new_leading, new_trailing, mbits);
    if !r.read_bit()? {
        if *leading == NO_WINDOW {
            *leading = 0;
            *trailing = 0;
        }
        new_leading = *leading;
        new_trailing = *trailing;
        mbits = 64u32
            .checked_sub(u32::from(new_leading) + u32::from(new_trailing))
            .ok_or(StreamError::Corrupt("XOR window wider than 64 bits"))?;
    } else {
        new_leading = r.read_bits(5)? as u8;
        let m = r.read_bits(6)? as u32;
        mbits = if m == 0 { 64 } else { m };
        new_trailing = 64u32
            .checked_sub(u32::from(new_leading) + mbits)
            .ok_or(StreamError::Corrupt("XOR window wider than 64 bits"))?
            as u8;
    }
    let bits = r.read_bits(mbits)?;
    let vbits = value.to_bits() ^ bits.checked_shl(u32::from(new_trailing)).unwrap_or(0);
    *value = f64::from_bits(vbits);
    *leading = new_leading;
    *trailing = new_trailing;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varbits_round_trip_at_every_width_edge() {
        let mut vals = vec![0i64, 1, -1, i64::MIN, i64::MAX];
        for n in [3u32, 6, 9, 12, 18, 25, 56] {
            let h = 1i64 << (n - 1);
            vals.extend([h, h + 1, -(h - 1), -h]);
        }
        let mut w = GoBitWriter::with_header(0);
        for &v in &vals {
            put_varbit_int(&mut w, v);
            put_varbit_uint(&mut w, v as u64);
        }
        let bytes = w.bytes().to_vec();
        let mut r = GoBitReader::new(&bytes, 0);
        for &v in &vals {
            assert_eq!(read_varbit_int(&mut r).unwrap(), v);
            assert_eq!(read_varbit_uint(&mut r).unwrap(), v as u64);
        }
    }

    #[test]
    fn write_byte_on_a_boundary_leaves_an_empty_byte_like_go_2_42() {
        let mut w = GoBitWriter::with_header(0);
        w.write_byte(0xab);
        assert_eq!(w.bytes(), &[0xab, 0x00]);
        w.write_bit(true);
        assert_eq!(w.bytes(), &[0xab, 0x80]);
        w.write_bits(0xff, 8);
        assert_eq!(w.bytes(), &[0xab, 0xff, 0x80]);
    }
}
