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
    /// Appends native histogram samples in order, with the float path's rules: older than
    /// the newest sample (float or histogram) is out of order, the same timestamp with
    /// another value (or kind) is a duplicate-timestamp error, and a repeat of the newest
    /// histogram is a no-op that is logged again (see [`Series::append`] for why). A repeat
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
                if t < last_t {
                    refuse(&mut out, HeadError::OutOfOrder { t, last: last_t });
                    continue;
                }
                if t == last_t {
                    let repeat = d
                        .closed
                        .hist()
                        .and_then(|h| h.last.as_ref())
                        .is_some_and(|(lt, lv)| *lt == t && crate::hist::equivalent(lv, v));
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
        out
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
