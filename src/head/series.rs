//! One series: its labels, its closed chunks and its open head chunk.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::HeadError;
use crate::chunk::{XorAppender, XorIterator, SAMPLES_PER_CHUNK};
use crate::model::Labels;
use crate::wal::RefSample;

/// A series in the head. The labels never change; the chunks sit behind a mutex.
#[derive(Debug)]
pub struct Series {
    labels: Labels,
    /// Global ref, unique across tenants, kept across restarts by the WAL and checkpoints.
    series_ref: u64,
    /// Whether a WAL `Series` record for this series has been appended.
    logged: AtomicBool,
    data: Mutex<SeriesData>,
}

#[derive(Debug)]
struct SeriesData {
    closed: Vec<ClosedChunk>,
    open: XorAppender,
    /// Timestamp of the open chunk's first sample (meaningless while it is empty).
    open_min_t: i64,
    /// Newest sample, once there is one.
    last: Option<(i64, u64)>,
}

/// A full chunk: 120 samples, never appended to again.
#[derive(Debug)]
struct ClosedChunk {
    min_t: i64,
    max_t: i64,
    data: Box<[u8]>,
}

/// A copy of one chunk's bytes and time range, taken for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCopy {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// The XOR chunk (2-byte count and bit stream).
    pub data: Vec<u8>,
}

/// What one series append did.
#[derive(Debug, Default)]
pub(crate) struct SeriesAppend {
    pub(crate) appended: u64,
    pub(crate) duplicates: u64,
    pub(crate) chunks_created: u64,
    /// The first refusal and how many samples were refused in all.
    pub(crate) first_error: Option<(HeadError, u64)>,
}

impl Series {
    pub(crate) fn new(labels: Labels, series_ref: u64) -> Self {
        Self {
            labels,
            series_ref,
            logged: AtomicBool::new(false),
            data: Mutex::new(SeriesData {
                closed: Vec::new(),
                open: XorAppender::new(),
                open_min_t: 0,
                last: None,
            }),
        }
    }

    /// The series' labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The global series ref.
    pub fn series_ref(&self) -> u64 {
        self.series_ref
    }

    /// Whether the WAL already has this series' `Series` record.
    pub fn is_logged(&self) -> bool {
        self.logged.load(Ordering::Acquire)
    }

    /// Records that the WAL has this series' `Series` record.
    pub fn set_logged(&self) {
        self.logged.store(true, Ordering::Release);
    }

    /// Appends samples in order. A sample older than the newest is refused, as is a different
    /// value at the newest timestamp; an exact repeat of the newest sample is ignored.
    ///
    /// With `log`, every appended sample *and every exact repeat* is added to it for the WAL.
    /// Repeats are logged because the original may have reached memory in a push whose WAL
    /// append failed (and was therefore never acknowledged): the client's retry must make it
    /// durable before it is acknowledged. Replay treats the repeat as a no-op.
    pub(crate) fn append(
        &self,
        samples: &[(i64, f64)],
        mut log: Option<&mut Vec<RefSample>>,
    ) -> SeriesAppend {
        let mut out = SeriesAppend::default();
        let mut d = self.data.lock();
        for &(t, v) in samples {
            let bits = v.to_bits();
            if let Some((last_t, last_bits)) = d.last {
                if t <= last_t {
                    let e = if t < last_t {
                        HeadError::OutOfOrder { t, last: last_t }
                    } else if bits != last_bits {
                        HeadError::DuplicateTimestamp { t }
                    } else {
                        out.duplicates += 1;
                        if let Some(l) = log.as_deref_mut() {
                            l.push(RefSample {
                                series_ref: self.series_ref,
                                t,
                                v: bits,
                            });
                        }
                        continue;
                    };
                    match &mut out.first_error {
                        Some((_, n)) => *n += 1,
                        None => out.first_error = Some((e, 1)),
                    }
                    continue;
                }
            }
            if d.open.num_samples() >= SAMPLES_PER_CHUNK {
                d.cut();
            }
            if d.open.num_samples() == 0 {
                d.open_min_t = t;
                out.chunks_created += 1;
            }
            d.open.append(t, v);
            d.last = Some((t, bits));
            out.appended += 1;
            if let Some(l) = log.as_deref_mut() {
                l.push(RefSample {
                    series_ref: self.series_ref,
                    t,
                    v: bits,
                });
            }
        }
        out
    }

