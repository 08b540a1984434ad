//! Store benchmarks: encoding one object from 10 000 real XOR chunks, and encoding plus
//! writing it to `file://` (what a flush cycle does), as samples per second. The target for
//! the flush path is ≥ 1 M samples/s.
//!
//! Data: the Prometheus chunks in `shared/testdata/prometheus-xor-chunks.jsonl`
//! (`WEFT_TESTDATA` overrides the file's path), cycled to 10 000 series of one chunk each.

#[path = "../tests/common/testdata.rs"]
mod testdata;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use object_store::path::Path;
use weft::model::{Labels, TenantId};
use weft::store::object::{ChunkData, EncodedObject, ObjectBuilder, ObjectKey};
use weft::store::{Store, StoreOptions};

const CHUNKS: usize = 10_000;

/// (metric name, chunk bytes) of every chunk in the test data.
fn load_chunks() -> Vec<(String, Vec<u8>)> {
    testdata::load()
        .expect("the shared testdata (set WEFT_TESTDATA to its path)")
        .into_iter()
        .map(|c| {
            let name = c.labels.split('{').next().unwrap_or_default().to_owned();
            (name, c.chunk)
        })
        .collect()
}

struct Input {
    series: Vec<(Labels, Vec<u8>)>,
    samples: u64,
}

fn input() -> Input {
    let real = load_chunks();
    let mut samples = 0u64;
    let series = (0..CHUNKS)
        .map(|i| {
            let (name, chunk) = &real[i % real.len()];
            samples += u16::from_be_bytes([chunk[0], chunk[1]]) as u64;
            let inst = format!("10.0.{}.{}:9100", i / 250, i % 250);
            let labels = Labels::from_strs([
                ("__name__", name.as_str()),
                ("instance", inst.as_str()),
                ("job", "node"),
            ])
            .unwrap();
            (labels, chunk.clone())
        })
        .collect();
    Input { series, samples }
}

fn encode(input: &Input) -> EncodedObject {
    let mut b = ObjectBuilder::new();
    for (i, (labels, chunk)) in input.series.iter().enumerate() {
        let t = i as i64 * 1000;
        b.add_series(
            labels,
            &[ChunkData {
                min_t: t,
                max_t: t + 1_785_000,
                data: chunk,
                encoding: weft::store::object::ENCODING_XOR,
            }],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

fn bench(c: &mut Criterion) {
    let input = input();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(input.samples));
    g.sample_size(20);
    g.bench_function("encode_10k_chunks", |b| b.iter(|| encode(&input)));

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &format!("file://{}", dir.path().display()),
        &StoreOptions::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tenant = TenantId::parse("bench").unwrap();
    let mut seq = 0u64;
    g.bench_function("encode_and_put_file_10k_chunks", |b| {
        b.iter(|| {
            let obj = encode(&input);
            seq += 1;
            let path: Path = ObjectKey::new(tenant.clone(), obj.min_t, obj.max_t, "bench", seq)
                .unwrap()
                .to_path(store.prefix());
            rt.block_on(store.put(&path, obj.bytes)).unwrap();
        })
    });
    g.finish();
    eprintln!("object: {} chunks, {} samples", CHUNKS, input.samples);
}

criterion_group!(benches, bench);
criterion_main!(benches);
