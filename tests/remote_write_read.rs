//! Round trip through the real binary: write ≥ 10,000 series of three tenants the way
//! Prometheus does, then read everything back through every read path (remote read in SAMPLES
//! and STREAMED_XOR_CHUNKS mode, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`) and compare with a `BTreeMap` model, bit for bit.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use common::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use weft::proto::prompb::{LabelMatcher, MatcherType, Query, WriteRequest};

const TENANTS: [&str; 3] = ["tenant-a", "tenant-b", "tenant-c"];
const SERIES_PER_TENANT: usize = 3_400;
/// Only tenant A has series of this name: the isolation checks look for it elsewhere.
const ONLY_A: &str = "weft_test_only_a";
const METRIC_NAMES: [&str; 4] = [
    "weft_test_requests_total",
    "weft_test_temperature_celsius",
    "weft_test_random_bits",
    "weft_test_special_values",
];
const JOBS: [&str; 5] = ["api", "db", "cache", "queue", "edge"];
const ZONES: [&str; 3] = ["eu-1", "eu-2", "us-1"];
/// A label value that needs escaping everywhere: JSON, PromQL strings, regexes.
const ODD_PATH: &str = "/a b/\"quoted\"\\back/ü/{x=\"y\"},\n";
const CHUNK_SAMPLES: usize = 120;
/// ~1250 chunks of random values, ~1.4 MiB: more than one frame.
const LONG_SERIES_SAMPLES: usize = 150_000;

/// Values whose bits must survive: NaN payloads (Prometheus's 0x7ff8000000000001, Rust's
/// 0x7ff8000000000000, a negative NaN), the stale marker, ±Inf, ±0, extremes, a subnormal.
const SPECIAL_BITS: [u64; 13] = [
    0x7ff8_0000_0000_0001,
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff0_0000_0000_0002,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x8000_0000_0000_0000,
    0x0000_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x0000_0000_0000_0001,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
];

type Model = BTreeMap<Labels, Samples>;
type Predicate = Box<dyn Fn(&Labels) -> bool>;

#[test]
fn harness_parsers_work() {
    self_check();
}

