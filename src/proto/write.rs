//! Zero-copy decoding of `prometheus.WriteRequest`.
//!
//! Labels are borrowed byte slices into the request body: a series weft already knows costs
//! no allocation. Nested messages are flattened into three vectors that callers reuse.

use thiserror::Error;

/// A protobuf body that is not a valid message of the expected type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// Malformed protobuf, with the byte offset and the field path where it went wrong.
    #[error("invalid protobuf at byte {offset} ({path}): {what}")]
    Malformed {
        /// Byte offset in the decompressed body.
        offset: usize,
        /// Field path, e.g. `timeseries[3].labels[1]`.
        path: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A stream frame's checksum did not match.
    #[error("chunked frame CRC32C mismatch: header {expected:08x}, computed {actual:08x}")]
    FrameCrc {
        /// CRC in the frame header.
        expected: u32,
        /// CRC of the frame's bytes.
        actual: u32,
    },
    /// A stream frame longer than the limit.
    #[error("chunked frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// prost refused the message.
    #[error("invalid protobuf: {0}")]
    Prost(String),
}

/// One series of a write request: ranges into the batch's `labels` and `samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteSeries {
    /// Start of this series' labels in [`WriteBatch::labels`].
    pub labels_start: u32,
    /// End (exclusive) of its labels.
    pub labels_end: u32,
    /// Start of its samples in [`WriteBatch::samples`].
    pub samples_start: u32,
    /// End (exclusive) of its samples.
    pub samples_end: u32,
    /// Native histograms it carried (weft does not store them yet).
    pub histograms: u32,
    /// Exemplars it carried (ignored).
    pub exemplars: u32,
}

/// A decoded write request. Label names and values borrow from the body.
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    /// Series in request order.
    pub series: Vec<WriteSeries>,
    /// All series' labels, as raw (name, value) bytes, in wire order.
    pub labels: Vec<(&'a [u8], &'a [u8])>,
    /// All series' samples as (timestamp ms, value).
    pub samples: Vec<(i64, f64)>,
    /// Metadata entries in the request (ignored).
    pub metadata: u32,
}

impl<'a> WriteBatch<'a> {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.series.clear();
        self.labels.clear();
        self.samples.clear();
        self.metadata = 0;
    }
}

/// Decodes a `WriteRequest` into `out` (cleared first). Unknown fields are skipped; every
/// length is checked against the remaining bytes, so nothing over-reads or over-allocates.
pub fn decode_write_request<'a>(
    body: &'a [u8],
    out: &mut WriteBatch<'a>,
) -> Result<(), ProtoError> {
    let _ = (body, out);
    todo!()
}
