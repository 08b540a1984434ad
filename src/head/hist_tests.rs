//! Native histograms in the head: append rules, chunks, and the way back from a
//! checkpoint and the WAL.

use std::sync::Arc;

use super::*;
use crate::hist::fixtures::{custom_series, float_series, gauge_series, int_series, same_samples};
use crate::model::HistogramValue;
use crate::proto::WriteSeries;

type HSeries = (
    Vec<(&'static str, &'static str)>,
    Vec<(i64, HistogramValue)>,
);

/// The shapes every test here stores: several hundred samples each, so chunks are cut.
pub(crate) fn shapes() -> Vec<HSeries> {
    vec![
        (vec![("__name__", "h_int")], int_series(1_000, 15_000, 300)),
        (
            vec![("__name__", "h_gauge")],
            gauge_series(1_000, 15_000, 200),
        ),
        (
            vec![("__name__", "h_float")],
            float_series(1_000, 15_000, 250),
        ),
        (
            vec![("__name__", "h_custom")],
            custom_series(1_000, 15_000, 130),
        ),
    ]
}

/// A batch of histogram series (no float samples).
fn hbatch<'a>(series: &'a [HSeries]) -> WriteBatch<'a> {
    let mut b = WriteBatch::default();
    for (labels, hs) in series {
        let ls = b.labels.len() as u32;
        b.labels
            .extend(labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let hs0 = b.histograms.len() as u32;
        b.histograms.extend(hs.iter().cloned());
        b.series.push(WriteSeries {
            labels_start: ls,
            labels_end: b.labels.len() as u32,
            histograms_start: hs0,
            histograms_end: b.histograms.len() as u32,
            ..WriteSeries::default()
        });
    }
    b
}

fn read_back(t: &TenantHead, name: &str) -> Vec<(i64, HistogramValue)> {
    let m = Matcher::new(crate::model::MatchOp::Eq, "__name__", name).unwrap();
    let s = t.select(&[m], i64::MIN, i64::MAX);
    assert_eq!(s.len(), 1, "{name}");
    let mut out = Vec::new();
    s[0].histograms(i64::MIN, i64::MAX, &mut out);
    out
}

fn check_all(t: &TenantHead, series: &[HSeries]) {
    for (labels, want) in series {
        let got = read_back(t, labels[0].1);
        if let Some(i) = crate::hist::fixtures::first_difference(&got, want) {
            eprintln!("got  {:?}\nwant {:?}", got.get(i), want.get(i));
        }
        assert!(
            same_samples(&got, want),
            "{}: {} samples back, {} sent",
            labels[0].1,
            got.len(),
            want.len(),
        );
    }
}

fn head() -> (Head, Arc<TenantHead>) {
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let t = head.tenant_or_create(&TenantId::parse("t1").unwrap());
    (head, t)
}

#[test]
fn every_shape_reads_back_exactly_and_is_cut_into_several_chunks() {
    let (_h, t) = head();
    let series = shapes();
    let mut log = WalLog::default();
    let r = t.append(&hbatch(&series), Some(&mut log));
    let n: usize = series.iter().map(|s| s.1.len()).sum();
    assert_eq!(r.histograms_appended, n as u64, "{:?}", r.errors);
    assert_eq!(r.error_count, 0);
    assert_eq!(r.appended, 0);
    assert_eq!(
        log.histograms.len() + log.float_histograms.len(),
        n,
        "every histogram is logged"
    );
    assert!(log
        .histograms
        .iter()
        .all(|h| matches!(h.h, HistogramValue::Int(_))));
    assert!(log
        .float_histograms
        .iter()
        .all(|h| matches!(h.h, HistogramValue::Float(_))));
    check_all(&t, &series);
    // The chunks carry their encoding, and the int series was cut (counter reset, schema
    // change, size).
    let m = Matcher::new(crate::model::MatchOp::Eq, "__name__", "h_int").unwrap();
    let s = &t.select(&[m], i64::MIN, i64::MAX)[0];
    let chunks = s.chunks(i64::MIN, i64::MAX);
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    assert!(chunks
        .iter()
        .all(|c| c.encoding == crate::chunk::ENCODING_HISTOGRAM));
    assert!(chunks.windows(2).all(|w| w[0].max_t < w[1].min_t));
}

