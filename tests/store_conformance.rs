//! The store conformance suite: the same cases run against `memory://`, `file://` (a temp
//! dir) and a real S3-compatible server process (moto, `pip install 'moto[server]'`).
//!
//! Every case gets a fresh namespace: a new in-memory store, a new temp dir, or a new key
//! prefix in a bucket of one moto server shared by the tests running at the same time (the
//! server is killed when the last of them drops it). If `moto_server` is not installed the
//! S3 cases are skipped with a message, unless `CI=true`, where they fail.
//!
//! S3 settings go through `StoreOptions::config` (the same keys as the `AWS_*` variables,
//! lower-cased) rather than the process environment, which parallel tests share.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use weft::model::{Labels, TenantId};
use weft::store::faulty::{Fault, FaultyStore, Op};
use weft::store::object::{
    decode_footer, decode_index, decode_object, tenant_chunks_prefix, verify_chunk, ChunkData,
    ObjectBuilder, ObjectKey, FOOTER_LEN,
};
use weft::store::{Store, StoreError, StoreOptions};

use common::s3::Moto;

// ---- backends ----

const BUCKET: &str = "weft-conformance";

/// One case's namespace in one backend.
struct Fixture {
    url: String,
    /// The in-memory store, which must be shared rather than reopened.
    memory: Option<Arc<dyn ObjectStore>>,
    config: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    _moto: Option<Arc<Moto>>,
}

impl Fixture {
    fn memory() -> Fixture {
        let (inner, _) = weft::store::open_store("memory://", &StoreOptions::default()).unwrap();
        Fixture {
            url: "memory://".into(),
            memory: Some(inner),
            config: vec![],
            _dir: None,
            _moto: None,
        }
    }

    fn file() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: open_store creates it.
        let url = format!("file://{}/store", dir.path().display());
        Fixture {
            url,
            memory: None,
            config: vec![],
            _dir: Some(dir),
            _moto: None,
        }
    }

    fn s3(case: &str) -> Option<Fixture> {
        let moto = Moto::shared(BUCKET)?;
        let config = vec![
            ("aws_endpoint".into(), moto.endpoint()),
            ("aws_allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), "test".into()),
            ("aws_secret_access_key".into(), "test".into()),
            ("aws_region".into(), "us-east-1".into()),
        ];
        let url = format!("s3://{BUCKET}/{case}/weft");
        Some(Fixture {
            url,
            memory: None,
            config,
            _dir: None,
            _moto: Some(moto),
        })
    }

    fn store_with(&self, tweak: impl FnOnce(&mut StoreOptions)) -> Store {
        let mut opts = StoreOptions {
            config: self.config.clone(),
            ..StoreOptions::default()
        };
        tweak(&mut opts);
        match &self.memory {
            Some(inner) => Store::new(inner.clone(), Path::default(), &opts),
            None => Store::open(&self.url, &opts).unwrap(),
        }
    }

    fn store(&self) -> Store {
        self.store_with(|_| {})
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test] async fn $case() { super::$case(&super::Fixture::memory()).await } )*
        }
        mod file {
            $( #[tokio::test] async fn $case() { super::$case(&super::Fixture::file()).await } )*
        }
        mod s3 {
            $( #[tokio::test] async fn $case() {
                if let Some(fx) = super::Fixture::s3(stringify!($case)) { super::$case(&fx).await }
            } )*
        }
    };
}

conformance!(
    put_then_get_returns_the_encoded_object,
    range_gets_read_footer_index_and_each_chunk,
    listing_a_tenant_never_shows_another_tenants_objects,
    listing_pages_resume_after_the_last_key,
    head_reports_the_size,
    overwriting_an_object_is_harmless,
    a_missing_object_is_not_found,
    a_range_past_the_end_is_an_error,
    the_deadline_fires_on_a_hung_store,
);

