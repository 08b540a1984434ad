//! The binary's command-line contracts: `weft chunk encode|decode` (DESIGN.md, Contracts)
//! and `--config.file`.

mod common;
#[path = "common/testdata.rs"]
mod testdata;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// Runs the binary with `args`, feeding `stdin`; returns stdout, or panics with stderr.
fn run(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn chunk_decode_then_encode_reproduces_every_testdata_chunk_through_the_binary() {
    let Some(chunks) = testdata::load() else {
        return;
    };
    // Every 7th chunk keeps the test quick while covering real and synthetic ones.
    for c in chunks.iter().step_by(7) {
        let text = String::from_utf8(run(&["chunk", "decode", "--bits"], &c.chunk)).unwrap();
        let want: String = c
            .samples
            .iter()
            .map(|(t, bits)| format!("{t} {bits:016x}\n"))
            .collect();
        assert_eq!(text, want, "decode of {}", c.labels);
        let input: String = c
            .samples
            .iter()
            .map(|(t, bits)| format!("{t} 0x{bits:016x}\n"))
            .collect();
        let bytes = run(&["chunk", "encode"], input.as_bytes());
        assert_eq!(bytes, c.chunk, "encode of {}", c.labels);
    }
}

#[test]
fn chunk_encode_refuses_out_of_order_input_with_the_line_number() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["chunk", "encode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"2000 1\n1000 2\n")?;
            c.wait_with_output()
        })
        .expect("run weft chunk encode");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains('2'), "stderr should name line 2: {err}");
}

#[test]
fn config_file_sets_serve_flags_and_the_command_line_overrides_it() {
    let dir = std::env::temp_dir().join(format!("weft-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("weft.conf");
    std::fs::write(
        &conf,
        "# a tiny series limit, so the test can see the file was read\n\
         limits.max-series-per-tenant = 1\n\
         limits.max-label-names-per-series = \"2\"\n",
    )
    .unwrap();
    // The command line raises the label-name limit back; the file's series limit stays.
    let weft = Weft::start(&[
        "--config.file",
        conf.to_str().unwrap(),
        "--limits.max-label-names-per-series",
        "5",
    ]);
    let t = now_ms();
    let series = |name: &str| -> Labels {
        vec![
            ("__name__".into(), name.into()),
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
        ]
    };
    let req = |name: &str| weft::proto::prompb::WriteRequest {
        timeseries: vec![series_proto(&series(name), &[(t, 1f64.to_bits())])],
        metadata: vec![],
    };
    // Three labels pass: the command line's 5 overrode the file's 2.
    weft.push_ok("cfg", &req("first"));
    // A second series breaks the file's limit of 1 series.
    let r = weft.push("cfg", &req("second"));
    assert_eq!(r.status, 429, "{}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_report_wal_appends_and_syncs_of_acknowledged_pushes() {
    let weft = Weft::start(&[]);
    let t = now_ms();
    for k in 0..3 {
        let labels: Labels = vec![("__name__".into(), "wal_metric_test".into())];
        weft.push_ok(
            "m",
            &weft::proto::prompb::WriteRequest {
                timeseries: vec![series_proto(&labels, &[(t + k, 1f64.to_bits())])],
                metadata: vec![],
            },
        );
    }
    let appends = weft.metric("weft_wal_appends_total", &[]).unwrap_or(0.0);
    let syncs = weft.metric("weft_wal_syncs_total", &[]).unwrap_or(0.0);
    assert!(appends >= 3.0, "weft_wal_appends_total = {appends}");
    assert!(syncs >= 1.0, "weft_wal_syncs_total = {syncs}");
    assert_eq!(weft.metric("weft_wal_poisoned", &[]), Some(0.0));
}

#[test]
fn inspect_object_lists_series_and_chunks_and_refuses_a_corrupt_object() {
    use weft::store::object::{ChunkData, ObjectBuilder};
    let Some(chunks) = testdata::load() else {
        return;
    };
    let mut b = ObjectBuilder::new();
    let mut samples = 0usize;
    for (i, c) in chunks.iter().take(20).enumerate() {
        let name = format!("s{i:02}");
        let labels =
            weft::model::Labels::from_strs([("__name__", "inspect_test"), ("i", name.as_str())])
                .unwrap();
        let (min_t, max_t) = (c.samples[0].0, c.samples[c.samples.len() - 1].0);
        b.add_series(
            &labels,
            &[ChunkData {
                min_t,
                max_t,
                data: &c.chunk,
                encoding: weft::store::object::ENCODING_XOR,
            }],
        )
        .unwrap();
        samples += c.samples.len();
    }
    let obj = b.finish().unwrap();
    let dir = std::env::temp_dir().join(format!("weft-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("object");
    std::fs::write(&file, &obj.bytes).unwrap();
    let out = String::from_utf8(run(&["inspect", "object", file.to_str().unwrap()], b"")).unwrap();
    assert!(
        out.contains(&format!(
            "total: 20 series, 20 chunks, {samples} samples, 0 bad chunks"
        )),
        "{out}"
    );
    assert!(out.contains(r#"series inspect_test{i="s07"}"#), "{out}");

    // One flipped byte inside the chunk data: the object is refused, with a reason.
    let mut bad = obj.bytes.to_vec();
    bad[40] ^= 0x55;
    std::fs::write(&file, &bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["inspect", "object", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a corrupt object was accepted");
    assert!(!out.stderr.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_spill_lists_the_records_of_a_spill_directory() {
    let dir = std::env::temp_dir().join(format!("weft-inspect-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spill = weft::spill::Spill::open(weft::spill::SpillConfig {
        dir: dir.clone(),
        file_size: weft::spill::MIN_FILE_SIZE_BYTES,
    })
    .unwrap();
    let chunk = weft::chunk::encode([(1_000, 1.0), (2_000, 2.0)]);
    spill.write(4242, 1_000, 2_000, &chunk).unwrap();
    spill.write(4243, 3_000, 3_000, &chunk).unwrap();
    spill.sync().unwrap();
    drop(spill);
    let out = String::from_utf8(run(&["inspect", "spill", dir.to_str().unwrap()], b"")).unwrap();
    assert!(out.contains("spill-"), "{out}");
    assert!(out.contains("header ok"), "{out}");
    assert!(out.contains("4242") && out.contains("4243"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
