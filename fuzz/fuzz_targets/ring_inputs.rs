//! What a ring node reads from others: etcd entries (`InstanceDesc::from_json`), its tokens
//! file (`tokens::decode`) and a peer's streamed read answer (`fanout::parse_frames`). None
//! may panic; an accepted entry routes (its ring answers replica sets); accepted tokens are
//! sorted and unique.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::ring::{fanout, tokens, InstanceDesc, Ring};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = InstanceDesc::from_json("n1", data) {
        let ring = Ring::new(vec![d]);
        let mut out = Vec::new();
        ring.write_replicas(u32::from_le_bytes([1, 2, 3, 4]), 3, &mut out);
        assert!(out.len() <= 1);
    }
    if let Ok(t) = tokens::decode(data) {
        assert!(t.windows(2).all(|w| w[0] < w[1]), "tokens sorted and unique");
    }
    let _ = fanout::parse_frames(data, 1 << 16);
});
