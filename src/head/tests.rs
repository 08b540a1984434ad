use std::sync::Arc;

use super::*;
use crate::chunk::decode_bits;
use crate::model::MatchOp;
use crate::proto::WriteSeries;

/// One series of a test batch: its labels and its samples.
type TestSeries<'s, 'a> = (&'s [(&'a str, &'a str)], &'s [(i64, f64)]);

/// Builds a batch from (labels, samples) in wire form.
fn batch<'a>(series: &[TestSeries<'_, 'a>]) -> WriteBatch<'a> {
    let mut b = WriteBatch::default();
    for (labels, samples) in series {
        let ls = b.labels.len() as u32;
        b.labels
            .extend(labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
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

fn head_with(max_series: usize) -> (Head, Arc<TenantHead>) {
    let head = Head::new(
        HeadConfig {
            max_series_per_tenant: max_series,
            ..HeadConfig::default()
        },
        Arc::new(Metrics::new()),
    );
    let t = head.tenant_or_create(&TenantId::parse("t1").unwrap());
    (head, t)
}

fn all_samples(t: &TenantHead, matchers: &[Matcher]) -> Vec<(String, Vec<(i64, u64)>)> {
    t.select(matchers, i64::MIN, i64::MAX)
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            s.samples(i64::MIN, i64::MAX, &mut v);
            (
                s.labels().to_string(),
                v.into_iter().map(|(t, v)| (t, v.to_bits())).collect(),
            )
        })
        .collect()
}

fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
    Matcher::new(op, n, v).unwrap()
}

#[test]
fn append_cuts_a_chunk_every_120_samples_and_chunks_decode_to_the_samples() {
    let (_h, t) = head_with(100);
    let samples: Vec<(i64, f64)> = (0..300).map(|i| (i * 1000, i as f64 * 0.5)).collect();
    let r = t.append(&batch(&[(&[("__name__", "up")], &samples)]), None);
    assert_eq!((r.appended, r.error_count), (300, 0));
    let s = &t.select(&[m(MatchOp::Eq, "__name__", "up")], i64::MIN, i64::MAX)[0];
    let chunks = s.chunks(i64::MIN, i64::MAX);
    assert_eq!(
        chunks
            .iter()
            .map(|c| decode_bits(&c.data).unwrap().len())
            .collect::<Vec<_>>(),
        vec![120, 120, 60]
    );
    let decoded: Vec<(i64, u64)> = chunks
        .iter()
        .flat_map(|c| decode_bits(&c.data).unwrap())
        .collect();
    let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(decoded, want);
    assert_eq!((chunks[1].min_t, chunks[1].max_t), (120_000, 239_000));
    // A range inside the middle chunk returns only it, and samples are cut to the range.
    assert_eq!(s.chunks(150_000, 160_000).len(), 1);
    let mut v = Vec::new();
    s.samples(150_000, 160_000, &mut v);
    assert_eq!(v.first().map(|s| s.0), Some(150_000));
    assert_eq!(v.last().map(|s| s.0), Some(160_000));
    assert_eq!(v.len(), 11);
}

#[test]
fn out_of_order_sample_is_refused_and_the_rest_of_the_request_is_kept() {
    let (_h, t) = head_with(100);
    t.append(
        &batch(&[(&[("__name__", "a")], &[(1, 0.5), (10, 1.0)])]),
        None,
    );
    let r = t.append(
        &batch(&[
            (&[("__name__", "a")], &[(5, 2.0), (20, 3.0)]),
            (&[("__name__", "b")], &[(1, 1.0)]),
        ]),
        None,
    );
    assert_eq!(r.appended, 2);
    assert_eq!(r.rejected, 1);
    assert!(r.any_bad_data);
    assert!(matches!(
        r.errors[0].error,
        HeadError::OutOfOrder { t: 5, last: 10 }
    ));
    assert_eq!(r.errors[0].series, "a");
    let got = all_samples(&t, &[m(MatchOp::Re, "__name__", "a|b")]);
    assert_eq!(
        got[0].1,
        vec![
            (1, 0.5f64.to_bits()),
            (10, 1f64.to_bits()),
            (20, 3f64.to_bits())
        ]
    );
    assert_eq!(got[1].1, vec![(1, 1f64.to_bits())]);
}

