//! Safe retries and the out-of-order window, at the head (see `head::ooo`).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::proto::WriteSeries;

/// One series' samples as a batch of the series `{__name__="s", i="<i>"}`.
fn batch(series: &[(u32, &[(i64, f64)])]) -> WriteBatch<'static> {
    static NAMES: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];
    let mut b = WriteBatch::default();
    for (i, samples) in series {
        let ls = b.labels.len() as u32;
        b.labels.push((b"__name__", b"s"));
        b.labels.push((b"i", NAMES[*i as usize].as_bytes()));
        let ss = b.samples.len() as u32;
        b.samples.extend_from_slice(samples);
        b.series.push(WriteSeries {
            labels_start: ls,
            labels_end: b.labels.len() as u32,
            samples_start: ss,
            samples_end: b.samples.len() as u32,
            ..WriteSeries::default()
        });
    }
    b
}

fn head(window: Duration) -> (Head, Arc<TenantHead>) {
    let head = Head::new(
        HeadConfig {
            out_of_order_window: window,
            ..HeadConfig::default()
        },
        Arc::new(Metrics::new()),
    );
    let t = head.tenant_or_create(&TenantId::parse("t").unwrap());
    (head, t)
}

fn series(t: &TenantHead, i: u32) -> Arc<Series> {
    let name = i.to_string();
    t.all_series()
        .into_iter()
        .find(|s| s.labels().get("i") == Some(name.as_str()))
        .unwrap()
}

/// Every sample of series `i` as (t, bits), read the way queries read (chunks merged).
fn read(t: &TenantHead, i: u32) -> Vec<(i64, u64)> {
    let mut v = Vec::new();
    series(t, i).samples(i64::MIN, i64::MAX, &mut v);
    v.into_iter().map(|(t, v)| (t, v.to_bits())).collect()
}

fn bits(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

/// Prometheus catching up: 5 samples a series a request. The second pass is all no-ops,
/// counted as written, logged again (so a push whose first WAL append failed becomes
/// durable), and the data reads back once.
#[test]
fn a_repeated_pass_of_requests_is_written_again_as_no_ops() {
    let (_h, t) = head(Duration::ZERO);
    let reqs: Vec<Vec<(i64, f64)>> = (0..40)
        .map(|r| {
            (0..5)
                .map(|k| ((r * 5 + k) * 1000, (r * 5 + k) as f64))
                .collect()
        })
        .collect();
    for pass in 0..2 {
        for r in &reqs {
            let mut log = WalLog::default();
            let rep = t.append(&batch(&[(0, r), (1, r)]), Some(&mut log));
            assert_eq!((rep.appended, rep.error_count), (10, 0), "pass {pass}");
            assert_eq!(rep.duplicates_ignored, if pass == 0 { 0 } else { 10 });
            assert_eq!(log.samples.len(), 10, "pass {pass}: every sample logged");
        }
    }
    let want: Vec<(i64, f64)> = reqs.concat();
    assert_eq!(read(&t, 0), bits(&want));
    assert_eq!(read(&t, 1), bits(&want));
    // 200 samples: closed chunks were searched too.
    assert!(series(&t, 0).num_chunks() >= 2);
}

#[test]
fn another_value_at_a_held_timestamp_is_refused_with_both_values() {
    let (_h, t) = head(Duration::ZERO);
    let s: Vec<(i64, f64)> = (0..200).map(|i| (i * 1000, i as f64)).collect();
    t.append(&batch(&[(0, &s)]), None);
    for at in [5_000i64, 150_000, 199_000] {
        let r = t.append(&batch(&[(0, &[(at, -1.5)])]), None);
        assert_eq!((r.appended, r.rejected), (0, 1));
        let e = &r.errors[0].error;
        assert_eq!(
            *e,
            HeadError::DuplicateTimestamp {
                t: at,
                stored: ((at / 1000) as f64).to_bits(),
                new: (-1.5f64).to_bits()
            }
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("stored {}", at / 1000)), "{msg}");
        assert!(msg.contains("new -1.5"), "{msg}");
        assert_eq!(e.reason(), "duplicate_timestamp");
        assert!(r.errors[0].series.contains("i=\"0\""));
    }
    assert_eq!(read(&t, 0), bits(&s));
}

