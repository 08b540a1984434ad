//! [`FaultyStore`]: an `ObjectStore` wrapper that misbehaves on cue, for tests.
//!
//! Each call is classified as an [`Op`]. Before it reaches the wrapped store it passes a
//! gate that may fail it, delay it, or hang it forever, as the test scripted:
//!
//! - [`FaultyStore::script`]: faults consumed one per call, in order, before anything else;
//! - [`FaultyStore::set`]: a standing fault for some operations until changed (an outage);
//! - [`FaultyStore::set_latency`]: added to every call.
//!
//! "GETs recover before PUTs" is `set(&Op::ALL, Some(Fault::Fail))` then
//! `set(&Op::READS, None)`. Delays and hangs use tokio's clock, so under
//! `#[tokio::test(start_paused = true)]` a test of a 30-second outage takes milliseconds.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use parking_lot::Mutex;

/// The kinds of call a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_opts` and multipart uploads.
    Put,
    /// A whole-object `get_opts`.
    Get,
    /// A ranged `get_opts` (bounded, offset or suffix) and `get_ranges`.
    GetRange,
    /// `get_opts` with `head: true`.
    Head,
    /// `list`, `list_with_offset`, `list_with_delimiter`.
    List,
    /// `delete_stream`.
    Delete,
    /// `copy_opts`, `rename_opts`.
    Copy,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 7] = [
        Op::Put,
        Op::Get,
        Op::GetRange,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::Copy,
    ];
    /// The operations that only read.
    pub const READS: [Op; 4] = [Op::Get, Op::GetRange, Op::Head, Op::List];
}

/// What the gate does to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Fail at once with a generic (retryable) backend error.
    Fail,
    /// Fail at once with NotFound.
    NotFound,
    /// Never complete: the future stays pending until dropped, like a server that accepted
    /// the connection and went silent.
    Hang,
    /// Wait this long, then proceed normally.
    Delay(Duration),
}

#[derive(Debug, Default)]
struct State {
    scripted: HashMap<Op, VecDeque<Fault>>,
    standing: HashMap<Op, Fault>,
    latency: Duration,
    calls: HashMap<Op, u64>,
}

