//! Opening a store by URL, and [`Store`]: the one door every store call goes through.
//!
//! object_store's HTTP backends retry on their own, and their defaults are written for batch
//! jobs, not for an ingester that must notice an outage quickly: `RetryConfig::default()`
//! is 10 retries within `retry_timeout: 3 * 60 s` (object_store 0.14,
//! `src/client/retry.rs`), and the retry loop does not read `Retry-After`. A single call
//! could therefore block for about three minutes before weft learns the store is down.
//! weft does its own retrying (`store::retry`, backoff that never gives up, plus a circuit
//! breaker), so the client is set to fail fast: at most one quick retry of its own for the
//! transient blips it handles well (a dropped pooled connection), and short timeouts. On
//! top of that, every call runs under weft's own deadline (`--store.timeout`), which also
//! covers what the client's timeouts do not: a server that accepts the connection and then
//! never answers, a local file system that hangs, a slow listing of many pages.
//!
//! Reads (`get`, `get_range`, `get_suffix`, `head`) have a second, shorter deadline for the
//! time until the response starts (`--store.read-first-byte-timeout`, 1s): object_store's
//! `get_opts` returns when the response headers arrive, and the body is then read under what
//! is left of the call's deadline. A healthy store starts answering in milliseconds even
//! when the body is large, so a read with no first byte by then says the store is sick, and
//! the caller learns it in one second rather than ten ([`StoreError::FirstByteTimeout`]).

use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use tokio::sync::Semaphore;

use super::object::{
    self, decode_footer, decode_index, verify_chunk, ChunkMeta, ObjectIndex, FOOTER_LEN,
};
use super::StoreError;

/// How to talk to the store. Every field has a default chosen for an ingester; see
/// [`StoreOptions::default`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// weft's own deadline for one store call, waiting for an in-flight slot included
    /// (`--store.timeout`).
    pub timeout: Duration,
    /// TCP + TLS connect timeout of the HTTP client.
    pub connect_timeout: Duration,
    /// Whole-request timeout of the HTTP client. Kept at or below `timeout` so the client
    /// gives up first and reports why.
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept. Below the idle timeouts of common load
    /// balancers, so weft does not send a request down a connection the far end has closed.
    pub pool_idle_timeout: Duration,
    /// Retries object_store itself may make per request (weft retries on top).
    pub client_max_retries: usize,
    /// object_store's bound on the time spent in its own retries.
    pub client_retry_timeout: Duration,
    /// Deadline for a read's response to start (`--store.read-first-byte-timeout`), apart
    /// from the time to read its body. Not applied when it is not shorter than `timeout`.
    pub read_first_byte_timeout: Duration,
    /// Most store calls in flight at once; more wait (within their deadline).
    pub max_in_flight: usize,
    /// Largest object `get`, `put` or a range accepts.
    pub max_object_bytes: u64,
    /// Most entries one [`Store::list`] page returns.
    pub max_list_entries: usize,
    /// Backend settings applied after the environment, as object_store config keys
    /// (`aws_endpoint`, `aws_allow_http`, `google_service_account`, ...). Tests use this
    /// rather than changing the process environment, which is shared by parallel tests.
    pub config: Vec<(String, String)>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(9),
            pool_idle_timeout: Duration::from_secs(15),
            client_max_retries: 1,
            client_retry_timeout: Duration::from_secs(3),
            read_first_byte_timeout: Duration::from_secs(1),
            max_in_flight: 16,
            max_object_bytes: object::MAX_OBJECT_BYTES,
            max_list_entries: 10_000,
            config: Vec::new(),
        }
    }
}

/// The client options weft uses for every HTTP backend. Set explicitly (rather than
/// relying on object_store's defaults) because the defaults can block for minutes; see the
/// module docs.
fn client_options(opts: &StoreOptions) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(opts.connect_timeout)
        .with_timeout(opts.request_timeout)
        .with_pool_idle_timeout(opts.pool_idle_timeout)
}

/// object_store's own retries: few and short, because weft's `store::retry` loops forever
/// with its own backoff and the circuit breaker needs to see failures promptly.
fn retry_config(opts: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: opts.client_max_retries,
        retry_timeout: opts.client_retry_timeout,
    }
}

