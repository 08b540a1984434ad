//! MSB-first bit writer and reader for the XOR chunk, the counterparts of Prometheus's
//! `tsdb/chunkenc/bstream.go`.
//!
//! Both sides move whole 64-bit words instead of single bits: the writer ORs a big-endian
//! word into its buffer, the reader loads a big-endian word at the current bit position. That
//! is why a single call handles at most [`MAX_FAST_BITS`] bits: after shifting away up to 7 bits
//! of byte offset, a 64-bit word still holds 57 usable bits.

/// Bits one `write`/`read` call can move: 64 minus the worst-case 7-bit byte offset.
pub(super) const MAX_FAST_BITS: u32 = 57;

/// Zero bytes the writer keeps past the logical end of its buffer, so that a word-sized
/// write at the last byte never has to grow the vector.
const PAD_BYTES: usize = 8;

/// Appends bits to a byte vector.
///
/// **Invariant:** every bit at or past `len_bits` in `buf` is zero, and
/// `buf.len() >= len_bits.div_ceil(8) + PAD_BYTES`. Writes only OR new bits in, so the
/// first invariant is what makes them correct; the second lets them skip growth checks
/// once [`BitWriter::reserve_bits`] was called.
#[derive(Debug, Clone)]
pub(super) struct BitWriter {
    buf: Vec<u8>,
    len_bits: usize,
    /// Bits that fit before the padding: `(buf.len() - PAD_BYTES) * 8`.
    room_bits: usize,
    /// Whether the stream ends with one more, entirely unused byte. See
    /// [`BitWriter::set_trailing_empty_byte`].
    trailing_empty_byte: bool,
}

impl BitWriter {
    /// A writer over `bytes` (taken as the stream so far), positioned at bit `len_bits`.
    /// Bits of `bytes` at or past `len_bits` are cleared.
    pub(super) fn from_bytes(
        mut bytes: Vec<u8>,
        len_bits: usize,
        trailing_empty_byte: bool,
    ) -> Self {
        let len_bytes = len_bits.div_ceil(8);
        bytes.truncate(len_bytes);
        debug_assert_eq!(bytes.len(), len_bytes, "from_bytes: too few bytes");
        let used_in_last = len_bits % 8;
        if used_in_last != 0 {
            if let Some(last) = bytes.last_mut() {
                *last &= 0xffu8 << (8 - used_in_last);
            }
        }
        bytes.resize(len_bytes + PAD_BYTES, 0);
        let mut w = Self {
            buf: bytes,
            len_bits,
            room_bits: len_bytes * 8,
            trailing_empty_byte: false,
        };
        w.fill_capacity();
        w.set_trailing_empty_byte(trailing_empty_byte);
        w
    }

    /// An empty writer whose buffer starts with `capacity_bytes` of capacity.
    pub(super) fn with_capacity(capacity_bytes: usize) -> Self {
        let mut w = Self {
            buf: Vec::with_capacity(capacity_bytes.max(PAD_BYTES)),
            len_bits: 0,
            room_bits: 0,
            trailing_empty_byte: false,
        };
        w.fill_capacity();
        w
    }

    /// Zero-fills the whole capacity so that growth checks and resizes are rare.
    fn fill_capacity(&mut self) {
        self.buf.resize(self.buf.capacity().max(PAD_BYTES), 0);
        self.room_bits = (self.buf.len() - PAD_BYTES) * 8;
    }

    /// Makes room for `bits` more bits so that the writes that follow cannot run out of
    /// buffer. The buffer grows in steps so that this is usually one comparison.
    #[inline]
    pub(super) fn reserve_bits(&mut self, bits: usize) {
        if self.len_bits + bits > self.room_bits {
            self.grow(bits);
        }
    }

    #[cold]
    fn grow(&mut self, bits: usize) {
        let need = (self.len_bits + bits).div_ceil(8) + PAD_BYTES;
        // `reserve` grows the capacity geometrically; then all of it is zero-filled.
        self.buf.reserve(need.saturating_sub(self.buf.len()));
        self.fill_capacity();
    }

    /// Writes the low `n` bits of `v`, most significant first. `1 <= n <= 57`, and room
    /// must have been reserved.
    #[inline]
    pub(super) fn write(&mut self, v: u64, n: u32) {
        debug_assert!((1..=MAX_FAST_BITS).contains(&n));
        let i = self.len_bits >> 3;
        let off = (self.len_bits & 7) as u32;
        // Shifting left by 64 - n drops any bits of `v` above the low n; shifting right by
        // `off` lines the word up with the partially used byte at `i`.
        let word = (v << (64 - n)) >> off;
        let dst: &mut [u8; 8] = (&mut self.buf[i..i + 8])
            .try_into()
            .expect("slice of length 8");
        *dst = (u64::from_be_bytes(*dst) | word).to_be_bytes();
        self.len_bits += n as usize;
    }

    /// Writes `n` zero bits. No store is needed: the buffer past the end is zero.
    #[inline]
    pub(super) fn skip(&mut self, n: u32) {
        self.len_bits += n as usize;
    }

