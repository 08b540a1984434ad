//! Walking arbitrary bytes as a spill file, a record or a `SpillRef` must never panic; every
//! record the walk accepts must re-encode to exactly its bytes (one encoding per record), and
//! a decoded ref must re-encode to its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::spill::{self, format, SpillRef};

fuzz_target!(|data: &[u8]| {
    let scan = spill::decode_records(data);
    let mut next = format::FILE_HEADER_LEN as u64;
    for (off, rec) in &scan.records {
        assert_eq!(*off, next, "records are contiguous");
        let mut buf = Vec::new();
        format::encode_record(rec.series_ref, rec.min_t, rec.max_t, rec.data, &mut buf)
            .expect("a decoded record re-encodes");
        let start = *off as usize;
        assert_eq!(
            &buf[..],
            &data[start..start + buf.len()],
            "one encoding per record"
        );
        next += buf.len() as u64;
    }
    let _ = spill::inspect_bytes("spill-00000000", data);

    // The record decoder on its own, from the first byte (no file header).
    if let Ok(Some((rec, used))) = format::decode_record(data) {
        let mut buf = Vec::new();
        format::encode_record(rec.series_ref, rec.min_t, rec.max_t, rec.data, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[..used]);
    }

    if data.len() >= SpillRef::ENCODED_LEN {
        if let Ok(r) = SpillRef::decode(&data[..SpillRef::ENCODED_LEN]) {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            assert_eq!(&buf[..], &data[..SpillRef::ENCODED_LEN]);
        }
    }
});
