//! The durable write path: a push goes into the head, then into the WAL, and is acknowledged
//! once the WAL has synced it. Replay at start rebuilds the head from the newest checkpoint
//! and the segments after it.
//!
//! **Invariant:** a push is acknowledged only after [`Ingester::wait_durable`] of its WAL
//! position returned `Ok`.
//!
//! Order within a push: samples are appended to the head first (which decides what is
//! accepted), then logged. If the WAL append fails (disk full, poisoned), the push is
//! refused with a 503 and the samples stay in memory unlogged; Prometheus retries, the
//! retried samples are exact repeats, and repeats are logged too (see `Series::append`), so
//! the retry is acknowledged only once it is durable. A series' `Series` record is written
//! with the first push that logs successfully after the series was created.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::head::{
    describe_raw, AppendReport, Head, HeadError, Series, SnapshotChunk, TenantHead, WalLog,
};
use crate::model::TenantId;
use crate::proto::WriteBatch;
use crate::spill::{SpillError, SpillRef};
use crate::wal::{
    ApplyError, CheckpointChunk, CheckpointSeries, CheckpointStats, Record, RefSample, ReplayItem,
    ReplayStats, Wal, WalConfig, WalError, WalPos,
};

/// Everything that can go wrong on the durable write path. The API classifies it in one
/// place (`api::error`, `impl From<IngestError> for ApiError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The WAL refused or failed: disk full, poisoned by a failed sync, closed, a record too
    /// large, or (at open) a replay that found corruption.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The spill files could not be synced before a checkpoint that refers to them, so the
    /// checkpoint was not written (the WAL segments still hold everything).
    #[error("syncing the spill files before a checkpoint: {0}")]
    SpillSync(#[source] SpillError),
}

/// Samples per WAL `Samples` record: keeps every record far below a segment's size.
const SAMPLES_PER_RECORD: usize = 8192;

/// The head and its WAL.
#[derive(Debug)]
pub struct Ingester {
    head: Arc<Head>,
    wal: Arc<Wal>,
    /// One checkpoint at a time (the schedule and the disk-budget balancer both ask), and
    /// when the last one finished.
    checkpointing: parking_lot::Mutex<Instant>,
}

