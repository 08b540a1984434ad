//! Store health, reads and writes apart, and the probe that finds the end of a read outage.
//!
//! A store can fail one way and not the other: on 28 Feb 2017 S3 answered GETs again hours
//! before PUTs. So weft keeps two [`CircuitBreaker`]s ([`StoreHealth`]):
//!
//! - **write** (uploads, the flusher): opens after `--store.circuit-failures` failed uploads
//!   in a row; an upload outstanding past `--store.timeout` is cancelled by that deadline
//!   and counts as a failure at that moment. The flusher waits for its probe slot and its
//!   own upload is the probe, so writes recover by themselves.
//! - **read** (index and chunk reads, the catalog's listing): a read with no first byte
//!   within `--store.read-first-byte-timeout` opens it at once
//!   ([`CircuitBreaker::trip`]); other retryable errors count toward
//!   `--store.circuit-failures`. While it is open the catalog does not call the store at
//!   all (`StoreError::ReadsDown`), so queries answer from local tiers at once. Nothing on
//!   the query path waits for a probe slot, so [`run_read_probe`] probes: every
//!   `--store.circuit-probe-interval` a cheap listing ([`Store::probe`]) under the
//!   first-byte deadline; the first that answers closes the circuit.
//!
//! `weft_store_up{op="read"|"write"}` follows each breaker the moment it changes
//! ([`StoreHealth::with_observer`]).

use std::sync::Arc;

use super::retry::{CircuitBreaker, CircuitConfig, CircuitState};
use super::Store;

/// The `op` label values of `weft_store_up`.
pub const READ: &str = "read";
/// See [`READ`].
pub const WRITE: &str = "write";

/// One breaker for store reads, one for store writes. Cheap to clone (shared breakers).
#[derive(Debug, Clone)]
pub struct StoreHealth {
    /// Reads: object indexes, chunks, the catalog's listing, the read probe.
    pub read: Arc<CircuitBreaker>,
    /// Writes: uploads.
    pub write: Arc<CircuitBreaker>,
}

impl StoreHealth {
    /// Both closed, with the same settings.
    pub fn new(cfg: CircuitConfig) -> Self {
        Self {
            read: Arc::new(CircuitBreaker::new(cfg)),
            write: Arc::new(CircuitBreaker::new(cfg)),
        }
    }