/// With no window, a sample between held ones is out of order; one older than anything held
/// is out of bounds (whether the store has it cannot be told).
#[test]
fn without_a_window_older_samples_are_out_of_order_or_out_of_bounds() {
    let (_h, t) = head(Duration::ZERO);
    t.append(&batch(&[(0, &[(1000, 1.0), (3000, 3.0)])]), None);
    let r = t.append(&batch(&[(0, &[(2000, 2.0)])]), None);
    assert_eq!(
        r.errors[0].error,
        HeadError::OutOfOrder {
            t: 2000,
            last: 3000
        }
    );
    let r = t.append(&batch(&[(0, &[(500, 2.0)])]), None);
    assert_eq!(
        r.errors[0].error,
        HeadError::OutOfBounds {
            t: 500,
            oldest: 1000
        }
    );
    assert_eq!(r.errors[0].error.reason(), "sample_out_of_bounds");
}

#[test]
fn the_window_accepts_older_samples_and_reads_merge_them_in_order() {
    let (h, t) = head(Duration::from_secs(100));
    let inorder: Vec<(i64, f64)> = (0..50).map(|i| (i * 2000, i as f64)).collect();
    t.append(&batch(&[(0, &inorder)]), None);
    // Odd seconds, newest first, all inside the window (newest is 98 s).
    let ooo: Vec<(i64, f64)> = (0..49)
        .rev()
        .map(|i| (i * 2000 + 1000, -(i as f64)))
        .collect();
    let mut log = WalLog::default();
    let r = t.append(&batch(&[(0, &ooo)]), Some(&mut log));
    assert_eq!((r.appended, r.ooo_appended, r.error_count), (49, 49, 0));
    assert_eq!(log.samples.len(), 49, "out-of-order samples are logged");
    let mut want = inorder.clone();
    want.extend(&ooo);
    want.sort_by_key(|s| s.0);
    assert_eq!(read(&t, 0), bits(&want));
    // 49 > 32: one out-of-order chunk closed, the rest in the buffer.
    let s = series(&t, 0);
    assert!(h.closed_bytes() > 0);
    assert!(s.num_chunks() >= 3, "{}", s.num_chunks());
    // Repeats of in-order and out-of-order samples are no-ops; other values refused.
    // -0.0: bits, not numbers, are compared.
    let r = t.append(&batch(&[(0, &[(1000, -0.0), (2000, 1.0)])]), None);
    assert_eq!(
        (r.appended, r.duplicates_ignored, r.ooo_appended),
        (2, 2, 0)
    );
    let r = t.append(&batch(&[(0, &[(3000, 7.0)])]), None);
    assert!(matches!(
        r.errors[0].error,
        HeadError::DuplicateTimestamp { t: 3000, .. }
    ));
    // Outside the window: too old (Prometheus's name).
    t.append(&batch(&[(0, &[(500_000, 1.0)])]), None);
    let r = t.append(&batch(&[(0, &[(399_000, 1.0)])]), None);
    assert_eq!(
        r.errors[0].error,
        HeadError::TooOld {
            t: 399_000,
            last: 500_000,
            window_ms: 100_000
        }
    );
    assert_eq!(r.errors[0].error.reason(), "too_old");
    let r = t.append(&batch(&[(0, &[(400_000, 1.0)])]), None);
    assert_eq!(r.ooo_appended, 1, "the bound is inclusive");
    // Chunk handles come sorted by start; merged copies are disjoint.
    let copies = s.chunks(i64::MIN, i64::MAX);
    assert!(copies.windows(2).all(|w| w[0].max_t < w[1].min_t));
}

#[test]
fn the_overrides_file_sets_a_tenants_window() {
    let overrides = Arc::new(
        crate::limits::Overrides::from_text(
            "overrides:\n  t:\n    out_of_order_time_window: 10s\n",
        )
        .unwrap(),
    );
    let head = Head::new(
        HeadConfig {
            overrides,
            ..HeadConfig::default()
        },
        Arc::new(Metrics::new()),
    );
    let t = head.tenant_or_create(&TenantId::parse("t").unwrap());
    let u = head.tenant_or_create(&TenantId::parse("u").unwrap());
    assert_eq!((t.ooo_window_ms(), u.ooo_window_ms()), (10_000, 0));
    t.append(&batch(&[(0, &[(1000, 1.0), (20_000, 2.0)])]), None);
    let r = t.append(&batch(&[(0, &[(15_000, 1.5)])]), None);
    assert_eq!(r.ooo_appended, 1);
}