#[test]
fn repeats_are_no_ops_older_is_out_of_order_and_other_values_are_duplicates() {
    let (_h, t) = head();
    let series = shapes();
    t.append(&hbatch(&series), None);
    // The same request again: all written, nothing stored twice.
    let last: Vec<HSeries> = series
        .iter()
        .map(|(l, hs)| (l.clone(), hs[hs.len() - 1..].to_vec()))
        .collect();
    let mut log = WalLog::default();
    let r = t.append(&hbatch(&last), Some(&mut log));
    assert_eq!(r.error_count, 0, "{:?}", r.errors);
    assert_eq!(r.histograms_appended, 4);
    assert_eq!(r.duplicates_ignored, 0, "float repeats only");
    assert_eq!(
        log.histograms.len() + log.float_histograms.len(),
        4,
        "repeats are logged"
    );
    check_all(&t, &series);
    // A new one older than the newest: out of order. The newest timestamp with another
    // value: duplicate.
    let (l, hs) = &series[0];
    let mut older = hs[10].clone();
    older.0 += 1;
    let r = t.append(&hbatch(&[(l.clone(), vec![older])]), None);
    assert!(
        matches!(r.errors[0].error, HeadError::OutOfOrder { .. }),
        "{:?}",
        r.errors
    );
    let mut other = hs[hs.len() - 1].clone();
    if let HistogramValue::Int(h) = &mut other.1 {
        h.sum += 1.0;
    }
    let r = t.append(&hbatch(&[(l.clone(), vec![other])]), None);
    assert!(
        matches!(r.errors[0].error, HeadError::DuplicateHistogram { .. }),
        "{:?}",
        r.errors
    );
    assert_eq!(r.histograms_appended, 0);
    check_all(&t, &series);
}

#[test]
fn a_series_switching_between_floats_and_histograms_keeps_both_in_order() {
    let (_h, t) = head();
    let hs = int_series(10_000, 1000, 5);
    let labels = vec![("__name__", "mixed")];
    // Floats, then histograms, then floats again.
    let mut b = WriteBatch::default();
    b.labels.push((b"__name__", b"mixed"));
    b.samples.extend([(1000, 1.0), (2000, 2.0)]);
    b.series.push(WriteSeries {
        labels_start: 0,
        labels_end: 1,
        samples_start: 0,
        samples_end: 2,
        ..WriteSeries::default()
    });
    assert_eq!(t.append(&b, None).appended, 2);
    let r = t.append(&hbatch(&[(labels.clone(), hs.clone())]), None);
    assert_eq!(r.histograms_appended, hs.len() as u64, "{:?}", r.errors);
    // A float at the newest histogram's timestamp: refused; after it: taken.
    let newest = hs[hs.len() - 1].0;
    b.samples = vec![(newest, 3.0), (newest + 1000, 4.0)];
    let r = t.append(&b, None);
    assert_eq!(r.appended, 1);
    assert!(matches!(
        r.errors[0].error,
        HeadError::DuplicateHistogram { .. }
    ));
    let m = Matcher::new(crate::model::MatchOp::Eq, "__name__", "mixed").unwrap();
    let s = &t.select(&[m], i64::MIN, i64::MAX)[0];
    let chunks = s.chunks(i64::MIN, i64::MAX);
    let encs: Vec<u8> = chunks.iter().map(|c| c.encoding).collect();
    // A new chunk at each change of value type (the histograms' own counter reset and
    // schema change cut more).
    assert_eq!(encs.first(), Some(&1));
    assert_eq!(encs.last(), Some(&1));
    assert!(
        encs.len() >= 3 && encs[1..encs.len() - 1].iter().all(|&e| e == 2),
        "{encs:?}"
    );
    let mut floats = Vec::new();
    s.samples(i64::MIN, i64::MAX, &mut floats);
    assert_eq!(floats, vec![(1000, 1.0), (2000, 2.0), (newest + 1000, 4.0)]);
    assert!(same_samples(&read_back(&t, "mixed"), &hs));
}

#[test]
fn an_inconsistent_histogram_is_refused_with_a_reason() {
    let (_h, t) = head();
    let mut hs = int_series(1000, 1000, 1);
    if let HistogramValue::Int(h) = &mut hs[1].1 {
        h.positive_buckets.pop();
    }
    let r = t.append(&hbatch(&[(vec![("__name__", "bad")], hs)]), None);
    assert_eq!(r.histograms_appended, 5);
    assert!(
        matches!(
            r.errors[0].error,
            HeadError::InvalidHistogram { t: 2000, .. }
        ),
        "{:?}",
        r.errors
    );
}

