use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::flush::{FlushConfig, ObjectListener};
use crate::model::TenantId;
use crate::proto::{WriteBatch, WriteSeries};
use crate::spill::SpillConfig;
use crate::store::object::ObjectKey;
use crate::store::retry::{CircuitBreaker, CircuitConfig};
use crate::store::{Store, StoreOptions};
use crate::wal::{SyncMode, WalConfig};

fn seed() -> u64 {
    let seed = std::env::var("PRESSURE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("pressure test seed: PRESSURE_TEST_SEED={seed}");
    seed
}

fn memory(limit: u64) -> (Arc<Memory>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Arc::new(Memory::new(limit, &metrics)), metrics)
}

fn gauge(metrics: &Metrics, c: Consumer) -> i64 {
    metrics
        .memory_bytes
        .get_or_create(&ConsumerLabels {
            consumer: c.as_str(),
        })
        .get()
}

fn refusals(metrics: &Metrics, c: Consumer) -> u64 {
    metrics
        .memory_refusals
        .get_or_create(&ConsumerLabels {
            consumer: c.as_str(),
        })
        .get()
}

#[test]
fn reservations_within_the_limit_are_granted_counted_and_given_back_on_drop() {
    let (mem, metrics) = memory(1000);
    assert_eq!(metrics.memory_limit_bytes.get(), 1000);
    let a = mem.try_reserve(Consumer::Queries, 300).unwrap();
    let mut b = mem.try_reserve(Consumer::PushBodies, 200).unwrap();
    assert_eq!(mem.used_bytes(), 500);
    assert_eq!(mem.available_bytes(), 500);
    assert_eq!(mem.consumer_bytes(Consumer::Queries), 300);
    assert_eq!(gauge(&metrics, Consumer::Queries), 300);
    assert_eq!(gauge(&metrics, Consumer::PushBodies), 200);
    b.try_grow(100).unwrap();
    assert_eq!((b.bytes(), mem.used_bytes()), (300, 600));
    b.shrink_to(50);
    assert_eq!((b.bytes(), mem.used_bytes()), (50, 350));
    drop(a);
    assert_eq!(mem.used_bytes(), 50);
    assert_eq!(gauge(&metrics, Consumer::Queries), 0);
    drop(b);
    assert_eq!(mem.used_bytes(), 0);
    assert_eq!(gauge(&metrics, Consumer::PushBodies), 0);
    // Every consumer's gauge exists from the start.
    let text = metrics.encode();
    for c in Consumer::ALL {
        assert!(
            text.contains(&format!("weft_memory_bytes{{consumer=\"{c}\"}}")),
            "{c} missing:\n{text}"
        );
    }
}

#[test]
fn a_reservation_past_the_limit_is_refused_counted_and_changes_nothing() {
    let (mem, metrics) = memory(1000);
    let _held = mem.try_reserve(Consumer::FlushObjects, 900).unwrap();
    let e = mem.try_reserve(Consumer::Queries, 101).unwrap_err();
    assert_eq!(
        e,
        MemoryRefusal {
            consumer: Consumer::Queries,
            requested_bytes: 101,
            used_bytes: 900,
            limit_bytes: 1000,
        }
    );
    assert!(e.to_string().contains("memory limit"), "{e}");
    assert_eq!(refusals(&metrics, Consumer::Queries), 1);
    assert_eq!(mem.used_bytes(), 900);
    // Exactly up to the limit is fine; a grow past it is refused and keeps what is held.
    let mut r = mem.try_reserve(Consumer::Queries, 100).unwrap();
    assert_eq!(r.try_grow(1), Err(mem.refusal(Consumer::Queries, 1, 1000)));
    assert_eq!((r.bytes(), mem.used_bytes()), (100, 1000));
    assert_eq!(refusals(&metrics, Consumer::Queries), 2);
    // Nothing asked, nothing refused.
    assert_eq!(mem.try_reserve(Consumer::Queries, 0).unwrap().bytes(), 0);
    // A huge request cannot overflow the sum.
    assert!(mem.try_reserve(Consumer::Queries, u64::MAX).is_err());
    drop(r);
    assert!(mem.try_reserve(Consumer::Queries, 100).is_ok());
}