#[test]
fn equal_timestamp_with_equal_bits_is_a_no_op_and_with_other_bits_is_refused() {
    let (_h, t) = head_with(100);
    let nan = f64::from_bits(0x7ff8_0000_0000_0001);
    t.append(&batch(&[(&[("__name__", "a")], &[(10, nan)])]), None);
    let r = t.append(&batch(&[(&[("__name__", "a")], &[(10, nan)])]), None);
    // Counted as written (the Written header), and as a repeat.
    assert_eq!((r.appended, r.duplicates_ignored, r.error_count), (1, 1, 0));
    let other_nan = f64::from_bits(0x7ff8_0000_0000_0002);
    let r = t.append(&batch(&[(&[("__name__", "a")], &[(10, other_nan)])]), None);
    assert!(matches!(
        r.errors[0].error,
        HeadError::DuplicateTimestamp { t: 10, stored, new }
            if stored == nan.to_bits() && new == other_nan.to_bits()
    ));
}

#[test]
fn series_limit_refuses_new_series_but_not_samples_of_existing_ones() {
    let (_h, t) = head_with(2);
    t.append(
        &batch(&[
            (&[("__name__", "a")], &[(1, 1.0)]),
            (&[("__name__", "b")], &[(1, 1.0)]),
        ]),
        None,
    );
    let r = t.append(
        &batch(&[
            (&[("__name__", "c")], &[(1, 1.0)]),
            (&[("__name__", "a")], &[(2, 1.0)]),
        ]),
        None,
    );
    assert_eq!(r.appended, 1);
    assert!(
        !r.any_bad_data,
        "a series limit is a tenant limit, not bad data"
    );
    assert!(matches!(
        r.errors[0].error,
        HeadError::SeriesLimit { limit: 2 }
    ));
    assert_eq!(t.num_series(), 2);
}

#[test]
fn unsorted_labels_and_empty_values_find_the_same_series() {
    let (_h, t) = head_with(100);
    t.append(
        &batch(&[(&[("__name__", "a"), ("job", "x")], &[(1, 1.0)])]),
        None,
    );
    t.append(
        &batch(&[(
            &[("job", "x"), ("empty", ""), ("__name__", "a")],
            &[(2, 1.0)],
        )]),
        None,
    );
    assert_eq!(t.num_series(), 1);
    assert_eq!(all_samples(&t, &[m(MatchOp::Eq, "job", "x")])[0].1.len(), 2);
}

#[test]
fn invalid_labels_are_refused_per_series() {
    let (_h, t) = head_with(100);
    let r = t.append(
        &batch(&[
            (&[("__name__", "a"), ("", "x")], &[(1, 1.0)]),
            (
                &[("__name__", "a"), ("dup", "x"), ("dup", "y")],
                &[(1, 1.0)],
            ),
            (&[("__name__", "ok")], &[(1, 1.0)]),
        ]),
        None,
    );
    assert_eq!((r.appended, r.error_count), (1, 2));
    assert_eq!(t.num_series(), 1);
}

#[test]
fn name_validation_scheme_is_the_flags_unless_the_tenant_overrides_it() {
    let head = Head::new(
        HeadConfig {
            overrides: Arc::new(
                crate::limits::Overrides::from_text(
                    "overrides:\n  old:\n    name_validation_scheme: legacy\n",
                )
                .unwrap(),
            ),
            ..HeadConfig::default()
        },
        Arc::new(Metrics::new()),
    );
    let push = |tenant: &str| {
        let t = head.tenant_or_create(&TenantId::parse(tenant).unwrap());
        let r = t.append(
            &batch(&[
                (&[("__name__", "a.b"), ("job", "x")], &[(1, 1.0)]),
                (&[("__name__", "a"), ("service.name", "x")], &[(1, 1.0)]),
                (&[("__name__", "a"), ("job", "x")], &[(1, 1.0)]),
            ]),
            None,
        );
        let errors: Vec<String> = r.errors.iter().map(|e| e.error.to_string()).collect();
        (r.appended, errors)
    };
    // The default (utf8) takes every name.
    assert_eq!(push("new"), (3, vec![]));
    let (appended, errors) = push("old");
    assert_eq!(appended, 1);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("invalid metric name \"a.b\""),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("invalid label name \"service.name\""),
        "{errors:?}"
    );
}

