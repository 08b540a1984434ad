use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::exemplar::{check_labels, Added, Exemplar, Pairs, Refusal, Ring, MAX_LABEL_RUNES};
use super::*;
use crate::head::{Head, HeadConfig, WalLog};
use crate::ingest::Ingester;
use crate::limits::Overrides;
use crate::metrics::Metrics;
use crate::model::parse_selector;
use crate::proto::{WriteExemplar, WriteMetadata, WriteSeries};
use crate::wal::{SyncMode, WalConfig};

fn pairs(p: &[(&str, &str)]) -> Pairs {
    p.iter()
        .map(|(n, v)| (Box::from(*n), Box::from(*v)))
        .collect::<Vec<_>>()
        .into_boxed_slice()
}

fn ex(trace: &str, value: f64, t: i64) -> Exemplar {
    Exemplar {
        labels: pairs(&[("trace_id", trace)]),
        value,
        t,
    }
}

fn all(r: &Ring) -> Vec<(String, i64)> {
    r.iter()
        .map(|(s, e)| (s[0].1.to_string(), e.t))
        .collect::<Vec<_>>()
}

#[test]
fn full_ring_evicts_the_oldest_exemplar_of_the_tenant() {
    let (a, b) = (pairs(&[("__name__", "a")]), pairs(&[("__name__", "b")]));
    let mut r = Ring::new(3);
    assert_eq!(
        r.add(&a, ex("1", 1.0, 10)),
        Ok(Added::Stored { evicted: false })
    );
    assert_eq!(
        r.add(&b, ex("2", 2.0, 11)),
        Ok(Added::Stored { evicted: false })
    );
    assert_eq!(
        r.add(&a, ex("3", 3.0, 12)),
        Ok(Added::Stored { evicted: false })
    );
    r.check();
    // Full: the next one evicts a@10, the one after b@11 (b's only exemplar: b leaves).
    assert_eq!(
        r.add(&a, ex("4", 4.0, 13)),
        Ok(Added::Stored { evicted: true })
    );
    assert_eq!(
        r.add(&a, ex("5", 5.0, 14)),
        Ok(Added::Stored { evicted: true })
    );
    r.check();
    assert_eq!(r.len(), 3);
    assert_eq!(r.num_series(), 1);
    assert_eq!(
        all(&r),
        [("a".to_string(), 12), ("a".into(), 13), ("a".into(), 14)]
    );
    let got = r.select(&[parse_selector("a").unwrap()], i64::MIN, i64::MAX);
    assert_eq!(got.len(), 1);
    let ts: Vec<i64> = got[0].1.iter().map(|e| e.t).collect();
    assert_eq!(ts, [12, 13, 14]);
    assert!(r
        .select(&[parse_selector("b").unwrap()], i64::MIN, i64::MAX)
        .is_empty());
    // The range is inclusive at both ends.
    let got = r.select(&[parse_selector("a").unwrap()], 13, 13);
    assert_eq!(got[0].1, vec![ex("4", 4.0, 13)]);
}

#[test]
fn duplicates_are_no_ops_and_older_exemplars_of_a_series_are_refused() {
    let a = pairs(&[("__name__", "a")]);
    let mut r = Ring::new(10);
    assert!(r.add(&a, ex("1", 1.0, 10)).is_ok());
    assert_eq!(r.add(&a, ex("1", 1.0, 10)), Ok(Added::Duplicate));
    // Same time: in (value, labels) order is fine (native histogram buckets), else out of order.
    assert_eq!(r.add(&a, ex("1", 0.5, 10)), Err(Refusal::OutOfOrder));
    assert_eq!(r.add(&a, ex("0", 1.0, 10)), Err(Refusal::OutOfOrder));
    assert_eq!(r.add(&a, ex("0", 1.0, 9)), Err(Refusal::OutOfOrder));
    assert!(r.add(&a, ex("1", 2.0, 10)).is_ok());
    // An older exemplar that is stored is a duplicate: a retry is a no-op.
    assert_eq!(r.add(&a, ex("1", 1.0, 10)), Ok(Added::Duplicate));
    assert_eq!(r.len(), 2);
    // NaN repeated is a duplicate, bit for bit.
    assert!(r.add(&a, ex("n", f64::NAN, 11)).is_ok());
    assert_eq!(r.add(&a, ex("n", f64::NAN, 11)), Ok(Added::Duplicate));
    // Other series are independent.
    let b = pairs(&[("__name__", "b")]);
    assert!(r.add(&b, ex("0", 1.0, 5)).is_ok());
    assert_eq!(r.len(), 4);
    r.check();
    assert_eq!(
        Ring::new(0).add(&a, ex("1", 1.0, 1)),
        Err(Refusal::Disabled)
    );
}