/// Through the WAL (records 4 and 5) and a checkpoint (open and closed histogram chunks),
/// as a restarted ingester reads them.
#[test]
fn histograms_come_back_from_the_wal_and_from_a_checkpoint() {
    use crate::ingest::Ingester;
    use crate::wal::{SyncMode, WalConfig};
    let dir = tempfile::tempdir().unwrap();
    let cfg = || WalConfig {
        sync: SyncMode::Always,
        ..WalConfig::default()
    };
    let tenant = TenantId::parse("t1").unwrap();
    let series = shapes();
    let open = || {
        let head = Arc::new(Head::new(HeadConfig::default(), Arc::new(Metrics::new())));
        let (ing, _) = Ingester::open(head.clone(), dir.path(), cfg()).unwrap();
        (head, ing)
    };
    {
        let (head, ing) = open();
        let th = head.tenant_for_push(&tenant).unwrap();
        let mut log = WalLog::default();
        // Half before the checkpoint, half after (so both paths are exercised).
        let first: Vec<HSeries> = series
            .iter()
            .map(|(l, hs)| (l.clone(), hs[..hs.len() / 2].to_vec()))
            .collect();
        let rest: Vec<HSeries> = series
            .iter()
            .map(|(l, hs)| (l.clone(), hs[hs.len() / 2..].to_vec()))
            .collect();
        ing.append(&th, &hbatch(&first), &mut log).unwrap();
        // The whole request again (a retry): every histogram a no-op, logged again.
        let (r, pos) = ing.append(&th, &hbatch(&first), &mut log).unwrap();
        let n: usize = first.iter().map(|s| s.1.len()).sum();
        assert_eq!(
            (r.histograms_appended, r.error_count),
            (n as u64, 0),
            "{:?}",
            r.errors
        );
        assert!(pos.is_some(), "repeats are logged");
        // WAL only.
        drop((head, ing));
        let (head, ing) = open();
        let th = head.tenant(&tenant).unwrap();
        check_all(&th, &first);
        ing.checkpoint().unwrap();
        let th = head.tenant_for_push(&tenant).unwrap();
        let (r, _) = ing.append(&th, &hbatch(&rest), &mut log).unwrap();
        assert_eq!(r.error_count, 0, "{:?}", r.errors);
    }
    // Checkpoint plus WAL.
    let (head, ing) = open();
    let th = head.tenant(&tenant).unwrap();
    check_all(&th, &series);
    // And once more from a checkpoint holding everything.
    ing.checkpoint().unwrap();
    drop((head, ing));
    let (head, _ing) = open();
    check_all(&head.tenant(&tenant).unwrap(), &series);
}

/// A histogram with very many buckets: its chunks are closed at the size bound (so the
/// spill and the store accept them), and one with too many buckets is refused.
#[test]
fn huge_histograms_cut_chunks_at_the_size_bound_and_too_many_buckets_are_refused() {
    use crate::model::{FloatHistogram, Span};
    let (_h, t) = head();
    let n = crate::hist::MAX_BUCKETS as usize;
    let hs: Vec<(i64, HistogramValue)> = (0..20)
        .map(|i| {
            (
                1000 + i as i64 * 1000,
                HistogramValue::Float(FloatHistogram {
                    schema: 8,
                    count: 1e9,
                    sum: i as f64,
                    positive_spans: vec![Span {
                        offset: 0,
                        length: n as u32,
                    }],
                    // Values that change every sample, so each takes many bits.
                    positive_buckets: (0..n)
                        .map(|k| ((k * 7919 + i * 104_729) % 1_000_003) as f64 + 0.37)
                        .collect(),
                    ..Default::default()
                }),
            )
        })
        .collect();
    let series = vec![(vec![("__name__", "huge")], hs.clone())];
    let r = t.append(&hbatch(&series), None);
    assert_eq!(r.histograms_appended, 20, "{:?}", r.errors);
    let m = Matcher::new(crate::model::MatchOp::Eq, "__name__", "huge").unwrap();
    let s = &t.select(&[m], i64::MIN, i64::MAX)[0];
    let chunks = s.chunks(i64::MIN, i64::MAX);
    assert!(chunks.len() > 1, "cut by size");
    let bound = series::MAX_OPEN_HISTOGRAM_CHUNK_BYTES;
    assert!(
        chunks.iter().all(|c| c.data.len() < bound + 300 * 1024),
        "sizes {:?}",
        chunks.iter().map(|c| c.data.len()).collect::<Vec<_>>()
    );
    assert!(same_samples(&read_back(&t, "huge"), &hs));
    let mut too_many = hs[0].clone();
    too_many.0 = 1_000_000;
    if let HistogramValue::Float(h) = &mut too_many.1 {
        h.positive_spans[0].length += 1;
        h.positive_buckets.push(1.0);
    }
    let r = t.append(
        &hbatch(&[(vec![("__name__", "huge")], vec![too_many])]),
        None,
    );
    assert!(
        matches!(r.errors[0].error, HeadError::InvalidHistogram { .. }),
        "{:?}",
        r.errors
    );
}

