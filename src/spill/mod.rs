//! Spill: local chunk files for closed chunks while memory is over budget.
//!
//! When the object store is down, closed (immutable) chunks pile up in the head. Past
//! `--limits.memory-bytes` the head moves its oldest closed unflushed chunks here, into
//! `<data-dir>/spill/spill-<8-digit index>`, and keeps only a [`SpillRef`] for each. Queries
//! and the flusher read them back with [`Spill::read`]; once a chunk is in the store, the head
//! calls [`Spill::release`]. A file whose last reference is released is deleted.
//!
//! Checkpoints store `SpillRef`s instead of the bytes, so the files survive a restart: at
//! startup the checkpoint loader calls [`Spill::retain`] for every ref it restores, then
//! [`Spill::gc`] deletes the files nothing refers to any more. **A checkpoint may only hold
//! refs written before a successful [`Spill::sync`].**
//!
//! The byte format (file header, self-checking records, zero tail) is in `docs/formats.md`
//! ("Spill files") and [`format`].
//!
//! How the files are written and read:
//!
//! - Each file is created with `O_EXCL`, preallocated with `posix_fallocate` (a full disk is a
//!   [`SpillError::DiskFull`] at creation, never a `SIGBUS` later), given its header with a
//!   plain write, fsynced with its directory, and only then mapped shared (`MmapRaw`). Only
//!   the *active* file (the one being appended to) is mapped; it is unmapped when it fills
//!   up. **A spill file is never truncated**, mapped or not.
//! - Records are copied into the mapping. Every [`SYNC_EVERY_BYTES`] written, at a roll and in
//!   `sync`, the written range is `msync`ed and then dropped from the process's page tables
//!   (`madvise(MADV_DONTNEED)`), so a long outage keeps at most a few MiB of the active file
//!   resident. The whole point of spilling is to bound the process's memory, and touched
//!   pages of a mapping count in its RSS.
//! - Reads use `pread`, not the mapping: the bytes come from the page cache (coherent with the
//!   mapping on Linux) and never add pages to the process's RSS, which is cheaper than mapping
//!   the pages and dropping them again after each read.
//! - A failed `msync` is never retried: the spill is poisoned and refuses further writes and
//!   syncs ([`SpillError::Poisoned`]) until a restart. Reads still work.
//!
//! References are counted per file, not per record: each `write` and each `retain` adds one,
//! and each `release` must drop exactly one.
//!
//! A round trip:
//!
//! ```
//! use weft::spill::{Spill, SpillConfig, SpillRef};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = SpillConfig { dir: dir.path().join("spill"), file_size: 1 << 20 };
//! let spill = Spill::open(cfg.clone()).unwrap();
//! let r = spill.write(7, 1_000, 2_000, b"\x00\x01chunk").unwrap();
//! spill.sync().unwrap();
//! let mut encoded = Vec::new();
//! r.encode(&mut encoded); // what a checkpoint stores
//! drop(spill);
//!
//! // After a restart, the checkpoint's ref resolves to the same bytes.
//! let spill = Spill::open(cfg).unwrap();
//! let r = SpillRef::decode(&encoded).unwrap();
//! spill.retain(&r).unwrap();
//! assert_eq!(spill.gc(), 0);
//! assert_eq!(spill.read(&r).unwrap(), b"\x00\x01chunk");
//! spill.release(&r);
//! assert_eq!(spill.files(), 0);
//! ```

pub mod format;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use parking_lot::Mutex;
use thiserror::Error;
use tracing::{error, info, warn};

pub use format::{
    decode_records, inspect_bytes, FileScan, ScanEnd, SpillRecord, FILE_HEADER_LEN,
    MAX_CHUNK_BYTES, RECORD_HEADER_LEN,
};