#[test]
fn matchers_follow_prometheus_semantics_for_absent_labels() {
    let (_h, t) = head_with(100);
    t.append(
        &batch(&[
            (&[("__name__", "m"), ("env", "prod")], &[(1, 1.0)]),
            (&[("__name__", "m"), ("env", "dev")], &[(1, 1.0)]),
            (&[("__name__", "m")], &[(1, 1.0)]),
        ]),
        None,
    );
    let names = |ms: &[Matcher]| -> Vec<String> {
        all_samples(&t, ms).into_iter().map(|(l, _)| l).collect()
    };
    let cases: Vec<(Vec<Matcher>, Vec<&str>)> = vec![
        (
            vec![m(MatchOp::Eq, "env", "prod")],
            vec![r#"m{env="prod"}"#],
        ),
        (
            vec![m(MatchOp::Neq, "env", "prod")],
            vec!["m", r#"m{env="dev"}"#],
        ),
        (vec![m(MatchOp::Re, "env", "pro")], vec![]),
        (
            vec![m(MatchOp::Re, "env", "p.*|d.*")],
            vec![r#"m{env="dev"}"#, r#"m{env="prod"}"#],
        ),
        (
            vec![m(MatchOp::Nre, "env", "d.*")],
            vec!["m", r#"m{env="prod"}"#],
        ),
        (vec![m(MatchOp::Eq, "env", "")], vec!["m"]),
        (
            vec![m(MatchOp::Neq, "env", "")],
            vec![r#"m{env="dev"}"#, r#"m{env="prod"}"#],
        ),
        (
            vec![m(MatchOp::Eq, "__name__", "m"), m(MatchOp::Re, "env", ".*")],
            vec!["m", r#"m{env="dev"}"#, r#"m{env="prod"}"#],
        ),
    ];
    for (ms, want) in cases {
        assert_eq!(names(&ms), want, "matchers {ms:?}");
    }
}

#[test]
fn tenants_do_not_see_each_other() {
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let a = head.tenant_or_create(&TenantId::parse("a").unwrap());
    a.append(&batch(&[(&[("__name__", "secret")], &[(1, 1.0)])]), None);
    let b = head.tenant_or_create(&TenantId::parse("b").unwrap());
    assert!(b
        .select(&[m(MatchOp::Re, "__name__", ".+")], i64::MIN, i64::MAX)
        .is_empty());
    assert_eq!(
        a.select(&[m(MatchOp::Re, "__name__", ".+")], i64::MIN, i64::MAX)
            .len(),
        1
    );
}

#[test]
fn flush_life_cycle_pending_in_flight_flushed_released() {
    let (h, t) = head_with(100);
    let samples: Vec<(i64, f64)> = (0..250).map(|i| (i * 1000, i as f64)).collect();
    t.append(&batch(&[(&[("__name__", "up")], &samples)]), None);
    let s = t.all_series()[0].clone();
    let mut p = Vec::new();
    s.pending(&mut p);
    assert_eq!(p.len(), 2, "two full chunks are closed");
    let closed: u64 = p.iter().map(|c| c.len as u64).sum();
    assert_eq!(h.closed_bytes(), closed);
    // Cutting the open chunk (forced) adds a third.
    assert_eq!(t.cut_due(0, i64::MAX, std::time::Duration::MAX, true), 1);
    p.clear();
    s.pending(&mut p);
    assert_eq!(p.len(), 3);
    let min_ts: Vec<i64> = p.iter().map(|c| c.min_t).collect();
    let copies = s.take_for_flush(&min_ts[..2]);
    assert_eq!(copies.len(), 2);
    p.clear();
    s.pending(&mut p);
    assert_eq!(p.len(), 1, "in-flight chunks are not pending");
    // A failed upload makes them pending again; a successful one flushed.
    s.finish_flush(&min_ts[..2], false, 0);
    p.clear();
    s.pending(&mut p);
    assert_eq!(p.len(), 3);
    s.take_for_flush(&min_ts);
    s.finish_flush(&min_ts, true, 7);
    assert_eq!(s.unflushed().0, 0);
    // Retained until the retain period passes; released with `all`.
    let r = t.release_flushed(std::time::Duration::from_secs(3600), false, &|_| true);
    assert_eq!(r.chunks, 0);
    let r = t.release_flushed(std::time::Duration::ZERO, true, &|_| true);
    assert_eq!((r.chunks, r.objects.clone()), (3, vec![7]));
    assert_eq!(h.closed_bytes(), 0);
    // New samples still append after the released ones.
    let more: Vec<(i64, f64)> = (250..260).map(|i| (i * 1000, i as f64)).collect();
    let r = t.append(&batch(&[(&[("__name__", "up")], &more)]), None);
    assert_eq!(r.appended, 10);
    let old = [(10_000i64, 1.0f64)];
    let r = t.append(&batch(&[(&[("__name__", "up")], &old)]), None);
    assert_eq!(
        r.rejected, 1,
        "older than released data is still out of order"
    );
}

#[test]
fn a_flush_mark_splits_a_straddling_chunk_into_the_uploaded_bytes_and_the_rest() {
    let (_h, t) = head_with(100);
    let samples: Vec<(i64, f64)> = (0..200).map(|i| (i * 1000, (i * 3) as f64)).collect();
    t.append(&batch(&[(&[("__name__", "up")], &samples)]), None);
    let s = t.all_series()[0].clone();
    // The original process cut at sample 50 and uploaded [0, 50], then [51, 170].
    let uploaded_first = crate::chunk::encode(samples[..=50].iter().copied());
    t.apply_flush_mark(&s, 50_000);
    t.apply_flush_mark(&s, 170_000);
    let chunks = s.chunks(i64::MIN, i64::MAX);
    let shape: Vec<(i64, i64, bool)> = chunks
        .iter()
        .map(|c| (c.min_t, c.max_t, c.flushed))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, 50_000, true),
            (51_000, 119_000, true),
            (120_000, 170_000, true),
            (171_000, 199_000, false)
        ]
    );
    assert_eq!(chunks[0].data, uploaded_first);
    let all: Vec<(i64, u64)> = chunks
        .iter()
        .flat_map(|c| decode_bits(&c.data).unwrap())
        .collect();
    let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(all, want);
    // Appends continue in the open remainder.
    let r = t.append(&batch(&[(&[("__name__", "up")], &[(200_000, 1.0)])]), None);
    assert_eq!(r.appended, 1);
    assert_eq!(s.unflushed().0, 0, "only the open chunk is unflushed");
}

#[test]
fn spilled_chunks_read_back_survive_a_restore_and_free_their_file_when_released() {
    use crate::spill::{Spill, SpillConfig};
    let dir = tempfile::tempdir().unwrap();
    let open_spill = || {
        Arc::new(
            Spill::open(SpillConfig {
                dir: dir.path().to_path_buf(),
                file_size: crate::spill::MIN_FILE_SIZE_BYTES,
            })
            .unwrap(),
        )
    };
    let (h, t) = head_with(100);
    h.set_spill(open_spill());
    let samples: Vec<(i64, f64)> = (0..360).map(|i| (i * 1000, (i * i) as f64)).collect();
    for name in ["a", "b", "c"] {
        t.append(&batch(&[(&[("__name__", name)], &samples)]), None);
    }
    let before = all_samples(&t, &[]);
    let in_memory = h.closed_bytes();
    assert!(in_memory > 0);
    // Move every closed chunk to the spill: memory drops to 0, reads are unchanged.
    let (chunks, bytes) = h.spill_oldest(u64::MAX).unwrap();
    assert_eq!((chunks, bytes), (6, in_memory));
    assert_eq!(h.closed_bytes(), 0);
    assert_eq!(all_samples(&t, &[]), before);
    assert!(h.spill().unwrap().live_bytes() > 0);

    // A checkpoint refers to the spilled chunks; a new head restores them from a reopened
    // spill (as after a restart) and reads the same samples.
    let snaps: Vec<(Labels, Vec<SnapshotChunk>)> = t
        .all_series()
        .iter()
        .map(|s| (s.labels().clone(), s.snapshot()))
        .collect();
    assert!(snaps
        .iter()
        .all(|(_, c)| c.iter().filter(|c| c.spilled.is_some()).count() == 2));
    let (h2, t2) = head_with(100);
    h2.set_spill(open_spill());
    for (i, (labels, chunks)) in snaps.into_iter().enumerate() {
        let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (&*l.name, &*l.value)).collect();
        let s = h2
            .restore_series(&TenantId::parse("t1").unwrap(), 1000 + i as u64, &pairs)
            .unwrap();
        t2.restore_chunks(&s, chunks).unwrap();
    }
    assert_eq!(all_samples(&t2, &[]), before);
    // Appends continue after the restored open chunk.
    let r = t2.append(&batch(&[(&[("__name__", "a")], &[(360_000, 1.0)])]), None);
    assert_eq!(r.appended, 1);

    // Once flushed and released, the spilled chunks let go of their file.
    let spill2 = h2.spill().unwrap().clone();
    let live = spill2.live_bytes();
    for s in t2.all_series() {
        let mut p = Vec::new();
        s.pending(&mut p);
        let min_ts: Vec<i64> = p.iter().map(|c| c.min_t).collect();
        s.take_for_flush(&min_ts);
        s.finish_flush(&min_ts, true, 1);
    }
    t2.release_flushed(std::time::Duration::ZERO, true, &|_| true);
    assert!(
        spill2.live_bytes() < live,
        "released chunks still count as live spill data"
    );
}

#[test]
fn index_bytes_counts_each_new_series_once_with_its_label_bytes() {
    let (head, t) = head_with(10);
    assert_eq!(head.index_bytes(), 0);
    let a: &[(&str, &str)] = &[("__name__", "up"), ("job", "node")];
    let b: &[(&str, &str)] = &[("__name__", "up"), ("job", "other")];
    t.append(&batch(&[(a, &[(1, 1.0)])]), None);
    let one = SERIES_OVERHEAD_BYTES + (8 + 2 + 3 + 4);
    assert_eq!(head.index_bytes(), one);
    // More samples of the same series cost nothing more here (chunks count elsewhere).
    t.append(&batch(&[(a, &[(2, 1.0), (3, 1.0)])]), None);
    assert_eq!(head.index_bytes(), one);
    t.append(&batch(&[(b, &[(1, 1.0)])]), None);
    assert_eq!(head.index_bytes(), 2 * one + 1);
    // A series refused by the series limit is not counted.
    let (head, t) = head_with(1);
    t.append(&batch(&[(a, &[(1, 1.0)]), (b, &[(1, 1.0)])]), None);
    assert_eq!(head.index_bytes(), one);
    // Restored series count too.
    let head2 = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    head2
        .restore_series(&TenantId::parse("t1").unwrap(), 7, a)
        .unwrap();
    assert_eq!(head2.index_bytes(), one);
    drop(head);
}

/// Cuts, "uploads" (marks flushed) and releases every chunk of the tenant, as the flusher
/// does once the store has acknowledged them.
fn flush_and_release(t: &TenantHead) {
    t.cut_due(0, i64::MAX, Duration::MAX, true);
    for s in t.all_series() {
        let mut p = Vec::new();
        s.pending(&mut p);
        let min_ts: Vec<i64> = p.iter().map(|c| c.min_t).collect();
        s.take_for_flush(&min_ts);
        s.finish_flush(&min_ts, true, 1);
    }
    t.release_flushed(Duration::ZERO, true, &|_| true);
}

#[test]
fn an_idle_series_leaves_only_once_every_chunk_is_flushed_and_released() {
    let (head, t) = head_with(100);
    let a: &[(&str, &str)] = &[("__name__", "up"), ("job", "a")];
    let b: &[(&str, &str)] = &[("__name__", "up"), ("job", "b")];
    t.append(&batch(&[(a, &[(1, 1.0)]), (b, &[(1, 2.0)])]), None);
    let two = head.index_bytes();
    // Open chunks: nothing leaves.
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (0, 0));
    // Cut but not in the store: nothing leaves.
    t.cut_due(0, i64::MAX, Duration::MAX, true);
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (0, 0));
    // Flushed but still held in memory (retain period): nothing leaves.
    for s in t.all_series() {
        s.take_for_flush(&[1]);
        s.finish_flush(&[1], true, 1);
    }
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (0, 0));
    // Not idle long enough: nothing leaves.
    t.release_flushed(Duration::ZERO, true, &|_| true);
    assert_eq!(
        head.remove_idle_series_after(Duration::from_secs(3600)),
        (0, 0)
    );
    // `b` gets a new sample: only `a` leaves.
    t.append(&batch(&[(b, &[(2, 3.0)])]), None);
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (1, 0));
    assert_eq!(t.num_series(), 1);
    assert_eq!(head.index_bytes(), two / 2);
    assert_eq!(
        all_samples(&t, &[m(MatchOp::Eq, "__name__", "up")]),
        vec![("up{job=\"b\"}".to_string(), vec![(2, 3f64.to_bits())])]
    );
    assert!(t
        .select(&[m(MatchOp::Eq, "job", "a")], i64::MIN, i64::MAX)
        .is_empty());
}