#[test]
fn exemplar_labels_are_limited_to_128_runes() {
    let ok = "é".repeat(MAX_LABEL_RUNES - "trace_id".len());
    assert_eq!(check_labels(&pairs(&[("trace_id", &ok)])), Ok(()));
    let long = format!("{ok}x");
    assert_eq!(
        check_labels(&pairs(&[("trace_id", &long)])),
        Err(Refusal::LabelLength)
    );
    assert_eq!(
        check_labels(&pairs(&[("", "v")])),
        Err(Refusal::LabelLength)
    );
}

#[test]
fn a_smaller_capacity_keeps_the_newest() {
    let a = pairs(&[("__name__", "a")]);
    let mut r = Ring::new(5);
    for t in 0..5 {
        r.add(&a, ex("x", 1.0, t)).unwrap();
    }
    let (small, dropped) = r.resized(2);
    small.check();
    assert_eq!(dropped, 3);
    assert_eq!(all(&small), [("a".to_string(), 3), ("a".into(), 4)]);
}

/// A model of the ring: a queue of (series, exemplar) of at most `cap`, newest last.
fn model_add(
    m: &mut VecDeque<(u8, Exemplar)>,
    cap: usize,
    s: u8,
    e: Exemplar,
) -> Result<Added, Refusal> {
    let same =
        |x: &Exemplar| x.t == e.t && x.value.to_bits() == e.value.to_bits() && x.labels == e.labels;
    if let Some((_, newest)) = m.iter().rev().find(|(x, _)| *x == s) {
        let key = |x: &Exemplar| (x.t, x.value.to_bits(), x.labels.clone());
        // Values here are non-negative, so bits order as values do.
        if key(&e) <= key(newest) {
            let recent = m
                .iter()
                .rev()
                .filter(|(x, _)| *x == s)
                .take(exemplar::DUPLICATE_LOOKBACK);
            if recent.take_while(|(_, x)| x.t >= e.t).any(|(_, x)| same(x)) {
                return Ok(Added::Duplicate);
            }
            return Err(Refusal::OutOfOrder);
        }
    }
    let evicted = m.len() == cap;
    if evicted {
        m.pop_front();
    }
    m.push_back((s, e));
    Ok(Added::Stored { evicted })
}

proptest! {
    /// Any sequence of adds does to the ring what it does to the model, and the ring's
    /// invariants hold after each (proptest prints the failing case and its seed).
    #[test]
    fn ring_matches_a_queue_model(cap in 1usize..8, ops in prop::collection::vec((0u8..4, 0i64..30, 0u8..3), 0..120)) {
        let mut r = Ring::new(cap);
        let mut m = VecDeque::new();
        for (s, t, v) in ops {
            let series = pairs(&[("__name__", &format!("s{s}"))]);
            let e = ex("t", f64::from(v), t);
            prop_assert_eq!(r.add(&series, e.clone()), model_add(&mut m, cap, s, e));
            r.check();
        }
        let got: Vec<(String, i64)> = all(&r);
        let want: Vec<(String, i64)> = m.iter().map(|(s, e)| (format!("s{s}"), e.t)).collect();
        prop_assert_eq!(got, want);
    }
}

// ---- the stores behind the push path ----

struct Push {
    labels: Vec<(&'static [u8], &'static [u8])>,
    series: Vec<WriteSeries>,
    samples: Vec<(i64, f64)>,
    exemplar_labels: Vec<(&'static [u8], &'static [u8])>,
    exemplars: Vec<WriteExemplar>,
    metadata: Vec<WriteMetadata<'static>>,
}

impl Push {
    fn new() -> Self {
        Self {
            labels: vec![],
            series: vec![],
            samples: vec![],
            exemplar_labels: vec![],
            exemplars: vec![],
            metadata: vec![],
        }
    }