/// Default size of a spill file: 64 MiB.
pub const DEFAULT_FILE_SIZE_BYTES: u64 = 64 << 20;
/// Smallest file size accepted. Rationale: every chunk up to [`MAX_CHUNK_BYTES`] must fit in
/// an empty file, so a valid chunk is never refused as too large.
pub const MIN_FILE_SIZE_BYTES: u64 = 128 << 10;
/// Largest file size accepted. Rationale: a bound on one mapping and on one `inspect` read.
pub const MAX_FILE_SIZE_BYTES: u64 = 1 << 30;
/// Written bytes after which the active file is synced and its pages dropped from the
/// process's mapping. Rationale: bounds the resident part of the active file to about this
/// much, while keeping msyncs large (one per ~3,500 typical chunks).
pub const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Spill settings. Every field is set explicitly at the call site.
#[derive(Debug, Clone)]
pub struct SpillConfig {
    /// The spill directory (`<data-dir>/spill`); created if missing.
    pub dir: PathBuf,
    /// Size of each spill file in bytes, in
    /// `MIN_FILE_SIZE_BYTES..=MAX_FILE_SIZE_BYTES`; [`DEFAULT_FILE_SIZE_BYTES`] normally.
    pub file_size: u64,
}

/// Where one spilled chunk lives. Checkpoints store it ([`SpillRef::encode`]) instead of the
/// chunk bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpillRef {
    /// The file's index (`spill-<index>`).
    pub file: u32,
    /// Offset of the record (its header, not the data) in the file.
    pub offset: u64,
    /// Length of the chunk data, `1..=MAX_CHUNK_BYTES`.
    pub len: u32,
    /// CRC32 (IEEE) of the chunk data: the same value a store object's index holds for it.
    pub crc32: u32,
}

impl SpillRef {
    /// Size of an encoded ref.
    pub const ENCODED_LEN: usize = 20;

