//! The object-storage tier: the object format, the backends, and the machinery that keeps
//! weft working while the store does not.
//!
//! - [`object`]: the byte format of one flushed object (header, chunks, index, footer), its
//!   validating decoder, and the object keys `<prefix>/<tenant>/chunks/<min_t>-<max_t>-<ingester>-<seq>`.
//! - [`backend`]: `file://`, `memory://`, `s3://`, `gs://`, `az://` through `object_store`,
//!   with its client timeouts and retries set explicitly, and [`Store`], the one door every
//!   call goes through: weft's own deadline, bounded in-flight calls, bounded reads and
//!   listings.
//! - [`retry`]: backoff with full jitter that never gives up, and the circuit breaker.
//! - [`health`]: read and write health apart ([`StoreHealth`](health::StoreHealth), behind
//!   `weft_store_up{op="read"|"write"}`), and the probe that finds the end of a read outage.
//! - [`faulty`]: an `ObjectStore` wrapper that injects scripted failures, latency and hangs,
//!   for tests.
//!
//! **Invariant:** `store` knows nothing about HTTP.
//!
//! A round trip through an in-memory store:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use weft::model::{Labels, TenantId};
//! use weft::store::object::{decode_object, ChunkData, ObjectBuilder, ObjectKey, ENCODING_XOR};
//! use weft::store::{Store, StoreOptions};
//!
//! let store = Store::open("memory://", &StoreOptions::default()).unwrap();
//! let labels = Labels::from_strs([("__name__", "up"), ("job", "node")]).unwrap();
//! let chunk = [0u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // any bytes: the format does not look inside
//! let mut builder = ObjectBuilder::new();
//! let chunks = [ChunkData { min_t: 1_000, max_t: 2_000, data: &chunk, encoding: ENCODING_XOR }];
//! builder.add_series(&labels, &chunks).unwrap();
//! let object = builder.finish().unwrap();
//!
//! let key = ObjectKey::new(TenantId::parse("team-a").unwrap(), object.min_t, object.max_t, "ing-1", 7).unwrap();
//! let path = key.to_path(store.prefix());
//! store.put(&path, object.bytes.clone()).await.unwrap();
//! let back = store.get(&path).await.unwrap();
//! let index = decode_object(&back).unwrap();
//! assert_eq!(index.series[0].labels, labels);
//! # });
//! ```

pub mod backend;
pub mod cache;
pub mod catalog;
pub mod faulty;
pub mod health;
pub mod marker;
pub mod object;
pub mod retry;

use std::time::Duration;

use thiserror::Error;

pub use backend::{open_store, Store, StoreOptions};
pub use cache::{CacheKind, CacheStats, ObjectCache};
pub use catalog::{Catalog, CatalogConfig, RemoteChunk, StoreSelection, StoreSeries};

/// Everything that can go wrong in the store tier.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL is malformed or names an unsupported scheme.
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend could not be configured (bad credentials setting, unknown option...).
    #[error("cannot configure store {url:?}: {source}")]
    Config {
        /// The URL as given.
        url: String,
        /// object_store's reason.
        #[source]
        source: object_store::Error,
    },
    /// The object does not exist.
    #[error("object {path} not found")]
    NotFound {
        /// Its path.
        path: String,
    },
    /// weft's own deadline (`--store.timeout`) passed before the call finished.
    #[error("store {op} of {path} did not finish within {after:?}")]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// The path or prefix it was about.
        path: String,
        /// The deadline.
        after: Duration,
    },
    /// A read got no response (no first byte) within `--store.read-first-byte-timeout`.
    /// Strong evidence of a sick store on its own: it marks reads down at once.
    #[error("store {op} of {path} got no first byte within {after:?}")]
    FirstByteTimeout {
        /// Which operation.
        op: &'static str,
        /// The path or prefix it was about.
        path: String,
        /// The first-byte deadline.
        after: Duration,
    },
    /// Store reads count as down: the call was not made (or was abandoned), so a query
    /// answers from local tiers at once. A probe finds the recovery.
    #[error("store reads are down; not waiting on the store until a probe succeeds")]
    ReadsDown,
    /// The backend failed (network, server error, permission...).
    #[error("store {op} of {path} failed: {source}")]
    Backend {
        /// Which operation.
        op: &'static str,
        /// The path or prefix it was about.
        path: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object, or a range of one, is larger than weft accepts.
    #[error("{what} is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Stored bytes fail validation: bad magic, CRC mismatch, out-of-range offsets...
    #[error("corrupt object: {0}")]
    Corrupt(String),
    /// An object key that is not one of weft's.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The same retryable failure, reported again for another chunk of one failed read.
    #[error("{0}")]
    Repeated(String),
    /// The caller asked for something the format cannot hold.
    #[error("invalid object input: {0}")]
    InvalidInput(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed: timeouts, backend failures, and
    /// reads refused while reads are down.
    ///
    /// NotFound, corruption and bad input are answers, not outages; the circuit breaker
    /// counts only retryable errors as failures of the store.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Timeout { .. }
            | StoreError::FirstByteTimeout { .. }
            | StoreError::ReadsDown
            | StoreError::Repeated(_) => true,
            StoreError::Backend { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
            ),
            _ => false,
        }
    }
}