    /// A series named `name` with one sample at `t` and exemplars (trace, value, t).
    fn series(mut self, name: &'static str, t: i64, exs: &[(&'static str, f64, i64)]) -> Self {
        let ls = self.labels.len() as u32;
        self.labels.push((b"__name__", name.as_bytes()));
        self.labels.push((b"job", b"j"));
        let ss = self.samples.len() as u32;
        self.samples.push((t, 1.0));
        let es = self.exemplars.len() as u32;
        for &(trace, value, t) in exs {
            let l = self.exemplar_labels.len() as u32;
            self.exemplar_labels.push((b"trace_id", trace.as_bytes()));
            self.exemplars.push(WriteExemplar {
                labels_start: l,
                labels_end: l + 1,
                value,
                timestamp: t,
            });
        }
        self.series.push(WriteSeries {
            labels_start: ls,
            labels_end: ls + 2,
            samples_start: ss,
            samples_end: ss + 1,
            exemplars_start: es,
            exemplars_end: self.exemplars.len() as u32,
            ..WriteSeries::default()
        });
        self
    }

    fn meta(mut self, family: &'static str, kind: MetricType, help: &'static str) -> Self {
        self.metadata.push(WriteMetadata {
            kind,
            family: family.as_bytes(),
            help: help.as_bytes(),
            unit: b"",
        });
        self
    }

    fn batch(&self) -> WriteBatch<'static> {
        WriteBatch {
            series: self.series.clone(),
            labels: self.labels.clone(),
            samples: self.samples.clone(),
            exemplar_labels: self.exemplar_labels.clone(),
            exemplars: self.exemplars.clone(),
            metadata: self.metadata.clone(),
            ..WriteBatch::default()
        }
    }
}

fn rejected(m: &Metrics, reason: &'static str) -> u64 {
    m.exmeta
        .exemplars_rejected
        .get_or_create(&ReasonLabels { reason })
        .get()
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// (series name, [(trace, value, t)]) for every series of `tenant` with exemplars.
/// (series name, exemplars as (trace, value, t)).
type Found = Vec<(String, Vec<(String, f64, i64)>)>;

fn query(x: &ExMeta, t: &str) -> Found {
    x.query_exemplars(
        &tenant(t),
        &[parse_selector(r#"{job="j"}"#).unwrap()],
        i64::MIN,
        i64::MAX,
    )
    .into_iter()
    .map(|s| {
        let name = s
            .series
            .iter()
            .find(|(n, _)| &**n == "__name__")
            .unwrap()
            .1
            .to_string();
        let exs = s
            .exemplars
            .iter()
            .map(|e| (e.labels[0].1.to_string(), e.value, e.t))
            .collect();
        (name, exs)
    })
    .collect()
}

fn open(dir: &std::path::Path, cfg: HeadConfig) -> (Arc<Head>, Ingester, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let head = Arc::new(Head::new(cfg, metrics.clone()));
    let (ing, _) = Ingester::open(
        head.clone(),
        dir,
        WalConfig {
            sync: SyncMode::Never,
            ..WalConfig::default()
        },
    )
    .unwrap();
    (head, ing, metrics)
}

fn push(head: &Head, ing: &Ingester, t: &str, p: &Push) -> AppendReport {
    let th = head.tenant_for_push(&tenant(t)).unwrap();
    let mut log = WalLog::default();
    let (r, _) = ing.append(&th, &p.batch(), &mut log).unwrap();
    r
}

#[test]
fn pushes_store_exemplars_and_metadata_per_tenant_and_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let (head, ing, metrics) = open(dir.path(), HeadConfig::default());
    let p = Push::new()
        .series("a", 1000, &[("t1", 1.5, 900), ("t2", 2.5, 950)])
        .series("b", 1000, &[("t3", 3.0, 990)])
        .meta("a", MetricType::Counter, "A counter.");
    let r = push(&head, &ing, "t1", &p);
    assert_eq!(r.exemplars_appended, 3);
    assert_eq!(metrics.exmeta.exemplars_appended.get(), 3);
    // The same push again: duplicates count as written, nothing new is stored.
    let r = push(&head, &ing, "t1", &p);
    assert_eq!(r.exemplars_appended, 3);
    assert_eq!(metrics.exmeta.exemplars_appended.get(), 3);
    assert_eq!(metrics.exmeta.exemplars_stored.get(), 3);
    // An older exemplar of a series is refused quietly and counted.
    let r = push(
        &head,
        &ing,
        "t1",
        &Push::new().series("a", 2000, &[("t0", 9.0, 100)]),
    );
    assert_eq!(r.exemplars_appended, 0);
    assert_eq!(r.error_count, 0, "a refused exemplar never fails the push");
    assert_eq!(rejected(&metrics, "out_of_order"), 1);
    assert_eq!(
        query(head.exmeta(), "t1"),
        [
            (
                "a".to_string(),
                vec![("t1".to_string(), 1.5, 900), ("t2".into(), 2.5, 950)]
            ),
            ("b".to_string(), vec![("t3".to_string(), 3.0, 990)]),
        ]
    );
    // Another tenant sees nothing of t1's.
    assert!(query(head.exmeta(), "t2").is_empty());
    assert!(head.exmeta().metadata(&tenant("t2"), None, None).is_empty());
    let md = head.exmeta().metadata(&tenant("t1"), None, None);
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].0, "a");
    assert_eq!(md[0].1.kind, MetricType::Counter);
    assert_eq!(&*md[0].1.help, "A counter.");
    assert_eq!(metrics.exmeta.metadata_stored.get(), 1);
    assert!(head.exmeta().bytes() > 0);
}

