//! Remote-write and remote-read wire formats: the `prompb` messages, snappy block framing,
//! the streamed-chunks frame format, and a zero-copy remote-write decoder for the hot path.

pub mod cortex;
pub mod prompb;
pub mod prompb_v2;
mod snappy;
mod write;
mod write_v2;

pub use snappy::{compress, decompress, decompress_into, SnappyError};
pub use write::{
    decode_write_request, MetricType, ProtoError, WriteBatch, WriteExemplar, WriteMetadata,
    WriteSeries, MAX_HISTOGRAMS_PER_REQUEST,
};
pub use write_v2::decode_write_request_v2;

/// Content type of a remote-read response in STREAMED_XOR_CHUNKS mode.
pub const STREAMED_CHUNKS_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Appends one stream frame: uvarint length of `msg`, CRC32C (Castagnoli) of `msg` as 4
/// big-endian bytes, then `msg`, as Prometheus's `ChunkedWriter` does
/// (`storage/remote/chunked.go`: `binary.PutUvarint`, then
/// `binary.Write(w, binary.BigEndian, crc32.Sum32())` over a Castagnoli table).
///
/// An empty `msg` is written as a frame of length 0; Prometheus's writer skips empty writes
/// instead, but its reader accepts both.
pub fn write_chunked_frame(out: &mut Vec<u8>, msg: &[u8]) {
    out.reserve(MAX_UVARINT_LEN + 4 + msg.len());
    put_uvarint(out, msg.len() as u64);
    out.extend_from_slice(&crc32c::crc32c(msg).to_be_bytes());
    out.extend_from_slice(msg);
}

/// Splits one frame off the front of `buf`: returns the message and the rest. Checks the
/// CRC and refuses frames longer than `max_frame_bytes`.
///
/// The length is checked against the limit before anything else, as Prometheus's
/// `ChunkedReader` does, so a hostile length prefix is refused even if the bytes are there.
/// An empty `buf` is an error (`Malformed`, "truncated frame length"): callers loop while
/// `!rest.is_empty()`.
pub fn read_chunked_frame(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<(&[u8], &[u8]), ProtoError> {
    let malformed = |offset, what| ProtoError::Malformed {
        offset,
        path: "frame".into(),
        what,
    };
    let (len, header) =
        get_uvarint(buf).ok_or_else(|| malformed(0, "truncated or overlong frame length"))?;
    if len > max_frame_bytes as u64 {
        return Err(ProtoError::FrameTooLarge {
            len,
            limit: max_frame_bytes,
        });
    }
    let rest = &buf[header..];
    let Some((crc, rest)) = rest.split_first_chunk::<4>() else {
        return Err(malformed(header, "truncated frame checksum"));
    };
    // `len <= max_frame_bytes`, a usize, so the cast is exact.
    let len = len as usize;
    if rest.len() < len {
        return Err(malformed(header + 4, "frame shorter than its length"));
    }
    let (msg, rest) = rest.split_at(len);
    let expected = u32::from_be_bytes(*crc);
    let actual = crc32c::crc32c(msg);
    if expected != actual {
        return Err(ProtoError::FrameCrc { expected, actual });
    }
    Ok((msg, rest))
}

/// Decodes a (decompressed) `ReadRequest`.
pub fn decode_read_request(body: &[u8]) -> Result<prompb::ReadRequest, ProtoError> {
    use prost::Message as _;
    prompb::ReadRequest::decode(body).map_err(|e| ProtoError::Prost(e.to_string()))
}

/// Encodes a `ReadResponse` (SAMPLES mode) and snappy-compresses it, ready to send with
/// `Content-Type: application/x-protobuf` and `Content-Encoding: snappy`.
pub fn encode_read_response(response: &prompb::ReadResponse) -> Vec<u8> {
    use prost::Message as _;
    compress(&response.encode_to_vec())
}

/// Appends one `ChunkedReadResponse` as a stream frame (STREAMED_XOR_CHUNKS mode; the frames
/// are not snappy-compressed).
pub fn write_chunked_read_response(out: &mut Vec<u8>, response: &prompb::ChunkedReadResponse) {
    use prost::Message as _;
    write_chunked_frame(out, &response.encode_to_vec());
}

/// Content type of a remote-read response in SAMPLES mode (snappy-compressed).
pub const SAMPLES_CONTENT_TYPE: &str = "application/x-protobuf";

const MAX_UVARINT_LEN: usize = 10;

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a uvarint as Go's `binary.Uvarint` does: at most 10 bytes, no overflow. Returns the
/// value and the bytes it took, or `None` if truncated or malformed.
fn get_uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(MAX_UVARINT_LEN).enumerate() {
        if i == MAX_UVARINT_LEN - 1 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests;