/// Memory held only for speed (flushed chunks) is given back before work is refused: the
/// reclaimer is asked once, and the reservation is granted if that made room; refused (and
/// counted) if it did not.
#[test]
fn a_reservation_that_does_not_fit_asks_the_reclaimer_first() {
    let (mem, metrics) = memory(1000);
    // A measured consumer stands for the head's flushed chunks.
    mem.set_measured(Consumer::HeadChunks, 800);
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (calls, weak) = (calls.clone(), Arc::downgrade(&mem));
        mem.set_reclaimer(move |_wanted| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let m = weak.upgrade().unwrap();
            let held = m.consumer_bytes(Consumer::HeadChunks);
            m.set_measured(Consumer::HeadChunks, held.saturating_sub(500));
            held.min(500)
        });
    }
    let r = mem.try_reserve(Consumer::Queries, 600).unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(mem.consumer_bytes(Consumer::HeadChunks), 300);
    assert_eq!(mem.used_bytes(), 900);
    assert_eq!(refusals(&metrics, Consumer::Queries), 0);
    // Nothing left to give back that would make room: refused, counted.
    let e = mem.try_reserve(Consumer::Queries, 500).unwrap_err();
    assert_eq!(e.consumer, Consumer::Queries);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(refusals(&metrics, Consumer::Queries), 1);
    drop(r);
    assert_eq!(mem.used_bytes(), 0);
}

#[test]
fn measured_consumers_past_the_limit_refuse_pushes_until_they_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, metrics) = memory(10_000);
    let p = Pressure::new(mem.clone(), u64::MAX, dir.path());
    // Other consumers measured (what the head reports is measured at each admission).
    mem.set_measured(Consumer::Queries, 4_000);
    mem.set_measured(Consumer::FlushObjects, 7_000);
    assert_eq!(mem.used_bytes(), 11_000);
    let head = Head::new(Default::default(), metrics.clone());
    let e = p.check_push(&head).unwrap_err();
    assert!(matches!(e, Refusal::Memory(_)), "{e}");
    assert!(e.to_string().contains("memory limit"), "{e}");
    assert_eq!(refusals(&metrics, Consumer::PushBodies), 1);
    assert_eq!(gauge(&metrics, Consumer::FlushObjects), 7_000);
    // A measurement replaces the previous one.
    mem.set_measured(Consumer::FlushObjects, 1_000);
    assert_eq!(mem.used_bytes(), 5_000);
    assert_eq!(p.check_push(&head), Ok(()));
}

#[test]
fn the_cache_shrinks_at_once_when_the_rest_grows_and_gets_room_back_at_the_next_fit() {
    let (mem, metrics) = memory(100_000);
    let cache = Arc::new(ObjectCache::new(1 << 30));
    let mem = Arc::new(
        Arc::try_unwrap(mem)
            .unwrap()
            .with_cache(cache.clone(), 80_000),
    );
    // The cap holds even though the limit would leave more.
    assert_eq!(cache.max_bytes(), 80_000);
    let chunk = Bytes::from(vec![7u8; 1000]);
    let path = |i: u32| object_store::path::Path::from(format!("t/chunks/{i:04}"));
    for i in 0..200 {
        cache.put_chunk(&path(i), 0, &chunk);
    }
    let full = cache.stats().bytes;
    assert!(full > 70_000 && full <= 80_000, "{full}");
    assert_eq!(mem.used_bytes(), full);
    // The head grows: the cache gives back at once, before any tick.
    mem.set_measured(Consumer::HeadChunks, 50_000);
    assert!(cache.stats().bytes <= 50_000, "{:?}", cache.stats());
    assert!(mem.used_bytes() <= 100_000);
    // A reservation is granted by taking the cache's room, not refused.
    let r = mem.try_reserve(Consumer::Queries, 40_000).unwrap();
    assert!(cache.stats().bytes <= 10_000, "{:?}", cache.stats());
    // Inserts cannot take the total past the limit.
    for i in 200..400 {
        cache.put_chunk(&path(i), 0, &chunk);
        assert!(mem.used_bytes() <= 100_000);
    }
    // Once the reservation is gone, the next fit gives the cache its room back.
    drop(r);
    assert_eq!(mem.fit_cache(10_000), 40_000);
    assert_eq!(cache.max_bytes(), 40_000);
    mem.update_gauges();
    assert_eq!(gauge(&metrics, Consumer::Cache), cache.stats().bytes as i64);
}

