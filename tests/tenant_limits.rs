//! Per-tenant limits and bad senders, against the real binary: the overrides file (limits
//! per tenant, applied at run time, a broken file keeping the last good one), the tenant
//! cap, pushes that store nothing creating no tenant, and far-future samples.
//!
//! Before: any client could create tenants without limit (200k pushes with new tenant ids
//! and a bad label left 200k empty tenants and a 40 MB `/metrics`), and one sample at
//! now × 10⁶ blocked its series for good, across restarts.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use weft::proto::prompb::{MatcherType, ReadRequest, ResponseType, WriteRequest};

/// How often the servers here re-read the overrides file.
const RELOAD: &str = "200ms";
/// How long a test waits for a reload to show (many reload periods: debug builds, 2 cores).
const RELOAD_WAIT: Duration = Duration::from_secs(15);

fn series_req(names: &[String], t: i64) -> WriteRequest {
    WriteRequest {
        timeseries: names
            .iter()
            .map(|n| {
                series_proto(
                    &labels(&[("__name__", "weft_limits_test"), ("s", n)]),
                    &[(t, 1.0f64.to_bits())],
                )
            })
            .collect(),
        metadata: vec![],
    }
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn write_file(path: &Path, text: &str) {
    // Write then rename, so the reloader never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn overrides(max_series_small: usize) -> String {
    format!(
        "# test overrides\noverrides:\n  small:\n    max_series_per_tenant: {max_series_small}\n    retention: 30d\n"
    )
}

/// Retries `attempt` until it returns true (a reload shows), for at most [`RELOAD_WAIT`].
fn eventually(what: &str, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        if attempt() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {RELOAD_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_with_overrides(dir: &TempDir, extra: &[&str]) -> Weft {
    let file = dir.path().join("overrides.yaml");
    let mut args = vec![
        "--limits.overrides-file",
        file.to_str().unwrap(),
        "--limits.overrides-reload-period",
        RELOAD,
    ];
    args.extend_from_slice(extra);
    Weft::start(&args)
}

#[test]
fn an_override_limits_one_tenants_series_while_another_is_fine_and_edits_apply_at_run_time() {
    let dir = TempDir::new("weft-overrides");
    let file = dir.path().join("overrides.yaml");
    write_file(&file, &overrides(3));
    let w = start_with_overrides(&dir, &["--limits.max-series-per-tenant", "1000"]);
    let t = now_ms();

    // 5 new series for `small`, whose limit is 3: 3 stored, 2 refused with 429.
    let r = w.push("small", &series_req(&names("a", 0..5), t));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("series limit of 3"), "{}", r.text());
    assert_eq!(
        w.metric("weft_head_series", &[("tenant", "small")]),
        Some(3.0)
    );
    // Another tenant has the flag's limit.
    w.push_ok("big", &series_req(&names("a", 0..50), t));
    assert_eq!(
        w.metric("weft_head_series", &[("tenant", "big")]),
        Some(50.0)
    );

    // Raise it at run time: new series are taken up to the new limit.
    write_file(&file, &overrides(6));
    eventually("the raised limit applies", || {
        w.push("small", &series_req(&names("b", 0..1), t + 1))
            .status
            == 204
    });
    let r = w.push("small", &series_req(&names("c", 0..5), t + 2));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("series limit of 6"), "{}", r.text());
    assert_eq!(
        w.metric("weft_head_series", &[("tenant", "small")]),
        Some(6.0)
    );

    // Lower it below the current count: no new series, the existing ones keep working.
    write_file(&file, &overrides(2));
    eventually("the lowered limit applies", || {
        let r = w.push("small", &series_req(&names("d", 0..1), t + 3));
        r.status == 429 && r.text().contains("series limit of 2")
    });
    w.push_ok("small", &series_req(&names("a", 0..3), t + 4));
    let got = w.read_samples(
        Some("small"),
        &[query(t, t + 10, vec![matcher(MatcherType::Eq, "s", "a0")])],
    );
    assert_eq!(
        got[0][0].1,
        vec![(t, 1.0f64.to_bits()), (t + 4, 1.0f64.to_bits())],
        "an existing series keeps taking samples under a lowered limit"
    );
    assert_eq!(
        w.metric("weft_overrides_reload_failures_total", &[]),
        Some(0.0)
    );
    w.assert_still_serves("overrides");
}

#[test]
fn a_broken_overrides_file_keeps_the_last_good_limits_and_counts_a_failure() {
    let dir = TempDir::new("weft-overrides-broken");
    let file = dir.path().join("overrides.yaml");
    write_file(&file, &overrides(2));
    let w = start_with_overrides(&dir, &[]);
    let t = now_ms();
    let stamp = w
        .metric("weft_overrides_last_reload_success_timestamp_seconds", &[])
        .expect("the success timestamp is exported");
    assert!(stamp > 1.6e9, "a Unix time in seconds: {stamp}");

    // An unknown key: strict, as Mimir.
    write_file(
        &file,
        "overrides:\n  small:\n    max_series_per_tenant: 100\n    max_seris: 1\n",
    );
    eventually("the failure is counted", || {
        w.metric("weft_overrides_reload_failures_total", &[]) >= Some(1.0)
    });
    assert!(
        w.log_tail().contains("max_seris"),
        "the log names the bad key:\n{}",
        w.log_tail()
    );
    // The old limit (2) still holds, not the broken file's 100.
    let r = w.push("small", &series_req(&names("a", 0..5), t));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("series limit of 2"), "{}", r.text());

    // Not YAML at all, then a missing file: still the old limits, still counted.
    let before = w
        .metric("weft_overrides_reload_failures_total", &[])
        .unwrap();
    write_file(&file, "overrides: [\n");
    eventually("a second failure is counted", || {
        w.metric("weft_overrides_reload_failures_total", &[]) > Some(before)
    });
    std::fs::remove_file(&file).unwrap();
    let before = w
        .metric("weft_overrides_reload_failures_total", &[])
        .unwrap();
    eventually("a missing file is counted", || {
        w.metric("weft_overrides_reload_failures_total", &[]) > Some(before)
    });
    let r = w.push("small", &series_req(&names("b", 0..1), t));
    assert_eq!(r.status, 429, "{}", r.text());

    // Fixed again: applies.
    write_file(&file, &overrides(10));
    eventually("the fixed file applies", || {
        w.push("small", &series_req(&names("c", 0..1), t)).status == 204
    });
}

