//! The compactor's small text formats read back from the store (compaction markers, lease
//! generations) must never panic; what decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::compact::lease::LeaseRecord;
use weft::store::marker::Marker;

fuzz_target!(|data: &[u8]| {
    if let Some(m) = Marker::decode(data) {
        assert_eq!(Marker::decode(m.encode().as_bytes()), Some(m));
    }
    if let Some(r) = LeaseRecord::decode(data) {
        assert_eq!(LeaseRecord::decode(r.encode().as_bytes()), Some(r));
    }
});