    /// Whether the series has a sample in `[mint, maxt]`'s span (by chunk time ranges).
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        let d = self.data.lock();
        match d.time_range() {
            Some((lo, hi)) => lo <= maxt && hi >= mint,
            None => false,
        }
    }

    /// Copies of the chunks that overlap `[mint, maxt]`, oldest first, the open one included.
    pub fn chunks(&self, mint: i64, maxt: i64) -> Vec<ChunkCopy> {
        let d = self.data.lock();
        let mut out: Vec<ChunkCopy> = d
            .closed
            .iter()
            .filter(|c| c.min_t <= maxt && c.max_t >= mint)
            .map(|c| ChunkCopy {
                min_t: c.min_t,
                max_t: c.max_t,
                data: c.data.to_vec(),
            })
            .collect();
        if let Some((last_t, _)) = d.last {
            if d.open.num_samples() > 0 && d.open_min_t <= maxt && last_t >= mint {
                out.push(ChunkCopy {
                    min_t: d.open_min_t,
                    max_t: last_t,
                    data: d.open.bytes().to_vec(),
                });
            }
        }
        out
    }

    /// The samples in `[mint, maxt]`, appended to `out` as (t, value).
    pub fn samples(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        for c in self.chunks(mint, maxt) {
            let Ok(mut it) = XorIterator::new(&c.data) else {
                debug_assert!(false, "head chunk does not decode");
                continue;
            };
            let mut next = it.seek(mint);
            while let Some(Ok((t, v))) = next {
                if t > maxt {
                    break;
                }
                out.push((t, v));
                next = it.next();
            }
        }
    }
}

/// One chunk of a series as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// First sample's timestamp.
    pub min_t: i64,
    /// Last sample's timestamp.
    pub max_t: i64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

impl Series {
    /// Every chunk, oldest first, the open one last: for a checkpoint.
    pub fn snapshot(&self) -> Vec<SnapshotChunk> {
        self.chunks(i64::MIN, i64::MAX)
            .into_iter()
            .map(|c| SnapshotChunk {
                min_t: c.min_t,
                max_t: c.max_t,
                data: c.data,
            })
            .collect()
    }

    /// Restores chunks from a checkpoint into an empty series: all but the last are closed,
    /// the last becomes the open chunk (appends resume exactly where they stopped).
    /// Returns the number of chunks restored.
    pub(crate) fn restore(
        &self,
        chunks: Vec<SnapshotChunk>,
    ) -> Result<usize, crate::chunk::ChunkError> {
        let mut d = self.data.lock();
        debug_assert!(
            d.last.is_none() && d.closed.is_empty(),
            "restore into a used series"
        );
        let n = chunks.len();
        let mut it = chunks.into_iter().peekable();
        while let Some(c) = it.next() {
            if it.peek().is_some() {
                d.closed.push(ClosedChunk {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    data: c.data.into_boxed_slice(),
                });
                continue;
            }
            // Decoding the chunk once rebuilds the appender and yields the newest sample.
            let open = XorAppender::from_chunk(&c.data)?;
            d.last = open.last();
            d.open = open;
            d.open_min_t = c.min_t;
        }
        Ok(n)
    }
}

impl SeriesData {
    fn time_range(&self) -> Option<(i64, i64)> {
        let (last_t, _) = self.last?;
        let first = self.closed.first().map_or(self.open_min_t, |c| c.min_t);
        Some((first, last_t))
    }

    /// Closes the open chunk and starts a fresh one.
    fn cut(&mut self) {
        let full = std::mem::take(&mut self.open);
        let max_t = self.last.map_or(self.open_min_t, |(t, _)| t);
        self.closed.push(ClosedChunk {
            min_t: self.open_min_t,
            max_t,
            data: full.into_bytes().into_boxed_slice(),
        });
    }
}