/// Random reservations, drops, measurements and cache inserts from several threads: the
/// total never passes the limit as long as the measured consumers do not.
#[test]
fn the_total_stays_within_the_limit_under_concurrent_random_use() {
    let seed = seed();
    let limit = 1 << 20;
    let (mem, _metrics) = memory(limit);
    let cache = Arc::new(ObjectCache::new(0));
    let mem = Arc::new(
        Arc::try_unwrap(mem)
            .unwrap()
            .with_cache(cache.clone(), limit),
    );
    // The head's measurement only falls here: a rise between two ticks may pass the limit
    // by design (pushes are refused until the balancer catches up), which is not this
    // test's subject.
    mem.set_measured(Consumer::HeadChunks, limit / 4);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let mem = mem.clone();
            let cache = cache.clone();
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ t);
                let mut held: Vec<Reservation> = Vec::new();
                let mut head = limit / 4;
                for step in 0..5_000u32 {
                    match rng.random_range(0..5) {
                        0 | 1 => {
                            if let Ok(r) =
                                mem.try_reserve(Consumer::Queries, rng.random_range(1..64 << 10))
                            {
                                held.push(r);
                            }
                        }
                        2 => {
                            if !held.is_empty() {
                                held.swap_remove(rng.random_range(0..held.len()));
                            }
                        }
                        3 if t == 0 => {
                            head = rng.random_range(0..=head);
                            mem.set_measured(Consumer::HeadChunks, head);
                        }
                        3 if t == 1 => {
                            mem.fit_cache(rng.random_range(0..limit / 8));
                        }
                        _ => {
                            let len = rng.random_range(1..16 << 10);
                            let p = object_store::path::Path::from(format!("{t}/{step}"));
                            cache.put_chunk(&p, 0, &Bytes::from(vec![0u8; len]));
                        }
                    }
                    let used = mem.used_bytes();
                    assert!(used <= limit, "seed {seed}: {used} > {limit}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every reservation was dropped with its thread.
    assert_eq!(mem.rest_bytes(), mem.consumer_bytes(Consumer::HeadChunks));
}

#[test]
fn the_default_limit_follows_the_cgroup() {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    let check = |v2: Option<&str>, v1: Option<&str>, want: (u64, LimitSource)| {
        assert_eq!(default_memory_limit(v2, v1), want, "v2 {v2:?} v1 {v1:?}");
    };
    // cgroup v2: 3/4 of the limit, less the fixed overhead.
    check(
        Some("4294967296\n"),
        None,
        (
            3 * GIB - 64 * MIB,
            LimitSource::CgroupV2 {
                cgroup_bytes: 4 * GIB,
            },
        ),
    );
    check(Some("max\n"), None, (GIB, LimitSource::Fixed));
    // v2 wins; a v2 hierarchy has no v1 file, but if both were given v1 is ignored.
    check(Some("max"), Some("1073741824"), (GIB, LimitSource::Fixed));
    // cgroup v1, with its "no limit" value.
    check(
        None,
        Some("2147483648\n"),
        (
            GIB + 512 * MIB - 64 * MIB,
            LimitSource::CgroupV1 {
                cgroup_bytes: 2 * GIB,
            },
        ),
    );
    check(
        None,
        Some("9223372036854771712\n"),
        (GIB, LimitSource::Fixed),
    );
    // Nothing, or garbage.
    check(None, None, (GIB, LimitSource::Fixed));
    check(None, Some("lots"), (GIB, LimitSource::Fixed));
    check(Some(""), None, (GIB, LimitSource::Fixed));
    // A tiny container still gets the minimum.
    check(
        Some("100000000"),
        None,
        (
            64 * MIB,
            LimitSource::CgroupV2 {
                cgroup_bytes: 100_000_000,
            },
        ),
    );
}

#[test]
fn the_budget_clamps() {
    const MIB: u64 = 1 << 20;
    // Flush objects: a quarter of the limit over the concurrency, at least 1 MiB.
    assert_eq!(flush_object_bytes(64 * MIB, 1 << 30, 4), 64 * MIB);
    assert_eq!(flush_object_bytes(64 * MIB, 256 * MIB, 4), 16 * MIB);
    assert_eq!(flush_object_bytes(64 * MIB, 8 * MIB, 4), MIB);
    assert_eq!(flush_object_bytes(64 * MIB, 256 * MIB, 0), 64 * MIB);
    // Spill files: a sixteenth of the disk budget, at least the spill's minimum.
    assert_eq!(spill_file_bytes(64 * MIB, 10 << 30), 64 * MIB);
    assert_eq!(spill_file_bytes(64 * MIB, 160 * MIB), 10 * MIB);
    assert_eq!(
        spill_file_bytes(64 * MIB, MIB),
        crate::spill::MIN_FILE_SIZE_BYTES
    );
    // Checkpoints: at least every quarter of the disk budget.
    assert_eq!(checkpoint_bytes(1 << 30, 10 << 30), 1 << 30);
    assert_eq!(checkpoint_bytes(1 << 30, 40 * MIB), 10 * MIB);
}

#[test]
fn disk_over_budget_refuses_and_under_budget_accepts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg"), vec![1u8; 64 << 10]).unwrap();
    let (mem, m) = memory(1 << 20);
    let head = Head::new(Default::default(), m.clone());
    let p = Pressure::new(mem, 100 << 10, dir.path());
    let used = p.observe_disk(0, &m);
    assert!(used >= 64 << 10, "{used}");
    assert_eq!(p.check_push(&head), Ok(()));
    p.observe_disk(64 << 10, &m);
    let e = p.check_push(&head).unwrap_err();
    assert!(matches!(e, Refusal::Disk { .. }), "{e}");
    assert!(e.to_string().contains("disk budget"));
    std::fs::remove_file(dir.path().join("seg")).unwrap();
    p.observe_disk(0, &m);
    assert_eq!(p.check_push(&head), Ok(()));
}

