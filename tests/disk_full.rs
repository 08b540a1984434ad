//! ENOSPC end to end: the WAL lives on a tiny tmpfs; once it is full, pushes get 503 with
//! Retry-After (never a crash, never a 2xx), and weft recovers by itself when space returns.
//! Every push that was acknowledged reads back exactly.
//!
//! Needs root to mount the tmpfs. Without it the test is skipped, except under `CI=true`,
//! where it fails. (The WAL's own tests cover the same path with a fault-injecting file.)

mod common;

use std::process::Command;

use common::*;
use weft::proto::prompb::{MatcherType, WriteRequest};

fn request(series: usize, t: i64) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| {
                let labels: Labels = vec![
                    ("__name__".into(), "enospc_test".into()),
                    ("i".into(), format!("{i:04}")),
                ];
                series_proto(&labels, &[(t, (t as f64 + i as f64).to_bits())])
            })
            .collect(),
        metadata: vec![],
    }
}

#[test]
fn full_wal_disk_gives_503_with_retry_after_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount("weft-enospc", 2 << 20) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (need root); CI must run this test"
        );
        eprintln!("skipping: cannot mount a tmpfs (need root)");
        return;
    };
    let wal_dir = fs.path().join("wal");
    let weft = Weft::start(&[
        "--wal.dir",
        wal_dir.to_str().unwrap(),
        "--wal.segment-size",
        "262144",
    ]);
    let tenant = "enospc";
    let t0 = now_ms() - 3_600_000;
    let mut acked: Vec<i64> = Vec::new();
    let mut refused = None;
    // Each push logs ~200 samples, about 2 KiB: 2 MiB (8 segments) fills within 1000 pushes.
    for k in 0..2000 {
        let t = t0 + k * 1000;
        let r = weft.push(tenant, &request(200, t));
        match r.status {
            204 => acked.push(t),
            503 => {
                refused = Some(r);
                break;
            }
            s => panic!("push {k}: unexpected status {s}: {}", r.text()),
        }
    }
    let refused = refused.expect("the 2 MiB WAL file system never filled up");
    assert!(
        refused.header("retry-after").is_some(),
        "503 without Retry-After: {}",
        refused.text()
    );
    assert!(
        refused.text().contains("disk full"),
        "503 body: {}",
        refused.text()
    );
    eprintln!("WAL disk full after {} acknowledged pushes", acked.len());

    // Still full: still 503, and weft still serves reads.
    let again = weft.push(tenant, &request(200, t0 + 2_100_000));
    assert_eq!(again.status, 503, "{}", again.text());

    // Space returns, the way an operator would make it: grow the file system.
    let remount = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(fs.path())
        .status()
        .expect("remount");
    assert!(remount.success(), "remount with more space failed");

    // The next push retries the allocation by itself.
    // Still in the past: past now + --limits.creation-grace-period it would be a 400.
    let t = t0 + 2_200_000;
    let r = weft.push(tenant, &request(200, t));
    assert_eq!(r.status, 204, "after space returned: {}", r.text());
    acked.push(t);

    // Every acknowledged sample reads back exactly.
    let got = weft.read_samples(
        Some(tenant),
        &[query(
            i64::MIN,
            i64::MAX,
            vec![matcher(MatcherType::Eq, "__name__", "enospc_test")],
        )],
    );
    let series = &got[0];
    assert_eq!(series.len(), 200);
    for (labels, samples) in series {
        let i: f64 = labels
            .iter()
            .find(|(n, _)| n == "i")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        for &t in &acked {
            let want = (t as f64 + i).to_bits();
            assert!(
                samples.contains(&(t, want)),
                "acknowledged sample t={t} of series i={i} is missing"
            );
        }
    }
    weft.assert_still_serves("after ENOSPC");
}
