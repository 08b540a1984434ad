//! Exemplars and metric metadata: per-tenant, bounded, WAL-logged stores behind
//! `GET /api/v1/query_exemplars` and `GET /api/v1/metadata`.
//!
//! * Exemplars ([`exemplar`]): one ring per tenant of at most
//!   `--limits.max-exemplars-per-tenant` exemplars (overrides key `max_exemplars_per_tenant`),
//!   as Prometheus's circular exemplar storage. Only exemplars of series the head holds are
//!   kept (as Prometheus, whose appender needs the series).
//! * Metadata ([`metadata`]): the latest type, help and unit of each metric family, at most
//!   `--limits.max-metadata-per-tenant` families (overrides key `max_metadata_per_tenant`).
//!
//! A refused exemplar or metadata entry never fails its push: it is counted
//! (`weft_exemplars_rejected_total{reason}`, `weft_metadata_rejected_total{reason}`) and
//! left out, as Prometheus's remote-write handler does.
//!
//! Durability: what a push stores is logged in the same WAL append as its samples (records 6
//! and 7), so it is durable before the push is acknowledged. A checkpoint deletes old
//! segments, so right after its WAL cut the whole content of both stores is logged again into
//! the new segment ([`ExMeta::snapshot`]): replay then rebuilds the stores from the
//! segments the checkpoint keeps. The [`ExMeta::gate`], a mutex, orders all of this: a push
//! holds it from updating the stores to its WAL append, so the WAL has the pushes' records in
//! the order the stores took them (two pushes logging in the other order would replay to
//! another ring order, or refuse the older exemplar of a series as out of order); a
//! checkpoint holds it from the cut to the copy's append, so no push's records fall between
//! the cut and the copy (where replaying them before the copy would reorder the ring).
//! Only pushes that carry exemplars or metadata take it, and one whose exemplars and
//! metadata changed nothing lets it go before its WAL append.
//!
//! **Invariant:** replaying the WAL in order rebuilds each store as it was (for exemplars:
//! the same exemplars in the same ring order), given the same limits.

pub mod exemplar;
pub mod metadata;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::head::AppendReport;
use crate::limits::Overrides;
use crate::metrics::{Metrics, ReasonLabels};
use crate::model::{Matcher, TenantId};
use crate::proto::{MetricType, WriteBatch};
use crate::wal::record::{Record, WalExemplar, WalMetadata};

use exemplar::{Added, Exemplar, Pairs, Ring, SeriesKey};
use metadata::{Families, Meta};

/// Default of `--limits.max-exemplars-per-tenant`: Prometheus's
/// `--storage.tsdb.max-exemplars` default (100,000 once exemplar storage is on). About
/// 25 MB per tenant when full with a trace id each (see `docs/operations.md`).
pub const DEFAULT_MAX_EXEMPLARS_PER_TENANT: usize = 100_000;

/// Default of `--limits.max-metadata-per-tenant`: metric families with metadata. Mimir's
/// `max_global_metric_metadata_per_user` is unlimited by default; a bound is weft's rule
/// (every store has one), set far above the few thousand families a large tenant exposes.
pub const DEFAULT_MAX_METADATA_PER_TENANT: usize = 10_000;

/// Exemplars per WAL record of a checkpoint's snapshot, and at most this many estimated
/// bytes: keeps each record far below the WAL's record limit.
const SNAPSHOT_RECORD_ITEMS: usize = 4096;
const SNAPSHOT_RECORD_BYTES: usize = 1 << 20;

/// The flags' limits (the overrides file may change them per tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExMetaConfig {
    /// `--limits.max-exemplars-per-tenant`; 0 disables exemplars.
    pub max_exemplars_per_tenant: usize,
    /// `--limits.max-metadata-per-tenant`; 0 disables metadata.
    pub max_metadata_per_tenant: usize,
}

impl Default for ExMetaConfig {
    fn default() -> Self {
        Self {
            max_exemplars_per_tenant: DEFAULT_MAX_EXEMPLARS_PER_TENANT,
            max_metadata_per_tenant: DEFAULT_MAX_METADATA_PER_TENANT,
        }
    }
}

