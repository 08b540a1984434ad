//! Decodes arbitrary bytes as an XOR chunk. Decoding must not panic and must end; if it
//! succeeds, re-encoding the samples must give a chunk that decodes to the same samples
//! (compared as bits, so NaN payloads count), and resuming the input with `from_chunk`
//! must agree with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft::chunk::{decode_bits, encode, XorAppender, XorIterator};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_bits(data);
    if let Ok(samples) = &decoded {
        let again = encode(samples.iter().map(|&(t, v)| (t, f64::from_bits(v))));
        assert_eq!(decode_bits(&again).as_ref(), Ok(samples));
    }

    match XorAppender::from_chunk(data) {
        Ok(app) => {
            let samples = decoded
                .as_ref()
                .expect("from_chunk accepted what decode rejected");
            assert_eq!(app.num_samples(), samples.len());
            assert_eq!(decode_bits(app.bytes()).as_ref(), Ok(samples));
        }
        Err(e) => assert_eq!(decoded.as_ref().map(|_| ()), Err(&e)),
    }

    // Seeking to every timestamp in turn must stay in step with a plain decode (when the
    // timestamps increase, as they do in every chunk a correct appender writes).
    if let (Ok(samples), Ok(mut it)) = (&decoded, XorIterator::new(data)) {
        if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        for &(t, v) in samples {
            let got = it.seek(t).expect("sample present").expect("decoded before");
            assert_eq!((got.0, got.1.to_bits()), (t, v));
        }
    }
});