#[test]
fn ten_thousand_series_of_three_tenants_read_back_bit_exact_through_every_read_path() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    // Four hours back, whole seconds: the data lies in the past, like a Prometheus catching up.
    let t0 = (now_ms() - 4 * 3_600_000) / 1000 * 1000;
    eprintln!("t0 = {t0}");

    let started = Instant::now();
    let models: Vec<Model> = (0..TENANTS.len())
        .map(|ti| generate_tenant(&mut rng, ti, t0))
        .collect();
    let total_series: usize = models.iter().map(|m| m.len()).sum();
    let total_samples: usize = models
        .iter()
        .flat_map(|m| m.values())
        .map(|s| s.len())
        .sum();
    assert!(
        total_series >= 10_000,
        "only {total_series} series generated"
    );
    assert!(
        models
            .iter()
            .flat_map(|m| m.values())
            .filter(|s| s.len() > 2 * CHUNK_SAMPLES)
            .count()
            > 100,
        "too few series span three chunks"
    );
    let requests: Vec<Vec<WriteRequest>> = models
        .iter()
        .map(|m| interleave_into_requests(&mut rng, m))
        .collect();
    let total_requests: usize = requests.iter().map(|r| r.len()).sum();
    eprintln!(
        "generated {total_series} series, {total_samples} samples, {total_requests} requests in {:?}",
        started.elapsed()
    );

    let weft = Weft::start(&[]);

    // One writer per tenant, concurrently, like three Prometheus servers. Within a tenant the
    // requests go in order, so each series' samples arrive in time order.
    let started = Instant::now();
    std::thread::scope(|s| {
        for (tenant, reqs) in TENANTS.iter().zip(&requests) {
            let weft = &weft;
            s.spawn(move || {
                for (i, req) in reqs.iter().enumerate() {
                    let r = weft.push(tenant, req);
                    assert_eq!(r.status, 204, "{tenant}: request {i} refused: {}", r.text());
                }
            });
        }
    });
    eprintln!("pushed in {:?}", started.elapsed());

    // A push without X-Scope-OrgID belongs to tenant "anonymous".
    let anon_labels = labels(&[("__name__", "weft_test_anonymous"), ("id", "0")]);
    let anon_samples = vec![(t0, 1.0f64.to_bits()), (t0 + 1000, 2.0f64.to_bits())];
    let r = weft.push_raw(
        &WRITE_HEADERS,
        snappy(&prost::Message::encode_to_vec(&WriteRequest {
            timeseries: vec![series_proto(&anon_labels, &anon_samples)],
            metadata: vec![],
        })),
    );
    assert_eq!(r.status, 204, "push without a tenant header: {}", r.text());

    let started = Instant::now();
    check_metrics(
        &weft,
        total_samples + anon_samples.len(),
        total_series + 1,
        total_requests,
    );

    let everything = |ms: Vec<LabelMatcher>| query(t0 - 3_600_000, now_ms() + 3_600_000, ms);
    let all_names = || vec![matcher(MatcherType::Re, "__name__", ".+")];

    // 1. Everything, per tenant, in both modes.
    for (tenant, model) in TENANTS.iter().zip(&models) {
        let q = everything(all_names());
        let want = select(model, &q);
        assert_eq!(want.len(), model.len());
        assert_same(
            &format!("{tenant} all, samples"),
            &weft.read_samples(Some(tenant), std::slice::from_ref(&q))[0],
            &want,
        );
        let (chunks, frames) = weft.read_chunks_counting_frames(Some(tenant), &[q]);
        assert_same(&format!("{tenant} all, chunks"), &chunks[0], &want);
        if model.contains_key(&labels(&[
            ("__name__", "weft_test_long_random"),
            ("id", "long"),
        ])) {
            assert!(
                frames >= 2,
                "{tenant}: over 1 MiB of chunks came in {frames} frame(s)"
            );
        }
        eprintln!("{tenant}: {} series in {frames} frames", chunks[0].len());
    }
    eprintln!("full reads ok ({:?})", started.elapsed());

    // 2. Chunks are cut every 120 samples.
    {
        let q = everything(vec![matcher(
            MatcherType::Re,
            "__name__",
            "weft_test_(requests_total|special_values)",
        )]);
        let sizes = weft.chunk_sizes(Some(TENANTS[0]), &q);
        assert!(!sizes.is_empty());
        for (labels, sizes) in &sizes {
            let n = models[0]
                .get(labels)
                .unwrap_or_else(|| panic!("unknown series {}", fmt_labels(labels)))
                .len();
            let mut want = vec![CHUNK_SAMPLES; n / CHUNK_SAMPLES];
            if n % CHUNK_SAMPLES != 0 {
                want.push(n % CHUNK_SAMPLES);
            }
            assert_eq!(
                sizes,
                &want,
                "{}: samples per chunk for {n} samples",
                fmt_labels(labels)
            );
        }
    }

    // 3. A time range that cuts through chunks, both modes.
    let cut_start = t0 + 3_600_000 + 123;
    let cut_end = t0 + 2 * 3_600_000 - 7;
    for (tenant, model) in TENANTS.iter().zip(&models) {
        let q = query(cut_start, cut_end, all_names());
        let want = select(model, &q);
        assert!(
            want.iter()
                .any(|(l, _)| model[l].len() > want_len(&want, l)),
            "the cut range should drop samples of some series"
        );
        assert_same(
            &format!("{tenant} cut, samples"),
            &weft.read_samples(Some(tenant), std::slice::from_ref(&q))[0],
            &want,
        );
        assert_same(
            &format!("{tenant} cut, chunks"),
            &weft.read_chunks(Some(tenant), &[q])[0],
            &want,
        );
    }

    // 4. Matchers of all four types, cross-checked with the model's own matcher evaluation.
    let mut matcher_sets = fixed_matcher_sets();
    for _ in 0..8 {
        matcher_sets.push((random_matchers(&mut rng, &models[1]), false));
    }
    for (i, (ms, must_match)) in matcher_sets.iter().enumerate() {
        let ti = i % TENANTS.len();
        let (tenant, model) = (TENANTS[ti], &models[ti]);
        // Every third set also gets a range cutting through chunks, unless that leaves
        // nothing of a set that must select something.
        let mut q = everything(ms.clone());
        if i % 3 == 2 {
            let cut = query(cut_start, cut_end, ms.clone());
            if !*must_match || !select(model, &cut).is_empty() {
                q = cut;
            }
        }
        let want = select(model, &q);
        if *must_match {
            assert!(
                !want.is_empty(),
                "matcher set {i} {} selects nothing in the model",
                selector(ms)
            );
        }
        let what = format!("{tenant} {}", selector(ms));
        assert_same(
            &format!("{what}, samples"),
            &weft.read_samples(Some(tenant), std::slice::from_ref(&q))[0],
            &want,
        );
        assert_same(
            &format!("{what}, chunks"),
            &weft.read_chunks(Some(tenant), &[q])[0],
            &want,
        );
    }
    eprintln!("{} matcher sets ok", matcher_sets.len());

    // 5. Several queries in one request, answered in order, both modes.
    {
        let (tenant, model) = (TENANTS[1], &models[1]);
        let queries = vec![
            query(
                cut_start,
                cut_end,
                vec![matcher(MatcherType::Eq, "__name__", METRIC_NAMES[1])],
            ),
            everything(vec![matcher(
                MatcherType::Eq,
                "__name__",
                "weft_test_no_such_metric",
            )]),
            everything(vec![
                matcher(MatcherType::Re, "job", "api|db"),
                matcher(MatcherType::Nre, "__name__", ".*_total"),
            ]),
            everything(vec![matcher(MatcherType::Eq, "id", "5")]),
            query(t0, t0 + 600_000, all_names()),
        ];
        let wants: Vec<SeriesSet> = queries.iter().map(|q| select(model, q)).collect();
        assert!(wants[1].is_empty() && !wants[0].is_empty() && wants[3].len() == 1);
        let samples = weft.read_samples(Some(tenant), &queries);
        let chunks = weft.read_chunks(Some(tenant), &queries);
        for (i, want) in wants.iter().enumerate() {
            assert_same(&format!("multi-query {i}, samples"), &samples[i], want);
            assert_same(&format!("multi-query {i}, chunks"), &chunks[i], want);
        }
    }

    // 6. Tenants never see each other's data.
    {
        let only_a = || everything(vec![matcher(MatcherType::Eq, "__name__", ONLY_A)]);
        assert!(
            !select(&models[0], &only_a()).is_empty(),
            "tenant A has no {ONLY_A} series"
        );
        for tenant in [
            Some(TENANTS[1]),
            Some(TENANTS[2]),
            Some("anonymous"),
            Some("never-written"),
            None,
        ] {
            let s = &weft.read_samples(tenant, &[only_a()])[0];
            assert!(
                s.is_empty(),
                "{tenant:?} sees tenant A's series (samples mode): {}",
                fmt_labels(&s[0].0)
            );
            let c = &weft.read_chunks(tenant, &[only_a()])[0];
            assert!(
                c.is_empty(),
                "{tenant:?} sees tenant A's series (chunks mode): {}",
                fmt_labels(&c[0].0)
            );
            let sel = format!("{{__name__={}}}", promql_quote(ONLY_A));
            assert_eq!(
                weft.series(tenant, &[&sel], &[]),
                vec![],
                "{tenant:?} sees A's series via /series"
            );
            let names = weft.label_values(tenant, "__name__", &[]);
            assert!(
                !names.iter().any(|n| n == ONLY_A),
                "{tenant:?} sees A's metric name: {names:?}"
            );
        }
        let never = &weft.read_samples(Some("never-written"), &[everything(all_names())])[0];
        assert!(
            never.is_empty(),
            "a fresh tenant sees {} series",
            never.len()
        );
        let anon = weft.read_samples(Some("anonymous"), &[everything(all_names())]);
        assert_eq!(
            anon[0],
            vec![(anon_labels.clone(), anon_samples.clone())],
            "tenant anonymous"
        );
        let anon = weft.read_samples(None, &[everything(all_names())]);
        assert_eq!(
            anon[0],
            vec![(anon_labels, anon_samples)],
            "no tenant header reads tenant anonymous"
        );
    }

    // 7. The Prometheus HTTP API: series, labels, label values.
    for (tenant, model) in TENANTS.iter().zip(&models) {
        check_series_api(&weft, tenant, model, t0);
    }
    {
        let (status, v) = weft.api_get(Some(TENANTS[0]), "/api/v1/series", &[("match[]", "{")]);
        assert_eq!(status, 400, "a bad selector: {v}");
        assert_eq!(v["status"], "error", "{v}");
        assert_eq!(v["errorType"], "bad_data", "{v}");
    }
    eprintln!("reads and API checks took {:?}", started.elapsed());
}

