//! The Prometheus XOR chunk encoding (chunkenc encoding 1), bit-exact with Prometheus 2.42.
//!
//! **Invariant:** this module knows nothing about series, tenants or I/O.
//!
//! A chunk is the 2-byte big-endian sample count followed by the bit stream; this is exactly
//! what Prometheus stores as a chunk's data and sends in remote read.

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

/// Appends samples to an open XOR chunk.
#[derive(Debug, Clone)]
pub struct XorAppender {}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// A fresh, empty chunk.
    pub fn new() -> Self {
        todo!()
    }

    /// Resumes appending to an existing chunk (for example one recovered from a checkpoint).
    /// The result appends exactly as the appender that wrote `chunk` would have.
    pub fn from_chunk(chunk: &[u8]) -> Result<Self, ChunkError> {
        let _ = chunk;
        todo!()
    }

    /// Appends one sample. Timestamps must be strictly increasing; the caller checks that.
    pub fn append(&mut self, t: i64, v: f64) {
        let _ = (t, v);
        todo!()
    }

    /// Samples in the chunk.
    pub fn num_samples(&self) -> usize {
        todo!()
    }

    /// The chunk's bytes so far: always a complete, decodable chunk.
    pub fn bytes(&self) -> &[u8] {
        todo!()
    }

    /// Gives up the chunk's bytes, shrunk to fit.
    pub fn into_bytes(self) -> Vec<u8> {
        todo!()
    }

    /// Bytes of heap this appender holds (its buffer's capacity).
    pub fn heap_bytes(&self) -> usize {
        todo!()
    }
}

/// Iterates the samples of a chunk, validating as it goes. Never reads past the slice.
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    _b: &'a [u8],
}

impl<'a> XorIterator<'a> {
    /// Starts iterating `chunk` (2-byte count, then the bit stream).
    pub fn new(chunk: &'a [u8]) -> Result<Self, ChunkError> {
        let _ = chunk;
        todo!()
    }

    /// Samples the header claims.
    pub fn num_samples(&self) -> u16 {
        todo!()
    }

    /// Advances to the first sample with timestamp `>= t` and returns it; `None` if none.
    /// Like Prometheus's `Seek`, it never moves backwards: if the current sample is already
    /// at or past `t`, it is returned again.
    pub fn seek(&mut self, t: i64) -> Option<Result<(i64, f64), ChunkError>> {
        let _ = t;
        todo!()
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}

/// Decodes a whole chunk into `(t, value bits)` pairs.
pub fn decode_bits(chunk: &[u8]) -> Result<Vec<(i64, u64)>, ChunkError> {
    XorIterator::new(chunk)?
        .map(|s| s.map(|(t, v)| (t, v.to_bits())))
        .collect()
}

/// Encodes samples with a fresh appender.
pub fn encode(samples: impl IntoIterator<Item = (i64, f64)>) -> Vec<u8> {
    let mut app = XorAppender::new();
    for (t, v) in samples {
        app.append(t, v);
    }
    app.into_bytes()
}