/// The process environment's `PREFIX*` variables as lowercase config keys, as object_store's
/// `from_env` reads them.
fn env_config(prefix: &str) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Opens the store a URL names; returns it and the key prefix inside it.
///
/// - `file://PATH`: a directory (relative or absolute: `file:///var/weft/store`,
///   `file://./data/store`), created if missing.
/// - `memory://[PREFIX]`: an in-process store, for tests.
/// - `s3://BUCKET[/PREFIX]`: endpoint, region and credentials from the `AWS_*` variables
///   (`AWS_ENDPOINT` or `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
///   `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for plain http), then
///   [`StoreOptions::config`].
/// - `gs://BUCKET[/PREFIX]`: `GOOGLE_*` variables and `SERVICE_ACCOUNT`.
/// - `az://CONTAINER[/PREFIX]`: `AZURE_*` variables.
///
/// The environment is applied after weft's client options, because object_store's
/// `with_client_options` replaces every client setting, `AWS_ALLOW_HTTP` included: set
/// after `from_env`, it would silently turn plain-http endpoints off.
pub fn open_store(
    url: &str,
    opts: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let config_err = |source| StoreError::Config {
        url: url.to_owned(),
        source,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected SCHEME://..."))?;
    let prefix_of = |p: &str| Path::parse(p.trim_matches('/')).map_err(|e| invalid(&e.to_string()));
    match scheme {
        "file" => {
            if rest.is_empty() {
                return Err(invalid("file:// needs a directory"));
            }
            std::fs::create_dir_all(rest)
                .map_err(|e| invalid(&format!("cannot create {rest}: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(rest).map_err(config_err)?;
            Ok((Arc::new(fs), Path::default()))
        }
        "memory" => Ok((Arc::new(InMemory::new()), prefix_of(rest)?)),
        "s3" | "gs" | "az" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("missing bucket"));
            }
            let prefix = prefix_of(prefix)?;
            let store: Arc<dyn ObjectStore> = match scheme {
                "s3" => {
                    let mut b = AmazonS3Builder::new()
                        .with_client_options(client_options(opts))
                        .with_retry(retry_config(opts));
                    for (k, v) in env_config("AWS_") {
                        if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                            b = b.with_config(key, v);
                        }
                    }
                    for (k, v) in &opts.config {
                        b = b.with_config(k.parse().map_err(config_err)?, v);
                    }
                    Arc::new(b.with_bucket_name(bucket).build().map_err(config_err)?)
                }
                "gs" => {
                    let mut b = GoogleCloudStorageBuilder::new()
                        .with_client_options(client_options(opts))
                        .with_retry(retry_config(opts));
                    if let Ok(path) = std::env::var("SERVICE_ACCOUNT") {
                        b = b.with_service_account_path(path);
                    }
                    for (k, v) in env_config("GOOGLE_") {
                        if let Ok(key) = k.parse::<GoogleConfigKey>() {
                            b = b.with_config(key, v);
                        }
                    }
                    for (k, v) in &opts.config {
                        b = b.with_config(k.parse().map_err(config_err)?, v);
                    }
                    Arc::new(b.with_bucket_name(bucket).build().map_err(config_err)?)
                }
                _ => {
                    let mut b = MicrosoftAzureBuilder::new()
                        .with_client_options(client_options(opts))
                        .with_retry(retry_config(opts));
                    for (k, v) in env_config("AZURE_") {
                        if let Ok(key) = k.parse::<AzureConfigKey>() {
                            b = b.with_config(key, v);
                        }
                    }
                    for (k, v) in &opts.config {
                        b = b.with_config(k.parse().map_err(config_err)?, v);
                    }
                    Arc::new(b.with_container_name(bucket).build().map_err(config_err)?)
                }
            };
            Ok((store, prefix))
        }
        _ => Err(invalid("scheme must be file, memory, s3, gs or az")),
    }
}

/// A store with weft's limits around it: a deadline on every call, bounded calls in
/// flight, bounded object sizes and listing pages. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    timeout: Duration,
    first_byte_timeout: Duration,
    in_flight: Arc<Semaphore>,
    max_object_bytes: u64,
    max_list_entries: usize,
    /// Whether the backend lists in key order. S3, GCS, Azure and the in-memory store do
    /// (S3: "List results are always returned in UTF-8 binary order", ListObjectsV2 docs);
    /// the local file system walks directories in no particular order.
    sorted_listing: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("inner", &format_args!("{}", self.inner))
            .field("prefix", &self.prefix.as_ref())
            .field("timeout", &self.timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Objects, sorted by key.
    pub objects: Vec<ObjectMeta>,
    /// Whether more objects follow the last one; list again with it as `start_after`.
    pub more: bool,
}

impl Store {
    /// Opens a store by URL ([`open_store`]) and wraps it.
    pub fn open(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let (inner, prefix) = open_store(url, opts)?;
        let mut s = Store::new(inner, prefix, opts);
        s.sorted_listing = !url.starts_with("file://");
        Ok(s)
    }