#[test]
fn a_bad_overrides_file_at_start_stops_the_start_with_its_reason() {
    let dir = TempDir::new("weft-overrides-start");
    let file = dir.path().join("overrides.yaml");
    write_file(&file, "overrides:\n  a:\n    retention: 30x\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--limits.overrides-file")
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("30x") && err.contains("line 3"), "{err}");
}

/// The process's resident set, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Each push: a new, valid tenant id and a series with an invalid label name (so a 400;
/// an empty name is invalid under every `--validation.name-validation-scheme`).
fn bad_push(w: &Weft, tenant: &str, t: i64) -> u16 {
    let req = WriteRequest {
        timeseries: vec![series_proto(
            &labels(&[("__name__", "up"), ("", "x")]),
            &[(t, 1.0f64.to_bits())],
        )],
        metadata: vec![],
    };
    w.push(tenant, &req).status
}

#[test]
fn thousands_of_pushes_that_store_nothing_leave_no_tenant_and_a_flat_metrics_page() {
    // WEFT_BAD_SENDER_PUSHES scales it up for a measurement (docs/operations.md).
    let n: usize = std::env::var("WEFT_BAD_SENDER_PUSHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
        .max(200);
    let w = Weft::start(&[]);
    let t = now_ms();
    w.push_ok("real", &series_req(&names("a", 0..1), t));
    let bad_pushes = |range: std::ops::Range<usize>| {
        for i in range {
            assert_eq!(bad_push(&w, &format!("bad-{i}"), t), 400);
            // A far-future sample alone stores nothing either.
            if i % 10 == 0 {
                let r = w.push(
                    &format!("future-{i}"),
                    &series_req(&names("a", 0..1), t * 1000),
                );
                assert_eq!(r.status, 400, "{}", r.text());
            }
        }
    };
    bad_pushes(0..100);
    // One scrape first: a scrape adds its own request-duration series.
    let _ = w.metrics();
    let early = w.metrics();
    let rss_early = rss_kib(w.pid());
    bad_pushes(100..n);
    let rss_late = rss_kib(w.pid());
    let late = w.metrics();
    let new_lines: Vec<&str> = late
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.rsplit_once(' ').map_or(*l, |(s, _)| s);
            !early.lines().any(|e| e.starts_with(series))
        })
        .collect();
    assert!(new_lines.is_empty(), "new metric series: {new_lines:#?}");
    assert_eq!(metric_value(&late, "weft_tenants", &[]), Some(1.0));
    assert!(
        !late.contains("bad-") && !late.contains("future-"),
        "{late}"
    );
    // Flat: only counters' digits may grow.
    assert!(
        late.len() <= early.len() + 256,
        "/metrics grew from {} to {} bytes",
        early.len(),
        late.len()
    );
    eprintln!(
        "after 100 and {n} bad pushes: /metrics {} and {} bytes, VmRSS {rss_early} and {rss_late} KiB",
        early.len(),
        late.len()
    );
    // The refusals are still counted, without a tenant label value.
    assert_eq!(
        metric_value(
            &late,
            "weft_samples_rejected_total",
            &[("tenant", ""), ("reason", "invalid_labels")]
        ),
        Some(n as f64)
    );
    assert_eq!(
        metric_value(
            &late,
            "weft_samples_rejected_total",
            &[("tenant", ""), ("reason", "too_far_in_future")]
        ),
        Some((n / 10) as f64)
    );
    w.assert_still_serves("bad senders");
}

