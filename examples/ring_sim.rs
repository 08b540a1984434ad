//! The ring, simulated with the real code: `Ring`, `tokens::generate` and `series_token`.
//!
//! 100 instances with 128 tokens each join one after another; 10,000,000 realistic series
//! (tenants `t0`..`t9`, about 200 metric names, `instance`, `job` and `pod` labels) are
//! hashed onto the ring. Reports, for the generated tokens and for random tokens:
//! busiest / mean and least / mean of series per instance as primary owner and as one of
//! 3 replicas, the share of series whose replica set (and whose primary) changes when a
//! 101st instance joins and when one of the 100 leaves, and the time of one
//! `write_replicas`.
//!
//! ```text
//! cargo run --release --example ring_sim                      # 10 M series, 100 × 128
//! cargo run --release --example ring_sim -- 1000000 20 128    # series, instances, tokens
//! WEFT_SIM_SEED=7 cargo run --release --example ring_sim      # another seed
//! WEFT_SIM_ZONES=3 cargo run --release --example ring_sim     # instance i in zone i mod 3
//! ```

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weft::ring::hash::series_token;
use weft::ring::tokens::generate_in_zone;
use weft::ring::{InstanceDesc, InstanceState, Ring};

const RF: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> usize {
        args.get(i)
            .map(|a| {
                a.replace('_', "")
                    .parse()
                    .expect("arguments: [series] [instances] [tokens]")
            })
            .unwrap_or(default)
    };
    let series = arg(0, 10_000_000);
    let instances = arg(1, 100);
    let tokens = arg(2, 128);
    let seed: u64 = match std::env::var("WEFT_SIM_SEED") {
        Ok(s) => s.parse().expect("WEFT_SIM_SEED: a u64"),
        Err(_) => rand::random(),
    };
    println!(
        "ring_sim: {series} series, {instances} instances x {tokens} tokens, rf {RF}, seed {seed} (WEFT_SIM_SEED={seed} repeats it), zones: {}",
        std::env::var("WEFT_SIM_ZONES").unwrap_or_else(|_| "none".into())
    );

    let t0 = Instant::now();
    let hashes = series_tokens(series, seed);
    println!(
        "hashed {series} series in {:.2} s ({:.0} ns per series); token uniformity over 1024 buckets: chi2 {:.0} (1023 degrees of freedom; p = 0.001 at 1168)",
        t0.elapsed().as_secs_f64(),
        t0.elapsed().as_nanos() as f64 / series as f64,
        chi_square(&hashes, 1024)
    );

    for kind in [Kind::Generated, Kind::Random] {
        let t0 = Instant::now();
        let (ring, joiner, pick_ms) = build(kind, instances, tokens, seed);
        let build_s = t0.elapsed().as_secs_f64();
        println!(
            "\n== {} tokens (ring built in {build_s:.2} s; the tokens of instance {} in {pick_ms:.0} ms) ==",
            kind.name(),
            instances + 1
        );
        if std::env::var_os("WEFT_SIM_VERBOSE").is_some() {
            let (p, r) = (ring.ownership(), ring.replica_ownership(RF));
            for (i, inst) in ring.instances().iter().enumerate() {
                println!(
                    "{} primary {:.3} rf{RF} {:.3}",
                    inst.id,
                    p[i] * instances as f64,
                    r[i] * instances as f64 / RF as f64
                );
            }
        }
        let r = report(&ring, &hashes, kind, seed, joiner);
        r.print(instances);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Generated,
    Random,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Generated => "generated (tokens::generate)",
            Kind::Random => "random",
        }
    }
}

/// `WEFT_SIM_ZONES=z`: instance i is in zone `zone-{i mod z}` (default: no zones).
fn zone_of(i: usize) -> String {
    match std::env::var("WEFT_SIM_ZONES")
        .ok()
        .and_then(|z| z.parse::<usize>().ok())
    {
        Some(z) if z > 0 => format!("zone-{}", i % z),
        _ => String::new(),
    }
}