#[test]
fn removal_keeps_postings_and_lookups_exact_for_the_series_left() {
    let seed: u64 = std::env::var("WEFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5e71e5);
    println!("seed {seed} (WEFT_TEST_SEED to repeat)");
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (head, t) = head_with(100_000);
    let labels: Vec<Vec<(String, String)>> = (0..500)
        .map(|i| {
            vec![
                ("__name__".to_string(), format!("m{}", i % 7)),
                ("i".to_string(), i.to_string()),
                ("pod".to_string(), format!("p{}", i % 13)),
            ]
        })
        .collect();
    let push = |t: &TenantHead, idx: &[usize], ts: i64| {
        let owned: Vec<Vec<(&str, &str)>> = idx
            .iter()
            .map(|&i| {
                labels[i]
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect()
            })
            .collect();
        let samples = [(ts, ts as f64)];
        let series: Vec<TestSeries<'_, '_>> =
            owned.iter().map(|l| (l.as_slice(), &samples[..])).collect();
        t.append(&batch(&series), None)
    };
    let all: Vec<usize> = (0..labels.len()).collect();
    push(&t, &all, 1);
    let refs_before: HashMap<String, u64> = t
        .all_series()
        .iter()
        .map(|s| (s.labels().to_string(), s.series_ref()))
        .collect();
    flush_and_release(&t);
    // Half of them (at random) get a new sample and stay; the rest leave.
    let stay: Vec<usize> = all
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    push(&t, &stay, 2);
    let (removed, _) = head.remove_idle_series_after(Duration::ZERO);
    assert_eq!(removed as usize, labels.len() - stay.len());
    assert_eq!(t.num_series(), stay.len());
    // Every matcher gives exactly the model's answer; refs of those that stayed are kept.
    for (name, value) in [("__name__", "m3"), ("pod", "p5"), ("i", "17"), ("i", "18")] {
        let got: Vec<String> = t
            .select(&[m(MatchOp::Eq, name, value)], i64::MIN, i64::MAX)
            .iter()
            .map(|s| {
                assert_eq!(refs_before[&s.labels().to_string()], s.series_ref());
                s.labels().to_string()
            })
            .collect();
        let mut want: Vec<String> = stay
            .iter()
            .filter(|&&i| labels[i].iter().any(|(n, v)| n == name && v == value))
            .map(|&i| {
                let l: Vec<(&str, &str)> = labels[i]
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                Labels::from_strs(l).unwrap().to_string()
            })
            .collect();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, want, "{name}={value}");
    }
    // Pushing every series again finds the ones that stayed (no duplicate) and gives the
    // ones that left a fresh entry under a new ref.
    let r = push(&t, &all, 3);
    assert_eq!(r.series_created as usize, labels.len() - stay.len());
    assert_eq!(t.num_series(), labels.len());
    for s in t.all_series() {
        let before = refs_before[&s.labels().to_string()];
        let mut got = Vec::new();
        s.samples(i64::MIN, i64::MAX, &mut got);
        if got.len() == 2 {
            assert_eq!(s.series_ref(), before, "a series that stayed keeps its ref");
        } else {
            assert_eq!(
                got,
                vec![(3, 3.0)],
                "a fresh entry holds only the new sample"
            );
            assert!(s.series_ref() > before, "a fresh entry never reuses a ref");
        }
    }
}