impl Ingester {
    /// Replays the WAL in `dir` into `head` (which must be empty) and opens it for appends.
    pub fn open(
        head: Arc<Head>,
        dir: &Path,
        cfg: WalConfig,
    ) -> Result<(Self, ReplayStats), IngestError> {
        let mut replayer = Replayer {
            head: &head,
            by_ref: FxHashMap::default(),
            unknown_refs: 0,
            run: Vec::new(),
            progress: Progress::default(),
        };
        let (wal, stats) = Wal::open_path(dir, cfg, |item| replayer.apply(item))?;
        let p = &replayer.progress;
        let secs = p.started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            checkpoint_series = p.checkpoint_series,
            checkpoint_samples = p.checkpoint_samples,
            segment_records = p.records,
            segment_samples = p.segment_samples,
            samples_per_sec = ((p.checkpoint_samples + p.segment_samples) as f64 / secs) as u64,
            "replay applied"
        );
        if replayer.unknown_refs > 0 {
            tracing::warn!(
                samples = replayer.unknown_refs,
                "replay found samples of series with no Series record; they were skipped"
            );
        }
        Ok((
            Self {
                head,
                wal: Arc::new(wal),
                checkpointing: parking_lot::Mutex::new(Instant::now()),
            },
            stats,
        ))
    }

    /// The WAL.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Appends a decoded push to the tenant's head and to the WAL. The push may be
    /// acknowledged once [`Ingester::wait_durable`] of the returned position succeeds.
    pub fn append(
        &self,
        tenant: &TenantHead,
        batch: &WriteBatch<'_>,
        log: &mut WalLog,
    ) -> Result<(AppendReport, Option<WalPos>), IngestError> {
        log.clear();
        let mut report = tenant.append(batch, Some(log));
        // Exemplars and metadata (crate::exmeta): stored after the head (exemplars only of
        // series it holds), logged in the same append, under the gate that keeps the WAL in
        // the stores' order and out of a checkpoint's copy of them.
        let exmeta = self.head.exmeta();
        let mut _gate = None;
        let mut ex_log = crate::exmeta::ExMetaLog::default();
        if !batch.exemplars.is_empty() || !batch.metadata.is_empty() {
            _gate = Some(exmeta.gate());
            let grace = self.head.creation_grace_period(tenant.id());
            let max_t = now_ms().saturating_add(grace.as_millis().min(i64::MAX as u128) as i64);
            ex_log = exmeta.append(
                tenant.id(),
                batch,
                |raw| tenant.has_series_raw(raw),
                max_t,
                &mut report,
            );
            if ex_log.is_empty() {
                _gate = None;
            }
        }
        if log.is_empty() && ex_log.is_empty() {
            return Ok((report, None));
        }
        let mut records: Vec<Record<'_>> = Vec::with_capacity(log.series.len() + 3);
        let tenant_id = tenant.id().as_str();
        for s in &log.series {
            records.push(series_record(tenant_id, s));
        }
        for part in log.samples.chunks(SAMPLES_PER_RECORD) {
            records.push(Record::Samples(Cow::Borrowed(part)));
        }
        for part in crate::hist::record_parts(&log.histograms) {
            records.push(Record::Histograms(Cow::Borrowed(part)));
        }
        for part in crate::hist::record_parts(&log.float_histograms) {
            records.push(Record::FloatHistograms(Cow::Borrowed(part)));
        }
        records.extend(ex_log.into_records(tenant_id));
        let pos = self.wal.append(&records)?;
        for s in &log.series {
            s.set_logged();
        }
        Ok((report, Some(pos)))
    }

    /// Like [`Ingester::append`], after refusing the samples of the batch whose timestamps
    /// are more than `grace` after the wall clock (see [`refuse_future_samples`]); those are
    /// in the report like every other per-sample refusal, and the rest is appended.
    pub fn append_checked(
        &self,
        tenant: &TenantHead,
        batch: &mut WriteBatch<'_>,
        log: &mut WalLog,
        grace: Duration,
    ) -> Result<(AppendReport, Option<WalPos>), IngestError> {
        let mut refused = AppendReport::default();
        refuse_future_samples(tenant, batch, now_ms(), grace, &mut refused);
        let (mut report, pos) = self.append(tenant, batch, log)?;
        merge_refusals(refused, &mut report);
        Ok((report, pos))
    }

    /// Returns once everything up to `pos` is on disk.
    pub async fn wait_durable(&self, pos: WalPos) -> Result<(), IngestError> {
        Ok(self.wal.wait_durable(pos).await?)
    }

    /// Records in the WAL that the chunks of each `(series_ref, max_t)` up to `max_t` are in
    /// the store, so a restart does not upload them again. Not waited on: a mark lost in a
    /// crash only means an upload is repeated, which is harmless.
    pub fn log_flushed(&self, marks: &[(u64, i64)]) -> Result<(), IngestError> {
        const PER_APPEND: usize = 4096;
        for part in marks.chunks(PER_APPEND) {
            let records: Vec<Record<'_>> = part
                .iter()
                .map(|&(series_ref, max_t)| Record::FlushMark { series_ref, max_t })
                .collect();
            self.wal.append(&records)?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the whole head at a fresh segment boundary, then lets the WAL
    /// drop the segments it no longer needs. Ingestion goes on meanwhile.
    pub fn checkpoint(&self) -> Result<CheckpointStats, IngestError> {
        let mut last = self.checkpointing.lock();
        let r = self.checkpoint_locked();
        *last = Instant::now();
        r
    }

    /// A checkpoint, unless one finished less than `min_age` ago or one is being written.
    /// For the disk-budget balancer: refused pushes do not grow the WAL, so the size
    /// trigger of the schedule would not fire, yet a checkpoint is what frees WAL segments.
    pub fn checkpoint_if_older(
        &self,
        min_age: Duration,
    ) -> Option<Result<CheckpointStats, IngestError>> {
        let mut last = self.checkpointing.try_lock()?;
        if last.elapsed() < min_age {
            return None;
        }
        let r = self.checkpoint_locked();
        *last = Instant::now();
        Some(r)
    }

    fn checkpoint_locked(&self) -> Result<CheckpointStats, IngestError> {
        // The segments before the cut go once the checkpoint is written, and the checkpoint
        // holds series only: the exemplar and metadata stores are logged again right after
        // the cut, with no push's records in between (see `crate::exmeta`).
        let n = {
            let exmeta = self.head.exmeta();
            let _gate = exmeta.gate();
            let n = self.wal.cut()?;
            exmeta.snapshot(|r| self.wal.append_copy(std::slice::from_ref(&r)).map(drop))?;
            n
        };
        // Spilled chunks are referenced, not copied: their bytes must be durable first.
        // (The head only swaps a chunk for its spilled copy after a sync, so every reference
        // the snapshot sees is covered.)
        if let Some(spill) = self.head.spill() {
            spill.sync().map_err(IngestError::SpillSync)?;
        }
        // Everything appended before the cut is in the head already (the head is written
        // first), so this snapshot covers at least the segments before `n`.
        let heads = self.head.tenant_heads();
        let series = heads.iter().flat_map(|t| {
            let tenant = t.id().to_string();
            t.all_series()
                .into_iter()
                .map(move |s| checkpoint_series(&tenant, &s))
        });
        Ok(self.wal.checkpoint(n, series)?)
    }
}

/// The wall clock in ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Removes from `batch` every sample and native histogram sample whose timestamp is more
/// than `grace` after `now_ms`, and records each series that had one in `report` (one entry
/// per series, naming it and its first such timestamp, samples before histograms) and in
/// `weft_samples_rejected_total{reason="too_far_in_future"}`. Returns how many samples and
/// histograms were removed.
///
/// Before, a sample at now × 10⁶ (nanoseconds from a buggy client) was accepted; every
/// correct sample of its series after it was then refused as out of order, and the WAL
/// replayed the bad one at every restart, so the series stayed blocked for good.
///
/// Every range stays right: samples and histograms are compacted in place and each series'
/// ranges re-pointed; exemplars are not moved. A series left with nothing is dropped; one
/// whose every sample and histogram was refused loses its exemplars with them (they belong
/// to those samples), while a series that came with exemplars only passes unchanged.
pub fn refuse_future_samples(
    tenant: &TenantHead,
    batch: &mut WriteBatch<'_>,
    now_ms: i64,
    grace: Duration,
    report: &mut AppendReport,
) -> u64 {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let max_t = now_ms.saturating_add(grace_ms);
    if batch.samples.iter().all(|&(t, _)| t <= max_t)
        && batch.histograms.iter().all(|(t, _)| *t <= max_t)
    {
        return 0;
    }
    let mut removed = 0u64;
    let (mut write_s, mut write_h) = (0usize, 0usize);
    for i in 0..batch.series.len() {
        let s = batch.series[i];
        let mut first_bad = None;
        let mut bad = 0u64;
        // Swaps move kept entries forward; `write <= j`, so nothing unvisited is disturbed.
        let new_start = write_s;
        for j in s.samples_start as usize..s.samples_end as usize {
            if batch.samples[j].0 > max_t {
                first_bad.get_or_insert(batch.samples[j].0);
                bad += 1;
            } else {
                batch.samples.swap(write_s, j);
                write_s += 1;
            }
        }
        let new_h_start = write_h;
        for j in s.histograms_start as usize..s.histograms_end as usize {
            if batch.histograms[j].0 > max_t {
                first_bad.get_or_insert(batch.histograms[j].0);
                bad += 1;
            } else {
                batch.histograms.swap(write_h, j);
                write_h += 1;
            }
        }
        // `write_*` never pass the ends, which fit in u32 (the decoder made them).
        let w = &mut batch.series[i];
        (w.samples_start, w.samples_end) = (new_start as u32, write_s as u32);
        (w.histograms_start, w.histograms_end) = (new_h_start as u32, write_h as u32);
        if let Some(t) = first_bad {
            if w.num_samples() == 0 && w.num_histograms() == 0 {
                w.exemplars_end = w.exemplars_start;
            }
            removed += bad;
            let e = HeadError::TooFarInFuture {
                t,
                now: now_ms,
                grace_ms,
            };
            tenant.count_refused(&e, bad);
            let labels = &batch.labels[s.labels_start as usize..s.labels_end as usize];
            report.push_error(|| describe_raw(labels), e, bad);
        }
    }
    batch.samples.truncate(write_s);
    batch.histograms.truncate(write_h);
    // A series left with nothing must not reach the head, which would create it empty (and
    // so keep a tenant that stored nothing).
    batch
        .series
        .retain(|s| s.num_samples() > 0 || s.num_histograms() > 0 || s.num_exemplars() > 0);
    removed
}

/// Adds the refusals in `earlier` (found before the head) to `report`, listing them first.
fn merge_refusals(earlier: AppendReport, report: &mut AppendReport) {
    if earlier.error_count == 0 {
        return;
    }
    report.error_count += earlier.error_count;
    report.rejected += earlier.rejected;
    report.any_bad_data |= earlier.any_bad_data;
    let later = std::mem::replace(&mut report.errors, earlier.errors);
    let room = AppendReport::MAX_ERRORS.saturating_sub(report.errors.len());
    report.errors.extend(later.into_iter().take(room));
}

fn series_record<'a>(tenant: &'a str, s: &'a Series) -> Record<'a> {
    Record::Series {
        series_ref: s.series_ref(),
        tenant: Cow::Borrowed(tenant),
        labels: s
            .labels()
            .iter()
            .map(|l| (Cow::Borrowed(&*l.name), Cow::Borrowed(&*l.value)))
            .collect(),
    }
}

fn checkpoint_series(tenant: &str, s: &Series) -> CheckpointSeries {
    CheckpointSeries {
        series_ref: s.series_ref(),
        tenant: tenant.to_string(),
        labels: s
            .labels()
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect(),
        chunks: s
            .snapshot()
            .into_iter()
            .map(|c| {
                let (data, spilled) = match c.spilled {
                    Some(r) => {
                        let mut b = Vec::with_capacity(SpillRef::ENCODED_LEN);
                        r.encode(&mut b);
                        (b, true)
                    }
                    None => (c.data, false),
                };
                CheckpointChunk {
                    min_t: c.min_t,
                    max_t: c.max_t,
                    data,
                    flushed: c.flushed,
                    spilled,
                    ooo: c.ooo,
                    encoding: c.encoding,
                }
            })
            .collect(),
    }
}

/// Replay progress, logged every few seconds so a long replay is visibly alive.
#[derive(Debug)]
struct Progress {
    started: Instant,
    last_log: Instant,
    checkpoint_series: u64,
    checkpoint_samples: u64,
    records: u64,
    segment_samples: u64,
}

impl Default for Progress {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last_log: now,
            checkpoint_series: 0,
            checkpoint_samples: 0,
            records: 0,
            segment_samples: 0,
        }
    }
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(2);

    fn maybe_log(&mut self) {
        if self.last_log.elapsed() < Self::EVERY {
            return;
        }
        self.last_log = Instant::now();
        let samples = self.checkpoint_samples + self.segment_samples;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            checkpoint_series = self.checkpoint_series,
            segment_records = self.records,
            samples,
            samples_per_sec = (samples as f64 / secs) as u64,
            "replaying"
        );
    }
}

