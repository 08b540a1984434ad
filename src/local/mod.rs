//! The local chunk tier: copies of the store's objects on local disk, so that flushed data
//! that has left memory is still answered without the store.
//!
//! When the flusher has uploaded an object, it also writes the very same bytes here
//! ([`LocalTier::put_object`]). Queries read such an object from its local copy (index and
//! chunks, each checked by its CRC as the store's would be) and never ask the store for it.
//! A copy stays for `--local.retention` of sample time after its newest sample, or until
//! the disk budget needs its room; then it is *demoted* to an index copy
//! ([`LocalTier::evict_oldest`], [`LocalTier::expire`]): the object's footer and index,
//! which still say which series and chunks the store holds, so a query that only needs
//! them (the series API, or a range whose chunks are elsewhere) still answers without the
//! store, and a query that needs the chunks knows exactly which ones are missing. Indexes
//! read from the store are kept the same way ([`LocalTier::put_index`]).
//!
//! The last successful listing of the store is kept too ([`LocalTier::save_listing`]), so
//! that after a restart during an outage weft still knows what the store holds.
//!
//! Layout under `<data-dir>/local`:
//!
//! ```text
//! objects/<tenant>/<object name>       a whole object, byte for byte as in the store
//! indexes/<tenant>/<object name>.idx   "WEFTIDX1", object length (u64 LE), footer, index
//! listing                              the last listing of the store (text, see formats.md)
//! ```
//!
//! Files are written to a `.tmp` name, fsynced, renamed and the directory fsynced, so a
//! file under its final name is whole. A file that still fails its checks is removed and
//! its object is then read from the store, like any object that is not local.
//!
//! **Invariant:** the local tier holds only objects the store has acknowledged; it is a
//! copy, never the only one, so evicting anything here never loses data.
//!
//! **Invariant:** `local` knows the object format (`store::object`), never the object
//! store API or HTTP.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::path::Path as StorePath;
use parking_lot::Mutex;

use crate::store::object::{
    decode_footer, decode_index, ObjectIndex, ObjectKey, CHUNKS_DIR, FOOTER_LEN,
};

#[cfg(test)]
mod tests;

/// The magic of an index copy.
pub const INDEX_MAGIC: [u8; 8] = *b"WEFTIDX1";

/// Length of an index copy's header: magic and object length.
pub const INDEX_HEADER_LEN: u64 = 16;

/// The first line of a listing file.
const LISTING_HEADER: &str = "# weft store listing v1";

/// Errors of the local tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A file operation failed.
    #[error("local tier: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A local file does not hold what it should (it is removed when found).
    #[error("local tier: {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The object has no local copy (any more).
    #[error("local tier: no local copy of {0}")]
    Missing(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LocalError + 'a {
    move |source| LocalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Local tier settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `<data-dir>/local`.
    pub dir: PathBuf,
    /// How long (sample time, after an object's newest sample) a whole copy is kept.
    pub retention: Duration,
}

/// What the tier holds of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The whole object: its chunks are read here.
    Object,
    /// Its footer and index only: the chunks are in the store alone.
    Index,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    held: Held,
    /// The object's length in the store.
    object_len: u64,
    /// Bytes of the local file.
    file_bytes: u64,
}

/// The local tier. Share as `Arc<LocalTier>`; every method does blocking file I/O, so call
/// them from blocking threads.
#[derive(Debug)]
pub struct LocalTier {
    cfg: LocalConfig,
    entries: Mutex<BTreeMap<ObjectKey, Entry>>,
    bytes: AtomicU64,
    evicted: AtomicU64,
}

/// The key of an object as its relative path `<tenant>/chunks/<name>` (no prefix).
fn parse_key(tenant: &str, name: &str) -> Option<ObjectKey> {
    let p = StorePath::from_iter([tenant, CHUNKS_DIR, name]);
    ObjectKey::parse(&StorePath::default(), &p).ok()
}