#[test]
fn a_push_s_own_exemplars_of_a_series_are_taken_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (head, ing, metrics) = open(dir.path(), HeadConfig::default());
    let p = Push::new().series("a", 1000, &[("late", 2.5, 999), ("early", 1.5, 998)]);
    assert_eq!(push(&head, &ing, "t", &p).exemplars_appended, 2);
    assert_eq!(rejected(&metrics, "out_of_order"), 0);
    assert_eq!(
        query(head.exmeta(), "t"),
        [(
            "a".to_string(),
            vec![("early".to_string(), 1.5, 998), ("late".into(), 2.5, 999)]
        )]
    );
}

#[test]
fn exemplars_of_series_the_head_refused_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HeadConfig {
        max_series_per_tenant: 1,
        ..HeadConfig::default()
    };
    let (head, ing, metrics) = open(dir.path(), cfg);
    let p =
        Push::new()
            .series("a", 1000, &[("t1", 1.5, 900)])
            .series("b", 1000, &[("t2", 2.5, 900)]);
    let r = push(&head, &ing, "t", &p);
    assert_eq!(r.exemplars_appended, 1);
    assert_eq!(rejected(&metrics, "unknown_series"), 1);
}

#[test]
fn capacity_from_the_overrides_file_evicts_the_oldest_and_the_metric_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HeadConfig {
        overrides: Arc::new(
            Overrides::from_text("overrides:\n  small:\n    max_exemplars_per_tenant: 2\n    max_metadata_per_tenant: 1\n")
                .unwrap(),
        ),
        ..HeadConfig::default()
    };
    let (head, ing, metrics) = open(dir.path(), cfg);
    for (i, trace) in ["x1", "x2", "x3", "x4"].into_iter().enumerate() {
        let t = 1000 + i as i64;
        push(
            &head,
            &ing,
            "small",
            &Push::new().series("a", t, &[(trace, 1.0, t)]),
        );
        push(
            &head,
            &ing,
            "big",
            &Push::new().series("a", t, &[(trace, 1.0, t)]),
        );
    }
    let traces = |t| -> Vec<String> {
        query(head.exmeta(), t)
            .into_iter()
            .flat_map(|(_, e)| e.into_iter().map(|e| e.0))
            .collect()
    };
    assert_eq!(traces("small"), ["x3", "x4"]);
    assert_eq!(traces("big"), ["x1", "x2", "x3", "x4"]);
    assert_eq!(metrics.exmeta.exemplars_evicted.get(), 2);
    assert_eq!(metrics.exmeta.exemplars_stored.get(), 6);
    // Metadata: the second family of `small` is past its limit; updates still apply.
    push(
        &head,
        &ing,
        "small",
        &Push::new()
            .meta("a", MetricType::Gauge, "1")
            .meta("b", MetricType::Gauge, "2")
            .meta("b", MetricType::Gauge, "2"),
    );
    push(
        &head,
        &ing,
        "small",
        &Push::new().meta("a", MetricType::Gauge, "updated"),
    );
    let md = head.exmeta().metadata(&tenant("small"), None, None);
    assert_eq!(md.len(), 1);
    assert_eq!(&*md[0].1.help, "updated");
    assert_eq!(
        metrics
            .exmeta
            .metadata_rejected
            .get_or_create(&ReasonLabels {
                reason: "per_tenant_limit"
            })
            .get(),
        2
    );
}