/// Closed histogram chunks spill like XOR chunks, and a checkpoint that refers to the
/// spilled ones restores them with their encoding.
#[test]
fn spilled_histogram_chunks_read_back_and_restore_from_a_snapshot() {
    use crate::spill::{Spill, SpillConfig, MIN_FILE_SIZE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let spill = Arc::new(
        Spill::open(SpillConfig {
            dir: dir.path().to_path_buf(),
            file_size: MIN_FILE_SIZE_BYTES,
        })
        .unwrap(),
    );
    let hs = float_series(0, 15_000, 400);
    let s = Series::new(
        crate::model::Labels::from_strs([("__name__", "h")]).unwrap(),
        1,
    );
    assert_eq!(s.append_histograms(&hs, None).appended, hs.len() as u64);
    let mut spillable = Vec::new();
    s.spillable(&mut spillable);
    assert!(spillable.len() >= 2, "{spillable:?}");
    for (min_t, _) in &spillable {
        let r = s.spill_write(*min_t, &spill).unwrap().expect("in memory");
        spill.sync().unwrap();
        assert!(s.spill_commit(*min_t, r, &spill) > 0);
    }
    let mut got = Vec::new();
    s.histograms(i64::MIN, i64::MAX, &mut got);
    assert!(same_samples(&got, &hs), "read through the spill");
    let snap = s.snapshot();
    assert!(snap.iter().filter(|c| c.spilled.is_some()).count() >= 2);
    assert!(snap
        .iter()
        .all(|c| c.encoding == crate::chunk::ENCODING_FLOAT_HISTOGRAM));
    let back = Series::new(
        crate::model::Labels::from_strs([("__name__", "h")]).unwrap(),
        1,
    );
    back.restore(snap, Some(&spill)).unwrap();
    let mut got = Vec::new();
    back.histograms(i64::MIN, i64::MAX, &mut got);
    assert!(same_samples(&got, &hs), "restored from the snapshot");
    // Appends continue after the restored newest sample; a repeat of it is a no-op.
    let next = float_series(hs[hs.len() - 1].0 + 15_000, 15_000, 1);
    let again = back.append_histograms(&[hs[hs.len() - 1].clone(), next[0].clone()], None);
    assert_eq!(
        (again.duplicates, again.appended),
        (1, 1),
        "{:?}",
        again.first_error
    );
}

/// A checkpoint taken with a histogram chunk open re-opens it: appends after the restart
/// continue the same chunk, and the chunks are byte for byte those one appender would
/// have cut for all the samples (as Prometheus's head, which never restarts mid-chunk).
#[test]
fn an_open_histogram_chunk_resumes_after_a_restore() {
    for hs in [int_series(0, 15_000, 100), gauge_series(0, 15_000, 150)] {
        let labels = || crate::model::Labels::from_strs([("__name__", "h")]).unwrap();
        let s = Series::new(labels(), 1);
        let cut = hs.len() - 17;
        assert_eq!(s.append_histograms(&hs[..cut], None).appended, cut as u64);
        let snap = s.snapshot();
        let back = Series::new(labels(), 1);
        back.restore(snap, None).unwrap();
        let more = back.append_histograms(&hs[cut..], None);
        assert_eq!(more.appended, 17, "{:?}", more.first_error);
        let got: Vec<(i64, i64, u8, Vec<u8>)> = back
            .chunks(i64::MIN, i64::MAX)
            .into_iter()
            .map(|c| (c.min_t, c.max_t, c.encoding, c.data))
            .collect();
        let want: Vec<(i64, i64, u8, Vec<u8>)> = crate::hist::encode_histograms(&hs)
            .into_iter()
            .map(|e| (e.min_t, e.max_t, e.encoding, e.data))
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "chunks differ from one appender's");
    }
}