    /// Appends the 20-byte encoding: `file` u32, `offset` u64, `len` u32, `crc32` u32, all
    /// little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.file.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc32.to_le_bytes());
    }

    /// Decodes exactly [`Self::ENCODED_LEN`] bytes. A ref that cannot name a record (length
    /// out of range, offset inside the file header) is `Corrupt`.
    pub fn decode(b: &[u8]) -> Result<Self, SpillError> {
        let b: &[u8; Self::ENCODED_LEN] = b.try_into().map_err(|_| {
            SpillError::Corrupt(format!(
                "spill ref of {} bytes, expected {}",
                b.len(),
                Self::ENCODED_LEN
            ))
        })?;
        let r = SpillRef {
            file: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
            len: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            crc32: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        };
        r.check()?;
        Ok(r)
    }

    /// The checks every ref must pass before it is used to touch a file.
    fn check(&self) -> Result<(), SpillError> {
        if self.len == 0 || self.len as usize > MAX_CHUNK_BYTES {
            return Err(SpillError::Corrupt(format!(
                "spill ref length {} outside 1..={MAX_CHUNK_BYTES}",
                self.len
            )));
        }
        if self.offset < FILE_HEADER_LEN as u64 || self.offset > MAX_FILE_SIZE_BYTES {
            return Err(SpillError::Corrupt(format!(
                "spill ref offset {} outside a file's record area",
                self.offset
            )));
        }
        Ok(())
    }

    /// One past the last byte of the record.
    fn record_end(&self) -> u64 {
        // Cannot overflow: `check` bounds offset by 1 GiB and len by 64 KiB.
        self.offset + RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Everything that can go wrong in the spill.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpillError {
    /// An I/O error other than a full disk.
    #[error("spill I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No space to allocate a new spill file. Nothing was written and no state changed; the
    /// next write retries. Map to 503 + Retry-After.
    #[error("disk full: cannot allocate spill file {}", file.display())]
    DiskFull {
        /// The file that could not be allocated.
        file: PathBuf,
    },
    /// An earlier msync failed. Writes and syncs are refused until a restart, because the
    /// kernel may have dropped the dirty pages and a retried sync could falsely succeed.
    #[error("spill is poisoned by an earlier sync failure; restart to recover")]
    Poisoned,
    /// A file or record does not hold what it should (bad header, CRC mismatch, a ref that
    /// points outside the written area or at a record that disagrees with it).
    #[error("spill data corrupt: {0}")]
    Corrupt(String),
    /// A ref names a file that does not exist.
    #[error("spill file {0} does not exist")]
    UnknownFile(u32),
    /// A chunk larger than [`MAX_CHUNK_BYTES`].
    #[error("chunk of {bytes} bytes exceeds the spill limit of {limit}")]
    TooLarge {
        /// The chunk's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller passed something the spill never stores (an empty chunk, `max_t < min_t`,
    /// a file size out of range) or the file index space is exhausted.
    #[error("invalid spill request: {0}")]
    Invalid(String),
}

/// The name of spill file `index`.
pub fn file_name(index: u32) -> String {
    format!("spill-{index:08}")
}

/// The index of a spill file name, if `name` is one.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("spill-")?;
    if digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// The spill files of one data dir. `Send + Sync`; share it as `Arc<Spill>`.
///
/// Locking: `writer` serialises appends, rolls and syncs (it is held across an msync);
/// `files` guards the file table and reference counts and is only held briefly, so reads and
/// releases never wait for an msync. Lock order: `writer`, then `files`.
pub struct Spill {
    dir: PathBuf,
    file_size: u64,
    page_size: u64,
    writer: Mutex<Writer>,
    files: Mutex<Files>,
    poisoned: AtomicBool,
    /// Test seam: the next file allocation fails with ENOSPC.
    #[cfg(test)]
    inject_enospc: AtomicBool,
    /// Test seam: the next msync fails with EIO (crate-wide: the ingester's tests use it).
    #[cfg(test)]
    pub(crate) inject_eio: AtomicBool,
}

struct Writer {
    active: Option<ActiveFile>,
    /// The index the next file gets (u64 so that exhaustion is an error, not a wrap).
    next_index: u64,
    /// The record being written, encoded here first so it can be checked before the copy.
    scratch: Vec<u8>,
}

/// The file being appended to: the only mapped one.
struct ActiveFile {
    index: u32,
    map: MmapRaw,
    size: u64,
    /// End of the written records.
    pos: u64,
    /// Everything below is durable (msynced).
    synced: u64,
    /// Page-aligned; the pages below were dropped from the mapping after their sync.
    dropped: u64,
}

struct Files {
    map: BTreeMap<u32, FileEntry>,
    active: Option<u32>,
}

struct FileEntry {
    /// For `pread`. Kept open while the file is in the table; readers clone the `Arc`, so a
    /// file deleted during a read stays readable until the read ends.
    file: Arc<File>,
    size_bytes: u64,
    /// Reads past this are `Corrupt`: the written end for files of this process, the file
    /// size for files found at open (records validate themselves).
    readable_end: u64,
    refs: u64,
    live_bytes: u64,
    /// Why the file's header is invalid. A broken file is never deleted automatically (it is
    /// the evidence) and every read from it is `Corrupt`.
    broken: Option<String>,
}

impl fmt::Debug for Spill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spill")
            .field("dir", &self.dir)
            .field("file_size", &self.file_size)
            .field("files", &self.files())
            .field("poisoned", &self.poisoned.load(Ordering::Relaxed))
            .finish()
    }
}