#[test]
fn a_restart_replays_both_stores_and_a_checkpoint_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || HeadConfig {
        exmeta: ExMetaConfig {
            max_exemplars_per_tenant: 3,
            ..ExMetaConfig::default()
        },
        ..HeadConfig::default()
    };
    let want;
    {
        let (head, ing, _) = open(dir.path(), cfg());
        push(
            &head,
            &ing,
            "t",
            &Push::new()
                .series("a", 1, &[("e1", 1.0, 1)])
                .meta("a", MetricType::Histogram, "h"),
        );
        push(
            &head,
            &ing,
            "t",
            &Push::new().series("b", 2, &[("e2", 2.0, 2)]),
        );
        push(
            &head,
            &ing,
            "t",
            &Push::new().series("a", 3, &[("e3", 3.0, 3)]),
        );
        push(
            &head,
            &ing,
            "t",
            &Push::new().series("a", 4, &[("e4", 4.0, 4)]),
        );
        want = query(head.exmeta(), "t");
        assert_eq!(want.iter().map(|s| s.1.len()).sum::<usize>(), 3);
        ing.wal().close().unwrap();
    }
    let check = |head: &Head| {
        assert_eq!(query(head.exmeta(), "t"), want);
        let md = head.exmeta().metadata(&tenant("t"), Some("a"), None);
        assert_eq!(md[0].1.kind, MetricType::Histogram);
    };
    {
        let (head, ing, metrics) = open(dir.path(), cfg());
        check(&head);
        assert_eq!(metrics.exmeta.exemplars_stored.get(), 3);
        // Two checkpoints: the second deletes the segments before the first, which hold
        // every push above.
        ing.checkpoint().unwrap();
        push(
            &head,
            &ing,
            "t",
            &Push::new().series("c", 5, &[("e5", 5.0, 5)]),
        );
        ing.checkpoint().unwrap();
        ing.checkpoint().unwrap();
        ing.wal().close().unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("checkpoint"))
        .count();
    assert!(segments <= 3, "old segments were deleted ({segments} left)");
    let (head, _ing, _) = open(dir.path(), cfg());
    // e5 evicted e2 (the oldest of the tenant); order and contents as before the restart.
    let got = query(head.exmeta(), "t");
    let traces: Vec<&str> = got
        .iter()
        .flat_map(|s| s.1.iter().map(|e| e.0.as_str()))
        .collect();
    assert_eq!(traces, ["e3", "e4", "e5"]);
    let md = head.exmeta().metadata(&tenant("t"), Some("a"), None);
    assert_eq!(md[0].1.kind, MetricType::Histogram);
}

#[test]
fn a_tenant_that_leaves_the_head_leaves_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (head, ing, metrics) = open(dir.path(), HeadConfig::default());
    let th = head.tenant_for_push(&tenant("m")).unwrap();
    let mut log = WalLog::default();
    let p = Push::new().meta("a", MetricType::Gauge, "g");
    ing.append(&th, &p.batch(), &mut log).unwrap();
    // A push of metadata alone keeps its (series-less) tenant...
    assert!(!head.remove_if_unused(th));
    assert!(head.exmeta().has_tenant(&tenant("m")));
    // ...until the idle sweep removes it, and its metadata with it.
    assert_eq!(head.remove_idle_series_after(Duration::ZERO).1, 1);
    assert!(!head.exmeta().has_tenant(&tenant("m")));
    assert_eq!(metrics.exmeta.metadata_stored.get(), 0);
    assert_eq!(metrics.exmeta.bytes.get(), 0);
}