/// What one push must log: the exemplars it stored (and repeats of stored ones, so that a
/// retry of a push whose WAL append failed makes them durable) and the metadata it changed.
#[derive(Debug, Default)]
pub struct ExMetaLog {
    /// Exemplars, in the order they were stored.
    pub exemplars: Vec<WalExemplar>,
    /// Metadata entries.
    pub metadata: Vec<WalMetadata>,
}

impl ExMetaLog {
    /// Whether there is nothing to log.
    pub fn is_empty(&self) -> bool {
        self.exemplars.is_empty() && self.metadata.is_empty()
    }

    /// The WAL records of this log for `tenant`.
    pub fn into_records(self, tenant: &str) -> impl Iterator<Item = Record<'_>> {
        let ex = (!self.exemplars.is_empty()).then(|| Record::Exemplars {
            tenant: tenant.into(),
            exemplars: self.exemplars,
        });
        let md = (!self.metadata.is_empty()).then(|| Record::Metadata {
            tenant: tenant.into(),
            entries: self.metadata,
        });
        ex.into_iter().chain(md)
    }
}

/// One series' exemplars in a query answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExemplars {
    /// The series' labels, sorted by name.
    pub series: SeriesKey,
    /// Its exemplars in the range, oldest first.
    pub exemplars: Vec<Exemplar>,
}

/// Both stores, all tenants.
#[derive(Debug)]
pub struct ExMeta {
    cfg: ExMetaConfig,
    overrides: Arc<Overrides>,
    metrics: Arc<Metrics>,
    exemplars: RwLock<HashMap<TenantId, Arc<Mutex<Ring>>>>,
    metadata: RwLock<HashMap<TenantId, Arc<Mutex<Families>>>>,
    /// Estimated bytes held, both stores.
    bytes: AtomicI64,
    gate: Mutex<()>,
}

/// Sorted labels without empty values, as the head keys series.
fn series_key(raw: &[(&[u8], &[u8])]) -> Option<Pairs> {
    let mut v: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(raw.len());
    for (n, val) in raw {
        if val.is_empty() {
            continue;
        }
        v.push((
            std::str::from_utf8(n).ok()?.into(),
            std::str::from_utf8(val).ok()?.into(),
        ));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v.into_boxed_slice())
}

