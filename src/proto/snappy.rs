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
///
/// The length check happens before any allocation, so a header that claims gigabytes costs
/// nothing: the output buffer is only ever as large as a header the limit has accepted.
pub fn decompress(body: &[u8], max_decompressed: usize) -> Result<Vec<u8>, SnappyError> {
    let mut out = Vec::new();
    decompress_into(body, max_decompressed, &mut out)?;
    Ok(out)
}

/// Like [`decompress`], into a buffer the caller reuses across requests. `out` is replaced,
/// not appended to; on error its contents are unspecified (but never above the limit).
pub fn decompress_into(
    body: &[u8],
    max_decompressed: usize,
    out: &mut Vec<u8>,
) -> Result<(), SnappyError> {
    out.clear();
    let claimed = match snap::raw::decompress_len(body) {
        Ok(len) => len,
        // snap refuses headers above u32::MAX itself; report those as "too large" too, since
        // that is what they are, and the caller maps it to the same status.
        Err(snap::Error::TooBig { given, .. }) => {
            return Err(SnappyError::TooLarge {
                claimed: given,
                limit: max_decompressed,
            })
        }
        Err(e) => return Err(SnappyError::Invalid(e.to_string())),
    };
    if claimed > max_decompressed {
        return Err(SnappyError::TooLarge {
            claimed: claimed as u64,
            limit: max_decompressed,
        });
    }
    out.resize(claimed, 0);
    let written = snap::raw::Decoder::new()
        .decompress(body, out)
        .map_err(|e| SnappyError::Invalid(e.to_string()))?;
    // snap writes exactly the header's length or fails; check rather than trust it, since a
    // short write here would hand zeros to the protobuf decoder.
    if written != claimed {
        return Err(SnappyError::Invalid(format!(
            "decompressed {written} bytes, header claimed {claimed}"
        )));
    }
    Ok(())
}

/// Compresses into a snappy block.
///
/// # Panics
///
/// If `data` is longer than the snappy block format allows (`u32::MAX` bytes); callers bound
/// their responses far below that.
pub fn compress(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy input larger than u32::MAX bytes")
}