#[test]
fn exemplars_past_the_creation_grace_period_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (head, ing, metrics) = open(dir.path(), HeadConfig::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let future = now + 3_600_000;
    let r = push(
        &head,
        &ing,
        "t",
        &Push::new().series("a", now, &[("late", 1.0, future), ("ok", 1.0, now)]),
    );
    assert_eq!(r.exemplars_appended, 1);
    assert_eq!(rejected(&metrics, "too_far_in_future"), 1);
}

/// The default capacity holds: 150,000 exemplars over 10,000 series (trace ids of 32 hex
/// digits) leave 100,000, and the estimate of their bytes stays within 30 MB. Prints the
/// figure the docs quote.
#[test]
fn a_full_default_ring_stays_within_its_bounds() {
    let mut r = Ring::new(DEFAULT_MAX_EXEMPLARS_PER_TENANT);
    let series: Vec<Pairs> = (0..10_000)
        .map(|i| {
            pairs(&[
                ("__name__", "http_request_duration_seconds_bucket"),
                ("instance", &format!("10.0.{}.{}:9090", i / 256, i % 256)),
                ("job", "api"),
                ("le", "0.25"),
            ])
        })
        .collect();
    for i in 0..150_000i64 {
        let trace = format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15);
        let s = &series[(i % 10_000) as usize];
        assert!(r.add(s, ex(&trace, 0.1, i)).is_ok());
    }
    assert_eq!(r.len(), DEFAULT_MAX_EXEMPLARS_PER_TENANT);
    println!(
        "full default ring: {} exemplars, {} series, {} bytes (estimate)",
        r.len(),
        r.num_series(),
        r.bytes()
    );
    assert!(r.bytes() < 30 << 20, "{} bytes", r.bytes());
}

