//! Snappy block format (not the framed format), as remote write and remote read use it.

use thiserror::Error;

/// A body that could not be decompressed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnappyError {
    /// The header's decompressed length exceeds the limit; nothing was decompressed.
    #[error("snappy header claims {claimed} decompressed bytes, more than the limit of {limit}")]
    TooLarge {
        /// Length the header claims.
        claimed: u64,
        /// The limit.
        limit: usize,
    },
    /// Corrupt or truncated snappy data.
    #[error("invalid snappy block: {0}")]
    Invalid(String),
}

/// Decompresses a snappy block after checking its header's length against `max_decompressed`.
pub fn decompress(body: &[u8], max_decompressed: usize) -> Result<Vec<u8>, SnappyError> {
    let _ = (body, max_decompressed);
    todo!()
}

/// Compresses into a snappy block.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let _ = data;
    todo!()
}
