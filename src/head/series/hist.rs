//! A series' native histogram samples: the open histogram chunk (the codec's
//! [`HistogramHeadAppender`], which cuts where Prometheus 2.42's head cuts) and the newest
//! histogram, kept in the closed list's box (`ClosedList`), which only series with closed
//! chunks or histograms allocate: float-only series pay nothing (see
//! `docs/benchmarks.md`, "Memory per active series").
//!
//! A series holds float samples, histogram samples, or both over time: as in Prometheus, a
//! change of value type closes the open chunk, so at most one chunk (XOR or histogram) is
//! open and the closed list stays ordered and disjoint. Closed histogram chunks sit in the
//! same closed list as XOR chunks, with their encoding, so flush, spill and release treat
//! them alike.

use super::*;
use crate::chunk::ChunkError;
use crate::chunk::HistogramHeadAppender;
use crate::model::HistogramValue;
use crate::wal::RefHistogram;

/// What a series keeps for its histograms.
#[derive(Debug, Default)]
pub(super) struct HistState {
    /// The open histogram chunk (none open while the newest sample is a float).
    pub(super) app: HistogramHeadAppender,
    /// The newest sample, while it is a histogram (for the exact-repeat rule).
    pub(super) last: Option<(i64, HistogramValue)>,
    /// What this state adds to the head's series bytes (`Head::index_bytes`, the
    /// `head_series` memory consumer) as last reported: see [`HistState::footprint`].
    pub(super) counted: u64,
}

/// Heap bytes of a histogram's spans, buckets and custom bounds.
fn value_heap_bytes(v: &HistogramValue) -> usize {
    use std::mem::size_of;
    let span = size_of::<crate::model::Span>();
    match v {
        HistogramValue::Int(h) => {
            (h.positive_spans.len() + h.negative_spans.len()) * span
                + (h.positive_buckets.len() + h.negative_buckets.len()) * 8
                + h.custom_values.len() * 8
        }
        HistogramValue::Float(h) => {
            (h.positive_spans.len() + h.negative_spans.len()) * span
                + (h.positive_buckets.len() + h.negative_buckets.len()) * 8
                + h.custom_values.len() * 8
        }
    }
}

fn bucket_count(v: &HistogramValue) -> usize {
    match v {
        HistogramValue::Int(h) => h.positive_buckets.len() + h.negative_buckets.len(),
        HistogramValue::Float(h) => h.positive_buckets.len() + h.negative_buckets.len(),
    }
}

impl HistState {
    /// An estimate of the bytes this state holds, for the memory limit: the box itself,
    /// the open chunk's bytes, and per bucket of the newest histogram its copies (here and
    /// in the appender) and the appender's four per-bucket vectors (values and deltas, 8
    /// bytes each). Cheap (no allocation walk), so it is computed on every histogram append.
    pub(super) fn footprint(&self) -> u64 {
        let last = self.last.as_ref().map_or(0, |(_, v)| {
            let open = if self.app.num_samples() > 0 { 2 } else { 1 };
            open * value_heap_bytes(v) + 4 * 8 * bucket_count(v)
        });
        (std::mem::size_of::<HistState>() + self.app.open_bytes().len() + last) as u64
    }
}

/// The `last_v` a series records while its newest sample is a histogram. Never compared:
/// a float at or before a histogram's timestamp is refused before the float path looks at
/// the bits (see [`SeriesData::float_after_histogram`]).
const HISTOGRAM_LAST_BITS: u64 = 0x7ff4_4849_5354_0000;

/// An open histogram chunk is closed once it reaches this size, whatever Prometheus's cut
/// rules say. Rationale: every tier bounds a chunk (spill records 64 KiB, store objects 2
/// MiB); with at most [`crate::hist::MAX_BUCKETS`] buckets a sample takes at most about
/// 200 KiB, so a chunk stays far below the store's bound. Histograms of real sizes (160
/// buckets by default in client libraries) never reach it within Prometheus's 240-sample
/// cut.
pub(crate) const MAX_OPEN_HISTOGRAM_CHUNK_BYTES: usize = 64 << 10;

impl SeriesData {
    /// Brings the histogram state's counted bytes up to date ([`HistState::footprint`]);
    /// returns the change, for `Head::index_bytes`.
    pub(super) fn account_hist(&mut self) -> i64 {
        let Some(h) = self.closed.hist_mut() else {
            return 0;
        };
        let now = h.footprint();
        let delta = now as i64 - h.counted as i64;
        h.counted = now;
        delta
    }