#[test]
fn once_every_series_left_the_maps_interner_and_tenant_give_memory_back() {
    let metrics = Arc::new(Metrics::new());
    let head = Head::new(HeadConfig::default(), metrics.clone());
    let id = TenantId::parse("gone").unwrap();
    let t = head.tenant_or_create(&id);
    let series: Vec<(String, String)> = (0..200)
        .map(|i| (format!("m{i}"), format!("v{i}")))
        .collect();
    for (n, v) in &series {
        t.append(&batch(&[(&[("__name__", n), ("x", v)], &[(1, 1.0)])]), None);
    }
    let probe = t.index.read().postings["x"]
        .get_key_value("v7")
        .map(|(k, _)| k.clone())
        .unwrap();
    assert!(
        SharedStr::strong_count(&probe) >= 3,
        "shared by labels and postings"
    );
    flush_and_release(&t);
    // While a push (here: this handle) holds the tenant, the tenant stays.
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (200, 0));
    {
        let index = t.index.read();
        assert_eq!(index.series.len(), 0);
        assert!(index.postings.is_empty());
        assert!(index.by_hash.is_empty());
    }
    assert_eq!(head.index_bytes(), 0);
    assert_eq!(
        SharedStr::strong_count(&probe),
        1,
        "label strings left behind"
    );
    let text = |m: &Metrics| m.encode();
    assert!(text(&metrics).contains("tenant=\"gone\""));
    drop(t);
    assert_eq!(head.remove_idle_series_after(Duration::ZERO), (0, 1));
    assert!(head.tenant(&id).is_none());
    let after = text(&metrics);
    assert!(
        !after.contains("tenant=\"gone\""),
        "per-tenant metric series left behind:\n{after}"
    );
    assert!(after.contains("weft_head_series_removed_total 200"));
    assert!(after.contains("weft_head_tenants_removed_total 1"));
}