/// Applies replayed checkpoint series and WAL records to the head.
struct Replayer<'h> {
    head: &'h Arc<Head>,
    by_ref: FxHashMap<u64, (Arc<TenantHead>, Arc<Series>)>,
    unknown_refs: u64,
    /// Consecutive samples of one series, appended under one lock.
    run: Vec<(i64, f64)>,
    progress: Progress,
}

impl Replayer<'_> {
    fn apply(&mut self, item: ReplayItem<'_>) -> Result<(), ApplyError> {
        self.progress.maybe_log();
        match item {
            ReplayItem::Series(cs) => {
                self.progress.checkpoint_series += 1;
                // Every chunk starts with its sample count (2 bytes, big-endian).
                self.progress.checkpoint_samples += cs
                    .chunks
                    .iter()
                    .filter(|c| !c.spilled)
                    .filter_map(|c| c.data.get(..2))
                    .map(|n| u64::from(u16::from_be_bytes([n[0], n[1]])))
                    .sum::<u64>();
                let tenant = TenantId::parse(&cs.tenant)?;
                let labels: Vec<(&str, &str)> = cs
                    .labels
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let series = self.head.restore_series(&tenant, cs.series_ref, &labels)?;
                let th = self.head.tenant_or_create(&tenant);
                let chunks = cs
                    .chunks
                    .into_iter()
                    .map(|c| {
                        let spilled = if c.spilled {
                            Some(SpillRef::decode(&c.data).map_err(|_| {
                                ApplyError::from(crate::wal::RecordError::Malformed(
                                    "bad spill reference in checkpoint chunk",
                                ))
                            })?)
                        } else {
                            None
                        };
                        Ok(SnapshotChunk {
                            min_t: c.min_t,
                            max_t: c.max_t,
                            data: if c.spilled { Vec::new() } else { c.data },
                            flushed: c.flushed,
                            spilled,
                            ooo: c.ooo,
                            encoding: c.encoding,
                        })
                    })
                    .collect::<Result<Vec<_>, ApplyError>>()?;
                th.restore_chunks(&series, chunks)?;
                self.by_ref.insert(cs.series_ref, (th, series));
            }
            ReplayItem::Record(Record::Series {
                series_ref,
                tenant,
                labels,
            }) => {
                self.progress.records += 1;
                if !self.by_ref.contains_key(&series_ref) {
                    let tenant = TenantId::parse(&tenant)?;
                    let labels: Vec<(&str, &str)> =
                        labels.iter().map(|(n, v)| (&**n, &**v)).collect();
                    let series = self.head.restore_series(&tenant, series_ref, &labels)?;
                    let th = self.head.tenant_or_create(&tenant);
                    self.by_ref.insert(series_ref, (th, series));
                }
            }
            ReplayItem::Record(Record::Samples(samples)) => {
                self.progress.records += 1;
                self.progress.segment_samples += samples.len() as u64;
                self.apply_samples(&samples)
            }
            ReplayItem::Record(Record::FlushMark { series_ref, max_t }) => {
                self.progress.records += 1;
                if let Some((th, s)) = self.by_ref.get(&series_ref) {
                    th.apply_flush_mark(s, max_t);
                }
            }
            ReplayItem::Record(Record::Histograms(hs) | Record::FloatHistograms(hs)) => {
                self.progress.records += 1;
                self.progress.segment_samples += hs.len() as u64;
                self.apply_histograms(&hs);
            }
            ReplayItem::Record(Record::Exemplars { tenant, exemplars }) => {
                self.progress.records += 1;
                let tenant = TenantId::parse(&tenant)?;
                self.head.exmeta().replay_exemplars(&tenant, &exemplars);
            }
            ReplayItem::Record(Record::Metadata { tenant, entries }) => {
                self.progress.records += 1;
                let tenant = TenantId::parse(&tenant)?;
                self.head.exmeta().replay_metadata(&tenant, &entries);
            }
        }
        Ok(())
    }

    fn apply_histograms(&mut self, hs: &[crate::wal::RefHistogram]) {
        let mut i = 0;
        let mut run = Vec::new();
        while i < hs.len() {
            let r = hs[i].series_ref;
            run.clear();
            while i < hs.len() && hs[i].series_ref == r {
                run.push((hs[i].t, hs[i].h.clone()));
                i += 1;
            }
            match self.by_ref.get(&r) {
                Some((th, s)) => {
                    th.append_replayed_histograms(s, &run);
                }
                None => self.unknown_refs += run.len() as u64,
            }
        }
    }

    fn apply_samples(&mut self, samples: &[RefSample]) {
        let mut i = 0;
        while i < samples.len() {
            let r = samples[i].series_ref;
            self.run.clear();
            while i < samples.len() && samples[i].series_ref == r {
                self.run.push((samples[i].t, f64::from_bits(samples[i].v)));
                i += 1;
            }
            match self.by_ref.get(&r) {
                Some((th, s)) => {
                    th.append_replayed(s, &self.run);
                }
                None => self.unknown_refs += self.run.len() as u64,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::head::HeadConfig;
    use crate::metrics::Metrics;
    use crate::spill::{Spill, SpillConfig, MIN_FILE_SIZE_BYTES};
    use crate::wal::SyncMode;

    /// Before, a sample at now × 10⁶ was stored and blocked its series for good.
    #[test]
    fn far_future_samples_are_refused_and_the_rest_of_the_push_is_appended() {
        use crate::proto::{WriteBatch, WriteSeries};
        let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
        let th = head
            .tenant_for_push(&TenantId::parse("t").unwrap())
            .unwrap();
        let now = 1_700_000_000_000i64;
        let grace = Duration::from_secs(600);
        let up: [(&[u8], &[u8]); 1] = [(b"__name__", b"up")];
        let down: [(&[u8], &[u8]); 1] = [(b"__name__", b"down")];
        let mut batch = WriteBatch {
            series: vec![
                WriteSeries {
                    labels_start: 0,
                    labels_end: 1,
                    samples_start: 0,
                    samples_end: 3,
                    ..WriteSeries::default()
                },
                WriteSeries {
                    labels_start: 1,
                    labels_end: 2,
                    samples_start: 3,
                    samples_end: 5,
                    ..WriteSeries::default()
                },
            ],
            labels: vec![up[0], down[0]],
            // up: ok, nanoseconds, at the edge of the grace; down: ok, 1 ms past it.
            samples: vec![
                (now - 1000, 1.0),
                (now * 1_000_000, 2.0),
                (now + 600_000, 3.0),
                (now, 4.0),
                (now + 600_001, 5.0),
            ],
            ..WriteBatch::default()
        };
        let mut report = AppendReport::default();
        let removed = refuse_future_samples(&th, &mut batch, now, grace, &mut report);
        assert_eq!(removed, 2);
        assert_eq!(
            batch.samples,
            vec![(now - 1000, 1.0), (now + 600_000, 3.0), (now, 4.0)]
        );
        assert_eq!(
            (batch.series[0].samples_start, batch.series[0].samples_end),
            (0, 2)
        );
        assert_eq!(
            (batch.series[1].samples_start, batch.series[1].samples_end),
            (2, 3)
        );
        // A series whose every sample was too far ahead leaves the batch.
        let mut only_future = WriteBatch {
            series: vec![batch.series[0]],
            labels: vec![up[0]],
            samples: vec![(now * 1_000_000, 1.0), (now + 600_001, 2.0)],
            ..WriteBatch::default()
        };
        only_future.series[0].samples_end = 2;
        let mut r = AppendReport::default();
        assert_eq!(
            refuse_future_samples(&th, &mut only_future, now, grace, &mut r),
            2
        );
        assert!(only_future.series.is_empty() && only_future.samples.is_empty());
        assert_eq!(r.error_count, 1);
        assert_eq!(report.error_count, 2);
        assert_eq!(report.rejected, 2);
        assert!(report.any_bad_data);
        let msg = format!("{}: {}", report.errors[0].error, report.errors[0].series);
        assert!(msg.contains("too far in the future"), "{msg}");
        assert!(msg.contains(&(now * 1_000_000).to_string()), "{msg}");
        assert!(msg.contains("up"), "{msg}");
        let r = th.append(&batch, None);
        assert_eq!(r.appended, 3);
        assert_eq!(r.error_count, 0);
    }

    /// Before, histograms were not checked for the future and a series whose samples were
    /// all refused was dropped even if it still had histograms ranges to keep right.
    #[test]
    fn far_future_histograms_are_refused_and_every_range_stays_right() {
        use crate::model::{Histogram, HistogramValue};
        use crate::proto::{WriteBatch, WriteExemplar, WriteSeries};
        let head = Head::new(HeadConfig::default(), Arc::new(Metrics::new()));
        let th = head
            .tenant_for_push(&TenantId::parse("t").unwrap())
            .unwrap();
        let now = 1_700_000_000_000i64;
        let grace = Duration::from_secs(600);
        let h = |count| {
            HistogramValue::Int(Histogram {
                count,
                ..Histogram::default()
            })
        };
        let ex = |i: u32| WriteExemplar {
            labels_start: i,
            labels_end: i,
            value: f64::from(i),
            timestamp: now,
        };
        let names: [(&[u8], &[u8]); 4] = [
            (b"__name__", b"a"),
            (b"__name__", b"b"),
            (b"__name__", b"c"),
            (b"__name__", b"d"),
        ];
        let mut batch = WriteBatch {
            series: vec![
                // a: 1 ok sample, 1 future histogram, 1 ok histogram, 1 exemplar.
                WriteSeries {
                    labels_start: 0,
                    labels_end: 1,
                    samples_start: 0,
                    samples_end: 1,
                    histograms_start: 0,
                    histograms_end: 2,
                    exemplars_start: 0,
                    exemplars_end: 1,
                },
                // b: only a future histogram, and an exemplar: leaves the batch whole.
                WriteSeries {
                    labels_start: 1,
                    labels_end: 2,
                    histograms_start: 2,
                    histograms_end: 3,
                    exemplars_start: 1,
                    exemplars_end: 2,
                    ..WriteSeries::default()
                },
                // c: exemplars only: passes unchanged.
                WriteSeries {
                    labels_start: 2,
                    labels_end: 3,
                    samples_start: 1,
                    samples_end: 1,
                    histograms_start: 3,
                    histograms_end: 3,
                    exemplars_start: 2,
                    exemplars_end: 3,
                },
                // d: a future sample and an ok histogram.
                WriteSeries {
                    labels_start: 3,
                    labels_end: 4,
                    samples_start: 1,
                    samples_end: 2,
                    histograms_start: 3,
                    histograms_end: 4,
                    exemplars_start: 3,
                    exemplars_end: 3,
                },
            ],
            labels: names.to_vec(),
            samples: vec![(now, 1.0), (now + 600_001, 2.0)],
            histograms: vec![
                (now * 1000, h(1)),
                (now, h(2)),
                (now + 600_001, h(3)),
                (now - 5, h(4)),
            ],
            exemplars: vec![ex(0), ex(1), ex(2)],
            ..WriteBatch::default()
        };
        let mut report = AppendReport::default();
        let removed = refuse_future_samples(&th, &mut batch, now, grace, &mut report);
        assert_eq!(removed, 3);
        assert_eq!(report.error_count, 3);
        assert_eq!(batch.samples, vec![(now, 1.0)]);
        assert_eq!(batch.histograms, vec![(now, h(2)), (now - 5, h(4))]);
        let got: Vec<_> = batch
            .series
            .iter()
            .map(|s| {
                (
                    batch.labels[s.labels_start as usize].1,
                    (s.samples_start, s.samples_end),
                    (s.histograms_start, s.histograms_end),
                    (s.exemplars_start, s.exemplars_end),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"a"[..], (0, 1), (0, 1), (0, 1)),
                (&b"c"[..], (1, 1), (1, 1), (2, 3)),
                (&b"d"[..], (1, 1), (1, 2), (3, 3)),
            ]
        );
        // Nothing in the future: the batch is untouched.
        let before = format!("{batch:?}");
        assert_eq!(
            refuse_future_samples(&th, &mut batch, now, grace, &mut report),
            0
        );
        assert_eq!(format!("{batch:?}"), before);
    }

    /// Before, a failed spill sync before a checkpoint came back as a `WalError::Io` holding
    /// the spill error as a string, so nothing could tell it from a WAL failure.
    #[test]
    fn failed_spill_sync_before_a_checkpoint_is_its_own_error_and_leaves_the_wal_alone() {
        let dir = tempfile::tempdir().unwrap();
        let head = Arc::new(Head::new(HeadConfig::default(), Arc::new(Metrics::new())));
        let spill = Arc::new(
            Spill::open(SpillConfig {
                dir: dir.path().join("spill"),
                file_size: MIN_FILE_SIZE_BYTES,
            })
            .unwrap(),
        );
        head.set_spill(spill.clone());
        let wal_dir = dir.path().join("wal");
        let (ing, _) = Ingester::open(
            head,
            &wal_dir,
            WalConfig {
                sync: SyncMode::Always,
                ..WalConfig::default()
            },
        )
        .unwrap();
        // Something unsynced in the spill, so that the checkpoint's sync has work to fail.
        spill.write(1, 0, 0, b"chunk").unwrap();
        spill.inject_eio.store(true, Ordering::SeqCst);
        let err = ing.checkpoint().unwrap_err();
        assert!(matches!(err, IngestError::SpillSync(_)), "{err}");
        assert!(!ing.wal().is_poisoned(), "the WAL itself did not fail");
        let checkpoints = std::fs::read_dir(&wal_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint."))
            .count();
        assert_eq!(
            checkpoints, 0,
            "no checkpoint may refer to unsynced spill data"
        );
        // The spill stays poisoned (a failed msync is never retried): so do checkpoints.
        assert!(matches!(
            ing.checkpoint(),
            Err(IngestError::SpillSync(SpillError::Poisoned))
        ));
    }
}