    /// The histogram held at `t`, searched in the open histogram chunk and the closed
    /// histogram chunks (in memory or spilled: a spilled chunk is read under the series
    /// lock, as [`SeriesData::find`] does). `cache` keeps the last chunk decoded (by its
    /// first and last timestamps), so a retried request of several histograms decodes each chunk once.
    /// A chunk that cannot be read or decoded counts as not holding `t`.
    pub(super) fn find_hist(
        &self,
        t: i64,
        labels: &Labels,
        cache: &mut Option<Vec<(i64, HistogramValue)>>,
    ) -> Option<HistogramValue> {
        fn pick(hs: &[(i64, HistogramValue)], t: i64) -> Option<HistogramValue> {
            hs.binary_search_by_key(&t, |(ts, _)| *ts)
                .ok()
                .map(|i| hs[i].1.clone())
        }
        if let Some(hs) = cache.as_ref() {
            if hs.first().is_some_and(|f| f.0 <= t) && hs.last().is_some_and(|l| l.0 >= t) {
                return pick(hs, t);
            }
        }
        let decoded = |encoding: u8, bytes: &[u8], min_t: i64| {
            match crate::chunk::decode_histogram_chunk(encoding, bytes) {
                Ok(hs) => Some(hs),
                Err(e) => {
                    tracing::error!(series = %labels, min_t, error = %e, "histogram chunk does not decode while looking up a repeated histogram");
                    None
                }
            }
        };
        if let Some(h) = self.closed.hist() {
            let n = h.app.num_samples();
            if n > 0 && (h.app.min_t()..=h.app.max_t()).contains(&t) {
                *cache = decoded(h.app.encoding(), h.app.open_bytes(), h.app.min_t());
                return cache.as_deref().and_then(|hs| pick(hs, t));
            }
        }
        for c in self.closed.iter() {
            if c.min_t > t {
                break; // sorted by min_t
            }
            if c.max_t < t || c.encoding == ENCODING_XOR {
                continue;
            }
            let found = match &c.body {
                Body::Mem(b) => decoded(c.encoding, b, c.min_t),
                Body::Spilled(s) => match s.spill.read(&s.r) {
                    Ok(b) => decoded(c.encoding, &b, c.min_t),
                    Err(e) => {
                        tracing::error!(series = %labels, min_t = c.min_t, error = %e, "spilled chunk unreadable while looking up a repeated histogram");
                        None
                    }
                },
            };
            if let Some(v) = found.as_deref().and_then(|hs| pick(hs, t)) {
                *cache = found;
                return Some(v);
            }
        }
        None
    }

    /// The open histogram chunk's (min_t, max_t), if it has samples.
    pub(super) fn hist_open(&self) -> Option<(i64, i64)> {
        let h = self.closed.hist()?;
        (h.app.num_samples() > 0).then(|| (h.app.min_t(), h.app.max_t()))
    }

    /// Closes the open histogram chunk, if any. Returns its size.
    pub(super) fn cut_hist(&mut self) -> usize {
        let Some(h) = self.closed.hist_mut() else {
            return 0;
        };
        match h.app.force_cut() {
            Some(c) => self.push_closed_hist(c),
            None => 0,
        }
    }

    fn push_closed_hist(
        &mut self,
        (encoding, data, min_t, max_t): (u8, Vec<u8>, i64, i64),
    ) -> usize {
        let len = data.len();
        self.closed.push(ClosedChunk {
            min_t,
            max_t,
            body: Body::Mem(Arc::from(data)),
            flush: FlushState::Pending,
            ooo: false,
            encoding,
        });
        len
    }

    /// Before a float sample at `t` in a series that has had histograms: refuses it if the
    /// newest sample is a histogram at or after `t`; otherwise closes the open histogram
    /// chunk (a change of value type) and returns the bytes closed.
    pub(super) fn float_after_histogram(&mut self, t: i64) -> Result<usize, HeadError> {
        let Some(h) = self.closed.hist_mut() else {
            return Ok(0);
        };
        match h.last {
            Some((last, _)) if t < last => Err(HeadError::OutOfOrder { t, last }),
            Some((last, _)) if t == last => Err(HeadError::DuplicateHistogram { t }),
            Some(_) => {
                h.last = None;
                Ok(self.cut_hist())
            }
            None => Ok(0),
        }
    }

    /// Restores the newest sample from the last histogram chunk a checkpoint had: appends
    /// must follow it. With `reopen` the chunk becomes the open histogram chunk again (the
    /// codec resumes it with the state Prometheus's head would have), and `true` is
    /// returned; otherwise it stays closed and the next histogram opens a new chunk.
    pub(super) fn restore_hist(
        &mut self,
        encoding: u8,
        data: &[u8],
        reopen: bool,
    ) -> Result<bool, ChunkError> {
        if reopen {
            let app = HistogramHeadAppender::from_open_chunk(
                encoding,
                data,
                crate::chunk::DEFAULT_CHUNK_RANGE_MS,
            )?;
            if let Some((t, v)) = app.last() {
                self.set_last(Some((t, HISTOGRAM_LAST_BITS)));
                let h = self.closed.hist_or_insert();
                h.app = app;
                h.last = Some((t, v));
                return Ok(true);
            }
            return Ok(false);
        }
        let last = crate::chunk::decode_histogram_chunk(encoding, data)?.pop();
        if let Some((t, v)) = last {
            self.set_last(Some((t, HISTOGRAM_LAST_BITS)));
            self.closed.hist_or_insert().last = Some((t, v));
        }
        Ok(false)
    }
}