#[test]
fn replay_of_a_series_that_came_back_replaces_the_earlier_entry() {
    let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
    let id = TenantId::parse("t1").unwrap();
    let a: &[(&str, &str)] = &[("__name__", "up"), ("job", "a")];
    let old = head.restore_series(&id, 7, a).unwrap();
    let t = head.tenant(&id).unwrap();
    t.append_replayed(&old, &[(1000, 1.0), (2000, 2.0)]);
    t.apply_flush_mark(&old, 2000);
    // The same series again under its own ref is the same entry.
    assert!(Arc::ptr_eq(&head.restore_series(&id, 7, a).unwrap(), &old));
    // Under a new ref, it is the series' next life: a fresh, empty entry replaces the old.
    let fresh = head.restore_series(&id, 9, a).unwrap();
    assert_eq!(fresh.series_ref(), 9);
    assert!(!Arc::ptr_eq(&fresh, &old));
    assert_eq!(t.num_series(), 1);
    // Samples older than the old life's newest are not refused as out of order.
    t.append_replayed(&fresh, &[(1500, 5.0)]);
    assert_eq!(
        all_samples(&t, &[]),
        vec![("up{job=\"a\"}".to_string(), vec![(1500, 5f64.to_bits())])]
    );
    assert_eq!(head.index_bytes(), series_bytes(fresh.labels()));
}