fn exemplar_labels(raw: &[(&[u8], &[u8])]) -> Result<Pairs, exemplar::Refusal> {
    // Bound the work before converting: 128 runes are at most 512 bytes.
    let bytes: usize = raw.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > 4 * exemplar::MAX_LABEL_RUNES {
        return Err(exemplar::Refusal::LabelLength);
    }
    let mut v: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(raw.len());
    for (n, val) in raw {
        let n = std::str::from_utf8(n).map_err(|_| exemplar::Refusal::InvalidLabels)?;
        let val = std::str::from_utf8(val).map_err(|_| exemplar::Refusal::InvalidLabels)?;
        v.push((n.into(), val.into()));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    exemplar::check_labels(&v)?;
    Ok(v.into_boxed_slice())
}

fn to_pairs(p: &[(String, String)]) -> Pairs {
    let mut v: Vec<(Box<str>, Box<str>)> = p
        .iter()
        .map(|(n, v)| (n.as_str().into(), v.as_str().into()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_boxed_slice()
}

fn from_pairs(p: &[(Box<str>, Box<str>)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn wal_exemplar(series: &[(Box<str>, Box<str>)], e: &Exemplar) -> WalExemplar {
    WalExemplar {
        series: from_pairs(series),
        labels: from_pairs(&e.labels),
        t: e.t,
        v: e.value.to_bits(),
    }
}

impl ExMeta {
    /// Empty stores.
    pub fn new(cfg: ExMetaConfig, overrides: Arc<Overrides>, metrics: Arc<Metrics>) -> Self {
        // Every reason is listed from the start (at 0), so alerts on a rate see it.
        for r in exemplar::Refusal::ALL {
            metrics
                .exmeta
                .exemplars_rejected
                .get_or_create(&ReasonLabels { reason: r.reason() })
                .inc_by(0);
        }
        for r in metadata::Refusal::ALL {
            metrics
                .exmeta
                .metadata_rejected
                .get_or_create(&ReasonLabels { reason: r.reason() })
                .inc_by(0);
        }
        Self {
            cfg,
            overrides,
            metrics,
            exemplars: RwLock::new(HashMap::new()),
            metadata: RwLock::new(HashMap::new()),
            bytes: AtomicI64::new(0),
            gate: Mutex::new(()),
        }
    }

    /// The flags' limits.
    pub fn config(&self) -> ExMetaConfig {
        self.cfg
    }

    /// `tenant`'s exemplar capacity: its override, else the flag.
    pub fn exemplar_capacity(&self, tenant: &TenantId) -> usize {
        self.overrides
            .tenant(tenant)
            .max_exemplars_per_tenant
            .unwrap_or(self.cfg.max_exemplars_per_tenant)
    }

    /// `tenant`'s metadata limit: its override, else the flag.
    pub fn metadata_limit(&self, tenant: &TenantId) -> usize {
        self.overrides
            .tenant(tenant)
            .max_metadata_per_tenant
            .unwrap_or(self.cfg.max_metadata_per_tenant)
    }

    /// Estimated bytes held by both stores.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// Held by a push from its store updates to its WAL append, and by a checkpoint from its
    /// WAL cut to the append of the stores' copy (see the module docs).
    pub fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock()
    }

    fn ring(&self, tenant: &TenantId) -> Arc<Mutex<Ring>> {
        if let Some(r) = self.exemplars.read().get(tenant) {
            return r.clone();
        }
        self.exemplars
            .write()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Ring::new(self.exemplar_capacity(tenant)))))
            .clone()
    }

    fn families(&self, tenant: &TenantId) -> Arc<Mutex<Families>> {
        if let Some(r) = self.metadata.read().get(tenant) {
            return r.clone();
        }
        self.metadata
            .write()
            .entry(tenant.clone())
            .or_default()
            .clone()
    }

    /// Runs `f` on the tenant's ring (resized first if its capacity changed) and brings the
    /// totals up to date.
    fn with_ring<T>(&self, tenant: &TenantId, f: impl FnOnce(&mut Ring) -> T) -> T {
        let cap = self.exemplar_capacity(tenant);
        let ring = self.ring(tenant);
        let mut r = ring.lock();
        let before = (r.len() as i64, r.num_series() as i64, r.bytes() as i64);
        if r.capacity() != cap {
            let (resized, dropped) = r.resized(cap);
            *r = resized;
            self.metrics.exmeta.exemplars_evicted.inc_by(dropped);
        }
        let out = f(&mut r);
        let after = (r.len() as i64, r.num_series() as i64, r.bytes() as i64);
        drop(r);
        let m = &self.metrics.exmeta;
        m.exemplars_stored.inc_by(after.0 - before.0);
        m.exemplar_series.inc_by(after.1 - before.1);
        self.add_bytes(after.2 - before.2);
        out
    }

    fn with_families<T>(&self, tenant: &TenantId, f: impl FnOnce(&mut Families) -> T) -> T {
        let fams = self.families(tenant);
        let mut m = fams.lock();
        let before = (m.len() as i64, m.bytes() as i64);
        let out = f(&mut m);
        let after = (m.len() as i64, m.bytes() as i64);
        drop(m);
        self.metrics
            .exmeta
            .metadata_stored
            .inc_by(after.0 - before.0);
        self.add_bytes(after.1 - before.1);
        out
    }

    fn add_bytes(&self, d: i64) {
        if d != 0 {
            self.bytes.fetch_add(d, Ordering::Relaxed);
            self.metrics.exmeta.bytes.inc_by(d);
        }
    }

    fn reject_exemplar(&self, r: exemplar::Refusal, n: u64) {
        self.metrics
            .exmeta
            .exemplars_rejected
            .get_or_create(&ReasonLabels { reason: r.reason() })
            .inc_by(n);
    }

    fn reject_metadata(&self, r: metadata::Refusal) {
        self.metrics
            .exmeta
            .metadata_rejected
            .get_or_create(&ReasonLabels { reason: r.reason() })
            .inc();
    }

    /// Stores the exemplars and metadata of a push for `tenant`. `has_series` says whether
    /// the head holds a series (raw labels); exemplars of other series, and those after
    /// `max_t` (now plus the creation grace period), are refused. Counts
    /// the exemplars stored or found already stored in `report.exemplars_appended`, and
    /// returns what to log. Call with [`ExMeta::gate`] held until the log is appended.
    pub fn append(
        &self,
        tenant: &TenantId,
        batch: &WriteBatch<'_>,
        has_series: impl Fn(&[(&[u8], &[u8])]) -> bool,
        max_t: i64,
        report: &mut AppendReport,
    ) -> ExMetaLog {
        let mut log = ExMetaLog::default();
        if !batch.exemplars.is_empty() {
            self.append_exemplars(tenant, batch, has_series, max_t, report, &mut log);
        }
        if !batch.metadata.is_empty() {
            self.append_metadata(tenant, batch, &mut log);
        }
        log
    }

    fn append_exemplars(
        &self,
        tenant: &TenantId,
        batch: &WriteBatch<'_>,
        has_series: impl Fn(&[(&[u8], &[u8])]) -> bool,
        max_t: i64,
        report: &mut AppendReport,
        log: &mut ExMetaLog,
    ) {
        // Convert and check outside the ring's lock.
        let mut todo: Vec<(Pairs, Exemplar)> = Vec::new();
        for s in &batch.series {
            let n = u64::from(s.num_exemplars());
            if n == 0 {
                continue;
            }
            let Some(raw) = batch
                .labels
                .get(s.labels_start as usize..s.labels_end as usize)
            else {
                continue;
            };
            if !has_series(raw) {
                self.reject_exemplar(exemplar::Refusal::UnknownSeries, n);
                continue;
            }
            let Some(key) = series_key(raw) else {
                self.reject_exemplar(exemplar::Refusal::UnknownSeries, n);
                continue;
            };
            let Some(exs) = batch
                .exemplars
                .get(s.exemplars_start as usize..s.exemplars_end as usize)
            else {
                continue;
            };
            let first = todo.len();
            for e in exs {
                if e.timestamp > max_t {
                    self.reject_exemplar(exemplar::Refusal::TooFarInFuture, 1);
                    continue;
                }
                let labels = batch
                    .exemplar_labels
                    .get(e.labels_start as usize..e.labels_end as usize)
                    .unwrap_or(&[]);
                match exemplar_labels(labels) {
                    Ok(labels) => todo.push((
                        key.clone(),
                        Exemplar {
                            labels,
                            value: e.value,
                            t: e.timestamp,
                        },
                    )),
                    Err(r) => self.reject_exemplar(r, 1),
                }
            }
            // In the order the ring wants (Prometheus's scrape sorts them so, remote write
            // senders need not): a push's own exemplars are never out of order among
            // themselves.
            todo[first..].sort_by(|a, b| a.1.order(&b.1));
        }
        if todo.is_empty() {
            return;
        }
        let (mut stored, mut evicted) = (0u64, 0u64);
        self.with_ring(tenant, |ring| {
            for (series, ex) in todo {
                match ring.add(&series, ex.clone()) {
                    Ok(a) => {
                        if let Added::Stored { evicted: ev } = a {
                            stored += 1;
                            evicted += u64::from(ev);
                        }
                        report.exemplars_appended += 1;
                        log.exemplars.push(wal_exemplar(&series, &ex));
                    }
                    Err(r) => self.reject_exemplar(r, 1),
                }
            }
        });
        let m = &self.metrics.exmeta;
        m.exemplars_appended.inc_by(stored);
        m.exemplars_evicted.inc_by(evicted);
    }

    /// Stores the batch's metadata under one lock. Only entries that add or change a family
    /// are copied and logged: remote write 2.0 repeats each series' metadata in every
    /// request, and an unchanged entry costs a lookup, no allocation and no WAL bytes. (So a
    /// push whose WAL append failed and whose retry finds its metadata stored leaves that
    /// metadata unlogged; after a restart it is back with the sender's next metadata.)
    fn append_metadata(&self, tenant: &TenantId, batch: &WriteBatch<'_>, log: &mut ExMetaLog) {
        let limit = self.metadata_limit(tenant);
        self.with_families(tenant, |fams| {
            // Series of one family usually come together, each with the same metadata: an
            // entry equal to the one before has its outcome (a refusal is counted again).
            let mut last: Option<(&crate::proto::WriteMetadata<'_>, Option<metadata::Refusal>)> =
                None;
            for m in &batch.metadata {
                if let Some((l, refused)) = last {
                    if l == m {
                        if let Some(r) = refused {
                            self.reject_metadata(r);
                        }
                        continue;
                    }
                }
                let refused = self.set_metadata(fams, m, limit, log);
                last = Some((m, refused));
            }
        });
    }

    /// One entry of [`ExMeta::append_metadata`]; the refusal, if any, is counted and returned.
    fn set_metadata(
        &self,
        fams: &mut Families,
        m: &crate::proto::WriteMetadata<'_>,
        limit: usize,
        log: &mut ExMetaLog,
    ) -> Option<metadata::Refusal> {
        let refuse = |r| {
            self.reject_metadata(r);
            Some(r)
        };
        let (Ok(family), Ok(help), Ok(unit)) = (
            std::str::from_utf8(m.family),
            std::str::from_utf8(m.help),
            std::str::from_utf8(m.unit),
        ) else {
            return refuse(metadata::Refusal::NotUtf8);
        };
        if let Err(r) = metadata::check(family, help, unit) {
            return refuse(r);
        }
        if fams
            .get(family)
            .is_some_and(|cur| cur.kind == m.kind && *cur.help == *help && *cur.unit == *unit)
        {
            return None;
        }
        let meta = Meta {
            kind: m.kind,
            help: help.into(),
            unit: unit.into(),
        };
        match fams.set(family, meta, limit) {
            Ok(metadata::Set::Unchanged) => None,
            Ok(_) => {
                log.metadata.push(WalMetadata {
                    kind: m.kind as u8,
                    family: family.to_string(),
                    help: help.to_string(),
                    unit: unit.to_string(),
                });
                None
            }
            Err(r) => refuse(r),
        }
    }

    /// Applies a replayed exemplars record. No limit but the ring's capacity applies, and
    /// nothing is counted as appended or rejected (those count pushes).
    pub fn replay_exemplars(&self, tenant: &TenantId, exemplars: &[WalExemplar]) {
        let mut evicted = 0u64;
        self.with_ring(tenant, |ring| {
            for w in exemplars {
                let labels = to_pairs(&w.labels);
                if exemplar::check_labels(&labels).is_err() {
                    continue;
                }
                let ex = Exemplar {
                    labels,
                    value: f64::from_bits(w.v),
                    t: w.t,
                };
                if let Ok(Added::Stored { evicted: true }) = ring.add(&to_pairs(&w.series), ex) {
                    evicted += 1;
                }
            }
        });
        self.metrics.exmeta.exemplars_evicted.inc_by(evicted);
    }

    /// Applies a replayed metadata record (the tenant's limit applies: a family past it is
    /// dropped and counted).
    pub fn replay_metadata(&self, tenant: &TenantId, entries: &[WalMetadata]) {
        let limit = self.metadata_limit(tenant);
        self.with_families(tenant, |fams| {
            for w in entries {
                let meta = Meta {
                    kind: MetricType::from_wire(u64::from(w.kind)).unwrap_or_default(),
                    help: w.help.as_str().into(),
                    unit: w.unit.as_str().into(),
                };
                if let Err(r) = fams.set(&w.family, meta, limit) {
                    self.reject_metadata(r);
                }
            }
        });
    }

    /// Hands `emit` both stores' whole content as WAL records (exemplars in ring order), one
    /// record at a time, for a checkpoint to log right after its cut. Each record stays far
    /// below the WAL's record limit, and only one is held at a time: a copy of every tenant's
    /// store at once could be gigabytes. Stops at `emit`'s first error.
    pub fn snapshot<E>(
        &self,
        mut emit: impl FnMut(Record<'static>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut tenants: Vec<(TenantId, Arc<Mutex<Ring>>)> = self
            .exemplars
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        for (tenant, ring) in tenants {
            let ring = ring.lock();
            let mut part: Vec<WalExemplar> = Vec::new();
            let mut bytes = 0usize;
            for (series, e) in ring.iter() {
                let w = wal_exemplar(series, e);
                bytes += 16
                    + w.series
                        .iter()
                        .chain(&w.labels)
                        .map(|(n, v)| n.len() + v.len() + 4)
                        .sum::<usize>();
                part.push(w);
                if part.len() >= SNAPSHOT_RECORD_ITEMS || bytes >= SNAPSHOT_RECORD_BYTES {
                    emit(Record::Exemplars {
                        tenant: tenant.to_string().into(),
                        exemplars: std::mem::take(&mut part),
                    })?;
                    bytes = 0;
                }
            }
            if !part.is_empty() {
                emit(Record::Exemplars {
                    tenant: tenant.to_string().into(),
                    exemplars: part,
                })?;
            }
        }
        let mut tenants: Vec<(TenantId, Arc<Mutex<Families>>)> = self
            .metadata
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        for (tenant, fams) in tenants {
            let fams = fams.lock();
            let mut part = Vec::new();
            for (f, m) in fams.iter() {
                part.push(WalMetadata {
                    kind: m.kind as u8,
                    family: f.to_string(),
                    help: m.help.to_string(),
                    unit: m.unit.to_string(),
                });
                // A family is at most ~3 KiB (the length bounds): 256 a record is < 1 MiB.
                if part.len() == 256 {
                    emit(Record::Metadata {
                        tenant: tenant.to_string().into(),
                        entries: std::mem::take(&mut part),
                    })?;
                }
            }
            if !part.is_empty() {
                emit(Record::Metadata {
                    tenant: tenant.to_string().into(),
                    entries: part,
                })?;
            }
        }
        Ok(())
    }

    /// [`ExMeta::snapshot`] collected (tests).
    pub fn snapshot_records(&self) -> Vec<Record<'static>> {
        let mut out = Vec::new();
        let _ = self.snapshot(|r| {
            out.push(r);
            Ok::<(), ()>(())
        });
        out
    }

    /// Drops a tenant's exemplars and metadata (the tenant left the head).
    pub fn remove_tenant(&self, tenant: &TenantId) {
        if let Some(ring) = self.exemplars.write().remove(tenant) {
            let r = ring.lock();
            let m = &self.metrics.exmeta;
            m.exemplars_stored.dec_by(r.len() as i64);
            m.exemplar_series.dec_by(r.num_series() as i64);
            self.add_bytes(-(r.bytes() as i64));
        }
        if let Some(fams) = self.metadata.write().remove(tenant) {
            let f = fams.lock();
            self.metrics.exmeta.metadata_stored.dec_by(f.len() as i64);
            self.add_bytes(-(f.bytes() as i64));
        }
    }

    /// `GET /api/v1/query_exemplars`: the exemplars in `[start, end]` (ms) of the series that
    /// match any of `sets`, series sorted by labels.
    pub fn query_exemplars(
        &self,
        tenant: &TenantId,
        sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Vec<SeriesExemplars> {
        let Some(ring) = self.exemplars.read().get(tenant).cloned() else {
            return Vec::new();
        };
        let found = ring.lock().select(sets, start, end);
        found
            .into_iter()
            .map(|(series, exemplars)| SeriesExemplars { series, exemplars })
            .collect()
    }

    /// `GET /api/v1/metadata`: the families (all, or the one named `metric`), sorted by
    /// name, at most `limit` of them.
    pub fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
        limit: Option<usize>,
    ) -> Vec<(String, Meta)> {
        let Some(fams) = self.metadata.read().get(tenant).cloned() else {
            return Vec::new();
        };
        let fams = fams.lock();
        let limit = limit.unwrap_or(usize::MAX);
        match metric {
            Some(m) => fams
                .get(m)
                .map(|meta| (m.to_string(), meta.clone()))
                .into_iter()
                .take(limit)
                .collect(),
            None => fams
                .iter()
                .take(limit)
                .map(|(f, m)| (f.to_string(), m.clone()))
                .collect(),
        }
    }

    /// Whether `tenant` has anything stored here.
    pub fn has_tenant(&self, tenant: &TenantId) -> bool {
        self.exemplars.read().contains_key(tenant) || self.metadata.read().contains_key(tenant)
    }

    /// Exemplars held by `tenant` (tests, and the docs' figures).
    pub fn num_exemplars(&self, tenant: &TenantId) -> usize {
        self.exemplars
            .read()
            .get(tenant)
            .map_or(0, |r| r.lock().len())
    }
}
