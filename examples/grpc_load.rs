//! What the `cortex.Ingester` gRPC `Push` costs against the HTTP remote-write push, in the
//! same run: W writer threads push N requests of 1000 series each (the same requests: a
//! gRPC `Push` carries the `WriteRequest` uncompressed, HTTP the snappy body), to a fresh
//! weft each round, HTTP and gRPC alternating, with durable acks (`--wal.sync=always`).
//! Prints the acknowledged samples a second of each round and the ratio of the means.
//!
//! ```sh
//! cargo build --release --bin weft --example grpc_load
//! WEFT_BENCH_SEED=1 target/release/examples/grpc_load target/release/weft 6 100 2
//! ```

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tonic::codegen::http::uri::PathAndQuery;

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/weft".into());
    let writers: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(6);
    let per_writer: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed = common::seed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - (per_writer as i64 + 1) * 15_000;
    let bodies = common::push_bodies(writers, per_writer, seed, t0);
    let raw: Vec<Vec<Vec<u8>>> = bodies
        .iter()
        .map(|w| {
            w.iter()
                .map(|b| weft::proto::decompress(b, 64 << 20).expect("our own snappy"))
                .collect()
        })
        .collect();
    let root = std::env::temp_dir().join(format!("weft-grpc-load-{}", std::process::id()));
    let (mut http_rates, mut grpc_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for use_grpc in [false, true] {
            let dir = root.join(format!("{round}-{use_grpc}"));
            std::fs::create_dir_all(&dir).unwrap();
            let grpc_port = common::free_port();
            let grpc_addr = format!("127.0.0.1:{grpc_port}");
            let (mut child, addr) = common::spawn_weft(
                &bin,
                &[
                    "serve".as_ref(),
                    "--listen".as_ref(),
                    "127.0.0.1:0".as_ref(),
                    "--wal.sync".as_ref(),
                    "always".as_ref(),
                    "--data-dir".as_ref(),
                    dir.as_os_str(),
                    "--grpc.listen".as_ref(),
                    grpc_addr.as_ref(),
                ],
            );
            common::wait_ok(&format!("http://{addr}/ready"));
            let rate = if use_grpc {
                push_grpc(grpc_port, raw.clone())
            } else {
                common::push_all(&[format!("http://{addr}/api/v1/push")], bodies.clone())
            };
            let _ = child.kill();
            let _ = child.wait();
            let what = if use_grpc { "gRPC Push" } else { "HTTP push" };
            println!("round {round}: {what}: samples_per_sec={rate:.0}");
            if use_grpc {
                grpc_rates.push(rate);
            } else {
                http_rates.push(rate);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "grpc/http = {:.2}x (means {:.0} and {:.0} samples/s)",
        mean(&grpc_rates) / mean(&http_rates),
        mean(&grpc_rates),
        mean(&http_rates)
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Pushes every writer's requests over gRPC from its own thread and connection; returns
/// acknowledged samples a second (1000 a request).
fn push_grpc(port: u16, raw: Vec<Vec<Vec<u8>>>) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = raw
        .into_iter()
        .map(|requests| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let channel =
                        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                            .unwrap()
                            .connect()
                            .await
                            .expect("gRPC connect");
                    let mut grpc = tonic::client::Grpc::new(channel);
                    for r in requests {
                        grpc.ready().await.expect("ready");
                        let _: tonic::Response<weft::proto::cortex::WriteResponse> = grpc
                            .unary(
                                tonic::Request::new(weft::proto::cortex::EncodedWriteRequest(r)),
                                PathAndQuery::from_static("/cortex.Ingester/Push"),
                                tonic_prost::ProstCodec::default(),
                            )
                            .await
                            .expect("gRPC Push");
                        acked.fetch_add(1000, Ordering::Relaxed);
                    }
                });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