// ---- data ----

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// An object of `n` series with two XOR chunks each, and its key.
fn object(tenant_id: &str, n: usize, seq: u64) -> (ObjectKey, Bytes) {
    let chunks: Vec<Vec<u8>> = (0..2)
        .map(|c| {
            let mut app = weft::chunk::XorAppender::new();
            for i in 0..120i64 {
                app.append(c * 1_800_000 + i * 15_000, (i * (c + 1)) as f64);
            }
            app.bytes().to_vec()
        })
        .collect();
    let mut b = ObjectBuilder::new();
    for s in 0..n {
        let inst = format!("host-{s}");
        let labels = Labels::from_strs([("__name__", "up"), ("instance", inst.as_str())]).unwrap();
        let data: Vec<ChunkData<'_>> = chunks
            .iter()
            .enumerate()
            .map(|(c, d)| ChunkData {
                min_t: c as i64 * 1_800_000,
                max_t: c as i64 * 1_800_000 + 1_785_000,
                data: d,
                encoding: weft::store::object::ENCODING_XOR,
            })
            .collect();
        b.add_series(&labels, &data).unwrap();
    }
    let obj = b.finish().unwrap();
    let key = ObjectKey::new(tenant(tenant_id), obj.min_t, obj.max_t, "ing-1", seq).unwrap();
    (key, obj.bytes)
}

// ---- cases ----

async fn put_then_get_returns_the_encoded_object(fx: &Fixture) {
    let store = fx.store();
    let (key, bytes) = object("team-a", 50, 1);
    let path = key.to_path(store.prefix());
    store.put(&path, bytes.clone()).await.unwrap();
    let back = store.get(&path).await.unwrap();
    assert_eq!(back, bytes);
    let index = decode_object(&back).unwrap();
    assert_eq!(index.series.len(), 50);
    assert_eq!(index.chunk_count, 100);
}

async fn range_gets_read_footer_index_and_each_chunk(fx: &Fixture) {
    let store = fx.store();
    let (key, bytes) = object("team-a", 10, 1);
    let path = key.to_path(store.prefix());
    store.put(&path, bytes.clone()).await.unwrap();

    // By hand: suffix GET of the footer (with the size), range GET of the index.
    let (footer, size) = store.get_suffix(&path, FOOTER_LEN).await.unwrap();
    assert_eq!(size, bytes.len() as u64);
    let footer = decode_footer(&footer, size).unwrap();
    let index_bytes = store.get_range(&path, footer.index_range()).await.unwrap();
    let index = decode_index(&index_bytes, &footer).unwrap();
    // And through the helper.
    assert_eq!(store.read_index(&path).await.unwrap(), index);

    for s in &index.series {
        for c in &s.chunks {
            let chunk = store.read_chunk(&path, c).await.unwrap();
            verify_chunk(c, &chunk).unwrap();
            assert_eq!(
                chunk,
                bytes.slice(c.offset as usize..(c.offset + c.len as u64) as usize)
            );
            assert_eq!(weft::chunk::XorIterator::new(&chunk).unwrap().count(), 120);
        }
    }
}

async fn listing_a_tenant_never_shows_another_tenants_objects(fx: &Fixture) {
    let store = fx.store();
    // "a" is a string prefix of "ab": listing must match whole path segments.
    for (t, seq) in [("a", 1), ("a", 2), ("ab", 3), ("b", 4)] {
        let (key, bytes) = object(t, 1, seq);
        store
            .put(&key.to_path(store.prefix()), bytes)
            .await
            .unwrap();
    }
    for (t, want) in [
        ("a", vec![1, 2]),
        ("ab", vec![3]),
        ("b", vec![4]),
        ("c", vec![]),
    ] {
        let page = store
            .list(&tenant_chunks_prefix(store.prefix(), &tenant(t)), None)
            .await
            .unwrap();
        assert!(!page.more);
        let keys: Vec<ObjectKey> = page
            .objects
            .iter()
            .map(|m| ObjectKey::parse(store.prefix(), &m.location).unwrap())
            .collect();
        assert!(keys.iter().all(|k| k.tenant.as_str() == t), "{t}: {keys:?}");
        assert_eq!(
            keys.iter().map(|k| k.seq).collect::<Vec<_>>(),
            want,
            "tenant {t}"
        );
    }
}

async fn listing_pages_resume_after_the_last_key(fx: &Fixture) {
    let store = fx.store_with(|o| o.max_list_entries = 2);
    let mut want = Vec::new();
    for seq in 0..5u64 {
        // Write in an order that is not key order.
        let (key, bytes) = object("t", 1, (seq * 3) % 5);
        let path = key.to_path(store.prefix());
        store.put(&path, bytes).await.unwrap();
        want.push(path);
    }
    want.sort();
    let prefix = tenant_chunks_prefix(store.prefix(), &tenant("t"));
    let mut got = Vec::new();
    let mut after: Option<Path> = None;
    for _ in 0..10 {
        let page = store.list(&prefix, after.as_ref()).await.unwrap();
        assert!(page.objects.len() <= 2);
        got.extend(page.objects.iter().map(|m| m.location.clone()));
        after = got.last().cloned();
        if !page.more {
            break;
        }
    }
    assert_eq!(got, want);
}