#[derive(Debug, Default)]
struct Nobody(Mutex<u64>);

impl ObjectListener for Nobody {
    fn uploaded(&self, _: &ObjectKey, _: u64) {}
    fn released(&self, _: &ObjectKey) {
        *self.0.lock() += 1;
    }
}

/// A balancer over a real head, spill, WAL and (in-memory) store.
struct Rig {
    _dir: tempfile::TempDir,
    head: Arc<Head>,
    spill: Arc<Spill>,
    metrics: Arc<Metrics>,
    balancer: Balancer,
}

/// `series` series of `samples` samples each (120 a closed chunk), then a balancer whose
/// limit leaves the closed chunks `chunk_share` of their bytes (after the series index and
/// the headroom). `with_spill`: whether the head can spill.
fn rig(series: usize, samples: i64, chunk_share: f64, with_spill: bool) -> Rig {
    rig_with_cache(series, samples, chunk_share, with_spill, None)
}

fn rig_with_cache(
    series: usize,
    samples: i64,
    chunk_share: f64,
    with_spill: bool,
    cache: Option<Arc<ObjectCache>>,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let head = Arc::new(Head::new(Default::default(), metrics.clone()));
    let spill = Arc::new(
        Spill::open(SpillConfig {
            dir: dir.path().join("spill"),
            file_size: crate::spill::MIN_FILE_SIZE_BYTES,
        })
        .unwrap(),
    );
    if with_spill {
        head.set_spill(spill.clone());
    }
    let t = head.tenant_or_create(&TenantId::parse("t").unwrap());
    let names: Vec<String> = (0..series).map(|i| format!("{i:03}")).collect();
    let mut b = WriteBatch::default();
    for n in &names {
        let ls = b.labels.len() as u32;
        b.labels.push((b"__name__".as_slice(), b"m".as_slice()));
        b.labels.push((b"i".as_slice(), n.as_bytes()));
        let ss = b.samples.len() as u32;
        b.samples
            .extend((0..samples).map(|k| (k * 1000, (k * 37 % 1001) as f64)));
        b.series.push(WriteSeries {
            labels_start: ls,
            labels_end: b.labels.len() as u32,
            samples_start: ss,
            samples_end: b.samples.len() as u32,
            ..WriteSeries::default()
        });
    }
    t.append(&b, None);
    let closed = head.closed_bytes();
    assert!(closed > 0);
    // budget = limit − index − limit/10  ⇒  limit = (index + budget) · 10/9.
    let budget = (closed as f64 * chunk_share) as u64;
    let limit = (head.index_bytes() + budget) * 10 / 9 + 10;
    let (ingester, _) = Ingester::open(
        head.clone(),
        &dir.path().join("wal"),
        WalConfig {
            sync: SyncMode::Never,
            ..WalConfig::default()
        },
    )
    .unwrap();
    let ingester = Arc::new(ingester);
    let store = Store::new(
        Arc::new(InMemory::new()),
        object_store::path::Path::default(),
        &StoreOptions::default(),
    );
    let mut memory = Memory::new(limit, &metrics);
    if let Some(cache) = cache {
        memory = memory.with_cache(cache, u64::MAX);
    }
    let memory = Arc::new(memory);
    let flusher = Arc::new(crate::flush::Flusher::new(
        FlushConfig::default(),
        head.clone(),
        ingester.clone(),
        store,
        Arc::new(CircuitBreaker::new(CircuitConfig::default())),
        Arc::new(Nobody::default()),
        metrics.clone(),
        memory.clone(),
    ));
    let pressure = Arc::new(Pressure::new(memory, u64::MAX, &dir.path().join("wal")));
    let balancer = Balancer {
        pressure,
        head: head.clone(),
        flusher,
        spill: spill.clone(),
        ingester,
        metrics: metrics.clone(),
        local: None,
    };
    Rig {
        _dir: dir,
        head,
        spill,
        metrics,
        balancer,
    }
}