/// Builds one tenant's series: labels per a fixed schema (so tenants share label sets but not
/// values), 1–300 samples at irregular timestamps, values of every kind.
fn generate_tenant(rng: &mut StdRng, tenant_index: usize, t0: i64) -> Model {
    let mut model = Model::new();
    for i in 0..SERIES_PER_TENANT {
        let kind = i % METRIC_NAMES.len();
        let name = if tenant_index == 0 && i % 50 == 7 {
            ONLY_A
        } else {
            METRIC_NAMES[kind]
        };
        let id = i.to_string();
        let instance = format!("host-{:02}", i % 37);
        let mut pairs = vec![
            ("__name__", name),
            ("id", &id),
            ("instance", &instance),
            ("job", JOBS[i % JOBS.len()]),
        ];
        if i % 3 == 0 {
            pairs.push(("zone", ZONES[(i / 3) % ZONES.len()]));
        }
        if i % 97 == 0 {
            pairs.push(("path", ODD_PATH));
        }
        // Upper case sorts before "__name__": label sets must be sorted bytewise.
        if i % 5 == 1 {
            pairs.push(("Region", ZONES[i % ZONES.len()]));
        }
        let labels = labels(&pairs);

        // Most series are short; some span several chunks, and a few sit exactly on the edges.
        let n = match i {
            _ if i % 211 == 0 => CHUNK_SAMPLES,
            _ if i % 223 == 0 => CHUNK_SAMPLES + 1,
            _ if i % 227 == 0 => 2 * CHUNK_SAMPLES,
            _ => match rng.random_range(0..100) {
                0..8 => rng.random_range(121..=300),
                8..15 => rng.random_range(16..=120),
                _ => rng.random_range(1..=15),
            },
        };
        let step_kind = rng.random_range(0..4);
        let mut t = t0 + rng.random_range(0..600_000);
        let mut v: f64 = match kind {
            0 => rng.random_range(0..1000) as f64,
            _ => rng.random_range(20.0..30.0),
        };
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let bits = match kind {
                0 => {
                    if rng.random_bool(0.02) {
                        v = 0.0;
                    } else {
                        v += rng.random_range(0..100) as f64
                            * if rng.random_bool(0.3) { 0.25 } else { 1.0 };
                    }
                    v.to_bits()
                }
                1 => {
                    v += rng.random_range(-1.0..1.0);
                    v.to_bits()
                }
                2 => proto3_double(rng.random::<u64>()),
                _ => {
                    if rng.random_bool(0.5) {
                        proto3_double(*SPECIAL_BITS.choose(rng).expect("non-empty"))
                    } else {
                        (rng.random::<f64>() * 1e6).to_bits()
                    }
                }
            };
            samples.push((t, bits));
            t += match step_kind {
                0 => 15_000,
                1 => rng.random_range(1..=30_000),
                2 => 1,
                _ => rng.random_range(9_000..=11_000),
            };
        }
        assert!(
            model.insert(labels, samples).is_none(),
            "duplicate labels generated"
        );
    }
    if tenant_index == 2 {
        // One long series whose chunks alone exceed a 1 MiB frame: the chunked answer must
        // split it across frames, and the reader must merge it back.
        let labels = labels(&[("__name__", "weft_test_long_random"), ("id", "long")]);
        let samples = (0..LONG_SERIES_SAMPLES as i64)
            .map(|k| (t0 + 20 * k, proto3_double(rng.random::<u64>())))
            .collect();
        model.insert(labels, samples);
    }
    model
}

