//! Selecting series, chunks and samples for a tenant and a time range, over every tier:
//! the head (open, closed and retained chunks), spill files, the cache and the store.
//!
//! A query runs in two steps:
//! 1. [`Querier::select`] (async) finds the matching series in the head and in the store
//!    catalog's objects, and merges them by label set;
//! 2. [`Querier::fetch_remote`] (async) reads the store chunks a series needs, except those
//!    the head still holds (a chunk retained after its flush is read from memory), and
//!    [`Selected::into_chunks`] (sync, blocking: it may read spill files) merges every tier
//!    into one ordered list without repeats (see [`merge`]).
//!
//! A remote read is planned as a whole by [`Querier::prepare`] (see `plan.rs`): every query
//! selected and fetched within one [`ReadBudget`], before the answer starts.
//!
//! Nothing from the store can fail a query: a store read that fails or misses the deadline
//! becomes a warning, and the answer is partial. The store tier itself keeps reads short
//! while the store counts as down (the circuit is open).

pub mod merge;
mod plan;

pub use plan::{Cancel, CancelOnDrop, Prepared, QueryError, ReadBudget, ReadQuery};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::head::{ChunkCopy, ChunkHandle, Head};
use crate::model::{Labels, Matcher, TenantId};
use crate::pressure::Memory;
use crate::store::catalog::{Catalog, RemoteChunk};

/// Most warnings one answer carries; further ones are counted in the last.
const MAX_WARNINGS: usize = 10;

/// The answer to a query, and anything that makes it less than complete.
#[derive(Debug, Default)]
pub struct Answer<T> {
    /// The data.
    pub data: T,
    /// Why the answer may be partial (empty when it is complete).
    pub warnings: Vec<String>,
}

/// One selected series: its labels, handles on its head chunks, and its chunks in the store.
///
/// The head's chunks are picked (handles taken) when the series is selected, before the store
/// is asked: the flusher tells the catalog an object must be read from the store before it
/// drops that object's chunks from memory, so every chunk is in the handles or in the
/// selection. A handle shares an in-memory chunk's bytes with the head (no copy) and keeps a
/// spilled chunk's file alive until [`Selected::into_chunks`] reads it.
#[derive(Debug)]
pub struct Selected {
    /// The labels.
    pub labels: Labels,
    /// The head's chunks in the range (memory and spill), ordered and disjoint.
    pub head: Vec<ChunkHandle>,
    /// Chunks in the store overlapping the range (emptied once fetched).
    pub remote: Vec<RemoteChunk>,
    /// Store chunks read by [`Querier::fetch_remote`].
    pub fetched: Vec<ChunkCopy>,
}

impl Selected {
    /// Every chunk overlapping `[mint, maxt]`: the head's (spilled ones read from their
    /// files here, so call it off the async runtime) and the fetched store chunks, ordered,
    /// without repeats. Returns the labels with them.
    pub fn into_chunks(self, mint: i64, maxt: i64) -> (Labels, Vec<ChunkCopy>) {
        let labels = self.labels;
        let in_range = |c: &ChunkCopy| c.min_t <= maxt && c.max_t >= mint;
        let mut all: Vec<ChunkCopy> = self
            .head
            .into_iter()
            .filter(|h| h.min_t <= maxt && h.max_t >= mint)
            .filter_map(|h| {
                let min_t = h.min_t;
                h.load()
                    .map_err(|e| {
                        tracing::error!(series = %labels, min_t, error = %e, "spilled chunk unreadable; left out of the answer");
                    })
                    .ok()
            })
            .collect();
        if self.fetched.is_empty() {
            // Ordered; disjoint unless out-of-order chunks are among them.
            return (labels, merge::merge_if_overlapping(all));
        }
        all.extend(self.fetched.into_iter().filter(in_range));
        let (merged, bad) = merge::merge_chunks(all);
        if bad > 0 {
            tracing::error!(series = %labels, bad, "chunks that do not decode were left out");
        }
        (labels, merged)
    }

    /// The samples in `[mint, maxt]`, appended to `out`; returns the labels. Blocking, like
    /// [`Selected::into_chunks`].
    pub fn into_samples(self, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) -> Labels {
        self.into_samples_and_histograms(mint, maxt, out, &mut Vec::new())
    }

    /// [`Selected::into_samples`] with the native histogram samples in `[mint, maxt]` too,
    /// appended to `hists`. Blocking, like [`Selected::into_chunks`].
    pub fn into_samples_and_histograms(
        self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<(i64, f64)>,
        hists: &mut Vec<(i64, crate::model::HistogramValue)>,
    ) -> Labels {
        let (labels, chunks) = self.into_chunks(mint, maxt);
        for c in chunks {
            if c.encoding != crate::store::object::ENCODING_XOR {
                match crate::hist::decode_histograms(c.encoding, &c.data) {
                    Ok(hs) => {
                        hists.extend(hs.into_iter().filter(|(t, _)| (mint..=maxt).contains(t)))
                    }
                    Err(e) => {
                        tracing::error!(series = %labels, error = %e, "a histogram chunk does not decode; left out")
                    }
                }
                continue;
            }
            if !crate::chunk::push_range(&c.data, mint, maxt, out) {
                tracing::error!(series = %labels, "a chunk does not decode; its samples from the bad spot on are left out");
            }
        }
        labels
    }
}

