//! Decoding arbitrary bytes as WAL records must never panic, and whatever decodes must
//! re-encode to the same bytes (the format has exactly one encoding per record).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::wal::record;

fuzz_target!(|data: &[u8]| {
    let mut off = 0;
    while off < data.len() {
        match record::decode(&data[off..]) {
            Ok(Some((rec, used))) => {
                let mut buf = Vec::new();
                record::encode(&rec, &mut buf).expect("a decoded record re-encodes");
                assert_eq!(&buf[..], &data[off..off + used], "one encoding per record");
                off += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Payload decoders behind a (pretend) valid CRC see the raw bytes too, histogram
    // records (types 4 and 5) included: what decodes re-encodes to the same payload.
    if let Some((&ty, payload)) = data.split_first() {
        if let Ok(rec) = record::decode_payload(ty, payload) {
            let mut buf = Vec::new();
            record::encode(&rec, &mut buf).expect("a decoded payload re-encodes");
            assert_eq!(
                &buf[record::FRAME_HEADER_BYTES..],
                payload,
                "one encoding per payload"
            );
        }
    }
});