    /// Makes the stream end with one more, unused zero byte if `yes` and the stream ends on a
    /// byte boundary. Writes do not reset this; the appender sets it after every sample.
    ///
    /// This mirrors a quirk of Prometheus's `bstream.writeByte`, which always appends the
    /// byte after the one it wrote to: when the last thing written was a whole number of
    /// bytes (for example a 64-bit first value, or 8, 16, ... significant bits) and it
    /// ended on a byte boundary, Prometheus's chunk carries an empty last byte. Bit-exact
    /// chunks need it too.
    #[inline]
    pub(super) fn set_trailing_empty_byte(&mut self, yes: bool) {
        self.trailing_empty_byte = yes && self.len_bits % 8 == 0;
    }

    /// Length of the stream in bytes, including a trailing empty byte.
    fn len_bytes(&self) -> usize {
        self.len_bits.div_ceil(8) + usize::from(self.trailing_empty_byte)
    }

    /// Writes the low `n` bits of `v` for any `1 <= n <= 64`.
    #[inline]
    pub(super) fn write_wide(&mut self, v: u64, n: u32) {
        if n <= MAX_FAST_BITS {
            self.write(v, n);
        } else {
            self.write(v >> 32, n - 32);
            self.write(v, 32);
        }
    }

    /// Overwrites two whole bytes at byte offset `at`, which must be below the current end.
    #[inline]
    pub(super) fn set_be_u16(&mut self, at: usize, v: u16) {
        self.buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// The bytes written so far, the last one zero-padded.
    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len_bytes()]
    }

    /// The bytes written so far, shrunk to fit.
    pub(super) fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.len_bytes());
        self.buf.shrink_to_fit();
        self.buf
    }

    /// Heap bytes held.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Reads bits from a byte slice, most significant first.
///
/// Reading past the end yields zero bits instead of failing; the caller checks
/// [`BitReader::overran`] once per sample. That keeps the hot path free of per-read error
/// branches, and it is sound because every read is bounded (at most 64 bits a call) and a
/// sample does a bounded number of reads.
#[derive(Debug, Clone)]
pub(super) struct BitReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader over `b` starting at bit `pos_bits`.
    pub(super) fn new(b: &'a [u8], pos_bits: usize) -> Self {
        Self { b, pos: pos_bits }
    }

    /// The next 64 bits from the current position, zero past the end of the slice. At least
    /// the top 57 of them are real stream bits (or zeros past the end).
    #[inline]
    pub(super) fn peek(&self) -> u64 {
        let i = self.pos >> 3;
        let word = match self.b.get(i..i + 8) {
            Some(s) => u64::from_be_bytes(s.try_into().expect("slice of length 8")),
            None => self.peek_tail(i),
        };
        word << (self.pos & 7)
    }

    /// The slow path of [`BitReader::peek`] for the last 7 bytes and beyond.
    #[cold]
    #[inline(never)]
    fn peek_tail(&self, i: usize) -> u64 {
        let mut w = [0u8; 8];
        if let Some(rest) = self.b.get(i..) {
            let n = rest.len().min(8);
            w[..n].copy_from_slice(&rest[..n]);
        }
        u64::from_be_bytes(w)
    }

    /// Moves forward `n` bits.
    #[inline]
    pub(super) fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// Reads `n` bits, `1 <= n <= 57`.
    #[inline]
    pub(super) fn read(&mut self, n: u32) -> u64 {
        debug_assert!((1..=MAX_FAST_BITS).contains(&n));
        let v = self.peek() >> (64 - n);
        self.pos += n as usize;
        v
    }

    /// Reads `n` bits, `1 <= n <= 64`.
    #[inline]
    pub(super) fn read_wide(&mut self, n: u32) -> u64 {
        if n <= MAX_FAST_BITS {
            self.read(n)
        } else {
            let hi = self.read(n - 32);
            (hi << 32) | self.read(32)
        }
    }

    /// Whether reads went past the end of the slice (their bits were made-up zeros).
    #[inline]
    pub(super) fn overran(&self) -> bool {
        self.pos > self.b.len() * 8
    }

    /// Real bits left before the end of the slice.
    #[inline]
    pub(super) fn remaining_bits(&self) -> usize {
        (self.b.len() * 8).saturating_sub(self.pos)
    }

    /// Current position in bits from the start of the slice.
    pub(super) fn pos_bits(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_across_byte_boundaries_for_every_width() {
        let mut w = BitWriter::with_capacity(16);
        let mut expected = Vec::new();
        for n in 1..=64u32 {
            let v = 0xa5a5_5a5a_c3c3_3c3cu64.rotate_left(n) & (u64::MAX >> (64 - n));
            w.reserve_bits(64);
            w.write_wide(v, n);
            expected.push((v, n));
        }
        let bytes = w.bytes().to_vec();
        assert_eq!(bytes.len(), (64 * 65 / 2usize).div_ceil(8));
        let mut r = BitReader::new(&bytes, 0);
        for (v, n) in expected {
            assert_eq!(r.read_wide(n), v, "width {n}");
        }
        assert!(!r.overran());
        r.read(8);
        assert!(r.overran());
    }

    #[test]
    fn from_bytes_clears_bits_past_the_end() {
        let w = BitWriter::from_bytes(vec![0xff, 0xff, 0xff], 12, true);
        assert_eq!(w.bytes(), &[0xff, 0xf0]);
        let w = BitWriter::from_bytes(vec![0xff, 0xff, 0xff], 16, true);
        assert_eq!(w.bytes(), &[0xff, 0xff, 0x00]);
    }
}