fn inst(i: usize, tokens: Vec<u32>) -> InstanceDesc {
    InstanceDesc {
        id: format!("ingester-{i:03}"),
        addr: format!("10.0.{}.{}:9090", i / 250, i % 250),
        zone: zone_of(i),
        state: InstanceState::Active,
        tokens,
        registered_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn tokens_for(kind: Kind, i: usize, n: usize, ring: &Ring, seed: u64) -> Vec<u32> {
    match kind {
        Kind::Generated => generate_in_zone(n, ring, seed, RF, &zone_of(i)),
        Kind::Random => {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut out: Vec<u32> = Vec::with_capacity(n);
            while out.len() < n {
                let t: u32 = rng.random();
                if ring.tokens().binary_search(&t).is_err() && !out.contains(&t) {
                    out.push(t);
                }
            }
            out.sort_unstable();
            out
        }
    }
}

/// The ring of `count` instances joining one at a time, and the tokens of one more.
fn build(kind: Kind, count: usize, n: usize, seed: u64) -> (Ring, InstanceDesc, f64) {
    let mut insts = Vec::with_capacity(count);
    let mut ring = Ring::default();
    for i in 0..count {
        let t = tokens_for(
            kind,
            i,
            n,
            &ring,
            seed.wrapping_mul(1000).wrapping_add(i as u64),
        );
        insts.push(inst(i, t));
        ring = Ring::new(insts.clone());
    }
    let t0 = Instant::now();
    let t = tokens_for(
        kind,
        count,
        n,
        &ring,
        seed.wrapping_mul(1000).wrapping_add(count as u64),
    );
    let pick_ms = t0.elapsed().as_secs_f64() * 1000.0;
    (ring, inst(count, t), pick_ms)
}

/// The tokens of `count` realistic series.
fn series_tokens(count: usize, seed: u64) -> Vec<u32> {
    const PREFIXES: [&str; 20] = [
        "http_requests",
        "http_request_duration_seconds",
        "grpc_server_handled",
        "node_cpu_seconds",
        "node_memory",
        "node_network_receive_bytes",
        "node_disk_io_time_seconds",
        "process_resident_memory_bytes",
        "go_gc_duration_seconds",
        "go_goroutines",
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "kube_pod_status_phase",
        "kube_deployment_replicas",
        "apiserver_request",
        "etcd_disk_wal_fsync_duration_seconds",
        "prometheus_tsdb_head_series",
        "up",
        "scrape_duration_seconds",
        "rpc_latency_seconds",
    ];
    const SUFFIXES: [&str; 10] = [
        "_total", "_bucket", "_sum", "_count", "", "_info", "_created", "_max", "_min", "_ratio",
    ];
    const JOBS: [&str; 20] = [
        "api",
        "web",
        "node-exporter",
        "kubelet",
        "cadvisor",
        "etcd",
        "ingress",
        "auth",
        "billing",
        "search",
        "queue",
        "cache",
        "db",
        "mailer",
        "scheduler",
        "gateway",
        "payments",
        "ledger",
        "frontend",
        "backend",
    ];
    let metrics: Vec<String> = PREFIXES
        .iter()
        .flat_map(|p| SUFFIXES.iter().map(move |s| format!("{p}{s}")))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    // Per target: a pod name with a random ReplicaSet hash and pod suffix, as Kubernetes
    // names them; targets are many, each exposing every metric (one series per metric).
    let targets = count.div_ceil(metrics.len());
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = Vec::with_capacity(count);
    let mut instance = String::new();
    let mut pod = String::new();
    for target in 0..targets {
        let tenant = format!("t{}", target % 10);
        let job = JOBS[(target / 10) % JOBS.len()];
        instance.clear();
        instance.push_str(&format!(
            "10.{}.{}.{}:{}",
            (target >> 16) & 255,
            (target >> 8) & 255,
            target & 255,
            9100 + (target % 7)
        ));
        pod.clear();
        pod.push_str(job);
        pod.push('-');
        for _ in 0..10 {
            pod.push(alphabet[rng.random_range(0..alphabet.len())] as char);
        }
        pod.push('-');
        for _ in 0..5 {
            pod.push(alphabet[rng.random_range(0..alphabet.len())] as char);
        }
        for m in &metrics {
            if out.len() == count {
                break;
            }
            let pairs: [(&[u8], &[u8]); 4] = [
                (b"__name__", m.as_bytes()),
                (b"instance", instance.as_bytes()),
                (b"job", job.as_bytes()),
                (b"pod", pod.as_bytes()),
            ];
            out.push(series_token(&tenant, &pairs));
        }
    }
    out
}

fn chi_square(hashes: &[u32], buckets: usize) -> f64 {
    let mut counts = vec![0u64; buckets];
    let shift = 32 - buckets.trailing_zeros();
    for &h in hashes {
        counts[(h >> shift) as usize] += 1;
    }
    let expected = hashes.len() as f64 / buckets as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

struct Report {
    primary: (f64, f64),
    replica: (f64, f64),
    owned_primary: (f64, f64),
    owned_replica: (f64, f64),
    join_moved: (f64, f64),
    joined_owned: (f64, f64),
    leave_moved: (f64, f64),
    ns_per_lookup: f64,
}

impl Report {
    fn print(&self, n: usize) {
        println!(
            "series per instance, primary:      busiest/mean {:.3}  least/mean {:.3}",
            self.primary.0, self.primary.1
        );
        println!(
            "series per instance, rf {RF} replicas: busiest/mean {:.3}  least/mean {:.3}",
            self.replica.0, self.replica.1
        );
        println!(
            "token space (Ring::ownership / replica_ownership): primary {:.3}/{:.3}, rf {RF} {:.3}/{:.3}",
            self.owned_primary.0, self.owned_primary.1, self.owned_replica.0, self.owned_replica.1
        );
        println!(
            "join of instance {}: replica set changed {:.4} (rf/(N+1) = {:.4}), primary changed {:.4} (1/(N+1) = {:.4})",
            n + 1,
            self.join_moved.0,
            RF as f64 / (n + 1) as f64,
            self.join_moved.1,
            1.0 / (n + 1) as f64
        );
        println!(
            "after the join, token space busiest/mean: primary {:.3}, rf {RF} {:.3}",
            self.joined_owned.0, self.joined_owned.1
        );
        println!(
            "leave of one of {n}:   replica set changed {:.4} (rf/N = {:.4}),     primary changed {:.4} (1/N = {:.4})",
            self.leave_moved.0,
            RF as f64 / n as f64,
            self.leave_moved.1,
            1.0 / n as f64
        );
        println!(
            "write_replicas (rf {RF}): {:.0} ns per series",
            self.ns_per_lookup
        );
    }
}

fn max_min_over_mean(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    (max / mean, min / mean)
}

/// Share of series whose replica set, and whose primary, differ between the two rings
/// (instances compared by id).
fn moved(before: &Ring, after: &Ring, hashes: &[u32]) -> (f64, f64) {
    let ids = |r: &Ring, set: &[usize], out: &mut Vec<u32>| {
        out.clear();
        // Instance ids are `ingester-NNN`: the number names them across rings.
        out.extend(
            set.iter()
                .map(|&i| r.instances()[i].id[9..].parse::<u32>().unwrap()),
        );
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ia, mut ib) = (Vec::new(), Vec::new());
    let (mut set_changed, mut primary_changed) = (0u64, 0u64);
    for &h in hashes {
        before.write_replicas(h, RF, &mut a);
        after.write_replicas(h, RF, &mut b);
        ids(before, &a, &mut ia);
        ids(after, &b, &mut ib);
        if ia[0] != ib[0] {
            primary_changed += 1;
        }
        ia.sort_unstable();
        ib.sort_unstable();
        if ia != ib {
            set_changed += 1;
        }
    }
    let n = hashes.len() as f64;
    (set_changed as f64 / n, primary_changed as f64 / n)
}

fn report(ring: &Ring, hashes: &[u32], _kind: Kind, seed: u64, joiner: InstanceDesc) -> Report {
    let count = ring.instances().len();
    let mut primary = vec![0f64; count];
    let mut replica = vec![0f64; count];
    let mut set = Vec::with_capacity(RF);
    let t0 = Instant::now();
    for &h in hashes {
        ring.write_replicas(h, RF, &mut set);
        primary[set[0]] += 1.0;
        for &o in &set {
            replica[o] += 1.0;
        }
    }
    let ns_per_lookup = t0.elapsed().as_nanos() as f64 / hashes.len() as f64;

    let mut joined: Vec<InstanceDesc> = ring.instances().to_vec();
    joined.push(joiner);
    let joined = Ring::new(joined);

    let leaver = (seed % count as u64) as usize;
    let mut left: Vec<InstanceDesc> = ring.instances().to_vec();
    left.remove(leaver);
    let left = Ring::new(left);

    Report {
        primary: max_min_over_mean(&primary),
        replica: max_min_over_mean(&replica),
        owned_primary: max_min_over_mean(&ring.ownership()),
        owned_replica: max_min_over_mean(&ring.replica_ownership(RF)),
        join_moved: moved(ring, &joined, hashes),
        joined_owned: (
            max_min_over_mean(&joined.ownership()).0,
            max_min_over_mean(&joined.replica_ownership(RF)).0,
        ),
        leave_moved: moved(ring, &left, hashes),
        ns_per_lookup,
    }
}