async fn head_reports_the_size(fx: &Fixture) {
    let store = fx.store();
    let (key, bytes) = object("t", 3, 1);
    let path = key.to_path(store.prefix());
    store.put(&path, bytes.clone()).await.unwrap();
    let meta = store.head(&path).await.unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.location, path);
}

async fn overwriting_an_object_is_harmless(fx: &Fixture) {
    let store = fx.store();
    let (key, bytes) = object("t", 3, 1);
    let path = key.to_path(store.prefix());
    // A flush retried after a lost acknowledgement uploads the same bytes again.
    store.put(&path, bytes.clone()).await.unwrap();
    store.put(&path, bytes.clone()).await.unwrap();
    assert_eq!(store.get(&path).await.unwrap(), bytes);
    let page = store
        .list(&tenant_chunks_prefix(store.prefix(), &tenant("t")), None)
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1);
    // Different bytes replace the object whole: the last write wins, never a mix.
    let (_, other) = object("t", 7, 1);
    store.put(&path, other.clone()).await.unwrap();
    assert_eq!(store.get(&path).await.unwrap(), other);
    decode_object(&store.get(&path).await.unwrap()).unwrap();
}

async fn a_missing_object_is_not_found(fx: &Fixture) {
    let store = fx.store();
    let (key, _) = object("t", 1, 1);
    let path = key.to_path(store.prefix());
    let nf = |r: Result<(), StoreError>, what: &str| {
        let e = r.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{what}: {e}");
        assert!(!e.is_retryable());
    };
    nf(store.get(&path).await.map(drop), "get");
    nf(store.get_range(&path, 0..10).await.map(drop), "get_range");
    nf(
        store.get_suffix(&path, FOOTER_LEN).await.map(drop),
        "get_suffix",
    );
    nf(store.head(&path).await.map(drop), "head");
    nf(store.read_index(&path).await.map(drop), "read_index");
}

async fn a_range_past_the_end_is_an_error(fx: &Fixture) {
    let store = fx.store();
    let path = store
        .prefix()
        .clone()
        .join("t")
        .join("chunks")
        .join("short");
    store
        .put(&path, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(
        store.get_range(&path, 2..5).await.unwrap(),
        Bytes::from_static(b"234")
    );
    // object_store would hand back the shorter remainder; weft refuses it.
    assert!(store.get_range(&path, 5..20).await.is_err());
    // A footer read of an object shorter than a footer is not a footer.
    let (b, size) = store.get_suffix(&path, FOOTER_LEN).await.unwrap();
    assert_eq!((b.len(), size), (10, 10));
    assert!(decode_footer(&b, size).is_err());
}

async fn the_deadline_fires_on_a_hung_store(fx: &Fixture) {
    let store = fx.store();
    let faulty = Arc::new(FaultyStore::new(store.inner().clone()));
    let timeout = Duration::from_millis(300);
    let opts = StoreOptions {
        timeout,
        ..StoreOptions::default()
    };
    let hung = Store::new(faulty.clone(), store.prefix().clone(), &opts);
    let (key, bytes) = object("t", 1, 1);
    let path = key.to_path(store.prefix());

    faulty.set(&Op::ALL, Some(Fault::Hang));
    let start = Instant::now();
    let put = hung.put(&path, bytes.clone()).await;
    assert!(
        matches!(put, Err(StoreError::Timeout { op: "put", .. })),
        "{put:?}"
    );
    let list = hung.list(store.prefix(), None).await;
    assert!(
        matches!(list, Err(StoreError::Timeout { op: "list", .. })),
        "{list:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The hung put never reached the backend.
    assert!(matches!(
        store.head(&path).await,
        Err(StoreError::NotFound { .. })
    ));

    faulty.set(&Op::ALL, None);
    hung.put(&path, bytes.clone()).await.unwrap();
    assert_eq!(store.get(&path).await.unwrap(), bytes);
}