/// What a value becomes on its way through a proto3 `double` field as Prometheus (gogo) and
/// prost encode it: the field is left out when it equals 0.0, and -0.0 == 0.0, so -0.0
/// arrives as +0.0. `negative_zero_sent_explicitly_survives_in_chunks` covers -0.0 on its own.
fn proto3_double(bits: u64) -> u64 {
    if bits == (-0.0f64).to_bits() {
        0
    } else {
        bits
    }
}

/// Splits a tenant's samples into requests as Prometheus's queue does: all samples in time
/// order, cut into batches of 500–2000 samples, each batch holding a few samples of many
/// series (in time order per series).
fn interleave_into_requests(rng: &mut StdRng, model: &Model) -> Vec<WriteRequest> {
    let series: Vec<(&Labels, &Samples)> = model.iter().collect();
    let mut events: Vec<(i64, u32, u32)> = series
        .iter()
        .enumerate()
        .flat_map(|(si, (_, samples))| {
            (0..samples.len()).map(move |k| (samples[k].0, si as u32, k as u32))
        })
        .collect();
    events.sort_unstable();
    let mut requests = Vec::new();
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let n = rng.random_range(500..=2000).min(rest.len());
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut req = WriteRequest {
            timeseries: Vec::new(),
            metadata: Vec::new(),
        };
        for &(_, si, k) in batch {
            let (labels, samples) = series[si as usize];
            let slot = *index.entry(si).or_insert_with(|| {
                req.timeseries.push(series_proto(labels, &[]));
                req.timeseries.len() - 1
            });
            let (t, bits) = samples[k as usize];
            req.timeseries[slot]
                .samples
                .push(weft::proto::prompb::Sample {
                    value: f64::from_bits(bits),
                    timestamp: t,
                });
        }
        requests.push(req);
    }
    requests
}