/// Reads a tenant's data from every tier.
#[derive(Debug, Clone)]
pub struct Querier {
    head: Arc<Head>,
    catalog: Option<Arc<Catalog>>,
    timeout: Duration,
    /// The process's memory limit: what a read plan holds is reserved in it.
    memory: Option<Arc<Memory>>,
}

impl Querier {
    /// A querier over the head alone.
    pub fn new(head: Arc<Head>) -> Self {
        Self {
            head,
            catalog: None,
            timeout: Duration::from_secs(30),
            memory: None,
        }
    }

    /// A querier over the head and the store's catalog; queries end by `timeout`.
    pub fn with_store(head: Arc<Head>, catalog: Arc<Catalog>, timeout: Duration) -> Self {
        Self {
            head,
            catalog: Some(catalog),
            timeout,
            memory: None,
        }
    }

    /// Reserves what each read plan holds (and what its SAMPLES answer grows to) in
    /// `memory` (`weft_memory_bytes{consumer="queries"}`): a read that does not fit in the
    /// process's one memory limit is refused with [`QueryError::Memory`] instead of growing.
    pub fn with_memory(mut self, memory: Arc<Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The memory limit reads reserve in, if any.
    pub fn memory(&self) -> Option<&Arc<Memory>> {
        self.memory.as_ref()
    }

    /// The deadline of a query starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Series matching all `matchers` with data in `[mint, maxt]` in any tier, sorted by
    /// labels, one entry per label set, with handles on their head chunks. Unbounded: a
    /// remote read goes through [`Querier::prepare`] instead.
    pub async fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        deadline: Instant,
    ) -> Answer<Vec<Selected>> {
        let meter = plan::ReadMeter::new(ReadBudget::UNLIMITED);
        match self
            .select_inner(
                tenant,
                matchers,
                mint,
                maxt,
                deadline,
                true,
                meter,
                &Cancel::default(),
            )
            .await
        {
            Ok((a, _)) => a,
            // Unreachable with no budget and no cancel, short of a panic in the blocking task.
            Err(e) => Answer {
                data: Vec::new(),
                warnings: vec![format!("selecting series failed: {e}")],
            },
        }
    }

