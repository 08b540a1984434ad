//! Decoding arbitrary bytes as a store object must never panic, and an object that decodes
//! must re-encode to the same bytes (the format has exactly one encoding per object).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::store::object::{
    decode_footer, decode_index, decode_object, footer_range, verify_chunk, ChunkData, Footer, ObjectBuilder,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = decode_object(data) {
        let mut b = ObjectBuilder::new();
        for s in &index.series {
            let chunks: Vec<ChunkData<'_>> = s
                .chunks
                .iter()
                .map(|c| ChunkData {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    data: &data[c.offset as usize..(c.offset + c.len as u64) as usize],
                    encoding: c.encoding,
                })
                .collect();
            b.add_series(&s.labels, &chunks).expect("a decoded series re-encodes");
        }
        let again = b.finish().expect("a decoded object re-encodes");
        assert_eq!(&again.bytes[..], data, "one encoding per object");
    }
    // The reader's path: footer from the end, then the index, then chunks, each on its own.
    if let Ok(fr) = footer_range(data.len() as u64) {
        if let Ok(footer) = decode_footer(&data[fr.start as usize..], data.len() as u64) {
            let ir = footer.index_range();
            if let Ok(index) = decode_index(&data[ir.start as usize..ir.end as usize], &footer) {
                for c in index.series.iter().flat_map(|s| &s.chunks) {
                    let _ = verify_chunk(c, &data[c.offset as usize..(c.offset + c.len as u64) as usize]);
                }
            }
        }
    }
    // The index decoder behind a (pretend) matching CRC sees the raw bytes too.
    let footer = Footer { index_offset: 1 << 20, index_len: data.len() as u64, index_crc32: crc32(data) };
    let _ = decode_index(data, &footer);
});

fn crc32(data: &[u8]) -> u32 {
    // Bitwise CRC32 (IEEE), to avoid a dependency; inputs are small.
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