/// Matcher sets that must select something (`true`) or nothing (`false`) in every tenant.
fn fixed_matcher_sets() -> Vec<(Vec<LabelMatcher>, bool)> {
    use MatcherType::*;
    let m = matcher;
    vec![
        (
            vec![
                m(Eq, "__name__", METRIC_NAMES[1]),
                m(Neq, "instance", "host-03"),
            ],
            true,
        ),
        (
            vec![m(Re, "job", "api|db"), m(Nre, "__name__", ".*_total")],
            true,
        ),
        (
            vec![m(Re, "__name__", "weft_test_.+"), m(Eq, "zone", "")],
            true,
        ),
        (vec![m(Re, "__name__", ".+"), m(Neq, "zone", "")], true),
        (vec![m(Re, "id", "1.*"), m(Re, "zone", "eu-.*|")], true),
        (vec![m(Eq, "path", ODD_PATH)], true),
        // An escaped literal regex (no `.`: Prometheus 2's `.` does not match the "\n").
        (
            vec![m(Re, "path", &format!("{}|none", regex::escape(ODD_PATH)))],
            true,
        ),
        (
            vec![
                m(Nre, "instance", "host-0."),
                m(Eq, "job", "cache"),
                m(Re, "__name__", "weft_test_(random_bits|special_values)"),
            ],
            true,
        ),
        (
            vec![m(Re, "instance", "host-1[0-9]"), m(Neq, "job", "edge")],
            true,
        ),
        // Regexes are anchored: "host-1" alone matches no instance.
        (vec![m(Re, "instance", "host-1")], false),
        (vec![m(Eq, "__name__", "weft_test_no_such_metric")], false),
        (
            vec![
                m(Eq, "__name__", METRIC_NAMES[0]),
                m(Eq, "job", "no-such-job"),
            ],
            false,
        ),
    ]
}

