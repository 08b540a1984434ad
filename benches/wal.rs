//! WAL benchmarks: replay throughput from segments, and push throughput (append +
//! wait_durable) with 8 concurrent writers under `sync=always` vs `sync=never`.
//!
//! Data: the real Prometheus samples in `shared/testdata/prometheus-xor-chunks.jsonl`
//! (`WEFT_TESTDATA` overrides the directory), laid out as remote-write pushes would be: one
//! push holds the next sample of every series. The set is repeated with shifted timestamps
//! to reach a few million samples.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/testdata.rs"]
mod testdata;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft::wal::{FsDir, Record, RefSample, ReplayItem, SyncMode, Wal, WalConfig};

/// Every series' samples as (t, value bits), from the shared testdata.
fn load_series() -> Vec<Vec<(i64, u64)>> {
    let chunks = testdata::load().expect("the shared testdata (set WEFT_TESTDATA to its path)");
    chunks.into_iter().map(|c| c.samples).collect()
}

/// Pushes: push k holds sample k of every series (series ref = index + 1).
fn pushes(series: &[Vec<(i64, u64)>], min_samples: usize) -> Vec<Vec<RefSample>> {
    let longest = series.iter().map(Vec::len).max().unwrap_or(0);
    let span = series
        .iter()
        .flat_map(|s| s.last().map(|l| l.0 - s[0].0))
        .max()
        .unwrap_or(0)
        + 1000;
    let mut out = Vec::new();
    let mut total = 0;
    let mut rep = 0i64;
    while total < min_samples {
        for k in 0..longest {
            let p: Vec<RefSample> = series
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.get(k).map(|&(t, v)| RefSample {
                        series_ref: i as u64 + 1,
                        t: t + rep * span,
                        v,
                    })
                })
                .collect();
            total += p.len();
            out.push(p);
        }
        rep += 1;
    }
    out
}

fn bench_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-wal")
        .join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn wal_replay(c: &mut Criterion) {
    let series = load_series();
    let pushes = pushes(&series, 4_000_000);
    let samples: usize = pushes.iter().map(Vec::len).sum();
    let dir = bench_dir("replay");
    {
        let cfg = WalConfig {
            segment_size_bytes: 64 << 20,
            sync: SyncMode::Never,
            on_corruption: weft::wal::OnCorruption::Repair,
        };
        let (wal, _) = Wal::open_path(&dir, cfg, |_| Ok(())).unwrap();
        for (i, _) in series.iter().enumerate() {
            let labels = vec![(Cow::Borrowed("__name__"), Cow::Owned(format!("s{i}")))];
            wal.append(&[Record::Series {
                series_ref: i as u64 + 1,
                tenant: Cow::Borrowed("bench"),
                labels,
            }])
            .unwrap();
        }
        for p in &pushes {
            wal.append(&[Record::Samples(Cow::Borrowed(p))]).unwrap();
        }
        wal.close().unwrap();
    }
    let fs = FsDir::open(&dir).unwrap();
    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Elements(samples as u64));
    g.sample_size(10);
    g.bench_function("wal_replay", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let mut acc = 0u64;
            let stats = weft::wal::replay(&fs, |item| {
                if let ReplayItem::Record(Record::Samples(s)) = item {
                    n += s.len() as u64;
                    // Touch every sample, as an applier would.
                    for x in s.iter() {
                        acc = acc.wrapping_add(x.v ^ x.t as u64 ^ x.series_ref);
                    }
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(n, samples as u64);
            assert_eq!(stats.samples, n);
            std::hint::black_box(acc)
        })
    });
    g.finish();
}

/// `writers` tasks share the pushes, each waiting for its push to be durable before the next.
fn push_round(
    wal: &Arc<Wal>,
    rt: &tokio::runtime::Runtime,
    pushes: &Arc<Vec<Vec<RefSample>>>,
    writers: usize,
) {
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let wal = wal.clone();
                let pushes = pushes.clone();
                tokio::spawn(async move {
                    for p in pushes.iter().skip(w).step_by(writers) {
                        let pos = wal.append(&[Record::Samples(Cow::Borrowed(p))]).unwrap();
                        wal.wait_durable(pos).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn wal_push(c: &mut Criterion) {
    let series = load_series();
    // 400 pushes of ~800 samples each: one round is ~300k samples.
    let pushes = Arc::new(pushes(&series, 400_000)[..400].to_vec());
    let samples: usize = pushes.iter().map(Vec::len).sum();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("wal_push_8_writers");
    g.throughput(Throughput::Elements(samples as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, sync, writers) in [
        ("always", SyncMode::Always, 8),
        ("never", SyncMode::Never, 8),
        // Not part of the 8-writer target: shows how group commit scales with concurrency.
        ("always_64_writers", SyncMode::Always, 64),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // A fresh WAL per measurement keeps disk use bounded.
                let dir = bench_dir(&format!("push-{name}"));
                let cfg = WalConfig {
                    segment_size_bytes: 64 << 20,
                    sync,
                    on_corruption: weft::wal::OnCorruption::Repair,
                };
                let (wal, _) = Wal::open_path(&dir, cfg, |_| Ok(())).unwrap();
                let wal = Arc::new(wal);
                let start = Instant::now();
                for _ in 0..iters {
                    push_round(&wal, &rt, &pushes, writers);
                }
                let took = start.elapsed();
                let st = wal.stats();
                if sync == SyncMode::Always {
                    eprintln!(
                        "  {name}: {} appends shared {} syncs ({:.1} appends/sync)",
                        st.appends,
                        st.syncs,
                        st.appends as f64 / st.syncs.max(1) as f64
                    );
                }
                took
            })
        });
    }
    g.finish();
}

criterion_group!(benches, wal_replay, wal_push);
criterion_main!(benches);