impl Spill {
    /// Opens (creates) the dir and scans existing files, validating their headers. Deletes
    /// nothing: call [`Spill::retain`] for every restored ref, then [`Spill::gc`].
    ///
    /// A file whose header is all zero (a crash during its creation) holds no records and is
    /// collected by `gc`. A file whose header is invalid otherwise is kept as evidence and
    /// logged; reads from it are `Corrupt`. New records always go to a new file.
    pub fn open(cfg: SpillConfig) -> Result<Spill, SpillError> {
        if !(MIN_FILE_SIZE_BYTES..=MAX_FILE_SIZE_BYTES).contains(&cfg.file_size) {
            return Err(SpillError::Invalid(format!(
                "spill file size {} outside {MIN_FILE_SIZE_BYTES}..={MAX_FILE_SIZE_BYTES}",
                cfg.file_size
            )));
        }
        let dir = cfg.dir;
        std::fs::create_dir_all(&dir).map_err(io_err("create dir", &dir))?;
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(index) = entry.file_name().to_str().and_then(parse_file_name) else {
                continue;
            };
            let path = entry.path();
            let file = File::open(&path).map_err(io_err("open", &path))?;
            let size_bytes = file.metadata().map_err(io_err("stat", &path))?.len();
            let mut head = [0u8; FILE_HEADER_LEN];
            let n = read_up_to(&file, &mut head).map_err(io_err("read header", &path))?;
            let broken = match format::decode_file_header(&head[..n]) {
                Ok(Some(h)) if h.index == index => None,
                Ok(Some(h)) => Some(format!("header names file {}", h.index)),
                Ok(None) => {
                    warn!(file = %path.display(), "spill file without a header (its creation was torn); it holds no records");
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = &broken {
                error!(file = %path.display(), "spill file has an invalid header, keeping it as evidence: {why}");
            }
            map.insert(
                index,
                FileEntry {
                    file: Arc::new(file),
                    size_bytes,
                    readable_end: size_bytes,
                    refs: 0,
                    live_bytes: 0,
                    broken,
                },
            );
        }
        let next_index = map.keys().next_back().map_or(0, |&i| u64::from(i) + 1);
        if !map.is_empty() {
            info!(dir = %dir.display(), files = map.len(), "found spill files");
        }
        Ok(Spill {
            dir,
            file_size: cfg.file_size,
            page_size: page_size(),
            writer: Mutex::new(Writer {
                active: None,
                next_index,
                scratch: Vec::with_capacity(RECORD_HEADER_LEN + MAX_CHUNK_BYTES),
            }),
            files: Mutex::new(Files { map, active: None }),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            inject_enospc: AtomicBool::new(false),
            #[cfg(test)]
            inject_eio: AtomicBool::new(false),
        })
    }

    /// The spill directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one chunk record for `series_ref` to the active file (rolling to a new
    /// preallocated file when it is full) and returns its ref, holding one reference.
    ///
    /// Not durable until [`Spill::sync`] returns `Ok` (though the bytes are readable at once).
    /// A full disk at allocation is `DiskFull` and changes nothing.
    pub fn write(
        &self,
        series_ref: u64,
        min_t: i64,
        max_t: i64,
        data: &[u8],
    ) -> Result<SpillRef, SpillError> {
        format::check_chunk(min_t, max_t, data)?;
        let mut guard = self.writer.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(SpillError::Poisoned);
        }
        let need = (RECORD_HEADER_LEN + data.len()) as u64;
        if guard.active.as_ref().is_none_or(|a| a.pos + need > a.size) {
            self.roll(&mut guard)?;
        }
        let w = &mut *guard;
        let a = w.active.as_mut().expect("roll leaves an active file");
        w.scratch.clear();
        let crc32 = format::encode_record(series_ref, min_t, max_t, data, &mut w.scratch)?;
        debug_assert!(
            matches!(
                format::decode_record(&w.scratch),
                Ok(Some((rec, used)))
                    if used == w.scratch.len()
                        && rec == SpillRecord { series_ref, min_t, max_t, data }
            ),
            "a record decodes to what was encoded"
        );
        debug_assert!(a.pos + w.scratch.len() as u64 <= a.size);
        // SAFETY: `[pos, pos + len)` lies inside the mapping (checked by the roll condition
        // above). The mapping covers a file preallocated to `a.size` bytes that is never
        // truncated, so the store cannot fault. No Rust reference into the mapping exists,
        // the writer lock (held) excludes every other store and madvise on it, and readers
        // use pread, not the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                w.scratch.as_ptr(),
                a.map.as_mut_ptr().add(a.pos as usize),
                w.scratch.len(),
            );
        }
        let r = SpillRef {
            file: a.index,
            offset: a.pos,
            len: data.len() as u32,
            crc32,
        };
        a.pos += need;
        {
            let mut files = self.files.lock();
            let e = files
                .map
                .get_mut(&a.index)
                .expect("the active file is in the table");
            e.readable_end = a.pos;
            e.refs += 1;
            e.live_bytes += u64::from(r.len);
        }
        if a.pos - a.synced >= SYNC_EVERY_BYTES {
            // The write itself succeeded; a failed sync poisons the spill, and the next write
            // or sync reports it. Durability was only ever promised by `sync`.
            let _ = self.sync_active(a);
        }
        Ok(r)
    }

    /// Copies a chunk's bytes out, checking that the record at `r.offset` is the one `r`
    /// names (length and CRC in the header) and that the data matches the CRC.
    pub fn read(&self, r: &SpillRef) -> Result<Vec<u8>, SpillError> {
        r.check()?;
        let (file, readable_end) = {
            let files = self.files.lock();
            let e = files
                .map
                .get(&r.file)
                .ok_or(SpillError::UnknownFile(r.file))?;
            if let Some(why) = &e.broken {
                return Err(SpillError::Corrupt(format!(
                    "file {} has an invalid header: {why}",
                    r.file
                )));
            }
            (e.file.clone(), e.readable_end)
        };
        if r.record_end() > readable_end {
            return Err(SpillError::Corrupt(format!(
                "ref to file {} bytes {}..{} is outside the written area (..{readable_end})",
                r.file,
                r.offset,
                r.record_end()
            )));
        }
        let mut buf = vec![0u8; RECORD_HEADER_LEN + r.len as usize];
        match file.read_exact_at(&mut buf, r.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(SpillError::Corrupt(format!(
                    "ref to file {} offset {} is past the end of the file",
                    r.file, r.offset
                )))
            }
            Err(e) => return Err(io_err("read", &self.path(r.file))(e)),
        }
        format::check_record_for_ref(r, &buf)?;
        buf.drain(..RECORD_HEADER_LEN);
        Ok(buf)
    }

    /// Makes everything written so far durable: an msync of the active file's unsynced range
    /// (files are created and fsynced with their directory before any record goes in, and a
    /// file is synced whole before it stops being active), then drops those pages from the
    /// mapping.
    pub fn sync(&self) -> Result<(), SpillError> {
        let mut w = self.writer.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(SpillError::Poisoned);
        }
        match w.active.as_mut() {
            Some(a) => self.sync_active(a),
            None => Ok(()),
        }
    }

    /// Adds one reference for a ref restored from a checkpoint at startup (call it before
    /// [`Spill::gc`]). Checks only that the ref fits the file; [`Spill::read`] checks the
    /// record.
    pub fn retain(&self, r: &SpillRef) -> Result<(), SpillError> {
        r.check()?;
        let mut files = self.files.lock();
        let e = files
            .map
            .get_mut(&r.file)
            .ok_or(SpillError::UnknownFile(r.file))?;
        if r.record_end() > e.readable_end {
            return Err(SpillError::Corrupt(format!(
                "ref to file {} bytes {}..{} is outside the file (..{})",
                r.file,
                r.offset,
                r.record_end(),
                e.readable_end
            )));
        }
        e.refs += 1;
        e.live_bytes += u64::from(r.len);
        Ok(())
    }

    /// Drops one reference. A file that is not the active one and has no references left is
    /// deleted (files with an invalid header are kept as evidence). Releasing more references
    /// than a file holds is a caller bug: it is logged and ignored.
    pub fn release(&self, r: &SpillRef) {
        let mut files = self.files.lock();
        let active = files.active;
        let Some(e) = files.map.get_mut(&r.file) else {
            error!(file = r.file, "release of a ref to an unknown spill file");
            return;
        };
        if e.refs == 0 {
            error!(
                file = r.file,
                "release of a ref to a spill file with no references"
            );
            return;
        }
        e.refs -= 1;
        e.live_bytes = e.live_bytes.saturating_sub(u64::from(r.len));
        if e.refs == 0 && active != Some(r.file) && e.broken.is_none() {
            self.delete(&mut files, r.file);
        }
    }

    /// After restore: deletes every file that is not active, has no references and a valid
    /// (or absent) header. Returns how many were deleted.
    pub fn gc(&self) -> usize {
        let mut files = self.files.lock();
        let dead: Vec<u32> = files
            .map
            .iter()
            .filter(|(i, e)| Some(**i) != files.active && e.refs == 0 && e.broken.is_none())
            .map(|(i, _)| *i)
            .collect();
        for &i in &dead {
            self.delete(&mut files, i);
        }
        if !dead.is_empty() {
            info!(files = dead.len(), "deleted unreferenced spill files");
        }
        dead.len()
    }

    /// Bytes of spill files on disk (their allocated size); counts against
    /// `--limits.disk-bytes`.
    pub fn disk_bytes(&self) -> u64 {
        self.files.lock().map.values().map(|e| e.size_bytes).sum()
    }

    /// Bytes of chunk data that live references point at.
    pub fn live_bytes(&self) -> u64 {
        self.files.lock().map.values().map(|e| e.live_bytes).sum()
    }

    /// Number of spill files on disk.
    pub fn files(&self) -> usize {
        self.files.lock().map.len()
    }

    /// Whether an earlier sync failed (see [`SpillError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn path(&self, index: u32) -> PathBuf {
        self.dir.join(file_name(index))
    }

    /// Makes the active file's written range durable, then drops the synced whole pages from
    /// the mapping. A failed msync poisons the spill.
    fn sync_active(&self, a: &mut ActiveFile) -> Result<(), SpillError> {
        if a.pos > a.synced {
            // memmap2 aligns the start down to a page boundary and calls msync(MS_SYNC).
            let synced = a
                .map
                .flush_range(a.synced as usize, (a.pos - a.synced) as usize);
            #[cfg(test)]
            let synced = synced.and_then(|()| {
                if self.inject_eio.swap(false, Ordering::AcqRel) {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    Ok(())
                }
            });
            if let Err(e) = synced {
                self.poisoned.store(true, Ordering::Release);
                error!(
                    file = a.index,
                    "spill msync failed, refusing further writes: {e}"
                );
                return Err(io_err("msync", &self.path(a.index))(e));
            }
            a.synced = a.pos;
        }
        // Only whole pages below the synced end: the page holding the end is written again by
        // the next record, and dropping it would only cost a refault.
        let drop_end = a.synced / self.page_size * self.page_size;
        if drop_end > a.dropped {
            // SAFETY: the range is page-aligned and inside the mapping. The mapping is a
            // MAP_SHARED mapping of a regular file, for which MADV_DONTNEED only removes this
            // process's page-table entries: the bytes stay in the page cache and the file (and
            // were just msynced), and a later access faults them back in unchanged. So no
            // memory the program can observe changes. No Rust reference into the mapping
            // exists, and the writer lock (held by our caller) excludes concurrent stores.
            let r = unsafe {
                a.map.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    a.dropped as usize,
                    (drop_end - a.dropped) as usize,
                )
            };
            if let Err(e) = r {
                // Only memory use is at stake, not data.
                warn!(
                    file = a.index,
                    "madvise(DONTNEED) of a spill range failed: {e}"
                );
            }
            a.dropped = drop_end;
        }
        Ok(())
    }

    /// Replaces the active file by a new one. On error nothing changes (except a failed sync
    /// of the old file, which poisons).
    fn roll(&self, w: &mut Writer) -> Result<(), SpillError> {
        if let Some(a) = w.active.as_mut() {
            self.sync_active(a)?;
        }
        let index = u32::try_from(w.next_index)
            .map_err(|_| SpillError::Invalid("spill file index space exhausted".into()))?;
        let (file, map) = self.create_file(index)?;
        w.next_index += 1;
        let new = ActiveFile {
            index,
            map,
            size: self.file_size,
            pos: FILE_HEADER_LEN as u64,
            synced: FILE_HEADER_LEN as u64,
            dropped: 0,
        };
        let old = w.active.replace(new);
        {
            let mut files = self.files.lock();
            files.map.insert(
                index,
                FileEntry {
                    file,
                    size_bytes: self.file_size,
                    readable_end: FILE_HEADER_LEN as u64,
                    refs: 0,
                    live_bytes: 0,
                    broken: None,
                },
            );
            files.active = Some(index);
            if let Some(old) = &old {
                if files.map.get(&old.index).is_some_and(|e| e.refs == 0) {
                    self.delete(&mut files, old.index);
                }
            }
        }
        // Unmaps the old file (outside the table lock).
        drop(old);
        Ok(())
    }

    /// Creates, preallocates, heads, fsyncs (with the directory) and maps file `index`. On
    /// error the file is removed again.
    fn create_file(&self, index: u32) -> Result<(Arc<File>, MmapRaw), SpillError> {
        let path = self.path(index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let prepared = self.prepare(&file, index);
        let mapped = prepared.and_then(|()| {
            // Sound to store through later because the file was just created by us and
            // preallocated to `file_size` bytes, and spill files are never truncated. Other
            // processes modifying the spill directory are out of contract.
            MmapOptions::new()
                .len(self.file_size as usize)
                .map_raw(&file)
                .map_err(|e| ("mmap", e))
        });
        match mapped {
            Ok(map) => Ok((Arc::new(file), map)),
            Err((op, e)) => {
                drop(file);
                // Best effort: a half-made file holds no data, and leaving it would block the
                // retry with the same name.
                let _ = std::fs::remove_file(&path);
                if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    Err(SpillError::DiskFull { file: path })
                } else {
                    Err(io_err(op, &path)(e))
                }
            }
        }
    }

    fn prepare(&self, file: &File, index: u32) -> Result<(), (&'static str, io::Error)> {
        #[cfg(test)]
        if self.inject_enospc.swap(false, Ordering::AcqRel) {
            return Err(("allocate", io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        let len = libc::off_t::try_from(self.file_size).map_err(|_| {
            (
                "allocate",
                io::Error::new(io::ErrorKind::InvalidInput, "file size too large"),
            )
        })?;
        // posix_fallocate reserves the blocks now, so a full disk is an ENOSPC here rather
        // than a SIGBUS on a later store into the mapping. It returns the error number instead
        // of setting errno.
        // SAFETY: `file` is an open descriptor borrowed for the whole call.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if rc != 0 {
            return Err(("allocate", io::Error::from_raw_os_error(rc)));
        }
        file.write_all_at(&format::encode_file_header(index), 0)
            .map_err(|e| ("write header", e))?;
        file.sync_all().map_err(|e| ("fsync", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ("fsync dir", e))
    }

    /// Removes file `index` from the table and the disk. The caller holds the table lock and
    /// has checked that nothing refers to the file and that it is not active (so not mapped).
    fn delete(&self, files: &mut Files, index: u32) {
        debug_assert_ne!(files.active, Some(index));
        files.map.remove(&index);
        let path = self.path(index);
        // Not followed by a directory fsync: a file that reappears after a crash has no
        // references and is collected by the next gc.
        if let Err(e) = std::fs::remove_file(&path) {
            warn!(file = %path.display(), "cannot delete spill file (the next start collects it): {e}");
        }
    }
}

/// A human-readable dump of the spill files in `dir`: every file's header and records with
/// their CRC status, and where and why each walk ended. Which records are live is not known
/// here (that is in the checkpoint).
pub fn inspect(dir: &Path) -> Result<String, SpillError> {
    let mut names: Vec<(u32, String)> = Vec::new();
    let mut other = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match parse_file_name(&name) {
            Some(i) => names.push((i, name)),
            None => other.push(name),
        }
    }
    names.sort();
    other.sort();
    let mut out = format!("spill dir {}: {} files\n", dir.display(), names.len());
    for (_, name) in &names {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        out.push_str(&inspect_bytes(name, &bytes));
    }
    for name in &other {
        out.push_str(&format!("ignored: {name}\n"));
    }
    Ok(out)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpillError + 'a {
    move |source| SpillError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads as much of `buf` as the file holds from offset 0.
fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
