//! Properties of the XOR chunk codec over generated data: a bit-at-a-time port of
//! Prometheus's encoder as the reference model, round trips over the whole `i64` range and
//! arbitrary value bits, resumption, `seek` against a linear model, and a decoder that never
//! panics on arbitrary or mutated input.

use proptest::prelude::*;
use weft::chunk::{decode_bits, encode, ChunkError, XorAppender, XorIterator};

/// Prometheus's staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
/// Prometheus's `math.NaN()`.
const PROM_NAN: u64 = 0x7ff8_0000_0000_0001;

/// A deliberately naive port of Prometheus 2.42's `bstream` writer and `xorAppender`, one
/// bit at a time, including `writeByte`'s habit of leaving an empty byte at the end.
mod reference {
    #[derive(Default)]
    struct BStream {
        stream: Vec<u8>,
        /// Free bits in the last byte, as Prometheus's `count`.
        count: u8,
    }

    impl BStream {
        fn write_bit(&mut self, bit: bool) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            if bit {
                self.stream[i] |= 1 << (self.count - 1);
            }
            self.count -= 1;
        }

        fn write_byte(&mut self, byt: u8) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            self.stream[i] |= byt >> (8 - self.count);
            self.stream.push(0);
            // Go shifts a byte by 8 to zero; Rust would overflow.
            self.stream[i + 1] = ((u16::from(byt) << self.count) & 0xff) as u8;
        }

        fn write_bits(&mut self, u: u64, mut nbits: u32) {
            let mut u = u << (64 - nbits);
            while nbits >= 8 {
                self.write_byte((u >> 56) as u8);
                u <<= 8;
                nbits -= 8;
            }
            while nbits > 0 {
                self.write_bit(u >> 63 == 1);
                u <<= 1;
                nbits -= 1;
            }
        }
    }

    fn bit_range(x: i64, nbits: u32) -> bool {
        -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
    }

    pub fn encode(samples: &[(i64, u64)]) -> Vec<u8> {
        let mut b = BStream {
            stream: vec![0, 0],
            count: 0,
        };
        let (mut pt, mut pv, mut ptd) = (0i64, 0u64, 0u64);
        let (mut leading, mut trailing) = (0xffu8, 0u8);
        for (num, &(t, v)) in samples.iter().enumerate() {
            let mut td = 0u64;
            if num == 0 {
                let mut zz = ((t as u64) << 1) ^ ((t >> 63) as u64);
                while zz >= 0x80 {
                    b.write_byte((zz as u8) | 0x80);
                    zz >>= 7;
                }
                b.write_byte(zz as u8);
                b.write_bits(v, 64);
            } else {
                td = t.wrapping_sub(pt) as u64;
                if num == 1 {
                    let mut x = td;
                    while x >= 0x80 {
                        b.write_byte((x as u8) | 0x80);
                        x >>= 7;
                    }
                    b.write_byte(x as u8);
                } else {
                    let dod = td.wrapping_sub(ptd) as i64;
                    if dod == 0 {
                        b.write_bit(false);
                    } else if bit_range(dod, 14) {
                        b.write_bits(0b10, 2);
                        b.write_bits(dod as u64, 14);
                    } else if bit_range(dod, 17) {
                        b.write_bits(0b110, 3);
                        b.write_bits(dod as u64, 17);
                    } else if bit_range(dod, 20) {
                        b.write_bits(0b1110, 4);
                        b.write_bits(dod as u64, 20);
                    } else {
                        b.write_bits(0b1111, 4);
                        b.write_bits(dod as u64, 64);
                    }
                }
                let delta = v ^ pv;
                if delta == 0 {
                    b.write_bit(false);
                } else {
                    b.write_bit(true);
                    let l = (delta.leading_zeros() as u8).min(31);
                    let tr = delta.trailing_zeros() as u8;
                    if leading != 0xff && l >= leading && tr >= trailing {
                        b.write_bit(false);
                        b.write_bits(
                            delta >> trailing,
                            64 - u32::from(leading) - u32::from(trailing),
                        );
                    } else {
                        leading = l;
                        trailing = tr;
                        b.write_bit(true);
                        b.write_bits(u64::from(l), 5);
                        let sig = 64 - u32::from(l) - u32::from(tr);
                        b.write_bits(u64::from(sig), 6);
                        b.write_bits(delta >> tr, sig);
                    }
                }
            }
            pt = t;
            pv = v;
            ptd = td;
            let n = (num + 1) as u16;
            b.stream[..2].copy_from_slice(&n.to_be_bytes());
        }
        b.stream
    }
}