    /// Wraps an already built store (tests wrap a `FaultyStore` this way). Listings are
    /// assumed unsorted, which is always correct, only slower.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: Path, opts: &StoreOptions) -> Store {
        Store {
            inner,
            prefix,
            timeout: opts.timeout,
            first_byte_timeout: opts.read_first_byte_timeout,
            in_flight: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            max_object_bytes: opts.max_object_bytes,
            max_list_entries: opts.max_list_entries.max(1),
            sorted_listing: false,
        }
    }

    /// The same store with another deadline, sharing the in-flight bound. Queries use a
    /// short one while the circuit is half-open. The first-byte deadline stays; it applies
    /// only while shorter than the new deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Store {
        Store {
            timeout,
            ..self.clone()
        }
    }

    /// The key prefix every weft object lives under.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The first-byte deadline of each read.
    pub fn read_first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
    }

    /// The wrapped object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Runs `fut` under the deadline, after taking an in-flight slot (the wait for the slot
    /// counts against the deadline too, so a queue behind a hung store also times out).
    async fn call<T, F>(&self, op: &'static str, path: &Path, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let run = async {
            let _permit = self
                .in_flight
                .acquire()
                .await
                .expect("the semaphore is never closed");
            fut.await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                op,
                path: path.to_string(),
                after: self.timeout,
            }),
        }
    }

    /// Awaits the start of a read's response under the first-byte deadline. Called inside
    /// [`call`](Self::call), so the clock starts once the call has its in-flight slot: a
    /// queue behind busy slots is weft's own, not the store's, and must not mark the store
    /// down. A deadline not shorter than the call's is left to the call (a `Timeout`), so a
    /// call cut short by a query's deadline is never taken for a sick store.
    async fn first_byte<T, F>(&self, op: &'static str, path: &Path, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, object_store::Error>>,
    {
        if self.first_byte_timeout >= self.timeout {
            return fut.await.map_err(|e| map_err(op, path, e));
        }
        match tokio::time::timeout(self.first_byte_timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(op, path, e)),
            Err(_) => Err(StoreError::FirstByteTimeout {
                op,
                path: path.to_string(),
                after: self.first_byte_timeout,
            }),
        }
    }

    fn check_size(&self, what: &'static str, len: u64) -> Result<(), StoreError> {
        if len > self.max_object_bytes {
            return Err(StoreError::TooLarge {
                what,
                len,
                limit: self.max_object_bytes,
            });
        }
        Ok(())
    }

    /// Writes a whole object. object_store's contract: the object is either written
    /// entirely or not at all; an existing object is replaced.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StoreError> {
        self.check_size("object to put", bytes.len() as u64)?;
        self.call("put", path, async {
            self.inner
                .put(path, PutPayload::from(bytes))
                .await
                .map_err(|e| map_err("put", path, e))?;
            Ok(())
        })
        .await
    }

    /// Writes a whole object only if no object exists under `path` (object_store's
    /// `PutMode::Create`: `If-None-Match: *` on S3, a hard link on `file://`, atomic in
    /// `memory://`). `Ok(false)` when one exists already. The compactor's lease is built on
    /// this alone, because `PutMode::Update` is not implemented by `LocalFileSystem`.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool, StoreError> {
        self.check_size("object to put", bytes.len() as u64)?;
        self.call("put", path, async {
            let opts = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            match self
                .inner
                .put_opts(path, PutPayload::from(bytes), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(map_err("put", path, e)),
            }
        })
        .await
    }

    /// Reads a whole object, refusing one over the size limit before reading its body.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        self.call("get", path, async {
            let r = self
                .first_byte(
                    "get",
                    path,
                    self.inner.get_opts(path, GetOptions::default()),
                )
                .await?;
            self.check_size("object", r.meta.size)?;
            let expect = r.meta.size;
            let bytes = r.bytes().await.map_err(|e| map_err("get", path, e))?;
            check_len(path, bytes.len() as u64, expect)?;
            Ok(bytes)
        })
        .await
    }

    /// Reads `range` of an object. A range that ends past the object's end is an error
    /// (object_store would return the shorter remainder).
    pub async fn get_range(&self, path: &Path, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            return Err(StoreError::InvalidInput(format!("empty range {range:?}")));
        }
        self.check_size("range", range.end - range.start)?;
        self.call("get_range", path, async {
            let expect = range.end - range.start;
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            // Headers first (under the first-byte deadline), then the body.
            let r = self
                .first_byte("get_range", path, self.inner.get_opts(path, opts))
                .await?;
            let bytes = r.bytes().await.map_err(|e| map_err("get_range", path, e))?;
            check_len(path, bytes.len() as u64, expect)?;
            Ok(bytes)
        })
        .await
    }

    /// Reads the last `n` bytes of an object and returns them with the object's size: one
    /// request gets a footer and the size it is checked against.
    pub async fn get_suffix(&self, path: &Path, n: u64) -> Result<(Bytes, u64), StoreError> {
        self.check_size("range", n)?;
        self.call("get_range", path, async {
            let opts = GetOptions {
                range: Some(GetRange::Suffix(n)),
                ..Default::default()
            };
            let r = self
                .first_byte("get_range", path, self.inner.get_opts(path, opts))
                .await?;
            let size = r.meta.size;
            let expect = r.range.end.saturating_sub(r.range.start);
            let bytes = r.bytes().await.map_err(|e| map_err("get_range", path, e))?;
            check_len(path, bytes.len() as u64, expect.min(n))?;
            Ok((bytes, size))
        })
        .await
    }

    /// An object's metadata.
    pub async fn head(&self, path: &Path) -> Result<ObjectMeta, StoreError> {
        // A HEAD is all response start: the first-byte deadline covers all of it.
        self.call(
            "head",
            path,
            self.first_byte("head", path, self.inner.head(path)),
        )
        .await
    }

    /// A cheap read that tells whether the store answers reads: the first entry of a
    /// listing of the prefix (one request on S3, GCS and Azure, whose pages are fetched
    /// lazily), under the first-byte deadline. Any answer, an empty listing included, is a
    /// success. For the read probe (`store::health`), which knows no object to HEAD.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let prefix = &self.prefix;
        self.call("probe", prefix, async {
            let mut stream = self.inner.list(Some(prefix));
            let first = self
                .first_byte("probe", prefix, async { stream.next().await.transpose() })
                .await?;
            drop(first);
            Ok(())
        })
        .await
    }

    /// Deletes an object. Deleting a missing object is not an error on every backend
    /// (S3 answers 204 either way), so callers must not rely on NotFound here.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        self.call("delete", path, async {
            self.inner
                .delete(path)
                .await
                .map_err(|e| map_err("delete", path, e))
        })
        .await
    }

    /// One page of the objects under `prefix` (matched by whole path segments), sorted by
    /// key, starting after `start_after`. At most `max_list_entries` objects a page; the
    /// memory held is bounded by that even on a backend that lists unsorted.
    pub async fn list(
        &self,
        prefix: &Path,
        start_after: Option<&Path>,
    ) -> Result<ListPage, StoreError> {
        let limit = self.max_list_entries;
        self.call("list", prefix, async {
            let mut stream = match start_after {
                Some(off) => self.inner.list_with_offset(Some(prefix), off),
                None => self.inner.list(Some(prefix)),
            };
            // A max-heap by key holding the `limit` smallest keys seen.
            let mut heap: BinaryHeap<ByKey> = BinaryHeap::with_capacity(limit.min(1024) + 1);
            let mut more = false;
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| map_err("list", prefix, e))?;
                if let Some(after) = start_after {
                    // The default `list_with_offset` filters, but be sure on every backend.
                    if meta.location <= *after {
                        continue;
                    }
                }
                heap.push(ByKey(meta));
                if heap.len() > limit {
                    heap.pop();
                    more = true;
                    if self.sorted_listing {
                        break;
                    }
                }
            }
            let objects = heap.into_sorted_vec().into_iter().map(|k| k.0).collect();
            Ok(ListPage { objects, more })
        })
        .await
    }

    /// Fetches and validates an object's index with two range GETs: the footer (with the
    /// object size), then the index.
    pub async fn read_index(&self, path: &Path) -> Result<ObjectIndex, StoreError> {
        let (footer, size) = self.get_suffix(path, FOOTER_LEN).await?;
        let footer = decode_footer(&footer, size)?;
        let index = self.get_range(path, footer.index_range()).await?;
        decode_index(&index, &footer)
    }

    /// Fetches one chunk with a range GET and checks its CRC.
    pub async fn read_chunk(&self, path: &Path, meta: &ChunkMeta) -> Result<Bytes, StoreError> {
        let bytes = self.get_range(path, meta.range()).await?;
        verify_chunk(meta, &bytes)?;
        Ok(bytes)
    }
}

/// Orders listing entries by key only.
struct ByKey(ObjectMeta);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.location == other.0.location
    }
}
impl Eq for ByKey {}
impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.location.cmp(&other.0.location)
    }
}

fn check_len(path: &Path, got: u64, expect: u64) -> Result<(), StoreError> {
    if got != expect {
        return Err(StoreError::Corrupt(format!(
            "{path}: read {got} bytes, expected {expect}"
        )));
    }
    Ok(())
}

fn map_err(op: &'static str, path: &Path, e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            path: path.to_string(),
        },
        source => StoreError::Backend {
            op,
            path: path.to_string(),
            source,
        },
    }
}