/// The series entry is the head's biggest per-series allocation; with the `Arc` counts it
/// must stay at most 168 bytes, which glibc serves from a 176-byte chunk (see
/// docs/benchmarks.md, "Memory per active series"). A field added carelessly shows here.
#[test]
fn a_series_entry_stays_within_its_allocation_class() {
    assert!(
        std::mem::size_of::<Series>() + 16 <= 168,
        "Series is {} bytes",
        std::mem::size_of::<Series>()
    );
    assert_eq!(std::mem::size_of::<crate::model::Label>(), 16);
}

/// Label sets whose hashes collide share the table; each is found by its own labels, before
/// and after the other one leaves.
#[test]
fn colliding_hashes_find_their_own_series_across_removal() {
    let mut index = Index::default();
    let a = Labels::from_strs([("__name__", "a")]).unwrap();
    let b = Labels::from_strs([("__name__", "b")]).unwrap();
    let (ra, rb) = (index.insert(42, a, 1), index.insert(42, b, 2));
    let raw_a: &[(&[u8], &[u8])] = &[(b"__name__", b"a")];
    let raw_b: &[(&[u8], &[u8])] = &[(b"__name__", b"b")];
    assert_eq!(index.lookup(42, raw_a), Some(ra));
    assert_eq!(index.lookup(42, raw_b), Some(rb));
    let removed = index.remove_where(|s| s.series_ref() == 1);
    assert_eq!(removed.len(), 1);
    assert_eq!(index.lookup(42, raw_a), None);
    assert_eq!(index.lookup(42, raw_b), Some(0), "renumbered");
    assert_eq!(index.series[0].series_ref(), 2);
}