/// Marks every closed chunk of the head as in the store (object 1).
fn mark_all_flushed(head: &Head) {
    for t in head.tenant_heads() {
        for s in t.all_series() {
            let mut pending = Vec::new();
            s.pending(&mut pending);
            let min_ts: Vec<i64> = pending.iter().map(|c| c.min_t).collect();
            s.take_for_flush(&min_ts);
            s.finish_flush(&min_ts, true, 1);
        }
    }
}

#[test]
fn a_tick_within_budget_releases_and_spills_nothing() {
    let r = rig(10, 1000, 2.0, true);
    let before = r.head.closed_bytes();
    let report = r.balancer.tick();
    assert_eq!((report.released_bytes, report.spilled_chunks), (0, 0));
    assert_eq!(r.head.closed_bytes(), before);
    let mem = r.balancer.pressure.memory();
    assert_eq!(mem.consumer_bytes(Consumer::HeadChunks), before);
    assert_eq!(
        mem.consumer_bytes(Consumer::HeadSeries),
        r.head.index_bytes()
    );
    assert_eq!(r.metrics.memory_chunk_bytes.get(), before as i64);
    assert_eq!(r.balancer.pressure.check_push(&r.head), Ok(()));
}

#[test]
fn a_tick_over_budget_releases_flushed_chunks_before_spilling() {
    let r = rig(10, 1000, 0.5, true);
    mark_all_flushed(&r.head);
    let before = r.head.closed_bytes();
    let report = r.balancer.tick();
    assert_eq!(report.released_bytes, before, "{report:?}");
    assert_eq!(
        report.spilled_chunks, 0,
        "nothing left to spill: {report:?}"
    );
    assert_eq!(r.head.closed_bytes(), 0);
    assert_eq!(r.spill.live_bytes(), 0);
    assert!(r.metrics.released_chunks.get() > 0);
}

