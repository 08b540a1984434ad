//! The narrow file-system surface the WAL uses, a real implementation and an in-memory fake.
//!
//! Everything the WAL does to the disk goes through [`WalDir`] and [`SegmentFile`], so that
//! crash recovery can be tested against [`MemDir`], which keeps a *written* image (what a
//! reader sees now) and a *durable* image (what survives power loss) of every file.
//!
//! Segment files are named by their sequence number, zero-padded to eight digits
//! (`00000042`), are preallocated to a fixed size, and are written through a shared memory
//! mapping. A segment is **never truncated while it is mapped**: the WAL only maps segments it
//! creates, and only replay (which runs before anything is mapped) ever shortens or zeroes a
//! segment.
//!
//! Synced pages do not stay resident: once [`DROP_EVERY_BYTES`] more have been synced, the
//! segment drops the whole pages below the synced end from the process's page tables
//! (`madvise(MADV_DONTNEED)`, right after the `msync` that covered them), so the WAL adds about
//! 1 MiB plus its unsynced tail to the process's RSS, not every page written since the segment
//! was created. Nothing reads through the mapping: replay and `inspect` use plain reads.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use parking_lot::Mutex;
use tracing::warn;

use super::SyncTarget;

/// The inner error of an `io::Error` from [`WalDir::create_segment`] when one of the syncs
/// that make the new segment durable failed (rather than the allocation). The WAL turns it
/// into [`super::WalError::Sync`] and poisons itself; an `ENOSPC` from the allocation instead
/// is retried on the next append.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SyncFailed {
    /// What was being synced.
    pub what: SyncTarget,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl SyncFailed {
    /// Wraps `source` as an `io::Error` (same kind) that [`SyncFailed::take`] recognises.
    pub fn wrap(what: SyncTarget, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), SyncFailed { what, source })
    }

    /// The `SyncFailed` inside `e`, or `e` back unchanged.
    pub fn take(e: io::Error) -> Result<SyncFailed, io::Error> {
        if !e.get_ref().is_some_and(|r| r.is::<SyncFailed>()) {
            return Err(e);
        }
        let inner = e.into_inner().expect("checked above");
        Ok(*inner.downcast::<SyncFailed>().expect("checked above"))
    }
}