/// Cuts, checkpoints and flush marks keep out-of-order chunks apart: a mark covering their
/// time never makes them flushed (they may never have been uploaded).
#[test]
fn out_of_order_chunks_survive_snapshots_and_flush_marks() {
    let (_h, t) = head(Duration::from_secs(3600));
    let inorder: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, i as f64)).collect();
    t.append(&batch(&[(0, &inorder)]), None);
    let ooo: Vec<(i64, f64)> = (0..5)
        .map(|i| (i * 10_000 + 5000, 0.5 + i as f64))
        .collect();
    t.append(&batch(&[(0, &ooo)]), None);
    let s = series(&t, 0);
    // The snapshot: the out-of-order buffer first, the open in-order chunk last.
    let snap = s.snapshot();
    assert_eq!(snap.len(), 2);
    assert!(snap[0].ooo && !snap[1].ooo);
    assert_eq!((snap[0].min_t, snap[0].max_t), (5000, 45_000));
    // Restored into a fresh head, appends go on after the newest in-order sample.
    let fresh = Series::new(s.labels().clone(), 99);
    fresh.restore(snap, None).unwrap();
    let mut got = Vec::new();
    fresh.samples(i64::MIN, i64::MAX, &mut got);
    let mut want = inorder.clone();
    want.extend(&ooo);
    want.sort_by_key(|s| s.0);
    assert_eq!(got, want);
    let r = fresh.append_with(&[(85_000, 1.0), (100_000, 10.0)], None, 0);
    assert_eq!(r.appended, 1, "85 s is neither held nor newer: refused");
    let r = fresh.append_with(&[(5000, 0.5)], None, 0);
    assert_eq!(r.duplicates, 1, "restored out-of-order samples are found");

    // Cut everything; a flush mark at the newest time covers only the in-order chunk.
    t.cut_due(0, i64::MAX, Duration::MAX, true);
    let mut pending = Vec::new();
    s.pending(&mut pending);
    assert_eq!(pending.len(), 2);
    t.apply_flush_mark(&s, 90_000);
    assert_eq!(
        s.unflushed_chunks(),
        1,
        "the out-of-order chunk stays pending"
    );
    let mut left = Vec::new();
    s.pending(&mut left);
    assert_eq!((left[0].min_t, left[0].max_t), (5000, 45_000));
    // The flusher's mark for an upload of only the out-of-order chunk: none.
    assert_eq!(s.flush_mark(&[5000]), None);
    assert_eq!(s.flush_mark(&[0, 5000]), Some(90_000));
}

/// The durability of a no-op: the head took a push whose WAL append failed (modelled by an
/// append without a log); the retry logs the samples, and after a crash (the ingester
/// dropped, not closed) they are back, once.
#[test]
fn a_retry_after_a_failed_wal_append_makes_the_samples_durable() {
    use crate::ingest::Ingester;
    use crate::wal::{SyncMode, WalConfig};
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let head = Arc::new(Head::new(
            HeadConfig {
                out_of_order_window: Duration::from_secs(60),
                ..HeadConfig::default()
            },
            Arc::new(Metrics::new()),
        ));
        let cfg = WalConfig {
            sync: SyncMode::Always,
            ..WalConfig::default()
        };
        let (ing, _) = Ingester::open(head.clone(), dir.path(), cfg).unwrap();
        (head, ing)
    };
    let id = TenantId::parse("t").unwrap();
    let first: Vec<(i64, f64)> = (0..5).map(|i| (i * 1000, i as f64)).collect();
    let lost: Vec<(i64, f64)> = (5..10).map(|i| (i * 1000, i as f64)).collect();
    let ooo: Vec<(i64, f64)> = vec![(4500, 4.5)];
    {
        let (head, ing) = open();
        let t = head.tenant_or_create(&id);
        let mut log = WalLog::default();
        ing.append(&t, &batch(&[(0, &first)]), &mut log).unwrap();
        // The head takes these; the WAL append "fails" (nothing is logged).
        t.append(&batch(&[(0, &lost), (1, &lost)]), None);
        t.append(&batch(&[(0, &ooo)]), None);
        // The client retries: all no-ops, all logged, acknowledged once durable.
        let (r, pos) = ing
            .append(&t, &batch(&[(0, &lost), (1, &lost)]), &mut log)
            .unwrap();
        assert_eq!((r.appended, r.duplicates_ignored), (10, 10));
        assert!(pos.is_some(), "the retry wrote to the WAL");
        let (r, _) = ing.append(&t, &batch(&[(0, &ooo)]), &mut log).unwrap();
        assert_eq!(r.duplicates_ignored, 1);
        // Crash: dropped without a checkpoint or close.
    }
    let (head, _ing) = open();
    let t = head.tenant(&id).unwrap();
    let mut want = first.clone();
    want.extend(&lost);
    want.extend(&ooo);
    want.sort_by_key(|s| s.0);
    assert_eq!(read(&t, 0), bits(&want));
    assert_eq!(read(&t, 1), bits(&lost));
}