#[test]
fn a_tick_over_budget_spills_the_oldest_unflushed_chunks_below_the_budget() {
    let r = rig(10, 1000, 0.5, true);
    let before = r.head.closed_bytes();
    let report = r.balancer.tick();
    assert_eq!(report.released_bytes, 0);
    assert!(report.spilled_chunks > 0, "{report:?}");
    let after = r.head.closed_bytes();
    assert_eq!(after, before - report.spilled_bytes);
    // Down to 90 % of the chunk budget (or below: chunks move whole).
    assert!(
        after <= report.chunk_budget_bytes - report.chunk_budget_bytes / 10,
        "{after} {report:?}"
    );
    assert!(r.spill.live_bytes() > 0);
    assert_eq!(r.metrics.spilled_chunks.get(), report.spilled_chunks);
    assert_eq!(r.balancer.pressure.check_push(&r.head), Ok(()));
    // The next tick has nothing to do.
    let again = r.balancer.tick();
    assert_eq!((again.released_bytes, again.spilled_chunks), (0, 0));
}

#[test]
fn memory_past_the_limit_that_cannot_be_spilled_refuses_pushes_until_it_is_released() {
    // No spill: unflushed chunks stay. A limit that leaves the chunks nothing takes the
    // total past the limit.
    let r = rig(10, 1000, 0.0, false);
    let report = r.balancer.tick();
    assert_eq!(report.spilled_chunks, 0);
    let e = r.balancer.pressure.check_push(&r.head).unwrap_err();
    assert!(matches!(e, Refusal::Memory(_)), "{e}");
    // Once the store has them, the next tick releases them and pushes are taken again.
    mark_all_flushed(&r.head);
    let report = r.balancer.tick();
    assert!(report.released_bytes > 0);
    assert_eq!(r.balancer.pressure.check_push(&r.head), Ok(()));
}

#[test]
fn admission_measures_the_head_so_growth_between_ticks_is_refused_at_once() {
    let r = rig(10, 1000, 0.0, false);
    // No tick has run: the accounting has not seen the head yet, admission measures it.
    assert_eq!(
        r.balancer
            .pressure
            .memory()
            .consumer_bytes(Consumer::HeadChunks),
        0
    );
    let e = r.balancer.pressure.check_push(&r.head).unwrap_err();
    assert!(matches!(e, Refusal::Memory(_)), "{e}");
    assert_eq!(
        r.balancer
            .pressure
            .memory()
            .consumer_bytes(Consumer::HeadSeries),
        r.head.index_bytes()
    );
}

#[test]
fn a_tick_takes_room_from_the_cache_before_releasing_flushed_chunks() {
    let cache = Arc::new(ObjectCache::new(u64::MAX));
    // The chunks fit their budget; the cache may fill what is left.
    let r = rig_with_cache(10, 1000, 1.0, true, Some(cache.clone()));
    mark_all_flushed(&r.head);
    let memory = r.balancer.pressure.memory().clone();
    let limit = memory.limit_bytes();
    // Before any tick, the cache got everything (nothing was measured yet): fill it.
    assert_eq!(cache.max_bytes(), limit);
    let chunk = Bytes::from(vec![1u8; 512]);
    for i in 0..(limit / 512) as u32 {
        cache.put_chunk(&object_store::path::Path::from(format!("c/{i}")), 0, &chunk);
    }
    assert!(cache.stats().bytes > limit / 2);
    let before = r.head.closed_bytes();
    let report = r.balancer.tick();
    // The cache gave back; the flushed chunks, within their budget, stayed.
    assert_eq!(
        (report.released_bytes, report.spilled_chunks),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(r.head.closed_bytes(), before);
    assert_eq!(
        report.cache_max_bytes,
        limit - memory.rest_bytes() - r.balancer.headroom_bytes()
    );
    assert!(cache.stats().bytes <= report.cache_max_bytes);
    assert!(memory.used_bytes() <= limit);
    assert_eq!(
        gauge(&r.metrics, Consumer::Cache),
        cache.stats().bytes as i64
    );
}