/// One to three random matchers built from the data, plus one that never matches "".
fn random_matchers(rng: &mut StdRng, model: &Model) -> Vec<LabelMatcher> {
    let series: Vec<&Labels> = model.keys().collect();
    let mut ms = vec![matcher(MatcherType::Re, "__name__", "weft_test_.+")];
    for _ in 0..rng.random_range(1..=3) {
        let labels = series.choose(rng).expect("series");
        let (name, value) = labels.choose(rng).expect("labels");
        if name == "__name__" || name == "path" {
            continue;
        }
        let ty = *[
            MatcherType::Eq,
            MatcherType::Neq,
            MatcherType::Re,
            MatcherType::Nre,
        ]
        .choose(rng)
        .expect("types");
        let value = match ty {
            MatcherType::Re | MatcherType::Nre => {
                let other = series.choose(rng).expect("series");
                let other = other
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                format!("{}|{}", regex::escape(value), regex::escape(other))
            }
            _ => value.clone(),
        };
        ms.push(matcher(ty, name, &value));
    }
    ms
}

/// The model's answer to a query: matching series with their samples in [start, end],
/// leaving out series with no sample there.
fn select(model: &Model, q: &Query) -> SeriesSet {
    let preds: Vec<Predicate> = q.matchers.iter().map(compile).collect();
    model
        .iter()
        .filter(|(labels, _)| preds.iter().all(|p| p(labels)))
        .map(|(labels, samples)| {
            let kept: Samples = samples
                .iter()
                .copied()
                .filter(|(t, _)| *t >= q.start_timestamp_ms && *t <= q.end_timestamp_ms)
                .collect();
            (labels.clone(), kept)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Prometheus's matcher semantics: an absent label has the value "", regexes are anchored.
fn compile(m: &LabelMatcher) -> Predicate {
    let name = m.name.clone();
    let value_of = move |l: &Labels| -> String {
        l.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let value = m.value.clone();
    match MatcherType::try_from(m.r#type).expect("matcher type") {
        MatcherType::Eq => Box::new(move |l| value_of(l) == value),
        MatcherType::Neq => Box::new(move |l| value_of(l) != value),
        ty @ (MatcherType::Re | MatcherType::Nre) => {
            let re = regex::Regex::new(&format!("^(?:{value})$")).expect("test regex compiles");
            let want = ty == MatcherType::Re;
            Box::new(move |l| re.is_match(&value_of(l)) == want)
        }
    }
}

fn want_len(set: &SeriesSet, labels: &Labels) -> usize {
    set.iter()
        .find(|(l, _)| l == labels)
        .map(|(_, s)| s.len())
        .unwrap_or(0)
}

/// Compares a server answer with the model's. Series the server lists with no sample in the
/// range are ignored: Prometheus itself may list a series whose chunks overlap the range
/// without having a sample in it.
fn assert_same(what: &str, got: &SeriesSet, want: &SeriesSet) {
    let got: Vec<&(Labels, Samples)> = got.iter().filter(|(_, s)| !s.is_empty()).collect();
    let got_labels: BTreeSet<&Labels> = got.iter().map(|(l, _)| l).collect();
    let want_labels: BTreeSet<&Labels> = want.iter().map(|(l, _)| l).collect();
    let missing: Vec<String> = want_labels
        .difference(&got_labels)
        .take(3)
        .map(|l| fmt_labels(l))
        .collect();
    let extra: Vec<String> = got_labels
        .difference(&want_labels)
        .take(3)
        .map(|l| fmt_labels(l))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: got {} series, want {}; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        got.len(),
        want.len()
    );
    for ((labels, got), (_, want)) in got.iter().map(|x| (&x.0, &x.1)).zip(want) {
        if got == want {
            continue;
        }
        let i = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {}: {} samples, want {}; first difference at index {i}: got {:?}, want {:?}",
            fmt_labels(labels),
            got.len(),
            want.len(),
            got.get(i).map(|(t, b)| format!("{t} {b:#018x}")),
            want.get(i).map(|(t, b)| format!("{t} {b:#018x}")),
        );
    }
}

fn check_metrics(weft: &Weft, samples: usize, series: usize, push_requests: usize) {
    let text = weft.metrics();
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&text, name, labels)
            .unwrap_or_else(|| panic!("/metrics has no {name}{labels:?}"))
    };
    assert_eq!(
        get("weft_samples_ingested_total", &[]),
        samples as f64,
        "weft_samples_ingested_total"
    );
    assert_eq!(
        get("weft_head_series", &[]),
        series as f64,
        "weft_head_series"
    );
    assert!(
        get("weft_head_chunks", &[]) >= series as f64,
        "weft_head_chunks below the series count"
    );
    let ok_pushes = get("weft_request_duration_seconds_count", &[("code", "204")]);
    assert!(
        ok_pushes >= push_requests as f64,
        "weft_request_duration_seconds_count{{code=\"204\"}} = {ok_pushes}, fewer than {push_requests} pushes"
    );
    assert!(
        text.contains("weft_request_duration_seconds_bucket"),
        "no histogram buckets in /metrics"
    );
}