#[test]
fn the_tenant_cap_refuses_the_next_tenant_and_existing_ones_keep_working() {
    let w = Weft::start(&["--limits.max-tenants", "3"]);
    let t = now_ms();
    for tenant in ["a", "b", "c"] {
        w.push_ok(tenant, &series_req(&names("s", 0..2), t));
    }
    // A push that stores nothing does not take a place either.
    assert_eq!(
        bad_push(&w, "d", t),
        429,
        "cap reached: refused before labels"
    );
    let r = w.push("d", &series_req(&names("s", 0..1), t));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("--limits.max-tenants"), "{}", r.text());
    assert!(r.text().contains("\"d\""), "names the tenant: {}", r.text());
    assert_eq!(w.metric("weft_tenants_refused_total", &[]), Some(2.0));
    assert_eq!(w.metric("weft_tenants", &[]), Some(3.0));
    // Existing tenants: new series and samples as before.
    w.push_ok("a", &series_req(&names("s", 0..5), t + 1));
    assert_eq!(w.metric("weft_head_series", &[("tenant", "a")]), Some(5.0));
    assert!(!w.metrics().contains("tenant=\"d\""));
}

#[test]
fn bad_pushes_do_not_use_up_the_tenant_cap() {
    let w = Weft::start(&["--limits.max-tenants", "2"]);
    let t = now_ms();
    for i in 0..50 {
        assert_eq!(bad_push(&w, &format!("bad-{i}"), t), 400);
    }
    w.push_ok("a", &series_req(&names("s", 0..1), t));
    w.push_ok("b", &series_req(&names("s", 0..1), t));
    assert_eq!(w.metric("weft_tenants", &[]), Some(2.0));
}