fn value_bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        1 => Just(STALE_NAN),
        1 => Just(PROM_NAN),
        // NaN payloads, both signs.
        1 => (any::<bool>(), 1u64..(1 << 52)).prop_map(|(s, p)| (u64::from(s) << 63) | 0x7ff0_0000_0000_0000 | p),
        1 => prop::sample::select(vec![
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            (-0.0f64).to_bits(),
            0,
            1,
            f64::MAX.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
        ]),
        3 => (-1000i64..1000).prop_map(|i| (i as f64).to_bits()),
        2 => (0.0f64..1e6).prop_map(f64::to_bits),
    ]
}

/// Values as they occur: often the previous one again, often a small change.
fn values(n: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec((0u8..4, value_bits()), n).prop_map(|steps| {
        let mut prev = 0u64;
        steps
            .into_iter()
            .map(|(kind, fresh)| {
                prev = match kind {
                    0 => prev,
                    1 => (f64::from_bits(prev) + 1.0).to_bits(),
                    _ => fresh,
                };
                prev
            })
            .collect()
    })
}

/// Strictly increasing timestamps anywhere in `i64`: regular scrapes with jitter, deltas
/// hitting every delta-of-delta bucket, and huge jumps.
fn timestamps(max_len: usize) -> impl Strategy<Value = Vec<i64>> {
    let delta = prop_oneof![
        3 => Just(1000i64),
        3 => 990i64..1010,
        2 => 1i64..(1 << 21),
        1 => prop::sample::select(vec![1i64, 8192, 8193, 65536, 65537, 524_288, 524_289]),
        1 => 1i64..=i64::MAX,
    ];
    (
        prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(0i64),
            1_700_000_000_000i64..1_800_000_000_000
        ],
        prop::collection::vec(delta, 0..max_len),
    )
        .prop_map(|(start, deltas)| {
            let mut ts = vec![start];
            for d in deltas {
                match ts.last().unwrap().checked_add(d) {
                    Some(t) => ts.push(t),
                    None => break,
                }
            }
            ts
        })
}

fn samples(max_len: usize) -> impl Strategy<Value = Vec<(i64, u64)>> {
    timestamps(max_len).prop_flat_map(|ts| {
        let n = ts.len();
        values(n).prop_map(move |vs| ts.iter().copied().zip(vs).collect())
    })
}

fn encode_bits(s: &[(i64, u64)]) -> Vec<u8> {
    encode(s.iter().map(|&(t, v)| (t, f64::from_bits(v))))
}