/// Replay lands samples as the pushes did, whatever the window is now: out-of-order ones
/// are not refused at replay after the window shrank, and repeats are no-ops.
#[test]
fn replay_keeps_out_of_order_samples_after_the_window_shrank() {
    use crate::ingest::Ingester;
    use crate::wal::{SyncMode, WalConfig};
    let dir = tempfile::tempdir().unwrap();
    let open = |window: u64| {
        let head = Arc::new(Head::new(
            HeadConfig {
                out_of_order_window: Duration::from_secs(window),
                ..HeadConfig::default()
            },
            Arc::new(Metrics::new()),
        ));
        let cfg = WalConfig {
            sync: SyncMode::Always,
            ..WalConfig::default()
        };
        let (ing, _) = Ingester::open(head.clone(), dir.path(), cfg).unwrap();
        (head, ing)
    };
    let id = TenantId::parse("t").unwrap();
    let mut want = Vec::new();
    {
        let (head, ing) = open(600);
        let t = head.tenant_or_create(&id);
        let mut log = WalLog::default();
        for round in 0..3i64 {
            let newer: Vec<(i64, f64)> = (0..40)
                .map(|i| (round * 100_000 + i * 2000, i as f64))
                .collect();
            let older: Vec<(i64, f64)> = (0..39)
                .map(|i| (round * 100_000 + i * 2000 + 1000, -(i as f64)))
                .collect();
            ing.append(&t, &batch(&[(0, &newer)]), &mut log).unwrap();
            let (r, _) = ing.append(&t, &batch(&[(0, &older)]), &mut log).unwrap();
            assert_eq!(r.ooo_appended, 39);
            // And a repeat of both.
            ing.append(&t, &batch(&[(0, &newer), (0, &older)]), &mut log)
                .unwrap();
            want.extend(newer);
            want.extend(older);
            if round == 1 {
                ing.checkpoint().unwrap();
            }
        }
    }
    want.sort_by_key(|s| s.0);
    let (head, _ing) = open(0);
    let t = head.tenant(&id).unwrap();
    assert_eq!(read(&t, 0), bits(&want));
}

/// A checkpoint of a series whose in-order chunks were all released holds only out-of-order
/// chunks, the newest sample not necessarily in the last one: restore takes the newest of
/// all as "the newest", so older samples are still looked up (a repeat is a no-op) instead
/// of being appended as new.
#[test]
fn restoring_only_out_of_order_chunks_takes_the_newest_sample_of_all() {
    let chunk = |ts: std::ops::Range<i64>| {
        let s: Vec<(i64, f64)> = ts.map(|i| (i * 1000, i as f64)).collect();
        SnapshotChunk {
            min_t: s[0].0,
            max_t: s[s.len() - 1].0,
            data: crate::chunk::encode(s),
            flushed: false,
            spilled: None,
            ooo: true,
            encoding: crate::chunk::ENCODING_XOR,
        }
    };
    let s = Series::new(
        crate::model::Labels::from_strs([("__name__", "r")]).unwrap(),
        1,
    );
    s.restore(vec![chunk(50..60), chunk(10..20)], None).unwrap();
    let r = s.append_with(&[(55_000, 55.0), (59_000, 59.0)], None, 0);
    assert_eq!((r.duplicates, r.appended), (2, 0));
    let r = s.append_with(&[(58_500, 1.0)], None, 0);
    assert_eq!(
        r.appended, 0,
        "older than the newest held: not appended in order"
    );
    let r = s.append_with(&[(60_000, 60.0)], None, 0);
    assert_eq!(r.appended, 1);
    let mut got = Vec::new();
    s.samples(i64::MIN, i64::MAX, &mut got);
    assert_eq!(got.len(), 21);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
}