/// Replay after series left the head: the WAL still holds their series records, samples and
/// flush marks (and, with a checkpoint taken after the removal, the checkpoint omits them).
/// Nothing that left comes back as unflushed data; a series that came back under a new ref
/// is one entry holding only its new life's samples (even one older than its old life's);
/// a live series loses no sample. As after a kill -9: the ingester is dropped, not closed.
#[test]
fn replay_after_removal_brings_back_no_unflushed_data_and_loses_no_live_sample() {
    use crate::ingest::Ingester;
    use crate::wal::{SyncMode, WalConfig};
    for checkpoint_after_removal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let open = || {
            let head = Arc::new(Head::new(HeadConfig::default(), Arc::new(Metrics::new())));
            let cfg = WalConfig {
                sync: SyncMode::Always,
                ..WalConfig::default()
            };
            let (ing, _) = Ingester::open(head.clone(), &wal_dir, cfg).unwrap();
            (head, ing)
        };
        let id = TenantId::parse("t1").unwrap();
        let gone: &[(&str, &str)] = &[("__name__", "gone")];
        let back: &[(&str, &str)] = &[("__name__", "back")];
        let live: &[(&str, &str)] = &[("__name__", "live")];
        let by_name = |t: &TenantHead, name: &str| {
            t.select(&[m(MatchOp::Eq, "__name__", name)], i64::MIN, i64::MAX)
                .pop()
        };

        let (head, ing) = open();
        let t = head.tenant_or_create(&id);
        let mut log = WalLog::default();
        ing.append(
            &t,
            &batch(&[
                (gone, &[(1000, 1.0), (2000, 2.0)]),
                (back, &[(1000, 3.0)]),
                (live, &[(1000, 4.0)]),
            ]),
            &mut log,
        )
        .unwrap();
        let old_back_ref = by_name(&t, "back").unwrap().series_ref();
        // The flusher's work: cut, upload, flush marks, release.
        t.cut_due(0, i64::MAX, Duration::MAX, true);
        let mut marks = Vec::new();
        for s in t.all_series() {
            let mut p = Vec::new();
            s.pending(&mut p);
            let min_ts: Vec<i64> = p.iter().map(|c| c.min_t).collect();
            s.take_for_flush(&min_ts);
            s.finish_flush(&min_ts, true, 1);
            marks.push((s.series_ref(), p.last().unwrap().max_t));
        }
        ing.log_flushed(&marks).unwrap();
        t.release_flushed(Duration::ZERO, true, &|_| true);
        // `live` goes on; the other two leave.
        ing.append(&t, &batch(&[(live, &[(2000, 5.0)])]), &mut log)
            .unwrap();
        assert_eq!(head.remove_idle_series_after(Duration::ZERO), (2, 0));
        if checkpoint_after_removal {
            ing.checkpoint().unwrap();
        }
        // `back` comes back, with a sample older than its earlier life's.
        ing.append(&t, &batch(&[(back, &[(500, 6.0)])]), &mut log)
            .unwrap();
        drop((t, ing, head));

        let (head, _ing) = open();
        let t = head.tenant(&id).unwrap();
        let tag = format!("checkpoint after removal: {checkpoint_after_removal}");
        if let Some(s) = by_name(&t, "gone") {
            assert_eq!(s.unflushed(), (0, None), "{tag}: `gone` back as unflushed");
        }
        let b = by_name(&t, "back").unwrap();
        assert!(b.series_ref() > old_back_ref, "{tag}");
        let mut got = Vec::new();
        b.samples(i64::MIN, i64::MAX, &mut got);
        assert_eq!(
            got,
            vec![(500, 6.0)],
            "{tag}: `back` holds its new life only"
        );
        let l = by_name(&t, "live").unwrap();
        let mut got = Vec::new();
        l.samples(i64::MIN, i64::MAX, &mut got);
        // Its flushed first sample is in the store; a checkpoint taken after its release
        // does not hold it, a replay of the segments brings it back as flushed.
        let want: &[(i64, f64)] = if checkpoint_after_removal {
            &[(2000, 5.0)]
        } else {
            &[(1000, 4.0), (2000, 5.0)]
        };
        assert_eq!(got, want, "{tag}: `live`");
        // Pending (not in the store): only the samples pushed after the flush.
        let mut oldest: Vec<i64> = [&b, &l].iter().filter_map(|s| s.unflushed().1).collect();
        oldest.sort_unstable();
        assert_eq!(oldest, vec![500, 2000], "{tag}");
    }
}
