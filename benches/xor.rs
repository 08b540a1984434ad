//! XOR chunk encode and decode throughput over every sample of the shared Prometheus
//! testdata (829 real and synthetic chunks, 90,853 samples).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use weft::chunk::{XorAppender, XorIterator};

#[path = "../tests/common/testdata.rs"]
mod testdata;

fn bench_xor(c: &mut Criterion) {
    let Some(chunks) = testdata::load() else {
        return;
    };
    let total_samples: usize = chunks.iter().map(|c| c.samples.len()).sum();
    let samples: Vec<Vec<(i64, f64)>> = chunks
        .iter()
        .map(|c| {
            c.samples
                .iter()
                .map(|&(t, b)| (t, f64::from_bits(b)))
                .collect()
        })
        .collect();

    let mut g = c.benchmark_group("xor");
    g.throughput(Throughput::Elements(total_samples as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for s in &samples {
                let mut app = XorAppender::new();
                for &(t, v) in s {
                    app.append(t, v);
                }
                bytes += black_box(app.bytes()).len();
            }
            bytes
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for c in &chunks {
                for s in XorIterator::new(black_box(&c.chunk)).expect("testdata chunk") {
                    let (t, v) = s.expect("testdata chunk");
                    acc = acc.wrapping_add(t as u64 ^ v.to_bits());
                }
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench_xor);
criterion_main!(benches);