    /// [`Querier::select`] metered by `meter` (every selected series and handle is charged
    /// as it is taken, so a query that selects too much is refused before it gathers it all),
    /// and without chunks for label queries (`copy_chunks` false).
    ///
    /// The head part runs in a blocking task: it takes each series' lock in turn, which an
    /// async worker must not do for a hundred thousand series.
    #[allow(clippy::too_many_arguments)]
    async fn select_inner(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        deadline: Instant,
        copy_chunks: bool,
        meter: plan::ReadMeter,
        cancel: &Cancel,
    ) -> Result<(Answer<Vec<Selected>>, plan::ReadMeter), QueryError> {
        let head = self.head.clone();
        let t_id = tenant.clone();
        let ms = matchers.to_vec();
        let cancel_local = cancel.clone();
        let (local, mut meter) = tokio::task::spawn_blocking(move || {
            let mut meter = meter;
            let Some(t) = head.tenant(&t_id) else {
                return Ok((Vec::new(), meter));
            };
            let series = t.select(&ms, mint, maxt);
            meter.charge_series(series.len())?;
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                if cancel_local.is_cancelled() {
                    return Err(QueryError::Cancelled);
                }
                let handles = if copy_chunks {
                    s.chunk_handles(mint, maxt)
                } else {
                    Vec::new()
                };
                meter.charge_bytes(plan::selected_cost(s.labels(), &handles, &[]))?;
                out.push(Selected {
                    labels: s.labels().clone(),
                    head: handles,
                    remote: Vec::new(),
                    fetched: Vec::new(),
                });
            }
            Ok((out, meter))
        })
        .await
        .map_err(|e| QueryError::Internal(format!("selecting head series: {e}")))??;
        let Some(catalog) = &self.catalog else {
            return Ok((
                Answer {
                    data: local,
                    warnings: Vec::new(),
                },
                meter,
            ));
        };
        let store = catalog.select(tenant, matchers, mint, maxt, deadline).await;
        // Merge two lists sorted by labels.
        let mut out = Vec::with_capacity(local.len().max(store.series.len()));
        let mut l = local.into_iter().peekable();
        let mut r = store.series.into_iter().peekable();
        loop {
            let take_left = match (l.peek(), r.peek()) {
                (None, None) => break,
                (Some(_), None) => Some(true),
                (None, Some(_)) => Some(false),
                (Some(a), Some(b)) => match a.labels.cmp(&b.labels) {
                    std::cmp::Ordering::Less => Some(true),
                    std::cmp::Ordering::Greater => Some(false),
                    std::cmp::Ordering::Equal => None,
                },
            };
            out.push(match take_left {
                Some(true) => l.next().expect("peeked"),
                Some(false) => {
                    let s = r.next().expect("peeked");
                    meter.charge_series(1)?;
                    meter.charge_bytes(plan::selected_cost(&s.labels, &[], &s.chunks))?;
                    Selected {
                        labels: s.labels,
                        head: Vec::new(),
                        remote: s.chunks,
                        fetched: Vec::new(),
                    }
                }
                None => {
                    let mut a = l.next().expect("peeked");
                    let b = r.next().expect("peeked");
                    meter.charge_bytes(plan::selected_cost(&b.labels, &[], &b.chunks))?;
                    a.remote = b.chunks;
                    a
                }
            });
        }
        Ok((
            Answer {
                data: out,
                warnings: store.warnings,
            },
            meter,
        ))
    }

    /// The store chunks each of `series` needs for `[mint, maxt]`: those overlapping the
    /// range that the head does not hold itself (a chunk retained after its flush is read
    /// from memory). Returns (series index, chunk) pairs and their total bytes.
    pub fn remote_needed(
        &self,
        series: &[Selected],
        mint: i64,
        maxt: i64,
    ) -> (Vec<(usize, RemoteChunk)>, u64) {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for (i, s) in series.iter().enumerate() {
            if s.remote.is_empty() {
                continue;
            }
            let local: BTreeSet<(i64, i64)> = s.head.iter().map(|c| (c.min_t, c.max_t)).collect();
            for rc in &s.remote {
                let m = &rc.meta;
                if m.min_t > maxt || m.max_t < mint || local.contains(&(m.min_t, m.max_t)) {
                    continue;
                }
                bytes += m.len as u64;
                out.push((i, rc.clone()));
            }
        }
        (out, bytes)
    }

    /// Reads `needed` (from [`Querier::remote_needed`]) into the series' `fetched` lists,
    /// coalescing reads per object. A chunk that cannot be read by `deadline` becomes a
    /// warning.
    pub async fn fetch_remote(
        &self,
        series: &mut [Selected],
        needed: Vec<(usize, RemoteChunk)>,
        deadline: Instant,
        warnings: &mut Vec<String>,
    ) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        if needed.is_empty() {
            return;
        }
        let chunks: Vec<RemoteChunk> = needed.iter().map(|(_, c)| c.clone()).collect();
        let results = catalog.read_chunks(&chunks, deadline).await;
        for ((i, rc), r) in needed.into_iter().zip(results) {
            match r {
                Ok(b) => series[i].fetched.push(ChunkCopy {
                    min_t: rc.meta.min_t,
                    max_t: rc.meta.max_t,
                    data: b.to_vec(),
                    flushed: true,
                    encoding: rc.meta.encoding,
                }),
                Err(e) => add_warning(
                    warnings,
                    format!("store unavailable: chunk of {} not read: {e}", rc.path),
                ),
            }
        }
    }

    /// The union of the series each matcher set selects, sorted by labels, deduplicated.
    /// No matcher sets means every series.
    pub async fn series(
        &self,
        tenant: &TenantId,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<Labels>> {
        let deadline = self.deadline();
        let mut out = BTreeSet::new();
        let mut warnings = Vec::new();
        let all = [Vec::new()];
        let sets = if sets.is_empty() { &all[..] } else { sets };
        for m in sets {
            let meter = plan::ReadMeter::new(ReadBudget::UNLIMITED);
            let a = match self
                .select_inner(
                    tenant,
                    m,
                    mint,
                    maxt,
                    deadline,
                    false,
                    meter,
                    &Cancel::default(),
                )
                .await
            {
                Ok((a, _)) => a,
                Err(e) => Answer {
                    data: Vec::new(),
                    warnings: vec![format!("selecting series failed: {e}")],
                },
            };
            for w in a.warnings {
                add_warning(&mut warnings, w);
            }
            out.extend(a.data.into_iter().map(|s| s.labels));
        }
        Answer {
            data: out.into_iter().collect(),
            warnings,
        }
    }

    /// Label names of the selected series, sorted.
    pub async fn label_names(
        &self,
        tenant: &TenantId,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<String>> {
        let a = self.series(tenant, sets, mint, maxt).await;
        let names: BTreeSet<&str> = a
            .data
            .iter()
            .flat_map(|l| l.iter().map(|l| &*l.name))
            .collect();
        Answer {
            data: names.into_iter().map(str::to_owned).collect(),
            warnings: a.warnings,
        }
    }

    /// Values of label `name` among the selected series, sorted.
    pub async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Answer<Vec<String>> {
        let a = self.series(tenant, sets, mint, maxt).await;
        let values: BTreeSet<&str> = a.data.iter().filter_map(|l| l.get(name)).collect();
        Answer {
            data: values.into_iter().map(str::to_owned).collect(),
            warnings: a.warnings,
        }
    }
}

/// Adds `w` unless already there; past [`MAX_WARNINGS`] only counts.
pub fn add_warning(warnings: &mut Vec<String>, w: String) {
    if warnings.contains(&w) {
        return;
    }
    if warnings.len() < MAX_WARNINGS {
        warnings.push(w);
    } else if warnings.len() == MAX_WARNINGS {
        warnings.push("… and more store reads failed".to_owned());
    }
}