/// The gate's invariant under load: pushes with exemplars and metadata race checkpoints
/// (each deletes older segments and re-logs the stores after its cut); a restart rebuilds
/// both stores exactly, ring order included. It caught a shared (RwLock) gate, under which
/// two pushes could log in the other order than the ring took them, and fails 7 runs in 8
/// with no gate at all.
#[test]
fn checkpoints_racing_pushes_replay_to_the_same_stores() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || HeadConfig {
        exmeta: ExMetaConfig {
            max_exemplars_per_tenant: 50,
            max_metadata_per_tenant: 1000,
        },
        ..HeadConfig::default()
    };
    const NAMES: [&str; 4] = ["w0", "w1", "w2", "w3"];
    let live;
    {
        let (head, ing, _) = open(dir.path(), cfg());
        let ing = Arc::new(ing);
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let checkpointer = {
            let (ing, stop, done) = (ing.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    ing.checkpoint().unwrap();
                    done.fetch_add(1, Relaxed);
                }
            })
        };
        let writers: Vec<_> = NAMES
            .iter()
            .map(|&name| {
                let (head, ing, done) = (head.clone(), ing.clone(), done.clone());
                std::thread::spawn(move || {
                    let kinds = [MetricType::Counter, MetricType::Gauge];
                    // At least 300 pushes each, and on until 5 checkpoints have raced them.
                    let mut t = 0i64;
                    while t < 300 || (done.load(Relaxed) < 5 && t < 1_000_000) {
                        t += 1;
                        let help: &'static str = if t % 2 == 0 { "even" } else { "odd" };
                        let p = Push::new().series(name, t, &[("x", t as f64, t)]).meta(
                            name,
                            kinds[(t % 2) as usize],
                            help,
                        );
                        push(&head, &ing, "t", &p);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Relaxed);
        checkpointer.join().unwrap();
        assert!(
            done.load(Relaxed) >= 5,
            "checkpoints did not race the pushes"
        );
        live = head.exmeta().snapshot_records();
        ing.wal().close().unwrap();
    }
    let (head, _ing, _) = open(dir.path(), cfg());
    let replayed = head.exmeta().snapshot_records();
    assert_eq!(replayed, live);
    assert_eq!(head.exmeta().num_exemplars(&tenant("t")), 50);
}

/// What remote write 2.0's metadata (repeated on every series of every push) costs a push
/// once the families are known: printed, not asserted (`-- --nocapture`).
#[test]
fn unchanged_metadata_costs_little() {
    let x = ExMeta::new(
        ExMetaConfig::default(),
        Arc::new(Overrides::none()),
        Arc::new(Metrics::new()),
    );
    let names: Vec<String> = (0..1000)
        .map(|i| format!("metric_family_{i}_total"))
        .collect();
    let batch = WriteBatch {
        metadata: names
            .iter()
            .map(|n| WriteMetadata {
                kind: MetricType::Counter,
                family: n.as_bytes(),
                help: b"Requests served, by code and method.",
                unit: b"",
            })
            .collect(),
        ..WriteBatch::default()
    };
    let t = tenant("t");
    let mut report = AppendReport::default();
    let first = x.append(&t, &batch, |_| true, i64::MAX, &mut report);
    assert_eq!(first.metadata.len(), 1000);
    let start = std::time::Instant::now();
    const PUSHES: u32 = 200;
    for _ in 0..PUSHES {
        let log = x.append(&t, &batch, |_| true, i64::MAX, &mut report);
        assert!(log.is_empty(), "unchanged metadata is not logged again");
    }
    let per_entry = start.elapsed() / (PUSHES * 1000);
    println!("unchanged metadata: {per_entry:?} per entry (debug build)");
}

/// A checkpoint's copy of the stores is not WAL growth: with a large exemplar store, the
/// checkpoint's own copy must not make the next checkpoint due at once.
#[test]
fn the_stores_copy_is_not_growth_for_the_checkpoint_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (head, ing, _) = open(dir.path(), HeadConfig::default());
    for t in 1..=2000i64 {
        push(
            &head,
            &ing,
            "t",
            &Push::new().series("a", t, &[("trace", 1.0, t)]),
        );
    }
    let (appended, growth) = (ing.wal().stats().appended_bytes, ing.wal().growth_bytes());
    assert_eq!(appended, growth);
    ing.checkpoint().unwrap();
    let copied = ing.wal().stats().appended_bytes - appended;
    assert!(
        copied > 2000 * 20,
        "the copy holds every exemplar ({copied} bytes)"
    );
    assert_eq!(
        ing.wal().growth_bytes(),
        growth,
        "the copy did not count as growth"
    );
}

/// One step of the replay property: a push to (tenant, series) of an exemplar at a time and
/// metadata of a family, or a checkpoint.
#[derive(Debug, Clone)]
enum Step {
    Push {
        tenant: u8,
        series: u8,
        t: i64,
        family: u8,
        help: u8,
    },
    Checkpoint,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..2, 0u8..4, 0i64..40, 0u8..3, 0u8..3).prop_map(|(tenant, series, t, family, help)| Step::Push { tenant, series, t, family, help }),
        1 => Just(Step::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any sequence of pushes (in and out of order, duplicates, evictions at capacity 5)
    /// and checkpoints, then a restart: both stores come back exactly, ring order included.
    #[test]
    fn any_history_replays_to_the_same_stores(steps in prop::collection::vec(step(), 1..60)) {
        const SERIES: [&str; 4] = ["s0", "s1", "s2", "s3"];
        const FAMILIES: [&str; 3] = ["f0", "f1", "f2"];
        const HELP: [&str; 3] = ["h0", "h1", "h2"];
        let dir = tempfile::tempdir().unwrap();
        let cfg = || HeadConfig {
            exmeta: ExMetaConfig { max_exemplars_per_tenant: 5, max_metadata_per_tenant: 2 },
            ..HeadConfig::default()
        };
        let live;
        {
            let (head, ing, _) = open(dir.path(), cfg());
            for s in &steps {
                match *s {
                    Step::Push { tenant, series, t, family, help } => {
                        // A fresh sample time for every push, so the head takes the series.
                        let p = Push::new()
                            .series(SERIES[series as usize], 1_000 + t, &[("x", 1.0, t)])
                            .meta(FAMILIES[family as usize], MetricType::Gauge, HELP[help as usize]);
                        push(&head, &ing, ["ta", "tb"][tenant as usize], &p);
                    }
                    Step::Checkpoint => {
                        ing.checkpoint().unwrap();
                    }
                }
            }
            live = head.exmeta().snapshot_records();
            ing.wal().close().unwrap();
        }
        let (head, _ing, _) = open(dir.path(), cfg());
        prop_assert_eq!(head.exmeta().snapshot_records(), live);
    }
}