    /// Both closed; `f(op, up)` is told each change, `op` being [`READ`] or [`WRITE`]
    /// (main.rs sets `weft_store_up{op}` with it).
    pub fn with_observer(
        cfg: CircuitConfig,
        f: impl Fn(&'static str, bool) + Send + Sync + 'static,
    ) -> Self {
        let f = Arc::new(f);
        let (fr, fw) = (Arc::clone(&f), f);
        Self {
            read: Arc::new(CircuitBreaker::new(cfg).with_observer(move |up| fr(READ, up))),
            write: Arc::new(CircuitBreaker::new(cfg).with_observer(move |up| fw(WRITE, up))),
        }
    }

    /// Whether reads count as up (their circuit is closed).
    pub fn read_up(&self) -> bool {
        self.read.state() == CircuitState::Closed
    }

    /// Whether writes count as up (their circuit is closed).
    pub fn write_up(&self) -> bool {
        self.write.state() == CircuitState::Closed
    }
}

/// Probes reads back up, forever (spawn it; cancel by aborting the task). Idle while reads
/// are up. While they are down, each time `breaker` lets a probe through (every probe
/// interval) it calls [`Store::probe`] with a deadline of at most the store's first-byte
/// timeout, and reports the outcome: an answer closes the circuit, a failure keeps it open
/// until the next interval. One probe at a time, however long the outage.
pub async fn run_read_probe(store: Store, breaker: Arc<CircuitBreaker>) {
    // A store that answers at all answers a listing's first page quickly; waiting longer
    // would only delay the next probe.
    let store = store.with_timeout(store.timeout().min(store.read_first_byte_timeout()));
    loop {
        breaker.until_down().await;
        match breaker.try_call() {
            // Not yet the probe's turn, or somebody else (the catalog's loader) probes.
            Err(wait) => tokio::time::sleep(wait).await,
            // Closed again meanwhile (a read succeeded): nothing to probe.
            Ok(guard) if !guard.is_probe() => drop(guard),
            Ok(guard) => {
                let r = store.probe().await;
                match &r {
                    Ok(()) => tracing::info!("store read probe answered; reads are up"),
                    Err(e) => tracing::debug!(error = %e, "store read probe failed"),
                }
                guard.finish(&r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use tokio::time::Instant;

    use super::*;
    use crate::store::faulty::{Fault, FaultyStore, Op};
    use crate::store::StoreOptions;

    const INTERVAL: Duration = Duration::from_secs(5);

    fn cfg() -> CircuitConfig {
        CircuitConfig {
            failure_threshold: 3,
            probe_interval: INTERVAL,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_each_change_of_each_breaker_once() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let h = {
            let seen = seen.clone();
            StoreHealth::with_observer(cfg(), move |op, up| seen.lock().push((op, up)))
        };
        h.read.trip();
        h.read.trip();
        for _ in 0..3 {
            h.write.record_failure();
        }
        assert!(!h.read_up() && !h.write_up());
        h.read.record_success();
        h.read.record_success();
        assert!(h.read_up() && !h.write_up());
        assert_eq!(
            *seen.lock(),
            [(READ, false), (WRITE, false), (READ, true)],
            "one report per change, labelled by op"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_brings_reads_back_after_the_store_recovers() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout: Duration::from_secs(10),
            read_first_byte_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::from("weft"), &opts);
        let health = StoreHealth::new(cfg());
        let probe = tokio::spawn(run_read_probe(store, health.read.clone()));

        // Idle while reads are up: no store call at all.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(faulty.calls(Op::List), 0);

        faulty.set(&Op::READS, Some(Fault::Hang));
        let down_at = Instant::now();
        health.read.trip();
        // A probe an interval after the last one ended, each cut at the first-byte
        // deadline: at 5 s, 11 s, 17 s.
        tokio::time::sleep(INTERVAL * 4 + Duration::from_millis(500)).await;
        assert_eq!(faulty.calls(Op::List), 3, "a probe every interval");
        assert!(!health.read_up());

        faulty.set(&Op::READS, None);
        let recovered_at = Instant::now();
        while !health.read_up() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                recovered_at.elapsed() <= INTERVAL + Duration::from_secs(1),
                "reads still down {:?} after the store recovered",
                recovered_at.elapsed()
            );
        }
        assert_eq!(faulty.calls(Op::List), 4);
        assert!(down_at.elapsed() <= INTERVAL * 5 + Duration::from_secs(1));
        // Up again: the probe goes quiet.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(faulty.calls(Op::List), 4);
        probe.abort();
    }

    /// `weft_store_up{op="read"}` and `{op="write"}` as exposed.
    fn exposed(metrics: &crate::metrics::Metrics) -> (String, String) {
        let text = metrics.encode();
        let value = |op: &str| {
            let prefix = format!("weft_store_up{{op=\"{op}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_owned()
        };
        (value(READ), value(WRITE))
    }

    /// Reads and writes fail apart, and `weft_store_up` says which: reads down while
    /// uploads work, then GETs back while PUTs still fail (as on 28 Feb 2017).
    #[tokio::test(start_paused = true)]
    async fn reads_and_writes_are_up_and_down_apart() {
        use crate::model::{Labels, TenantId};
        use crate::store::catalog::{Catalog, CatalogConfig};
        use crate::store::object::{ChunkData, ObjectBuilder, ObjectKey};
        use crate::store::retry::{retry, Backoff, BackoffConfig};
        use bytes::Bytes;

        let metrics = Arc::new(crate::metrics::Metrics::new());
        assert_eq!(exposed(&metrics), ("1".into(), "1".into()));
        let health = {
            let metrics = metrics.clone();
            StoreHealth::with_observer(cfg(), move |op, up| metrics.set_store_up(op, up))
        };
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let store = Store::new(faulty.clone(), Path::from("weft"), &StoreOptions::default());
        let catalog = Catalog::new(
            store.clone(),
            health.read.clone(),
            CatalogConfig {
                cache_bytes: 0,
                ..CatalogConfig::default()
            },
        );
        let tenant = TenantId::parse("a").unwrap();
        let object = |seq: u64| {
            let mut b = ObjectBuilder::new();
            let labels = Labels::from_strs([("__name__", "x")]).unwrap();
            b.add_series(
                &labels,
                &[ChunkData {
                    min_t: 0,
                    max_t: 10,
                    data: &[1, 2, 3],
                    encoding: crate::store::object::ENCODING_XOR,
                }],
            )
            .unwrap();
            let o = b.finish().unwrap();
            let key = ObjectKey::new(tenant.clone(), o.min_t, o.max_t, "ing-1", seq).unwrap();
            (key.to_path(store.prefix()), o.bytes)
        };
        let upload = |path: Path, bytes: Bytes| {
            let (store, write) = (store.clone(), health.write.clone());
            async move {
                let mut backoff = Backoff::new(BackoffConfig::default(), 1);
                retry(&write, &mut backoff, || store.put(&path, bytes.clone())).await
            }
        };
        let (path, bytes) = object(1);
        upload(path, bytes).await.unwrap();
        catalog.load().await.unwrap();
        let select = || {
            catalog.select(
                &tenant,
                &[],
                0,
                10,
                Instant::now() + Duration::from_secs(30),
            )
        };

        // Reads hang, writes work.
        faulty.set(&Op::READS, Some(Fault::Hang));
        assert_eq!(select().await.warnings.len(), 1);
        let (path, bytes) = object(2);
        upload(path, bytes).await.unwrap();
        assert!(!health.read_up() && health.write_up());
        assert_eq!(exposed(&metrics), ("0".into(), "1".into()));

        // GETs come back (the probe finds it), PUTs fail.
        let prober = tokio::spawn(run_read_probe(store.clone(), health.read.clone()));
        faulty.set(&Op::ALL, Some(Fault::Fail));
        faulty.set(&Op::READS, None);
        let (path, bytes) = object(3);
        let stuck = tokio::spawn(upload(path, bytes));
        tokio::time::sleep(INTERVAL * 2).await;
        assert!(health.read_up() && !health.write_up());
        assert_eq!(exposed(&metrics), ("1".into(), "0".into()));
        let sel = select().await;
        assert!(sel.warnings.is_empty(), "{:?}", sel.warnings);
        assert_eq!(sel.series.len(), 1);
        assert!(!stuck.is_finished(), "the upload keeps retrying");

        // PUTs come back: the stuck upload is the write probe, and goes through.
        faulty.set(&[Op::Put], None);
        stuck.await.unwrap().unwrap();
        assert!(health.read_up() && health.write_up());
        assert_eq!(exposed(&metrics), ("1".into(), "1".into()));
        prober.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_probe_keeps_reads_down_and_an_empty_store_counts_as_an_answer() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let store = Store::new(faulty.clone(), Path::from("weft"), &StoreOptions::default());
        let health = StoreHealth::new(cfg());
        let probe = tokio::spawn(run_read_probe(store, health.read.clone()));
        faulty.set(&[Op::List], Some(Fault::Fail));
        health.read.trip();
        tokio::time::sleep(INTERVAL * 2 + Duration::from_millis(1)).await;
        assert_eq!(faulty.calls(Op::List), 2);
        assert!(!health.read_up());
        faulty.set(&[Op::List], None);
        tokio::time::sleep(INTERVAL).await;
        assert!(health.read_up(), "an empty listing is an answer");
        assert!(health.write_up(), "reads alone went down");
        probe.abort();
    }
}