/// A histogram with its `sum` changed: not equivalent to the original.
fn other_value(v: &HistogramValue) -> HistogramValue {
    let mut v = v.clone();
    match &mut v {
        HistogramValue::Int(h) => h.sum += 1.0,
        HistogramValue::Float(h) => h.sum += 1.0,
    }
    v
}

/// Retries follow the float rules: a histogram equal to any one held (open chunk, closed
/// chunks in memory or spilled) is a no-op, counted as written and logged again; another
/// value at a held timestamp is a duplicate; a new one before the newest is out of order,
/// before everything held out of bounds.
#[test]
fn retried_older_histograms_are_no_ops_wherever_they_are_held() {
    use crate::spill::{Spill, SpillConfig, MIN_FILE_SIZE_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let spill = Arc::new(
        Spill::open(SpillConfig {
            dir: dir.path().to_path_buf(),
            file_size: MIN_FILE_SIZE_BYTES,
        })
        .unwrap(),
    );
    let (h, t) = head();
    h.set_spill(spill);
    let series = shapes();
    let r = t.append(&hbatch(&series), None);
    assert_eq!(r.error_count, 0, "{:?}", r.errors);
    // Some closed chunks go to the spill: retries must find them there too.
    let (spilled, _) = h.spill_oldest(1).unwrap();
    assert!(spilled >= 1, "a chunk was spilled");
    let repeated = || t.metrics.repeated.get();
    let before = repeated();
    // Requests of 5 histograms a series, from the first sample to the newest: all held.
    let n: usize = series.iter().map(|s| s.1.len()).sum();
    let mut written = 0;
    let mut logged = 0;
    let longest = series.iter().map(|s| s.1.len()).max().unwrap();
    for at in (0..longest).step_by(5) {
        let part: Vec<HSeries> = series
            .iter()
            .filter(|(_, hs)| at < hs.len())
            .map(|(l, hs)| (l.clone(), hs[at..(at + 5).min(hs.len())].to_vec()))
            .collect();
        let mut log = WalLog::default();
        let r = t.append(&hbatch(&part), Some(&mut log));
        assert_eq!(r.error_count, 0, "at {at}: {:?}", r.errors);
        written += r.histograms_appended;
        logged += log.histograms.len() + log.float_histograms.len();
    }
    assert_eq!(
        written, n as u64,
        "every retried histogram counts as written"
    );
    assert_eq!(logged, n, "every retried histogram is logged again");
    assert_eq!(repeated() - before, n as u64, "weft_samples_repeated_total");
    check_all(&t, &series);

    for (l, hs) in &series {
        let one = |v: (i64, HistogramValue)| t.append(&hbatch(&[(l.clone(), vec![v])]), None);
        // Another value at a held timestamp, in a closed chunk and in the open one.
        for i in [1, 100, hs.len() - 2] {
            let r = one((hs[i].0, other_value(&hs[i].1)));
            assert!(
                matches!(r.errors[0].error, HeadError::DuplicateHistogram { .. }),
                "{}[{i}]: {:?}",
                l[0].1,
                r.errors
            );
        }
        // A new timestamp between held ones: out of order (no window for histograms).
        let r = one((hs[50].0 + 1, hs[50].1.clone()));
        assert!(
            matches!(r.errors[0].error, HeadError::OutOfOrder { .. }),
            "{:?}",
            r.errors
        );
        // Older than everything held: out of bounds.
        let r = one((hs[0].0 - 1, hs[0].1.clone()));
        assert!(
            matches!(r.errors[0].error, HeadError::OutOfBounds { .. }),
            "{:?}",
            r.errors
        );
        assert_eq!(r.histograms_appended, 0);
    }
    check_all(&t, &series);
}

/// A float held at a timestamp makes a histogram there a duplicate (another value), and
/// a float older than the newest histogram stays refused.
#[test]
fn a_histogram_at_a_held_float_timestamp_is_a_duplicate() {
    let (_h, t) = head();
    let labels = vec![("__name__", "mixed")];
    let mut b = WriteBatch::default();
    b.labels.push((b"__name__", b"mixed"));
    b.samples.extend((0..10).map(|i| (i * 1000, i as f64)));
    b.series.push(WriteSeries {
        labels_start: 0,
        labels_end: 1,
        samples_start: 0,
        samples_end: 10,
        ..WriteSeries::default()
    });
    assert_eq!(t.append(&b, None).appended, 10);
    let hs = int_series(20_000, 1000, 3);
    let n = hs.len() as u64;
    assert_eq!(
        t.append(&hbatch(&[(labels.clone(), hs.clone())]), None)
            .histograms_appended,
        n
    );
    let r = t.append(
        &hbatch(&[(labels.clone(), vec![(5000, hs[0].1.clone())])]),
        None,
    );
    assert!(
        matches!(r.errors[0].error, HeadError::DuplicateHistogram { .. }),
        "{:?}",
        r.errors
    );
    // The held histograms repeat as no-ops.
    let r = t.append(&hbatch(&[(labels, hs)]), None);
    assert_eq!(
        (r.histograms_appended, r.error_count),
        (n, 0),
        "{:?}",
        r.errors
    );
}

/// Releasing a histogram series' flushed closed chunks keeps its open histogram chunk
/// (and its newest histogram), so reads and appends carry on.
#[test]
fn releasing_closed_histogram_chunks_keeps_the_open_one() {
    let hs = int_series(0, 15_000, 300);
    let s = Series::new(
        crate::model::Labels::from_strs([("__name__", "h")]).unwrap(),
        1,
    );
    assert_eq!(s.append_histograms(&hs, None).appended, hs.len() as u64);
    let chunks = s.chunks(i64::MIN, i64::MAX);
    assert!(chunks.len() >= 2);
    let open_min = chunks[chunks.len() - 1].min_t;
    let closed_max = chunks[chunks.len() - 2].max_t;
    s.apply_flush_mark(closed_max);
    let mut released = Released::default();
    s.release_flushed(std::time::Duration::ZERO, true, &|_| true, &mut released);
    assert_eq!(released.chunks as usize, chunks.len() - 1);
    let mut got = Vec::new();
    s.histograms(i64::MIN, i64::MAX, &mut got);
    let want: Vec<_> = hs.iter().filter(|(t, _)| *t >= open_min).cloned().collect();
    assert!(
        same_samples(&got, &want),
        "{} back, {} open",
        got.len(),
        want.len()
    );
    // The newest still repeats as a no-op; the next one appends.
    let newest = hs[hs.len() - 1].clone();
    let next = int_series(newest.0 + 15_000, 15_000, 1);
    let r = s.append_histograms(&[newest, next[0].clone()], None);
    assert_eq!((r.duplicates, r.appended), (1, 1), "{:?}", r.first_error);
}

/// The open histogram chunk and its state count in the series bytes (the `head_series`
/// memory consumer), and leave it when the chunk is cut and the series removed.
#[test]
fn open_histogram_chunks_count_in_the_series_bytes() {
    let (h, t) = head();
    let labels = vec![("__name__", "h_int")];
    let hs = int_series(1_000, 15_000, 40);
    let r = t.append(&hbatch(&[(labels.clone(), hs[..1].to_vec())]), None);
    assert_eq!(r.histograms_appended, 1);
    let series_only = SERIES_OVERHEAD_BYTES + "__name__h_int".len() as u64;
    let one = h.index_bytes();
    assert!(
        one > series_only + std::mem::size_of::<HistogramValue>() as u64,
        "{one} bytes after one histogram: its state counts"
    );
    t.append(&hbatch(&[(labels.clone(), hs[1..].to_vec())]), None);
    let forty = h.index_bytes();
    assert!(forty > one, "the open chunk grew: {one} -> {forty} bytes");
    // The chunk's bytes move to the closed chunks when it is cut.
    assert_eq!(t.cut_due(i64::MAX, 0, std::time::Duration::ZERO, true), 1);
    let cut = h.index_bytes();
    assert!(cut < forty, "{forty} -> {cut} bytes after the cut");
    assert!(cut > series_only, "the newest histogram is still held");
    // Release everything and let the series go: back to nothing.
    let m = Matcher::new(crate::model::MatchOp::Eq, "__name__", "h_int").unwrap();
    let s = &t.select(&[m], i64::MIN, i64::MAX)[0];
    let max_t = hs[hs.len() - 1].0;
    t.apply_flush_mark(s, max_t);
    t.release_flushed(std::time::Duration::ZERO, true, &|_| true);
    assert_eq!(t.remove_idle(std::time::Duration::ZERO), 1);
    assert_eq!(h.index_bytes(), 0, "everything counted was taken off");
}