impl LocalTier {
    /// Opens (creating) the tier's directory, removes leftover `.tmp` files and registers
    /// every object and index copy found. Files whose names do not parse are left alone.
    pub fn open(cfg: LocalConfig) -> Result<LocalTier, LocalError> {
        let tier = LocalTier {
            entries: Mutex::new(BTreeMap::new()),
            bytes: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            cfg,
        };
        for sub in ["objects", "indexes"] {
            let d = tier.cfg.dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        let mut entries = BTreeMap::new();
        let mut total = 0u64;
        for (sub, held) in [("objects", Held::Object), ("indexes", Held::Index)] {
            let root = tier.cfg.dir.join(sub);
            for t in fs::read_dir(&root).map_err(io_err("listing", &root))? {
                let t = t.map_err(io_err("listing", &root))?;
                let tenant_dir = t.path();
                if !tenant_dir.is_dir() {
                    continue;
                }
                let tenant = t.file_name().to_string_lossy().into_owned();
                for f in fs::read_dir(&tenant_dir).map_err(io_err("listing", &tenant_dir))? {
                    let f = f.map_err(io_err("listing", &tenant_dir))?;
                    let name = f.file_name().to_string_lossy().into_owned();
                    let path = f.path();
                    if name.ends_with(".tmp") {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    let base = match held {
                        Held::Object => Some(name.as_str()),
                        Held::Index => name.strip_suffix(".idx"),
                    };
                    let Some(key) = base.and_then(|b| parse_key(&tenant, b)) else {
                        continue;
                    };
                    let file_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    // An index copy's object length is in its header; reading 10,000 headers
                    // took about as long as the rest of a start, and the length is only
                    // informative (the saved listing has it). 0: unknown until read.
                    let object_len = match held {
                        Held::Object => file_bytes,
                        Held::Index => 0,
                    };
                    // A whole copy wins over an index copy of the same object.
                    let prev = entries.get(&key).map(|e: &Entry| e.held);
                    if prev == Some(Held::Object) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    total += file_bytes;
                    if let Some(old) = entries.insert(
                        key,
                        Entry {
                            held,
                            object_len,
                            file_bytes,
                        },
                    ) {
                        total -= old.file_bytes;
                    }
                }
            }
        }
        tier.bytes.store(total, Ordering::Relaxed);
        *tier.entries.lock() = entries;
        Ok(tier)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.cfg
            .dir
            .join("objects")
            .join(key.tenant.as_str())
            .join(key.file_name())
    }

    fn index_path(&self, key: &ObjectKey) -> PathBuf {
        self.cfg
            .dir
            .join("indexes")
            .join(key.tenant.as_str())
            .join(format!("{}.idx", key.file_name()))
    }

    /// Keeps a whole copy of an object the store has acknowledged.
    pub fn put_object(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), LocalError> {
        let path = self.object_path(key);
        write_file(&path, &[bytes])?;
        self.insert(
            key,
            Entry {
                held: Held::Object,
                object_len: bytes.len() as u64,
                file_bytes: bytes.len() as u64,
            },
        );
        // An index copy of the same object is now redundant.
        let idx = self.index_path(key);
        let _ = fs::remove_file(idx);
        Ok(())
    }

    /// Keeps an object's footer and index (as read from the store), unless a whole copy is
    /// here already.
    pub fn put_index(
        &self,
        key: &ObjectKey,
        object_len: u64,
        footer: &[u8],
        index: &[u8],
    ) -> Result<(), LocalError> {
        if self.held(key).is_some() {
            return Ok(());
        }
        let path = self.index_path(key);
        let head = index_header(object_len);
        write_file(&path, &[&head, footer, index])?;
        self.insert(
            key,
            Entry {
                held: Held::Index,
                object_len,
                file_bytes: INDEX_HEADER_LEN + footer.len() as u64 + index.len() as u64,
            },
        );
        Ok(())
    }

    fn insert(&self, key: &ObjectKey, e: Entry) {
        let mut entries = self.entries.lock();
        self.bytes.fetch_add(e.file_bytes, Ordering::Relaxed);
        if let Some(old) = entries.insert(key.clone(), e) {
            self.bytes.fetch_sub(old.file_bytes, Ordering::Relaxed);
        }
    }

    /// Forgets an object the store no longer holds (retention or compaction deleted it):
    /// its whole copy and its index copy go. Returns the bytes freed.
    pub fn remove(&self, key: &ObjectKey) -> u64 {
        let removed = self.entries.lock().remove(key);
        let Some(e) = removed else { return 0 };
        self.bytes.fetch_sub(e.file_bytes, Ordering::Relaxed);
        let _ = fs::remove_file(self.object_path(key));
        let _ = fs::remove_file(self.index_path(key));
        e.file_bytes
    }

    /// What the tier holds of `key`.
    pub fn held(&self, key: &ObjectKey) -> Option<Held> {
        self.entries.lock().get(key).map(|e| e.held)
    }

    /// Every object the tier knows, with its length in the store and what is held.
    pub fn objects(&self) -> Vec<(ObjectKey, u64, Held)> {
        self.entries
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.object_len, e.held))
            .collect()
    }