/// Decoding arbitrary input must end (it is bounded by the header's count) without a
/// panic; if it succeeds, re-encoding what came out must decode to the same samples.
fn check_decoder_on(bytes: &[u8]) {
    let res = decode_bits(bytes);
    if let Ok(s) = &res {
        let again = encode_bits(s);
        assert_eq!(&decode_bits(&again).unwrap(), s);
    }
    match XorAppender::from_chunk(bytes) {
        Ok(app) => {
            assert_eq!(Some(app.num_samples()), res.as_ref().ok().map(Vec::len));
            // The resumed chunk holds the same samples.
            assert_eq!(decode_bits(app.bytes()).as_ref(), res.as_ref());
        }
        Err(e) => assert_eq!(Err(e), res.map(|_| ())),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Next,
    Seek(i64),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, fork: false, ..ProptestConfig::default() })]

    #[test]
    fn encoder_matches_bit_at_a_time_prometheus_port(s in samples(150)) {
        prop_assert_eq!(encode_bits(&s), reference::encode(&s));
    }

    #[test]
    fn round_trip_preserves_timestamps_and_value_bits(s in samples(150)) {
        let bytes = encode_bits(&s);
        prop_assert_eq!(decode_bits(&bytes).unwrap(), s.clone());
        let it = XorIterator::new(&bytes).unwrap();
        prop_assert_eq!(usize::from(it.num_samples()), s.len());
    }

    #[test]
    fn resuming_at_any_point_gives_the_bytes_of_one_appender(s in samples(130), split in any::<prop::sample::Index>()) {
        let split = split.index(s.len() + 1);
        let mut app = XorAppender::new();
        for &(t, v) in &s[..split] {
            app.append(t, f64::from_bits(v));
        }
        let mut resumed = XorAppender::from_chunk(app.bytes()).unwrap();
        for &(t, v) in &s[split..] {
            resumed.append(t, f64::from_bits(v));
        }
        prop_assert_eq!(resumed.into_bytes(), encode_bits(&s));
    }

    #[test]
    fn seek_and_next_follow_a_linear_model(
        s in samples(130),
        ops in prop::collection::vec(prop_oneof![
            1 => Just(Op::Next),
            2 => any::<i64>().prop_map(Op::Seek),
            4 => any::<prop::sample::Index>().prop_map(|i| Op::Seek(i64::try_from(i.index(1 << 20)).unwrap())),
        ], 0..40),
        near in any::<prop::sample::Index>(),
    ) {
        let bytes = encode_bits(&s);
        let mut it = XorIterator::new(&bytes).unwrap();
        // The model: `read` samples decoded so far; the current one is `read - 1`.
        let mut read = 0usize;
        let base = s[near.index(s.len())].0;
        for op in ops {
            // Small seek targets are offsets around a sample, so that seeks land inside the data.
            let op = match op {
                Op::Seek(t) if (0..1 << 20).contains(&t) => Op::Seek(base.saturating_add(t - (1 << 19))),
                op => op,
            };
            let got = match op {
                Op::Next => it.next(),
                Op::Seek(t) => it.seek(t),
            };
            let want = match op {
                Op::Next => {
                    if read < s.len() { read += 1; Some(s[read - 1]) } else { None }
                }
                Op::Seek(t) => {
                    if read > 0 && s[read - 1].0 >= t {
                        Some(s[read - 1])
                    } else {
                        loop {
                            if read == s.len() { break None; }
                            read += 1;
                            if s[read - 1].0 >= t { break Some(s[read - 1]); }
                        }
                    }
                }
            };
            let got = got.map(|r| r.map(|(t, v)| (t, v.to_bits())).unwrap());
            prop_assert_eq!(got, want, "after {:?}", op);
        }
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_decoder_on(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_mutated_chunks(
        s in samples(130),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
        cut in any::<prop::sample::Index>(),
        count in prop::option::of(any::<u16>()),
    ) {
        let mut bytes = encode_bits(&s);
        for (i, bit) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        if let Some(c) = count {
            bytes[..2].copy_from_slice(&c.to_be_bytes());
        }
        let cut = cut.index(bytes.len() + 1);
        check_decoder_on(&bytes[..cut]);
        check_decoder_on(&bytes);
    }
}

#[test]
fn short_headers_are_too_short() {
    for len in 0..2 {
        assert_eq!(
            XorIterator::new(&[0u8; 2][..len]).err(),
            Some(ChunkError::TooShort { len })
        );
    }
}

#[test]
fn a_count_beyond_the_stream_is_truncated() {
    // Padding bits of the last byte can decode as "same step, same value" samples, so a
    // count only a little too high may still decode; far too high cannot.
    let mut bytes = encode_bits(&[(1, 1), (2, 2)]);
    bytes[..2].copy_from_slice(&100u16.to_be_bytes());
    match decode_bits(&bytes) {
        Err(ChunkError::Truncated {
            expected: 100,
            decoded,
        }) => assert!((2..100).contains(&decoded)),
        other => panic!("expected truncation, got {other:?}"),
    }
}