#[test]
fn a_far_future_sample_is_refused_and_its_series_keeps_working_across_a_restart() {
    let dir = TempDir::new("weft-future");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let t = now_ms();
    let lbl = labels(&[("__name__", "weft_future_test"), ("job", "clock")]);
    let other = labels(&[("__name__", "weft_future_test"), ("job", "fine")]);
    let one = |ls: &Labels, ts: i64, v: f64| WriteRequest {
        timeseries: vec![series_proto(ls, &[(ts, v.to_bits())])],
        metadata: vec![],
    };
    {
        let w = Weft::start_on(&data, &[], None);
        w.push_ok("tenant", &one(&lbl, t, 1.0));
        // Nanoseconds instead of milliseconds, beside a good series in the same push.
        let bad_t = t * 1_000_000;
        let req = WriteRequest {
            timeseries: vec![
                series_proto(&lbl, &[(bad_t, 2.0f64.to_bits())]),
                series_proto(&other, &[(t, 5.0f64.to_bits())]),
            ],
            metadata: vec![],
        };
        let r = w.push("tenant", &req);
        assert_eq!(r.status, 400, "{}", r.text());
        let text = r.text();
        assert!(text.contains("too far in the future"), "{text}");
        assert!(
            text.contains(&bad_t.to_string()),
            "names the timestamp: {text}"
        );
        assert!(text.contains("clock"), "names the series: {text}");
        assert!(text.contains("1 samples stored"), "{text}");
        assert_eq!(
            w.metric(
                "weft_samples_rejected_total",
                &[("tenant", "tenant"), ("reason", "too_far_in_future")]
            ),
            Some(1.0)
        );
        // Within the 10m grace: taken.
        w.push_ok("tenant", &one(&lbl, t + 1000, 3.0));
        w.push_ok("tenant", &one(&lbl, t + 9 * 60 * 1000, 3.5));
        let r = w.push("tenant", &one(&lbl, now_ms() + 11 * 60 * 1000, 9.0));
        assert_eq!(r.status, 400, "past the grace: {}", r.text());
        w.signal(libc::SIGKILL);
    }
    let w = Weft::start_on(&data, &[], None);
    // The series is not blocked: the WAL never had the bad sample.
    let r = w.push("tenant", &one(&lbl, t + 9 * 60 * 1000 + 1, 4.0));
    assert_eq!(r.status, 204, "{}", r.text());
    let got = w.read_samples(
        Some("tenant"),
        &[query(
            t,
            t + 3_600_000,
            vec![matcher(MatcherType::Eq, "job", "clock")],
        )],
    );
    assert_eq!(
        got[0],
        vec![(
            lbl.clone(),
            vec![
                (t, 1.0f64.to_bits()),
                (t + 1000, 3.0f64.to_bits()),
                (t + 9 * 60 * 1000, 3.5f64.to_bits()),
                (t + 9 * 60 * 1000 + 1, 4.0f64.to_bits()),
            ]
        )]
    );
    let got = w.read_samples(
        Some("tenant"),
        &[query(t, t, vec![matcher(MatcherType::Eq, "job", "fine")])],
    );
    assert_eq!(got[0], vec![(other, vec![(t, 5.0f64.to_bits())])]);
}

#[test]
fn a_tenant_override_of_the_creation_grace_period_applies() {
    let dir = TempDir::new("weft-grace");
    let file = dir.path().join("overrides.yaml");
    write_file(
        &file,
        "overrides:\n  lenient:\n    creation_grace_period: 2h\n  strict:\n    creation_grace_period: 0\n",
    );
    let w = start_with_overrides(&dir, &[]);
    let t = now_ms() + 60 * 60 * 1000;
    let req = series_req(&names("a", 0..1), t);
    w.push_ok("lenient", &req);
    assert_eq!(w.push("other", &req).status, 400, "the flag's 10m");
    let r = w.push("strict", &series_req(&names("a", 0..1), now_ms() + 60_000));
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn per_tenant_request_and_read_limits_apply_to_that_tenant_only() {
    let dir = TempDir::new("weft-tenant-read");
    let file = dir.path().join("overrides.yaml");
    write_file(
        &file,
        "overrides:\n  narrow:\n    max_read_series: 2\n    max_request_bytes: 2048\n",
    );
    let w = start_with_overrides(&dir, &[]);
    let t = now_ms();
    w.push_ok("narrow", &series_req(&names("a", 0..3), t));
    w.push_ok("wide", &series_req(&names("a", 0..3), t));
    let req = ReadRequest {
        queries: vec![query(
            t,
            t,
            vec![matcher(MatcherType::Eq, "__name__", "weft_limits_test")],
        )],
        accepted_response_types: vec![ResponseType::Samples as i32],
    };
    let r = w.read_raw(Some("narrow"), &req);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains('2'), "names the limit: {}", r.text());
    assert_eq!(w.read_samples(Some("wide"), &req.queries)[0].len(), 3);

    // A push body over the tenant's 2 KiB is a 413 for it, and fine for another tenant.
    // Label values that snappy cannot shrink much: about 8 KiB compressed.
    let scrambled: Vec<String> = (0u64..200)
        .map(|i| format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    let big = series_req(&scrambled, t + 1);
    let r = w.push("narrow", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    w.push_ok("wide", &big);
}
