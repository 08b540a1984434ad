//! The flusher through the binary, on the default `file://` store: closed and cut chunks
//! reach the store as objects holding exactly what was pushed; a restart does not upload
//! them again (WAL flush marks and checkpoint flags).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use weft::proto::prompb::WriteRequest;
use weft::store::object::decode_object;

const SERIES: usize = 30;
const SAMPLES: i64 = 300;

fn request(t0: i64, n: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| {
                let labels: Labels = vec![
                    ("__name__".into(), "flush_test".into()),
                    ("i".into(), format!("{i:03}")),
                ];
                let samples: Vec<(i64, u64)> = (0..n)
                    .map(|k| {
                        let t = t0 + k * 1000;
                        (t, ((t / 1000) as f64 * 0.5 + i as f64).to_bits())
                    })
                    .collect();
                series_proto(&labels, &samples)
            })
            .collect(),
        metadata: vec![],
    }
}

/// Every object under `<store>/<tenant>/chunks`, decoded: series → samples (t, bits).
fn store_contents(store: &Path, tenant: &str) -> (usize, BTreeMap<String, Vec<(i64, u64)>>) {
    let dir = store.join(tenant).join("chunks");
    let mut out: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    let mut objects = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        objects += 1;
        let index = decode_object(&bytes).expect("a valid object");
        for s in index.series {
            let samples = out.entry(s.labels.to_string()).or_default();
            for c in s.chunks {
                let data = &bytes[c.range().start as usize..c.range().end as usize];
                for x in weft::chunk::XorIterator::new(data).unwrap() {
                    let (t, v) = x.unwrap();
                    samples.push((t, v.to_bits()));
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    (objects, out)
}

#[test]
fn flush_uploads_exactly_what_was_pushed_and_a_restart_does_not_upload_again() {
    let data = TempDir::new("weft-flush");
    let args = [
        "--flush.period",
        "1s",
        "--flush.retain-period",
        "1h",
        "--ingester.id",
        "it-1",
    ];
    let t0 = now_ms() - 3_600_000;
    let mut weft = Weft::start_on(data.path(), &args, None);
    weft.push_ok("team-a", &request(t0, SAMPLES));

    let r = weft
        .client()
        .post(weft.url("/ingester/flush?wait=true&timeout=30s"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(status, 200, "flush: {body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    // 300 samples a series: two full chunks of 120 and one cut open chunk of 60.
    assert_eq!(summary["chunks"], (SERIES * 3) as u64, "{body}");
    assert_eq!(summary["chunks_cut"], SERIES as u64, "{body}");

    let store = data.path().join("store");
    let (objects, contents) = store_contents(&store, "team-a");
    assert!(objects >= 1);
    assert_eq!(contents.len(), SERIES);
    for (name, samples) in &contents {
        assert_eq!(samples.len() as i64, SAMPLES, "{name}");
        let i: f64 = name.split("i=\"").nth(1).unwrap()[..3].parse().unwrap();
        for (k, &(t, v)) in samples.iter().enumerate() {
            assert_eq!(t, t0 + k as i64 * 1000, "{name}");
            assert_eq!(v, ((t / 1000) as f64 * 0.5 + i).to_bits(), "{name}");
        }
    }
    let metrics = weft
        .client()
        .get(weft.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("weft_store_up{op=\"write\"} 1")
            && metrics.contains("weft_store_up{op=\"read\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("weft_flush_backlog_bytes 0"), "{metrics}");

    // Restart twice: once through the shutdown checkpoint, once through WAL replay alone
    // (SIGKILL). Neither must upload the flushed chunks again.
    weft.signal(libc::SIGKILL);
    weft.wait_exit(Duration::from_secs(10));
    let mut weft = Weft::start_on(data.path(), &args, None);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        store_contents(&store, "team-a").0,
        objects,
        "re-uploaded after a replay"
    );
    weft.signal(libc::SIGTERM);
    weft.wait_exit(Duration::from_secs(10));
    let weft = Weft::start_on(data.path(), &args, None);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        store_contents(&store, "team-a").0,
        objects,
        "re-uploaded after a checkpoint"
    );

    // New samples flush into a new object; the old ones are not repeated.
    weft.push_ok("team-a", &request(t0 + SAMPLES * 1000, 120));
    let r = weft
        .client()
        .post(weft.url("/ingester/flush?wait=true"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (objects2, contents) = store_contents(&store, "team-a");
    assert!(objects2 > objects);
    for samples in contents.values() {
        assert_eq!(samples.len() as i64, SAMPLES + 120);
        assert!(
            samples.windows(2).all(|w| w[0].0 < w[1].0),
            "duplicate sample in the store"
        );
    }
}

/// What was pushed by `request(t0, n)` for tenant data, as the read helpers return it.
fn expected(t0: i64, n: i64) -> SeriesSet {
    let mut out: SeriesSet = request(t0, n)
        .timeseries
        .into_iter()
        .map(|ts| {
            let labels: Labels = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let samples: Samples = ts
                .samples
                .into_iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect();
            (labels, samples)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn released_chunks_read_back_from_the_store_and_a_fresh_ingester_reads_them_too() {
    let data = TempDir::new("weft-flush-release");
    let t0 = now_ms() - 3_600_000;
    let args = [
        "--flush.period",
        "200ms",
        "--flush.retain-period",
        "0s",
        "--ingester.id",
        "it-1",
    ];
    let weft = Weft::start_on(data.path(), &args, None);
    weft.push_ok("team-a", &request(t0, SAMPLES));
    weft.push_ok("team-b", &request(t0, 10));
    let r = weft
        .client()
        .post(weft.url("/ingester/flush?wait=true"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Retain 0s: the next cycles drop every flushed chunk from memory.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while weft.metric("weft_memory_chunk_bytes", &[]) != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "flushed chunks never released"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let q = [query(
        i64::MIN / 2,
        i64::MAX / 2,
        vec![matcher(
            weft::proto::prompb::MatcherType::Eq,
            "__name__",
            "flush_test",
        )],
    )];
    let want = expected(t0, SAMPLES);
    let check = |w: &Weft, label: &str| {
        let r = w.read_raw(
            Some("team-a"),
            &weft::proto::prompb::ReadRequest {
                queries: q.to_vec(),
                accepted_response_types: vec![],
            },
        );
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        assert!(r.header("x-weft-partial").is_none(), "{label}: partial");
        assert_eq!(
            w.read_samples(Some("team-a"), &q)[0],
            want,
            "{label}: samples"
        );
        assert_eq!(
            w.read_chunks(Some("team-a"), &q)[0],
            want,
            "{label}: chunks"
        );
        let b = w.read_samples(Some("team-b"), &q);
        assert_eq!(b[0].len(), SERIES, "{label}: team-b");
        assert!(
            b[0].iter().all(|(_, s)| s.len() == 10),
            "{label}: team-b isolation"
        );
        assert!(
            w.read_samples(Some("team-c"), &q)[0].is_empty(),
            "{label}: team-c"
        );
    };
    check(&weft, "after release");
    // A new ingester with an empty data dir on the same store.
    let store = format!("file://{}/store", data.path().display());
    let fresh = Weft::start(&["--store", &store, "--ingester.id", "it-2"]);
    check(&fresh, "fresh ingester");
}