impl Series {
    /// Appends native histogram samples in order, with the float path's rules (see
    /// [`Series::append_with`]) but no out-of-order window: a histogram equal to one held
    /// at its timestamp (newest or older: open chunk, closed chunks in memory or spilled)
    /// is a no-op counted in `duplicates` and logged again (see [`Series::append_with`]
    /// for why); another value (or a float) held there is a duplicate-timestamp error; a
    /// new timestamp older than the newest sample (float or histogram) is out of order,
    /// older than everything held out of bounds. A repeat
    /// is [`crate::hist::equivalent`]: the same observations in the same buckets, bit for
    /// bit; its layout may differ by empty buckets and its hint may differ (after a restart
    /// the newest histogram is read back from its chunk, which widens layouts and keeps
    /// the chunk's hint, not the sender's).
    pub(crate) fn append_histograms(
        &self,
        samples: &[(i64, HistogramValue)],
        mut log: Option<&mut Vec<RefHistogram>>,
    ) -> SeriesAppend {
        let mut out = SeriesAppend::default();
        let mut d = self.data.lock();
        let mut cache = None;
        let refuse = |out: &mut SeriesAppend, e: HeadError| match &mut out.first_error {
            Some((_, n)) => *n += 1,
            None => out.first_error = Some((e, 1)),
        };
        for (t, v) in samples {
            let t = *t;
            if let Err(reason) = crate::hist::validate(v) {
                refuse(&mut out, HeadError::InvalidHistogram { t, reason });
                continue;
            }
            if let Some((last_t, _)) = d.last() {
                if t <= last_t {
                    // At or before the newest: the float rules (see `Series::append_at`),
                    // without an out-of-order window. A float held at `t` is another value.
                    let stored = if t == last_t {
                        d.closed
                            .hist()
                            .and_then(|h| h.last.as_ref())
                            .filter(|(lt, _)| *lt == t)
                            .map(|(_, lv)| lv.clone())
                    } else if d.find(t, &self.labels).is_some() {
                        refuse(&mut out, HeadError::DuplicateHistogram { t });
                        continue;
                    } else {
                        d.find_hist(t, &self.labels, &mut cache)
                    };
                    let repeat = match &stored {
                        Some(sv) => crate::hist::equivalent(sv, v),
                        None if t < last_t => {
                            let e = match d.oldest() {
                                Some(oldest) if t < oldest => HeadError::OutOfBounds { t, oldest },
                                _ => HeadError::OutOfOrder { t, last: last_t },
                            };
                            refuse(&mut out, e);
                            continue;
                        }
                        None => false,
                    };
                    if repeat {
                        out.duplicates += 1;
                        if let Some(l) = log.as_deref_mut() {
                            l.push(RefHistogram {
                                series_ref: self.series_ref(),
                                t,
                                h: v.clone(),
                            });
                        }
                    } else {
                        refuse(&mut out, HeadError::DuplicateHistogram { t });
                    }
                    continue;
                }
            }
            // A change of value type closes the open float chunk.
            if d.open.num_samples() > 0 {
                out.closed_bytes += d.cut() as u64;
            }
            let h = d.closed.hist_or_insert();
            let was_empty = h.app.num_samples() == 0;
            let closed = h.app.append(t, v);
            h.last = Some((t, v.clone()));
            if was_empty || closed.is_some() {
                out.chunks_created += 1;
            }
            if let Some(c) = closed {
                out.closed_bytes += d.push_closed_hist(c) as u64;
            }
            if d.closed
                .hist()
                .is_some_and(|h| h.app.open_bytes().len() >= MAX_OPEN_HISTOGRAM_CHUNK_BYTES)
            {
                out.closed_bytes += d.cut_hist() as u64;
            }
            d.set_last(Some((t, HISTOGRAM_LAST_BITS)));
            out.appended += 1;
            if let Some(l) = log.as_deref_mut() {
                l.push(RefHistogram {
                    series_ref: self.series_ref(),
                    t,
                    h: v.clone(),
                });
            }
        }
        if out.appended > 0 {
            d.last_append = Tick::now();
        }
        out.hist_bytes += d.account_hist();
        out
    }

    /// What the histogram state adds to the head's series bytes (see
    /// [`HistState::footprint`]), as last reported: taken off when the series leaves.
    pub(crate) fn hist_counted(&self) -> u64 {
        self.data.lock().closed.hist().map_or(0, |h| h.counted)
    }

    /// Brings the histogram state's counted bytes up to date after a change outside an
    /// append (a restore); returns the change.
    pub(crate) fn account_hist(&self) -> i64 {
        self.data.lock().account_hist()
    }

    /// The histogram samples in `[mint, maxt]`, appended to `out` (from every chunk the
    /// head holds, spilled ones included).
    pub fn histograms(&self, mint: i64, maxt: i64, out: &mut Vec<(i64, HistogramValue)>) {
        for c in self.chunks(mint, maxt) {
            if c.encoding == ENCODING_XOR {
                continue;
            }
            match crate::chunk::decode_histogram_chunk(c.encoding, &c.data) {
                Ok(hs) => out.extend(hs.into_iter().filter(|(t, _)| (mint..=maxt).contains(t))),
                Err(e) => debug_assert!(false, "head histogram chunk does not decode: {e}"),
            }
        }
    }
}