/// One preallocated, fixed-size segment open for writing.
///
/// Contract: `write_at` of disjoint ranges may be called from one thread while `sync_range`
/// runs on another; the WAL serialises `write_at` calls itself (its append mutex).
pub trait SegmentFile: Send + Sync + fmt::Debug {
    /// Size of the segment in bytes (fixed at creation).
    fn len(&self) -> u64;
    /// Whether the segment has zero size (never, for a segment the WAL created).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` to `offset`. The bytes are visible to readers at once and durable only
    /// after a `sync_range` covering them returns `Ok`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes `[offset, offset + len)` durable (`msync(MS_SYNC)` for the mapping).
    /// An error means the state of those bytes on disk is unknown; the caller must not retry.
    ///
    /// After it returns `Ok`, the mapping may release the memory of the whole pages below the
    /// end of the synced prefix (`[0, end)` of contiguously synced ranges); their bytes stay in
    /// the file and the page cache. The WAL never writes below a range it synced.
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// A file written with plain, buffered writes (checkpoints, `.broken` evidence).
pub trait FileWriter: Write + Send {
    /// Flushes buffers and makes the whole file durable (`fsync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// The WAL directory: the only place the WAL touches the file system.
pub trait WalDir: Send + Sync + fmt::Debug {
    /// A human-readable location, for messages.
    fn location(&self) -> String;
    /// Names of the files in the directory (no subdirectories), in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` (which must not exist) with `size` bytes allocated on disk, makes the
    /// allocation and the directory entry durable, and maps it. A full disk is an error here
    /// (`ENOSPC`), never a `SIGBUS` later. A failed sync is reported as an error whose inner
    /// error is a [`SyncFailed`] (see [`SyncFailed::wrap`]).
    fn create_segment(&self, name: &str, size: u64) -> io::Result<Arc<dyn SegmentFile>>;
    /// Opens `name` for plain sequential reads.
    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Creates (or truncates) `name` for plain writes.
    fn create(&self, name: &str) -> io::Result<Box<dyn FileWriter>>;
    /// Overwrites `[offset, offset + len)` of `name` with zeros using plain writes, then
    /// fsyncs. Only called on files that are not mapped (during replay).
    fn zero_range(&self, name: &str, offset: u64, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`. Removing a mapped segment is allowed: the mapping stays valid (the
    /// inode lives until it is unmapped) and nothing is truncated.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes renames, creations and removals durable (`fsync` of the directory).
    fn sync_dir(&self) -> io::Result<()>;

    /// Size of `name` in bytes (to bound the evidence files replay keeps).
    fn size(&self, name: &str) -> io::Result<u64>;

    /// Reads all of `name` into `buf` (cleared first).
    fn read_into(&self, name: &str, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        self.open_read(name)?.read_to_end(buf)?;
        Ok(())
    }
}

/// The name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:08}")
}

/// The sequence number of a segment file name, if `name` is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() >= 8 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The real directory.

/// A WAL directory on a real file system.
#[derive(Debug, Clone)]
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    /// Opens (creating if needed) the directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl WalDir for FsDir {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path)? {
            let e = e?;
            if e.file_type()?.is_file() {
                if let Some(n) = e.file_name().to_str() {
                    out.push(n.to_owned());
                }
            }
        }
        Ok(out)
    }

    fn create_segment(&self, name: &str, size: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let path = self.path.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let len = libc::off_t::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
        // posix_fallocate reserves the blocks now, so a full disk is an ENOSPC here rather
        // than a SIGBUS on a later store into the mapping. It returns the error number instead
        // of setting errno.
        // SAFETY: `file` is an open descriptor owned by this function for the whole call.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        let prepared = if rc != 0 {
            Err(io::Error::from_raw_os_error(rc))
        } else {
            file.sync_all()
                .map_err(|e| SyncFailed::wrap(SyncTarget::File, e))
                .and_then(|()| {
                    self.sync_dir()
                        .map_err(|e| SyncFailed::wrap(SyncTarget::Dir, e))
                })
        };
        if let Err(e) = prepared {
            drop(file);
            // Best effort: a half-allocated segment holds no data, and leaving it would block
            // the retry with the same name.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        // SAFETY: the file was just created by us, is preallocated to `size` bytes and is never
        // truncated while mapped (only replay, which runs before any mapping exists, shortens
        // or zeroes segments). Other processes modifying the WAL directory are out of contract.
        let map = MmapOptions::new().len(size as usize).map_raw(&file)?;
        Ok(Arc::new(MmapSegment {
            map,
            len: size,
            page_size: page_size(),
            resident: Mutex::new(Resident::default()),
            _file: file,
        }))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path.join(name))?))
    }

    fn size(&self, name: &str) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path.join(name))?.len())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn FileWriter>> {
        let f = File::create(self.path.join(name))?;
        Ok(Box::new(FsWriter(io::BufWriter::with_capacity(1 << 20, f))))
    }

    fn zero_range(&self, name: &str, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(self.path.join(name))?;
        let zeros = vec![0u8; 64 << 10];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        f.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[derive(Debug)]
struct FsWriter(io::BufWriter<File>);

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl FileWriter for FsWriter {
    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}

/// A segment written through a shared mapping.
///
/// `MmapRaw` rather than `MmapMut`: appends store into the mapping under the WAL's mutex while
/// the sync thread runs `msync` on the same mapping without it. `MmapMut` would need `&mut`
/// for the stores and so one lock around both, serialising appends behind every `msync`,
/// which is exactly what group commit is meant to avoid. No reference into the mapping is
/// ever created; bytes are copied in through the raw pointer.
///
/// Pages are dropped from the mapping once synced (see `sync_range`, [`DROP_EVERY_BYTES`]), so
/// the written part of a segment does not stay in the process's RSS: on a 64 MiB segment it
/// otherwise would, up to 64 MiB, outside the one memory limit.
struct MmapSegment {
    map: MmapRaw,
    len: u64,
    page_size: u64,
    /// Only the sync thread touches it; the mutex is never contended.
    resident: Mutex<Resident>,
    _file: File,
}

/// What `sync_range` has made durable and dropped from the mapping so far.
#[derive(Debug, Default)]
struct Resident {
    /// End of the synced prefix: every byte of `[0, synced)` was covered by an `msync` that
    /// returned `Ok`.
    synced: u64,
    /// Page-aligned, `<= synced`: the pages below were dropped from the mapping.
    dropped: u64,
}

/// Synced bytes the mapping of a segment accumulates before they are dropped from it in one
/// `madvise`. Rationale: one `madvise(MADV_DONTNEED)` costs ~20–30 µs on the development VM
/// (mostly the TLB shootdown across the process's threads), 7–8 % of a group commit's
/// ~0.35 ms `msync` when done every round; once per MiB it is well under 1 %, and the
/// resident part of a segment stays below about this much plus the unsynced tail.
pub const DROP_EVERY_BYTES: u64 = 1 << 20;

/// Whether a failed `madvise` was logged already: it repeats on every sync if it happens at
/// all, and costs only memory, so once per process is enough.
static MADVISE_FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

impl fmt::Debug for MmapSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmapSegment")
            .field("len", &self.len)
            .finish()
    }
}

impl SegmentFile for MmapSegment {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the segment",
            ));
        }
        // SAFETY: `[offset, offset + data.len())` lies inside the mapping (checked above). The
        // mapping covers a file preallocated to `self.len` bytes that is never truncated while
        // mapped, so the store cannot fault. No Rust reference to the mapped bytes exists, and
        // the WAL's append mutex guarantees no other `write_at` touches the range concurrently;
        // a concurrent `sync_range` only reads pages, or drops synced pages below the written
        // end, which no store touches again (and a store to a dropped page faults it back in).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                data.len(),
            );
        }
        Ok(())
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // memmap2 aligns the start down to a page boundary and calls msync(MS_SYNC).
        self.map.flush_range(offset as usize, len as usize)?;
        let mut r = self.resident.lock();
        // Only a range that continues the synced prefix extends it (the WAL syncs each
        // segment in order from 0); anything else leaves the prefix, and so the drop, as is.
        if offset <= r.synced {
            r.synced = r.synced.max(offset + len);
        }
        // Only whole pages below the synced end: the page holding the end is still being
        // appended to (and may hold unsynced bytes by now), so it stays mapped. Batched by
        // `DROP_EVERY_BYTES` to keep the madvise off most group commits.
        let drop_end = r.synced / self.page_size * self.page_size;
        if drop_end >= r.dropped + DROP_EVERY_BYTES {
            // SAFETY: the range is page-aligned, has a page-multiple length and lies inside
            // the mapping (`drop_end <= synced <= len`). The mapping is a MAP_SHARED mapping
            // of a regular file, for which MADV_DONTNEED only removes this process's
            // page-table entries: the bytes stay in the page cache and the file, and a later
            // access faults them back in unchanged, so no memory the program can observe
            // changes. Every byte of the range was covered by an msync that returned Ok (the
            // one above or an earlier one), and the WAL stores only at or past its written
            // end, which is at or past `synced`, so no unsynced write is in the range and no
            // store races the madvise. (Even one that did would lose nothing: the kernel
            // moves a dirty page-table bit to the page-cache page when it drops the entry.)
            // No Rust reference into the mapping exists.
            let res = unsafe {
                self.map.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    r.dropped as usize,
                    (drop_end - r.dropped) as usize,
                )
            };
            if let Err(e) = res {
                // Only memory use is at stake, not data: never poison for it.
                if !MADVISE_FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
                    warn!(
                        offset = r.dropped,
                        len = drop_end - r.dropped,
                        "madvise(DONTNEED) of a synced WAL range failed; synced segment pages \
                         stay resident until the segment is closed (logged once): {e}"
                    );
                }
            }
            r.dropped = drop_end;
        }
        Ok(())
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory fake with a written and a durable image.

/// An in-memory [`WalDir`] that models what survives a crash.
///
/// Each file has a *written* image (what reads see) and a *durable* image (what survives).
/// `sync_range`, [`FileWriter::sync`] and `zero_range` copy written bytes to the durable image.
/// Directory operations (create, rename, remove) are modelled as immediately durable: the WAL
/// always follows them with `sync_dir` before relying on them.
///
/// [`MemDir::crash`] returns the directory a restarted process would see: the durable images,
/// plus optionally a prefix (in write order) of the bytes written but not yet synced, the last
/// write possibly cut in the middle (a torn write).
///
/// Fault injection: a space limit (creating a segment past it fails with `ENOSPC`), failing
/// syncs (`EIO`), and failing directory syncs alone (`EIO`).
#[derive(Debug, Clone, Default)]
pub struct MemDir {
    inner: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    names: BTreeMap<String, usize>,
    files: Vec<MemFile>,
    /// Unsynced writes, oldest first: (file id, offset, bytes).
    log: Vec<(usize, u64, Vec<u8>)>,
    space_limit_bytes: Option<u64>,
    fail_syncs: bool,
    /// Fail only directory syncs (`sync_dir`, and the one a new segment implies).
    fail_dir_syncs: bool,
    /// `sync_dir` calls so far, failed ones included.
    dir_sync_calls: u64,
    syncs: u64,
    sync_delay: Option<std::time::Duration>,
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    written: Vec<u8>,
    durable: Vec<u8>,
}

impl MemState {
    fn id(&self, name: &str) -> io::Result<usize> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))
    }

    fn write(&mut self, id: usize, offset: u64, data: &[u8]) {
        let f = &mut self.files[id];
        let end = offset as usize + data.len();
        if f.written.len() < end {
            f.written.resize(end, 0);
        }
        f.written[offset as usize..end].copy_from_slice(data);
        self.log.push((id, offset, data.to_vec()));
    }

    fn sync(&mut self, id: usize, offset: u64, len: u64) -> io::Result<()> {
        if self.fail_syncs {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.syncs += 1;
        let f = &mut self.files[id];
        let end = ((offset + len) as usize).min(f.written.len());
        let start = (offset as usize).min(end);
        if f.durable.len() < end {
            f.durable.resize(end, 0);
        }
        f.durable[start..end].copy_from_slice(&f.written[start..end]);
        self.log.retain(|(fid, o, d)| {
            !(*fid == id && *o >= start as u64 && *o + d.len() as u64 <= end as u64)
        });
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .map(|&id| self.files[id].written.len() as u64)
            .sum()
    }
}

impl MemDir {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes segment creation fail with `ENOSPC` once the files would exceed `limit` bytes.
    pub fn set_space_limit_bytes(&self, limit: Option<u64>) {
        self.inner.lock().space_limit_bytes = limit;
    }

    /// Makes every later sync fail with `EIO` (or succeed again).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.inner.lock().fail_syncs = fail;
    }

    /// Makes every later directory sync fail with `EIO` (or succeed again), file and segment
    /// syncs unaffected: the fault after a checkpoint's rename. Creating a segment then fails
    /// too, as [`FsDir`]'s would (it syncs the directory for the new entry).
    pub fn set_fail_dir_syncs(&self, fail: bool) {
        self.inner.lock().fail_dir_syncs = fail;
    }

    /// Number of directory syncs attempted so far (failed ones included).
    pub fn dir_sync_calls(&self) -> u64 {
        self.inner.lock().dir_sync_calls
    }

    /// Makes every segment sync take `delay` (outside the lock), like a real disk's flush.
    pub fn set_sync_delay(&self, delay: Option<std::time::Duration>) {
        self.inner.lock().sync_delay = delay;
    }

    /// Number of successful segment syncs so far.
    pub fn syncs(&self) -> u64 {
        self.inner.lock().syncs
    }

    /// Bytes written but not yet synced (what a crash may lose).
    pub fn unsynced_bytes(&self) -> usize {
        self.inner.lock().log.iter().map(|(_, _, d)| d.len()).sum()
    }

    /// The written image of `name`, if it exists.
    pub fn written(&self, name: &str) -> Option<Vec<u8>> {
        let s = self.inner.lock();
        s.names.get(name).map(|&id| s.files[id].written.clone())
    }

    /// Replaces the contents of `name` in both images (to plant corruption in tests).
    pub fn put(&self, name: &str, data: Vec<u8>) {
        let mut s = self.inner.lock();
        let id = s.files.len();
        s.files.push(MemFile {
            written: data.clone(),
            durable: data,
        });
        s.names.insert(name.to_owned(), id);
    }

    /// The directory a restarted process sees after a crash now: every file's durable image
    /// plus the first `keep_unsynced_bytes` bytes of unsynced writes, in write order.
    pub fn crash(&self, keep_unsynced_bytes: usize) -> MemDir {
        let s = self.inner.lock();
        let mut images: Vec<Vec<u8>> = s.files.iter().map(|f| f.durable.clone()).collect();
        let mut budget = keep_unsynced_bytes;
        for (id, off, data) in &s.log {
            if budget == 0 {
                break;
            }
            let n = data.len().min(budget);
            let img = &mut images[*id];
            let end = *off as usize + n;
            if img.len() < end {
                img.resize(end, 0);
            }
            img[*off as usize..end].copy_from_slice(&data[..n]);
            budget -= n;
        }
        let mut st = MemState::default();
        for (name, &id) in &s.names {
            let nid = st.files.len();
            let img = std::mem::take(&mut images[id]);
            st.files.push(MemFile {
                written: img.clone(),
                durable: img,
            });
            st.names.insert(name.clone(), nid);
        }
        MemDir {
            inner: Arc::new(Mutex::new(st)),
        }
    }
}

impl WalDir for MemDir {
    fn location(&self) -> String {
        "mem:".to_owned()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.inner.lock().names.keys().cloned().collect())
    }

    fn create_segment(&self, name: &str, size: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let mut s = self.inner.lock();
        if s.names.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if let Some(limit) = s.space_limit_bytes {
            if s.used_bytes() + size > limit {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        if s.fail_dir_syncs {
            s.dir_sync_calls += 1;
            return Err(SyncFailed::wrap(
                SyncTarget::Dir,
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        let id = s.files.len();
        s.files.push(MemFile {
            written: vec![0; size as usize],
            durable: vec![0; size as usize],
        });
        s.names.insert(name.to_owned(), id);
        Ok(Arc::new(MemSegment {
            dir: self.clone(),
            id,
            len: size,
        }))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let s = self.inner.lock();
        let id = s.id(name)?;
        Ok(Box::new(io::Cursor::new(s.files[id].written.clone())))
    }

    fn size(&self, name: &str) -> io::Result<u64> {
        let s = self.inner.lock();
        let id = s.id(name)?;
        Ok(s.files[id].written.len() as u64)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn FileWriter>> {
        let mut s = self.inner.lock();
        let id = s.files.len();
        s.files.push(MemFile::default());
        s.names.insert(name.to_owned(), id);
        Ok(Box::new(MemWriter {
            dir: self.clone(),
            id,
            pos: 0,
        }))
    }

    fn zero_range(&self, name: &str, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.inner.lock();
        let id = s.id(name)?;
        let f = &mut s.files[id];
        for img in [&mut f.written, &mut f.durable] {
            let end = ((offset + len) as usize).min(img.len());
            let start = (offset as usize).min(end);
            img[start..end].fill(0);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.inner.lock();
        let id = s.id(from)?;
        s.names.remove(from);
        s.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.inner.lock();
        s.id(name)?;
        // Like unlink: open handles (a mapped segment) keep the data; the name is gone.
        s.names.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.inner.lock();
        s.dir_sync_calls += 1;
        if s.fail_dir_syncs {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemSegment {
    dir: MemDir,
    id: usize,
    len: u64,
}

impl SegmentFile for MemSegment {
    fn len(&self) -> u64 {
        self.len
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the segment",
            ));
        }
        self.dir.inner.lock().write(self.id, offset, data);
        Ok(())
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let delay = self.dir.inner.lock().sync_delay;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        self.dir.inner.lock().sync(self.id, offset, len)
    }
}

#[derive(Debug)]
struct MemWriter {
    dir: MemDir,
    id: usize,
    pos: u64,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dir.inner.lock().write(self.id, self.pos, buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileWriter for MemWriter {
    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.dir.inner.lock();
        if s.fail_syncs {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let f = &mut s.files[self.id];
        f.durable = f.written.clone();
        let id = self.id;
        s.log.retain(|(fid, _, _)| *fid != id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdir_crash_keeps_only_synced_bytes_and_requested_prefix() {
        let d = MemDir::new();
        let seg = d.create_segment("00000000", 32).unwrap();
        seg.write_at(0, b"abcd").unwrap();
        seg.sync_range(0, 4).unwrap();
        seg.write_at(4, b"efgh").unwrap();
        assert_eq!(
            &d.crash(0).written("00000000").unwrap()[..8],
            b"abcd\0\0\0\0"
        );
        assert_eq!(&d.crash(2).written("00000000").unwrap()[..8], b"abcdef\0\0");
        assert_eq!(&d.crash(100).written("00000000").unwrap()[..8], b"abcdefgh");
    }

    #[test]
    fn fs_segment_is_preallocated_and_mapped() {
        let tmp = tempfile::tempdir().unwrap();
        let d = FsDir::open(tmp.path()).unwrap();
        let seg = d.create_segment("00000001", 1 << 16).unwrap();
        seg.write_at(100, b"hello").unwrap();
        seg.sync_range(100, 5).unwrap();
        assert!(seg.write_at((1 << 16) - 2, b"xyz").is_err());
        let mut buf = Vec::new();
        d.read_into("00000001", &mut buf).unwrap();
        assert_eq!(buf.len(), 1 << 16);
        assert_eq!(&buf[100..105], b"hello");
        assert!(d.create_segment("00000001", 1 << 16).is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(42), "00000042");
        assert_eq!(parse_segment_name("00000042"), Some(42));
        assert_eq!(parse_segment_name("00000042.broken"), None);
        assert_eq!(parse_segment_name("checkpoint.00000001"), None);
    }
}
