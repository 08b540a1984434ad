//! Remote-write and remote-read wire formats: the `prompb` messages, snappy block framing,
//! the streamed-chunks frame format, and a zero-copy remote-write decoder for the hot path.

pub mod prompb;
mod snappy;
mod write;

pub use snappy::{compress, decompress, SnappyError};
pub use write::{decode_write_request, ProtoError, WriteBatch, WriteSeries};

/// Content type of a remote-read response in STREAMED_XOR_CHUNKS mode.
pub const STREAMED_CHUNKS_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Appends one stream frame: uvarint length of `msg`, CRC32C (Castagnoli) of `msg` as 4
/// big-endian bytes, then `msg`, as Prometheus's `ChunkedWriter` does.
pub fn write_chunked_frame(out: &mut Vec<u8>, msg: &[u8]) {
    let _ = (out, msg);
    todo!()
}

/// Splits one frame off the front of `buf`: returns the message and the rest. Checks the
/// CRC and refuses frames longer than `max_frame_bytes`.
pub fn read_chunked_frame(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<(&[u8], &[u8]), ProtoError> {
    let _ = (buf, max_frame_bytes);
    todo!()
}