/// Wraps a store and injects faults. Share it as `Arc<FaultyStore>`: one clone goes into
/// the code under test, the test keeps the other to steer it.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &format_args!("{}", self.inner))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    /// A wrapper that, until told otherwise, passes every call through.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// Queues faults for the next calls of `op`, one each, ahead of any standing fault.
    pub fn script(&self, op: Op, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .lock()
            .scripted
            .entry(op)
            .or_default()
            .extend(faults);
    }

    /// Sets (or with `None` clears) the standing fault of each of `ops`.
    pub fn set(&self, ops: &[Op], fault: Option<Fault>) {
        let mut st = self.state.lock();
        for &op in ops {
            match &fault {
                Some(f) => st.standing.insert(op, f.clone()),
                None => st.standing.remove(&op),
            };
        }
    }

    /// Latency added to every call (before its fault, if any).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// Calls of `op` that reached the gate so far, faulted or not.
    pub fn calls(&self, op: Op) -> u64 {
        self.state.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Decides now (so the order of calls decides which scripted fault each gets) and
    /// returns a future that applies the decision.
    fn gate(
        &self,
        op: Op,
        path: Option<&Path>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (fault, latency) = {
            let mut st = self.state.lock();
            *st.calls.entry(op).or_default() += 1;
            let scripted = st.scripted.get_mut(&op).and_then(VecDeque::pop_front);
            (
                scripted.or_else(|| st.standing.get(&op).cloned()),
                st.latency,
            )
        };
        let path = path.map(|p| p.to_string()).unwrap_or_default();
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match fault {
                None => Ok(()),
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::Fail) => Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: format!("injected failure of {op:?} {path}").into(),
                }),
                Some(Fault::NotFound) => Err(object_store::Error::NotFound {
                    path,
                    source: "injected NotFound".into(),
                }),
            }
        }
    }

    /// Gates a stream: the gate runs when the stream is first polled.
    fn gate_stream<T: Send + 'static>(
        &self,
        op: Op,
        path: Option<&Path>,
        inner: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let gate = self.gate(op, path);
        stream::once(async move {
            match gate.await {
                Ok(()) => inner,
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.gate(Op::Put, Some(location)).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.gate(Op::Put, Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head {
            Op::Head
        } else if options.range.is_some() {
            Op::GetRange
        } else {
            Op::Get
        };
        self.gate(op, Some(location)).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.gate(Op::GetRange, Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.delete_stream(locations);
        self.gate_stream(Op::Delete, None, inner)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        self.gate_stream(Op::List, prefix, inner)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        self.gate_stream(Op::List, prefix, inner)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.gate(Op::List, prefix).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.gate(Op::Copy, Some(to)).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.gate(Op::Copy, Some(to)).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use object_store::memory::InMemory;
    use tokio::time::Instant;

    use super::*;
    use crate::store::{Store, StoreError, StoreOptions};

    /// A store whose only deadline is `timeout` (the first-byte deadline is as long, so it
    /// does not apply; `a_read_has_a_first_byte_deadline_apart` tests that one).
    fn setup(timeout: Duration) -> (Arc<FaultyStore>, Store) {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout,
            read_first_byte_timeout: timeout,
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::from("p"), &opts);
        (faulty, store)
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_faults_apply_in_order_then_calls_pass() {
        let (faulty, store) = setup(Duration::from_secs(5));
        let path = Path::from("p/a");
        faulty.script(Op::Put, [Fault::Fail, Fault::NotFound]);
        assert!(matches!(
            store.put(&path, Bytes::from_static(b"x")).await,
            Err(StoreError::Backend { .. })
        ));
        assert!(matches!(
            store.put(&path, Bytes::from_static(b"x")).await,
            Err(StoreError::NotFound { .. })
        ));
        store.put(&path, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(store.get(&path).await.unwrap(), Bytes::from_static(b"x"));
        assert_eq!(faulty.calls(Op::Put), 3);
        assert_eq!(faulty.calls(Op::Get), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hang_is_cut_by_the_deadline_at_exactly_the_timeout() {
        let (faulty, store) = setup(Duration::from_secs(5));
        faulty.set(&Op::ALL, Some(Fault::Hang));
        let start = Instant::now();
        let err = store.get(&Path::from("p/a")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout { op: "get", .. }),
            "{err}"
        );
        assert!(err.is_retryable());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // A hung listing times out the same way.
        let err = store.list(&Path::from("p"), None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout { op: "list", .. }),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_has_a_first_byte_deadline_apart() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout: Duration::from_secs(10),
            read_first_byte_timeout: Duration::from_secs(1),
            max_in_flight: 1,
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::from("p"), &opts);
        let path = Path::from("p/a");
        // Writes have no first-byte deadline: a slow put within the call deadline works.
        faulty.script(Op::Put, [Fault::Delay(Duration::from_secs(3))]);
        store
            .put(&path, Bytes::from_static(b"abcdef"))
            .await
            .unwrap();

        // Each kind of read: a response that starts just in time is read; one that does
        // not start by the first-byte deadline fails then, not at the call deadline.
        type Read =
            fn(&Store, &Path) -> futures::future::BoxFuture<'static, Result<(), StoreError>>;
        let reads: [(Op, &str, Read); 4] = [
            (Op::Get, "get", |s, p| {
                let (s, p) = (s.clone(), p.clone());
                Box::pin(async move { s.get(&p).await.map(drop) })
            }),
            (Op::GetRange, "get_range", |s, p| {
                let (s, p) = (s.clone(), p.clone());
                Box::pin(async move { s.get_range(&p, 1..4).await.map(drop) })
            }),
            (Op::GetRange, "get_range", |s, p| {
                let (s, p) = (s.clone(), p.clone());
                Box::pin(async move { s.get_suffix(&p, 2).await.map(drop) })
            }),
            (Op::Head, "head", |s, p| {
                let (s, p) = (s.clone(), p.clone());
                Box::pin(async move { s.head(&p).await.map(drop) })
            }),
        ];
        for (op, name, read) in reads {
            faulty.script(op, [Fault::Delay(Duration::from_millis(990))]);
            let start = Instant::now();
            read(&store, &path).await.unwrap();
            assert_eq!(start.elapsed(), Duration::from_millis(990), "{name}");

            faulty.script(op, [Fault::Hang]);
            let start = Instant::now();
            let err = read(&store, &path).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::FirstByteTimeout { op, after, .. } if *op == name && *after == Duration::from_secs(1)),
                "{name}: {err}"
            );
            assert!(err.is_retryable());
            assert_eq!(start.elapsed(), Duration::from_secs(1), "{name}");
        }

        // The clock starts with the call's in-flight slot: a read queued behind a slow
        // put waits for the slot within the call deadline, then gets its full second.
        faulty.script(Op::Put, [Fault::Delay(Duration::from_secs(3))]);
        faulty.script(Op::GetRange, [Fault::Delay(Duration::from_millis(900))]);
        let start = Instant::now();
        let (put, read) = tokio::join!(store.put(&path, Bytes::from_static(b"abcdef")), async {
            tokio::task::yield_now().await;
            store.get_range(&path, 0..2).await
        });
        put.unwrap();
        assert_eq!(read.unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(start.elapsed(), Duration::from_millis(3_900));

        // A first-byte deadline not shorter than the call's leaves the call's to speak.
        let same = store.with_timeout(Duration::from_millis(500));
        faulty.script(Op::GetRange, [Fault::Hang]);
        let err = same.get_range(&path, 0..2).await.unwrap_err();
        assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_below_the_deadline_only_delays() {
        let (faulty, store) = setup(Duration::from_secs(5));
        faulty.set_latency(Duration::from_secs(2));
        faulty.script(Op::Put, [Fault::Delay(Duration::from_secs(1))]);
        let start = Instant::now();
        store
            .put(&Path::from("p/a"), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Latency plus a delay past the deadline is a timeout.
        faulty.script(Op::Head, [Fault::Delay(Duration::from_secs(4))]);
        let err = store.head(&Path::from("p/a")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout { op: "head", .. }),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gets_recover_before_puts() {
        let (faulty, store) = setup(Duration::from_secs(5));
        let path = Path::from("p/a");
        store.put(&path, Bytes::from_static(b"old")).await.unwrap();
        faulty.set(&Op::ALL, Some(Fault::Fail));
        assert!(store.get(&path).await.is_err());
        assert!(store.put(&path, Bytes::from_static(b"new")).await.is_err());

        faulty.set(&Op::READS, None);
        assert_eq!(store.get(&path).await.unwrap(), Bytes::from_static(b"old"));
        assert_eq!(
            store.get_range(&path, 1..3).await.unwrap(),
            Bytes::from_static(b"ld")
        );
        assert_eq!(store.head(&path).await.unwrap().size, 3);
        assert_eq!(
            store
                .list(&Path::from("p"), None)
                .await
                .unwrap()
                .objects
                .len(),
            1
        );
        assert!(
            store.put(&path, Bytes::from_static(b"new")).await.is_err(),
            "puts still fail"
        );

        faulty.set(&[Op::Put], None);
        store.put(&path, Bytes::from_static(b"new")).await.unwrap();
        assert_eq!(store.get(&path).await.unwrap(), Bytes::from_static(b"new"));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_queued_behind_a_hung_store_time_out_too() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
        let opts = StoreOptions {
            timeout: Duration::from_secs(5),
            read_first_byte_timeout: Duration::from_secs(5),
            max_in_flight: 1,
            ..StoreOptions::default()
        };
        let store = Store::new(faulty.clone(), Path::from("p"), &opts);
        faulty.script(Op::Get, [Fault::Hang]);
        let start = Instant::now();
        let pa = Path::from("p/a");
        let (a, b) = tokio::join!(store.get(&pa), async {
            // Starts while the first call holds the only slot, with a shorter deadline.
            tokio::task::yield_now().await;
            store
                .with_timeout(Duration::from_secs(2))
                .get(&Path::from("p/b"))
                .await
        });
        assert!(matches!(a, Err(StoreError::Timeout { .. })));
        // The second call waited for the slot until its own deadline and never ran.
        assert!(
            matches!(b, Err(StoreError::Timeout { after, .. }) if after == Duration::from_secs(2)),
            "{b:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(faulty.calls(Op::Get), 1);
    }
}
