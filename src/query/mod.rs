//! Selecting series, chunks and samples for a tenant and a time range, over every tier:
//! the head (open, closed and retained chunks), spill files, the cache and the store.
//!
//! A query runs in two steps:
//! 1. [`Querier::select`] (async) finds the matching series in the head and in the store
//!    catalog's objects, and merges them by label set;
//! 2. [`Querier::fetch_remote`] (async) reads the store chunks a series needs, except those
//!    the head still holds (a chunk retained after its flush is read from memory), and
//!    [`Querier::chunks`] (sync) merges every tier into one ordered list without repeats
//!    (see [`merge`]).
//!
//! Nothing from the store can fail a query: a store read that fails or misses the deadline
//! becomes a warning, and the answer is partial. The store tier itself keeps reads short
//! while the store counts as down (the circuit is open).

pub mod merge;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::head::{ChunkCopy, Head, Series};
use crate::model::{Labels, Matcher, TenantId};
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

/// One selected series: its labels, its head series if the head has it, and its chunks in
/// the store.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The labels.
    pub labels: Labels,
    /// The head's series, if any.
    pub head: Option<Arc<Series>>,
    /// Chunks in the store overlapping the range.
    pub remote: Vec<RemoteChunk>,
    /// Store chunks read by [`Querier::fetch_remote`].
    pub fetched: Vec<ChunkCopy>,
}

/// Reads a tenant's data from every tier.
#[derive(Debug, Clone)]
pub struct Querier {
    head: Arc<Head>,
    catalog: Option<Arc<Catalog>>,
    timeout: Duration,
}

impl Querier {
    /// A querier over the head alone.
    pub fn new(head: Arc<Head>) -> Self {
        Self {
            head,
            catalog: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// A querier over the head and the store's catalog; queries end by `timeout`.
    pub fn with_store(head: Arc<Head>, catalog: Arc<Catalog>, timeout: Duration) -> Self {
        Self {
            head,
            catalog: Some(catalog),
            timeout,
        }
    }

    /// The deadline of a query starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Series matching all `matchers` with data in `[mint, maxt]` in any tier, sorted by
    /// labels, one entry per label set.
    pub async fn select(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        deadline: Instant,
    ) -> Answer<Vec<Selected>> {
        let local = match self.head.tenant(tenant) {
            Some(t) => t.select(matchers, mint, maxt),
            None => Vec::new(),
        };
        let Some(catalog) = &self.catalog else {
            return Answer {
                data: local
                    .into_iter()
                    .map(|s| Selected {
                        labels: s.labels().clone(),
                        head: Some(s),
                        remote: Vec::new(),
                        fetched: Vec::new(),
                    })
                    .collect(),
                warnings: Vec::new(),
            };
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
                (Some(a), Some(b)) => match a.labels().cmp(&b.labels) {
                    std::cmp::Ordering::Less => Some(true),
                    std::cmp::Ordering::Greater => Some(false),
                    std::cmp::Ordering::Equal => None,
                },
            };
            out.push(match take_left {
                Some(true) => {
                    let s = l.next().expect("peeked");
                    Selected {
                        labels: s.labels().clone(),
                        head: Some(s),
                        remote: Vec::new(),
                        fetched: Vec::new(),
                    }
                }
                Some(false) => {
                    let s = r.next().expect("peeked");
                    Selected {
                        labels: s.labels,
                        head: None,
                        remote: s.chunks,
                        fetched: Vec::new(),
                    }
                }
                None => {
                    let a = l.next().expect("peeked");
                    let b = r.next().expect("peeked");
                    Selected {
                        labels: b.labels,
                        head: Some(a),
                        remote: b.chunks,
                        fetched: Vec::new(),
                    }
                }
            });
        }
        Answer {
            data: out,
            warnings: store.warnings,
        }
    }

    /// Reads the store chunks of `s` that overlap `[mint, maxt]` and that the head does not
    /// hold itself, into `s.fetched`. A chunk that cannot be read by `deadline` becomes a
    /// warning. Returns the bytes read.
    pub async fn fetch_remote(
        &self,
        s: &mut Selected,
        mint: i64,
        maxt: i64,
        deadline: Instant,
        warnings: &mut Vec<String>,
    ) -> u64 {
        let Some(catalog) = &self.catalog else {
            return 0;
        };
        if s.remote.is_empty() {
            return 0;
        }
        // Chunks the head still has (retained after their flush) need no store read.
        let local: BTreeSet<(i64, i64)> = s
            .head
            .as_ref()
            .map(|h| {
                h.chunks(mint, maxt)
                    .iter()
                    .map(|c| (c.min_t, c.max_t))
                    .collect()
            })
            .unwrap_or_default();
        let mut bytes = 0;
        for rc in &s.remote {
            let m = &rc.meta;
            if m.min_t > maxt || m.max_t < mint || local.contains(&(m.min_t, m.max_t)) {
                continue;
            }
            match catalog.read_chunk(rc, deadline).await {
                Ok(b) => {
                    bytes += b.len() as u64;
                    s.fetched.push(ChunkCopy {
                        min_t: m.min_t,
                        max_t: m.max_t,
                        data: b.to_vec(),
                        flushed: true,
                    });
                }
                Err(e) => add_warning(
                    warnings,
                    format!("store unavailable: chunk of {} not read: {e}", rc.path),
                ),
            }
        }
        bytes
    }

    /// Every chunk of a selected series overlapping `[mint, maxt]`: the head's and the
    /// fetched store chunks, ordered, without repeats.
    pub fn chunks(&self, s: &Selected, mint: i64, maxt: i64) -> Vec<ChunkCopy> {
        let mut all = match &s.head {
            Some(h) => h.chunks(mint, maxt),
            None => Vec::new(),
        };
        if s.fetched.is_empty() {
            return all; // already ordered and disjoint
        }
        all.extend(s.fetched.iter().cloned());
        let (merged, bad) = merge::merge_chunks(all);
        if bad > 0 {
            tracing::error!(series = %s.labels, bad, "chunks that do not decode were left out");
        }
        merged
    }

    /// The samples of a selected series in `[mint, maxt]`, appended to `out`.
    pub fn samples(&self, s: &Selected, mint: i64, maxt: i64, out: &mut Vec<(i64, f64)>) {
        for c in self.chunks(s, mint, maxt) {
            let Ok(mut it) = crate::chunk::XorIterator::new(&c.data) else {
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
            let a = self.select(tenant, m, mint, maxt, deadline).await;
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