    /// Bytes of local files.
    pub fn disk_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whole copies demoted to index copies (or index copies removed) so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Objects held whole, and their bytes.
    pub fn whole_objects(&self) -> (usize, u64) {
        let entries = self.entries.lock();
        entries
            .values()
            .filter(|e| e.held == Held::Object)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.file_bytes))
    }

    /// The object's index, from the whole copy or the index copy; `Ok(None)` when the tier
    /// has neither. A copy that fails its checks is removed and reported as an error.
    pub fn read_index(&self, key: &ObjectKey) -> Result<Option<ObjectIndex>, LocalError> {
        let Some(held) = self.held(key) else {
            return Ok(None);
        };
        let r = match held {
            Held::Object => self.read_object_index(key),
            Held::Index => self.read_index_copy(key),
        };
        match r {
            Ok(ix) => {
                if ix.min_t < key.min_t || ix.max_t > key.max_t {
                    let path = self.path_of(key, held);
                    self.forget(key, held);
                    return Err(LocalError::Corrupt {
                        path,
                        reason: "index outside the key's time range".into(),
                    });
                }
                Ok(Some(ix))
            }
            Err(LocalError::Corrupt { path, reason }) => {
                tracing::error!(file = %path.display(), %reason, "local copy is corrupt; removed, the store will be asked instead");
                self.forget(key, held);
                Err(LocalError::Corrupt { path, reason })
            }
            Err(LocalError::Missing(m)) => {
                self.forget(key, held);
                Err(LocalError::Missing(m))
            }
            Err(e) => Err(e),
        }
    }

    fn path_of(&self, key: &ObjectKey, held: Held) -> PathBuf {
        match held {
            Held::Object => self.object_path(key),
            Held::Index => self.index_path(key),
        }
    }

    /// Drops an entry whose file is bad or gone.
    fn forget(&self, key: &ObjectKey, held: Held) {
        let mut entries = self.entries.lock();
        if entries.get(key).map(|e| e.held) == Some(held) {
            if let Some(e) = entries.remove(key) {
                self.bytes.fetch_sub(e.file_bytes, Ordering::Relaxed);
            }
            let _ = fs::remove_file(self.path_of(key, held));
        }
    }

    fn read_object_index(&self, key: &ObjectKey) -> Result<ObjectIndex, LocalError> {
        let path = self.object_path(key);
        let f = open(&path, key)?;
        let len = f.metadata().map_err(io_err("stat", &path))?.len();
        let corrupt = |reason: String| LocalError::Corrupt {
            path: path.clone(),
            reason,
        };
        if len < FOOTER_LEN {
            return Err(corrupt(format!("{len} bytes, shorter than a footer")));
        }
        let footer_bytes = pread(&f, &path, len - FOOTER_LEN..len)?;
        let footer = decode_footer(&footer_bytes, len).map_err(|e| corrupt(e.to_string()))?;
        let index = pread(&f, &path, footer.index_range())?;
        decode_index(&index, &footer).map_err(|e| corrupt(e.to_string()))
    }

    fn read_index_copy(&self, key: &ObjectKey) -> Result<ObjectIndex, LocalError> {
        let path = self.index_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LocalError::Missing(key.file_name()))
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        decode_index_copy(&bytes).map_err(|reason| LocalError::Corrupt { path, reason })
    }

    /// Bytes `range` of a whole local copy. The caller checks each chunk's CRC.
    pub fn read_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Vec<u8>, LocalError> {
        if self.held(key) != Some(Held::Object) {
            return Err(LocalError::Missing(key.file_name()));
        }
        let path = self.object_path(key);
        let f = match open(&path, key) {
            Ok(f) => f,
            Err(e) => {
                self.forget(key, Held::Object);
                return Err(e);
            }
        };
        pread(&f, &path, range)
    }

    /// Demotes whole copies whose newest sample is older than the retention before
    /// `now_ms` to index copies; returns the bytes freed.
    pub fn expire(&self, now_ms: i64) -> u64 {
        let cutoff = now_ms.saturating_sub(self.cfg.retention.as_millis() as i64);
        let old: Vec<ObjectKey> = self
            .entries
            .lock()
            .iter()
            .filter(|(k, e)| e.held == Held::Object && k.max_t < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = 0;
        for k in old {
            freed += self.demote(&k);
        }
        freed
    }

    /// Frees at least `want` bytes if it can: whole copies go first, oldest (by newest
    /// sample) first, demoted to index copies; then index copies, oldest first. Returns the
    /// bytes freed.
    pub fn evict_oldest(&self, want: u64) -> u64 {
        let mut freed = 0u64;
        for k in self.oldest_first(Held::Object) {
            if freed >= want {
                return freed;
            }
            freed += self.demote(&k);
        }
        for k in self.oldest_first(Held::Index) {
            if freed >= want {
                break;
            }
            let mut entries = self.entries.lock();
            if let Some(e) = entries.remove(&k) {
                self.bytes.fetch_sub(e.file_bytes, Ordering::Relaxed);
                freed += e.file_bytes;
                self.evicted.fetch_add(1, Ordering::Relaxed);
                let _ = fs::remove_file(self.index_path(&k));
            }
        }
        freed
    }

    /// The objects held as `held`, oldest newest-sample first.
    fn oldest_first(&self, held: Held) -> Vec<ObjectKey> {
        let mut keys: Vec<(i64, ObjectKey)> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| e.held == held)
            .map(|(k, _)| (k.max_t, k.clone()))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Replaces a whole copy by its index copy; returns the bytes freed.
    fn demote(&self, key: &ObjectKey) -> u64 {
        let before = match self.entries.lock().get(key) {
            Some(e) if e.held == Held::Object => e.file_bytes,
            _ => return 0,
        };
        let path = self.object_path(key);
        let kept = (|| -> Result<u64, LocalError> {
            let f = open(&path, key)?;
            let len = f.metadata().map_err(io_err("stat", &path))?.len();
            if len < FOOTER_LEN {
                return Err(LocalError::Corrupt {
                    path: path.clone(),
                    reason: "shorter than a footer".into(),
                });
            }
            let footer = pread(&f, &path, len - FOOTER_LEN..len)?;
            let parsed = decode_footer(&footer, len).map_err(|e| LocalError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let index = pread(&f, &path, parsed.index_range())?;
            let idx_path = self.index_path(key);
            write_file(&idx_path, &[&index_header(len), &footer, &index])?;
            Ok(INDEX_HEADER_LEN + footer.len() as u64 + index.len() as u64)
        })();
        let mut entries = self.entries.lock();
        let kept_bytes = *kept.as_ref().unwrap_or(&0);
        match kept {
            Ok(idx_bytes) => {
                if let Some(e) = entries.get_mut(key) {
                    e.held = Held::Index;
                    e.file_bytes = idx_bytes;
                }
                self.bytes.fetch_add(idx_bytes, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not keep the index of an evicted local object");
                entries.remove(key);
            }
        }
        self.bytes.fetch_sub(before, Ordering::Relaxed);
        self.evicted.fetch_add(1, Ordering::Relaxed);
        let _ = fs::remove_file(&path);
        before.saturating_sub(kept_bytes)
    }

    /// Saves the store's listing (every object key with its size), replacing the last one.
    pub fn save_listing(&self, objects: &[(ObjectKey, u64)]) -> Result<(), LocalError> {
        let text = format_listing(objects);
        write_file(&self.cfg.dir.join("listing"), &[text.as_bytes()])
    }

    /// The last saved listing, if there is a whole one.
    pub fn load_listing(&self) -> Option<Vec<(ObjectKey, u64)>> {
        let text = fs::read_to_string(self.cfg.dir.join("listing")).ok()?;
        parse_listing(&text)
    }
}

/// A listing file's text (see `docs/formats.md`, "Local tier").
pub fn format_listing(objects: &[(ObjectKey, u64)]) -> String {
    let mut text = String::with_capacity(objects.len() * 96 + 64);
    text.push_str(LISTING_HEADER);
    text.push('\n');
    for (k, size) in objects {
        text.push_str(&format!("{size} {}/{}\n", k.tenant.as_str(), k.file_name()));
    }
    text.push_str("end\n");
    text
}

/// Decodes an index copy's bytes into the object's index, checking them as a store read
/// would (footer against the object length, index CRC and structure).
pub fn decode_index_copy(b: &[u8]) -> Result<ObjectIndex, String> {
    let (object_len, footer, index) = split_index_copy(b)?;
    let footer = decode_footer(footer, object_len).map_err(|e| e.to_string())?;
    decode_index(index, &footer).map_err(|e| e.to_string())
}

/// Parses a listing file; `None` unless it has its header and its `end` line.
pub fn parse_listing(text: &str) -> Option<Vec<(ObjectKey, u64)>> {
    let mut lines = text.lines();
    if lines.next()? != LISTING_HEADER {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        if line == "end" {
            return Some(out);
        }
        let (size, rel) = line.split_once(' ')?;
        let size: u64 = size.parse().ok()?;
        let (tenant, name) = rel.split_once('/')?;
        // A tenant id never holds '/'; a name that does not parse is skipped.
        if let Some(k) = parse_key(tenant, name) {
            out.push((k, size));
        }
    }
    None
}

fn index_header(object_len: u64) -> [u8; INDEX_HEADER_LEN as usize] {
    let mut h = [0u8; INDEX_HEADER_LEN as usize];
    h[..8].copy_from_slice(&INDEX_MAGIC);
    h[8..].copy_from_slice(&object_len.to_le_bytes());
    h
}

/// Splits an index copy into the object length, the footer and the index bytes.
pub fn split_index_copy(b: &[u8]) -> Result<(u64, &[u8], &[u8]), String> {
    let head = INDEX_HEADER_LEN as usize;
    let foot = FOOTER_LEN as usize;
    if b.len() < head + foot {
        return Err(format!("{} bytes, shorter than header and footer", b.len()));
    }
    if b[..8] != INDEX_MAGIC {
        return Err("bad magic".into());
    }
    let object_len = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    Ok((object_len, &b[head..head + foot], &b[head + foot..]))
}

fn open(path: &Path, key: &ObjectKey) -> Result<File, LocalError> {
    File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            LocalError::Missing(key.file_name())
        } else {
            io_err("opening", path)(e)
        }
    })
}

fn pread(f: &File, path: &Path, range: Range<u64>) -> Result<Vec<u8>, LocalError> {
    let len = range.end.saturating_sub(range.start);
    // Every range comes from a validated footer or index, bounded by the object's size.
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, range.start).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            LocalError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("shorter than {}", range.end),
            }
        } else {
            io_err("reading", path)(e)
        }
    })?;
    Ok(buf)
}

/// Writes `parts` to `path` whole: a `.tmp` file, fsync, rename, directory fsync.
fn write_file(path: &Path, parts: &[&[u8]]) -> Result<(), LocalError> {
    let dir = path.parent().expect("local files live in a directory");
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let r = (|| {
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        for p in parts {
            f.write_all(p).map_err(io_err("writing", &tmp))?;
        }
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", dir))
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}
