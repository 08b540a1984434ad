//! TEMPORARY stub; replaced by the chunk text tools.
use crate::chunk::ChunkError;
/// Stub.
pub fn chunk_decode_text(_chunk: &[u8], _bits: bool) -> Result<String, ChunkError> {
    todo!()
}
/// Stub.
pub fn chunk_encode_text(_text: &str) -> Result<Vec<u8>, String> {
    todo!()
}