fn label_map(labels: &Labels) -> BTreeMap<String, String> {
    labels.iter().cloned().collect()
}

fn check_series_api(weft: &Weft, tenant: &str, model: &Model, t0: i64) {
    let t = Some(tenant);
    let as_set = |v: Vec<BTreeMap<String, String>>, what: &str| {
        let n = v.len();
        let set: BTreeSet<_> = v.into_iter().collect();
        assert_eq!(set.len(), n, "{tenant} {what}: duplicate series");
        set
    };
    let model_set =
        |pred: &dyn Fn(&Labels, &Samples) -> bool| -> BTreeSet<BTreeMap<String, String>> {
            model
                .iter()
                .filter(|(l, s)| pred(l, s))
                .map(|(l, _)| label_map(l))
                .collect()
        };

    // All series, no time range.
    let got = as_set(weft.series(t, &["{__name__=~\".+\"}"], &[]), "all series");
    assert_eq!(
        got,
        model_set(&|_, _| true),
        "{tenant}: /api/v1/series of everything"
    );

    // A time range (RFC3339 start, float-seconds end): every series with a sample in range
    // must be there, and none whose samples all lie outside [first, last] of the range.
    let (start_ms, end_ms) = (t0 + 3_600_000, t0 + 3_600_000 + 600_000);
    let start = rfc3339(start_ms);
    let end = format!("{:.3}", end_ms as f64 / 1000.0);
    let got = as_set(
        weft.series(
            t,
            &["{__name__=~\".+\"}"],
            &[("start", &start), ("end", &end)],
        ),
        "ranged series",
    );
    let at_least = model_set(&|_, s| s.iter().any(|(ts, _)| *ts >= start_ms && *ts <= end_ms));
    let at_most = model_set(&|_, s| s[0].0 <= end_ms && s[s.len() - 1].0 >= start_ms);
    assert!(!at_least.is_empty());
    assert!(
        got.is_superset(&at_least),
        "{tenant}: ranged /series misses series with samples in [{start}, {end}]"
    );
    assert!(
        got.is_subset(&at_most),
        "{tenant}: ranged /series lists series that lie outside [{start}, {end}]"
    );

    // Several match[] are a union; an odd value survives the selector's escaping.
    let sels = [
        format!("{}{{job=\"api\"}}", METRIC_NAMES[1]),
        format!("{{__name__=\"{}\", zone=\"eu-1\"}}", METRIC_NAMES[3]),
        format!("{{path={}}}", promql_quote(ODD_PATH)),
    ];
    let sel_refs: Vec<&str> = sels.iter().map(String::as_str).collect();
    let got = as_set(weft.series(t, &sel_refs, &[]), "union");
    let want = model_set(&|l, _| {
        let get = |n: &str| {
            l.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        (get("__name__") == METRIC_NAMES[1] && get("job") == "api")
            || (get("__name__") == METRIC_NAMES[3] && get("zone") == "eu-1")
            || get("path") == ODD_PATH
    });
    assert!(want.iter().any(|m| m.contains_key("path")));
    assert_eq!(got, want, "{tenant}: /api/v1/series with three match[]");

    // Label names.
    let names: BTreeSet<String> = model
        .keys()
        .flat_map(|l| l.iter().map(|(n, _)| n.clone()))
        .collect();
    let got = weft.labels(t, &[], &[]);
    assert_eq!(
        got,
        names.iter().cloned().collect::<Vec<_>>(),
        "{tenant}: /api/v1/labels (sorted)"
    );
    let sel = format!("{{__name__=\"{}\", zone=\"\"}}", METRIC_NAMES[2]);
    let want: BTreeSet<String> = model
        .keys()
        .filter(|l| {
            l.iter()
                .any(|(n, v)| n == "__name__" && v == METRIC_NAMES[2])
        })
        .filter(|l| !l.iter().any(|(n, _)| n == "zone"))
        .flat_map(|l| l.iter().map(|(n, _)| n.clone()))
        .collect();
    assert!(!want.contains("zone"));
    assert_eq!(
        weft.labels(t, &[&sel], &[]),
        want.into_iter().collect::<Vec<_>>(),
        "{tenant}: /labels {sel}"
    );

    // Label values.
    let values = |name: &str, pred: &dyn Fn(&Labels) -> bool| -> Vec<String> {
        let set: BTreeSet<String> = model
            .keys()
            .filter(|l| pred(l))
            .filter_map(|l| l.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
            .collect();
        set.into_iter().collect()
    };
    for name in [
        "__name__", "job", "instance", "zone", "path", "id", "Region",
    ] {
        assert_eq!(
            weft.label_values(t, name, &[]),
            values(name, &|_| true),
            "{tenant}: values of {name}"
        );
    }
    assert_eq!(
        weft.label_values(t, "no_such_label", &[]),
        Vec::<String>::new(),
        "{tenant}: absent label"
    );
    let sel = "{job=~\"api|db\", zone!=\"us-1\"}";
    let want = values("zone", &|l| {
        let get = |n: &str| {
            l.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        (get("job") == "api" || get("job") == "db") && get("zone") != "us-1"
    });
    assert!(!want.is_empty());
    assert_eq!(
        weft.label_values(t, "zone", &[sel]),
        want,
        "{tenant}: values of zone for {sel}"
    );
}

/// -0.0 cannot be sent through prost (see `proto3_double`), but a client that writes the
/// field anyway must get it back bit-exact in chunks; in SAMPLES mode the server's own proto3
/// encoder may turn it into +0.0, as Prometheus's does.
#[test]
fn negative_zero_sent_explicitly_survives_in_chunks() {
    let weft = Weft::start(&[]);
    let t = now_ms() - 60_000;
    let neg_zero = (-0.0f64).to_bits();
    let labels = labels(&[("__name__", "weft_test_negative_zero")]);
    let samples = vec![
        (t, neg_zero),
        (t + 1000, 1.0f64.to_bits()),
        (t + 2000, neg_zero),
    ];
    let raw: Vec<(&[u8], &[u8])> = labels
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let body = encode_write_request_by_hand(&[(raw, samples.clone())]);
    // The hand-written encoding must decode to the same request prost would build.
    let decoded: WriteRequest = prost::Message::decode(body.as_slice()).expect("valid protobuf");
    assert_eq!(decoded.timeseries[0].samples.len(), 3);
    assert_eq!(decoded.timeseries[0].samples[0].value.to_bits(), neg_zero);
    let r = weft.push_raw(
        &[WRITE_HEADERS.as_slice(), &[("X-Scope-OrgID", "zero")]].concat(),
        snappy(&body),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let q = query(
        t,
        t + 2000,
        vec![matcher(
            MatcherType::Eq,
            "__name__",
            "weft_test_negative_zero",
        )],
    );
    let chunks = weft.read_chunks(Some("zero"), std::slice::from_ref(&q));
    assert_eq!(
        chunks[0],
        vec![(labels.clone(), samples.clone())],
        "chunks mode"
    );
    let got = weft.read_samples(Some("zero"), &[q]);
    let zeroed: Samples = samples
        .iter()
        .map(|&(t, b)| (t, proto3_double(b)))
        .collect();
    assert!(
        got[0] == vec![(labels.clone(), samples)] || got[0] == vec![(labels, zeroed)],
        "samples mode: {:?}",
        got[0]
    );
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a unix time in ms (civil-from-days, H. Hinnant).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[test]
fn rfc3339_formats_known_instants() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
}
